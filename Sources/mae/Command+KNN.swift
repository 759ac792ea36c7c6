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
        let scoring: KNNEvaluation
        do {
            scoring = try KNNEvaluation(root: root, k: k, temperature: temperature, globalPool: globalPool, batch: batch)
        } catch let error as TrainingError { throw fail("\(error)") }
        let model: MAEModel, source: String
        if let checkpoint {
            let trained = try TrainedModel.load(path: checkpoint, model: fileModel)
            (model, source) = (trained.model, "from " + trained.weightsPath)
        } else {
            guard let fileModel else { throw fail("pass --checkpoint PATH, or --model NAME for a freshly initialised model") }
            let seed = try options.int("seed", in: 0...Int.max)
            (model, source) = (MAEModel(config: fileModel, seed: UInt64(seed)), "freshly initialised (seed \(seed))")
        }
        Parallel.setThreads(threads)
        print("model \(model.config.name) \(source); \(scoring.training.count) train and \(scoring.evaluation.count) val "
              + "images, \(scoring.training.classNames.count) classes; features: \(globalPool ? "mean of the patch tokens" : "class token")")
        // A line per tenth of the work, plain text (no redrawing): logs stay readable.
        var reported = 0
        let accuracy = try scoring.score(model: model) { name, done, total in
            if done == 0 || done == total || done * 10 / total > reported { print("features \(name): \(done) of \(total)") }
            reported = done == total ? 0 : done * 10 / total
        }
        print("k \(k), temperature \(temperature)")
        print("top1=\(format(accuracy.top1)) top5=\(format(accuracy.top5))")
    }

    static func format(_ value: Double) -> String { String((value * 100).rounded() / 100) }
}
