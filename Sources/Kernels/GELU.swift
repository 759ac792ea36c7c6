import CSupport

/// The exact GELU, x · Φ(x) = 0.5 · x · (1 + erf(x / √2)) (PyTorch's default
/// `nn.GELU()`, not the tanh approximation), with Φ the standard normal CDF
/// (computed to about 2e-7, `normalCDFAndDensity`).
///
/// The forward pass already evaluates Φ(x), so it also stores the derivative
/// GELU'(x) = Φ(x) + x · φ(x) in place of the pre-activation (which nothing else
/// needs): the backward is then one multiplication, and the transcendental work
/// happens once per element and step. The loops are plain scalar code that LLVM
/// vectorises (see `fastExp`); the forward runs in C with AVX-512 where the CPU has it
/// (CSupportGELU.h, the same operations in the same order).

/// 1 / sqrt(2π), for the normal density φ.
private let inverseSquareRootTwoPi: Float = 0.398_942_280_401_432_7

/// Φ(x) and φ(x), the standard normal CDF and density, from one exponential:
/// φ(x) = e^(−x²/2) / √(2π), and the tail Q(|x|) = φ(x) · P(t) with t = 1 / (1 + 0.2316419 |x|)
/// and P a degree-5 polynomial (Abramowitz & Stegun 26.2.17, error below 7.5e-8 in exact
/// arithmetic, about 2e-7 in Float); Φ(x) = 1 − Q for x ≥ 0 and Q for x < 0. One
/// exponential serves both, where erf and φ would need two transcendental evaluations.
/// Branch-free, so the loops that call it vectorise (see `fastExp`).
@inline(__always)
public func normalCDFAndDensity(_ x: Float) -> (cdf: Float, density: Float) {
    let density = inverseSquareRootTwoPi * fastExp(-0.5 * x * x)
    let magnitude = x < 0 ? -x : x
    let t = 1 / (1 + 0.231_641_9 * magnitude)
    var p: Float = 1.330_274_429
    p = p * t + -1.821_255_978
    p = p * t + 1.781_477_937
    p = p * t + -0.356_563_782
    p = p * t + 0.319_381_530
    let tail = density * (p * t)
    return (x < 0 ? tail : 1 - tail, density)
}

/// The MLP's bias and activation in one pass, after the fc1 product without bias:
/// for x = preActivation[rows, width] + bias[width]:
/// activated = GELU(x), and preActivation is overwritten with GELU'(x) for `geluBackward`.
/// With `roundedActivated` GELU(x) goes there instead, rounded to bf16 row by row as it is
/// produced (for the bf16 fc2 product; `activated` is then left alone).
public func biasGELUForward(activated: UnsafeMutablePointer<Float>, preActivation: UnsafeMutablePointer<Float>,
                            bias: UnsafePointer<Float>, rows: Int, width: Int,
                            roundedActivated: UnsafeMutablePointer<UInt16>? = nil) {
    parallelFor(rows, minimumPerWorker: max(1, 16_384 / max(width, 1))) { range in
        // Twice as wide where the CPU has AVX-512 (CSupportGELU.h; the same bits).
        let first = range.lowerBound * width
        if mae_bias_gelu_avx512(activated + first, roundedActivated.map { $0 + first }, preActivation + first, bias,
                                range.count, width) != 0 { return }
        withRowBuffer(width: width, needed: roundedActivated != nil) { rowBuffer in
            for row in range {
                let h = preActivation + row * width
                let a = rowBuffer ?? activated + row * width
                for column in 0..<width {
                    let x = h[column] + bias[column]
                    let (cdf, density) = normalCDFAndDensity(x)
                    a[column] = x * cdf
                    h[column] = cdf + x * density
                }
                if let roundedActivated { mae_round_to_bf16(roundedActivated + row * width, a, width) }
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
