#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

extension FileSystem {
    /// What a path is, following symbolic links.
    public enum Kind: Sendable, Equatable { case directory, regularFile, other }

    /// What `path` is; nil when it does not exist (or cannot be looked at).
    public static func kind(of path: String) -> Kind? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        switch info.st_mode & S_IFMT {
        case S_IFDIR: return .directory
        case S_IFREG: return .regularFile
        default: return .other
        }
    }

    /// Whether `path` exists (following symbolic links).
    public static func exists(_ path: String) -> Bool { kind(of: path) != nil }

    /// Whether `path` is a directory (following symbolic links).
    public static func isDirectory(_ path: String) -> Bool { kind(of: path) == .directory }

    /// The entries of a directory, without "." and "..", unsorted; `kind` is nil for a
    /// dangling symbolic link.
    public static func entries(of path: String) throws -> [(name: String, kind: Kind?)] {
        var result: [(name: String, kind: Kind?)] = []
        try forEachEntry(of: path) { name, type in
            // d_type saves a stat per file; links and unknown types are resolved with stat.
            let kind: Kind?
            switch Int32(type) {
            case Int32(DT_DIR): kind = .directory
            case Int32(DT_REG): kind = .regularFile
            default: kind = self.kind(of: path + "/" + name)
            }
            result.append((name, kind))
        }
        return result
    }

    /// The names in a directory, without "." and "..", sorted.
    public static func contents(of path: String) throws -> [String] {
        var names: [String] = []
        try forEachEntry(of: path) { name, _ in names.append(name) }
        return names.sorted()
    }

    /// Calls `body` with the name and d_type of each entry but "." and "..".
    private static func forEachEntry(of path: String, _ body: (String, UInt8) -> Void) throws {
        guard let directory = opendir(path) else { throw SystemCallError(call: "opendir", path: path, code: errno) }
        defer { closedir(directory) }
        while true {
            errno = 0
            guard let entry = readdir(directory) else {
                if errno != 0 { throw SystemCallError(call: "readdir", path: path, code: errno) }
                return
            }
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { body(name, entry.pointee.d_type) }
        }
    }

    /// Creates one directory; an existing one is fine.
    public static func makeDirectory(_ path: String) throws {
        guard SystemCall.retryingInterrupted({ mkdir(path, 0o755) }) == 0 || errno == EEXIST else {
            throw SystemCallError(call: "mkdir", path: path, code: errno)
        }
    }

    /// Creates a directory and its missing parents; an existing directory is fine.
    public static func makeDirectories(_ path: String) throws {
        if isDirectory(path) { return }
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if !isDirectory(prefix) { try makeDirectory(prefix) }
        }
    }

    /// Renames `from` to `to`, replacing a file (or an empty directory) there.
    public static func rename(_ from: String, _ to: String) throws {
        try SystemCall.retrying("rename", path: "\(from) -> \(to)") { Glibc.rename(from, to) }
    }

    /// Removes a file or a directory tree (symbolic links are removed, not followed);
    /// a missing path is fine.
    public static func removeTree(_ path: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw SystemCallError(call: "lstat", path: path, code: errno)
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            for name in try contents(of: path) { try removeTree(path + "/" + name) }
            try SystemCall.retrying("rmdir", path: path) { rmdir(path) }
        } else {
            try SystemCall.retrying("unlink", path: path) { unlink(path) }
        }
    }
}
