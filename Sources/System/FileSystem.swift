#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// The file system calls of the package, each wrapped once: EINTR is retried, and a
/// failure is thrown as a `SystemCallError` naming the call, the path and the reason.
/// Modules that promise their own error type map it at their boundary.
public enum FileSystem {
    // MARK: Descriptors

    /// Opens `path` with `flags` (and `mode` when creating).
    public static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws -> Int32 {
        try SystemCall.retrying("open", path: path) { Glibc.open(path, flags, mode) }
    }

    /// Closes a descriptor written to; a failure (for example a delayed write error) is thrown.
    public static func close(_ descriptor: Int32, path: String) throws {
        // EINTR on close leaves the descriptor closed on Linux: retrying would be wrong.
        guard Glibc.close(descriptor) == 0 || errno == EINTR else {
            throw SystemCallError(call: "close", path: path, code: errno)
        }
    }

    /// Closes a descriptor whose close has nothing to report: one only read from, one
    /// already fsynced, or one given up after another error (which is the one to throw).
    public static func close(_ descriptor: Int32) {
        _ = Glibc.close(descriptor)
    }

    /// Size of the open file in bytes.
    public static func size(of descriptor: Int32, path: String) throws -> Int {
        var info = stat()
        try SystemCall.retrying("fstat", path: path) { fstat(descriptor, &info) }
        return max(Int(info.st_size), 0)
    }

    /// Reads up to `count` bytes into `bytes`; returns how many, 0 at the end of the file.
    public static func read(_ descriptor: Int32, into bytes: UnsafeMutableRawPointer, count: Int, path: String) throws -> Int {
        try SystemCall.retrying("read", path: path) { Glibc.read(descriptor, bytes, count) }
    }

    /// Writes all of `bytes`, continuing after short writes.
    public static func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        guard let base = bytes.baseAddress else { return }
        var offset = 0
        while offset < bytes.count {
            // Linux transfers at most about 2 GiB per call; larger tensors take several.
            let chunk = min(bytes.count - offset, 1 << 30)
            offset += try SystemCall.retrying("write", path: path) { Glibc.write(descriptor, base + offset, chunk) }
        }
    }

    /// Flushes an open file to stable storage.
    public static func fsync(_ descriptor: Int32, path: String) throws {
        try SystemCall.retrying("fsync", path: path) { Glibc.fsync(descriptor) }
    }

    /// Flushes a file or a directory (its entries: creations, renames) to stable storage.
    public static func fsync(path: String) throws {
        let descriptor = try open(path, flags: O_RDONLY | O_CLOEXEC)
        defer { close(descriptor) }
        try fsync(descriptor, path: path)
    }

    // MARK: Whole files

    /// Reads a whole file into `buffer`, growing it when needed; returns the byte count.
    public static func readFile(_ path: String, into buffer: ByteBuffer) throws -> Int {
        let descriptor = try open(path, flags: O_RDONLY | O_CLOEXEC)
        defer { close(descriptor) }
        var size = 0
        var expected = try self.size(of: descriptor, path: path)
        while true {
            buffer.reserve(expected + 1)  // one byte more, so that the end of the file is seen in this pass
            let count = try read(descriptor, into: buffer.pointer + size, count: buffer.capacity - size, path: path)
            if count == 0 { return size }
            size += count
            if size == buffer.capacity { expected = size * 2 }   // the file grew while we read it
        }
    }

    /// The whole file.
    public static func readFile(_ path: String) throws -> [UInt8] {
        let buffer = ByteBuffer(capacity: 1)
        let count = try readFile(path, into: buffer)
        return Array(UnsafeBufferPointer(start: buffer.pointer, count: count))
    }

    /// Writes `bytes` to `path` (created or truncated), all or an error; with
    /// `synchronize`, the file is on stable storage when this returns.
    public static func writeFile(_ path: String, bytes: UnsafeRawBufferPointer, synchronize: Bool = false) throws {
        let descriptor = try open(path, flags: O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC)
        do {
            try writeAll(descriptor, bytes, path: path)
            if synchronize { try fsync(descriptor, path: path) }
        } catch {
            close(descriptor)
            throw error
        }
        try close(descriptor, path: path)
    }

    /// Writes `bytes` to `path` (created or truncated); see `writeFile(_:bytes:synchronize:)`.
    public static func writeFile(_ path: String, bytes: [UInt8], synchronize: Bool = false) throws {
        try bytes.withUnsafeBytes { try writeFile(path, bytes: $0, synchronize: synchronize) }
    }

    /// Appends `text` to a file, creating it; one `write` (O_APPEND) so that lines stay whole.
    public static func append(_ path: String, text: String) throws {
        let descriptor = try open(path, flags: O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC)
        do {
            try Array(text.utf8).withUnsafeBytes { try writeAll(descriptor, $0, path: path) }
        } catch {
            close(descriptor)
            throw error
        }
        try close(descriptor, path: path)
    }
}
