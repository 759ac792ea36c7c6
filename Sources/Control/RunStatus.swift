import Foundation

/// What `mae-coordinator status` shows: a live coordinator answers with it, and a finished
/// or dead run is read from its state file. `--json` prints it with these keys.
public struct RunStatus: Codable, Sendable, Equatable {
    public struct Rank: Codable, Sendable, Equatable {
        public var rank: Int
        public var host: String
        public var pid: Int32
        public var state: String
        public var step: Int
        /// Seconds since its last heartbeat (nil: none in this generation).
        public var heartbeatAgeSeconds: Double?

        private enum CodingKeys: String, CodingKey {
            case rank, host, pid, state, step, heartbeatAgeSeconds = "heartbeat_age_s"
        }
    }

    public var state: String
    public var generation: Int
    public var restarts: Int
    public var maxRestarts: Int
    /// The global optimizer step.
    public var step: Int
    public var totalSteps: Int
    public var epoch: Int
    public var loss: Double?
    public var lr: Double?
    public var imagesPerSecond: Double?
    public var etaSeconds: Double?
    public var lastCheckpoint: String?
    public var lastCheckpointStep: Int?
    public var secondsSinceCheckpoint: Double?
    public var ranks: [Rank]
    public var failures: [String]
    public var address: String
    public var metricsAddress: String
    public var runDirectory: String
    public var exitCode: Int32?
    /// Whether a running coordinator answered (false: read from the run directory's state file).
    public var live: Bool
    public var updatedAt: Double

    private enum CodingKeys: String, CodingKey {
        case state, generation, restarts, maxRestarts = "max_restarts", step, totalSteps = "total_steps", epoch, loss, lr
        case imagesPerSecond = "img_per_s", etaSeconds = "eta_s", lastCheckpoint = "last_checkpoint"
        case lastCheckpointStep = "last_checkpoint_step", secondsSinceCheckpoint = "seconds_since_checkpoint"
        case ranks, failures, address, metricsAddress = "metrics_address", runDirectory = "run_dir"
        case exitCode = "exit_code", live, updatedAt = "updated_at"
    }
}

extension RunState {
    /// The status at wall-clock time `now`.
    public func status(now: Double, live: Bool) -> RunStatus {
        let step = progress?.step ?? lastCheckpoint?.step ?? 0
        let remaining = Double(max(0, totalSteps - step))
        let eta = progress.flatMap { $0.stepSeconds > 0 && !phase.isFinal ? remaining * $0.stepSeconds : nil }
        return RunStatus(
            state: phase.rawValue, generation: generation, restarts: restarts, maxRestarts: policy.maxRestarts,
            step: step, totalSteps: totalSteps, epoch: progress?.epoch ?? 0, loss: progress?.loss, lr: progress?.learningRate,
            imagesPerSecond: phase == .training || phase == .checkpointing ? progress?.imagesPerSecond : nil,
            etaSeconds: eta, lastCheckpoint: lastCheckpoint?.path, lastCheckpointStep: lastCheckpoint?.step,
            secondsSinceCheckpoint: lastCheckpoint.map { max(0, now - $0.time) },
            ranks: ranks.map { record in
                RunStatus.Rank(rank: record.rank, host: record.host, pid: record.pid, state: record.state.rawValue,
                               step: record.step,
                               heartbeatAgeSeconds: live ? record.lastHeartbeat.map { max(0, now - $0) } : nil)
            },
            failures: failures.map { "generation \($0.generation): \($0.what)" },
            address: address, metricsAddress: metricsAddress, runDirectory: runDirectory, exitCode: exitCode, live: live,
            updatedAt: updatedAt)
    }
}

extension RunStatus {
    /// One JSON object on one line.
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// The human view: a summary, then one row per rank.
    public var text: String {
        func number(_ value: Double?, _ format: String) -> String { value.map { String(format: format, $0) } ?? "-" }
        var lines: [String] = []
        lines.append("run \(runDirectory): \(state)\(live ? "" : " (from the state file; no coordinator answered)")"
                     + (exitCode.map { ", exit status \($0)" } ?? ""))
        lines.append("generation \(generation), restarts \(restarts) of \(maxRestarts), epoch \(epoch + 1), "
                     + "step \(step) of \(totalSteps), loss \(number(loss, "%.4f")), lr \(number(lr, "%.3e")), "
                     + "\(number(imagesPerSecond, "%.1f")) img/s, eta \(etaSeconds.map { formatETA($0) } ?? "-")")
        lines.append("last checkpoint: " + (lastCheckpoint.map { path in
            "\(path)" + (secondsSinceCheckpoint.map { String(format: " (%.0f s ago)", $0) } ?? "")
        } ?? "none"))
        lines.append("coordinator \(address), metrics http://\(metricsAddress)/metrics")
        func row(_ cells: [String]) -> String {
            zip(cells, [5, 20, 8, 9, 8, 0]).map { cell, width in
                cell.count >= width ? cell : cell + String(repeating: " ", count: width - cell.count)
            }.joined(separator: " ")
        }
        lines.append(row(["rank", "host", "pid", "state", "step", "heartbeat"]))
        for rank in ranks {
            lines.append(row(["\(rank.rank)", rank.host.isEmpty ? "-" : rank.host, rank.pid == 0 ? "-" : "\(rank.pid)",
                              rank.state, "\(rank.step)",
                              rank.heartbeatAgeSeconds.map { String(format: "%.1f s ago", $0) } ?? "-"]))
        }
        if !failures.isEmpty {
            lines.append("failures:")
            lines += failures.map { "  " + $0 }
        }
        return lines.joined(separator: "\n")
    }
}

/// "1h02m", "3m05s", "12s".
func formatETA(_ seconds: Double) -> String {
    let total = Int(seconds.rounded())
    if total >= 3600 { return String(format: "%dh%02dm", total / 3600, total % 3600 / 60) }
    if total >= 60 { return String(format: "%dm%02ds", total / 60, total % 60) }
    return "\(total)s"
}
