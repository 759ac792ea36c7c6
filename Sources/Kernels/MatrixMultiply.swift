import CBLAS

/// Row-major single-precision matrix product through OpenBLAS:
/// c[m, n] = alpha · op(a)[m, k] · op(b)[k, n] + beta · c, where op transposes when asked.
///
/// Leading dimensions let callers address a slice of a wider matrix in place (for
/// example one attention head inside the fused qkv rows) without copying.
///
/// With several threads, a large product is cut into blocks of rows of c (or of
/// columns, when c is wide and short), one per worker of our pool, each computed by
/// a single-threaded OpenBLAS call: one pool for every kernel, so no OpenBLAS
/// threads spin on the cores our element-wise kernels need.
public func matrixMultiply(_ c: UnsafeMutablePointer<Float>, ldc: Int,
                           _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
                           _ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                           m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0) {
    let workers = Parallel.threads
    guard workers > 1, Parallel.splitsProducts, m * n * k >= 1 << 18 else {
        singleThreadedMatrixMultiply(c, ldc: ldc, a, lda: lda, transposeA: transposeA, b, ldb: ldb,
                                     transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, beta: beta)
        return
    }
    // Blocks are multiples of 16 rows or columns, the width of the AVX-512 kernels.
    // Every block packs the whole other operand again, so the blocks are few (two
    // per worker) and at least 64 wide, and the longer side of c is the one cut:
    // cutting the rows of c repacks b (k × n), cutting its columns repacks a (m × k).
    if m >= n {
        parallelFor((m + 15) / 16, minimumPerWorker: 4, rangesPerWorker: 2) { blocks in
            let first = blocks.lowerBound * 16, count = min(m, blocks.upperBound * 16) - first
            singleThreadedMatrixMultiply(c + first * ldc, ldc: ldc,
                                         transposeA ? a + first : a + first * lda, lda: lda, transposeA: transposeA,
                                         b, ldb: ldb, transposeB: transposeB,
                                         m: count, n: n, k: k, alpha: alpha, beta: beta)
        }
    } else {
        parallelFor((n + 15) / 16, minimumPerWorker: 4, rangesPerWorker: 2) { blocks in
            let first = blocks.lowerBound * 16, count = min(n, blocks.upperBound * 16) - first
            singleThreadedMatrixMultiply(c + first, ldc: ldc, a, lda: lda, transposeA: transposeA,
                                         transposeB ? b + first * ldb : b + first, ldb: ldb, transposeB: transposeB,
                                         m: m, n: count, k: k, alpha: alpha, beta: beta)
        }
    }
}

/// One OpenBLAS call on the calling thread (OpenBLAS itself may still use its own
/// threads when `Parallel.splitsProducts` is off).
@inline(__always)
public func singleThreadedMatrixMultiply(_ c: UnsafeMutablePointer<Float>, ldc: Int,
                                         _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
                                         _ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                                         m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0) {
    cblas_sgemm(CblasRowMajor,
                transposeA ? CblasTrans : CblasNoTrans,
                transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha,
                a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}
