import Collectives
import Foundation
import Kernels
import System
import Training
#if canImport(Glibc)
import Glibc
#endif

/// What the coordinator does with each message, by who sent it; the handshake of new connections.
extension Coordinator {
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
            if let reason = state.workerRefusal(rank: introduction.rank, generation: introduction.generation,
                                                reconnecting: introduction.reconnecting, pid: introduction.pid) {
                refuse(peer, reason)
                return
            }
            // A worker that reconnects again replaces its old connection, which it has given up.
            let role = Peer.Role.worker(rank: introduction.rank, generation: introduction.generation)
            for other in peers where other !== peer && other.role == role {
                other.role = .control
                other.closeReason = "replaced by a new connection"
            }
            peer.role = role
            peer.connection.peer = "rank \(introduction.rank) on \(introduction.host)"
            send(welcome, to: peer)
            apply(.workerJoined(rank: introduction.rank, generation: introduction.generation, pid: introduction.pid,
                                host: introduction.host, reconnecting: introduction.reconnecting), now: now)
        case .agent:
            if let reason = state.agentRefusal(firstRank: introduction.rank, rankCount: introduction.rankCount,
                                               host: introduction.host, pid: introduction.pid) {
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
                               pid: introduction.pid, runningGeneration: introduction.reconnecting ? introduction.generation : nil),
                  now: now)
        case .control:
            peer.role = .control
            peer.connection.peer = "a command"
            send(welcome, to: peer)
        }
    }

    func refuse(_ peer: Peer, _ reason: String) {
        print("coordinator: refused a connection from \(peer.address): \(reason)")
        try? peer.connection.send(.refused(reason: reason))
        peer.role = .control  // nothing to report when it closes
        peer.closeReason = reason
    }

    func send(_ message: ControlMessage, to peer: Peer) {
        do { try peer.connection.send(message) } catch { peer.closeReason = "\(error)" }
    }
}
