import CSupport
#if canImport(Glibc)
import Glibc
#endif

/// What this machine's processor is, for banners and benchmark records: peer
/// ratios differ by vendor (PyTorch's MKL is fast on Intel, slow on AMD), so every
/// measurement names the CPU it ran on.
public enum CPUInfo {
    /// The processor's name as the kernel reports it ("AMD EPYC", "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz").
    public static let modelName: String = fields["model name"] ?? "unknown CPU"

    /// The vendor ("AuthenticAMD", "GenuineIntel").
    public static let vendor: String = fields["vendor_id"] ?? "unknown vendor"

    /// The processor family and model numbers (AMD Zen 3 and Zen 4 are family 25, Zen 5 26).
    public static let family: Int = fields["cpu family"].flatMap { Int($0) } ?? 0
    public static let model: Int = fields["model"].flatMap { Int($0) } ?? 0

    /// Whether AVX-512 instructions run on 512-bit units. AMD's Zen 4 (family 25) executes
    /// them as two 256-bit halves, so OpenBLAS's AVX-512 kernels run its products no faster
    /// than the AVX2 ones there (measured: docs/PERFORMANCE.md, "OpenBLAS core types");
    /// Intel's AVX-512 Xeons and Zen 5 have full-width units.
    public static var hasFullWidthAVX512: Bool {
        supports("avx512f") && !(vendor == "AuthenticAMD" && family == 25)
    }

    /// One line for banners and benchmark output: "cpu=AMD EPYC (AuthenticAMD), 2 cores".
    public static var summary: String {
        "cpu=\(modelName) (\(vendor)), \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) cores"
    }

    /// True when the CPU has the instruction set extension (names as in cpu.c:
    /// "avx512f", "avx512bf16", "avx2", "fma", "avx", "sse4.2", ...).
    public static func supports(_ feature: String) -> Bool { mae_cpu_supports(feature) != 0 }

    /// The `name : value` lines of the first processor in /proc/cpuinfo, read once.
    static let fields: [String: String] = {
        guard let file = fopen("/proc/cpuinfo", "r") else { return [:] }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        var fields: [String: String] = [:]
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line)
            if text == "\n" { break }  // the end of the first processor's block
            guard let colon = text.firstIndex(of: ":") else { continue }
            fields[trimmed(text[..<colon])] = trimmed(text[text.index(after: colon)...])
        }
        return fields
    }()
}

/// The text without spaces, tabs and line ends at either end.
private func trimmed(_ text: Substring) -> String {
    var result = text
    while let first = result.first, first == " " || first == "\t" || first == "\n" { result = result.dropFirst() }
    while let last = result.last, last == " " || last == "\t" || last == "\n" { result = result.dropLast() }
    return String(result)
}
