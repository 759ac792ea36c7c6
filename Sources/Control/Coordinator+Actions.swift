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
        case .dropAgent(let firstRank):
            for peer in peers where peer.role == .agent(firstRank: firstRank) {
                peer.role = .control  // already counted as lost
                peer.closeReason = "no heartbeat"
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

    /// A generation starts from the newest checkpoint on disk that verifies, checked once per
    /// generation: one may be complete before its report arrived (rank 0 killed in between),
    /// and one may have been damaged since (a flipped byte, a cut or missing file), which is
    /// set aside with a warning naming it, so the run falls back to the one before.
    func synchronizeNewestCheckpoint(now: Double) {
        guard verifiedGeneration != state.generation else { return }
        verifiedGeneration = state.generation
        let found: CheckpointEntry?
        do { found = try store.newestValid(setAsideDamaged: true)?.entry } catch {
            print("coordinator: warning: could not check the checkpoints in \(store.directory): \(error)")
            return
        }
        var newest = found.map { CheckpointRecord(path: $0.path, step: $0.step, time: now) }
        // A --resume checkpoint outside this run's directory stays until this run wrote a newer one.
        if let last = state.lastCheckpoint, !last.path.hasPrefix(store.directory + "/"), last.step > (newest?.step ?? -1) {
            do {
                _ = try CheckpointStore.verify(last.path)
                newest = last
            } catch {
                print("coordinator: warning: skipping checkpoint \(last.path): \(error)")
            }
        }
        if newest == nil, let last = state.lastCheckpoint {
            print("coordinator: warning: no checkpoint verifies (the last was \(last.path)); the workers start from the beginning")
        }
        if newest?.path != state.lastCheckpoint?.path {
            print("coordinator: generation \(state.generation) starts from \(newest.map { "the checkpoint of step \($0.step), \($0.path)" } ?? "the beginning") "
                  + "(the newest on disk that verifies)")
            state.lastCheckpoint = newest
        }
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
