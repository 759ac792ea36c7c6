import Kernels
import Model
import Options
import Training
#if canImport(Glibc)
import Glibc
#endif

/// `mae check-determinism`: checks, with the OpenBLAS core this process loaded, that the
/// thread count changes no bit of a matrix product or of a training step's loss and
/// gradients. The tests run it once per OpenBLAS core type this CPU can execute
/// (`OPENBLAS_CORETYPE=Haswell mae check-determinism`, ...), since OpenBLAS picks its
/// kernels once, when it loads; a user can run it the same way on their own machine.
struct CheckDeterminismCommand: Subcommand {
    static let words = ["check-determinism"]
    static let spec = CommandSpec(
        name: "mae check-determinism",
        summary: "Checks that the thread count changes no bit of matrix products and training steps "
            + "with the OpenBLAS core loaded now (set OPENBLAS_CORETYPE to check another). Exits 1 naming "
            + "what differs.",
        options: [
            OptionSpec("threads", value: "LIST", default: "1,2,3",
                       help: "thread counts to compare, the first being the reference"),
            OptionSpec("models", value: "LIST", default: "mini,mae_vit_tiny_patch4",
                       help: "models whose training step is compared ('mini': 32 px images, 2 encoder blocks 96 wide, "
                           + "1 decoder block 64 wide, large enough at 8 images that its products are cut over threads; "
                           + "'none' skips the steps)"),
            OptionSpec("batch", value: "B", default: "8", help: "images per step"),
            OptionSpec("precision", value: "fp32|bf16", default: "fp32",
                       help: "precision of the products and training steps compared (bf16 needs AVX512_BF16)"),
        ])

    /// Products of the shapes the models run (m, n, k): the linear layers of the tiny model
    /// at 8 images (rows 136 and 520) in forward (c = x·wᵀ), input gradient (c = dy·w) and
    /// weight gradient (c = dyᵀ·x) form, ViT-B's at 2 images (rows 100 and 394) with k cut
    /// short, and odd sizes that leave partial tiles everywhere and cut near the size below
    /// which SkylakeX and Cooperlake switch kernels; wide ones whose columns the Haswell family
    /// may cut (with 8 rows past a multiple of 12: `BLASRuntime.columnCutTailRowTile`).
    static let productShapes: [(m: Int, n: Int, k: Int)] = [
        (136, 576, 192), (136, 192, 768), (520, 128, 512), (520, 2048, 128), (576, 192, 136), (768, 192, 136),
        (192, 768, 520), (2048, 512, 130), (100, 2304, 256), (394, 768, 256), (3072, 768, 64), (768, 768, 100),
        (333, 777, 555), (1000, 97, 61), (97, 1000, 61), (104, 1280, 96), (800, 768, 128),
    ]

    static func run(_ options: ParsedOptions) throws {
        let threadCounts = try list(options, "threads").map { text -> Int in
            guard let count = Int(text), (1...1024).contains(count) else {
                throw OptionError("--threads takes thread counts from 1 to 1024 separated by commas, got '\(text)'")
            }
            return count
        }
        guard threadCounts.count >= 2 else { throw OptionError("--threads needs at least two counts to compare") }
        let models = try list(options, "models").filter { $0 != "none" }.map(model)
        let batch = try options.int("batch", in: 1...4096)
        let precision = try WorkerOptions.parsePrecision(try options.required("precision")) {
            OptionError("mae check-determinism: " + $0)
        }

        Parallel.setThreads(threadCounts[0])  // also puts OpenBLAS on one thread, as the banner shows
        print(BLASRuntime.banner + " " + CPUInfo.summary)
        if let note = BLASRuntime.presetCoreNote { print("note: " + note) }
        print("products are cut by rows at multiples of \(matrixMultiplyBlock)"
              + (BLASRuntime.columnCutWidth.map { " and by columns at multiples of \($0)" } ?? " only"))
        var failures: [String] = []
        let productDifferences = compareProducts(threadCounts: threadCounts, precision: precision)
        print("\(precision.rawValue) matrix products: \(productShapes.count) shapes × 4 transposes × beta 0 and 1, threads "
              + "\(threadCounts.map(String.init).joined(separator: ",")): "
              + (productDifferences.isEmpty ? "identical" : "\(productDifferences.count) differ"))
        for difference in productDifferences.prefix(5) { print("  " + difference) }
        if !productDifferences.isEmpty { failures.append("\(productDifferences.count) matrix products") }

        for config in models {
            for shards in [1, 2] {
                let results = threadCounts.map { step(config, batch: batch, shards: shards, threads: $0, precision: precision) }
                let reference = results[0]
                let verdicts = zip(threadCounts, results).dropFirst().map { threads, result -> String in
                    let differing = zip(result.gradients, reference.gradients).filter { $0.bitPattern != $1.bitPattern }.count
                    let lossDiffers = result.loss.bitPattern != reference.loss.bitPattern
                    if differing == 0 && !lossDiffers { return "threads \(threads): identical" }
                    failures.append("\(config.name) with \(shards) batch shard(s) on \(threads) threads")
                    return "threads \(threads): loss \(lossDiffers ? "differs" : "equal"), \(differing) of "
                        + "\(reference.gradients.count) gradient elements differ"
                }
                print("training step \(config.name) batch \(batch) batch shards \(shards): "
                      + "loss \(reference.loss); " + verdicts.joined(separator: "; "))
            }
        }
        guard failures.isEmpty else {
            throw OptionError("the thread count changes results with OpenBLAS core \(BLASRuntime.coreName): "
                              + failures.joined(separator: ", "))
        }
        print("result: identical on threads \(threadCounts.map(String.init).joined(separator: ",")) "
              + "with OpenBLAS core \(BLASRuntime.coreName)")
    }

    static func list(_ options: ParsedOptions, _ name: String) throws -> [String] {
        try options.required(name).split(separator: ",").map(String.init)
    }

    static func model(_ name: String) throws -> ModelConfig {
        if name == "mini" {
            return ModelConfig(name: "mini", imageSize: 32, patchSize: 4, encoderWidth: 96, encoderDepth: 2,
                               encoderHeads: 4, decoderWidth: 64, decoderDepth: 1, decoderHeads: 2)
        }
        return try ModelConfig.named(name)
    }

    /// Every product of `productShapes` in every transpose form, with beta 0 and 1, on each
    /// thread count against the first; one line per product that differs. (Buffers are
    /// copied and compared with memcpy and memcmp: the check also runs in debug builds.)
    static func compareProducts(threadCounts: [Int], precision: Precision) -> [String] {
        let before = Parallel.threads
        defer { Parallel.setThreads(before) }
        // One pool of values in [-0.5, 0.5) that every operand is read from.
        let largest = productShapes.map { max($0.m * $0.k, $0.k * $0.n, $0.m * $0.n) }.max()!
        let pool = FloatBuffer(count: largest)
        var state: UInt32 = 12_345
        for index in 0..<largest {
            state = state &* 1_664_525 &+ 1_013_904_223
            pool[index] = Float(state >> 8) / 16_777_216 - 0.5
        }
        var differences: [String] = []
        for (m, n, k) in productShapes {
            let reference = FloatBuffer(count: m * n), c = FloatBuffer(count: m * n)
            let bytes = m * n * MemoryLayout<Float>.stride
            for transposeA in [false, true] {
                for transposeB in [false, true] {
                    for beta: Float in [0, 1] {
                        for (index, threads) in threadCounts.enumerated() {
                            Parallel.setThreads(threads)
                            let target = index == 0 ? reference : c
                            memcpy(target.pointer, pool.pointer, bytes)
                            matrixMultiply(target.pointer, ldc: n, pool.pointer, lda: transposeA ? m : k,
                                           transposeA: transposeA, pool.pointer + 1, ldb: transposeB ? k : n,
                                           transposeB: transposeB, m: m, n: n, k: k, beta: beta, precision: precision)
                            guard index > 0, memcmp(c.pointer, reference.pointer, bytes) != 0 else { continue }
                            let differing = (0..<(m * n)).filter { c[$0].bitPattern != reference[$0].bitPattern }.count
                            differences.append("m \(m) n \(n) k \(k) transposeA \(transposeA) transposeB \(transposeB) "
                                               + "beta \(beta) threads \(threads): \(differing) of \(m * n) elements")
                        }
                    }
                }
            }
        }
        return differences
    }

    /// One forward and backward pass of a freshly initialised model on fixed images and
    /// masks, on `threads` threads.
    static func step(_ config: ModelConfig, batch: Int, shards: Int, threads: Int,
                     precision: Precision) -> (loss: Float, gradients: [Float]) {
        let before = Parallel.threads
        Parallel.setThreads(threads)
        defer { Parallel.setThreads(before) }
        let model = MAEModel(config: config, seed: 42)
        model.batchShards = shards
        model.precision = precision
        let pixels = batch * config.channels * config.imageSize * config.imageSize
        let images = FloatBuffer(count: pixels)
        var random = CounterRandom(seed: 41, purpose: .synthesis)
        for index in 0..<pixels { images[index] = Float(random.nextNormal()) }
        let noise = FloatBuffer(count: batch * config.patchCount)
        for sample in 0..<batch {
            fillMaskingNoise(noise.pointer + sample * config.patchCount, patchCount: config.patchCount,
                             seed: 41, epoch: 0, sampleIndex: sample)
        }
        let loss = model.forwardBackward(images: images.pointer, noise: noise.pointer, batchSize: batch,
                                         maskRatio: 0.75, normPixLoss: true, overwritesGradients: true)
        return (loss, model.gradients.toArray())
    }
}
