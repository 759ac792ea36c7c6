#if MPI
import Foundation
import Testing
@testable import Collectives

/// The MPI backend, run under mpirun (build and test with `--traits MPI`).
@Suite(.serialized) struct MPICollectiveTests {
    @Test(arguments: [2, 3])
    func mpiWorkersPassTheirChecks(world: Int) throws {
        let mae = try maeExecutable()
        let directory = try temporaryDirectory("mpi\(world)")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let mpirun = try Child("/usr/bin/env", ["mpirun", "--allow-run-as-root", "--oversubscribe", "--mca", "btl", "tcp,self",
                                                "-np", String(world), mae, "collective-worker", "--backend", "mpi",
                                                "--mode", "check"], directory: directory, name: "mpirun")
        defer { mpirun.stop() }
        let status = mpirun.exitStatus(within: 90)
        #expect(status == 0, "mpirun \(status == nil ? "did not finish" : "failed"): \(mpirun.errorOutput)")
        for rank in 0..<world {
            #expect(mpirun.output.contains("check ok rank=\(rank) world=\(world)"), "\(mpirun.output)\n\(mpirun.errorOutput)")
        }
    }

    /// MPI cannot time out or cancel a call; with a timeout the backend ends a process
    /// whose call makes no progress, so a stalled peer ends the job instead of hanging it.
    @Test func aStoppedPeerEndsTheJobWithinTheTimeout() throws {
        let mae = try maeExecutable()
        let directory = try temporaryDirectory("mpistop")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let timeout = 2.0
        let mpirun = try Child("/usr/bin/env", ["mpirun", "--allow-run-as-root", "--oversubscribe", "--mca", "btl", "tcp,self",
                                                "-np", "3", mae, "collective-worker", "--backend", "mpi", "--mode", "loop",
                                                "--timeout", String(timeout), "--floats", "100000", "--iters", "100000",
                                                "--pause-ms", "20"], directory: directory, name: "mpirun")
        // The ranks print "ready rank=R pid=P" and then one line per iteration.
        func rankProcesses() -> [Int: Int32] {
            var pids: [Int: Int32] = [:]
            for line in mpirun.output.split(separator: "\n") where line.hasPrefix("ready rank=") {
                let fields = line.split(separator: " ").map { $0.split(separator: "=").last.map(String.init) ?? "" }
                if let rank = Int(fields[1]), let pid = Int32(fields[2]) { pids[rank] = pid }
            }
            return pids
        }
        defer {
            // mpirun ends its ranks when it ends; the test makes sure, by their pids.
            for pid in rankProcesses().values { kill(pid, SIGKILL) }
            mpirun.stop()
        }
        let running = Child.waitUntil(seconds: 60) { mpirun.output.components(separatedBy: "iteration 3\n").count > 3 }
        #expect(running, "the workers did not start: \(mpirun.output)\n\(mpirun.errorOutput)")
        guard running, let pid = rankProcesses()[1] else { return }
        let start = monotonicSeconds()
        kill(pid, SIGSTOP)
        let status = mpirun.exitStatus(within: timeout + 30)
        let elapsed = monotonicSeconds() - start
        #expect(status != nil, "mpirun still runs \(elapsed) s after its rank 1 was stopped")
        #expect(status != 0, "mpirun exited with success")
        #expect(mpirun.errorOutput.contains("made no progress for \(timeout) s"), "\(mpirun.errorOutput)")
        #expect(elapsed >= timeout, "the job ended after \(elapsed) s, before the timeout")
    }
}
#endif
