import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The largest difference between two float sequences and where it is, for test messages.
struct WorstDifference: CustomStringConvertible {
    var index = -1
    var actual: Double = 0
    var expected: Double = 0
    var difference: Double = 0
    var withinTolerance = true

    var description: String {
        index < 0 ? "empty" : "worst element \(index): got \(actual), expected \(expected) (|diff| \(difference))"
    }
}

/// Compares elementwise with |a − e| ≤ absolute + relative·|e|; reports the element that
/// exceeds its allowance the most. NaN counts as infinitely bad.
func compareValues(_ actual: [Double], _ expected: [Double], absoluteTolerance: Double,
                   relativeTolerance: Double = 0) -> WorstDifference {
    precondition(actual.count == expected.count, "compared sequences differ in length")
    var worst = WorstDifference()
    var worstExcess = -Double.infinity
    for index in 0..<actual.count {
        let difference = abs(actual[index] - expected[index])
        let allowance = absoluteTolerance + relativeTolerance * abs(expected[index])
        let excess = difference.isNaN ? Double.infinity : difference - allowance
        if excess > worstExcess || worst.index < 0 {
            worstExcess = excess
            worst = WorstDifference(index: index, actual: actual[index], expected: expected[index],
                                    difference: difference, withinTolerance: worst.withinTolerance)
        }
        if !(difference <= allowance) { worst.withinTolerance = false }
    }
    return worst
}

func compareValues(_ actual: [Float], _ expected: [Float], absoluteTolerance: Double,
                   relativeTolerance: Double = 0) -> WorstDifference {
    compareValues(actual.map(Double.init), expected.map(Double.init), absoluteTolerance: absoluteTolerance,
                  relativeTolerance: relativeTolerance)
}

/// A fresh directory under the temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init(_ label: String = "training") throws {
        path = NSTemporaryDirectory() + "mae-\(label)-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

func fileExists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

func readText(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
