import Kernels
import Testing
@testable import Data

@Suite struct PillowOperationTests {
    /// Every RandAugment operation against timm + Pillow on two patterns, byte for byte.
    @Test func operationsMatchPillowByteForByte() throws {
        let width = 13, height = 11
        #expect(pillowOperationCases.count == 46)
        for reference in pillowOperationCases {
            let operation = try #require(RandAugmentOperation(rawValue: reference.operation))
            var pixels = reference.lowContrast ? lowContrastPattern(width: width, height: height) : testPattern(width: width, height: height)
            var scratch = [UInt8](repeating: 0, count: pixels.count)
            pixels.withUnsafeMutableBufferPointer { image in
                scratch.withUnsafeMutableBufferPointer { scratchBytes in
                    operation.apply(image.baseAddress!, width: width, height: height, argument: reference.argument,
                                    fill: RandAugmentSettings.fill, scratch: scratchBytes.baseAddress!)
                }
            }
            let differences = zip(pixels, reference.bytes).enumerated().filter { $0.element.0 != $0.element.1 }
            #expect(differences.isEmpty,
                    "\(reference.operation)(\(reference.argument)) low contrast \(reference.lowContrast): \(differences.count) bytes differ, first at \(differences.first?.offset ?? -1): \(differences.first?.element.0 ?? 0) vs Pillow \(differences.first?.element.1 ?? 0)")
        }
    }

    @Test func posterizeToZeroBitsIsBlack() {
        var pixels = testPattern(width: 4, height: 3)
        pixels.withUnsafeMutableBufferPointer { posterizeImage($0.baseAddress!, pixelCount: 12, bits: 0) }
        #expect(pixels.allSatisfy { $0 == 0 })
    }

    @Test func roundingTo15DecimalsAsPython() {
        // Python: round(math.cos(-math.radians(27.0)), 15) == 0.891006524188368
        #expect(roundedTo15Decimals(0.8910065241883679) == 0.891006524188368)
        #expect(roundedTo15Decimals(-0.45399049973954675) == -0.453990499739547)
        #expect(roundedTo15Decimals(1.0) == 1.0)
    }
}

@Suite struct RandAugmentSettingsTests {
    @Test func parsesTheOfficialConfiguration() throws {
        let settings = try RandAugmentSettings(parsing: "rand-m9-mstd0.5-inc1")
        #expect(settings.magnitude == 9)
        #expect(settings.layers == 2)
        #expect(settings.magnitudeStandardDeviation == 0.5)
        #expect(settings.increasing)
        let other = try RandAugmentSettings(parsing: "rand-n3-m7")
        #expect(other.layers == 3 && other.magnitude == 7 && !other.increasing && other.magnitudeStandardDeviation == 0)
        #expect(try RandAugmentSettings(parsing: "rand").magnitude == 10)
    }

    @Test func rejectsBadConfigurations() {
        for bad in ["", "augmix-m5", "rand-m11", "rand-x3", "rand-w0", "rand-n0", "rand-mstd-1x", "rand-inc2"] {
            #expect(throws: DataError.self, "\(bad)") { try RandAugmentSettings(parsing: bad) }
        }
        do {
            _ = try RandAugmentSettings(parsing: "rand-q4")
        } catch {
            #expect("\(error)".contains("unknown section 'q4'"))
            #expect(!"\(error)".contains("\n"))
        }
    }

    @Test func finetuneSettingsValidateTheirInput() throws {
        let official = FinetuneAugmentationSettings.official
        #expect(official.randAugment?.magnitude == 9)
        #expect(official.randomErasing == RandomErasing(probability: 0.25, mode: .pixel, count: 1))
        #expect(try FinetuneAugmentationSettings(randAugment: "none", reprob: 0).randAugment == nil)
        #expect(try FinetuneAugmentationSettings(reprob: 0).randomErasing == nil)
        #expect(throws: DataError.self) { try FinetuneAugmentationSettings(reprob: 1.5) }
        #expect(throws: DataError.self) { try FinetuneAugmentationSettings(remode: "noise") }
        #expect(throws: DataError.self) { try FinetuneAugmentationSettings(recount: 0) }
    }

    /// The draws follow timm: two operations from the 15, each applied with probability
    /// 0.5, magnitudes around 9 within [0, 10], signs of both kinds.
    @Test func drawsFollowTheDistribution() throws {
        let settings = try RandAugmentSettings(parsing: "rand-m9-mstd0.5-inc1")
        var applied = 0, total = 0
        var seen = Set<String>()
        var negativeRotations = 0, positiveRotations = 0
        for index in 0..<2000 {
            var random = CounterRandom(seed: 5, purpose: .randAugment, epoch: 0, index: index)
            let draw = settings.draw(random: &random)
            #expect(draw.operations.count == 2)
            for (operation, argument) in zip(draw.operations, draw.arguments) {
                #expect(RandAugmentOperation.increasing.contains(operation))
                seen.insert(operation.rawValue)
                total += 1
                guard let argument else { continue }
                applied += 1
                if operation == .rotate {
                    #expect(abs(argument) <= 30)
                    if argument < 0 { negativeRotations += 1 } else { positiveRotations += 1 }
                }
                if operation == .posterizeIncreasing { #expect((0...1).contains(argument)) }
                // Magnitude 9 ± 0.5 stays above 6 (six standard deviations): add = int(level · 11).
                if operation == .solarizeAdd { #expect((66...110).contains(argument)) }
            }
        }
        #expect(seen.count == 15)
        #expect(abs(Double(applied) / Double(total) - 0.5) < 0.03)
        #expect(negativeRotations > 50 && positiveRotations > 50)
        var again = CounterRandom(seed: 5, purpose: .randAugment, epoch: 0, index: 7)
        var first = CounterRandom(seed: 5, purpose: .randAugment, epoch: 0, index: 7)
        #expect(settings.draw(random: &again) == settings.draw(random: &first))
    }
}

@Suite struct RandomErasingTests {
    @Test func boxesStayInsideAndFollowTheProbability() {
        let erasing = RandomErasing(probability: 0.25, mode: .pixel, count: 1)
        var erased = 0
        for index in 0..<4000 {
            var random = CounterRandom(seed: 3, purpose: .randomErasing, epoch: 1, index: index)
            let boxes = erasing.boxes(width: 32, height: 32, random: &random)
            #expect(boxes.count <= 1)
            if let box = boxes.first {
                erased += 1
                #expect(box.top >= 0 && box.left >= 0 && box.top + box.height <= 32 && box.left + box.width <= 32)
                #expect(box.width < 32 && box.height < 32)
                let fraction = Double(box.width * box.height) / 1024
                #expect(fraction > 0.005 && fraction < 0.4)
            }
        }
        #expect(abs(Double(erased) / 4000 - 0.25) < 0.03)
    }

    @Test func pixelModeWritesNoiseOnlyInsideTheBox() {
        let erasing = RandomErasing(probability: 1, mode: .pixel, count: 1)
        let side = 16
        var image = [Float](repeating: 7, count: 3 * side * side)
        image.withUnsafeMutableBufferPointer { erasing.apply($0.baseAddress!, width: side, height: side, seed: 1, epoch: 0, index: 2) }
        var random = CounterRandom(seed: 1, purpose: .randomErasing, epoch: 0, index: 2)
        let box = erasing.boxes(width: side, height: side, random: &random)[0]
        var changed = 0
        for channel in 0..<3 {
            for row in 0..<side {
                for column in 0..<side {
                    let inside = (box.top..<(box.top + box.height)).contains(row) && (box.left..<(box.left + box.width)).contains(column)
                    let value = image[(channel * side + row) * side + column]
                    if inside {
                        // The first value is the next normal of the same stream.
                        if channel == 0 && row == box.top && column == box.left { #expect(value == Float(random.nextNormal())) }
                        changed += 1
                    } else {
                        #expect(value == 7)
                    }
                }
            }
        }
        #expect(changed == 3 * box.width * box.height)
        #expect(image.contains { $0 != 7 })
    }

    @Test func constAndRandModes() {
        let side = 12
        for mode in [RandomErasingMode.const, .rand] {
            var image = [Float](repeating: 7, count: 3 * side * side)
            image.withUnsafeMutableBufferPointer {
                RandomErasing(probability: 1, mode: mode, count: 1).apply($0.baseAddress!, width: side, height: side, seed: 1, epoch: 0, index: 4)
            }
            for channel in 0..<3 {
                let values = Set(image[(channel * side * side)..<((channel + 1) * side * side)].filter { $0 != 7 })
                #expect(values.count == 1, "\(mode): one value per channel")
                if mode == .const { #expect(values == [0]) }
            }
        }
    }
}

@Suite struct FinetuneTransformTests {
    func transformed(_ transform: ImageTransform, seed: UInt64 = 9, epoch: Int = 0, index: Int = 3) -> [Float] {
        let width = 40, height = 30, side = 16
        let pixels = testPattern(width: width, height: height)
        var output = [Float](repeating: 0, count: 3 * side * side)
        pixels.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { target in
                Augmentation(imageSize: side, transform: transform)
                    .apply(output: target.baseAddress!, image: RGBImageView(pixels: input.baseAddress!, width: width, height: height),
                           seed: seed, epoch: epoch, index: index, resampler: Resampler(), scratch: AugmentationScratch())
            }
        }
        return output
    }

    @Test func isDeterministicPerSampleAndVaries() {
        let settings = FinetuneAugmentationSettings.official
        #expect(transformed(.finetuning(settings)) == transformed(.finetuning(settings)))
        #expect(transformed(.finetuning(settings)) != transformed(.finetuning(settings), index: 4))
        #expect(transformed(.finetuning(settings)) != transformed(.finetuning(settings), epoch: 1))
    }

    /// With RandAugment and erasing off, fine-tuning is the linear-probe transform, which is
    /// pre-training's with the crop scale (0.08, 1).
    @Test func withoutExtrasItIsTheLinearProbeTransform() throws {
        let plain = try FinetuneAugmentationSettings(randAugment: "none", reprob: 0)
        for index in 0..<20 {
            #expect(transformed(.finetuning(plain), index: index) == transformed(.linearProbe, index: index), "sample \(index)")
        }
        #expect(Augmentation(imageSize: 8, transform: .linearProbe).scale == (0.08, 1.0))
        #expect(Augmentation(imageSize: 8, transform: .pretraining).scale == (0.2, 1.0))
    }

    /// Flipping the bytes before RandAugment equals flipping them in the normalisation when
    /// nothing else runs.
    @Test func byteFlipMatchesNormalisationFlip() {
        let augmentation = Augmentation(imageSize: 5)
        var bytes = testPattern(width: 5, height: 5)
        var viaNormalise = [Float](repeating: 0, count: 75), viaBytes = [Float](repeating: 0, count: 75)
        bytes.withUnsafeMutableBufferPointer { pixels in
            viaNormalise.withUnsafeMutableBufferPointer {
                augmentation.normalise(output: $0.baseAddress!, resized: pixels.baseAddress!, rowStride: 15, flip: true)
            }
            augmentation.flipRows(pixels.baseAddress!, width: 5, height: 5)
            viaBytes.withUnsafeMutableBufferPointer {
                augmentation.normalise(output: $0.baseAddress!, resized: pixels.baseAddress!, rowStride: 15, flip: false)
            }
        }
        #expect(viaNormalise == viaBytes)
    }
}
