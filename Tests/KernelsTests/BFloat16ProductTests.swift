import Foundation
import CProducts
import CSupport
import Kernels
import Testing
import TestSupport

/// The bf16 products (oneDNN) against a double-precision product of the inputs rounded to
/// bf16, and bitwise the same on one and two threads.
@Suite(.serialized) struct BFloat16ProductTests {
    /// x rounded to bf16, to nearest with ties to even, computed here independently of the kernel.
    static func bfloat16(_ x: Float) -> Double {
        let bits = x.bitPattern
        let rounded = (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000
        return Double(Float(bitPattern: rounded))
    }

    @Test func roundingIsToNearestWithTiesToEven() {
        let values: [Float] = [1, 1 + 0x1p-8, 1 + 0x1p-8 + 0x1p-20, 1 + 3 * 0x1p-8, -2.5e-3, 3.0e38, .infinity, -0]
        let source = FloatBuffer(values)
        let destination = UnsafeMutablePointer<UInt16>.allocate(capacity: values.count)
        defer { destination.deallocate() }
        roundToBFloat16(destination, source.pointer, count: values.count)
        for (index, value) in values.enumerated() {
            let got = Float(bitPattern: UInt32(destination[index]) << 16)
            #expect(Double(got) == Self.bfloat16(value), "\(value) rounded to \(got)")
        }
        // Ties: 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷ and goes to the even 1;
        // 1 + 3·2⁻⁸ halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶ goes to the even 1 + 2⁻⁶.
        #expect(Float(bitPattern: UInt32(destination[1]) << 16) == 1)
        #expect(Float(bitPattern: UInt32(destination[3]) << 16) == 1 + 0x1p-6)
        let nan = FloatBuffer([Float.nan])
        roundToBFloat16(destination, nan.pointer, count: 1)
        #expect(Float(bitPattern: UInt32(destination[0]) << 16).isNaN)
    }

    /// The transposing rounding (the weight-gradient products' dy) gives, element by element,
    /// the bits of the plain rounding, on shapes with and without whole 16 × 16 tiles, a padded
    /// leading dimension, and NaNs, infinities and subnormals among the values.
    @Test(arguments: [(16, 16), (48, 32), (37, 50), (5, 70), (200, 17)])
    func transposedRoundingIsTheRoundingTransposed(rows: Int, columns: Int) {
        let ld = columns + 3
        var random = CounterRandom(seed: 7, purpose: .test, epoch: rows, index: columns)
        var source = (0..<(rows * ld)).map { _ in Float(random.nextNormal()) * 100 }
        let specials: [Float] = [.nan, -.nan, .infinity, -.infinity, 0x1p-140, -0x1p-130, 3.4e38, 1 + 0x1p-8]
        for (index, special) in specials.enumerated() { source[(index * 7919) % source.count] = special }
        var transposed = [UInt16](repeating: 0, count: rows * columns)
        var plain = [UInt16](repeating: 0, count: rows * ld)
        mae_round_to_bf16_transposed(&transposed, source, rows, columns, ld)
        mae_round_to_bf16(&plain, source, rows * ld)
        var mismatches = 0
        for row in 0..<rows {
            for column in 0..<columns where transposed[column * rows + row] != plain[row * ld + column] { mismatches += 1 }
        }
        #expect(mismatches == 0, "\(mismatches) of \(rows * columns) elements differ from the plain rounding")
        // The plain rounding, vectorised or not, against the reference of this file.
        for index in 0..<source.count where !source[index].isNaN {
            #expect(Double(Float(bitPattern: UInt32(plain[index]) << 16)) == Self.bfloat16(source[index]))
        }
    }

    /// The rounding both ways at once (a linear layer's output gradient, or that times GELU's
    /// derivative) gives the bits of the plain rounding of each row and of the transposing
    /// rounding of the values, and the column sums it adds those of a loop over the rows:
    /// shapes with and without whole 16 × 16 tiles, padded leading dimensions in and out,
    /// subnormals, NaNs and infinities.
    @Test(arguments: [(16, 16), (48, 32), (37, 50), (5, 70), (200, 17), (64, 96)], [false, true])
    func roundingBothWaysIsThePlainAndTheTransposedRounding(shape: (rows: Int, columns: Int), withFactor: Bool) {
        let (rows, columns) = shape
        let ld = columns + 3, plainLD = columns + 5, transposedLD = rows + 2
        var random = CounterRandom(seed: 8, purpose: .test, epoch: rows, index: columns)
        var source = (0..<(rows * ld)).map { _ in Float(random.nextNormal()) * 100 }
        for (index, special) in ([.nan, -.nan, .infinity, -.infinity, 3.4e38, 1 + 0x1p-8, 0, -0] as [Float]).enumerated() {
            source[(index * 7919 + 16 * ld) % source.count] = special
        }
        for (index, subnormal) in [0x1p-140, -0x1p-130, Float(bitPattern: 0x007F_FFFF)].enumerated() {
            source[min(rows - 1, 3 + index) * ld + min(columns - 1, 2 + 5 * index)] = subnormal
        }
        let factor = withFactor ? (0..<(rows * ld)).map { _ in random.nextFloat() * 1.5 } : nil
        let values = factor.map { factor in zip(source, factor).map { $0 * $1 } } ?? source
        let sentinel: UInt16 = 0xDEAD
        var plain = [UInt16](repeating: sentinel, count: rows * plainLD)
        var transposed = [UInt16](repeating: sentinel, count: columns * transposedLD)
        let startSums = (0..<columns).map { _ in Float(random.nextNormal()) }
        var sums = startSums
        mae_round_to_bf16_both(&plain, plainLD, &transposed, transposedLD, source, factor, rows, columns, ld, &sums)
        var expectedRows = [UInt16](repeating: 0, count: rows * ld)
        var expectedTransposed = [UInt16](repeating: 0, count: rows * columns)
        mae_round_to_bf16(&expectedRows, values, rows * ld)
        mae_round_to_bf16_transposed(&expectedTransposed, values, rows, columns, ld)
        var mismatches = 0
        for row in 0..<rows {
            for column in 0..<columns {
                if plain[row * plainLD + column] != expectedRows[row * ld + column] { mismatches += 1 }
                if transposed[column * transposedLD + row] != expectedTransposed[column * rows + row] { mismatches += 1 }
            }
        }
        #expect(mismatches == 0, "\(mismatches) of \(2 * rows * columns) values differ from the single roundings")
        var expectedSums = startSums
        for row in 0..<rows {
            for column in 0..<columns { expectedSums[column] += values[row * ld + column] }
        }
        let sumsDiffer = zip(sums, expectedSums).filter { $0.bitPattern != $1.bitPattern }.count
        #expect(sumsDiffer == 0, "\(sumsDiffer) of \(columns) column sums differ from the sums row after row")
        let paddingWritten = (0..<rows).contains { row in plain[(row * plainLD + columns)..<((row + 1) * plainLD)].contains { $0 != sentinel } }
            || (0..<columns).contains { column in transposed[(column * transposedLD + rows)..<((column + 1) * transposedLD)].contains { $0 != sentinel } }
        #expect(!paddingWritten, "wrote past a row")
    }

    /// A linear layer's backward in bf16, which rounds the output gradient once for both of its
    /// products and sums the bias gradient in the same read, gives the bits of the two products
    /// rounding it each on its own and of `addColumnSums` over each group of rows, the groups
    /// then added in order, on shapes (one group and several) whose products run whole,
    /// cut into rows and cut into columns, on one thread and two; with GELU's derivative as
    /// the factor, the bits of `geluBackward` followed by the plain backward.
    @Test(.needsBFloat16Products, arguments: [(37, 48, 24), (400, 64, 96), (64, 520, 96), (150, 40, 200)], [false, true])
    func linearBackwardRoundsTheOutputGradientOnceToTheSameBits(shape: (rows: Int, inFeatures: Int, outFeatures: Int),
                                                                withFactor: Bool) {
        let (rows, inFeatures, outFeatures) = shape
        let before = Parallel.threads
        defer { Parallel.setThreads(before) }
        let input = FloatBuffer(randomValues(rows * inFeatures, seed: 11).map(Float.init))
        let weight = FloatBuffer(randomValues(outFeatures * inFeatures, seed: 12).map(Float.init))
        let outputGradient = FloatBuffer(randomValues(rows * outFeatures, seed: 13).map(Float.init))
        let derivative = withFactor ? FloatBuffer(randomValues(rows * outFeatures, seed: 16).map { Float($0) + 0.5 }) : nil
        let startGradient = randomValues(outFeatures * inFeatures, seed: 14).map(Float.init)
        let startBias = randomValues(outFeatures, seed: 15).map(Float.init)
        let roundedWeight = UnsafeMutablePointer<UInt16>.allocate(capacity: weight.count)
        defer { roundedWeight.deallocate() }
        roundToBFloat16(roundedWeight, weight.pointer, count: weight.count)

        // The reference: GELU's backward on its own, each product rounding dy itself, the column sums.
        let effectiveGradient = FloatBuffer(count: rows * outFeatures)
        if let derivative {
            geluBackward(inputGradient: effectiveGradient.pointer, outputGradient: outputGradient.pointer,
                         derivative: derivative.pointer, count: rows * outFeatures)
        } else {
            effectiveGradient.pointer.update(from: outputGradient.pointer, count: rows * outFeatures)
        }
        let expectedInputGradient = FloatBuffer(count: rows * inFeatures), expectedWeightGradient = FloatBuffer(startGradient)
        matrixMultiply(expectedInputGradient.pointer, ldc: inFeatures, effectiveGradient.pointer, lda: outFeatures,
                       weight.pointer, ldb: inFeatures, roundedB: roundedWeight, m: rows, n: inFeatures, k: outFeatures,
                       precision: .bf16)
        matrixMultiply(expectedWeightGradient.pointer, ldc: inFeatures, effectiveGradient.pointer, lda: outFeatures,
                       transposeA: true, input.pointer, ldb: inFeatures, m: outFeatures, n: inFeatures, k: rows, beta: 1,
                       precision: .bf16)
        // The bias gradient: each group of rows summed from zero as addColumnSums sums, then the
        // groups' sums added in order.
        let expectedBiasGradient = FloatBuffer(startBias)
        for first in stride(from: 0, to: rows, by: columnSumGroupRows) {
            let partial = FloatBuffer(count: outFeatures)
            addColumnSums(partial.pointer, effectiveGradient.pointer + first * outFeatures,
                          rows: min(rows, first + columnSumGroupRows) - first, columns: outFeatures)
            addVectors(expectedBiasGradient.pointer, expectedBiasGradient.pointer, partial.pointer, count: outFeatures)
        }

        for threads in [1, 2] {
            Parallel.setThreads(threads)
            let inputGradient = FloatBuffer(count: rows * inFeatures), weightGradient = FloatBuffer(startGradient)
            let biasGradient = FloatBuffer(startBias)
            linearBackward(inputGradient: inputGradient.pointer, weightGradient: weightGradient.pointer,
                           biasGradient: biasGradient.pointer, outputGradient: outputGradient.pointer,
                           outputGradientFactor: derivative.map { UnsafePointer($0.pointer) }, input: input.pointer,
                           weight: weight.pointer, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                           precision: .bf16, roundedWeight: roundedWeight)
            let label = "\(rows) rows, \(inFeatures) → \(outFeatures), \(threads) threads\(withFactor ? ", GELU's factor" : "")"
            for (name, values, expected) in [("input", inputGradient, expectedInputGradient),
                                             ("weight", weightGradient, expectedWeightGradient),
                                             ("bias", biasGradient, expectedBiasGradient)] {
                let differ = zip(values.toArray(), expected.toArray()).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(differ == 0, "\(label): \(differ) \(name)-gradient values differ")
            }
        }
    }

    /// The forms the model uses (x Wᵀ, dy W, dyᵀ x and attention's) and tt, at sizes cut into
    /// blocks and not, with padded leading dimensions, alpha 1 or not, beta 0 or 1; b fp32 or
    /// pre-rounded. The shapes of at most `MAE_BF16_SMALL_PRODUCT_LIMIT` multiply-adds (all
    /// but the first and the last two) run on the small-product kernel: odd and even k, k = 1,
    /// rows and columns around its 12 × 32 tiles (attention's 17 and 65 tokens), and ViT-B's
    /// decoder heads (197 tokens of 32).
    @Test(.needsBFloat16Products, arguments: [(400, 96, 80), (37, 50, 24), (17, 17, 63), (65, 33, 31), (12, 32, 64), (25, 17, 1),
                      (3, 70, 9), (197, 197, 32), (197, 32, 197), (300, 260, 150), (256, 70, 151)])
    func productsMatchTheRoundedReference(m: Int, n: Int, k: Int) {
        checkProductsAgainstTheRoundedReference(m: m, n: n, k: k)
    }

    /// The same through oneDNN's reorder, which packs b where oneDNN picks a layout our packer
    /// does not write (AMX's, say): products cut into blocks of rows sharing a packed b.
    @Test(.needsBFloat16Products, arguments: [(300, 260, 150), (256, 70, 151)])
    func productsMatchTheRoundedReferenceWithOneDNNsPacking(m: Int, n: Int, k: Int) {
        mae_bf16_use_own_packer(0)
        defer { mae_bf16_use_own_packer(1) }
        checkProductsAgainstTheRoundedReference(m: m, n: n, k: k)
    }

    /// Where the CPU has AMX, the small products above run on its tiles; the VDPBF16PS tiles,
    /// which the other CPUs run, match the reference here too. (The switch is the calling
    /// thread's, where these shapes run: in one call.)
    @Test(.enabled(if: mae_bf16_amx_available() != 0, "this CPU has no AMX tiles: the tests above ran the VDPBF16PS tiles"),
          arguments: [(37, 50, 24), (17, 17, 63), (65, 33, 31), (25, 17, 1), (197, 197, 32), (197, 32, 197)])
    func smallProductsOnTheVDPBF16PSTilesMatchTheRoundedReferenceToo(m: Int, n: Int, k: Int) {
        mae_bf16_use_amx(0)
        defer { mae_bf16_use_amx(1) }
        #expect(String(cString: mae_bf16_small_product_implementation()).contains("vdpbf16ps"))
        checkProductsAgainstTheRoundedReference(m: m, n: n, k: k)
    }

    /// oneDNN's limit on its instruction sets, `ONEDNN_MAX_CPU_ISA`, set below AMX keeps our
    /// small products off the tiles as it keeps oneDNN's own kernels: one variable turns AMX
    /// off for every bf16 product. Unset, both run on AMX.
    @Test(.enabled(if: mae_bf16_amx_available() != 0, "this CPU has no AMX tiles"))
    func oneDNNsInstructionSetLimitKeepsOurProductsOffAMXToo() throws {
        let directory = NSTemporaryDirectory() + "mae-amx-limit-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let mae = try TestProcess.product("mae")
        for limit in [nil, "AVX512_CORE_BF16"] as [String?] {
            let child = try TestProcess(mae, ["bench", "products", "--shapes", "50x64x50:nn,400x768x768:nt", "--seconds", "0.01"],
                                        logDirectory: directory, name: "limit-\(limit ?? "unset")",
                                        environment: ["ONEDNN_MAX_CPU_ISA": limit, "DNNL_MAX_CPU_ISA": nil])
            defer { child.stop() }
            #expect(child.exitStatus(within: 120) == 0, "\(child.output)")
            let output = child.output
            if limit == nil {
                #expect(output.contains("our AMX tile kernel") && output.contains("avx512_core_amx"), "\(output)")
            } else {
                #expect(output.contains("our vdpbf16ps kernel") && output.contains("brg:avx512_core_bf16"), "\(output)")
                #expect(!output.contains("AMX") && !output.contains("amx"), "\(output)")
            }
        }
    }

    /// The small kernels pack their operands into buffers of the calling thread that earlier
    /// products leave filled; the AMX tiles read 16 rows of a and 16 pairs of k of b at a time,
    /// past the operands' own. A product of few rows and pairs right after one whose operands
    /// were all NaN reads nothing of it: every element finite and as the reference has it.
    @Test(.needsBFloat16Products) func smallProductsReadNothingLeftByEarlierProducts() {
        let (m, n, k) = (5, 7, 3)
        let a = randomValues(m * k, seed: 81).map(Float.init), b = randomValues(k * n, seed: 82).map(Float.init)
        for (transposeA, transposeB) in [(false, true), (false, false), (true, false), (true, true)] {
            let nan = FloatBuffer([Float](repeating: .nan, count: 64 * 64)), filled = FloatBuffer(count: 64 * 64)
            singleThreadedMatrixMultiply(filled.pointer, ldc: 64, nan.pointer, lda: 64, transposeA: transposeA,
                                         nan.pointer, ldb: 64, transposeB: transposeB, m: 64, n: 64, k: 64, precision: .bf16)
            // a and b hold op(a)[m, k] and op(b)[k, n] element for element, stored as each form reads them.
            let storedA = FloatBuffer((0..<(m * k)).map { transposeA ? a[($0 % m) * k + $0 / m] : a[$0] })
            let storedB = FloatBuffer((0..<(k * n)).map { transposeB ? b[($0 % k) * n + $0 / k] : b[$0] })
            let c = FloatBuffer(count: m * n)
            singleThreadedMatrixMultiply(c.pointer, ldc: n, storedA.pointer, lda: transposeA ? m : k, transposeA: transposeA,
                                         storedB.pointer, ldb: transposeB ? k : n, transposeB: transposeB,
                                         m: m, n: n, k: k, precision: .bf16)
            let expected = (0..<(m * n)).map { index in
                (0..<k).reduce(0.0) { $0 + Self.bfloat16(a[(index / n) * k + $1]) * Self.bfloat16(b[$1 * n + index % n]) }
            }
            expectClose(c.toArray(), expected, absolute: 1e-6, relative: 1e-6,
                        "transposeA \(transposeA) transposeB \(transposeB) after a product of NaNs")
        }
    }

    private func checkProductsAgainstTheRoundedReference(m: Int, n: Int, k: Int) {
        let before = Parallel.threads
        defer { Parallel.setThreads(before) }
        for (transposeA, transposeB) in [(false, true), (false, false), (true, false), (true, true)] {
            // alpha ≠ 1 with beta 0 (attention's q·kᵀ) on the small kernel's shapes only (the time
            // of the double-precision reference).
            let small = m * n * k <= Int(MAE_BF16_SMALL_PRODUCT_LIMIT)
            for (alpha, beta, preRounded) in [(Float(1), Float(0), false), (0.125, 1, true)] + (small ? [(0.3, 0, true)] : []) {
                let (aRows, aColumns) = transposeA ? (k, m) : (m, k)
                let (bRows, bColumns) = transposeB ? (n, k) : (k, n)
                let lda = aColumns + 3, ldb = bColumns + 5, ldc = n + 2
                let a = randomValues(aRows * lda, seed: 71).map(Float.init)
                let b = randomValues(bRows * ldb, seed: 72).map(Float.init)
                let c0 = randomValues(m * ldc, seed: 73).map(Float.init)
                let (ab, bb) = (FloatBuffer(a), FloatBuffer(b))
                let roundedB = UnsafeMutablePointer<UInt16>.allocate(capacity: b.count)
                defer { roundedB.deallocate() }
                roundToBFloat16(roundedB, bb.pointer, count: b.count)
                var results: [[Float]] = []
                for threads in [1, 2] {
                    Parallel.setThreads(threads)
                    let c = FloatBuffer(c0)
                    matrixMultiply(c.pointer, ldc: ldc, ab.pointer, lda: lda, transposeA: transposeA,
                                   bb.pointer, ldb: ldb, transposeB: transposeB,
                                   roundedB: preRounded ? UnsafePointer(roundedB) : nil,
                                   m: m, n: n, k: k, alpha: alpha, beta: beta, precision: .bf16)
                    results.append(c.toArray())
                }
                let label = "\(m)×\(n)×\(k) transposeA \(transposeA) transposeB \(transposeB) beta \(beta)"
                let differing = zip(results[0], results[1]).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(differing == 0, "\(label): \(differing) elements differ between one and two threads")
                // fp32 accumulation of k products: allow 4·10⁻⁶ of |alpha|·Σ|a·b| (k·2⁻²⁴ ≈ 10⁻⁵ at
                // the worst ordering; an unrounded input would be off by ~2⁻⁹ per product), and
                // 2⁻²³ of |beta·c| for the rounding of the sum with c (which dominates at k = 1).
                var worst = 0.0
                for i in 0..<m {
                    for j in 0..<n {
                        var sum = 0.0, magnitude = 0.0
                        for p in 0..<k {
                            let product = Self.bfloat16(transposeA ? a[p * lda + i] : a[i * lda + p])
                                * Self.bfloat16(transposeB ? b[j * ldb + p] : b[p * ldb + j])
                            sum += product
                            magnitude += abs(product)
                        }
                        let expected = Double(alpha) * sum + Double(beta) * Double(c0[i * ldc + j])
                        let allowance = 4e-6 * Double(abs(alpha)) * magnitude + 0x1p-23 * abs(Double(beta) * Double(c0[i * ldc + j]))
                        let excess = abs(Double(results[0][i * ldc + j]) - expected) / (allowance + 1e-30)
                        worst = max(worst, excess)
                    }
                }
                #expect(worst <= 1, "\(label): error \(worst) × the allowance of 4·10⁻⁶ |alpha| Σ|a·b| + 2⁻²³ |beta·c|")
                // Padding columns of c are left alone.
                #expect(results[0][n] == c0[n], "\(label): wrote past n")
            }
        }
    }

    /// A small product's bits depend on its shape alone: not on the leading dimensions, nor
    /// on whether b came rounded (the kernel rounds as `roundToBFloat16` does), in each form.
    @Test(.needsBFloat16Products) func smallProductsDependOnTheShapeAlone() {
        let (m, n, k) = (17, 23, 45)
        for (transposeA, transposeB) in [(false, true), (false, false), (true, false), (true, true)] {
            var results: [[Float]] = []
            for (padding, preRounded) in [(0, false), (7, false), (16, true)] {
                let (aRows, aColumns) = transposeA ? (k, m) : (m, k)
                let (bRows, bColumns) = transposeB ? (n, k) : (k, n)
                let lda = aColumns + padding, ldb = bColumns + padding, ldc = n + padding
                func padded(_ values: [Double], rows: Int, columns: Int, ld: Int) -> [Float] {
                    var out = [Float](repeating: .nan, count: rows * ld)
                    for row in 0..<rows {
                        for column in 0..<columns { out[row * ld + column] = Float(values[row * columns + column]) }
                    }
                    return out
                }
                let a = FloatBuffer(padded(randomValues(aRows * aColumns, seed: 81), rows: aRows, columns: aColumns, ld: lda))
                let b = FloatBuffer(padded(randomValues(bRows * bColumns, seed: 82), rows: bRows, columns: bColumns, ld: ldb))
                let roundedB = UnsafeMutablePointer<UInt16>.allocate(capacity: b.count)
                defer { roundedB.deallocate() }
                roundToBFloat16(roundedB, b.pointer, count: b.count)
                let c = FloatBuffer(count: m * ldc)
                matrixMultiply(c.pointer, ldc: ldc, a.pointer, lda: lda, transposeA: transposeA,
                               b.pointer, ldb: ldb, transposeB: transposeB,
                               roundedB: preRounded ? UnsafePointer(roundedB) : nil,
                               m: m, n: n, k: k, alpha: 0.7, precision: .bf16)
                let values = c.toArray()
                results.append((0..<m).flatMap { row in values[(row * ldc)..<(row * ldc + n)] })
            }
            let label = "transposeA \(transposeA) transposeB \(transposeB)"
            #expect(results[0].allSatisfy { $0.isFinite }, "\(label): the padding (NaN) reached c")
            for other in results.dropFirst() {
                let differing = zip(results[0], other).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(differing == 0, "\(label): \(differing) elements differ with other leading dimensions")
            }
        }
    }

    /// The small kernel rounds its fp32 operands as `roundToBFloat16` does, also where a
    /// quick conversion would not: fp32 subnormals, among them those just below 2⁻¹²⁶ that
    /// round up to it, ties, NaN, infinities, the largest finite values. Each form's product
    /// from fp32 operands has the bits of the product from the operands rounded first.
    @Test(.needsBFloat16Products) func smallProductsRoundSpecialValuesAsTheRoundingDoes() {
        let (m, n, k) = (17, 33, 40)
        // Subnormals (to 2⁻¹²⁶, to ±0), -0, ties (to even below, above) at the scale of a's values;
        // then the largest finite value (to infinity), infinity and a NaN.
        let specials: [UInt32] = [0x007F_8000, 0x807F_FFFF, 0x007F_7FFF, 0x0000_0001, 0x8000_0000, 0x0380_8000,
                                  0x8381_8000, 0x7F7F_FFFF, 0x7F80_0000, 0x7FC0_0001]
        for (transposeA, transposeB) in [(false, true), (false, false), (true, false), (true, true)] {
            let (aRows, aColumns) = transposeA ? (k, m) : (m, k)
            let (bRows, bColumns) = transposeB ? (n, k) : (k, n)
            // a's values near 2⁻¹²⁶ meet b's near 2¹⁰⁰, so that their products count in the sums.
            var a = randomValues(aRows * aColumns, seed: 91).map { Float($0) * 0x1p-120 }
            let b = FloatBuffer(randomValues(bRows * bColumns, seed: 92).map { Float($0) * 0x1p100 })
            for index in stride(from: 0, to: a.count, by: 5) {
                a[index] = Float(bitPattern: specials[(index / 5) % (specials.count - 3)])
            }
            // The last three (largest finite, infinity, NaN) in a single row of a, whose row of c
            // they alone turn to infinities or NaNs.
            for (offset, special) in specials.suffix(3).enumerated() {
                let (row, column) = (m - 1, offset)  // op(a)[row, column]
                a[transposeA ? column * aColumns + row : row * aColumns + column] = Float(bitPattern: special)
            }
            let aBuffer = FloatBuffer(a)
            let roundedA = UnsafeMutablePointer<UInt16>.allocate(capacity: a.count)
            let roundedB = UnsafeMutablePointer<UInt16>.allocate(capacity: b.count)
            defer { roundedA.deallocate(); roundedB.deallocate() }
            roundToBFloat16(roundedA, aBuffer.pointer, count: a.count)
            roundToBFloat16(roundedB, b.pointer, count: b.count)
            func product(rounded: Bool) -> [UInt32] {
                let c = FloatBuffer(count: m * n)
                matrixMultiply(c.pointer, ldc: n, aBuffer.pointer, lda: aColumns, transposeA: transposeA,
                               b.pointer, ldb: bColumns, transposeB: transposeB,
                               roundedA: rounded ? UnsafePointer(roundedA) : nil,
                               roundedB: rounded ? UnsafePointer(roundedB) : nil,
                               m: m, n: n, k: k, alpha: 0.5, precision: .bf16)
                return c.toArray().map(\.bitPattern)
            }
            let (fromFloats, fromRounded) = (product(rounded: false), product(rounded: true))
            let differing = zip(fromFloats, fromRounded).filter { $0 != $1 }.count
            #expect(differing == 0, "transposeA \(transposeA) transposeB \(transposeB): \(differing) of \(m * n) differ")
            #expect(fromFloats.contains { Float(bitPattern: $0) != 0 && abs(Float(bitPattern: $0)) < 1 },
                    "the products of the values near 2⁻¹²⁶ vanished")
        }
    }

    /// Attention that writes its output rounded to bf16 (for proj) gives the bits of rounding
    /// the fp32 output it writes otherwise, and the same probabilities: on the small kernel
    /// (17 and 65 tokens, as mae_vit_tiny_patch4's encoder and decoder) and on a shape past it
    /// (oneDNN, then rounded).
    @Test(.needsBFloat16Products, arguments: [(3, 17, 3, 64), (2, 65, 2, 32), (2, 70, 2, 64)])
    func attentionWritesItsOutputRoundedAsProjWouldRoundIt(batch: Int, tokens: Int, heads: Int, headDimension: Int) {
        let width = heads * headDimension
        let qkv = FloatBuffer(randomValues(batch * tokens * 3 * width, seed: tokens, in: -2..<2).map(Float.init))
        let (output, probabilities) = (FloatBuffer(count: batch * tokens * width), FloatBuffer(count: batch * heads * tokens * tokens))
        attentionForward(output: output.pointer, probabilities: probabilities.pointer, qkv: qkv.pointer,
                         batch: batch, tokens: tokens, heads: heads, headDimension: headDimension, precision: .bf16)
        let untouched = FloatBuffer([Float](repeating: 7, count: output.count))
        let probabilitiesAgain = FloatBuffer(count: probabilities.count)
        let rounded = UnsafeMutablePointer<UInt16>.allocate(capacity: output.count)
        defer { rounded.deallocate() }
        attentionForward(output: untouched.pointer, probabilities: probabilitiesAgain.pointer, qkv: qkv.pointer,
                         batch: batch, tokens: tokens, heads: heads, headDimension: headDimension, precision: .bf16,
                         roundedOutput: rounded)
        var expected = [UInt16](repeating: 0, count: output.count)
        mae_round_to_bf16(&expected, output.pointer, output.count)
        let differing = (0..<expected.count).filter { rounded[$0] != expected[$0] }.count
        #expect(differing == 0, "\(differing) of \(expected.count) rounded outputs differ from the fp32 output rounded")
        #expect(probabilities.toArray().map(\.bitPattern) == probabilitiesAgain.toArray().map(\.bitPattern))
        #expect(untouched.toArray().allSatisfy { $0 == 7 }, "the fp32 output was written")
    }

    /// Attention's backward in bf16 against finite differences of the double-precision
    /// reference, within what bf16 inputs allow, on token counts that take the small kernel's
    /// tiles and its last-column dot products (17, 33).
    @Test(.needsBFloat16Products, arguments: [(1, 17, 2, 8), (1, 33, 1, 8)])
    func attentionBackwardInBFloat16MatchesFiniteDifferences(batch: Int, tokens: Int, heads: Int, headDimension: Int) {
        let width = heads * headDimension
        let qkv = randomValues(batch * tokens * 3 * width, seed: 41, in: -1.5..<1.5).map { Double(Float($0)) }
        let r = randomValues(batch * tokens * width, seed: 42).map { Double(Float($0)) }
        let (qkvBuffer, rBuffer) = (FloatBuffer(qkv.map(Float.init)), FloatBuffer(r.map(Float.init)))
        let output = FloatBuffer(count: batch * tokens * width)
        let probabilities = FloatBuffer(count: batch * heads * tokens * tokens)
        attentionForward(output: output.pointer, probabilities: probabilities.pointer, qkv: qkvBuffer.pointer,
                         batch: batch, tokens: tokens, heads: heads, headDimension: headDimension, precision: .bf16)
        let reference = { (values: [Double]) in
            Reference.attention(values, batch: batch, tokens: tokens, heads: heads, headDimension: headDimension)
        }
        // bf16 inputs: about 2⁻⁸ of each product's size (the worst seen: 3.3·10⁻³ forward,
        // 2.1·10⁻³ backward, on values of about 0.5).
        expectClose(output.toArray(), reference(qkv), absolute: 1e-2, relative: 1e-2, "bf16 attention forward")
        let dqkv = FloatBuffer([Float](repeating: 99, count: qkv.count))
        attentionBackward(qkvGradient: dqkv.pointer, outputGradient: rBuffer.pointer,
                          qkv: qkvBuffer.pointer, probabilities: probabilities.pointer,
                          batch: batch, tokens: tokens, heads: heads, headDimension: headDimension, precision: .bf16)
        expectClose(dqkv.toArray(), numericGradient(qkv) { dot(r, reference($0)) }, absolute: 1e-2, relative: 1e-2,
                    "bf16 attention d qkv")
    }

    @Test(.needsBFloat16Products) func theViTBaseProductsRunOnAnAVX512BF16Kernel() {
        let name = bfloat16ProductImplementation(m: 208, n: 3072, k: 768, transposeA: false, transposeB: true)
        #expect(name.contains("bf16"), "oneDNN chose \(name)")
    }

    /// The linear layers' products of ViT-B and tiny, forward and backward, share one packed
    /// b between their blocks of rows (no packing per block, no c buffer).
    @Test(.needsBFloat16Products) func theModelsLargeProductsShareAPackedB() {
        // (rows, outFeatures, inFeatures): ViT-B's encoder qkv and fc2, decoder fc1; tiny's qkv.
        for (rows, outFeatures, inFeatures) in [(400, 2304, 768), (400, 768, 3072), (1576, 2048, 512), (1088, 576, 192)] {
            let forward = bfloat16Blocks(m: rows, n: outFeatures, k: inFeatures, accumulates: true, aIsRounded: true,
                                         transposeB: true)
            let inputGradient = bfloat16Blocks(m: rows, n: inFeatures, k: outFeatures)
            let weightGradient = bfloat16Blocks(m: outFeatures, n: inFeatures, k: rows, accumulates: true, transposeA: true)
            for (name, cut) in [("forward", forward), ("input gradient", inputGradient), ("weight gradient", weightGradient)] {
                #expect(cut.cut == .packedRows, "\(rows)×\(outFeatures)×\(inFeatures) \(name): \(cut)")
            }
        }
    }

    @Test(.needsBFloat16Products) func attentionInBFloat16IsTheSameOnTwoThreads() {
        let (batch, tokens, heads, headDimension) = (3, 20, 4, 8)
        let qkv = FloatBuffer(randomValues(batch * tokens * 3 * heads * headDimension, seed: 33).map(Float.init))
        func run() -> [Float] {
            let output = FloatBuffer(count: batch * tokens * heads * headDimension)
            let probabilities = FloatBuffer(count: batch * heads * tokens * tokens)
            attentionForward(output: output.pointer, probabilities: probabilities.pointer, qkv: qkv.pointer,
                             batch: batch, tokens: tokens, heads: heads, headDimension: headDimension, precision: .bf16)
            let dqkv = FloatBuffer(count: qkv.count)
            attentionBackward(qkvGradient: dqkv.pointer, outputGradient: output.pointer,
                              qkv: qkv.pointer, probabilities: probabilities.pointer,
                              batch: batch, tokens: tokens, heads: heads, headDimension: headDimension, precision: .bf16)
            return output.toArray() + dqkv.toArray()
        }
        let before = Parallel.threads
        defer { Parallel.setThreads(before) }
        Parallel.setThreads(1)
        let single = run()
        Parallel.setThreads(2)
        let double = run()
        #expect(zip(single, double).allSatisfy { $0.bitPattern == $1.bitPattern })
        // And close to fp32 attention (bf16 inputs: ~2⁻⁸ relative).
        Parallel.setThreads(1)
        let output = FloatBuffer(count: batch * tokens * heads * headDimension)
        let probabilities = FloatBuffer(count: batch * heads * tokens * tokens)
        attentionForward(output: output.pointer, probabilities: probabilities.pointer, qkv: qkv.pointer,
                         batch: batch, tokens: tokens, heads: heads, headDimension: headDimension)
        let bfloat16Output = Array(single.prefix(output.count))
        expectClose(bfloat16Output, output.toArray().map(Double.init), absolute: 2e-2, "bf16 vs fp32 attention")
        #expect(bfloat16Output != output.toArray(), "bf16 attention gave fp32's result to the bit")
    }

    /// Layer norm and GELU that write their output rounded to bf16 give the bits of rounding
    /// their fp32 output, and a linear layer that takes its input so rounded (forward and
    /// both products of the backward) gives the bits it gives from the fp32 input, on shapes
    /// cut into blocks of rows, of columns, and not cut.
    @Test(.needsBFloat16Products, arguments: [(37, 48, 24), (400, 64, 96), (64, 520, 96)])
    func producersRoundAsTheProductsWould(rows: Int, width: Int, outFeatures: Int) {
        let input = FloatBuffer(randomValues(rows * width, seed: rows, in: -3..<3).map(Float.init))
        let gain = FloatBuffer(randomValues(width, seed: 2, in: 0.5..<1.5).map(Float.init))
        let shift = FloatBuffer(randomValues(width, seed: 3).map(Float.init))
        let (mean, reciprocalStd) = (FloatBuffer(count: rows), FloatBuffer(count: rows))
        let normed = FloatBuffer(count: rows * width), normedRounded = FloatBuffer(count: rows * width)
        layerNormForward(output: normed.pointer, mean: mean.pointer, reciprocalStd: reciprocalStd.pointer,
                         input: input.pointer, weight: gain.pointer, bias: shift.pointer, rows: rows, width: width)
        let rounded = UnsafeMutableRawPointer(normedRounded.pointer).assumingMemoryBound(to: UInt16.self)
        layerNormForward(output: normedRounded.pointer, mean: mean.pointer, reciprocalStd: reciprocalStd.pointer,
                         input: input.pointer, weight: gain.pointer, bias: shift.pointer, rows: rows, width: width,
                         roundedOutput: rounded)
        var expected = [UInt16](repeating: 0, count: rows * width)
        mae_round_to_bf16(&expected, normed.pointer, rows * width)
        #expect((0..<expected.count).allSatisfy { rounded[$0] == expected[$0] }, "layer norm's bf16 output")

        let hidden = FloatBuffer(input.toArray()), hiddenForRounded = FloatBuffer(input.toArray())
        let activated = FloatBuffer(count: rows * width), activatedRounded = FloatBuffer(count: rows * width)
        let activatedBits = UnsafeMutableRawPointer(activatedRounded.pointer).assumingMemoryBound(to: UInt16.self)
        biasGELUForward(activated: activated.pointer, preActivation: hidden.pointer, bias: shift.pointer,
                        rows: rows, width: width)
        biasGELUForward(activated: activatedRounded.pointer, preActivation: hiddenForRounded.pointer, bias: shift.pointer,
                        rows: rows, width: width, roundedActivated: activatedBits)
        mae_round_to_bf16(&expected, activated.pointer, rows * width)
        #expect((0..<expected.count).allSatisfy { activatedBits[$0] == expected[$0] }, "GELU's bf16 output")
        #expect(hidden.toArray().map(\.bitPattern) == hiddenForRounded.toArray().map(\.bitPattern), "GELU' either way")

        let weight = FloatBuffer(randomValues(outFeatures * width, seed: 4).map(Float.init))
        let bias = FloatBuffer(randomValues(outFeatures, seed: 5).map(Float.init))
        let roundedWeight = UnsafeMutablePointer<UInt16>.allocate(capacity: weight.count)
        defer { roundedWeight.deallocate() }
        roundToBFloat16(roundedWeight, weight.pointer, count: weight.count)
        let outputGradient = FloatBuffer(randomValues(rows * outFeatures, seed: 6).map(Float.init))
        func layer(_ roundedInput: UnsafePointer<UInt16>?) -> [UInt32] {
            let output = FloatBuffer(count: rows * outFeatures), inputGradient = FloatBuffer(count: rows * width)
            let weightGradient = FloatBuffer(count: weight.count), biasGradient = FloatBuffer(count: outFeatures)
            linearForward(output: output.pointer, input: normed.pointer, weight: weight.pointer, bias: bias.pointer,
                          rows: rows, inFeatures: width, outFeatures: outFeatures, precision: .bf16,
                          roundedWeight: roundedWeight, roundedInput: roundedInput)
            linearBackward(inputGradient: inputGradient.pointer, weightGradient: weightGradient.pointer,
                           biasGradient: biasGradient.pointer, outputGradient: outputGradient.pointer,
                           input: normed.pointer, weight: weight.pointer, rows: rows, inFeatures: width,
                           outFeatures: outFeatures, precision: .bf16, roundedWeight: roundedWeight,
                           roundedInput: roundedInput)
            return (output.toArray() + inputGradient.toArray() + weightGradient.toArray()).map(\.bitPattern)
        }
        let (fromRounded, fromFloats) = (layer(UnsafePointer(rounded)), layer(nil))
        let differing = zip(fromRounded, fromFloats).filter { $0 != $1 }.count
        #expect(differing == 0, "a linear layer from its rounded input: \(differing) of \(fromFloats.count) values differ")
    }
}
