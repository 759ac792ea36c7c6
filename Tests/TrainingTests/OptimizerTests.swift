import Foundation
import Kernels
import Model
import Testing
import TestSupport
@testable import Training

/// A model small enough for unit tests: 16 px, patch 4 (16 patches), widths 16 and 8.
func tinyModelConfig() -> ModelConfig {
    ModelConfig(name: "test_tiny", imageSize: 16, patchSize: 4, encoderWidth: 16, encoderDepth: 1, encoderHeads: 2,
                decoderWidth: 8, decoderDepth: 1, decoderHeads: 2)
}

@Suite struct OptimizerTests {
    @Test func weightDecaySkipsBiasesAndOneDimensionalTensorsOnly() throws {
        let model = MAEModel(config: tinyModelConfig(), seed: 1)
        for tensor in model.table.tensors {
            let expected = !(tensor.name.hasSuffix(".bias") || tensor.shape.count == 1)
            #expect(tensor.decays == expected, "\(tensor.name) \(tensor.shape)")
        }
        #expect(model.table.tensor(named: "cls_token")?.decays == true)
        #expect(model.table.tensor(named: "mask_token")?.decays == true)
        #expect(model.table.tensor(named: "blocks.0.norm1.weight")?.decays == false)
        #expect(model.table.tensor(named: "blocks.0.attn.qkv.weight")?.decays == true)

        // The groups cover the layout exactly once, alternate in decay, and agree with every tensor.
        let groups = AdamWOptimizer.groups(of: model.table)
        #expect(groups.first?.offset == 0)
        #expect(groups.reduce(0) { $0 + $1.count } == model.table.count)
        for (previous, next) in zip(groups, groups.dropFirst()) {
            #expect(previous.offset + previous.count == next.offset)
            #expect(previous.decays != next.decays)
        }
        for tensor in model.table.tensors {
            let group = try #require(groups.first { $0.offset <= tensor.offset && tensor.offset < $0.offset + $0.count })
            #expect(group.decays == tensor.decays, "\(tensor.name)")
        }
    }

    /// In bf16 the update writes the model's rounded copy of the parameters as it writes them
    /// (`update(model:)`): three steps so give the losses and parameters, to the bit, of steps
    /// whose copy a rounding pass of its own writes; a write of the parameters by anything
    /// else afterwards (told with `parametersDidChange()`) has them rounded again. Sharded, the
    /// optimizer writes only its ranges and leaves the copy to the pass.
    @Test(.needsBFloat16Products) func bf16UpdateWritesTheRoundedParametersOfTheRoundingPass() throws {
        let config = tinyModelConfig(), batch = 4
        let images = FloatBuffer(randomValues(batch * 3 * config.imageSize * config.imageSize, seed: 61).map(Float.init))
        let noise = FloatBuffer(randomValues(batch * config.patchCount, seed: 62).map(Float.init))
        func run(fused: Bool) -> (losses: [Float], parameters: [Float]) {
            let model = MAEModel(config: config, seed: 63)
            model.precision = .bf16
            let optimizer = AdamWOptimizer(table: model.table)
            #expect(optimizer.updatesWholeLayout)
            var losses: [Float] = []
            for _ in 0..<3 {
                model.gradients.zero()
                losses.append(model.forwardBackward(images: images.pointer, noise: noise.pointer, batchSize: batch,
                                                    maskRatio: 0.75, normPixLoss: true))
                if fused {
                    optimizer.update(model: model, learningRate: 1e-2)
                } else {
                    optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: 1e-2)
                    model.parametersDidChange()
                }
            }
            losses.append(model.forward(images: images.pointer, noise: noise.pointer, batchSize: batch, maskRatio: 0.75,
                                        normPixLoss: true))
            for index in 0..<model.table.count { model.parameters[index] *= 0.5 }
            model.parametersDidChange()
            losses.append(model.forward(images: images.pointer, noise: noise.pointer, batchSize: batch, maskRatio: 0.75,
                                        normPixLoss: true))
            return (losses, model.parameters.toArray())
        }
        let (fused, pass) = (run(fused: true), run(fused: false))
        #expect(fused.losses.map(\.bitPattern) == pass.losses.map(\.bitPattern), "fused \(fused.losses), pass \(pass.losses)")
        #expect(fused.losses[4] != fused.losses[3], "halving the parameters changed no loss")
        let differing = zip(fused.parameters, pass.parameters).filter { $0.bitPattern != $1.bitPattern }.count
        #expect(differing == 0, "\(differing) parameters differ")

        let table = MAEModel(config: config, seed: 1).table
        #expect(!AdamWOptimizer(table: table, shard: [0..<(table.count / 2)]).updatesWholeLayout)
        #expect(!AdamWOptimizer(table: table, shard: [0..<table.count]).updatesWholeLayout)
        let settings = table.tensors.map { _ in ParameterGroupSetting(learningRateScale: 0, weightDecay: 0) }
        #expect(AdamWOptimizer(table: table, settings: settings).updatesWholeLayout)
    }

    /// Two AdamW steps over a whole (tiny) model against PyTorch's formula evaluated in double precision.
    @Test func adamWStepsMatchTheFormula() throws {
        let model = MAEModel(config: tinyModelConfig(), seed: 2)
        let count = model.table.count
        let optimizer = AdamWOptimizer(table: model.table, beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.05)
        var random = CounterRandom(seed: 3, purpose: .test)
        var parameters = model.parameters.toArray().map(Double.init)
        var firstMoment = [Double](repeating: 0, count: count)
        var secondMoment = [Double](repeating: 0, count: count)
        var decays = [Bool](repeating: false, count: count)
        for tensor in model.table.tensors { for index in tensor.offset..<(tensor.offset + tensor.count) { decays[index] = tensor.decays } }

        for (step, learningRate) in [(1, 0.01), (2, 0.02)] {
            for index in 0..<count { model.gradients[index] = Float(random.nextDouble(in: -1..<1)) }
            let gradients = model.gradients.toArray().map(Double.init)
            optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: Float(learningRate))
            #expect(optimizer.step == step)
            for index in 0..<count {
                let weightDecay = decays[index] ? 0.05 : 0
                parameters[index] *= 1 - learningRate * weightDecay
                firstMoment[index] = 0.9 * firstMoment[index] + 0.1 * gradients[index]
                secondMoment[index] = 0.95 * secondMoment[index] + 0.05 * gradients[index] * gradients[index]
                let correction1 = 1 - pow(0.9, Double(step)), correction2 = 1 - pow(0.95, Double(step))
                parameters[index] -= (learningRate / correction1) * firstMoment[index]
                    / (secondMoment[index].squareRoot() / correction2.squareRoot() + 1e-8)
            }
            let worstParameter = compareValues(model.parameters.toArray().map(Double.init), parameters,
                                               absoluteTolerance: 1e-6, relativeTolerance: 1e-5)
            #expect(worstParameter.withinTolerance, "parameters after step \(step): \(worstParameter)")
            let worstMoment = compareValues(optimizer.secondMoment.toArray().map(Double.init), secondMoment,
                                            absoluteTolerance: 1e-9, relativeTolerance: 1e-5)
            #expect(worstMoment.withinTolerance, "second moment after step \(step): \(worstMoment)")
        }
    }

    /// The decayed and undecayed parts differ exactly by the decay factor when gradients are zero.
    @Test func zeroGradientStepOnlyDecays() throws {
        let model = MAEModel(config: tinyModelConfig(), seed: 4)
        let before = model.parameters.toArray()
        let optimizer = AdamWOptimizer(table: model.table)
        optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: 0.1)
        for tensor in model.table.tensors {
            for index in tensor.offset..<(tensor.offset + tensor.count) {
                let expected = tensor.decays ? before[index] * (1 - Float(0.1) * 0.05) : before[index]
                #expect(model.parameters[index] == expected, "\(tensor.name)[\(index - tensor.offset)]")
            }
        }
    }
}
