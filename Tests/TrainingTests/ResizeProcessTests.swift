import Foundation
import Model
import Testing
@testable import Training

/// A run resumed with another number of workers (`mae-worker --resume` with another
/// `--world-size`): the rest of the epoch is split among the new workers, the rate follows
/// the new effective batch, and the continuation is deterministic.
extension WorkerProcessTests {
    /// A copy of run directory `from` named `to`, to resume one checkpoint several ways.
    func copyRun(_ from: String, to: String) throws {
        try FileManager.default.copyItem(atPath: temporary.path + "/" + from, toPath: temporary.path + "/" + to)
    }

    /// The (step, epoch, lr, loss) of each line of `runDirectory`'s metrics.jsonl.
    func metrics(_ runDirectory: String) throws -> [(step: Int, epoch: Int?, learningRate: Double, loss: Double)] {
        let path = temporary.path + "/\(runDirectory)/metrics.jsonl"
        let epochs = readText(path).split(separator: "\n").map { integerField("epoch", in: $0) }
        return zip(try TrainingCurves.read(metricsPath: path), epochs).map { ($0.step, $1, $0.learningRate, $0.loss) }
    }

    /// Two workers (with the sharded optimizer) stop in the middle of epoch 1 of 16 images
    /// (batch 2: 4 steps of 4 images), three resume: the other 8 images give each of them 3
    /// (padded by one), one batch, so epoch 1 ends after 1 more step; epoch 2 has 3 steps of 6.
    /// Resumed twice unsharded and once sharded, the weights are the same bits; the steps are
    /// logged once each, in order (metrics.jsonl and TensorBoard's epoch_1000x), and the rate
    /// is the scaling rule's for 6 images at the share of the epoch done.
    @Test func twoWorkersResumeAsThreeDeterministically() throws {
        defer { temporary.remove() }
        let common = ["--epochs", "2", "--no-lr", "--blr", "0.1"]
        try train(workers: 2, "two", common + ["--max-steps", "2", "--shard-optimizer"])
        #expect(fileExists(checkpoint("two", step: 2) + "/COMPLETE"))
        let saved = try CheckpointStore.verify(checkpoint("two", step: 2))
        #expect(saved.epochSamplesDone == 8 && saved.epochSplitStart == 0 && saved.worldSize == 2)
        for (name, extra) in [("three", []), ("again", []), ("sharded", ["--shard-optimizer"])] {
            try copyRun("two", to: name)
            let workers = try train(workers: 3, name, common + ["--resume", "auto"] + extra)
            #expect(workers[0].output.contains("resuming with 3 workers; the checkpoint was written by 2: the rest of epoch 1 "
                                               + "(8 of its 16 samples) is split among 3: 1 more step(s), then 3 per epoch; "
                                               + "peak lr 1.563e-03 -> 2.344e-03 (effective batch 4 -> 6)"),
                    "\(workers[0].output)")
        }
        for name in ["again", "sharded"] {
            let found = try differences(name, "three", step: 6)
            #expect(found.isEmpty, "\(found.prefix(5))")
        }
        let records = try metrics("three")
        #expect(records.map(\.step) == Array(1...6), "\(records.map(\.step))")
        #expect(records.map(\.epoch) == [0, 0, 0, 1, 1, 1])
        #expect(records.allSatisfy { $0.loss.isFinite })
        // Warm-up of 1 epoch (the arguments' default): lr = peak × the share of the epoch done. Two
        // workers: 0 and 4 of 16 samples; three go on from 8 of 16; then the cosine over epoch 2's
        // 18 samples, 0, 6 and 12 taken.
        let (peakTwo, peakThree) = (0.1 * 4 / 256, 0.1 * 6 / 256)
        let expected = [0, peakTwo * 4 / 16, peakThree * 8 / 16, peakThree, peakThree * 0.75, peakThree * 0.25]
        for (record, rate) in zip(records, expected) {
            #expect(abs(record.learningRate - rate) <= 1e-9 * peakThree, "step \(record.step): lr \(record.learningRate), expected \(rate)")
        }
        // epoch_1000x: 0 and 4 of 16 samples, then from 8 of 16 (0.5) on, then 0, 6 and 12 of 18.
        let events = try TensorBoardReader.read(directory: temporary.path + "/three/tensorboard")
        #expect(events.count == 2)
        #expect(events.flatMap { $0.filter { !$0.scalars.isEmpty } }.map(\.step) == [0, 250, 500, 1000, 1333, 1666])
        let lines = readText(temporary.path + "/three/log.txt").split(separator: "\n")
        #expect(lines.count == 2 && lines.first?.contains("\"epoch\": 0") == true, "\(lines)")
        let epochEnd = try CheckpointStore.verify(checkpoint("three", step: 3))
        #expect(epochEnd.isEpochEnd && epochEnd.epoch == 1 && epochEnd.epochSamplesDone == 0 && epochEnd.worldSize == 3)
    }

    /// Two workers with --accum-iter 2 stop after one step (8 images); three cannot fill an
    /// optimizer step with the other 8 (one batch each), so epoch 1 ends there; one worker
    /// takes them in two steps. Both run on to the end. One worker stopped inside its split of
    /// the epoch and resumed again by one ends with the same bits as without the stop.
    @Test func aResumeWithAccumulationEndsTheEpochWhereTheRestFillsNoStep() throws {
        defer { temporary.remove() }
        let common = ["--epochs", "2", "--accum-iter", "2", "--batch-size", "2"]
        try train(workers: 2, "two", common + ["--max-steps", "1"])
        try copyRun("two", to: "one")
        try copyRun("two", to: "one-stopped")
        let three = try train(workers: 3, "two", common + ["--resume", "auto"])
        #expect(three[0].output.contains("the rest of epoch 1 fills no optimizer step of 3 workers"), "\(three[0].output)")
        // Epoch 2: 6 images per worker, 3 batches, 1 step (the third batch fills no group).
        #expect(try metrics("two").map(\.step) == [1, 2])
        #expect(try metrics("two").map(\.epoch) == [0, 1])
        #expect(readText(temporary.path + "/two/log.txt").split(separator: "\n").count == 2)

        let one = try run("one", common + ["--resume", "auto"])
        #expect(one.output.contains("resuming with 1 workers; the checkpoint was written by 2: the rest of epoch 1 "
                                    + "(8 of its 16 samples) is split among 1: 2 more step(s), then 4 per epoch"), "\(one.output)")
        let records = try metrics("one")
        #expect(records.map(\.step) == Array(1...7) && records.map(\.epoch) == [0, 0, 0, 1, 1, 1, 1], "\(records.map(\.step))")
        #expect(records.allSatisfy { $0.loss.isFinite })
        #expect(fileExists(checkpoint("one", step: 7) + "/COMPLETE"))

        try run("one-stopped", common + ["--resume", "auto", "--max-steps", "2"])
        let stopped = try CheckpointStore.verify(checkpoint("one-stopped", step: 2))
        #expect(stopped.epochSamplesDone == 12 && stopped.epochSplitStart == 8 && stopped.nextBatchIndex == 2)
        try run("one-stopped", common + ["--resume", "auto"])
        let found = try differences("one-stopped", "one", step: 7)
        #expect(found.isEmpty, "\(found.prefix(5))")
    }
}
