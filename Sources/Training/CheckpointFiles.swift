import Kernels
import Model

/// The data files of a checkpoint: `model.safetensors` (the official state-dict names,
/// strict-loadable by the official PyTorch model) and `optimizer.safetensors` (both AdamW
/// moments under the same names prefixed `exp_avg.` and `exp_avg_sq.`, the step count in
/// the metadata).
struct CheckpointFiles {
    let model: MAEModel
    let optimizer: AdamWOptimizer

    static let modelFileName = "model.safetensors"
    static let optimizerFileName = "optimizer.safetensors"
    static let firstMomentPrefix = "exp_avg."
    static let secondMomentPrefix = "exp_avg_sq."

    /// Writes both files into `directory`; returns their names. Metadata holds no time, so
    /// identical states give identical bytes.
    func save(into directory: String, state: CheckpointState) throws -> [String] {
        try model.saveWeights(path: directory + "/" + Self.modelFileName,
                              metadata: ["format": "pt", "step": "\(state.step)", "epoch": "\(state.epoch)"])
        var tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = []
        for (prefix, buffer) in [(Self.firstMomentPrefix, optimizer.firstMoment), (Self.secondMomentPrefix, optimizer.secondMoment)] {
            for tensor in model.table.tensors {
                tensors.append((prefix + tensor.name, tensor.shape,
                                UnsafeBufferPointer(start: buffer.pointer + tensor.offset, count: tensor.count)))
            }
        }
        try SafeTensorsFile.write(path: directory + "/" + Self.optimizerFileName, tensors: tensors,
                                  metadata: ["step": "\(optimizer.step)", "optimizer": "AdamW",
                                             "betas": "\(optimizer.beta1),\(optimizer.beta2)", "eps": "\(optimizer.epsilon)"])
        return [Self.modelFileName, Self.optimizerFileName]
    }

    /// Loads parameters and moments from a verified checkpoint directory.
    func load(from directory: String, state: CheckpointState) throws {
        try model.loadWeights(path: directory + "/" + Self.modelFileName)
        let path = directory + "/" + Self.optimizerFileName
        let file = try SafeTensorsFile.read(path: path)
        for (prefix, buffer) in [(Self.firstMomentPrefix, optimizer.firstMoment), (Self.secondMomentPrefix, optimizer.secondMoment)] {
            for tensor in model.table.tensors {
                let name = prefix + tensor.name
                guard let stored = file.tensor(named: name) else {
                    throw TrainingError.checkpoint("\(path): missing tensor '\(name)'")
                }
                guard stored.shape == tensor.shape else {
                    throw TrainingError.checkpoint("\(path): tensor '\(name)' has shape \(stored.shape), expected \(tensor.shape)")
                }
                try file.copyFloats(named: name, into: buffer.pointer + tensor.offset, count: tensor.count)
            }
        }
        let expected = Set(model.table.tensors.flatMap { [Self.firstMomentPrefix + $0.name, Self.secondMomentPrefix + $0.name] })
        if let extra = file.names.first(where: { !expected.contains($0) }) {
            throw TrainingError.checkpoint("\(path): unexpected tensor '\(extra)' (a checkpoint of another model?)")
        }
        guard let stepText = file.metadata["step"], let step = Int(stepText), step >= 0 else {
            throw TrainingError.checkpoint("\(path): the metadata has no valid optimizer 'step'")
        }
        optimizer.step = step
    }
}
