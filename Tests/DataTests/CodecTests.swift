import Kernels
import Testing
import TestSupport
@testable import Data

@Suite struct CodecTests {
    @Test func pngRoundTripIsExact() throws {
        let pixels = testPattern(width: 13, height: 11)
        let bytes = try encoded(pixels, width: 13, height: 11, format: .png)
        let decoder = ImageDecoder()   // owns the pixels the view points at
        let image = try bytes.withUnsafeBufferPointer { try decoder.decode(bytes: $0.baseAddress!, count: $0.count) }
        #expect(image.width == 13 && image.height == 11)
        #expect(Array(UnsafeBufferPointer(start: image.pixels, count: 13 * 11 * 3)) == pixels)
        withExtendedLifetime(decoder) {}
    }

    @Test func jpegRoundTripIsCloseAndDeterministic() throws {
        let pixels = smoothPattern(width: 40, height: 24)
        let bytes = try encoded(pixels, width: 40, height: 24, format: .jpeg(quality: 95))
        #expect(bytes == (try encoded(pixels, width: 40, height: 24, format: .jpeg(quality: 95))), "same bytes each time")
        #expect(bytes.prefix(2) == [0xFF, 0xD8])
        let decoder = ImageDecoder()
        let image = try bytes.withUnsafeBufferPointer { try decoder.decode(bytes: $0.baseAddress!, count: $0.count) }
        #expect(image.width == 40 && image.height == 24)
        let decoded = Array(UnsafeBufferPointer(start: image.pixels, count: 40 * 24 * 3))
        withExtendedLifetime(decoder) {}
        let worst = compareValues(decoded.map(Float.init), pixels.map(Float.init))
        #expect(worst.difference <= 6, "worst byte \(worst.index): \(worst.actual) vs \(worst.expected)")
    }

    @Test func decoderReusesItsBufferAcrossSizes() throws {
        let decoder = ImageDecoder()
        for (width, height) in [(64, 48), (8, 8), (100, 30)] {
            let pixels = testPattern(width: width, height: height)
            let bytes = try encoded(pixels, width: width, height: height, format: .png)
            let image = try bytes.withUnsafeBufferPointer { try decoder.decode(bytes: $0.baseAddress!, count: $0.count) }
            #expect(image.width == width && image.height == height)
            #expect(Array(UnsafeBufferPointer(start: image.pixels, count: width * height * 3)) == pixels)
        }
    }

    @Test func grayImagesKeepEqualChannels() throws {
        var gray: [UInt8] = []
        for value in 0..<(16 * 16) { gray += [UInt8(value), UInt8(value), UInt8(value)] }
        let bytes = try encoded(gray, width: 16, height: 16, format: .jpeg(quality: 90))
        let decoder = ImageDecoder()
        let image = try bytes.withUnsafeBufferPointer { try decoder.decode(bytes: $0.baseAddress!, count: $0.count) }
        defer { withExtendedLifetime(decoder) {} }
        for pixel in 0..<(16 * 16) {
            let red = image.pixels[pixel * 3], green = image.pixels[pixel * 3 + 1], blue = image.pixels[pixel * 3 + 2]
            #expect(abs(Int(red) - Int(green)) <= 1 && abs(Int(green) - Int(blue)) <= 1)
        }
    }

    @Test(arguments: ["jpeg", "png"])
    func corruptAndTruncatedFilesThrowWithoutCrashing(format: String) throws {
        let pixels = testPattern(width: 32, height: 32)
        let good = try encoded(pixels, width: 32, height: 32, format: format == "png" ? .png : .jpeg(quality: 90))
        let decoder = ImageDecoder()
        var damaged: [[UInt8]] = [
            Array(good.prefix(good.count / 2)),          // truncated mid-data
            Array(good.prefix(good.count - 20)),
            Array(good.prefix(4)),                       // header only
            [],                                          // empty
            [UInt8](repeating: 0x42, count: 100),        // not an image
        ]
        var scrambled = good                              // body overwritten
        for index in stride(from: 20, to: scrambled.count - 4, by: 3) { scrambled[index] = 0xFF }
        damaged.append(scrambled)
        for (number, bytes) in damaged.enumerated() {
            #expect(throws: DataError.self, "\(format) damage case \(number)") {
                _ = try bytes.withUnsafeBufferPointer { buffer in
                    try decoder.decode(bytes: buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!, count: buffer.count)
                }
            }
        }
        // The decoder still works after the failures.
        let image = try good.withUnsafeBufferPointer { try decoder.decode(bytes: $0.baseAddress!, count: $0.count) }
        #expect(image.width == 32)
    }

    @Test func unreadableFileNamesThePath() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        #expect { try ImageDecoder().decode(path: folder.path + "/missing.jpg") } throws: { error in
            "\(error)".contains("missing.jpg") && "\(error)".contains("open")
        }
    }
}

@Suite struct PillowDecodeTests {
    @Test(arguments: pillowDecodeCases.map(\.name))
    func decodesLikePillow(name: String) throws {
        let reference = pillowDecodeCases.first { $0.name == name }!
        let decoder = ImageDecoder()
        let image = try reference.file.withUnsafeBufferPointer { try decoder.decode(bytes: $0.baseAddress!, count: $0.count) }
        #expect(image.width == 9 && image.height == 6)
        let decoded = Array(UnsafeBufferPointer(start: image.pixels, count: 9 * 6 * 3))
        let firstDifference = zip(decoded, reference.rgb).enumerated().first { $0.element.0 != $0.element.1 }
        #expect(firstDifference == nil, "\(name): byte \(firstDifference?.offset ?? -1) is \(firstDifference?.element.0 ?? 0), Pillow has \(firstDifference?.element.1 ?? 0)")
        withExtendedLifetime(decoder) {}
    }
}

@Suite(.timeLimit(.minutes(1))) struct CorruptionFuzzTests {
    /// Randomly damaged files (bytes overwritten, inserted or cut) decode or throw, never crash.
    @Test(arguments: ["jpeg", "png", "progressive"])
    func damagedFilesNeverCrash(kind: String) throws {
        let file: [UInt8]
        switch kind {
        case "png": file = try encoded(testPattern(width: 24, height: 20), width: 24, height: 20, format: .png)
        case "progressive": file = pillowDecodeCases.first { $0.name == "progressiveJPEG" }!.file
        default: file = try encoded(smoothPattern(width: 24, height: 20), width: 24, height: 20, format: .jpeg(quality: 80))
        }
        let decoder = ImageDecoder()
        var failures = 0
        for trial in 0..<300 {
            var random = CounterRandom(seed: 1, purpose: .test, epoch: 0, index: trial)
            var damaged = file
            for _ in 0..<(1 + random.nextInt(below: 8)) {
                let position = random.nextInt(below: damaged.count)
                switch random.nextInt(below: 3) {
                case 0: damaged[position] = UInt8(truncatingIfNeeded: random.nextUInt32())
                case 1: damaged.insert(UInt8(truncatingIfNeeded: random.nextUInt32()), at: position)
                default: damaged.removeSubrange(position..<min(damaged.count, position + 1 + random.nextInt(below: 16)))
                }
                if damaged.count < 2 { break }
            }
            do {
                let image = try damaged.withUnsafeBufferPointer { try decoder.decode(bytes: $0.baseAddress!, count: $0.count) }
                #expect(image.width > 0 && image.height > 0)
            } catch is DataError {
                failures += 1
            }
        }
        #expect(failures > 0, "some damage must be detected")
    }
}
