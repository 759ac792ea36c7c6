/// Multi-head self-attention over a fused qkv projection, as timm's `Attention`:
/// each token's qkv row is [q | k | v], each part head-major (head h owns columns
/// h·hd ..< (h+1)·hd), scores are scaled by hd^-1/2 and softmaxed over keys.
///
/// The per-head products address the heads inside the qkv rows through leading
/// dimensions, so no head is ever copied out. The batch × heads products are
/// independent and small, so they are spread over our workers, each running its
/// products single-threaded (OpenBLAS in fp32; in bf16 our small kernel, or oneDNN).

import CProducts
import CSupport

/// Runs `body` for every (sample, head) pair, spread over our workers; each
/// product inside runs on its worker alone (OpenBLAS is single-threaded, see `Parallel`).
/// When OpenBLAS threads its products itself, the pairs run one after another.
@inline(__always)
func forEachSampleAndHead(batch: Int, heads: Int, _ body: (_ sample: Int, _ head: Int) -> Void) {
    guard Parallel.splitsProducts else {
        for pair in 0..<(batch * heads) { body(pair / heads, pair % heads) }
        return
    }
    parallelFor(batch * heads) { range in
        for pair in range { body(pair / heads, pair % heads) }
    }
}

/// The pair after (sample, head) in `forEachSampleAndHead`'s order, if any: in bf16 its
/// operands are prefetched while this pair's products run. They are rows of a few hundred
/// bytes scattered through arrays far larger than the caches, written long before (the
/// qkv product's output for the whole batch), which the CPU's own prefetchers hardly
/// anticipate: without this, the bf16 kernel spent a third of its time waiting for them.
@inline(__always)
private func nextPair(after sample: Int, _ head: Int, batch: Int, heads: Int) -> (sample: Int, head: Int)? {
    let next = sample * heads + head + 1
    return next < batch * heads ? (next / heads, next % heads) : nil
}

/// Asks for `rows` rows of `count` floats, `stride` floats apart, to be brought into the cache.
@inline(__always)
private func prefetch(_ base: UnsafePointer<Float>, rows: Int, count: Int, stride: Int, forWriting: Bool = false) {
    mae_prefetch_rows(base, rows, count * 4, stride * 4, forWriting ? 1 : 0)
}

/// output[batch, tokens, heads·headDimension] = softmax(q kᵀ · hd^-1/2) v per head;
/// probabilities[batch, heads, tokens, tokens] are saved for the backward. Each head's
/// scores and softmax run in the thread's scratch (`attentionScratch`), from which the
/// probabilities are streamed out: written once, without first reading their lines.
/// qkv is [batch, tokens, 3 · heads · headDimension].
/// In bf16, `roundedOutput`, when given, takes the output rounded to bf16 (the bits of
/// rounding the fp32 output) in place of `output`, which is then not written: for the proj
/// product, which alone reads it, forward and backward, and so rounds nothing.
public func attentionForward(output: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>,
                             qkv: UnsafePointer<Float>,
                             batch: Int, tokens: Int, heads: Int, headDimension: Int,
                             precision: Precision = .fp32, roundedOutput: UnsafeMutablePointer<UInt16>? = nil) {
    precondition(roundedOutput == nil || precision == .bf16, "only a bf16 attention writes its output rounded")
    let width = heads * headDimension
    let qkvWidth = 3 * width
    let scale = 1 / Float(headDimension).squareRoot()
    forEachSampleAndHead(batch: batch, heads: heads) { sample, head in
        let q = qkv + sample * tokens * qkvWidth + head * headDimension
        let k = q + width
        let v = q + 2 * width
        if precision == .bf16, let next = nextPair(after: sample, head, batch: batch, heads: heads) {
            let nextQ = qkv + next.sample * tokens * qkvWidth + next.head * headDimension
            for part in 0..<3 { prefetch(nextQ + part * width, rows: tokens, count: headDimension, stride: qkvWidth) }
            if roundedOutput == nil {
                prefetch(output + next.sample * tokens * width + next.head * headDimension,
                         rows: tokens, count: headDimension, stride: width, forWriting: true)
            }
        }
        // p[tokens, tokens] = softmax(scale · q kᵀ), in the scratch, then streamed out
        let p = attentionScratch(tokens * tokens)
        singleThreadedMatrixMultiply(p, ldc: tokens, q, lda: qkvWidth, k, ldb: qkvWidth, transposeB: true,
                       m: tokens, n: tokens, k: headDimension, alpha: scale, precision: precision)
        let outputOffset = sample * tokens * width + head * headDimension
        let savedP = probabilities + (sample * heads + head) * tokens * tokens
        guard precision == .bf16 else {
            softmaxRows(p, rows: tokens, count: tokens)
            mae_stream_copy(savedP, p, tokens * tokens)
            // output[tokens, hd] (inside the [tokens, width] rows) = p v
            singleThreadedMatrixMultiply(output + outputOffset, ldc: width, p, lda: tokens, v, ldb: qkvWidth,
                                         m: tokens, n: headDimension, k: tokens)
            return
        }
        // In bf16 the softmax also writes p rounded, which the product p v reads as it is:
        // the bits it would round p to itself, without a pass of its own.
        let roundedP = attentionBuffer(tokens * tokens)
        softmaxRows(p, rows: tokens, count: tokens, rounded: roundedP)
        mae_stream_copy(savedP, p, tokens * tokens)
        if let roundedOutput {
            roundedOutputProduct(roundedOutput + outputOffset, ldc: width, roundedP, lda: tokens, v, ldb: qkvWidth,
                                 m: tokens, n: headDimension, k: tokens)
        } else {
            bfloat16Product(output + outputOffset, ldc: width, roundedP, isRounded: true, lda: tokens, transposeA: false,
                            v, isRounded: false, ldb: qkvWidth, transposeB: false,
                            m: tokens, n: headDimension, k: tokens, alpha: 1, beta: 0)
        }
    }
}

/// values[rows, count] = the softmax of each row (`softmaxInPlace`), and with `rounded` also
/// rounded[rows, count] = those probabilities rounded to bf16: 16 floats per instruction in C
/// where the CPU has AVX-512 (CSupportSoftmax.h, the same bits), in Swift otherwise.
@inline(__always)
func softmaxRows(_ values: UnsafeMutablePointer<Float>, rows: Int, count: Int,
                 rounded: UnsafeMutablePointer<UInt16>? = nil) {
    if mae_softmax_rows_avx512(values, rounded, rows, count) != 0 { return }
    for row in 0..<rows { softmaxInPlace(values + row * count, count: count) }
    if let rounded { mae_round_to_bf16(rounded, values, rows * count) }
}

/// c[m, n] = a[m, k] · b[k, n] (row-major, a already rounded to bf16) in bf16 on the calling
/// thread, written rounded to bf16 (`mae_bf16_matmul_rounded_output`).
private func roundedOutputProduct(_ c: UnsafeMutablePointer<UInt16>, ldc: Int, _ a: UnsafePointer<UInt16>, lda: Int,
                                  _ b: UnsafePointer<Float>, ldb: Int, m: Int, n: Int, k: Int) {
    let status = mae_bf16_matmul_rounded_output(c, ldc, a, 1, lda, 0, b, 0, ldb, 0, m, n, k, 1)
    if status != 0 {
        let reason = status == -2 ? "out of memory" : String(cString: mae_products_error())
        preconditionFailure("bf16 matrix product \(m)×\(n)×\(k) failed: \(reason)")
    }
}

/// The calling thread's scratch of `count` floats for one head's [tokens, tokens] scores
/// or their gradient (`mae_attention_scratch`).
private func attentionScratch(_ count: Int) -> UnsafeMutablePointer<Float> {
    guard let scratch = mae_attention_scratch(count) else {
        preconditionFailure("out of memory for \(count) of attention's scores")
    }
    return scratch
}

/// The calling thread's buffer of `count` bf16 values for one head's probabilities
/// (`mae_bf16_attention_buffer`).
private func attentionBuffer(_ count: Int) -> UnsafeMutablePointer<UInt16> {
    guard let buffer = mae_bf16_attention_buffer(count) else {
        preconditionFailure("out of memory for \(count) of attention's values in bf16")
    }
    return buffer
}

/// Backward of `attentionForward`: qkvGradient[batch, tokens, 3·width] is assigned. Each
/// head's probability gradient lives in the thread's scratch (`attentionScratch`).
public func attentionBackward(qkvGradient: UnsafeMutablePointer<Float>,
                              outputGradient: UnsafePointer<Float>,
                              qkv: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
                              batch: Int, tokens: Int, heads: Int, headDimension: Int,
                              precision: Precision = .fp32) {
    let width = heads * headDimension
    let qkvWidth = 3 * width
    let scale = 1 / Float(headDimension).squareRoot()
    forEachSampleAndHead(batch: batch, heads: heads) { sample, head in
        let q = qkv + sample * tokens * qkvWidth + head * headDimension
        let k = q + width
        let v = q + 2 * width
        let dq = qkvGradient + sample * tokens * qkvWidth + head * headDimension
        let dk = dq + width
        let dv = dq + 2 * width
        let p = probabilities + (sample * heads + head) * tokens * tokens
        let dp = attentionScratch(tokens * tokens)
        let dOutput = outputGradient + sample * tokens * width + head * headDimension
        if precision == .bf16, let next = nextPair(after: sample, head, batch: batch, heads: heads) {
            let offset = next.sample * tokens * qkvWidth + next.head * headDimension
            for part in 0..<3 {
                prefetch(qkv + offset + part * width, rows: tokens, count: headDimension, stride: qkvWidth)
                prefetch(qkvGradient + offset + part * width, rows: tokens, count: headDimension, stride: qkvWidth,
                         forWriting: true)
            }
            prefetch(outputGradient + next.sample * tokens * width + next.head * headDimension,
                     rows: tokens, count: headDimension, stride: width)
            prefetch(probabilities + (next.sample * heads + next.head) * tokens * tokens,
                     rows: 1, count: tokens * tokens, stride: 0)
        }
        // In bf16 on the small kernel, one C call runs the head (the same bits): its single
        // pass over p writes ds rounded straight into the two layouts that dq = ds k and
        // dk = dsᵀ q read, and p into the one dv = pᵀ dOutput reads, where the products below
        // would each pack their [tokens, tokens] operand from fp32 themselves.
        if precision == .bf16 {
            let status = mae_bf16_attention_head_backward(dq, dk, dv, qkvWidth, q, k, v, dOutput, width, p, dp,
                                                          tokens, headDimension, scale)
            precondition(status >= 0, "out of memory for attention's backward in bf16 (\(tokens) tokens)")
            if status == 1 { return }
        }
        // dp = dOutput vᵀ; dv = pᵀ dOutput
        singleThreadedMatrixMultiply(dp, ldc: tokens, dOutput, lda: width, v, ldb: qkvWidth, transposeB: true,
                       m: tokens, n: tokens, k: headDimension, precision: precision)
        singleThreadedMatrixMultiply(dv, ldc: qkvWidth, p, lda: tokens, transposeA: true, dOutput, ldb: width,
                       m: tokens, n: headDimension, k: tokens, precision: precision)
        // Through the softmax and the scale: ds = scale · p ∘ (dp − Σ_keys dp ∘ p)
        for row in 0..<tokens {
            softmaxBackwardInPlace(dp + row * tokens, probabilities: p + row * tokens, count: tokens, scale: scale)
        }
        // dq = ds k; dk = dsᵀ q
        singleThreadedMatrixMultiply(dq, ldc: qkvWidth, dp, lda: tokens, k, ldb: qkvWidth,
                       m: tokens, n: headDimension, k: tokens, precision: precision)
        singleThreadedMatrixMultiply(dk, ldc: qkvWidth, dp, lda: tokens, transposeA: true, q, ldb: qkvWidth,
                       m: tokens, n: headDimension, k: tokens, precision: precision)
    }
}

/// values[count] = softmax(values), numerically stable (the row maximum is subtracted).
/// CSupport's softmax.c repeats it for AVX-512 operation for operation (`softmaxRows`): a
/// change here needs the same change there (`theCSoftmaxHasTheBitsOfSoftmaxInPlace`).
@inline(__always)
public func softmaxInPlace(_ values: UnsafeMutablePointer<Float>, count: Int) {
    var maximum = -Float.infinity
    for index in 0..<count { maximum = values[index] > maximum ? values[index] : maximum }
    for index in 0..<count { values[index] = fastExp(values[index] - maximum) }
    var sum16 = SIMD16<Float>()
    var index = 0
    while index + 16 <= count { sum16 += load16(values + index); index += 16 }
    var sum = sum16.sum()
    while index < count { sum += values[index]; index += 1 }
    let reciprocal = 1 / sum
    for index in 0..<count { values[index] *= reciprocal }
}

/// gradient[count] = scale · p ∘ (gradient − Σ gradient ∘ p): the softmax backward
/// in place, from the gradient with respect to the probabilities p. CProducts'
/// `mae_bf16_attention_head_backward` repeats it operation for operation: a change here needs
/// the same change there (`attentionBackwardInBFloat16AgreesWithThePlainProducts`).
@inline(__always)
public func softmaxBackwardInPlace(_ gradient: UnsafeMutablePointer<Float>, probabilities: UnsafePointer<Float>,
                                   count: Int, scale: Float) {
    var dot16 = SIMD16<Float>()
    var index = 0
    while index + 16 <= count { dot16 += load16(gradient + index) * load16(probabilities + index); index += 16 }
    var dot = dot16.sum()
    while index < count { dot += gradient[index] * probabilities[index]; index += 1 }
    index = 0
    while index + 16 <= count {
        store16(scale * load16(probabilities + index) * (load16(gradient + index) - dot), gradient + index)
        index += 16
    }
    while index < count {
        gradient[index] = scale * probabilities[index] * (gradient[index] - dot)
        index += 1
    }
}
