import Foundation
import Kernels
@testable import Model
import Testing
import TestSupport

/// `.pth` files written by the real torch.save (tools/make_pth_fixtures.py) and safetensors,
/// read into the micro model; encoder-only weights; bad files; the timm export's names.
@Suite struct WeightsFileTests {
    func reference() throws -> SafeTensorsFile { try SafeTensorsFile.read(path: try fixturePath("micro_weights")) }

    @Test func aTrainingCheckpointPthHoldsTheSameTensorsAsTheSafetensors() throws {
        let pth = try WeightsFile.read(path: try fixturePath("micro_checkpoint", "pth"))
        let safetensors = try reference()
        #expect(pth.otherKeys == ["epoch", "args"])
        #expect(Set(pth.tensors.map(\.name)) == Set(safetensors.names))
        for tensor in pth.tensors {
            let expected = try #require(safetensors.tensor(named: tensor.name))
            #expect(tensor.shape == expected.shape, "\(tensor.name)")
            #expect(tensor.values == (try safetensors.floats(named: tensor.name)), "\(tensor.name) differs")
        }
        // The same reader takes safetensors.
        let again = try WeightsFile.read(path: try fixturePath("micro_weights"))
        #expect(again.tensors.count == pth.tensors.count)
    }

    @Test func importingTheCheckpointGivesTheReferenceModel() throws {
        let config = try fixtureConfig()
        let imported = MAEModel(config: config, seed: 99)
        let initialised = try imported.importWeights(from: WeightsFile.read(path: try fixturePath("micro_checkpoint", "pth")))
        #expect(initialised.isEmpty)
        let loaded = MAEModel(config: config, seed: 1)
        try loaded.loadWeights(path: try fixturePath("micro_weights"))
        #expect(imported.parameters.toArray() == loaded.parameters.toArray())
    }

    @Test func encoderOnlyWeightsKeepAFreshDecoder() throws {
        let config = try fixtureConfig()
        let file = try WeightsFile.read(path: try fixturePath("micro_encoder", "pth"))
        let safetensors = try reference()
        // Stored channels-last (non-contiguous strides) and in float16: read in logical order.
        #expect(try file.tensor(named: "patch_embed.proj.weight")?.values == safetensors.floats(named: "patch_embed.proj.weight"))
        let half = try safetensors.floats(named: "norm.weight").map { Float(Float16($0)) }
        #expect(file.tensor(named: "norm.weight")?.values == half)
        #expect(file.tensor(named: "norm.weight")?.dtype == "HalfStorage")

        let model = MAEModel(config: config, seed: 4)
        let fresh = MAEModel(config: config, seed: 4)
        let initialised = try model.importWeights(from: file)
        #expect(Set(initialised) == Set(model.table.tensors.map(\.name).filter(MAEModel.isDecoderTensor)))
        #expect(initialised.contains("mask_token") && initialised.contains("decoder_pred.weight"))
        for tensor in model.table.tensors {
            let values = Array(UnsafeBufferPointer(start: model.parameters.pointer + tensor.offset, count: tensor.count))
            if MAEModel.isDecoderTensor(tensor.name) {
                let initial = Array(UnsafeBufferPointer(start: fresh.parameters.pointer + tensor.offset, count: tensor.count))
                #expect(values == initial, "\(tensor.name) is not the fresh initialisation")
            } else {
                #expect(values == file.tensor(named: tensor.name)!.values, "\(tensor.name) not imported")
            }
        }
    }

    @Test func badFilesAreOneLineErrorsAndNothingIsExecuted() throws {
        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "no error" } catch { return "\(error)" }
        }
        let opcode = message { _ = try WeightsFile.read(path: try fixturePath("unknown_opcode", "pth")) }
        #expect(opcode.contains("unsupported pickle opcode 0x69") && opcode.contains("nothing was executed"), "\(opcode)")
        let missing = message { _ = try WeightsFile.read(path: try fixturePath("missing_model_key", "pth")) }
        #expect(missing.contains("missing key 'model'") && missing.contains("'weights'"), "\(missing)")

        // A truncated archive, and a file that is neither format.
        let temporary = try TemporaryDirectory("weights")
        defer { temporary.remove() }
        let whole = try Data(contentsOf: URL(fileURLWithPath: try fixturePath("micro_checkpoint", "pth")))
        try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: temporary.file("cut.pth")))
        let cut = message { _ = try WeightsFile.read(path: temporary.file("cut.pth")) }
        #expect(cut.contains("zip"), "\(cut)")
        try Data("hello".utf8).write(to: URL(fileURLWithPath: temporary.file("text.pth")))
        #expect(message { _ = try WeightsFile.read(path: temporary.file("text.pth")) }.contains("text.pth"))

        // Weights of another model: named tensor, nothing changed.
        var other = try fixtureConfig()
        other.encoderWidth = 64
        let model = MAEModel(config: other, seed: 2)
        let before = model.parameters.toArray()
        let wrong = message { try model.importWeights(from: WeightsFile.read(path: try fixturePath("micro_checkpoint", "pth"))) }
        #expect(wrong.contains("has shape") || wrong.contains("differs"), "\(wrong)")
        #expect(model.parameters.toArray() == before)
    }

    @Test func theTimmExportIsTheEncoderUnderTimmsNames() throws {
        let temporary = try TemporaryDirectory("timm")
        defer { temporary.remove() }
        let model = MAEModel(config: try fixtureConfig(), seed: 3)
        try model.saveEncoderForTimm(path: temporary.file("encoder.safetensors"))
        let file = try SafeTensorsFile.read(path: temporary.file("encoder.safetensors"))
        // timm 0.3.2 VisionTransformer(num_classes=0).state_dict() keys, for depth 2.
        var expected = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
        for block in 0..<2 {
            for part in ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"] {
                expected += ["blocks.\(block).\(part).weight", "blocks.\(block).\(part).bias"]
            }
        }
        expected += ["norm.weight", "norm.bias"]
        #expect(Set(file.names) == Set(expected))
        #expect(file.tensor(named: "pos_embed")?.shape == [1, 17, 32])
        #expect(try file.floats(named: "pos_embed") == model.encoderPositionEmbedding.toArray())
        // Imported back, the encoder is the same and the decoder is fresh.
        let back = MAEModel(config: model.config, seed: 3)
        #expect(try back.importWeights(from: WeightsFile.read(path: temporary.file("encoder.safetensors"))).count > 0)
        #expect(back.parameters.toArray() == model.parameters.toArray())
    }
}
