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
        #expect(mpirun.waitForExit(seconds: 90), "mpirun did not finish")
        #expect(mpirun.process.terminationStatus == 0, "\(mpirun.errorOutput)")
        for rank in 0..<world {
            #expect(mpirun.output.contains("check ok rank=\(rank) world=\(world)"), "\(mpirun.output)\n\(mpirun.errorOutput)")
        }
    }
}
#endif
