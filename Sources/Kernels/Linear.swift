import CSupport

/// A fully connected layer, PyTorch's `nn.Linear` (weight stored [out, in]).

/// output[rows, outFeatures] = input[rows, inFeatures] · weight[outFeatures, inFeatures]ᵀ
///                             + bias[outFeatures] (+ residual[rows, outFeatures] when given).
///
/// The bias (and the residual stream of a transformer block) is written into `output`
/// first and the matrix product adds onto it (beta = 1): one pass instead of two.
/// `residual` may be `output` itself, which adds the layer onto the stream in place.
/// In bf16 the product's inputs are rounded to bf16 (`roundedWeight`, when given, is the
/// weight already rounded; `roundedInput`, when given, is the input as its producer rounded
/// it, and `input` is then not read) and the sums are fp32, as are the bias and residual.
public func linearForward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                          weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                          residual: UnsafePointer<Float>? = nil,
                          rows: Int, inFeatures: Int, outFeatures: Int,
                          precision: Precision = .fp32, roundedWeight: UnsafePointer<UInt16>? = nil,
                          roundedInput: UnsafePointer<UInt16>? = nil) {
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
                   weight, ldb: inFeatures, transposeB: true, roundedA: roundedInput, roundedB: roundedWeight,
                   m: rows, n: outFeatures, k: inFeatures, beta: 1, precision: precision)
}

/// Backward of `linearForward`:
/// inputGradient[rows, inFeatures] = outputGradient[rows, outFeatures] · weight (assigned; skipped when nil),
/// weightGradient[outFeatures, inFeatures] += outputGradientᵀ · input (assigned instead when
/// `assignsWeightGradient`: the first backward of a step then neither zeroes the weight's
/// gradient beforehand nor reads it back in the product; same values),
/// biasGradient[outFeatures] += Σ_rows outputGradient.
/// In bf16 both products take bf16-rounded inputs and sum in fp32 (the bias gradient stays fp32,
/// its rows summed by groups of `columnSumGroupRows`);
/// `roundedWeight` and `roundedInput` as in `linearForward`. With `outputGradientFactor`
/// (bf16 with an input gradient only), the output gradient is outputGradient ∘ factor, formed
/// as it is read: the GELU backward before a layer (`geluBackward`), without a pass of its own.
public func linearBackward(inputGradient: UnsafeMutablePointer<Float>?,
                           weightGradient: UnsafeMutablePointer<Float>,
                           biasGradient: UnsafeMutablePointer<Float>,
                           outputGradient: UnsafePointer<Float>, outputGradientFactor: UnsafePointer<Float>? = nil,
                           input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           rows: Int, inFeatures: Int, outFeatures: Int,
                           precision: Precision = .fp32, roundedWeight: UnsafePointer<UInt16>? = nil,
                           roundedInput: UnsafePointer<UInt16>? = nil, assignsWeightGradient: Bool = false) {
    let weightBeta: Float = assignsWeightGradient ? 0 : 1
    precondition(outputGradientFactor == nil || (precision == .bf16 && inputGradient != nil),
                 "only a bf16 backward with an input gradient forms its output gradient from a factor")
    if precision == .bf16, let inputGradient {
        // dy rounded once for both products: by rows for dy · W, and transposed into a
        // compact [outFeatures, rows] matrix for dyᵀ · x (oneDNN runs a row-major a fastest);
        // the bias gradient summed in the same read.
        let (plain, transposed) = roundedBothWays(outputGradient, times: outputGradientFactor, rows: rows,
                                                  columns: outFeatures, addingColumnSumsTo: biasGradient)
        matrixMultiply(inputGradient, ldc: inFeatures, outputGradient, lda: outFeatures,
                       weight, ldb: inFeatures, roundedA: plain, roundedB: roundedWeight,
                       m: rows, n: inFeatures, k: outFeatures, precision: .bf16)
        matrixMultiply(weightGradient, ldc: inFeatures, outputGradient, lda: rows,
                       input, ldb: inFeatures, roundedA: transposed, roundedB: roundedInput,
                       m: outFeatures, n: inFeatures, k: rows, beta: weightBeta, precision: .bf16)
        return
    }
    if let inputGradient {
        matrixMultiply(inputGradient, ldc: inFeatures, outputGradient, lda: outFeatures,
                       weight, ldb: inFeatures, roundedB: roundedWeight, m: rows, n: inFeatures, k: outFeatures,
                       precision: precision)
    }
    matrixMultiply(weightGradient, ldc: inFeatures, outputGradient, lda: outFeatures, transposeA: true,
                   input, ldb: inFeatures, roundedB: roundedInput, m: outFeatures, n: inFeatures, k: rows, beta: weightBeta,
                   precision: precision)
    addColumnSums(biasGradient, outputGradient, rows: rows, columns: outFeatures)
}

/// v = source[rows, columns] (leading dimension `columns`), times `factor` element by element
/// when given, rounded to bf16 twice over, in one read, into the calling thread's
/// `mae_bf16_both_buffer`: compact as it is ([rows, columns]) and transposed ([columns,
/// rows]); and sums[columns] += the sum of v's rows, by groups of `columnSumGroupRows` rows
/// split over our workers (strips of columns, which kept each column's sum with one worker,
/// cost this pass 2.6 times its one-thread CPU time at two threads on ViT-B even with
/// software prefetching; whole rows, 1.0 times).
private func roundedBothWays(_ source: UnsafePointer<Float>, times factor: UnsafePointer<Float>?, rows: Int,
                             columns: Int, addingColumnSumsTo sums: UnsafeMutablePointer<Float>)
    -> (plain: UnsafePointer<UInt16>, transposed: UnsafePointer<UInt16>) {
    guard let buffer = mae_bf16_both_buffer(2 * rows * columns) else {
        preconditionFailure("out of memory for a bf16 output gradient of \(rows)×\(columns) values")
    }
    let plain = buffer, transposed = buffer + rows * columns
    let groupRows = columnSumGroupRows, groups = (rows + groupRows - 1) / groupRows
    let partialSums = partialSumsBuffer(groups * columns)
    parallelFor(groups) { range in
        for group in range {
            let first = group * groupRows, count = min(rows, first + groupRows) - first
            let partial = partialSums + group * columns
            partial.update(repeating: 0, count: columns)
            mae_round_to_bf16_both(plain + first * columns, columns, transposed + first, rows,
                                   source + first * columns, factor.map { $0 + first * columns }, count, columns,
                                   columns, partial)
        }
    }
    addPartialSums(sums, partialSums, groups: groups, count: columns, stride: columns)
    return (UnsafePointer(plain), UnsafePointer(transposed))
}
