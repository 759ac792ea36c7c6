import Collectives
import Training

/// Everything `mae-coordinator serve` was configured with, validated.
public struct CoordinatorConfiguration: Sendable {
    public var runDirectory: String
    /// Where the control protocol listens (port 0: the kernel picks one).
    public var listenAddress: SocketAddress
    /// Where /metrics is served.
    public var metricsAddress: SocketAddress
    public var policy: CoordinatorPolicy
    /// The run config every worker receives (its `resume` is replaced by the checkpoint to start from).
    public var runConfig: RunConfig
    /// Whether workers choose their compute and data threads from their own machine's cores.
    public var automaticThreads: Bool
    public var automaticDataThreads: Bool
    /// The schedule for everyone, and the steps of the whole run.
    public var schedule: LearningRateSchedule
    public var totalSteps: Int
    /// Ring timeout of the workers (a stalled peer is also caught by the heartbeats, sooner).
    public var peerTimeoutSeconds: Double
    public var heartbeatSeconds: Double
    /// Stop gracefully when the process that started us (launch.sh) goes away.
    public var exitWithParent: Bool
    /// Where the port the coordinator listens on is written once it listens (for launch.sh), or nil.
    public var portFile: String?
    /// How long a coordinator started again on a training run waits for its workers to reconnect.
    public var adoptTimeoutSeconds: Double

    public init(runDirectory: String, listenAddress: SocketAddress, metricsAddress: SocketAddress, policy: CoordinatorPolicy,
                runConfig: RunConfig, automaticThreads: Bool, automaticDataThreads: Bool, schedule: LearningRateSchedule,
                totalSteps: Int, peerTimeoutSeconds: Double, heartbeatSeconds: Double, exitWithParent: Bool, portFile: String?,
                adoptTimeoutSeconds: Double = 30) {
        self.runDirectory = runDirectory
        self.listenAddress = listenAddress
        self.metricsAddress = metricsAddress
        self.policy = policy
        self.runConfig = runConfig
        self.automaticThreads = automaticThreads
        self.automaticDataThreads = automaticDataThreads
        self.schedule = schedule
        self.totalSteps = totalSteps
        self.peerTimeoutSeconds = peerTimeoutSeconds
        self.heartbeatSeconds = heartbeatSeconds
        self.exitWithParent = exitWithParent
        self.portFile = portFile
        self.adoptTimeoutSeconds = adoptTimeoutSeconds
    }
}
