import Foundation
import Model
import Testing

@Suite struct ModelConfigTests {
    /// Trainable parameters of an MAE from its sizes, counted layer by layer.
    static func expectedCount(_ c: ModelConfig) -> Int {
        func blocks(_ depth: Int, _ width: Int) -> Int {
            let hidden = c.mlpRatio * width
            let perBlock = 2 * width + (3 * width * width + 3 * width) + (width * width + width) + 2 * width
                + (hidden * width + hidden) + (width * hidden + width)
            return depth * perBlock
        }
        let encoder = c.encoderWidth /* cls */ + c.encoderWidth * c.patchDimension + c.encoderWidth
            + blocks(c.encoderDepth, c.encoderWidth) + 2 * c.encoderWidth
        let decoder = c.decoderWidth * c.encoderWidth + c.decoderWidth + c.decoderWidth /* mask token */
            + blocks(c.decoderDepth, c.decoderWidth) + 2 * c.decoderWidth
            + c.patchDimension * c.decoderWidth + c.patchDimension
        return encoder + decoder
    }

    @Test func parameterCountsOfEveryConfig() throws {
        // MAE.md's table for the official configs.
        let official = ["mae_vit_base_patch16": 111_655_680, "mae_vit_large_patch16": 329_239_296,
                        "mae_vit_huge_patch14": 656_613_964]
        for name in ModelConfig.knownNames {
            let config = try ModelConfig.named(name)
            let table = ParameterTable(config: config)
            #expect(table.count == Self.expectedCount(config), "\(name)")
            #expect(table.tensors.reduce(0) { $0 + $1.count } == table.count, "\(name)")
            if let count = official[name] { #expect(table.count == count, "\(name)") }
        }
    }

    @Test func namedConfigsHaveTheirSizes() throws {
        let tiny = try ModelConfig.named("mae_vit_tiny_patch4")
        let tinySizes: [Int] = [tiny.imageSize, tiny.patchSize, tiny.encoderWidth, tiny.encoderDepth, tiny.encoderHeads,
                                tiny.decoderWidth, tiny.decoderDepth, tiny.decoderHeads, tiny.mlpRatio, tiny.channels]
        #expect(tinySizes == [32, 4, 192, 12, 3, 128, 4, 4, 4, 3])
        let small = try ModelConfig.named("mae_vit_small_patch8")
        let smallSizes: [Int] = [small.imageSize, small.patchSize, small.encoderWidth, small.encoderHeads,
                                 small.decoderWidth, small.decoderHeads]
        #expect(smallSizes == [64, 8, 384, 6, 256, 8])
        let base = try ModelConfig.named("mae_vit_base_patch16")
        #expect(base.patchCount == 196 && base.patchDimension == 768 && base.keptCount(maskRatio: 0.75) == 49)
        let huge = try ModelConfig.named("mae_vit_huge_patch14", imageSize: 448)
        #expect(huge.imageSize == 448 && huge.gridSize == 32)
        // Codable round trip.
        let decoded = try JSONDecoder().decode(ModelConfig.self, from: JSONEncoder().encode(huge))
        #expect(decoded == huge)
    }

    @Test func badNamesAndSizesThrowOneLine() {
        do {
            _ = try ModelConfig.named("mae_vit_gigantic")
            Issue.record("an unknown name must throw")
        } catch {
            let text = "\(error)"
            #expect(text.contains("mae_vit_gigantic") && text.contains("mae_vit_base_patch16") && !text.contains("\n"))
        }
        #expect(throws: ModelError.self) { try ModelConfig.named("mae_vit_base_patch16", imageSize: 230) }
        #expect(throws: ModelError.self) { try ModelConfig.named("mae_vit_tiny_patch4", imageSize: 0) }
    }

    @Test func tableFollowsTheOfficialOrderAndDecayRule() throws {
        let config = try ModelConfig.named("mae_vit_base_patch16")
        let table = ParameterTable(config: config)
        let names = table.tensors.map(\.name)
        #expect(Array(names.prefix(5)) == ["cls_token", "patch_embed.proj.weight", "patch_embed.proj.bias",
                                           "blocks.0.norm1.weight", "blocks.0.norm1.bias"])
        #expect(Array(names[5..<15]) == ["blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight",
                                         "blocks.0.attn.proj.bias", "blocks.0.norm2.weight", "blocks.0.norm2.bias",
                                         "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.bias", "blocks.0.mlp.fc2.weight",
                                         "blocks.0.mlp.fc2.bias"])
        let afterEncoder = names.firstIndex(of: "norm.weight")!
        #expect(Array(names[afterEncoder..<(afterEncoder + 6)]) == ["norm.weight", "norm.bias", "decoder_embed.weight",
                                                                    "decoder_embed.bias", "mask_token", "decoder_blocks.0.norm1.weight"])
        #expect(Array(names.suffix(4)) == ["decoder_norm.weight", "decoder_norm.bias", "decoder_pred.weight", "decoder_pred.bias"])
        #expect(names.count == 3 + 12 * 12 + 2 + 3 + 8 * 12 + 4)
        #expect(table.tensor(named: "patch_embed.proj.weight")?.shape == [768, 3, 16, 16])
        #expect(table.tensor(named: "blocks.11.attn.qkv.weight")?.shape == [2304, 768])
        #expect(table.tensor(named: "decoder_pred.weight")?.shape == [768, 512])
        #expect(table.tensor(named: "mask_token")?.shape == [1, 1, 512])
        #expect(table.tensor(named: "pos_embed") == nil)
        // Offsets are contiguous in order.
        var offset = 0
        for tensor in table.tensors {
            #expect(tensor.offset == offset)
            offset += tensor.count
            let expectDecay = !(tensor.shape.count == 1 || tensor.name.hasSuffix(".bias"))
            #expect(tensor.decays == expectDecay, "\(tensor.name)")
        }
        #expect(table.tensor(named: "cls_token")!.decays && table.tensor(named: "mask_token")!.decays)
        #expect(!table.tensor(named: "norm.weight")!.decays && table.tensor(named: "decoder_embed.weight")!.decays)
    }
}
