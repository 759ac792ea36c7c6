import Collectives
import Foundation

/// `/metrics` in the Prometheus text format (version 0.0.4): read-only, nothing secret.
extension Coordinator {
    /// Answers one HTTP request on the metrics listener; anything but `GET /metrics` is a 404.
    func serveMetrics() {
        guard let socket = try? metricsListener.accept(until: .after(seconds: 0), context: "metrics listener") else { return }
        defer { socket.close() }
        var request: [UInt8] = []
        let deadline = Deadline.after(seconds: 1)
        var chunk = [UInt8](repeating: 0, count: 4096)
        while request.count < 8192, !request.ends(with: Array("\r\n\r\n".utf8)) {
            guard let ready = try? socket.wait(for: Int16(POLLIN), until: deadline, context: "metrics request"), ready,
                  let count = try? chunk.withUnsafeMutableBytes({
                      try socket.receiveSome($0.baseAddress!, count: $0.count, context: "metrics request")
                  }) else { return }
            request += chunk[0..<count]
        }
        let firstLine = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let found = firstLine.hasPrefix("GET /metrics ") || firstLine == "GET /metrics"
        let body = found ? metricsText(now: wallClockSeconds()) : "not found: the metrics are at /metrics\n"
        let header = "HTTP/1.0 \(found ? "200 OK" : "404 Not Found")\r\n"
            + "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\n"
            + "Connection: close\r\n\r\n"
        try? socket.sendAll(Array((header + body).utf8), until: .after(seconds: 1), context: "metrics response")
    }

    /// The metrics of the run now.
    public func metricsText(now: Double) -> String {
        let status = state.status(now: now, live: true)
        var text = ""
        func metric(_ name: String, _ help: String, type: String = "gauge", _ samples: [(labels: String, value: Double?)]) {
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for sample in samples {
                guard let value = sample.value, value.isFinite else { continue }
                // Counts print as integers; other values in Swift's shortest exact form.
                let number = value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : "\(value)"
                text += "\(name)\(sample.labels.isEmpty ? "" : "{\(sample.labels)}") \(number)\n"
            }
        }
        func escaped(_ label: String) -> String {
            label.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
        }
        metric("mae_up", "1 while the coordinator runs.", [("", 1)])
        metric("mae_state", "1 for the run's current state.",
               [RunPhase.rendezvous, .adopting, .training, .checkpointing, .restarting, .stopping, .finished, .failed, .stopped].map {
                   ("state=\"\($0.rawValue)\"", $0 == state.phase ? 1 : 0)
               })
        metric("mae_generation", "Restart generation of the workers.", [("", Double(state.generation))])
        metric("mae_restarts_total", "Restarts after failures.", type: "counter", [("", Double(state.restarts))])
        metric("mae_step", "Global optimizer step.", [("", Double(status.step))])
        metric("mae_total_steps", "Optimizer steps of the whole run.", [("", Double(status.totalSteps))])
        metric("mae_epoch", "Current epoch (0-based).", [("", Double(status.epoch))])
        metric("mae_loss", "Loss of the last step, averaged over workers.", [("", status.loss)])
        metric("mae_learning_rate", "Learning rate of the last step.", [("", status.lr)])
        metric("mae_images_per_second", "Training speed of all workers together.", [("", status.imagesPerSecond)])
        metric("mae_seconds_since_checkpoint", "Seconds since the newest complete checkpoint.", [("", status.secondsSinceCheckpoint)])
        let share = status.imagesPerSecond.map { $0 / Double(max(1, state.ranks.count)) }
        metric("mae_rank_step", "Optimizer step each rank reported last.",
               status.ranks.map { ("rank=\"\($0.rank)\",host=\"\(escaped($0.host))\"", Double($0.step)) })
        metric("mae_rank_images_per_second", "Each rank's share of the training speed.",
               status.ranks.map { ("rank=\"\($0.rank)\",host=\"\(escaped($0.host))\"", $0.state == "training" ? share : nil) })
        metric("mae_rank_heartbeat_age_seconds", "Seconds since each rank's last heartbeat.",
               status.ranks.map { ("rank=\"\($0.rank)\",host=\"\(escaped($0.host))\"", $0.heartbeatAgeSeconds) })
        return text
    }
}

extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool { count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix }
}
