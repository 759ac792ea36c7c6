import Data
import Figures
import Kernels
import Model
import System

/// Reconstruction figures of a model: the official demo's four panels per image
/// (`mae reconstruct`, and the trainer's `RUN_DIR/reconstructions/epoch-NNNN.png`), and
/// one image at several mask ratios (the paper's figure of ratios).
///
/// Images go through the evaluation transform (shorter side resized with Pillow's
/// bicubic, central crop to the model's size, ImageNet normalisation). Masks come from
/// CounterRandom(seed, .maskNoise, epoch 0, image number) with the chosen strategy, so the
/// same command draws the same figure.
public enum Reconstruction {
    /// Decodes and transforms `paths` into a new [N, 3, S, S] batch. Throws a one-line
    /// error naming an image that does not decode.
    public static func loadImages(paths: [String], imageSize: Int) throws -> FloatBuffer {
        let side = imageSize, floats = 3 * side * side
        let batch = FloatBuffer(count: paths.count * floats)
        let decoder = ImageDecoder(), resampler = Resampler(), scratch = AugmentationScratch()
        let transform = Augmentation(imageSize: side, transform: .evaluation)
        for (index, path) in paths.enumerated() {
            let image = try decoder.decode(path: path)
            transform.apply(output: batch.pointer + index * floats, image: image, seed: 0, epoch: 0, index: index,
                            resampler: resampler, scratch: scratch)
        }
        return batch
    }

    /// `count` images of `ROOT/split` (of `val` when `split` is nil and ROOT has one, else
    /// of the training images), evenly spaced in dataset order from the first, so that a
    /// class-sorted folder shows several classes; the same folder always gives the same images.
    public static func datasetImagePaths(root: String, split: String?, count: Int) throws -> [String] {
        let chosen = split ?? (FileSystem.isDirectory(root + "/val") ? "val" : "train")
        let dataset = try ImageFolderDataset(root: root, split: chosen)
        let taken = min(count, dataset.count)
        return (0..<taken).map { dataset.path(of: $0 * dataset.count / taken) }
    }

    /// Runs `model` forward on `images` (N of them) with `strategy` at `maskRatio`; returns
    /// each image's four panels.
    public static func panels(model: MAEModel, images: FloatBuffer, count: Int, maskRatio: Double,
                              strategy: MaskingStrategy, seed: UInt64, normPixLoss: Bool) -> [ReconstructionPanels] {
        let config = model.config
        let noise = FloatBuffer(count: count * config.patchCount)
        let kept = config.keptCount(maskRatio: maskRatio)
        for sample in 0..<count {
            fillMaskingNoise(noise.pointer + sample * config.patchCount, strategy: strategy, gridSize: config.gridSize,
                             keptCount: kept, seed: seed, epoch: 0, sampleIndex: sample)
        }
        _ = model.forward(images: images.pointer, noise: noise.pointer, batchSize: count, maskRatio: maskRatio,
                          normPixLoss: normPixLoss)
        return (0..<count).map { sample in
            ReconstructionPanels(images: images.pointer, prediction: model.prediction, mask: model.mask, sample: sample,
                                 config: config, normPixLoss: normPixLoss)
        }
    }

    /// One row per image, the four panels as labelled columns.
    public static func figure(model: MAEModel, images: FloatBuffer, count: Int, maskRatio: Double,
                              strategy: MaskingStrategy, seed: UInt64, normPixLoss: Bool, title: String) -> ImageGrid {
        let rows = panels(model: model, images: images, count: count, maskRatio: maskRatio, strategy: strategy,
                          seed: seed, normPixLoss: normPixLoss).map(\.all)
        return ImageGrid(title: title, columnLabels: ReconstructionPanels.labels(maskRatio: maskRatio),
                         side: model.config.imageSize, rows: rows)
    }

    /// The first image of `images` at each ratio: a column per ratio (after the original),
    /// the masked image in the first row, the reconstruction with the visible patches pasted
    /// back in the second.
    public static func ratiosFigure(model: MAEModel, images: FloatBuffer, maskRatios: [Double],
                                    strategy: MaskingStrategy, seed: UInt64, normPixLoss: Bool,
                                    title: String) -> ImageGrid {
        var masked: [[Float]] = [], pasted: [[Float]] = []
        var original: [Float] = []
        for ratio in maskRatios {
            let panel = panels(model: model, images: images, count: 1, maskRatio: ratio, strategy: strategy, seed: seed,
                               normPixLoss: normPixLoss)[0]
            original = panel.original
            masked.append(panel.masked)
            pasted.append(panel.pasted)
        }
        // Under the original, an empty (white) cell: white in the normalised space is (1 − mean) / std.
        let plane = original.count / 3
        let white = (0..<original.count).map { (1 - Augmentation.mean[$0 / plane]) / Augmentation.standardDeviation[$0 / plane] }
        return ImageGrid(title: title, columnLabels: ["original"] + maskRatios.map { "masked " + percent($0) },
                         rowLabels: ["masked", "recon. + visible"],
                         side: model.config.imageSize, rows: [[original] + masked, [white] + pasted])
    }

    /// The first image of `images` masked by each strategy: a row per strategy (labelled),
    /// the four panels as columns (the paper's comparison of random, block and grid masking).
    public static func strategiesFigure(model: MAEModel, images: FloatBuffer, strategies: [MaskingStrategy],
                                        maskRatio: Double, seed: UInt64, normPixLoss: Bool, title: String) -> ImageGrid {
        let rows = strategies.map { strategy in
            panels(model: model, images: images, count: 1, maskRatio: maskRatio, strategy: strategy, seed: seed,
                   normPixLoss: normPixLoss)[0].all
        }
        return ImageGrid(title: title, columnLabels: ReconstructionPanels.labels(maskRatio: maskRatio),
                         rowLabels: strategies.map(\.rawValue), side: model.config.imageSize, rows: rows)
    }

    /// "mae_vit_tiny_patch4 step 1200 epoch 3 masking random" (the figures' title).
    public static func title(model: ModelConfig, step: Int?, epoch: Int?, strategy: MaskingStrategy?,
                             normPixLoss: Bool) -> String {
        var parts = [model.name]
        if let step { parts.append("step \(step)") }
        if let epoch { parts.append("epoch \(epoch)") }
        if let strategy { parts.append("masking \(strategy.rawValue)") }
        if normPixLoss { parts.append("norm-pix") }
        return parts.joined(separator: "  ")
    }
}
