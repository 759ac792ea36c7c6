import Collectives
import Foundation
import Kernels
import System
import Training
#if canImport(Glibc)
import Glibc
#endif

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

    public init(runDirectory: String, listenAddress: SocketAddress, metricsAddress: SocketAddress, policy: CoordinatorPolicy,
                runConfig: RunConfig, automaticThreads: Bool, automaticDataThreads: Bool, schedule: LearningRateSchedule,
                totalSteps: Int, peerTimeoutSeconds: Double, heartbeatSeconds: Double, exitWithParent: Bool, portFile: String?) {
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
    }
}

/// The control plane of one run: the rendezvous of every generation, liveness, the
/// checkpoint policy, restarts, status and metrics. One thread, one `poll` loop; the run's
/// state is the value `RunState`, advanced by its pure `handle(_:now:)`, and this class
/// only turns sockets, signals and the clock into events and actions into messages.
public final class Coordinator {
    public static let stateFileName = "coordinator.json"

    let configuration: CoordinatorConfiguration
    let secret: [UInt8]
    var state: RunState
    let listener: Socket
    let metricsListener: Socket
    var peers: [Peer] = []
    let store: CheckpointStore
    var finishing: (code: Int32, deadline: Double)?
    var lastSaved = 0.0
    var savedState: RunState?
    var handledTerminations = 0, handledInterruptions = 0
    /// When the first stop signal came (signals within 1 s of it count as the same one).
    var firstSignalTime: Double?
    let parentAtStart = getppid()

    /// A connected process: not yet authenticated, or a worker, an agent or a command.
    final class Peer {
        enum Role: Equatable {
            case pending(nonce: String, since: Double)
            case worker(rank: Int, generation: Int)
            case agent(firstRank: Int)
            case control
        }
        let connection: ControlConnection
        var role: Role
        var closeReason: String?

        init(connection: ControlConnection, role: Role) {
            self.connection = connection
            self.role = role
        }
    }

    /// Binds the control and metrics listeners and loads or creates the run's state.
    public init(_ configuration: CoordinatorConfiguration) throws {
        self.configuration = configuration
        secret = try JobSecret.createOrRead(runDirectory: configuration.runDirectory).secret
        store = CheckpointStore(runDirectory: configuration.runDirectory, warn: { print("coordinator: \($0)") })
        let now = wallClockSeconds()
        let statePath = configuration.runDirectory + "/" + Self.stateFileName
        let previous = FileSystem.exists(statePath) ? try Self.readState(statePath) : nil
        if let previous, previous.phase.isFinal, configuration.runConfig.resume == nil {
            throw ControlError("\(configuration.runDirectory) holds a run that has \(previous.phase.rawValue); pass --resume auto "
                               + "to continue it from its newest checkpoint, or choose another --run-dir")
        }
        if var loaded = previous, !loaded.phase.isFinal {
            guard loaded.policy.worldSize == configuration.policy.worldSize else {
                throw ControlError("\(statePath) is a run of world size \(loaded.policy.worldSize), not \(configuration.policy.worldSize)")
            }
            loaded.resumeAfterCoordinatorRestart(now: now)
            loaded.policy = configuration.policy
            state = loaded
            print("coordinator: carrying on the run in \(configuration.runDirectory): generation \(state.generation), "
                  + "restarts \(state.restarts), last checkpoint \(state.lastCheckpoint?.path ?? "none")")
        } else {
            state = RunState(policy: configuration.policy, totalSteps: configuration.totalSteps, now: now)
            // A run continued after it ended: its workers' generations stay refused.
            state.generation = previous.map { $0.generation + 1 } ?? 0
            if let resume = configuration.runConfig.resume {
                let newest = resume == "auto" ? try store.completeCheckpoints().last.map { ($0.path, $0.step) }
                    : (resume, try CheckpointStore.verify(resume).step)
                if let newest { state.lastCheckpoint = CheckpointRecord(path: newest.0, step: newest.1, time: now) }
            } else if let existing = try store.completeCheckpoints().last {
                throw ControlError("\(configuration.runDirectory) already holds checkpoints (newest \(existing.path)); pass "
                                   + "--resume auto to continue that run, or choose another --run-dir")
            }
        }
        state.totalSteps = configuration.totalSteps
        listener = try Socket.listening(on: configuration.listenAddress)
        metricsListener = try Socket.listening(on: configuration.metricsAddress)
        state.address = SocketAddress(host: configuration.listenAddress.host,
                                      port: try listener.localPort(context: "coordinator listener")).description
        state.metricsAddress = SocketAddress(host: configuration.metricsAddress.host,
                                             port: try metricsListener.localPort(context: "metrics listener")).description
        state.coordinatorPid = getpid()
        state.runDirectory = configuration.runDirectory
        try save(force: true)
        if let portFile = configuration.portFile {
            try FileSystem.writeFile(portFile + ".tmp", bytes: Array("\(state.address)\n".utf8), synchronize: true)
            try FileSystem.rename(portFile + ".tmp", portFile)
        }
    }

    /// The address workers, agents and commands connect to.
    public var address: String { state.address }

    // MARK: The loop

    /// Serves until the run is over; returns the exit status (`CoordinatorExit`).
    public func run() -> Int32 {
        print("coordinator: listening on \(state.address) (metrics http://\(state.metricsAddress)/metrics); "
              + "run directory \(configuration.runDirectory); \(state.policy.worldSize) workers, \(state.totalSteps) steps")
        fflush(stdout)
        while true {
            pollOnce(timeoutMilliseconds: 100)
            let now = wallClockSeconds()
            handleSignals(now: now)
            apply(.tick, now: now)
            try? save(force: false)
            if let finishing {
                let agentsLeft = peers.contains { if case .agent = $0.role { return true } else { return false } }
                if !agentsLeft || now >= finishing.deadline {
                    try? save(force: true)
                    printSummary()
                    for peer in peers { peer.connection.close() }
                    listener.close()
                    metricsListener.close()
                    return finishing.code
                }
            }
        }
    }

    func pollOnce(timeoutMilliseconds: Int32) {
        var entries = [pollfd(fd: listener.descriptor, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: metricsListener.descriptor, events: Int16(POLLIN), revents: 0)]
        let polled = peers
        entries += polled.map { pollfd(fd: $0.connection.socket.descriptor, events: Int16(POLLIN), revents: 0) }
        _ = SystemCall.retryingInterrupted { poll(&entries, nfds_t(entries.count), timeoutMilliseconds) }
        let now = wallClockSeconds()
        if entries[0].revents != 0 { acceptPeers(now: now) }
        if entries[1].revents != 0 { serveMetrics() }
        for (index, peer) in polled.enumerated() where entries[index + 2].revents != 0 && peer.closeReason == nil {
            do {
                for message in try peer.connection.receiveAvailable() {
                    handle(message, from: peer, now: wallClockSeconds())
                    if peer.closeReason != nil { break }
                }
            } catch {
                peer.closeReason = "\(error)"
            }
        }
        // A peer that has not proven the secret within 5 s is dropped.
        for peer in peers {
            if case .pending(_, let since) = peer.role, now - since > 5 { peer.closeReason = "no hello within 5 s" }
        }
        removeClosedPeers(now: wallClockSeconds())
    }

    func acceptPeers(now: Double) {
        while let socket = try? listener.accept(until: .after(seconds: 0), context: "coordinator listener") {
            let connection = ControlConnection(socket: socket, peer: "a new connection")
            do {
                let nonce = try Authentication.nonce()
                try connection.send(.challenge(nonce: nonce))
                peers.append(Peer(connection: connection, role: .pending(nonce: nonce, since: now)))
            } catch {
                connection.close()
            }
        }
    }

    func removeClosedPeers(now: Double) {
        let closed = peers.filter { $0.closeReason != nil }
        guard !closed.isEmpty else { return }
        peers.removeAll { $0.closeReason != nil }
        for peer in closed {
            peer.connection.close()
            let reason = peer.closeReason ?? "closed"
            switch peer.role {
            case .worker(let rank, let generation):
                apply(.workerLost(rank: rank, generation: generation, reason: reason), now: now)
            case .agent(let firstRank):
                // Only when no newer connection of that agent replaced this one.
                let replaced = peers.contains { $0.role == .agent(firstRank: firstRank) }
                if !replaced { apply(.agentLost(firstRank: firstRank, reason: reason), now: now) }
            case .pending, .control:
                break
            }
        }
    }

    // MARK: Messages

    func handle(_ message: ControlMessage, from peer: Peer, now: Double) {
        switch peer.role {
        case .pending(let nonce, _):
            authenticate(message, from: peer, nonce: nonce, now: now)
        case .worker(let rank, let generation):
            guard generation == state.generation else { return }
            switch message {
            case .ringListener(let host, let port): apply(.ringListener(rank: rank, address: "\(host):\(port)"), now: now)
            case .heartbeat(let report): apply(.heartbeat(rank: rank, report: report), now: now)
            case .checkpointWritten(let path, let step): apply(.checkpointWritten(path: path, step: step), now: now)
            case .finished: apply(.workerFinished(rank: rank), now: now)
            default: peer.closeReason = "rank \(rank) sent \(message.name), which a worker may not send"
            }
        case .agent(let firstRank):
            switch message {
            case .agentHeartbeat: apply(.agentHeartbeat(firstRank: firstRank), now: now)
            case let .workerStarted(rank, generation, pid):
                apply(.workerStarted(rank: rank, generation: generation, pid: pid), now: now)
            case let .workerExited(rank, generation, pid, status, description):
                apply(.workerExited(rank: rank, generation: generation, pid: pid, status: status, description: description), now: now)
            case .workersStopped(let generation): apply(.workersStopped(firstRank: firstRank, generation: generation), now: now)
            default: peer.closeReason = "the agent sent \(message.name), which an agent may not send"
            }
        case .control:
            switch message {
            case .statusRequest:
                send(.status(state.status(now: now, live: true)), to: peer)
            case .stopRun:
                let wasFinal = state.phase.isFinal
                apply(.stopRequested(reason: "mae-coordinator stop"), now: now)
                send(.acknowledged(message: wasFinal ? "the run is already over (\(state.phase.rawValue))"
                                   : "stopping: the workers finish their step and write a checkpoint"), to: peer)
            case .checkpointRun:
                let accepted = state.phase == .training
                apply(.checkpointRequested, now: now)
                send(.acknowledged(message: accepted ? "the workers write a checkpoint after their current step"
                                   : "no checkpoint now: the run is \(state.phase.rawValue)"), to: peer)
            default: peer.closeReason = "a command sent \(message.name)"
            }
        }
    }

    /// The first message of a connection: a `hello` with the right proof, then admission.
    func authenticate(_ message: ControlMessage, from peer: Peer, nonce: String, now: Double) {
        guard case .hello(let introduction) = message else {
            refuse(peer, "expected a hello, got \(message.name)")
            return
        }
        let expected = Authentication.proof(secret: secret, nonce: nonce, role: introduction.role)
        guard Authentication.verify(introduction.proof, expected: expected) else {
            refuse(peer, "wrong proof of the job secret (a process of another run, or a wrong --secret-file)")
            return
        }
        let welcome = ControlMessage.welcome(proof: Authentication.welcomeProof(secret: secret, nonce: introduction.nonce))
        peer.connection.reader.limit = Frame.maximumBytes
        switch introduction.role {
        case .worker:
            if let reason = state.workerRefusal(rank: introduction.rank, generation: introduction.generation) {
                refuse(peer, reason)
                return
            }
            peer.role = .worker(rank: introduction.rank, generation: introduction.generation)
            peer.connection.peer = "rank \(introduction.rank) on \(introduction.host)"
            send(welcome, to: peer)
            apply(.workerJoined(rank: introduction.rank, generation: introduction.generation, pid: introduction.pid,
                                host: introduction.host), now: now)
        case .agent:
            if let reason = state.agentRefusal(firstRank: introduction.rank, rankCount: introduction.rankCount) {
                refuse(peer, reason)
                return
            }
            // A reconnecting agent replaces its old connection.
            for other in peers where other !== peer && other.role == .agent(firstRank: introduction.rank) {
                other.role = .control
                other.closeReason = "replaced by a new connection"
            }
            peer.role = .agent(firstRank: introduction.rank)
            peer.connection.peer = "the agent on \(introduction.host)"
            send(welcome, to: peer)
            apply(.agentJoined(firstRank: introduction.rank, rankCount: introduction.rankCount, host: introduction.host,
                               pid: introduction.pid), now: now)
        case .control:
            peer.role = .control
            peer.connection.peer = "a command"
            send(welcome, to: peer)
        }
    }

    func refuse(_ peer: Peer, _ reason: String) {
        print("coordinator: refused a connection: \(reason)")
        try? peer.connection.send(.refused(reason: reason))
        peer.role = .control  // nothing to report when it closes
        peer.closeReason = reason
    }

    func send(_ message: ControlMessage, to peer: Peer) {
        do { try peer.connection.send(message) } catch { peer.closeReason = "\(error)" }
    }

    // MARK: Events and actions

    func apply(_ event: CoordinatorEvent, now: Double) {
        for action in state.handle(event, now: now) { perform(action, now: now) }
    }

    func perform(_ action: CoordinatorAction, now: Double) {
        switch action {
        case let .startWorkers(agent, generation, ranks):
            synchronizeNewestCheckpoint(now: now)
            for peer in peers where peer.role == .agent(firstRank: agent) {
                send(.startWorkers(generation: generation, ranks: ranks), to: peer)
            }
        case let .stopWorkers(agent, generation):
            for peer in peers where peer.role == .agent(firstRank: agent) { send(.stopWorkers(generation: generation), to: peer) }
        case .sendAssignment(let rank):
            for peer in peers where peer.role == .worker(rank: rank, generation: state.generation) {
                send(.assignment(assignment(rank: rank)), to: peer)
            }
        case .sendRingTable(let addresses):
            for peer in currentWorkers() { send(.ringTable(addresses: addresses), to: peer) }
        case .requestCheckpoint:
            for peer in currentWorkers() { send(.requestCheckpoint, to: peer) }
        case .requestStop:
            for peer in currentWorkers() { send(.requestStop, to: peer) }
        case .dropOldWorkers:
            for peer in peers {
                if case .worker(_, let generation) = peer.role, generation < state.generation {
                    peer.closeReason = "generation \(generation) is over"
                }
            }
        case .pruneCheckpoints:
            do {
                try store.prune(keepLast: configuration.runConfig.keepCheckpoints,
                                keepEveryEpochs: configuration.runConfig.keepEveryEpochs)
            } catch {
                print("coordinator: warning: could not prune old checkpoints: \(error)")
            }
        case .shutdownAgents(let reason):
            for peer in peers {
                if case .agent = peer.role { send(.shutdown(reason: reason), to: peer) }
            }
        case .log(let line):
            print("coordinator: \(line)")
            fflush(stdout)
        case .finish(let code):
            finishing = (code, now + configuration.policy.stopGraceSeconds + 10)
        }
    }

    func currentWorkers() -> [Peer] {
        peers.filter { if case .worker(_, let generation) = $0.role { generation == state.generation } else { false } }
    }

    /// A checkpoint may be complete on disk before its report arrived (rank 0 killed in
    /// between): a generation starts from the newest complete one on disk.
    func synchronizeNewestCheckpoint(now: Double) {
        guard let newest = try? store.completeCheckpoints().last, newest.step > (state.lastCheckpoint?.step ?? -1) else { return }
        state.lastCheckpoint = CheckpointRecord(path: newest.path, step: newest.step, time: now)
    }

    func assignment(rank: Int) -> Assignment {
        var config = configuration.runConfig
        config.resume = state.lastCheckpoint?.path
        return Assignment(rank: rank, worldSize: state.policy.worldSize, generation: state.generation, config: config,
                          automaticThreads: configuration.automaticThreads,
                          automaticDataThreads: configuration.automaticDataThreads, schedule: configuration.schedule,
                          ringToken: Authentication.ringToken(secret: secret, generation: state.generation),
                          peerTimeoutSeconds: configuration.peerTimeoutSeconds,
                          heartbeatSeconds: configuration.heartbeatSeconds)
    }

    // MARK: Signals, state file, summary

    func handleSignals(now: Double) {
        let terminations = ProcessSignals.terminations, interruptions = ProcessSignals.interruptions
        let received = terminations + interruptions - handledTerminations - handledInterruptions
        if received > 0 {
            handledTerminations = terminations
            handledInterruptions = interruptions
            let reason = interruptions > 0 ? "SIGINT" : "SIGTERM"
            if firstSignalTime == nil || state.phase != .stopping {
                firstSignalTime = firstSignalTime ?? now
                apply(.stopRequested(reason: reason), now: now)
            } else if let first = firstSignalTime, now - first >= 1, !state.phase.isFinal {
                // A second signal (not the same Ctrl-C reaching us twice, through the terminal
                // and through launch.sh): no more waiting for the checkpoint.
                for action in state.end(.stopped, "second stop signal: stopping the workers without waiting", now: now) {
                    perform(action, now: now)
                }
            }
        }
        if configuration.exitWithParent, getppid() != parentAtStart, !state.stopRequested {
            apply(.stopRequested(reason: "the launcher (pid \(parentAtStart)) went away"), now: now)
        }
    }

    /// Writes the state file when it changed (at most twice a second unless `force`), atomically.
    func save(force: Bool) throws {
        let now = wallClockSeconds()
        guard force || (state != savedState && (now - lastSaved >= 0.5 || state.phase != savedState?.phase)) else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let bytes = Array(try encoder.encode(state))
        let path = configuration.runDirectory + "/" + Self.stateFileName
        try FileSystem.writeFile(path + ".tmp", bytes: bytes, synchronize: true)
        try FileSystem.rename(path + ".tmp", path)
        lastSaved = now
        savedState = state
    }

    /// Reads a state file written by `save`.
    public static func readState(_ path: String) throws -> RunState {
        do {
            return try JSONDecoder().decode(RunState.self, from: Data(try FileSystem.readFile(path)))
        } catch let error as SystemCallError {
            throw ControlError("cannot read \(path): \(error.reason)")
        } catch {
            throw ControlError("\(path) is not a coordinator state file (\(error))")
        }
    }

    func printSummary() {
        let status = state.status(now: wallClockSeconds(), live: false)
        let wall = wallClockSeconds() - state.startedAt
        var lines = ["coordinator: run \(state.phase.rawValue): step \(status.step) of \(status.totalSteps), final loss "
                     + (status.loss.map { String(format: "%.4f", $0) } ?? "-") + ", restarts \(state.restarts), "
                     + String(format: "wall time %.1f s", wall) + ", last checkpoint \(status.lastCheckpoint ?? "none")"]
        if !state.failures.isEmpty {
            lines.append("coordinator: failures:")
            lines += state.failures.map { "coordinator:   generation \($0.generation): \($0.what)" }
        }
        let code = CoordinatorExit(rawValue: state.exitCode ?? 1) ?? .failed
        lines.append("coordinator: exit status \(code.rawValue) (\(code.meaning))")
        print(lines.joined(separator: "\n"))
        fflush(stdout)
    }
}
