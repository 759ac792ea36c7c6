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
    /// Every buffer rank 0 hands to the others at the start: parameters (frozen ones too),
    /// optimizer state, running statistics. A fresh run gets rank 0's initialisation
    /// everywhere, as DDP's first broadcast does.
    var sharedBuffers: [FloatBuffer] { get }
    /// Optimizer steps taken (PyTorch's `state['step']`), restored on resume.
    var optimizerStep: Int { get set }
    /// Trainable parameters (`n_parameters` of the official log.txt).
    var trainableParameterCount: Int { get }
    /// Forward and backward of one micro-batch: gradients ADDED, scaled by `gradientScale`.
    /// Returns the micro-batch's loss.
    func forwardBackward(batch: Batch, epoch: Int, gradientScale: Float) -> Double
    /// The optimizer step with the averaged gradients.
    func update(learningRate: Float)
    /// What must agree over the workers after a step besides the parameters (the linear
    /// probe's running statistics); nothing for most tasks.
    func synchronise(_ collective: any Collective) throws
    /// Writes the checkpoint's data files into `directory`; returns their names.
    func save(into directory: String, step: Int, epoch: Int) throws -> [String]
    /// Loads what `save` wrote.
    func load(from directory: String) throws
}

/// A task that classifies: logits for evaluation.
protocol ClassifierTaskModel: TaskModel {
    var classCount: Int { get }
    /// The evaluation-mode logits of `images` [N, 3, S, S]: [N, classCount], valid until the next call.
    func logits(images: UnsafePointer<Float>, batchSize: Int) -> UnsafePointer<Float>
}

/// MAE pretraining: the masked reconstruction loss of `MAEModel`, AdamW.
final class PretrainingTaskModel: TaskModel {
    let model: MAEModel
    let optimizer: AdamWOptimizer
    let files: CheckpointFiles
    let config: RunConfig
    /// Masking noise of one micro-batch, [N, L].
    let noise: FloatBuffer

    init(config: RunConfig, batchShards: Int) {
        self.config = config
        model = MAEModel(config: config.model, seed: config.seed)
        model.batchShards = batchShards
        optimizer = AdamWOptimizer(table: model.table, beta1: Float(config.beta1), beta2: Float(config.beta2),
                                   epsilon: Float(config.epsilon), weightDecay: Float(config.weightDecay))
        files = CheckpointFiles(model: model, optimizer: optimizer)
        noise = FloatBuffer(count: config.batchSize * config.model.patchCount)
    }

    var gradients: FloatBuffer { model.gradients }
    var sharedBuffers: [FloatBuffer] { [model.parameters, optimizer.firstMoment, optimizer.secondMoment] }
    var optimizerStep: Int {
        get { optimizer.step }
        set { optimizer.step = newValue }
    }
    var trainableParameterCount: Int { model.table.count }

    func forwardBackward(batch: Batch, epoch: Int, gradientScale: Float) -> Double {
        let patchCount = config.model.patchCount
        let keptCount = config.model.keptCount(maskRatio: config.maskRatio)
        for (row, sampleIndex) in batch.sampleIndices.enumerated() {
            fillMaskingNoise(noise.pointer + row * patchCount, strategy: config.maskingStrategy,
                             gridSize: config.model.gridSize, keptCount: keptCount, seed: config.seed,
                             epoch: epoch, sampleIndex: sampleIndex)
        }
        return Double(model.forwardBackward(images: batch.images.pointer, noise: noise.pointer,
                                            batchSize: batch.sampleIndices.count, maskRatio: config.maskRatio,
                                            normPixLoss: config.normPixLoss, gradientScale: gradientScale))
    }

    func update(learningRate: Float) {
        optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: learningRate)
    }

    func synchronise(_ collective: any Collective) throws {}

    func save(into directory: String, step: Int, epoch: Int) throws -> [String] {
        try files.save(into: directory, step: step, epoch: epoch)
    }

    func load(from directory: String) throws { try files.load(from: directory) }
}
