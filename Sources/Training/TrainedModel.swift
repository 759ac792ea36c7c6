import Foundation
import Model
import System

/// A model loaded for use outside training (`mae reconstruct`, and the other tools that
/// read weights): from a checkpoint folder, a run folder (its newest complete checkpoint),
/// or a `model.safetensors` file under the official names.
public struct TrainedModel {
    public let model: MAEModel
    /// The checkpoint's settings; nil for a bare weights file.
    public let runConfig: RunConfig?
    public let step: Int?
    public let epoch: Int?
    /// Where the weights came from.
    public let weightsPath: String

    /// What `mae import` recorded about the loss (nil otherwise).
    var importedNormPixLoss: Bool? = nil

    /// Whether the model was trained to predict per-patch normalised pixels, when the
    /// source says (a checkpoint, an imported folder); nil for a bare weights file.
    public var normPixLoss: Bool? { runConfig?.normPixLoss ?? importedNormPixLoss }

    /// The weights file `path` stands for: a checkpoint's or an imported folder's
    /// `model.safetensors`, a run folder's newest complete checkpoint's, or `path` itself.
    public static func weightsPath(of path: String) throws -> String {
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        guard FileSystem.isDirectory(trimmed) else { return trimmed }
        if FileSystem.exists(trimmed + "/" + WeightsExchange.importedFileName)
            || FileSystem.exists(trimmed + "/" + CheckpointStore.stateFileName) {
            return trimmed + "/" + CheckpointFiles.modelFileName
        }
        guard let newest = try CheckpointStore(runDirectory: trimmed, warn: { _ in }).newestValid()?.entry.path else {
            throw TrainingError.invalidConfiguration("\(path) holds no complete checkpoint")
        }
        return newest + "/" + CheckpointFiles.modelFileName
    }

    /// Loads `path`. A checkpoint's checksums are verified and its own configuration used;
    /// a weights file needs `model` (the name, and the image size when not the default).
    /// Throws a one-line error naming the problem (another model's weights, a damaged
    /// checkpoint, a missing file).
    public static func load(path: String, model configForFile: ModelConfig?) throws -> TrainedModel {
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        var checkpoint = trimmed
        let imported = trimmed + "/" + WeightsExchange.importedFileName
        if FileSystem.isDirectory(trimmed), FileSystem.exists(imported) {
            // A folder `mae import` wrote.
            let description: WeightsExchange.ImportedModel
            do {
                description = try JSONDecoder().decode(WeightsExchange.ImportedModel.self,
                                                       from: Data(try FileSystem.readFile(imported)))
            } catch {
                throw TrainingError.invalidConfiguration("\(imported) cannot be read: \(error)")
            }
            if let configForFile, configForFile != description.model {
                throw TrainingError.invalidConfiguration(
                    "\(trimmed) holds \(describe(description.model)), not \(describe(configForFile)); leave out --model")
            }
            let model = MAEModel(config: description.model, seed: 0)
            let weights = trimmed + "/" + CheckpointFiles.modelFileName
            try model.loadWeights(path: weights)
            return TrainedModel(model: model, runConfig: nil, step: nil, epoch: nil, weightsPath: weights,
                                importedNormPixLoss: description.normPixLoss)
        }
        if FileSystem.isDirectory(trimmed), !FileSystem.exists(trimmed + "/" + CheckpointStore.stateFileName) {
            // A run folder: its newest complete checkpoint.
            let store = CheckpointStore(runDirectory: trimmed, warn: { _ in })
            guard let newest = try store.newestValid()?.entry.path else {
                throw TrainingError.invalidConfiguration(
                    "\(path) holds no complete checkpoint (expected a checkpoint folder with \(CheckpointStore.stateFileName), "
                    + "a run folder with checkpoints/step-NNNNNNNN/, or a .safetensors file)")
            }
            checkpoint = newest
        }
        if FileSystem.isDirectory(checkpoint) {
            let state = try CheckpointStore.verify(checkpoint)
            guard state.config.trainingTask == .pretrain else {
                throw TrainingError.invalidConfiguration(
                    "\(checkpoint) is a \(state.config.trainingTask.rawValue) checkpoint (a classifier), not a pretrained MAE; "
                    + "pass a pretraining checkpoint or run folder")
            }
            if let configForFile, configForFile != state.config.model {
                throw TrainingError.invalidConfiguration(
                    "\(checkpoint) holds \(describe(state.config.model)), not \(describe(configForFile)); "
                    + "leave out --model to use the checkpoint's own")
            }
            let model = MAEModel(config: state.config.model, seed: 0)
            let weights = checkpoint + "/" + CheckpointFiles.modelFileName
            try model.loadWeights(path: weights)
            return TrainedModel(model: model, runConfig: state.config, step: state.step, epoch: state.epoch,
                                weightsPath: weights)
        }
        guard FileSystem.exists(checkpoint) else {
            throw TrainingError.invalidConfiguration("\(path) does not exist (expected a checkpoint or run folder, or a .safetensors file)")
        }
        guard let configForFile else {
            throw TrainingError.invalidConfiguration(
                "\(path) is a weights file: pass --model NAME (and --input-size when not the model's default) to say which model it holds")
        }
        let model = MAEModel(config: configForFile, seed: 0)
        try model.loadWeights(path: checkpoint)
        return TrainedModel(model: model, runConfig: nil, step: nil, epoch: nil, weightsPath: checkpoint)
    }
}
