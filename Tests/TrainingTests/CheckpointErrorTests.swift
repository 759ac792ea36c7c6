import Foundation
import Testing
import TestSupport
@testable import Training
#if canImport(Glibc)
import Glibc
#endif

/// A disk that fills up during a checkpoint (a tmpfs the test mounts; root only, skipped
/// elsewhere): `--on-checkpoint-error stop` ends the run with one clear error and the previous
/// checkpoint intact, `continue` trains on with a warning, and the run resumes once there is space.
@Suite(.serialized) struct CheckpointErrorTests {
    @Test func aFullDiskStopsResumablyOrContinuesAsAsked() throws {
        guard getuid() == 0 else { return }
        let workers = try WorkerProcessTests()
        let temporary = workers.temporary
        defer { temporary.remove() }
        let disk = temporary.path + "/disk", runDirectory = temporary.path + "/full"
        try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        let mount = try TestProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", disk],
                                    logDirectory: temporary.path, name: "mount")
        guard mount.exitStatus(within: 10) == 0 else {
            print("skipped: cannot mount a tmpfs here: \(mount.output)")
            return
        }
        defer { _ = try? TestProcess("/bin/umount", [disk], logDirectory: temporary.path, name: "umount").exitStatus(within: 10) }
        // Only the checkpoints live on the small disk.
        try FileManager.default.createSymbolicLink(atPath: runDirectory + "/checkpoints", withDestinationPath: disk)
        func train(_ name: String, _ extra: [String]) throws -> WorkerProcess {
            let worker = try WorkerProcess(workers.arguments(runDirectory: "full", ["--standalone"] + extra),
                                           logDirectory: temporary.path, name: name)
            _ = try worker.wait(seconds: 120)
            return worker
        }
        let first = try train("first", ["--max-steps", "2"])
        #expect(first.process.terminationStatus == 0, "\(first.errors)")
        let previous = disk + "/step-00000002"
        #expect(try CheckpointStore.verify(previous).step == 2)

        let fill = try TestProcess("/bin/dd", ["if=/dev/zero", "of=\(disk)/filler", "bs=64k"],
                                   logDirectory: temporary.path, name: "fill")
        _ = fill.exitStatus(within: 30)
        let stopped = try train("stopped", ["--resume", "auto", "--max-steps", "4"])
        #expect(stopped.process.terminationStatus != 0)
        let error = stopped.errors
        #expect(error.contains("could not write the checkpoint of step 4") && error.contains("No space left on device")
                && error.contains("step-00000002 is intact") && error.contains("--resume auto")
                && error.contains("--on-checkpoint-error stop"), "\(error)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: disk).sorted() == ["filler", "step-00000002"])
        #expect(try CheckpointStore.verify(previous).step == 2)

        let continued = try train("continued", ["--resume", "auto", "--max-steps", "4", "--on-checkpoint-error", "continue"])
        #expect(continued.process.terminationStatus == 0, "\(continued.errors)")
        #expect((continued.output + continued.errors).contains("training goes on without it"), "\(continued.output)")

        try FileManager.default.removeItem(atPath: disk + "/filler")
        let resumed = try train("resumed", ["--resume", "auto", "--max-steps", "4"])
        #expect(resumed.process.terminationStatus == 0, "\(resumed.errors)")
        #expect(try CheckpointStore.verify(disk + "/step-00000004").step == 4)
    }
}
