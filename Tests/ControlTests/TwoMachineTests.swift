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

    @Test(.enabled(if: canCreateNamespaces, "creating network namespaces needs root and iproute2"))
    func aRunAcrossTwoMachinesSurvivesLosingOneOfThem() throws {
        let temporary = try TemporaryDirectory("two-machines")
        defer { temporary.remove() }
        let data = temporary.path + "/data"
        try synthesizeDataset(root: data, classes: 2, perClass: 16, valPerClass: 1, size: 24, seed: 11)
        let tag = String(getpid() % 100_000)
        let machines = ["mae-ca-\(tag)", "mae-cb-\(tag)"]
        let subnet = "10.232.\(getpid() % 250 + 1)"
        let addresses = ["\(subnet).1", "\(subnet).2"]
        let links = ["mca\(tag)", "mcb\(tag)"]

        var created: [String] = []
        defer { for machine in created { try? Self.ip(["netns", "delete", machine], directory: temporary.path) } }
        for machine in machines {
            try Self.ip(["netns", "add", machine], directory: temporary.path)
            created.append(machine)
            try Self.ip(["-n", machine, "link", "set", "lo", "up"], directory: temporary.path)
        }
        try Self.ip(["-n", machines[0], "link", "add", links[0], "type", "veth", "peer", "name", links[1], "netns", machines[1]],
                    directory: temporary.path)
        for side in 0..<2 {
            try Self.ip(["-n", machines[side], "address", "add", addresses[side] + "/24", "dev", links[side]], directory: temporary.path)
            try Self.ip(["-n", machines[side], "link", "set", links[side], "up"], directory: temporary.path)
        }
        // What `ssh HOST 'COMMAND'` does, for a "host" that is a namespace.
        let wrapper = temporary.path + "/netns-ssh"
        try "#!/bin/sh\nexec \(Self.ip!) netns exec \"$1\" /bin/sh -c \"$2\"\n".write(toFile: wrapper, atomically: true, encoding: .utf8)
        chmod(wrapper, 0o755)

        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let runDirectory = temporary.path + "/run"
        let products = try TestProcess.product("mae-coordinator").replacingOccurrences(of: "/mae-coordinator", with: "")
        let launcher = try TestProcess("/usr/bin/env", [
            "MAE_BIN_DIR=\(products)", Self.ip!, "netns", "exec", machines[0], "/bin/bash", repository + "/launch.sh",
            "--hosts", "\(machines[0]):1,\(machines[1]):1", "--ssh", wrapper, "--coordinator-host", addresses[0],
            "--run-dir", runDirectory, "--data", data, "--max-restarts", "2", "--heartbeat-timeout", "3",
            "--model-shape", "4,16,1,2,8,1,2", "--input-size", "16", "--batch-size", "4", "--epochs", "20",
            "--warmup-epochs", "1", "--lr", "1e-3", "--threads", "1", "--data-threads", "1", "--print-every", "1",
            "--checkpoint-every", "2",
        ], logDirectory: temporary.path, name: "launch")
        defer {
            launcher.send(SIGTERM)
            if launcher.exitStatus(within: 20) == nil { launcher.stop() }
            for pid in Self.processes(containing: [runDirectory]) { kill(pid, SIGKILL) }
        }
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
