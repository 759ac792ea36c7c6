/// MAE's reconstruction loss: the mean squared error per patch, averaged over the
/// removed patches only, optionally against per-patch normalised pixels.

/// Normalises each row of target[rows, width] in place to (t − mean) / sqrt(var + epsilon)
/// with the UNBIASED variance (n − 1), as the official `norm_pix_loss` (torch `.var()`).
public func normalizePatches(_ target: UnsafeMutablePointer<Float>, rows: Int, width: Int, epsilon: Float = 1e-6) {
    parallelFor(rows, minimumPerWorker: 64) { range in
        for row in range {
            let t = target + row * width
            var sum = 0.0
            for column in 0..<width { sum += Double(t[column]) }
            let mean = sum / Double(width)
            var squares = 0.0
            for column in 0..<width { let d = Double(t[column]) - mean; squares += d * d }
            let variance = squares / Double(max(width - 1, 1))
            let reciprocal = 1 / (variance + Double(epsilon)).squareRoot()
            for column in 0..<width { t[column] = Float((Double(t[column]) - mean) * reciprocal) }
        }
    }
}

/// Σ_{n,l} mask[n,l] · mean_k (prediction − target)²  /  Σ mask,
/// over prediction/target [batch, patches, width] and mask [batch, patches] (1 = removed).
/// Accumulates in double precision. Returns 0 when nothing is masked.
public func maskedMSELoss(prediction: UnsafePointer<Float>, target: UnsafePointer<Float>,
                          mask: UnsafePointer<Float>, batch: Int, patches: Int, width: Int) -> Float {
    var total = 0.0, maskSum = 0.0
    for item in 0..<(batch * patches) where mask[item] != 0 {
        let p = prediction + item * width, t = target + item * width
        var squares16 = SIMD16<Float>()
        var column = 0
        while column + 16 <= width {
            let difference = load16(p + column) - load16(t + column)
            squares16 += difference * difference
            column += 16
        }
        var squares = Double(squares16.sum())
        while column < width { let d = Double(p[column] - t[column]); squares += d * d; column += 1 }
        total += Double(mask[item]) * squares / Double(width)
        maskSum += Double(mask[item])
    }
    return maskSum > 0 ? Float(total / maskSum) : 0
}

/// predictionGradient[batch, patches, width] = scale · ∂loss/∂prediction
/// = scale · mask · 2 (prediction − target) / (width · Σ mask) (assigned; zero on kept patches).
public func maskedMSELossBackward(predictionGradient: UnsafeMutablePointer<Float>,
                                  prediction: UnsafePointer<Float>, target: UnsafePointer<Float>,
                                  mask: UnsafePointer<Float>, batch: Int, patches: Int, width: Int,
                                  scale: Float = 1) {
    var maskSum = 0.0
    for item in 0..<(batch * patches) { maskSum += Double(mask[item]) }
    let factor = maskSum > 0 ? Float(2 / (Double(width) * maskSum)) * scale : 0
    parallelFor(batch * patches, minimumPerWorker: 64) { range in
        for item in range {
            let g = predictionGradient + item * width
            let weight = factor * mask[item]
            if weight == 0 {
                g.update(repeating: 0, count: width)
                continue
            }
            let p = prediction + item * width, t = target + item * width
            for column in 0..<width { g[column] = weight * (p[column] - t[column]) }
        }
    }
}
