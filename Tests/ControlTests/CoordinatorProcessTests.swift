import Control
import Data
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Runs of the real executables: `mae-coordinator serve`, its agents and their `mae-worker`s
/// on a tiny synthetic dataset and a tiny model, on loopback. Workers are killed, stopped,
/// the coordinator is killed; every run must end as the test says, with exact weights.
@Suite(.serialized) struct CoordinatorProcessTests {
    let temporary: TemporaryDirectory
    let data: String

    init() throws {
        temporary = try TemporaryDirectory("coordinator")
        data = temporary.path + "/data"
        // 2 classes × 16 images = 32: 4 workers × batch 2 (or 1 × 8) make 4 steps per epoch.
        try synthesizeDataset(root: data, classes: 2, perClass: 16, valPerClass: 1, size: 24, seed: 11)
    }

    /// A tiny model (16 px, patch 4), one thread per worker, a line of metrics per step.
    func workerFlags(batch: Int, epochs: Int, _ extra: [String] = []) -> [String] {
        ["--data", data, "--model-shape", "4,16,1,2,8,1,2", "--input-size", "16", "--batch-size", String(batch),
         "--epochs", String(epochs), "--warmup-epochs", "1", "--lr", "1e-3", "--seed", "5", "--threads", "1",
         "--data-threads", "1", "--batch-shards", "1", "--print-every", "1", "--checkpoint-every", "2",
         "--keep-checkpoints", "2"] + extra
    }

    func status(_ run: CoordinatedRun) throws -> [String: Any] {
        let command = try TestProcess(try TestProcess.product("mae-coordinator"), ["status", "--run-dir", run.runDirectory, "--json"],
                                      logDirectory: temporary.path, name: "\(run.name)-status")
        guard command.exitStatus(within: 20) == 0,
              let object = try JSONSerialization.jsonObject(with: Data(command.output.utf8)) as? [String: Any] else {
            throw TestFailure("status --json failed: \(command.output)")
        }
        return object
    }

    /// Waits until rank 0 logged `step`, then SIGKILLs or SIGSTOPs `rank`'s worker; returns its pid.
    func signalWorker(_ run: CoordinatedRun, rank: Int, atStep step: Int, _ signalNumber: Int32) throws -> Int32 {
        guard waitUntil(seconds: 60, { run.loggedSteps() >= step }) else {
            throw TestFailure("step \(step) never came: \(run.output)")
        }
        guard let pid = run.currentState()?.ranks[rank].pid, pid > 0, isAlive(pid) else {
            throw TestFailure("rank \(rank) has no live pid in the state file")
        }
        kill(pid, signalNumber)
        return pid
    }

    /// 4 workers killed with SIGKILL at a random step end with the uninterrupted run's weights,
    /// bit for bit, and `restarts` 1. One worker with the same global batch sees the same samples,
    /// crops and masks, so its losses match both within float rounding (world-size invariance,
    /// across the restart too).
    @Test func aWorkerKilledAtARandomStepIsRestartedAndTheRunEndsWithTheSameWeights() throws {
        defer { temporary.remove() }
        let epochs = 10, total = 40
        let straight = try CoordinatedRun.finished(root: temporary.path, name: "straight", world: 4,
                                                   workerFlags: workerFlags(batch: 2, epochs: epochs))

        let killed = CoordinatedRun(root: temporary.path, name: "killed")
        defer { killed.stopAll() }
        try killed.startCoordinator(world: 4, workerFlags: workerFlags(batch: 2, epochs: epochs))
        try killed.startAgent(count: 4)
        let killStep = Int.random(in: 3...total - 16), killRank = Int.random(in: 0..<4)
        _ = try signalWorker(killed, rank: killRank, atStep: killStep, SIGKILL)
        #expect(killed.coordinator?.exitStatus(within: 120) == 0, "\(killed.output)")

        let single = try CoordinatedRun.finished(root: temporary.path, name: "single", world: 1,
                                                 workerFlags: workerFlags(batch: 8, epochs: epochs))

        let report = try status(killed)
        #expect(report["restarts"] as? Int == 1, "rank \(killRank) killed at step \(killStep); \(report)")
        #expect(report["state"] as? String == "finished")
        #expect(report["step"] as? Int == total && report["total_steps"] as? Int == total)
        #expect((report["ranks"] as? [[String: Any]])?.map { $0["rank"] as? Int } == [0, 1, 2, 3])
        let failures = report["failures"] as? [String] ?? []
        #expect(failures.count == 1 && failures[0].contains("rank \(killRank)") && failures[0].contains("status 137"),
                "\(failures)")
        for file in ["model.safetensors", "optimizer.safetensors"] {
            #expect(try killed.checkpointFile(step: total, file) == straight.checkpointFile(step: total, file),
                    "\(file) differs after the restart (rank \(killRank) killed at step \(killStep))")
        }
        let reference = straight.metrics(), restarted = killed.metrics(), alone = single.metrics()
        #expect(reference.map(\.step) == Array(1...total) && restarted.map(\.step) == Array(1...total)
                && alone.map(\.step) == Array(1...total))
        for index in 0..<min(reference.count, restarted.count, alone.count) {
            #expect(restarted[index].loss == reference[index].loss && restarted[index].lr == reference[index].lr)
            #expect(abs(alone[index].loss - reference[index].loss) <= 1e-5 * abs(reference[index].loss),
                    "step \(index + 1): 1 worker \(alone[index].loss), 4 workers \(reference[index].loss)")
            #expect(alone[index].lr == reference[index].lr)
        }
        #expect(killed.liveWorkers().isEmpty && straight.liveWorkers().isEmpty)
        // The other ranks' errors reached the console with their rank; every rank has its log.
        #expect(killed.agents[0].output.contains("[rank "), "\(killed.agents[0].output)")
        for rank in 0..<4 { #expect(FileManager.default.fileExists(atPath: killed.runDirectory + "/logs/rank-\(rank).log")) }
    }

    /// A SIGSTOPped worker sends no heartbeats: the coordinator notices within the heartbeat
    /// timeout, its agent kills it (SIGTERM does not reach a stopped process; SIGKILL does),
    /// and the run finishes after one restart.
    @Test func aStoppedWorkerIsDetectedWithinTheHeartbeatTimeoutAndTheRunRecovers() throws {
        defer { temporary.remove() }
        let run = CoordinatedRun(root: temporary.path, name: "sigstop")
        defer { run.stopAll() }
        try run.startCoordinator(world: 2, workerFlags: workerFlags(batch: 2, epochs: 8),
                                 serveFlags: ["--heartbeat-timeout", "2", "--heartbeat-interval", "0.5"])
        try run.startAgent(count: 2)
        let pid = try signalWorker(run, rank: 1, atStep: 3, SIGSTOP)
        let stoppedAt = Date()
        let detected = waitUntil(seconds: 20) { (run.currentState()?.failures.count ?? 0) >= 1 }
        let seconds = Date().timeIntervalSince(stoppedAt)
        #expect(detected, "the stopped worker was not detected: \(run.output)")
        // Timeout 2 s after the last heartbeat (sent every 0.5 s), checked every 0.1 s, the state file
        // written at most every 0.5 s; the rest is slack for a busy machine.
        #expect(seconds < 2 + 3, "detected after \(seconds) s")
        #expect(run.currentState()?.failures.first?.what.contains("rank 1") == true)
        #expect(run.currentState()?.failures.first?.what.contains("no heartbeat") == true)
        #expect(run.coordinator?.exitStatus(within: 120) == 0, "\(run.output)")
        #expect(!isAlive(pid))
        #expect(try run.state().restarts == 1)
    }

    /// The coordinator SIGKILLed mid-run: its workers train on through their ring (rank 0 keeps
    /// logging steps), and a coordinator started again on the run directory (port 0: it takes
    /// the old port from the state file) adopts them: the same generation and pids, no restart,
    /// `status` answers, and the run ends with the uninterrupted run's weights, every step logged once.
    @Test func aCoordinatorKilledMidRunAdoptsItsWorkersWhenStartedAgain() throws {
        defer { temporary.remove() }
        // Long enough that the workers are still training when the coordinator is back (about 20 ms a step).
        let epochs = 100, total = 400
        let straight = try CoordinatedRun.finished(root: temporary.path, name: "reference", world: 2,
                                                   workerFlags: workerFlags(batch: 4, epochs: epochs), seconds: 300)

        let run = CoordinatedRun(root: temporary.path, name: "phoenix")
        defer { run.stopAll() }
        try run.startCoordinator(world: 2, workerFlags: workerFlags(batch: 4, epochs: epochs))
        let address = run.address
        try run.startAgent(count: 2)
        guard waitUntil(seconds: 60, { run.loggedSteps() >= 6 && run.currentState()?.phase == .training }) else {
            throw TestFailure("step 6 never came: \(run.output)")
        }
        run.coordinator?.send(SIGKILL)
        _ = run.coordinator?.exitStatus(within: 10)
        let saved = try run.state()
        let pids = saved.ranks.map(\.pid)
        // Without a coordinator the workers train on.
        let stepsAtKill = run.loggedSteps()
        #expect(waitUntil(seconds: 30) { run.loggedSteps() >= stepsAtKill + 2 }, "training stalled without the coordinator: \(run.output)")
        #expect(pids.allSatisfy(isAlive), "workers exited without their coordinator: \(run.output)")
        try run.startCoordinator(world: 2, workerFlags: workerFlags(batch: 4, epochs: epochs))
        #expect(run.address == address, "started again on \(run.address), not the old address \(address)")
        guard waitUntil(seconds: 30, { run.currentState()?.phase != .adopting }) else {
            throw TestFailure("the workers were not adopted within 30 s: \(run.output)")
        }
        let report = try status(run)
        #expect(report["live"] as? Bool == true && report["generation"] as? Int == saved.generation, "\(report)")
        #expect(report["restarts"] as? Int == 0 && ["training", "checkpointing"].contains(report["state"] as? String),
                "\(report)")
        #expect((report["step"] as? Int ?? 0) > stepsAtKill && (report["step"] as? Int ?? total) < total, "\(report)")
        #expect((report["ranks"] as? [[String: Any]])?.compactMap { ($0["pid"] as? Int).map(Int32.init) } == pids, "\(report)")
        #expect(run.coordinator?.exitStatus(within: 300) == 0, "\(run.output)")
        let final = try run.state()
        #expect(final.phase == .finished && final.restarts == 0 && final.generation == saved.generation && final.failures.isEmpty,
                "\(run.output)")
        #expect(run.coordinator?.output.contains("adopted all 2 workers") == true, "\(run.output)")
        #expect(run.metrics().map(\.step) == Array(1...total), "\(run.metrics().map(\.step))")
        for file in ["model.safetensors", "optimizer.safetensors"] {
            #expect(try run.checkpointFile(step: total, file) == straight.checkpointFile(step: total, file), "\(file) differs")
        }
        #expect(run.agents[0].exitStatus(within: 20) == 0, "\(run.agents[0].output)")
        #expect(run.liveWorkers().isEmpty)
    }

    /// The coordinator and the agent (so its workers too) killed: a coordinator started again
    /// waits --adopt-timeout for them, then falls back to a new generation from the newest
    /// checkpoint as soon as an agent is back. Not counted as a restart; no checkpoint is
    /// lost and the run ends with the uninterrupted run's weights.
    @Test func workersThatDoNotComeBackAreRestartedFromTheNewestCheckpoint() throws {
        defer { temporary.remove() }
        // Long enough that the workers, which train on while the coordinator is down, cannot
        // finish before their agent is killed (80 steps did, on a fast moment).
        let epochs = 100, total = 400
        let straight = try CoordinatedRun.finished(root: temporary.path, name: "reference", world: 2,
                                                   workerFlags: workerFlags(batch: 4, epochs: epochs))

        let run = CoordinatedRun(root: temporary.path, name: "orphaned")
        defer { run.stopAll() }
        try run.startCoordinator(world: 2, workerFlags: workerFlags(batch: 4, epochs: epochs))
        try run.startAgent(count: 2)
        guard waitUntil(seconds: 60, { (run.currentState()?.lastCheckpoint?.step ?? 0) >= 6 }) else {
            throw TestFailure("no checkpoint of step 6 came: \(run.output)")
        }
        run.coordinator?.send(SIGKILL)
        _ = run.coordinator?.exitStatus(within: 10)
        run.agents[0].send(SIGKILL)
        _ = run.agents[0].exitStatus(within: 10)
        let saved = try run.state()
        let savedCheckpoint = try #require(saved.lastCheckpoint)
        try #require(savedCheckpoint.step < total, "the run ended before its processes were killed; nothing tested")
        // Workers whose agent went away exit.
        #expect(waitUntil(seconds: 15) { run.liveWorkers().isEmpty }, "workers outlived their agent")
        try run.startCoordinator(world: 2, workerFlags: workerFlags(batch: 4, epochs: epochs), serveFlags: ["--adopt-timeout", "2"])
        guard waitUntil(seconds: 20, { run.coordinator?.output.contains("cannot adopt generation") == true }) else {
            throw TestFailure("no fallback after the adoption timeout: \(run.output)")
        }
        #expect(run.coordinator?.output.contains("ranks [0, 1] did not reconnect within 2.0 s (--adopt-timeout)") == true,
                "\(run.output)")
        try run.startAgent(count: 2)
        #expect(run.coordinator?.exitStatus(within: 120) == 0, "\(run.output)")
        let final = try run.state()
        #expect(final.phase == .finished && final.restarts == 0 && final.generation == saved.generation + 1)
        let resumedStep = run.agents[1].output.components(separatedBy: "resuming from ").dropFirst().compactMap {
            Int($0.prefix { $0 != ":" }.suffix(8))
        }.last ?? -1
        #expect(resumedStep >= savedCheckpoint.step, "resumed from step \(resumedStep), the coordinator had recorded \(savedCheckpoint.step)")
        #expect(FileManager.default.fileExists(atPath: run.runDirectory + "/checkpoints/step-\(String(format: "%08d", total))/COMPLETE"),
                "\(run.output)")
        #expect(run.metrics().map(\.step) == Array(1...total), "\(run.metrics().map(\.step))")
        for file in ["model.safetensors", "optimizer.safetensors"] {
            #expect(try run.checkpointFile(step: total, file) == straight.checkpointFile(step: total, file), "\(file) differs")
        }
    }

    /// Workers that finish while no coordinator runs wait for one to adopt them, so that the
    /// run's end is not lost: the coordinator started again hears them finish and ends the run.
    @Test func workersThatFinishWhileTheCoordinatorIsAwayWaitForTheNextOne() throws {
        defer { temporary.remove() }
        let epochs = 40, total = 160
        let run = CoordinatedRun(root: temporary.path, name: "late")
        defer { run.stopAll() }
        try run.startCoordinator(world: 2, workerFlags: workerFlags(batch: 4, epochs: epochs))
        try run.startAgent(count: 2)
        guard waitUntil(seconds: 120, { run.loggedSteps() >= total - 30 }) else { throw TestFailure("no step \(total - 30): \(run.output)") }
        run.coordinator?.send(SIGKILL)
        _ = run.coordinator?.exitStatus(within: 10)
        let saved = try run.state()
        #expect(run.loggedSteps() < total, "the run ended before the coordinator was killed; nothing tested")
        // The last step is logged and the final checkpoint written, yet the workers stay to say so.
        #expect(waitUntil(seconds: 60) { FileManager.default.fileExists(atPath: run.runDirectory + "/checkpoints/step-00000160/COMPLETE") },
                "\(run.output)")
        usleep(1_000_000)
        #expect(saved.ranks.map(\.pid).allSatisfy(isAlive), "workers exited without reporting the end: \(run.output)")
        try run.startCoordinator(world: 2, workerFlags: workerFlags(batch: 4, epochs: epochs))
        #expect(run.coordinator?.exitStatus(within: 60) == 0, "\(run.output)")
        let final = try run.state()
        #expect(final.phase == .finished && final.restarts == 0 && final.generation == saved.generation, "\(run.output)")
        #expect(final.lastCheckpoint?.step == total, "the final checkpoint's report, made while no coordinator ran, was lost")
        #expect(run.metrics().map(\.step) == Array(1...total))
        #expect(run.agents[0].exitStatus(within: 20) == 0, "\(run.agents[0].output)")
    }

    /// No coordinator comes back: after --reconnect-timeout the agent stops its workers, which
    /// write a checkpoint first, and exits 1; a coordinator started later on the run directory
    /// resumes from that checkpoint and the run ends with the uninterrupted run's weights.
    @Test func anAgentWithoutACoordinatorStopsItsWorkersAfterACheckpoint() throws {
        defer { temporary.remove() }
        let epochs = 100, total = 400
        let straight = try CoordinatedRun.finished(root: temporary.path, name: "reference", world: 2,
                                                   workerFlags: workerFlags(batch: 4, epochs: epochs), seconds: 300)

        let run = CoordinatedRun(root: temporary.path, name: "abandoned")
        defer { run.stopAll() }
        try run.startCoordinator(world: 2, workerFlags: workerFlags(batch: 4, epochs: epochs))
        let agent = try run.startAgent(count: 2, extra: ["--reconnect-timeout", "2"])
        guard waitUntil(seconds: 60, { run.loggedSteps() >= 6 && run.currentState()?.phase == .training }) else {
            throw TestFailure("step 6 never came: \(run.output)")
        }
        run.coordinator?.send(SIGKILL)
        _ = run.coordinator?.exitStatus(within: 10)
        #expect(agent.exitStatus(within: 30) == 1, "\(agent.output)")
        #expect(agent.output.contains("(--reconnect-timeout): stopping the workers"), "\(agent.output)")
        #expect(run.liveWorkers().isEmpty)
        // The stop wrote a checkpoint of the last step trained.
        let stoppedAt = run.loggedSteps()
        #expect(stoppedAt < total, "the run ended before the agent gave up; nothing tested")
        #expect(FileManager.default.fileExists(atPath: run.runDirectory + "/checkpoints/" + String(format: "step-%08d", stoppedAt)
                                               + "/COMPLETE"), "no checkpoint of step \(stoppedAt): \(run.output)")
        try run.startCoordinator(world: 2, workerFlags: workerFlags(batch: 4, epochs: epochs), serveFlags: ["--adopt-timeout", "1"])
        try run.startAgent(count: 2)
        #expect(run.coordinator?.exitStatus(within: 300) == 0, "\(run.output)")
        #expect(try run.state().restarts == 0)
        #expect(run.metrics().map(\.step) == Array(1...total))
        for file in ["model.safetensors", "optimizer.safetensors"] {
            #expect(try run.checkpointFile(step: total, file) == straight.checkpointFile(step: total, file), "\(file) differs")
        }
    }

    /// A run of 2 workers (launch.sh --nodes 2) that ended at step 3, in the middle of epoch 1
    /// (32 images, batch 2: 8 steps of 4), resumed by a coordinator of 3: the other 20 images give
    /// each new worker 7, 3 batches, so epoch 1 ends after 3 more steps and epoch 2 has 5; the
    /// coordinator reports the workers' count of the run's steps.
    @Test func aRunOfTwoWorkersResumesWithThree() throws {
        defer { temporary.remove() }
        _ = try CoordinatedRun.finished(root: temporary.path, name: "resized", world: 2,
                                        workerFlags: workerFlags(batch: 2, epochs: 2, ["--max-steps", "3"]), seconds: 60)
        let three = try CoordinatedRun.finished(root: temporary.path, name: "resized", world: 3,
                                                workerFlags: workerFlags(batch: 2, epochs: 2, ["--resume", "auto"]), seconds: 60)
        #expect(three.output.contains("resuming with 3 workers; the checkpoint was written by 2: the rest of epoch 1 "
                                      + "(20 of its 32 samples) is split among 3: 3 more step(s), then 5 per epoch"),
                "\(three.output)")
        let report = try status(three)
        #expect(report["state"] as? String == "finished")
        #expect(report["step"] as? Int == 11 && report["total_steps"] as? Int == 11, "\(report)")
        #expect(three.metrics().map(\.step) == Array(1...11))
        #expect(three.liveWorkers().isEmpty)
    }

    /// With --max-restarts 0 the first failure ends the run: exit 1, a summary naming the
    /// rank and its status, and no process left.
    @Test func withoutRestartsTheFirstFailureEndsTheRunWithASummary() throws {
        defer { temporary.remove() }
        let run = CoordinatedRun(root: temporary.path, name: "fragile")
        defer { run.stopAll() }
        try run.startCoordinator(world: 2, workerFlags: workerFlags(batch: 2, epochs: 20), serveFlags: ["--max-restarts", "0"])
        let agent = try run.startAgent(count: 2)
        _ = try signalWorker(run, rank: 0, atStep: 2, SIGKILL)
        let killedAt = Date()
        #expect(run.coordinator?.exitStatus(within: 30) == CoordinatorExit.failed.rawValue, "\(run.output)")
        #expect(Date().timeIntervalSince(killedAt) < 10)
        let output = run.coordinator?.output ?? ""
        #expect(output.contains("failures:") && output.contains("rank 0 on local") && output.contains("(SIGKILL), status 137"),
                "\(output)")
        #expect(output.contains("exit status 1 (failed after the restarts ran out)"))
        #expect(agent.exitStatus(within: 20) == 0, "\(agent.output)")
        #expect(run.liveWorkers().isEmpty)
        #expect(try run.state().phase == .failed)
    }

    /// Connections without the secret, with a wrong HMAC, with an oversized frame, or of a stale
    /// generation are refused and change nothing; a SIGTERM before training ends the run as stopped.
    @Test func connectionsWithoutTheSecretAreRefusedAndChangeNothing() throws {
        defer { temporary.remove() }
        let run = CoordinatedRun(root: temporary.path, name: "guarded")
        defer { run.stopAll() }
        try run.startCoordinator(world: 2, workerFlags: workerFlags(batch: 2, epochs: 2))
        let before = try run.state()
        let address = try SocketAddress(parsing: run.address)
        let secret = try JobSecret.read(run.runDirectory + "/job.secret")
        func introduce(_ role: Introduction.Role, rank: Int = 0, generation: Int = 0) -> Introduction {
            Introduction(role: role, proof: "", nonce: "", host: "test", pid: getpid(), rank: rank, generation: generation,
                         rankCount: 2)
        }
        let wrongSecret = secret.map { $0 == UInt8(ascii: "a") ? UInt8(ascii: "b") : UInt8(ascii: "a") }
        #expect { try Authentication.connect(to: address, secret: wrongSecret, introduction: introduce(.agent),
                                            deadline: .after(seconds: 5)) } throws: { "\($0)".contains("wrong proof") }
        // A hand-made hello with a proof for another nonce.
        let raw = ControlConnection(socket: try Socket.connect(to: address, deadline: .after(seconds: 5), context: "test"), peer: "test")
        guard case .challenge? = try raw.receive(until: .after(seconds: 5)) else { throw TestFailure("no challenge") }
        var forged = introduce(.control)
        forged.proof = Authentication.proof(secret: secret, nonce: "00", role: .control)
        forged.nonce = "11"
        try raw.send(.hello(forged))
        #expect(try raw.receive(until: .after(seconds: 5)) == .refused(reason: "wrong proof of the job secret (a process of another run, or a wrong --secret-file)"))
        raw.close()
        // A frame larger than an unauthenticated peer may send closes the connection.
        let flood = ControlConnection(socket: try Socket.connect(to: address, deadline: .after(seconds: 5), context: "test"), peer: "test")
        _ = try flood.receive(until: .after(seconds: 5))
        try flood.socket.sendAll([0, 1, 0, 0] + [UInt8](repeating: 65, count: 100), until: .after(seconds: 5), context: "test")
        #expect(throws: (any Error).self) { _ = try flood.receive(until: .after(seconds: 5)) }
        flood.close()
        // The right secret, but a worker of a generation that does not exist.
        #expect { try Authentication.connect(to: address, secret: secret, introduction: introduce(.worker, rank: 0, generation: 3),
                                            deadline: .after(seconds: 5)) } throws: { "\($0)".contains("stale") }
        usleep(700_000)  // the state file is written at most twice a second
        var after = try run.state()
        after.updatedAt = before.updatedAt
        #expect(after == before, "a refused connection changed the state")
        // Each refusal names the peer's address.
        #expect(run.coordinator?.output.contains("refused a connection from 127.0.0.1:") == true)
        #expect(run.coordinator?.output.contains(": wrong proof") == true)
        run.coordinator?.send(SIGTERM)
        #expect(run.coordinator?.exitStatus(within: 20) == CoordinatorExit.stopped.rawValue, "\(run.output)")
    }
}

import Collectives
