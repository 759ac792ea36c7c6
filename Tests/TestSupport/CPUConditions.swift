import Kernels
import Testing

/// Whether this CPU runs the bf16 products (AVX512_BF16). Where it does not, `--precision
/// bf16` stops with a one-line error, so tests that run bf16 products are skipped there and
/// the error itself is what gets tested.
public let cpuRunsBFloat16Products = Precision.bf16.unsupportedReason == nil

/// Whether this CPU has the AVX-512 subsets (F, BW, VL) that our C kernels' vector paths need;
/// without them the same functions run their scalar paths.
public let cpuHasAVX512 = ["avx512f", "avx512bw", "avx512vl"].allSatisfy(CPUInfo.supports)

extension Trait where Self == ConditionTrait {
    /// Runs the test only on a CPU with AVX512_BF16 (`cpuRunsBFloat16Products`).
    public static var needsBFloat16Products: Self {
        .enabled(if: cpuRunsBFloat16Products, "this CPU has no AVX512_BF16, which the bf16 products need")
    }
}
