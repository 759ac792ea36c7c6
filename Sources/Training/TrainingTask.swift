import Data
import System

/// What a run trains: MAE pretraining (`main_pretrain.py`), or one of the two protocols that
/// judge a pretrained encoder, fine-tuning (`main_finetune.py`) and linear probing
/// (`main_linprobe.py`). The three share the loop, checkpoints, coordinator and restarts.
public enum TrainingTask: String, Codable, Sendable, CaseIterable {
    case pretrain, finetune, linprobe

    /// Whether the run classifies (labels, evaluation on `val`, a head).
    public var classifies: Bool { self != .pretrain }

    /// The official script's default of each setting that differs between the tasks.
    public struct Defaults: Sendable {
        public let batchSize: Int
        public let epochs: Int
        public let warmupEpochs: Double
        public let baseLearningRate: Double
        public let minimumLearningRate: Double
        public let weightDecay: Double
        /// AdamW's β2 (the linear probe's LARS has none).
        public let beta2: Double
    }

    /// main_pretrain.py, main_finetune.py and main_linprobe.py's argument defaults.
    public var defaults: Defaults {
        switch self {
        case .pretrain:
            Defaults(batchSize: 64, epochs: 800, warmupEpochs: 40, baseLearningRate: 1.5e-4, minimumLearningRate: 0,
                     weightDecay: 0.05, beta2: 0.95)
        case .finetune:
            // torch.optim.AdamW's default betas (0.9, 0.999): main_finetune.py passes none.
            Defaults(batchSize: 64, epochs: 50, warmupEpochs: 5, baseLearningRate: 1e-3, minimumLearningRate: 1e-6,
                     weightDecay: 0.05, beta2: 0.999)
        case .linprobe:
            Defaults(batchSize: 512, epochs: 90, warmupEpochs: 10, baseLearningRate: 0.1, minimumLearningRate: 0,
                     weightDecay: 0, beta2: 0.999)
        }
    }

    /// "pretrain 0.00015, finetune 0.001, linprobe 0.1": one setting's default per task, for the help.
    static func defaultsHelp(_ value: (Defaults) -> Double) -> String {
        allCases.map { "\($0.rawValue) \(formatNumber(value($0.defaults)))" }.joined(separator: ", ")
    }
}

/// The settings of fine-tuning and linear probing (nil in a pretraining run's config).
public struct DownstreamSettings: Codable, Sendable, Equatable {
    /// `--finetune`: the pretraining checkpoint, run folder, `mae import` folder or weights
    /// file whose encoder the run starts from (loaded once, by a fresh run).
    public var pretrained: String
    /// `--global-pool`: the head reads the mean of the patch tokens (fine-tuning: then
    /// `fc_norm`); false: the class token after the encoder's norm.
    public var globalPool: Bool
    /// Fine-tuning: `--drop-path`, `--layer-decay`, `--smoothing`, `--mixup`, `--cutmix`,
    /// `--reprob` and `--aa` as main_finetune.py takes them.
    public var dropPath: Double
    public var layerDecay: Double
    public var smoothing: Double
    public var mixup: Double
    public var cutmix: Double
    public var reprob: Double
    public var autoAugment: String?
    /// `--nb-classes`: only checked against the number of `train` classes (nil: not given).
    public var classCount: Int?

    private enum CodingKeys: String, CodingKey {
        case pretrained = "finetune", globalPool = "global_pool", dropPath = "drop_path", layerDecay = "layer_decay"
        case smoothing, mixup, cutmix, reprob, autoAugment = "aa", classCount = "nb_classes"
    }

    public init(pretrained: String, globalPool: Bool, dropPath: Double = 0, layerDecay: Double = 1, smoothing: Double = 0,
                mixup: Double = 0, cutmix: Double = 0, reprob: Double = 0, autoAugment: String? = nil, classCount: Int? = nil) {
        self.pretrained = pretrained
        self.globalPool = globalPool
        self.dropPath = dropPath
        self.layerDecay = layerDecay
        self.smoothing = smoothing
        self.mixup = mixup
        self.cutmix = cutmix
        self.reprob = reprob
        self.autoAugment = autoAugment
        self.classCount = classCount
    }
}

extension RunConfig {
    /// The augmentation of the task's training images: main_pretrain.py's RandomResizedCrop
    /// (0.2–1) + flip, main_linprobe.py's (0.08–1) + flip, main_finetune.py's timm transform
    /// (RandAugment `--aa`, random erasing `--reprob`). Throws a one-line error for a bad policy.
    public func trainingTransform() throws -> ImageTransform {
        switch trainingTask {
        case .pretrain: return .pretraining
        case .linprobe: return .linearProbe
        case .finetune:
            do {
                return .finetuning(try FinetuneAugmentationSettings(randAugment: downstream?.autoAugment ?? "none",
                                                                    reprob: downstream?.reprob ?? 0))
            } catch {
                throw TrainingError.invalidConfiguration("\(error)")
            }
        }
    }

    /// A classifying run's `val` (nil for pretraining), checked against `train`: present, with
    /// the same classes, and as many as `--nb-classes` says when given. One-line errors before any work.
    public func validationDataset(training: ImageFolderDataset) throws -> ImageFolderDataset? {
        guard trainingTask.classifies else { return nil }
        let config = self
        let task = trainingTask.rawValue
        guard FileSystem.isDirectory(config.dataRoot + "/val"), FileSystem.isDirectory(config.dataRoot + "/train") else {
            throw TrainingError.invalidConfiguration(
                "--task \(task) needs \(config.dataRoot)/train and \(config.dataRoot)/val (ImageNet-style: "
                + "<split>/<class>/<image>, the same classes in both); make one with 'mae synth-data'")
        }
        let validation = try ImageFolderDataset(root: config.dataRoot, split: "val")
        guard validation.classNames == training.classNames else {
            let missing = Set(training.classNames).symmetricDifference(validation.classNames).sorted().prefix(3)
            throw TrainingError.invalidConfiguration(
                "the classes of \(config.dataRoot)/val (\(validation.classNames.count)) differ from those of train "
                + "(\(training.classNames.count))" + (missing.isEmpty ? "" : ", e.g. '\(missing.joined(separator: "', '"))'")
                + "; both need the same class folders")
        }
        if let expected = config.downstream?.classCount, expected != training.classNames.count {
            throw TrainingError.invalidConfiguration(
                "--nb-classes \(expected) does not match the \(training.classNames.count) classes of \(config.dataRoot)/train; "
                + "leave it out (the classes come from the data) or point --data at the intended folder")
        }
        return validation
    }
}
