import Foundation
import Kernels
import Model
import Options

extension ReferenceStepCommand {
    /// `--task finetune`: one forward and backward of the fine-tuning classifier on soft
    /// targets, without drop path, written as 'loss', 'logits' and every gradient by name.
    static func runFinetune(_ options: ParsedOptions) throws {
        let config = try modelConfig(options)
        let weightsPath = try options.required("weights")
        let imagesPath = try options.required("images")
        let targetsPath = try options.required("targets")
        let outPath = try options.required("out")
        let threads = try options.int("threads", in: 1 ... 1024)
        let globalPool = !options.flag("cls-token")

        let weights = try SafeTensorsFile.read(path: weightsPath)
        guard let head = weights.tensor(named: "head.weight"), head.shape.count == 2, head.shape[0] >= 1 else {
            throw OptionError("\(weightsPath): no 'head.weight' [classes, \(config.encoderWidth)]; --task finetune needs a classifier's state_dict (models_vit names)")
        }
        let classes = head.shape[0]
        if globalPool && weights.tensor(named: "fc_norm.weight") == nil && weights.tensor(named: "norm.weight") != nil {
            throw OptionError("\(weightsPath): a class-token classifier (norm, no fc_norm); add --cls-token")
        }
        if !globalPool && weights.tensor(named: "fc_norm.weight") != nil {
            throw OptionError("\(weightsPath): a global-pool classifier (fc_norm); drop --cls-token")
        }
        let images = try SafeTensorsFile.read(path: imagesPath)
        let targets = try SafeTensorsFile.read(path: targetsPath)
        let imagesTensor = try onlyTensor(images, preferring: "images")
        let side = config.imageSize
        guard imagesTensor.shape.count == 4, imagesTensor.shape[0] >= 1,
              Array(imagesTensor.shape[1...]) == [config.channels, side, side] else {
            throw OptionError("\(imagesPath): tensor '\(imagesTensor.name)' has shape \(imagesTensor.shape), expected [N, \(config.channels), \(side), \(side)] for \(config.name)")
        }
        let batch = imagesTensor.shape[0]
        let targetsTensor = try onlyTensor(targets, preferring: "targets")
        guard targetsTensor.shape == [batch, classes] else {
            throw OptionError("\(targetsPath): tensor '\(targetsTensor.name)' has shape \(targetsTensor.shape), expected [\(batch), \(classes)] (batch, classes of head.weight)")
        }

        Parallel.setThreads(threads)
        let model = VisionTransformerClassifier(config: config, numberOfClasses: classes, globalPool: globalPool,
                                                dropPath: 0, seed: 0)
        try model.table.readTensors(from: weights, into: model.parameters, prefix: "")
        if let savePath = options.string("save-weights") {
            try model.saveWeights(path: savePath, metadata: ["model": config.name, "source": "mae reference-step"])
        }
        let imageBuffer = try images.floatBuffer(named: imagesTensor.name)
        let targetBuffer = try targets.floatBuffer(named: targetsTensor.name)
        model.gradients.zero()
        let start = DispatchTime.now().uptimeNanoseconds
        let loss = model.forwardBackward(images: imageBuffer.pointer, targets: targetBuffer.pointer, batchSize: batch,
                                         dropPath: nil)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9

        let lossBuffer = FloatBuffer([loss])
        var tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = []
        tensors.append((name: "loss", shape: [1], data: UnsafeBufferPointer(lossBuffer.buffer)))
        tensors.append((name: "logits", shape: [batch, classes],
                        data: UnsafeBufferPointer(start: model.lastLogits, count: batch * classes)))
        for tensor in model.table.tensors {
            tensors.append((name: tensor.name, shape: tensor.shape,
                            data: UnsafeBufferPointer(start: model.gradients.pointer + tensor.offset, count: tensor.count)))
        }
        try withExtendedLifetime(lossBuffer) {
            try SafeTensorsFile.write(path: outPath, tensors: tensors, metadata: [
                "model": config.name, "task": "finetune", "global_pool": String(globalPool),
                "source": "mae reference-step",
            ])
        }
        print("model=\(config.name) task=finetune global_pool=\(globalPool) classes=\(classes) input=\(side) batch=\(batch) loss=\(loss) step_s=\(String(format: "%.3f", seconds)) out=\(outPath)")
    }
}
