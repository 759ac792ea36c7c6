import Data
import Foundation
import Kernels
import Model
import System
import Testing
import TestSupport
@testable import Training
#if canImport(Glibc)
import Glibc
#endif

/// End-to-end runs of the built `mae-worker` on a tiny synthetic JPEG dataset and a tiny
/// custom model: exact resume (clean stop and SIGKILL), SIGTERM, non-finite loss, and two
/// workers over loopback TCP against one worker with twice the batch.
@Suite(.serialized) struct WorkerProcessTests {
    let temporary: TemporaryDirectory
    let data: String

    init() throws {
        temporary = try TemporaryDirectory("worker")
        data = temporary.path + "/data"
        // 2 classes × 8 images = 16 training images: 4 batches of 4 per epoch.
        try synthesizeDataset(root: data, classes: 2, perClass: 8, valPerClass: 1, size: 24, seed: 11)
    }

    /// Tiny model (patch 4 at 16 px: 16 patches), 3 epochs of 4 steps, one thread. `extra` adds
    /// flags or replaces the value of one given here.
    func arguments(runDirectory: String, _ extra: [String]) -> [String] {
        var base = ["--data", data, "--model-shape", "4,16,1,2,8,1,2", "--input-size", "16", "--batch-size", "4",
                    "--epochs", "3", "--warmup-epochs", "1", "--lr", "1e-3", "--seed", "5", "--threads", "1",
                    "--data-threads", "1", "--print-every", "1", "--run-dir", temporary.path + "/" + runDirectory]
        var added: [String] = []
        var index = 0
        while index < extra.count {
            let flag = extra[index]
            let takesValue = index + 1 < extra.count && !extra[index + 1].hasPrefix("--")
            if let existing = base.firstIndex(of: flag), takesValue {
                base[existing + 1] = extra[index + 1]
            } else if flag == "--no-lr", let existing = base.firstIndex(of: "--lr") {
                base.removeSubrange(existing...(existing + 1))
            } else {
                added.append(flag)
                if takesValue { added.append(extra[index + 1]) }
            }
            index += takesValue ? 2 : 1
        }
        return base + added
    }

    @discardableResult
    func run(_ name: String, _ extra: [String], seconds: Double = 60) throws -> WorkerProcess {
        let worker = try WorkerProcess(arguments(runDirectory: name, ["--standalone"] + extra),
                                       logDirectory: temporary.path, name: name + "-\(UUID().uuidString.prefix(6))")
        let status = try worker.wait(seconds: seconds)
        #expect(status == 0, "\(name) exited \(status): \(worker.errors)")
        return worker
    }

    func checkpoint(_ runDirectory: String, step: Int) -> String {
        temporary.path + "/\(runDirectory)/checkpoints/" + CheckpointStore.directoryName(step: step)
    }

    func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    /// Straight to step 12, vs stop at 5 (mid-epoch) and resume, vs SIGKILL after a checkpoint
    /// and resume: the final parameters and moments are bitwise identical.
    @Test func resumeIsBitwiseExactAfterAStopAndAfterSIGKILL() throws {
        defer { temporary.remove() }
        try run("straight", [])

        try run("stopped", ["--max-steps", "5"])
        #expect(fileExists(checkpoint("stopped", step: 5) + "/COMPLETE"))
        // Without --resume the run directory is not overwritten; a changed batch is refused with what differs.
        let refused = try WorkerProcess(arguments(runDirectory: "stopped", ["--standalone"]),
                                        logDirectory: temporary.path, name: "refused")
        #expect(try refused.wait(seconds: 60) == 1)
        #expect(refused.errors.contains("already holds checkpoints"), "\(refused.errors)")
        let incompatible = try WorkerProcess(arguments(runDirectory: "stopped", ["--standalone", "--resume", "auto",
                                                                                 "--batch-size", "2"]),
                                             logDirectory: temporary.path, name: "incompatible")
        #expect(try incompatible.wait(seconds: 60) == 1)
        #expect(incompatible.errors.contains("--batch-size was 4, now 2"), "\(incompatible.errors)")

        // What a run killed after its checkpoint leaves behind: log lines beyond it, the last one cut short.
        try FileSystem.append(temporary.path + "/stopped/metrics.jsonl", text: "{\"step\": 6, \"epoch\": 1}\n{\"step\": 7, \"ep")
        try FileSystem.append(temporary.path + "/stopped/log.txt", text: "{\"train_lr\": 0.001, \"train_loss\": 1.0, \"epoch\": 1}\n")
        let resumed = try run("stopped", ["--resume", "auto"])
        #expect(resumed.output.contains("resuming from"))
        #expect(resumed.output.contains("dropped 3 line(s)"), "\(resumed.output)")

        // Killed between the end of epoch 0's checkpoint and its log.txt line: the resume writes the line.
        try run("epochend", ["--max-steps", "4"])
        try FileSystem.writeFile(temporary.path + "/epochend/log.txt", bytes: [])
        let completed = try run("epochend", ["--resume", "auto"])
        #expect(completed.output.contains("added the log.txt line of epoch 0"), "\(completed.output)")

        let killed = try WorkerProcess(arguments(runDirectory: "killed", ["--standalone", "--checkpoint-every", "1"]),
                                       logDirectory: temporary.path, name: "killed")
        let reached = killed.waitUntil(seconds: 60) { fileExists(checkpoint("killed", step: 2) + "/COMPLETE") }
        killed.send(SIGKILL)
        let status = try killed.wait(seconds: 30)
        #expect(reached, "no checkpoint 2 appeared: \(killed.errors)")
        #expect(status == 128 + SIGKILL, "the worker finished before it could be killed (exit \(status)); the test needs slower steps")
        #expect(!fileExists(checkpoint("killed", step: 12)))
        try run("killed", ["--resume", "auto", "--checkpoint-every", "1"])

        for file in ["model.safetensors", "optimizer.safetensors"] {
            let expected = try bytes(checkpoint("straight", step: 12) + "/" + file)
            #expect(try bytes(checkpoint("stopped", step: 12) + "/" + file) == expected, "stop and resume: \(file) differs")
            #expect(try bytes(checkpoint("killed", step: 12) + "/" + file) == expected, "SIGKILL and resume: \(file) differs")
        }
        // The parameters did move, and the epoch log has one line per epoch with the official keys.
        let initial = MAEModel(config: ModelConfig(name: "x", imageSize: 16, patchSize: 4, encoderWidth: 16, encoderDepth: 1,
                                                   encoderHeads: 2, decoderWidth: 8, decoderDepth: 1, decoderHeads: 2), seed: 5)
        let trained = try SafeTensorsFile.read(path: checkpoint("straight", step: 12) + "/model.safetensors")
        #expect(try trained.floats(named: "blocks.0.attn.qkv.weight") != initial.table.tensor(named: "blocks.0.attn.qkv.weight")
            .map { Array(UnsafeBufferPointer(start: initial.parameters.pointer + $0.offset, count: $0.count)) })
        for runDirectory in ["straight", "stopped"] {
            let lines = readText(temporary.path + "/\(runDirectory)/log.txt").split(separator: "\n")
            #expect(lines.count == 3, "\(runDirectory)/log.txt: \(lines)")
            #expect(lines.first?.contains("\"train_lr\"") == true && lines.first?.contains("\"train_loss\"") == true
                    && lines.first?.contains("\"epoch\": 0") == true)
        }
        for runDirectory in ["stopped", "epochend"] {
            #expect(readText(temporary.path + "/straight/log.txt") == readText(temporary.path + "/\(runDirectory)/log.txt"),
                    "\(runDirectory)/log.txt differs")
        }
        // Every run logged each step once, in order, whatever stopped it.
        for runDirectory in ["straight", "stopped", "killed"] {
            let steps = readText(temporary.path + "/\(runDirectory)/metrics.jsonl").split(separator: "\n")
                .map { integerField("step", in: $0) }
            #expect(steps == (1...12).map { $0 }, "\(runDirectory)/metrics.jsonl steps: \(steps)")
        }
    }

    /// Two threads choose two batch shards; a resume on one thread keeps the checkpoint's
    /// two (one shard would round the gradients differently), so the run still ends
    /// bitwise where the uninterrupted two-thread run does.
    @Test func anAutomaticShardCountFollowsTheCheckpointOnResume() throws {
        defer { temporary.remove() }
        let straight = try run("straight", ["--threads", "2"])
        #expect(straight.output.contains("batch shards 2"), "\(straight.output)")
        try run("stopped", ["--threads", "2", "--max-steps", "5"])
        let resumed = try run("stopped", ["--threads", "1", "--resume", "auto"])
        #expect(resumed.output.contains("batch shards 2"), "\(resumed.output)")
        for file in ["model.safetensors", "optimizer.safetensors"] {
            #expect(try bytes(checkpoint("stopped", step: 12) + "/" + file) == bytes(checkpoint("straight", step: 12) + "/" + file),
                    "resume on one thread: \(file) differs")
        }
        // An explicit count wins over the checkpoint's, with a warning that the run changes.
        try run("changed", ["--threads", "2", "--max-steps", "5"])
        let changed = try run("changed", ["--batch-shards", "1", "--resume", "auto"])
        #expect(changed.output.contains("batch shards 1"), "\(changed.output)")
        #expect(changed.errors.contains("--batch-shards 2 -> 1"), "\(changed.errors)")
    }

    /// The first SIGTERM finishes the step, writes a checkpoint and exits 0; a second one exits at once.
    @Test func sigtermCheckpointsAndExitsZero() throws {
        defer { temporary.remove() }
        let worker = try WorkerProcess(arguments(runDirectory: "term", ["--standalone", "--epochs", "200"]),
                                       logDirectory: temporary.path, name: "term")
        let metrics = temporary.path + "/term/metrics.jsonl"
        #expect(worker.waitUntil(seconds: 60) { readText(metrics).contains("\"step\": 2,") })
        worker.send(SIGTERM)
        let status = try worker.wait(seconds: 60)
        #expect(status == 0, "exit \(status): \(worker.errors)")
        #expect(worker.output.contains("stop requested"))
        let store = CheckpointStore(runDirectory: temporary.path + "/term", warn: { _ in })
        let newest = try #require(try store.newestValid())
        let logged = readText(metrics).split(separator: "\n").count
        #expect(newest.state.step == logged, "checkpoint at step \(newest.state.step), \(logged) steps logged")
        #expect(newest.state.step < 800)

        // A worker stuck waiting for a peer that never comes: the first signal cannot finish a
        // step, the second ends the process at once.
        let port = try freeLoopbackPort()
        let stuck = try WorkerProcess(arguments(runDirectory: "stuck", ["--rank", "0", "--world-size", "2",
                                                                        "--rendezvous", "127.0.0.1:\(port)", "--job-token", "t"]),
                                      logDirectory: temporary.path, name: "stuck")
        #expect(stuck.waitUntil(seconds: 30) { stuck.output.contains("joining the job") })
        stuck.send(SIGTERM)
        #expect(stuck.waitUntil(seconds: 30) { stuck.errors.contains("stop requested") })
        stuck.send(SIGTERM)
        let secondStatus = try stuck.wait(seconds: 30)
        #expect(secondStatus == 128 + SIGTERM, "a second SIGTERM should exit at once, got \(secondStatus): \(stuck.errors)")
        #expect(stuck.errors.contains("exiting now"))
    }

    /// A non-finite loss (injected at step 3) stops the run with an error naming the step,
    /// before that step is applied; the checkpoint before it stays valid.
    @Test func nonFiniteLossStopsTheRunAndKeepsTheLastCheckpoint() throws {
        defer { temporary.remove() }
        let worker = try WorkerProcess(arguments(runDirectory: "nan", ["--standalone", "--checkpoint-every", "1",
                                                                        "--inject-nonfinite-loss-at-step", "3"]),
                                       logDirectory: temporary.path, name: "nan")
        let status = try worker.wait(seconds: 60)
        #expect(status == 1)
        #expect(worker.errors.contains("optimizer step 3 "), "\(worker.errors)")
        #expect(worker.errors.contains("the loss is"), "\(worker.errors)")
        #expect(worker.errors.contains("optimizer step"))
        let store = CheckpointStore(runDirectory: temporary.path + "/nan", warn: { _ in })
        let newest = try #require(try store.newestValid())
        #expect(newest.state.step == 2)
        #expect(worker.errors.contains(CheckpointStore.directoryName(step: 2)))

        // And for real: an absurd learning rate blows the parameters up in one step.
        let diverging = try WorkerProcess(arguments(runDirectory: "diverge", ["--standalone", "--lr", "1e30",
                                                                              "--warmup-epochs", "0", "--checkpoint-every", "1"]),
                                          logDirectory: temporary.path, name: "diverge")
        #expect(try diverging.wait(seconds: 60) == 1)
        #expect(diverging.errors.contains("the loss is") && diverging.errors.contains("optimizer step 2 "),
                "\(diverging.errors)")
    }

    /// Two workers with batch 2 over loopback TCP follow one worker with batch 4 (same samples,
    /// same masks, same rate), up to the order of floating-point sums.
    @Test func twoWorkersMatchOneWorkerWithTwiceTheBatch() throws {
        defer { temporary.remove() }
        let common = ["--max-steps", "3", "--warmup-epochs", "0", "--blr", "0.1"]
        let port = try freeLoopbackPort()
        let workers = try (0..<2).map { rank in
            try WorkerProcess(arguments(runDirectory: "pair", [
                "--rank", "\(rank)", "--world-size", "2", "--rendezvous", "127.0.0.1:\(port)", "--job-token", "test-token",
                "--batch-size", "2", "--no-lr",
            ] + common), logDirectory: temporary.path, name: "pair-\(rank)")
        }
        for worker in workers {
            let status = try worker.wait(seconds: 90)
            #expect(status == 0, "rank exited \(status): \(worker.errors)")
        }
        let single = try WorkerProcess(arguments(runDirectory: "single", ["--standalone", "--no-lr"] + common),
                                       logDirectory: temporary.path, name: "single")
        #expect(try single.wait(seconds: 60) == 0, "\(single.errors)")
        #expect(workers[0].output.contains("effective batch 4"))

        let pair = try SafeTensorsFile.read(path: checkpoint("pair", step: 3) + "/model.safetensors")
        let alone = try SafeTensorsFile.read(path: checkpoint("single", step: 3) + "/model.safetensors")
        #expect(pair.names == alone.names)
        for name in alone.names {
            var actual = try pair.floats(named: name), expected = try alone.floats(named: name)
            if name.hasSuffix("attn.qkv.bias") {
                // The key bias shifts every score of a query equally, which softmax ignores: its
                // true gradient is 0 and the computed one is rounding noise, which AdamW
                // (m / sqrt(v)) turns into steps of about ±lr in either direction. Compare the
                // query and value thirds exactly as the rest; the key third only within 3 steps of lr.
                let width = expected.count / 3
                let keyActual = Array(actual[width..<(2 * width)]), keyExpected = Array(expected[width..<(2 * width)])
                let worstKey = compareValues(keyActual, keyExpected, absoluteTolerance: 3 * 1.6e-3)
                #expect(worstKey.withinTolerance, "\(name) key third: \(worstKey)")
                actual.removeSubrange(width..<(2 * width))
                expected.removeSubrange(width..<(2 * width))
            }
            let worst = compareValues(actual, expected, absoluteTolerance: 1e-6, relativeTolerance: 1e-4)
            #expect(worst.withinTolerance, "\(name): \(worst)")
        }
        // Only rank 0 writes checkpoints and logs.
        #expect(!fileExists(temporary.path + "/pair/rank-0.log"))
        #expect(readText(temporary.path + "/pair/log.txt").isEmpty)  // no epoch ended in 3 steps
    }
}

extension WorkerProcessTests {
    /// torchrun's convention without a coordinator: RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT
    /// in the environment (and the job token in MAE_JOB_TOKEN) instead of the flags.
    @Test func workersPlacedByTheEnvironmentTrainTogether() throws {
        defer { temporary.remove() }
        let port = try freeLoopbackPort()
        let workers = try (0..<2).map { rank in
            try WorkerProcess(arguments(runDirectory: "environment", ["--batch-size", "2", "--max-steps", "2"]),
                              logDirectory: temporary.path, name: "environment-\(rank)",
                              environment: ["RANK": "\(rank)", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                            "MASTER_PORT": "\(port)", "MAE_JOB_TOKEN": "environment-token"])
        }
        for worker in workers {
            #expect(try worker.wait(seconds: 90) == 0, "\(worker.errors)")
        }
        #expect(workers[0].output.contains("world size 2 (rank 0)"), "\(workers[0].output)")
        #expect(fileExists(checkpoint("environment", step: 2) + "/COMPLETE"))
    }

    /// When one worker dies, the other does not hang: it stops with an error (exit 1) long
    /// before its peer timeout, and the last checkpoint stays valid.
    @Test func aDeadPeerStopsTheOtherWorkerWithAnError() throws {
        defer { temporary.remove() }
        let port = try freeLoopbackPort()
        let workers = try (0..<2).map { rank in
            try WorkerProcess(arguments(runDirectory: "dead", [
                "--rank", "\(rank)", "--world-size", "2", "--rendezvous", "127.0.0.1:\(port)", "--job-token", "test-token",
                "--batch-size", "2", "--epochs", "200", "--checkpoint-every", "2", "--peer-timeout", "60",
            ]), logDirectory: temporary.path, name: "dead-\(rank)")
        }
        let checkpoint2 = checkpoint("dead", step: 2) + "/COMPLETE"
        #expect(workers[0].waitUntil(seconds: 60) { fileExists(checkpoint2) }, "\(workers[0].errors)")
        workers[1].send(SIGKILL)
        #expect(try workers[1].wait(seconds: 30) == 128 + SIGKILL)
        let started = Date()
        let status = try workers[0].wait(seconds: 50)
        #expect(status == 1, "rank 0 exited \(status): \(workers[0].errors)")
        #expect(Date().timeIntervalSince(started) < 30, "rank 0 took until its peer timeout to notice")
        #expect(workers[0].errors.hasPrefix("error: "), "\(workers[0].errors)")
        let store = CheckpointStore(runDirectory: temporary.path + "/dead", warn: { _ in })
        #expect(try store.newestValid() != nil)
    }
}

extension WorkerProcessTests {
    /// With gradient accumulation (2 micro-batches per step, 2 steps per epoch), stopping
    /// mid-epoch and resuming is bitwise exact too, and the epochs have the expected length.
    @Test func resumeWithAccumulationIsBitwiseExact() throws {
        defer { temporary.remove() }
        try run("accum-straight", ["--accum-iter", "2"])
        try run("accum-stopped", ["--accum-iter", "2", "--max-steps", "3"])
        try run("accum-stopped", ["--accum-iter", "2", "--resume", "auto"])
        let final = CheckpointStore.directoryName(step: 6)
        for file in ["model.safetensors", "optimizer.safetensors"] {
            let expected = try bytes(temporary.path + "/accum-straight/checkpoints/\(final)/" + file)
            #expect(try bytes(temporary.path + "/accum-stopped/checkpoints/\(final)/" + file) == expected, "\(file) differs")
        }
        let state = try CheckpointStore.verify(temporary.path + "/accum-stopped/checkpoints/\(final)")
        #expect(state.epoch == 3 && state.stepInEpoch == 0 && state.isEpochEnd)
        #expect(state.schedule.accumulationSteps == 2 && state.schedule.iterationsPerEpoch == 4)
    }
}

extension WorkerProcessTests {
    /// In bf16 (on a CPU with AVX512_BF16), stopping and resuming is bitwise exact too: the
    /// rounded weights are made again from the checkpoint's fp32 weights; and an fp32 checkpoint
    /// resumes in bf16.
    @Test(.needsBFloat16Products) func resumeInBF16IsBitwiseExact() throws {
        defer { temporary.remove() }
        try run("bf16-straight", ["--precision", "bf16"])
        try run("bf16-stopped", ["--precision", "bf16", "--max-steps", "3"])
        try run("bf16-stopped", ["--precision", "bf16", "--resume", "auto"])
        try run("fp32-straight", [])
        // Checkpoints hold fp32 weights either way: a fp32 run resumes in bf16, saying so.
        try run("switched", ["--max-steps", "3"])
        let switched = try run("switched", ["--precision", "bf16", "--resume", "auto"])
        #expect((switched.output + switched.errors).contains("--precision fp32 -> bf16"), "\(switched.errors)")
        for file in ["model.safetensors", "optimizer.safetensors"] {
            let expected = try bytes(checkpoint("bf16-straight", step: 12) + "/" + file)
            #expect(try bytes(checkpoint("bf16-stopped", step: 12) + "/" + file) == expected, "\(file) differs")
            #expect(try bytes(checkpoint("fp32-straight", step: 12) + "/" + file) != expected,
                    "\(file): bf16 trained the same bits as fp32")
        }
    }
}

extension WorkerProcessTests {
    /// Two workers that exchange gradients through shared memory end with the same bits as
    /// two workers on the TCP ring (both transports sum in the ring's order).
    @Test func sharedMemoryAndTheRingTrainTheSameBits() throws {
        defer { temporary.remove() }
        for transport in ["shm", "ring"] {
            let port = try freeLoopbackPort()
            let workers = try (0..<2).map { rank in
                try WorkerProcess(arguments(runDirectory: transport, [
                    "--rank", "\(rank)", "--world-size", "2", "--rendezvous", "127.0.0.1:\(port)", "--job-token", "test-token",
                    "--transport", transport, "--batch-size", "2", "--max-steps", "2", "--warmup-epochs", "0",
                ]), logDirectory: temporary.path, name: "\(transport)-\(rank)")
            }
            for worker in workers {
                let status = try worker.wait(seconds: 90)
                #expect(status == 0, "\(transport) rank exited \(status): \(worker.errors)")
            }
        }
        let shared = try SafeTensorsFile.read(path: checkpoint("shm", step: 2) + "/model.safetensors")
        let ring = try SafeTensorsFile.read(path: checkpoint("ring", step: 2) + "/model.safetensors")
        #expect(shared.names == ring.names && !ring.names.isEmpty)
        for name in ring.names {
            let actual = try shared.floats(named: name), expected = try ring.floats(named: name)
            let differing = zip(actual, expected).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(actual.count == expected.count && differing == 0,
                    "\(name): \(differing) of \(expected.count) values differ between shm and ring")
        }
    }
}

extension WorkerProcessTests {
    /// Three workers (where the order of a sum matters) with gradient accumulation: buckets
    /// of a few tensors averaged during the last backward give the bits of one all-reduce
    /// after it, on the ring and in shared memory.
    @Test func overlappedBucketsTrainTheSameBitsAsOneAllReduce() throws {
        defer { temporary.remove() }
        let runs = [("ring-off", "ring", "off"), ("ring-on", "ring", "on"), ("shm-on", "shm", "on")]
        for (name, transport, overlap) in runs {
            let port = try freeLoopbackPort()
            let workers = try (0..<3).map { rank in
                try WorkerProcess(arguments(runDirectory: name, [
                    "--rank", "\(rank)", "--world-size", "3", "--rendezvous", "127.0.0.1:\(port)", "--job-token", "test-token",
                    "--transport", transport, "--overlap", overlap, "--bucket-mb", "0.002", "--batch-size", "2",
                    "--accum-iter", "2", "--max-steps", "2", "--warmup-epochs", "0",
                ]), logDirectory: temporary.path, name: "\(name)-\(rank)")
            }
            for worker in workers {
                let status = try worker.wait(seconds: 120)
                #expect(status == 0, "\(name) rank exited \(status): \(worker.errors)")
            }
        }
        let expected = try SafeTensorsFile.read(path: checkpoint("ring-off", step: 2) + "/model.safetensors")
        #expect(!expected.names.isEmpty)
        for (name, _, _) in runs.dropFirst() {
            let actual = try SafeTensorsFile.read(path: checkpoint(name, step: 2) + "/model.safetensors")
            #expect(actual.names == expected.names)
            for tensor in expected.names {
                let values = try actual.floats(named: tensor), reference = try expected.floats(named: tensor)
                let differing = zip(values, reference).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(values.count == reference.count && differing == 0,
                        "\(name) \(tensor): \(differing) of \(reference.count) values differ from one all-reduce after backward")
            }
        }
    }

    /// The hierarchical transport (six workers on two "machines", loopback addresses
    /// 127.0.0.1 and 127.0.0.2, three each: a local sum of three has an order to get wrong)
    /// trains the same bits bucket by bucket during the backward, and with the sharded
    /// optimizer (weights and gathered moments), as in one all-reduce after the backward.
    @Test func hierarchicalOverlapAndShardingTrainTheSameBitsAsOneAllReduce() throws {
        defer { temporary.remove() }
        let runs = [("hierarchical-off", ["--overlap", "off"]), ("hierarchical-on", ["--overlap", "on"]),
                    ("hierarchical-sharded", ["--shard-optimizer"])]
        for (name, flags) in runs {
            let port = try freeLoopbackPort()
            let workers = try (0..<6).map { rank in
                try WorkerProcess(arguments(runDirectory: name, [
                    "--rank", "\(rank)", "--world-size", "6", "--rendezvous", "127.0.0.1:\(port)", "--job-token", "test-token",
                    "--listen-host", "127.0.0.\(1 + rank / 3)", "--transport", "hierarchical",
                    "--bucket-mb", "0.002", "--batch-size", "1", "--accum-iter", "2", "--max-steps", "2",
                    "--warmup-epochs", "0", "--checkpoint-every", "2",
                ] + flags), logDirectory: temporary.path, name: "\(name)-\(rank)")
            }
            for (rank, worker) in workers.enumerated() {
                let status = try worker.wait(seconds: 180)
                #expect(status == 0, "\(name) rank \(rank) exited \(status): \(worker.errors)")
                // A fall-back to another transport is logged by rank 0.
                #expect(!worker.errors.contains("--transport hierarchical:"), "\(name): \(worker.errors)")
            }
        }
        for name in ["hierarchical-on", "hierarchical-sharded"] {
            let found = try differences(name, "hierarchical-off", step: 2)
            #expect(found.isEmpty, "\(found.prefix(5))")
        }
    }

    /// The hierarchy does not carry the bf16 wire: four workers on two "machines" of two,
    /// where `--transport auto` picks it, stop before training with a line that names the
    /// transport that does (not the backend, which is already TCP).
    @Test func theHierarchyRefusesTheBF16WireNamingTheRing() throws {
        defer { temporary.remove() }
        let port = try freeLoopbackPort()
        let workers = try (0..<4).map { rank in
            try WorkerProcess(arguments(runDirectory: "hierarchical-bf16", [
                "--rank", "\(rank)", "--world-size", "4", "--rendezvous", "127.0.0.1:\(port)", "--job-token", "test-token",
                "--listen-host", "127.0.0.\(1 + rank / 2)", "--gradient-wire", "bf16",
                "--batch-size", "1", "--max-steps", "1", "--warmup-epochs", "0",
            ]), logDirectory: temporary.path, name: "hierarchical-bf16-\(rank)")
        }
        for (rank, worker) in workers.enumerated() {
            let status = try worker.wait(seconds: 120)
            #expect(status != 0, "rank \(rank) trained on a wire the hierarchy does not carry")
            #expect(worker.errors.contains("hierarchical collective") && worker.errors.contains("pass --transport ring"),
                    "rank \(rank): \(worker.errors)")
        }
    }
}

extension WorkerProcessTests {
    /// Runs three workers in `runDirectory` with `extra` flags until they exit.
    @discardableResult
    func trainThree(_ runDirectory: String, _ extra: [String]) throws -> [WorkerProcess] {
        try train(workers: 3, runDirectory, ["--warmup-epochs", "0"] + extra)
    }

    /// Runs `count` workers of batch 2 over loopback TCP in `runDirectory` with `extra` flags until they exit.
    @discardableResult
    func train(workers count: Int, _ runDirectory: String, _ extra: [String]) throws -> [WorkerProcess] {
        let port = try freeLoopbackPort()
        let workers = try (0..<count).map { rank in
            try WorkerProcess(arguments(runDirectory: runDirectory, [
                "--rank", "\(rank)", "--world-size", "\(count)", "--rendezvous", "127.0.0.1:\(port)", "--job-token", "test-token",
                "--batch-size", "2",
            ] + extra), logDirectory: temporary.path, name: "\(runDirectory)-\(rank)-\(UUID().uuidString.prefix(6))")
        }
        for worker in workers {
            let status = try worker.wait(seconds: 120)
            #expect(status == 0, "\(runDirectory) rank exited \(status): \(worker.errors)")
        }
        return workers
    }

    /// The number of values of each file of checkpoint `step` of `name` that differ from `reference`'s.
    func differences(_ name: String, _ reference: String, step: Int) throws -> [String] {
        var found: [String] = []
        for file in [CheckpointFiles.modelFileName, CheckpointFiles.optimizerFileName] {
            let actual = try SafeTensorsFile.read(path: checkpoint(name, step: step) + "/" + file)
            let expected = try SafeTensorsFile.read(path: checkpoint(reference, step: step) + "/" + file)
            if actual.names != expected.names || expected.names.isEmpty { found.append("\(file): tensor names differ") }
            for tensor in expected.names {
                let values = try actual.floats(named: tensor), wanted = try expected.floats(named: tensor)
                let differing = zip(values, wanted).filter { $0.bitPattern != $1.bitPattern }.count
                if differing > 0 || values.count != wanted.count {
                    found.append("\(name) step \(step) \(tensor): \(differing) of \(wanted.count) values differ from \(reference)")
                }
            }
            if actual.metadata["step"] != expected.metadata["step"] { found.append("\(file): step metadata differs") }
        }
        return found
    }

    /// ZeRO stage 1 on three workers (ring and shared memory): the weights and the (gathered)
    /// moments of every checkpoint are the unsharded run's bits, and a run resumes across the
    /// switch either way with the bits of an uninterrupted one.
    @Test func shardedOptimizerTrainsAndResumesWithTheUnshardedBits() throws {
        defer { temporary.remove() }
        let common = ["--checkpoint-every", "2", "--keep-checkpoints", "5"]
        try trainThree("whole", common + ["--max-steps", "4", "--transport", "ring"])
        try trainThree("sharded-ring", common + ["--max-steps", "4", "--transport", "ring", "--shard-optimizer"])
        try trainThree("sharded-shm", common + ["--max-steps", "4", "--transport", "shm", "--shard-optimizer"])
        // Sharded to step 2, then unsharded; unsharded to step 2, then sharded.
        try trainThree("to-whole", common + ["--max-steps", "2", "--shard-optimizer"])
        try trainThree("to-whole", common + ["--max-steps", "4", "--resume", "auto"])
        try trainThree("to-sharded", common + ["--max-steps", "2"])
        try trainThree("to-sharded", common + ["--max-steps", "4", "--resume", "auto", "--shard-optimizer"])
        for name in ["sharded-ring", "sharded-shm", "to-whole", "to-sharded"] {
            for step in [2, 4] {
                let found = try differences(name, "whole", step: step)
                #expect(found.isEmpty, "\(found.prefix(5))")
            }
        }
    }
}

extension WorkerProcessTests {
    /// `--gradient-wire bf16` on three workers: one all-reduce after the backward, buckets
    /// during it, shared memory and the sharded optimizer train the same bits, and a run
    /// stopped at step 2 resumes to the bits of an uninterrupted one. The wire changes the
    /// bits (against fp32), and a resume that switches the wire says so.
    @Test func theBF16WireTrainsTheSameBitsEverywhereAndResumesExactly() throws {
        defer { temporary.remove() }
        let common = ["--gradient-wire", "bf16", "--checkpoint-every", "2", "--keep-checkpoints", "5"]
        try trainThree("wire", common + ["--max-steps", "4", "--transport", "ring", "--overlap", "off"])
        try trainThree("wire-buckets", common + ["--max-steps", "4", "--transport", "ring", "--overlap", "on",
                                                 "--bucket-mb", "0.002"])
        try trainThree("wire-shm", common + ["--max-steps", "4", "--transport", "shm", "--overlap", "on", "--bucket-mb", "0.002"])
        try trainThree("wire-sharded", common + ["--max-steps", "4", "--transport", "ring", "--shard-optimizer"])
        try trainThree("wire-resumed", common + ["--max-steps", "2"])
        try trainThree("wire-resumed", common + ["--max-steps", "4", "--resume", "auto"])
        for name in ["wire-buckets", "wire-shm", "wire-sharded", "wire-resumed"] {
            for step in [2, 4] {
                let found = try differences(name, "wire", step: step)
                #expect(found.isEmpty, "\(found.prefix(5))")
            }
        }
        // fp32 to step 2, then bf16: step 2 differs from the bf16 run's, and the resume warns.
        try trainThree("switched", ["--checkpoint-every", "2", "--max-steps", "2"])
        let switched = try trainThree("switched", common + ["--max-steps", "4", "--resume", "auto"])
        #expect(!(try differences("switched", "wire", step: 2)).isEmpty, "the bf16 wire trained fp32's bits")
        let said = switched.map { $0.output + $0.errors }.joined()
        #expect(said.contains("--gradient-wire fp32 -> bf16"), "\(said.suffix(2000))")
        #expect(said.contains("carried as bf16"), "the banner names the wire")
    }
}
