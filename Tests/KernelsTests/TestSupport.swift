import Foundation
import Kernels
import Testing

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
