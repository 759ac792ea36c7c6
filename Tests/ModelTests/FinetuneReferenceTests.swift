import Foundation
import Kernels
import Testing
import TestSupport
@testable import Model

/// The fine-tuning classifier against the official `models_vit.VisionTransformer`
/// (fixtures written by tools/make_finetune_reference.py, float64 answers), its pretrained
/// loading as `main_finetune.py`, and finite-difference checks of what PyTorch cannot
/// fix (drop path draws its own numbers).
@Suite struct FinetuneReferenceTests {
    /// Relative to each tensor's largest magnitude; PyTorch's own float32 pass is 4e-7
    /// (global pool) and 1e-6 (class token) from the float64 answer.
    static let tolerance: Float = 1e-5
    static let classes = 5

    static func classifier(globalPool: Bool, dropPath: Double = 0, imageSize: Int? = nil) throws -> VisionTransformerClassifier {
        var config = try fixtureConfig()
        if let imageSize { config.imageSize = imageSize }
        return VisionTransformerClassifier(config: config, numberOfClasses: classes, globalPool: globalPool,
                                           dropPath: dropPath, seed: 3)
    }

    static func suffix(_ globalPool: Bool) -> String { globalPool ? "global_pool" : "cls_token" }

    @Test(arguments: [true, false])
    func forwardBackwardMatchesPyTorch(globalPool: Bool) throws {
        let model = try Self.classifier(globalPool: globalPool)
        #expect(model.table.tensors.map(\.name).suffix(4) == (globalPool
            ? ["head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"]
            : ["norm.weight", "norm.bias", "head.weight", "head.bias"]))
        try model.loadWeights(path: try fixturePath("micro_finetune_weights_" + Self.suffix(globalPool)))
        let inputs = try SafeTensorsFile.read(path: try fixturePath("micro_finetune_inputs"))
        let expected = try SafeTensorsFile.read(path: try fixturePath("micro_finetune_expected_" + Self.suffix(globalPool)))
        let images = try inputs.floatBuffer(named: "images")
        let targets = try inputs.floatBuffer(named: "targets")
        let batch = 3

        model.gradients.zero()
        let loss = model.forwardBackward(images: images.pointer, targets: targets.pointer, batchSize: batch, dropPath: nil)
        let expectedLoss = try expected.floats(named: "loss")[0]
        #expect(abs(loss - expectedLoss) <= 1e-6 * abs(expectedLoss), "loss \(loss), expected \(expectedLoss)")
        try expectMatchesReference(UnsafeBufferPointer(start: model.lastLogits, count: batch * Self.classes),
                                   expected, "logits", tolerance: Self.tolerance)
        for tensor in model.table.tensors {
            try expectMatchesReference(UnsafeBufferPointer(start: model.gradients.pointer + tensor.offset, count: tensor.count),
                                       expected, tensor.name, tolerance: Self.tolerance)
        }

        // Gradients are added, scaled; drop path with rate 0 (or no key) changes nothing.
        let first = model.gradients.toArray()
        _ = model.forwardBackward(images: images.pointer, targets: targets.pointer, batchSize: batch, gradientScale: 0.5,
                                  dropPath: DropPathKey(seed: 1, epoch: 0, sampleIndices: [0, 1, 2]))
        expectClose(model.gradients.toArray(), first.map { $0 * 1.5 }, absolute: 1e-7, relative: 1e-5, "accumulated gradients")

        // Evaluation: the same logits, gradients untouched.
        let before = model.gradients.toArray()
        let logits = model.logits(images: images.pointer, batchSize: batch)
        expectClose(logits, try expected.floats(named: "logits"), absolute: 1e-5, "evaluation logits")
        #expect(model.gradients.toArray() == before)

        // The features are the head's input: the head applied to them gives the logits.
        let features = model.features(images: images.pointer, batchSize: batch)
        let width = model.config.encoderWidth
        let head = model.table.tensor(named: "head.weight")!, bias = model.table.tensor(named: "head.bias")!
        var fromFeatures: [Float] = []
        for sample in 0..<batch {
            for label in 0..<Self.classes {
                var sum = Double(model.parameters[bias.offset + label])
                for index in 0..<width {
                    sum += Double(features[sample * width + index]) * Double(model.parameters[head.offset + label * width + index])
                }
                fromFeatures.append(Float(sum))
            }
        }
        expectClose(fromFeatures, logits, absolute: 1e-5, "head applied to the features")
    }

    /// Drop path against timm's DropPath given the same keep masks (drop path 0.5 over two
    /// blocks: block 0 rate 0, block 1 rate 0.5 with some branches dropped).
    @Test func dropPathMatchesPyTorchWithTheSameMasks() throws {
        let model = try Self.classifier(globalPool: true, dropPath: 0.5)
        #expect(model.dropPathRates == [0, 0.5])
        try model.loadWeights(path: try fixturePath("micro_finetune_weights_global_pool"))
        let inputs = try SafeTensorsFile.read(path: try fixturePath("micro_finetune_inputs"))
        let expected = try SafeTensorsFile.read(path: try fixturePath("micro_finetune_expected_drop_path"))
        let images = try inputs.floatBuffer(named: "images")
        let targets = try inputs.floatBuffer(named: "targets")
        let masks = try expected.floats(named: "drop_path_masks")
        #expect(masks.contains(0))
        model.gradients.zero()
        let loss = model.forwardBackward(images: images.pointer, targets: targets.pointer, batchSize: 3, dropPathMasks: masks)
        let expectedLoss = try expected.floats(named: "loss")[0]
        #expect(abs(loss - expectedLoss) <= 1e-6 * abs(expectedLoss), "loss \(loss), expected \(expectedLoss)")
        try expectMatchesReference(UnsafeBufferPointer(start: model.lastLogits, count: 3 * Self.classes),
                                   expected, "logits", tolerance: Self.tolerance)
        for tensor in model.table.tensors {
            try expectMatchesReference(UnsafeBufferPointer(start: model.gradients.pointer + tensor.offset, count: tensor.count),
                                       expected, tensor.name, tolerance: Self.tolerance)
        }
        // Without masks (evaluation) the result differs: the masks mattered.
        let plain = try SafeTensorsFile.read(path: try fixturePath("micro_finetune_expected_global_pool"))
        #expect(abs(expectedLoss - (try plain.floats(named: "loss")[0])) > 1e-3)
    }

    /// Bicubic resizing of a position embedding as `interpolate_pos_embed` (torch's
    /// bicubic, align_corners=False), up and down.
    @Test func positionEmbeddingInterpolationMatchesPyTorch() throws {
        let file = try SafeTensorsFile.read(path: try fixturePath("micro_finetune_pos_embed"))
        for (source, name, grid) in [("sincos", "sincos_to6", 6), ("random", "random_to6", 6), ("random", "random_to3", 3)] {
            let resized = interpolatePositionEmbedding(try file.floats(named: source), width: 32, extraTokens: 1,
                                                       from: 4, to: grid)
            expectClose(resized, try file.floats(named: name), absolute: 2e-6, "\(source) to grid \(grid)")
        }
        let same = try file.floats(named: "random")
        #expect(interpolatePositionEmbedding(same, width: 32, extraTokens: 1, from: 4, to: 4) == same)
    }

    /// MAE pretraining weights (decoder, mask token, fixed pos_embed, norm) into the
    /// classifier, as main_finetune.py: at the pretraining size and at 24 px (grid 4 → 6).
    @Test(arguments: [true, false])
    func loadsPretrainedMAEWeights(globalPool: Bool) throws {
        let path = try fixturePath("micro_weights")
        let mae = try SafeTensorsFile.read(path: path)
        let file = try WeightsFile.read(path: path)
        let positions = try SafeTensorsFile.read(path: try fixturePath("micro_finetune_pos_embed"))
        for imageSize in [16, 24] {
            let model = try Self.classifier(globalPool: globalPool, imageSize: imageSize)
            let initialHead = model.table.tensor(named: "head.weight")!
            let headBefore = Array(UnsafeBufferPointer(start: model.parameters.pointer + initialHead.offset, count: initialHead.count))
            let report = try model.loadPretrainedEncoder(from: file)
            #expect(Set(report.missing) == model.pretrainedMissingAllowed)
            let decoderNames = mae.names.filter { $0.hasPrefix("decoder") || $0 == "mask_token" }
            #expect(Set(report.unexpected) == Set(decoderNames + (globalPool ? ["norm.weight", "norm.bias"] : [])))
            #expect(report.interpolatedGrid?.from == (imageSize == 24 ? 4 : nil))
            #expect(report.interpolatedGrid?.to == (imageSize == 24 ? 6 : nil))
            for tensor in model.table.tensors where !report.missing.contains(tensor.name) {
                let actual = Array(UnsafeBufferPointer(start: model.parameters.pointer + tensor.offset, count: tensor.count))
                if tensor.name == "pos_embed" && imageSize == 24 {
                    expectClose(actual, try positions.floats(named: "sincos_to6"), absolute: 2e-6, "interpolated pos_embed")
                } else {
                    #expect(actual == (try mae.floats(named: tensor.name)), "\(tensor.name) copied")
                }
            }
            // The head is drawn again from trunc_normal(2e-5) (the same draw as at construction).
            let head = Array(UnsafeBufferPointer(start: model.parameters.pointer + initialHead.offset, count: initialHead.count))
            #expect(head == headBefore && head.allSatisfy { abs($0) < 2e-4 } && head.contains { $0 != 0 })
        }
    }

    /// The official release layouts (`torch.save` of {"model": ...}): a pretraining
    /// checkpoint with the decoder, and an encoder-only file like mae_pretrain_vit_base.pth.
    @Test(arguments: ["micro_checkpoint", "micro_encoder"])
    func loadsOfficialPthFiles(name: String) throws {
        let file = try WeightsFile.read(path: try fixturePath(name, "pth"))
        let model = try Self.classifier(globalPool: true, imageSize: 24)
        let report = try model.loadPretrainedEncoder(from: file)
        #expect(Set(report.missing) == model.pretrainedMissingAllowed)
        #expect(report.interpolatedGrid?.to == 6)
        let qkv = model.table.tensor(named: "blocks.1.attn.qkv.weight")!
        #expect(Array(UnsafeBufferPointer(start: model.parameters.pointer + qkv.offset, count: qkv.count))
                == file.tensor(named: qkv.name)?.values)
    }

    /// A head of another class count is dropped (main_finetune.py's shape check), after
    /// which a class-token classifier's file misses exactly the head, as allowed.
    @Test func dropsAHeadOfAnotherShape() throws {
        var config = try fixtureConfig()
        config.imageSize = 16
        let model = VisionTransformerClassifier(config: config, numberOfClasses: 7, globalPool: false, dropPath: 0, seed: 2)
        let bias = model.table.tensor(named: "head.bias")!
        model.parameters[bias.offset] = 0.5
        let report = try model.loadPretrainedEncoder(from: WeightsFile.read(path: try fixturePath("micro_finetune_weights_cls_token")))
        #expect(report.droppedHead == ["head.weight", "head.bias"])
        #expect(report.missing == ["head.weight", "head.bias"] && report.unexpected.isEmpty)
        #expect(model.parameters[bias.offset] == 0.5, "head.bias keeps its value, as the official code leaves it")
    }

    /// A fine-tuned classifier passed where pretraining weights are needed, and weights of
    /// another width, are one-line errors that leave the parameters alone.
    @Test func rejectsWeightsThatAreNotPretrainedEncoders() throws {
        let model = try Self.classifier(globalPool: true)
        let before = model.parameters.toArray()
        let fineTuned = try WeightsFile.read(path: try fixturePath("micro_finetune_weights_global_pool"))
        #expect {
            try model.loadPretrainedEncoder(from: fineTuned)
        } throws: { error in
            "\(error)".contains("fc_norm") && "\(error)".contains("fine-tuned")
        }
        var wide = try fixtureConfig()
        wide.encoderWidth = 64
        let other = VisionTransformerClassifier(config: wide, numberOfClasses: 5, globalPool: true, dropPath: 0, seed: 1)
        #expect(throws: WeightsError.self) { try other.loadPretrainedEncoder(from: WeightsFile.read(path: try fixturePath("micro_weights"))) }
        #expect(model.parameters.toArray() == before)

        // A classifier's own file round-trips by name; a file of the other pooling does not load.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("finetune-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let saved = directory.appendingPathComponent("classifier.safetensors").path
        try model.saveWeights(path: saved)
        let copy = try Self.classifier(globalPool: true)
        copy.parameters.zero()
        try copy.loadWeights(path: saved)
        #expect(copy.parameters.toArray() == before)
        let clsModel = try Self.classifier(globalPool: false)
        #expect(throws: WeightsError.self) { try clsModel.loadWeights(path: saved) }
    }
}
