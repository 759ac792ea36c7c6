import Collectives
import Control
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The command lines users type: help, flag errors before anything starts, `status` without a
/// run, `/metrics`, and launch.sh's checks before its build.
@Suite(.serialized) struct CommandLineTests {
    func run(_ executable: String, _ arguments: [String], in directory: String, name: String) throws -> (status: Int32?, output: String) {
        let process = try TestProcess(executable, arguments, logDirectory: directory, name: name)
        let status = process.exitStatus(within: 30)
        process.stop()
        return (status, process.output)
    }

    @Test func everySubcommandHasHelpAndBadFlagsAreABadConfiguration() throws {
        let temporary = try TemporaryDirectory("coordinator-cli")
        defer { temporary.remove() }
        let coordinator = try TestProcess.product("mae-coordinator")
        let top = try run(coordinator, ["--help"], in: temporary.path, name: "help")
        #expect(top.status == 0 && top.output.contains("serve") && top.output.contains("3 stopped on request"))
        for (command, flag) in [("serve", "--max-restarts"), ("agent", "--nproc"), ("status", "--watch"), ("stop", "--run-dir"),
                                ("checkpoint", "--addr")] {
            let help = try run(coordinator, [command, "--help"], in: temporary.path, name: "help-\(command)")
            #expect(help.status == 0 && help.output.contains(flag), "\(command) --help: \(help.output)")
        }
        let unknown = try run(coordinator, ["serve", "--world-size", "2", "--bogus"], in: temporary.path, name: "bogus")
        #expect(unknown.status == CoordinatorExit.badConfiguration.rawValue && unknown.output.contains("unknown option --bogus"))
        let noData = try run(coordinator, ["serve", "--world-size", "2", "--", "--data", temporary.path + "/none"],
                             in: temporary.path, name: "nodata")
        #expect(noData.status == 2 && noData.output.contains("is not a folder"), "\(noData.output)")
        let placed = try run(coordinator, ["serve", "--world-size", "2", "--", "--rank", "1"], in: temporary.path, name: "placed")
        #expect(placed.status == 2 && placed.output.contains("the coordinator does that"), "\(placed.output)")
        // Nothing answers and no run directory: one line, exit 1.
        let port = try freePort()
        try "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n".write(
            toFile: temporary.path + "/secret", atomically: true, encoding: .utf8)
        chmod(temporary.path + "/secret", 0o600)
        let nobody = try run(coordinator, ["status", "--addr", "127.0.0.1:\(port)", "--secret-file", temporary.path + "/secret"],
                             in: temporary.path, name: "nobody")
        #expect(nobody.status == 1 && nobody.output.split(separator: "\n").count == 1, "\(nobody.output)")
        let noRun = try run(coordinator, ["status", "--run-dir", temporary.path + "/none"], in: temporary.path, name: "norun")
        #expect(noRun.status == 1 && noRun.output.contains("has no coordinator.json"), "\(noRun.output)")
        // A worker started by an agent takes the run's flags from the coordinator only.
        let worker = try run(try TestProcess.product("mae-worker"), ["--coordinator", "127.0.0.1:1", "--epochs", "3"],
                             in: temporary.path, name: "worker")
        #expect(worker.status == 2 && worker.output.contains("go to 'mae-coordinator serve'"), "\(worker.output)")
    }

    @Test func launchChecksItsFlagsBeforeItBuildsOrWritesAnything() throws {
        let temporary = try TemporaryDirectory("launch-flags")
        defer { temporary.remove() }
        let launch = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path + "/launch.sh"
        let runDirectory = temporary.path + "/run"
        for (arguments, message) in [
            (["--nodes"], "--nodes needs a value"),
            (["--nodes", "--epochs", "3"], "--nodes needs a value"),
            (["--nodes", "0"], "--nodes must be a positive integer"),
            (["--data", temporary.path + "/missing"], "is not a folder"),
            (["--model", "mae_vit_gigantic"], "is not one of: mae_vit_tiny_patch4"),
            (["--backend", "nccl"], "--backend must be tcp or mpi"),
            (["--max-restarts", "-1"], "--max-restarts must be an integer"),
            (["--hosts", "a,b", "--nodes", "3"], "does not divide evenly"),
            (["--hosts", "a:2", "--hostfile", "f"], "exclude each other"),
            (["--port", "70000"], "--port must be at most 65535"),
        ] {
            let result = try run("/bin/bash", [launch, "--run-dir", runDirectory] + arguments, in: temporary.path,
                                 name: "launch-\(abs(arguments.joined().hashValue))")
            #expect(result.status == 2 && result.output.contains(message), "\(arguments): \(result.output)")
            #expect(result.output.split(separator: "\n").count == 1, "\(arguments): more than one line: \(result.output)")
        }
        #expect(!FileManager.default.fileExists(atPath: runDirectory), "a failed check left a run directory")

        // A worker flag is checked by the coordinator before any worker starts; nothing is left behind either.
        let products = try TestProcess.product("mae-coordinator").replacingOccurrences(of: "/mae-coordinator", with: "")
        let result = try run("/usr/bin/env", ["MAE_BIN_DIR=\(products)", "/bin/bash", launch, "--run-dir", runDirectory,
                                              "--data", temporary.path, "--nodes", "2", "--batch-size", "zero"],
                             in: temporary.path, name: "launch-worker-flag")
        #expect(result.status == 2 && result.output.contains("--batch-size"), "\(result.output)")
        #expect(!FileManager.default.fileExists(atPath: runDirectory), "a bad worker flag left a run directory")
    }

    @Test func metricsAreServedAsPrometheusText() throws {
        let temporary = try TemporaryDirectory("metrics")
        defer { temporary.remove() }
        let data = temporary.path + "/data"
        try FileManager.default.createDirectory(atPath: data + "/train/a", withIntermediateDirectories: true)
        try synthesizeTinyImages(data)
        let run = CoordinatedRun(root: temporary.path, name: "metrics")
        defer { run.stopAll() }
        try run.startCoordinator(world: 2, workerFlags: ["--data", data, "--model-shape", "4,16,1,2,8,1,2", "--input-size", "16",
                                                         "--batch-size", "2", "--epochs", "2", "--warmup-epochs", "1"])
        let state = try run.state()
        let address = try SocketAddress(parsing: state.metricsAddress)
        #expect(address.host == "127.0.0.1", "metrics must be bound to loopback by default")
        func get(_ path: String) throws -> String {
            let socket = try Socket.connect(to: address, deadline: .after(seconds: 5), context: "test")
            defer { socket.close() }
            try socket.sendAll(Array("GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n".utf8), until: .after(seconds: 5), context: "test")
            var response: [UInt8] = []
            while let chunk = try? socket.receiveExactly(1, until: .after(seconds: 5), context: "test") { response += chunk }
            return String(decoding: response, as: UTF8.self)
        }
        let metrics = try get("/metrics")
        #expect(metrics.hasPrefix("HTTP/1.0 200 OK") && metrics.contains("text/plain; version=0.0.4"))
        for line in ["\nmae_up 1", "\nmae_generation 0", "\nmae_restarts_total 0", "\nmae_state{state=\"rendezvous\"} 1",
                     "\nmae_state{state=\"training\"} 0", "\nmae_total_steps 8", "# TYPE mae_restarts_total counter",
                     "\nmae_rank_step{rank=\"1\",host=\"\"} 0"] {
            #expect(metrics.contains(line), "\(line) missing: \(metrics)")
        }
        #expect(!metrics.contains(readText(run.runDirectory + "/job.secret").trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(try get("/secret").hasPrefix("HTTP/1.0 404"))
        run.coordinator?.send(SIGTERM)
        #expect(run.coordinator?.exitStatus(within: 20) == CoordinatorExit.stopped.rawValue)
    }
}

/// 2 classes × 8 synthetic JPEGs under `root/train`.
func synthesizeTinyImages(_ root: String) throws {
    try? FileManager.default.removeItem(atPath: root)
    try synthesizeDataset(root: root, classes: 2, perClass: 8, valPerClass: 1, size: 24, seed: 3)
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound to port 0, read back, released).
func freePort() throws -> Int {
    let listener = try Socket.listening(on: SocketAddress(host: "127.0.0.1", port: 0))
    defer { listener.close() }
    return try listener.localPort(context: "test")
}

import Data
