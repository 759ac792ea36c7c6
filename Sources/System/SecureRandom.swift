#if canImport(Glibc)
import Glibc
#endif

/// `count` bytes from the kernel's random source (/dev/urandom), for nonces and secrets.
public func secureRandomBytes(_ count: Int) throws -> [UInt8] {
    let descriptor = try FileSystem.open("/dev/urandom", flags: O_RDONLY | O_CLOEXEC)
    defer { FileSystem.close(descriptor) }
    var bytes = [UInt8](repeating: 0, count: count)
    var filled = 0
    while filled < count {
        let read = try bytes.withUnsafeMutableBytes {
            try FileSystem.read(descriptor, into: $0.baseAddress! + filled, count: count - filled, path: "/dev/urandom")
        }
        guard read > 0 else { throw SystemCallError(call: "read", path: "/dev/urandom", code: EIO) }
        filled += read
    }
    return bytes
}
