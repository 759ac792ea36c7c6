import Foundation
import Model
import Options
import System
import Training

/// `mae inspect`: what a checkpoint or weights file holds.
struct InspectCommand: Subcommand {
    static let words = ["inspect"]
    static let spec = CommandSpec(
        name: "mae inspect",
        summary: "Describes a checkpoint or a weights file. For a checkpoint folder (checksums verified): model, step, epoch, "
            + "settings, parameter count and tensors; for a .safetensors or .pth file: its tensors and shapes.",
        usage: "CHECKPOINT|FILE",
        options: [])

    static func run(_ options: ParsedOptions) throws {
        guard options.positional.count == 1, let path = options.positional.first else {
            throw OptionError("mae inspect: expected one checkpoint folder or weights file (see --help)")
        }
        if FileSystem.exists(path + "/" + CheckpointStore.stateFileName),
           case let state = try CheckpointStore.verify(path), state.config.trainingTask != .pretrain {
            // A fine-tuned or probed classifier: its settings and the tensors of its files.
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print("\(state.config.trainingTask.rawValue) checkpoint \(path) (checksums verified): step \(state.step), epoch \(state.epoch)"
                  + (state.bestTestAccuracy.map { ", best test_acc1 \($0)" } ?? ""))
            print("classes: " + (state.classNames ?? []).joined(separator: ", "))
            print("config: " + String(decoding: try encoder.encode(state.config), as: UTF8.self))
            for name in state.checksums.keys.sorted() where name.hasSuffix(".safetensors") {
                let file = try WeightsFile.read(path: path + "/" + name)
                print("\(name): \(file.tensors.count) tensors, \(file.tensors.reduce(0) { $0 + $1.values.count }) values")
                for tensor in file.tensors { print("  \(tensor.name) \(tensor.shape)") }
            }
            return
        }
        if FileSystem.isDirectory(path) {
            let trained = try TrainedModel.load(path: path, model: nil)
            let config = trained.model.config
            print("weights: \(trained.weightsPath)" + (trained.runConfig != nil ? " (checksums verified)" : ""))
            print("model: \(config.name), \(config.imageSize) px, patch \(config.patchSize), encoder \(config.encoderWidth)x\(config.encoderDepth)"
                  + "/\(config.encoderHeads) heads, decoder \(config.decoderWidth)x\(config.decoderDepth)/\(config.decoderHeads) heads")
            if let step = trained.step, let epoch = trained.epoch { print("step: \(step), epoch: \(epoch)") }
            if let run = trained.runConfig {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                print("config: " + String(decoding: try encoder.encode(run), as: UTF8.self))
            }
            print("parameters: \(trained.model.table.count) trainable")
            for tensor in trained.model.table.tensors { print("  \(tensor.name) \(tensor.shape)") }
            return
        }
        let file = try WeightsFile.read(path: path)
        print("file: \(path), \(file.tensors.count) tensors, \(file.tensors.reduce(0) { $0 + $1.values.count }) values")
        if !file.otherKeys.isEmpty { print("also: " + file.otherKeys.joined(separator: ", ")) }
        for tensor in file.tensors { print("  \(tensor.name) \(tensor.shape) \(tensor.dtype)") }
    }
}
