import Testing

/// The element of a comparison that exceeds its allowance the most (or comes closest),
/// for failure messages that say where and by how much.
public struct WorstDifference: CustomStringConvertible, Sendable {
    /// Index of the worst element (-1 when the sequences are empty).
    public var index = -1
    public var actual: Double = 0
    public var expected: Double = 0
    /// |actual − expected| at the worst element.
    public var difference: Double = 0
    /// Whether every element was within its allowance.
    public var withinTolerance = true

    public var description: String {
        index < 0 ? "empty" : "worst element \(index): got \(actual), expected \(expected) (|diff| \(difference))"
    }
}

/// Compares elementwise with |actual − expected| ≤ absoluteTolerance + relativeTolerance·|expected|
/// and reports the worst element. NaN counts as infinitely bad.
public func compareValues<Actual: Collection, Expected: Collection>(
    _ actual: Actual, _ expected: Expected, absoluteTolerance: Double = 0, relativeTolerance: Double = 0
) -> WorstDifference where Actual.Element: BinaryFloatingPoint, Expected.Element: BinaryFloatingPoint {
    precondition(actual.count == expected.count, "compared sequences differ in length: \(actual.count) vs \(expected.count)")
    var worst = WorstDifference()
    var worstExcess = -Double.infinity
    for (index, (actualValue, expectedValue)) in zip(actual, expected).enumerated() {
        let a = Double(actualValue), e = Double(expectedValue)
        let difference = abs(a - e)
        let allowance = absoluteTolerance + relativeTolerance * abs(e)
        let excess = difference.isNaN ? Double.infinity : difference - allowance
        if excess > worstExcess || worst.index < 0 {
            worstExcess = excess
            worst.index = index
            worst.actual = a
            worst.expected = e
            worst.difference = difference
        }
        if !(difference <= allowance) { worst.withinTolerance = false }
    }
    return worst
}

/// Expects every |actual − expected| ≤ absolute + relative·|expected|; the failure message
/// names `label` and the worst element.
public func expectClose<Actual: Collection, Expected: Collection>(
    _ actual: Actual, _ expected: Expected, absolute: Double, relative: Double = 0, _ label: String,
    sourceLocation: SourceLocation = #_sourceLocation
) where Actual.Element: BinaryFloatingPoint, Expected.Element: BinaryFloatingPoint {
    guard actual.count == expected.count else {
        Issue.record("\(label): \(actual.count) values, expected \(expected.count)", sourceLocation: sourceLocation)
        return
    }
    let worst = compareValues(actual, expected, absoluteTolerance: absolute, relativeTolerance: relative)
    #expect(worst.withinTolerance, "\(label): \(worst) (allowed \(absolute) + \(relative)·|expected|)",
            sourceLocation: sourceLocation)
}
