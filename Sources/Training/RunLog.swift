import Foundation
import Kernels
import System
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Where a worker's words go. Rank 0 prints to the terminal and writes the run's
/// `log.txt` (one JSON line per epoch, the reference's keys) and `metrics.jsonl` (one JSON
/// line per logged step); other ranks write what they have to say to `RUN_DIR/rank-R.log`,
/// or, when an agent captures their output into `RUN_DIR/logs/rank-R.log`, print it.
public final class RunLog {
    public let rank: Int
    public let runDirectory: String
    /// Rank 0 with a terminal on standard output draws a live progress line.
    public let isTerminal: Bool
    /// Whether a process that started this one keeps its output (an agent): then every rank
    /// prints, and no rank writes a log file of its own, so each line is kept once.
    public let outputIsCaptured: Bool
    private var progressShown = false

    public init(rank: Int, runDirectory: String, outputIsCaptured: Bool = false) {
        self.rank = rank
        self.runDirectory = runDirectory
        self.outputIsCaptured = outputIsCaptured
        isTerminal = rank == 0 && isatty(STDOUT_FILENO) == 1
    }

    /// Whether this rank writes `rankLogPath` itself.
    var writesRankLog: Bool { rank != 0 && !outputIsCaptured }

    public var epochLogPath: String { runDirectory + "/log.txt" }
    public var metricsPath: String { runDirectory + "/metrics.jsonl" }
    public var rankLogPath: String { runDirectory + "/rank-\(rank).log" }

    /// A line of information: rank 0 prints it, other ranks append it to their log file
    /// (or print it, when their output is captured).
    public func info(_ line: String) {
        if writesRankLog {
            try? FileSystem.append(rankLogPath, text: line + "\n")  // a lost rank-log line must not stop training
        } else {
            endProgress()
            print(line)
            fflush(stdout)
        }
    }

    /// A warning: standard error on every rank (and the rank log for ranks > 0).
    public func warn(_ line: String) {
        endProgress()
        var standardError = FileHandleStream.standardError
        print(rank == 0 ? line : "[rank \(rank)] \(line)", to: &standardError)
        if writesRankLog { try? FileSystem.append(rankLogPath, text: line + "\n") }
    }

    /// A progress line: on a terminal it redraws in place, otherwise it is printed.
    public func progress(_ line: String, fraction: Double) {
        guard rank == 0 else { return }
        if isTerminal {
            let width = 20
            let filled = max(0, min(width, Int((fraction * Double(width)).rounded(.down))))
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            print("\r\u{1B}[K[\(bar)] \(line)", terminator: "")
            progressShown = true
        } else {
            print(line)
        }
        fflush(stdout)
    }

    /// Ends a live progress line so the next output starts on a fresh line.
    public func endProgress() {
        if progressShown { print(""); progressShown = false }
    }

    /// Appends one JSON object as a line to `log.txt` (rank 0 only).
    public func appendEpochLog(_ fields: [(String, JSONValue)]) throws {
        guard rank == 0 else { return }
        try TrainingError.reportingSystemCalls { try FileSystem.append(epochLogPath, text: jsonLine(fields) + "\n") }
    }

    /// Drops what a run killed after its last checkpoint logged beyond it, before the
    /// resumed run logs those steps again (rank 0 only): `metrics.jsonl` lines of steps
    /// after `step`, `log.txt` lines of epochs from `epoch` on, and a last line cut short
    /// by the kill. Returns how many lines it dropped; files it need not change stay as they are.
    public func dropLines(afterStep step: Int, fromEpoch epoch: Int) throws -> Int {
        guard rank == 0 else { return 0 }
        return try TrainingError.reportingSystemCalls {
            try dropLines(of: metricsPath) { line in integerField("step", in: line).map { $0 > step } ?? true }
                + dropLines(of: epochLogPath) { line in integerField("epoch", in: line).map { $0 >= epoch } ?? true }
        }
    }

    /// Appends `finished`'s `log.txt` line unless the file has a line for its epoch (rank 0
    /// only); true when it appended.
    func addEpochLogIfMissing(_ finished: EpochSummary) throws -> Bool {
        guard rank == 0 else { return false }
        if FileSystem.exists(epochLogPath) {
            let text = String(decoding: try TrainingError.reportingSystemCalls { try FileSystem.readFile(epochLogPath) },
                              as: UTF8.self)
            if text.split(separator: "\n").contains(where: { integerField("epoch", in: $0) == finished.epoch }) {
                return false
            }
        }
        try appendEpochLog(finished.logFields)
        return true
    }

    /// Rewrites `path` without the lines `isDropped` picks and without an unterminated
    /// last line (atomically: a new file renamed over the old one).
    private func dropLines(of path: String, _ isDropped: (Substring) -> Bool) throws -> Int {
        guard FileSystem.exists(path) else { return 0 }
        let text = String(decoding: try FileSystem.readFile(path), as: UTF8.self)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        var dropped = lines.last?.isEmpty == false ? 1 : 0   // cut short: no newline after it
        lines.removeLast()
        let kept = lines.filter { !$0.isEmpty && !isDropped($0) }
        dropped += lines.count - kept.count
        guard dropped > 0 else { return 0 }
        let temporary = path + ".tmp"
        try FileSystem.writeFile(temporary, bytes: Array(kept.map { $0 + "\n" }.joined().utf8), synchronize: true)
        try FileSystem.rename(temporary, path)
        return dropped
    }

    /// Appends one JSON object as a line to `metrics.jsonl` (rank 0 only).
    public func appendMetrics(_ fields: [(String, JSONValue)]) throws {
        guard rank == 0 else { return }
        try TrainingError.reportingSystemCalls { try FileSystem.append(metricsPath, text: jsonLine(fields) + "\n") }
    }
}

/// A value in a log line.
public enum JSONValue: Sendable, Equatable {
    case number(Double)
    case integer(Int)
    case string(String)
    case bool(Bool)

    /// The value of a number, else nil.
    public var number: Double? {
        switch self {
        case .number(let value): return value
        case .integer(let value): return Double(value)
        default: return nil
        }
    }

    var text: String {
        switch self {
        case .number(let value):
            return value.isFinite ? "\(value)" : "\"\(value)\""  // JSON has no NaN; keep it readable
        case .integer(let value): return "\(value)"
        case .bool(let value): return value ? "true" : "false"
        case .string(let value):
            var escaped = ""
            for scalar in value.unicodeScalars {
                switch scalar {
                case "\"": escaped += "\\\""
                case "\\": escaped += "\\\\"
                case "\n": escaped += "\\n"
                case _ where scalar.value < 0x20: escaped += String(format: "\\u%04x", scalar.value)
                default: escaped.unicodeScalars.append(scalar)
                }
            }
            return "\"\(escaped)\""
        }
    }
}

/// `{"a": 1, "b": "x"}` with the keys in the given order.
func jsonLine(_ fields: [(String, JSONValue)]) -> String {
    "{" + fields.map { "\(JSONValue.string($0.0).text): \($0.1.text)" }.joined(separator: ", ") + "}"
}

/// The integer after `"key": ` in a line that `jsonLine` wrote; nil when absent.
func integerField(_ key: String, in line: Substring) -> Int? {
    guard let range = line.range(of: "\"\(key)\": ") else { return nil }
    let digits = line[range.upperBound...].prefix { $0 == "-" || $0.isNumber }
    return Int(digits)
}

/// "1h02m", "3m05s", "12s".
func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "?" }
    let total = Int(seconds.rounded())
    if total >= 3600 { return String(format: "%dh%02dm", total / 3600, (total % 3600) / 60) }
    if total >= 60 { return String(format: "%dm%02ds", total / 60, total % 60) }
    return "\(total)s"
}
