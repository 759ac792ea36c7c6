import Data
import Foundation
import System
import Testing
import TestSupport
@testable import Training

/// End-to-end runs of the built `mae-worker` with `--task finetune` and `--task linprobe` on a
/// tiny model: exact resume, evaluation counts independent of the world size, and the
/// one-line errors for bad input.
@Suite(.serialized) struct DownstreamProcessTests {
    let temporary: TemporaryDirectory
    let data: String

    init() throws {
        temporary = try TemporaryDirectory("downstream")
        data = temporary.path + "/data"
        // 3 classes × 6 = 18 training images (4 batches of 4 per epoch), 3 × 3 = 9 val images
        // (an odd count: two workers take 5 and 5 of a padded 10).
        try synthesizeDataset(root: data, classes: 3, perClass: 6, valPerClass: 3, size: 24, seed: 12)
    }

    var model: [String] { ["--model-shape", "4,16,1,2,8,1,2", "--input-size", "16"] }

    /// The common flags, those that `extra` also gives left out (`extra` wins).
    func arguments(_ runDirectory: String, _ extra: [String]) -> [String] {
        let base = [("--data", data), ("--batch-size", "4"), ("--seed", "3"), ("--threads", "1"), ("--data-threads", "1"),
                    ("--print-every", "1"), ("--run-dir", temporary.path + "/" + runDirectory)]
        return model + base.filter { !extra.contains($0.0) }.flatMap { [$0.0, $0.1] } + extra
    }

    @discardableResult
    func run(_ name: String, _ extra: [String], expecting expected: Int32 = 0) throws -> WorkerProcess {
        let worker = try WorkerProcess(arguments(name, ["--standalone"] + extra), logDirectory: temporary.path,
                                       name: name + "-\(UUID().uuidString.prefix(6))")
        let status = try worker.wait(seconds: 120)
        #expect(status == expected, "\(name) exited \(status): \(worker.errors)")
        return worker
    }

    func checkpoint(_ runDirectory: String, step: Int) -> String {
        temporary.path + "/\(runDirectory)/checkpoints/" + CheckpointStore.directoryName(step: step)
    }

    func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    /// A pretraining checkpoint to start from: 2 steps of the tiny MAE.
    func pretrain() throws -> String {
        try run("pretrain", ["--epochs", "1", "--warmup-epochs", "0", "--max-steps", "2", "--lr", "1e-3"])
        return checkpoint("pretrain", step: 2)
    }

    /// For both tasks: straight to step 8 (two epochs, an evaluation after each) against a stop
    /// at step 3 and a resume: every checkpoint file and log.txt identical, checkpoint-best kept.
    @Test(arguments: [("linprobe", ["encoder.safetensors", "head.safetensors", "optimizer.safetensors"]),
                      ("finetune", ["model.safetensors", "optimizer.safetensors"])])
    func resumeIsBitwiseExact(task: String, files: [String]) throws {
        defer { temporary.remove() }
        let pretrained = try pretrain()
        let common = ["--task", task, "--finetune", pretrained, "--epochs", "2", "--warmup-epochs", "1"]
        let straight = try run("straight", common)
        #expect(straight.output.contains("val top1"), "\(straight.output)")
        try run("stopped", common + ["--max-steps", "3"])
        let resumed = try run("stopped", common + ["--resume", "auto"])
        #expect(resumed.output.contains("resuming from"), "\(resumed.output)")
        for file in files {
            #expect(try bytes(checkpoint("stopped", step: 8) + "/" + file) == bytes(checkpoint("straight", step: 8) + "/" + file),
                    "\(task): \(file) differs after stop and resume")
        }
        let log = readText(temporary.path + "/straight/log.txt")
        #expect(log == readText(temporary.path + "/stopped/log.txt"), "\(task): log.txt differs")
        let lines = log.split(separator: "\n")
        #expect(lines.count == 2, "\(lines)")
        for key in ["train_lr", "train_loss", "test_loss", "test_acc1", "test_acc5", "epoch", "n_parameters"] {
            #expect(lines.allSatisfy { $0.contains("\"\(key)\"") }, "\(task): log.txt lacks \(key): \(log)")
        }
        let best = try CheckpointStore.verify(temporary.path + "/straight/checkpoint-best")
        #expect(best.classNames?.count == 3)
        #expect(best.bestTestAccuracy != nil && best.config.trainingTask.rawValue == task)
    }

    /// The same classifier (lr 0: fine-tuning leaves it as loaded) scored by one worker and by two:
    /// the same counts, every val image once.
    @Test func evaluationCountsDoNotDependOnTheWorldSize() throws {
        defer { temporary.remove() }
        let pretrained = try pretrain()
        let common = ["--task", "finetune", "--finetune", pretrained, "--epochs", "1", "--warmup-epochs", "0", "--lr", "0",
                      "--drop-path", "0"]
        let port = try freeLoopbackPort()
        let workers = try (0..<2).map { rank in
            try WorkerProcess(arguments("pair", common + ["--rank", "\(rank)", "--world-size", "2", "--rendezvous",
                                                          "127.0.0.1:\(port)", "--job-token", "t", "--batch-size", "2"]),
                              logDirectory: temporary.path, name: "pair-\(rank)")
        }
        for worker in workers { #expect(try worker.wait(seconds: 120) == 0, "\(worker.errors)") }
        let single = try run("single", common)
        func evaluation(_ output: String) -> String? {
            output.split(separator: "\n").first { $0.contains("val top1") }.map { String($0[$0.range(of: "val top1")!.lowerBound...]) }
        }
        let one = try #require(evaluation(single.output)), two = try #require(evaluation(workers[0].output))
        #expect(one.contains("(9 images)"), "\(one)")
        // top-1 and top-5 agree exactly; the loss up to the order of the sums.
        #expect(one.prefix(while: { $0 != "l" }) == two.prefix(while: { $0 != "l" }), "one worker: \(one); two: \(two)")
        #expect(two.contains("(9 images)"), "\(two)")
    }

    /// Each bad input: a one-line error before any step.
    @Test func badInputIsAOneLineErrorBeforeAnyWork() throws {
        defer { temporary.remove() }
        let pretrained = try pretrain()
        try run("probe", ["--task", "linprobe", "--finetune", pretrained, "--epochs", "1", "--warmup-epochs", "0"])
        func refused(_ name: String, _ extra: [String], status: Int32 = 2, _ message: String) throws {
            let worker = try run(name, extra, expecting: status)
            #expect(worker.errors.contains(message), "\(name): \(worker.errors)")
            #expect(worker.errors.split(separator: "\n").count == 1, "\(name): more than one line: \(worker.errors)")
            #expect(!worker.output.contains("step 1/"), "\(name) trained: \(worker.output)")
        }
        // A probe's checkpoint where a pretraining one is needed.
        try refused("from-probe", ["--task", "finetune", "--finetune", checkpoint("probe", step: 4)],
                    "is a linprobe checkpoint")
        // ... and where any tool wants an MAE.
        let knn = try WorkerProcess(["knn", "--checkpoint", checkpoint("probe", step: 4), "--data", data],
                                    logDirectory: temporary.path, name: "knn-probe", executable: builtExecutable("mae"))
        #expect(try knn.wait(seconds: 60) != 0)
        #expect(knn.errors.contains("is a linprobe checkpoint (a classifier), not a pretrained MAE"), "\(knn.errors)")
        // mae inspect describes it as what it is.
        let inspect = try WorkerProcess(["inspect", checkpoint("probe", step: 4)], logDirectory: temporary.path,
                                        name: "inspect-probe", executable: builtExecutable("mae"))
        #expect(try inspect.wait(seconds: 60) == 0)
        #expect(inspect.output.contains("linprobe checkpoint") && inspect.output.contains("head.1.weight [3, 16]"), "\(inspect.output)")
        // Another model's checkpoint.
        let other = ["--data", data, "--model-shape", "4,32,1,2,8,1,2", "--input-size", "16", "--standalone", "--task", "linprobe",
                     "--finetune", pretrained, "--run-dir", temporary.path + "/other"]
        let otherModel = try WorkerProcess(other, logDirectory: temporary.path, name: "other-model")
        #expect(try otherModel.wait(seconds: 60) == 2)
        #expect(otherModel.errors.contains("holds custom_p4_d16"), "\(otherModel.errors)")
        // Resuming the pretraining run as a probe.
        try refused("pretrain", ["--task", "linprobe", "--resume", "auto", "--epochs", "1", "--warmup-epochs", "0"], status: 1,
                    "--task was pretrain, now linprobe")
        try refused("classes", ["--task", "linprobe", "--nb-classes", "5"], status: 1, "--nb-classes 5 does not match the 3 classes")
        // A folder without val, and one whose val has other classes.
        let noValidation = temporary.path + "/noval"
        try FileSystem.makeDirectories(noValidation)
        try FileManager.default.copyItem(atPath: data + "/train", toPath: noValidation + "/train")
        try refused("noval", ["--task", "finetune", "--data", noValidation], status: 1, "needs \(noValidation)/train and \(noValidation)/val")
        let otherClasses = temporary.path + "/otherclasses"
        try FileManager.default.copyItem(atPath: data, toPath: otherClasses)
        let valClasses = try FileManager.default.contentsOfDirectory(atPath: otherClasses + "/val").sorted()
        try FileManager.default.moveItem(atPath: otherClasses + "/val/" + valClasses[0], toPath: otherClasses + "/val/renamed")
        try refused("otherclasses", ["--task", "linprobe", "--data", otherClasses], status: 1, "differ from those of train")
    }
}
