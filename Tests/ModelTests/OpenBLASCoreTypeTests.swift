import Kernels
import Testing
import TestSupport

/// The thread count changes no bit of a matrix product or a training step under every
/// OpenBLAS core type this CPU can execute, not only the one loaded here: OpenBLAS picks
/// its kernels once, when it loads, so each core type runs in a child process
/// (`OPENBLAS_CORETYPE=NAME mae check-determinism`). Users and images preset that
/// variable (Haswell on AMD EPYC, for example), and the promise must hold under it.
@Suite(.serialized) struct OpenBLASCoreTypeTests {
    /// The checked core types this CPU has the instructions for.
    static let runnableCores = BLASRuntime.checkedCores.map(\.name).filter(BLASRuntime.canRun)

    /// Runs `mae check-determinism arguments` under `core` (nil: OPENBLAS_CORETYPE unset, so
    /// the program picks); returns its exit status and output.
    static func checkDeterminism(_ arguments: [String], core: String?, seconds: Double) throws -> (status: Int32?, output: String) {
        let logs = try TemporaryDirectory("core-types")
        defer { logs.remove() }
        let child = try TestProcess(try TestProcess.product("mae"), ["check-determinism"] + arguments, logDirectory: logs.path,
                                    name: core ?? "unset", environment: ["OPENBLAS_CORETYPE": core, "MAE_BLAS_REEXEC": nil])
        defer { child.stop() }
        let status = child.exitStatus(within: seconds)
        return (status, child.output)
    }

    @Test(arguments: runnableCores)
    func threadCountChangesNoBit(core: String) throws {
        // The mini model's whole step, and the products of the tiny model and ViT-B
        // (the tiny model's whole step runs in-process in MAEModelTests).
        // 8 and 16 threads cut the larger products into grids of rows and columns.
        let result = try Self.checkDeterminism(["--threads", "1,2,3,4,8,16", "--models", "mini"], core: core, seconds: 400)
        #expect(result.status == 0, "under \(core):\n\(result.output)")
        // The core asked for is the one OpenBLAS loaded: the check proves nothing of another.
        #expect(result.output.lowercased().contains("core=\(core.lowercased()) "), "under \(core):\n\(result.output)")
        #expect(result.output.contains("result: identical"), "under \(core):\n\(result.output)")
        // Columns are cut wherever the kernels allow it (on Haswell and Zen at OpenBLAS's own
        // blocks of 320, found by the start-up check), so the check above covered such cuts.
        let width = ["haswell", "zen"].contains(core.lowercased()) ? 320 : 48
        #expect(result.output.contains("by columns at multiples of \(width)"), "under \(core):\n\(result.output)")
    }

    /// The project is built for x86-64-v3, so every CPU that runs it checks at least the
    /// baseline, SSE4.2, AVX and AVX2 kernel families (Haswell and Zen among them).
    @Test func everyX86CPUChecksTheCommonCores() {
        #if arch(x86_64)
        for core in ["Prescott", "Nehalem", "Sandybridge", "Haswell", "Zen"] {
            #expect(Self.runnableCores.contains(core), "\(core) is not checked on \(CPUInfo.modelName)")
        }
        #endif
    }

    /// A preset core weaker than the CPU supports is kept and named in one banner line:
    /// Haswell on a CPU with AVX-512, Zen (whose beta pass is slower) on one with AVX2 only.
    @Test(.enabled(if: BLASRuntime.bestCoreForThisCPU != nil, "needs a CPU with AVX2 and FMA"))
    func aWeakerPresetCoreIsKeptAndNamed() throws {
        let best = try #require(BLASRuntime.bestCoreForThisCPU)
        let preset = best == "Haswell" ? "Zen" : "Haswell"
        let result = try Self.checkDeterminism(["--models", "none", "--threads", "1,2"], core: preset, seconds: 120)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("core=\(preset) "), "the preset core was not kept:\n\(result.output)")
        #expect(result.output.contains("note: OPENBLAS_CORETYPE=\(preset) is set; this CPU runs \(best) kernels"),
                "\(result.output)")
    }

    /// Without a preset, the program runs the strongest core this CPU supports, re-executing
    /// itself with OPENBLAS_CORETYPE set where OpenBLAS picked a weaker one (Prescott under
    /// some hypervisors, Zen on AMD CPUs before Zen 4).
    @Test(.enabled(if: BLASRuntime.bestCoreForThisCPU != nil, "needs a CPU with AVX2 and FMA"))
    func theStrongestCoreRunsWithoutAPreset() throws {
        let best = try #require(BLASRuntime.bestCoreForThisCPU)
        let result = try Self.checkDeterminism(["--models", "none", "--threads", "1,2"], core: nil, seconds: 120)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("core=\(best) "), "\(result.output)")
    }
}
