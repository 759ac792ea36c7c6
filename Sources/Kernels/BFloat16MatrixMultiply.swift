import CProducts
import CSupport

/// The number format of the matrix products of the linear layers and attention.
public enum Precision: String, CaseIterable, Codable, Sendable {
    /// fp32 inputs, products and outputs (OpenBLAS).
    case fp32
    /// Inputs rounded to bf16 (to nearest, ties to even), products summed in fp32, fp32
    /// outputs (oneDNN's matmul): what `torch.autocast("cpu", dtype=torch.bfloat16)` does
    /// for these products, at about twice the fp32 rate on CPUs with AVX512_BF16.
    case bf16

    /// The help text of `--precision`.
    public static let optionHelp = "matrix products of the linear layers and attention: fp32, or bf16 inputs with fp32 sums "
        + "and outputs (needs AVX512_BF16; norms, softmax, GELU, loss, gradients and AdamW stay fp32)"

    /// Why this CPU cannot run the precision, in one line; nil when it can.
    public var unsupportedReason: String? {
        guard self == .bf16, !CPUInfo.supports("avx512bf16") else { return nil }
        return "--precision bf16 needs a CPU with AVX512_BF16 (Intel Cooper Lake or Sapphire Rapids and later, AMD Zen 4 and later); \(CPUInfo.modelName) lacks it: use --precision fp32"
    }
}

/// destination[count] = source rounded to bf16 (to nearest, ties to even), split over our workers.
public func roundToBFloat16(_ destination: UnsafeMutablePointer<UInt16>, _ source: UnsafePointer<Float>, count: Int) {
    parallelFor(count, minimumPerWorker: 1 << 16) { range in
        mae_round_to_bf16(destination + range.lowerBound, source + range.lowerBound, range.count)
    }
}

/// c[m, n] = alpha · op(a)[m, k] · op(b)[k, n] + beta · c in `precision` (row-major;
/// leading dimensions as `matrixMultiply`). In bf16, op(a) and op(b) are rounded to bf16
/// and their products summed in fp32 (beta 0 or 1); `roundedB`, when given, is b already
/// rounded (same layout and leading dimension), as the model keeps its weights, and
/// `roundedA` likewise a (an activation its producer wrote rounded); the fp32 operand is
/// then not read. In fp32 both must be nil.
public func matrixMultiply(_ c: UnsafeMutablePointer<Float>, ldc: Int,
                           _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
                           _ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                           roundedA: UnsafePointer<UInt16>? = nil, roundedB: UnsafePointer<UInt16>? = nil,
                           m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0, precision: Precision) {
    switch precision {
    case .fp32:
        precondition(roundedA == nil && roundedB == nil, "an fp32 product takes its operands in fp32")
        matrixMultiply(c, ldc: ldc, a, lda: lda, transposeA: transposeA, b, ldb: ldb, transposeB: transposeB,
                       m: m, n: n, k: k, alpha: alpha, beta: beta)
    case .bf16:
        bfloat16MatrixMultiply(c, ldc: ldc, a, lda: lda, transposeA: transposeA, b, ldb: ldb, transposeB: transposeB,
                               roundedA: roundedA, roundedB: roundedB, m: m, n: n, k: k, alpha: alpha, beta: beta)
    }
}

/// As `singleThreadedMatrixMultiply`, in `precision`: one call on the calling thread.
@inline(__always)
public func singleThreadedMatrixMultiply(_ c: UnsafeMutablePointer<Float>, ldc: Int,
                                         _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
                                         _ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                                         m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0,
                                         precision: Precision) {
    switch precision {
    case .fp32:
        singleThreadedMatrixMultiply(c, ldc: ldc, a, lda: lda, transposeA: transposeA, b, ldb: ldb,
                                     transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, beta: beta)
    case .bf16:
        bfloat16Product(c, ldc: ldc, a, isRounded: false, lda: lda, transposeA: transposeA,
                        b, isRounded: false, ldb: ldb, transposeB: transposeB,
                        m: m, n: n, k: k, alpha: alpha, beta: beta)
    }
}

/// The bf16 product, cut into blocks of rows or of columns of c (`bfloat16Blocks`) spread
/// over our workers, each one oneDNN call on its worker (`bfloat16Product`).
///
/// The blocks depend on the shape alone, never on the thread count, so every element of
/// c comes from the same oneDNN call (same kernel, same blocking of k) whatever the
/// number of threads: results are independent of it by construction, whatever rules
/// oneDNN's kernels (brgemm) follow inside a call.
///
/// oneDNN packs the b operand of every call into its own layout (pairs of k interleaved)
/// before its kernel runs, so blocks of rows would each pack the whole of b again (on
/// ViT-B's step, 6 % of the time went to the repeated packing at 8 blocks). So b is
/// packed once into that layout and the blocks of rows share it (`.packedRows`, where
/// oneDNN takes it for every block). Where it does not, a block of columns packs only its
/// own columns of b, but writes c through a buffer, since oneDNN's fast kernels take a
/// dense c only (products.c), and `bfloat16Blocks` weighs the two. In all, an fp32 operand
/// that every block reads whole (b for rows, a for columns) is rounded once, into the
/// caller's buffer (a transposed into rows, as oneDNN's kernels run a row-major a fastest).
public func bfloat16MatrixMultiply(_ c: UnsafeMutablePointer<Float>, ldc: Int,
                                   _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
                                   _ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                                   roundedA: UnsafePointer<UInt16>? = nil, roundedB: UnsafePointer<UInt16>? = nil,
                                   m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0) {
    let (cut, block) = bfloat16Blocks(m: m, n: n, k: k, accumulates: beta != 0, aIsRounded: roundedA != nil,
                                      transposeA: transposeA, transposeB: transposeB, cIsDense: ldc == n,
                                      alpha: alpha)
    switch cut {
    case .whole:
        // Each operand as the C call takes it: bf16 when it came rounded, else fp32 to round.
        bfloat16Product(c, ldc: ldc, roundedA.map(UnsafeRawPointer.init) ?? UnsafeRawPointer(a), isRounded: roundedA != nil,
                        lda: lda, transposeA: transposeA,
                        roundedB.map(UnsafeRawPointer.init) ?? UnsafeRawPointer(b), isRounded: roundedB != nil,
                        ldb: ldb, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, beta: beta)
    case .packedRows:
        var blocks = mae_bf16_row_blocks(block_rows: block, n: n, k: k, a_is_bf16: roundedA != nil ? 1 : 0,
                                         transpose_a: transposeA ? 1 : 0, transpose_b: transposeB ? 1 : 0,
                                         c_is_dense: ldc == n ? 1 : 0, alpha: alpha, beta: beta)
        guard let packed = mae_bf16_packing_buffer(&blocks) else {
            preconditionFailure("out of memory for b of a bf16 product \(m)×\(n)×\(k), packed")
        }
        let columnBlocks = mae_bf16_packing_column_blocks(&blocks)
        if columnBlocks > 0 {
            // Our packer, rounding an fp32 b as it goes, its blocks of columns shared out.
            let stored = roundedB.map { UnsafeRawPointer($0) } ?? UnsafeRawPointer(b)
            parallelFor(columnBlocks, minimumPerWorker: max(1, 131_072 / max(1, 64 * k))) { range in
                mae_bf16_pack_b_columns(&blocks, packed, stored, roundedB != nil ? 1 : 0, ldb, range.lowerBound, range.count)
            }
        } else {
            let (bRounded, roundedLDB) = roundedB.map { ($0, ldb) }
                ?? roundStoredB(b, ldb: ldb, transposeB: transposeB, n: n, k: k)
            if mae_bf16_pack_b(&blocks, packed, bRounded, roundedLDB) != 0 {
                preconditionFailure("packing b of a bf16 product \(m)×\(n)×\(k) failed: \(String(cString: mae_products_error()))")
            }
        }
        let sharedPacked = UnsafeRawPointer(packed)
        forEachRowBlock(m: m, block: block, a, lda: lda, transposeA: transposeA, roundedA: roundedA) { first, count, aBlock in
            let status = withUnsafePointer(to: &blocks) {
                mae_bf16_matmul_packed_b($0, c + first * ldc, ldc, aBlock, lda, sharedPacked, count)
            }
            if status != 0 {
                preconditionFailure("bf16 matrix product \(m)×\(n)×\(k) failed: \(String(cString: mae_products_error()))")
            }
        }
    case .rows:
        let (bRounded, roundedLDB) = roundedB.map { ($0, ldb) }
            ?? roundStoredB(b, ldb: ldb, transposeB: transposeB, n: n, k: k)
        forEachRowBlock(m: m, block: block, a, lda: lda, transposeA: transposeA, roundedA: roundedA) { first, count, aBlock in
            bfloat16Product(c + first * ldc, ldc: ldc, aBlock, isRounded: roundedA != nil,
                            lda: lda, transposeA: transposeA, bRounded, isRounded: true, ldb: roundedLDB,
                            transposeB: transposeB, m: count, n: n, k: k, alpha: alpha, beta: beta)
        }
    case .columns:
        // op(a) rounded once into a compact row-major [m, k] matrix, unless it came rounded.
        let (compactA, compactLDA, compactTranspose) = roundedA.map { ($0, lda, transposeA) }
            ?? (UnsafePointer(roundCompact(a, lda: lda, transposeA: transposeA, m: m, k: k)), k, false)
        parallelFor((n + block - 1) / block, minimumPerWorker: 1, rangesPerWorker: 4) { range in
            for index in range {
                let first = index * block, count = min(n, first + block) - first
                // The stored b: [k, n], or [n, k] when transposed; the block of op(b)'s columns.
                let offset = transposeB ? first * ldb : first
                let bBlock = roundedB.map { UnsafeRawPointer($0 + offset) } ?? UnsafeRawPointer(b + offset)
                bfloat16Product(c + first, ldc: ldc, compactA, isRounded: true, lda: compactLDA,
                                transposeA: compactTranspose, bBlock, isRounded: roundedB != nil, ldb: ldb,
                                transposeB: transposeB, m: m, n: count, k: k, alpha: alpha, beta: beta)
            }
        }
    }
}

/// Runs `body` for each block of `block` rows of op(a) (the last one shorter), spread over
/// our workers, with its first row, its row count and its a (fp32, or `roundedA` when
/// given; stored [m, k], or [k, m] when transposed).
@inline(__always)
private func forEachRowBlock(m: Int, block: Int, _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool,
                             roundedA: UnsafePointer<UInt16>?,
                             _ body: (_ first: Int, _ count: Int, _ aBlock: UnsafeRawPointer) -> Void) {
    parallelFor((m + block - 1) / block, minimumPerWorker: 1, rangesPerWorker: 4) { range in
        for index in range {
            let first = index * block, count = min(m, first + block) - first
            let offset = transposeA ? first : first * lda
            body(first, count, roundedA.map { UnsafeRawPointer($0 + offset) } ?? UnsafeRawPointer(a + offset))
        }
    }
}

/// The stored b ([k, n], or [n, k] when transposed) rounded once, for all blocks, into the
/// calling thread's buffer (compact), split over our workers.
private func roundStoredB(_ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool, n: Int, k: Int)
    -> (UnsafePointer<UInt16>, Int) {
    let rows = transposeB ? n : k, columns = transposeB ? k : n
    let buffer = threadBuffer(rows * columns)
    parallelFor(rows, minimumPerWorker: max(1, 65_536 / max(1, columns))) { range in
        for row in range { mae_round_to_bf16(buffer + row * columns, b + row * ldb, columns) }
    }
    return (UnsafePointer(buffer), columns)
}

/// op(a)[m, k] rounded into the calling thread's buffer as a compact row-major matrix
/// (transposed into rows when the product reads a transposed, as oneDNN's kernels run a
/// row-major a fastest), split over our workers.
private func roundCompact(_ a: UnsafePointer<Float>, lda: Int, transposeA: Bool, m: Int, k: Int)
    -> UnsafeMutablePointer<UInt16> {
    let roundedA = threadBuffer(m * k)
    if transposeA {
        // The stored a is [k, m]: its columns are the rows of op(a).
        parallelFor(m, minimumPerWorker: max(16, 65_536 / max(1, k))) { range in
            mae_round_to_bf16_transposed(roundedA + range.lowerBound * k, a + range.lowerBound, k, range.count, lda)
        }
    } else {
        parallelFor(m, minimumPerWorker: max(1, 65_536 / max(1, k))) { range in
            for row in range { mae_round_to_bf16(roundedA + row * k, a + row * lda, k) }
        }
    }
    return roundedA
}

/// How `bfloat16MatrixMultiply` cuts a product.
public enum BFloat16Cut: Sendable {
    /// One oneDNN call.
    case whole
    /// Blocks of rows of c that share b, packed once into oneDNN's layout.
    case packedRows
    /// Blocks of rows of c, each call packing all of b (where oneDNN refuses a shared packed b).
    case rows
    /// Blocks of columns of c, each call packing its columns of b.
    case columns
}

/// The cut of a product and the rows or columns of c per oneDNN call: a function of the
/// shape and the CPU alone (see `bfloat16MatrixMultiply`). Products under 2²¹
/// multiply-adds run whole; larger ones are cut into at most 8 blocks of a multiple of 16
/// rows or columns: enough parts for a few threads to share.
///
/// Blocks of rows that share one packed b cost nothing over one call but the shorter
/// kernels, so they come first wherever oneDNN takes the packed b for the last block too
/// (the other arguments describe the call, as `mae_bf16_row_blocks`). Otherwise rows
/// cost 7 extra packings of b (k × n each); columns pass c (m × n, fp32) through a buffer,
/// and once more when they add to c (`accumulates`). Columns then when m < 2k, or
/// m < 1.25k when adding: thresholds measured on ViT-B's products (`mae bench products`;
/// docs/PERFORMANCE.md), where the encoder's (400 rows) gained 5–17 % from columns and
/// the decoder's forward products (1,576 rows, k = 512) and the weight gradients of few
/// rows (dyᵀ·x) kept rows.
public func bfloat16Blocks(m: Int, n: Int, k: Int, accumulates: Bool = false, aIsRounded: Bool = false,
                           transposeA: Bool = false, transposeB: Bool = false, cIsDense: Bool = true,
                           alpha: Float = 1) -> (cut: BFloat16Cut, size: Int) {
    guard m * n * k >= 1 << 21 else { return (.whole, 0) }
    func block(_ length: Int) -> Int { max(16, ((length + 7) / 8 + 15) / 16 * 16) }
    if m > 16 {
        let size = block(m)
        var blocks = mae_bf16_row_blocks(block_rows: size, n: n, k: k, a_is_bf16: aIsRounded ? 1 : 0,
                                         transpose_a: transposeA ? 1 : 0, transpose_b: transposeB ? 1 : 0,
                                         c_is_dense: cIsDense ? 1 : 0, alpha: alpha, beta: accumulates ? 1 : 0)
        let last = m - (m - 1) / size * size
        if mae_bf16_blocks_share_packed_b(&blocks, last) != 0 { return (.packedRows, size) }
    }
    let columns = accumulates ? 4 * m < 5 * k : m < 2 * k
    if columns, n > 16 { return (.columns, block(n)) }
    if m > 16 { return (.rows, block(m)) }
    return (.whole, 0)
}

/// The calling thread's bf16 buffer of `count` values (`mae_bf16_thread_buffer`).
private func threadBuffer(_ count: Int) -> UnsafeMutablePointer<UInt16> {
    guard let buffer = mae_bf16_thread_buffer(count) else {
        preconditionFailure("out of memory for a bf16 operand of \(count) values")
    }
    return buffer
}

/// One bf16 product on the calling thread (a oneDNN call; our own VDPBF16PS kernel for
/// products of at most `MAE_BF16_SMALL_PRODUCT_LIMIT` multiply-adds, the same arithmetic
/// without oneDNN's per-call set-up); a failure (no bf16 kernel for this CPU, memory)
/// stops the program with oneDNN's message, since the options were checked up front
/// (`Precision.unsupportedReason`).
@inline(__always)
func bfloat16Product(_ c: UnsafeMutablePointer<Float>, ldc: Int,
                     _ a: UnsafeRawPointer, isRounded aIsRounded: Bool, lda: Int, transposeA: Bool,
                     _ b: UnsafeRawPointer, isRounded bIsRounded: Bool, ldb: Int, transposeB: Bool,
                     m: Int, n: Int, k: Int, alpha: Float, beta: Float) {
    let status = mae_bf16_matmul(c, ldc, a, aIsRounded ? 1 : 0, lda, transposeA ? 1 : 0,
                                 b, bIsRounded ? 1 : 0, ldb, transposeB ? 1 : 0, m, n, k, alpha, beta)
    if status != 0 {
        preconditionFailure("bf16 matrix product \(m)×\(n)×\(k) failed: \(String(cString: mae_products_error()))")
    }
}

/// The name of the oneDNN kernel that runs a bf16 product of this shape ("brg:avx512_core_bf16").
public func bfloat16ProductImplementation(m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool) -> String {
    mae_bf16_matmul_implementation(m, n, k, transposeA ? 1 : 0, transposeB ? 1 : 0).map { String(cString: $0) } ?? "none"
}

/// oneDNN's fp32 matmul, one call on the calling thread: only for `mae bench products`, which
/// measures it against OpenBLAS per shape (the model's fp32 products stay on OpenBLAS).
public func oneDNNSingleThreadedMatrixMultiply(_ c: UnsafeMutablePointer<Float>, ldc: Int,
                                               _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool,
                                               _ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool,
                                               m: Int, n: Int, k: Int) {
    let status = mae_f32_matmul_onednn(c, ldc, a, lda, transposeA ? 1 : 0, b, ldb, transposeB ? 1 : 0, m, n, k, 1, 0)
    if status != 0 {
        preconditionFailure("oneDNN fp32 product \(m)×\(n)×\(k) failed: \(String(cString: mae_products_error()))")
    }
}
