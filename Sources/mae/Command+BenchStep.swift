import Dispatch
import Kernels
import Model
import Options
import Training
#if canImport(Glibc)
import Glibc
#endif

/// `mae bench step`: times full training steps (zero gradients, forward and backward,
/// AdamW over every tensor with the recipe's per-tensor weight decay) on random
/// normalised images held in memory, so that only the model's speed is measured.
struct BenchStepCommand: Subcommand {
    static let words = ["bench", "step"]
    static let spec = CommandSpec(
        name: "mae bench step",
        summary: "Times training steps of a model on random images in memory. Runs one warm-up step, "
            + "then K timed steps; the last line is 'img_per_s=X step_ms=Y gflops=Z peak_rss_mb=M'.",
        options: [
            OptionSpec("model", value: "NAME", default: "mae_vit_tiny_patch4",
                       help: "model: " + ModelConfig.knownNames.joined(separator: ", ")),
            OptionSpec("input-size", value: "S", help: "image size in pixels (default: the model's own)"),
            OptionSpec("batch", value: "B", default: "64", help: "images per step"),
            OptionSpec("threads", value: "T", default: "1", help: "threads for matrix products and our kernels"),
            OptionSpec("batch-shards", value: "N", default: "auto",
                       help: "parts of the batch, each run whole by one thread (1: every kernel split over the "
                           + "threads; auto: one per thread if the extra gradient buffers take at most 256 MiB)"),
            OptionSpec("precision", value: "fp32|bf16", default: "fp32", help: Precision.optionHelp),
            OptionSpec("steps", value: "K", default: "5", help: "timed steps after the warm-up step"),
            OptionSpec("mask-ratio", value: "R", default: "0.75", help: "fraction of patches removed"),
            OptionSpec("masking", value: "random|block|grid", default: "random", help: MaskingStrategy.optionHelp),
            .flag("norm-pix-loss", help: "use per-patch normalised pixels as the target"),
            OptionSpec("seed", value: "N", default: "0", help: "seed for the weights, images and masks"),
        ])

    static func run(_ options: ParsedOptions) throws {
        let config = try ModelConfig.named(try options.required("model"),
                                           imageSize: try options.optionalInt("input-size", in: 1...4096))
        let batch = try options.int("batch", in: 1...65_536)
        let threads = try options.int("threads", in: 1...1024)
        let batchShards = options.string("batch-shards") == "auto"
            ? MAEModel.automaticBatchShards(config: config, batchSize: batch, threads: threads)
            : try options.int("batch-shards", in: 1...65_536)
        let steps = try options.int("steps", in: 1...100_000)
        let precision = try WorkerOptions.parsePrecision(try options.required("precision")) {
            OptionError("mae bench step: " + $0)
        }
        let maskRatio = try options.double("mask-ratio", expectation: "a ratio in [0, 1)") {
            $0 >= 0 && $0 < 1 && config.keptCount(maskRatio: $0) >= 1
        }
        let seed = UInt64(try options.int("seed", in: 0...Int.max))
        let normPixLoss = options.flag("norm-pix-loss")
        let maskingText = try options.required("masking")
        guard let masking = MaskingStrategy(rawValue: maskingText) else {
            throw OptionError("mae bench step: --masking expects random, block or grid, got '\(maskingText)'")
        }
        let keptCount = config.keptCount(maskRatio: maskRatio)

        Parallel.setThreads(threads)
        let model = MAEModel(config: config, seed: seed)
        model.batchShards = batchShards
        model.precision = precision
        // OpenBLAS's own count is 1 per product when our pool splits the products.
        print(BLASRuntime.banner + (Parallel.splitsProducts ? " per product, pool threads=\(Parallel.threads)" : "")
              + " \(CPUInfo.summary)")
        if let note = BLASRuntime.presetCoreNote { print("note: " + note) }
        print("model \(config.name) image \(config.imageSize) patch \(config.patchSize) params \(model.table.count) "
              + "batch \(batch) mask_ratio \(maskRatio) masking \(masking.rawValue) norm_pix_loss \(normPixLoss) threads \(threads) batch_shards \(batchShards) precision \(precision.rawValue) steps \(steps)")

        // Random images, standard normal like ImageNet-normalised pixels.
        let pixels = batch * config.channels * config.imageSize * config.imageSize
        let images = FloatBuffer(count: pixels)
        var random = CounterRandom(seed: seed, purpose: .synthesis)
        for index in 0..<pixels { images[index] = Float(random.nextNormal()) }
        let noise = FloatBuffer(count: batch * config.patchCount)
        let firstMoment = FloatBuffer(count: model.table.count), secondMoment = FloatBuffer(count: model.table.count)

        func step(_ number: Int) -> Float {
            for sample in 0..<batch {
                fillMaskingNoise(noise.pointer + sample * config.patchCount, strategy: masking,
                                 gridSize: config.gridSize, keptCount: keptCount, seed: seed, epoch: number,
                                 sampleIndex: sample)
            }
            model.gradients.zero()
            let loss = model.forwardBackward(images: images.pointer, noise: noise.pointer, batchSize: batch,
                                             maskRatio: maskRatio, normPixLoss: normPixLoss)
            for tensor in model.table.tensors {
                adamwUpdate(parameters: model.parameters.pointer + tensor.offset,
                            gradients: model.gradients.pointer + tensor.offset,
                            firstMoment: firstMoment.pointer + tensor.offset,
                            secondMoment: secondMoment.pointer + tensor.offset,
                            count: tensor.count, learningRate: 1.5e-4, beta1: 0.9, beta2: 0.95, epsilon: 1e-8,
                            weightDecay: tensor.decays ? 0.05 : 0, step: number + 1)
            }
            model.parametersDidChange()
            return loss
        }

        let warmUpLoss = step(0)
        print("warm-up step: loss \(warmUpLoss)")
        var stepSeconds: [Double] = [], stepCPUSeconds: [Double] = []
        for number in 1...steps {
            let start = DispatchTime.now().uptimeNanoseconds
            let startCPU = processCPUSeconds()
            let loss = step(number)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let cpuSeconds = processCPUSeconds() - startCPU
            stepSeconds.append(seconds)
            stepCPUSeconds.append(cpuSeconds)
            // CPU time shows how much work a step took even when other processes share the cores.
            print("step \(number): loss \(loss) time \(format(seconds * 1000)) ms cpu \(format(cpuSeconds * 1000)) ms")
            guard loss.isFinite else { throw OptionError("mae bench step: the loss became \(loss) at step \(number)") }
        }
        let meanSeconds = stepSeconds.reduce(0, +) / Double(steps)
        print("cpu_ms_per_step=\(format(stepCPUSeconds.reduce(0, +) / Double(steps) * 1000)) "
              + "fastest_step_ms=\(format(stepSeconds.min()! * 1000))")
        let gflops = config.trainingFlopsPerImage(maskRatio: maskRatio) * Double(batch) / meanSeconds / 1e9
        print("img_per_s=\(format(Double(batch) / meanSeconds)) step_ms=\(format(meanSeconds * 1000)) "
              + "gflops=\(format(gflops)) peak_rss_mb=\(format(peakResidentMegabytes()))")
    }

    /// User plus system CPU time of the whole process so far.
    static func processCPUSeconds() -> Double {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return 0 }
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    /// The process's peak resident set size (getrusage's ru_maxrss is in KiB on Linux).
    static func peakResidentMegabytes() -> Double {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return 0 }
        return Double(usage.ru_maxrss) / 1024
    }

    static func format(_ value: Double) -> String {
        let scaled = (value * 100).rounded() / 100
        return String(scaled)
    }
}
