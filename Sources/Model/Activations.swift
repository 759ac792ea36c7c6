import Kernels

/// Every activation, saved tensor and gradient scratch of one forward/backward at
/// one batch shape, carved out of a single allocation that is made when the shape
/// (batch size, visible patch count) changes and reused otherwise.
final class Activations {
    let batch: Int
    let keptCount: Int
    /// Tokens in the encoder (visible patches + cls) and the decoder (all patches + cls).
    let encoderTokens: Int, decoderTokens: Int

    let storage: FloatBuffer
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

    init(config: ModelConfig, batch: Int, keptCount: Int) {
        self.batch = batch
        self.keptCount = keptCount
        let patchCount = config.patchCount
        encoderTokens = keptCount + 1
        decoderTokens = patchCount + 1
        let width = config.encoderWidth, decoderWidth = config.decoderWidth
        let encoderRows = batch * encoderTokens, decoderRows = batch * decoderTokens
        let patchDimension = config.patchDimension

        // Two passes over the same carving: the first only measures.
        var total = 0
        var base: UnsafeMutablePointer<Float>? = nil
        func take(_ count: Int) -> UnsafeMutablePointer<Float> {
            let start = total
            total += (count + 15) / 16 * 16  // 64-byte aligned pieces
            return base.map { $0 + start } ?? UnsafeMutablePointer(bitPattern: 64)!
        }
        func blocks(depth: Int, rows: Int, width: Int, heads: Int, tokens: Int) -> [BlockActivations] {
            let hidden = width * config.mlpRatio
            var result: [BlockActivations] = []
            var input = take(rows * width)
            for _ in 0..<depth {
                let block = BlockActivations(
                    input: input, norm1: take(rows * width), mean1: take(rows), reciprocalStd1: take(rows),
                    qkv: take(rows * 3 * width), probabilities: take(batch * heads * tokens * tokens),
                    attention: take(rows * width), middle: take(rows * width), norm2: take(rows * width),
                    mean2: take(rows), reciprocalStd2: take(rows), hidden: take(rows * hidden),
                    activated: take(rows * hidden), output: take(rows * width))
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
        let streamCount = max(encoderRows * width, decoderRows * decoderWidth)
        let probabilityCount = max(batch * config.encoderHeads * encoderTokens * encoderTokens,
                                   batch * config.decoderHeads * decoderTokens * decoderTokens)
        var allocation: FloatBuffer?
        for pass in 0..<2 {
            total = 0
            pieces = (
                mask: take(batch * patchCount),
                patches: take(batch * keptCount * patchDimension),
                patchTokens: take(batch * keptCount * width),
                encoderBlocks: blocks(depth: config.encoderDepth, rows: encoderRows, width: width,
                                      heads: config.encoderHeads, tokens: encoderTokens),
                encoderNormed: take(encoderRows * width),
                encoderMean: take(encoderRows), encoderReciprocalStd: take(encoderRows),
                decoderEmbedded: take(encoderRows * decoderWidth),
                decoderBlocks: blocks(depth: config.decoderDepth, rows: decoderRows, width: decoderWidth,
                                      heads: config.decoderHeads, tokens: decoderTokens),
                decoderNormed: take(decoderRows * decoderWidth),
                decoderMean: take(decoderRows), decoderReciprocalStd: take(decoderRows),
                fullPrediction: take(decoderRows * patchDimension),
                prediction: take(batch * patchCount * patchDimension),
                target: take(batch * patchCount * patchDimension),
                scratch: BlockScratch(stream: take(streamCount), norm: take(streamCount), qkv: take(3 * streamCount),
                                      attention: take(streamCount), hidden: take(config.mlpRatio * streamCount),
                                      probabilities: take(probabilityCount)),
                predictionGradient: take(batch * patchCount * patchDimension),
                fullPredictionGradient: take(decoderRows * patchDimension),
                embeddedGradient: take(encoderRows * decoderWidth))
            if pass == 0 {
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

        shuffle = .allocate(capacity: max(1, batch * patchCount))
        restore = .allocate(capacity: max(1, batch * patchCount))
        keptPatches = .allocate(capacity: max(1, batch * keptCount))
    }

    deinit {
        shuffle.deallocate()
        restore.deallocate()
        keptPatches.deallocate()
    }
}
