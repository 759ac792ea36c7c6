import Foundation
import Testing
@testable import Training

/// The position a checkpoint resumes at with the same or another world size, and the
/// schedule's rate counted in samples.
@Suite struct EpochSplitTests {
    /// A mid-epoch checkpoint of `worldSize` workers of batch 2 and --accum-iter 2.
    func state(worldSize: Int, stepInEpoch: Int, samplesDone: Int?, splitStart: Int?) -> CheckpointState {
        CheckpointState(step: 10 + stepInEpoch, epoch: 1, stepInEpoch: stepInEpoch, nextBatchIndex: stepInEpoch * 2,
                        epochSamplesDone: samplesDone, epochSplitStart: splitStart, isEpochEnd: false, seed: 1,
                        worldSize: worldSize, epochLossSum: 1, epochLearningRateSum: 1, epochStepCount: stepInEpoch,
                        datasetFingerprint: "abc", datasetCount: 100,
                        config: RunConfig(dataRoot: "/data", model: tinyModelConfig(), batchSize: 2, accumulationSteps: 2,
                                          runDirectory: "/run"),
                        schedule: try! LearningRateSchedule(peakLearningRate: 1e-3, minimumLearningRate: 0, warmupEpochs: 1,
                                                            epochs: 5, iterationsPerEpoch: 25, accumulationSteps: 2))
    }

    @Test func aCheckpointWithoutTheSampleCountDerivesIt() {
        // Written before the count was recorded: 3 steps × 2 micro-batches × batch 2 × 2 workers.
        let old = state(worldSize: 2, stepInEpoch: 3, samplesDone: nil, splitStart: nil)
        #expect(old.samplesDoneInEpoch == 24)
        let same = TrainingPosition(old, worldSize: 2)
        #expect(same.splitStart == 0 && same.splitFirstStep == 0 && same.splitFraction == 0 && same.stepInEpoch == 3)
        // Three go on from 24 of the 100 samples the epoch of two takes (50 each, 25 batches).
        let resized = TrainingPosition(old, worldSize: 3)
        #expect(resized.splitStart == 24 && resized.splitFirstStep == 3 && resized.stepInEpoch == 3)
        #expect(resized.splitFraction == 0.24)
    }

    /// 2 workers for 3 steps (24 samples), 3 workers for 2 more (24 more: 48), then 4: each resize
    /// starts a split where the samples stand; the same world size keeps the split it resumes.
    @Test func aRunResizedTwiceInAnEpochSplitsFromWhereItStands() {
        // Three workers took over at 24 samples, 0.24 of the epoch; their split takes 24 + 13 × 6
        // (76 left: 26 each, 13 batches of 2 × 3): 102 samples, so at 48 the epoch is
        // 0.24 + 24 / 78 × 0.76 done.
        var resizedOnce = state(worldSize: 3, stepInEpoch: 5, samplesDone: 48, splitStart: 24)
        resizedOnce.epochSplitFraction = 0.24
        let same = TrainingPosition(resizedOnce, worldSize: 3)
        #expect(same.splitStart == 24 && same.splitFirstStep == 3 && same.splitFraction == 0.24)
        let again = TrainingPosition(resizedOnce, worldSize: 4)
        #expect(again.splitStart == 48 && again.splitFirstStep == 5)
        #expect(again.splitFraction == 0.24 + Double(24) / Double(78) * (1 - 0.24))
        // 4 workers: the other 52 samples give each 13, 6 batches, 3 steps; the epoch takes 48 + 48.
        let split = EpochSplit(datasetCount: 100, worldSize: 4, batchSize: 2, accumulationSteps: 2, start: again.splitStart,
                               firstStep: again.splitFirstStep, startFraction: again.splitFraction)
        #expect(split.batchesPerWorker == 6 && split.stepCount == 8 && split.epochSamples == 96)
        #expect(split.firstBatch(ofStep: 6) == 2 && split.samplesDone(beforeStep: 6) == 64)
        #expect(split.samplesDone(beforeStep: 6, micro: 1) == 72)
        // The share of the epoch goes on from where it stood and reaches 1 at the epoch's end.
        #expect(split.fraction(samplesDone: 48) == again.splitFraction && split.fraction(samplesDone: 96) == 1)
        #expect(split.fraction(samplesDone: 64) > again.splitFraction && split.fraction(samplesDone: 64) < 1)
    }

    /// The share of the epoch where a split began survives state.json bit for bit.
    @Test func theSplitFractionRoundTripsThroughStateJSON() throws {
        var saved = state(worldSize: 3, stepInEpoch: 5, samplesDone: 48, splitStart: 24)
        saved.epochSplitFraction = 1.0 / 3.0 + 1e-17
        let read = try CheckpointState.decode(try saved.encoded(), path: "state.json")
        #expect(read.epochSplitFraction?.bitPattern == saved.epochSplitFraction?.bitPattern)
        #expect(read == saved)
    }

    /// For an epoch of one world size, the rate counted in samples is the rate counted in
    /// steps, bit for bit: the same ratio of integers, divided with one rounding.
    @Test func theRateInSamplesIsTheRateInStepsForAnEpochOfOneWorldSize() throws {
        for (iterations, accumulation) in [(7, 1), (25, 2), (391, 3), (1251, 4), (10, 8)] {
            let schedule = try LearningRateSchedule(peakLearningRate: 1.5e-4 * 3, minimumLearningRate: 1e-6, warmupEpochs: 4.5,
                                                    epochs: 13, iterationsPerEpoch: iterations, accumulationSteps: accumulation)
            for (batch, world) in [(1, 1), (64, 3), (16, 7), (5, 12)] {
                // A dataset that gives each worker `iterations` batches and a few samples more.
                let split = EpochSplit(datasetCount: (iterations * batch + batch - 1) * world, worldSize: world, batchSize: batch,
                                       accumulationSteps: accumulation)
                #expect(split.batchesPerWorker == iterations && split.stepCount == schedule.stepsPerEpoch)
                for epoch in [0, 3, 4, 12] {
                    for step in 0..<split.stepCount {
                        let fraction = split.fraction(samplesDone: split.samplesDone(beforeStep: step))
                        let inSamples = schedule.learningRate(atFractionalEpoch: Double(epoch) + fraction)
                        let inSteps = schedule.learningRate(epoch: epoch, stepInEpoch: step)
                        #expect(inSamples.bitPattern == inSteps.bitPattern,
                                "iterations \(iterations), accum \(accumulation), batch \(batch), world \(world), epoch \(epoch), step \(step)")
                    }
                }
            }
        }
    }
}
