import Foundation
import Kernels
import Model
import Options
import Training

/// `mae reference-step`: one forward and backward pass on given weights, images and
/// masking noise (or, with `--task finetune`, soft targets), written out for comparison
/// with the official PyTorch model (tools/compare_reference_step.py).
struct ReferenceStepCommand: Subcommand {
    static let words = ["reference-step"]

    static let spec = CommandSpec(
        name: "mae reference-step",
        summary: """
            One forward and backward pass of the model for comparison with the official PyTorch \
            code. Loads --weights (official state_dict names), the images [N,3,S,S] (already \
            normalised) and the masking noise [N,L] (each file's tensor 'images'/'noise', or its \
            only tensor), and writes to --out: 'loss' [1], 'pred' [N,L,p*p*3], 'mask' [N,L] \
            (1 = removed) and every trainable tensor's gradient under its official name. Name the \
            model with --model (a known name) or with --config, a ModelConfig JSON file for other \
            sizes, such as the test fixtures' micro model: {"name": "mae_micro_patch4", \
            "image_size": 16, "patch_size": 4, "channels": 3, "encoder_width": 32, \
            "encoder_depth": 2, "encoder_heads": 2, "decoder_width": 16, "decoder_depth": 1, \
            "decoder_heads": 2, "mlp_ratio": 4}. With --task finetune the model is the fine-tuning \
            classifier (the official models_vit.VisionTransformer: global pooling + fc_norm, or the \
            class token with --cls-token), --weights its state_dict (the class count is read from \
            head.weight), --targets the soft targets [N,C] (tensor 'targets' or the only one) instead \
            of --noise; drop path is off; it writes 'loss' [1], 'logits' [N,C] and every gradient.
            """,
        options: [
            OptionSpec("task", value: "TASK", default: "pretrain", help: "pretrain (the MAE) or finetune (the classifier)"),
            OptionSpec("model", value: "NAME", help: "model: " + ModelConfig.knownNames.joined(separator: ", ")),
            OptionSpec("config", value: "FILE", help: "a ModelConfig JSON file instead of --model"),
            OptionSpec("input-size", value: "S", help: "image side in pixels (default: the model's)"),
            OptionSpec("weights", value: "FILE", help: "weights, safetensors with official names"),
            OptionSpec("images", value: "FILE", help: "images [N,3,S,S], safetensors"),
            OptionSpec("noise", value: "FILE", help: "masking noise [N,L], safetensors; argsort ascending keeps the smallest"),
            OptionSpec("targets", value: "FILE", help: "finetune: soft targets [N,C], safetensors"),
            .flag("cls-token", help: "finetune: classify the class token after norm instead of global pooling + fc_norm"),
            OptionSpec("out", value: "FILE", help: "output safetensors file"),
            OptionSpec("mask-ratio", value: "R", default: "0.75", help: "fraction of patches removed"),
            .flag("norm-pix-loss", help: "normalise each target patch by its mean and unbiased variance"),
            OptionSpec("threads", value: "T", default: "1", help: "threads for matrix products and kernels"),
            OptionSpec("precision", value: "fp32|bf16", default: "fp32",
                       help: Precision.optionHelp + "; compare bf16 with the official model under torch.autocast"),
            OptionSpec("save-weights", value: "FILE",
                       help: "also save the loaded weights again (to check that the official model loads our files strictly)"),
        ])

    static func run(_ options: ParsedOptions) throws {
        switch options.string("task") ?? "pretrain" {
        case "pretrain":
            for name in ["targets"] where options.has(name) {
                throw OptionError("mae reference-step: --\(name) belongs to --task finetune")
            }
            if options.flag("cls-token") { throw OptionError("mae reference-step: --cls-token belongs to --task finetune") }
            try runPretrain(options)
        case "finetune":
            if options.has("noise") { throw OptionError("mae reference-step: --task finetune takes --targets, not --noise") }
            if options.flag("norm-pix-loss") { throw OptionError("mae reference-step: --norm-pix-loss belongs to --task pretrain") }
            try runFinetune(options)
        case let task:
            throw OptionError("mae reference-step: unknown --task '\(task)'; use pretrain or finetune")
        }
    }

    private static func runPretrain(_ options: ParsedOptions) throws {
        let config = try modelConfig(options)
        let weightsPath = try options.required("weights")
        let imagesPath = try options.required("images")
        let noisePath = try options.required("noise")
        let outPath = try options.required("out")
        let maskRatio = try options.double("mask-ratio", expectation: "a ratio in [0, 1)") { $0 >= 0 && $0 < 1 }
        let threads = try options.int("threads", in: 1 ... 1024)
        let precision = try WorkerOptions.parsePrecision(try options.required("precision")) {
            OptionError("mae reference-step: " + $0)
        }
        let kept = config.keptCount(maskRatio: maskRatio)
        guard kept >= 1, kept < config.patchCount else {
            throw OptionError("mae reference-step: --mask-ratio \(maskRatio) keeps \(kept) of \(config.patchCount) patches; at least one must be kept and one removed")
        }

        let images = try SafeTensorsFile.read(path: imagesPath)
        let noise = try SafeTensorsFile.read(path: noisePath)
        let imagesTensor = try onlyTensor(images, preferring: "images")
        let side = config.imageSize
        guard imagesTensor.shape.count == 4, imagesTensor.shape[0] >= 1,
              Array(imagesTensor.shape[1...]) == [config.channels, side, side] else {
            throw OptionError("\(imagesPath): tensor '\(imagesTensor.name)' has shape \(imagesTensor.shape), expected [N, \(config.channels), \(side), \(side)] for \(config.name)")
        }
        let batch = imagesTensor.shape[0]
        let noiseTensor = try onlyTensor(noise, preferring: "noise")
        guard noiseTensor.shape == [batch, config.patchCount] else {
            throw OptionError("\(noisePath): tensor '\(noiseTensor.name)' has shape \(noiseTensor.shape), expected [\(batch), \(config.patchCount)] (batch, patches)")
        }

        Parallel.setThreads(threads)
        let model = MAEModel(config: config, seed: 0)
        try model.loadWeights(path: weightsPath)
        model.precision = precision
        if let savePath = options.string("save-weights") {
            try model.saveWeights(path: savePath, metadata: ["model": config.name, "source": "mae reference-step"])
        }
        let imageBuffer = try images.floatBuffer(named: imagesTensor.name)
        let noiseBuffer = try noise.floatBuffer(named: noiseTensor.name)
        // Gradients written over (as a training step's first micro-batch writes them).
        let start = DispatchTime.now().uptimeNanoseconds
        let loss = model.forwardBackward(images: imageBuffer.pointer, noise: noiseBuffer.pointer, batchSize: batch,
                                         maskRatio: maskRatio, normPixLoss: options.flag("norm-pix-loss"),
                                         overwritesGradients: true)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9

        let patches = config.patchCount
        let lossBuffer = FloatBuffer([loss])
        var tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = []
        tensors.append((name: "loss", shape: [1], data: UnsafeBufferPointer(lossBuffer.buffer)))
        tensors.append((name: "pred", shape: [batch, patches, config.patchDimension],
                        data: UnsafeBufferPointer(start: model.prediction, count: batch * patches * config.patchDimension)))
        tensors.append((name: "mask", shape: [batch, patches],
                        data: UnsafeBufferPointer(start: model.mask, count: batch * patches)))
        for tensor in model.table.tensors {
            tensors.append((name: tensor.name, shape: tensor.shape,
                            data: UnsafeBufferPointer(start: model.gradients.pointer + tensor.offset, count: tensor.count)))
        }
        try withExtendedLifetime(lossBuffer) {
            try SafeTensorsFile.write(path: outPath, tensors: tensors, metadata: [
                "model": config.name, "mask_ratio": String(maskRatio),
                "norm_pix_loss": String(options.flag("norm-pix-loss")), "precision": precision.rawValue,
                "source": "mae reference-step",
            ])
        }
        print("model=\(config.name) input=\(side) batch=\(batch) loss=\(loss) step_s=\(String(format: "%.3f", seconds)) out=\(outPath)")
    }

    /// The model from --model (with --input-size) or --config, exactly one of them.
    static func modelConfig(_ options: ParsedOptions) throws -> ModelConfig {
        let inputSize = try options.optionalInt("input-size", in: 1 ... 100_000)
        var config: ModelConfig
        switch (options.string("model"), options.string("config")) {
        case (let name?, nil):
            config = try ModelConfig.named(name, imageSize: inputSize)
        case (nil, let path?):
            let data: Data
            do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
                throw OptionError("mae reference-step: cannot read --config \(path): \(error.localizedDescription)")
            }
            do { config = try JSONDecoder().decode(ModelConfig.self, from: data) } catch {
                let reason = String(describing: error).split(whereSeparator: \.isNewline).joined(separator: " ")
                throw OptionError("mae reference-step: --config \(path) is not a ModelConfig JSON (\(reason))")
            }
            if let inputSize { config.imageSize = inputSize }
        case (nil, nil):
            throw OptionError("mae reference-step: give --model NAME or --config FILE")
        case (_?, _?):
            throw OptionError("mae reference-step: give --model or --config, not both")
        }
        // The model's own checks are preconditions; bad user input stops here with a message.
        try config.validate()
        return config
    }

    /// The tensor called `name`, or the file's only tensor.
    static func onlyTensor(_ file: SafeTensorsFile, preferring name: String) throws -> SafeTensorsFile.Tensor {
        if let tensor = file.tensor(named: name) { return tensor }
        guard file.tensors.count == 1 else {
            throw OptionError("\(file.path): expected a tensor named '\(name)' or a single tensor, found \(file.tensors.count): \(file.names.prefix(5).joined(separator: ", "))")
        }
        return file.tensors[0]
    }
}
