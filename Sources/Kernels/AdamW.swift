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
    // The elements of `range`: vectors of 16 from its start, then one by one.
    func update(_ range: Range<Int>) {
        var index = range.lowerBound
        while index + 16 <= range.upperBound {
            let g = load16(gradients + index)
            let p = load16(parameters + index) * decay
            let m = beta1 * load16(firstMoment + index) + oneMinusBeta1 * g
            let v = beta2 * load16(secondMoment + index) + oneMinusBeta2 * g * g
            store16(m, firstMoment + index)
            store16(v, secondMoment + index)
            store16(p - stepSize * (m / (v.squareRoot() / correction2Root + epsilon)), parameters + index)
            index += 16
        }
        while index < range.upperBound {
            let g = gradients[index]
            let p = parameters[index] * decay
            let m = beta1 * firstMoment[index] + oneMinusBeta1 * g
            let v = beta2 * secondMoment[index] + oneMinusBeta2 * g * g
            firstMoment[index] = m
            secondMoment[index] = v
            parameters[index] = p - stepSize * (m / (v.squareRoot() / correction2Root + epsilon))
            index += 1
        }
    }
    parallelFor(count, minimumPerWorker: 32_768) { range in
        guard let roundedParameters else { return update(range) }
        // Blocks of 4,096 (a multiple of 16: the vectors cover the elements they cover on the
        // whole range, the same bits), each rounded right after its update, while in cache.
        for start in stride(from: range.lowerBound, to: range.upperBound, by: 4_096) {
            let block = start..<min(range.upperBound, start + 4_096)
            update(block)
            mae_round_to_bf16(roundedParameters + start, parameters + start, block.count)
        }
    }
}
