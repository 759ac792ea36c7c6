import Foundation
import Options
import Testing
import TestSupport
@testable import Training
import Collectives

@Suite struct WorkerOptionsTests {
    /// Parses a command line; returns the one-line error, or nil when it is accepted.
    func error(_ arguments: [String]) -> String? {
        do {
            guard let options = try WorkerOptions.spec.parse(arguments) else { return "help" }
            _ = try WorkerOptions.parse(options)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func acceptsAStandaloneRunAndFillsTheDefaults() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let options = try #require(try WorkerOptions.spec.parse(["--standalone", "--data", temporary.path, "--model",
                                                                  "mae_vit_tiny_patch4", "--input-size", "32"]))
        let (config, distributed) = try WorkerOptions.parse(options)
        #expect(distributed.isStandalone)
        #expect(config.batchSize == 64 && config.epochs == 800 && config.warmupEpochs == 40)
        #expect(config.baseLearningRate == 1.5e-4 && config.absoluteLearningRate == nil)
        #expect(config.weightDecay == 0.05 && config.maskRatio == 0.75 && !config.normPixLoss)
        #expect(config.beta1 == 0.9 && config.beta2 == 0.95 && config.epsilon == 1e-8)
        #expect(config.keepCheckpoints == 3 && config.keepEveryEpochs == 0 && config.accumulationSteps == 1)
        #expect(config.model.imageSize == 32)
        #expect(config.maskingStrategy == .random)
        #expect(config.threads >= 1 && config.dataThreads >= 1)
        #expect(config.gradientWire == .fp32 && config.gradientWireFormat == .fp32)
        let bf16 = try #require(try WorkerOptions.spec.parse(["--standalone", "--data", temporary.path, "--gradient-wire", "bf16"]))
        #expect(try WorkerOptions.parse(bf16).0.gradientWireFormat == .bf16)
    }

    /// `--precision bf16` is taken where the CPU has AVX512_BF16; elsewhere it stops with one
    /// line that names the missing feature, this CPU and the way out.
    @Test func precisionBF16NeedsAVX512BF16() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let arguments = ["--standalone", "--data", temporary.path, "--precision", "bf16"]
        if cpuRunsBFloat16Products {
            let options = try #require(try WorkerOptions.spec.parse(arguments))
            #expect(try WorkerOptions.parse(options).0.productPrecision == .bf16)
        } else {
            let message = try #require(error(arguments), "bf16 accepted on a CPU without AVX512_BF16")
            #expect(message.contains("needs a CPU with AVX512_BF16") && message.contains("use --precision fp32"), "\(message)")
            #expect(!message.contains("\n"), "more than one line: \(message)")
        }
        #expect(error(["--standalone", "--data", temporary.path, "--precision", "fp16"])?
            .contains("--precision expects fp32 or bf16, got 'fp16'") == true)
    }

    /// main_finetune.py's and main_linprobe.py's defaults, each flag still overriding them.
    @Test func eachTaskHasTheOfficialScriptsDefaults() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        func parse(_ extra: [String]) throws -> RunConfig {
            let options = try #require(try WorkerOptions.spec.parse(["--standalone", "--data", temporary.path, "--model",
                                                                      "mae_vit_tiny_patch4"] + extra))
            return try WorkerOptions.parse(options).0
        }
        let finetune = try parse(["--task", "finetune"])
        #expect(finetune.trainingTask == .finetune && finetune.batchSize == 64 && finetune.epochs == 50)
        #expect(finetune.warmupEpochs == 5 && finetune.baseLearningRate == 1e-3 && finetune.minimumLearningRate == 1e-6)
        #expect(finetune.weightDecay == 0.05 && finetune.beta2 == 0.999)
        let settings = try #require(finetune.downstream)
        #expect(settings.globalPool && settings.dropPath == 0.1 && settings.layerDecay == 0.75 && settings.smoothing == 0.1)
        #expect(settings.mixup == 0 && settings.cutmix == 0 && settings.reprob == 0.25 && settings.autoAugment == "rand-m9-mstd0.5-inc1")
        #expect(try parse(["--task", "finetune", "--cls-token"]).downstream?.globalPool == false)
        let probe = try parse(["--task", "linprobe", "--blr", "0.2"])
        #expect(probe.batchSize == 512 && probe.epochs == 90 && probe.warmupEpochs == 10 && probe.baseLearningRate == 0.2)
        #expect(probe.weightDecay == 0 && probe.minimumLearningRate == 0 && probe.downstream?.globalPool == false)
        #expect(try parse(["--task", "linprobe", "--global-pool"]).downstream?.globalPool == true)
        #expect(try parse([]).downstream == nil)
        for (extra, message) in [(["--task", "probe"], "--task expects"), (["--finetune", temporary.path], "is for --task"),
                                 (["--task", "finetune", "--aa", "bogus"], "must start with 'rand'"),
                                 (["--task", "linprobe", "--global-pool", "--cls-token"], "exclude each other"),
                                 (["--task", "finetune", "--knn-every", "1"], "--knn-every scores pretraining")] {
            #expect(throws: OptionError.self, "\(extra)") { try parse(extra) }
            do { _ = try parse(extra) } catch { #expect("\(error)".contains(message), "\(extra): \(error)") }
        }
    }

    @Test func acceptsAMultiProcessWorker() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let options = try #require(try WorkerOptions.spec.parse([
            "--rank", "1", "--world-size", "2", "--rendezvous", "127.0.0.1:29500", "--job-token", "secret",
            "--data", temporary.path, "--model", "mae_vit_tiny_patch4", "--input-size", "32", "--threads", "1"]))
        let (_, distributed) = try WorkerOptions.parse(options)
        #expect(distributed.rank == 1 && distributed.worldSize == 2 && distributed.jobToken == "secret")
        #expect(distributed.rendezvous == "127.0.0.1:29500" && distributed.backend == .tcp && distributed.generation == 0)
        #expect(distributed.congestionControl == .automatic)
        for (text, expected) in [("system", CongestionControl.system), ("cubic", .named("cubic")), ("auto", .automatic)] {
            let chosen = try #require(try WorkerOptions.spec.parse([
                "--rank", "1", "--world-size", "2", "--rendezvous", "127.0.0.1:29500", "--job-token", "secret",
                "--data", temporary.path, "--congestion-control", text]))
            #expect(try WorkerOptions.parse(chosen).1.congestionControl == expected)
        }
    }

    @Test func impossibleValuesAreOneLineErrorsBeforeAnyWork() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let base = ["--standalone", "--data", temporary.path, "--model", "mae_vit_tiny_patch4", "--input-size", "32"]
        let cases: [([String], String)] = [
            (base + ["--batch-size", "0"], "--batch-size"),
            (base + ["--mask-ratio", "1"], "--mask-ratio"),
            (base + ["--mask-ratio", "0"], "--mask-ratio"),
            (base + ["--masking", "checkerboard"], "--masking expects random, block or grid"),
            (base + ["--bogus"], "unknown option --bogus"),
            (base + ["--epochs", "10", "--warmup-epochs", "10"], "--warmup-epochs"),
            (base + ["--accum-iter", "0"], "--accum-iter"),
            (["--standalone", "--data", temporary.path + "/missing"], "is not a folder"),
            (["--standalone"], "missing --data"),
            (Array(base.dropFirst()), "--standalone"),
            (base + ["--rank", "0"], "cannot be combined"),
            (base + ["--backend", "mpi"], "cannot be combined"),
            (base.filter { $0 != "--standalone" } + ["--backend", "nccl"], "--backend expects tcp or mpi"),
            (["--rank", "2", "--world-size", "2", "--rendezvous", "127.0.0.1:1", "--job-token", "t",
              "--data", temporary.path], "smaller than --world-size"),
            (["--rank", "0", "--world-size", "2", "--rendezvous", "127.0.0.1:1",
              "--data", temporary.path], "--job-token"),
            (["--rank", "0", "--world-size", "2", "--rendezvous", "nowhere", "--job-token", "t",
              "--data", temporary.path], "HOST:PORT"),
            (["--standalone", "--data", temporary.path, "--model", "mae_vit_gigantic"], "mae_vit_base_patch16"),
            (["--standalone", "--data", temporary.path, "--model", "mae_vit_tiny_patch4", "--input-size", "30"], "multiple of the patch size"),
            (base + ["--resume", temporary.path + "/nothing"], "--resume"),
            (base + ["--seed", "-1"], "--seed"),
            (base + ["--gradient-wire", "fp16"], "--gradient-wire expects fp32 or bf16, got 'fp16'"),
            (["--rank", "0", "--world-size", "2", "--rendezvous", "127.0.0.1:1", "--job-token", "t",
              "--data", temporary.path, "--congestion-control", "Reno!"], "--congestion-control expects"),
            (["--rank", "0", "--world-size", "2", "--rendezvous", "127.0.0.1:1", "--job-token", "t",
              "--data", temporary.path, "--congestion-control", ""], "--congestion-control expects"),
        ]
        for (arguments, expected) in cases {
            let message = try #require(error(arguments), "accepted: \(arguments)")
            #expect(message.contains(expected), "\(arguments): \(message)")
            #expect(!message.contains("\n"), "more than one line: \(message)")
        }
    }

    @Test func helpDocumentsEveryFlagWithItsDefault() {
        let help = WorkerOptions.spec.help
        for flag in ["--standalone", "--rank R", "--world-size W", "--rendezvous HOST:PORT", "--job-token TOKEN",
                     "--generation G", "--backend", "--data ROOT", "--model NAME", "--input-size S", "--batch-size B",
                     "--epochs E", "--warmup-epochs W", "--blr X", "--lr X", "--min-lr X", "--weight-decay X",
                     "--accum-iter K", "--mask-ratio R", "--norm-pix-loss", "--seed S", "--threads T", "--data-threads T",
                     "--run-dir DIR", "--checkpoint-every N", "--keep-checkpoints K", "--keep-every-epochs N",
                     "--resume", "--max-steps N", "--print-every N", "--task pretrain|finetune|linprobe", "--finetune PATH",
                     "--nb-classes N", "--global-pool", "--cls-token", "--drop-path X", "--layer-decay X", "--smoothing X",
                     "--mixup X", "--cutmix X", "--reprob X", "--aa POLICY"] {
            #expect(help.contains(flag), "help lacks \(flag)")
        }
        for defaultText in ["(default: pretrain 0.00015, finetune 0.001, linprobe 0.1)", "(default: 0.75)",
                            "(default: pretrain 40, finetune 5, linprobe 10)", "(default: pretrain 64, finetune 64, linprobe 512)",
                            "(default: pretrain 0.05, finetune 0.05, linprobe 0)", "(default: 3)", "(default: pretrain)"] {
            #expect(help.contains(defaultText), "help lacks \(defaultText)")
        }
        #expect(!help.contains("--model-shape"))
    }
}
