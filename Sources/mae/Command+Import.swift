import Model
import Options
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
