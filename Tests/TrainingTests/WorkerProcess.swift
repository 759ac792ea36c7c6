import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A `mae-worker` child process started by a test, with its output in files. Every one is
/// waited for with a time limit and killed by its pid when it overstays.
final class WorkerProcess {
    let process = Process()
    let outputPath: String
    let errorPath: String

    /// The built `mae-worker`, next to the test bundle (SwiftPM builds every product with the tests).
    static let executable: String? = builtExecutable("mae-worker")

    /// Starts `mae-worker arguments`; stdout and stderr go to `logDirectory/name.out|err`.
    /// `executable` replaces `mae-worker` (the tests of `mae`'s commands); `extra` adds to the environment.
    init(_ arguments: [String], logDirectory: String, name: String, executable: String? = nil,
         environment extra: [String: String] = [:]) throws {
        guard let executable = executable ?? Self.executable else {
            throw TestFailure("mae-worker is not built next to the tests; run 'swift build --build-tests' first")
        }
        outputPath = logDirectory + "/\(name).out"
        errorPath = logDirectory + "/\(name).err"
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
        var environment = ProcessInfo.processInfo.environment
        environment["OPENBLAS_NUM_THREADS"] = "1"
        environment.merge(extra) { $1 }
        process.environment = environment
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var output: String { readText(outputPath) }
    var errors: String { readText(errorPath) }

    func send(_ signalNumber: Int32) { kill(pid, signalNumber) }

    /// Waits at most `seconds`; on overstay kills the process by its pid and throws.
    /// Returns the exit status, or 128 + the signal that ended it.
    @discardableResult
    func wait(seconds: Double) throws -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
            throw TestFailure("mae-worker \(process.arguments ?? []) ran longer than \(seconds) s and was killed; "
                              + "output:\n\(output)\nerrors:\n\(errors)")
        }
        process.waitUntilExit()
        return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    }

    /// Polls (every 5 ms, at most `seconds`) until `condition` holds or the process exits.
    func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            if !process.isRunning { return condition() }
            usleep(5_000)
        }
        return false
    }

    deinit {
        if process.isRunning { kill(pid, SIGKILL); process.waitUntilExit() }
    }
}


/// A free TCP port on 127.0.0.1 (bound to port 0, read back, released).
func freeLoopbackPort() throws -> Int {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw TestFailure("socket failed") }
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
    }
    guard bound == 0 else { throw TestFailure("bind failed") }
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
    }
    guard named == 0 else { throw TestFailure("getsockname failed") }
    return Int(UInt16(bigEndian: address.sin_port))
}
