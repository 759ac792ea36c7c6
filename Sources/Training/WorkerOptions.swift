import Collectives
import Data
import Foundation
import Kernels
import Model
import Options
import System

/// How this worker joins its job.
public struct DistributedSettings: Sendable, Equatable {
    public enum Backend: String, Sendable { case tcp, mpi }
    /// This worker's rank (-1: whatever MPI assigns).
    public var rank: Int
    /// The number of workers (1 when standalone; -1: whatever MPI reports).
    public var worldSize: Int
    /// "HOST:PORT" of the rendezvous (rank 0 hosts it); nil when standalone.
    public var rendezvous: String?
    public var jobToken: String
    public var generation: Int
    public var backend: Backend
    public var timeoutSeconds: Double
    /// Address the ring listener binds to and announces; nil: the interface that routes
    /// toward the rendezvous host (127.0.0.1 when that is loopback).
    public var listenHost: String? = nil
    /// TCP congestion control of the ring connections (auto: Reno within this machine).
    public var congestionControl: CongestionControl = .automatic
    /// How the TCP backend's ranks move bytes (auto: shared memory when all share this machine).
    public var transport: CollectiveTransport = .automatic

    public init(rank: Int, worldSize: Int, rendezvous: String?, jobToken: String, generation: Int, backend: Backend,
                timeoutSeconds: Double, listenHost: String? = nil, congestionControl: CongestionControl = .automatic,
                transport: CollectiveTransport = .automatic) {
        self.rank = rank
        self.worldSize = worldSize
        self.rendezvous = rendezvous
        self.jobToken = jobToken
        self.generation = generation
        self.backend = backend
        self.timeoutSeconds = timeoutSeconds
        self.listenHost = listenHost
        self.congestionControl = congestionControl
        self.transport = transport
    }

    public static let standalone = DistributedSettings(rank: 0, worldSize: 1, rendezvous: nil, jobToken: "",
                                                       generation: 0, backend: .tcp, timeoutSeconds: 0)
    public var isStandalone: Bool { worldSize == 1 && rendezvous == nil && backend == .tcp }
}

/// The `mae-worker` command line: its declaration, and its translation into a validated
/// `RunConfig` and `DistributedSettings` before any work starts.
public enum WorkerOptions {
    public static let spec = CommandSpec(
        name: "mae-worker",
        summary: "Pretrains a Masked Autoencoder (He et al. 2021) on an image folder, or fine-tunes or linearly probes its "
            + "encoder (--task), as one process of a "
            + "data-parallel job (--rank/--world-size/--rendezvous/--job-token) or alone (--standalone). "
            + "Checkpoints go to RUN_DIR/checkpoints; --resume auto continues exactly where the newest one stopped.",
        options: [
            .flag("standalone", help: "train alone: world size 1, no rendezvous"),
            OptionSpec("rank", value: "R", help: "this worker's rank, 0..<world size (multi-process mode)"),
            OptionSpec("world-size", value: "W", help: "number of workers (multi-process mode)"),
            OptionSpec("rendezvous", value: "HOST:PORT", help: "rendezvous address; rank 0 hosts it (multi-process mode)"),
            OptionSpec("job-token", value: "TOKEN", help: "shared secret every worker of the job presents (multi-process mode)"),
            OptionSpec("coordinator", value: "HOST:PORT",
                       help: "join the run of this mae-coordinator (started by its agent, with --secret-file, --rank, --generation)"),
            OptionSpec("secret-file", value: "PATH", help: "the job secret file of the coordinator's run (with --coordinator)"),
            OptionSpec("local-workers", value: "K", help: "workers on this machine, for --threads auto (with --coordinator)",
                       visible: false),
            OptionSpec("host-name", value: "NAME", help: "this machine's name toward the coordinator (with --coordinator)",
                       visible: false),
            OptionSpec("generation", value: "G", default: "0", help: "restart generation of the job; workers of other generations are refused"),
            OptionSpec("backend", value: "tcp|mpi", default: "tcp",
                       help: "collective backend; mpi (under mpirun, a build with --traits MPI) needs no rendezvous or token"),
            OptionSpec("listen-host", value: "ADDRESS",
                       help: "address this worker's ring listener binds to and announces (default: this machine's address toward the rendezvous host)"),
            OptionSpec("congestion-control", value: "auto|system|NAME", default: "auto",
                       help: CongestionControl.optionHelp),
            OptionSpec("transport", value: "auto|ring|shm|hierarchical", default: "auto",
                       help: "how the tcp backend moves gradients: shm (one shared-memory segment, every worker on this machine), "
                           + "ring (TCP), hierarchical (shared memory inside each machine, a TCP ring per local worker "
                           + "across machines; machines with equally many workers), auto (shm when every worker announced "
                           + "this machine's address, hierarchical when several machines have equally many workers, two or "
                           + "more each, else ring)"),
            OptionSpec("peer-timeout", value: "SECONDS", default: "300",
                       help: "how long a worker waits for its peers, to join and at every collective (a checkpoint write included)"),
            OptionSpec("data", value: "ROOT", help: "image folder: ROOT/train/<class>/<image> or ROOT/<class>/<image> (required)"),
            OptionSpec("model", value: "NAME", default: "mae_vit_base_patch16",
                       help: "model: " + ModelConfig.knownNames.joined(separator: ", ")),
            OptionSpec("model-shape", value: "P,D,DEPTH,HEADS,DD,DDEPTH,DHEADS",
                       help: "a custom model shape instead of --model (tests and experiments)", visible: false),
            OptionSpec("input-size", value: "S", help: "image side in pixels (default: the model's own: 32 for tiny, 64 for small, 224 otherwise)"),
            OptionSpec("task", value: "pretrain|finetune|linprobe", default: "pretrain",
                       help: "what to train: MAE pretraining, fine-tuning of a pretrained encoder with a classification head "
                           + "(main_finetune.py), or a linear probe of the frozen encoder (main_linprobe.py); the last two "
                           + "need ROOT/train and ROOT/val and score val after every epoch"),
            OptionSpec("finetune", value: "PATH",
                       help: "finetune/linprobe: the pretraining checkpoint, run folder, 'mae import' folder or .safetensors "
                           + "whose encoder to start from (without it: a randomly initialised encoder)"),
            OptionSpec("nb-classes", value: "N", help: "finetune/linprobe: the number of classes, only checked against ROOT/train's"),
            .flag("global-pool", help: "finetune/linprobe: the head reads the mean of the patch tokens (default for finetune)"),
            .flag("cls-token", help: "finetune/linprobe: the head reads the class token (default for linprobe)"),
            OptionSpec("drop-path", value: "X", default: "0.1", help: "finetune: stochastic depth rate (linear over the blocks)"),
            OptionSpec("layer-decay", value: "X", default: "0.75", help: "finetune: layer-wise learning-rate decay"),
            OptionSpec("smoothing", value: "X", default: "0.1", help: "finetune: label smoothing"),
            OptionSpec("mixup", value: "X", default: "0", help: "finetune: Mixup alpha (0: off; the ViT-B recipe uses 0.8)"),
            OptionSpec("cutmix", value: "X", default: "0", help: "finetune: CutMix alpha (0: off; the ViT-B recipe uses 1.0)"),
            OptionSpec("reprob", value: "X", default: "0.25", help: "finetune: random erasing probability (pixel mode)"),
            OptionSpec("aa", value: "POLICY", default: "rand-m9-mstd0.5-inc1", help: "finetune: RandAugment policy ('none': off)"),
            OptionSpec("batch-size", value: "B", help: "images per worker per micro-batch (default: "
                           + TrainingTask.defaultsHelp { Double($0.batchSize) } + ")"),
            OptionSpec("epochs", value: "E", help: "epochs to train (default: " + TrainingTask.defaultsHelp { Double($0.epochs) } + ")"),
            OptionSpec("warmup-epochs", value: "W", help: "epochs of linear learning-rate warm-up (default: "
                           + TrainingTask.defaultsHelp(\.warmupEpochs) + ")"),
            OptionSpec("blr", value: "X", help: "base learning rate: lr = blr × effective batch / 256 (default: "
                           + TrainingTask.defaultsHelp(\.baseLearningRate) + ")"),
            OptionSpec("lr", value: "X", help: "peak learning rate, overriding --blr"),
            OptionSpec("min-lr", value: "X", help: "floor of the cosine schedule (default: "
                           + TrainingTask.defaultsHelp(\.minimumLearningRate) + ")"),
            OptionSpec("weight-decay", value: "X", help: "weight decay, not for biases and 1-D tensors: AdamW, LARS for linprobe "
                           + "(default: " + TrainingTask.defaultsHelp(\.weightDecay) + ")"),
            OptionSpec("accum-iter", value: "K", default: "1", help: "micro-batches accumulated per optimizer step"),
            OptionSpec("mask-ratio", value: "R", default: "0.75", help: "share of patches removed, in (0, 1)"),
            OptionSpec("masking", value: "random|block|grid", default: "random", help: MaskingStrategy.optionHelp),
            .flag("norm-pix-loss", help: "normalise each target patch by its mean and variance"),
            OptionSpec("seed", value: "S", default: "0", help: "seed of every random number in the run"),
            OptionSpec("threads", value: "T", default: "auto",
                       help: "compute threads (auto: cores, divided among workers on this machine)"),
            OptionSpec("precision", value: "fp32|bf16", default: "fp32", help: Precision.optionHelp),
            OptionSpec("gradient-wire", value: "fp32|bf16", default: "fp32", help: GradientWire.optionHelp),
            OptionSpec("data-threads", value: "T", default: "auto", help: "image decoding threads (auto: 1 per 4 compute threads, at least 1)"),
            OptionSpec("batch-shards", value: "N", default: "auto",
                       help: "parts of each batch, each run whole by one compute thread (1: every kernel split over the "
                           + "threads; auto: the checkpoint's on resume, else one per thread if the extra gradient buffers take at most 256 MiB, "
                           + "512 MiB where fp32 products are cut by columns only coarsely, on the Haswell family)"),
            OptionSpec("run-dir", value: "DIR", default: "runs/mae", help: "checkpoints, log.txt and metrics.jsonl go here"),
            OptionSpec("checkpoint-every", value: "N", default: "0", help: "also checkpoint every N optimizer steps (0: epoch ends only)"),
            OptionSpec("keep-checkpoints", value: "K", default: "3", help: "keep the newest K checkpoints"),
            OptionSpec("on-checkpoint-error", value: "stop|continue", default: "stop",
                       help: "when a checkpoint cannot be written (a full disk): stop with the error, the previous checkpoint "
                           + "intact (resume with --resume auto), or continue with a warning"),
            OptionSpec("keep-every-epochs", value: "N", default: "0", help: "also keep epoch-end checkpoints of every N-th epoch (0: none)"),
            OptionSpec("resume", value: "auto|PATH", help: "continue from the newest checkpoint in --run-dir (auto; none yet: start fresh) or from PATH; "
                       + "another world size splits the rest of the epoch among the new workers"),
            OptionSpec("max-steps", value: "N", help: "stop after N optimizer steps in total (writes a checkpoint)"),
            OptionSpec("print-every", value: "N", default: "20", help: "progress line and metrics every N optimizer steps"),
            OptionSpec("init-weights", value: "DIR|FILE",
                       help: "start a fresh run from these weights (a folder of mae import, a checkpoint, or a model .safetensors)"),
            OptionSpec("reconstruct-every", value: "N", default: "0",
                       help: "also draw RUN_DIR/reconstructions/epoch-NNNN.png every N epochs (0: at the end of the run only)"),
            OptionSpec("overlap", value: "auto|on|off", default: "auto",
                       help: "average the gradients bucket by bucket while the backward runs (auto: on, except with "
                           + "--shard-optimizer and with MPI beyond 2 workers, where the bits would differ); the same bits as off"),
            OptionSpec("bucket-mb", value: "MB", default: "25",
                       help: "gradient bucket size of --overlap in MiB (tensors are not cut; as DDP's bucket_cap_mb)"),
            .flag("shard-optimizer",
                  help: "ZeRO stage 1: reduce-scatter the gradients, each worker runs AdamW on its shard only (moments "
                      + "for it alone), all-gather the parameters; the same bits as without, checkpoints whole (turns --overlap off)"),
            OptionSpec("knn-every", value: "E", default: "0",
                       help: "score the encoder by k-NN (k 20, temperature 0.07, class token; DATA/val by DATA/train) every E "
                           + "epochs and at the last, into log.txt and TensorBoard as knn_top1/knn_top5 (0: never)"),
            OptionSpec("inject-nonfinite-loss-at-step", value: "N",
                       help: "tests: make the loss of step N NaN", visible: false),
        ])

    /// Validates everything that can be checked without loading data or a model.
    public static func parse(_ options: ParsedOptions) throws -> (RunConfig, DistributedSettings) {
        let command = spec.name
        func fail(_ message: String) -> OptionError { OptionError("\(command): \(message)") }

        let distributed: DistributedSettings
        let multiFlags = ["rank", "world-size", "rendezvous", "job-token"]
        let givenMulti = multiFlags.filter { options.string($0) != nil }
        guard let backend = DistributedSettings.Backend(rawValue: try options.required("backend")) else {
            throw fail("--backend expects tcp or mpi, got '\(options.string("backend") ?? "")'")
        }
        let explicitBackend = options.string("backend") != "tcp"
        if options.flag("standalone") {
            guard givenMulti.isEmpty, !explicitBackend else {
                throw fail("--standalone cannot be combined with "
                           + (givenMulti.map { "--" + $0 } + (explicitBackend ? ["--backend"] : [])).joined(separator: ", "))
            }
            distributed = .standalone
        } else if backend == .mpi {
            // mpirun places the workers; --rank/--world-size, when given, must agree with it.
            let worldSize = try options.optionalInt("world-size", in: 1...65536)
            let rank = try options.optionalInt("rank", in: 0...65535)
            if let rank, let worldSize, rank >= worldSize {
                throw fail("--rank \(rank) must be smaller than --world-size \(worldSize)")
            }
            distributed = DistributedSettings(rank: rank ?? -1, worldSize: worldSize ?? -1, rendezvous: nil, jobToken: "",
                                              generation: try options.int("generation", in: 0...Int(Int32.max)),
                                              backend: .mpi,
                                              timeoutSeconds: try options.double("peer-timeout",
                                                                                 expectation: "a positive number of seconds") { $0 > 0 })
        } else {
            // torchrun's convention: RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in the environment
            // stand for --rank, --world-size and --rendezvous (flags win); MAE_JOB_TOKEN for --job-token.
            let environment = ProcessInfo.processInfo.environment
            let fromEnvironment: [String: String?] = [
                "rank": environment["RANK"], "world-size": environment["WORLD_SIZE"],
                "rendezvous": environment["MASTER_ADDR"].flatMap { host in environment["MASTER_PORT"].map { "\(host):\($0)" } },
                "job-token": environment["MAE_JOB_TOKEN"],
            ]
            func value(_ flag: String) -> String? { options.string(flag) ?? fromEnvironment[flag] ?? nil }
            guard multiFlags.contains(where: { value($0) != nil }) else {
                throw fail("pass --standalone to train alone, or --rank, --world-size, --rendezvous and --job-token to join a job "
                           + "(or RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and MAE_JOB_TOKEN in the environment)")
            }
            let missing = multiFlags.filter { value($0) == nil }
            guard missing.isEmpty else {
                throw fail("multi-process mode also needs " + missing.map { "--" + $0 }.joined(separator: ", ")
                           + (missing.contains("job-token") ? " (or MAE_JOB_TOKEN)" : ""))
            }
            func integer(_ flag: String, in range: ClosedRange<Int>) throws -> Int {
                guard let number = Int(value(flag) ?? ""), range.contains(number) else {
                    throw fail("--\(flag) expects an integer in \(range.lowerBound)...\(range.upperBound), got '\(value(flag) ?? "")'")
                }
                return number
            }
            let worldSize = try integer("world-size", in: 1...65536)
            let rank = try integer("rank", in: 0...65535)
            guard rank < worldSize else { throw fail("--rank \(rank) must be smaller than --world-size \(worldSize)") }
            let address = value("rendezvous") ?? ""
            guard let colon = address.lastIndex(of: ":"), !address[..<colon].isEmpty,
                  let port = Int(address[address.index(after: colon)...]), (1...65535).contains(port) else {
                throw fail("--rendezvous expects HOST:PORT with a port in 1...65535, got '\(address)'")
            }
            let token = value("job-token") ?? ""
            guard !token.isEmpty else { throw fail("--job-token must not be empty") }
            distributed = DistributedSettings(
                rank: rank, worldSize: worldSize, rendezvous: address, jobToken: token,
                generation: try options.int("generation", in: 0...Int(Int32.max)), backend: .tcp,
                timeoutSeconds: try options.double("peer-timeout", expectation: "a positive number of seconds") { $0 > 0 },
                listenHost: options.string("listen-host"),
                congestionControl: try parseCongestionControl(options.required("congestion-control"), fail: fail),
                transport: try CollectiveTransport.parse(options.required("transport"), fail: fail))
        }

        guard let dataRoot = options.string("data") else { throw fail("missing --data ROOT (an image folder)") }
        guard FileSystem.isDirectory(dataRoot) else {
            throw fail("--data \(dataRoot) is not a folder; create one with 'mae synth-data' or point to an ImageNet-style folder")
        }
        let requestedInputSize = try options.optionalInt("input-size", in: 1...8192)
        let model: ModelConfig
        if let shape = options.string("model-shape") {
            let inputSize = requestedInputSize ?? 224
            let numbers = shape.split(separator: ",").compactMap { Int($0) }
            guard numbers.count == 7, numbers.allSatisfy({ $0 > 0 }) else {
                throw fail("--model-shape expects 7 positive integers P,D,DEPTH,HEADS,DD,DDEPTH,DHEADS, got '\(shape)'")
            }
            model = ModelConfig(name: "custom_p\(numbers[0])_d\(numbers[1])", imageSize: inputSize, patchSize: numbers[0],
                                encoderWidth: numbers[1], encoderDepth: numbers[2], encoderHeads: numbers[3],
                                decoderWidth: numbers[4], decoderDepth: numbers[5], decoderHeads: numbers[6])
            do { try model.validate() } catch { throw fail("--model-shape: \(error)") }
        } else {
            do {
                model = try ModelConfig.named(try options.required("model"), imageSize: requestedInputSize)
            } catch {
                throw fail("\(error)")
            }
        }
        let inputSize = model.imageSize
        guard inputSize % model.patchSize == 0 else {
            throw fail("--input-size \(inputSize) must be a multiple of the patch size \(model.patchSize) of \(model.name)")
        }

        let maskRatio = try options.double("mask-ratio", expectation: "a number strictly between 0 and 1") { $0 > 0 && $0 < 1 }
        guard model.keptCount(maskRatio: maskRatio) >= 1 else {
            throw fail("--mask-ratio \(maskRatio) keeps no patch of the \(model.patchCount); lower it")
        }
        guard model.keptCount(maskRatio: maskRatio) < model.patchCount else {
            throw fail("--mask-ratio \(maskRatio) removes no patch of the \(model.patchCount); raise it")
        }
        let maskingText = try options.required("masking")
        guard let masking = MaskingStrategy(rawValue: maskingText) else {
            throw fail("--masking expects random, block or grid, got '\(maskingText)'")
        }
        let threads: Int
        if options.string("threads") == "auto" {
            let cores = ProcessInfo.processInfo.activeProcessorCount
            threads = max(1, cores / max(1, localWorkerCount(distributed)))
        } else {
            threads = try options.int("threads", in: 1...1024)
        }
        let dataThreads = options.string("data-threads") == "auto"
            ? max(1, threads / 4) : try options.int("data-threads", in: 1...256)
        let batchShards = options.string("batch-shards") == "auto" ? nil : try options.int("batch-shards", in: 1...65_536)
        let precision = try parsePrecision(try options.required("precision"), fail: fail)
        let resume = options.string("resume")
        if let resume, resume != "auto", !FileSystem.isDirectory(resume) {
            throw fail("--resume \(resume) is not a checkpoint folder (pass 'auto' or RUN_DIR/checkpoints/step-NNNNNNNN)")
        }
        let taskText = try options.required("task")
        guard let task = TrainingTask(rawValue: taskText) else {
            throw fail("--task expects pretrain, finetune or linprobe, got '\(taskText)'")
        }
        let defaults = task.defaults
        let initWeights = options.string("init-weights")
        if let initWeights, !FileSystem.exists(initWeights) {
            throw fail("--init-weights \(initWeights) does not exist (pass a folder written by 'mae import', a checkpoint, or a .safetensors file)")
        }
        if task != .pretrain, options.string("knn-every") != "0" {
            throw fail("--knn-every scores pretraining; --task \(task.rawValue) scores val after every epoch anyway")
        }
        if initWeights != nil, task != .pretrain {
            throw fail("--init-weights continues pretraining from weights; --task \(task.rawValue) starts from --finetune PATH")
        }
        let downstream = try parseDownstream(options, task: task, model: model, fail: fail)
        if let downstream {
            // The augmentation and Mixup settings say what is wrong with them now, not after the join.
            do {
                _ = try FinetuneAugmentationSettings(randAugment: downstream.autoAugment ?? "none", reprob: downstream.reprob)
                _ = try MixupSettings(mixupAlpha: downstream.mixup, cutmixAlpha: downstream.cutmix, labelSmoothing: downstream.smoothing)
            } catch {
                throw fail("\(error)")
            }
        }
        let epochs = try options.optionalInt("epochs", in: 1...1_000_000) ?? defaults.epochs
        let warmup = try options.optionalDouble("warmup-epochs", expectation: "a number ≥ 0") { $0 >= 0 } ?? defaults.warmupEpochs
        guard warmup < Double(epochs) else {
            throw fail("--warmup-epochs \(formatNumber(warmup)) must be smaller than --epochs \(epochs); "
                       + "pass a smaller --warmup-epochs (e.g. --warmup-epochs \(max(0, epochs / 20)))")
        }

        let overlap: Bool?
        switch try options.required("overlap") {
        case "auto": overlap = nil
        case "on": overlap = true
        case "off": overlap = false
        case let other: throw fail("--overlap expects auto, on or off, got '\(other)'")
        }
        let bucketMegabytes = try options.double("bucket-mb", expectation: "a positive number of MiB") { $0 > 0 && $0 <= 1_048_576 }
        guard let onCheckpointError = CheckpointErrorPolicy(rawValue: try options.required("on-checkpoint-error")) else {
            throw fail("--on-checkpoint-error expects stop or continue, got '\(options.string("on-checkpoint-error") ?? "")'")
        }
        if task != .pretrain {
            // The classifier's products and optimizer have neither yet.
            if precision != .fp32 { throw fail("--precision \(precision.rawValue) is for --task pretrain only; drop it") }
            if options.flag("shard-optimizer") { throw fail("--shard-optimizer is for --task pretrain only; drop it") }
        }

        let batchSize = try options.optionalInt("batch-size", in: 1...1_000_000) ?? defaults.batchSize
        if task == .linprobe, batchSize < 2 {
            throw fail("--task linprobe needs --batch-size of at least 2 (BatchNorm1d normalises by the batch's statistics)")
        }
        var config = RunConfig(
            dataRoot: dataRoot, model: model,
            batchSize: batchSize,
            epochs: epochs, warmupEpochs: warmup,
            baseLearningRate: try options.optionalDouble("blr", expectation: "a number ≥ 0") { $0 >= 0 } ?? defaults.baseLearningRate,
            absoluteLearningRate: try options.optionalDouble("lr", expectation: "a number ≥ 0") { $0 >= 0 },
            minimumLearningRate: try options.optionalDouble("min-lr", expectation: "a number ≥ 0") { $0 >= 0 }
                ?? defaults.minimumLearningRate,
            weightDecay: try options.optionalDouble("weight-decay", expectation: "a number ≥ 0") { $0 >= 0 } ?? defaults.weightDecay,
            beta2: defaults.beta2,
            accumulationSteps: try options.int("accum-iter", in: 1...1_000_000),
            maskRatio: maskRatio, masking: masking, normPixLoss: options.flag("norm-pix-loss"),
            seed: try parseSeed(options.required("seed"), fail: fail),
            threads: threads, dataThreads: dataThreads, batchShards: batchShards, precision: precision,
            runDirectory: try options.required("run-dir"),
            checkpointEvery: try options.int("checkpoint-every", in: 0...Int.max),
            keepCheckpoints: try options.int("keep-checkpoints", in: 1...1_000_000),
            keepEveryEpochs: try options.int("keep-every-epochs", in: 0...1_000_000),
            resume: resume,
            maxSteps: try options.optionalInt("max-steps", in: 1...Int.max),
            printEvery: try options.int("print-every", in: 1...Int.max),
            reconstructEvery: try options.int("reconstruct-every", in: 0...1_000_000),
            knnEvery: try options.int("knn-every", in: 0...1_000_000),
            initWeights: initWeights,
            overlap: overlap, bucketMegabytes: bucketMegabytes,
            shardOptimizer: options.flag("shard-optimizer") ? true : nil,
            gradientWire: try GradientWire.parse(options.required("gradient-wire"), fail: fail),
            task: task, downstream: downstream,
            injectNonFiniteLossAtStep: try options.optionalInt("inject-nonfinite-loss-at-step", in: 1...Int.max))
        config.onCheckpointError = onCheckpointError
        return (config, distributed)
    }

    /// The settings of fine-tuning and linear probing (nil for pretraining), with `--finetune`
    /// checked: a pretraining checkpoint (or weights) of this model.
    static func parseDownstream(_ options: ParsedOptions, task: TrainingTask, model: ModelConfig,
                                fail: (String) -> OptionError) throws -> DownstreamSettings? {
        let downstreamFlags = ["finetune", "nb-classes", "global-pool", "cls-token"].filter { options.string($0) != nil || options.flag($0) }
        guard task != .pretrain else {
            if let first = downstreamFlags.first { throw fail("--\(first) is for --task finetune or linprobe") }
            return nil
        }
        if options.flag("global-pool"), options.flag("cls-token") { throw fail("--global-pool and --cls-token exclude each other") }
        func fraction(_ name: String) throws -> Double {
            try options.double(name, expectation: "a number in [0, 1]") { $0 >= 0 && $0 <= 1 }
        }
        let pretrained = options.string("finetune")
        if let pretrained { try checkPretrained(pretrained, task: task, model: model, fail: fail) }
        let policy = try options.required("aa")
        return DownstreamSettings(
            pretrained: pretrained ?? "",
            // main_finetune.py pools by default, main_linprobe.py reads the class token.
            globalPool: options.flag("global-pool") || (task == .finetune && !options.flag("cls-token")),
            dropPath: try options.double("drop-path", expectation: "a number in [0, 1)") { $0 >= 0 && $0 < 1 }, layerDecay: try fraction("layer-decay"), smoothing: try fraction("smoothing"),
            mixup: try options.double("mixup", expectation: "a number ≥ 0") { $0 >= 0 },
            cutmix: try options.double("cutmix", expectation: "a number ≥ 0") { $0 >= 0 },
            reprob: try fraction("reprob"), autoAugment: policy == "none" ? nil : policy,
            classCount: try options.optionalInt("nb-classes", in: 1...1_000_000))
    }

    /// `--finetune PATH` must hold a pretraining checkpoint or weights of `model`: a
    /// fine-tuned or probed checkpoint, or another model's, is a one-line error.
    static func checkPretrained(_ path: String, task: TrainingTask, model: ModelConfig,
                                fail: (String) -> OptionError) throws {
        guard FileSystem.exists(path) else {
            throw fail("--finetune \(path) does not exist (pass a pretraining checkpoint or run folder, a folder of "
                       + "'mae import', or a .safetensors file)")
        }
        var checkpoint: String?
        if FileSystem.exists(path + "/" + CheckpointStore.stateFileName) {
            checkpoint = path
        } else if FileSystem.isDirectory(path), !FileSystem.exists(path + "/" + WeightsExchange.importedFileName) {
            checkpoint = try CheckpointStore(runDirectory: path, warn: { _ in }).newestValid()?.entry.path
        }
        if let checkpoint {
            let state = try CheckpointStore.verify(checkpoint)
            guard state.config.trainingTask == .pretrain else {
                throw fail("--finetune \(checkpoint) is a \(state.config.trainingTask.rawValue) checkpoint; --task \(task.rawValue) "
                           + "starts from a pretraining one (to continue that run, pass its --run-dir with --resume auto)")
            }
            // Fine-tuning interpolates the position embedding to another input size; everything else must match.
            var saved = state.config.model
            if task == .finetune { saved.imageSize = model.imageSize }
            guard saved == model else {
                throw fail("--finetune \(checkpoint) holds \(describe(state.config.model)), not --model's "
                           + "\(describe(model)); pass --model \(state.config.model.name)")
            }
            return
        }
        do {
            _ = try TrainedModel.load(path: path, model: model)
        } catch {
            throw fail("--finetune \(path): \(error)")
        }
    }

    /// Workers sharing this machine: LOCAL_WORLD_SIZE (torchrun) or OMPI_COMM_WORLD_LOCAL_SIZE
    /// (mpirun) when a launcher sets it, the world size when the rendezvous is on loopback, else 1.
    static func localWorkerCount(_ distributed: DistributedSettings) -> Int {
        let environment = ProcessInfo.processInfo.environment
        for variable in ["LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE"] {
            if let text = environment[variable], let count = Int(text), count > 0 { return count }
        }
        guard let address = distributed.rendezvous else { return 1 }
        let host = address[..<(address.lastIndex(of: ":") ?? address.endIndex)]
        return host == "127.0.0.1" || host == "localhost" || host == "[::1]" ? distributed.worldSize : 1
    }

    /// `--congestion-control`'s value; `fail` makes the error for anything else.
    public static func parseCongestionControl(_ text: String, fail: (String) -> OptionError) throws -> CongestionControl {
        guard let choice = CongestionControl(parsing: text) else {
            throw fail("--congestion-control expects auto, system or an algorithm's name such as reno, got '\(text)'")
        }
        return choice
    }

    /// `--precision`: fp32 or bf16, which this CPU must be able to run (one line naming
    /// the missing instruction set otherwise).
    public static func parsePrecision(_ text: String, fail: (String) -> OptionError) throws -> Precision {
        guard let precision = Precision(rawValue: text) else {
            throw fail("--precision expects fp32 or bf16, got '\(text)'")
        }
        if let reason = precision.unsupportedReason { throw fail(reason) }
        return precision
    }

    static func parseSeed(_ text: String, fail: (String) -> OptionError) throws -> UInt64 {
        guard let seed = UInt64(text) else { throw fail("--seed expects a non-negative integer, got '\(text)'") }
        return seed
    }
}
