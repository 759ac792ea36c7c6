/// The exact GELU, x · Φ(x) = 0.5 · x · (1 + erf(x / √2)) (PyTorch's default
/// `nn.GELU()`, not the tanh approximation), with Φ the standard normal CDF.
///
/// The forward pass already evaluates Φ(x), so it also stores the derivative
/// GELU'(x) = Φ(x) + x · φ(x) in place of the pre-activation (which nothing else
/// needs): the backward is then one multiplication, and the transcendental work
/// happens once per element and step. The loops are plain scalar code that LLVM
/// vectorises (see `fastExp`).

private let inverseSquareRootTwo: Float = 0.707_106_781_186_547_6
/// 1 / sqrt(2π), for the normal density φ.
private let inverseSquareRootTwoPi: Float = 0.398_942_280_401_432_7

/// GELU(x).
@inline(__always)
public func gelu(_ x: Float) -> Float {
    0.5 * x * (1 + fastErf(x * inverseSquareRootTwo))
}

/// GELU'(x) = Φ(x) + x · φ(x).
@inline(__always)
public func geluDerivative(_ x: Float) -> Float {
    0.5 * (1 + fastErf(x * inverseSquareRootTwo)) + x * inverseSquareRootTwoPi * fastExp(-0.5 * x * x)
}

/// The MLP's bias and activation in one pass, after the fc1 product without bias:
/// for x = preActivation[rows, width] + bias[width]:
/// activated = GELU(x), and preActivation is overwritten with GELU'(x) for `geluBackward`.
public func biasGELUForward(activated: UnsafeMutablePointer<Float>, preActivation: UnsafeMutablePointer<Float>,
                            bias: UnsafePointer<Float>, rows: Int, width: Int) {
    parallelFor(rows, minimumPerWorker: max(1, 16_384 / max(width, 1))) { range in
        for row in range {
            let h = preActivation + row * width
            let a = activated + row * width
            for column in 0..<width {
                let x = h[column] + bias[column]
                let cdf = 0.5 * (1 + fastErf(x * inverseSquareRootTwo))
                a[column] = x * cdf
                h[column] = cdf + x * inverseSquareRootTwoPi * fastExp(-0.5 * x * x)
            }
        }
    }
}

/// inputGradient[count] = outputGradient[count] · derivative[count], where `derivative`
/// holds GELU' as `biasGELUForward` left it (assigned; `inputGradient` may be `outputGradient`).
public func geluBackward(inputGradient: UnsafeMutablePointer<Float>, outputGradient: UnsafePointer<Float>,
                         derivative: UnsafePointer<Float>, count: Int) {
    parallelFor(count, minimumPerWorker: 32_768) { range in
        var index = range.lowerBound
        while index + 16 <= range.upperBound {
            store16(load16(outputGradient + index) * load16(derivative + index), inputGradient + index)
            index += 16
        }
        while index < range.upperBound {
            inputGradient[index] = outputGradient[index] * derivative[index]
            index += 1
        }
    }
}
