import CSupport
import Foundation
import Kernels
import Testing
import TestSupport

@Suite struct LossAndPatchTests {
    /// patchify's (row, column, channel) layout and gatherPatches's (channel, row, column)
    /// layout, element by element from the image index, and unpatchify as the inverse.
    @Test func patchLayouts() {
        let (batch, channels, size, patch) = (2, 3, 8, 4)
        let grid = size / patch
        // Each pixel's value encodes its coordinates.
        func value(_ n: Int, _ c: Int, _ y: Int, _ x: Int) -> Float { Float(n * 1000 + c * 100 + y * 10 + x) }
        let images = FloatBuffer(count: batch * channels * size * size)
        for n in 0..<batch { for c in 0..<channels { for y in 0..<size { for x in 0..<size {
            images[((n * channels + c) * size + y) * size + x] = value(n, c, y, x)
        } } } }
        let patched = FloatBuffer(count: batch * grid * grid * patch * patch * channels)
        patchify(output: patched.pointer, images: images.pointer, batch: batch, channels: channels, imageSize: size, patchSize: patch)
        var mismatches = 0
        for n in 0..<batch { for l in 0..<(grid * grid) { for i in 0..<patch { for j in 0..<patch { for c in 0..<channels {
            let index = (n * grid * grid + l) * patch * patch * channels + (i * patch + j) * channels + c
            if patched[index] != value(n, c, (l / grid) * patch + i, (l % grid) * patch + j) { mismatches += 1 }
        } } } } }
        #expect(mismatches == 0)

        let indices: [Int32] = [3, 0, 2, 1]  // two per sample
        let gathered = FloatBuffer(count: 4 * channels * patch * patch)
        indices.withUnsafeBufferPointer { pointer in
            gatherPatches(output: gathered.pointer, images: images.pointer, patchIndices: pointer.baseAddress!,
                          batch: batch, count: 2, channels: channels, imageSize: size, patchSize: patch)
        }
        mismatches = 0
        for item in 0..<4 { for c in 0..<channels { for i in 0..<patch { for j in 0..<patch {
            let l = Int(indices[item]), n = item / 2
            let index = item * channels * patch * patch + (c * patch + i) * patch + j
            if gathered[index] != value(n, c, (l / grid) * patch + i, (l % grid) * patch + j) { mismatches += 1 }
        } } } }
        #expect(mismatches == 0)

        let restored = FloatBuffer(count: images.count)
        unpatchify(images: restored.pointer, patches: patched.pointer, batch: batch, channels: channels, imageSize: size, patchSize: patch)
        #expect(restored.toArray() == images.toArray())
    }

    static func referenceLoss(_ prediction: [Double], _ target: [Double], _ mask: [Double], width: Int, normPix: Bool) -> Double {
        let rows = mask.count
        var total = 0.0
        for row in 0..<rows {
            var t = Array(target[(row * width)..<((row + 1) * width)])
            if normPix {
                let mean = t.reduce(0, +) / Double(width)
                let variance = t.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(width - 1)  // unbiased
                t = t.map { ($0 - mean) / (variance + 1e-6).squareRoot() }
            }
            let mse = (0..<width).reduce(0.0) { $0 + pow(prediction[row * width + $1] - t[$1], 2) } / Double(width)
            total += mse * mask[row]
        }
        return total / mask.reduce(0, +)
    }

    @Test(arguments: [false, true])
    func maskedLossAndGradient(normPix: Bool) {
        let (batch, patches, width) = (2, 5, 19)
        let prediction = rounded(randomValues(batch * patches * width, seed: 41))
        let target = rounded(randomValues(batch * patches * width, seed: 42, in: -2..<1))
        let mask: [Double] = [1, 0, 1, 1, 0, 0, 1, 1, 0, 1]
        let targetBuffer = buffer(target)
        if normPix { normalizePatches(targetBuffer.pointer, rows: batch * patches, width: width) }
        let maskBuffer = buffer(mask), predictionBuffer = buffer(prediction)
        let loss = maskedMSELoss(prediction: predictionBuffer.pointer, target: targetBuffer.pointer, mask: maskBuffer.pointer,
                                 batch: batch, patches: patches, width: width)
        let expected = Self.referenceLoss(prediction, target, mask, width: width, normPix: normPix)
        expectClose([Double(loss)], [expected], absolute: 0, relative: 1e-6, "masked loss")

        let gradient = FloatBuffer(count: prediction.count)
        maskedMSELossBackward(predictionGradient: gradient.pointer, prediction: predictionBuffer.pointer,
                              target: targetBuffer.pointer, mask: maskBuffer.pointer,
                              batch: batch, patches: patches, width: width, scale: 0.5)
        let numeric = numericGradient(prediction) { Self.referenceLoss($0, target, mask, width: width, normPix: normPix) }
        expectClose(gradient.toArray(), numeric.map { $0 * 0.5 }, absolute: 1e-6, relative: 1e-5, "masked loss gradient")
    }

    /// AdamW against the contract's formula evaluated by hand in double precision,
    /// over five steps with changing gradients.
    @Test func adamwMatchesTheFormula() {
        let (lr, beta1, beta2, epsilon, decay) = (1e-2, 0.9, 0.95, 1e-8, 0.05)
        var p = [0.5, -1.0, 2.0], m = [0.0, 0, 0], v = [0.0, 0, 0]
        let parameters = buffer(p), first = FloatBuffer(count: 3), second = FloatBuffer(count: 3)
        for step in 1...5 {
            let g = [0.1 * Double(step), -0.3, 1e-3 / Double(step)]
            let gradients = buffer(g)
            defer { withExtendedLifetime(gradients) {} }
            adamwUpdate(parameters: parameters.pointer, gradients: gradients.pointer, firstMoment: first.pointer,
                        secondMoment: second.pointer, count: 3, learningRate: Float(lr), beta1: Float(beta1),
                        beta2: Float(beta2), epsilon: Float(epsilon), weightDecay: Float(decay), step: step)
            for i in 0..<3 {
                p[i] *= 1 - lr * decay
                m[i] = beta1 * m[i] + (1 - beta1) * g[i]
                v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
                let bc1 = 1 - pow(beta1, Double(step)), bc2 = 1 - pow(beta2, Double(step))
                p[i] -= (lr / bc1) * m[i] / (v[i].squareRoot() / bc2.squareRoot() + epsilon)
            }
            expectClose(parameters.toArray(), p, absolute: 0, relative: 1e-6, "AdamW parameters, step \(step)")
            expectClose(first.toArray(), m, absolute: 0, relative: 1e-6, "AdamW first moment, step \(step)")
            expectClose(second.toArray(), v, absolute: 0, relative: 1e-5, "AdamW second moment, step \(step)")
        }
        // The first step moves each parameter by about lr (sign of g), as Adam does.
        let one = buffer([1.0]), zeroM = FloatBuffer(count: 1), zeroV = FloatBuffer(count: 1), three = buffer([3.0])
        defer { withExtendedLifetime(three) {} }
        adamwUpdate(parameters: one.pointer, gradients: three.pointer, firstMoment: zeroM.pointer,
                    secondMoment: zeroV.pointer, count: 1, learningRate: 0.1, beta1: 0.9, beta2: 0.999,
                    epsilon: 1e-8, weightDecay: 0, step: 1)
        expectClose([Double(one[0])], [0.9], absolute: 1e-6, "first Adam step")
    }

    /// Each vector body (CSupportAdamW.h: AVX-512, AVX, where the CPU has it; 0 bits is the
    /// Swift loop alone) gives the bits of the scalar code that updates the tail, element for
    /// element, over three steps, with and without the bf16 copy.
    @Test(.serialized, arguments: [512, 256, 0])
    func adamwVectorsHaveTheBitsOfTheScalarCode(widestVectorBits: Int32) {
        mae_adamw_limit_vector_bits(widestVectorBits)
        defer { mae_adamw_limit_vector_bits(512) }
        let count = 16 * 9 + 7
        let (learningRate, beta1, beta2, epsilon, weightDecay): (Float, Float, Float, Float, Float) = (3e-3, 0.9, 0.95, 1e-8, 0.05)
        var p = randomValues(count, seed: 61).map(Float.init), m = [Float](repeating: 0, count: count)
        var v = [Float](repeating: 0, count: count)
        let parameters = FloatBuffer(p), first = FloatBuffer(count: count), second = FloatBuffer(count: count)
        let rounded = UnsafeMutablePointer<UInt16>.allocate(capacity: count)
        defer { rounded.deallocate() }
        for step in 1...3 {
            let g = randomValues(count, seed: 61 + step).map { Float($0) * (step == 2 ? 1e-4 : 1) }
            let gradients = FloatBuffer(g)
            adamwUpdate(parameters: parameters.pointer, gradients: gradients.pointer, firstMoment: first.pointer,
                        secondMoment: second.pointer, count: count, learningRate: learningRate, beta1: beta1,
                        beta2: beta2, epsilon: epsilon, weightDecay: weightDecay, step: step,
                        roundedParameters: step == 3 ? rounded : nil)
            let stepSize = Float(Double(learningRate) / (1 - pow(Double(beta1), Double(step))))
            let root = Float((1 - pow(Double(beta2), Double(step))).squareRoot())
            for i in 0..<count {
                let decayed = p[i] * (1 - learningRate * weightDecay)
                m[i] = beta1 * m[i] + (1 - beta1) * g[i]
                v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
                p[i] = decayed - stepSize * (m[i] / (v[i].squareRoot() / root + epsilon))
            }
            let differing = (0..<count).filter {
                parameters[$0].bitPattern != p[$0].bitPattern || first[$0].bitPattern != m[$0].bitPattern
                    || second[$0].bitPattern != v[$0].bitPattern
            }
            #expect(differing.isEmpty, "\(widestVectorBits)-bit vectors, step \(step): elements \(differing.prefix(8)) differ from the scalar code")
        }
        var expected = [UInt16](repeating: 0, count: count)
        p.withUnsafeBufferPointer { mae_round_to_bf16(&expected, $0.baseAddress!, count) }
        #expect((0..<count).allSatisfy { rounded[$0] == expected[$0] }, "the bf16 copy is not the rounding of the parameters")
    }

    @Test func addColumnSumsAddsEveryRow() {
        let (rows, columns) = (13, 37)
        let matrix = randomValues(rows * columns, seed: 51)
        let sums = FloatBuffer([Float](repeating: 1, count: columns)), matrixBuffer = buffer(matrix)
        addColumnSums(sums.pointer, matrixBuffer.pointer, rows: rows, columns: columns)
        withExtendedLifetime(matrixBuffer) {}
        let expected = (0..<columns).map { c in 1 + (0..<rows).reduce(0.0) { $0 + Double(Float(matrix[$1 * columns + c])) } }
        expectClose(sums.toArray(), expected, absolute: 1e-5, "column sums")
    }

    @Test func residualAddOnTwoThreads() {
        let (rows, width) = (300, 37)
        let stream = randomValues(rows * width, seed: 52), branch = randomValues(rows * width, seed: 53)
        let streamBuffer = buffer(stream), branchBuffer = buffer(branch)
        let before = Parallel.threads
        Parallel.setThreads(2)
        residualAdd(streamBuffer.pointer, branchBuffer.pointer, rows: rows, width: width)
        Parallel.setThreads(before)
        expectClose(streamBuffer.toArray(), zip(stream, branch).map { Double(Float($0) + Float($1)) }, absolute: 0,
                    "residual add")
        withExtendedLifetime(branchBuffer) {}
    }

    @Test func zeroClearsLargeBuffersOnTwoThreads() {
        let values = FloatBuffer([Float](repeating: 3, count: 3 << 20 | 5))
        let before = Parallel.threads
        Parallel.setThreads(2)
        values.zero()
        Parallel.setThreads(before)
        #expect(values.toArray().allSatisfy { $0 == 0 })
    }

    @Test func parallelForCoversEveryIndexOnce() {
        let before = Parallel.threads
        Parallel.setThreads(2)
        let counts = FloatBuffer(count: 1001)
        parallelFor(1001) { range in for index in range { counts[index] += 1 } }
        parallelFor(1001, minimumPerWorker: 100, rangesPerWorker: 3) { range in for index in range { counts[index] += 1 } }
        Parallel.setThreads(before)
        #expect(counts.toArray() == [Float](repeating: 2, count: 1001))
        #expect(Parallel.threads == before)
    }
}
