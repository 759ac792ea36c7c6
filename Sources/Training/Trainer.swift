import Collectives

/// How a run ended.
public struct TrainingSummary: Sendable {
    /// Optimizer steps done in total (including those before a resume).
    public let steps: Int
    /// The last checkpoint written or loaded, if any.
    public let lastCheckpoint: String?
    /// True when SIGTERM/SIGINT ended the run early (after a checkpoint).
    public let stoppedBySignal: Bool
    /// The loss of the last step (averaged over workers), NaN when no step ran.
    public let lastLoss: Double
}

/// The data-parallel training loop of MAE pretraining, fine-tuning and linear probing
/// (facebookresearch/mae, `main_pretrain.py`, `main_finetune.py`, `main_linprobe.py` and their engines).
///
/// Each optimizer step: `accumulationSteps` micro-batches of forward and backward (the
/// gradients summed with scale 1/K), the loss averaged over workers and checked, the flat
/// gradient vector averaged over workers, one update of the task's optimizer (AdamW; LARS for
/// the linear probe) with the schedule's rate. Classifying tasks score `val` after each epoch. Rank 0
/// logs and writes checkpoints; every rank meets at a barrier around each checkpoint.
public final class Trainer {
    public let config: RunConfig
    public let distributed: DistributedSettings
    public let collective: any Collective
    public let log: RunLog
    /// The coordinator's view of and requests to this worker; nil without a coordinator.
    public let control: (any TrainingControl)?
    /// The schedule the coordinator computed for everyone; the session checks that this
    /// worker, from the data it sees, computes the same (nil: no check).
    public let expectedSchedule: LearningRateSchedule?

    public init(config: RunConfig, distributed: DistributedSettings, collective: any Collective,
                control: (any TrainingControl)? = nil, expectedSchedule: LearningRateSchedule? = nil) {
        self.config = config
        self.distributed = distributed
        self.collective = collective
        self.control = control
        self.expectedSchedule = expectedSchedule
        // Under a coordinator an agent started this worker and keeps its output.
        log = RunLog(rank: collective.rank, runDirectory: config.runDirectory, outputIsCaptured: control != nil)
    }

    /// Trains until the last epoch, `--max-steps`, or a stop signal (classifying tasks score `val` after each epoch).
    public func run() throws -> TrainingSummary {
        let session = try TrainingSession(config: config, collective: collective, log: log, control: control,
                                          expectedSchedule: expectedSchedule)
        defer {
            session.loader.stop()
            session.evaluator?.stop()
        }
        try session.restore()
        session.printBanner()
        return try session.train()
    }
}
