/// The exit statuses of `mae-coordinator serve` (and of `launch.sh`, which passes them on).
public enum CoordinatorExit: Int32, Sendable, CaseIterable {
    /// Every epoch (or --max-steps) trained; the final checkpoint is written.
    case finished = 0
    /// Failed: a failure after --max-restarts restarts, or one the coordinator cannot restart from.
    case failed = 1
    /// Bad configuration: an invalid flag or value, found before anything started.
    case badConfiguration = 2
    /// Stopped on request (`mae-coordinator stop`, SIGTERM, Ctrl-C) after a checkpoint: resumable with --resume auto.
    case stopped = 3

    public var meaning: String {
        switch self {
        case .finished: "finished"
        case .failed: "failed after the restarts ran out"
        case .badConfiguration: "bad configuration"
        case .stopped: "stopped on request (resumable with --resume auto)"
        }
    }
}
