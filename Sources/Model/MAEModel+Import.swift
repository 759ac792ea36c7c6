import Kernels

// Official weights into this model (`mae import`), and this model's encoder under timm's
// names (`mae export --format timm`).

extension MAEModel {
    /// Whether `name` is a decoder tensor (or the mask token), which encoder-only weights
    /// (the official `mae_pretrain_vit_*.pth` releases, timm exports) do not have.
    public static func isDecoderTensor(_ name: String) -> Bool {
        name.hasPrefix("decoder_") || name.hasPrefix("decoder.") || name == "mask_token"
    }

    /// Copies `file`'s tensors into the parameters under the official names, strictly: every
    /// encoder tensor must be there with its exact shape, no tensor may be unknown to the
    /// model, and the fixed position embeddings, when present, must be this model's sin-cos
    /// tables. Decoder tensors may all be absent (encoder-only weights): the decoder then
    /// keeps its initialisation. Nothing changes unless everything fits.
    /// Returns the decoder tensors that kept their initialisation (empty when all were loaded).
    @discardableResult
    public func importWeights(from file: WeightsFile) throws -> [String] {
        func failure(_ problem: String) -> WeightsError { WeightsError(path: file.path, problem: problem) }
        let fixed: [(name: String, buffer: FloatBuffer)] = [
            (Self.encoderPositionEmbeddingName, encoderPositionEmbedding),
            (Self.decoderPositionEmbeddingName, decoderPositionEmbedding),
        ]
        let known = Set(table.tensors.map(\.name)).union(fixed.map(\.name))
        if let extra = file.tensors.first(where: { !known.contains($0.name) }) {
            let hint = extra.name.hasPrefix("head.") || extra.name.hasPrefix("fc_norm.")
                ? " (a fine-tuned classifier, not MAE pretraining weights?)" : " (another model?)"
            throw failure("unexpected tensor '\(extra.name)' \(extra.shape) that \(config.name) does not have\(hint)")
        }
        var sources: [(tensor: TensorInfo, values: [Float])] = []
        var missingEncoder: [String] = [], missingDecoder: [String] = []
        for tensor in table.tensors {
            guard let stored = file.tensor(named: tensor.name) else {
                if Self.isDecoderTensor(tensor.name) { missingDecoder.append(tensor.name) } else { missingEncoder.append(tensor.name) }
                continue
            }
            guard stored.shape == tensor.shape else {
                throw failure("tensor '\(tensor.name)' has shape \(stored.shape), \(config.name) needs \(tensor.shape) (another model or image size?)")
            }
            sources.append((tensor, stored.values))
        }
        if let first = missingEncoder.first {
            let others = missingEncoder.count > 1 ? " and \(missingEncoder.count - 1) more" : ""
            throw failure("missing tensor '\(first)'\(others) (not weights of \(config.name)?)")
        }
        let decoderCount = table.tensors.filter { Self.isDecoderTensor($0.name) }.count
        if !missingDecoder.isEmpty && missingDecoder.count != decoderCount {
            throw failure("missing decoder tensor '\(missingDecoder[0])' while others are present (a damaged file?)")
        }
        for (name, buffer) in fixed {
            guard let stored = file.tensor(named: name) else { continue }
            let shape = [1, config.patchCount + 1, buffer.count / (config.patchCount + 1)]
            guard stored.shape == shape else {
                throw failure("tensor '\(name)' has shape \(stored.shape), \(config.name) needs \(shape) (another image size, patch size or width?)")
            }
            var worst: Float = 0
            for index in 0..<buffer.count {
                let difference = abs(stored.values[index] - buffer.pointer[index])
                if !(difference <= worst) { worst = difference }  // NaN fails too
            }
            guard worst <= Self.positionEmbeddingTolerance else {
                throw failure("tensor '\(name)' differs from the fixed 2-D sin-cos embedding by \(worst): not this model's layout")
            }
        }
        for (tensor, values) in sources {
            values.withUnsafeBufferPointer { (parameters.pointer + tensor.offset).update(from: $0.baseAddress!, count: tensor.count) }
        }
        parametersDidChange()
        return missingDecoder
    }

    /// Saves the encoder alone under the names of timm's `VisionTransformer` (the same as
    /// the official encoder's: cls_token, pos_embed, patch_embed.proj, blocks.N, norm),
    /// without decoder tensors or the mask token, so that
    /// `timm.create_model(<the model's ViT>, num_classes=0)` loads it strictly.
    public func saveEncoderForTimm(path: String, metadata: [String: String] = [:]) throws {
        var tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = []
        for tensor in table.tensors where !Self.isDecoderTensor(tensor.name) {
            tensors.append((tensor.name, tensor.shape,
                            UnsafeBufferPointer(start: parameters.pointer + tensor.offset, count: tensor.count)))
            if tensor.name == "cls_token" {
                // timm keeps pos_embed (a parameter there) right after cls_token.
                tensors.append((Self.encoderPositionEmbeddingName, [1, config.patchCount + 1, config.encoderWidth],
                                UnsafeBufferPointer(start: encoderPositionEmbedding.pointer, count: encoderPositionEmbedding.count)))
            }
        }
        try SafeTensorsFile.write(path: path, tensors: tensors, metadata: metadata)
    }
}
