import Kernels
import Model

/// The data files of a checkpoint of a model trained with AdamW (pretraining's MAE,
/// fine-tuning's classifier): `model.safetensors` (the official state-dict names,
/// strict-loadable by the official PyTorch model) and `optimizer.safetensors` (both AdamW
/// moments under the same names prefixed `exp_avg.` and `exp_avg_sq.`, the step count in
/// the metadata).
struct CheckpointFiles {
    /// The layout of the parameters and the moments.
    let table: ParameterTable
    let optimizer: AdamWOptimizer
    /// The moments as the files hold them, laid out as the whole layout: the optimizer's
    /// own, or (sharded optimizer) buffers the session gathers them into.
    let firstMoment: FloatBuffer
    let secondMoment: FloatBuffer
    /// Writes and strictly reads the model's weights file.
    let saveWeights: (_ path: String, _ metadata: [String: String]) throws -> Void
    let loadWeights: (_ path: String) throws -> Void

    init(model: MAEModel, optimizer: AdamWOptimizer) {
        self.init(table: model.table, optimizer: optimizer, saveWeights: model.saveWeights(path:metadata:),
                  loadWeights: model.loadWeights(path:))
    }

    init(table: ParameterTable, optimizer: AdamWOptimizer,
         saveWeights: @escaping (String, [String: String]) throws -> Void, loadWeights: @escaping (String) throws -> Void) {
        self.init(table: table, optimizer: optimizer, firstMoment: optimizer.firstMoment, secondMoment: optimizer.secondMoment,
                  saveWeights: saveWeights, loadWeights: loadWeights)
    }

    init(table: ParameterTable, optimizer: AdamWOptimizer, firstMoment: FloatBuffer, secondMoment: FloatBuffer,
         saveWeights: @escaping (String, [String: String]) throws -> Void, loadWeights: @escaping (String) throws -> Void) {
        precondition(firstMoment.count == table.count && secondMoment.count == table.count,
                     "checkpoint moments are laid out as the whole layout")
        self.table = table
        self.optimizer = optimizer
        self.firstMoment = firstMoment
        self.secondMoment = secondMoment
        self.saveWeights = saveWeights
        self.loadWeights = loadWeights
    }

    static let modelFileName = "model.safetensors"
    static let optimizerFileName = "optimizer.safetensors"
    static let firstMomentPrefix = "exp_avg."
    static let secondMomentPrefix = "exp_avg_sq."

    /// Writes both files into `directory`; returns their names. Metadata holds no time, so
    /// identical states give identical bytes.
    func save(into directory: String, step: Int, epoch: Int) throws -> [String] {
        try saveWeights(directory + "/" + Self.modelFileName,
                               ["format": "pt", "step": "\(step)", "epoch": "\(epoch)"])
        try table.writeTensors(
            path: directory + "/" + Self.optimizerFileName,
            buffers: [(prefix: Self.firstMomentPrefix, buffer: firstMoment),
                      (prefix: Self.secondMomentPrefix, buffer: secondMoment)],
            metadata: ["step": "\(optimizer.step)", "optimizer": "AdamW",
                       "betas": "\(optimizer.beta1),\(optimizer.beta2)", "eps": "\(optimizer.epsilon)"])
        return [Self.modelFileName, Self.optimizerFileName]
    }

    /// Loads parameters and moments from a verified checkpoint directory.
    func load(from directory: String) throws {
        try loadWeights(directory + "/" + Self.modelFileName)
        let path = directory + "/" + Self.optimizerFileName
        let file = try SafeTensorsFile.read(path: path)
        try table.readTensors(from: file, into: firstMoment, prefix: Self.firstMomentPrefix)
        try table.readTensors(from: file, into: secondMoment, prefix: Self.secondMomentPrefix)
        let known = Set(file.names.filter { $0.hasPrefix(Self.firstMomentPrefix) || $0.hasPrefix(Self.secondMomentPrefix) })
        if let extra = file.names.first(where: { !known.contains($0) }) {
            throw TrainingError.checkpoint("\(path): unexpected tensor '\(extra)' (not an AdamW moment)")
        }
        guard let stepText = file.metadata["step"], let step = Int(stepText), step >= 0 else {
            throw TrainingError.checkpoint("\(path): the metadata has no valid optimizer 'step'")
        }
        optimizer.step = step
    }
}
