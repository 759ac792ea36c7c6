import Control
import Data
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A run across two "machines": two network namespaces that the test creates and joins with a
/// veth pair (as the ring test in CollectivesTests does). `launch.sh` runs in the first, with
/// the coordinator bound to the first machine's address, and starts one agent per machine
/// through an ssh-like wrapper around `ip netns exec`. Then the second machine's agent is
/// killed (a lost machine): the run restarts once, the agent is started again, and the run
/// ends. Needs root and iproute2; skipped otherwise. The test removes its namespaces and
/// stops every process it started, by pid.
@Suite(.serialized) struct TwoMachineTests {
    static let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let canCreateNamespaces = getuid() == 0 && ip != nil

    static func ip(_ arguments: [String], directory: String) throws {
        let child = try TestProcess(ip!, arguments, logDirectory: directory, name: "ip")
        guard let status = child.exitStatus(within: 20) else {
            child.stop()
            throw TestFailure("ip \(arguments.joined(separator: " ")) did not finish")
        }
        guard status == 0 else { throw TestFailure("ip \(arguments.joined(separator: " ")): \(child.output)") }
    }

    /// Processes whose command line contains every one of `words`.
    static func processes(containing words: [String]) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            let commandLine = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
            let text = String(decoding: commandLine.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            return words.allSatisfy { text.contains($0) } && isAlive(pid)
        }
    }

    /// Creates two namespaces ("machines") joined by a veth pair and an ssh-like wrapper around
    /// `ip netns exec` in `directory`, runs `body` with the machines, their addresses and the
    /// wrapper, and deletes the namespaces again.
    static func withTwoMachines(_ directory: String,
                                _ body: (_ machines: [String], _ addresses: [String], _ wrapper: String) throws -> Void) throws {
        let tag = String(getpid() % 100_000)
        let machines = ["mae-ca-\(tag)", "mae-cb-\(tag)"]
        let subnet = "10.232.\(getpid() % 250 + 1)"
        let addresses = ["\(subnet).1", "\(subnet).2"]
        let links = ["mca\(tag)", "mcb\(tag)"]

        var created: [String] = []
        defer { for machine in created { try? ip(["netns", "delete", machine], directory: directory) } }
        for machine in machines {
            try ip(["netns", "add", machine], directory: directory)
            created.append(machine)
            try ip(["-n", machine, "link", "set", "lo", "up"], directory: directory)
        }
        try ip(["-n", machines[0], "link", "add", links[0], "type", "veth", "peer", "name", links[1], "netns", machines[1]],
               directory: directory)
        for side in 0..<2 {
            try ip(["-n", machines[side], "address", "add", addresses[side] + "/24", "dev", links[side]], directory: directory)
            try ip(["-n", machines[side], "link", "set", links[side], "up"], directory: directory)
        }
        // What `ssh HOST 'COMMAND'` does, for a "host" that is a namespace.
        let wrapper = directory + "/netns-ssh"
        try "#!/bin/sh\nexec \(ip!) netns exec \"$1\" /bin/sh -c \"$2\"\n".write(toFile: wrapper, atomically: true, encoding: .utf8)
        chmod(wrapper, 0o755)
        try body(machines, addresses, wrapper)
    }

    /// Runs `launch.sh` in the first of two namespace machines with `slots` workers on each, the
    /// test's tiny model and data, and `flags`; hands `body` the launcher, the machines, their
    /// addresses and the run directory, then stops whatever is left of the run by pid.
    static func launchOnTwoMachines(_ name: String, slots: Int, flags: [String],
                                    _ body: (_ launcher: TestProcess, _ machines: [String], _ addresses: [String],
                                             _ runDirectory: String) throws -> Void) throws {
        let temporary = try TemporaryDirectory(name)
        defer { temporary.remove() }
        let data = temporary.path + "/data"
        try synthesizeDataset(root: data, classes: 2, perClass: 16, valPerClass: 1, size: 24, seed: 11)
        try withTwoMachines(temporary.path) { machines, addresses, wrapper in
            let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().path
            let runDirectory = temporary.path + "/run"
            let products = try TestProcess.product("mae-coordinator").replacingOccurrences(of: "/mae-coordinator", with: "")
            let launcher = try TestProcess("/usr/bin/env", [
                "MAE_BIN_DIR=\(products)", ip!, "netns", "exec", machines[0], "/bin/bash", repository + "/launch.sh",
                "--hosts", "\(machines[0]):\(slots),\(machines[1]):\(slots)", "--ssh", wrapper, "--coordinator-host", addresses[0],
                "--run-dir", runDirectory, "--data", data, "--model-shape", "4,16,1,2,8,1,2", "--input-size", "16",
                "--warmup-epochs", "1", "--lr", "1e-3", "--threads", "1", "--data-threads", "1", "--print-every", "1",
            ] + flags, logDirectory: temporary.path, name: "launch")
            defer {
                launcher.send(SIGTERM)
                if launcher.exitStatus(within: 20) == nil { launcher.stop() }
                for pid in processes(containing: [runDirectory]) { kill(pid, SIGKILL) }
            }
            try body(launcher, machines, addresses, runDirectory)
        }
    }

    @Test(.enabled(if: canCreateNamespaces, "creating network namespaces needs root and iproute2"))
    func aRunAcrossTwoMachinesSurvivesLosingOneOfThem() throws {
        try Self.launchOnTwoMachines("two-machines", slots: 1, flags: [
            "--max-restarts", "2", "--heartbeat-timeout", "3", "--batch-size", "4", "--epochs", "20", "--checkpoint-every", "2",
        ]) { launcher, machines, addresses, runDirectory in
            let statePath = runDirectory + "/" + Coordinator.stateFileName
            func state() -> RunState? { try? Coordinator.readState(statePath) }
            func steps() -> Int { readText(runDirectory + "/metrics.jsonl").split(separator: "\n").count }
            guard waitUntil(seconds: 90, { steps() >= 8 }) else {
                throw TestFailure("the run did not reach step 8: \(launcher.output)")
            }
            let running = try #require(state())
            #expect(running.ranks.map(\.host) == machines, "\(running.ranks)")
            #expect(running.ranks[1].ringAddress?.hasPrefix(addresses[1] + ":") == true, "rank 1's ring listener: \(running.ranks)")
            // The second machine is lost: its agent dies, and with it its worker.
            let agents = Self.processes(containing: ["mae-coordinator", "agent", "--host-name", machines[1], runDirectory])
                .filter { !Self.processes(containing: ["netns-ssh"]).contains($0) }
            #expect(!agents.isEmpty, "no agent of \(machines[1]) found")
            for pid in agents { kill(pid, SIGKILL) }
            #expect(launcher.exitStatus(within: 120) == 0, "\(launcher.output)")
            let final = try #require(state())
            #expect(final.phase == .finished && final.restarts == 1, "\(final.failures)")
            #expect(final.failures.first?.what.contains("lost the agent on \(machines[1])") == true, "\(final.failures)")
            #expect(launcher.output.contains("the agent of \(machines[1]) ended; starting it again"), "\(launcher.output)")
            #expect(Self.processes(containing: [runDirectory]).isEmpty)
        }
    }

    /// The coordinator killed more often than launch.sh starts it again: launch.sh gives up, and
    /// before it exits, every agent it started through the ssh wrapper, and their workers, are
    /// gone, though the agents would look for a coordinator for a minute (`--reconnect-timeout`).
    /// The SIGTERM must reach the agent itself, not the wrapper's shell (the remote command `exec`s).
    @Test(.enabled(if: canCreateNamespaces, "creating network namespaces needs root and iproute2"))
    func launchStopsItsAgentsWhenItGivesUpOnTheCoordinator() throws {
        try Self.launchOnTwoMachines("two-machines-give-up", slots: 1, flags: [
            "--max-restarts", "0", "--heartbeat-timeout", "10", "--batch-size", "2", "--epochs", "400",
        ]) { launcher, machines, addresses, runDirectory in
            let statePath = runDirectory + "/" + Coordinator.stateFileName
            func state() -> RunState? { try? Coordinator.readState(statePath) }
            guard waitUntil(seconds: 90, { state()?.phase == .training }) else {
                throw TestFailure("the run did not start training: \(launcher.output)")
            }
            // launch.sh starts a coordinator again at most max(3, --max-restarts) times (and not after
            // one that was killed before it listened): at most four kills.
            for _ in 1...4 where launcher.isRunning {
                let coordinator = try #require(state()).coordinatorPid
                kill(coordinator, SIGKILL)
                _ = waitUntil(seconds: 60) { !launcher.isRunning || (state()?.coordinatorPid ?? coordinator) != coordinator }
            }
            // 15 s for the agents to go by themselves, then SIGTERM and their 5 s grace: well within
            // the 60 s after which the agents would give up by themselves.
            #expect(launcher.exitStatus(within: 45) == 137, "\(launcher.output)")
            #expect(launcher.output.contains("agent \(machines[1]): SIGTERM: stopping the workers"), "\(launcher.output)")
            let left = Self.processes(containing: [runDirectory])
            #expect(left.isEmpty, "left running after launch.sh exited: \(left): \(launcher.output)")
        }
    }

    /// Two machines of two workers each under the coordinator: `--transport auto` picks the
    /// hierarchical collective from the coordinator's table (each worker announces its
    /// machine's address), and the run trains to its end.
    @Test(.enabled(if: canCreateNamespaces, "creating network namespaces needs root and iproute2"))
    func twoWorkersPerMachineUseTheHierarchy() throws {
        try Self.launchOnTwoMachines("two-machines-hierarchy", slots: 2, flags: [
            "--max-restarts", "0", "--heartbeat-timeout", "10", "--batch-size", "2", "--epochs", "2",
        ]) { launcher, machines, addresses, runDirectory in
            #expect(launcher.exitStatus(within: 180) == 0, "\(launcher.output)")
            let rankZero = readText(runDirectory + "/logs/rank-0.log")
            #expect(rankZero.contains("(collective: HierarchicalCollective)"), "rank 0: \(rankZero)")
            let final = try #require(try? Coordinator.readState(runDirectory + "/" + Coordinator.stateFileName))
            #expect(final.phase == .finished && final.restarts == 0, "\(final.failures)")
            #expect(final.ranks.map(\.host) == [machines[0], machines[0], machines[1], machines[1]], "\(final.ranks)")
        }
    }
}
