import Foundation
import Kernels
import Testing

/// Deterministic test values, uniform in [low, high), from CounterRandom(.test).
func randomValues(_ count: Int, seed: Int, in range: Range<Double> = -1..<1) -> [Double] {
    var random = CounterRandom(seed: 1234, purpose: .test, index: seed)
    return (0..<count).map { _ in random.nextDouble(in: range) }
}

/// The worst element of `actual` against `expected`: passes when every
/// |actual − expected| ≤ absolute + relative · |expected|; the failure message names
/// the worst element, its values and the error.
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

/// Central differences of `f` at `x` in double precision, every coordinate.
func numericGradient(_ x: [Double], step: Double = 1e-6, _ f: ([Double]) -> Double) -> [Double] {
    var point = x
    return (0..<x.count).map { index in
        point[index] = x[index] + step
        let up = f(point)
        point[index] = x[index] - step
        let down = f(point)
        point[index] = x[index]
        return (up - down) / (2 * step)
    }
}

/// A float buffer holding `values`.
func buffer(_ values: [Double]) -> FloatBuffer { FloatBuffer(values.map { Float($0) }) }

/// Values rounded to Float and back, so that references see exactly the kernel's inputs.
func rounded(_ values: [Double]) -> [Double] { values.map { Double(Float($0)) } }

func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }
