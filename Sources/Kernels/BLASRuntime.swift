import CBLAS
import CSupport
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Makes OpenBLAS run the kernels this CPU supports, and sets its thread count.
///
/// Debian's OpenBLAS 0.3.21 detects AVX-512 Xeons under a hypervisor as "Prescott"
/// and runs sgemm about 5× below what the CPU can do. OpenBLAS reads
/// `OPENBLAS_CORETYPE` only while it loads, so the fix is to re-execute the program
/// with the variable set before any work starts. A user who sets the variable
/// themselves is always obeyed.
public enum BLASRuntime {
    /// Environment variable that records that we already re-executed once (no loops).
    static let reexecMarker = "MAE_BLAS_REEXEC"

    /// The core type OpenBLAS is running (for example "Cooperlake").
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// The strongest OpenBLAS core type this CPU supports, if we know one.
    public static var bestCoreForThisCPU: String? {
        guard let name = mae_cpu_best_openblas_core() else { return nil }
        return String(cString: name)
    }

    /// Kernel families in increasing strength; a core not listed counts as weakest. Zen
    /// ranks below Haswell: OpenBLAS 0.3.21's Zen core runs Haswell's sgemm kernel (the same
    /// bits) but the generic beta pass, which zeroes c one float at a time before every
    /// product with beta 0: 4.8 % of the tiny model's step on an AMD EPYC Zen 3 against 1.0 %
    /// for Haswell's vectorised one (docs/PERFORMANCE.md). So AMD CPUs before Zen 4 run Haswell's.
    static let strength = ["prescott", "core2", "nehalem", "sandybridge", "zen", "haswell",
                           "skylakex", "cooperlake", "sapphirerapids"]

    static func rank(_ core: String) -> Int { strength.firstIndex(of: core.lowercased()) ?? -1 }

    /// The x86-64 core types of OpenBLAS 0.3.21 that this project checks (the thread-count
    /// invariance tests run under each one this CPU can execute), weakest first, with the
    /// instruction sets their sgemm kernels need. Prescott is the baseline every x86-64 CPU
    /// runs, and what OpenBLAS falls back to on a CPU it does not recognise.
    public static let checkedCores: [(name: String, needs: [String])] = [
        ("Prescott", []),
        ("Nehalem", ["sse4.2"]),
        ("Sandybridge", ["avx"]),
        ("Haswell", ["avx2", "fma"]),
        ("Zen", ["avx2", "fma"]),
        ("SkylakeX", ["avx512f", "avx512vl", "avx512bw", "avx512dq"]),
        ("Cooperlake", ["avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512bf16"]),
    ]

    /// True when this CPU has every instruction set the named core's kernels use.
    public static func canRun(core: String) -> Bool {
        guard let entry = checkedCores.first(where: { $0.name.lowercased() == core.lowercased() }) else { return false }
        return entry.needs.allSatisfy(CPUInfo.supports)
    }

    /// Whether the loaded kernels give every element of a product the same result when the
    /// product's columns (of our row-major c) are cut into parts at multiples of 48, as
    /// `matrixMultiply` may do. Not so for Haswell's kernels (also Zen's), whose result for
    /// an element depends on its distance from the ends of a call's columns; measured so
    /// for the others the tests check (`checkedCores`). Unknown cores are treated like
    /// Haswell: cutting rows alone is exact on all of them.
    static let columnCutsKeepResults: Bool =
        ["prescott", "nehalem", "sandybridge", "skylakex", "cooperlake"].contains(coreName.lowercased())

    /// The columns of c that `matrixMultiply` may cut a product at are multiples of this
    /// (nil: it cuts rows only). 48 where any multiple of 48 keeps every result
    /// (`columnCutsKeepResults`). On the Haswell family, OpenBLAS 0.3.21's driver hands its
    /// kernel c's columns in blocks of 320 (its sgemm "P"), the edge tiles that round
    /// differently lie at the ends of each block, and blocks are cut from the first column
    /// on: so a cut at a multiple of 320 that leaves at least 320 columns after it falls on
    /// a block boundary of the whole product and moves no edge. Checked here once, on a
    /// product whose blocks have edges (other OpenBLAS versions may block otherwise), and by
    /// `mae check-determinism`; where the check fails, rows only.
    public static let columnCutWidth: Int? = {
        if columnCutsKeepResults { return matrixMultiplyBlock }
        let core = coreName.lowercased()
        guard core == "haswell" || core == "zen" else { return nil }
        return columnCutsAt(haswellColumnBlock, keepResultsOf: (m: 12, n: 2 * haswellColumnBlock, k: 16))
            ? haswellColumnBlock : nil
    }()

    /// Where columns are cut on the Haswell family (`columnCutWidth` 320): 12, the rows of c
    /// its kernel takes at a time. OpenBLAS's driver computes a call's first block of columns
    /// 12 rows of c at a time, then 4 at a time while more than 4 are left, and the other
    /// blocks with all rows at once, which the kernel takes 12, then 8, 4, 2, 1 at a time:
    /// 8 or more rows past the last multiple of 12 meet other tiles (4 + 4 against 8) in the
    /// first block of a part than in the same columns of the whole product. So `ProductCut`
    /// gives such rows a part of their own, with every column. Nil elsewhere.
    static var columnCutTailRowTile: Int? { columnCutWidth == haswellColumnBlock ? 12 : nil }

    /// OpenBLAS 0.3.21's sgemm column block (its `SGEMM_DEFAULT_P`) on the Haswell and Zen cores.
    static let haswellColumnBlock = 320

    /// Whether c = a·bᵀ of `shape`, cut into columns [0, width) and [width, n), gives the same
    /// bits as one call (single-threaded calls; operands from a fixed sequence in [-0.5, 0.5)).
    static func columnCutsAt(_ width: Int, keepResultsOf shape: (m: Int, n: Int, k: Int)) -> Bool {
        let (m, n, k) = shape
        var state: UInt32 = 2_024
        func next(_: Int) -> Float {
            state = state &* 1_664_525 &+ 1_013_904_223
            return Float(state >> 8) / 16_777_216 - 0.5
        }
        let a = (0..<(m * k)).map(next), b = (0..<(k * n)).map(next)
        var whole = [Float](repeating: 0, count: m * n), parts = whole
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                let a = a.baseAddress!, b = b.baseAddress!
                whole.withUnsafeMutableBufferPointer {
                    singleThreadedMatrixMultiply($0.baseAddress!, ldc: n, a, lda: k, b, ldb: k, transposeB: true,
                                                 m: m, n: n, k: k)
                }
                parts.withUnsafeMutableBufferPointer {
                    singleThreadedMatrixMultiply($0.baseAddress!, ldc: n, a, lda: k, b, ldb: k, transposeB: true,
                                                 m: m, n: width, k: k)
                    singleThreadedMatrixMultiply($0.baseAddress! + width, ldc: n, a, lda: k, b + width * k, ldb: k,
                                                 transposeB: true, m: m, n: n - width, k: k)
                }
            }
        }
        return zip(whole, parts).allSatisfy { $0.bitPattern == $1.bitPattern }
    }

    /// Single-thread sgemm speed of each kernel family relative to Haswell's, measured on
    /// an AMD EPYC (docs/PERFORMANCE.md, "OpenBLAS core types"); the AVX-512 families are
    /// about twice Haswell's on CPUs with full-width AVX-512 units and level with it on
    /// Zen 4. Used only to tell a user what a preset core type costs.
    static func relativeSpeed(_ core: String) -> Double? {
        switch core.lowercased() {
        case "prescott", "core2": 0.4
        case "nehalem": 0.35
        case "sandybridge": 0.85
        case "haswell", "zen": 1
        case "skylakex", "cooperlake", "sapphirerapids": CPUInfo.hasFullWidthAVX512 ? 2 : 1
        default: nil
        }
    }

    /// When the user preset `OPENBLAS_CORETYPE` to kernels weaker than this CPU runs, one
    /// line that says so and what it costs; nil otherwise. The setting is kept (the user's
    /// choice wins): older OpenBLAS builds misbehave on some processors, and some images
    /// preset it for that reason.
    public static var presetCoreNote: String? {
        guard let preset = getenv("OPENBLAS_CORETYPE").map({ String(cString: $0) }), getenv(reexecMarker) == nil,
              let best = bestCoreForThisCPU, rank(best) > rank(coreName) else { return nil }
        var cost = ""
        if let slow = relativeSpeed(coreName), let fast = relativeSpeed(best) {
            let factor = fast / slow
            cost = factor >= 1.2
                ? " (about \((factor * 10).rounded() / 10)x faster matrix products)"
                : " (matrix products about as fast on this CPU)"
        }
        return "OPENBLAS_CORETYPE=\(preset) is set; this CPU runs \(best) kernels\(cost); unset it to use them"
    }

    /// Call first thing in `main`. When `OPENBLAS_CORETYPE` is unset and the loaded
    /// kernels are weaker than the CPU supports, re-executes this program with the
    /// variable set to the right core; otherwise returns. Never returns on success of
    /// the re-exec; if `execv` fails the program continues on the slow kernels with a warning.
    public static func ensureFastKernels(arguments: [String] = CommandLine.arguments) {
        guard getenv("OPENBLAS_CORETYPE") == nil, getenv(reexecMarker) == nil,
              let best = bestCoreForThisCPU, rank(best) > rank(coreName) else { return }
        setenv("OPENBLAS_CORETYPE", best, 1)
        setenv(reexecMarker, "1", 1)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        execv("/proc/self/exe", argv)
        let reason = String(cString: strerror(errno))
        var standardError = FileHandleStream.standardError
        print("warning: could not re-execute with OPENBLAS_CORETYPE=\(best) (\(reason)); "
              + "matrix products run on the slower \(coreName) kernels. "
              + "Set OPENBLAS_CORETYPE=\(best) yourself to fix this.", to: &standardError)
    }

    /// Sets the number of threads OpenBLAS uses for each matrix product.
    public static func setThreads(_ count: Int) {
        openblas_set_num_threads(Int32(max(1, count)))
    }

    /// The number of threads OpenBLAS uses.
    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// One line for startup banners: "OpenBLAS 0.3.21 core=Cooperlake threads=2".
    public static var banner: String {
        let config = openblas_get_config().map { String(cString: $0) } ?? "OpenBLAS"
        let version = config.split(separator: " ").prefix(2).joined(separator: " ")
        return "\(version) core=\(coreName) threads=\(threads)"
    }}

/// Writes to a POSIX file descriptor; lets `print(_:to:)` reach standard error.
public struct FileHandleStream: TextOutputStream {
    let descriptor: Int32
    /// Standard error.
    public static var standardError: FileHandleStream { FileHandleStream(descriptor: 2) }
    public mutating func write(_ string: String) {
        var text = string
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 { if errno == EINTR { continue } else { return } }
                offset += written
            }
        }
    }
}
