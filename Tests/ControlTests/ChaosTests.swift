import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The fast subset of the chaos suite: `cluster/chaos.sh --seed 1 --faults 1 --kinds kill` on
/// four namespace machines (one SIGKILL of a worker; the run must restart once and end with
/// the uninterrupted run's weights, every invariant checked by the script), and the same with
/// the coordinator killed instead (adopted: no restart). Needs root,
/// iproute2 and nftables; skipped otherwise. The script removes its namespaces and stops its
/// processes by pid; the test kills the script by pid if it overstays.
@Suite(.serialized) struct ChaosTests {
    static let canRun = getuid() == 0 && ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].contains {
        FileManager.default.isExecutableFile(atPath: $0)
    } && ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].contains { FileManager.default.isExecutableFile(atPath: $0) }

    @Test(.enabled(if: canRun, "the chaos suite needs root, iproute2 and nftables (tools/install-deps.sh --netns)"))
    func oneKilledWorkerOnFourMachinesKeepsEveryInvariant() throws {
        let temporary = try TemporaryDirectory("chaos")
        defer { temporary.remove() }
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let products = try TestProcess.product("mae-coordinator").replacingOccurrences(of: "/mae-coordinator", with: "")
        let suite = try TestProcess("/bin/bash", [repository + "/cluster/chaos.sh", "--seed", "1", "--faults", "1", "--kinds", "kill",
                                                        // Only the kill must restart, however busy the test machine.
                                                        "--heartbeat-timeout", "10"],
                                    logDirectory: temporary.path, name: "chaos", environment: ["MAE_BIN_DIR": products])
        defer { suite.stop() }
        let status = suite.exitStatus(within: 240)
        if status == nil {
            suite.send(SIGTERM)  // it removes its namespaces and stops its processes, then exits
            _ = suite.exitStatus(within: 30)
        }
        #expect(status == 0, "\(suite.output)")
        #expect(suite.output.contains("every invariant held"), "\(suite.output)")
        #expect(suite.output.contains("faults kill 1") && suite.output.contains("restarts 1;"), "\(suite.output)")
    }

    /// `cluster/chaos.sh --seed 1 --faults 1 --kinds coordinator`: the coordinator SIGKILLed,
    /// launch.sh starts it again, and it adopts the four machines' agents and workers: no
    /// restart, the same generation, the uninterrupted run's weights.
    @Test(.enabled(if: canRun, "the chaos suite needs root, iproute2 and nftables (tools/install-deps.sh --netns)"))
    func aKilledCoordinatorOnFourMachinesIsStartedAgainAndAdoptsTheRun() throws {
        let temporary = try TemporaryDirectory("chaos")
        defer { temporary.remove() }
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let products = try TestProcess.product("mae-coordinator").replacingOccurrences(of: "/mae-coordinator", with: "")
        let suite = try TestProcess("/bin/bash", [repository + "/cluster/chaos.sh", "--seed", "1", "--faults", "1", "--kinds", "coordinator",
                                                  "--heartbeat-timeout", "10"],
                                    logDirectory: temporary.path, name: "chaos", environment: ["MAE_BIN_DIR": products])
        defer { suite.stop() }
        let status = suite.exitStatus(within: 240)
        if status == nil {
            suite.send(SIGTERM)
            _ = suite.exitStatus(within: 30)
        }
        #expect(status == 0, "\(suite.output)")
        #expect(suite.output.contains("every invariant held"), "\(suite.output)")
        #expect(suite.output.contains("coordinator 1; restarts 0;"), "\(suite.output)")
    }
}
