import Collectives
import Data
import Kernels
import Model

/// What the training loop trains, one per task: the model, its optimizer and the files a
/// checkpoint keeps of them. The loop (`TrainingSession`) owns the data, the schedule,
/// the gradient average, the checkpoints and the evaluation; a task model only computes.
protocol TaskModel: AnyObject {
    /// The gradients of the trainable parameters, the vector the workers average.
    var gradients: FloatBuffer { get }
    /// The tensors of `gradients` (the gradient exchange's buckets are whole tensors).
    var gradientTable: ParameterTable { get }
    /// Every buffer rank 0 hands to the others at the start: parameters (frozen ones too),
    /// optimizer state, running statistics. A fresh run gets rank 0's initialisation
    /// everywhere, as DDP's first broadcast does.
    var sharedBuffers: [FloatBuffer] { get }
    /// Optimizer steps taken (PyTorch's `state['step']`), restored on resume.
    var optimizerStep: Int { get set }
    /// Trainable parameters (`n_parameters` of the official log.txt).
    var trainableParameterCount: Int { get }
    /// Forward and backward of one micro-batch: gradients ADDED, scaled by `gradientScale`,
    /// or written over what `gradients` holds when `overwritesGradients` (a step's first
    /// micro-batch: no zeroing beforehand). Returns the micro-batch's loss. A model that can
    /// tells `backwardProgress` where the finished tail of the gradient layout starts (see
    /// `reportsBackwardProgress`); others ignore it.
    func forwardBackward(batch: Batch, epoch: Int, gradientScale: Float, overwritesGradients: Bool,
                         backwardProgress: ((Int) -> Void)?) -> Double
    /// The optimizer step with the averaged gradients.
    func update(learningRate: Float)
    /// What must agree over the workers after a step besides the parameters (the linear
    /// probe's running statistics); nothing for most tasks.
    func synchronise(_ collective: any Collective) throws
    /// Writes the checkpoint's data files into `directory`; returns their names.
    func save(into directory: String, step: Int, epoch: Int) throws -> [String]
    /// Loads what `save` wrote.
    func load(from directory: String) throws
    /// Every rank, before rank 0 saves: whatever the workers hold in parts (a sharded
    /// optimizer's moments) gathered whole.
    func gatherForCheckpoint(_ collective: any Collective) throws
    /// Every rank, after the checkpoint: buffers kept for it may go.
    func checkpointWritten()
    /// Every rank, once `restore` has loaded or broadcast `sharedBuffers`.
    func sharedBuffersDidChange()
    /// Whether `forwardBackward` reports backward progress, so that the gradient exchange
    /// can overlap with it.
    var reportsBackwardProgress: Bool { get }
}

extension TaskModel {
    func gatherForCheckpoint(_ collective: any Collective) throws {}
    func checkpointWritten() {}
    func sharedBuffersDidChange() {}
    var reportsBackwardProgress: Bool { false }
}

/// A task that classifies: logits for evaluation.
protocol ClassifierTaskModel: TaskModel {
    var classCount: Int { get }
    /// The evaluation-mode logits of `images` [N, 3, S, S]: [N, classCount], valid until the next call.
    func logits(images: UnsafePointer<Float>, batchSize: Int) -> UnsafePointer<Float>
}

/// MAE pretraining: the masked reconstruction loss of `MAEModel`, AdamW; with
/// `--shard-optimizer` AdamW over this worker's shard only (ZeRO stage 1), whose checkpoints
/// still hold the whole moments.
final class PretrainingTaskModel: TaskModel {
    let model: MAEModel
    let optimizer: AdamWOptimizer
    let config: RunConfig
    /// Masking noise of one micro-batch, [N, L].
    let noise: FloatBuffer
    /// A sharded optimizer's moments laid out as the whole layout, while a checkpoint is
    /// read, broadcast or written (the optimizer's own buffers when not sharded).
    private var wholeMomentBuffers: (first: FloatBuffer, second: FloatBuffer)?

    /// `shardingOver`: the workers whose shards the optimizer keeps (nil: the whole layout).
    init(config: RunConfig, batchShards: Int, shardingOver collective: (any Collective)? = nil) {
        self.config = config
        let model = MAEModel(config: config.model, seed: config.seed)
        model.batchShards = batchShards
        model.precision = config.productPrecision
        self.model = model
        optimizer = AdamWOptimizer(table: model.table,
                                   shard: collective.map { $0.shard(count: model.table.count, rank: $0.rank) },
                                   beta1: Float(config.beta1), beta2: Float(config.beta2),
                                   epsilon: Float(config.epsilon), weightDecay: Float(config.weightDecay))
        noise = FloatBuffer(count: config.batchSize * config.model.patchCount)
    }

    var gradients: FloatBuffer { model.gradients }
    var gradientTable: ParameterTable { model.table }
    /// The MAE's backward reports each finished block.
    var reportsBackwardProgress: Bool { true }
    var sharedBuffers: [FloatBuffer] {
        let moments = wholeMoments()
        return [model.parameters, moments.first, moments.second]
    }
    var optimizerStep: Int {
        get { optimizer.step }
        set { optimizer.step = newValue }
    }
    var trainableParameterCount: Int { model.table.count }

    /// The moments as the whole layout: the optimizer's own, or (sharded) buffers kept until
    /// the checkpoint or the restore is done.
    private func wholeMoments() -> (first: FloatBuffer, second: FloatBuffer) {
        guard optimizer.isSharded else { return (optimizer.firstMoment, optimizer.secondMoment) }
        if let buffers = wholeMomentBuffers { return buffers }
        let buffers = (first: FloatBuffer(count: model.table.count), second: FloatBuffer(count: model.table.count))
        wholeMomentBuffers = buffers
        return buffers
    }

    private var files: CheckpointFiles {
        let moments = wholeMoments()
        return CheckpointFiles(table: model.table, optimizer: optimizer, firstMoment: moments.first,
                               secondMoment: moments.second, saveWeights: model.saveWeights(path:metadata:),
                               loadWeights: model.loadWeights(path:))
    }

    func forwardBackward(batch: Batch, epoch: Int, gradientScale: Float, overwritesGradients: Bool,
                         backwardProgress: ((Int) -> Void)?) -> Double {
        let patchCount = config.model.patchCount
        let keptCount = config.model.keptCount(maskRatio: config.maskRatio)
        for (row, sampleIndex) in batch.sampleIndices.enumerated() {
            fillMaskingNoise(noise.pointer + row * patchCount, strategy: config.maskingStrategy,
                             gridSize: config.model.gridSize, keptCount: keptCount, seed: config.seed,
                             epoch: epoch, sampleIndex: sampleIndex)
        }
        return Double(model.forwardBackward(images: batch.images.pointer, noise: noise.pointer,
                                            batchSize: batch.sampleIndices.count, maskRatio: config.maskRatio,
                                            normPixLoss: config.normPixLoss, gradientScale: gradientScale,
                                            overwritesGradients: overwritesGradients, backwardProgress: backwardProgress))
    }

    func update(learningRate: Float) {
        optimizer.update(model: model, learningRate: learningRate)  // in bf16, with the rounded copy
    }

    func synchronise(_ collective: any Collective) throws {
        guard optimizer.isSharded else { return }
        try collective.allGather(model.parameters.pointer, count: model.parameters.count)
        model.parametersDidChange()  // the bf16 copy is rounded again once, before the next step
    }

    func save(into directory: String, step: Int, epoch: Int) throws -> [String] {
        try files.save(into: directory, step: step, epoch: epoch)
    }

    func load(from directory: String) throws { try files.load(from: directory) }

    func gatherForCheckpoint(_ collective: any Collective) throws {
        guard optimizer.isSharded else { return }
        let moments = wholeMoments()
        optimizer.copyMoments(intoWhole: moments.first.pointer, moments.second.pointer)
        try collective.allGather(moments.first.pointer, count: moments.first.count)
        try collective.allGather(moments.second.pointer, count: moments.second.count)
    }

    func checkpointWritten() { wholeMomentBuffers = nil }

    func sharedBuffersDidChange() {
        if optimizer.isSharded, let moments = wholeMomentBuffers {
            optimizer.takeMoments(fromWhole: moments.first.pointer, moments.second.pointer)
        }
        wholeMomentBuffers = nil
        model.parametersDidChange()
    }
}
