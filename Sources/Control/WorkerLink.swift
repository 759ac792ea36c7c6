import Collectives
import Foundation
import Kernels
import Training
#if canImport(Glibc)
import Glibc
#endif

/// A worker's lasting connection to the coordinator, and the `TrainingControl` the
/// training loop talks to. After the ring is formed a heartbeat thread sends the latest
/// step report about every second and receives the coordinator's requests. When the
/// coordinator or the agent that started the worker goes away, the worker exits at once
/// (status 1): its generation is over, and the next one resumes from a checkpoint.
public final class WorkerLink: TrainingControl, @unchecked Sendable {
    let connection: ControlConnection
    let rank: Int
    private let lock = NSLock()
    private var latest: StepReport?
    private var checkpointRequests = 0
    private var stopAsked = false
    private var finished = false
    private let parentAtStart = getppid()

    init(connection: ControlConnection, rank: Int) {
        self.connection = connection
        self.rank = rank
    }

    // MARK: TrainingControl

    public func stepFinished(_ report: StepReport) {
        lock.lock()
        latest = report
        lock.unlock()
    }

    public func checkpointWritten(path: String, step: Int) {
        // A lost report only delays the coordinator's record: it also looks on disk before a restart.
        try? connection.send(.checkpointWritten(path: path, step: step))
    }

    public func takeCheckpointRequest() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard checkpointRequests > 0 else { return false }
        checkpointRequests = 0
        return true
    }

    public var stopRequested: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopAsked
    }

    // MARK: Heartbeats

    /// Starts the heartbeat thread.
    func startHeartbeats(every seconds: Double) {
        let thread = Thread { [self] in heartbeatLoop(every: seconds) }
        thread.name = "heartbeat"
        thread.start()
    }

    private func heartbeatLoop(every seconds: Double) {
        var nextBeat = 0.0
        while true {
            lock.lock()
            let done = finished
            let report = latest
            lock.unlock()
            if done { return }
            if getppid() != parentAtStart { die("the agent that started this worker went away") }
            if monotonicSeconds() >= nextBeat {
                do { try connection.send(.heartbeat(report: report)) } catch { die("lost the coordinator: \(error)") }
                nextBeat = monotonicSeconds() + seconds
            }
            do {
                if let message = try connection.receive(until: .after(seconds: min(0.25, seconds))) { handle(message) }
            } catch {
                lock.lock()
                let done = finished
                lock.unlock()
                if done { return }
                die("lost the coordinator: \(error)")
            }
        }
    }

    private func handle(_ message: ControlMessage) {
        lock.lock()
        defer { lock.unlock() }
        switch message {
        case .requestCheckpoint: checkpointRequests += 1
        case .requestStop: stopAsked = true
        case .refused(let reason):
            lock.unlock()
            die("the coordinator ended this worker's generation: \(reason)")
        default: break
        }
    }

    /// Ends the process now: without a coordinator this worker's generation cannot go on.
    private func die(_ reason: String) -> Never {
        var standardError = FileHandleStream.standardError
        print("error: rank \(rank): \(reason); exiting", to: &standardError)
        _exit(1)
    }

    /// Tells the coordinator that this worker is done (it exits 0 next).
    func finish(steps: Int, stoppedOnRequest: Bool) {
        lock.lock()
        finished = true
        let report = latest
        lock.unlock()
        // The last step's report first, so that the coordinator's record ends with it.
        try? connection.send(.heartbeat(report: report))
        try? connection.send(.finished(steps: steps, stoppedOnRequest: stoppedOnRequest))
    }
}
