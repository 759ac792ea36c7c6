import Foundation
import Kernels
import Model
import Testing

@Suite struct InitialisationTests {
    @Test func initialisationFollowsTheReference() throws {
        let config = try ModelConfig.named("mae_vit_tiny_patch4")
        let model = MAEModel(config: config, seed: 5)
        func values(_ name: String) -> [Double] {
            let tensor = model.table.tensor(named: name)!
            return (0..<tensor.count).map { Double(model.parameters[tensor.offset + $0]) }
        }
        func standardDeviation(_ v: [Double]) -> Double {
            let mean = v.reduce(0, +) / Double(v.count)
            return (v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(v.count)).squareRoot()
        }
        // Xavier uniform: inside ±bound, std ≈ bound/√3.
        for (name, fanIn, fanOut) in [("blocks.0.attn.qkv.weight", 192, 576), ("blocks.3.mlp.fc2.weight", 768, 192),
                                      ("decoder_pred.weight", 128, 48), ("patch_embed.proj.weight", 48, 192)] {
            let bound = (6.0 / Double(fanIn + fanOut)).squareRoot()
            let v = values(name)
            #expect(v.allSatisfy { abs($0) <= bound }, "\(name) within ±\(bound)")
            #expect(abs(standardDeviation(v) / (bound / 3.0.squareRoot()) - 1) < 0.03, "\(name) std")
            #expect(v.map(abs).max()! > 0.95 * bound, "\(name) fills its range")
        }
        let patchBias = values("patch_embed.proj.bias"), patchBound = 1 / 48.0.squareRoot()
        #expect(patchBias.allSatisfy { abs($0) <= patchBound } && patchBias.map(abs).max()! > 0.8 * patchBound)
        for name in ["cls_token", "mask_token"] {
            let v = values(name)
            #expect(abs(standardDeviation(v) - 0.02) < 0.004, "\(name) std")
        }
        #expect(values("blocks.0.norm1.weight").allSatisfy { $0 == 1 } && values("decoder_norm.weight").allSatisfy { $0 == 1 })
        #expect(values("blocks.0.norm1.bias").allSatisfy { $0 == 0 } && values("blocks.0.attn.qkv.bias").allSatisfy { $0 == 0 })
        #expect(values("decoder_pred.bias").allSatisfy { $0 == 0 } && values("norm.bias").allSatisfy { $0 == 0 })
        #expect(model.gradients.toArray().allSatisfy { $0 == 0 })

        // A pure function of the seed, whatever the thread count.
        let before = Parallel.threads
        Parallel.setThreads(2)
        let same = MAEModel(config: config, seed: 5)
        Parallel.setThreads(before)
        let other = MAEModel(config: config, seed: 6)
        #expect(same.parameters.toArray() == model.parameters.toArray())
        #expect(other.parameters.toArray() != model.parameters.toArray())
        // Position embeddings are the fixed tables.
        #expect(model.encoderPositionEmbedding.toArray() == sinCosPositionEmbedding(width: 192, gridSize: 8))
        #expect(model.decoderPositionEmbedding.toArray() == sinCosPositionEmbedding(width: 128, gridSize: 8))
    }
}
