import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A training image removed while the run goes on (after the dataset was listed): skipped,
/// counted and named, as a corrupt file is, and the run ends normally.
@Suite(.serialized) struct DataRemovedDuringRunTests {
    @Test func anImageRemovedDuringTheRunIsSkippedCountedAndNamed() throws {
        let workers = try WorkerProcessTests()
        defer { workers.temporary.remove() }
        let classFolder = workers.data + "/train/" + (try FileManager.default.contentsOfDirectory(atPath: workers.data + "/train").sorted()[0])
        let victim = classFolder + "/" + (try FileManager.default.contentsOfDirectory(atPath: classFolder).sorted()[0])
        let worker = try WorkerProcess(workers.arguments(runDirectory: "removed", ["--standalone", "--epochs", "4"]),
                                       logDirectory: workers.temporary.path, name: "removed")
        // The banner names the dataset once it is listed; the file goes after that.
        let deadline = Date().addingTimeInterval(60)
        while !(worker.output + worker.errors).contains("dataset "), worker.process.isRunning, Date() < deadline { usleep(10_000) }
        try FileManager.default.removeItem(atPath: victim)
        #expect(try worker.wait(seconds: 120) == 0, "\(worker.errors)")
        #expect(worker.errors.contains("skipping \(victim): open(\(victim)) failed: No such file or directory"), "\(worker.errors)")
        #expect(worker.output.contains("1 unreadable file(s) skipped so far"), "\(worker.output)")
    }
}
