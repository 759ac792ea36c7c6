import Collectives
import Data
import Kernels
import Model

/// Fine-tuning as `main_finetune.py`: `VisionTransformerClassifier` (global pool + fc_norm
/// or the class token) started from a pretrained MAE encoder (position embedding
/// interpolated to the input size, `head.weight` trunc_normal(2e-5)), drop path, AdamW with
/// layer-wise learning-rate decay groups, and soft-target cross-entropy on label-smoothed
/// targets (Mixup/CutMix mix them when enabled).
final class FineTuningTaskModel: ClassifierTaskModel {
    let classifier: VisionTransformerClassifier
    let optimizer: AdamWOptimizer
    let files: CheckpointFiles
    let settings: DownstreamSettings
    let seed: UInt64
    let classCount: Int
    let imageSize: Int
    /// Mixup/CutMix with label smoothing; inactive (alphas 0): label smoothing alone.
    let mixup: MixupSettings
    /// This worker's place, so that each worker mixes its batches with numbers of its own.
    let rank: Int
    /// Soft targets of one micro-batch, [N, classes].
    private var targets = FloatBuffer(count: 0)
    private var evaluationLogits = FloatBuffer(count: 0)

    init(config: RunConfig, settings: DownstreamSettings, classCount: Int, rank: Int) throws {
        self.settings = settings
        self.classCount = classCount
        self.rank = rank
        seed = config.seed
        imageSize = config.model.imageSize
        do {
            mixup = try MixupSettings(mixupAlpha: settings.mixup, cutmixAlpha: settings.cutmix, labelSmoothing: settings.smoothing)
        } catch {
            throw TrainingError.invalidConfiguration("\(error)")
        }
        classifier = VisionTransformerClassifier(config: config.model, numberOfClasses: classCount,
                                                 globalPool: settings.globalPool, dropPath: settings.dropPath, seed: config.seed)
        let groups = layerDecaySettings(table: classifier.table, depth: config.model.encoderDepth,
                                        weightDecay: config.weightDecay, layerDecay: settings.layerDecay)
        optimizer = AdamWOptimizer(table: classifier.table, settings: groups, beta1: Float(config.beta1),
                                   beta2: Float(config.beta2), epsilon: Float(config.epsilon))
        let classifier = classifier
        files = CheckpointFiles(table: classifier.table, optimizer: optimizer,
                                saveWeights: classifier.saveWeights(path:metadata:), loadWeights: classifier.loadWeights(path:))
    }

    var gradients: FloatBuffer { classifier.gradients }
    var gradientTable: ParameterTable { classifier.table }
    var sharedBuffers: [FloatBuffer] { [classifier.parameters, optimizer.firstMoment, optimizer.secondMoment] }
    var optimizerStep: Int {
        get { optimizer.step }
        set { optimizer.step = newValue }
    }
    var trainableParameterCount: Int { classifier.table.count }

    /// Loads the encoder of a pretrained MAE's weights file as `main_finetune.py` does.
    func startFrom(weightsPath: String) throws -> PretrainedEncoderLoad {
        try classifier.loadPretrainedEncoder(from: WeightsFile.read(path: weightsPath))
    }

    /// The batch's targets, its images mixed in place when Mixup/CutMix is on (timm's `Mixup`
    /// in batch mode, a stream per worker and micro-batch of the epoch: epochPosition / batch +
    /// rank, which is batchIndex × world size + rank and takes no stream twice in an epoch, also
    /// across a resume with another world size); otherwise one-hot with label
    /// smoothing (s / C and 1 − s + s / C, what LabelSmoothingCrossEntropy amounts to).
    private func prepareTargets(_ batch: Batch, epoch: Int) {
        let rows = batch.labels.count
        if targets.count != rows * classCount { targets = FloatBuffer(count: rows * classCount) }
        if mixup.isActive {
            mixBatch(images: batch.images.pointer, labels: batch.labels, height: imageSize, width: imageSize,
                     classCount: classCount, settings: mixup, seed: seed, epoch: epoch,
                     stream: batch.epochPosition / rows + rank, targets: targets.pointer)
        } else {
            smoothedTargets(labels: batch.labels, classCount: classCount, smoothing: settings.smoothing, targets: targets.pointer)
        }
    }

    func forwardBackward(batch: Batch, epoch: Int, gradientScale: Float, overwritesGradients: Bool,
                         backwardProgress: ((Int) -> Void)?) -> Double {
        if overwritesGradients { gradients.zero() }
        prepareTargets(batch, epoch: epoch)
        let key = DropPathKey(seed: seed, epoch: epoch, sampleIndices: batch.sampleIndices)
        return Double(classifier.forwardBackward(images: batch.images.pointer, targets: targets.pointer,
                                                 batchSize: batch.sampleIndices.count, gradientScale: gradientScale,
                                                 dropPath: key))
    }

    func logits(images: UnsafePointer<Float>, batchSize: Int) -> UnsafePointer<Float> {
        let values = classifier.logits(images: images, batchSize: batchSize)
        evaluationLogits = FloatBuffer(values)
        return UnsafePointer(evaluationLogits.pointer)
    }

    func update(learningRate: Float) {
        optimizer.update(parameters: classifier.parameters, gradients: classifier.gradients, learningRate: learningRate)
    }

    func synchronise(_ collective: any Collective) throws {}

    func save(into directory: String, step: Int, epoch: Int) throws -> [String] {
        try files.save(into: directory, step: step, epoch: epoch)
    }

    func load(from directory: String) throws { try files.load(from: directory) }
}
