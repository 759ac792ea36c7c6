import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A process a test starts (a built executable of this package, or `ip`), with its output
/// in files. Every one is stopped by its pid: `stop()` (also from deinit) sends SIGKILL
/// when it still runs; every wait has a limit.
final class TestProcess {
    let process = Process()
    let outputPath: String
    let name: String

    /// A built executable of this package, next to the tests (SwiftPM builds every product with them).
    static func product(_ name: String) throws -> String {
        guard let path = builtExecutable(name) else {
            throw TestFailure("\(name) is not built next to the tests; run 'swift build --build-tests' first")
        }
        return path
    }

    /// Starts `executable arguments`; standard output and error both go to `logDirectory/name.log`.
    init(_ executable: String, _ arguments: [String], logDirectory: String, name: String) throws {
        self.name = name
        outputPath = logDirectory + "/\(name).log"
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        process.standardOutput = handle
        process.standardError = handle
        var environment = ProcessInfo.processInfo.environment
        environment["OPENBLAS_NUM_THREADS"] = "1"
        process.environment = environment
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    var isRunning: Bool { process.isRunning }

    func send(_ signalNumber: Int32) { if process.isRunning { kill(pid, signalNumber) } }

    /// The exit status (or 128 + signal) within `seconds`, or nil (the process still runs).
    func exitStatus(within seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { return nil }
        process.waitUntilExit()
        return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    }

    /// SIGKILL when it still runs, and reap it.
    func stop() {
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Polls `condition` every 20 ms for at most `seconds`.
func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

/// True while a process with this pid exists (and is not a zombie).
func isAlive(_ pid: Int32) -> Bool {
    guard pid > 0, kill(pid, 0) == 0 else { return false }
    let status = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    return !status.contains(") Z ")
}

func readText(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
