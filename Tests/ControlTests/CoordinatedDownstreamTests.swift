import Control
import Data
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Fine-tuning through `mae-coordinator serve` like pretraining: the task and its settings
/// travel in the run config, a killed worker is restarted from the checkpoint, and the run
/// ends with the uninterrupted run's weights and evaluations.
@Suite(.serialized) struct CoordinatedDownstreamTests {
    let temporary: TemporaryDirectory
    let data: String

    init() throws {
        temporary = try TemporaryDirectory("coordinated-downstream")
        data = temporary.path + "/data"
        // 2 classes × 16 = 32 training images: 2 workers × batch 2 make 8 steps per epoch; 2 × 3 val images.
        try synthesizeDataset(root: data, classes: 2, perClass: 16, valPerClass: 3, size: 24, seed: 13)
    }

    var model: [String] { ["--data", data, "--model-shape", "4,16,1,2,8,1,2", "--input-size", "16", "--seed", "5",
                           "--threads", "1", "--data-threads", "1", "--print-every", "1"] }

    @Test func aFineTuningWorkerKilledMidRunIsRestartedAndTheRunEndsWithTheSameWeights() throws {
        defer { temporary.remove() }
        // A pretraining checkpoint to start from.
        let pretraining = try TestProcess(try TestProcess.product("mae-worker"),
                                          ["--standalone", "--run-dir", temporary.path + "/pretrain", "--batch-size", "4",
                                           "--epochs", "1", "--warmup-epochs", "0", "--max-steps", "2", "--lr", "1e-3"] + model,
                                          logDirectory: temporary.path, name: "pretrain")
        #expect(pretraining.exitStatus(within: 60) == 0, "\(pretraining.output)")
        let flags = model + ["--task", "finetune", "--finetune", temporary.path + "/pretrain", "--batch-size", "2",
                             "--epochs", "2", "--warmup-epochs", "1", "--checkpoint-every", "2", "--mixup", "0.8", "--cutmix", "1"]

        let straight = try CoordinatedRun.finished(root: temporary.path, name: "straight", world: 2,
                                                   workerFlags: flags, seconds: 180)

        let killed = CoordinatedRun(root: temporary.path, name: "killed")
        defer { killed.stopAll() }
        try killed.startCoordinator(world: 2, workerFlags: flags)
        try killed.startAgent(count: 2)
        guard waitUntil(seconds: 120, { killed.loggedSteps() >= 5 }), let pid = killed.currentState()?.ranks[1].pid, pid > 0 else {
            throw TestFailure("step 5 never came: \(killed.output)")
        }
        kill(pid, SIGKILL)
        #expect(killed.coordinator?.exitStatus(within: 180) == 0, "\(killed.output)")
        #expect(killed.currentState()?.restarts == 1, "\(killed.output)")

        for file in ["model.safetensors", "optimizer.safetensors"] {
            #expect(try killed.checkpointFile(step: 16, file) == straight.checkpointFile(step: 16, file),
                    "\(file) differs after the restart")
        }
        let log = readText(straight.runDirectory + "/log.txt")
        #expect(log.split(separator: "\n").count == 2 && log.contains("\"test_acc1\""), "\(log)")
        #expect(readText(killed.runDirectory + "/log.txt") == log)
        #expect(straight.output.contains("val top1") || readText(straight.runDirectory + "/logs/rank-0.log").contains("val top1"))
    }
}
