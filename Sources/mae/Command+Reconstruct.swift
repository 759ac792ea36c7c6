import Figures
import Foundation
import Kernels
import Model
import Options
import Training

/// `mae reconstruct`: the official demo's figure for a trained model (original, masked,
/// reconstruction, reconstruction with the visible patches pasted back), or one image at
/// several mask ratios.
struct ReconstructCommand: Subcommand {
    static let words = ["reconstruct"]
    static let spec = CommandSpec(
        name: "mae reconstruct",
        summary: "Draws a PNG of a model's reconstructions. One row per image with the official demo's four panels "
            + "(original, masked, reconstruction, reconstruction + visible), or with --mask-ratios one image at each ratio. "
            + "Images go through the evaluation transform (resize, central crop) at the model's size.",
        usage: "[IMAGE...]",
        options: [
            OptionSpec("checkpoint", value: "DIR|FILE",
                       help: "a checkpoint folder, a run folder (its newest checkpoint) or a model .safetensors file (required)"),
            OptionSpec("model", value: "NAME", help: "the model a .safetensors file holds: " + ModelConfig.knownNames.joined(separator: ", ")),
            OptionSpec("input-size", value: "S", help: "image size of a .safetensors file's model (default: the model's own)"),
            .flag("norm-pix-loss", help: "a .safetensors file's model predicts per-patch normalised pixels (a checkpoint says so itself)"),
            OptionSpec("images", value: "PATH", help: "an image to show; more may follow as plain arguments"),
            OptionSpec("data", value: "ROOT", help: "take the first --count images of a dataset folder instead"),
            OptionSpec("split", value: "NAME", help: "the dataset's folder to take them from (default: val when there is one, else train)"),
            OptionSpec("count", value: "K", default: "4", help: "images taken from --data"),
            OptionSpec("mask-ratio", value: "R", default: "0.75", help: "share of patches removed, in [0, 1)"),
            OptionSpec("mask-ratios", value: "R1,R2,...",
                       help: "one image (the first) at each ratio, e.g. 0.5,0.75,0.85,0.95 (the paper's figure of ratios)"),
            OptionSpec("masking", value: "random|block|grid", default: "random",
                       help: MaskingStrategy.optionHelp + "; several, e.g. random,block,grid: the first image once per strategy"),
            OptionSpec("seed", value: "S", default: "0", help: "seed of the masks"),
            OptionSpec("scale", value: "N", help: "magnification of the images (default: at least 128 pixels per image)"),
            OptionSpec("out", value: "FILE.png", help: "the PNG to write (required)"),
        ])

    static func run(_ options: ParsedOptions) throws {
        let command = spec.name
        func fail(_ message: String) -> OptionError { OptionError("\(command): \(message)") }
        let checkpoint = try options.required("checkpoint")
        let out = try options.required("out")
        guard out.lowercased().hasSuffix(".png") else { throw fail("--out \(out) must name a .png file") }
        var fileModel: ModelConfig?
        if let name = options.string("model") {
            do {
                fileModel = try ModelConfig.named(name, imageSize: try options.optionalInt("input-size", in: 1...8192))
            } catch let error as ModelError { throw fail("\(error)") }
        }
        let strategies = try options.required("masking").split(separator: ",").map { text in
            guard let strategy = MaskingStrategy(rawValue: String(text)) else {
                throw fail("--masking expects random, block or grid (or several, separated by commas), got '\(text)'")
            }
            return strategy
        }
        guard let strategy = strategies.first else { throw fail("--masking is empty") }
        let seed = UInt64(try options.int("seed", in: 0...Int.max))

        var paths = (options.string("images").map { [$0] } ?? []) + options.positional
        if let root = options.string("data") {
            guard paths.isEmpty else { throw fail("pass either images or --data ROOT, not both") }
            paths = try Reconstruction.datasetImagePaths(root: root, split: options.string("split"),
                                                         count: try options.int("count", in: 1...1024))
        }
        guard !paths.isEmpty else { throw fail("pass images (--images PATH [PATH...]) or --data ROOT") }

        print("loading \(checkpoint)")
        let trained = try TrainedModel.load(path: checkpoint, model: fileModel)
        let config = trained.model.config
        let normPixLoss = trained.normPixLoss ?? options.flag("norm-pix-loss")
        func checkedRatio(_ ratio: Double, _ text: String) throws -> Double {
            guard ratio >= 0, ratio < 1, config.keptCount(maskRatio: ratio) >= 1 else {
                throw fail("mask ratio \(text) must be in [0, 1) and keep at least one of the \(config.patchCount) patches")
            }
            return ratio
        }
        let ratios: [Double]?
        if let list = options.string("mask-ratios") {
            ratios = try list.split(separator: ",").map { text in
                guard let value = Double(text.trimmingCharacters(in: .whitespaces)) else {
                    throw fail("--mask-ratios expects numbers separated by commas, got '\(list)'")
                }
                return try checkedRatio(value, String(text))
            }
            guard ratios?.isEmpty == false else { throw fail("--mask-ratios is empty") }
        } else {
            ratios = nil
        }
        let maskRatio = try checkedRatio(try options.double("mask-ratio"), options.string("mask-ratio") ?? "")
        let scale = try options.optionalInt("scale", in: 1...64)

        guard ratios == nil || strategies.count == 1 else { throw fail("pass several --masking strategies or --mask-ratios, not both") }
        let used = ratios == nil && strategies.count == 1 ? paths : [paths[0]]
        print("reading \(used.count) image(s) at \(config.imageSize) px")
        let images = try Reconstruction.loadImages(paths: used, imageSize: config.imageSize)
        let title = Reconstruction.title(model: config, step: trained.step, epoch: trained.epoch,
                                         strategy: strategies.count == 1 ? strategy : nil, normPixLoss: normPixLoss)
        print("reconstructing with \(config.name) (\(strategies.map(\.rawValue).joined(separator: ", ")) masking)")
        let grid: ImageGrid
        if strategies.count > 1 {
            grid = Reconstruction.strategiesFigure(model: trained.model, images: images, strategies: strategies,
                                                   maskRatio: maskRatio, seed: seed, normPixLoss: normPixLoss, title: title)
        } else if let ratios {
            grid = Reconstruction.ratiosFigure(model: trained.model, images: images, maskRatios: ratios, strategy: strategy,
                                               seed: seed, normPixLoss: normPixLoss, title: title)
        } else {
            grid = Reconstruction.figure(model: trained.model, images: images, count: used.count, maskRatio: maskRatio,
                                         strategy: strategy, seed: seed, normPixLoss: normPixLoss, title: title)
        }
        let canvas = grid.render(scale: scale)
        try canvas.writePNG(path: out)
        print("wrote \(out) (\(canvas.width)x\(canvas.height))")
    }
}
