#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// The few POSIX calls the data pipeline makes, each wrapped once: EINTR is retried
/// and a failure is thrown as a `DataError` that names the call, the path and the reason.
enum FileSystem {
    /// The reason for `errno`, e.g. "No such file or directory".
    static func reason(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

    /// What a path is, following symbolic links; nil when it does not exist.
    enum Kind { case directory, regularFile, other }

    static func kind(of path: String) -> Kind? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        switch info.st_mode & S_IFMT {
        case S_IFDIR: return .directory
        case S_IFREG: return .regularFile
        default: return .other
        }
    }

    /// Names in a directory, without "." and "..", unsorted.
    static func entries(of path: String) throws -> [(name: String, kind: Kind?)] {
        guard let directory = opendir(path) else {
            throw DataError("opendir(\(path)) failed: \(reason())")
        }
        defer { closedir(directory) }
        var result: [(name: String, kind: Kind?)] = []
        while true {
            errno = 0
            guard let entry = readdir(directory) else {
                if errno != 0 { throw DataError("readdir(\(path)) failed: \(reason())") }
                break
            }
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name == "." || name == ".." { continue }
            // d_type saves a stat per file; links and unknown types are resolved with stat.
            let kind: Kind?
            switch Int32(entry.pointee.d_type) {
            case Int32(DT_DIR): kind = .directory
            case Int32(DT_REG): kind = .regularFile
            default: kind = self.kind(of: path + "/" + name)
            }
            result.append((name, kind))
        }
        return result
    }

    /// Reads a whole file into `buffer`, growing it when needed; returns the byte count.
    static func readFile(_ path: String, into buffer: ByteBuffer) throws -> Int {
        let descriptor = try retrying("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(descriptor) }
        var info = stat()
        _ = try retrying("fstat", path) { fstat(descriptor, &info) }
        var size = 0
        var expected = max(Int(info.st_size), 0)
        while true {
            buffer.reserve(expected + 1)
            let count = try retrying("read", path) { read(descriptor, buffer.pointer + size, buffer.capacity - size) }
            if count == 0 { return size }
            size += count
            if size == buffer.capacity { expected = size * 2 }   // the file grew while we read it
        }
    }

    /// Writes `count` bytes to `path` (created or truncated), all or an error.
    static func writeFile(_ path: String, bytes: UnsafeRawPointer, count: Int) throws {
        let descriptor = try retrying("open", path) { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        var closed = false
        defer { if !closed { close(descriptor) } }
        var offset = 0
        while offset < count {
            let written = try retrying("write", path) { write(descriptor, bytes + offset, count - offset) }
            offset += written
        }
        closed = true
        if close(descriptor) != 0 && errno != EINTR { throw DataError("close(\(path)) failed: \(reason())") }
    }

    /// Creates a directory and its parents; an existing directory is fine.
    static func makeDirectories(_ path: String) throws {
        if kind(of: path) == .directory { return }
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if kind(of: prefix) == .directory { continue }
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw DataError("mkdir(\(prefix)) failed: \(reason())")
            }
        }
    }

    /// Runs a call that returns -1 and sets errno on failure, retrying EINTR.
    @discardableResult
    static func retrying<T: BinaryInteger>(_ call: String, _ path: String, _ body: () -> T) throws -> T {
        while true {
            let result = body()
            if result >= 0 { return result }
            if errno == EINTR { continue }
            throw DataError("\(call)(\(path)) failed: \(reason())")
        }
    }
}

/// A growable raw byte buffer owned by one thread and reused from file to file.
final class ByteBuffer {
    private(set) var pointer: UnsafeMutablePointer<UInt8>
    private(set) var capacity: Int

    init(capacity: Int = 1 << 16) {
        self.capacity = max(capacity, 1)
        pointer = .allocate(capacity: self.capacity)
    }

    deinit { pointer.deallocate() }

    /// Makes room for at least `count` bytes, keeping the contents.
    func reserve(_ count: Int) {
        guard count > capacity else { return }
        let grown = max(count, capacity * 2)
        let replacement = UnsafeMutablePointer<UInt8>.allocate(capacity: grown)
        replacement.update(from: pointer, count: capacity)
        pointer.deallocate()
        pointer = replacement
        capacity = grown
    }
}
