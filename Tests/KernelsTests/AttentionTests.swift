import CProducts
import CSupport
import Kernels
import Testing
import TestSupport

/// Attention's softmax in C (CSupportSoftmax.h) against Swift's `softmaxInPlace`, bit for bit,
/// the streaming copy of its probabilities, and attention itself against the way it was computed before the C softmax rounded p for
/// the bf16 product p·v and before the backward computed dvᵀ and dkᵀ.
@Suite struct AttentionTests {

    /// Rows of logits of every kind the model can meet and some it should not: small and
    /// widely spread values, large offsets (which the maximum cancels), very negative ones,
    /// values far past fastExp's clamps, equal values, and rows whose small probabilities are
    /// subnormal (half the row 1000 below the other half).
    static func logits(rows: Int, count: Int) -> [Float] {
        (0..<rows).flatMap { row -> [Float] in
            let uniform = randomValues(count, seed: 1000 * count + row, in: -1..<1).map(Float.init)
            return uniform.enumerated().map { index, u -> Float in
                switch row % 12 {
                case 0, 1, 2: 3 * u
                case 3: 60 * u
                case 4: 10_000 + 50 * u
                case 5: -1_000_000 + 100 * u
                case 6: 5
                case 7: index % 2 == 0 ? 0 : -1000
                case 8: index == count / 2 ? 0 : -90 + u
                case 9: 1e30 * u
                case 10: index % 5 == 3 ? -.infinity : 90 + 10 * u
                default: 0.01 * u
                }
            }
        }
    }

    @Test(.enabled(if: cpuHasAVX512, "the C softmax runs where the CPU has AVX512F, BW and VL"),
          arguments: [1, 2, 15, 16, 17, 31, 50, 64, 197, 200])
    func theCSoftmaxHasTheBitsOfSoftmaxInPlace(count: Int) {
        let rows = 48
        let input = Self.logits(rows: rows, count: count)
        let expected = FloatBuffer(input), actual = FloatBuffer(input)
        for row in 0..<rows { softmaxInPlace(expected.pointer + row * count, count: count) }
        let rounded = UnsafeMutablePointer<UInt16>.allocate(capacity: rows * count)
        defer { rounded.deallocate() }
        #expect(mae_softmax_rows_avx512(actual.pointer, rounded, rows, count) == 1)
        let differing = (0..<input.count).filter { actual[$0].bitPattern != expected[$0].bitPattern }
        #expect(differing.count == 0, "\(differing.count) of \(input.count) differ, first \(differing.prefix(4).map { (row: $0 / count, got: actual[$0], expected: expected[$0]) })")
        var expectedRounded = [UInt16](repeating: 0, count: rows * count)
        mae_round_to_bf16(&expectedRounded, actual.pointer, rows * count)
        let roundedDiffering = (0..<input.count).filter { rounded[$0] != expectedRounded[$0] }
        #expect(roundedDiffering.count == 0, "\(roundedDiffering.count) bf16 probabilities differ from the fp32 ones rounded")
        // The rows reach what they are meant to: subnormal probabilities (which the bf16
        // rounding must round, not flush) where half a long row lies 1000 below the rest.
        if count >= 64 {
            #expect((0..<input.count).contains { actual[$0] != 0 && !actual[$0].isNormal }, "no subnormal probability")
        }
        // Without the bf16 output, the same fp32 bits.
        let plain = FloatBuffer(input)
        #expect(mae_softmax_rows_avx512(plain.pointer, nil, rows, count) == 1)
        #expect((0..<input.count).allSatisfy { plain[$0].bitPattern == actual[$0].bitPattern })
    }

    /// The references' loop: every (sample, head) in order, on the calling thread, with the
    /// offsets of the head's q in qkv [batch, tokens, 3·width] (k and v follow at width and
    /// 2·width), of its probabilities in [batch, heads, tokens, tokens] and of its output in
    /// [batch, tokens, width].
    static func forEachHead(batch: Int, tokens: Int, heads: Int, headDimension: Int,
                            _ body: (_ qkvOffset: Int, _ probabilityOffset: Int, _ outputOffset: Int) -> Void) {
        let width = heads * headDimension
        for sample in 0..<batch {
            for head in 0..<heads {
                body(sample * tokens * 3 * width + head * headDimension, (sample * heads + head) * tokens * tokens,
                     sample * tokens * width + head * headDimension)
            }
        }
    }

    /// attentionForward as it was computed before the C softmax: `softmaxInPlace` row by row,
    /// then the public products, which round an fp32 p to bf16 themselves.
    static func referenceAttention(output: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>,
                                   roundedOutput: UnsafeMutablePointer<UInt16>?, qkv: UnsafePointer<Float>,
                                   batch: Int, tokens: Int, heads: Int, headDimension: Int, precision: Precision) {
        let width = heads * headDimension, qkvWidth = 3 * width
        let scale = 1 / Float(headDimension).squareRoot()
        forEachHead(batch: batch, tokens: tokens, heads: heads, headDimension: headDimension) { qkvOffset, pOffset, offset in
            let q = qkv + qkvOffset
            let (k, v) = (q + width, q + 2 * width)
            let p = probabilities + pOffset
            singleThreadedMatrixMultiply(p, ldc: tokens, q, lda: qkvWidth, k, ldb: qkvWidth, transposeB: true,
                                         m: tokens, n: tokens, k: headDimension, alpha: scale, precision: precision)
            for row in 0..<tokens { softmaxInPlace(p + row * tokens, count: tokens) }
            if let roundedOutput {
                let status = mae_bf16_matmul_rounded_output(roundedOutput + offset, width, p, 0, tokens, 0,
                                                            v, 0, qkvWidth, 0, tokens, headDimension, tokens, 1)
                #expect(status == 0)
            } else {
                singleThreadedMatrixMultiply(output + offset, ldc: width, p, lda: tokens, v, ldb: qkvWidth,
                                             m: tokens, n: headDimension, k: tokens, precision: precision)
            }
        }
    }

    /// The streaming copy of a head's probabilities (CSupportScratch.h): at every alignment of
    /// the destination and for counts within a vector, around one and past several, each float
    /// copied to the bit, and nothing written before or after.
    @Test func theStreamingCopyCopiesEveryFloatAndNothingElse() {
        let source = randomValues(100, seed: 8).map(Float.init)
        let untouched: Float = -7
        for offset in 0..<16 {
            for count in [0, 1, 5, 15, 16, 17, 31, 33, 64, 100] {
                let destination = FloatBuffer([Float](repeating: untouched, count: 16 + 100 + 16))
                mae_stream_copy(destination.pointer + offset, source, count)
                let wrong = (0..<destination.count).filter { index in
                    let copied = index >= offset && index < offset + count
                    return destination[index].bitPattern != (copied ? source[index - offset] : untouched).bitPattern
                }
                #expect(wrong.isEmpty, "offset \(offset), count \(count): floats \(wrong.prefix(4)) wrong")
            }
        }
    }

    /// attentionForward gives the bits of the reference in fp32 and bf16, with the output in
    /// fp32 and rounded, on the small bf16 kernel (17 tokens; ViT-B's encoder: 50 tokens, hd 64;
    /// its decoder: 197 tokens, hd 32) and past it on oneDNN (ViT-H's decoder: 257 tokens, hd 32),
    /// on two threads.
    @Test(arguments: [(2, 17, 3, 64), (2, 50, 2, 64), (1, 197, 2, 32), (1, 257, 2, 32)])
    func attentionHasTheBitsOfTheSwiftSoftmaxAndTheProducts(batch: Int, tokens: Int, heads: Int, headDimension: Int) {
        let width = heads * headDimension
        // qkv within ±1.5 in the first sample (logits of a few units, as in training), ±4 in the others.
        let qkv = FloatBuffer(randomValues(batch * tokens * 3 * width, seed: tokens, in: -1..<1).enumerated().map { index, x in
            Float(index < tokens * 3 * width ? 1.5 * x : 4 * x)
        })
        let before = Parallel.threads
        defer { Parallel.setThreads(before) }
        Parallel.setThreads(2)
        // The bf16 cases where the CPU runs bf16 products; fp32 everywhere.
        let cases = [(Precision.fp32, false)] + (cpuRunsBFloat16Products ? [(.bf16, false), (.bf16, true)] : [])
        for (precision, roundsOutput) in cases {
            let output = FloatBuffer(count: batch * tokens * width), expectedOutput = FloatBuffer(count: output.count)
            let probabilities = FloatBuffer(count: batch * heads * tokens * tokens)
            let expectedProbabilities = FloatBuffer(count: probabilities.count)
            let rounded = UnsafeMutablePointer<UInt16>.allocate(capacity: output.count)
            let expectedRounded = UnsafeMutablePointer<UInt16>.allocate(capacity: output.count)
            defer { rounded.deallocate(); expectedRounded.deallocate() }
            attentionForward(output: output.pointer, probabilities: probabilities.pointer, qkv: qkv.pointer,
                             batch: batch, tokens: tokens, heads: heads, headDimension: headDimension,
                             precision: precision, roundedOutput: roundsOutput ? rounded : nil)
            Self.referenceAttention(output: expectedOutput.pointer, probabilities: expectedProbabilities.pointer,
                                    roundedOutput: roundsOutput ? expectedRounded : nil, qkv: qkv.pointer,
                                    batch: batch, tokens: tokens, heads: heads, headDimension: headDimension,
                                    precision: precision)
            let label = "\(precision)\(roundsOutput ? ", output rounded" : "")"
            let probabilitiesDiffer = (0..<probabilities.count).filter {
                probabilities[$0].bitPattern != expectedProbabilities[$0].bitPattern
            }.count
            #expect(probabilitiesDiffer == 0, "\(label): \(probabilitiesDiffer) probabilities differ")
            let outputsDiffer = roundsOutput
                ? (0..<output.count).filter { rounded[$0] != expectedRounded[$0] }.count
                : (0..<output.count).filter { output[$0].bitPattern != expectedOutput[$0].bitPattern }.count
            #expect(outputsDiffer == 0, "\(label): \(outputsDiffer) of \(output.count) outputs differ")
        }
    }

    /// attentionBackward in bf16 from the public products alone, one (sample, head) after
    /// another on the calling thread: no split over workers, no prefetching of the next pair.
    static func referenceAttentionBackward(qkvGradient: UnsafeMutablePointer<Float>, outputGradient: UnsafePointer<Float>,
                                           qkv: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
                                           batch: Int, tokens: Int, heads: Int, headDimension: Int) {
        let width = heads * headDimension, qkvWidth = 3 * width
        let scale = 1 / Float(headDimension).squareRoot()
        let probabilityGradient = FloatBuffer(count: tokens * tokens)
        let dp = probabilityGradient.pointer
        forEachHead(batch: batch, tokens: tokens, heads: heads, headDimension: headDimension) { qkvOffset, pOffset, offset in
            let q = qkv + qkvOffset, dq = qkvGradient + qkvOffset
            let (k, v) = (q + width, q + 2 * width)
            let (dk, dv) = (dq + width, dq + 2 * width)
            let p = probabilities + pOffset
            let dOutput = outputGradient + offset
            singleThreadedMatrixMultiply(dp, ldc: tokens, dOutput, lda: width, v, ldb: qkvWidth, transposeB: true,
                                         m: tokens, n: tokens, k: headDimension, precision: .bf16)
            singleThreadedMatrixMultiply(dv, ldc: qkvWidth, p, lda: tokens, transposeA: true, dOutput, ldb: width,
                                         m: tokens, n: headDimension, k: tokens, precision: .bf16)
            for row in 0..<tokens {
                softmaxBackwardInPlace(dp + row * tokens, probabilities: p + row * tokens, count: tokens, scale: scale)
            }
            singleThreadedMatrixMultiply(dq, ldc: qkvWidth, dp, lda: tokens, k, ldb: qkvWidth,
                                         m: tokens, n: headDimension, k: tokens, precision: .bf16)
            singleThreadedMatrixMultiply(dk, ldc: qkvWidth, dp, lda: tokens, transposeA: true, q, ldb: qkvWidth,
                                         m: tokens, n: headDimension, k: tokens, precision: .bf16)
        }
    }

    /// The bf16 backward against the reference products, on the small kernel (50 and 197 tokens;
    /// 31 tokens with hd 24, a part of a vector) and past it on oneDNN (ViT-H's decoder, 257
    /// tokens, hd 32; 200 tokens, hd 64), on two threads: the results agree to the rounding of
    /// fp32 sums at worst (to the bit on AMD Zen 4), and to the bit where the small kernel runs
    /// them: there one C call runs each head (`mae_bf16_attention_head_backward`), its softmax
    /// backward writing ds and p packed for the products, where the reference runs Swift's
    /// softmax backward and the products pack their operands themselves.
    @Test(.needsBFloat16Products, arguments: [(2, 50, 2, 64), (1, 197, 3, 32), (1, 31, 2, 24), (1, 257, 2, 32), (1, 200, 2, 64)])
    func attentionBackwardInBFloat16AgreesWithThePlainProducts(batch: Int, tokens: Int, heads: Int, headDimension: Int) {
        let width = heads * headDimension
        let qkv = FloatBuffer(randomValues(batch * tokens * 3 * width, seed: 5, in: -2..<2).map(Float.init))
        let outputGradient = FloatBuffer(randomValues(batch * tokens * width, seed: 6).map(Float.init))
        let output = FloatBuffer(count: batch * tokens * width)
        let probabilities = FloatBuffer(count: batch * heads * tokens * tokens)
        attentionForward(output: output.pointer, probabilities: probabilities.pointer, qkv: qkv.pointer,
                         batch: batch, tokens: tokens, heads: heads, headDimension: headDimension, precision: .bf16)
        let before = Parallel.threads
        defer { Parallel.setThreads(before) }
        Parallel.setThreads(2)
        let qkvGradient = FloatBuffer(count: qkv.count), expected = FloatBuffer(count: qkv.count)
        attentionBackward(qkvGradient: qkvGradient.pointer, outputGradient: outputGradient.pointer,
                          qkv: qkv.pointer, probabilities: probabilities.pointer,
                          batch: batch, tokens: tokens, heads: heads, headDimension: headDimension, precision: .bf16)
        Self.referenceAttentionBackward(qkvGradient: expected.pointer, outputGradient: outputGradient.pointer,
                                        qkv: qkv.pointer, probabilities: probabilities.pointer,
                                        batch: batch, tokens: tokens, heads: heads, headDimension: headDimension)
        let differing = (0..<qkv.count).filter { qkvGradient[$0].bitPattern != expected[$0].bitPattern }.count
        expectClose(qkvGradient.toArray(), expected.toArray().map(Double.init), absolute: 1e-6, relative: 1e-5,
                    "bf16 attention backward, \(differing) of \(qkv.count) not to the bit")
        let smallKernel = String(cString: mae_bf16_small_product_implementation()).hasPrefix("our ")
        if smallKernel && tokens * tokens * headDimension <= Int(MAE_BF16_SMALL_PRODUCT_LIMIT) {
            #expect(differing == 0, "on the small kernel \(differing) of \(qkv.count) gradients differ from the reference's bits")
        }
    }
}
