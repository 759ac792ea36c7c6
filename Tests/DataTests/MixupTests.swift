import Kernels
import Testing
@testable import Data

@Suite struct MixupTests {
    /// Beta(α, α) has mean 1/2 and variance 1/(4(2α + 1)); Beta(2, 5) mean 2/7.
    @Test func betaSamplesHaveTheRightMoments() {
        for (a, b) in [(0.8, 0.8), (1.0, 1.0), (2.0, 5.0), (0.3, 0.3)] {
            var random = CounterRandom(seed: 11, purpose: .test, epoch: 0, index: Int(a * 100 + b))
            let count = 40_000
            var sum = 0.0, sumSquares = 0.0
            for _ in 0..<count {
                let x = random.nextBeta(a, b)
                #expect(x >= 0 && x <= 1)
                sum += x
                sumSquares += x * x
            }
            let mean = sum / Double(count), variance = sumSquares / Double(count) - mean * mean
            let expectedMean = a / (a + b), expectedVariance = a * b / ((a + b) * (a + b) * (a + b + 1))
            // Standard error of the mean: sqrt(variance / count) ≤ 0.0025; allow 4 of them.
            #expect(abs(mean - expectedMean) < 0.01, "Beta(\(a), \(b)) mean \(mean)")
            #expect(abs(variance - expectedVariance) < 0.01, "Beta(\(a), \(b)) variance \(variance)")
        }
    }

    @Test func gammaMeanIsTheShape() {
        var random = CounterRandom(seed: 2, purpose: .test)
        for shape in [0.8, 1.0, 3.5] {
            let count = 20_000
            let mean = (0..<count).reduce(0.0) { sum, _ in sum + random.nextGamma(shape: shape) } / Double(count)
            #expect(abs(mean - shape) < 0.05 * shape, "Gamma(\(shape)) mean \(mean)")
        }
    }

    /// Hand computation for an 8×8 image at λ = 0.75: ratio sqrt(0.25) = 0.5, cut 4×4; the
    /// centre (row, column) is the stream's first two draws below 8; the box is
    /// [c − 2, c + 2) clipped, and λ = 1 − area / 64.
    @Test func cutMixBoxAndLambdaCorrection() {
        var random = CounterRandom(seed: 4, purpose: .mixup)
        var copy = random
        let centreY = copy.nextInt(below: 8), centreX = copy.nextInt(below: 8)
        let (box, lambda) = cutMixBox(height: 8, width: 8, lambda: 0.75, random: &random)
        #expect(box == CutMixBox(top: max(centreY - 2, 0), bottom: min(centreY + 2, 8),
                                 left: max(centreX - 2, 0), right: min(centreX + 2, 8)))
        let area = (box.bottom - box.top) * (box.right - box.left)
        #expect(lambda == 1 - Double(area) / 64)
        // A box in a corner: centre (0, 7) gives rows 0..<2, columns 5..<8, λ = 1 − 6/64.
        var found = false
        for index in 0..<2000 where !found {
            var probe = CounterRandom(seed: 4, purpose: .test, index: index)
            var draws = probe
            if draws.nextInt(below: 8) == 0 && draws.nextInt(below: 8) == 7 {
                let corner = cutMixBox(height: 8, width: 8, lambda: 0.75, random: &probe)
                #expect(corner.box == CutMixBox(top: 0, bottom: 2, left: 5, right: 8))
                #expect(corner.lambda == 1 - 6.0 / 64)
                found = true
            }
        }
        #expect(found)
    }

    func batch(count: Int, side: Int) -> [Float] {
        (0..<(count * 3 * side * side)).map { Float($0 % 97) * 0.25 - Float($0 / (3 * side * side)) }
    }

    @Test func mixedBatchesAreDeterministicAndTargetsSumToOne() throws {
        let settings = try MixupSettings()
        let labels = [0, 3, 1, 4, 2, 2]
        var sawCutMix = false, sawMixup = false
        for step in 0..<40 {
            var images = batch(count: 6, side: 8), again = images
            var targets = [Float](repeating: -1, count: 6 * 5), againTargets = targets
            let outcome = images.withUnsafeMutableBufferPointer { image in
                targets.withUnsafeMutableBufferPointer {
                    mixBatch(images: image.baseAddress!, labels: labels, height: 8, width: 8, classCount: 5, settings: settings,
                             seed: 1, epoch: 2, stream: step, targets: $0.baseAddress!)
                }
            }
            let repeated = again.withUnsafeMutableBufferPointer { image in
                againTargets.withUnsafeMutableBufferPointer {
                    mixBatch(images: image.baseAddress!, labels: labels, height: 8, width: 8, classCount: 5, settings: settings,
                             seed: 1, epoch: 2, stream: step, targets: $0.baseAddress!)
                }
            }
            #expect(outcome == repeated)
            #expect(images == again)
            #expect(targets == againTargets)
            #expect(outcome.lambda >= 0 && outcome.lambda <= 1)
            if outcome.cutMixBox != nil { sawCutMix = true } else { sawMixup = true }
            for row in 0..<6 {
                let sum = targets[(row * 5)..<(row * 5 + 5)].reduce(0, +)
                #expect(abs(sum - 1) < 1e-6, "row \(row) sums to \(sum)")
                // The own label carries at least λ(0.9 + 0.02).
                #expect(Double(targets[row * 5 + labels[row]]) >= outcome.lambda * 0.92 - 1e-6)
            }
        }
        #expect(sawCutMix && sawMixup)
    }

    /// Mixup: image i becomes x_i·λ + x_{N−1−i}·(1 − λ); CutMix: image i holds the box of
    /// the original image N−1−i and is unchanged outside it.
    @Test func imagesAreMixedWithTheReversedBatch() throws {
        let side = 8, floats = 3 * side * side, count = 4
        let original = batch(count: count, side: side)
        var checkedCutMix = false, checkedMixup = false
        for step in 0..<40 {
            var images = original
            var targets = [Float](repeating: 0, count: count * 3)
            let outcome = images.withUnsafeMutableBufferPointer { image in
                targets.withUnsafeMutableBufferPointer {
                    mixBatch(images: image.baseAddress!, labels: [0, 1, 2, 0], height: side, width: side, classCount: 3,
                             settings: try! MixupSettings(), seed: 8, epoch: 0, stream: step, targets: $0.baseAddress!)
                }
            }
            for image in 0..<count {
                let other = count - 1 - image
                for element in 0..<floats {
                    let row = (element % (side * side)) / side, column = element % side
                    let mine = original[image * floats + element], theirs = original[other * floats + element]
                    let value = images[image * floats + element]
                    if let box = outcome.cutMixBox {
                        let inside = (box.top..<box.bottom).contains(row) && (box.left..<box.right).contains(column)
                        #expect(value == (inside ? theirs : mine))
                        checkedCutMix = true
                    } else {
                        #expect(value == mine * Float(outcome.lambda) + theirs * Float(1 - outcome.lambda))
                        checkedMixup = true
                    }
                }
            }
        }
        #expect(checkedCutMix && checkedMixup)
    }

    @Test func smoothedTargetsWithoutMixing() throws {
        var targets = [Float](repeating: 0, count: 2 * 4)
        targets.withUnsafeMutableBufferPointer { smoothedTargets(labels: [2, 0], classCount: 4, smoothing: 0.1, targets: $0.baseAddress!) }
        #expect(targets == [0.025, 0.025, 0.925, 0.025, 0.925, 0.025, 0.025, 0.025])
        targets.withUnsafeMutableBufferPointer { smoothedTargets(labels: [1, 3], classCount: 4, smoothing: 0, targets: $0.baseAddress!) }
        #expect(targets == [0, 1, 0, 0, 0, 0, 0, 1])
        // Mixing off: the batch is left alone and the targets are the smoothed labels.
        var images = batch(count: 2, side: 4)
        let before = images
        let off = try MixupSettings(mixupAlpha: 0, cutmixAlpha: 0)
        let outcome = images.withUnsafeMutableBufferPointer { image in
            targets.withUnsafeMutableBufferPointer {
                mixBatch(images: image.baseAddress!, labels: [2, 0], height: 4, width: 4, classCount: 4, settings: off,
                         seed: 1, epoch: 0, stream: 0, targets: $0.baseAddress!)
            }
        }
        #expect(outcome == MixupOutcome(lambda: 1, cutMixBox: nil))
        #expect(images == before)
        #expect(targets == [0.025, 0.025, 0.925, 0.025, 0.925, 0.025, 0.025, 0.025])
        #expect(throws: DataError.self) { try MixupSettings(probability: 2) }
    }
}
