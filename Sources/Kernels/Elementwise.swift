/// Element-wise vector kernels (residual adds, sums), SIMD with scalar tails.

/// output[count] = a[count] + b[count]. `output` may be `a` or `b`.
@inline(__always)
public func addVectors(_ output: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>,
                       _ b: UnsafePointer<Float>, count: Int) {
    var index = 0
    while index + 16 <= count {
        store16(load16(a + index) + load16(b + index), output + index)
        index += 16
    }
    while index < count {
        output[index] = a[index] + b[index]
        index += 1
    }
}

/// accumulator[count] += value[count].
@inline(__always)
public func accumulate(_ accumulator: UnsafeMutablePointer<Float>, _ value: UnsafePointer<Float>, count: Int) {
    addVectors(accumulator, accumulator, value, count: count)
}

/// The residual connection: stream[rows, width] += branch[rows, width], in parallel.
/// (The blocks fuse their residual adds into the proj and fc2 products; this is the
/// stand-alone form.)
public func residualAdd(_ stream: UnsafeMutablePointer<Float>, _ branch: UnsafePointer<Float>, rows: Int, width: Int) {
    parallelFor(rows, minimumPerWorker: max(1, 16_384 / max(width, 1))) { range in
        let offset = range.lowerBound * width
        addVectors(stream + offset, stream + offset, branch + offset, count: range.count * width)
    }
}

/// sums[columns] += Σ_rows matrix[rows, columns] (the bias gradient of a linear layer).
///
/// Workers own disjoint column ranges and walk the rows in memory order, adding each
/// row's slice onto their part of `sums` (which stays in the L1 cache).
public func addColumnSums(_ sums: UnsafeMutablePointer<Float>, _ matrix: UnsafePointer<Float>,
                          rows: Int, columns: Int) {
    let blocks = (columns + 15) / 16
    parallelFor(blocks, minimumPerWorker: max(1, 8_192 / max(rows, 1))) { blockRange in
        let first = blockRange.lowerBound * 16
        let count = min(columns, blockRange.upperBound * 16) - first
        let destination = sums + first
        for row in 0..<rows {
            let source = matrix + row * columns + first
            for column in 0..<count { destination[column] += source[column] }
        }
    }
}
