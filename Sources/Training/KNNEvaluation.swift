import Collectives
import Data
import Kernels
import Model
import System

/// The k-NN score of an encoder on `ROOT/train` → `ROOT/val` (DINO's protocol): every image
/// through the evaluation transform and the encoder with nothing masked, the class token
/// (or the mean of the patch tokens) L2-normalised, `NearestNeighbours.accuracy`. Shared by
/// `mae knn` and the trainer's `--knn-every`.
public struct KNNEvaluation {
    public let training: ImageFolderDataset
    public let evaluation: ImageFolderDataset
    public let k: Int
    public let temperature: Double
    public let globalPool: Bool
    /// Images per forward pass.
    public let batch: Int

    /// Lists both splits; a folder without `val/`, or whose val classes differ from train's,
    /// is a one-line `TrainingError.invalidConfiguration` before any work.
    public init(root: String, k: Int = 20, temperature: Double = 0.07, globalPool: Bool = false, batch: Int = 64) throws {
        precondition(k >= 1 && temperature > 0 && batch >= 1, "k, temperature and batch must be positive")
        guard FileSystem.isDirectory(root + "/val") else {
            throw TrainingError.invalidConfiguration("\(root) has no val/ folder: k-NN classifies ROOT/val by ROOT/train")
        }
        training = try ImageFolderDataset(root: root, split: "train")
        evaluation = try ImageFolderDataset(root: root, split: "val")
        guard training.classNames == evaluation.classNames else {
            throw TrainingError.invalidConfiguration(
                "the classes of \(root)/val (\(evaluation.classNames.count)) differ from those of train "
                + "(\(training.classNames.count)); both need the same class folders")
        }
        self.k = k
        self.temperature = temperature
        self.globalPool = globalPool
        self.batch = batch
    }

    /// The features ([dataset.count, encoderWidth], not normalised) of the images whose index
    /// is `part` modulo `parts`; the other rows stay zero (so that the parts of all ranks
    /// add up, exactly, to all the features). `progress` gets (images done, images in the part).
    public func features(model: MAEModel, of dataset: ImageFolderDataset, part: Int = 0, parts: Int = 1,
                         progress: ((Int, Int) -> Void)? = nil) throws -> FloatBuffer {
        let width = model.config.encoderWidth
        let result = FloatBuffer(count: dataset.count * width)
        result.zero()
        let mine = Array(stride(from: part, to: dataset.count, by: parts))
        var start = 0
        while start < mine.count {
            let indices = Array(mine[start..<min(start + batch, mine.count)])
            let images = try Reconstruction.loadImages(paths: indices.map(dataset.path(of:)), imageSize: model.config.imageSize)
            let computed = FloatBuffer(count: indices.count * width)
            model.encoderFeatures(images: images.pointer, batchSize: indices.count, globalPool: globalPool, into: computed.pointer)
            for (row, index) in indices.enumerated() {
                (result.pointer + index * width).update(from: computed.pointer + row * width, count: width)
            }
            start += indices.count
            progress?(start, mine.count)
        }
        return result
    }

    /// Scores `model`. With a collective of several ranks, each rank computes the features of
    /// every world-size-th image and one sum all-reduce gives every rank all of them; each
    /// rank then gets the same score. `progress` as in `features` (per split name).
    public func score(model: MAEModel, collective: (any Collective)? = nil,
                      progress: ((String, Int, Int) -> Void)? = nil) throws -> NearestNeighbours.Accuracy {
        let width = model.config.encoderWidth
        let part = collective?.rank ?? 0, parts = collective?.worldSize ?? 1
        func allFeatures(_ dataset: ImageFolderDataset, _ name: String) throws -> FloatBuffer {
            let result = try features(model: model, of: dataset, part: part, parts: parts) { progress?(name, $0, $1) }
            if parts > 1, let collective { try collective.allReduceSum(result.pointer, count: result.count) }
            NearestNeighbours.normalizeRows(result.pointer, rows: dataset.count, width: width)
            return result
        }
        let trainingFeatures = try allFeatures(training, "train")
        let evaluationFeatures = try allFeatures(evaluation, "val")
        return NearestNeighbours.accuracy(
            training: trainingFeatures.pointer, trainingLabels: training.labels,
            evaluation: evaluationFeatures.pointer, evaluationLabels: evaluation.labels,
            width: width, classCount: training.classNames.count, k: k, temperature: temperature)
    }
}
