/// A timeout for calls that have none: MPI's. An MPI collective whose peer stalls
/// (SIGSTOP, a hung machine, a rank stuck elsewhere) waits forever, and MPI can
/// neither time it out nor cancel it. The watchdog's thread notices a call that
/// stays armed past its deadline and runs `expire`, which for MPI ends the process
/// with a message: `mpirun` then ends the whole job, and a launcher can restart it
/// from the last checkpoint, instead of the job hanging.
#if canImport(Glibc)
import Glibc
#endif

final class CallWatchdog: @unchecked Sendable {
    private let condition = Condition()
    private let timeoutSeconds: Double
    private let expire: (String) -> Void
    /// The call in progress and when it expires; nil between calls.
    private var call: (description: String, deadline: Deadline)?
    private var stopping = false

    /// Starts the watchdog's thread. `expire` runs on it, with the description of the
    /// call that has been running for `timeoutSeconds`, at most once per call.
    init(timeoutSeconds: Double, expire: @escaping (String) -> Void) throws {
        precondition(timeoutSeconds > 0, "a watchdog needs a positive timeout")
        self.timeoutSeconds = timeoutSeconds
        self.expire = expire
        try startThread("the collective call watchdog's thread") { [self] in run() }
    }

    /// Marks the start of a call.
    func arm(_ description: String) {
        condition.withLock {
            call = (description, Deadline.after(seconds: timeoutSeconds))
            condition.broadcast()
        }
    }

    /// Marks the end of the call.
    func disarm() {
        condition.withLock { call = nil }
    }

    /// Ends the thread (it holds the watchdog until then).
    func stop() {
        condition.withLock {
            stopping = true
            condition.broadcast()
        }
    }

    private func run() {
        condition.lock()
        while !stopping {
            guard let current = call else {
                condition.wait()
                continue
            }
            if current.deadline.hasPassed {
                call = nil
                condition.unlock()
                expire(current.description)
                condition.lock()
            } else {
                condition.wait(until: current.deadline)
            }
        }
        condition.unlock()
    }
}
