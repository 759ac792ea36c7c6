import Foundation
import Kernels
import Model
import Options
import System
import Training

/// `mae import`: official weights (safetensors or `.pth`) into a folder the tools read.
struct ImportCommand: Subcommand {
    static let words = ["import"]
    static let spec = CommandSpec(
        name: "mae import",
        summary: "Reads official MAE weights into a folder the other tools read. A .safetensors file, or a .pth written by torch.save (the official "
            + "releases and training checkpoints, whose 'model' entry is the state dict), becomes DIR/model.safetensors "
            + "and DIR/model.json, which mae reconstruct, export and inspect take as --checkpoint DIR and mae-worker as --init-weights DIR. "
            + "Encoder-only weights (mae_pretrain_vit_*.pth) get a freshly initialised decoder.",
        options: [
            OptionSpec("weights", value: "FILE", help: "the .safetensors or .pth file (required)"),
            OptionSpec("model", value: "NAME", help: "the model it holds: " + ModelConfig.knownNames.joined(separator: ", ") + " (required)"),
            OptionSpec("input-size", value: "S", help: "image size (default: the model's own)"),
            .flag("norm-pix-loss", help: "the weights were trained with per-patch normalised pixels (reconstructions are shown un-normalised)"),
            OptionSpec("seed", value: "S", default: "0", help: "seed of the decoder's initialisation for encoder-only weights"),
            OptionSpec("out", value: "DIR", help: "the folder to write (required)"),
        ])

    static func run(_ options: ParsedOptions) throws {
        let weights = try options.required("weights")
        let out = try options.required("out")
        let config: ModelConfig
        do {
            config = try ModelConfig.named(try options.required("model"), imageSize: try options.optionalInt("input-size", in: 1...8192))
        } catch let error as ModelError { throw OptionError("mae import: \(error)") }
        let imported = try WeightsExchange.importWeights(
            from: weights, config: config, normPixLoss: options.flag("norm-pix-loss"),
            seed: UInt64(try options.int("seed", in: 0...Int.max)), into: out, progress: { print($0) })
        print("imported \(config.name) into \(out)" + (imported.initialisedDecoderTensors.isEmpty ? "" : " (decoder initialised)"))
    }
}

/// `mae export`: a checkpoint's weights for PyTorch.
struct ExportCommand: Subcommand {
    static let words = ["export"]
    static let spec = CommandSpec(
        name: "mae export",
        summary: "Writes a model's weights as safetensors for PyTorch. --format mae: the whole model under the official "
            + "names (MaskedAutoencoderViT.load_state_dict(strict=True)); --format timm: the encoder alone under timm's "
            + "VisionTransformer names (timm.create_model('vit_base_patch16_224', num_classes=0) loads it strictly).",
        options: [
            OptionSpec("checkpoint", value: "DIR|FILE",
                       help: "a checkpoint folder, a run folder (its newest checkpoint), a folder of mae import, or a model .safetensors (required)"),
            OptionSpec("model", value: "NAME", help: "the model a .safetensors file holds"),
            OptionSpec("input-size", value: "S", help: "image size of a .safetensors file's model"),
            OptionSpec("format", value: "mae|timm", default: "mae", help: "which names and tensors to write"),
            OptionSpec("out", value: "FILE.safetensors", help: "the file to write (required)"),
        ])

    static func run(_ options: ParsedOptions) throws {
        let checkpoint = try options.required("checkpoint"), out = try options.required("out")
        guard let format = WeightsExchange.ExportFormat(rawValue: try options.required("format")) else {
            throw OptionError("mae export: --format expects mae or timm, got '\(options.string("format") ?? "")'")
        }
        var fileModel: ModelConfig?
        if let name = options.string("model") {
            do {
                fileModel = try ModelConfig.named(name, imageSize: try options.optionalInt("input-size", in: 1...8192))
            } catch let error as ModelError { throw OptionError("mae export: \(error)") }
        }
        print("loading \(checkpoint)")
        let trained = try TrainedModel.load(path: checkpoint, model: fileModel)
        var metadata = ["format": "pt", "model": trained.model.config.name]
        if let step = trained.step { metadata["step"] = "\(step)" }
        if let epoch = trained.epoch { metadata["epoch"] = "\(epoch)" }
        print("writing \(format.rawValue) weights of \(trained.model.config.name)")
        try WeightsExchange.export(trained.model, format: format, to: out, metadata: metadata)
        print("wrote \(out)")
    }
}

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
