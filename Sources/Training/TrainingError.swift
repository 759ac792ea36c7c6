import System

/// Everything that stops a training run, each with a one-line description that says
/// what went wrong and what to do.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    /// A flag or a combination of flags that cannot work.
    case invalidConfiguration(String)
    /// The loss became NaN or infinite; nothing of that step was applied.
    case nonFiniteLoss(step: Int, epoch: Int, loss: Double, lastCheckpoint: String?)
    /// A checkpoint that cannot be used, and why.
    case checkpoint(String)
    /// A checkpoint that could not be written (a full disk) under `--on-checkpoint-error stop`:
    /// restarting would not help, so a coordinated worker exits with `checkpointWriteExitStatus`.
    case checkpointWriteFailed(String)
    /// A resumed run whose settings differ from the checkpoint's in a way that breaks it.
    case incompatibleResume([String])
    /// A system call failed.
    case system(call: String, path: String, errno: Int32)
    /// The data loader ended an epoch earlier than its own batch count said.
    case dataEndedEarly(epoch: Int, batch: Int)

    public var description: String {
        switch self {
        case .invalidConfiguration(let message):
            return message
        case let .nonFiniteLoss(step, epoch, loss, lastCheckpoint):
            let kept = lastCheckpoint.map { "the last good checkpoint is \($0)" } ?? "no checkpoint was written yet"
            return "the loss is \(loss) at optimizer step \(step + 1) (epoch \(epoch)); stopping without applying it, "
                + "\(kept). Lower the learning rate (--blr/--lr) or check the data."
        case .checkpoint(let message), .checkpointWriteFailed(let message):
            return message
        case .incompatibleResume(let differences):
            return "cannot resume: the checkpoint was made with different settings: " + differences.joined(separator: "; ")
                + ". Pass the checkpoint's settings, or start a new --run-dir."
        case let .system(call, path, code):
            return "\(call)(\(path)) failed: \(SystemCallError.reason(for: code)) (errno \(code))"
        case let .dataEndedEarly(epoch, batch):
            return "the data loader ended epoch \(epoch) at batch \(batch), before the batches it announced; "
                + "was the dataset changed while training?"
        }
    }
}

extension TrainingError {
    /// The exit status of a worker stopped by `checkpointWriteFailed`: the coordinator stops the
    /// run (resumable) instead of restarting it into the same failure.
    public static let checkpointWriteExitStatus: Int32 = 75

    /// Runs `body`, reporting a failed system call as `.system`, since Training's API
    /// throws `TrainingError` (and `CheckpointStore` tells damaged checkpoints by it).
    static func reportingSystemCalls<Result>(_ body: () throws -> Result) rethrows -> Result {
        do { return try body() } catch let error as SystemCallError {
            throw TrainingError.system(call: error.call, path: error.path, errno: error.code)
        }
    }
}
