import Control
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// One run under a real `mae-coordinator serve` and its agents, started by a test. Every
/// process it started, and every worker its agents started, is stopped by pid in `stopAll()`.
final class CoordinatedRun {
    let logDirectory: String
    let runDirectory: String
    let name: String
    var coordinator: TestProcess?
    var agents: [TestProcess] = []
    var coordinatorStarts = 0
    /// "host:port" of the coordinator once it listens.
    var address = ""

    init(root: String, name: String) {
        logDirectory = root
        runDirectory = root + "/" + name
        self.name = name
    }

    var portFile: String { logDirectory + "/\(name).port" }
    var statePath: String { runDirectory + "/" + Coordinator.stateFileName }

    /// Starts `serve` and waits (at most 30 s) until it listens.
    func startCoordinator(world: Int, workerFlags: [String], serveFlags: [String] = [], launcher: [String] = [],
                          addr: String = "127.0.0.1:0") throws {
        try? FileManager.default.removeItem(atPath: portFile)
        coordinatorStarts += 1
        let executable = try TestProcess.product("mae-coordinator")
        let arguments = ["serve", "--world-size", String(world), "--addr", addr, "--port-file", portFile] + serveFlags
            + ["--", "--run-dir", runDirectory] + workerFlags
        let process = try TestProcess(launcher.isEmpty ? executable : launcher[0],
                                      launcher.isEmpty ? arguments : Array(launcher.dropFirst()) + [executable] + arguments,
                                      logDirectory: logDirectory, name: "\(name)-coordinator-\(coordinatorStarts)")
        coordinator = process
        guard waitUntil(seconds: 30, { FileManager.default.fileExists(atPath: portFile) || !process.isRunning }),
              FileManager.default.fileExists(atPath: portFile) else {
            throw TestFailure("the coordinator did not start listening: \(process.output)")
        }
        address = readText(portFile).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Starts an agent for ranks `firstRank ..< firstRank + count`.
    @discardableResult
    func startAgent(firstRank: Int = 0, count: Int, hostName: String = "local", extra: [String] = [],
                    launcher: [String] = [], coordinatorAddress: String? = nil) throws -> TestProcess {
        let executable = try TestProcess.product("mae-coordinator")
        let arguments = ["agent", "--coordinator", coordinatorAddress ?? address, "--run-dir", runDirectory,
                         "--first-rank", String(firstRank), "--nproc", String(count), "--host-name", hostName,
                         "--grace", "2"] + extra
        let agent = try TestProcess(launcher.isEmpty ? executable : launcher[0],
                                    launcher.isEmpty ? arguments : Array(launcher.dropFirst()) + [executable] + arguments,
                                    logDirectory: logDirectory, name: "\(name)-agent-\(agents.count)")
        agents.append(agent)
        return agent
    }

    /// A run started with one agent for all `world` ranks and waited for to its end (the
    /// reference an interrupted run is compared with): its coordinator must exit 0 within
    /// `seconds`; every process is stopped before it returns, its files stay.
    static func finished(root: String, name: String, world: Int, workerFlags: [String], agentFlags: [String] = [],
                         seconds: Double = 120, sourceLocation: SourceLocation = #_sourceLocation) throws -> CoordinatedRun {
        let run = CoordinatedRun(root: root, name: name)
        defer { run.stopAll() }
        try run.startCoordinator(world: world, workerFlags: workerFlags)
        try run.startAgent(count: world, extra: agentFlags)
        #expect(run.coordinator?.exitStatus(within: seconds) == 0, "\(run.output)", sourceLocation: sourceLocation)
        return run
    }

    func state() throws -> RunState { try Coordinator.readState(statePath) }

    /// The state, or nil while the file is being replaced or absent.
    func currentState() -> RunState? { try? state() }

    /// The global step rank 0 last logged (metrics.jsonl has a line per step with --print-every 1).
    func loggedSteps() -> Int { readText(runDirectory + "/metrics.jsonl").split(separator: "\n").count }

    /// Everything the coordinator and the agents printed.
    var output: String {
        ([coordinator].compactMap { $0 } + agents).map { "--- \($0.name)\n" + $0.output }.joined(separator: "\n")
            + (1..<coordinatorStarts).map { "\n--- earlier coordinator \($0)\n" + readText(logDirectory + "/\(name)-coordinator-\($0).log") }
                .joined()
    }

    /// Workers of this run still alive: mae-worker processes whose command line names this run's secret file.
    func liveWorkers() -> [Int32] {
        let marker = runDirectory + "/job.secret"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            let commandLine = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
            let text = String(decoding: commandLine.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            return text.contains("mae-worker") && text.contains(marker) && isAlive(pid)
        }
    }

    /// Stops the coordinator, the agents and any worker of this run, by pid.
    func stopAll() {
        coordinator?.stop()
        for agent in agents { agent.stop() }
        for pid in liveWorkers() { kill(pid, SIGKILL) }
        _ = waitUntil(seconds: 5) { liveWorkers().isEmpty }
    }

    /// The bytes of a file of the checkpoint of `step`.
    func checkpointFile(step: Int, _ file: String) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: runDirectory + "/checkpoints/" + String(format: "step-%08d", step) + "/" + file))
    }

    /// (step, loss, lr) of every line of metrics.jsonl.
    func metrics() -> [(step: Int, loss: Double, lr: Double)] {
        readText(runDirectory + "/metrics.jsonl").split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let step = object["step"] as? Int, let loss = object["loss"] as? Double, let lr = object["lr"] as? Double
            else { return nil }
            return (step, loss, lr)
        }
    }
}
