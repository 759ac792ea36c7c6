import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The path of a product (`mae`, `mae-worker`) built next to the test bundle, which
/// `swift build --build-tests` builds with the tests; nil when there is none.
public func builtExecutable(_ name: String) -> String? {
    let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    var directory = testBinary.deletingLastPathComponent()
    var candidates = [directory.appendingPathComponent(name).path]
    for _ in 0..<4 {  // inside an .xctest bundle the products are a few levels up
        directory = directory.deletingLastPathComponent()
        candidates.append(directory.appendingPathComponent(name).path)
    }
    candidates.append(FileManager.default.currentDirectoryPath + "/.build/debug/" + name)
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// What a finished child process left: its exit status (128 + the signal when one ended
/// it) and its standard output and error together.
public struct ChildResult: Sendable {
    public let status: Int32
    public let output: String
}

/// Runs `executable arguments` with the environment changed by `environment` (a nil
/// value removes a variable) and waits for it at most `seconds`; a child that overstays
/// is killed by its pid and reported as an error with what it printed.
public func runChild(_ executable: String, _ arguments: [String], environment changes: [String: String?] = [:],
                     seconds: Double) throws -> ChildResult {
    let outputPath = NSTemporaryDirectory() + "mae-child-\(getpid())-\(UUID().uuidString).log"
    guard FileManager.default.createFile(atPath: outputPath, contents: nil),
          let output = FileHandle(forWritingAtPath: outputPath) else {
        throw ChildError("cannot create \(outputPath) for the output of \(executable)")
    }
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    var environment = ProcessInfo.processInfo.environment
    for (name, value) in changes { environment[name] = value }
    process.environment = environment
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let deadline = Date().addingTimeInterval(seconds)
    while process.isRunning && Date() < deadline { usleep(20_000) }
    let overstayed = process.isRunning
    if overstayed { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
    try? output.close()
    let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    if overstayed {
        throw ChildError("\(executable) \(arguments.joined(separator: " ")) ran longer than \(seconds) s and was killed; "
                         + "it printed:\n\(text)")
    }
    let status = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    return ChildResult(status: status, output: text)
}

/// A child process that could not be run as the test wanted.
public struct ChildError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
