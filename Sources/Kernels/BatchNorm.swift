/// BatchNorm1d without affine parameters (PyTorch's `BatchNorm1d(affine=False)`), the
/// normalisation in front of the linear probe's head. Each column (feature) is one
/// independent channel; every column is handled whole by one worker and summed in row
/// order, in double precision, so the results do not depend on the thread count.

/// Training forward over a batch, [rows, width]: output = (x − mean) / sqrt(var + ε) with the
/// batch's mean and biased variance. Saves each column's mean and 1 / sqrt(var + ε) for the
/// backward, and moves the running statistics toward the batch's as PyTorch does:
/// running = (1 − momentum) · running + momentum · batch value, with the unbiased variance
/// (× rows / (rows − 1)) for `runningVariance`. Needs rows ≥ 2 (PyTorch refuses one row too).
public func batchNormForwardTraining(output: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>,
                                     reciprocalStd: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                                     runningMean: UnsafeMutablePointer<Float>, runningVariance: UnsafeMutablePointer<Float>,
                                     rows: Int, width: Int, momentum: Float = 0.1, epsilon: Float = 1e-6) {
    precondition(rows >= 2, "BatchNorm1d in training needs at least 2 rows, got \(rows)")
    parallelFor(width, minimumPerWorker: max(1, 4_096 / rows)) { columns in
        for column in columns {
            var sum = 0.0
            for row in 0..<rows { sum += Double(input[row * width + column]) }
            let columnMean = sum / Double(rows)
            var squares = 0.0
            for row in 0..<rows {
                let centred = Double(input[row * width + column]) - columnMean
                squares += centred * centred
            }
            let variance = squares / Double(rows)
            let reciprocal = 1 / (variance + Double(epsilon)).squareRoot()
            for row in 0..<rows {
                output[row * width + column] = Float((Double(input[row * width + column]) - columnMean) * reciprocal)
            }
            mean[column] = Float(columnMean)
            reciprocalStd[column] = Float(reciprocal)
            let unbiased = squares / Double(rows - 1)
            runningMean[column] = (1 - momentum) * runningMean[column] + momentum * Float(columnMean)
            runningVariance[column] = (1 - momentum) * runningVariance[column] + momentum * Float(unbiased)
        }
    }
}

/// Evaluation forward, [rows, width]: output = (x − running mean) / sqrt(running var + ε).
public func batchNormForwardEvaluation(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                                       runningMean: UnsafePointer<Float>, runningVariance: UnsafePointer<Float>,
                                       rows: Int, width: Int, epsilon: Float = 1e-6) {
    parallelFor(rows, minimumPerWorker: max(1, 4_096 / max(width, 1))) { range in
        for row in range {
            for column in 0..<width {
                let reciprocal = 1 / (Double(runningVariance[column]) + Double(epsilon)).squareRoot()
                output[row * width + column] = Float((Double(input[row * width + column]) - Double(runningMean[column])) * reciprocal)
            }
        }
    }
}

/// Backward of `batchNormForwardTraining` (no affine parameters), [rows, width]:
/// dx = r / N · (N · dy − Σ dy − y · Σ (dy · y)), with y the forward's output and r = 1 / sqrt(var + ε).
/// Assigns `inputGradient`.
public func batchNormBackward(inputGradient: UnsafeMutablePointer<Float>, outputGradient: UnsafePointer<Float>,
                              output: UnsafePointer<Float>, reciprocalStd: UnsafePointer<Float>, rows: Int, width: Int) {
    parallelFor(width, minimumPerWorker: max(1, 4_096 / rows)) { columns in
        for column in columns {
            var gradientSum = 0.0, projection = 0.0
            for row in 0..<rows {
                let index = row * width + column
                gradientSum += Double(outputGradient[index])
                projection += Double(outputGradient[index]) * Double(output[index])
            }
            let scale = Double(reciprocalStd[column]) / Double(rows)
            for row in 0..<rows {
                let index = row * width + column
                inputGradient[index] = Float(scale * (Double(rows) * Double(outputGradient[index]) - gradientSum
                                                      - Double(output[index]) * projection))
            }
        }
    }
}
