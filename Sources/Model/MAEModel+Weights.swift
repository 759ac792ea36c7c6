import Kernels

// Weights on disk under the official PyTorch state_dict names (models_mae.py), so a file
// we save loads strictly into the official model and an official export loads here.

/// A weights file that does not fit the model, with the file and the problem.
public struct WeightsError: Error, CustomStringConvertible, Sendable {
    /// The file.
    public let path: String
    /// What does not fit, one line, naming the tensor.
    public let problem: String

    public var description: String { "\(path): \(problem)" }
}

extension ParameterTable {
    /// `name` under `prefix`: "exp_avg" and "blocks.0.norm1.weight" give
    /// "exp_avg.blocks.0.norm1.weight"; an empty prefix leaves the name alone; a prefix
    /// that already ends in "." is used as it is.
    static func prefixed(_ name: String, _ prefix: String) -> String {
        prefix.isEmpty ? name : prefix.hasSuffix(".") ? prefix + name : prefix + "." + name
    }

    /// Writes several flat buffers laid out by this table into one safetensors file, each
    /// tensor under its prefixed official name (for the optimizer: "exp_avg" and "exp_avg_sq").
    public func writeTensors(path: String, buffers: [(prefix: String, buffer: FloatBuffer)],
                             metadata: [String: String] = [:]) throws {
        var tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = []
        for (prefix, buffer) in buffers {
            precondition(buffer.count == count, "buffer of \(buffer.count) floats does not match the table's \(count)")
            for tensor in self.tensors {
                tensors.append((name: Self.prefixed(tensor.name, prefix), shape: tensor.shape,
                                data: UnsafeBufferPointer(start: buffer.pointer + tensor.offset, count: tensor.count)))
            }
        }
        try SafeTensorsFile.write(path: path, tensors: tensors, metadata: metadata)
    }

    /// Writes one flat buffer laid out by this table, each tensor under `prefix`.`name`.
    public func writeTensors(path: String, buffer: FloatBuffer, prefix: String,
                             metadata: [String: String] = [:]) throws {
        try writeTensors(path: path, buffers: [(prefix: prefix, buffer: buffer)], metadata: metadata)
    }

    /// Fills `buffer` from the tensors named `prefix`.`name` of `file`, strictly: every
    /// table tensor must be there with its exact shape, and no other tensor may carry the
    /// prefix (with an empty prefix: no other tensor at all, except those in `allowing`).
    /// Tensors under other prefixes are left alone. Nothing is written to `buffer` unless
    /// everything fits.
    public func readTensors(from file: SafeTensorsFile, into buffer: FloatBuffer, prefix: String,
                            allowing allowed: Set<String> = []) throws {
        precondition(buffer.count == count, "buffer of \(buffer.count) floats does not match the table's \(count)")
        func failure(_ problem: String) -> WeightsError { WeightsError(path: file.path, problem: problem) }
        var sources: [(tensor: TensorInfo, name: String)] = []
        var missing: [String] = []
        for tensor in tensors {
            let name = Self.prefixed(tensor.name, prefix)
            guard let stored = file.tensor(named: name) else { missing.append(name); continue }
            guard stored.shape == tensor.shape else {
                throw failure("tensor '\(name)' has shape \(stored.shape), the model needs \(tensor.shape)")
            }
            guard stored.dtype.convertsToFloat else {
                throw failure("tensor '\(name)' has dtype \(stored.dtype.rawValue); weights must be F32, F16, BF16 or F64")
            }
            sources.append((tensor, name))
        }
        if let first = missing.first {
            let others = missing.count > 1 ? " and \(missing.count - 1) more" : ""
            throw failure("missing tensor '\(first)'\(others) (another model, or not a file of this model?)")
        }
        let expected = Set(sources.map(\.name)).union(allowed)
        let marker = Self.prefixed("", prefix)
        if let extra = file.tensors.first(where: { $0.name.hasPrefix(marker) && !expected.contains($0.name) }) {
            throw failure("unexpected tensor '\(extra.name)' \(extra.shape) that the model does not have (another model?)")
        }
        for (tensor, name) in sources {
            try file.copyFloats(named: name, into: buffer.pointer + tensor.offset, count: tensor.count)
        }
    }

    /// Reads `path` and fills `buffer` as `readTensors(from:into:prefix:)` does.
    public func readTensors(path: String, into buffer: FloatBuffer, prefix: String) throws {
        try readTensors(from: SafeTensorsFile.read(path: path), into: buffer, prefix: prefix)
    }
}

extension MAEModel {
    /// Official name of the encoder's fixed position embedding.
    public static let encoderPositionEmbeddingName = "pos_embed"
    /// Official name of the decoder's fixed position embedding.
    public static let decoderPositionEmbeddingName = "decoder_pos_embed"
    /// How far a stored fixed position embedding may be from ours and still count as the same.
    public static let positionEmbeddingTolerance: Float = 1e-5

    /// The fixed embeddings with their official names and shapes [1, L+1, width].
    private var positionEmbeddings: [(name: String, shape: [Int], buffer: FloatBuffer)] {
        [(Self.encoderPositionEmbeddingName, [1, config.patchCount + 1, config.encoderWidth], encoderPositionEmbedding),
         (Self.decoderPositionEmbeddingName, [1, config.patchCount + 1, config.decoderWidth], decoderPositionEmbedding)]
    }

    /// Saves every trainable tensor and the fixed position embeddings under the official
    /// state_dict names and shapes, so the official PyTorch model loads the file strictly.
    public func saveWeights(path: String, metadata: [String: String] = [:]) throws {
        var tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = []
        let fixed = positionEmbeddings
        for tensor in table.tensors {
            tensors.append((name: tensor.name, shape: tensor.shape,
                            data: UnsafeBufferPointer(start: parameters.pointer + tensor.offset, count: tensor.count)))
            // The official state_dict keeps each fixed embedding next to its learnt token.
            let follower = tensor.name == "cls_token" ? fixed[0] : tensor.name == "mask_token" ? fixed[1] : nil
            if let follower {
                tensors.append((name: follower.name, shape: follower.shape,
                                data: UnsafeBufferPointer(start: follower.buffer.pointer, count: follower.buffer.count)))
            }
        }
        try SafeTensorsFile.write(path: path, tensors: tensors, metadata: metadata)
    }

    /// Loads weights saved by `saveWeights` or exported from the official model, strictly:
    /// a missing, extra or mis-shaped tensor is an error naming it; the fixed position
    /// embeddings must be present and equal ours within `positionEmbeddingTolerance`
    /// (they are checked, never loaded). The parameters change only if everything fits.
    public func loadWeights(path: String) throws {
        let file = try SafeTensorsFile.read(path: path)
        func failure(_ problem: String) -> WeightsError { WeightsError(path: path, problem: problem) }
        for (name, shape, buffer) in positionEmbeddings {
            guard let stored = file.tensor(named: name) else {
                throw failure("missing tensor '\(name)' (the fixed position embedding \(shape))")
            }
            guard stored.shape == shape else {
                throw failure("tensor '\(name)' has shape \(stored.shape), the model needs \(shape) (another image size, patch size or width?)")
            }
            let values = try file.floats(named: name)
            var worst: Float = 0
            var worstIndex = 0
            for index in 0 ..< buffer.count {
                let difference = abs(values[index] - buffer.pointer[index])
                // NaN must fail too, hence the negated comparison.
                if !(difference <= worst) { worst = difference; worstIndex = index }
            }
            guard worst <= Self.positionEmbeddingTolerance else {
                throw failure("tensor '\(name)' differs from the fixed 2-D sin-cos embedding by \(worst) at element \(worstIndex) (more than \(Self.positionEmbeddingTolerance)): not this model's layout")
            }
        }
        try table.readTensors(from: file, into: parameters, prefix: "", allowing: Set(positionEmbeddings.map(\.name)))
        parametersDidChange()
    }

    /// Writes a buffer laid out like the parameters (an optimizer moment) under `prefix`.
    public func writeTensors(path: String, buffer: FloatBuffer, prefix: String, metadata: [String: String] = [:]) throws {
        try table.writeTensors(path: path, buffer: buffer, prefix: prefix, metadata: metadata)
    }

    /// Fills a buffer laid out like the parameters from the tensors under `prefix` in `path`.
    public func readTensors(path: String, into buffer: FloatBuffer, prefix: String) throws {
        try table.readTensors(path: path, into: buffer, prefix: prefix)
    }
}
