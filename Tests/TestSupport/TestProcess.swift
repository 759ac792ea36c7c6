import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A process a test starts (a built executable of this package, or `ip`), with its output
/// in files. Every one is stopped by its pid: `stop()` (also from deinit) sends SIGKILL
/// when it still runs; every wait has a limit.
public final class TestProcess {
    public let process = Process()
    public let outputPath: String
    public let name: String

    /// A built executable of this package, next to the tests (SwiftPM builds every product with them).
    public static func product(_ name: String) throws -> String {
        guard let path = builtExecutable(name) else {
            throw TestFailure("\(name) is not built next to the tests; run 'swift build --build-tests' first")
        }
        return path
    }

    /// Starts `executable arguments`; standard output and error both go to `logDirectory/name.log`.
    /// `environment` changes this process's environment for the child (nil removes a variable).
    public init(_ executable: String, _ arguments: [String], logDirectory: String, name: String,
                environment changes: [String: String?] = [:]) throws {
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
        for (variable, value) in changes { environment[variable] = value }
        process.environment = environment
        try process.run()
    }

    public var pid: Int32 { process.processIdentifier }
    public var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    public var isRunning: Bool { process.isRunning }

    public func send(_ signalNumber: Int32) { if process.isRunning { kill(pid, signalNumber) } }

    /// The exit status (or 128 + signal) within `seconds`, or nil (the process still runs).
    public func exitStatus(within seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { return nil }
        process.waitUntilExit()
        return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    }

    /// SIGKILL when it still runs, and reap it.
    public func stop() {
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

/// A test's own failure (a missing product, a process that overstayed), thrown with what happened.
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

