import Control
import Data
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A coordinated run whose newest checkpoint is damaged (a flipped byte) just before a worker
/// dies: the restart never loads it, falls back to the checkpoint before with a warning that
/// names the damaged one, and the run ends with the weights of an uninterrupted run.
@Suite(.serialized) struct CheckpointFallbackTests {
    @Test func aRestartSkipsADamagedCheckpointAndTheRunEndsWithTheSameWeights() throws {
        let temporary = try TemporaryDirectory("fallback")
        defer { temporary.remove() }
        let data = temporary.path + "/data"
        try synthesizeDataset(root: data, classes: 2, perClass: 8, valPerClass: 1, size: 24, seed: 11)
        let flags = ["--data", data, "--model-shape", "4,16,1,2,8,1,2", "--input-size", "16", "--batch-size", "2",
                     "--epochs", "4", "--warmup-epochs", "1", "--lr", "1e-3", "--seed", "5", "--threads", "1",
                     "--data-threads", "1", "--batch-shards", "1", "--print-every", "1", "--checkpoint-every", "2"]
        let total = 16
        let straight = try CoordinatedRun.finished(root: temporary.path, name: "straight", world: 2, workerFlags: flags)

        let damaged = CoordinatedRun(root: temporary.path, name: "damaged")
        defer { damaged.stopAll() }
        // Only the kill may end rank 0's generation: with the default 10 s of silence, a test
        // slowed down by the rest of the suite could see the coordinator restart from the
        // newest checkpoint, still intact, while rank 0 is stopped and before the damage.
        try damaged.startCoordinator(world: 2, workerFlags: flags, serveFlags: ["--heartbeat-timeout", "300"])
        try damaged.startAgent(count: 2)
        guard waitUntil(seconds: 60, { damaged.loggedSteps() >= 7 }),
              let pid = damaged.currentState()?.ranks[0].pid, pid > 0 else {
            throw TestFailure("step 7 never came: \(damaged.output)")
        }
        // Rank 0 stopped first, so that no newer checkpoint appears between the damage and the kill.
        kill(pid, SIGSTOP)
        let checkpoints = damaged.runDirectory + "/checkpoints"
        let newest = try #require(try FileManager.default.contentsOfDirectory(atPath: checkpoints)
            .filter { $0.hasPrefix("step-") && FileManager.default.fileExists(atPath: checkpoints + "/\($0)/COMPLETE") }.max())
        let model = URL(fileURLWithPath: checkpoints + "/\(newest)/model.safetensors")
        var bytes = try Data(contentsOf: model)
        bytes[bytes.count - 5] ^= 0x01
        try bytes.write(to: model)
        kill(pid, SIGKILL)
        #expect(damaged.coordinator?.exitStatus(within: 120) == 0, "\(damaged.output)")
        let log = damaged.coordinator?.output ?? ""
        #expect(log.contains("skipping checkpoint \(checkpoints)/\(newest)") && log.contains("is damaged"), "\(log)")
        #expect(try damaged.state().restarts == 1)
        for file in ["model.safetensors", "optimizer.safetensors"] {
            #expect(try damaged.checkpointFile(step: total, file) == straight.checkpointFile(step: total, file),
                    "\(file) differs from the uninterrupted run's")
        }
        #expect(damaged.liveWorkers().isEmpty)
    }

    /// A full disk under a coordinator with `--on-checkpoint-error stop` (the default): every
    /// worker stops, and the coordinator ends the run as stopped (exit status 3, resumable)
    /// instead of restarting into the same failure. A tmpfs the test mounts; root only.
    @Test func aFullDiskStopsTheCoordinatedRunResumably() throws {
        guard getuid() == 0 else { return }
        let temporary = try TemporaryDirectory("full-disk")
        defer { temporary.remove() }
        let data = temporary.path + "/data", disk = temporary.path + "/disk"
        try synthesizeDataset(root: data, classes: 2, perClass: 8, valPerClass: 1, size: 24, seed: 11)
        try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: true)
        let mount = try TestProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", disk],
                                    logDirectory: temporary.path, name: "mount")
        guard mount.exitStatus(within: 10) == 0 else {
            print("skipped: cannot mount a tmpfs here: \(mount.output)")
            return
        }
        defer { _ = try? TestProcess("/bin/umount", [disk], logDirectory: temporary.path, name: "umount").exitStatus(within: 10) }
        let fill = try TestProcess("/bin/dd", ["if=/dev/zero", "of=\(disk)/filler", "bs=64k"], logDirectory: temporary.path, name: "fill")
        _ = fill.exitStatus(within: 30)
        let run = CoordinatedRun(root: temporary.path, name: "full")
        defer { run.stopAll() }
        try FileManager.default.createDirectory(atPath: run.runDirectory, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: run.runDirectory + "/checkpoints", withDestinationPath: disk)
        try run.startCoordinator(world: 2, workerFlags: [
            "--data", data, "--model-shape", "4,16,1,2,8,1,2", "--input-size", "16", "--batch-size", "2", "--epochs", "2",
            "--warmup-epochs", "1", "--lr", "1e-3", "--seed", "5", "--threads", "1", "--data-threads", "1",
            "--batch-shards", "1", "--print-every", "1", "--checkpoint-every", "2"])
        try run.startAgent(count: 2)
        #expect(run.coordinator?.exitStatus(within: 120) == CoordinatorExit.stopped.rawValue, "\(run.output)")
        let state = try run.state()
        #expect(state.phase == .stopped && state.restarts <= 1, "\(run.output)")
        #expect(run.output.contains("could not write a checkpoint (--on-checkpoint-error stop"), "\(run.output)")
        #expect(run.liveWorkers().isEmpty)
    }
}
