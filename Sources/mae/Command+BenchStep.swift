import Collectives
import Dispatch
import Foundation
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
/// With `--world N`, N processes train together as the workers do (the gradient
/// all-reduce after or overlapped with the backward), and the exposed communication,
/// the time a step waits for the all-reduce once its backward is done, is measured.
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
                           + "threads; auto: one per thread if the extra gradient buffers take at most 256 MiB, 512 MiB where fp32 "
                           + "products are cut by columns only coarsely, on the Haswell family)"),
            OptionSpec("precision", value: "fp32|bf16", default: "fp32", help: Precision.optionHelp),
            OptionSpec("steps", value: "K", default: "5", help: "timed steps after the warm-up step"),
            OptionSpec("mask-ratio", value: "R", default: "0.75", help: "fraction of patches removed"),
            OptionSpec("masking", value: "random|block|grid", default: "random", help: MaskingStrategy.optionHelp),
            .flag("norm-pix-loss", help: "use per-patch normalised pixels as the target"),
            OptionSpec("seed", value: "N", default: "0", help: "seed for the weights, images and masks"),
            OptionSpec("world", value: "N", default: "1",
                       help: "processes training together (N > 1: this command starts them on this machine, each with "
                           + "its own images, unless --rank is given); the last line adds exposed_comm_ms"),
            OptionSpec("transport", value: "auto|ring|shm|hierarchical", default: "auto", help: "how the processes exchange gradients"),
            OptionSpec("overlap", value: "on|off", default: "on",
                       help: "average the gradients bucket by bucket during the backward (on) or after it (off)"),
            OptionSpec("bucket-mb", value: "MB", default: "25", help: "gradient bucket size of --overlap on, in MiB"),
            OptionSpec("gradient-wire", value: "fp32|bf16", default: "fp32", help: GradientWire.optionHelp),
            .flag("shard-optimizer",
                  help: "ZeRO stage 1: reduce-scatter, AdamW on this rank's shard, all-gather (turns --overlap off); "
                      + "the last lines add adamw_ms and moment_mb per rank"),
            OptionSpec("rank", value: "R", help: "run only this rank of --world (for ranks on several machines)",
                       visible: false),
            OptionSpec("rendezvous", value: "HOST:PORT", help: "rank 0's rendezvous address (with --rank)", visible: false),
            OptionSpec("listen-host", value: "ADDRESS", help: "the address this rank's ring listener announces (with --rank)",
                       visible: false),
            OptionSpec("rendezvous-hosted", help: "another process hosts the rendezvous (with --rank)", visible: false),
        ])

    static func run(_ options: ParsedOptions) throws {
        let config = try ModelConfig.named(try options.required("model"),
                                           imageSize: try options.optionalInt("input-size", in: 1...4096))
        let batch = try options.int("batch", in: 1...65_536)
        let threads = try options.int("threads", in: 1...1024)
        let steps = try options.int("steps", in: 1...100_000)
        let precision = try WorkerOptions.parsePrecision(try options.required("precision")) {
            OptionError("mae bench step: " + $0)
        }
        let batchShards = options.string("batch-shards") == "auto"
            ? MAEModel.automaticBatchShards(config: config, batchSize: batch, threads: threads, precision: precision)
            : try options.int("batch-shards", in: 1...65_536)
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
        let world = try options.int("world", in: 1...256)
        let rank = try options.optionalInt("rank", in: 0...255)
        if world > 1 && rank == nil {
            try launchRanks(world: world, arguments: Array(CommandLine.arguments.dropFirst()))
            return
        }
        guard (rank ?? 0) < world else { throw OptionError("mae bench step: --rank must be smaller than --world \(world)") }
        let collective: any Collective = world == 1 ? SingleProcessCollective() : try joinRanks(options, world: world, rank: rank!)
        defer { collective.close() }
        let isReporter = collective.rank == 0

        Parallel.setThreads(threads)
        let model = MAEModel(config: config, seed: seed)
        model.batchShards = batchShards
        model.precision = precision
        let overlapText = try options.required("overlap")
        guard overlapText == "on" || overlapText == "off" else {
            throw OptionError("mae bench step: --overlap expects on or off, got '\(overlapText)'")
        }
        let bucketMegabytes = try options.double("bucket-mb", expectation: "a positive number of MiB") { $0 > 0 && $0 <= 1_048_576 }
        let sharded = options.flag("shard-optimizer") && world > 1
        let wire = try CollectiveWorkerCommand.wire(options)
        guard collective.carries(wire) else {
            throw OptionError("mae bench step: \(type(of: collective)) cannot carry gradients as \(wire)")
        }
        let exchange = GradientExchange(collective: collective, gradients: model.gradients.pointer, table: model.table,
                                        bucketBytes: Int(bucketMegabytes * 1_048_576),
                                        overlaps: overlapText == "on" && collective.reducesSlicesAsWhole && !sharded,
                                        reduceScatters: sharded, wire: wire)
        let optimizer = AdamWOptimizer(table: model.table,
                                       shard: sharded ? collective.shard(count: model.table.count, rank: collective.rank) : nil)
        func say(_ line: String) { if isReporter { print(line) } }
        // OpenBLAS's own count is 1 per product when our pool splits the products.
        say(BLASRuntime.banner + (Parallel.splitsProducts ? " per product, pool threads=\(Parallel.threads)" : "")
            + " \(CPUInfo.summary)")
        if let note = BLASRuntime.presetCoreNote { say("note: " + note) }
        say("model \(config.name) image \(config.imageSize) patch \(config.patchSize) params \(model.table.count) "
            + "batch \(batch) mask_ratio \(maskRatio) masking \(masking.rawValue) norm_pix_loss \(normPixLoss) threads \(threads) batch_shards \(batchShards) precision \(precision.rawValue) steps \(steps)")
        if world > 1 {
            say("world \(world) collective \(type(of: collective)) overlap \(exchange.overlaps ? "on" : "off") "
                + "buckets \(exchange.buckets.count) bucket_mb \(bucketMegabytes) shard_optimizer \(sharded) gradient_wire \(wire)")
        }

        // Random images, standard normal like ImageNet-normalised pixels (each rank its own).
        let pixels = batch * config.channels * config.imageSize * config.imageSize
        let images = FloatBuffer(count: pixels)
        var random = CounterRandom(seed: seed, purpose: .synthesis, index: collective.rank)
        for index in 0..<pixels { images[index] = Float(random.nextNormal()) }
        let noise = FloatBuffer(count: batch * config.patchCount)
        var exposedSeconds = 0.0, adamWSeconds = 0.0
        func step(_ number: Int) throws -> Float {
            for sample in 0..<batch {
                fillMaskingNoise(noise.pointer + sample * config.patchCount, strategy: masking,
                                 gridSize: config.gridSize, keptCount: keptCount, seed: seed, epoch: number,
                                 sampleIndex: collective.rank * batch + sample)
            }
            let loss = model.forwardBackward(images: images.pointer, noise: noise.pointer, batchSize: batch,
                                             maskRatio: maskRatio, normPixLoss: normPixLoss, overwritesGradients: true,
                                             backwardProgress: exchange.backwardProgress())
            exposedSeconds = try exchange.finish()
            let updateStart = DispatchTime.now().uptimeNanoseconds
            optimizer.update(model: model, learningRate: 1.5e-4)
            adamWSeconds = Double(DispatchTime.now().uptimeNanoseconds - updateStart) / 1e9
            if sharded {
                let gatherStart = DispatchTime.now().uptimeNanoseconds
                try collective.allGather(model.parameters.pointer, count: model.parameters.count)
                exposedSeconds += Double(DispatchTime.now().uptimeNanoseconds - gatherStart) / 1e9
                model.parametersDidChange()
            }
            return loss
        }

        let warmUpLoss = try step(0)
        say("warm-up step: loss \(warmUpLoss)")
        var stepSeconds: [Double] = [], stepCPUSeconds: [Double] = [], stepExposed: [Double] = [], stepAdamW: [Double] = []
        for number in 1...steps {
            let start = DispatchTime.now().uptimeNanoseconds
            let startCPU = processCPUSeconds()
            var loss = try step(number)
            var seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            var cpuSeconds = processCPUSeconds() - startCPU
            var exposed = exposedSeconds, adamW = adamWSeconds
            if world > 1 {
                // Means over the ranks, exchanged outside the timed step.
                let means = try collective.allReduceScalars([seconds, cpuSeconds, exposed, Double(loss), adamW])
                    .map { $0 / Double(world) }
                (seconds, cpuSeconds, exposed, loss, adamW) = (means[0], means[1], means[2], Float(means[3]), means[4])
            }
            stepSeconds.append(seconds)
            stepCPUSeconds.append(cpuSeconds)
            stepExposed.append(exposed)
            stepAdamW.append(adamW)
            // CPU time shows how much work a step took even when other processes share the cores.
            say("step \(number): loss \(loss) time \(format(seconds * 1000)) ms cpu \(format(cpuSeconds * 1000)) ms"
                + (world > 1 ? " exposed_comm \(format(exposed * 1000)) ms" : ""))
            guard loss.isFinite else { throw OptionError("mae bench step: the loss became \(loss) at step \(number)") }
        }
        let meanSeconds = stepSeconds.reduce(0, +) / Double(steps)
        say("cpu_ms_per_step=\(format(stepCPUSeconds.reduce(0, +) / Double(steps) * 1000)) "
            + "fastest_step_ms=\(format(stepSeconds.min()! * 1000))")
        if world > 1 {
            // Every rank ends with the same weights; their checksum shows that overlap does not change them.
            var checksum = FNV1a64()
            checksum.update(UnsafeRawBufferPointer(start: model.parameters.pointer, count: model.parameters.count * 4))
            say("parameters_fnv1a64=\(checksum.hex) median_step_ms=\(format(median(stepSeconds) * 1000)) "
                + "median_exposed_comm_ms=\(format(median(stepExposed) * 1000)) "
                + "adamw_ms=\(format(median(stepAdamW) * 1000)) moment_mb=\(format(Double(optimizer.firstMoment.count * 8) / 1e6))")
        }
        let gflops = config.trainingFlopsPerImage(maskRatio: maskRatio) * Double(batch) / meanSeconds / 1e9
        say("img_per_s=\(format(Double(batch * world) / meanSeconds)) step_ms=\(format(meanSeconds * 1000)) "
            + "gflops=\(format(gflops * Double(world))) peak_rss_mb=\(format(peakResidentMegabytes()))"
            + (world > 1 ? " exposed_comm_ms=\(format(stepExposed.reduce(0, +) / Double(steps) * 1000))" : ""))
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// Joins rank `rank` of `world` through the rendezvous of `--rendezvous` (rank 0 hosts it).
    static func joinRanks(_ options: ParsedOptions, world: Int, rank: Int) throws -> any Collective {
        guard let address = options.string("rendezvous") else {
            throw OptionError("mae bench step: --rank needs --rendezvous HOST:PORT (rank 0's address)")
        }
        let transport = try CollectiveTransport.parse(try options.required("transport")) { OptionError("mae bench step: \($0)") }
        let listenHost = try options.string("listen-host")
            ?? SocketAddress.localAddress(toward: SocketAddress(parsing: address))
        return try transport.connect(RendezvousConfig(rank: rank, worldSize: world, address: address,
                                                      jobToken: benchToken, generation: 0, timeoutSeconds: 120,
                                                      listenHost: listenHost,
                                                      hostsRendezvous: options.flag("rendezvous-hosted") ? false : nil))
    }

    /// The job token of the benchmark's ranks (they run on one machine or in test namespaces).
    static let benchToken = "mae-bench-step"

    /// Starts ranks 0..<world of this command on this machine, with the rendezvous hosted
    /// here on a free loopback port (only rank 0 prints), and waits for them all.
    static func launchRanks(world: Int, arguments: [String]) throws {
        let server = try RendezvousServer(address: SocketAddress(host: "127.0.0.1", port: 0), worldSize: world,
                                          jobToken: benchToken, generation: 0, timeoutSeconds: 120)
        defer { server.close() }
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let processes = try (0..<world).map { rank in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments + ["--rank", "\(rank)", "--rendezvous", server.address.description, "--rendezvous-hosted"]
            try process.run()
            return process
        }
        var failures: [String] = []
        for (rank, process) in processes.enumerated() {
            process.waitUntilExit()
            if process.terminationStatus != 0 { failures.append("rank \(rank) exited \(process.terminationStatus)") }
        }
        guard failures.isEmpty else { throw OptionError("mae bench step --world \(world): " + failures.joined(separator: ", ")) }
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
