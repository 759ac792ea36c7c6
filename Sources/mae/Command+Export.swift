import Model
import Options
import Training

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
