import Foundation
import Testing
import Training
@testable import Control

/// The coordinator's state machine on its own: events in, actions out, no sockets.
struct RunStateTests {
    static let policy = CoordinatorPolicy(worldSize: 4, maxRestarts: 1, heartbeatTimeoutSeconds: 10,
                                          rendezvousTimeoutSeconds: 60, stopGraceSeconds: 5, stopTimeoutSeconds: 100)

    /// Two agents of two ranks each joined and every worker is training (generation `generation`).
    func training(policy: CoordinatorPolicy = Self.policy) -> RunState {
        var state = RunState(policy: policy, totalSteps: 100, now: 0)
        #expect(state.handle(.agentJoined(firstRank: 0, rankCount: 2, host: "a", pid: 10), now: 1).count == 1)
        let started = state.handle(.agentJoined(firstRank: 2, rankCount: 2, host: "b", pid: 11), now: 1)
        #expect(started.contains(.startWorkers(agent: 0, generation: 0, ranks: [0, 1])))
        #expect(started.contains(.startWorkers(agent: 2, generation: 0, ranks: [2, 3])))
        for rank in 0..<4 {
            #expect(state.handle(.workerJoined(rank: rank, generation: 0, pid: Int32(100 + rank), host: rank < 2 ? "a" : "b"),
                                 now: 2) == [.sendAssignment(rank: rank)])
        }
        for rank in 0..<3 { #expect(state.handle(.ringListener(rank: rank, address: "h:\(rank)"), now: 3).isEmpty) }
        let table = state.handle(.ringListener(rank: 3, address: "h:3"), now: 3)
        #expect(table.first == .sendRingTable(addresses: ["h:0", "h:1", "h:2", "h:3"]))
        #expect(state.phase == .training)
        return state
    }

    @Test func aGenerationStartsOnceTheAgentsCoverEveryRankAndTrainsOnceAllWorkersJoined() {
        var state = training()
        #expect(state.ranks.allSatisfy { $0.state == .training })
        // Another worker of the same rank, or one of an old generation, is refused.
        #expect(state.workerRefusal(rank: 1, generation: 0) != nil)
        #expect(state.workerRefusal(rank: 1, generation: 7)?.contains("stale") == true)
        #expect(state.agentRefusal(firstRank: 1, rankCount: 2)?.contains("overlap") == true)
        #expect(state.agentRefusal(firstRank: 3, rankCount: 2)?.contains("outside") == true)
        // Rank 0's count of the run's steps wins (a run resumed with another world size had epochs of another length).
        let report = StepReport(step: 5, totalSteps: 97, epoch: 0, loss: 1.5, learningRate: 1e-3, imagesPerSecond: 50,
                                dataWaitSeconds: 0, stepSeconds: 0.1)
        _ = state.handle(.heartbeat(rank: 0, report: report), now: 4)
        #expect(state.status(now: 4, live: true).step == 5)
        #expect(state.status(now: 4, live: true).totalSteps == 97)
        #expect(state.handle(.checkpointWritten(path: "/r/checkpoints/step-00000004", step: 4), now: 4) == [.pruneCheckpoints])
    }

    @Test func aKilledWorkerRaisesTheGenerationAndRestartsEveryoneFromTheCheckpoint() {
        var state = training()
        _ = state.handle(.checkpointWritten(path: "/r/checkpoints/step-00000004", step: 4), now: 4)
        // The connection drops first and a neighbour's error exit follows: held for a moment, in
        // case the cause comes after them. The agent's report of the signal does, and is the failure.
        #expect(state.handle(.workerLost(rank: 2, generation: 0, reason: "reset"), now: 5).isEmpty)
        #expect(state.handle(.workerExited(rank: 3, generation: 0, pid: 103, status: 1, description: "exited with status 1"),
                             now: 5.05).isEmpty)
        #expect(state.handle(.tick, now: 5.08).isEmpty && state.phase == .training)
        let actions = state.handle(.workerExited(rank: 2, generation: 0, pid: 102, status: 137,
                                                 description: "killed by signal 9 (SIGKILL), status 137"), now: 5.1)
        #expect(state.restarts == 1 && state.generation == 1 && state.phase == .restarting)
        #expect(state.failures.map(\.what) == ["rank 2 on b (pid 102) killed by signal 9 (SIGKILL), status 137 "
                                                + "(and 2 report(s) that came with it)"])
        #expect(actions.contains(.stopWorkers(agent: 0, generation: 0)) && actions.contains(.stopWorkers(agent: 2, generation: 0)))
        #expect(actions.contains(.dropOldWorkers))
        // Reports of the old generation change nothing any more.
        #expect(state.handle(.workerExited(rank: 1, generation: 0, pid: 101, status: 1, description: "exited"), now: 6.2).isEmpty)
        #expect(state.handle(.workersStopped(firstRank: 0, generation: 0), now: 6.5).isEmpty)
        let restart = state.handle(.workersStopped(firstRank: 2, generation: 0), now: 6.5)
        #expect(restart.contains(.startWorkers(agent: 0, generation: 1, ranks: [0, 1])))
        #expect(state.ranks.allSatisfy { $0.state == .starting && $0.step == 4 })
        #expect(state.workerRefusal(rank: 0, generation: 1) == nil)
    }

    /// A silent agent (its link cut) is lost and its connection dropped, so that once the link is
    /// back it joins anew; heartbeats on the old connection alone would leave its ranks uncovered.
    @Test func aSilentAgentIsLostAndItsConnectionDropped() {
        var state = training()
        for rank in 0..<4 { _ = state.handle(.heartbeat(rank: rank, report: nil), now: 11.5) }
        _ = state.handle(.agentHeartbeat(firstRank: 0), now: 11.5)
        let actions = state.handle(.tick, now: 11.6)
        #expect(actions.first == .dropAgent(firstRank: 2), "\(actions)")
        #expect(state.agents.first { $0.firstRank == 2 }?.connected == false)
        #expect(!state.handle(.tick, now: 11.7).contains(.dropAgent(firstRank: 2)))
    }

    @Test func silenceForTheHeartbeatTimeoutIsAFailureAndTheRestartsRunOut() {
        var state = training()
        for rank in [0, 1, 3] { _ = state.handle(.heartbeat(rank: rank, report: nil), now: 12) }
        #expect(state.handle(.agentHeartbeat(firstRank: 0), now: 12).isEmpty)
        _ = state.handle(.agentHeartbeat(firstRank: 2), now: 12)
        #expect(state.handle(.tick, now: 12.9).isEmpty)
        let detected = state.handle(.tick, now: 13.1)
        #expect(state.failures.last?.what.contains("rank 2 on b (pid 102) sent no heartbeat for 10.1 s") == true)
        #expect(detected.contains(.stopWorkers(agent: 2, generation: 0)))
        // No checkpoint was reported, but one may be on disk (written before the silence): the
        // line promises the newest that verifies, which the coordinator looks for at the start.
        #expect(detected.contains { if case .log(let line) = $0 {
            line.hasSuffix("generation 1 resumes from the newest checkpoint that verifies (none reported yet)")
        } else { false } }, "\(detected)")
        // The agents never confirm: the restart goes on after the grace period plus 10 s.
        #expect(state.handle(.tick, now: 20).isEmpty)
        for agent in [0, 2] { _ = state.handle(.agentHeartbeat(firstRank: agent), now: 28) }
        #expect(state.handle(.tick, now: 28.2).contains(.startWorkers(agent: 2, generation: 1, ranks: [2, 3])))
        // A second failure with --max-restarts 1 ends the run.
        _ = state.handle(.workerJoined(rank: 0, generation: 1, pid: 200, host: "a"), now: 29.5)
        // An error exit alone waits for the window, then is the failure.
        #expect(state.handle(.workerExited(rank: 0, generation: 1, pid: 200, status: 1, description: "exited with status 1"),
                             now: 30).isEmpty)
        let end = state.handle(.tick, now: 31)
        #expect(state.phase == .failed && state.exitCode == CoordinatorExit.failed.rawValue)
        #expect(end.last == .finish(exitCode: 1))
        #expect(end.contains(.shutdownAgents(reason: "failure: rank 0 on a (pid 200) exited with status 1; no restarts left (--max-restarts 1)")))
        #expect(state.failures.count == 2)
    }

    @Test func aLostAgentIsAFailureAndItsReturnStartsTheNextGeneration() {
        var state = training()
        _ = state.handle(.agentLost(firstRank: 2, reason: "connection reset"), now: 5)
        #expect(state.phase == .restarting && state.failures.last?.what.contains("lost the agent on b") == true)
        // The remaining agent stopped its workers; ranks 2 and 3 have no agent: wait for it.
        let waiting = state.handle(.workersStopped(firstRank: 0, generation: 0), now: 6)
        #expect(state.phase == .rendezvous && !state.generationStarted)
        #expect(!waiting.contains { if case .startWorkers = $0 { true } else { false } })
        let back = state.handle(.agentJoined(firstRank: 2, rankCount: 2, host: "b", pid: 12), now: 7)
        #expect(back.contains(.startWorkers(agent: 2, generation: 1, ranks: [2, 3])))
    }

    /// An agent that gave up on a handshake the coordinator had already counted (or whose side
    /// of the connection broke first) connects again while its old connection still counts:
    /// the same agent (host and pid) replaces it, its workers train on, nothing restarts. Another
    /// process claiming its ranks is still refused.
    @Test func theSameAgentReconnectingWhileItsOldConnectionCountsIsNotLost() throws {
        var state = training()
        #expect(state.agentRefusal(firstRank: 2, rankCount: 2, host: "b", pid: 11) == nil)
        #expect(state.agentRefusal(firstRank: 2, rankCount: 2, host: "b", pid: 99)?.contains("overlap") == true)
        #expect(state.agentRefusal(firstRank: 2, rankCount: 2, host: "c", pid: 11)?.contains("overlap") == true)
        let back = state.handle(.agentJoined(firstRank: 2, rankCount: 2, host: "b", pid: 11, runningGeneration: 0), now: 5)
        #expect(!back.contains { if case .stopWorkers = $0 { true } else { false } }, "\(back)")
        #expect(state.phase == .training && state.generation == 0 && state.restarts == 0)
        #expect(state.agents.first { $0.firstRank == 2 }?.connected == true)
        // While adopting, the same agent joining twice (its first handshake given up) still completes the adoption.
        var resumed = try adopting(state)
        for rank in 0..<4 {
            _ = resumed.handle(.workerJoined(rank: rank, generation: 0, pid: Int32(100 + rank), host: "a", reconnecting: true), now: 101)
        }
        _ = resumed.handle(.agentJoined(firstRank: 0, rankCount: 2, host: "a", pid: 10, runningGeneration: 0), now: 101)
        _ = resumed.handle(.agentJoined(firstRank: 2, rankCount: 2, host: "b", pid: 11, runningGeneration: 0), now: 101)
        #expect(resumed.agentRefusal(firstRank: 2, rankCount: 2, host: "b", pid: 11) == nil)
        _ = resumed.handle(.agentJoined(firstRank: 2, rankCount: 2, host: "b", pid: 11, runningGeneration: 0), now: 102)
        #expect(resumed.phase == .training && resumed.generation == 0 && resumed.restarts == 0 && resumed.failures.isEmpty)
    }

    @Test func workersThatFinishEndTheRunWhateverOrderTheirReportsArriveIn() {
        var state = training()
        for rank in 0..<4 {
            if rank % 2 == 0 {
                _ = state.handle(.workerFinished(rank: rank), now: 10)
                _ = state.handle(.workerLost(rank: rank, generation: 0, reason: "closed"), now: 10)
                #expect(state.handle(.workerExited(rank: rank, generation: 0, pid: 1, status: 0, description: "exited"),
                                     now: 10).last == (rank == 3 ? .finish(exitCode: 0) : nil))
            } else {
                // The agent's exit report overtakes the worker's last message.
                _ = state.handle(.workerExited(rank: rank, generation: 0, pid: 1, status: 0, description: "exited"), now: 10)
                let last = state.handle(.workerFinished(rank: rank), now: 10.5)
                #expect(last.last == (rank == 3 ? .finish(exitCode: 0) : nil))
            }
        }
        #expect(state.phase == .finished && state.exitCode == 0 && state.failures.isEmpty)
    }

    @Test func aStopAsksForACheckpointAndEndsAsStopped() {
        var state = training()
        #expect(state.handle(.checkpointRequested, now: 5) == [.requestCheckpoint])
        #expect(state.phase == .checkpointing)
        _ = state.handle(.checkpointWritten(path: "p", step: 6), now: 6)
        #expect(state.phase == .training)
        #expect(state.handle(.stopRequested(reason: "SIGTERM"), now: 7).contains(.requestStop))
        for rank in 0..<4 {
            _ = state.handle(.workerFinished(rank: rank), now: 8)
            _ = state.handle(.workerExited(rank: rank, generation: 0, pid: 1, status: 0, description: "exited"), now: 8)
        }
        #expect(state.phase == .stopped && state.exitCode == CoordinatorExit.stopped.rawValue)
    }

    /// A coordinator started again on a training run (the state read back from its file).
    func adopting(_ state: RunState) throws -> RunState {
        var resumed = try JSONDecoder().decode(RunState.self, from: JSONEncoder().encode(state))
        #expect(resumed == state)
        resumed.resumeAfterCoordinatorRestart(now: 100, adoptSeconds: 30)
        #expect(resumed.phase == .adopting && resumed.generation == state.generation && resumed.restarts == 0)
        #expect(resumed.ranks.allSatisfy { $0.state == .reconnecting } && resumed.agents.allSatisfy { !$0.connected })
        return resumed
    }

    @Test func aCoordinatorStartedAgainAdoptsTheWorkersThatTrainedOn() throws {
        var state = training()
        _ = state.handle(.checkpointWritten(path: "p", step: 6), now: 6)
        var resumed = try adopting(state)
        // Only reconnecting workers of the running generation are adopted; a new one is not expected.
        #expect(resumed.workerRefusal(rank: 0, generation: 0) != nil)
        #expect(resumed.workerRefusal(rank: 0, generation: 0, reconnecting: true) == nil)
        #expect(resumed.workerRefusal(rank: 0, generation: 1, reconnecting: true)?.contains("stale") == true)
        for rank in 0..<4 {
            #expect(resumed.handle(.workerJoined(rank: rank, generation: 0, pid: Int32(100 + rank), host: "a", reconnecting: true),
                                   now: 101).isEmpty)
        }
        // Adopted once, the same process may come back (its welcome came too late for it); another may not.
        #expect(resumed.workerRefusal(rank: 0, generation: 0, reconnecting: true, pid: 100) == nil)
        #expect(resumed.workerRefusal(rank: 0, generation: 0, reconnecting: true, pid: 999) != nil, "another process adopted")
        #expect(resumed.workerRefusal(rank: 0, generation: 0, reconnecting: true) != nil, "adopted twice without a pid")
        #expect(resumed.handle(.agentJoined(firstRank: 0, rankCount: 2, host: "a", pid: 10, runningGeneration: 0), now: 102).count == 1)
        let adopted = resumed.handle(.agentJoined(firstRank: 2, rankCount: 2, host: "b", pid: 11, runningGeneration: 0), now: 102)
        #expect(adopted.contains { if case .log(let line) = $0 { line.contains("adopted all 4 workers and their agents 2.0 s after starting again") } else { false } }, "\(adopted)")
        #expect(!adopted.contains { if case .startWorkers = $0 { true } else { false } })
        #expect(resumed.phase == .training && resumed.generation == 0 && resumed.restarts == 0 && resumed.failures.isEmpty)
        #expect(resumed.ranks.map(\.pid) == [100, 101, 102, 103] && resumed.lastCheckpoint?.step == 6)
        // The newest checkpoint, reported again by rank 0 after reconnecting, changes nothing.
        #expect(resumed.handle(.checkpointWritten(path: "p", step: 6), now: 103).isEmpty)
        // The run goes on as before: a failure now is a restart like any other.
        _ = resumed.handle(.workerExited(rank: 1, generation: 0, pid: 101, status: 137, description: "killed"), now: 104)
        #expect(resumed.restarts == 1 && resumed.generation == 1)
    }

    @Test func workersThatDoNotComeBackInTimeAreRestartedFromTheCheckpointWithoutCountingARestart() throws {
        var state = training()
        _ = state.handle(.checkpointWritten(path: "p", step: 6), now: 6)
        var resumed = try adopting(state)
        _ = resumed.handle(.agentJoined(firstRank: 0, rankCount: 2, host: "a", pid: 10, runningGeneration: 0), now: 101)
        _ = resumed.handle(.workerJoined(rank: 0, generation: 0, pid: 100, host: "a", reconnecting: true), now: 101)
        _ = resumed.handle(.agentHeartbeat(firstRank: 0), now: 125)
        #expect(resumed.handle(.tick, now: 129.9).isEmpty && resumed.phase == .adopting)
        let fallback = resumed.handle(.tick, now: 130.1)
        #expect(fallback.contains { if case .log(let line) = $0 {
            line.contains("cannot adopt generation 0: ranks [1, 2, 3] did not reconnect within 30.0 s")
                && line.contains("resumes from the newest checkpoint that verifies (the last reported is step 6)")
        } else { false } }, "\(fallback)")
        #expect(fallback.contains(.stopWorkers(agent: 0, generation: 0)) && fallback.contains(.dropOldWorkers))
        #expect(resumed.generation == 1 && resumed.restarts == 0 && resumed.failures.isEmpty && resumed.phase == .restarting)
        // The agent that came back stops its workers; the one of ranks 2 and 3 joins without any: the generation starts.
        _ = resumed.handle(.workersStopped(firstRank: 0, generation: 0), now: 131)
        let start = resumed.handle(.agentJoined(firstRank: 2, rankCount: 2, host: "b", pid: 12), now: 132)
        #expect(start.contains(.startWorkers(agent: 0, generation: 1, ranks: [0, 1])) && start.contains(.startWorkers(agent: 2, generation: 1, ranks: [2, 3])),
                "\(start)")
    }

    @Test func anAgentBackWithoutItsWorkersEndsTheAdoptionAtOnce() throws {
        var resumed = try adopting(training())
        let fallback = resumed.handle(.agentJoined(firstRank: 2, rankCount: 2, host: "b", pid: 12), now: 101)
        #expect(fallback.contains { if case .log(let line) = $0 { line.contains("the agent on b (ranks 2..<4) came back with no running workers") } else { false } },
                "\(fallback)")
        #expect(resumed.generation == 1 && resumed.restarts == 0 && resumed.phase == .restarting)
        // Later, an agent whose workers of the old generation still run is told to stop them first.
        let stale = resumed.handle(.agentJoined(firstRank: 0, rankCount: 2, host: "a", pid: 10, runningGeneration: 0), now: 102)
        #expect(stale.contains(.stopWorkers(agent: 0, generation: 0)), "\(stale)")
        #expect(resumed.handle(.workersStopped(firstRank: 2, generation: 0), now: 102).isEmpty)
        #expect(resumed.handle(.workersStopped(firstRank: 0, generation: 0), now: 103)
            .contains(.startWorkers(agent: 0, generation: 1, ranks: [0, 1])))
    }

    @Test func aRunThatWasNotTrainingStartsANewGenerationWhenTheCoordinatorComesBack() throws {
        var state = training()
        _ = state.handle(.workerExited(rank: 1, generation: 0, pid: 101, status: 137, description: "killed"), now: 5)
        #expect(state.phase == .restarting)
        var resumed = try JSONDecoder().decode(RunState.self, from: JSONEncoder().encode(state))
        resumed.resumeAfterCoordinatorRestart(now: 100, adoptSeconds: 30)
        #expect(resumed.phase == .rendezvous && resumed.generation == 2 && resumed.restarts == 1)
        #expect(resumed.workerRefusal(rank: 0, generation: 1, reconnecting: true)?.contains("stale") == true)
    }
}
