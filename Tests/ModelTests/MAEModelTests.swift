import Foundation
import Kernels
import Model
import Testing
import TestSupport

/// The whole model against the double-precision reference written after the official
/// code: forward values, then every parameter tensor's gradient against central
/// differences of the reference loss.
@Suite(.serialized) struct MAEModelTests {
    /// 8 px images, 2 px patches (16 patches), widths that exercise both the SIMD
    /// bodies (16) and the scalar tails (12) of the kernels.
    static let micro = ModelConfig(name: "micro", imageSize: 8, patchSize: 2, encoderWidth: 16, encoderDepth: 2,
                                   encoderHeads: 2, decoderWidth: 12, decoderDepth: 1, decoderHeads: 2)

    struct Inputs {
        let images: FloatBuffer
        let noise: FloatBuffer
        let batch: Int
    }

    static func inputs(_ config: ModelConfig, batch: Int, seed: Int) -> Inputs {
        let images = FloatBuffer(randomValues(batch * 3 * config.imageSize * config.imageSize, seed: seed, in: -2..<2)
            .map { Float($0) })
        let noise = FloatBuffer(count: batch * config.patchCount)
        for sample in 0..<batch {
            fillMaskingNoise(noise.pointer + sample * config.patchCount, patchCount: config.patchCount,
                             seed: UInt64(seed), epoch: 0, sampleIndex: sample)
        }
        return Inputs(images: images, noise: noise, batch: batch)
    }

    @Test(arguments: [false, true])
    func forwardMatchesTheReference(normPix: Bool) {
        let model = MAEModel(config: Self.micro, seed: 11)
        let input = Self.inputs(Self.micro, batch: 3, seed: 12)
        let loss = model.forward(images: input.images.pointer, noise: input.noise.pointer, batchSize: input.batch,
                                 maskRatio: 0.75, normPixLoss: normPix)
        let reference = ReferenceMAE(config: Self.micro, parameters: model.parameters.toArray(), table: model.table)
            .run(images: input.images.toArray().map(Double.init), noise: input.noise.toArray(), batch: input.batch,
                 maskRatio: 0.75, normPix: normPix)
        expectClose([Double(loss)], [reference.loss], absolute: 0, relative: 1e-5, "loss")
        let L = Self.micro.patchCount, P = Self.micro.patchDimension
        let prediction = (0..<(input.batch * L * P)).map { model.prediction[$0] }
        expectClose(prediction, reference.prediction.flatMap { $0.flatMap { $0 } }, absolute: 2e-5, relative: 1e-4, "prediction")
        let mask = (0..<(input.batch * L)).map { model.mask[$0] }
        expectClose(mask, reference.mask.flatMap { $0 }, absolute: 0, "mask")
        // A second mask ratio reallocates the arena and still matches.
        let lossHalf = model.forward(images: input.images.pointer, noise: input.noise.pointer, batchSize: input.batch,
                                     maskRatio: 0.5, normPixLoss: normPix)
        let referenceHalf = ReferenceMAE(config: Self.micro, parameters: model.parameters.toArray(), table: model.table)
            .run(images: input.images.toArray().map(Double.init), noise: input.noise.toArray(), batch: input.batch,
                 maskRatio: 0.5, normPix: normPix)
        expectClose([Double(lossHalf)], [referenceHalf.loss], absolute: 0, relative: 1e-5, "loss at mask ratio 0.5")
    }

    /// Every tensor's gradient, at a few entries each, against central differences
    /// of the reference loss in double precision.
    @Test func gradientsMatchCentralDifferencesOfTheReference() {
        let model = MAEModel(config: Self.micro, seed: 21)
        let input = Self.inputs(Self.micro, batch: 2, seed: 22)
        // Move LayerNorm parameters and biases off their initial 1/0 so that their
        // gradients are generic.
        var random = CounterRandom(seed: 23, purpose: .test)
        for index in 0..<model.parameters.count { model.parameters[index] += Float(random.nextDouble(in: -0.1..<0.1)) }
        let loss = model.forwardBackward(images: input.images.pointer, noise: input.noise.pointer, batchSize: input.batch,
                                         maskRatio: 0.75, normPixLoss: true)
        let images = input.images.toArray().map(Double.init), noise = input.noise.toArray()
        var reference = ReferenceMAE(config: Self.micro, parameters: model.parameters.toArray(), table: model.table)
        let referenceLoss = reference.run(images: images, noise: noise, batch: input.batch, maskRatio: 0.75, normPix: true).loss
        expectClose([Double(loss)], [referenceLoss], absolute: 0, relative: 1e-5, "loss")

        let step = 1e-5
        for (number, tensor) in model.table.tensors.enumerated() {
            var picker = CounterRandom(seed: 24, purpose: .test, index: number)
            let entries = Set((0..<3).map { _ in picker.nextInt(below: tensor.count) }).sorted()
            var analytic: [Double] = [], numeric: [Double] = []
            for entry in entries {
                let original = reference.weights[tensor.name]![entry]
                reference.weights[tensor.name]![entry] = original + step
                let up = reference.run(images: images, noise: noise, batch: input.batch, maskRatio: 0.75, normPix: true).loss
                reference.weights[tensor.name]![entry] = original - step
                let down = reference.run(images: images, noise: noise, batch: input.batch, maskRatio: 0.75, normPix: true).loss
                reference.weights[tensor.name]![entry] = original
                numeric.append((up - down) / (2 * step))
                analytic.append(Double(model.gradients[tensor.offset + entry]))
            }
            expectClose(analytic, numeric, absolute: 2e-6, relative: 2e-3, "gradient of \(tensor.name)")
        }
    }

    /// Gradients add up: two passes at scale ½ equal one pass at scale 1, and the
    /// loss returned is the same unscaled value; forward() agrees with forwardBackward().
    @Test func gradientsAccumulateWithTheirScale() {
        let model = MAEModel(config: Self.micro, seed: 31)
        let input = Self.inputs(Self.micro, batch: 2, seed: 32)
        let once = model.forwardBackward(images: input.images.pointer, noise: input.noise.pointer, batchSize: 2,
                                         maskRatio: 0.75, normPixLoss: false)
        let full = model.gradients.toArray()
        model.gradients.zero()
        let first = model.forwardBackward(images: input.images.pointer, noise: input.noise.pointer, batchSize: 2,
                                          maskRatio: 0.75, normPixLoss: false, gradientScale: 0.5)
        let second = model.forwardBackward(images: input.images.pointer, noise: input.noise.pointer, batchSize: 2,
                                           maskRatio: 0.75, normPixLoss: false, gradientScale: 0.5)
        #expect(once == first && first == second)
        expectClose(model.gradients.toArray(), full.map(Double.init), absolute: 1e-7, relative: 1e-5, "accumulated gradients")
        #expect(full.contains { $0 != 0 })
        let evaluation = model.forward(images: input.images.pointer, noise: input.noise.pointer, batchSize: 2,
                                       maskRatio: 0.75, normPixLoss: false)
        #expect(evaluation == once)
    }

    /// The same step on one, two and three threads gives bit-identical loss and
    /// gradients: every parallel kernel splits work so that each output element is
    /// computed by one worker in a fixed order (products by blocks of rows or columns
    /// of c, sums by column ranges), whatever the thread count.
    @Test(arguments: [false, true], [1, 3])
    func threadCountDoesNotChangeTheResult(tinyConfig: Bool, batchShards: Int) throws {
        // Several heads and samples, so that the attention products are spread over workers;
        // the tiny config has products large enough to be split.
        let config = tinyConfig ? try ModelConfig.named("mae_vit_tiny_patch4")
            : ModelConfig(name: "mini", imageSize: 16, patchSize: 4, encoderWidth: 64, encoderDepth: 2,
                          encoderHeads: 4, decoderWidth: 32, decoderDepth: 2, decoderHeads: 2)
        let batch = tinyConfig ? 8 : 4
        let input = Self.inputs(config, batch: batch, seed: 41)
        let model = MAEModel(config: config, seed: 42)
        model.batchShards = batchShards
        func run(threads: Int) -> (Float, [Float]) {
            let before = Parallel.threads
            Parallel.setThreads(threads)
            defer { Parallel.setThreads(before) }
            model.gradients.zero()
            let loss = model.forwardBackward(images: input.images.pointer, noise: input.noise.pointer, batchSize: batch,
                                             maskRatio: 0.75, normPixLoss: true)
            return (loss, model.gradients.toArray())
        }
        let (lossOne, gradientsOne) = run(threads: 1)
        for threads in [2, 3] {
            let (loss, gradients) = run(threads: threads)
            #expect(loss == lossOne, "\(threads) threads")
            let differing = zip(gradients, gradientsOne).filter { $0 != $1 }.count
            #expect(differing == 0, "\(differing) gradient elements differ on \(threads) threads")
        }
        #expect(lossOne.isFinite && lossOne > 0)
    }

    /// In bf16 too, the thread count changes no bit (the products' blocks depend on the
    /// shape alone), and the rounded weights follow `parametersDidChange()`.
    @Test(.needsBFloat16Products, arguments: [1, 3])
    func bf16StepIsIndependentOfTheThreadCount(batchShards: Int) throws {
        let config = try ModelConfig.named("mae_vit_tiny_patch4")
        let batch = 8
        let input = Self.inputs(config, batch: batch, seed: 41)
        let model = MAEModel(config: config, seed: 42)
        model.batchShards = batchShards
        func run(threads: Int, precision: Precision = .bf16) -> (Float, [Float]) {
            let before = Parallel.threads
            Parallel.setThreads(threads)
            defer { Parallel.setThreads(before) }
            model.precision = precision
            model.gradients.zero()
            let loss = model.forwardBackward(images: input.images.pointer, noise: input.noise.pointer, batchSize: batch,
                                             maskRatio: 0.75, normPixLoss: true)
            return (loss, model.gradients.toArray())
        }
        let (lossOne, gradientsOne) = run(threads: 1)
        for threads in [2, 3] {
            let (loss, gradients) = run(threads: threads)
            #expect(loss == lossOne, "\(threads) threads")
            let differing = zip(gradients, gradientsOne).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0, "\(differing) gradient elements differ on \(threads) threads")
        }
        let (lossFP32, _) = run(threads: 1, precision: .fp32)
        #expect(lossFP32 != lossOne && abs(lossFP32 - lossOne) < 1e-2 * lossFP32, "fp32 \(lossFP32), bf16 \(lossOne)")
        // A changed weight reaches the bf16 products once the model is told.
        model.parameters.pointer[model.table.tensor(named: "blocks.0.attn.qkv.weight")!.offset] += 0.5
        model.parametersDidChange()
        #expect(run(threads: 1).0 != lossOne)
    }

    /// A backward that writes over the gradients (a step's first micro-batch) gives every
    /// gradient the value that zeroing them and adding gives, whatever they held before:
    /// here NaN everywhere, so a tensor that is neither zeroed nor assigned shows. A second
    /// micro-batch then adds as before. On two threads (products cut into parts), with one
    /// batch shard and with two (the second shard's buffer is written over each time), in
    /// fp32 and, where the CPU has the bf16 products, bf16.
    @Test(arguments: [Precision.fp32, .bf16], [1, 2])
    func overwritingTheGradientsMatchesZeroingThenAdding(precision: Precision, batchShards: Int) throws {
        guard precision == .fp32 || cpuRunsBFloat16Products else { return }
        let config = try ModelConfig.named("mae_vit_tiny_patch4")
        let batch = 4
        let first = Self.inputs(config, batch: batch, seed: 51), second = Self.inputs(config, batch: batch, seed: 52)
        let model = MAEModel(config: config, seed: 53)
        model.precision = precision
        model.batchShards = batchShards
        let before = Parallel.threads
        Parallel.setThreads(2)
        defer { Parallel.setThreads(before) }
        func pass(_ input: Inputs, overwriting: Bool) -> Float {
            model.forwardBackward(images: input.images.pointer, noise: input.noise.pointer, batchSize: batch,
                                  maskRatio: 0.75, normPixLoss: true, gradientScale: 0.5, overwritesGradients: overwriting)
        }
        func differing(_ expected: [Float]) -> [String] {
            let actual = model.gradients.toArray()
            return model.table.tensors.compactMap { tensor in
                let range = tensor.offset..<tensor.offset + tensor.count
                let count = range.filter { actual[$0] != expected[$0] }.count  // -0 equals 0; NaN equals nothing
                return count == 0 ? nil : "\(tensor.name): \(count) of \(tensor.count)"
            }
        }
        model.gradients.zero()
        let zeroedLoss = pass(first, overwriting: false)
        let zeroedThenAdded = model.gradients.toArray()
        _ = pass(second, overwriting: false)
        let twoAdded = model.gradients.toArray()
        #expect(zeroedThenAdded.contains { $0 != 0 })

        for round in 0..<2 {  // the second round after real gradients, as in training
            if round == 0 { model.gradients.pointer.update(repeating: .nan, count: model.gradients.count) }
            #expect(pass(first, overwriting: true) == zeroedLoss)
            let wrong = differing(zeroedThenAdded)
            #expect(wrong.isEmpty, "overwritten gradients that differ (round \(round)): \(wrong.prefix(8))")
            _ = pass(second, overwriting: false)
            let wrongAfterAdding = differing(twoAdded)
            #expect(wrongAfterAdding.isEmpty, "added gradients that differ (round \(round)): \(wrongAfterAdding.prefix(8))")
        }
    }

    /// Cutting the batch into shards (run whole by one worker each, gradients added in
    /// shard order) computes the same step as one shard, up to float rounding: the
    /// same mask, the same predictions, the loss and every gradient within a few ulps,
    /// added onto what `gradients` held. Shard counts that do not divide the batch
    /// and one above the batch size (which runs one sample per shard) included.
    @Test(arguments: [2, 3, 9])
    func batchShardsComputeTheSameStep(batchShards: Int) {
        let config = ModelConfig(name: "mini", imageSize: 16, patchSize: 4, encoderWidth: 64, encoderDepth: 2,
                                 encoderHeads: 4, decoderWidth: 32, decoderDepth: 2, decoderHeads: 2)
        let batch = 5
        let input = Self.inputs(config, batch: batch, seed: 51)
        let whole = MAEModel(config: config, seed: 52)
        let wholeLoss = whole.forwardBackward(images: input.images.pointer, noise: input.noise.pointer,
                                              batchSize: batch, maskRatio: 0.75, normPixLoss: true)
        let sharded = MAEModel(config: config, seed: 52)
        sharded.batchShards = batchShards
        let before = Parallel.threads
        Parallel.setThreads(2)
        defer { Parallel.setThreads(before) }
        for index in 0..<sharded.gradients.count { sharded.gradients[index] = 0.5 }
        let shardedLoss = sharded.forwardBackward(images: input.images.pointer, noise: input.noise.pointer,
                                                  batchSize: batch, maskRatio: 0.75, normPixLoss: true)
        let L = config.patchCount, P = config.patchDimension
        #expect((0..<(batch * L)).allSatisfy { sharded.mask[$0] == whole.mask[$0] }, "masks differ")
        expectClose((0..<(batch * L * P)).map { sharded.prediction[$0] }, (0..<(batch * L * P)).map { whole.prediction[$0] },
                    absolute: 1e-6, relative: 1e-5, "prediction")
        expectClose([shardedLoss], [wholeLoss], absolute: 0, relative: 1e-6, "loss")
        expectClose(sharded.gradients.toArray().map { $0 - 0.5 }, whole.gradients.toArray(),
                    absolute: 2e-6, relative: 1e-4, "gradients")
        // Forward alone agrees with the forward of forwardBackward.
        let evaluation = sharded.forward(images: input.images.pointer, noise: input.noise.pointer, batchSize: batch,
                                         maskRatio: 0.75, normPixLoss: true)
        #expect(evaluation == shardedLoss)
    }

    /// `auto` shards: one per thread, unless the batch is smaller than the thread
    /// count or the extra gradient buffers would take over 256 MiB.
    @Test func automaticBatchShardsFollowThreadsBatchAndModelSize() throws {
        let tiny = try ModelConfig.named("mae_vit_tiny_patch4")  // 6.2 M parameters, 25 MB a buffer
        let base = try ModelConfig.named("mae_vit_base_patch16")
        #expect(MAEModel.automaticBatchShards(config: tiny, batchSize: 64, threads: 1) == 1)
        #expect(MAEModel.automaticBatchShards(config: tiny, batchSize: 64, threads: 2) == 2)
        #expect(MAEModel.automaticBatchShards(config: tiny, batchSize: 64, threads: 8) == 8)
        #expect(MAEModel.automaticBatchShards(config: tiny, batchSize: 3, threads: 4) == 1)
        #expect(MAEModel.automaticBatchShards(config: tiny, batchSize: 64, threads: 16, coarseColumnCuts: false) == 1)
        #expect(MAEModel.automaticBatchShards(config: tiny, batchSize: 64, threads: 16, coarseColumnCuts: true) == 16)
        // ViT-B (111.7 M parameters, 447 MB a buffer): two shards only where fp32 products are
        // cut by columns only coarsely (the Haswell family), never three.
        #expect(MAEModel.automaticBatchShards(config: base, batchSize: 8, threads: 2, coarseColumnCuts: false) == 1)
        #expect(MAEModel.automaticBatchShards(config: base, batchSize: 8, threads: 2, coarseColumnCuts: true) == 2)
        #expect(MAEModel.automaticBatchShards(config: base, batchSize: 8, threads: 2, precision: .bf16, coarseColumnCuts: true) == 1)
        #expect(MAEModel.automaticBatchShards(config: base, batchSize: 8, threads: 3, coarseColumnCuts: true) == 1)
    }
}
