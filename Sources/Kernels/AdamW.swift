import CSupport
import Foundation

/// PyTorch's AdamW (decoupled weight decay), element by element in exactly
/// `torch.optim.AdamW`'s order, so that a run can be compared with the reference:
///   p *= 1 − lr·wd;  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;
///   bc1 = 1 − β1^t;  bc2 = 1 − β2^t;  p −= (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps)
/// with t the step number starting at 1.
/// `roundedParameters`, when given, receives the updated parameters rounded to bf16
/// (`mae_round_to_bf16`, same offsets): the copy that the next bf16 step reads, written
/// here without a pass of its own.
public func adamwUpdate(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>,
                        firstMoment: UnsafeMutablePointer<Float>, secondMoment: UnsafeMutablePointer<Float>,
                        count: Int, learningRate: Float, beta1: Float, beta2: Float, epsilon: Float,
                        weightDecay: Float, step: Int, roundedParameters: UnsafeMutablePointer<UInt16>? = nil) {
    precondition(step >= 1, "AdamW step numbers start at 1")
    // `addcdiv(m, denominator, value: -stepSize)` order: the quotient first.
    // The bias corrections in double precision, then rounded, as PyTorch computes
    // them with Python floats.
    let correction1 = 1 - pow(Double(beta1), Double(step))
    let correction2 = 1 - pow(Double(beta2), Double(step))
    let stepSize = Float(Double(learningRate) / correction1)
    let correction2Root = Float(correction2.squareRoot())
    let decay = 1 - learningRate * weightDecay
    let oneMinusBeta1 = 1 - beta1, oneMinusBeta2 = 1 - beta2
    // The elements of `range`: 16 at a time in C where the CPU has AVX-512, 8 where it has
    // AVX (CSupportAdamW.h; the same operations, so the same bits), rounded to bf16 as they
    // are written when asked; here the rest, one by one.
    parallelFor(count, minimumPerWorker: 32_768) { range in
        let first = range.lowerBound
        let done = mae_adamw_update(parameters + first, gradients + first, firstMoment + first, secondMoment + first,
                                    roundedParameters.map { $0 + first }, range.count, decay, beta1, oneMinusBeta1,
                                    beta2, oneMinusBeta2, stepSize, correction2Root, epsilon)
        for index in (first + done)..<range.upperBound {
            let g = gradients[index]
            let p = parameters[index] * decay
            let m = beta1 * firstMoment[index] + oneMinusBeta1 * g
            let v = beta2 * secondMoment[index] + oneMinusBeta2 * g * g
            firstMoment[index] = m
            secondMoment[index] = v
            parameters[index] = p - stepSize * (m / (v.squareRoot() / correction2Root + epsilon))
        }
        if let roundedParameters, first + done < range.upperBound {
            mae_round_to_bf16(roundedParameters + first + done, parameters + first + done, range.upperBound - first - done)
        }
    }
}
