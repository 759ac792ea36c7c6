import Figures
import Foundation
import Model
import System
#if canImport(Glibc)
import Glibc
#endif

/// Weights in and out of the official formats: `mae import` (official safetensors or
/// `.pth` into a folder the tools read), `mae export` (the whole model under the official
/// names, or the encoder under timm's).
public enum WeightsExchange {
    /// The description `mae import` writes beside `model.safetensors`.
    public struct ImportedModel: Codable, Equatable {
        public var model: ModelConfig
        public var normPixLoss: Bool
        /// The file the weights came from.
        public var source: String
        /// Decoder tensors that kept their initialisation (encoder-only weights); empty when
        /// the file had the whole model.
        public var initialisedDecoderTensors: [String]
        public var seed: UInt64

        enum CodingKeys: String, CodingKey {
            case model, normPixLoss = "norm_pix_loss", source
            case initialisedDecoderTensors = "initialised_decoder_tensors", seed
        }
    }

    public static let importedFileName = "model.json"

    /// What an export writes.
    public enum ExportFormat: String, CaseIterable, Sendable {
        /// Every tensor under the official names (`MaskedAutoencoderViT`, strict).
        case mae
        /// The encoder under timm's `VisionTransformer` names, no decoder or mask token.
        case timm
    }

    /// Writes `body`'s output to a temporary path beside `path`, then renames it, so that
    /// `path` holds the old file or the whole new one; the temporary file is removed on failure.
    public static func writeAtomically(path: String, _ body: (String) throws -> Void) throws {
        let temporary = path + ".tmp-\(getpid())"
        do {
            try body(temporary)
            try FileSystem.rename(temporary, path)
        } catch {
            unlink(temporary)
            throw TrainingError.invalidConfiguration("cannot write \(path): \(error)")
        }
    }

    /// Reads official weights (safetensors or `.pth`) for `config` into a new model and
    /// writes `directory/model.safetensors` and `directory/model.json`. The decoder of
    /// encoder-only weights is initialised as a fresh model's with `seed`. Returns the
    /// description written.
    public static func importWeights(from path: String, config: ModelConfig, normPixLoss: Bool, seed: UInt64,
                                     into directory: String, progress: (String) -> Void) throws -> ImportedModel {
        progress("reading \(path)")
        let file = try WeightsFile.read(path: path)
        progress("\(file.tensors.count) tensors, \(file.tensors.reduce(0) { $0 + $1.values.count }) values"
                 + (file.otherKeys.isEmpty ? "" : "; also in the file: " + file.otherKeys.joined(separator: ", ")))
        let model = MAEModel(config: config, seed: seed)
        let initialised = try model.importWeights(from: file)
        if !initialised.isEmpty {
            progress("encoder-only weights: the decoder (\(initialised.count) tensors) is initialised with seed \(seed)")
        }
        try TrainingError.reportingSystemCalls { try FileSystem.makeDirectories(directory) }
        let description = ImportedModel(model: config, normPixLoss: normPixLoss, source: path,
                                        initialisedDecoderTensors: initialised, seed: seed)
        let weights = directory + "/" + CheckpointFiles.modelFileName
        try writeAtomically(path: weights) { try model.saveWeights(path: $0, metadata: ["format": "pt"]) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let json = Array(try encoder.encode(description)) + [0x0A]
        try writeAtomically(path: directory + "/" + importedFileName) { try FileSystem.writeFile($0, bytes: json) }
        progress("wrote \(weights)")
        return description
    }

    /// Writes `model` to `path` in `format` (temporary file, then rename).
    public static func export(_ model: MAEModel, format: ExportFormat, to path: String, metadata: [String: String]) throws {
        try writeAtomically(path: path) { temporary in
            switch format {
            case .mae: try model.saveWeights(path: temporary, metadata: metadata)
            case .timm: try model.saveEncoderForTimm(path: temporary, metadata: metadata)
            }
        }
    }
}
