import Kernels
import Model
import Testing
import TestSupport

/// The encoder's representation for k-NN and probing: every patch visible, the class
/// token or the mean of the patch tokens, one row per image whatever the batch.
struct EncoderFeaturesTests {
    static let config = ModelConfig(name: "mini", imageSize: 16, patchSize: 4, encoderWidth: 32, encoderDepth: 2,
                                    encoderHeads: 4, decoderWidth: 16, decoderDepth: 1, decoderHeads: 2)

    @Test(arguments: [false, true])
    func eachImageGetsTheSameFeaturesAloneAndInABatch(globalPool: Bool) {
        let config = Self.config, batch = 3, width = config.encoderWidth
        let pixels = 3 * config.imageSize * config.imageSize
        let images = FloatBuffer(randomValues(batch * pixels, seed: 81, in: -2..<2).map { Float($0) })
        let model = MAEModel(config: config, seed: 82)
        let together = FloatBuffer(count: batch * width)
        model.encoderFeatures(images: images.pointer, batchSize: batch, globalPool: globalPool, into: together.pointer)
        for image in 0..<batch {
            let alone = FloatBuffer(count: width)
            model.encoderFeatures(images: images.pointer + image * pixels, batchSize: 1, globalPool: globalPool,
                                  into: alone.pointer)
            expectClose(alone.toArray(), (0..<width).map { together[image * width + $0] }, absolute: 1e-5, relative: 1e-5,
                        "image \(image)")
        }
        // Different images give different features.
        #expect((0..<width).contains { together[$0] != together[width + $0] })
    }

    /// The class token and the mean of the patch tokens are different representations, and
    /// extracting features leaves the training forward unchanged.
    @Test func poolingsDifferAndTrainingIsUnaffected() {
        let config = Self.config, width = config.encoderWidth
        let pixels = 3 * config.imageSize * config.imageSize
        let images = FloatBuffer(randomValues(2 * pixels, seed: 83, in: -2..<2).map { Float($0) })
        let noise = FloatBuffer(randomValues(2 * config.patchCount, seed: 84, in: 0..<1).map { Float($0) })
        let model = MAEModel(config: config, seed: 85)
        let before = model.forward(images: images.pointer, noise: noise.pointer, batchSize: 2, maskRatio: 0.75,
                                   normPixLoss: true)
        let cls = FloatBuffer(count: 2 * width), mean = FloatBuffer(count: 2 * width)
        model.encoderFeatures(images: images.pointer, batchSize: 2, globalPool: false, into: cls.pointer)
        model.encoderFeatures(images: images.pointer, batchSize: 2, globalPool: true, into: mean.pointer)
        #expect(cls.toArray() != mean.toArray())
        let after = model.forward(images: images.pointer, noise: noise.pointer, batchSize: 2, maskRatio: 0.75,
                                  normPixLoss: true)
        #expect(after == before)
    }
}
