/// The exact GELU, x · Φ(x) = 0.5 · x · (1 + erf(x / √2)) (PyTorch's default
/// `nn.GELU()`, not the tanh approximation).

private let inverseSquareRootTwo: Float = 0.707_106_781_186_547_6
/// 1 / sqrt(2π), for the normal density in the derivative.
private let inverseSquareRootTwoPi: Float = 0.398_942_280_401_432_7

@inline(__always)
func gelu16(_ x: SIMD16<Float>) -> SIMD16<Float> {
    0.5 * x * (1 + erf16(x * inverseSquareRootTwo))
}

@inline(__always)
func geluScalar(_ x: Float) -> Float {
    0.5 * x * (1 + erfScalar(x * inverseSquareRootTwo))
}

/// GELU'(x) = Φ(x) + x · φ(x).
@inline(__always)
func geluDerivative16(_ x: SIMD16<Float>) -> SIMD16<Float> {
    0.5 * (1 + erf16(x * inverseSquareRootTwo)) + x * inverseSquareRootTwoPi * exp16(-0.5 * x * x)
}

@inline(__always)
func geluDerivativeScalar(_ x: Float) -> Float {
    0.5 * (1 + erfScalar(x * inverseSquareRootTwo)) + x * inverseSquareRootTwoPi * expScalar(-0.5 * x * x)
}

/// output[count] = GELU(input[count]). `output` may be `input`.
public func geluForward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, count: Int) {
    parallelFor(count, minimumPerWorker: 16_384) { range in
        var index = range.lowerBound
        while index + 16 <= range.upperBound {
            store16(gelu16(load16(input + index)), output + index)
            index += 16
        }
        while index < range.upperBound {
            output[index] = geluScalar(input[index])
            index += 1
        }
    }
}

/// The MLP's bias and activation in one pass, after the fc1 product without bias:
/// preActivation[rows, width] += bias[width] (kept for the backward), activated = GELU(preActivation).
public func biasGELUForward(activated: UnsafeMutablePointer<Float>, preActivation: UnsafeMutablePointer<Float>,
                            bias: UnsafePointer<Float>, rows: Int, width: Int) {
    parallelFor(rows, minimumPerWorker: max(1, 16_384 / max(width, 1))) { range in
        for row in range {
            let h = preActivation + row * width
            let a = activated + row * width
            var column = 0
            while column + 16 <= width {
                let x = load16(h + column) + load16(bias + column)
                store16(x, h + column)
                store16(gelu16(x), a + column)
                column += 16
            }
            while column < width {
                let x = h[column] + bias[column]
                h[column] = x
                a[column] = geluScalar(x)
                column += 1
            }
        }
    }
}

/// inputGradient[count] = outputGradient[count] · GELU'(input[count]) (assigned;
/// `inputGradient` may be `outputGradient`).
public func geluBackward(inputGradient: UnsafeMutablePointer<Float>, outputGradient: UnsafePointer<Float>,
                         input: UnsafePointer<Float>, count: Int) {
    parallelFor(count, minimumPerWorker: 16_384) { range in
        var index = range.lowerBound
        while index + 16 <= range.upperBound {
            store16(load16(outputGradient + index) * geluDerivative16(load16(input + index)), inputGradient + index)
            index += 16
        }
        while index < range.upperBound {
            inputGradient[index] = outputGradient[index] * geluDerivativeScalar(input[index])
            index += 1
        }
    }
}
