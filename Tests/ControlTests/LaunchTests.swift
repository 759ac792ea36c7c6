import Control
import Data
import System
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `launch.sh` with the built executables (MAE_BIN_DIR): SIGTERM stops the run after a
/// checkpoint with exit status 3, when launch.sh itself is killed nothing it started keeps
/// running, and a killed coordinator is started again and adopts the run.
@Suite(.serialized) struct LaunchTests {
    let temporary: TemporaryDirectory
    let data: String

    init() throws {
        temporary = try TemporaryDirectory("launch")
        data = temporary.path + "/data"
        try synthesizeDataset(root: data, classes: 2, perClass: 8, valPerClass: 1, size: 24, seed: 3)
    }

    /// launch.sh started with posix_spawn (`ChildProcess`): Foundation's Process starts children with
    /// SIGTERM blocked, and a shell cannot trap a signal that it started with blocked or ignored.
    final class Launcher {
        let child: ChildProcess
        let logPath: String

        init(_ command: [String], logPath: String) throws {
            self.logPath = logPath
            let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
            child = try ChildProcess(executable: "/bin/sh", arguments: ["-c", "exec \"$@\" > \"$0\" 2>&1", logPath] + command,
                                     environment: environment)
        }

        var output: String { readText(logPath) }
        func send(_ signalNumber: Int32) { child.signal(signalNumber) }
        func exitStatus(within seconds: Double) -> Int32? { child.poll(waitSeconds: seconds)?.shellStatus }
        func stop() { if child.poll() == nil { child.signal(SIGKILL); _ = child.poll(waitSeconds: 5) } }
    }

    func launch(_ name: String, epochs: Int = 500) throws -> (process: Launcher, runDirectory: String) {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path + "/launch.sh"
        let products = try TestProcess.product("mae-coordinator").replacingOccurrences(of: "/mae-coordinator", with: "")
        let runDirectory = temporary.path + "/" + name
        let process = try Launcher(["/usr/bin/env", "MAE_BIN_DIR=\(products)", "/bin/bash", script, "--nodes", "2", "--run-dir", runDirectory, "--data", data,
            "--model-shape", "4,16,1,2,8,1,2", "--input-size", "16", "--batch-size", "2", "--epochs", String(epochs),
            "--warmup-epochs", "1", "--lr", "1e-3", "--threads", "1", "--data-threads", "1", "--print-every", "1"],
                                   logPath: temporary.path + "/\(name).log")
        return (process, runDirectory)
    }

    /// Every process of the run (coordinator, agents, workers): their command lines name its run directory.
    func processes(of runDirectory: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            let commandLine = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
            let text = String(decoding: commandLine.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            return text.contains("mae-") && text.contains(runDirectory) && isAlive(pid)
        }
    }

    func steps(_ runDirectory: String) -> Int { readText(runDirectory + "/metrics.jsonl").split(separator: "\n").count }

    @Test func sigtermCheckpointsStopsEverythingAndExitsThree() throws {
        defer { temporary.remove() }
        let (launcher, runDirectory) = try launch("terminated")
        defer { launcher.stop(); for pid in processes(of: runDirectory) { kill(pid, SIGKILL) } }
        #expect(waitUntil(seconds: 60) { steps(runDirectory) >= 3 }, "\(launcher.output)")
        launcher.send(SIGTERM)
        #expect(launcher.exitStatus(within: 60) == CoordinatorExit.stopped.rawValue, "\(launcher.output)")
        let state = try Coordinator.readState(runDirectory + "/" + Coordinator.stateFileName)
        #expect(state.phase == .stopped && state.lastCheckpoint != nil)
        let checkpoint = try #require(state.lastCheckpoint)
        #expect(checkpoint.step >= 3 && FileManager.default.fileExists(atPath: checkpoint.path + "/COMPLETE"))
        #expect(launcher.output.contains("Status:") && launcher.output.contains("mae-coordinator status --run-dir"))
        #expect(launcher.output.contains("exit status 3 (stopped on request; continue with: ./launch.sh --run-dir"))
        #expect(waitUntil(seconds: 10) { processes(of: runDirectory).isEmpty }, "left running: \(processes(of: runDirectory))")
    }

    @Test func nothingKeepsRunningWhenLaunchIsKilled() throws {
        defer { temporary.remove() }
        let (launcher, runDirectory) = try launch("orphaned")
        defer { launcher.stop(); for pid in processes(of: runDirectory) { kill(pid, SIGKILL) } }
        #expect(waitUntil(seconds: 60) { steps(runDirectory) >= 3 }, "\(launcher.output)")
        #expect(processes(of: runDirectory).count >= 4, "coordinator, agent and two workers")
        launcher.send(SIGKILL)
        _ = launcher.exitStatus(within: 10)
        // The coordinator sees its parent gone and stops the run gracefully; the agent and workers follow.
        #expect(waitUntil(seconds: 40) { processes(of: runDirectory).isEmpty }, "left running: \(processes(of: runDirectory))")
        let state = try Coordinator.readState(runDirectory + "/" + Coordinator.stateFileName)
        #expect(state.phase == .stopped, "\(state.phase)")
    }

    /// A coordinator killed with SIGKILL: launch.sh says so and starts it again; it adopts the
    /// workers, which trained on, and the run finishes with no restart and every step logged once.
    @Test func aKilledCoordinatorIsStartedAgainAndAdoptsTheRun() throws {
        defer { temporary.remove() }
        // 16 images, 2 workers of batch 2: 4 steps an epoch.
        let (launcher, runDirectory) = try launch("phoenix", epochs: 100)
        defer { launcher.stop(); for pid in processes(of: runDirectory) { kill(pid, SIGKILL) } }
        let statePath = runDirectory + "/" + Coordinator.stateFileName
        #expect(waitUntil(seconds: 60) { steps(runDirectory) >= 3 && (try? Coordinator.readState(statePath))?.phase == .training },
                "\(launcher.output)")
        let before = try Coordinator.readState(statePath)
        kill(before.coordinatorPid, SIGKILL)
        #expect(launcher.exitStatus(within: 240) == CoordinatorExit.finished.rawValue, "\(launcher.output)")
        #expect(launcher.output.contains("the coordinator ended abnormally (exit status 137); starting it again"), "\(launcher.output)")
        let state = try Coordinator.readState(statePath)
        #expect(state.phase == .finished && state.restarts == 0 && state.generation == before.generation, "\(launcher.output)")
        #expect(state.coordinatorPid != before.coordinatorPid)
        let logged = readText(runDirectory + "/metrics.jsonl").split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["step"] as? Int
        }
        #expect(logged == Array(1...400), "\(logged.count) lines")
        #expect(waitUntil(seconds: 10) { processes(of: runDirectory).isEmpty }, "left running: \(processes(of: runDirectory))")
    }
}
