import CBLAS

/// Row-major single-precision matrix product through OpenBLAS:
/// c[m, n] = alpha · op(a)[m, k] · op(b)[k, n] + beta · c, where op transposes when asked.
///
/// Leading dimensions let callers address a slice of a wider matrix in place (for
/// example one attention head inside the fused qkv rows) without copying.
@inline(__always)
public func matrixMultiply(_ c: UnsafeMutablePointer<Float>, ldc: Int,
                           _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
                           _ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                           m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0) {
    cblas_sgemm(CblasRowMajor,
                transposeA ? CblasTrans : CblasNoTrans,
                transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha,
                a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}
