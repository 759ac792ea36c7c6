import System
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// 64-bit FNV-1a, used to detect checkpoint files damaged after they were written
/// (torn copies, bit rot, truncation). Not a cryptographic hash.
public struct FNV1a64: Sendable {
    public private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    public init() {}

    /// Folds `bytes` into the hash.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        var hash = value
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        value = hash
    }

    /// The hash as 16 lowercase hex digits.
    public var hex: String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// The hash of a whole file, read in 1 MiB pieces, as "fnv1a64:<hex>".
    public static func ofFile(_ path: String) throws -> String {
        try TrainingError.reportingSystemCalls {
            let descriptor = try FileSystem.open(path, flags: O_RDONLY | O_CLOEXEC)
            defer { FileSystem.close(descriptor) }
            var hash = FNV1a64()
            let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
            defer { chunk.deallocate() }
            while true {
                let count = try FileSystem.read(descriptor, into: chunk.baseAddress!, count: chunk.count, path: path)
                if count == 0 { break }
                hash.update(UnsafeRawBufferPointer(rebasing: chunk[0..<count]))
            }
            return "fnv1a64:" + hash.hex
        }
    }
}
