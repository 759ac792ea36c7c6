import Testing
@testable import Training

@Suite struct ScheduleTests {
    /// peak 1e-3, floor 1e-5, 2 warm-up epochs of 10, 4 micro-batches per epoch.
    func schedule(accumulation: Int = 1) throws -> LearningRateSchedule {
        try LearningRateSchedule(peakLearningRate: 1e-3, minimumLearningRate: 1e-5, warmupEpochs: 2, epochs: 10,
                                 iterationsPerEpoch: 4, accumulationSteps: accumulation)
    }

    @Test func warmupIsLinearFromZero() throws {
        let schedule = try schedule()
        #expect(schedule.learningRate(epoch: 0, iteration: 0) == 0)
        #expect(abs(schedule.learningRate(epoch: 0, iteration: 2) - 2.5e-4) < 1e-15)   // e = 0.5
        #expect(abs(schedule.learningRate(epoch: 1, iteration: 3) - 8.75e-4) < 1e-15)  // e = 1.75
    }

    @Test func cosineFromPeakToFloor() throws {
        let schedule = try schedule()
        #expect(abs(schedule.learningRate(epoch: 2, iteration: 0) - 1e-3) < 1e-15)     // end of warm-up: the peak
        #expect(abs(schedule.learningRate(epoch: 6, iteration: 0) - 5.05e-4) < 1e-15)  // half-way: (peak + floor) / 2
        // e = 9.75: progress 7.75 / 8, 0.5·(1 + cos(π·0.96875)) = 0.0024076366639015
        #expect(abs(schedule.learningRate(epoch: 9, iteration: 3) - (1e-5 + 0.99e-3 * 0.0024076366639015)) < 1e-15)
        #expect(abs(schedule.learningRate(atFractionalEpoch: 10) - 1e-5) < 1e-15)
    }

    @Test func accumulationHoldsTheRateUntilTheNextBoundary() throws {
        let schedule = try schedule(accumulation: 2)
        #expect(schedule.learningRate(epoch: 0, iteration: 3) == schedule.learningRate(epoch: 0, iteration: 2))
        #expect(abs(schedule.learningRate(epoch: 0, iteration: 3) - 2.5e-4) < 1e-15)
        #expect(schedule.learningRate(epoch: 0, iteration: 1) == 0)
        #expect(schedule.learningRate(epoch: 1, stepInEpoch: 1) == schedule.learningRate(epoch: 1, iteration: 2))
        #expect(schedule.stepsPerEpoch == 2)
        let uneven = try LearningRateSchedule(peakLearningRate: 1, minimumLearningRate: 0, warmupEpochs: 0, epochs: 1,
                                              iterationsPerEpoch: 5, accumulationSteps: 2)
        #expect(uneven.stepsPerEpoch == 2)
    }

    @Test func zeroWarmupStartsAtThePeak() throws {
        let schedule = try LearningRateSchedule(peakLearningRate: 2e-3, minimumLearningRate: 0, warmupEpochs: 0,
                                                epochs: 4, iterationsPerEpoch: 10, accumulationSteps: 1)
        #expect(schedule.learningRate(epoch: 0, iteration: 0) == 2e-3)
        #expect(abs(schedule.learningRate(epoch: 2, iteration: 0) - 1e-3) < 1e-15)
    }

    @Test func warmupAsLongAsTheRunIsRejectedWithAHint() throws {
        do {
            _ = try LearningRateSchedule(peakLearningRate: 1e-3, minimumLearningRate: 0, warmupEpochs: 40, epochs: 10,
                                         iterationsPerEpoch: 4, accumulationSteps: 1)
            Issue.record("expected an error")
        } catch let error as TrainingError {
            #expect(error.description.contains("--warmup-epochs"))
        }
    }

    @Test func learningRateScalesWithTheEffectiveBatch() throws {
        #expect(abs(scaledLearningRate(baseLearningRate: 1.5e-4, effectiveBatchSize: 4096) - 2.4e-3) < 1e-15)
        let config = RunConfig(dataRoot: "/data", model: tinyModelConfig(), batchSize: 64, accumulationSteps: 2,
                               runDirectory: "/run")
        #expect(config.effectiveBatchSize(worldSize: 4) == 512)
        #expect(abs(config.peakLearningRate(worldSize: 4) - 3e-4) < 1e-15)
        var explicit = config
        explicit.absoluteLearningRate = 0.01
        #expect(explicit.peakLearningRate(worldSize: 4) == 0.01)
    }
}
