import Testing
import System
#if canImport(Glibc)
import Glibc
#endif

/// A fresh directory under /tmp, removed by the test.
private func makeTemporaryDirectory() throws -> String {
    var template = Array("/tmp/mae-system-test-XXXXXX".utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw SystemCallError(call: "mkdtemp", path: "/tmp", code: errno)
    }
    return String(cString: made)
}

@Suite struct FileSystemTests {
    @Test func writeReadAppendAndSync() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileSystem.removeTree(directory) }
        let path = directory + "/data.bin"
        let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        try FileSystem.writeFile(path, bytes: bytes, synchronize: true)
        try FileSystem.fsync(path: path)
        try FileSystem.fsync(path: directory)
        #expect(try FileSystem.readFile(path) == bytes)

        // A buffer smaller than the file grows; the same buffer serves a smaller file after.
        let buffer = ByteBuffer(capacity: 16)
        #expect(try FileSystem.readFile(path, into: buffer) == bytes.count)
        #expect(Array(UnsafeBufferPointer(start: buffer.pointer, count: bytes.count)) == bytes)
        try FileSystem.writeFile(path, bytes: [1, 2, 3])
        #expect(try FileSystem.readFile(path, into: buffer) == 3)
        #expect(Array(UnsafeBufferPointer(start: buffer.pointer, count: 3)) == [1, 2, 3])

        try FileSystem.append(path, text: "ab")
        try FileSystem.append(path, text: "c\n")
        #expect(try FileSystem.readFile(path) == [1, 2, 3] + Array("abc\n".utf8))

        try FileSystem.writeFile(path, bytes: [])
        #expect(try FileSystem.readFile(path).isEmpty)
        let mapped = try MappedFile(path: path)
        #expect(mapped.bytes.count == 0)
    }

    @Test func descriptorCallsAndMapping() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileSystem.removeTree(directory) }
        let path = directory + "/weights.bin"
        let descriptor = try FileSystem.open(path, flags: O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC)
        let values: [Float] = [1.5, -2, 3.25]
        try values.withUnsafeBytes { try FileSystem.writeAll(descriptor, $0, path: path) }
        try FileSystem.fsync(descriptor, path: path)
        #expect(try FileSystem.size(of: descriptor, path: path) == 12)
        try FileSystem.close(descriptor, path: path)

        let mapped = try MappedFile(path: path)
        #expect(Array(mapped.bytes.bindMemory(to: Float.self)) == values)
    }

    @Test func directoriesRenameListAndRemove() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileSystem.removeTree(directory) }
        let nested = directory + "/a/b/c"
        try FileSystem.makeDirectories(nested)
        try FileSystem.makeDirectories(nested)  // existing: fine
        try FileSystem.makeDirectory(nested)
        #expect(FileSystem.isDirectory(nested))
        #expect(FileSystem.kind(of: nested) == .directory)

        try FileSystem.writeFile(directory + "/a/old.txt", bytes: Array("x".utf8))
        try FileSystem.rename(directory + "/a/old.txt", directory + "/a/new.txt")
        #expect(!FileSystem.exists(directory + "/a/old.txt"))
        #expect(FileSystem.kind(of: directory + "/a/new.txt") == .regularFile)
        #expect(symlink(directory + "/a/missing", directory + "/a/dangling") == 0)

        #expect(try FileSystem.contents(of: directory + "/a") == ["b", "dangling", "new.txt"])
        let entries = try FileSystem.entries(of: directory + "/a").sorted { $0.name < $1.name }
        #expect(entries.map(\.name) == ["b", "dangling", "new.txt"])
        #expect(entries[0].kind == .directory)
        #expect(entries[1].kind == nil)
        #expect(entries[2].kind == .regularFile)

        try FileSystem.removeTree(directory + "/a")
        #expect(!FileSystem.exists(directory + "/a"))
        try FileSystem.removeTree(directory + "/a")  // missing: fine
        #expect(try FileSystem.contents(of: directory).isEmpty)
    }

    @Test func failuresNameTheCallAndThePath() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileSystem.removeTree(directory) }
        let missing = directory + "/missing/file"
        func expectFailure(_ call: String, _ path: String, code: Int32, _ body: () throws -> Void) {
            do {
                try body()
                Issue.record("\(call) on \(path) succeeded")
            } catch let error as SystemCallError {
                #expect(error.call == call)
                #expect(error.path == path)
                #expect(error.code == code)
                #expect(error.description.contains("\(call)(\(path)) failed: "))
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
        expectFailure("open", missing, code: ENOENT) { _ = try FileSystem.readFile(missing) }
        expectFailure("open", missing, code: ENOENT) { try FileSystem.writeFile(missing, bytes: [1]) }
        expectFailure("open", missing, code: ENOENT) { _ = try MappedFile(path: missing) }
        expectFailure("opendir", missing, code: ENOENT) { _ = try FileSystem.contents(of: missing) }
        expectFailure("mkdir", missing, code: ENOENT) { try FileSystem.makeDirectory(missing) }
        expectFailure("rename", "\(missing) -> \(directory)/b", code: ENOENT) {
            try FileSystem.rename(missing, directory + "/b")
        }
        try FileSystem.writeFile(directory + "/file", bytes: [1])
        expectFailure("mkdir", directory + "/file/sub", code: ENOTDIR) {
            try FileSystem.makeDirectories(directory + "/file/sub")
        }
    }
}
