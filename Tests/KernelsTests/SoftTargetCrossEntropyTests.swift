import Foundation
import Kernels
import Testing
import TestSupport

/// The fine-tuning loss against a double-precision reference and its own finite differences.
@Suite struct SoftTargetCrossEntropyTests {
    static func reference(_ logits: [Double], _ targets: [Double], batch: Int, classes: Int) -> Double {
        var total = 0.0
        for sample in 0..<batch {
            let row = Array(logits[(sample * classes)..<((sample + 1) * classes)])
            let maximum = row.max()!
            let logSum = maximum + log(row.map { exp($0 - maximum) }.reduce(0, +))
            for index in 0..<classes { total -= targets[sample * classes + index] * (row[index] - logSum) }
        }
        return total / Double(batch)
    }

    @Test func lossAndGradientMatchTheReference() {
        let batch = 3, classes = 7
        var random = CounterRandom(seed: 11, purpose: .test)
        let logits = rounded((0..<(batch * classes)).map { _ in 4 * random.nextNormal() })
        // Label-smoothed one-hot rows, a Mixup-like mixture, and a row that does not sum to 1.
        var targets = [Double](repeating: 0.1 / 7, count: batch * classes)
        targets[2] += 0.9
        for index in 0..<classes { targets[classes + index] = 0.3 * targets[index] + (index == 5 ? 0.7 : 0) }
        for index in 0..<classes { targets[2 * classes + index] = Double(index) / 10 }
        targets = rounded(targets)
        let logitsBuffer = buffer(logits), targetsBuffer = buffer(targets)

        let loss = softTargetCrossEntropy(logits: logitsBuffer.pointer, targets: targetsBuffer.pointer,
                                          batch: batch, classes: classes)
        let expected = Self.reference(logits, targets, batch: batch, classes: classes)
        #expect(abs(Double(loss) - expected) <= 1e-6 * abs(expected), "loss \(loss), expected \(expected)")

        let gradient = FloatBuffer(count: batch * classes)
        softTargetCrossEntropyBackward(logitsGradient: gradient.pointer, logits: logitsBuffer.pointer,
                                       targets: targetsBuffer.pointer, batch: batch, classes: classes, scale: 0.5)
        let numeric = numericGradient(logits) { Self.reference($0, targets, batch: batch, classes: classes) }
        expectClose(gradient.toArray(), numeric.map { 0.5 * $0 }, absolute: 1e-6, relative: 1e-4, "logits gradient")
    }

    /// Large logits stay finite (the row maximum is subtracted).
    @Test func largeLogitsStayFinite() {
        let logits = FloatBuffer([1000, -1000, 999]), targets = FloatBuffer([0.5, 0, 0.5])
        let loss = softTargetCrossEntropy(logits: logits.pointer, targets: targets.pointer, batch: 1, classes: 3)
        #expect(loss.isFinite && abs(loss - 0.81326) < 1e-4)
    }
}
