import Foundation
import Model

/// The contents of a checkpoint's `state.json`: where the run stands, how it was made,
/// and the checksums of the checkpoint's other files.
public struct CheckpointState: Codable, Sendable, Equatable {
    /// Version of this layout; a reader refuses versions it does not know.
    public var formatVersion: Int
    /// Optimizer steps done (the step of the checkpoint's directory name).
    public var step: Int
    /// The epoch the next step belongs to.
    public var epoch: Int
    /// The next optimizer step within `epoch` (0 at an epoch boundary).
    public var stepInEpoch: Int
    /// The next micro-batch within `epoch` for `DataLoader.startEpoch(_:fromBatch:)`.
    public var nextBatchIndex: Int
    /// Positions of the epoch's permutation the workers have taken (`DistributedSampler`):
    /// nextBatchIndex × batch × world size, unless the run was resumed with another world
    /// size inside the epoch. nil in checkpoints written before it was recorded: read it
    /// through `samplesDoneInEpoch`.
    public var epochSamplesDone: Int?
    /// The positions taken before the current world size split the epoch (`EpochSplit.start`):
    /// 0, or nil, unless the run was resumed with another world size inside the epoch.
    public var epochSplitStart: Int?
    /// The share of the epoch done when that split began (`EpochSplit.startFraction`): 0, or nil,
    /// unless the run was resumed with another world size inside the epoch.
    public var epochSplitFraction: Double?
    /// True for the checkpoint written when an epoch ended.
    public var isEpochEnd: Bool
    public var seed: UInt64
    public var worldSize: Int
    /// Sums over the current epoch's steps so far, so `log.txt` gets the whole epoch's means after a resume.
    public var epochLossSum: Double
    public var epochLearningRateSum: Double
    public var epochStepCount: Int
    public var datasetFingerprint: String
    public var datasetCount: Int
    public var config: RunConfig
    public var schedule: LearningRateSchedule
    /// The epoch this checkpoint ends (epoch-end checkpoints only; nil in checkpoints written
    /// before it was recorded), so a resume can write its `log.txt` line when the run was
    /// killed between the checkpoint and that line.
    public var finishedEpoch: EpochSummary?
    /// The class folder names of a classifying run's `train`, in label order (nil for pretraining).
    public var classNames: [String]?
    /// The best `test_acc1` of the run's evaluations so far (nil before the first, and for pretraining).
    public var bestTestAccuracy: Double?
    /// File name → "fnv1a64:<hex>" of each file in the checkpoint besides `state.json`.
    public var checksums: [String: String]
    /// When the checkpoint was written (UTC, ISO 8601); informational.
    public var createdAt: String

    public static let currentFormatVersion = 1

    private enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version", step, epoch, stepInEpoch = "step_in_epoch"
        case nextBatchIndex = "next_batch_index", epochSamplesDone = "epoch_samples_done", epochSplitStart = "epoch_split_start"
        case epochSplitFraction = "epoch_split_fraction"
        case isEpochEnd = "epoch_end", seed, worldSize = "world_size"
        case epochLossSum = "epoch_loss_sum", epochLearningRateSum = "epoch_lr_sum", epochStepCount = "epoch_step_count"
        case datasetFingerprint = "dataset_fingerprint", datasetCount = "dataset_count", config, schedule
        case checksums, createdAt = "created_at", finishedEpoch = "finished_epoch"
        case classNames = "class_names", bestTestAccuracy = "best_test_acc1"
    }

    public init(step: Int, epoch: Int, stepInEpoch: Int, nextBatchIndex: Int, epochSamplesDone: Int? = nil,
                epochSplitStart: Int? = nil, epochSplitFraction: Double? = nil, isEpochEnd: Bool, seed: UInt64,
                worldSize: Int, epochLossSum: Double, epochLearningRateSum: Double, epochStepCount: Int,
                datasetFingerprint: String, datasetCount: Int, config: RunConfig, schedule: LearningRateSchedule,
                finishedEpoch: EpochSummary? = nil, classNames: [String]? = nil, bestTestAccuracy: Double? = nil,
                checksums: [String: String] = [:],
                createdAt: String = CheckpointState.now()) {
        formatVersion = Self.currentFormatVersion
        self.step = step
        self.epoch = epoch
        self.stepInEpoch = stepInEpoch
        self.nextBatchIndex = nextBatchIndex
        self.epochSamplesDone = epochSamplesDone
        self.epochSplitStart = epochSplitStart
        self.epochSplitFraction = epochSplitFraction
        self.isEpochEnd = isEpochEnd
        self.seed = seed
        self.worldSize = worldSize
        self.epochLossSum = epochLossSum
        self.epochLearningRateSum = epochLearningRateSum
        self.epochStepCount = epochStepCount
        self.datasetFingerprint = datasetFingerprint
        self.datasetCount = datasetCount
        self.config = config
        self.schedule = schedule
        self.finishedEpoch = finishedEpoch
        self.classNames = classNames
        self.bestTestAccuracy = bestTestAccuracy
        self.checksums = checksums
        self.createdAt = createdAt
    }

    /// Positions of the epoch's permutation taken: `epochSamplesDone`, or for a checkpoint written
    /// before it was recorded (when a world size ran whole epochs) nextBatchIndex × batch × world size.
    public var samplesDoneInEpoch: Int {
        epochSamplesDone ?? nextBatchIndex * config.batchSize * worldSize
    }

    /// The current time as ISO 8601 UTC.
    public static func now() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date())
    }

    /// Pretty, key-sorted JSON bytes (stable across runs apart from `createdAt`).
    func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return Array(try encoder.encode(self)) + [UInt8(ascii: "\n")]
    }

    static func decode(_ bytes: [UInt8], path: String) throws -> CheckpointState {
        do {
            let state = try JSONDecoder().decode(CheckpointState.self, from: Data(bytes))
            guard state.formatVersion == currentFormatVersion else {
                throw TrainingError.checkpoint("\(path): format version \(state.formatVersion) is not supported "
                                               + "(this build reads \(currentFormatVersion))")
            }
            return state
        } catch let error as TrainingError {
            throw error
        } catch {
            throw TrainingError.checkpoint("\(path) is not a valid checkpoint state: \(error)")
        }
    }
}

/// One finished epoch as `log.txt` records it: the means over its steps, and for fine-tuning
/// and linear probing the evaluation on `val` and the trainable parameter count (the reference's keys).
public struct EpochSummary: Codable, Sendable, Equatable {
    /// The epoch, 0-based like the reference's `log.txt`.
    public var epoch: Int
    public var learningRate: Double
    public var loss: Double
    public var evaluation: EvaluationResult?
    public var parameterCount: Int?
    /// The k-NN top-1 and top-5 accuracy (percent) at the epoch's end, with `--knn-every`.
    public var knnTop1: Double?
    public var knnTop5: Double?

    private enum CodingKeys: String, CodingKey {
        case epoch, learningRate = "train_lr", loss = "train_loss", evaluation = "test", parameterCount = "n_parameters"
        case knnTop1 = "knn_top1", knnTop5 = "knn_top5"
    }

    /// The `log.txt` line's fields, in the reference's order (the k-NN scores, when
    /// measured, with the other statistics before `epoch`).
    var logFields: [(String, JSONValue)] {
        var fields: [(String, JSONValue)] = [("train_lr", .number(learningRate)), ("train_loss", .number(loss))]
        if let evaluation {
            fields += [("test_loss", .number(evaluation.loss)), ("test_acc1", .number(evaluation.top1)),
                       ("test_acc5", .number(evaluation.top5))]
        }
        if let knnTop1, let knnTop5 { fields += [("knn_top1", .number(knnTop1)), ("knn_top5", .number(knnTop5))] }
        fields.append(("epoch", .integer(epoch)))
        if let parameterCount { fields.append(("n_parameters", .integer(parameterCount))) }
        return fields
    }
}

