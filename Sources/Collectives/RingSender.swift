/// The ring's sender thread: runs the send half of each call while the calling
/// thread runs the receive half, so that sending, receiving and reducing proceed
/// at the same time on two cores. The two meet in one mutex and condition
/// variable: the receiver publishes its progress, the sender waits for bytes to
/// forward, and either side can abort the call (the other notices within
/// `pollSliceSeconds`).
#if canImport(Glibc)
import Glibc
#endif

/// How long a blocked half sleeps before it looks whether the other half aborted.
let pollSliceSeconds = 0.05

/// Work and state shared by a ring's calling thread and its sender thread.
final class RingSender: @unchecked Sendable {
    private let condition = Condition()
    private let socket: Socket
    private let timeoutSeconds: Double
    private let label: String
    // Guarded by `condition`:
    private var work: SendHalf?
    private var progress = ReceiveProgress()
    private var finished = true
    private var failure: CollectiveError?
    private var aborted = false
    private var stopping = false

    /// Starts the thread; it sends on `socket` (the connection to rank+1).
    init(socket: Socket, timeoutSeconds: Double, label: String) throws {
        self.socket = socket
        self.timeoutSeconds = timeoutSeconds
        self.label = label
        try startThread("the ring's sender thread") { [self] in run() }
    }

    // MARK: Calling thread

    /// Hands the send half of a call to the thread.
    func start(_ half: SendHalf) {
        condition.withLock {
            work = half
            progress = ReceiveProgress()
            finished = false
            failure = nil
            aborted = false
            condition.broadcast()
        }
    }

    /// Publishes the receive half's progress; returns the sender's error if it failed.
    func publish(_ newProgress: ReceiveProgress) -> CollectiveError? {
        condition.withLock {
            if newProgress != progress {
                progress = newProgress
                condition.broadcast()
            }
            return aborted ? (failure ?? .closed("the call was aborted")) : nil
        }
    }

    /// Stops the current call's sending (after a receive error); returns once the thread let go of the buffer.
    func abort() {
        condition.withLock {
            aborted = true
            condition.broadcast()
            while !finished { condition.wait() }
        }
    }

    /// Waits until the send half is done; throws what made it fail.
    func waitUntilFinished() throws {
        let error: CollectiveError? = condition.withLock {
            while !finished { condition.wait() }
            return failure
        }
        if let error { throw error }
    }

    /// Ends the thread (after the current call).
    func stop() {
        condition.withLock {
            stopping = true
            aborted = true
            condition.broadcast()
        }
    }

    // MARK: Sender thread

    private func run() {
        while true {
            condition.lock()
            while work == nil && !stopping { condition.wait() }
            if stopping && work == nil { condition.unlock(); return }
            var half = work!
            work = nil
            condition.unlock()

            var sendFailure: CollectiveError?
            do { try send(&half) } catch let thrown as CollectiveError { sendFailure = thrown } catch {
                sendFailure = .closed("\(error)")
            }
            condition.withLock {
                if let sendFailure, failure == nil { failure = sendFailure; aborted = true }
                finished = true
                condition.broadcast()
            }
        }
    }

    /// Moves the half's bytes, waiting for the receive half or the socket as needed.
    private func send(_ half: inout SendHalf) throws {
        var current = ReceiveProgress()
        var lastProgress = monotonicSeconds()
        while true {
            switch try half.move(socket, after: current, context: label) {
            case .done: return
            case .moved: lastProgress = monotonicSeconds()
            case .waiting:
                // Wait for the receive half to finish more bytes (it owns the timeout then).
                let (next, stop) = condition.withLock { () -> (ReceiveProgress, Bool) in
                    while progress == current && !aborted { condition.wait() }
                    return (progress, aborted)
                }
                if stop { throw CollectiveError.closed("the call was aborted") }
                current = next
                lastProgress = monotonicSeconds()
            case .blocked:
                let idle = monotonicSeconds() - lastProgress
                if idle >= timeoutSeconds {
                    throw CollectiveError.timedOut("\(label): the right neighbour accepted no data for \(timeoutSeconds) s "
                        + "(a peer stalled, died or stopped calling)")
                }
                let slice = Deadline.after(seconds: min(pollSliceSeconds, timeoutSeconds - idle))
                _ = try socket.wait(for: Int16(POLLOUT), until: slice, context: label)
                let (next, stop) = condition.withLock { (progress, aborted) }
                if stop { throw CollectiveError.closed("the call was aborted") }
                current = next
            }
        }
    }
}
