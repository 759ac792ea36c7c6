import Collectives
import Foundation
import Kernels
import System
import Training
#if canImport(Glibc)
import Glibc
#endif

/// Events into the state machine, and its actions out as messages, pruning and logs.
extension Coordinator {
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
}
