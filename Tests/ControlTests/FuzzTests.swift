import Control
import Data
import Foundation
import Testing
import TestSupport

/// `mae-coordinator fuzz` against a live coordinator: random and mutated control messages,
/// replayed handshakes and a slow sender are refused and logged with the sender's address,
/// the coordinator answers a real status after every round, and the run it then coordinates
/// trains to the end without a restart.
@Suite(.serialized) struct FuzzTests {
    @Test func theCoordinatorRefusesFuzzedMessagesStaysUpAndItsRunIsUnaffected() throws {
        let temporary = try TemporaryDirectory("fuzz")
        defer { temporary.remove() }
        let data = temporary.path + "/data"
        try synthesizeDataset(root: data, classes: 2, perClass: 8, valPerClass: 1, size: 24, seed: 11)
        let run = CoordinatedRun(root: temporary.path, name: "fuzzed")
        defer { run.stopAll() }
        try run.startCoordinator(world: 2, workerFlags: [
            "--data", data, "--model-shape", "4,16,1,2,8,1,2", "--input-size", "16", "--batch-size", "2", "--epochs", "2",
            "--warmup-epochs", "1", "--lr", "1e-3", "--seed", "5", "--threads", "1", "--data-threads", "1",
            "--batch-shards", "1", "--print-every", "1", "--checkpoint-every", "4"])

        // While the coordinator waits for its agent: 60 connections of every kind, a status every 10.
        let fuzz = try TestProcess(try TestProcess.product("mae-coordinator"),
                                   ["fuzz", "--run-dir", run.runDirectory, "--seed", "3", "--count", "60", "--seconds", "20",
                                    "--slow-seconds", "7"], logDirectory: temporary.path, name: "fuzz")
        defer { fuzz.stop() }
        #expect(fuzz.exitStatus(within: 60) == 0, "\(fuzz.output)\n\(run.output)")
        #expect(fuzz.output.contains("60 connections"), "\(fuzz.output)")
        #expect(run.coordinator?.isRunning == true)

        let log = run.coordinator?.output ?? ""
        let refusals = log.split(separator: "\n").filter { $0.contains("refused a connection from 127.0.0.1:") }
        #expect(refusals.count >= 30, "\(log)")
        #expect(refusals.contains { $0.contains("wrong proof") }, "a replayed or flipped hello was not refused: \(log)")
        #expect(refusals.contains { $0.contains("expected a hello") }, "a message out of order was not refused: \(log)")
        #expect(refusals.contains { $0.contains("outside 1...4096") }, "an oversized frame was not refused: \(log)")
        #expect(refusals.contains { $0.contains("no hello within 5 s") }, "the slow sender was not dropped: \(log)")

        try run.startAgent(count: 2)
        #expect(run.coordinator?.exitStatus(within: 120) == 0, "\(run.output)")
        let state = try run.state()
        #expect(state.restarts == 0 && state.phase == .finished, "\(run.output)")
        #expect(run.liveWorkers().isEmpty)
    }
}
