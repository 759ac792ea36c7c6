import Foundation
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// The system calls the checkpoint store needs, each wrapped once: EINTR is retried
/// and a failure becomes a `TrainingError.system` naming the call and the path.
enum FileSystem {
    /// The text of an errno value.
    static func errorText(_ code: Int32) -> String { systemErrorText(code) }

    /// Runs `body` until it does not fail with EINTR; throws for any other failure.
    @discardableResult
    static func retrying(_ call: String, _ path: String, _ body: () -> Int32) throws -> Int32 {
        while true {
            let result = body()
            if result >= 0 { return result }
            if errno == EINTR { continue }
            throw TrainingError.system(call: call, path: path, errno: errno)
        }
    }

    /// Opens `path` with `flags`.
    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o644) throws -> Int32 {
        try retrying("open", path) { Glibc.open(path, flags, mode) }
    }

    static func close(_ descriptor: Int32) {
        _ = Glibc.close(descriptor)  // after fsync the data is safe; close errors carry no information then
    }

    /// Flushes a file or directory to stable storage.
    static func fsync(path: String) throws {
        let descriptor = try open(path, O_RDONLY)
        defer { close(descriptor) }
        try retrying("fsync", path) { Glibc.fsync(descriptor) }
    }

    /// Writes all of `bytes` to a new file (replacing an old one), then fsyncs it.
    static func writeFile(_ path: String, bytes: [UInt8]) throws {
        let descriptor = try open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC)
        defer { close(descriptor) }
        var offset = 0
        try bytes.withUnsafeBytes { raw in
            while offset < raw.count {
                let written = Glibc.write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw TrainingError.system(call: "write", path: path, errno: errno)
                }
                offset += written
            }
        }
        try retrying("fsync", path) { Glibc.fsync(descriptor) }
    }

    /// Appends `text` to a file, creating it; one `write` so that lines stay whole.
    static func append(_ path: String, text: String) throws {
        let descriptor = try open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC)
        defer { close(descriptor) }
        let bytes = Array(text.utf8)
        var offset = 0
        try bytes.withUnsafeBytes { raw in
            while offset < raw.count {
                let written = Glibc.write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw TrainingError.system(call: "write", path: path, errno: errno)
                }
                offset += written
            }
        }
    }

    /// The whole file.
    static func readFile(_ path: String) throws -> [UInt8] {
        let descriptor = try open(path, O_RDONLY | O_CLOEXEC)
        defer { close(descriptor) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress!, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw TrainingError.system(call: "read", path: path, errno: errno)
            }
            if count == 0 { return result }
            result.append(contentsOf: chunk[0..<count])
        }
    }

    /// Creates one directory; an existing one is fine.
    static func makeDirectory(_ path: String) throws {
        while mkdir(path, 0o755) != 0 {
            if errno == EINTR { continue }
            if errno == EEXIST { return }
            throw TrainingError.system(call: "mkdir", path: path, errno: errno)
        }
    }

    /// Creates a directory and its missing parents.
    static func makeDirectories(_ path: String) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            try makeDirectory(current)
        }
    }

    static func rename(_ from: String, _ to: String) throws {
        try retrying("rename", "\(from) -> \(to)") { Glibc.rename(from, to) }
    }

    static func exists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// The names in a directory, without "." and "..".
    static func contents(of path: String) throws -> [String] {
        guard let directory = opendir(path) else { throw TrainingError.system(call: "opendir", path: path, errno: errno) }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Removes a file or a directory tree; a missing path is fine.
    static func removeTree(_ path: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw TrainingError.system(call: "lstat", path: path, errno: errno)
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            for name in try contents(of: path) { try removeTree(path + "/" + name) }
            try retrying("rmdir", path) { rmdir(path) }
        } else {
            try retrying("unlink", path) { unlink(path) }
        }
    }
}

/// The text of an errno value, e.g. "No such file or directory (errno 2)".
func systemErrorText(_ code: Int32) -> String {
    "\(String(cString: strerror(code))) (errno \(code))"
}
