/// What a control plane (`mae-coordinator`) sees of a running worker and may ask of it.
/// The training loop calls these between steps on its own thread; an implementation
/// hands the values to its heartbeat thread.
public protocol TrainingControl: AnyObject {
    /// After every optimizer step, on every rank.
    func stepFinished(_ report: StepReport)
    /// On rank 0, once a checkpoint is complete on disk.
    func checkpointWritten(path: String, step: Int)
    /// True once per request for a checkpoint now (`mae-coordinator checkpoint`); every
    /// rank's answer travels in the step's scalar all-reduce, so all ranks act together.
    func takeCheckpointRequest() -> Bool
    /// True once a graceful stop was asked for (`mae-coordinator stop`): the step finishes,
    /// a checkpoint is written and the worker exits 0, as on SIGTERM.
    var stopRequested: Bool { get }
}

/// One optimizer step as a heartbeat reports it.
public struct StepReport: Codable, Sendable, Equatable {
    /// Optimizer steps done in the whole run.
    public var step: Int
    /// Steps the run will do in all.
    public var totalSteps: Int
    /// The epoch of the step (0-based).
    public var epoch: Int
    /// The loss averaged over micro-batches and workers.
    public var loss: Double
    public var learningRate: Double
    /// Images per second over all workers, measured over this step.
    public var imagesPerSecond: Double
    /// Seconds this worker waited for its batches in this step.
    public var dataWaitSeconds: Double
    /// Wall seconds of this step.
    public var stepSeconds: Double

    public init(step: Int, totalSteps: Int, epoch: Int, loss: Double, learningRate: Double, imagesPerSecond: Double,
                dataWaitSeconds: Double, stepSeconds: Double) {
        self.step = step
        self.totalSteps = totalSteps
        self.epoch = epoch
        self.loss = loss
        self.learningRate = learningRate
        self.imagesPerSecond = imagesPerSecond
        self.dataWaitSeconds = dataWaitSeconds
        self.stepSeconds = stepSeconds
    }

    private enum CodingKeys: String, CodingKey {
        case step, totalSteps = "total_steps", epoch, loss, learningRate = "lr", imagesPerSecond = "img_per_s"
        case dataWaitSeconds = "data_wait_s", stepSeconds = "step_s"
    }
}
