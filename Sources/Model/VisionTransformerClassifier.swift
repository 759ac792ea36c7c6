import Kernels

/// The fine-tuning model of the official recipe (`models_vit.VisionTransformer`, timm
/// 0.3.2's ViT with MAE's global pooling), with hand-written forward and backward passes:
/// patch embedding of every patch, the class token, a learnt position embedding
/// (`pos_embed`, a parameter here, unlike the MAE's fixed table: it starts as the
/// pretrained checkpoint's sin-cos table and is fine-tuned), the transformer blocks with
/// drop path, then either
/// - `globalPool` true (the official default): the mean of the patch tokens, then `fc_norm`
///   (the encoder's final `norm` is removed, as `models_vit` deletes it), or
/// - `globalPool` false (`--cls-token`): `norm`, then the class token,
/// and the linear `head`. The loss is soft-target cross-entropy.
///
/// All trainable tensors live in one flat `parameters` buffer laid out by `table`
/// (official names, order and shapes); `gradients` has the same layout. One call at a time.
public final class VisionTransformerClassifier {
    public let config: ModelConfig
    public let numberOfClasses: Int
    /// Mean of the patch tokens + fc_norm (true) or the class token after norm (false).
    public let globalPool: Bool
    /// The drop-path rate of each block (linear over depth up to the `dropPath` given).
    public let dropPathRates: [Double]
    public let table: ParameterTable
    /// table.count floats.
    public let parameters: FloatBuffer
    /// Same layout as `parameters`; `forwardBackward` adds into it.
    public let gradients: FloatBuffer
    /// The seed of the initialisation (`resetHeadWeight` draws the head from it again).
    public let seed: UInt64

    let blockOffsets: [BlockOffsets]
    let clsToken, positionEmbedding, patchEmbedWeight, patchEmbedBias: Int
    /// fc_norm with global pooling, norm without.
    let headNormWeight, headNormBias, headWeight, headBias: Int
    private var activations: ClassifierActivations?

    /// The official name of the norm before the head: "fc_norm" with global pooling, "norm" without.
    public static func headNormName(globalPool: Bool) -> String { globalPool ? "fc_norm" : "norm" }

    /// The classifier's tensors in the official `state_dict` order: cls_token, pos_embed,
    /// patch_embed.proj, blocks.N, [norm], head, [fc_norm] (timm registers `fc_norm` last).
    public static func parameterTable(config: ModelConfig, numberOfClasses: Int, globalPool: Bool) -> ParameterTable {
        let width = config.encoderWidth
        var entries = ParameterTable.encoderEntries(config: config, positionEmbedding: true)
        if !globalPool { entries += [("norm.weight", [width]), ("norm.bias", [width])] }
        entries += [("head.weight", [numberOfClasses, width]), ("head.bias", [numberOfClasses])]
        if globalPool { entries += [("fc_norm.weight", [width]), ("fc_norm.bias", [width])] }
        return ParameterTable(entries: entries)
    }

    /// A classifier initialised as timm's ViT with the fine-tuning head: cls_token and
    /// pos_embed trunc_normal(0.02), Linear weights trunc_normal(0.02) with zero biases,
    /// LayerNorms 1 and 0, the patch-embedding convolution PyTorch's default
    /// U(±1/sqrt(fan_in)), and `head.weight` trunc_normal(2e-5) as `main_finetune.py` resets it.
    /// Random numbers from CounterRandom(seed, .initialisation, index: tensor number).
    /// - Parameters:
    ///   - dropPath: the last block's drop-path rate (`--drop-path`, 0.1 for ViT-B); 0 for none.
    public init(config: ModelConfig, numberOfClasses: Int, globalPool: Bool, dropPath: Double, seed: UInt64) {
        precondition(config.problem == nil, "invalid model configuration: \(config.problem ?? "")")
        precondition(numberOfClasses >= 1, "a classifier needs at least one class")
        precondition(dropPath >= 0 && dropPath < 1, "drop path must be in [0, 1)")
        self.config = config
        self.numberOfClasses = numberOfClasses
        self.globalPool = globalPool
        self.seed = seed
        dropPathRates = Model.dropPathRates(dropPath: dropPath, depth: config.encoderDepth)
        let table = Self.parameterTable(config: config, numberOfClasses: numberOfClasses, globalPool: globalPool)
        self.table = table
        parameters = FloatBuffer(count: table.count)
        gradients = FloatBuffer(count: table.count)
        blockOffsets = (0..<config.encoderDepth).map { BlockOffsets(table: table, prefix: "blocks.\($0).") }
        func offset(_ name: String) -> Int { table.tensor(named: name)!.offset }
        clsToken = offset("cls_token"); positionEmbedding = offset("pos_embed")
        patchEmbedWeight = offset("patch_embed.proj.weight"); patchEmbedBias = offset("patch_embed.proj.bias")
        let normName = Self.headNormName(globalPool: globalPool)
        headNormWeight = offset(normName + ".weight"); headNormBias = offset(normName + ".bias")
        headWeight = offset("head.weight"); headBias = offset("head.bias")
        initialiseClassifierParameters(parameters.pointer, table: table, seed: seed)
    }

    /// The logits of the last call, [batch, numberOfClasses] (valid until the next call).
    public var lastLogits: UnsafePointer<Float> {
        precondition(activations != nil, "no forward pass has run yet")
        return UnsafePointer(activations!.logits)
    }

    /// One forward and backward pass on soft targets. Parameter gradients are ADDED into
    /// `gradients`, scaled by `gradientScale` (callers zero them; accumulation passes
    /// 1/accumIter). Returns the loss (unscaled); `lastLogits` holds the logits.
    /// Allocations happen only when the batch size changes.
    /// - Parameters:
    ///   - images: [batch, 3, S, S], already normalised.
    ///   - targets: [batch, numberOfClasses], each row a distribution (one-hot, label-smoothed,
    ///     or mixed by Mixup/CutMix).
    ///   - dropPath: which random numbers drop branches; nil runs without drop path (as does
    ///     a model built with drop path 0).
    public func forwardBackward(images: UnsafePointer<Float>, targets: UnsafePointer<Float>, batchSize: Int,
                                gradientScale: Float = 1, dropPath: DropPathKey?) -> Float {
        let a = prepare(batchSize: batchSize)
        guard let dropPath, dropPathRates.contains(where: { $0 > 0 }) else {
            return run(a, images: images, targets: targets, gradientScale: gradientScale, dropPathMasks: nil)
        }
        precondition(dropPath.sampleIndices.count == batchSize, "one drop-path key per sample")
        fillDropPathMasks(a.dropPathMasks, rates: dropPathRates, key: dropPath)
        return run(a, images: images, targets: targets, gradientScale: gradientScale,
                   dropPathMasks: UnsafePointer(a.dropPathMasks))
    }

    /// `forwardBackward` with given drop-path masks [depth, 2, batchSize] (1 kept, 0 dropped),
    /// for comparing with PyTorch given the same masks.
    func forwardBackward(images: UnsafePointer<Float>, targets: UnsafePointer<Float>, batchSize: Int,
                         dropPathMasks: [Float]) -> Float {
        precondition(dropPathMasks.count == config.encoderDepth * 2 * batchSize, "masks are [depth, 2, batch]")
        let a = prepare(batchSize: batchSize)
        a.dropPathMasks.update(from: dropPathMasks, count: dropPathMasks.count)
        return run(a, images: images, targets: targets, gradientScale: 1, dropPathMasks: UnsafePointer(a.dropPathMasks))
    }

    /// Forward, loss and backward on the arena `a`.
    private func run(_ a: ClassifierActivations, images: UnsafePointer<Float>, targets: UnsafePointer<Float>,
                     gradientScale: Float, dropPathMasks masks: UnsafePointer<Float>?) -> Float {
        let batchSize = a.batch
        runForward(a, images: images, dropPathMasks: masks)
        let loss = softTargetCrossEntropy(logits: a.logits, targets: targets, batch: batchSize, classes: numberOfClasses)
        softTargetCrossEntropyBackward(logitsGradient: a.logitsGradient, logits: a.logits, targets: targets,
                                       batch: batchSize, classes: numberOfClasses, scale: gradientScale)
        runBackward(a, dropPathMasks: masks)
        return loss
    }

    /// The logits of `images` without drop path (evaluation), [batchSize, numberOfClasses].
    public func logits(images: UnsafePointer<Float>, batchSize: Int) -> [Float] {
        let a = prepare(batchSize: batchSize)
        runForward(a, images: images, dropPathMasks: nil)
        return Array(UnsafeBufferPointer(start: a.logits, count: batchSize * numberOfClasses))
    }

    /// The head's input without drop path, [batchSize, encoderWidth]: fc_norm of the mean
    /// patch token (global pooling) or the class token after norm. This is what the official
    /// linear probe (`main_linprobe.py`) feeds its BatchNorm and head, the encoder frozen;
    /// there `fc_norm` keeps its initialisation (weight 1, bias 0) as the checkpoint lacks it.
    public func features(images: UnsafePointer<Float>, batchSize: Int) -> [Float] {
        let a = prepare(batchSize: batchSize)
        runForward(a, images: images, dropPathMasks: nil)
        return Array(UnsafeBufferPointer(start: a.features, count: batchSize * config.encoderWidth))
    }

    /// The arena for this batch size, reallocated only when it changes.
    private func prepare(batchSize: Int) -> ClassifierActivations {
        precondition(batchSize >= 1, "batch size must be at least 1")
        if let current = activations, current.batch == batchSize { return current }
        activations = nil  // release the old arena before allocating the new one
        let fresh = ClassifierActivations(config: config, classes: numberOfClasses, batch: batchSize)
        activations = fresh
        return fresh
    }

    private func blockShape(_ a: ClassifierActivations) -> BlockShape {
        BlockShape(batch: a.batch, tokens: a.tokens, width: config.encoderWidth,
                   heads: config.encoderHeads, hidden: config.encoderWidth * config.mlpRatio)
    }

    /// Drop path of block `block` from the [depth, 2, batch] mask table; nil (the plain
    /// block) without masks or where the block's rate is 0, as timm's `nn.Identity`.
    private func blockDropPath(_ masks: UnsafePointer<Float>?, block: Int, batch: Int) -> BlockDropPath? {
        guard let masks, dropPathRates[block] > 0 else { return nil }
        return BlockDropPath(attention: masks + 2 * block * batch, mlp: masks + (2 * block + 1) * batch,
                              keep: Float(1 - dropPathRates[block]))
    }

    // MARK: - Forward

    private func runForward(_ a: ClassifierActivations, images: UnsafePointer<Float>,
                            dropPathMasks: UnsafePointer<Float>?) {
        let p = UnsafePointer(parameters.pointer)
        let batch = a.batch, patchCount = config.patchCount, tokens = a.tokens
        let width = config.encoderWidth

        gatherPatches(output: a.patches, images: images, patchIndices: a.patchIndices, batch: batch, count: patchCount,
                      channels: config.channels, imageSize: config.imageSize, patchSize: config.patchSize)
        linearForward(output: a.patchTokens, input: a.patches, weight: p + patchEmbedWeight, bias: p + patchEmbedBias,
                      rows: batch * patchCount, inFeatures: config.patchDimension, outFeatures: width)

        // [cls, patch tokens] + pos_embed, per sample.
        let stream = a.stream, position = p + positionEmbedding, cls = p + clsToken
        parallelFor(batch) { samples in
            for sample in samples {
                let destination = stream + sample * tokens * width
                addVectors(destination, cls, position, count: width)
                addVectors(destination + width, a.patchTokens + sample * patchCount * width, position + width,
                           count: patchCount * width)
            }
        }

        let shape = blockShape(a)
        for (index, offsets) in blockOffsets.enumerated() {
            blockForward(parameters: p, products: .fp32, offsets: offsets, activations: a.blocks[index], shape: shape,
                         dropPath: blockDropPath(dropPathMasks, block: index, batch: batch))
        }

        // Pooling: the mean of the patch tokens (sum, then divide, as torch's mean), or the class token.
        let output = UnsafePointer(a.encoderOutput)
        parallelFor(batch) { samples in
            for sample in samples {
                let rows = output + sample * tokens * width
                let pooled = a.pooled + sample * width
                if self.globalPool {
                    pooled.update(from: rows + width, count: width)
                    for token in 2..<tokens { accumulate(pooled, rows + token * width, count: width) }
                    let count = Float(tokens - 1)
                    for index in 0..<width { pooled[index] /= count }
                } else {
                    pooled.update(from: rows, count: width)
                }
            }
        }
        layerNormForward(output: a.features, mean: a.featureMean, reciprocalStd: a.featureReciprocalStd,
                         input: a.pooled, weight: p + headNormWeight, bias: p + headNormBias, rows: batch, width: width)
        linearForward(output: a.logits, input: a.features, weight: p + headWeight, bias: p + headBias,
                      rows: batch, inFeatures: width, outFeatures: numberOfClasses)
    }

    // MARK: - Backward

    /// Adds the parameter gradients of `a.logitsGradient` (already scaled) into `gradients`.
    private func runBackward(_ a: ClassifierActivations, dropPathMasks: UnsafePointer<Float>?) {
        let p = UnsafePointer(parameters.pointer), g = gradients.pointer
        let batch = a.batch, patchCount = config.patchCount, tokens = a.tokens
        let width = config.encoderWidth
        let d = a.scratch

        linearBackward(inputGradient: a.featureGradient, weightGradient: g + headWeight, biasGradient: g + headBias,
                       outputGradient: a.logitsGradient, input: a.features, weight: p + headWeight,
                       rows: batch, inFeatures: width, outFeatures: numberOfClasses)
        layerNormBackward(inputGradient: a.pooledGradient, weightGradient: g + headNormWeight,
                          biasGradient: g + headNormBias, outputGradient: a.featureGradient, input: a.pooled,
                          mean: a.featureMean, reciprocalStd: a.featureReciprocalStd, weight: p + headNormWeight,
                          residualGradient: nil, rows: batch, width: width)

        // Pooling → stream: each patch token gets 1/(T−1) of the pooled gradient (the class
        // token none), or the class token all of it (the patch tokens none).
        let pooledGradient = UnsafePointer(a.pooledGradient)
        parallelFor(batch) { samples in
            for sample in samples {
                let rows = d.stream + sample * tokens * width
                let source = pooledGradient + sample * width
                if self.globalPool {
                    rows.update(repeating: 0, count: width)
                    let share = 1 / Float(tokens - 1)
                    for token in 1..<tokens {
                        let row = rows + token * width
                        for index in 0..<width { row[index] = source[index] * share }
                    }
                } else {
                    rows.update(from: source, count: width)
                    (rows + width).update(repeating: 0, count: (tokens - 1) * width)
                }
            }
        }

        let shape = blockShape(a)
        for index in blockOffsets.indices.reversed() {
            blockBackward(parameters: p, products: .fp32, gradients: g, offsets: blockOffsets[index], activations: a.blocks[index],
                          scratch: d, shape: shape, dropPath: blockDropPath(dropPathMasks, block: index, batch: batch))
        }

        // Stream → cls token, pos_embed (summed over the batch in sample order) and the patch embedding.
        for sample in 0..<batch {
            let rows = d.stream + sample * tokens * width
            accumulate(g + clsToken, rows, count: width)
            accumulate(g + positionEmbedding, rows, count: tokens * width)
        }
        let tokenGradient = d.norm  // [batch·L, D], contiguous rows for one product
        parallelFor(batch) { samples in
            for sample in samples {
                (tokenGradient + sample * patchCount * width)
                    .update(from: d.stream + (sample * tokens + 1) * width, count: patchCount * width)
            }
        }
        linearBackward(inputGradient: nil, weightGradient: g + patchEmbedWeight, biasGradient: g + patchEmbedBias,
                       outputGradient: tokenGradient, input: a.patches, weight: p + patchEmbedWeight,
                       rows: batch * patchCount, inFeatures: config.patchDimension, outFeatures: width)
    }
}
