import Foundation
import Training

/// What happens to a run; the coordinator's server turns messages, lost connections and
/// its clock into these.
public enum CoordinatorEvent: Sendable, Equatable {
    /// `runningGeneration`: the generation of the workers the agent still runs when it
    /// reconnects (its coordinator went away while they trained); nil when it runs none.
    case agentJoined(firstRank: Int, rankCount: Int, host: String, pid: Int32, runningGeneration: Int? = nil)
    case agentLost(firstRank: Int, reason: String)
    case agentHeartbeat(firstRank: Int)
    case workersStopped(firstRank: Int, generation: Int)
    case workerStarted(rank: Int, generation: Int, pid: Int32)
    case workerExited(rank: Int, generation: Int, pid: Int32, status: Int32, description: String)
    /// `reconnecting`: a worker that trained under the coordinator that went away, back to be adopted.
    case workerJoined(rank: Int, generation: Int, pid: Int32, host: String, reconnecting: Bool = false)
    case workerLost(rank: Int, generation: Int, reason: String)
    case ringListener(rank: Int, address: String)
    case heartbeat(rank: Int, report: StepReport?)
    case checkpointWritten(path: String, step: Int)
    case workerFinished(rank: Int)
    case stopRequested(reason: String)
    case checkpointRequested
    /// Time passed (the server sends one about every 100 ms).
    case tick
}

/// What the server must do after an event.
public enum CoordinatorAction: Sendable, Equatable {
    case startWorkers(agent: Int, generation: Int, ranks: [Int])
    case stopWorkers(agent: Int, generation: Int)
    case sendAssignment(rank: Int)
    case sendRingTable(addresses: [String])
    case requestCheckpoint
    case requestStop
    /// Close the connections of workers of generations before the current one.
    case dropOldWorkers
    case pruneCheckpoints
    case shutdownAgents(reason: String)
    /// Close the connection of an agent that fell silent: when it can hear us again (a cut link
    /// restored) it finds the connection closed and joins anew, instead of talking on a
    /// connection the run no longer counts.
    case dropAgent(firstRank: Int)
    /// A line for the coordinator's output.
    case log(String)
    /// The run is over with this exit status (the server waits for the agents to go, then exits).
    case finish(exitCode: Int32)
}

extension RunState {
    // MARK: Admission (before an event is accepted)

    /// Why a worker may not join now, or nil when it may: a new worker during its generation's
    /// rendezvous, a `reconnecting` one while a coordinator started again adopts its generation,
    /// or a `reconnecting` one that this coordinator counts as training already, when it is the
    /// same process (`pid`): its previous connection is gone for it (a welcome that came after
    /// its deadline on a loaded machine, a dropped link), and the new one replaces it.
    public func workerRefusal(rank: Int, generation: Int, reconnecting: Bool = false, pid: Int32? = nil) -> String? {
        guard ranks.indices.contains(rank) else { return "rank \(rank) is outside 0..<\(ranks.count)" }
        guard generation == self.generation else {
            return "generation \(generation) is not the current generation \(self.generation) (a stale worker)"
        }
        if reconnecting {
            let running = phase == .adopting || phase == .training || phase == .checkpointing
            if running, ranks[rank].state == .training, let pid, ranks[rank].pid == pid { return nil }
            guard phase == .adopting, ranks[rank].state == .reconnecting else {
                return "rank \(rank) of generation \(generation) reconnects, but no coordinator started again is adopting "
                    + "its generation (state \(ranks[rank].state.rawValue), run \(phase.rawValue))"
            }
            return nil
        }
        guard phase == .rendezvous, generationStarted, ranks[rank].state == .starting else {
            return "rank \(rank) of generation \(generation) is not expected now (state \(ranks[rank].state.rawValue), "
                + "run \(phase.rawValue))"
        }
        return nil
    }

    /// Why an agent may not join, or nil when it may. The same agent (host and pid) reconnecting
    /// while its old connection still counts (closed on its side, not yet seen here) may: the
    /// new connection replaces the old one.
    public func agentRefusal(firstRank: Int, rankCount: Int, host: String = "", pid: Int32 = 0) -> String? {
        guard rankCount >= 1, firstRank >= 0, firstRank + rankCount <= policy.worldSize else {
            return "ranks \(firstRank)..<\(firstRank + rankCount) are outside the world of \(policy.worldSize)"
        }
        guard !phase.isFinal else { return "the run is over (\(phase.rawValue))" }
        let itself = { (agent: AgentRecord) in
            agent.firstRank == firstRank && agent.rankCount == rankCount && agent.host == host && agent.pid == pid && pid > 0
        }
        for agent in agents where agent.connected && !itself(agent) && agent.ranks.overlaps(firstRank..<firstRank + rankCount) {
            return "ranks \(firstRank)..<\(firstRank + rankCount) overlap those of the agent on \(agent.host) "
                + "(\(agent.firstRank)..<\(agent.firstRank + agent.rankCount)), which is connected"
        }
        return nil
    }

    /// Ranks that no connected agent starts.
    var uncoveredRanks: [Int] {
        ranks.indices.filter { rank in !agents.contains { $0.connected && $0.ranks.contains(rank) } }
    }

    // MARK: The transition function

    /// Advances the run by one event at wall-clock time `now`; returns what the server must do.
    public mutating func handle(_ event: CoordinatorEvent, now: Double) -> [CoordinatorAction] {
        updatedAt = now
        switch event {
        case let .agentJoined(firstRank, rankCount, host, pid, runningGeneration):
            // The same agent on a new connection while its old one still counted (`agentRefusal`):
            // it was never lost, so its workers of this generation train on.
            if phase != .adopting, runningGeneration == generation,
               let index = agents.firstIndex(where: { $0.connected && $0.firstRank == firstRank && $0.rankCount == rankCount
                                                      && $0.host == host && $0.pid == pid }) {
                agents[index].lastHeartbeat = now
                return [.log("agent on \(host) (pid \(pid)) reconnected for ranks \(firstRank)..<\(firstRank + rankCount); "
                             + "its workers of generation \(generation) train on")]
            }
            agents.removeAll { $0.firstRank == firstRank || $0.ranks.overlaps(firstRank..<firstRank + rankCount) }
            // An agent without workers has nothing to stop before a restart goes on.
            agents.append(AgentRecord(firstRank: firstRank, rankCount: rankCount, host: host, pid: pid, connected: true,
                                      lastHeartbeat: now, stoppedGeneration: runningGeneration == nil ? generation - 1 : nil))
            agents.sort { $0.firstRank < $1.firstRank }
            var actions: [CoordinatorAction] = [.log("agent on \(host) (pid \(pid)) joined for ranks \(firstRank)..<\(firstRank + rankCount)"
                                                     + (runningGeneration.map { " with its workers of generation \($0)" } ?? ""))]
            if phase == .adopting { return actions + agentRejoined(firstRank: firstRank, runningGeneration: runningGeneration, now: now) }
            if let runningGeneration {
                // Workers this run no longer counts (their generation is over, or was never adopted):
                // stopped before the agent starts any other (it defers a start until they are gone).
                actions.append(.stopWorkers(agent: firstRank, generation: max(runningGeneration, generation - 1)))
            }
            if phase == .rendezvous, !generationStarted, uncoveredRanks.isEmpty { actions += startGeneration(now: now) }
            return actions

        case let .agentLost(firstRank, reason):
            guard let index = agents.firstIndex(where: { $0.firstRank == firstRank && $0.connected }) else { return [] }
            agents[index].connected = false
            let agent = agents[index]
            let what = "lost the agent on \(agent.host) (ranks \(agent.firstRank)..<\(agent.firstRank + agent.rankCount)): \(reason)"
            if phase.isFinal { return [] }
            if phase == .restarting { return [.log(what)] + finishRestartIfReady(now: now) }
            if phase == .rendezvous, !generationStarted { return [.log(what)] }
            return suspect(what, rank: nil, priority: 3, now: now)

        case let .agentHeartbeat(firstRank):
            if let index = agents.firstIndex(where: { $0.firstRank == firstRank }) { agents[index].lastHeartbeat = now }
            return []

        case let .workersStopped(firstRank, stoppedGeneration):
            if let index = agents.firstIndex(where: { $0.firstRank == firstRank }) {
                agents[index].stoppedGeneration = max(agents[index].stoppedGeneration ?? -1, stoppedGeneration)
            }
            return phase == .restarting ? finishRestartIfReady(now: now) : []

        case let .workerStarted(rank, startedGeneration, pid):
            guard startedGeneration == generation, ranks.indices.contains(rank) else { return [] }
            ranks[rank].pid = pid
            return []

        case let .workerExited(rank, exitedGeneration, pid, status, description):
            guard exitedGeneration == generation, ranks.indices.contains(rank), !phase.isFinal else { return [] }
            if ranks[rank].state == .done || ranks[rank].state == .stopped { return [] }
            ranks[rank].exitStatus = status
            if status == 0 && ranks[rank].finishedReported {
                ranks[rank].state = .done
                return completeIfDone(now: now)
            }
            let host = ranks[rank].host.isEmpty ? "" : " on \(ranks[rank].host)"
            if status == TrainingError.checkpointWriteExitStatus {
                // Every rank stops alike; a restart would run into the same full disk.
                ranks[rank].state = .stopped
                return end(.stopped, "rank \(rank)\(host) could not write a checkpoint (--on-checkpoint-error stop; its log says "
                           + "why, e.g. a full disk); the checkpoints before it are intact: fix the cause, then resume with --resume auto",
                           now: now)
            }
            ranks[rank].state = .lost
            if status == 0 {
                // Its last message may still be on the way: the suspicion ends if it comes (see `workerFinished`).
                return suspect("rank \(rank)\(host) (pid \(pid)) exited with status 0 without saying that it finished",
                               rank: rank, priority: 0, now: now)
            }
            return suspect("rank \(rank)\(host) (pid \(pid)) \(description)", rank: rank, priority: status >= 128 ? 3 : 2, now: now)

        case let .workerJoined(rank, joinedGeneration, pid, host, reconnecting):
            guard workerRefusal(rank: rank, generation: joinedGeneration, reconnecting: reconnecting, pid: pid) == nil else { return [] }
            if reconnecting { return workerRejoined(rank: rank, pid: pid, host: host, now: now) }
            ranks[rank].state = .joined
            ranks[rank].pid = pid
            ranks[rank].host = host
            ranks[rank].lastHeartbeat = now
            return [.sendAssignment(rank: rank)]

        case let .workerLost(rank, lostGeneration, reason):
            guard lostGeneration == generation, ranks.indices.contains(rank), !phase.isFinal,
                  !ranks[rank].finishedReported else { return [] }
            switch ranks[rank].state {
            case .done, .finished, .stopped, .failed: return []
            default:
                ranks[rank].state = .lost
                let host = ranks[rank].host.isEmpty ? "" : " on \(ranks[rank].host)"
                return suspect("lost the connection to rank \(rank)\(host) (pid \(ranks[rank].pid)): \(reason)",
                               rank: rank, priority: 1, now: now)
            }

        case let .ringListener(rank, address):
            guard ranks.indices.contains(rank), ranks[rank].state == .joined, phase == .rendezvous else { return [] }
            ranks[rank].ringAddress = address
            guard ranks.allSatisfy({ $0.ringAddress != nil }) else { return [] }
            phase = .training
            phaseDeadline = nil
            for index in ranks.indices {
                ranks[index].state = .training
                ranks[index].lastHeartbeat = now
            }
            return [.sendRingTable(addresses: ranks.map { $0.ringAddress ?? "" }),
                    .log("generation \(generation): all \(ranks.count) workers joined; training")]

        case let .heartbeat(rank, report):
            guard ranks.indices.contains(rank) else { return [] }
            ranks[rank].lastHeartbeat = now
            if let report {
                ranks[rank].step = report.step
                if rank == 0 {
                    progress = report
                    // The workers count the run's steps from their checkpoint: a run resumed with another
                    // world size had epochs of another length before.
                    totalSteps = report.totalSteps
                }
            }
            return []

        case let .checkpointWritten(path, step):
            if phase == .checkpointing { phase = .training }
            // Workers report their newest checkpoint again when they reconnect: the same one changes nothing.
            guard lastCheckpoint?.path != path else { return [] }
            lastCheckpoint = CheckpointRecord(path: path, step: step, time: now)
            return [.pruneCheckpoints]

        case let .workerFinished(rank):
            guard ranks.indices.contains(rank), !phase.isFinal, !ranks[rank].finishedReported else { return [] }
            ranks[rank].finishedReported = true
            // Its exit (status 0) or closed connection was only a suspicion until now.
            suspects.removeAll { $0.rank == rank && $0.priority <= 1 }
            if ranks[rank].exitStatus == 0 {
                ranks[rank].state = .done
                return completeIfDone(now: now)
            }
            ranks[rank].state = .finished
            return []

        case let .stopRequested(reason):
            guard !phase.isFinal, phase != .stopping else { return [] }
            stopRequested = true
            if phase == .training || phase == .checkpointing {
                phase = .stopping
                phaseDeadline = now + policy.stopTimeoutSeconds
                return [.log("stopping (\(reason)): the workers finish their step and write a checkpoint"), .requestStop]
            }
            // Nothing is training: there is no step to finish and nothing new to save.
            return end(.stopped, "stopped (\(reason)) while \(phase.rawValue)", now: now)

        case .checkpointRequested:
            guard phase == .training else { return [] }
            phase = .checkpointing
            return [.requestCheckpoint]

        case .tick:
            return tick(now: now)
        }
    }

    // MARK: Phases

    /// Starts this generation's workers on every agent, from the newest complete checkpoint.
    mutating func startGeneration(now: Double) -> [CoordinatorAction] {
        generationStarted = true
        phase = .rendezvous
        phaseDeadline = now + policy.rendezvousTimeoutSeconds
        for index in ranks.indices {
            var record = RankRecord(rank: index)
            record.state = .starting
            record.step = lastCheckpoint?.step ?? 0
            record.host = agents.first { $0.connected && $0.ranks.contains(index) }?.host ?? ""
            ranks[index] = record
        }
        let from = lastCheckpoint.map { "from \($0.path)" } ?? "from the start"
        return [.log("generation \(generation): starting \(ranks.count) workers \(from)")]
            + agents.filter(\.connected).map { .startWorkers(agent: $0.firstRank, generation: generation, ranks: Array($0.ranks)) }
    }

    /// Records a failure; restarts the whole group, or ends the run when the restarts ran out.
    mutating func fail(_ what: String, now: Double) -> [CoordinatorAction] {
        suspects = []
        failures.append(FailureRecord(generation: generation, time: now, what: what))
        if phase == .stopping {
            return end(.stopped, "a failure during the stop: \(what)", now: now)
        }
        guard restarts < policy.maxRestarts else {
            return end(.failed, "failure: \(what); no restarts left (--max-restarts \(policy.maxRestarts))", now: now)
        }
        restarts += 1
        return [.log("failure: \(what); restart \(restarts) of \(policy.maxRestarts): generation \(generation + 1) "
                     + "resumes from \(resumePointDescription)")] + raiseGeneration(now: now)
    }

    /// Where the next generation resumes, as far as the coordinator can tell now: the newest
    /// checkpoint that verifies, which `Coordinator.synchronizeNewestCheckpoint` finds on disk
    /// when that generation starts. It may be newer than the last one reported (written before
    /// rank 0 was stopped, its report lost) or older (damaged since), so this names the last
    /// reported one as a hint rather than as the answer.
    var resumePointDescription: String {
        "the newest checkpoint that verifies ("
            + (lastCheckpoint.map { "the last reported is step \($0.step)" } ?? "none reported yet") + ")"
    }

    /// Ends the current generation: its workers are stopped (and refused from now on), and the
    /// next one starts from the newest checkpoint once every connected agent reported them gone.
    mutating func raiseGeneration(now: Double) -> [CoordinatorAction] {
        let old = generation
        generation += 1
        generationStarted = false
        phase = .restarting
        phaseDeadline = now + policy.stopGraceSeconds + 10
        for index in ranks.indices where ranks[index].state != .stopped {
            ranks[index].state = .stopped
            ranks[index].ringAddress = nil
        }
        return [.dropOldWorkers] + agents.filter(\.connected).map { .stopWorkers(agent: $0.firstRank, generation: old) }
            + finishRestartIfReady(now: now)
    }

    /// Holds a report that may be the failure (see `SuspectedFailure`); `tick` decides.
    /// A report of the highest priority cannot be outdone, so it is decided at once.
    mutating func suspect(_ what: String, rank: Int?, priority: Int, now: Double) -> [CoordinatorAction] {
        suspects.append(SuspectedFailure(rank: rank, what: what, priority: priority, time: now))
        return priority >= 3 ? decideSuspicions(now: now, waiting: false) ?? [] : []
    }

    /// The failure of the suspicions, once the first is `exitReportWaitSeconds` old (or now,
    /// without `waiting`): the most telling one, the earliest of equals, with a count of the
    /// reports that came with it.
    mutating func decideSuspicions(now: Double, waiting: Bool = true) -> [CoordinatorAction]? {
        guard let first = suspects.map(\.time).min(), !waiting || now - first >= policy.exitReportWaitSeconds else { return nil }
        let cause = suspects.enumerated().max { left, right in
            (left.element.priority, -left.offset) < (right.element.priority, -right.offset)
        }!.element
        let others = suspects.count - 1
        return fail(cause.what + (others > 0 ? " (and \(others) report(s) that came with it)" : ""), now: now)
    }

    /// After a failure: once every connected agent reported its old workers stopped, starts the next generation.
    mutating func finishRestartIfReady(now: Double) -> [CoordinatorAction] {
        let waiting = agents.filter { $0.connected && ($0.stoppedGeneration ?? -1) < generation - 1 }
        guard waiting.isEmpty || (phaseDeadline.map { now >= $0 } ?? false) else { return [] }
        phase = .rendezvous
        generationStarted = false
        phaseDeadline = now + policy.rendezvousTimeoutSeconds
        guard uncoveredRanks.isEmpty else {
            return [.log("generation \(generation): waiting for agents to start ranks \(uncoveredRanks)")]
        }
        return startGeneration(now: now)
    }

    /// When every rank is done: finished, or stopped when a stop was asked for.
    mutating func completeIfDone(now: Double) -> [CoordinatorAction] {
        guard ranks.allSatisfy({ $0.state == .done }) else { return [] }
        return stopRequested ? end(.stopped, "stopped on request after a checkpoint", now: now)
            : end(.finished, "finished", now: now)
    }

    /// Ends the run.
    mutating func end(_ outcome: RunPhase, _ summary: String, now: Double) -> [CoordinatorAction] {
        phase = outcome
        phaseDeadline = nil
        let code: CoordinatorExit = outcome == .finished ? .finished : outcome == .stopped ? .stopped : .failed
        exitCode = code.rawValue
        return [.log(summary)] + agents.filter(\.connected).map { .stopWorkers(agent: $0.firstRank, generation: generation) }
            + [.shutdownAgents(reason: summary), .finish(exitCode: code.rawValue)]
    }

    /// Deadlines: silent workers and agents, lost connections without an exit report, and phases that take too long.
    mutating func tick(now: Double) -> [CoordinatorAction] {
        if phase.isFinal { return [] }
        for index in agents.indices where agents[index].connected
            && now - agents[index].lastHeartbeat > policy.heartbeatTimeoutSeconds {
            let firstRank = agents[index].firstRank
            return [.dropAgent(firstRank: firstRank)]
                + handle(.agentLost(firstRank: firstRank,
                                    reason: "no heartbeat for \(formatSeconds(now - agents[index].lastHeartbeat)) s "
                                        + "(stopped, hung or cut off)"), now: now)
        }
        if let decided = decideSuspicions(now: now) { return decided }
        switch phase {
        case .training, .checkpointing, .stopping:
            for rank in ranks where rank.state == .training {
                if let last = rank.lastHeartbeat, now - last > policy.heartbeatTimeoutSeconds {
                    let host = rank.host.isEmpty ? "" : " on \(rank.host)"
                    ranks[rank.rank].state = .failed
                    return suspect("rank \(rank.rank)\(host) (pid \(rank.pid)) sent no heartbeat for "
                                   + "\(formatSeconds(now - last)) s (stopped, e.g. SIGSTOP, or hung)", rank: rank.rank,
                                   priority: 3, now: now)
                }
            }
            if phase == .stopping, let deadline = phaseDeadline, now >= deadline {
                return end(.stopped, "the graceful stop took longer than \(formatSeconds(policy.stopTimeoutSeconds)) s; "
                           + "the workers were stopped", now: now)
            }
        case .rendezvous:
            if let deadline = phaseDeadline, now >= deadline {
                if !generationStarted {
                    return fail("no agent connected for ranks \(uncoveredRanks) within "
                                + "\(formatSeconds(policy.rendezvousTimeoutSeconds)) s", now: now)
                }
                let missing = ranks.filter { $0.ringAddress == nil }.map(\.rank)
                return fail("ranks \(missing) did not join within \(formatSeconds(policy.rendezvousTimeoutSeconds)) s", now: now)
            }
        case .restarting:
            return finishRestartIfReady(now: now)
        case .adopting:
            if let deadline = phaseDeadline, now >= deadline {
                let missing = ranks.filter { $0.state == .reconnecting }.map(\.rank)
                let what = missing.isEmpty ? "no agent came back for ranks \(uncoveredRanks)" : "ranks \(missing) did not reconnect"
                return abandonAdoption("\(what) within \(formatSeconds(adoptionTimeoutSeconds ?? 0)) s (--adopt-timeout)", now: now)
            }
        case .finished, .failed, .stopped:
            break
        }
        return []
    }
}

/// "1.5" for seconds in messages.
func formatSeconds(_ seconds: Double) -> String { String(format: "%.1f", seconds) }
