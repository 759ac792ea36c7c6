import CBLAS

/// Row-major single-precision matrix product through OpenBLAS:
/// c[m, n] = alpha · op(a)[m, k] · op(b)[k, n] + beta · c, where op transposes when asked.
///
/// Leading dimensions let callers address a slice of a wider matrix in place (for
/// example one attention head inside the fused qkv rows) without copying.
///
/// With several threads, a large product is cut into blocks of rows of c (or of columns,
/// when c is wide and short and the loaded kernels allow it), one per worker of our pool,
/// each computed by a single-threaded OpenBLAS call: one pool for every kernel, so no
/// OpenBLAS threads spin on the cores our element-wise kernels need.
///
/// The cut never changes a bit of the result, whatever OpenBLAS core is loaded
/// (docs/TRAINING.md, "Thread count and exactness"), because it respects three rules of
/// OpenBLAS 0.3.21's x86-64 kernels:
/// - Cuts fall on multiples of `matrixMultiplyBlock` (48) rows or columns, a multiple of
///   every kernel's unroll (12 on Haswell and Zen, 8 on Nehalem, 4 to 16 elsewhere), so
///   every tile of the kernels stays as it is.
/// - OpenBLAS sees our row-major c as a column-major cᵀ, so a row of c is one of its
///   columns. The Haswell kernel (also Zen's) computes most of a call in tiles with one
///   fused multiply-add chain per element, but some tiles at the edges of the call's
///   row range (our columns) with two partial sums (even and
///   odd k) added at the end, which rounds differently. A cut through the columns of c
///   moves those edges wherever it falls (measured: the 8 columns on each side of the cut
///   change), so on those kernels columns are never cut. Elsewhere column cuts keep every
///   result (`BLASRuntime.columnCutsKeepResults`), and a wide, short c is cut by columns:
///   each part then packs op(a) again rather than the larger op(b).
/// - SkylakeX and Cooperlake compute products of at most 100³ multiply-adds (m·n·k) with
///   other kernels ("small matrix" kernels) that round differently, so every part stays
///   above that size; a product that is no larger is never cut.
/// `mae check-determinism` checks this for the OpenBLAS core loaded, and the tests run
/// it under every core type this CPU can execute.
public func matrixMultiply(_ c: UnsafeMutablePointer<Float>, ldc: Int,
                           _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
                           _ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                           m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0) {
    guard Parallel.threads > 1, Parallel.splitsProducts else {
        singleThreadedMatrixMultiply(c, ldc: ldc, a, lda: lda, transposeA: transposeA, b, ldb: ldb,
                                     transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, beta: beta)
        return
    }
    let block = matrixMultiplyBlock
    let cutsColumns = m < n && BLASRuntime.columnCutsKeepResults
    // Whole blocks per part: more than 100³ multiply-adds even when its last block is the
    // product's short one, and at least two blocks, since every part packs an operand
    // again. (A product too small to be cut in two such parts runs whole, in one part.)
    let blockWork = block * (cutsColumns ? m : n) * k
    let minimumBlocks = max(2, smallProductLimit / max(1, blockWork) + 2)
    if cutsColumns {
        parallelFor((n + block - 1) / block, minimumPerWorker: minimumBlocks, rangesPerWorker: 2) { blocks in
            let first = blocks.lowerBound * block, count = min(n, blocks.upperBound * block) - first
            singleThreadedMatrixMultiply(c + first, ldc: ldc, a, lda: lda, transposeA: transposeA,
                                         transposeB ? b + first * ldb : b + first, ldb: ldb, transposeB: transposeB,
                                         m: m, n: count, k: k, alpha: alpha, beta: beta)
        }
    } else {
        parallelFor((m + block - 1) / block, minimumPerWorker: minimumBlocks, rangesPerWorker: 2) { blocks in
            let first = blocks.lowerBound * block, count = min(m, blocks.upperBound * block) - first
            singleThreadedMatrixMultiply(c + first * ldc, ldc: ldc,
                                         transposeA ? a + first : a + first * lda, lda: lda, transposeA: transposeA,
                                         b, ldb: ldb, transposeB: transposeB,
                                         m: count, n: n, k: k, alpha: alpha, beta: beta)
        }
    }
}

/// The rows or columns of c that `matrixMultiply` cuts a product at are multiples of
/// this: a multiple of every OpenBLAS 0.3.21 x86-64 kernel's unroll (see `matrixMultiply`).
public let matrixMultiplyBlock = 48

/// The largest product (m·n·k) that OpenBLAS 0.3.21's SkylakeX and Cooperlake cores
/// compute with their "small matrix" kernels.
let smallProductLimit = 1_000_000

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
