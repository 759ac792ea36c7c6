import Kernels

/// Every activation, saved tensor and gradient scratch of one forward/backward of the
/// fine-tuning classifier at one batch size, in one allocation made when the batch size
/// changes and reused otherwise. Every patch is visible, so the stream has
/// tokens = patchCount + 1 rows per sample.
final class ClassifierActivations {
    let batch: Int
    let tokens: Int

    private let storage: FloatBuffer
    let patchIndices: UnsafeMutablePointer<Int32>     // [batch, L]: 0..<L per sample (every patch)
    let patches: UnsafeMutablePointer<Float>          // [batch·L, C·p·p], (c, i, j) order
    let patchTokens: UnsafeMutablePointer<Float>      // [batch·L, D]
    let blocks: [BlockActivations]                    // streams [batch·T, D]
    let pooled: UnsafeMutablePointer<Float>           // [batch, D]: mean of patch tokens, or the cls rows
    let features: UnsafeMutablePointer<Float>         // [batch, D]: after fc_norm (or norm)
    let featureMean: UnsafeMutablePointer<Float>      // [batch]
    let featureReciprocalStd: UnsafeMutablePointer<Float>
    let logits: UnsafeMutablePointer<Float>           // [batch, classes]
    let dropPathMasks: UnsafeMutablePointer<Float>   // [depth, 2, batch]

    // Backward scratch.
    let scratch: BlockScratch
    let logitsGradient: UnsafeMutablePointer<Float>   // [batch, classes]
    let featureGradient: UnsafeMutablePointer<Float>  // [batch, D]
    let pooledGradient: UnsafeMutablePointer<Float>   // [batch, D]

    init(config: ModelConfig, classes: Int, batch: Int) {
        self.batch = batch
        let patchCount = config.patchCount, width = config.encoderWidth
        let hidden = width * config.mlpRatio, heads = config.encoderHeads
        let tokens = patchCount + 1
        self.tokens = tokens
        let rows = batch * tokens

        // Two passes over the same carving: the first measures, the second hands out pointers.
        var total = 0
        var base: UnsafeMutablePointer<Float>?
        func take(_ count: Int) -> UnsafeMutablePointer<Float> {
            let start = total
            total += (count + 15) / 16 * 16  // 64-byte aligned pieces
            return base.map { $0 + start } ?? UnsafeMutablePointer(bitPattern: 64)!
        }
        func carve() -> (blocks: [BlockActivations], pieces: [UnsafeMutablePointer<Float>], scratch: BlockScratch) {
            total = 0
            var blocks: [BlockActivations] = []
            var input = take(rows * width)
            for _ in 0..<config.encoderDepth {
                let block = BlockActivations(
                    input: input, norm1: take(rows * width), mean1: take(rows), reciprocalStd1: take(rows),
                    qkv: take(rows * 3 * width), probabilities: take(batch * heads * tokens * tokens),
                    attention: take(rows * width), middle: take(rows * width), norm2: take(rows * width),
                    mean2: take(rows), reciprocalStd2: take(rows), hidden: take(rows * hidden),
                    activated: take(rows * hidden), output: take(rows * width))
                blocks.append(block)
                input = block.output
            }
            let pieces = [take(batch * patchCount * config.patchDimension), take(batch * patchCount * width),
                          take(batch * width), take(batch * width), take(batch), take(batch), take(batch * classes),
                          take(config.encoderDepth * 2 * batch), take(batch * classes), take(batch * width),
                          take(batch * width)]
            let scratch = BlockScratch(stream: take(rows * width), norm: take(rows * width), qkv: take(rows * 3 * width),
                                       attention: take(rows * width), hidden: take(rows * hidden))
            return (blocks, pieces, scratch)
        }
        _ = carve()
        storage = FloatBuffer(count: total)
        base = storage.pointer
        let carved = carve()
        blocks = carved.blocks
        scratch = carved.scratch
        let p = carved.pieces
        patches = p[0]; patchTokens = p[1]; pooled = p[2]; features = p[3]; featureMean = p[4]
        featureReciprocalStd = p[5]; logits = p[6]; dropPathMasks = p[7]; logitsGradient = p[8]
        featureGradient = p[9]; pooledGradient = p[10]

        patchIndices = .allocate(capacity: max(1, batch * patchCount))
        for item in 0..<(batch * patchCount) { patchIndices[item] = Int32(item % patchCount) }
    }

    deinit { patchIndices.deallocate() }

    /// The stream entering the first block, [batch·T, D].
    var stream: UnsafeMutablePointer<Float> { blocks[0].input }
    /// The last block's output, [batch·T, D].
    var encoderOutput: UnsafeMutablePointer<Float> { blocks[blocks.count - 1].output }
}
