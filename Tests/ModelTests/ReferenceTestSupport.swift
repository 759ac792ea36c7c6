import Foundation
import Testing

/// The largest difference between two float sequences and where it is, for test messages.
struct WorstDifference: CustomStringConvertible {
    /// Index of the worst element (-1 when the sequences are empty).
    var index = -1
    var actual: Float = 0
    var expected: Float = 0
    /// |actual − expected| at the worst element, by the chosen measure.
    var absolute: Float = 0
    /// Whether every element was within tolerance.
    var withinTolerance = true

    var description: String {
        index < 0 ? "empty" : "worst element \(index): got \(actual), expected \(expected) (|diff| \(absolute))"
    }
}

/// Compares elementwise with |a − e| ≤ absoluteTolerance + relativeTolerance·|e| and
/// reports the element that exceeds its allowance the most (or comes closest).
func compareFloats(_ actual: UnsafeBufferPointer<Float>, _ expected: UnsafeBufferPointer<Float>,
                   absoluteTolerance: Float, relativeTolerance: Float = 0) -> WorstDifference {
    precondition(actual.count == expected.count, "compared sequences differ in length")
    var worst = WorstDifference()
    var worstExcess = -Float.infinity
    for index in 0 ..< actual.count {
        let difference = abs(actual[index] - expected[index])
        let allowance = absoluteTolerance + relativeTolerance * abs(expected[index])
        // NaN compares false everywhere: count it as infinitely bad.
        let excess = difference.isNaN ? Float.infinity : difference - allowance
        if excess > worstExcess || worst.index < 0 {
            worstExcess = excess
            worst.index = index
            worst.actual = actual[index]
            worst.expected = expected[index]
            worst.absolute = difference
        }
        if !(difference <= allowance) { worst.withinTolerance = false }
    }
    return worst
}

func compareFloats(_ actual: [Float], _ expected: [Float],
                   absoluteTolerance: Float, relativeTolerance: Float = 0) -> WorstDifference {
    actual.withUnsafeBufferPointer { a in
        expected.withUnsafeBufferPointer { e in
            compareFloats(a, e, absoluteTolerance: absoluteTolerance, relativeTolerance: relativeTolerance)
        }
    }
}

/// A fresh directory under the system's temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "mae-model-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}
