import Collectives
import Data
import Foundation
import Kernels
import Model

/// How a run ended.
public struct TrainingSummary: Sendable {
    /// Optimizer steps done in total (including those before a resume).
    public let steps: Int
    /// The last checkpoint written or loaded, if any.
    public let lastCheckpoint: String?
    /// True when SIGTERM/SIGINT ended the run early (after a checkpoint).
    public let stoppedBySignal: Bool
    /// The loss of the last step (averaged over workers), NaN when no step ran.
    public let lastLoss: Double
}

/// The data-parallel training loop of MAE pretraining.
///
/// Each optimizer step: `accumulationSteps` micro-batches of forward and backward (the
/// gradients summed with scale 1/K), the loss averaged over workers and checked, the flat
/// gradient vector averaged over workers, one AdamW update with the schedule's rate. Rank 0
/// logs and writes checkpoints; every rank meets at a barrier around each checkpoint.
public final class Trainer {
    public let config: RunConfig
    public let distributed: DistributedSettings
    public let collective: any Collective
    public let log: RunLog

    public init(config: RunConfig, distributed: DistributedSettings, collective: any Collective) {
        self.config = config
        self.distributed = distributed
        self.collective = collective
        log = RunLog(rank: collective.rank, runDirectory: config.runDirectory)
    }

    /// Where a run stands between steps.
    struct Position {
        var step = 0             // optimizer steps done
        var epoch = 0            // epoch of the next step
        var stepInEpoch = 0      // next step within the epoch
        var epochLossSum = 0.0
        var epochLearningRateSum = 0.0
        var epochStepCount = 0
    }

    /// Trains until the last epoch, `--max-steps`, or a stop signal.
    public func run() throws -> TrainingSummary {
        let rank = collective.rank
        let worldSize = collective.worldSize
        try FileSystem.makeDirectories(config.runDirectory)
        Parallel.setThreads(config.threads)

        let dataset = try ImageFolderDataset(root: config.dataRoot, split: "train")
        let sampler = DistributedSampler(datasetCount: dataset.count, worldSize: worldSize, rank: rank, seed: config.seed)
        let loader = DataLoader(dataset: dataset, sampler: sampler, batchSize: config.batchSize,
                                imageSize: config.model.imageSize, seed: config.seed, threads: config.dataThreads)
        defer { loader.stop() }
        let iterationsPerEpoch = loader.batchesPerEpoch
        guard iterationsPerEpoch >= config.accumulationSteps else {
            throw TrainingError.invalidConfiguration(
                "the dataset's \(dataset.count) images give each of the \(worldSize) workers \(iterationsPerEpoch) batches of "
                + "\(config.batchSize) per epoch, fewer than one optimizer step (--accum-iter \(config.accumulationSteps)); "
                + "lower --batch-size or --accum-iter")
        }
        let schedule = try config.schedule(worldSize: worldSize, iterationsPerEpoch: iterationsPerEpoch)
        let stepsPerEpoch = schedule.stepsPerEpoch
        let totalSteps = min(config.epochs * stepsPerEpoch, config.maxSteps ?? Int.max)

        let model = MAEModel(config: config.model, seed: config.seed)
        let optimizer = AdamWOptimizer(table: model.table, beta1: Float(config.beta1), beta2: Float(config.beta2),
                                       epsilon: Float(config.epsilon), weightDecay: Float(config.weightDecay))
        let store = CheckpointStore(runDirectory: config.runDirectory, warn: { [log] in log.warn($0) })
        let storage = CheckpointFiles(model: model, optimizer: optimizer)

        if rank == 0, config.resume == nil, let existing = try store.completeCheckpoints().last {
            throw TrainingError.invalidConfiguration(
                "\(config.runDirectory) already holds checkpoints (newest \(existing.path)); pass --resume auto to continue "
                + "that run, or choose another --run-dir")
        }
        // Rank 0 finds and loads the checkpoint; its state reaches the others by the collectives.
        var position = Position()
        var lastCheckpoint: String?
        var loaded: [Double] = Array(repeating: 0, count: 8)
        if rank == 0, let found = try findCheckpoint(store: store) {
            let differences = config.resumeIncompatibilities(with: found.state.config, savedWorldSize: found.state.worldSize,
                                                             worldSize: worldSize, savedFingerprint: found.state.datasetFingerprint,
                                                             fingerprint: dataset.fingerprint)
            guard differences.isEmpty else { throw TrainingError.incompatibleResume(differences) }
            let changes = config.resumeChanges(from: found.state.config)
            if !changes.isEmpty { log.warn("warning: resuming with changed settings: " + changes.joined(separator: ", ")) }
            try storage.load(from: found.path, state: found.state)
            lastCheckpoint = found.path
            loaded = [1, Double(found.state.step), Double(found.state.epoch), Double(found.state.stepInEpoch),
                      found.state.epochLossSum, found.state.epochLearningRateSum, Double(found.state.epochStepCount),
                      Double(optimizer.step)]
            log.info("resuming from \(found.path): step \(found.state.step), epoch \(found.state.epoch), "
                     + "batch \(found.state.nextBatchIndex) of \(iterationsPerEpoch)")
        }
        if worldSize > 1 {
            loaded = try collective.allReduceScalars(loaded)
            // Every worker starts from rank 0's parameters and moments.
            try collective.broadcast(model.parameters.pointer, count: model.parameters.count, root: 0)
            try collective.broadcast(optimizer.firstMoment.pointer, count: optimizer.firstMoment.count, root: 0)
            try collective.broadcast(optimizer.secondMoment.pointer, count: optimizer.secondMoment.count, root: 0)
        }
        if loaded[0] > 0 {
            position = Position(step: Int(loaded[1]), epoch: Int(loaded[2]), stepInEpoch: Int(loaded[3]),
                                epochLossSum: loaded[4], epochLearningRateSum: loaded[5], epochStepCount: Int(loaded[6]))
            optimizer.step = Int(loaded[7])
        }

        let effectiveBatch = config.effectiveBatchSize(worldSize: worldSize)
        log.info("mae-worker: \(BLASRuntime.banner), compute threads \(config.threads), data threads \(config.dataThreads)")
        log.info("model \(describe(config.model)), \(model.table.count) parameters; world size \(worldSize) (rank \(rank))")
        log.info("dataset \(config.dataRoot): \(dataset.count) images, \(dataset.classNames.count) classes, fingerprint \(dataset.fingerprint.prefix(16))")
        log.info("effective batch \(effectiveBatch) = \(config.batchSize) × accum \(config.accumulationSteps) × world \(worldSize); "
                 + "lr \(String(format: "%.3e", schedule.peakLearningRate))"
                 + (config.absoluteLearningRate == nil ? " (blr \(config.baseLearningRate) × \(effectiveBatch) / 256)" : " (--lr)")
                 + ", warm-up \(formatNumber(config.warmupEpochs)) of \(config.epochs) epochs, \(stepsPerEpoch) steps per epoch")
        if iterationsPerEpoch % config.accumulationSteps != 0 {
            log.warn("warning: \(iterationsPerEpoch % config.accumulationSteps) trailing batch(es) of each epoch do not fill "
                     + "an accumulation group of \(config.accumulationSteps) and are skipped")
        }

        let patchCount = config.model.patchCount
        let noise = FloatBuffer(count: config.batchSize * patchCount)
        var lastLoss = Double.nan
        var stoppedBySignal = false
        let meter = ProgressMeter(startStep: position.step, totalSteps: totalSteps, imagesPerStep: effectiveBatch)

        func checkpoint(isEpochEnd: Bool) throws {
            try collective.barrier()
            if rank == 0 {
                let state = CheckpointState(
                    step: position.step, epoch: position.epoch, stepInEpoch: position.stepInEpoch,
                    nextBatchIndex: position.stepInEpoch * config.accumulationSteps, isEpochEnd: isEpochEnd,
                    seed: config.seed, worldSize: worldSize, epochLossSum: position.epochLossSum,
                    epochLearningRateSum: position.epochLearningRateSum, epochStepCount: position.epochStepCount,
                    datasetFingerprint: dataset.fingerprint, datasetCount: dataset.count, config: config, schedule: schedule)
                let path = try store.write(state: state) { directory in try storage.save(into: directory, state: state) }
                lastCheckpoint = path
                for removed in try store.prune(keepLast: config.keepCheckpoints, keepEveryEpochs: config.keepEveryEpochs) {
                    log.info("removed old checkpoint \(removed)")
                }
                log.info("checkpoint \(path)")
            }
            try collective.barrier()
        }

        training: while position.epoch < config.epochs && position.step < totalSteps {
            if position.stepInEpoch == 0 { position.epochLossSum = 0; position.epochLearningRateSum = 0; position.epochStepCount = 0 }
            loader.startEpoch(position.epoch, fromBatch: position.stepInEpoch * config.accumulationSteps)
            while position.stepInEpoch < stepsPerEpoch && position.step < totalSteps {
                let learningRate = schedule.learningRate(epoch: position.epoch, stepInEpoch: position.stepInEpoch)
                model.gradients.zero()
                var localLoss = 0.0
                var dataWait = 0.0
                for micro in 0..<config.accumulationSteps {
                    guard let batch = try loader.next() else {
                        throw TrainingError.dataEndedEarly(epoch: position.epoch,
                                                           batch: position.stepInEpoch * config.accumulationSteps + micro)
                    }
                    dataWait += batch.dataWaitSeconds
                    let count = batch.sampleIndices.count
                    for (row, sampleIndex) in batch.sampleIndices.enumerated() {
                        fillMaskingNoise(noise.pointer + row * patchCount, patchCount: patchCount, seed: config.seed,
                                         epoch: position.epoch, sampleIndex: sampleIndex)
                    }
                    let loss = model.forwardBackward(images: batch.images.pointer, noise: noise.pointer, batchSize: count,
                                                     maskRatio: config.maskRatio, normPixLoss: config.normPixLoss,
                                                     gradientScale: 1 / Float(config.accumulationSteps))
                    localLoss += Double(loss) / Double(config.accumulationSteps)
                }
                if config.injectNonFiniteLossAtStep == position.step + 1 { localLoss = .nan }
                // One scalar exchange carries the loss and any stop request, so every worker decides alike.
                let reduced = try collective.allReduceScalars([localLoss, StopSignal.isRequested ? 1 : 0])
                let loss = reduced[0] / Double(worldSize)
                guard loss.isFinite else {
                    throw TrainingError.nonFiniteLoss(step: position.step, epoch: position.epoch, loss: loss,
                                                      lastCheckpoint: lastCheckpoint)
                }
                if worldSize > 1 {
                    try collective.allReduceAverage(model.gradients.pointer, count: model.gradients.count)
                }
                optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: Float(learningRate))

                position.step += 1
                position.stepInEpoch += 1
                position.epochLossSum += loss
                position.epochLearningRateSum += learningRate
                position.epochStepCount += 1
                lastLoss = loss
                meter.record(dataWait: dataWait)
                if position.step % config.printEvery == 0 || position.step == totalSteps {
                    try report(meter: meter, position: position, stepsPerEpoch: stepsPerEpoch, loss: loss, learningRate: learningRate)
                }

                let stopRequested = reduced[1] > 0
                let epochEnds = position.stepInEpoch == stepsPerEpoch
                var epochRecord: [(String, JSONValue)]?
                if epochEnds {
                    // The reference's log.txt line: the epoch's mean rate and loss.
                    epochRecord = [
                        ("train_lr", .number(position.epochLearningRateSum / Double(position.epochStepCount))),
                        ("train_loss", .number(position.epochLossSum / Double(position.epochStepCount))),
                        ("epoch", .integer(position.epoch)),
                    ]
                    position.epoch += 1
                    position.stepInEpoch = 0
                    position.epochLossSum = 0
                    position.epochLearningRateSum = 0
                    position.epochStepCount = 0
                }
                let periodic = config.checkpointEvery > 0 && position.step % config.checkpointEvery == 0
                if epochEnds || periodic || stopRequested || position.step == totalSteps {
                    try checkpoint(isEpochEnd: epochEnds)
                }
                // Logged once the epoch's checkpoint is durable, as the reference logs after saving.
                if let epochRecord {
                    try log.appendEpochLog(epochRecord)
                    let skipped = loader.skippedFiles
                    log.info(String(format: "epoch %d done: mean loss %.4f", position.epoch - 1,
                                    epochRecord[1].1.number ?? .nan)
                             + (skipped > 0 ? ", \(skipped) unreadable file(s) skipped so far" : ""))
                }
                if stopRequested {
                    log.info("stop requested: stopped after step \(position.step) with a checkpoint")
                    stoppedBySignal = true
                    break training
                }
                if epochEnds { continue training }  // the next epoch starts the loader anew
            }
        }
        log.endProgress()
        if !stoppedBySignal {
            log.info("done: \(position.step) steps" + (lastCheckpoint.map { ", last checkpoint \($0)" } ?? ""))
        }
        return TrainingSummary(steps: position.step, lastCheckpoint: lastCheckpoint, stoppedBySignal: stoppedBySignal,
                               lastLoss: lastLoss)
    }

    /// The checkpoint `--resume` names, verified; nil for a fresh start.
    func findCheckpoint(store: CheckpointStore) throws -> (path: String, state: CheckpointState)? {
        guard let resume = config.resume else { return nil }
        if resume == "auto" {
            guard let found = try store.newestValid() else {
                log.info("--resume auto: no complete checkpoint in \(store.directory) yet; starting fresh")
                return nil
            }
            return (found.entry.path, found.state)
        }
        return (resume, try CheckpointStore.verify(resume))
    }

    /// The progress line and its metrics record.
    func report(meter: ProgressMeter, position: Position, stepsPerEpoch: Int, loss: Double, learningRate: Double) throws {
        let interval = meter.takeInterval(step: position.step)
        let epochShown = position.epoch
        let line = String(format: "epoch %d/%d step %d/%d loss %.4f lr %.3e %.1f img/s data-wait %.1f%% eta %@",
                          epochShown + 1, config.epochs, position.step, meter.totalSteps, loss, learningRate,
                          interval.imagesPerSecond, 100 * interval.dataWaitShare, formatDuration(interval.etaSeconds))
        log.progress(line, fraction: Double(position.step) / Double(max(1, meter.totalSteps)))
        try log.appendMetrics([
            ("step", .integer(position.step)), ("epoch", .integer(epochShown)), ("loss", .number(loss)),
            ("lr", .number(learningRate)), ("images_per_second", .number(interval.imagesPerSecond)),
            ("data_wait_share", .number(interval.dataWaitShare)), ("seconds_per_step", .number(interval.secondsPerStep)),
            ("elapsed_seconds", .number(interval.elapsedSeconds)),
        ])
    }
}

/// Throughput between progress lines.
final class ProgressMeter {
    let totalSteps: Int
    let imagesPerStep: Int
    private let start: Double
    private var intervalStart: Double
    private var intervalStartStep: Int
    private var intervalDataWait = 0.0

    struct Interval {
        var imagesPerSecond: Double
        var dataWaitShare: Double
        var secondsPerStep: Double
        var etaSeconds: Double
        var elapsedSeconds: Double
    }

    init(startStep: Int, totalSteps: Int, imagesPerStep: Int) {
        self.totalSteps = totalSteps
        self.imagesPerStep = imagesPerStep
        start = monotonicSeconds()
        intervalStart = start
        intervalStartStep = startStep
    }

    func record(dataWait: Double) { intervalDataWait += dataWait }

    func takeInterval(step: Int) -> Interval {
        let now = monotonicSeconds()
        let seconds = max(now - intervalStart, 1e-9)
        let steps = max(step - intervalStartStep, 1)
        let secondsPerStep = seconds / Double(steps)
        let interval = Interval(imagesPerSecond: Double(steps * imagesPerStep) / seconds,
                                dataWaitShare: min(1, intervalDataWait / seconds), secondsPerStep: secondsPerStep,
                                etaSeconds: secondsPerStep * Double(max(0, totalSteps - step)),
                                elapsedSeconds: now - start)
        intervalStart = now
        intervalStartStep = step
        intervalDataWait = 0
        return interval
    }
}

/// Seconds on the monotonic clock.
func monotonicSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}
