import Collectives
import Data
import Foundation
import Kernels
import Model

/// Linear probing as `main_linprobe.py`: the pretrained encoder frozen, its features
/// (the class token after the encoder's norm, or with `--global-pool` the mean of the patch
/// tokens through a LayerNorm of weight 1 and bias 0, the frozen fresh `fc_norm` of the
/// official model) into `BatchNorm1d(affine=False, eps=1e-6)` and a linear head
/// (`trunc_normal_(std=0.01)`, bias 0), cross-entropy with hard labels, LARS.
///
/// The features of a micro-batch are computed once, without a backward pass through the
/// encoder; only the head's gradients are averaged over the workers. BatchNorm normalises
/// with each worker's own batch statistics in training (the official probe has no SyncBN);
/// its running statistics, which evaluation uses, are rank 0's after every step, as DDP's
/// default `broadcast_buffers=True` makes them (each forward broadcasts rank 0's buffers).
final class LinearProbeTaskModel: ClassifierTaskModel {
    let encoder: MAEModel
    let globalPool: Bool
    let classCount: Int
    let width: Int
    /// head.1.weight [classes, width] then head.1.bias [classes].
    let parameters: FloatBuffer
    let gradients: FloatBuffer
    /// The layout of `parameters` and `gradients`.
    var gradientTable: ParameterTable {
        ParameterTable(entries: [(name: Self.weightName, shape: [classCount, width]), (name: Self.biasName, shape: [classCount])])
    }
    /// head.0.running_mean [width] then head.0.running_var [width].
    let runningStatistics: FloatBuffer
    let optimizer: LARSOptimizer
    /// Work buffers for the last batch size: features, normalised features, logits, their gradient.
    private var rows = 0
    private var features = FloatBuffer(count: 0), normalised = FloatBuffer(count: 0)
    private var logitBuffer = FloatBuffer(count: 0), logitGradient = FloatBuffer(count: 0)
    private let batchMean: FloatBuffer, batchReciprocalStd: FloatBuffer
    private let ones: FloatBuffer, zeros: FloatBuffer

    static let encoderFileName = "encoder.safetensors"
    static let headFileName = "head.safetensors"
    static let optimizerFileName = "optimizer.safetensors"
    static let weightName = "head.1.weight", biasName = "head.1.bias"
    static let runningMeanName = "head.0.running_mean", runningVarianceName = "head.0.running_var"
    static let momentumPrefix = "mu."
    /// The CounterRandom stream of the head's initialisation (past the MAE table's tensor numbers).
    static let headInitialisationIndex = 1 << 20

    init(config: RunConfig, settings: DownstreamSettings, classCount: Int) {
        encoder = MAEModel(config: config.model, seed: config.seed)
        globalPool = settings.globalPool
        self.classCount = classCount
        width = config.model.encoderWidth
        parameters = FloatBuffer(count: classCount * width + classCount)
        gradients = FloatBuffer(count: parameters.count)
        runningStatistics = FloatBuffer(count: 2 * width)
        (runningStatistics.pointer + width).update(repeating: 1, count: width)
        // timm's trunc_normal_(std=0.01) cuts at ±2 (absolute), which std 0.01 never reaches in practice; redraw if it does.
        var random = CounterRandom(seed: config.seed, purpose: .initialisation, index: Self.headInitialisationIndex)
        for index in 0..<(classCount * width) {
            var value = 0.01 * random.nextNormal()
            while abs(value) > 2 { value = 0.01 * random.nextNormal() }
            parameters.pointer[index] = Float(value)
        }
        optimizer = LARSOptimizer(tensors: [.init(offset: 0, count: classCount * width, adapts: true),
                                            .init(offset: classCount * width, count: classCount, adapts: false)],
                                  weightDecay: Float(config.weightDecay))
        batchMean = FloatBuffer(count: width)
        batchReciprocalStd = FloatBuffer(count: width)
        ones = FloatBuffer(Array(repeating: 1, count: width))
        zeros = FloatBuffer(count: width)
    }

    var sharedBuffers: [FloatBuffer] { [encoder.parameters, parameters, runningStatistics, optimizer.momentumBuffer] }
    var optimizerStep: Int {
        get { optimizer.step }
        set { optimizer.step = newValue }
    }
    var trainableParameterCount: Int { parameters.count }

    /// Takes the encoder of a pretrained MAE (the decoder is never used).
    func startFrom(_ pretrained: MAEModel) {
        encoder.parameters.pointer.update(from: pretrained.parameters.pointer, count: encoder.parameters.count)
    }

    private func prepare(rows count: Int) {
        guard count != rows else { return }
        rows = count
        features = FloatBuffer(count: count * width)
        normalised = FloatBuffer(count: count * width)
        logitBuffer = FloatBuffer(count: count * classCount)
        logitGradient = FloatBuffer(count: count * classCount)
    }

    /// The frozen encoder's features of `images` into `features`.
    private func computeFeatures(_ images: UnsafePointer<Float>, batchSize: Int) {
        if globalPool {
            encoder.encoderPatchMean(images: images, batchSize: batchSize, into: normalised.pointer)
            let mean = FloatBuffer(count: batchSize), reciprocal = FloatBuffer(count: batchSize)
            layerNormForward(output: features.pointer, mean: mean.pointer, reciprocalStd: reciprocal.pointer,
                             input: normalised.pointer, weight: ones.pointer, bias: zeros.pointer, rows: batchSize, width: width)
        } else {
            encoder.encoderFeatures(images: images, batchSize: batchSize, globalPool: false, into: features.pointer)
        }
    }

    private func headForward(rows count: Int) {
        let weight = UnsafePointer(parameters.pointer), bias = weight + classCount * width
        linearForward(output: logitBuffer.pointer, input: normalised.pointer, weight: weight, bias: bias,
                      rows: count, inFeatures: width, outFeatures: classCount)
    }

    func forwardBackward(batch: Batch, epoch: Int, gradientScale: Float, overwritesGradients: Bool,
                         backwardProgress: ((Int) -> Void)?) -> Double {
        if overwritesGradients { gradients.zero() }
        let count = batch.sampleIndices.count
        prepare(rows: count)
        computeFeatures(batch.images.pointer, batchSize: count)
        batchNormForwardTraining(output: normalised.pointer, mean: batchMean.pointer, reciprocalStd: batchReciprocalStd.pointer,
                                 input: features.pointer, runningMean: runningStatistics.pointer,
                                 runningVariance: runningStatistics.pointer + width, rows: count, width: width)
        headForward(rows: count)
        let loss = crossEntropyHardLabels(logits: logitBuffer.pointer, labels: batch.labels, rows: count, classes: classCount,
                                          gradient: logitGradient.pointer, gradientScale: gradientScale)
        linearBackward(inputGradient: nil, weightGradient: gradients.pointer,
                       biasGradient: gradients.pointer + classCount * width, outputGradient: logitGradient.pointer,
                       input: normalised.pointer, weight: parameters.pointer, rows: count, inFeatures: width,
                       outFeatures: classCount)
        return loss
    }

    func logits(images: UnsafePointer<Float>, batchSize: Int) -> UnsafePointer<Float> {
        prepare(rows: batchSize)
        computeFeatures(images, batchSize: batchSize)
        batchNormForwardEvaluation(output: normalised.pointer, input: features.pointer, runningMean: runningStatistics.pointer,
                                   runningVariance: runningStatistics.pointer + width, rows: batchSize, width: width)
        headForward(rows: batchSize)
        return UnsafePointer(logitBuffer.pointer)
    }

    func update(learningRate: Float) {
        optimizer.update(parameters: parameters, gradients: gradients, learningRate: learningRate)
    }

    func synchronise(_ collective: any Collective) throws {
        if collective.worldSize > 1 {
            try collective.broadcast(runningStatistics.pointer, count: runningStatistics.count, root: 0)
        }
    }

    /// The head's tensors under the official names, from `buffer` (parameters or momentum).
    private func headTensors(_ buffer: FloatBuffer, prefix: String = "")
        -> [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] {
        [(prefix + Self.weightName, [classCount, width], UnsafeBufferPointer(start: buffer.pointer, count: classCount * width)),
         (prefix + Self.biasName, [classCount], UnsafeBufferPointer(start: buffer.pointer + classCount * width, count: classCount))]
    }

    func save(into directory: String, step: Int, epoch: Int) throws -> [String] {
        let metadata = ["format": "pt", "step": "\(step)", "epoch": "\(epoch)"]
        // The frozen encoder goes into every checkpoint too, so that one is whole without --finetune's file.
        try encoder.saveWeights(path: directory + "/" + Self.encoderFileName, metadata: metadata)
        let statistics: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = [
            (Self.runningMeanName, [width], UnsafeBufferPointer(start: runningStatistics.pointer, count: width)),
            (Self.runningVarianceName, [width], UnsafeBufferPointer(start: runningStatistics.pointer + width, count: width)),
        ]
        try SafeTensorsFile.write(path: directory + "/" + Self.headFileName, tensors: statistics + headTensors(parameters),
                                  metadata: metadata)
        try SafeTensorsFile.write(path: directory + "/" + Self.optimizerFileName,
                                  tensors: headTensors(optimizer.momentumBuffer, prefix: Self.momentumPrefix),
                                  metadata: ["step": "\(optimizer.step)", "optimizer": "LARS",
                                             "momentum": "\(optimizer.momentum)", "trust_coefficient": "\(optimizer.trustCoefficient)"])
        return [Self.encoderFileName, Self.headFileName, Self.optimizerFileName]
    }

    func load(from directory: String) throws {
        try encoder.loadWeights(path: directory + "/" + Self.encoderFileName)
        let head = try SafeTensorsFile.read(path: directory + "/" + Self.headFileName)
        try copy(from: head, Self.runningMeanName, into: runningStatistics.pointer, count: width)
        try copy(from: head, Self.runningVarianceName, into: runningStatistics.pointer + width, count: width)
        try copy(from: head, Self.weightName, into: parameters.pointer, count: classCount * width)
        try copy(from: head, Self.biasName, into: parameters.pointer + classCount * width, count: classCount)
        let path = directory + "/" + Self.optimizerFileName
        let moments = try SafeTensorsFile.read(path: path)
        try copy(from: moments, Self.momentumPrefix + Self.weightName, into: optimizer.momentumBuffer.pointer,
                 count: classCount * width)
        try copy(from: moments, Self.momentumPrefix + Self.biasName,
                 into: optimizer.momentumBuffer.pointer + classCount * width, count: classCount)
        guard let stepText = moments.metadata["step"], let step = Int(stepText), step >= 0 else {
            throw TrainingError.checkpoint("\(path): the metadata has no valid optimizer 'step'")
        }
        optimizer.step = step
    }

    private func copy(from file: SafeTensorsFile, _ name: String, into destination: UnsafeMutablePointer<Float>,
                      count: Int) throws {
        guard let tensor = file.tensor(named: name), tensor.elementCount == count else {
            throw TrainingError.checkpoint("\(file.path): no tensor '\(name)' of \(count) values (not a linear probe of "
                                           + "this model and these \(classCount) classes?)")
        }
        try file.copyFloats(named: name, into: destination, count: count)
    }
}
