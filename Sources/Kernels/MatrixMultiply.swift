import CBLAS

/// Row-major single-precision matrix product through OpenBLAS:
/// c[m, n] = alpha · op(a)[m, k] · op(b)[k, n] + beta · c, where op transposes when asked.
///
/// Leading dimensions let callers address a slice of a wider matrix in place (for
/// example one attention head inside the fused qkv rows) without copying.
///
/// With several threads, a large product is cut into a grid of blocks of rows and columns
/// of c (`ProductCut`), one or two per worker of our pool, each computed by a
/// single-threaded OpenBLAS call: one pool for every kernel, so no OpenBLAS threads spin
/// on the cores our element-wise kernels need. Every part packs its share of the operands
/// again, so the grid is chosen counting those copies as well as the balance of the parts.
///
/// The cut never changes a bit of the result, whatever OpenBLAS core is loaded
/// (docs/TRAINING.md, "Thread count and exactness"), because it respects three rules of
/// OpenBLAS 0.3.21's x86-64 kernels:
/// - Rows fall on multiples of `matrixMultiplyBlock` (48), a multiple of every kernel's
///   unroll (12 on Haswell and Zen, 8 on Nehalem, 4 to 16 elsewhere), so every tile of
///   the kernels stays as it is.
/// - OpenBLAS sees our row-major c as a column-major cᵀ, so a row of c is one of its
///   columns. The Haswell kernel (also Zen's) computes most of a call in tiles with one
///   fused multiply-add chain per element, but the tiles at the two ends of each block of
///   columns that its driver hands it with two partial sums (even and odd k) added at the
///   end, which rounds differently. A cut elsewhere moves those edges (measured: the 8
///   columns on each side of the cut change), so on those kernels columns are cut only on
///   the driver's own block boundaries (`BLASRuntime.columnCutWidth`: multiples of 320 that
///   leave at least 320 columns). On the other kernels any multiple of 48 keeps every result.
/// - SkylakeX and Cooperlake compute products of at most 100³ multiply-adds (m·n·k) with
///   other kernels ("small matrix" kernels) that round differently, so every part stays
///   above that size; a product that is no larger is never cut.
/// `mae check-determinism` checks this for the OpenBLAS core loaded, and the tests run
/// it under every core type this CPU can execute.
public func matrixMultiply(_ c: UnsafeMutablePointer<Float>, ldc: Int,
                           _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
                           _ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                           m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0) {
    // Inside a region (a batch shard) the parts would run one after another, each packing
    // its operands again for nothing: one call instead.
    let threads = Parallel.threads
    let cut = Parallel.splitsProducts && !Parallel.runsInline
        ? ProductCut.cached(m: m, n: n, k: k, threads: threads) : nil
    guard let cut, cut.parts > 1 else {
        singleThreadedMatrixMultiply(c, ldc: ldc, a, lda: lda, transposeA: transposeA, b, ldb: ldb,
                                     transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, beta: beta)
        return
    }
    // One range per part: each worker takes the next part when it is free.
    parallelFor(cut.parts, minimumPerWorker: 1, rangesPerWorker: (cut.parts + threads - 1) / threads) { parts in
        for part in parts {
            let (rows, columns) = cut.ranges(ofPart: part)
            let row = rows.lowerBound, column = columns.lowerBound
            singleThreadedMatrixMultiply(c + row * ldc + column, ldc: ldc,
                                         transposeA ? a + row : a + row * lda, lda: lda, transposeA: transposeA,
                                         transposeB ? b + column * ldb : b + column, ldb: ldb, transposeB: transposeB,
                                         m: rows.count, n: columns.count, k: k, alpha: alpha, beta: beta)
        }
    }
}

/// The rows of c that `matrixMultiply` cuts a product at are multiples of this (and its
/// columns too, where `BLASRuntime.columnCutWidth` is 48): a multiple of every OpenBLAS
/// 0.3.21 x86-64 kernel's unroll (see `matrixMultiply`).
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
