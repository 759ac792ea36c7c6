import Kernels
import Testing
import TestSupport
@testable import Data

@Suite struct ResampleTests {
    func resize(_ pixels: [UInt8], width: Int, height: Int, crop: (left: Int, top: Int, width: Int, height: Int)? = nil,
                to outputWidth: Int, _ outputHeight: Int) -> [UInt8] {
        let box = crop ?? (0, 0, width, height)
        var output = [UInt8](repeating: 0, count: outputWidth * outputHeight * 3)
        pixels.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { target in
                Resampler().resize(output: target.baseAddress!, outputWidth: outputWidth, outputHeight: outputHeight,
                                   input: input.baseAddress! + (box.top * width + box.left) * 3,
                                   inputWidth: box.width, inputHeight: box.height, inputRowStride: width * 3)
            }
        }
        return output
    }

    @Test func matchesPillowByteForByte() {
        let pattern = testPattern(width: 13, height: 11)
        for reference in pillowResizeCases {
            let output = resize(pattern, width: 13, height: 11, crop: reference.crop, to: reference.width, reference.height)
            let firstDifference = zip(output, reference.bytes).enumerated().first { $0.element.0 != $0.element.1 }
            #expect(output.count == reference.bytes.count)
            #expect(firstDifference == nil,
                    "\(reference.width)x\(reference.height) crop \(String(describing: reference.crop)): byte \(firstDifference?.offset ?? -1) is \(firstDifference?.element.0 ?? 0), Pillow has \(firstDifference?.element.1 ?? 0)")
        }
    }

    @Test func constantImageStaysConstant() {
        let pixels = [UInt8](repeating: 0, count: 7 * 5 * 3).enumerated().map { UInt8([200, 17, 255][$0.offset % 3]) }
        for (width, height) in [(3, 4), (7, 5), (16, 9), (1, 1)] {
            let output = resize(pixels, width: 7, height: 5, to: width, height)
            for (index, value) in output.enumerated() {
                #expect(value == [200, 17, 255][index % 3], "\(width)x\(height) byte \(index)")
            }
        }
    }

    @Test func sameSizeIsIdentity() {
        let pattern = testPattern(width: 9, height: 6)
        #expect(resize(pattern, width: 9, height: 6, to: 9, 6) == pattern)
        // A crop whose size equals the output is copied unchanged.
        let crop = resize(pattern, width: 9, height: 6, crop: (2, 1, 4, 3), to: 4, 3)
        for y in 0..<3 {
            for x in 0..<4 {
                for channel in 0..<3 {
                    #expect(crop[(y * 4 + x) * 3 + channel] == pattern[((y + 1) * 9 + x + 2) * 3 + channel])
                }
            }
        }
    }

    /// 2× downsampling of a ramp 0, 10, ..., 70 (every row and channel the same).
    /// Hand computation: scale 2 stretches the cubic to support 4; output 1 is centred at
    /// input 3.0 and reads inputs 0...6 at distances (x − 3 + 0.5)/2 = −1.25 ... 1.75 with
    /// kernel values −0.0703125, 0.2265625, 0.8671875, 0.8671875, 0.2265625, −0.0703125,
    /// −0.0234375 (sum 2.0234375): 49.765625 / 2.0234375 = 24.59 → 25. Output 0 reads
    /// inputs 0...4 only (clamped at the edge): 10.15625 / 1.8671875 = 5.44 → 5. By the
    /// ramp's symmetry the outputs are 5, 25, 45, 65 give or take the truncated edge taps.
    @Test func downsamplingARampByTwo() {
        var pixels: [UInt8] = []
        for _ in 0..<2 { for x in 0..<8 { pixels += [UInt8(10 * x), UInt8(10 * x), UInt8(10 * x)] } }
        let output = resize(pixels, width: 8, height: 2, to: 4, 2)
        let row = stride(from: 0, to: 12, by: 3).map { output[$0] }
        #expect(row[0] == 5)
        #expect(row[1] == 25)
        // Mirror of the two left outputs: 70 − 25 = 45 and 70 − 5 = 65.
        #expect(row[2] == 45)
        #expect(row[3] == 65)
        #expect(Array(output[0..<12]) == Array(output[12..<24]), "rows of a constant column stay equal")
    }

    /// Upsampling 2 → 4 pixels: outputs at input coordinates −0.25, 0.25, 0.75, 1.25 in pixel
    /// centres; hand-computed from Keys' kernel with the taps clamped to the two pixels.
    @Test func upsamplingTwoPixels() {
        let pixels: [UInt8] = [0, 0, 0, 100, 100, 100]
        let output = resize(pixels, width: 2, height: 1, to: 4, 1)
        // Output 0: centre 0.5·0.5 = 0.25; taps x=0 at distance (0 − 0.25 + 0.5) = 0.25 → 0.8671875,
        // x=1 at 1.25 → −0.0703125; value 100·(−0.0703125)/(0.796875) = −8.8 → clipped to 0.
        // Output 1: centre 0.75; taps at −0.25 (0.8671875) and 0.75 (0.2265625): 22.66/1.09375 = 20.7 → 21.
        // Outputs 2 and 3 mirror them around 50: 79.3 → 79 and 108.8 → 109 (the cubic overshoots).
        let expected: [UInt8] = [0, 21, 79, 109]
        #expect(stride(from: 0, to: 12, by: 3).map { output[$0] } == expected)
    }
}

@Suite struct RandomResizedCropTests {
    @Test(arguments: [(64, 64), (500, 375), (32, 200), (300, 20), (1, 1), (7, 3)])
    func cropParametersStayInBounds(width: Int, height: Int) {
        let augmentation = Augmentation(imageSize: 32)
        var fallbacks = 0
        for index in 0..<2000 {
            let box = augmentation.cropBox(width: width, height: height, seed: 5, epoch: 1, index: index)
            #expect(box.width >= 1 && box.height >= 1 && box.left >= 0 && box.top >= 0)
            #expect(box.left + box.width <= width && box.top + box.height <= height)
            let ratio = Double(box.width) / Double(box.height)
            let areaFraction = Double(box.width * box.height) / Double(width * height)
            let isCentral = box.left == (width - box.width) / 2 && box.top == (height - box.height) / 2
            if width >= 32 && height >= 32 && !isCentral {
                // An accepted sample: rounding moves w and h by at most 0.5 each.
                let lowWidth = Double(box.width) - 0.5, highWidth = Double(box.width) + 0.5
                let lowHeight = Double(box.height) - 0.5, highHeight = Double(box.height) + 0.5
                #expect(lowWidth / highHeight <= 4.0 / 3.0 && highWidth / lowHeight >= 3.0 / 4.0, "ratio \(ratio)")
                #expect(lowWidth * lowHeight <= Double(width * height) && highWidth * highHeight >= 0.2 * Double(width * height),
                        "area fraction \(areaFraction)")
            }
            if isCentral && (box.width == width || box.height == height) { fallbacks += 1 }
        }
        if width == 64 && height == 64 { #expect(fallbacks < 100, "square images rarely need the fallback") }
    }

    @Test func fallbackIsTheClampedCentralCrop() {
        let augmentation = Augmentation(imageSize: 32)
        // A 300x20 image: no sampled crop of area ≥ 0.2 fits with ratio ≤ 4/3, so every
        // draw is the fallback: height 20, width round(20 · 4/3) = 27, centred.
        let box = augmentation.cropBox(width: 300, height: 20, seed: 0, epoch: 0, index: 3)
        #expect(box == CropBox(top: 0, left: (300 - 27) / 2, height: 20, width: 27))
        let tall = augmentation.cropBox(width: 20, height: 300, seed: 0, epoch: 0, index: 3)
        #expect(tall == CropBox(top: (300 - 27) / 2, left: 0, height: 27, width: 20))
    }

    @Test func cropsVaryAndRepeat() {
        let augmentation = Augmentation(imageSize: 32)
        let first = (0..<50).map { augmentation.cropBox(width: 500, height: 375, seed: 1, epoch: 0, index: $0) }
        let again = (0..<50).map { augmentation.cropBox(width: 500, height: 375, seed: 1, epoch: 0, index: $0) }
        let nextEpoch = (0..<50).map { augmentation.cropBox(width: 500, height: 375, seed: 1, epoch: 1, index: $0) }
        #expect(first == again)
        #expect(first != nextEpoch)
        #expect(Set(first.map(\.width)).count > 10)
        let flips = (0..<1000).filter { augmentation.flips(seed: 1, epoch: 0, index: $0) }.count
        #expect(flips > 430 && flips < 570, "about half the samples flip, got \(flips)/1000")
    }

    @Test func normalisationAndFlipAndLayout() {
        // A 1x1 crop region resized to 2x2 is constant; check the planar normalised values.
        let augmentation = Augmentation(imageSize: 4)
        let resized: [UInt8] = (0..<16).flatMap { pixel in [UInt8(pixel * 10), 128, 255] }
        var output = [Float](repeating: 0, count: 3 * 16)
        var flipped = [Float](repeating: 0, count: 3 * 16)
        resized.withUnsafeBufferPointer { source in
            augmentation.normalise(output: &output, resized: source.baseAddress!, rowStride: 12, flip: false)
            augmentation.normalise(output: &flipped, resized: source.baseAddress!, rowStride: 12, flip: true)
        }
        for pixel in 0..<16 {
            #expect(output[pixel] == (Float(pixel * 10) / 255 - 0.485) / 0.229)
            #expect(output[16 + pixel] == (Float(128) / 255 - 0.456) / 0.224)
            #expect(output[32 + pixel] == (Float(255) / 255 - 0.406) / 0.225)
            let row = pixel / 4, column = pixel % 4
            #expect(flipped[pixel] == output[row * 4 + 3 - column])
        }
    }
}

@Suite struct EvaluationTransformTests {
    @Test func resizeAndCentralCropMatchTorchvisionOnPillow() throws {
        let augmentation = Augmentation(imageSize: 8, transform: .evaluation)
        #expect(augmentation.evaluationResize(width: 13, height: 11) == (10, 9))
        #expect(augmentation.evaluationResize(width: 11, height: 13) == (9, 10))
        #expect(augmentation.centerCrop(width: 10, height: 9) == CropBox(top: 0, left: 1, height: 8, width: 8))
        #expect(Augmentation(imageSize: 224, transform: .evaluation).evaluationResize(width: 500, height: 375) == (341, 256))
        #expect(Augmentation(imageSize: 256, transform: .evaluation).evaluationResize(width: 500, height: 375) == (341, 256))

        let pattern = testPattern(width: 13, height: 11)
        var output = [Float](repeating: 0, count: 3 * 64)
        pattern.withUnsafeBufferPointer { pixels in
            let image = RGBImageView(pixels: pixels.baseAddress!, width: 13, height: 11)
            augmentation.apply(output: &output, image: image, seed: 0, epoch: 0, index: 0,
                               resampler: Resampler(), scratch: AugmentationScratch())
        }
        var expected = [Float](repeating: 0, count: 3 * 64)
        for pixel in 0..<64 {
            for channel in 0..<3 {
                let byte = Float(pillowEvaluationBytes[pixel * 3 + channel])
                expected[channel * 64 + pixel] = (byte / 255 - Augmentation.mean[channel]) / Augmentation.standardDeviation[channel]
            }
        }
        let worst = compareValues(output, expected)
        #expect(worst.difference == 0, "element \(worst.index): \(worst.actual) vs \(worst.expected)")
    }
}
