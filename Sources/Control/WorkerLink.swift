import Collectives
import Foundation
import Kernels
import Training
#if canImport(Glibc)
import Glibc
#endif

/// A worker's lasting connection to the coordinator, and the `TrainingControl` the
/// training loop talks to. After the ring is formed a heartbeat thread sends the latest
/// step report about every second, reports checkpoints, and receives the coordinator's
/// requests; the training thread only reads and writes values under a lock.
///
/// When the coordinator goes away the worker trains on through its ring: the heartbeat
/// thread reconnects (backing off up to 1 s between tries) as a worker of the same rank and
/// generation, to be adopted by a coordinator started again on the run directory, and then
/// sends again what the new coordinator cannot know: its latest step report and its newest
/// checkpoint. Nothing else is lost: rank 0 writes `log.txt`, `metrics.jsonl` and the
/// checkpoints itself. The wait is bounded by the worker's agent, which stops it (SIGTERM: a
/// checkpoint, then exit 0) when no coordinator came back in its `--reconnect-timeout`; a
/// worker whose agent went away, or that the coordinator refuses (its generation is over),
/// exits at once with status 1.
public final class WorkerLink: TrainingControl, @unchecked Sendable {
    let rank: Int
    /// Opens a new authenticated connection as a reconnecting worker of this rank and generation.
    let reconnect: () throws -> ControlConnection
    private let lock = NSLock()
    /// Nil while the coordinator is away.
    private var connection: ControlConnection?
    private var latest: StepReport?
    /// The newest checkpoint written (rank 0), and whether the coordinator still has to hear of it.
    private var newestCheckpoint: (path: String, step: Int)?
    private var checkpointUnreported = false
    private var checkpointRequests = 0
    private var stopAsked = false
    /// Set by `finish`; the heartbeat thread delivers it and sets `delivered`.
    private var finishReport: (steps: Int, stoppedOnRequest: Bool)?
    private var delivered = false
    private let parentAtStart = getppid()

    init(connection: ControlConnection, rank: Int, reconnect: @escaping () throws -> ControlConnection) {
        self.connection = connection
        self.rank = rank
        self.reconnect = reconnect
    }

    // MARK: TrainingControl

    public func stepFinished(_ report: StepReport) {
        lock.lock()
        latest = report
        lock.unlock()
    }

    public func checkpointWritten(path: String, step: Int) {
        // The heartbeat thread reports it (within a quarter second), again after a reconnection.
        lock.lock()
        newestCheckpoint = (path, step)
        checkpointUnreported = true
        lock.unlock()
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
        var backoff = 0.2
        while true {
            if getppid() != parentAtStart { die("the agent that started this worker went away") }
            lock.lock()
            let current = connection
            lock.unlock()
            guard let current else {
                if tryReconnecting() {
                    backoff = 0.2
                    nextBeat = 0
                } else {
                    usleep(useconds_t(backoff * 1_000_000))
                    backoff = min(backoff * 2, 1)
                }
                continue
            }
            do {
                if try deliverPending(on: current, beat: monotonicSeconds() >= nextBeat) { return }
                if monotonicSeconds() >= nextBeat { nextBeat = monotonicSeconds() + seconds }
                if let message = try current.receive(until: .after(seconds: min(0.25, seconds))) { handle(message) }
            } catch {
                current.close()
                lock.lock()
                connection = nil
                lock.unlock()
                log("lost the coordinator (\(error)); training goes on, reconnecting")
            }
        }
    }

    /// Sends what is due: an unreported checkpoint, a heartbeat when `beat`, and the final
    /// report once `finish` asked for it (then returns true: the thread's work is done).
    private func deliverPending(on connection: ControlConnection, beat: Bool) throws -> Bool {
        lock.lock()
        let checkpoint = checkpointUnreported ? newestCheckpoint : nil
        checkpointUnreported = false
        let report = latest
        let final = finishReport
        lock.unlock()
        do {
            if let checkpoint { try connection.send(.checkpointWritten(path: checkpoint.path, step: checkpoint.step)) }
            // The last step's report before `finished`, so that the coordinator's record ends with it.
            if beat || final != nil { try connection.send(.heartbeat(report: report)) }
            if let final { try connection.send(.finished(steps: final.steps, stoppedOnRequest: final.stoppedOnRequest)) }
        } catch {
            if checkpoint != nil {
                lock.lock()
                checkpointUnreported = true
                lock.unlock()
            }
            throw error
        }
        guard final != nil else { return false }
        lock.lock()
        delivered = true
        lock.unlock()
        return true
    }

    /// One try to reach a coordinator again; true when it accepted this worker. A refusal
    /// (its generation is over, or no coordinator adopts it) ends the process.
    private func tryReconnecting() -> Bool {
        do {
            let fresh = try reconnect()
            lock.lock()
            connection = fresh
            // The new coordinator may have missed the report of the newest checkpoint.
            checkpointUnreported = newestCheckpoint != nil
            lock.unlock()
            log("reconnected to the coordinator; training goes on")
            return true
        } catch let error as ControlError where error.isRefusal {
            die("\(error)")
        } catch {
            return false
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

    private func log(_ line: String) {
        var standardError = FileHandleStream.standardError
        print("rank \(rank): \(line)", to: &standardError)
    }

    /// Ends the process now: this worker's generation cannot go on.
    private func die(_ reason: String) -> Never {
        var standardError = FileHandleStream.standardError
        print("error: rank \(rank): \(reason); exiting", to: &standardError)
        _exit(1)
    }

    /// Tells the coordinator that this worker is done (it exits 0 next). While the coordinator
    /// is away this waits for one to adopt the worker, so that the run's end is not lost; the
    /// agent bounds the wait (its SIGTERM, or its going away, ends it).
    func finish(steps: Int, stoppedOnRequest: Bool) {
        lock.lock()
        finishReport = (steps, stoppedOnRequest)
        lock.unlock()
        // Connected, the report goes out within a quarter second (each send gives up after 5 s).
        let connectedLimit = monotonicSeconds() + 15
        while true {
            lock.lock()
            let done = delivered, connected = connection != nil
            lock.unlock()
            if done { return }
            if connected ? monotonicSeconds() >= connectedLimit : StopSignal.isRequested || getppid() != parentAtStart { return }
            usleep(20_000)
        }
    }
}
