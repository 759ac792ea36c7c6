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
    /// Soft targets of one micro-batch, [N, classes].
    private var targets = FloatBuffer(count: 0)
    private var evaluationLogits = FloatBuffer(count: 0)

    init(config: RunConfig, settings: DownstreamSettings, classCount: Int) {
        self.settings = settings
        self.classCount = classCount
        seed = config.seed
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

    /// The batch's targets: one-hot with label smoothing (timm's Mixup off/on values,
    /// s / C and 1 − s + s / C, which LabelSmoothingCrossEntropy amounts to as well).
    private func fillTargets(_ batch: Batch) {
        let rows = batch.labels.count
        if targets.count != rows * classCount { targets = FloatBuffer(count: rows * classCount) }
        let off = Float(settings.smoothing / Double(classCount))
        let on = Float(1 - settings.smoothing) + off
        for (row, label) in batch.labels.enumerated() {
            let target = targets.pointer + row * classCount
            target.update(repeating: off, count: classCount)
            target[label] = on
        }
    }

    func forwardBackward(batch: Batch, epoch: Int, gradientScale: Float) -> Double {
        fillTargets(batch)
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
