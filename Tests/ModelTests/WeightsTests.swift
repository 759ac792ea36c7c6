import Foundation
import Kernels
import Testing
import TestSupport
@testable import Model

/// A small model whose every size is distinct, so a transposed shape cannot pass.
private let smallConfig = ModelConfig(name: "weights_test", imageSize: 8, patchSize: 4, encoderWidth: 12,
                                      encoderDepth: 2, encoderHeads: 3, decoderWidth: 8, decoderDepth: 1,
                                      decoderHeads: 2)

/// The model's tensors (trainable and fixed) as writer input, optionally edited.
private func officialTensors(of model: MAEModel) -> [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] {
    var tensors = model.table.tensors.map {
        (name: $0.name, shape: $0.shape, data: UnsafeBufferPointer(start: model.parameters.pointer + $0.offset, count: $0.count))
    }
    let patches = model.config.patchCount + 1
    tensors.append((name: "pos_embed", shape: [1, patches, model.config.encoderWidth],
                    data: UnsafeBufferPointer(model.encoderPositionEmbedding.buffer)))
    tensors.append((name: "decoder_pos_embed", shape: [1, patches, model.config.decoderWidth],
                    data: UnsafeBufferPointer(model.decoderPositionEmbedding.buffer)))
    return tensors
}

/// Loads `path` into `model` and returns the error's problem, or nil if it loaded.
private func loadProblem(_ model: MAEModel, _ path: String) -> String? {
    do {
        try model.loadWeights(path: path)
        return nil
    } catch let error as WeightsError {
        #expect(!error.description.contains("\n"))
        return error.problem
    } catch {
        Issue.record("unexpected error type: \(error)")
        return "\(error)"
    }
}

@Suite struct WeightsTests {
    @Test func saveAndLoadRoundTripUnderOfficialNames() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("model.safetensors")
        let source = MAEModel(config: smallConfig, seed: 1)
        try source.saveWeights(path: path, metadata: ["epoch": "3"])

        let file = try SafeTensorsFile.read(path: path)
        #expect(file.metadata == ["epoch": "3"])
        #expect(file.names.count == source.table.tensors.count + 2)
        #expect(file.names.first == "cls_token")
        #expect(file.names[1] == "pos_embed")
        #expect(file.tensor(named: "pos_embed")?.shape == [1, 5, 12])
        #expect(file.tensor(named: "decoder_pos_embed")?.shape == [1, 5, 8])
        #expect(file.tensor(named: "patch_embed.proj.weight")?.shape == [12, 3, 4, 4])
        #expect(file.tensor(named: "blocks.1.attn.qkv.weight")?.shape == [36, 12])
        #expect(file.tensor(named: "decoder_pred.weight")?.shape == [48, 8])
        #expect(try file.floats(named: "pos_embed") == source.encoderPositionEmbedding.toArray())

        let target = MAEModel(config: smallConfig, seed: 2)
        #expect(target.parameters.toArray() != source.parameters.toArray())
        try target.loadWeights(path: path)
        #expect(target.parameters.toArray().map(\.bitPattern) == source.parameters.toArray().map(\.bitPattern))
    }

    @Test func strictLoadNamesTheTensorAndLeavesParametersAlone() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("bad.safetensors")
        let source = MAEModel(config: smallConfig, seed: 1)
        let target = MAEModel(config: smallConfig, seed: 2)
        let before = target.parameters.toArray()
        let tensors = officialTensors(of: source)

        // Sanity: the unedited list loads.
        try SafeTensorsFile.write(path: path, tensors: tensors)
        #expect(loadProblem(MAEModel(config: smallConfig, seed: 3), path) == nil)

        try SafeTensorsFile.write(path: path, tensors: tensors.filter { $0.name != "blocks.1.mlp.fc2.bias" })
        #expect(loadProblem(target, path) == "missing tensor 'blocks.1.mlp.fc2.bias' (another model, or not a file of this model?)")

        let extra: [Float] = [1, 2]
        try extra.withUnsafeBufferPointer { data in
            try SafeTensorsFile.write(path: path, tensors: tensors + [(name: "head.weight", shape: [2], data: data)])
        }
        #expect(loadProblem(target, path)?.hasPrefix("unexpected tensor 'head.weight' [2]") == true)

        let transposed = tensors.map { $0.name == "decoder_embed.weight" ? (name: $0.name, shape: [12, 8], data: $0.data) : $0 }
        try SafeTensorsFile.write(path: path, tensors: transposed)
        #expect(loadProblem(target, path) == "tensor 'decoder_embed.weight' has shape [12, 8], the model needs [8, 12]")

        try SafeTensorsFile.write(path: path, tensors: tensors.filter { $0.name != "decoder_pos_embed" })
        #expect(loadProblem(target, path)?.hasPrefix("missing tensor 'decoder_pos_embed'") == true)

        let shifted = source.encoderPositionEmbedding.toArray().enumerated().map { $0.offset == 7 ? $0.element + 1e-3 : $0.element }
        try shifted.withUnsafeBufferPointer { data in
            try SafeTensorsFile.write(path: path, tensors: tensors.map { $0.name == "pos_embed" ? (name: $0.name, shape: $0.shape, data: data) : $0 })
        }
        let problem = loadProblem(target, path)
        #expect(problem?.hasPrefix("tensor 'pos_embed' differs from the fixed 2-D sin-cos embedding") == true)
        #expect(problem?.contains("at element 7") == true)

        // Another model's file: the first mismatch is named with both shapes.
        let other = MAEModel(config: ModelConfig(name: "other", imageSize: 8, patchSize: 4, encoderWidth: 16, encoderDepth: 2,
                                                 encoderHeads: 4, decoderWidth: 8, decoderDepth: 1, decoderHeads: 2), seed: 1)
        try other.saveWeights(path: path)
        #expect(loadProblem(target, path) == "tensor 'pos_embed' has shape [1, 5, 16], the model needs [1, 5, 12] (another image size, patch size or width?)")

        #expect(target.parameters.toArray() == before)
    }

    @Test func prefixedTensorsShareOneFile() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("optimizer.safetensors")
        let model = MAEModel(config: smallConfig, seed: 1)
        let table = model.table
        let first = FloatBuffer(count: table.count), second = FloatBuffer(count: table.count)
        for index in 0 ..< table.count {
            first[index] = Float(index) * 0.25
            second[index] = -Float(index)
        }
        try table.writeTensors(path: path, buffers: [(prefix: "exp_avg", buffer: first), (prefix: "exp_avg_sq", buffer: second)],
                               metadata: ["step": "10"])
        let file = try SafeTensorsFile.read(path: path)
        #expect(file.names.count == 2 * table.tensors.count)
        #expect(file.tensor(named: "exp_avg.blocks.0.attn.qkv.weight")?.shape == [36, 12])
        #expect(file.tensor(named: "exp_avg_sq.cls_token")?.shape == [1, 1, 12])

        let readFirst = FloatBuffer(count: table.count), readSecond = FloatBuffer(count: table.count)
        try table.readTensors(from: file, into: readFirst, prefix: "exp_avg")
        try model.readTensors(path: path, into: readSecond, prefix: "exp_avg_sq.")
        #expect(readFirst.toArray() == first.toArray())
        #expect(readSecond.toArray() == second.toArray())

        // A single buffer through the model's own helper; a missing prefix is named.
        try model.writeTensors(path: path, buffer: first, prefix: "momentum")
        #expect(throws: WeightsError.self) { try model.readTensors(path: path, into: readSecond, prefix: "exp_avg") }
        try model.readTensors(path: path, into: readSecond, prefix: "momentum")
        #expect(readSecond.toArray() == first.toArray())
    }
}
