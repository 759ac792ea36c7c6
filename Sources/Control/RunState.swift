import Training

/// Where a run stands, as the coordinator sees it.
public enum RunPhase: String, Codable, Sendable {
    /// Waiting for agents, or for this generation's workers to join and form the ring.
    case rendezvous
    case training
    /// Training, with a requested checkpoint not yet written.
    case checkpointing
    /// A failure was detected; the old generation's workers are being stopped.
    case restarting
    /// A graceful stop: the workers finish their step and write a checkpoint.
    case stopping
    /// A coordinator started again on the run directory waits for the agents and workers of
    /// the generation that was training to reconnect, to adopt them (`RunState+Adoption.swift`).
    case adopting
    case finished, failed, stopped

    /// True once the run is over.
    public var isFinal: Bool { self == .finished || self == .failed || self == .stopped }
}

/// One rank as the coordinator sees it.
public struct RankRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Its agent was asked to start it; it has not connected yet.
        case starting
        /// Connected; forming the ring.
        case joined
        case training
        /// It said it finished; its exit is awaited.
        case finished
        /// It finished and exited 0.
        case done
        /// Its connection was lost or it exited; whether that is the run's failure is being decided (about 1 s).
        case lost
        case failed
        /// Not running: between generations.
        case stopped
        /// Training when the coordinator went away; a coordinator started again waits for it to reconnect.
        case reconnecting
    }
    public var rank: Int
    public var host = ""
    public var pid: Int32 = 0
    public var state = State.stopped
    public var step = 0
    /// Wall-clock time of its last heartbeat (or of joining).
    public var lastHeartbeat: Double?
    /// "host:port" of its ring listener in this generation.
    public var ringAddress: String?
    /// Whether it said it finished, and the status its agent reported when it exited.
    public var finishedReported = false
    public var exitStatus: Int32?

    public init(rank: Int) { self.rank = rank }
}

/// One agent (machine) as the coordinator sees it.
public struct AgentRecord: Codable, Sendable, Equatable {
    public var firstRank: Int
    public var rankCount: Int
    public var host: String
    public var pid: Int32
    public var connected: Bool
    public var lastHeartbeat: Double
    /// The newest generation whose workers it reported stopped.
    public var stoppedGeneration: Int?

    public var ranks: Range<Int> { firstRank..<firstRank + rankCount }
}

/// One failure of the run.
public struct FailureRecord: Codable, Sendable, Equatable {
    public var generation: Int
    /// Wall-clock time of detection.
    public var time: Double
    public var what: String
}

/// A report that may be a run's failure, held for `CoordinatorPolicy.exitReportWaitSeconds`
/// so that the cause wins over its consequences: when one worker is killed, its neighbours'
/// collectives fail a moment later and they exit too; the failure named is the most telling
/// report of the window (a signal or a silent worker before an error exit, an error exit
/// before a lost connection), not the one that happened to arrive first.
public struct SuspectedFailure: Codable, Sendable, Equatable {
    public var rank: Int?
    public var what: String
    /// 3: killed by a signal, silent, or its agent lost; 2: an error exit; 1: a lost connection;
    /// 0: an exit without saying that it finished.
    public var priority: Int
    public var time: Double
}

/// A complete checkpoint the coordinator recorded.
public struct CheckpointRecord: Codable, Sendable, Equatable {
    public var path: String
    public var step: Int
    public var time: Double
}

/// The coordinator's policy settings, fixed for a run.
public struct CoordinatorPolicy: Codable, Sendable, Equatable {
    public var worldSize: Int
    public var maxRestarts: Int
    /// Silence after which a worker or an agent counts as failed.
    public var heartbeatTimeoutSeconds: Double
    /// How long agents may take to connect, and workers to join and form the ring.
    public var rendezvousTimeoutSeconds: Double
    /// How long agents give workers between SIGTERM and SIGKILL.
    public var stopGraceSeconds: Double
    /// How long a graceful stop (finish the step, checkpoint) may take.
    public var stopTimeoutSeconds: Double
    /// How long a lost worker connection waits for its agent's report of the exit status.
    public var exitReportWaitSeconds: Double = 1

    public init(worldSize: Int, maxRestarts: Int, heartbeatTimeoutSeconds: Double, rendezvousTimeoutSeconds: Double,
                stopGraceSeconds: Double, stopTimeoutSeconds: Double) {
        self.worldSize = worldSize
        self.maxRestarts = maxRestarts
        self.heartbeatTimeoutSeconds = heartbeatTimeoutSeconds
        self.rendezvousTimeoutSeconds = rendezvousTimeoutSeconds
        self.stopGraceSeconds = stopGraceSeconds
        self.stopTimeoutSeconds = stopTimeoutSeconds
    }
}

/// Everything the coordinator knows about its run: one value, advanced by
/// `RunState.handle(_:now:)` on every event, saved to `RUN_DIR/coordinator.json` after each
/// change, and read back by a coordinator started again on the same run directory.
public struct RunState: Codable, Sendable, Equatable {
    public var policy: CoordinatorPolicy
    public var phase = RunPhase.rendezvous
    /// Raised on every restart; workers and ring connections of other generations are refused.
    public var generation = 0
    /// Whether this generation's workers were asked to start (else: waiting for agents).
    public var generationStarted = false
    /// Restarts after failures so far.
    public var restarts = 0
    public var ranks: [RankRecord]
    public var agents: [AgentRecord] = []
    public var lastCheckpoint: CheckpointRecord?
    public var failures: [FailureRecord] = []
    /// Reports of the current generation held before one of them is named the failure.
    public var suspects: [SuspectedFailure] = []
    /// Rank 0's last step report: the run's step, epoch, loss, lr and speed.
    public var progress: StepReport?
    /// Steps of the whole run, computed from the dataset size, world size and --accum-iter, then
    /// as rank 0 reports it (a run resumed with another world size counts its earlier epochs as run).
    public var totalSteps: Int
    /// When the current phase gives up waiting (rendezvous, adopting, restarting, stopping).
    public var phaseDeadline: Double?
    /// How long a coordinator started again waits for the running generation to reconnect (set while adopting).
    public var adoptionTimeoutSeconds: Double?
    public var stopRequested = false
    /// Set when the run is over.
    public var exitCode: Int32?
    public var startedAt: Double
    public var updatedAt: Double
    /// Where the coordinator listens ("host:port"), its /metrics, its pid and its run directory.
    public var address = ""
    public var metricsAddress = ""
    public var coordinatorPid: Int32 = 0
    public var runDirectory = ""

    public init(policy: CoordinatorPolicy, totalSteps: Int, now: Double) {
        self.policy = policy
        self.totalSteps = totalSteps
        ranks = (0..<policy.worldSize).map(RankRecord.init(rank:))
        startedAt = now
        updatedAt = now
        phaseDeadline = now + policy.rendezvousTimeoutSeconds
    }
}
