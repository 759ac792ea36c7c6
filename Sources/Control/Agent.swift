import Collectives
import Foundation
import Kernels
import System
#if canImport(Glibc)
import Glibc
#endif

/// Everything `mae-coordinator agent` was configured with.
public struct AgentConfiguration: Sendable {
    public var coordinator: SocketAddress
    public var secretPath: String
    /// The ranks this machine's workers take: firstRank ..< firstRank + rankCount.
    public var firstRank: Int
    public var rankCount: Int
    /// The name this machine reports (status rows, messages).
    public var host: String
    /// Where `logs/rank-N.log` go.
    public var runDirectory: String
    /// The `mae-worker` to start.
    public var workerExecutable: String
    /// Extra flags for every worker (e.g. --listen-host, --congestion-control).
    public var workerArguments: [String]
    /// Seconds between SIGTERM and SIGKILL when stopping workers.
    public var graceSeconds: Double
    /// How long the agent tries to reach a coordinator that is not up yet or went away before
    /// it gives up (stopping its workers, which write a checkpoint, and exiting 1).
    public var reconnectSeconds: Double
    public var heartbeatSeconds: Double
    /// With the MPI backend: the mpirun command line (without -np) that starts all of this
    /// machine's ranks as one job; nil for the TCP ring (one process per rank).
    public var mpirun: [String]?

    public init(coordinator: SocketAddress, secretPath: String, firstRank: Int, rankCount: Int, host: String,
                runDirectory: String, workerExecutable: String, workerArguments: [String], graceSeconds: Double,
                reconnectSeconds: Double, heartbeatSeconds: Double, mpirun: [String]? = nil) {
        self.coordinator = coordinator
        self.secretPath = secretPath
        self.firstRank = firstRank
        self.rankCount = rankCount
        self.host = host
        self.runDirectory = runDirectory
        self.workerExecutable = workerExecutable
        self.workerArguments = workerArguments
        self.graceSeconds = graceSeconds
        self.reconnectSeconds = reconnectSeconds
        self.heartbeatSeconds = heartbeatSeconds
        self.mpirun = mpirun
    }
}

/// One machine's agent: starts its workers when the coordinator says so, forwards their
/// output (rank 0 to this terminal, every rank to RUN_DIR/logs/rank-N.log, other ranks'
/// warnings and errors to standard error with their rank), reports every exit with its
/// status, and stops workers (SIGTERM, then SIGKILL after the grace period). It is the only
/// process that signals workers.
///
/// When the coordinator goes away the workers train on: the agent keeps them, keeps their
/// exit reports, and tries to reconnect to the same address (backing off up to 1 s) for
/// `reconnectSeconds`. A coordinator started again on the run directory adopts it together
/// with its workers (`RunState+Adoption.swift`): its hello names the generation they run,
/// and it re-sends their pids and the reports the old coordinator missed. When no
/// coordinator comes back in time it stops its workers (SIGTERM: they finish the step and
/// write a checkpoint, from which a coordinator started again resumes) and exits 1.
public final class Agent {
    let configuration: AgentConfiguration
    let secret: [UInt8]
    var connection: ControlConnection?
    var workers: [Worker] = []
    /// Workers being stopped: the generation, when SIGTERM went out, and whether the agent exits afterwards.
    var stopping: (generation: Int, since: Double)?
    var exitAfterStop: Int32?
    var lastHeartbeat = 0.0
    /// While no coordinator is connected: when the agent gives up, and when it tries next.
    var reconnectDeadline = 0.0
    var nextConnectAttempt = 0.0
    var connectBackoff = 0.2
    /// Reports made while no coordinator was connected, sent to the next one.
    var undelivered: [ControlMessage] = []
    /// A start that came while workers were still being stopped: done once they are gone.
    var deferredStart: (generation: Int, ranks: [Int])?

    /// One running worker process (or one mpirun of all this machine's ranks) and where its output goes.
    final class Worker {
        /// The rank whose output goes to the terminal when it is 0; `ranks` holds every rank the process runs.
        let rank: Int
        var ranks: [Int]
        let generation: Int
        let process: ChildProcess
        let logDescriptor: Int32
        var partialError: [UInt8] = []
        var reported = false

        init(rank: Int, generation: Int, process: ChildProcess, logDescriptor: Int32) {
            self.rank = rank
            ranks = [rank]
            self.generation = generation
            self.process = process
            self.logDescriptor = logDescriptor
        }

        deinit { FileSystem.close(logDescriptor) }
    }

    public init(_ configuration: AgentConfiguration) throws {
        self.configuration = configuration
        secret = try JobSecret.read(configuration.secretPath)
        try FileSystem.makeDirectories(configuration.runDirectory + "/logs")
    }

    /// Runs until the coordinator shuts the run down (0), the coordinator stays away (1),
    /// or SIGTERM (0, after stopping the workers).
    public func run() -> Int32 {
        var handledTerminations = 0
        reconnectDeadline = monotonicSeconds() + configuration.reconnectSeconds
        while true {
            let now = monotonicSeconds()
            if ProcessSignals.terminations > handledTerminations {
                handledTerminations = ProcessSignals.terminations
                log("SIGTERM: stopping the workers and exiting")
                beginStop(generation: Int.max, now: now)
                exitAfterStop = 0
            }
            if connection == nil && exitAfterStop == nil {
                // The workers train on meanwhile; their output is still forwarded between tries.
                if now >= nextConnectAttempt {
                    connect()
                    nextConnectAttempt = monotonicSeconds() + connectBackoff
                    connectBackoff = min(connectBackoff * 2, 1)
                }
                if connection == nil && exitAfterStop == nil && monotonicSeconds() >= reconnectDeadline {
                    let waited = "no coordinator at \(configuration.coordinator) for \(formatSeconds(configuration.reconnectSeconds)) s"
                    if workers.isEmpty {
                        log("\(waited); exiting")
                        return 1
                    }
                    log("\(waited) (--reconnect-timeout): stopping the workers (they finish their step and write a "
                        + "checkpoint, from which a coordinator started again on the run directory resumes) and exiting")
                    // The grace period counts from now, not from before the connection tries.
                    beginStop(generation: Int.max, now: monotonicSeconds())
                    exitAfterStop = 1
                }
            }
            pollOnce(now: now)
            reapWorkers()
            advanceStop(now: monotonicSeconds())
            if let code = exitAfterStop, workers.isEmpty, stopping == nil {
                connection?.close()
                return code
            }
            if let connection, monotonicSeconds() - lastHeartbeat >= configuration.heartbeatSeconds {
                lastHeartbeat = monotonicSeconds()
                do { try connection.send(.agentHeartbeat) } catch { lose("\(error)") }
            }
        }
    }

    func log(_ line: String) {
        var standardError = FileHandleStream.standardError
        print("agent \(configuration.host): \(line)", to: &standardError)
    }

    /// One try to reach the coordinator. With workers running, the hello names their
    /// generation, so that a coordinator started again can adopt them; their pids and the
    /// reports kept while no coordinator listened follow the welcome.
    func connect() {
        let running = workers.filter { !$0.reported }
        let generation = running.map(\.generation).max()
        let introduction = Introduction(role: .agent, proof: "", nonce: "", host: configuration.host, pid: getpid(),
                                        rank: configuration.firstRank, generation: generation ?? 0,
                                        rankCount: configuration.rankCount, reconnecting: generation != nil)
        do {
            // Short while workers run: their output and a stop wait for this loop. Giving up before the
            // hello is harmless; once it is sent, the answer is awaited longer (`Authentication.answerSeconds`).
            let fresh = try Authentication.connect(to: configuration.coordinator, secret: secret, introduction: introduction,
                                                   deadline: .after(seconds: running.isEmpty ? 2 : 0.5))
            connection = fresh
            lastHeartbeat = 0
            connectBackoff = 0.2
            var messages: [ControlMessage] = []
            for worker in running {
                for rank in worker.ranks {
                    messages.append(.workerStarted(rank: rank, generation: worker.generation, pid: worker.process.pid))
                }
            }
            messages += undelivered
            undelivered = []
            if !messages.isEmpty { log("reconnected to the coordinator with \(running.count) running worker(s)") }
            for message in messages { report(message) }
        } catch let error as ControlError where error.isRefusal {
            log("\(error); stopping the workers and exiting")
            beginStop(generation: Int.max, now: monotonicSeconds())
            exitAfterStop = 1
        } catch {
            connection = nil
        }
    }

    /// Sends a report to the coordinator, or keeps it for the next one while none is connected.
    func report(_ message: ControlMessage) {
        guard let connection else {
            // Bounded: exits and stops of a few generations, not an unbounded log.
            if undelivered.count < 1000 { undelivered.append(message) }
            return
        }
        do { try connection.send(message) } catch {
            undelivered.append(message)
            lose("\(error)")
        }
    }

    func lose(_ reason: String) {
        guard let lost = connection else { return }
        lost.close()
        connection = nil
        reconnectDeadline = monotonicSeconds() + configuration.reconnectSeconds
        nextConnectAttempt = 0
        if exitAfterStop == nil {
            log("lost the coordinator (\(reason)); " + (workers.isEmpty ? "reconnecting" : "the workers train on; reconnecting")
                + " for up to \(formatSeconds(configuration.reconnectSeconds)) s")
        }
    }

    func pollOnce(now: Double) {
        var entries: [pollfd] = []
        if let connection { entries.append(pollfd(fd: connection.socket.descriptor, events: Int16(POLLIN), revents: 0)) }
        for worker in workers {
            for descriptor in [worker.process.outputDescriptor, worker.process.errorDescriptor] where descriptor >= 0 {
                entries.append(pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0))
            }
        }
        _ = SystemCall.retryingInterrupted { poll(&entries, nfds_t(entries.count), 100) }
        if let connection {
            do {
                for message in try connection.receiveAvailable() { handle(message, now: now) }
            } catch {
                lose("\(error)")
            }
        }
        for worker in workers { forwardOutput(of: worker) }
    }

    func handle(_ message: ControlMessage, now: Double) {
        switch message {
        case let .startWorkers(generation, ranks):
            if stopping != nil { reapWorkers() }
            // Workers still being stopped (a stale generation found on reconnecting) go first:
            // the stop's SIGKILL must not reach the new ones.
            if stopping != nil {
                deferredStart = (generation, ranks)
            } else {
                startWorkers(generation: generation, ranks: ranks)
            }
        case .stopWorkers(let generation):
            beginStop(generation: generation, now: now)
        case .shutdown(let reason):
            log("the run is over: \(reason)")
            beginStop(generation: Int.max, now: now)
            exitAfterStop = 0
        case .refused(let reason):
            log("the coordinator ended our connection: \(reason)")
            lose(reason)
        default:
            log("ignored an unexpected \(message.name) from the coordinator")
        }
    }

    // MARK: Workers

    func startWorkers(generation: Int, ranks: [Int]) {
        if let mpirun = configuration.mpirun {
            startMPI(mpirun, ranks: ranks, generation: generation)
        } else {
            for rank in ranks { start(rank: rank, generation: generation) }
        }
    }

    func start(rank: Int, generation: Int) {
        let arguments = ["--coordinator", configuration.coordinator.description, "--secret-file", configuration.secretPath,
                         "--rank", String(rank), "--generation", String(generation),
                         "--local-workers", String(configuration.rankCount), "--host-name", configuration.host]
            + configuration.workerArguments
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
            + ["LOCAL_WORLD_SIZE=\(configuration.rankCount)"]
        let logPath = configuration.runDirectory + "/logs/rank-\(rank).log"
        do {
            let logDescriptor = try FileSystem.open(logPath, flags: O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC)
            let process = try ChildProcess(executable: configuration.workerExecutable, arguments: arguments,
                                           environment: environment)
            workers.append(Worker(rank: rank, generation: generation, process: process, logDescriptor: logDescriptor))
            report(.workerStarted(rank: rank, generation: generation, pid: process.pid))
        } catch {
            log("could not start rank \(rank): \(error)")
            report(.workerExited(rank: rank, generation: generation, pid: 0, status: 127, description: "could not be started: \(error)"))
        }
    }

    /// Starts this machine's ranks as one MPI job; MPI numbers them, which must match `ranks`
    /// (one agent per run with MPI: mpirun places the ranks itself).
    func startMPI(_ mpirun: [String], ranks: [Int], generation: Int) {
        let arguments = Array(mpirun.dropFirst()) + ["-np", String(ranks.count), configuration.workerExecutable,
                         "--coordinator", configuration.coordinator.description, "--secret-file", configuration.secretPath,
                         "--generation", String(generation), "--backend", "mpi", "--local-workers", String(configuration.rankCount),
                         "--host-name", configuration.host] + configuration.workerArguments
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        do {
            let logDescriptor = try FileSystem.open(configuration.runDirectory + "/logs/mpirun.log",
                                                    flags: O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC)
            let executable = mpirun[0].hasPrefix("/") ? mpirun[0] : try Self.findInPath(mpirun[0])
            let process = try ChildProcess(executable: executable, arguments: arguments, environment: environment)
            let worker = Worker(rank: ranks.first ?? 0, generation: generation, process: process, logDescriptor: logDescriptor)
            worker.ranks = ranks
            workers.append(worker)
            for rank in ranks { report(.workerStarted(rank: rank, generation: generation, pid: process.pid)) }
        } catch {
            log("could not start mpirun: \(error)")
            for rank in ranks {
                report(.workerExited(rank: rank, generation: generation, pid: 0, status: 127, description: "could not be started: \(error)"))
            }
        }
    }

    /// The first executable called `name` on PATH.
    static func findInPath(_ name: String) throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
            return "\(directory)/\(name)"
        }
        throw ControlError("\(name) is not on PATH (\(path)); install openmpi-bin or pass --mpirun with a full path")
    }

    /// Forwards what a worker wrote: every byte to its log; rank 0 to this terminal; other
    /// ranks' standard error line by line to standard error, with their rank.
    func forwardOutput(of worker: Worker) {
        for descriptor in [worker.process.outputDescriptor, worker.process.errorDescriptor] where descriptor >= 0 {
            let isError = descriptor == worker.process.errorDescriptor
            while let bytes = worker.process.readAvailable(descriptor), !bytes.isEmpty {
                bytes.withUnsafeBytes { try? FileSystem.writeAll(worker.logDescriptor, $0, path: "rank-\(worker.rank).log") }
                if worker.rank == 0 {
                    bytes.withUnsafeBytes { _ = write(isError ? 2 : 1, $0.baseAddress, $0.count) }
                } else if isError {
                    worker.partialError += bytes
                    while let newline = worker.partialError.firstIndex(of: 10) {
                        let line = String(decoding: worker.partialError[..<newline], as: UTF8.self)
                        worker.partialError.removeSubrange(...newline)
                        let text = (line.hasPrefix("[rank ") ? line : "[rank \(worker.rank)] " + line) + "\n"
                        _ = text.withCString { write(2, $0, strlen($0)) }
                    }
                }
            }
        }
    }

    /// Reports workers that ended.
    func reapWorkers() {
        for worker in workers where !worker.reported {
            guard let termination = worker.process.poll() else { continue }
            forwardOutput(of: worker)
            worker.reported = true
            let expected = stopping != nil
            let what = configuration.mpirun == nil ? "rank \(worker.rank)"
                : "mpirun of ranks \(worker.ranks.first ?? 0)...\(worker.ranks.last ?? 0)"
            if termination != .exited(0) && !expected {
                log("\(what) (pid \(worker.process.pid)) \(termination)")
            }
            for rank in worker.ranks {
                let description = configuration.mpirun == nil ? termination.description : "(\(what)) \(termination)"
                report(.workerExited(rank: rank, generation: worker.generation, pid: worker.process.pid,
                                     status: termination.shellStatus, description: description))
            }
        }
        workers.removeAll { $0.reported }
    }

    func beginStop(generation: Int, now: Double) {
        if stopping == nil {
            for worker in workers { worker.process.signal(SIGTERM) }
            stopping = (generation, now)
        } else if let current = stopping {
            stopping = (max(current.generation, generation), current.since)
        }
    }

    /// SIGKILL after the grace period; once every worker is gone, the coordinator hears it.
    func advanceStop(now: Double) {
        guard let current = stopping else { return }
        if !workers.isEmpty {
            if now - current.since >= configuration.graceSeconds {
                for worker in workers { worker.process.signal(SIGKILL) }
            }
            return
        }
        stopping = nil
        if current.generation != Int.max { report(.workersStopped(generation: current.generation)) }
        if let start = deferredStart, exitAfterStop == nil {
            deferredStart = nil
            startWorkers(generation: start.generation, ranks: start.ranks)
        }
    }
}
