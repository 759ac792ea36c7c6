import Kernels

/// Every activation, saved tensor and gradient scratch of one forward/backward at
/// one batch shape, carved out of a single allocation that is made when the shape
/// (batch size, visible patch count) changes and reused otherwise.
///
/// Every piece is a whole number of per-sample blocks laid out sample after sample,
/// so the samples `first..<first + count` of every piece are one contiguous run:
/// `shard(first:count:)` returns the arena of those samples alone, a view into this
/// one, which the model runs like a smaller batch (see `MAEModel.batchShards`).
final class Activations {
    /// Samples in this arena (a shard's own count, for a view).
    let batch: Int
    let keptCount: Int
    /// Tokens in the encoder (visible patches + cls) and the decoder (all patches + cls).
    let encoderTokens: Int, decoderTokens: Int

    /// The allocation, shared with the arena a view was cut from.
    let storage: FloatBuffer
    private let indexStorage: IndexStorage
    let shuffle: UnsafeMutablePointer<Int32>      // [batch, L] argsort(noise)
    let restore: UnsafeMutablePointer<Int32>      // [batch, L] argsort(shuffle)
    let keptPatches: UnsafeMutablePointer<Int32>  // [batch, keep] = shuffle[:, :keep]

    let mask: UnsafeMutablePointer<Float>              // [batch, L], 1 = removed
    let patches: UnsafeMutablePointer<Float>           // [batch·keep, C·p·p], (c, i, j) order
    let patchTokens: UnsafeMutablePointer<Float>       // [batch·keep, D]
    let encoderBlocks: [BlockActivations]              // streams [batch·Te, D]
    let encoderNormed: UnsafeMutablePointer<Float>     // [batch·Te, D]
    let encoderMean: UnsafeMutablePointer<Float>       // [batch·Te]
    let encoderReciprocalStd: UnsafeMutablePointer<Float>
    let decoderEmbedded: UnsafeMutablePointer<Float>   // [batch·Te, Dd]
    let decoderBlocks: [BlockActivations]              // streams [batch·Td, Dd]
    let decoderNormed: UnsafeMutablePointer<Float>     // [batch·Td, Dd]
    let decoderMean: UnsafeMutablePointer<Float>       // [batch·Td]
    let decoderReciprocalStd: UnsafeMutablePointer<Float>
    let fullPrediction: UnsafeMutablePointer<Float>    // [batch·Td, P], cls row included
    let prediction: UnsafeMutablePointer<Float>        // [batch, L, P]
    let target: UnsafeMutablePointer<Float>            // [batch, L, P]

    // Backward scratch.
    let scratch: BlockScratch                          // sized for the larger stack
    let predictionGradient: UnsafeMutablePointer<Float>      // [batch, L, P]
    let fullPredictionGradient: UnsafeMutablePointer<Float>  // [batch·Td, P]
    let embeddedGradient: UnsafeMutablePointer<Float>        // [batch·Te, Dd]

    /// A whole arena for `batch` samples.
    convenience init(config: ModelConfig, batch: Int, keptCount: Int) {
        self.init(config: config, keptCount: keptCount, totalBatch: batch, samples: 0..<batch,
                  storage: nil, indexStorage: nil)
    }

    /// The arena of samples `first..<first + count` alone: a view that shares this
    /// arena's memory.
    func shard(first: Int, count: Int, config: ModelConfig) -> Activations {
        precondition(first >= 0 && count >= 1 && first + count <= batch && batch == totalBatch,
                     "a shard is cut from a whole arena, within its samples")
        return Activations(config: config, keptCount: keptCount, totalBatch: totalBatch,
                           samples: first..<(first + count), storage: storage, indexStorage: indexStorage)
    }

    /// Samples of the whole arena this one belongs to.
    private let totalBatch: Int

    private init(config: ModelConfig, keptCount: Int, totalBatch: Int, samples: Range<Int>,
                 storage existing: FloatBuffer?, indexStorage existingIndices: IndexStorage?) {
        batch = samples.count
        self.totalBatch = totalBatch
        self.keptCount = keptCount
        let patchCount = config.patchCount
        encoderTokens = keptCount + 1
        decoderTokens = patchCount + 1
        let width = config.encoderWidth, decoderWidth = config.decoderWidth
        let patchDimension = config.patchDimension
        let first = samples.lowerBound

        // Two passes over the same carving when allocating (the first only measures),
        // one over the existing allocation for a view. Each piece holds `perSample`
        // floats for every sample of the whole arena; this arena's samples start
        // `first · perSample` into it.
        var total = 0
        var base: UnsafeMutablePointer<Float>? = existing?.pointer
        func take(_ perSample: Int) -> UnsafeMutablePointer<Float> {
            let start = total
            total += (perSample * totalBatch + 15) / 16 * 16  // 64-byte aligned pieces
            return base.map { $0 + start + first * perSample } ?? UnsafeMutablePointer(bitPattern: 64)!
        }
        func blocks(depth: Int, tokens: Int, width: Int, heads: Int) -> [BlockActivations] {
            let hidden = width * config.mlpRatio
            var result: [BlockActivations] = []
            var input = take(tokens * width)
            for _ in 0..<depth {
                let block = BlockActivations(
                    input: input, norm1: take(tokens * width), mean1: take(tokens), reciprocalStd1: take(tokens),
                    qkv: take(tokens * 3 * width), probabilities: take(heads * tokens * tokens),
                    attention: take(tokens * width), middle: take(tokens * width), norm2: take(tokens * width),
                    mean2: take(tokens), reciprocalStd2: take(tokens), hidden: take(tokens * hidden),
                    activated: take(tokens * hidden), output: take(tokens * width))
                result.append(block)
                input = block.output
            }
            return result
        }
        var pieces: (mask: UnsafeMutablePointer<Float>, patches: UnsafeMutablePointer<Float>,
                     patchTokens: UnsafeMutablePointer<Float>, encoderBlocks: [BlockActivations],
                     encoderNormed: UnsafeMutablePointer<Float>, encoderMean: UnsafeMutablePointer<Float>,
                     encoderReciprocalStd: UnsafeMutablePointer<Float>, decoderEmbedded: UnsafeMutablePointer<Float>,
                     decoderBlocks: [BlockActivations], decoderNormed: UnsafeMutablePointer<Float>,
                     decoderMean: UnsafeMutablePointer<Float>, decoderReciprocalStd: UnsafeMutablePointer<Float>,
                     fullPrediction: UnsafeMutablePointer<Float>, prediction: UnsafeMutablePointer<Float>,
                     target: UnsafeMutablePointer<Float>, scratch: BlockScratch,
                     predictionGradient: UnsafeMutablePointer<Float>,
                     fullPredictionGradient: UnsafeMutablePointer<Float>,
                     embeddedGradient: UnsafeMutablePointer<Float>)? = nil
        let streamPerSample = max(encoderTokens * width, decoderTokens * decoderWidth)
        var allocation = existing
        for pass in 0..<(existing == nil ? 2 : 1) {
            total = 0
            pieces = (
                mask: take(patchCount),
                patches: take(keptCount * patchDimension),
                patchTokens: take(keptCount * width),
                encoderBlocks: blocks(depth: config.encoderDepth, tokens: encoderTokens, width: width,
                                      heads: config.encoderHeads),
                encoderNormed: take(encoderTokens * width),
                encoderMean: take(encoderTokens), encoderReciprocalStd: take(encoderTokens),
                decoderEmbedded: take(encoderTokens * decoderWidth),
                decoderBlocks: blocks(depth: config.decoderDepth, tokens: decoderTokens, width: decoderWidth,
                                      heads: config.decoderHeads),
                decoderNormed: take(decoderTokens * decoderWidth),
                decoderMean: take(decoderTokens), decoderReciprocalStd: take(decoderTokens),
                fullPrediction: take(decoderTokens * patchDimension),
                prediction: take(patchCount * patchDimension),
                target: take(patchCount * patchDimension),
                scratch: BlockScratch(stream: take(streamPerSample), norm: take(streamPerSample),
                                      qkv: take(3 * streamPerSample), attention: take(streamPerSample),
                                      hidden: take(config.mlpRatio * streamPerSample)),
                predictionGradient: take(patchCount * patchDimension),
                fullPredictionGradient: take(decoderTokens * patchDimension),
                embeddedGradient: take(encoderTokens * decoderWidth))
            if pass == 0 && existing == nil {
                allocation = FloatBuffer(count: total)
                base = allocation!.pointer
            }
        }
        storage = allocation!
        let p = pieces!
        mask = p.mask; patches = p.patches; patchTokens = p.patchTokens; encoderBlocks = p.encoderBlocks
        encoderNormed = p.encoderNormed; encoderMean = p.encoderMean; encoderReciprocalStd = p.encoderReciprocalStd
        decoderEmbedded = p.decoderEmbedded; decoderBlocks = p.decoderBlocks; decoderNormed = p.decoderNormed
        decoderMean = p.decoderMean; decoderReciprocalStd = p.decoderReciprocalStd
        fullPrediction = p.fullPrediction; prediction = p.prediction; target = p.target; scratch = p.scratch
        predictionGradient = p.predictionGradient; fullPredictionGradient = p.fullPredictionGradient
        embeddedGradient = p.embeddedGradient

        indexStorage = existingIndices ?? IndexStorage(count: totalBatch * (2 * patchCount + keptCount))
        shuffle = indexStorage.pointer + first * patchCount
        restore = indexStorage.pointer + totalBatch * patchCount + first * patchCount
        keptPatches = indexStorage.pointer + 2 * totalBatch * patchCount + first * keptCount
    }
}

/// The arena's integer part (mask permutations), owned by the whole arena and
/// shared with its views.
private final class IndexStorage {
    let pointer: UnsafeMutablePointer<Int32>
    init(count: Int) { pointer = .allocate(capacity: max(1, count)) }
    deinit { pointer.deallocate() }
}
