import Foundation
import Kernels
@testable import Model
import Testing
import TestSupport

@Suite struct PositionAndMaskingTests {
    @Test func positionEmbeddingLayout() {
        let width = 16, grid = 3
        let table = sinCosPositionEmbedding(width: width, gridSize: grid)
        #expect(table.count == (grid * grid + 1) * width)
        #expect(table[0..<width].allSatisfy { $0 == 0 })  // cls row
        // Patch at grid row 2, column 1: token 1 + 2·3 + 1 = 8.
        let row = 2, column = 1, base = (1 + row * grid + column) * width
        for k in 0..<4 {
            let omega = 1 / pow(10_000.0, Double(k) / 4)
            #expect(abs(Double(table[base + k]) - sin(Double(column) * omega)) < 1e-7)
            #expect(abs(Double(table[base + 4 + k]) - cos(Double(column) * omega)) < 1e-7)
            #expect(abs(Double(table[base + 8 + k]) - sin(Double(row) * omega)) < 1e-7)
            #expect(abs(Double(table[base + 12 + k]) - cos(Double(row) * omega)) < 1e-7)
        }
        // The official numpy construction (meshgrid(w, h), emb_h from grid[0]) gives the same table.
        let reference = ReferenceMAE.positionEmbedding(width: width, grid: grid).flatMap { $0 }
        expectClose(table, reference, absolute: 1e-7, "sin-cos table vs official construction")
        // ViT-B: 197 × 768, dims 0–191 sin(col·ω).
        let base768 = sinCosPositionEmbedding(width: 768, gridSize: 14)
        #expect(base768.count == 197 * 768)
        let token = 1 + 5 * 14 + 9  // row 5, column 9
        #expect(abs(Double(base768[token * 768 + 1]) - sin(9 / pow(10_000.0, 1 / 192.0))) < 1e-7)
        #expect(abs(Double(base768[token * 768 + 384 + 1]) - sin(5 / pow(10_000.0, 1 / 192.0))) < 1e-7)
        #expect(abs(Double(base768[token * 768 + 576]) - cos(5.0)) < 1e-7)
    }

    @Test func maskingInvariants() {
        let patchCount = 196, kept = 49
        let noise = FloatBuffer(count: patchCount)
        var shuffle = [Int32](repeating: 0, count: patchCount), restore = shuffle
        var mask = [Float](repeating: -1, count: patchCount)
        for sample in 0..<20 {
            fillMaskingNoise(noise.pointer, patchCount: patchCount, seed: 7, epoch: 3, sampleIndex: sample)
            #expect(noise.toArray().allSatisfy { $0 >= 0 && $0 < 1 })
            randomMasking(shuffle: &shuffle, restore: &restore, mask: &mask, noise: noise.pointer,
                          patchCount: patchCount, keptCount: kept)
            #expect(Set(shuffle).count == patchCount)  // a permutation
            #expect((0..<patchCount).allSatisfy { Int(restore[Int(shuffle[$0])]) == $0 })  // restore ∘ shuffle = identity
            #expect((0..<patchCount).allSatisfy { Int(shuffle[Int(restore[$0])]) == $0 })
            #expect(mask.reduce(0, +) == Float(patchCount - kept))
            // The kept patches have the smallest noise, in ascending order.
            let values = noise.toArray()
            let largestKept = (0..<kept).map { values[Int(shuffle[$0])] }.max()!
            #expect((0..<patchCount).allSatisfy { mask[$0] == (values[$0] > largestKept ? 1 : 0) })
            #expect((1..<patchCount).allSatisfy { values[Int(shuffle[$0 - 1])] <= values[Int(shuffle[$0])] })
        }
        // Ties are broken by patch index (a stable argsort).
        let tied: [Float] = [0.5, 0.1, 0.5, 0.1]
        tied.withUnsafeBufferPointer { pointer in
            randomMasking(shuffle: &shuffle, restore: &restore, mask: &mask, noise: pointer.baseAddress!, patchCount: 4, keptCount: 1)
        }
        #expect(Array(shuffle.prefix(4)) == [1, 3, 0, 2])
        #expect(Array(mask.prefix(4)) == [1, 0, 1, 1])
    }

    @Test func maskingNoiseIsAPureFunctionOfItsKey() {
        let a = FloatBuffer(count: 64), b = FloatBuffer(count: 64), c = FloatBuffer(count: 64)
        fillMaskingNoise(a.pointer, patchCount: 64, seed: 1, epoch: 2, sampleIndex: 3)
        fillMaskingNoise(b.pointer, patchCount: 64, seed: 1, epoch: 2, sampleIndex: 3)
        fillMaskingNoise(c.pointer, patchCount: 64, seed: 1, epoch: 3, sampleIndex: 3)
        #expect(a.toArray() == b.toArray())
        #expect(a.toArray() != c.toArray())
    }
}
