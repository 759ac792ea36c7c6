import Foundation
import Testing
import TestSupport
@testable import Training
import System
#if canImport(Glibc)
import Glibc
#endif

/// Training's API throws `TrainingError`: failed system calls reach its callers as `.system`.
@Suite struct SystemErrorMappingTests {
    @Test func aFailedCallIsReportedAsTrainingErrorSystem() {
        let missing = "/nonexistent/mae-training-test/file.bin"
        #expect(throws: TrainingError.system(call: "open", path: missing, errno: ENOENT)) {
            _ = try FNV1a64.ofFile(missing)
        }
        let description = TrainingError.system(call: "open", path: missing, errno: ENOENT).description
        #expect(description == "open(\(missing)) failed: No such file or directory (errno 2)")
    }

    @Test func aCheckpointWithAnUnreadableStateFallsBackToAnOlderOne() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let store = CheckpointStore(runDirectory: temporary.path, warn: { _ in })
        let tests = CheckpointStoreTests()
        try tests.write(store, step: 1)
        let newest = try tests.write(store, step: 2)
        try FileSystem.removeTree(newest + "/state.json")
        #expect(throws: TrainingError.system(call: "open", path: newest + "/state.json", errno: ENOENT)) {
            _ = try CheckpointStore.verify(newest)
        }
        #expect(try store.newestValid()?.state.step == 1)
    }
}
