import Collectives
import Data
import Foundation
import Kernels
import Model
import System

/// Where a run stands between optimizer steps: what a checkpoint must restore.
struct TrainingPosition: Equatable {
    /// Optimizer steps done.
    var step = 0
    /// The epoch of the next step.
    var epoch = 0
    /// The next step within the epoch.
    var stepInEpoch = 0
    /// Sums over the epoch's steps so far, for its `log.txt` line.
    var epochLossSum = 0.0
    var epochLearningRateSum = 0.0
    var epochStepCount = 0
    /// The best `test_acc1` so far (-1 before the first evaluation), which `checkpoint-best` holds.
    var bestTestAccuracy = -1.0
    /// Where the current world size's split of the epoch began (`EpochSplit`): the positions of
    /// the epoch's permutation, the steps and the share of the epoch done before; 0 unless the
    /// run was resumed with another world size inside this epoch.
    var splitStart = 0
    var splitFirstStep = 0
    var splitFraction = 0.0

    /// The values as doubles, to travel in one scalar all-reduce.
    var scalars: [Double] {
        [Double(step), Double(epoch), Double(stepInEpoch), epochLossSum, epochLearningRateSum, Double(epochStepCount),
         bestTestAccuracy, Double(splitStart), Double(splitFirstStep), splitFraction]
    }
    static let scalarCount = 10

    init() {}

    init(scalars: ArraySlice<Double>) {
        let values = Array(scalars)
        step = Int(values[0])
        epoch = Int(values[1])
        stepInEpoch = Int(values[2])
        epochLossSum = values[3]
        epochLearningRateSum = values[4]
        epochStepCount = Int(values[5])
        bestTestAccuracy = values[6]
        splitStart = Int(values[7])
        splitFirstStep = Int(values[8])
        splitFraction = values[9]
    }

    /// The position of a checkpoint, continued by `worldSize` workers: the checkpoint's split of
    /// the epoch when it is the world size that wrote it, else the rest of the epoch split
    /// among the new workers from the samples taken so far.
    init(_ state: CheckpointState, worldSize: Int) {
        step = state.step
        epoch = state.epoch
        stepInEpoch = state.stepInEpoch
        epochLossSum = state.epochLossSum
        epochLearningRateSum = state.epochLearningRateSum
        epochStepCount = state.epochStepCount
        bestTestAccuracy = state.bestTestAccuracy ?? -1
        let done = state.samplesDoneInEpoch
        let saved = EpochSplit(datasetCount: state.datasetCount, worldSize: state.worldSize, batchSize: state.config.batchSize,
                               accumulationSteps: state.config.accumulationSteps, start: state.epochSplitStart ?? 0,
                               startFraction: state.epochSplitFraction ?? 0)
        if worldSize == state.worldSize {
            splitStart = saved.start
            splitFirstStep = stepInEpoch - (done - saved.start) / (saved.samplesPerBatch * saved.accumulationSteps)
            splitFraction = saved.startFraction
        } else {
            splitStart = done
            splitFirstStep = stepInEpoch
            splitFraction = saved.fraction(samplesDone: done)
        }
    }
}

/// Everything one run of `Trainer` holds: the data, the task's model and optimizer, the
/// schedule, the checkpoint store and the position, with one method per phase. The three
/// tasks share it; what differs lives in the `TaskModel`.
final class TrainingSession {
    /// The run's settings, with `batchShards` resolved to the count the model uses.
    private(set) var config: RunConfig
    /// `--batch-shards` as given (nil: automatic), which decides whether a resume keeps
    /// the checkpoint's count.
    let requestedBatchShards: Int?
    let collective: any Collective
    let log: RunLog
    let rank: Int
    let worldSize: Int
    let dataset: ImageFolderDataset
    let loader: DataLoader
    let schedule: LearningRateSchedule
    let taskModel: any TaskModel
    /// The gradient all-reduce, overlapped with the backward or after it.
    let exchange: GradientExchange
    /// The MAE of a pretraining run (reconstruction figures, --init-weights); nil for the other tasks.
    let model: MAEModel?
    /// A classifying run's scoring on `val` (nil for pretraining).
    let evaluator: Evaluator?
    let store: CheckpointStore
    /// Optimizer steps in an epoch of this world size, and where this run stops (epochs or
    /// --max-steps; `restore` counts it from the checkpoint's position, since epochs of another
    /// world size had another number of steps).
    let stepsPerEpoch: Int
    private(set) var totalSteps: Int
    var position = TrainingPosition()
    var lastCheckpoint: String?
    /// The coordinator's hooks (nil without one).
    let control: (any TrainingControl)?
    /// Rank 0's TensorBoard event file (opened by `restore`).
    var tensorBoard: TensorBoardWriter?
    /// The fixed images of the run's reconstruction figures and their count, loaded at the first figure.
    var reconstructionImages: (FloatBuffer, Int)?
    /// `--knn-every`'s scoring of DATA/train → DATA/val (nil without it).
    let knn: KNNEvaluation?

    /// Opens the dataset, starts the loader, builds the model; validates what needs the data.
    init(config: RunConfig, collective: any Collective, log: RunLog, control: (any TrainingControl)? = nil,
         expectedSchedule: LearningRateSchedule? = nil) throws {
        self.config = config
        self.collective = collective
        self.log = log
        self.control = control
        rank = collective.rank
        worldSize = collective.worldSize
        try TrainingError.reportingSystemCalls { try FileSystem.makeDirectories(config.runDirectory) }
        Parallel.setThreads(config.threads)

        dataset = try ImageFolderDataset(root: config.dataRoot, split: "train")
        let task = config.trainingTask
        let validation = try config.validationDataset(training: dataset)
        // --knn-every needs val/ with train's classes: checked before any work.
        knn = (config.knnEvery ?? 0) > 0 ? try KNNEvaluation(root: config.dataRoot) : nil
        let sampler = DistributedSampler(datasetCount: dataset.count, worldSize: worldSize, rank: rank, seed: config.seed)
        let batchesPerEpoch = sampler.samplesPerRank / config.batchSize
        guard batchesPerEpoch >= config.accumulationSteps else {
            throw TrainingError.invalidConfiguration(
                "the dataset's \(dataset.count) images give each of the \(worldSize) workers \(batchesPerEpoch) batches of "
                + "\(config.batchSize) per epoch, fewer than one optimizer step (--accum-iter \(config.accumulationSteps)); "
                + "lower --batch-size or --accum-iter")
        }
        schedule = try config.schedule(worldSize: worldSize, iterationsPerEpoch: batchesPerEpoch)
        if let expectedSchedule, expectedSchedule != schedule {
            throw TrainingError.invalidConfiguration(
                "the coordinator's schedule has \(expectedSchedule.iterationsPerEpoch) batches per epoch and peak lr "
                + "\(expectedSchedule.peakLearningRate), but this worker computes \(batchesPerEpoch) and \(schedule.peakLearningRate) "
                + "from the \(dataset.count) images it sees in \(config.dataRoot); every machine must see the same dataset")
        }
        stepsPerEpoch = schedule.stepsPerEpoch
        totalSteps = min(config.epochs * stepsPerEpoch, config.maxSteps ?? Int.max)
        store = CheckpointStore(runDirectory: config.runDirectory, warn: { [log] in log.warn($0) })
        if rank == 0, config.resume == nil, let existing = try store.completeCheckpoints().last {
            throw TrainingError.invalidConfiguration(
                "\(config.runDirectory) already holds checkpoints (newest \(existing.path)); pass --resume auto to continue "
                + "that run, or choose another --run-dir")
        }

        loader = DataLoader(dataset: dataset, sampler: sampler, batchSize: config.batchSize,
                            imageSize: config.model.imageSize, seed: config.seed, threads: config.dataThreads,
                            transform: try config.trainingTransform())
        requestedBatchShards = config.batchShards
        // ZeRO stage 1 only where there is more than one worker to shard over.
        let sharded = config.shardOptimizer == true && collective.worldSize > 1
        switch task {
        case .pretrain:
            self.config.batchShards = config.batchShards ?? MAEModel.automaticBatchShards(
                config: config.model, batchSize: config.batchSize, threads: config.threads,
                precision: config.productPrecision)
            let pretraining = PretrainingTaskModel(
                config: config, batchShards: self.config.batchShards ?? 1,
                shardingOver: sharded ? collective : nil)
            (taskModel, model) = (pretraining, pretraining.model)
        case .linprobe:
            self.config.batchShards = 1
            taskModel = LinearProbeTaskModel(config: config, settings: config.downstream!,
                                             classCount: dataset.classNames.count)
            model = nil
        case .finetune:
            self.config.batchShards = 1
            taskModel = try FineTuningTaskModel(config: config, settings: config.downstream!, classCount: dataset.classNames.count,
                                                rank: collective.rank)
            model = nil
        }
        let (worldSize, rank) = (collective.worldSize, collective.rank)
        if config.overlap == true && sharded {
            throw TrainingError.invalidConfiguration(
                "--overlap on and --shard-optimizer: the sharded optimizer reduce-scatters after the backward; "
                + "pass --overlap auto or off with it")
        }
        if config.overlap == true && !collective.reducesSlicesAsWhole {
            throw TrainingError.invalidConfiguration(
                "--overlap on: this backend (MPI with \(worldSize) workers) sums a bucket in another order than the whole "
                + "gradient, so the bits would depend on the buckets; pass --overlap auto or off")
        }
        if !collective.carries(config.gradientWireFormat) {
            // The hierarchy is a TCP transport too, so "--backend tcp" would not help there.
            let instead = collective is HierarchicalCollective
                ? "the hierarchical collective (--transport hierarchical, or auto on machines of two or more workers each) "
                    + "does not round as the bf16 wire does; pass --transport ring"
                : "the \(type(of: collective)) sums in an order of its own and cannot round as the bf16 wire does; "
                    + "use --backend tcp (the ring or shared memory)"
            throw TrainingError.invalidConfiguration(
                "--gradient-wire \(config.gradientWireFormat): \(instead) or --gradient-wire fp32")
        }
        exchange = GradientExchange(
            collective: collective, gradients: taskModel.gradients.pointer, table: taskModel.gradientTable,
            bucketBytes: Int((config.bucketMegabytes ?? GradientExchange.defaultBucketMegabytes) * 1_048_576),
            overlaps: (config.overlap ?? true) && taskModel.reportsBackwardProgress && collective.reducesSlicesAsWhole
                && !sharded,
            reduceScatters: sharded, wire: config.gradientWireFormat)
        evaluator = validation.map {
            Evaluator(dataset: $0, worldSize: worldSize, rank: rank, batchSize: config.batchSize,
                      imageSize: config.model.imageSize, threads: config.dataThreads)
        }
    }

    /// Rank 0 finds, checks and loads the checkpoint `--resume` names; the position reaches
    /// the other ranks by one scalar all-reduce, parameters and moments by broadcasts (which
    /// also give a fresh run rank 0's initialisation everywhere, as DDP does).
    func restore() throws {
        // [found, position…, optimizer step, batch shards]: rank 0's values, zeros elsewhere, summed.
        let scalarCount = TrainingPosition.scalarCount
        var shared = [Double](repeating: 0, count: scalarCount + 3)
        if rank == 0, let found = try findCheckpoint() {
            // An automatic shard count follows the checkpoint, so that the continuation
            // rounds exactly as the run did (whatever the thread count now).
            if requestedBatchShards == nil { config.batchShards = found.state.config.batchShards ?? 1 }
            let differences = config.resumeIncompatibilities(
                with: found.state.config, savedFingerprint: found.state.datasetFingerprint, fingerprint: dataset.fingerprint)
            guard differences.isEmpty else { throw TrainingError.incompatibleResume(differences) }
            if config.trainingTask.classifies, let saved = found.state.classNames, saved != dataset.classNames {
                throw TrainingError.incompatibleResume(["the checkpoint's \(saved.count) classes differ from the "
                                                        + "\(dataset.classNames.count) of \(config.dataRoot)/train"])
            }
            let changes = config.resumeChanges(from: found.state.config)
            if !changes.isEmpty { log.warn("warning: resuming with changed settings: " + changes.joined(separator: ", ")) }
            try taskModel.load(from: found.path)
            lastCheckpoint = found.path
            let resumed = TrainingPosition(found.state, worldSize: worldSize)
            guard resumed.splitStart < dataset.count, resumed.splitFirstStep <= resumed.stepInEpoch else {
                throw TrainingError.checkpoint("\(found.path)/state.json: epoch_samples_done \(found.state.samplesDoneInEpoch) and "
                                               + "epoch_split_start \(found.state.epochSplitStart ?? 0) do not fit an epoch of "
                                               + "\(dataset.count) images; the state was edited or damaged: resume an older checkpoint")
            }
            shared = [1] + resumed.scalars + [Double(taskModel.optimizerStep), Double(config.batchShards ?? 1)]
            // Epochs counted from 1, as the progress lines count them.
            log.info("resuming from \(found.path): step \(found.state.step), epoch \(found.state.epoch + 1), "
                     + "batch \(found.state.nextBatchIndex) of \(found.state.schedule.iterationsPerEpoch)")
            if found.state.worldSize != worldSize { logResize(from: found.state, to: resumed) }
            let dropped = try log.dropLines(afterStep: found.state.step, fromEpoch: found.state.epoch)
            if dropped > 0 {
                log.info("dropped \(dropped) line(s) of metrics.jsonl and log.txt written after that checkpoint; "
                         + "the resumed run writes them again")
            }
            if let finished = found.state.finishedEpoch, try log.addEpochLogIfMissing(finished) {
                log.info("added the log.txt line of epoch \(finished.epoch), which the run was stopped before writing")
            }
        }
        if rank == 0, shared[0] == 0 {
            // A fresh run only: a resume continues its checkpoint.
            if let path = config.initWeights { try startFromWeights(path) }
            if let settings = config.downstream {
                if settings.pretrained.isEmpty {
                    log.info("no --finetune: the encoder is randomly initialised (seed \(config.seed))")
                } else {
                    try startFromPretrained(settings.pretrained)
                }
            }
        }
        if worldSize > 1 {
            shared = try collective.allReduceScalars(shared)
            for buffer in taskModel.sharedBuffers {
                try collective.broadcast(buffer.pointer, count: buffer.count, root: 0)
            }
        }
        taskModel.sharedBuffersDidChange()
        if shared[0] > 0 {
            position = TrainingPosition(scalars: shared[1...scalarCount])
            taskModel.optimizerStep = Int(shared[scalarCount + 1])
            config.batchShards = Int(shared[scalarCount + 2])
            model?.batchShards = Int(shared[scalarCount + 2])
            totalSteps = countTotalSteps()
        }
        tensorBoard = try openTensorBoard(resumed: shared[0] > 0)
    }

    /// The run's optimizer steps in all, counted from the current position: those done, the
    /// rest of this epoch's, and `stepsPerEpoch` for each later one; --max-steps caps it. A
    /// fresh run (or one that always had this world size) gets epochs × `stepsPerEpoch`.
    func countTotalSteps() -> Int {
        let toTheEnd = position.epoch >= config.epochs ? position.step
            : position.step + (epochSplit.stepCount - position.stepInEpoch) + (config.epochs - position.epoch - 1) * stepsPerEpoch
        return min(toTheEnd, config.maxSteps ?? Int.max)
    }

    /// How the current epoch is split among this run's workers (`EpochSplit`).
    var epochSplit: EpochSplit { epochSplit(at: position) }

    /// How the epoch of `position` is split among this run's workers.
    func epochSplit(at position: TrainingPosition) -> EpochSplit {
        EpochSplit(datasetCount: dataset.count, worldSize: worldSize, batchSize: config.batchSize,
                   accumulationSteps: config.accumulationSteps, start: position.splitStart,
                   firstStep: position.splitFirstStep, startFraction: position.splitFraction)
    }

    /// Rank 0, resuming a checkpoint of another world size: one line on what changes.
    func logResize(from saved: CheckpointState, to resumed: TrainingPosition) {
        let rate = { (value: Double) in String(format: "%.3e", value) }
        let rates = "peak lr \(rate(saved.schedule.peakLearningRate)) -> \(rate(schedule.peakLearningRate))"
            + (config.absoluteLearningRate == nil
                ? " (effective batch \(config.effectiveBatchSize(worldSize: saved.worldSize)) -> "
                    + "\(config.effectiveBatchSize(worldSize: worldSize)))" : " (--lr)")
        let start = "resuming with \(worldSize) workers; the checkpoint was written by \(saved.worldSize): "
        guard resumed.stepInEpoch > 0 else {
            log.info(start + "epochs from \(resumed.epoch + 1) on are split among \(worldSize) (\(stepsPerEpoch) steps each), " + rates)
            return
        }
        let steps = epochSplit(at: resumed).stepCount - resumed.stepInEpoch
        log.info(start + "the rest of epoch \(resumed.epoch + 1) (\(dataset.count - resumed.splitStart) of its "
                 + "\(dataset.count) samples) is split among \(worldSize): \(steps) more step(s), then \(stepsPerEpoch) "
                 + "per epoch; " + rates)
    }

    /// The checkpoint `--resume` names, verified; nil for a fresh start.
    func findCheckpoint() throws -> (path: String, state: CheckpointState)? {
        guard let resume = config.resume else { return nil }
        if resume == "auto" {
            guard let found = try store.newestValid(setAsideDamaged: true) else {
                log.info("--resume auto: no complete checkpoint in \(store.directory) yet; starting fresh")
                return nil
            }
            return (found.entry.path, found.state)
        }
        return (resume, try CheckpointStore.verify(resume))
    }

    /// The startup banner (rank 0 prints, other ranks log it to their file).
    func printBanner() {
        let effectiveBatch = config.effectiveBatchSize(worldSize: worldSize)
        let rateRule = config.absoluteLearningRate == nil
            ? " (blr \(config.baseLearningRate) × \(effectiveBatch) / 256)" : " (--lr)"
        log.info("mae-worker: \(BLASRuntime.banner), compute threads \(config.threads), data threads \(config.dataThreads), "
                 + "batch shards \(config.batchShards ?? 1), precision \(config.productPrecision.rawValue), \(CPUInfo.summary)")
        if let note = BLASRuntime.presetCoreNote { log.info("note: " + note) }
        log.info("task \(config.trainingTask.rawValue): model \(describe(config.model)), \(taskModel.trainableParameterCount) "
                 + "trainable parameters; world size \(worldSize) (rank \(rank))")
        log.info("dataset \(config.dataRoot): \(dataset.count) images, \(dataset.classNames.count) classes, "
                 + "fingerprint \(dataset.fingerprint.prefix(16))")
        log.info("effective batch \(effectiveBatch) = \(config.batchSize) × accum \(config.accumulationSteps) × world \(worldSize); "
                 + "lr \(String(format: "%.3e", schedule.peakLearningRate))\(rateRule), warm-up "
                 + "\(formatNumber(config.warmupEpochs)) of \(config.epochs) epochs, \(stepsPerEpoch) steps per epoch")
        if worldSize > 1 {
            let bucketMegabytes = formatNumber(config.bucketMegabytes ?? GradientExchange.defaultBucketMegabytes)
            log.info((exchange.overlaps
                ? "gradients averaged during the backward in \(exchange.buckets.count) bucket(s) of about \(bucketMegabytes) MiB"
                : exchange.reduceScatters
                ? "gradients reduce-scattered after the backward; AdamW on this worker's shard (--shard-optimizer)"
                : "gradients averaged after the backward")
                + (exchange.wire == .fp32 ? "" : ", carried as \(exchange.wire) between workers (--gradient-wire)"))
        }
        let trailing = schedule.iterationsPerEpoch % config.accumulationSteps
        if trailing != 0 {
            log.warn("warning: \(trailing) trailing batch(es) of each epoch do not fill an accumulation group of "
                     + "\(config.accumulationSteps) and are skipped")
        }
    }

    /// The epoch loop: steps, progress, epoch logs and checkpoints, until the end, `--max-steps`
    /// or a stop signal.
    func train() throws -> TrainingSummary {
        let meter = ProgressMeter(startStep: position.step, totalSteps: totalSteps,
                                  imagesPerStep: config.effectiveBatchSize(worldSize: worldSize))
        var lastLoss = Double.nan
        var stoppedBySignal = false
        training: while position.epoch < config.epochs && position.step < totalSteps {
            let split = epochSplit
            if position.stepInEpoch == split.stepCount {
                // Only after a resume with more workers near an epoch's end: the rest of the epoch fills
                // no optimizer step of theirs, and is left out as drop_last leaves out what fills no batch.
                log.info("the rest of epoch \(position.epoch + 1) fills no optimizer step of \(worldSize) workers; "
                         + "the epoch ends here")
                try closeStep(epochEnds: true, checkpointRequested: false)
                continue training
            }
            loader.startEpoch(position.epoch, splitFrom: split.start, fromBatch: split.firstBatch(ofStep: position.stepInEpoch))
            while position.stepInEpoch < split.stepCount && position.step < totalSteps {
                let stepStart = monotonicSeconds()
                let tensorBoardStep = nextTensorBoardStep
                let outcome = try step()
                tensorBoard?.addScalars([("train_loss", outcome.loss), ("lr", outcome.learningRate)], step: tensorBoardStep)
                if let control {
                    let seconds = monotonicSeconds() - stepStart
                    control.stepFinished(StepReport(
                        step: position.step, totalSteps: totalSteps, epoch: position.epoch, loss: outcome.loss,
                        learningRate: outcome.learningRate,
                        imagesPerSecond: Double(config.effectiveBatchSize(worldSize: worldSize)) / max(seconds, 1e-9),
                        dataWaitSeconds: outcome.dataWait, stepSeconds: seconds))
                }
                lastLoss = outcome.loss
                meter.record(dataWait: outcome.dataWait, communicationWait: outcome.communicationWait)
                if position.step % config.printEvery == 0 || position.step == totalSteps {
                    try report(meter.takeInterval(step: position.step), loss: outcome.loss,
                               learningRate: outcome.learningRate)
                }
                let epochEnded = position.stepInEpoch == split.stepCount
                try closeStep(epochEnds: epochEnded,
                              checkpointRequested: outcome.stopRequested || outcome.checkpointRequested)
                if outcome.stopRequested {
                    log.info("stop requested: stopped after step \(position.step) with a checkpoint")
                    stoppedBySignal = true
                    break training
                }
                if epochEnded { continue training }  // the next epoch starts the loader anew
            }
        }
        log.endProgress()
        if !stoppedBySignal, config.trainingTask.classifies, position.stepInEpoch != 0, let result = try evaluate() {
            // --max-steps stopped inside an epoch: the model as it ends, scored once more.
            log.info(Self.summary(of: result, prefix: "final evaluation"))
        }
        try tensorBoard?.flush()
        if model != nil { writeReconstructions() }
        writeCurves()
        if !stoppedBySignal {
            log.info("done: \(position.step) steps" + (lastCheckpoint.map { ", last checkpoint \($0)" } ?? ""))
        }
        return TrainingSummary(steps: position.step, lastCheckpoint: lastCheckpoint, stoppedBySignal: stoppedBySignal,
                               lastLoss: lastLoss)
    }

    /// After a step: the epoch's end when `epochEnds` (its summary, k-NN, checkpoint, `log.txt`
    /// line and figures), and a checkpoint when one is due or requested.
    func closeStep(epochEnds: Bool, checkpointRequested: Bool) throws {
        var finished = epochEnds ? try finishEpoch() : nil
        if let epoch = finished?.epoch, let accuracy = try scoreKNN(afterEpoch: epoch) {
            // In the epoch's summary before its checkpoint, which holds the log.txt line.
            finished?.knnTop1 = accuracy.top1
            finished?.knnTop5 = accuracy.top5
        }
        let periodic = config.checkpointEvery > 0 && position.step % config.checkpointEvery == 0
        if finished != nil || periodic || checkpointRequested || position.step == totalSteps {
            try tensorBoard?.flush()
            try writeCheckpoint(finishedEpoch: finished)
        }
        guard let finished else { return }
        // Logged once the epoch's checkpoint is durable, as the reference logs after saving;
        // the checkpoint holds the line too, for a resume after a kill in between.
        try log.appendEpochLog(finished.logFields)
        let skipped = loader.skippedFiles
        // Numbered from 1 like the progress lines (log.txt keeps the reference's 0-based "epoch").
        log.info(String(format: "epoch %d/%d done: mean loss %.4f", position.epoch, config.epochs, finished.loss)
                 + (finished.evaluation.map { "; " + Self.summary(of: $0, prefix: "val") } ?? "")
                 + (skipped > 0 ? ", \(skipped) unreadable file(s) skipped so far" : ""))
        let every = config.reconstructEvery ?? 0
        if model != nil, every > 0, position.epoch % every == 0, position.epoch < config.epochs {
            writeReconstructions()
        }
    }

    /// What one optimizer step produced.
    struct StepOutcome {
        /// The loss averaged over micro-batches and workers.
        var loss: Double
        var learningRate: Double
        /// Whether any worker received a stop signal (all workers see the same answer).
        var stopRequested: Bool
        /// Whether any worker was asked for a checkpoint now (all workers see the same answer).
        var checkpointRequested: Bool
        /// Seconds this worker waited for its batches.
        var dataWait: Double
        /// Seconds this worker waited for the gradient all-reduce after its backward.
        var communicationWait: Double
    }

    /// One optimizer step: K micro-batches forward and backward, the loss agreed and checked,
    /// gradients averaged over workers, the task's optimizer; then the position moves on.
    func step() throws -> StepOutcome {
        let split = epochSplit
        let fraction = split.fraction(samplesDone: split.samplesDone(beforeStep: position.stepInEpoch))
        let learningRate = schedule.learningRate(atFractionalEpoch: Double(position.epoch) + fraction)
        var localLoss = 0.0
        var dataWait = 0.0
        for micro in 0..<config.accumulationSteps {
            guard let batch = try loader.next() else {
                throw TrainingError.dataEndedEarly(epoch: position.epoch, batch: split.firstBatch(ofStep: position.stepInEpoch) + micro)
            }
            dataWait += batch.dataWaitSeconds
            // Only the last micro-batch's backward finishes gradients, so only it overlaps.
            let isLast = micro == config.accumulationSteps - 1
            // The first micro-batch writes the gradients over the last step's; the others add.
            let loss = taskModel.forwardBackward(batch: batch, epoch: position.epoch,
                                                 gradientScale: 1 / Float(config.accumulationSteps),
                                                 overwritesGradients: micro == 0,
                                                 backwardProgress: isLast ? exchange.backwardProgress() : nil)
            localLoss += loss / Double(config.accumulationSteps)
        }
        let communicationWait = try exchange.finish()
        if config.injectNonFiniteLossAtStep == position.step + 1 { localLoss = .nan }

        // One scalar exchange carries the loss and any stop or checkpoint request, so every worker decides alike.
        let stop = StopSignal.isRequested || control?.stopRequested == true
        let checkpointNow = control?.takeCheckpointRequest() == true
        let reduced = try collective.allReduceScalars([localLoss, stop ? 1 : 0, checkpointNow ? 1 : 0])
        let loss = reduced[0] / Double(worldSize)
        guard loss.isFinite else {
            throw TrainingError.nonFiniteLoss(step: position.step, epoch: position.epoch, loss: loss,
                                              lastCheckpoint: lastCheckpoint)
        }
        taskModel.update(learningRate: Float(learningRate))
        try taskModel.synchronise(collective)

        position.step += 1
        position.stepInEpoch += 1
        position.epochLossSum += loss
        position.epochLearningRateSum += learningRate
        position.epochStepCount += 1
        return StepOutcome(loss: loss, learningRate: learningRate, stopRequested: reduced[1] > 0,
                           checkpointRequested: reduced[2] > 0, dataWait: dataWait, communicationWait: communicationWait)
    }

    /// Moves the position to the next epoch; returns the finished epoch's `log.txt` line
    /// (the reference's keys: the epoch's mean rate and loss).
    func finishEpoch() throws -> EpochSummary {
        var record = EpochSummary(epoch: position.epoch,
                                  learningRate: position.epochLearningRateSum / Double(position.epochStepCount),
                                  loss: position.epochLossSum / Double(position.epochStepCount))
        if let result = try evaluate() {
            record.evaluation = result
            record.parameterCount = taskModel.trainableParameterCount
            position.bestTestAccuracy = max(position.bestTestAccuracy, result.top1)
        }
        position.epoch += 1
        position.stepInEpoch = 0
        position.epochLossSum = 0
        position.epochLearningRateSum = 0
        position.epochStepCount = 0
        position.splitStart = 0
        position.splitFirstStep = 0
        position.splitFraction = 0
        return record
    }

    /// With `--knn-every E`, after every E-th epoch and the last: the k-NN score of the
    /// current encoder, every rank computing the features of its share of the images (see
    /// `KNNEvaluation.score`). It reads the parameters only, so training goes on exactly as
    /// without it. Rank 0 logs it and writes it to TensorBoard at the epoch's end.
    func scoreKNN(afterEpoch epoch: Int) throws -> NearestNeighbours.Accuracy? {
        guard let knn, let model, let every = config.knnEvery, every > 0,
              (epoch + 1) % every == 0 || epoch + 1 == config.epochs else { return nil }
        let started = monotonicSeconds()
        let accuracy = try knn.score(model: model, collective: collective)
        log.info(String(format: "epoch %d/%d k-NN (k %d, %d train, %d val images): top1 %.2f %% top5 %.2f %% (%.1f s)",
                        epoch + 1, config.epochs, knn.k, knn.training.count, knn.evaluation.count,
                        accuracy.top1, accuracy.top5, monotonicSeconds() - started))
        // At the epoch's end on train_loss's epoch_1000x axis.
        tensorBoard?.addScalars([("knn_top1", accuracy.top1), ("knn_top5", accuracy.top5)], step: (epoch + 1) * 1000)
        return accuracy
    }

    /// Every rank meets before and after; rank 0 writes the checkpoint and prunes old ones.
    /// A write that fails (a full disk) stops every rank or, with `--on-checkpoint-error
    /// continue`, is a warning; the previous checkpoint stays intact either way.
    func writeCheckpoint(finishedEpoch: EpochSummary?) throws {
        try collective.barrier()
        // Checkpoints hold whole optimizer state (a sharded optimizer's moments gathered), so any run can resume them.
        try taskModel.gatherForCheckpoint(collective)
        defer { taskModel.checkpointWritten() }
        var failure: TrainingError?
        if rank == 0 {
            do { try saveCheckpoint(finishedEpoch: finishedEpoch) } catch let error as TrainingError { failure = error }
        }
        // Every rank learns whether the write failed (this exchange is the closing barrier), so all stop or go on alike.
        guard try collective.allReduceScalars([failure == nil ? 0 : 1])[0] > 0 else { return }
        let reason = failure?.description ?? "rank 0 could not write the checkpoint of step \(position.step) (see its log)"
        guard config.onCheckpointError == .continue else {
            throw TrainingError.checkpointWriteFailed(reason + " (stopping: --on-checkpoint-error stop)")
        }
        log.warn("warning: \(reason); training goes on without it (--on-checkpoint-error continue)")
    }

    /// Rank 0: writes the checkpoint of this step, then reports it (coordinated) or prunes old ones.
    func saveCheckpoint(finishedEpoch: EpochSummary?) throws {
        let split = epochSplit
        let state = CheckpointState(
            step: position.step, epoch: position.epoch, stepInEpoch: position.stepInEpoch,
            nextBatchIndex: split.firstBatch(ofStep: position.stepInEpoch),
            epochSamplesDone: split.samplesDone(beforeStep: position.stepInEpoch), epochSplitStart: position.splitStart,
            epochSplitFraction: position.splitFraction,
            isEpochEnd: finishedEpoch != nil,
            seed: config.seed, worldSize: worldSize, epochLossSum: position.epochLossSum,
            epochLearningRateSum: position.epochLearningRateSum, epochStepCount: position.epochStepCount,
            datasetFingerprint: dataset.fingerprint, datasetCount: dataset.count, config: config, schedule: schedule,
            finishedEpoch: finishedEpoch, classNames: config.trainingTask.classifies ? dataset.classNames : nil,
            bestTestAccuracy: position.bestTestAccuracy >= 0 ? position.bestTestAccuracy : nil)
        let path = try store.write(state: state) { directory in
            try taskModel.save(into: directory, step: state.step, epoch: state.epoch)
        }
        lastCheckpoint = path
        if let evaluation = finishedEpoch?.evaluation, evaluation.top1 >= position.bestTestAccuracy {
            try keepAsBest(path, evaluation: evaluation)
        }
        if let control {
            // The coordinator owns the retention policy; it prunes once it has recorded this one.
            control.checkpointWritten(path: path, step: position.step)
        } else {
            for removed in try store.prune(keepLast: config.keepCheckpoints, keepEveryEpochs: config.keepEveryEpochs) {
                log.info("removed old checkpoint \(removed)")
            }
        }
        log.info("checkpoint \(path)")
    }

    /// The progress line and its metrics record.
    func report(_ interval: ProgressMeter.Interval, loss: Double, learningRate: Double) throws {
        let line = String(format: "epoch %d/%d step %d/%d loss %.4f lr %.3e %.1f img/s data-wait %.1f%% eta %@",
                          position.epoch + 1, config.epochs, position.step, totalSteps, loss, learningRate,
                          interval.imagesPerSecond, 100 * interval.dataWaitShare, formatDuration(interval.etaSeconds))
        log.progress(line, fraction: Double(position.step) / Double(max(1, totalSteps)))
        try tensorBoard?.flush()
        try log.appendMetrics([
            ("step", .integer(position.step)), ("epoch", .integer(position.epoch)), ("loss", .number(loss)),
            ("lr", .number(learningRate)), ("images_per_second", .number(interval.imagesPerSecond)),
            ("data_wait_share", .number(interval.dataWaitShare)), ("seconds_per_step", .number(interval.secondsPerStep)),
            ("communication_wait_seconds", .number(interval.communicationWaitPerStep)),
            ("elapsed_seconds", .number(interval.elapsedSeconds)),
        ])
    }
}

extension TrainingSession {
    /// `--finetune`: the pretrained encoder a fresh fine-tuning or linear-probing run starts from (rank 0;
    /// `restore` broadcasts it). WorkerOptions checked that it is a pretraining checkpoint or weights.
    func startFromPretrained(_ path: String) throws {
        switch taskModel {
        case let probe as LinearProbeTaskModel:
            let pretrained = try TrainedModel.load(path: path, model: config.model)
            probe.startFrom(pretrained.model)
            log.info("starting from the pretrained encoder of \(pretrained.weightsPath)")
        case let fineTuning as FineTuningTaskModel:
            let weights = try TrainedModel.weightsPath(of: path)
            let loaded = try fineTuning.startFrom(weightsPath: weights)
            log.info("starting from the pretrained encoder of \(weights); not in the file (initialised): "
                     + loaded.missing.joined(separator: ", ")
                     + (loaded.interpolatedGrid.map { "; position embedding interpolated from \($0.from)² to \($0.to)² patches" } ?? ""))
        default:
            break
        }
    }

    /// The scoring on `val` of a classifying run (nil for pretraining); logged to TensorBoard by rank 0.
    func evaluate() throws -> EvaluationResult? {
        guard let evaluator, let classifier = taskModel as? any ClassifierTaskModel else { return nil }
        let result = try evaluator.evaluate(classifier, collective: collective)
        tensorBoard?.addScalars([("perf/test_acc1", result.top1), ("perf/test_acc5", result.top5),
                                 ("perf/test_loss", result.loss)], step: position.epoch)
        return result
    }

    /// "val top1 71.25 % top5 98.00 % loss 0.8123 (800 images)".
    static func summary(of result: EvaluationResult, prefix: String) -> String {
        String(format: "%@ top1 %.2f %% top5 %.2f %% loss %.4f (%d images)", prefix, result.top1, result.top5,
               result.loss, result.count)
    }

    /// Copies the checkpoint at `path` to `RUN_DIR/checkpoint-best` (rank 0), replacing the
    /// previous best only once the copy is whole.
    func keepAsBest(_ path: String, evaluation: EvaluationResult) throws {
        let best = config.runDirectory + "/checkpoint-best"
        let temporary = best + ".tmp"
        try TrainingError.reportingSystemCalls {
            if FileSystem.exists(temporary) { try FileSystem.removeTree(temporary) }
            try FileSystem.makeDirectories(temporary)
            for name in try FileSystem.contents(of: path) {
                try FileSystem.writeFile(temporary + "/" + name, bytes: try FileSystem.readFile(path + "/" + name),
                                         synchronize: true)
            }
            if FileSystem.exists(best) { try FileSystem.removeTree(best) }
            try FileSystem.rename(temporary, best)
        }
        log.info(String(format: "best top-1 so far (%.2f %%): %@ copied to %@", evaluation.top1, path, best))
    }
}
