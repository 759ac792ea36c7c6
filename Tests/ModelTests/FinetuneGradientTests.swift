import Foundation
import Kernels
import Testing
import TestSupport
@testable import Model

/// Finite differences of the classifier's loss against its backward, with drop path on
/// (PyTorch cannot be given our drop-path draws, so these checks stand in for the
/// fixture there) and through the pooling and head of both kinds.
@Suite struct FinetuneGradientTests {
    static let batch = 3, classes = 4

    /// A micro classifier with random non-trivial weights, images and soft targets.
    static func setUp(globalPool: Bool, dropPath: Double) throws
        -> (model: VisionTransformerClassifier, images: FloatBuffer, targets: FloatBuffer) {
        let config = try fixtureConfig()
        let model = VisionTransformerClassifier(config: config, numberOfClasses: classes, globalPool: globalPool,
                                                dropPath: dropPath, seed: 5)
        var random = CounterRandom(seed: 5, purpose: .test)
        for index in 0..<model.parameters.count { model.parameters[index] += Float(0.05 * random.nextNormal()) }
        let images = FloatBuffer((0..<(batch * 3 * config.imageSize * config.imageSize)).map { _ in Float(random.nextNormal()) })
        var targets = [Float](repeating: 0.05, count: batch * classes)
        targets[1] = 0.85; targets[classes + 3] = 0.45; targets[classes] = 0.45; targets[2 * classes + 2] = 0.85
        return (model, images, FloatBuffer(targets))
    }

    /// Central differences of a few elements of every kind of tensor against the backward.
    static func checkGradients(globalPool: Bool, dropPath: Double, key: DropPathKey?) throws {
        let (model, images, targets) = try setUp(globalPool: globalPool, dropPath: dropPath)
        model.gradients.zero()
        _ = model.forwardBackward(images: images.pointer, targets: targets.pointer, batchSize: batch, dropPath: key)
        let analytic = model.gradients.toArray()
        let normName = VisionTransformerClassifier.headNormName(globalPool: globalPool)
        let names = ["head.weight", "head.bias", normName + ".weight", normName + ".bias", "blocks.1.mlp.fc2.weight",
                     "blocks.1.attn.proj.bias", "blocks.1.norm1.weight", "blocks.0.attn.qkv.weight", "pos_embed",
                     "cls_token", "patch_embed.proj.weight"]
        let step: Float = 1e-2
        for name in names {
            let tensor = try #require(model.table.tensor(named: name))
            var numeric: [Double] = [], backward: [Double] = []
            for element in stride(from: 0, to: tensor.count, by: max(1, tensor.count / 6)).prefix(6) {
                let index = tensor.offset + element
                let original = model.parameters[index]
                func loss(_ value: Float) -> Double {
                    model.parameters[index] = value
                    return Double(model.forwardBackward(images: images.pointer, targets: targets.pointer, batchSize: batch,
                                                        gradientScale: 0, dropPath: key))
                }
                let up = original + step, down = original - step
                numeric.append((loss(up) - loss(down)) / Double(up - down))
                model.parameters[index] = original
                backward.append(Double(analytic[index]))
            }
            expectClose(backward, numeric, absolute: 2e-4, relative: 2e-2, "\(name) (drop path \(dropPath))")
        }
    }

    @Test(arguments: [true, false])
    func headAndPoolingBackwardMatchFiniteDifferences(globalPool: Bool) throws {
        try Self.checkGradients(globalPool: globalPool, dropPath: 0, key: nil)
    }

    @Test(arguments: [true, false])
    func dropPathBackwardMatchesFiniteDifferences(globalPool: Bool) throws {
        // A key whose draws drop some branches of the last block and keep others (or the
        // check proves little); the first block's rate is 0, so it keeps all. Kept
        // branches are scaled by 1/0.4 inside the block.
        let masks = FloatBuffer(count: 2 * 2 * Self.batch)
        let key = try #require((0..<64).lazy.map { DropPathKey(seed: UInt64($0), epoch: 2, sampleIndices: [4, 17, 30]) }
            .first { key in
                fillDropPathMasks(masks.pointer, rates: dropPathRates(dropPath: 0.6, depth: 2), key: key)
                let lastBlock = masks.toArray()[(2 * Self.batch)...]
                return lastBlock.contains(0) && lastBlock.contains(1)
            })
        #expect(masks.toArray()[..<(2 * Self.batch)].allSatisfy { $0 == 1 }, "rate 0 in the first block")
        try Self.checkGradients(globalPool: globalPool, dropPath: 0.6, key: key)
    }

    /// Drop path draws depend only on (seed, epoch, sample index): the same key gives the
    /// same loss, another epoch other draws, and no key (evaluation) none.
    @Test func dropPathIsKeyedBySample() throws {
        let (model, images, targets) = try Self.setUp(globalPool: true, dropPath: 0.6)
        func loss(_ key: DropPathKey?) -> Float {
            model.forwardBackward(images: images.pointer, targets: targets.pointer, batchSize: Self.batch,
                                  gradientScale: 0, dropPath: key)
        }
        let key = DropPathKey(seed: 9, epoch: 2, sampleIndices: [4, 17, 30])
        #expect(loss(key) == loss(key))
        let plain = loss(nil)
        let epochs = (0..<6).map { loss(DropPathKey(seed: 9, epoch: $0, sampleIndices: [4, 17, 30])) }
        #expect(Set(epochs).count > 1 && epochs.contains { $0 != plain })
        #expect(dropPathRates(dropPath: 0.1, depth: 12).first == 0 && dropPathRates(dropPath: 0.1, depth: 12).last == Double(Float(0.1)))
        #expect(dropPathRates(dropPath: 0.3, depth: 1) == [0])

        // Over many samples, the last block keeps a branch with probability 1 − rate.
        let samples = 2_000
        let masks = FloatBuffer(count: 2 * 2 * samples)
        fillDropPathMasks(masks.pointer, rates: dropPathRates(dropPath: 0.6, depth: 2),
                           key: DropPathKey(seed: 3, epoch: 0, sampleIndices: Array(0..<samples)))
        let kept = masks.toArray()[(2 * samples)...].filter { $0 != 0 }.count
        #expect(abs(Double(kept) / Double(2 * samples) - 0.4) < 0.03, "kept \(kept) of \(2 * samples)")
    }
}
