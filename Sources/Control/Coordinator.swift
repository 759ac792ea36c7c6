import Collectives
import Foundation
import Kernels
import System
import Training
#if canImport(Glibc)
import Glibc
#endif

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
    /// The generation whose starting checkpoint was last verified (`synchronizeNewestCheckpoint`).
    var verifiedGeneration: Int?

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
        /// "HOST:PORT" of the other end, for the log lines of refusals.
        let address: String

        init(connection: ControlConnection, role: Role) {
            self.connection = connection
            self.role = role
            address = connection.socket.peerDescription
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
                // Carrying a run on adopts its workers, which may still be training: that needs their world.
                // Once it has stopped, it resumes with any number of workers.
                throw ControlError("\(statePath) is a run of \(loaded.policy.worldSize) workers that has not ended (its "
                                   + "workers may still be training), not \(configuration.policy.worldSize): carry it on with "
                                   + "--world-size \(loaded.policy.worldSize) (launch.sh --nodes \(loaded.policy.worldSize)), "
                                   + "stop it with mae-coordinator stop, then resume it with \(configuration.policy.worldSize) "
                                   + "workers and --resume auto")
            }
            loaded.resumeAfterCoordinatorRestart(now: now, adoptSeconds: configuration.adoptTimeoutSeconds)
            loaded.policy = configuration.policy
            state = loaded
            print("coordinator: carrying on the run in \(configuration.runDirectory): generation \(state.generation), "
                  + "restarts \(state.restarts), last checkpoint \(state.lastCheckpoint?.path ?? "none")"
                  + (state.phase == .adopting ? "; waiting up to \(formatSeconds(configuration.adoptTimeoutSeconds)) s for its "
                     + "agents and workers to reconnect (--adopt-timeout)" : ""))
        } else {
            state = RunState(policy: configuration.policy, totalSteps: configuration.totalSteps, now: now)
            // A run continued after it ended: its workers' generations stay refused.
            state.generation = previous.map { $0.generation + 1 } ?? 0
            if let resume = configuration.runConfig.resume {
                let newest = resume == "auto" ? try store.newestValid(setAsideDamaged: true).map { ($0.entry.path, $0.entry.step) }
                    : (resume, try CheckpointStore.verify(resume).step)
                if let newest { state.lastCheckpoint = CheckpointRecord(path: newest.0, step: newest.1, time: now) }
            } else if let existing = try store.completeCheckpoints().last {
                throw ControlError("\(configuration.runDirectory) already holds checkpoints (newest \(existing.path)); pass "
                                   + "--resume auto to continue that run, or choose another --run-dir")
            }
        }
        state.totalSteps = configuration.totalSteps
        // Agents and workers that outlived the previous coordinator reconnect to its address:
        // port 0 (a free one) means that port again when the run is carried on.
        let carriedOn = previous.map { !$0.phase.isFinal } ?? false
        let previousPort = { (text: String?) in carriedOn ? text.flatMap { try? SocketAddress(parsing: $0) }?.port : nil }
        var listenAddress = configuration.listenAddress
        if listenAddress.port == 0, let port = previousPort(previous?.address) { listenAddress.port = port }
        listener = try Socket.listening(on: listenAddress)
        var metricsAddress = configuration.metricsAddress
        if metricsAddress.port == 0, let port = previousPort(previous?.metricsAddress) { metricsAddress.port = port }
        // /metrics is only read: when its old port is taken, any free one does.
        metricsListener = try (try? Socket.listening(on: metricsAddress)) ?? Socket.listening(on: configuration.metricsAddress)
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
        // A peer that has not proven the secret within 5 s is dropped (a slow or silent sender).
        for peer in peers where peer.closeReason == nil {
            if case .pending(_, let since) = peer.role, now - since > 5 { peer.closeReason = "no hello within 5 s" }
        }
        removeClosedPeers(now: wallClockSeconds())
    }

    func acceptPeers(now: Double) {
        while let socket = try? listener.accept(until: .after(seconds: 0), context: "coordinator listener") {
            let connection = ControlConnection(socket: socket, peer: "a new connection from \(socket.peerDescription)")
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
            case .pending:
                // Malformed, oversized, out-of-order or slow before proving the secret.
                print("coordinator: refused a connection from \(peer.address): \(reason)")
            case .control:
                break
            }
        }
    }
}
