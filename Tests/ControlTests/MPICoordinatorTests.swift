#if MPI
import Control
import Data
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `--backend mpi` under the coordinator (a build with `--traits MPI`; tools/test.sh runs it):
/// the agent starts the ranks as one mpirun job, the workers still join the coordinator for
/// their assignment, heartbeats and checkpoints, and a killed rank makes the coordinator start a
/// new mpirun from the newest checkpoint; the run ends with the uninterrupted run's weights.
@Suite(.serialized) struct MPICoordinatorTests {
    static let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test(.enabled(if: mpirun != nil, "needs mpirun (openmpi-bin)"))
    func aKilledRankRestartsTheMPIJobFromTheCheckpoint() throws {
        let temporary = try TemporaryDirectory("mpi-coordinator")
        defer { temporary.remove() }
        let data = temporary.path + "/data"
        try synthesizeDataset(root: data, classes: 2, perClass: 16, valPerClass: 1, size: 24, seed: 11)
        let flags = ["--data", data, "--model-shape", "4,16,1,2,8,1,2", "--input-size", "16", "--batch-size", "4",
                     "--epochs", "20", "--warmup-epochs", "1", "--lr", "1e-3", "--seed", "5", "--threads", "1",
                     "--data-threads", "1", "--batch-shards", "1", "--print-every", "1", "--checkpoint-every", "2"]
        let agentFlags = ["--backend", "mpi", "--mpirun", Self.mpirun! + " --allow-run-as-root --oversubscribe --mca btl tcp,self"]

        let straight = try CoordinatedRun.finished(root: temporary.path, name: "mpi-straight", world: 2,
                                                   workerFlags: flags, agentFlags: agentFlags)

        let killed = CoordinatedRun(root: temporary.path, name: "mpi-killed")
        defer { killed.stopAll() }
        try killed.startCoordinator(world: 2, workerFlags: flags)
        try killed.startAgent(count: 2, extra: agentFlags)
        guard waitUntil(seconds: 60, { killed.loggedSteps() >= 20 }) else { throw TestFailure("no step 20: \(killed.output)") }
        guard let pid = killed.currentState()?.ranks[1].pid, pid > 0 else { throw TestFailure("no pid of rank 1") }
        kill(pid, SIGKILL)
        #expect(killed.coordinator?.exitStatus(within: 120) == 0, "\(killed.output)")
        let state = try killed.state()
        #expect(state.restarts == 1 && state.phase == .finished, "\(state.failures)")
        #expect(killed.agents[0].output.contains("resuming from"), "\(killed.agents[0].output)")
        let named = state.failures.first?.what ?? ""
        #expect(named.contains("rank 1") || named.contains("mpirun of ranks 0...1"), "\(state.failures)")
        for file in ["model.safetensors", "optimizer.safetensors"] {
            #expect(try killed.checkpointFile(step: 80, file) == straight.checkpointFile(step: 80, file), "\(file) differs")
        }
        #expect(killed.liveWorkers().isEmpty)
    }
}
#endif
