#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// A failed system call: which call, on which file, and why (from errno).
public struct SystemCallError: Error, CustomStringConvertible, Sendable {
    /// The call, e.g. "open".
    public let call: String
    /// The file it was made for.
    public let path: String
    /// errno at the time of the failure.
    public let code: Int32

    public var description: String {
        "\(call)(\(path)) failed: \(String(cString: strerror(code)))"
    }
}

/// The few file system calls the weights I/O needs, each wrapped once: EINTR is
/// retried, -1 becomes a thrown `SystemCallError` naming the call and the file.
enum PosixFile {
    /// Opens `path` with `flags` (and `mode` when creating).
    static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws -> Int32 {
        while true {
            let descriptor = Glibc.open(path, flags, mode)
            if descriptor >= 0 { return descriptor }
            if errno != EINTR { throw SystemCallError(call: "open", path: path, code: errno) }
        }
    }

    /// Size of the open file in bytes.
    static func size(_ descriptor: Int32, path: String) throws -> Int {
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw SystemCallError(call: "fstat", path: path, code: errno) }
        return Int(status.st_size)
    }

    /// Writes all `count` bytes, continuing after short writes.
    static func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawPointer, count: Int, path: String) throws {
        var offset = 0
        while offset < count {
            // Linux transfers at most about 2 GiB per call; larger tensors take several.
            let chunk = min(count - offset, 1 << 30)
            let written = Glibc.write(descriptor, bytes + offset, chunk)
            if written < 0 {
                if errno == EINTR { continue }
                throw SystemCallError(call: "write", path: path, code: errno)
            }
            offset += written
        }
    }

    /// Closes the descriptor; a failure (for example a delayed write error) is thrown.
    static func close(_ descriptor: Int32, path: String) throws {
        // EINTR on close leaves the descriptor closed on Linux: retrying would be wrong.
        guard Glibc.close(descriptor) == 0 || errno == EINTR else {
            throw SystemCallError(call: "close", path: path, code: errno)
        }
    }
}

/// A read-only memory map of a whole file, unmapped when released.
final class MappedFile: @unchecked Sendable {
    /// The file's bytes (valid while `self` is alive).
    let bytes: UnsafeRawBufferPointer

    /// Maps `path` read-only. An empty file maps to an empty buffer.
    init(path: String) throws {
        let descriptor = try PosixFile.open(path, flags: O_RDONLY | O_CLOEXEC)
        defer { _ = Glibc.close(descriptor) }
        let size = try PosixFile.size(descriptor, path: path)
        guard size > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0), address != MAP_FAILED else {
            throw SystemCallError(call: "mmap", path: path, code: errno)
        }
        bytes = UnsafeRawBufferPointer(start: address, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }
}
