import Dispatch
import CProducts
import Kernels
import Options

/// `mae bench products`: the matrix products of a training step timed alone, fp32
/// (OpenBLAS, our split) against bf16 (oneDNN, our split), per shape: where each is faster.
struct BenchProductsCommand: Subcommand {
    static let words = ["bench", "products"]
    static let spec = CommandSpec(
        name: "mae bench products",
        summary: "Times matrix products in fp32 (OpenBLAS) and bf16 (oneDNN, bf16 inputs, fp32 sums), "
            + "best of several runs per shape, and names oneDNN's kernel; on one thread also oneDNN's fp32 matmul "
            + "(on a CPU without AVX512_BF16 the fp32 columns only). The default shapes are "
            + "mae_vit_base_patch16's at batch 8 (encoder 400 rows, decoder 1576) in forward (x·wᵀ), "
            + "input-gradient (dy·w) and weight-gradient (dyᵀ·x) form, and one attention head's.",
        options: [
            OptionSpec("shapes", value: "LIST",
                       help: "products as M×N×K:FORM (FORM nt, nn or tn: which operand is transposed), comma-separated"),
            OptionSpec("threads", value: "T", default: "1", help: "threads (our pool splits each product)"),
            OptionSpec("seconds", value: "S", default: "0.5", help: "time spent per shape and precision"),
        ])

    static let defaultShapes = [
        "400x2304x768:nt", "400x768x768:nt", "400x3072x768:nt", "400x768x3072:nt",
        "400x768x3072:nn", "400x3072x768:nn", "3072x768x400:tn", "768x3072x400:tn",
        "1576x1536x512:nt", "1576x2048x512:nt", "1576x512x2048:nt", "1576x768x512:nt",
        "1576x512x2048:nn", "2048x512x1576:tn", "512x2048x1576:tn",
        "50x50x64:nt", "50x64x50:nn", "197x197x32:nt", "197x32x197:nn",
    ]

    static func run(_ options: ParsedOptions) throws {
        let threads = try options.int("threads", in: 1...1024)
        let seconds = try options.double("seconds", expectation: "a number of seconds > 0") { $0 > 0 }
        let texts = options.string("shapes").map { $0.split(separator: ",").map(String.init) } ?? defaultShapes
        let shapes = try texts.map { text -> (m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool) in
            let parts = text.split(separator: ":")
            let sizes = parts.first.map { $0.split(separator: "x").compactMap { Int($0) } } ?? []
            let form = parts.count == 2 ? String(parts[1]) : ""
            guard sizes.count == 3, sizes.allSatisfy({ $0 > 0 }), ["nt", "nn", "tn"].contains(form) else {
                throw OptionError("mae bench products: --shapes expects M×N×K:FORM like 400x3072x768:nt, got '\(text)'")
            }
            return (sizes[0], sizes[1], sizes[2], form == "tn", form == "nt")
        }
        Parallel.setThreads(threads)
        print(BLASRuntime.banner + " per product, pool threads=\(threads) " + CPUInfo.summary)
        // Without AVX512_BF16 the fp32 columns still say whether oneDNN's fp32 beats OpenBLAS here.
        let runsBFloat16 = Precision.bf16.unsupportedReason == nil
        if !runsBFloat16 { print("bf16 columns left out: this CPU (\(CPUInfo.modelName)) has no AVX512_BF16") }
        print("shape                 fp32 GFLOP/s  bf16 GFLOP/s  bf16/fp32  oneDNN fp32  oneDNN kernel (bf16)")
        for shape in shapes {
            let (m, n, k) = (shape.m, shape.n, shape.k)
            let a = FloatBuffer(count: m * k), b = FloatBuffer(count: k * n), c = FloatBuffer(count: m * n)
            for index in 0..<a.count { a[index] = Float(index % 17) / 17 - 0.5 }
            for index in 0..<b.count { b[index] = Float(index % 13) / 13 - 0.5 }
            let roundedB = UnsafeMutablePointer<UInt16>.allocate(capacity: b.count)
            defer { roundedB.deallocate() }
            roundToBFloat16(roundedB, b.pointer, count: b.count)
            // The model passes its weights pre-rounded (forward and input-gradient forms), and adds
            // the weight-gradient form (tn) to the gradients.
            let weightOperand = shape.transposeA ? nil : UnsafePointer(roundedB)
            func rate(_ precision: Precision?) -> Double {
                func once() {
                    guard let precision else {
                        oneDNNSingleThreadedMatrixMultiply(c.pointer, ldc: n, a.pointer, lda: shape.transposeA ? m : k,
                                                           transposeA: shape.transposeA, b.pointer,
                                                           ldb: shape.transposeB ? k : n, transposeB: shape.transposeB,
                                                           m: m, n: n, k: k)
                        return
                    }
                    matrixMultiply(c.pointer, ldc: n, a.pointer, lda: shape.transposeA ? m : k, transposeA: shape.transposeA,
                                   b.pointer, ldb: shape.transposeB ? k : n, transposeB: shape.transposeB,
                                   roundedB: precision == .bf16 ? weightOperand : nil,
                                   m: m, n: n, k: k, beta: shape.transposeA ? 1 : 0, precision: precision)
                }
                once()  // creates oneDNN's primitive, warms the caches
                var best = Double.infinity, spent = 0.0
                while spent < seconds {
                    let start = DispatchTime.now().uptimeNanoseconds
                    once()
                    let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                    best = min(best, elapsed)
                    spent += elapsed
                }
                return 2 * Double(m * n * k) / best / 1e9
            }
            let fp32 = rate(.fp32)
            let oneDNNFP32 = threads == 1 ? format(rate(nil), 11) : "          -"
            let name = "\(m)×\(n)×\(k) " + (shape.transposeA ? "tn" : shape.transposeB ? "nt" : "nn")
            guard runsBFloat16 else {
                print(name.padding(toLength: 20, withPad: " ", startingAt: 0) + "  " + format(fp32, 12)
                      + "             -          -  " + oneDNNFP32 + "  -")
                continue
            }
            let bf16 = rate(.bf16)
            let (cut, block) = bfloat16Blocks(m: m, n: n, k: k, accumulates: shape.transposeA,
                                              transposeA: shape.transposeA, transposeB: shape.transposeB)
            let rowBlocks = cut == .rows || cut == .packedRows
            let kernel = m * n * k <= Int(MAE_BF16_SMALL_PRODUCT_LIMIT) ? String(cString: mae_bf16_small_product_implementation())
                : bfloat16ProductImplementation(m: rowBlocks ? block : m, n: cut == .columns ? block : n, k: k,
                                                transposeA: shape.transposeA && cut != .columns, transposeB: shape.transposeB)
                    + (cut == .packedRows ? ", b packed once" : "")
            print(name.padding(toLength: 20, withPad: " ", startingAt: 0)
                  + "  " + format(fp32, 12) + "  " + format(bf16, 12) + "  " + format(bf16 / fp32, 9) + "  " + oneDNNFP32 + "  " + kernel)
        }
    }

    private static func format(_ value: Double, _ width: Int) -> String {
        let text = String(Int((value * 100).rounded()) / 100) + "." + {
            let hundredths = Int((value * 100).rounded()) % 100
            return hundredths < 10 ? "0\(hundredths)" : "\(hundredths)"
        }()
        return String(repeating: " ", count: max(0, width - text.count)) + text
    }
}
