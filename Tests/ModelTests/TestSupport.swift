import Foundation
import Kernels
import Testing

/// Deterministic test values, uniform in [low, high), from CounterRandom(.test).
func randomValues(_ count: Int, seed: Int, in range: Range<Double> = -1..<1) -> [Double] {
    var random = CounterRandom(seed: 4321, purpose: .test, index: seed)
    return (0..<count).map { _ in random.nextDouble(in: range) }
}

/// Passes when every |actual − expected| ≤ absolute + relative · |expected|; the
/// failure message names the worst element.
func expectClose(_ actual: [Double], _ expected: [Double], absolute: Double, relative: Double = 0,
                 _ label: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(actual.count == expected.count, "\(label): \(actual.count) values, expected \(expected.count)",
            sourceLocation: sourceLocation)
    var worstIndex = -1, worstExcess = -Double.infinity, worstError = 0.0
    for index in 0..<min(actual.count, expected.count) {
        let error = abs(actual[index] - expected[index])
        let excess = error - (absolute + relative * abs(expected[index]))
        if excess > worstExcess || error.isNaN { worstExcess = error.isNaN ? .infinity : excess; worstIndex = index; worstError = error }
    }
    guard worstIndex >= 0 else { return }
    #expect(worstExcess <= 0,
            "\(label): worst element \(worstIndex): \(actual[worstIndex]) vs expected \(expected[worstIndex]) (error \(worstError), allowed \(absolute) + \(relative)·|expected|)",
            sourceLocation: sourceLocation)
}

func expectClose(_ actual: [Float], _ expected: [Double], absolute: Double, relative: Double = 0,
                 _ label: String, sourceLocation: SourceLocation = #_sourceLocation) {
    expectClose(actual.map(Double.init), expected, absolute: absolute, relative: relative, label,
                sourceLocation: sourceLocation)
}
