import Data
import Kernels
import Model
import Options
import System
import Training
#if canImport(Glibc)
import Glibc
#endif

/// `mae knn`: the quick check of a representation during pretraining. The encoder's
/// features of every training and validation image (evaluation transform, nothing
/// masked), L2-normalised, and DINO's weighted k-nearest-neighbour classifier.
struct KNNCommand: Subcommand {
    static let words = ["knn"]
    static let spec = CommandSpec(
        name: "mae knn",
        summary: "Scores a model's encoder by weighted k-nearest neighbours (as DINO reports it): features of "
            + "ROOT/train and ROOT/val, L2-normalised, each val image classified by the votes of its k most similar "
            + "train images. The last line is 'top1=X top5=Y' (percent).",
        options: [
            OptionSpec("checkpoint", value: "PATH",
                       help: "a checkpoint folder, a run folder (its newest checkpoint) or a model .safetensors file; "
                           + "without it, a freshly initialised --model (the baseline a pretrained encoder should beat)"),
            OptionSpec("model", value: "NAME", help: "the model a .safetensors file holds, or the one to initialise: "
                           + ModelConfig.knownNames.joined(separator: ", ")),
            OptionSpec("seed", value: "N", default: "0", help: "seed of a freshly initialised model"),
            OptionSpec("data", value: "ROOT", help: "an ImageNet-style folder with train/ and val/ of the same classes (required)"),
            OptionSpec("k", value: "K", default: "20", help: "neighbours that vote"),
            OptionSpec("temperature", value: "T", default: "0.07", help: "a vote weighs exp(similarity / T)"),
            .flag("global-pool", help: "features: the mean of the patch tokens instead of the class token"),
            OptionSpec("batch", value: "B", default: "64", help: "images per forward pass"),
            OptionSpec("threads", value: "T", default: "all cores", help: "threads for the encoder"),
        ])

    static func run(_ options: ParsedOptions) throws {
        func fail(_ message: String) -> OptionError { OptionError("\(spec.name): \(message)") }
        let checkpoint = options.string("checkpoint")
        let root = try options.required("data")
        let k = try options.int("k", in: 1...100_000)
        let temperature = try options.double("temperature", expectation: "a number > 0") { $0 > 0 }
        let batch = try options.int("batch", in: 1...4096)
        let threads = options.string("threads") == "all cores"
            ? max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) : try options.int("threads", in: 1...1024)
        let globalPool = options.flag("global-pool")
        let fileModel = try options.string("model").map { name -> ModelConfig in
            do { return try ModelConfig.named(name) } catch let error as ModelError { throw fail("\(error)") }
        }

        // The data first: a folder without val, or with other classes there, is an error before any work.
        guard FileSystem.isDirectory(root + "/val") else {
            throw fail("\(root) has no val/ folder: k-NN classifies ROOT/val by ROOT/train")
        }
        let training = try ImageFolderDataset(root: root, split: "train")
        let evaluation = try ImageFolderDataset(root: root, split: "val")
        guard training.classNames == evaluation.classNames else {
            throw fail("the classes of \(root)/val (\(evaluation.classNames.count)) differ from those of train "
                       + "(\(training.classNames.count)); both need the same class folders")
        }
        let model: MAEModel, source: String
        if let checkpoint {
            let trained = try TrainedModel.load(path: checkpoint, model: fileModel)
            (model, source) = (trained.model, "from " + trained.weightsPath)
        } else {
            guard let fileModel else { throw fail("pass --checkpoint PATH, or --model NAME for a freshly initialised model") }
            let seed = try options.int("seed", in: 0...Int.max)
            (model, source) = (MAEModel(config: fileModel, seed: UInt64(seed)), "freshly initialised (seed \(seed))")
        }
        let width = model.config.encoderWidth
        Parallel.setThreads(threads)
        print("model \(model.config.name) \(source); \(training.count) train and \(evaluation.count) val "
              + "images, \(training.classNames.count) classes; features: \(globalPool ? "mean of the patch tokens" : "class token")")

        func features(of dataset: ImageFolderDataset, name: String) throws -> FloatBuffer {
            let result = FloatBuffer(count: dataset.count * width)
            var start = 0, reported = 0
            while start < dataset.count {
                let count = min(batch, dataset.count - start)
                let images = try Reconstruction.loadImages(paths: (start..<(start + count)).map(dataset.path(of:)),
                                                           imageSize: model.config.imageSize)
                model.encoderFeatures(images: images.pointer, batchSize: count, globalPool: globalPool,
                                      into: result.pointer + start * width)
                start += count
                // A line per tenth of the work, plain text (no redrawing): logs stay readable.
                if start * 10 / dataset.count > reported || start == dataset.count {
                    reported = start * 10 / dataset.count
                    print("features \(name): \(start) of \(dataset.count)")
                }
            }
            NearestNeighbours.normalizeRows(result.pointer, rows: dataset.count, width: width)
            return result
        }
        let trainingFeatures = try features(of: training, name: "train")
        let evaluationFeatures = try features(of: evaluation, name: "val")
        let accuracy = NearestNeighbours.accuracy(
            training: trainingFeatures.pointer, trainingLabels: training.labels,
            evaluation: evaluationFeatures.pointer, evaluationLabels: evaluation.labels,
            width: width, classCount: training.classNames.count, k: k, temperature: temperature)
        print("k \(k), temperature \(temperature)")
        print("top1=\(format(accuracy.top1)) top5=\(format(accuracy.top5))")
    }

    static func format(_ value: Double) -> String { String((value * 100).rounded() / 100) }
}
