/// Element-wise vector kernels (residual adds, sums), SIMD with scalar tails.

import CSupport

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

/// Rows per group of the passes that split their rows over our workers and sum columns as
/// they go (the bf16 linear backward's bias gradient, the layer norm backward's parameter
/// gradients): each group sums its rows into partial sums of its own, row after row from
/// zero, which `addPartialSums` then adds in group order. Whole rows stream through memory
/// in order, which the hardware prefetches best; the order of the sums is fixed by the
/// shape alone, so the bits do not depend on the thread count.
public let columnSumGroupRows = 64

/// The calling thread's buffer for `count` floats of partial column sums
/// (`mae_partial_sums_buffer`), filled by the workers of one pass.
func partialSumsBuffer(_ count: Int) -> UnsafeMutablePointer<Float> {
    guard let buffer = mae_partial_sums_buffer(count) else {
        preconditionFailure("out of memory for \(count) partial column sums")
    }
    return buffer
}

/// sums[count] += partials[group · stride ..< group · stride + count] for each of `groups`
/// groups in order (see `columnSumGroupRows`), split over our workers by columns.
func addPartialSums(_ sums: UnsafeMutablePointer<Float>, _ partials: UnsafePointer<Float>, groups: Int,
                    count: Int, stride: Int) {
    parallelFor((count + 15) / 16, minimumPerWorker: max(1, 4_096 / max(1, groups))) { range in
        let first = range.lowerBound * 16, columns = min(count, range.upperBound * 16) - first
        for group in 0..<groups {
            addVectors(sums + first, sums + first, partials + group * stride + first, count: columns)
        }
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
