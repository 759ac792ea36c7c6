import Kernels
import Model
import Testing

/// The backward's progress reports, which the overlapped gradient exchange trusts: each
/// says that a tail of the flat layout is final, the tails grow from the decoder's head to
/// the layout's start, and every gradient in a reported tail keeps its bits to the end.
@Suite struct BackwardProgressTests {
    @Test(arguments: [1, 2])
    func reportedTailsAreFinal(batchShards: Int) {
        let config = MAEModelTests.micro
        let model = MAEModel(config: config, seed: 7)
        model.batchShards = batchShards
        let input = MAEModelTests.inputs(config, batch: 2, seed: 8)
        // A first micro-batch, so that the reported one adds onto gradients already there.
        _ = model.forwardBackward(images: input.images.pointer, noise: input.noise.pointer, batchSize: 2,
                                  maskRatio: 0.75, normPixLoss: false, gradientScale: 0.5)
        var reports: [(offset: Int, tail: [Float])] = []
        let gradients = model.gradients
        _ = model.forwardBackward(images: input.images.pointer, noise: input.noise.pointer, batchSize: 2,
                                  maskRatio: 0.75, normPixLoss: false, gradientScale: 0.5) { offset in
            reports.append((offset, Array(UnsafeBufferPointer(start: gradients.pointer + offset,
                                                              count: gradients.count - offset))))
        }
        let final = gradients.toArray()
        let offsets = reports.map(\.offset)
        #expect(offsets.last == 0, "the last report covers the whole layout: \(offsets)")
        #expect(zip(offsets, offsets.dropFirst()).allSatisfy { $0 >= $1 }, "tails only grow: \(offsets)")
        if batchShards == 1 {
            // Decoder head and norm, each decoder block, the decoder embedding, the encoder
            // norm, each encoder block, the patch embedding.
            #expect(offsets.count == config.decoderDepth + config.encoderDepth + 4, "\(offsets)")
            let decoderNorm = model.table.tensor(named: "decoder_norm.weight")!.offset
            #expect(offsets.first == decoderNorm, "the decoder's head and norm are final first")
        } else {
            #expect(offsets == [0], "shards report once, after their gradients are added")
        }
        for (offset, tail) in reports {
            let later = Array(final[offset...])
            let changed = zip(tail, later).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(changed == 0, "\(changed) gradients of the tail from \(offset) changed after it was reported")
        }
        #expect(final.contains { $0 != 0 })
    }
}
