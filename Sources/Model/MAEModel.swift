import Kernels

/// A Masked Autoencoder (He et al. 2021) with hand-written forward and backward
/// passes, numerically the official PyTorch `MaskedAutoencoderViT` (models_mae.py).
///
/// All trainable tensors live in one flat `parameters` buffer laid out by `table`
/// (official names, order and shapes); `gradients` has the same layout.
/// Activations live in one arena sized for the last batch shape.
///
/// One call at a time. With one batch shard (the default) the kernels inside a call
/// use every worker of `Parallel`; with several (`batchShards`), each shard runs the
/// whole forward and backward on one worker. The loss is 0 when no patch is removed
/// (mask ratio 0), where the official code divides 0 by 0.
public final class MAEModel {
    public let config: ModelConfig
    public let table: ParameterTable
    /// table.count floats.
    public let parameters: FloatBuffer
    /// Same layout as `parameters`; `forwardBackward` adds into it, or writes over it.
    public let gradients: FloatBuffer
    /// Fixed sin-cos [(L + 1), D] ("pos_embed", officially [1, L + 1, D]); not trained.
    public let encoderPositionEmbedding: FloatBuffer
    /// Fixed sin-cos [(L + 1), Dd] ("decoder_pos_embed").
    public let decoderPositionEmbedding: FloatBuffer

    let encoderOffsets: [BlockOffsets]
    let decoderOffsets: [BlockOffsets]
    let clsToken, patchEmbedWeight, patchEmbedBias, normWeight, normBias: Int
    let decoderEmbedWeight, decoderEmbedBias, maskToken, decoderNormWeight, decoderNormBias: Int
    let decoderPredictionWeight, decoderPredictionBias: Int
    /// The gradient ranges that a backward overwriting the gradients zeroes first: every
    /// tensor but the linear layers' weights, whose weight-gradient products assign them.
    private let rangesZeroedBeforeOverwriting: [Range<Int>]
    private var activations: Activations?
    private let empty = FloatBuffer(count: 0)

    /// The number format of the linear layers' and attention's matrix products (bf16:
    /// inputs rounded to bf16, fp32 sums and outputs, as `torch.autocast` on CPUs).
    /// Everything else (norms, softmax, GELU, the loss, gradients, `parameters`) stays fp32.
    public var precision: Precision = .fp32 {
        didSet { roundedParametersAreCurrent = false }
    }
    /// `parameters` rounded to bf16, same layout, allocated on the first bf16 call and
    /// rounded again only after `parametersDidChange()`: once per step, not per product.
    private var roundedParameters: UnsafeMutablePointer<UInt16>?
    /// Whether `roundedParameters` holds the bits of `parameters` rounded now; false from
    /// any write of `parameters` on, until a bf16 call rounds them (or an update that wrote
    /// both says so, `roundedParametersWritten()`).
    private var roundedParametersAreCurrent = false

    /// Tells the model that `parameters` were written (an optimizer step, a load): the next
    /// bf16 call rounds them again. Every writer of `parameters` calls it.
    public func parametersDidChange() { roundedParametersAreCurrent = false }

    /// For an update that writes every element of `parameters` and, as it goes, its bf16
    /// rounding here (AdamW, `adamwUpdate(roundedParameters:)`): the model's bf16 copy, or
    /// nil in fp32. From this call on the copy counts as stale, as after
    /// `parametersDidChange()`, until the writer calls `roundedParametersWritten()`.
    public func roundedParametersForUpdate() -> UnsafeMutablePointer<UInt16>? {
        guard precision == .bf16 else { return nil }
        roundedParametersAreCurrent = false
        let rounded = roundedParameters ?? UnsafeMutablePointer<UInt16>.allocate(capacity: table.count)
        roundedParameters = rounded
        return rounded
    }

    /// Tells the model that an update wrote all of `parameters` and their bf16 rounding into
    /// the copy from `roundedParametersForUpdate()`: the next bf16 call rounds nothing.
    public func roundedParametersWritten() {
        precondition(precision == .bf16 && roundedParameters != nil, "no bf16 copy was handed out for an update")
        roundedParametersAreCurrent = true
    }

    deinit { roundedParameters?.deallocate() }

    /// The products of this call: in bf16, with the rounded parameters brought up to date.
    private func currentProducts() -> Products {
        guard precision == .bf16 else { return Products(precision: .fp32, roundedParameters: nil) }
        let rounded = roundedParameters ?? UnsafeMutablePointer<UInt16>.allocate(capacity: table.count)
        roundedParameters = rounded
        if !roundedParametersAreCurrent {
            roundToBFloat16(rounded, parameters.pointer, count: table.count)
            roundedParametersAreCurrent = true
        }
        return Products(precision: .bf16, roundedParameters: UnsafePointer(rounded))
    }

    /// The number of parts a batch is cut into, each run through the whole forward and
    /// backward by one worker of `Parallel` (at most the batch size is used).
    ///
    /// On few cores this is the fastest way to use them: every product and
    /// element-wise pass runs on one thread, with no hand-off between threads inside
    /// the step, where one shard splits every kernel over the workers. The shards add
    /// their parameter gradients in a fixed order, so results depend on the shard count
    /// (by float rounding) but never on the thread count; each shard beyond the first
    /// holds a gradient buffer of its own (4 bytes per parameter).
    public var batchShards: Int = 1 {
        didSet { precondition(batchShards >= 1, "batchShards must be at least 1") }
    }
    /// The shard count that `auto` settings choose: one shard per thread when the batch
    /// has at least one image per thread and the extra gradient buffers
    /// ((threads − 1) × 4 bytes per parameter) fit the budget; otherwise 1, every kernel
    /// split over the threads. The budget is `maximumExtraGradientBytes`, or
    /// `maximumExtraGradientBytesForCoarseCuts` for fp32 products on OpenBLAS cores whose
    /// products may be cut by columns only at OpenBLAS's own blocks of 320
    /// (`coarseColumnCuts`: the Haswell family, `BLASRuntime.columnCutWidth`).
    ///
    /// Measured on two cores (docs/PERFORMANCE.md): shards pay where a step is many short
    /// kernels, the small models (`mae_vit_tiny_patch4` 1.2–1.3× faster, `small` 1.13×).
    /// ViT-B's long products split well where they may be cut by columns: two shards were
    /// no faster there (0.9–1.3× of one, within the machine's noise) for 447 MB more memory.
    /// Cut by rows only, every thread packs the whole weight, and two shards ran ViT-B's fp32
    /// step 1.02–1.22× faster (median 1.12, five rounds on an AMD EPYC Zen 3), with a peak of
    /// 3,015 MB against PyTorch's 3,082–3,181; with columns cut at blocks of 320 as well, two
    /// shards were still 0.98–1.15× of one (three rounds).
    public static func automaticBatchShards(config: ModelConfig, batchSize: Int, threads: Int,
                                            precision: Precision = .fp32,
                                            coarseColumnCuts: Bool = BLASRuntime.columnCutWidth != matrixMultiplyBlock) -> Int {
        guard threads > 1, batchSize >= threads else { return 1 }
        let extraBytes = (threads - 1) * ParameterTable(config: config).count * 4
        let budget = precision == .fp32 && coarseColumnCuts ? maximumExtraGradientBytesForCoarseCuts : maximumExtraGradientBytes
        return extraBytes <= budget ? threads : 1
    }

    /// The memory `automaticBatchShards` may spend on shard gradient buffers: 256 MiB.
    public static let maximumExtraGradientBytes = 256 << 20

    /// The same where fp32 products are cut by columns only coarsely: 512 MiB, which takes
    /// ViT-B at two threads (447 MB) and no larger model or thread count.
    public static let maximumExtraGradientBytesForCoarseCuts = 512 << 20

    /// Gradient buffers of shards 1, 2, ... (shard 0 adds into `gradients`).
    private var shardGradients: [FloatBuffer] = []
    /// The views of the current arena, one per shard, with their first sample, and
    /// each shard's loss of the last call.
    private var shardArenas: [(first: Int, arena: Activations)] = []
    private var shardLosses = FloatBuffer(count: 0)

    /// A model initialised as the reference, with random numbers from
    /// CounterRandom(seed, .initialisation, index: tensor number).
    /// The configuration must be valid (`ModelConfig.named` and `validate()` check it).
    public init(config: ModelConfig, seed: UInt64) {
        precondition(config.problem == nil, "invalid model configuration: \(config.problem ?? "")")
        self.config = config
        let table = ParameterTable(config: config)
        self.table = table
        parameters = FloatBuffer(count: table.count)
        gradients = FloatBuffer(count: table.count)
        encoderPositionEmbedding = FloatBuffer(sinCosPositionEmbedding(width: config.encoderWidth,
                                                                       gridSize: config.gridSize))
        decoderPositionEmbedding = FloatBuffer(sinCosPositionEmbedding(width: config.decoderWidth,
                                                                       gridSize: config.gridSize))
        encoderOffsets = (0..<config.encoderDepth).map { BlockOffsets(table: table, prefix: "blocks.\($0).") }
        decoderOffsets = (0..<config.decoderDepth).map { BlockOffsets(table: table, prefix: "decoder_blocks.\($0).") }
        func offset(_ name: String) -> Int { table.tensor(named: name)!.offset }
        clsToken = offset("cls_token")
        patchEmbedWeight = offset("patch_embed.proj.weight"); patchEmbedBias = offset("patch_embed.proj.bias")
        normWeight = offset("norm.weight"); normBias = offset("norm.bias")
        decoderEmbedWeight = offset("decoder_embed.weight"); decoderEmbedBias = offset("decoder_embed.bias")
        maskToken = offset("mask_token")
        decoderNormWeight = offset("decoder_norm.weight"); decoderNormBias = offset("decoder_norm.bias")
        decoderPredictionWeight = offset("decoder_pred.weight"); decoderPredictionBias = offset("decoder_pred.bias")
        let assignedWeights = Set([patchEmbedWeight, decoderEmbedWeight, decoderPredictionWeight]
                                  + (encoderOffsets + decoderOffsets).flatMap(\.linearWeights))
        rangesZeroedBeforeOverwriting = table.tensors.filter { !assignedWeights.contains($0.offset) }
            .map { $0.offset..<$0.offset + $0.count }
        initialiseParameters(parameters.pointer, table: table, seed: seed)
    }

    /// The prediction of the last call, [N, L, p·p·3] in patchify order (valid until
    /// the next call).
    public var prediction: UnsafePointer<Float> { UnsafePointer(activations?.prediction ?? empty.pointer) }
    /// The mask of the last call, [N, L], 1 = removed.
    public var mask: UnsafePointer<Float> { UnsafePointer(activations?.mask ?? empty.pointer) }

    /// One forward and backward pass. Parameter gradients are ADDED into `gradients`,
    /// scaled by `gradientScale` (callers zero them; accumulation passes 1/accumIter), or,
    /// with `overwritesGradients`, written over whatever `gradients` holds: the first
    /// micro-batch of a step, which then needs no zeroing pass over the gradients, and whose
    /// weight-gradient products write their results without reading the old ones back
    /// (the same values; measured 2–4 % of a bf16 ViT-B step, docs/PERFORMANCE.md).
    /// Returns the loss (unscaled). Allocations happen only when the batch shape changes.
    /// - Parameters:
    ///   - images: [N, 3, S, S], already normalised.
    ///   - noise: [N, L]; its ascending argsort decides the mask (small noise = kept).
    ///   - backwardProgress: called on this thread as the backward finishes tensors, with
    ///     an offset o of the flat layout: the gradients of elements o..<table.count get no
    ///     more adds in this call (the backward runs from the end of the layout to its
    ///     start, one block at a time), last with 0. With several batch shards it is called
    ///     once, with 0, after the shards' gradients are added.
    public func forwardBackward(images: UnsafePointer<Float>, noise: UnsafePointer<Float>, batchSize: Int,
                                maskRatio: Double, normPixLoss: Bool, gradientScale: Float = 1,
                                overwritesGradients: Bool = false,
                                backwardProgress: ((Int) -> Void)? = nil) -> Float {
        let a = prepare(batchSize: batchSize, maskRatio: maskRatio)
        return runShards(a, images: images, noise: noise, normPixLoss: normPixLoss, gradientScale: gradientScale,
                         overwritesGradients: overwritesGradients, progress: backwardProgress)
    }

    /// Forward only (evaluation); returns the loss. `prediction` and `mask` are updated.
    public func forward(images: UnsafePointer<Float>, noise: UnsafePointer<Float>, batchSize: Int,
                        maskRatio: Double, normPixLoss: Bool) -> Float {
        let a = prepare(batchSize: batchSize, maskRatio: maskRatio)
        return runShards(a, images: images, noise: noise, normPixLoss: normPixLoss, gradientScale: nil,
                         overwritesGradients: false, progress: nil)
    }

    /// The encoder's representation of each image, as k-NN and linear probing read it:
    /// every patch visible (no masking), then the final norm's class token (`globalPool`
    /// false, the official linear probe's default) or the mean of its patch tokens.
    /// Writes [N, encoderWidth] into `features`.
    public func encoderFeatures(images: UnsafePointer<Float>, batchSize: Int, globalPool: Bool,
                                into features: UnsafeMutablePointer<Float>) {
        let a = prepare(batchSize: batchSize, maskRatio: 0)
        // Equal noise keeps the patches in their order; with nothing masked it only orders them.
        let noise = FloatBuffer(count: batchSize * config.patchCount)
        runEncoder(a, products: currentProducts(), images: images, noise: noise.pointer)
        let width = config.encoderWidth, tokens = a.encoderTokens
        parallelFor(batchSize) { samples in
            for sample in samples {
                let rows = UnsafePointer(a.encoderNormed + sample * tokens * width)
                let output = features + sample * width
                if globalPool {
                    output.initialize(repeating: 0, count: width)
                    for token in 1..<tokens { addVectors(output, UnsafePointer(output), rows + token * width, count: width) }
                    let scale = 1 / Float(tokens - 1)
                    for index in 0..<width { output[index] *= scale }
                } else {
                    output.update(from: rows, count: width)
                }
            }
        }
    }

    /// The mean of the encoder's patch tokens before its final norm, [N, encoderWidth], every
    /// patch visible: what the official `VisionTransformer(global_pool=True)` hands to its
    /// `fc_norm` (`x[:, 1:, :].mean(dim=1)`), the linear probe's `--global-pool` features.
    public func encoderPatchMean(images: UnsafePointer<Float>, batchSize: Int, into features: UnsafeMutablePointer<Float>) {
        let a = prepare(batchSize: batchSize, maskRatio: 0)
        let noise = FloatBuffer(count: batchSize * config.patchCount)
        runEncoder(a, products: currentProducts(), images: images, noise: noise.pointer)
        let width = config.encoderWidth, tokens = a.encoderTokens
        let stream = a.encoderBlocks.last?.output ?? a.encoderBlocks.first?.input ?? a.encoderNormed
        parallelFor(batchSize) { samples in
            for sample in samples {
                let rows = UnsafePointer(stream + sample * tokens * width)
                let output = features + sample * width
                output.initialize(repeating: 0, count: width)
                for token in 1..<tokens { addVectors(output, UnsafePointer(output), rows + token * width, count: width) }
                let scale = 1 / Float(tokens - 1)
                for index in 0..<width { output[index] *= scale }
            }
        }
    }

    /// Runs the forward (and, given a gradient scale, the backward) of every shard of
    /// the batch, then adds the shards' gradients into `gradients` in shard order.
    /// Returns the loss over the whole batch.
    private func runShards(_ a: Activations, images: UnsafePointer<Float>, noise: UnsafePointer<Float>,
                           normPixLoss: Bool, gradientScale: Float?, overwritesGradients: Bool,
                           progress: ((Int) -> Void)?) -> Float {
        let shardCount = min(batchShards, a.batch)
        let products = currentProducts()
        guard shardCount > 1 else {
            let loss = runForward(a, products: products, images: images, noise: noise, normPixLoss: normPixLoss)
            if let gradientScale {
                runBackward(a, products: products, gradients: gradients.pointer, gradientScale: gradientScale,
                            overwrites: overwritesGradients, progress: progress)
            }
            return loss
        }
        if shardArenas.count != shardCount || shardArenas.first?.arena.storage !== a.storage {
            shardArenas = (0..<shardCount).map { shard in
                let first = a.batch * shard / shardCount, end = a.batch * (shard + 1) / shardCount
                return (first, a.shard(first: first, count: end - first, config: config))
            }
            shardLosses = FloatBuffer(count: shardCount)
        }
        if gradientScale != nil {
            shardGradients.removeLast(max(0, shardGradients.count - (shardCount - 1)))
            while shardGradients.count < shardCount - 1 { shardGradients.append(FloatBuffer(count: table.count)) }
        }
        // Every masked patch weighs the same in the batch's mean (each sample removes
        // the same number), so shard s's mean counts with its share of the samples.
        let imageFloats = config.channels * config.imageSize * config.imageSize
        let losses = shardLosses.pointer
        let batch = a.batch, arenas = shardArenas, buffers = shardGradients
        parallelFor(shardCount, minimumPerWorker: 1, rangesPerWorker: 1) { shards in
            for shard in shards {
                let (first, arena) = arenas[shard]
                losses[shard] = self.runForward(arena, products: products, images: images + first * imageFloats,
                                                noise: noise + first * self.config.patchCount, normPixLoss: normPixLoss)
                guard let gradientScale else { continue }
                let share = Float(Double(arena.batch) / Double(batch))
                // The other shards' buffers hold the last step's gradients: written over.
                let destination = shard == 0 ? self.gradients.pointer : buffers[shard - 1].pointer
                self.runBackward(arena, products: products, gradients: destination, gradientScale: gradientScale * share,
                                 overwrites: shard > 0 || overwritesGradients, progress: nil)
            }
        }
        if gradientScale != nil {
            let g = gradients.pointer
            parallelFor(table.count, minimumPerWorker: 1 << 16) { range in
                for buffer in buffers {
                    accumulate(g + range.lowerBound, buffer.pointer + range.lowerBound, count: range.count)
                }
            }
            progress?(0)
        }
        var loss = 0.0
        for (shard, (_, arena)) in arenas.enumerated() { loss += Double(losses[shard]) * Double(arena.batch) }
        return Float(loss / Double(batch))
    }

    /// The arena for this batch shape, reallocated only when the shape changes.
    private func prepare(batchSize: Int, maskRatio: Double) -> Activations {
        precondition(batchSize >= 1, "batch size must be at least 1")
        precondition(maskRatio >= 0 && maskRatio < 1, "mask ratio must be in [0, 1)")
        let kept = config.keptCount(maskRatio: maskRatio)
        precondition(kept >= 1, "mask ratio \(maskRatio) leaves no visible patch")
        if let current = activations, current.batch == batchSize, current.keptCount == kept { return current }
        activations = nil  // release the old arena (and its shard views) before allocating the new one
        shardArenas = []
        let fresh = Activations(config: config, batch: batchSize, keptCount: kept)
        activations = fresh
        return fresh
    }

    private func encoderShape(_ a: Activations) -> BlockShape {
        BlockShape(batch: a.batch, tokens: a.encoderTokens, width: config.encoderWidth,
                   heads: config.encoderHeads, hidden: config.encoderWidth * config.mlpRatio)
    }

    private func decoderShape(_ a: Activations) -> BlockShape {
        BlockShape(batch: a.batch, tokens: a.decoderTokens, width: config.decoderWidth,
                   heads: config.decoderHeads, hidden: config.decoderWidth * config.mlpRatio)
    }

    // MARK: - Forward

    /// Masking, patch embedding and the encoder with its final norm: `a.encoderNormed`
    /// holds [cls, visible tokens] per sample afterwards.
    private func runEncoder(_ a: Activations, products x: Products, images: UnsafePointer<Float>, noise: UnsafePointer<Float>) {
        let p = UnsafePointer(parameters.pointer)
        let batch = a.batch, kept = a.keptCount, patchCount = config.patchCount
        let width = config.encoderWidth, patchDimension = config.patchDimension
        let encoderTokens = a.encoderTokens

        // Masking, per sample.
        for sample in 0..<batch {
            let row = sample * patchCount
            randomMasking(shuffle: a.shuffle + row, restore: a.restore + row, mask: a.mask + row,
                          noise: noise + row, patchCount: patchCount, keptCount: kept)
            (a.keptPatches + sample * kept).update(from: a.shuffle + row, count: kept)
        }

        // Patch embedding of the visible patches only (the convolution acts on each
        // patch alone, so embedding all of them and then gathering gives the same rows).
        gatherPatches(output: a.patches, images: images, patchIndices: a.keptPatches, batch: batch, count: kept,
                      channels: config.channels, imageSize: config.imageSize, patchSize: config.patchSize)
        linearForward(output: a.patchTokens, input: a.patches, weight: p + patchEmbedWeight,
                      bias: p + patchEmbedBias, rows: batch * kept, inFeatures: patchDimension, outFeatures: width,
                      precision: x.precision, roundedWeight: x.weight(patchEmbedWeight))

        // Encoder input: [cls + pos[0], visible tokens + their pos] per sample.
        let stream = a.encoderBlocks.first?.input ?? a.encoderNormed
        let position = UnsafePointer(encoderPositionEmbedding.pointer)
        parallelFor(batch) { samples in
            for sample in samples {
                let destination = stream + sample * encoderTokens * width
                addVectors(destination, p + self.clsToken, position, count: width)
                for token in 0..<kept {
                    let patch = Int(a.keptPatches[sample * kept + token])
                    addVectors(destination + (1 + token) * width, a.patchTokens + (sample * kept + token) * width,
                               position + (1 + patch) * width, count: width)
                }
            }
        }

        let encoder = encoderShape(a)
        for (offsets, block) in zip(encoderOffsets, a.encoderBlocks) {
            blockForward(parameters: p, products: x, offsets: offsets, activations: block, shape: encoder)
        }
        let encoderOutput = a.encoderBlocks.last?.output ?? stream
        layerNormForward(output: a.encoderNormed, mean: a.encoderMean, reciprocalStd: a.encoderReciprocalStd,
                         input: encoderOutput, weight: p + normWeight, bias: p + normBias,
                         rows: batch * encoderTokens, width: width)
    }

    private func runForward(_ a: Activations, products x: Products, images: UnsafePointer<Float>,
                            noise: UnsafePointer<Float>, normPixLoss: Bool) -> Float {
        runEncoder(a, products: x, images: images, noise: noise)
        let p = UnsafePointer(parameters.pointer)
        let batch = a.batch, kept = a.keptCount, patchCount = config.patchCount
        let decoderWidth = config.decoderWidth
        let patchDimension = config.patchDimension
        let encoderTokens = a.encoderTokens, decoderTokens = a.decoderTokens
        let width = config.encoderWidth


        // Decoder input: embed, then [cls, each patch in original order: its visible
        // token or the mask token] + decoder pos.
        linearForward(output: a.decoderEmbedded, input: a.encoderNormed, weight: p + decoderEmbedWeight,
                      bias: p + decoderEmbedBias, rows: batch * encoderTokens, inFeatures: width,
                      outFeatures: decoderWidth, precision: x.precision, roundedWeight: x.weight(decoderEmbedWeight))
        let decoderStream = a.decoderBlocks.first?.input ?? a.decoderNormed
        let decoderPosition = UnsafePointer(decoderPositionEmbedding.pointer)
        parallelFor(batch) { samples in
            for sample in samples {
                let destination = decoderStream + sample * decoderTokens * decoderWidth
                let embedded = a.decoderEmbedded + sample * encoderTokens * decoderWidth
                addVectors(destination, embedded, decoderPosition, count: decoderWidth)
                for patch in 0..<patchCount {
                    let rank = Int(a.restore[sample * patchCount + patch])
                    let source = rank < kept ? UnsafePointer(embedded + (1 + rank) * decoderWidth) : p + self.maskToken
                    addVectors(destination + (1 + patch) * decoderWidth, source,
                               decoderPosition + (1 + patch) * decoderWidth, count: decoderWidth)
                }
            }
        }

        let decoder = decoderShape(a)
        for (offsets, block) in zip(decoderOffsets, a.decoderBlocks) {
            blockForward(parameters: p, products: x, offsets: offsets, activations: block, shape: decoder)
        }
        let decoderOutput = a.decoderBlocks.last?.output ?? decoderStream
        layerNormForward(output: a.decoderNormed, mean: a.decoderMean, reciprocalStd: a.decoderReciprocalStd,
                         input: decoderOutput, weight: p + decoderNormWeight, bias: p + decoderNormBias,
                         rows: batch * decoderTokens, width: decoderWidth)
        linearForward(output: a.fullPrediction, input: a.decoderNormed, weight: p + decoderPredictionWeight,
                      bias: p + decoderPredictionBias, rows: batch * decoderTokens, inFeatures: decoderWidth,
                      outFeatures: patchDimension, precision: x.precision,
                      roundedWeight: x.weight(decoderPredictionWeight))
        for sample in 0..<batch {  // drop the cls position
            (a.prediction + sample * patchCount * patchDimension)
                .update(from: a.fullPrediction + (sample * decoderTokens + 1) * patchDimension,
                        count: patchCount * patchDimension)
        }

        // Loss on the removed patches.
        patchify(output: a.target, images: images, batch: batch, channels: config.channels,
                 imageSize: config.imageSize, patchSize: config.patchSize)
        if normPixLoss { normalizePatches(a.target, rows: batch * patchCount, width: patchDimension) }
        return maskedMSELoss(prediction: a.prediction, target: a.target, mask: a.mask,
                             batch: batch, patches: patchCount, width: patchDimension)
    }

    // MARK: - Backward

    /// Adds the parameter gradients of the batch in `a`, times `gradientScale`, into `g` (or
    /// writes them over `g`'s contents when `overwrites`); tells `progress` where the finished
    /// tail of the layout starts after each stage.
    private func runBackward(_ a: Activations, products x: Products, gradients g: UnsafeMutablePointer<Float>,
                             gradientScale: Float, overwrites: Bool, progress: ((Int) -> Void)?) {
        // Only the linear layers' weights are assigned; every other gradient adds up from 0.
        if overwrites {
            for range in rangesZeroedBeforeOverwriting { (g + range.lowerBound).update(repeating: 0, count: range.count) }
        }
        let p = UnsafePointer(parameters.pointer)
        let batch = a.batch, kept = a.keptCount, patchCount = config.patchCount
        let width = config.encoderWidth, decoderWidth = config.decoderWidth
        let patchDimension = config.patchDimension
        let encoderTokens = a.encoderTokens, decoderTokens = a.decoderTokens
        let d = a.scratch

        // Loss → prediction (the cls row gets no gradient).
        maskedMSELossBackward(predictionGradient: a.predictionGradient, prediction: a.prediction, target: a.target,
                              mask: a.mask, batch: batch, patches: patchCount, width: patchDimension,
                              scale: gradientScale)
        for sample in 0..<batch {
            let destination = a.fullPredictionGradient + sample * decoderTokens * patchDimension
            destination.update(repeating: 0, count: patchDimension)
            (destination + patchDimension).update(from: a.predictionGradient + sample * patchCount * patchDimension,
                                                  count: patchCount * patchDimension)
        }

        // Decoder head and norm.
        linearBackward(inputGradient: d.norm, weightGradient: g + decoderPredictionWeight,
                       biasGradient: g + decoderPredictionBias, outputGradient: a.fullPredictionGradient,
                       input: a.decoderNormed, weight: p + decoderPredictionWeight,
                       rows: batch * decoderTokens, inFeatures: decoderWidth, outFeatures: patchDimension,
                       precision: x.precision, roundedWeight: x.weight(decoderPredictionWeight),
                       assignsWeightGradient: overwrites)
        let decoderStream = a.decoderBlocks.first?.input ?? a.decoderNormed
        let decoderOutput = a.decoderBlocks.last?.output ?? decoderStream
        layerNormBackward(inputGradient: d.stream, weightGradient: g + decoderNormWeight,
                          biasGradient: g + decoderNormBias, outputGradient: d.norm, input: decoderOutput,
                          mean: a.decoderMean, reciprocalStd: a.decoderReciprocalStd, weight: p + decoderNormWeight,
                          residualGradient: nil, rows: batch * decoderTokens, width: decoderWidth)
        progress?(decoderNormWeight)
        let decoder = decoderShape(a)
        for index in decoderOffsets.indices.reversed() {  // a reversed range allocates nothing
            blockBackward(parameters: p, products: x, gradients: g, offsets: decoderOffsets[index], activations: a.decoderBlocks[index],
                          scratch: d, shape: decoder, assignsWeightGradients: overwrites)
            progress?(decoderOffsets[index].norm1Weight)
        }

        // Decoder input → embedded tokens and the mask token (un-gather).
        let embeddedGradient = a.embeddedGradient
        parallelFor(batch) { samples in
            for sample in samples {
                let source = d.stream + sample * decoderTokens * decoderWidth
                let destination = embeddedGradient + sample * encoderTokens * decoderWidth
                destination.update(from: source, count: decoderWidth)
                for patch in 0..<patchCount {
                    let rank = Int(a.restore[sample * patchCount + patch])
                    if rank < kept {
                        (destination + (1 + rank) * decoderWidth)
                            .update(from: source + (1 + patch) * decoderWidth, count: decoderWidth)
                    }
                }
            }
        }
        // The mask token's gradient sums over every removed position of every sample;
        // a serial pass keeps the sum order fixed.
        for sample in 0..<batch {
            for patch in 0..<patchCount where Int(a.restore[sample * patchCount + patch]) >= kept {
                accumulate(g + maskToken, d.stream + (sample * decoderTokens + 1 + patch) * decoderWidth,
                           count: decoderWidth)
            }
        }
        linearBackward(inputGradient: d.norm, weightGradient: g + decoderEmbedWeight,
                       biasGradient: g + decoderEmbedBias, outputGradient: embeddedGradient, input: a.encoderNormed,
                       weight: p + decoderEmbedWeight, rows: batch * encoderTokens, inFeatures: width,
                       outFeatures: decoderWidth, precision: x.precision, roundedWeight: x.weight(decoderEmbedWeight),
                       assignsWeightGradient: overwrites)
        progress?(decoderEmbedWeight)

        // Encoder norm and blocks.
        let stream = a.encoderBlocks.first?.input ?? a.encoderNormed
        let encoderOutput = a.encoderBlocks.last?.output ?? stream
        layerNormBackward(inputGradient: d.stream, weightGradient: g + normWeight, biasGradient: g + normBias,
                          outputGradient: d.norm, input: encoderOutput, mean: a.encoderMean,
                          reciprocalStd: a.encoderReciprocalStd, weight: p + normWeight, residualGradient: nil,
                          rows: batch * encoderTokens, width: width)
        progress?(normWeight)
        let encoder = encoderShape(a)
        for index in encoderOffsets.indices.reversed() {
            blockBackward(parameters: p, products: x, gradients: g, offsets: encoderOffsets[index], activations: a.encoderBlocks[index],
                          scratch: d, shape: encoder, assignsWeightGradients: overwrites)
            progress?(encoderOffsets[index].norm1Weight)
        }

        // Encoder input → cls token and the patch embedding.
        for sample in 0..<batch {
            accumulate(g + clsToken, d.stream + sample * encoderTokens * width, count: width)
        }
        let tokenGradient = d.norm  // [batch·keep, D], contiguous rows for one product
        parallelFor(batch) { samples in
            for sample in samples {
                (tokenGradient + sample * kept * width)
                    .update(from: d.stream + (sample * encoderTokens + 1) * width, count: kept * width)
            }
        }
        linearBackward(inputGradient: nil, weightGradient: g + patchEmbedWeight, biasGradient: g + patchEmbedBias,
                       outputGradient: tokenGradient, input: a.patches, weight: p + patchEmbedWeight,
                       rows: batch * kept, inFeatures: patchDimension, outFeatures: width,
                       precision: x.precision, roundedWeight: x.weight(patchEmbedWeight),
                       assignsWeightGradient: overwrites)
        progress?(0)
    }
}
