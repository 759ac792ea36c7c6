import Foundation

/// The fine-tuning loss, timm's `SoftTargetCrossEntropy`:
///   loss = mean over the batch of Σ_c −target[b, c] · log_softmax(logits[b])[c].
/// Hard labels with label smoothing (timm's `LabelSmoothingCrossEntropy`) are the same
/// loss with targets 1 − ε + ε/C on the label and ε/C elsewhere, built by the caller;
/// Mixup and CutMix targets are mixtures of those.

/// Returns the loss over logits[batch, classes] and targets[batch, classes], accumulated
/// in double precision (log-sum-exp with the row maximum subtracted).
public func softTargetCrossEntropy(logits: UnsafePointer<Float>, targets: UnsafePointer<Float>,
                                   batch: Int, classes: Int) -> Float {
    var total = 0.0
    for sample in 0..<batch {
        let z = logits + sample * classes, t = targets + sample * classes
        let logSum = logSumExp(z, count: classes)
        var row = 0.0
        for index in 0..<classes { row -= Double(t[index]) * (Double(z[index]) - logSum) }
        total += row
    }
    return Float(total / Double(batch))
}

/// logitsGradient[batch, classes] = scale · ∂loss/∂logits
///   = scale · (softmax(logits[b]) · Σ_c target[b, c] − target[b]) / batch (assigned).
public func softTargetCrossEntropyBackward(logitsGradient: UnsafeMutablePointer<Float>,
                                           logits: UnsafePointer<Float>, targets: UnsafePointer<Float>,
                                           batch: Int, classes: Int, scale: Float = 1) {
    let factor = Double(scale) / Double(batch)
    for sample in 0..<batch {
        let z = logits + sample * classes, t = targets + sample * classes
        let g = logitsGradient + sample * classes
        let logSum = logSumExp(z, count: classes)
        var targetSum = 0.0
        for index in 0..<classes { targetSum += Double(t[index]) }
        for index in 0..<classes {
            let probability = exp(Double(z[index]) - logSum)
            g[index] = Float(factor * (probability * targetSum - Double(t[index])))
        }
    }
}

/// log Σ exp(values), in double precision.
private func logSumExp(_ values: UnsafePointer<Float>, count: Int) -> Double {
    var maximum = -Double.infinity
    for index in 0..<count { maximum = max(maximum, Double(values[index])) }
    var sum = 0.0
    for index in 0..<count { sum += exp(Double(values[index]) - maximum) }
    return maximum + log(sum)
}
