import Training

/// A coordinator started again on a run directory whose generation was training: its
/// workers kept training through their ring while no coordinator ran, and their agents kept
/// them alive and kept trying to reconnect. The new coordinator waits `--adopt-timeout` for
/// every agent and every worker of that generation to come back, then carries on with the same
/// generation (no restart, nothing trained again). When they do not all come back in time, or
/// one comes back without its workers, it falls back to a new generation from the newest
/// checkpoint, which is not counted as a restart either (the coordinator, not a worker, failed).
extension RunState {
    /// Reads a state saved by a coordinator that went away; `adoptSeconds` bounds the wait for
    /// its workers. Runs that were not training (rendezvous, a restart, a stop) start a new
    /// generation from the newest checkpoint as soon as the agents are back.
    public mutating func resumeAfterCoordinatorRestart(now: Double, adoptSeconds: Double) {
        let wasTraining = phase == .training || phase == .checkpointing || phase == .adopting
        for index in agents.indices { agents[index].connected = false }
        stopRequested = false
        suspects = []
        updatedAt = now
        if wasTraining {
            phase = .adopting
            phaseDeadline = now + adoptSeconds
            adoptionTimeoutSeconds = adoptSeconds
            for index in ranks.indices {
                // Finished ranks said so before the coordinator went away; the rest train on.
                if ranks[index].state != .done && ranks[index].state != .finished { ranks[index].state = .reconnecting }
                ranks[index].lastHeartbeat = nil
            }
            return
        }
        generation += 1
        generationStarted = false
        phase = .rendezvous
        phaseDeadline = now + policy.rendezvousTimeoutSeconds
        for index in ranks.indices { ranks[index] = RankRecord(rank: index) }
    }

    /// An agent back while adopting: with its workers of this generation it is counted on;
    /// without them (they ended, or it is a new agent) adoption cannot succeed, unless its
    /// workers were adopted already and exited since (their exit reports follow its hello).
    mutating func agentRejoined(firstRank: Int, runningGeneration: Int?, now: Double) -> [CoordinatorAction] {
        let agent = agents.first { $0.firstRank == firstRank }
        let waiting = agent.map { $0.ranks.filter { ranks[$0].state == .reconnecting } } ?? []
        guard runningGeneration == generation || waiting.isEmpty else {
            let what = runningGeneration.map { "workers of generation \($0), not \(generation)" } ?? "no running workers"
            let name = agent.map { "the agent on \($0.host) (ranks \($0.firstRank)..<\($0.firstRank + $0.rankCount))" } ?? "an agent"
            return abandonAdoption("\(name) came back with \(what)", now: now)
        }
        return completeAdoptionIfReady(now: now)
    }

    /// A worker of the adopted generation reconnected: it trains on, with no new assignment.
    mutating func workerRejoined(rank: Int, pid: Int32, host: String, now: Double) -> [CoordinatorAction] {
        ranks[rank].state = .training
        ranks[rank].pid = pid
        ranks[rank].host = host
        ranks[rank].lastHeartbeat = now
        return completeAdoptionIfReady(now: now)
    }

    /// Training again once every rank reconnected and every rank's agent is back.
    mutating func completeAdoptionIfReady(now: Double) -> [CoordinatorAction] {
        guard phase == .adopting, !ranks.contains(where: { $0.state == .reconnecting }), uncoveredRanks.isEmpty else { return [] }
        let startedAgain = (phaseDeadline ?? now) - (adoptionTimeoutSeconds ?? 0)
        phase = .training
        phaseDeadline = nil
        adoptionTimeoutSeconds = nil
        for index in ranks.indices where ranks[index].state == .training { ranks[index].lastHeartbeat = now }
        return [.log("generation \(generation): adopted all \(ranks.count) workers and their agents "
                     + "\(formatSeconds(now - startedAgain)) s after starting again; training goes on (no restart)")] + completeIfDone(now: now)
    }

    /// Gives up adopting: the generation's workers are stopped and the next one starts from the
    /// newest checkpoint, as after a failure but not counted as a restart.
    mutating func abandonAdoption(_ why: String, now: Double) -> [CoordinatorAction] {
        adoptionTimeoutSeconds = nil
        return [.log("cannot adopt generation \(generation): \(why); generation \(generation + 1) resumes from "
                     + "\(resumePointDescription) (not counted as a restart)")] + raiseGeneration(now: now)
    }
}
