import Kernels
import Model
import Testing
import TestSupport

/// The linear probe reads the frozen MAE encoder through `MAEModel`; the fine-tuning classifier
/// is a separate implementation of the same encoder. With an identity head, the classifier's
/// logits are the probe's features: the class token after `norm`, or (global pool) the mean of
/// the patch tokens through a fresh `fc_norm` (weight 1, bias 0).
@Suite struct ProbeFeaturesTests {
    @Test(arguments: [false, true])
    func theProbeFeaturesAreTheClassifiersRepresentation(globalPool: Bool) throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let config = ModelConfig(name: "mini", imageSize: 16, patchSize: 4, encoderWidth: 32, encoderDepth: 2,
                                 encoderHeads: 4, decoderWidth: 16, decoderDepth: 1, decoderHeads: 2)
        let batch = 3, width = config.encoderWidth, pixels = 3 * 16 * 16
        let images = FloatBuffer(randomValues(batch * pixels, seed: 91, in: -2..<2).map { Float($0) })
        let encoder = MAEModel(config: config, seed: 92)
        let path = temporary.path + "/mae.safetensors"
        try encoder.saveWeights(path: path)

        let classifier = VisionTransformerClassifier(config: config, numberOfClasses: width, globalPool: globalPool,
                                                     dropPath: 0, seed: 93)
        try classifier.loadPretrainedEncoder(from: WeightsFile.read(path: path))
        let head = try #require(classifier.table.tensor(named: "head.weight"))
        let bias = try #require(classifier.table.tensor(named: "head.bias"))
        (classifier.parameters.pointer + head.offset).update(repeating: 0, count: head.count)
        for index in 0..<width { classifier.parameters.pointer[head.offset + index * width + index] = 1 }
        (classifier.parameters.pointer + bias.offset).update(repeating: 0, count: bias.count)
        let expected = classifier.logits(images: images.pointer, batchSize: batch)

        let features = FloatBuffer(count: batch * width)
        if globalPool {
            let mean = FloatBuffer(count: batch * width)
            encoder.encoderPatchMean(images: images.pointer, batchSize: batch, into: mean.pointer)
            let ones = FloatBuffer([Float](repeating: 1, count: width)), zeros = FloatBuffer(count: width)
            let rowMean = FloatBuffer(count: batch), reciprocal = FloatBuffer(count: batch)
            layerNormForward(output: features.pointer, mean: rowMean.pointer, reciprocalStd: reciprocal.pointer,
                             input: mean.pointer, weight: ones.pointer, bias: zeros.pointer, rows: batch, width: width)
        } else {
            encoder.encoderFeatures(images: images.pointer, batchSize: batch, globalPool: false, into: features.pointer)
        }
        expectClose(features.toArray(), expected, absolute: 1e-4, relative: 1e-4, "probe features, global pool \(globalPool)")
    }
}
