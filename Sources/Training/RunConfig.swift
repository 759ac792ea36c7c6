import Collectives
import Foundation
import Kernels
import Model

/// Every setting of a training run. Saved whole in each checkpoint's `state.json`, so a
/// checkpoint says exactly how it was made, and a resume can say what differs.
public struct RunConfig: Codable, Sendable, Equatable {
    /// Dataset root (`ROOT/train/<class>/<image>` or `ROOT/<class>/<image>`).
    public var dataRoot: String
    /// The model's architecture (a named config, or a custom one for tests).
    public var model: ModelConfig
    /// Images per worker per micro-batch.
    public var batchSize: Int
    public var epochs: Int
    public var warmupEpochs: Double
    /// `--blr`: the base rate of the scaling rule; used when `absoluteLearningRate` is nil.
    public var baseLearningRate: Double
    /// `--lr`: the peak rate, overriding the scaling rule.
    public var absoluteLearningRate: Double?
    public var minimumLearningRate: Double
    public var weightDecay: Double
    public var beta1: Double
    public var beta2: Double
    public var epsilon: Double
    /// `--accum-iter`: micro-batches per optimizer step.
    public var accumulationSteps: Int
    public var maskRatio: Double
    /// `--masking`: which patches each sample hides (nil in checkpoints made before the
    /// option existed, which masked at random: read it through `maskingStrategy`).
    public var masking: MaskingStrategy?
    public var normPixLoss: Bool
    public var seed: UInt64
    /// Compute threads (OpenBLAS and our own pool).
    public var threads: Int
    /// Background threads that decode and augment images.
    public var dataThreads: Int
    /// `--batch-shards`: parts of each micro-batch run whole by one thread each
    /// (`MAEModel.batchShards`). nil asks for the automatic choice: the checkpoint's on
    /// resume, else `MAEModel.automaticBatchShards`. The session stores the count it
    /// used, so a checkpoint records it; one saved without it was made with 1.
    public var batchShards: Int?
    /// `--precision`: the number format of the matrix products (nil in checkpoints made
    /// before the option existed, which ran fp32: read it through `productPrecision`).
    /// Checkpoints hold fp32 weights either way, so a run may resume in the other one.
    public var precision: Precision?
    public var runDirectory: String
    /// Write a checkpoint every this many optimizer steps (0: only at epoch ends).
    public var checkpointEvery: Int
    /// Keep the newest this many checkpoints.
    public var keepCheckpoints: Int
    /// Also keep every epoch-end checkpoint whose epoch count is a multiple of this (0: none).
    public var keepEveryEpochs: Int
    /// "auto", a checkpoint directory, or nil for a fresh start.
    public var resume: String?
    /// Stop after this many optimizer steps in total (nil: run every epoch).
    public var maxSteps: Int?
    /// Print and log a progress line every this many optimizer steps.
    public var printEvery: Int
    /// `--init-weights`: weights a fresh run starts from instead of the initialisation
    /// (a folder of `mae import`, a checkpoint, or a model .safetensors); nil: none.
    public var initWeights: String?
    /// `--reconstruct-every`: also draw `RUN_DIR/reconstructions/epoch-NNNN.png` every this
    /// many epochs (0 or nil: only at the end of the run).
    public var reconstructEvery: Int?
    /// `--overlap`: whether the gradient all-reduce runs bucket by bucket during the
    /// backward (`GradientExchange`); nil: wherever the transport gives the same bits as
    /// one call after the backward. The bits do not depend on it.
    public var overlap: Bool?
    /// `--bucket-mb`: the size of an overlapped bucket in MiB (nil: 25, as DDP).
    public var bucketMegabytes: Double?
    /// `--gradient-wire`: the number format gradients travel in between workers (nil in
    /// checkpoints made before the option existed, which sent fp32: read it through
    /// `gradientWireFormat`). Checkpoints hold fp32 weights and moments either way, so a
    /// run may resume with the other one (a warning says so: the steps from there on
    /// round differently); resumed with the same one, it continues bit for bit.
    public var gradientWire: GradientWire?
    /// `--shard-optimizer`: each worker updates and keeps AdamW moments for its shard of
    /// the parameters only (ZeRO stage 1); nil or false: every worker updates all of them.
    /// The bits do not depend on it; checkpoints hold the whole moments either way.
    public var shardOptimizer: Bool?
    /// `--on-checkpoint-error`: what a checkpoint that cannot be written (a full disk) does to
    /// the run; nil (a config saved before the option) is `.stop`.
    public var onCheckpointError: CheckpointErrorPolicy?
    /// `--knn-every`: score the encoder by k-NN on DATA/train → DATA/val every this many
    /// epochs and at the last one (0 or nil: never).
    public var knnEvery: Int?
    /// `--task`: what the run trains (nil in configs saved before the option existed: pretraining;
    /// read it through `trainingTask`).
    public var task: TrainingTask?
    /// Fine-tuning and linear probing's settings (nil for pretraining).
    public var downstream: DownstreamSettings?
    /// Tests only: the loss of this optimizer step (1-based) is replaced by NaN, to exercise
    /// the non-finite-loss stop without depending on how a model diverges.
    public var injectNonFiniteLossAtStep: Int?

    private enum CodingKeys: String, CodingKey {
        case dataRoot = "data", model, batchSize = "batch_size", epochs, warmupEpochs = "warmup_epochs"
        case baseLearningRate = "blr", absoluteLearningRate = "lr", minimumLearningRate = "min_lr"
        case weightDecay = "weight_decay", beta1, beta2, epsilon = "eps", accumulationSteps = "accum_iter"
        case maskRatio = "mask_ratio", masking, normPixLoss = "norm_pix_loss", seed, threads, dataThreads = "data_threads"
        case batchShards = "batch_shards", precision
        case runDirectory = "run_dir", checkpointEvery = "checkpoint_every", keepCheckpoints = "keep_checkpoints"
        case keepEveryEpochs = "keep_every_epochs", resume, maxSteps = "max_steps", printEvery = "print_every"
        case reconstructEvery = "reconstruct_every", knnEvery = "knn_every", initWeights = "init_weights", task, downstream
        case overlap, bucketMegabytes = "bucket_mb", shardOptimizer = "shard_optimizer", gradientWire = "gradient_wire"
        case onCheckpointError = "on_checkpoint_error"
    }

    public init(dataRoot: String, model: ModelConfig, batchSize: Int = 64, epochs: Int = 800, warmupEpochs: Double = 40,
                baseLearningRate: Double = 1.5e-4, absoluteLearningRate: Double? = nil, minimumLearningRate: Double = 0,
                weightDecay: Double = 0.05, beta1: Double = 0.9, beta2: Double = 0.95, epsilon: Double = 1e-8,
                accumulationSteps: Int = 1, maskRatio: Double = 0.75, masking: MaskingStrategy = .random, normPixLoss: Bool = false, seed: UInt64 = 0,
                threads: Int = 1, dataThreads: Int = 1, batchShards: Int? = nil, precision: Precision = .fp32, runDirectory: String, checkpointEvery: Int = 0,
                keepCheckpoints: Int = 3, keepEveryEpochs: Int = 0, resume: String? = nil, maxSteps: Int? = nil,
                printEvery: Int = 20, reconstructEvery: Int? = nil, knnEvery: Int? = nil, initWeights: String? = nil,
                overlap: Bool? = nil, bucketMegabytes: Double? = nil, shardOptimizer: Bool? = nil,
                gradientWire: GradientWire = .fp32, task: TrainingTask = .pretrain, downstream: DownstreamSettings? = nil, injectNonFiniteLossAtStep: Int? = nil) {
        self.dataRoot = dataRoot
        self.model = model
        self.batchSize = batchSize
        self.epochs = epochs
        self.warmupEpochs = warmupEpochs
        self.baseLearningRate = baseLearningRate
        self.absoluteLearningRate = absoluteLearningRate
        self.minimumLearningRate = minimumLearningRate
        self.weightDecay = weightDecay
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.accumulationSteps = accumulationSteps
        self.maskRatio = maskRatio
        self.masking = masking
        self.normPixLoss = normPixLoss
        self.seed = seed
        self.threads = threads
        self.dataThreads = dataThreads
        self.batchShards = batchShards
        self.precision = precision
        self.runDirectory = runDirectory
        self.checkpointEvery = checkpointEvery
        self.keepCheckpoints = keepCheckpoints
        self.keepEveryEpochs = keepEveryEpochs
        self.resume = resume
        self.maxSteps = maxSteps
        self.printEvery = printEvery
        self.reconstructEvery = reconstructEvery
        self.knnEvery = knnEvery
        self.initWeights = initWeights
        self.overlap = overlap
        self.bucketMegabytes = bucketMegabytes
        self.shardOptimizer = shardOptimizer
        self.gradientWire = gradientWire
        self.task = task
        self.downstream = downstream
        self.injectNonFiniteLossAtStep = injectNonFiniteLossAtStep
    }

    /// What the run trains: `task`, or pretraining for a run saved before the option existed.
    public var trainingTask: TrainingTask { task ?? .pretrain }

    /// The masking strategy: `masking`, or random for a run saved before the option existed.
    public var maskingStrategy: MaskingStrategy { masking ?? .random }

    /// The products' precision: `precision`, or fp32 for a run saved before the option existed.
    public var productPrecision: Precision { precision ?? .fp32 }

    /// The gradients' wire: `gradientWire`, or fp32 for a run saved before the option existed.
    public var gradientWireFormat: GradientWire { gradientWire ?? .fp32 }

    /// Images per optimizer step over all workers: batch × accum-iter × world size.
    public func effectiveBatchSize(worldSize: Int) -> Int { batchSize * accumulationSteps * worldSize }

    /// The peak rate: `--lr` when given, else blr × effective batch / 256.
    public func peakLearningRate(worldSize: Int) -> Double {
        absoluteLearningRate ?? scaledLearningRate(baseLearningRate: baseLearningRate,
                                                   effectiveBatchSize: effectiveBatchSize(worldSize: worldSize))
    }

    /// The schedule for an epoch of `iterationsPerEpoch` micro-batches per worker.
    public func schedule(worldSize: Int, iterationsPerEpoch: Int) throws -> LearningRateSchedule {
        try LearningRateSchedule(peakLearningRate: peakLearningRate(worldSize: worldSize),
                                 minimumLearningRate: minimumLearningRate, warmupEpochs: warmupEpochs,
                                 epochs: epochs, iterationsPerEpoch: iterationsPerEpoch,
                                 accumulationSteps: accumulationSteps)
    }

    /// The settings a resumed run must share with its checkpoint, or the continuation would not
    /// be the same run: one line per difference, empty when compatible. The world size may
    /// differ: the rest of the epoch is split among the new workers and the rate follows the
    /// new effective batch (`TrainingPosition.init(_:worldSize:)`, docs/CHECKPOINTS.md).
    public func resumeIncompatibilities(with saved: RunConfig, savedFingerprint: String, fingerprint: String) -> [String] {
        var differences: [String] = []
        func check<Value: Equatable>(_ name: String, _ old: Value, _ new: Value) {
            if old != new { differences.append("\(name) was \(old), now \(new)") }
        }
        check("--task", saved.trainingTask.rawValue, trainingTask.rawValue)
        check("--global-pool", saved.downstream?.globalPool ?? false, downstream?.globalPool ?? false)
        if saved.model != model {
            differences.append("model was \(describe(saved.model)), now \(describe(model))")
        }
        check("--batch-size", saved.batchSize, batchSize)
        check("--accum-iter", saved.accumulationSteps, accumulationSteps)
        check("--seed", saved.seed, seed)
        if savedFingerprint != fingerprint {
            differences.append("the dataset differs (fingerprint \(savedFingerprint.prefix(16)) at save, \(fingerprint.prefix(16)) now)")
        }
        return differences
    }

    /// Settings that may change on resume but change the run from there on: one line each.
    public func resumeChanges(from saved: RunConfig) -> [String] {
        var changes: [String] = []
        func note<Value: Equatable>(_ name: String, _ old: Value, _ new: Value) {
            if old != new { changes.append("\(name) \(old) -> \(new)") }
        }
        note("--epochs", saved.epochs, epochs)
        note("--warmup-epochs", saved.warmupEpochs, warmupEpochs)
        note("--blr", saved.baseLearningRate, baseLearningRate)
        note("--lr", saved.absoluteLearningRate.map { "\($0)" } ?? "none", absoluteLearningRate.map { "\($0)" } ?? "none")
        note("--min-lr", saved.minimumLearningRate, minimumLearningRate)
        note("--weight-decay", saved.weightDecay, weightDecay)
        note("--mask-ratio", saved.maskRatio, maskRatio)
        note("--masking", saved.maskingStrategy.rawValue, maskingStrategy.rawValue)
        note("--norm-pix-loss", saved.normPixLoss, normPixLoss)
        if let old = saved.downstream, let new = downstream {
            note("--drop-path", old.dropPath, new.dropPath)
            note("--layer-decay", old.layerDecay, new.layerDecay)
            note("--smoothing", old.smoothing, new.smoothing)
            note("--mixup", old.mixup, new.mixup)
            note("--cutmix", old.cutmix, new.cutmix)
            note("--reprob", old.reprob, new.reprob)
            note("--aa", old.autoAugment ?? "none", new.autoAugment ?? "none")
        }
        // Another shard count rounds the gradients differently from here on.
        note("--batch-shards", saved.batchShards ?? 1, batchShards ?? 1)
        note("--precision", saved.productPrecision.rawValue, productPrecision.rawValue)
        note("--gradient-wire", saved.gradientWireFormat.rawValue, gradientWireFormat.rawValue)
        return changes
    }
}

/// "mae_vit_tiny_patch4 (32 px)", or the shape of a custom model.
func describe(_ model: ModelConfig) -> String {
    "\(model.name) (\(model.imageSize) px, patch \(model.patchSize), encoder \(model.encoderWidth)x\(model.encoderDepth)/\(model.encoderHeads), "
        + "decoder \(model.decoderWidth)x\(model.decoderDepth)/\(model.decoderHeads))"
}

/// What a failed checkpoint write does (`--on-checkpoint-error`).
public enum CheckpointErrorPolicy: String, Codable, Sendable {
    /// Every worker stops with the error; the previous checkpoint is intact (resumable).
    case stop
    /// A warning, and training goes on until the next checkpoint.
    case `continue`
}
