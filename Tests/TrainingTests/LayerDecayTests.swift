import Foundation
import Kernels
import Model
import Testing
import TestSupport
@testable import Training

/// Layer-wise learning-rate decay as util/lr_decay.param_groups_lrd, and AdamW over its groups.
@Suite struct LayerDecayTests {
    static func classifier(globalPool: Bool) -> VisionTransformerClassifier {
        var config = tinyModelConfig()
        config.encoderDepth = 2
        return VisionTransformerClassifier(config: config, numberOfClasses: 3, globalPool: globalPool, dropPath: 0, seed: 1)
    }

    /// Depth 2, so three layers: the embedding (0), blocks 0 and 1 (1, 2), the rest (3).
    @Test(arguments: [true, false])
    func settingsFollowTheOfficialAssignment(globalPool: Bool) {
        let model = Self.classifier(globalPool: globalPool)
        let settings = layerDecaySettings(table: model.table, depth: 2, weightDecay: 0.05, layerDecay: 0.75)
        var byName: [String: ParameterGroupSetting] = [:]
        for (tensor, setting) in zip(model.table.tensors, settings) { byName[tensor.name] = setting }
        func expect(_ name: String, _ scale: Double, _ decay: Double) {
            #expect(byName[name] == ParameterGroupSetting(learningRateScale: scale, weightDecay: decay), "\(name): \(String(describing: byName[name]))")
        }
        expect("cls_token", pow(0.75, 3), 0)  // no_weight_decay, although 3-D
        expect("pos_embed", pow(0.75, 3), 0)
        expect("patch_embed.proj.weight", pow(0.75, 3), 0.05)
        expect("patch_embed.proj.bias", pow(0.75, 3), 0)
        expect("blocks.0.attn.qkv.weight", pow(0.75, 2), 0.05)
        expect("blocks.0.norm1.weight", pow(0.75, 2), 0)
        expect("blocks.1.mlp.fc2.weight", 0.75, 0.05)
        expect("blocks.1.mlp.fc2.bias", 0.75, 0)
        expect("head.weight", 1, 0.05)
        expect("head.bias", 1, 0)
        let norm = VisionTransformerClassifier.headNormName(globalPool: globalPool)
        expect(norm + ".weight", 1, 0)
        #expect(vitLayerID(name: "blocks.11.norm1.weight", layerCount: 13) == 12)
        #expect(vitLayerID(name: "fc_norm.bias", layerCount: 13) == 13)
    }

    /// Each group steps with lr × its scale and its own weight decay, exactly as adamwUpdate
    /// on that tensor alone would.
    @Test func optimizerAppliesEachGroupsScaleAndDecay() {
        let model = Self.classifier(globalPool: true)
        let settings = layerDecaySettings(table: model.table, depth: 2, weightDecay: 0.05, layerDecay: 0.65)
        let optimizer = AdamWOptimizer(table: model.table, settings: settings)
        #expect(optimizer.beta2 == 0.999)
        #expect(optimizer.groups.reduce(0) { $0 + $1.count } == model.table.count)
        var random = CounterRandom(seed: 8, purpose: .test)
        for index in 0..<model.table.count { model.gradients[index] = Float(random.nextDouble(in: -1..<1)) }
        let expected = FloatBuffer(model.parameters.toArray())
        let first = FloatBuffer(count: model.table.count), second = FloatBuffer(count: model.table.count)
        for (tensor, setting) in zip(model.table.tensors, settings) {
            adamwUpdate(parameters: expected.pointer + tensor.offset, gradients: model.gradients.pointer + tensor.offset,
                        firstMoment: first.pointer + tensor.offset, secondMoment: second.pointer + tensor.offset,
                        count: tensor.count, learningRate: Float(Double(Float(0.001)) * setting.learningRateScale),
                        beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: Float(setting.weightDecay), step: 1)
        }
        optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: 0.001)
        #expect(model.parameters.toArray() == expected.toArray())
        #expect(optimizer.secondMoment.toArray() == second.toArray())
    }

    /// The pretraining groups are untouched by the extension: scale 1, the optimizer's decay.
    @Test func pretrainingGroupsKeepTheirDefaults() {
        let model = MAEModel(config: tinyModelConfig(), seed: 1)
        let optimizer = AdamWOptimizer(table: model.table)
        #expect(optimizer.groups.allSatisfy { $0.learningRateScale == 1 && $0.weightDecay == nil })
    }
}
