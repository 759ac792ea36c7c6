/// A fully connected layer, PyTorch's `nn.Linear` (weight stored [out, in]).

/// output[rows, outFeatures] = input[rows, inFeatures] · weight[outFeatures, inFeatures]ᵀ
///                             + bias[outFeatures] (+ residual[rows, outFeatures] when given).
///
/// The bias (and the residual stream of a transformer block) is written into `output`
/// first and the matrix product adds onto it (beta = 1): one pass instead of two.
/// `residual` may be `output` itself, which adds the layer onto the stream in place.
public func linearForward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                          weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                          residual: UnsafePointer<Float>? = nil,
                          rows: Int, inFeatures: Int, outFeatures: Int) {
    parallelFor(rows, minimumPerWorker: max(1, 16_384 / max(outFeatures, 1))) { range in
        for row in range {
            let destination = output + row * outFeatures
            if let residual {
                addVectors(destination, residual + row * outFeatures, bias, count: outFeatures)
            } else {
                destination.update(from: bias, count: outFeatures)
            }
        }
    }
    matrixMultiply(output, ldc: outFeatures, input, lda: inFeatures,
                   weight, ldb: inFeatures, transposeB: true,
                   m: rows, n: outFeatures, k: inFeatures, beta: 1)
}

/// Backward of `linearForward`:
/// inputGradient[rows, inFeatures] = outputGradient[rows, outFeatures] · weight (assigned; skipped when nil),
/// weightGradient[outFeatures, inFeatures] += outputGradientᵀ · input,
/// biasGradient[outFeatures] += Σ_rows outputGradient.
public func linearBackward(inputGradient: UnsafeMutablePointer<Float>?,
                           weightGradient: UnsafeMutablePointer<Float>,
                           biasGradient: UnsafeMutablePointer<Float>,
                           outputGradient: UnsafePointer<Float>, input: UnsafePointer<Float>,
                           weight: UnsafePointer<Float>,
                           rows: Int, inFeatures: Int, outFeatures: Int) {
    if let inputGradient {
        matrixMultiply(inputGradient, ldc: inFeatures, outputGradient, lda: outFeatures,
                       weight, ldb: inFeatures, m: rows, n: inFeatures, k: outFeatures)
    }
    matrixMultiply(weightGradient, ldc: inFeatures, outputGradient, lda: outFeatures, transposeA: true,
                   input, ldb: inFeatures, m: outFeatures, n: inFeatures, k: rows, beta: 1)
    addColumnSums(biasGradient, outputGradient, rows: rows, columns: outFeatures)
}
