import CSupport
import Foundation
import Kernels
import Testing
import TestSupport

/// Each kernel against its double-precision definition, and each backward against
/// central differences of that definition: loss = Σ R ⊙ layer(x) with random R, so
/// the backward receives R as the output gradient.
@Suite struct LayerTests {
    @Test(arguments: [(5, 7, 6), (33, 20, 19)])
    func linearForwardAndBackward(rows: Int, inFeatures: Int, outFeatures: Int) {
        let x = rounded(randomValues(rows * inFeatures, seed: 1))
        let w = rounded(randomValues(outFeatures * inFeatures, seed: 2))
        let b = rounded(randomValues(outFeatures, seed: 3))
        let r = rounded(randomValues(rows * outFeatures, seed: 4))
        let residual = rounded(randomValues(rows * outFeatures, seed: 5))
        let output = FloatBuffer(count: rows * outFeatures)
        let (xb, wb, bb, rb, residualBuffer) = (buffer(x), buffer(w), buffer(b), buffer(r), buffer(residual))
        linearForward(output: output.pointer, input: xb.pointer, weight: wb.pointer, bias: bb.pointer,
                      rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
        let expected = Reference.linear(x, w, b, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
        expectClose(output.toArray(), expected, absolute: 1e-5, "linear forward")
        linearForward(output: output.pointer, input: xb.pointer, weight: wb.pointer, bias: bb.pointer,
                      residual: residualBuffer.pointer, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
        expectClose(output.toArray(), zip(expected, residual).map(+), absolute: 1e-5, "linear forward with residual")

        // Gradients: weight and bias gradients start non-zero to check that they are added.
        let dx = FloatBuffer(count: rows * inFeatures)
        let dw = FloatBuffer([Float](repeating: 0.5, count: outFeatures * inFeatures))
        let db = FloatBuffer([Float](repeating: -0.25, count: outFeatures))
        linearBackward(inputGradient: dx.pointer, weightGradient: dw.pointer, biasGradient: db.pointer,
                       outputGradient: rb.pointer, input: xb.pointer, weight: wb.pointer,
                       rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
        let lossOfX = { (v: [Double]) in dot(r, Reference.linear(v, w, b, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)) }
        let lossOfW = { (v: [Double]) in dot(r, Reference.linear(x, v, b, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)) }
        let lossOfB = { (v: [Double]) in dot(r, Reference.linear(x, w, v, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)) }
        expectClose(dx.toArray(), numericGradient(x, lossOfX), absolute: 1e-5, relative: 1e-5, "linear d input")
        expectClose(dw.toArray(), numericGradient(w, lossOfW).map { $0 + 0.5 }, absolute: 1e-5, relative: 1e-5, "linear d weight")
        expectClose(db.toArray(), numericGradient(b, lossOfB).map { $0 - 0.25 }, absolute: 1e-5, relative: 1e-5, "linear d bias")
    }

    @Test(arguments: [(3, 20), (9, 48), (4, 7)])
    func layerNormForwardAndBackward(rows: Int, width: Int) {
        // A non-zero mean and spread per row, as in a residual stream.
        let x = rounded(randomValues(rows * width, seed: 11, in: -2..<3))
        let w = rounded(randomValues(width, seed: 12, in: 0.5..<1.5))
        let b = rounded(randomValues(width, seed: 13))
        let r = rounded(randomValues(rows * width, seed: 14))
        let residual = rounded(randomValues(rows * width, seed: 15))
        let output = FloatBuffer(count: rows * width)
        let mean = FloatBuffer(count: rows), reciprocalStd = FloatBuffer(count: rows)
        let (xb, wb, bb, rb) = (buffer(x), buffer(w), buffer(b), buffer(r))
        layerNormForward(output: output.pointer, mean: mean.pointer, reciprocalStd: reciprocalStd.pointer,
                         input: xb.pointer, weight: wb.pointer, bias: bb.pointer, rows: rows, width: width)
        expectClose(output.toArray(), Reference.layerNorm(x, w, b, rows: rows, width: width), absolute: 2e-6, relative: 2e-6,
                    "layer norm forward")

        let dx = buffer(residual)  // in place: d input = residual gradient + LN backward
        let dw = FloatBuffer([Float](repeating: 1, count: width)), db = FloatBuffer([Float](repeating: 2, count: width))
        layerNormBackward(inputGradient: dx.pointer, weightGradient: dw.pointer, biasGradient: db.pointer,
                          outputGradient: rb.pointer, input: xb.pointer, mean: mean.pointer,
                          reciprocalStd: reciprocalStd.pointer, weight: wb.pointer, residualGradient: dx.pointer,
                          rows: rows, width: width)
        let gx = numericGradient(x) { dot(r, Reference.layerNorm($0, w, b, rows: rows, width: width)) }
        let gw = numericGradient(w) { dot(r, Reference.layerNorm(x, $0, b, rows: rows, width: width)) }
        let gb = numericGradient(b) { dot(r, Reference.layerNorm(x, w, $0, rows: rows, width: width)) }
        expectClose(dx.toArray(), zip(gx, residual).map(+), absolute: 2e-5, relative: 1e-5, "layer norm d input")
        expectClose(dw.toArray(), gw.map { $0 + 1 }, absolute: 2e-5, relative: 1e-5, "layer norm d weight")
        expectClose(db.toArray(), gb.map { $0 + 2 }, absolute: 2e-5, relative: 1e-5, "layer norm d bias")
    }

    @Test func geluForwardAndBackward() {
        // Values over the whole useful range, including |x| > 4 where erf saturates;
        // widths with a SIMD body and a tail.
        let rows = 7, width = 37
        let h = rounded(randomValues(rows * width, seed: 21, in: -7..<7))
        let bias = rounded(randomValues(width, seed: 22))
        let r = rounded(randomValues(rows * width, seed: 23))
        let x = (0..<(rows * width)).map { h[$0] + bias[$0 % width] }
        let hb = buffer(h), biasBuffer = buffer(bias), activated = FloatBuffer(count: rows * width)
        biasGELUForward(activated: activated.pointer, preActivation: hb.pointer, bias: biasBuffer.pointer,
                        rows: rows, width: width)
        expectClose(activated.toArray(), x.map(Reference.gelu), absolute: 1e-6, relative: 1e-6, "GELU forward")

        let dx = buffer(r)  // in place, as the model calls it
        geluBackward(inputGradient: dx.pointer, outputGradient: dx.pointer, derivative: hb.pointer, count: rows * width)
        let expected = zip(x, r).map { value, weight in
            weight * (Reference.gelu(value + 1e-6) - Reference.gelu(value - 1e-6)) / 2e-6
        }
        expectClose(dx.toArray(), expected, absolute: 1e-5, relative: 1e-5, "GELU backward")
        withExtendedLifetime((biasBuffer, hb)) {}
    }

    /// `biasGELUForward` (AVX-512 in C where the CPU has it) gives, element by element, the bits
    /// of `normalCDFAndDensity` evaluated here one value at a time, with and without the bf16
    /// output: widths with and without a tail, values over the whole range and at the edges of
    /// `fastExp`'s clamps, zeros, infinities and subnormals (NaNs stay NaNs).
    @Test(arguments: [(3, 37), (2, 16), (4, 5), (2, 768)])
    func geluIsTheScalarFormulaToTheBit(rows: Int, width: Int) {
        var values = randomValues(rows * width, seed: 24, in: -9..<9).map(Float.init)
        let specials: [Float] = [0, -0, .infinity, -.infinity, .nan, 13.26, -13.2, 13.3, -13.3, 1e30, -1e30, 0x1p-140, -0x1p-140,
                                 -5.5, 5.5, 1e-20]
        for (index, special) in specials.enumerated() where index < values.count { values[(index * 37) % values.count] = special }
        let bias = randomValues(width, seed: 25).map(Float.init)
        let expectedActivated = (0..<values.count).map { index -> Float in
            let x = values[index] + bias[index % width]
            return x * normalCDFAndDensity(x).cdf
        }
        let expectedDerivative = (0..<values.count).map { index -> Float in
            let x = values[index] + bias[index % width]
            let (cdf, density) = normalCDFAndDensity(x)
            return cdf + x * density
        }
        func same(_ a: Float, _ b: Float) -> Bool { a.bitPattern == b.bitPattern || (a.isNaN && b.isNaN) }
        for rounding in [false, true] {
            let pre = FloatBuffer(values), biasBuffer = FloatBuffer(bias), activated = FloatBuffer(count: values.count)
            let rounded = UnsafeMutablePointer<UInt16>.allocate(capacity: values.count)
            defer { rounded.deallocate() }
            biasGELUForward(activated: activated.pointer, preActivation: pre.pointer, bias: biasBuffer.pointer, rows: rows,
                            width: width, roundedActivated: rounding ? rounded : nil)
            let derivativeDiffer = (0..<values.count).filter { !same(pre[$0], expectedDerivative[$0]) }
            #expect(derivativeDiffer.isEmpty, "GELU' differs at \(derivativeDiffer.prefix(5).map { (values[$0], pre[$0], expectedDerivative[$0]) })")
            if rounding {
                var expectedRounded = [UInt16](repeating: 0, count: values.count)
                expectedActivated.withUnsafeBufferPointer { mae_round_to_bf16(&expectedRounded, $0.baseAddress!, values.count) }
                let differ = (0..<values.count).filter { rounded[$0] != expectedRounded[$0] && !expectedActivated[$0].isNaN }
                #expect(differ.isEmpty, "bf16 GELU differs at \(differ.prefix(5).map { values[$0] })")
                #expect(activated.toArray().allSatisfy { $0 == 0 }, "wrote the fp32 output as well")
            } else {
                let differ = (0..<values.count).filter { !same(activated[$0], expectedActivated[$0]) }
                #expect(differ.isEmpty, "GELU differs at \(differ.prefix(5).map { (values[$0], activated[$0], expectedActivated[$0]) })")
            }
        }
    }

    @Test func fastExpAndTheNormalDistribution() {
        let x = (0..<4001).map { -20 + Double($0) * 0.01 }
        let exps = x.map { Double(fastExp(Float($0))) }
        expectClose(exps, x.map { exp(Double(Float($0))) }, absolute: 0, relative: 3e-7, "exp")
        let pieces = x.map { normalCDFAndDensity(Float($0)) }
        expectClose(pieces.map { Double($0.cdf) }, x.map { 0.5 * erfc(-Double(Float($0)) / 2.0.squareRoot()) },
                    absolute: 2.5e-7, "normal CDF")
        expectClose(pieces.map { Double($0.density) }, x.map { exp(-0.5 * Double(Float($0)) * Double(Float($0))) / (2 * Double.pi).squareRoot() },
                    absolute: 1e-9, relative: 1e-6, "normal density")
        // Saturation far out, and no overflow to infinity or NaN.
        #expect(normalCDFAndDensity(30).cdf == 1 && normalCDFAndDensity(-30).cdf >= 0 && normalCDFAndDensity(-30).cdf < 1e-30)
        #expect(fastExp(-200) >= 0 && fastExp(-200) < 1e-37 && fastExp(100).isFinite)
    }

    @Test(arguments: [(2, 5, 2, 3), (1, 18, 2, 4)])
    func attentionForwardAndBackward(batch: Int, tokens: Int, heads: Int, headDimension: Int) {
        let width = heads * headDimension
        let qkv = rounded(randomValues(batch * tokens * 3 * width, seed: 31, in: -1.5..<1.5))
        let r = rounded(randomValues(batch * tokens * width, seed: 32))
        let output = FloatBuffer(count: batch * tokens * width)
        let probabilities = FloatBuffer(count: batch * heads * tokens * tokens)
        let qkvBuffer = buffer(qkv)
        attentionForward(output: output.pointer, probabilities: probabilities.pointer, qkv: qkvBuffer.pointer,
                         batch: batch, tokens: tokens, heads: heads, headDimension: headDimension)
        let reference = { (v: [Double]) in
            Reference.attention(v, batch: batch, tokens: tokens, heads: heads, headDimension: headDimension)
        }
        expectClose(output.toArray(), reference(qkv), absolute: 2e-6, relative: 1e-5, "attention forward")
        // Every probability row sums to one.
        let rowSums = stride(from: 0, to: probabilities.count, by: tokens).map { start in
            (start..<(start + tokens)).reduce(0.0) { $0 + Double(probabilities[$1]) }
        }
        expectClose(rowSums, [Double](repeating: 1, count: rowSums.count), absolute: 1e-6, "softmax rows")

        let dqkv = FloatBuffer([Float](repeating: 99, count: qkv.count))  // assigned, not added
        let rb = buffer(r)
        attentionBackward(qkvGradient: dqkv.pointer, outputGradient: rb.pointer,
                          qkv: qkvBuffer.pointer, probabilities: probabilities.pointer,
                          batch: batch, tokens: tokens, heads: heads, headDimension: headDimension)
        expectClose(dqkv.toArray(), numericGradient(qkv) { dot(r, reference($0)) }, absolute: 2e-5, relative: 1e-4,
                    "attention d qkv")
        withExtendedLifetime((rb, qkvBuffer)) {}
    }

    /// Products cut over two workers (tall, and wide with few rows) and one too small to be
    /// cut, every transpose combination, with padded leading dimensions: right, and the
    /// same to the bit as the product computed by one OpenBLAS call.
    @Test(arguments: [(600, 70, 60), (250, 700, 50), (40, 150, 50)])
    func matrixProductsSplitOverWorkers(m: Int, n: Int, k: Int) {
        let before = Parallel.threads
        defer { Parallel.setThreads(before) }
        for (transposeA, transposeB) in [(false, false), (false, true), (true, false), (true, true)] {
            let (aRows, aColumns) = transposeA ? (k, m) : (m, k)
            let (bRows, bColumns) = transposeB ? (n, k) : (k, n)
            let lda = aColumns + 3, ldb = bColumns + 5, ldc = n + 2
            let a = rounded(randomValues(aRows * lda, seed: 61)), b = rounded(randomValues(bRows * ldb, seed: 62))
            let c0 = rounded(randomValues(m * ldc, seed: 63))
            let (ab, bb, cb, single) = (buffer(a), buffer(b), buffer(c0), buffer(c0))
            Parallel.setThreads(1)
            matrixMultiply(single.pointer, ldc: ldc, ab.pointer, lda: lda, transposeA: transposeA, bb.pointer, ldb: ldb,
                           transposeB: transposeB, m: m, n: n, k: k, alpha: 0.5, beta: 2)
            Parallel.setThreads(2)
            matrixMultiply(cb.pointer, ldc: ldc, ab.pointer, lda: lda, transposeA: transposeA, bb.pointer, ldb: ldb,
                           transposeB: transposeB, m: m, n: n, k: k, alpha: 0.5, beta: 2)
            let differing = zip(cb.toArray(), single.toArray()).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0, "\(differing) elements differ from one call, transposeA \(transposeA) transposeB \(transposeB)")
            var expected = c0
            for i in 0..<m {
                for j in 0..<n {
                    var sum = 0.0
                    for p in 0..<k {
                        sum += (transposeA ? a[p * lda + i] : a[i * lda + p]) * (transposeB ? b[j * ldb + p] : b[p * ldb + j])
                    }
                    expected[i * ldc + j] = 0.5 * sum + 2 * c0[i * ldc + j]
                }
            }
            expectClose(cb.toArray(), expected, absolute: 1e-4, "product transposeA \(transposeA) transposeB \(transposeB)")
        }
    }

    @Test func attentionIsTheSameOnTwoThreads() {
        let (batch, tokens, heads, headDimension) = (3, 20, 4, 8)
        let qkv = buffer(randomValues(batch * tokens * 3 * heads * headDimension, seed: 33))
        func run() -> [Float] {
            let output = FloatBuffer(count: batch * tokens * heads * headDimension)
            let probabilities = FloatBuffer(count: batch * heads * tokens * tokens)
            attentionForward(output: output.pointer, probabilities: probabilities.pointer, qkv: qkv.pointer,
                             batch: batch, tokens: tokens, heads: heads, headDimension: headDimension)
            let dqkv = FloatBuffer(count: qkv.count)
            attentionBackward(qkvGradient: dqkv.pointer, outputGradient: output.pointer,
                              qkv: qkv.pointer, probabilities: probabilities.pointer,
                              batch: batch, tokens: tokens, heads: heads, headDimension: headDimension)
            return output.toArray() + dqkv.toArray()  // qkv outlives the closure's uses
        }
        let before = Parallel.threads
        Parallel.setThreads(1)
        let single = run()
        Parallel.setThreads(2)
        let double = run()
        Parallel.setThreads(before)
        expectClose(double, single.map(Double.init), absolute: 1e-6, relative: 1e-6, "two threads vs one")
    }
}
