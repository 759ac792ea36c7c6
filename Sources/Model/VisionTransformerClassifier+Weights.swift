import Kernels

// Pretrained encoders into the classifier (what `main_finetune.py` does with `--finetune`),
// and the classifier's own weights on disk under the official names.

/// What `loadPretrainedEncoder` did, in the terms of PyTorch's `load_state_dict(strict=False)`.
public struct PretrainedEncoderLoad: Sendable, Equatable {
    /// Classifier tensors the file did not provide (they keep their initialisation):
    /// head.* and, with global pooling, fc_norm.*.
    public let missing: [String]
    /// File tensors the classifier has no use for (the decoder, the mask token, `norm`
    /// with global pooling), ignored.
    public let unexpected: [String]
    /// head.* tensors of the file dropped because their shape differs (another class count).
    public let droppedHead: [String]
    /// The (old, new) patch grid when pos_embed was interpolated, nil when the grids matched.
    public let interpolatedGrid: (from: Int, to: Int)?

    public static func == (left: Self, right: Self) -> Bool {
        left.missing == right.missing && left.unexpected == right.unexpected && left.droppedHead == right.droppedHead
            && left.interpolatedGrid?.from == right.interpolatedGrid?.from
            && left.interpolatedGrid?.to == right.interpolatedGrid?.to
    }
}

extension VisionTransformerClassifier {
    /// The tensors a pretrained file may lack: the head, and with global pooling fc_norm
    /// (exactly the official assertion on `msg.missing_keys`).
    public var pretrainedMissingAllowed: Set<String> {
        var names: Set<String> = ["head.weight", "head.bias"]
        if globalPool { names.formUnion(["fc_norm.weight", "fc_norm.bias"]) }
        return names
    }

    /// Loads pretrained weights as `main_finetune.py` does: head.* of another shape are
    /// dropped; pos_embed is resized with bicubic interpolation when the file's patch grid
    /// differs (`interpolate_pos_embed`); every classifier tensor the file has is copied
    /// (a shape mismatch is an error, as in `load_state_dict`); the missing tensors must be
    /// exactly `pretrainedMissingAllowed` and other file tensors are ignored; finally
    /// `head.weight` is drawn again from trunc_normal(2e-5). Nothing changes unless everything fits.
    @discardableResult
    public func loadPretrainedEncoder(from file: WeightsFile) throws -> PretrainedEncoderLoad {
        func failure(_ problem: String) -> WeightsError { WeightsError(path: file.path, problem: problem) }
        var sources: [String: (shape: [Int], values: [Float])] = [:]
        var fileOrder: [String] = []
        for tensor in file.tensors {
            sources[tensor.name] = (tensor.shape, tensor.values)
            fileOrder.append(tensor.name)
        }
        var droppedHead: [String] = []
        for name in ["head.weight", "head.bias"] {
            if let stored = sources[name], stored.shape != table.tensor(named: name)!.shape {
                sources[name] = nil
                droppedHead.append(name)
            }
        }
        var interpolated: (from: Int, to: Int)?
        if let stored = sources["pos_embed"] {
            let width = config.encoderWidth
            guard stored.shape.count == 3, stored.shape[0] == 1, stored.shape[2] == width, stored.shape[1] >= 2 else {
                throw failure("tensor 'pos_embed' has shape \(stored.shape), the model needs [1, \(config.patchCount + 1), \(width)] (another model width?)")
            }
            let oldPatches = stored.shape[1] - 1
            var oldGrid = 0
            while (oldGrid + 1) * (oldGrid + 1) <= oldPatches { oldGrid += 1 }
            guard oldGrid * oldGrid == oldPatches else {
                throw failure("tensor 'pos_embed' holds \(oldPatches) patch positions, not a square grid")
            }
            if oldGrid != config.gridSize {
                let values = interpolatePositionEmbedding(stored.values, width: width, extraTokens: 1,
                                                          from: oldGrid, to: config.gridSize)
                sources["pos_embed"] = ([1, config.patchCount + 1, width], values)
                interpolated = (oldGrid, config.gridSize)
            }
        }
        var missing: [String] = []
        for tensor in table.tensors {
            guard let stored = sources[tensor.name] else { missing.append(tensor.name); continue }
            guard stored.shape == tensor.shape else {
                throw failure("tensor '\(tensor.name)' has shape \(stored.shape), the classifier needs \(tensor.shape) (another model?)")
            }
        }
        let allowed = pretrainedMissingAllowed
        if let absent = missing.first(where: { !allowed.contains($0) }) {
            let others = missing.filter { !allowed.contains($0) }.count - 1
            throw failure("missing tensor '\(absent)'\(others > 0 ? " and \(others) more" : "") (not pretrained weights of \(config.name)?)")
        }
        if Set(missing) != allowed {
            let present = allowed.subtracting(missing).sorted()
            throw failure("holds \(present.joined(separator: ", ")), which pretrained MAE weights do not (a fine-tuned classifier? load it with loadWeights)")
        }
        let unexpected = fileOrder.filter { table.tensor(named: $0) == nil }
        for tensor in table.tensors {
            guard let stored = sources[tensor.name] else { continue }
            stored.values.withUnsafeBufferPointer {
                (parameters.pointer + tensor.offset).update(from: $0.baseAddress!, count: tensor.count)
            }
        }
        resetHeadWeight()
        return PretrainedEncoderLoad(missing: missing, unexpected: unexpected, droppedHead: droppedHead,
                                     interpolatedGrid: interpolated)
    }

    /// Draws `head.weight` again from its initialisation (trunc_normal(2e-5), as
    /// `main_finetune.py` does after loading); `head.bias` is left alone, as there.
    public func resetHeadWeight() {
        let number = table.number(of: "head.weight")!
        initialiseClassifierTensor(number, parameters.pointer, table: table, seed: seed)
    }

    /// Saves every tensor under its official name and shape (the `model` state_dict of a
    /// fine-tuned official checkpoint).
    public func saveWeights(path: String, metadata: [String: String] = [:]) throws {
        try table.writeTensors(path: path, buffer: parameters, prefix: "", metadata: metadata)
    }

    /// Loads weights saved by `saveWeights`, strictly: every tensor present with its shape,
    /// nothing else. The parameters change only if everything fits.
    public func loadWeights(path: String) throws {
        try table.readTensors(path: path, into: parameters, prefix: "")
    }
}
