import CSupport

/// Layer normalisation over the last dimension, PyTorch's `nn.LayerNorm` (biased
/// variance; MAE uses eps 1e-6 everywhere).

/// output[rows, width] = (input − mean) · reciprocalStd · weight + bias, per row;
/// saves mean[rows] and reciprocalStd[rows] = 1 / sqrt(var + epsilon) for the backward.
/// With `roundedOutput` the output goes there instead, rounded to bf16 row by row as it is
/// produced (for a bf16 product that reads it; `output` is then left alone).
public func layerNormForward(output: UnsafeMutablePointer<Float>,
                             mean: UnsafeMutablePointer<Float>, reciprocalStd: UnsafeMutablePointer<Float>,
                             input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                             rows: Int, width: Int, epsilon: Float = 1e-6,
                             roundedOutput: UnsafeMutablePointer<UInt16>? = nil) {
    parallelFor(rows, minimumPerWorker: max(1, 8_192 / max(width, 1))) { range in
        withRowBuffer(width: width, needed: roundedOutput != nil) { rowBuffer in
            for row in range {
                let x = input + row * width
                let y = rowBuffer ?? output + row * width
                // Two passes (mean, then squared deviations) keep the variance accurate
                // for rows with a large mean.
                var sum16 = SIMD16<Float>()
                var column = 0
                while column + 16 <= width { sum16 += load16(x + column); column += 16 }
                var sum = sum16.sum()
                while column < width { sum += x[column]; column += 1 }
                let rowMean = sum / Float(width)
                var squares16 = SIMD16<Float>()
                column = 0
                while column + 16 <= width {
                    let deviation = load16(x + column) - rowMean
                    squares16 += deviation * deviation
                    column += 16
                }
                var squares = squares16.sum()
                while column < width { let deviation = x[column] - rowMean; squares += deviation * deviation; column += 1 }
                let rowReciprocalStd = 1 / (squares / Float(width) + epsilon).squareRoot()
                column = 0
                while column + 16 <= width {
                    let normalised = (load16(x + column) - rowMean) * rowReciprocalStd
                    store16(normalised * load16(weight + column) + load16(bias + column), y + column)
                    column += 16
                }
                while column < width {
                    y[column] = (x[column] - rowMean) * rowReciprocalStd * weight[column] + bias[column]
                    column += 1
                }
                mean[row] = rowMean
                reciprocalStd[row] = rowReciprocalStd
                if let roundedOutput { mae_round_to_bf16(roundedOutput + row * width, y, width) }
            }
        }
    }
}

/// Backward of `layerNormForward`:
/// inputGradient[rows, width] = residualGradient (when given) + ∂loss/∂input (assigned),
/// weightGradient[width] += Σ_rows outputGradient · x̂, biasGradient[width] += Σ_rows outputGradient.
///
/// Every LayerNorm of the model reads the residual stream, so the stream's gradient
/// arrives as `residualGradient` and is summed in the same pass; `inputGradient` may
/// be `residualGradient` or `outputGradient` (each element of dy is read before dx is written).
public func layerNormBackward(inputGradient: UnsafeMutablePointer<Float>,
                              weightGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>,
                              outputGradient: UnsafePointer<Float>, input: UnsafePointer<Float>,
                              mean: UnsafePointer<Float>, reciprocalStd: UnsafePointer<Float>,
                              weight: UnsafePointer<Float>, residualGradient: UnsafePointer<Float>?,
                              rows: Int, width: Int) {
    // Rows split over the workers by groups of `columnSumGroupRows`, each summing its rows'
    // parameter-gradient terms in the same read of dy and x as their input gradients.
    // (Workers that owned strips of columns and walked all the rows for the sums read
    // everything twice, in runs of a strip's width: 2.75 times the one-thread CPU time at two.)
    let groupRows = columnSumGroupRows, groups = (rows + groupRows - 1) / groupRows
    let partialSums = partialSumsBuffer(2 * groups * width)  // per group: the weight's, then the bias's
    // Input gradient, row by row: dx = rstd · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)), dx̂ = dy · weight.
    parallelFor(groups) { groupRange in
        for row in (groupRange.lowerBound * groupRows)..<min(rows, groupRange.upperBound * groupRows) {
            let weightSum = partialSums + 2 * (row / groupRows) * width, biasSum = weightSum + width
            if row % groupRows == 0 { weightSum.update(repeating: 0, count: 2 * width) }
            let x = input + row * width
            let dy = outputGradient + row * width
            let dx = inputGradient + row * width
            let rowMean = mean[row], rowReciprocalStd = reciprocalStd[row]
            var sum16 = SIMD16<Float>(), dot16 = SIMD16<Float>()
            var column = 0
            while column + 16 <= width {
                let scaled = load16(dy + column) * load16(weight + column)
                sum16 += scaled
                dot16 += scaled * (load16(x + column) - rowMean) * rowReciprocalStd
                column += 16
            }
            var sum = sum16.sum(), dot = dot16.sum()
            while column < width {
                let scaled = dy[column] * weight[column]
                sum += scaled
                dot += scaled * (x[column] - rowMean) * rowReciprocalStd
                column += 1
            }
            let meanScaled = sum / Float(width), meanDot = dot / Float(width)
            column = 0
            while column + 16 <= width {
                let normalised = (load16(x + column) - rowMean) * rowReciprocalStd
                let outputGradient16 = load16(dy + column)  // read before dx, which may be dy
                store16(load16(weightSum + column) + outputGradient16 * normalised, weightSum + column)
                store16(load16(biasSum + column) + outputGradient16, biasSum + column)
                var gradient = (outputGradient16 * load16(weight + column) - meanScaled - normalised * meanDot)
                    * rowReciprocalStd
                if let residualGradient { gradient += load16(residualGradient + row * width + column) }
                store16(gradient, dx + column)
                column += 16
            }
            while column < width {
                let normalised = (x[column] - rowMean) * rowReciprocalStd
                weightSum[column] += dy[column] * normalised
                biasSum[column] += dy[column]
                var gradient = (dy[column] * weight[column] - meanScaled - normalised * meanDot) * rowReciprocalStd
                if let residualGradient { gradient += residualGradient[row * width + column] }
                dx[column] = gradient
                column += 1
            }
        }
    }
    addPartialSums(weightGradient, partialSums, groups: groups, count: width, stride: 2 * width)
    addPartialSums(biasGradient, partialSums + width, groups: groups, count: width, stride: 2 * width)
}
