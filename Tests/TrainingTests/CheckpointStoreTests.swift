import Foundation
import Testing
import TestSupport
@testable import Training
import System

/// Collects the store's warnings (the store calls from one thread at a time in these tests).
final class WarningLog: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ line: String) { lock.lock(); lines.append(line); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
}

@Suite struct CheckpointStoreTests {
    func state(step: Int, epoch: Int = 0, isEpochEnd: Bool = false) -> CheckpointState {
        CheckpointState(step: step, epoch: epoch, stepInEpoch: 0, nextBatchIndex: 0, isEpochEnd: isEpochEnd, seed: 1,
                        worldSize: 1, epochLossSum: 0, epochLearningRateSum: 0, epochStepCount: 0,
                        datasetFingerprint: "abc", datasetCount: 10,
                        config: RunConfig(dataRoot: "/data", model: tinyModelConfig(), runDirectory: "/run"),
                        schedule: try! LearningRateSchedule(peakLearningRate: 1e-3, minimumLearningRate: 0, warmupEpochs: 1,
                                                            epochs: 5, iterationsPerEpoch: 4, accumulationSteps: 1))
    }

    @discardableResult
    /// A writer standing in for the model files: one file whose bytes name the step.
    func write(_ store: CheckpointStore, step: Int, epoch: Int = 0, isEpochEnd: Bool = false) throws -> String {
        try store.write(state: state(step: step, epoch: epoch, isEpochEnd: isEpochEnd)) { directory in
            try FileSystem.writeFile(directory + "/data.bin", bytes: Array("payload of step \(step)".utf8))
            return ["data.bin"]
        }
    }

    @Test func writesACompleteVerifiedCheckpoint() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let store = CheckpointStore(runDirectory: temporary.path, warn: { _ in })
        let path = try write(store, step: 7)
        #expect(path == temporary.path + "/checkpoints/step-00000007")
        #expect(fileExists(path + "/COMPLETE") && fileExists(path + "/state.json") && fileExists(path + "/data.bin"))
        let verified = try CheckpointStore.verify(path)
        #expect(verified.step == 7)
        #expect(verified.checksums["data.bin"]?.hasPrefix("fnv1a64:") == true)
        #expect(try store.completeCheckpoints().map(\.step) == [7])
        // No temporary directory is left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.directory) == ["step-00000007"])
    }

    @Test func aDirectoryWithoutTheMarkerIsNeverLoaded() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let store = CheckpointStore(runDirectory: temporary.path, warn: { _ in })
        try write(store, step: 2)
        let newer = try write(store, step: 4)
        try FileManager.default.removeItem(atPath: newer + "/COMPLETE")  // as if the process died before the marker
        #expect(try store.completeCheckpoints().map(\.step) == [2])
        #expect(try store.newestValid()?.state.step == 2)
        #expect(throws: TrainingError.self) { try CheckpointStore.verify(newer) }
        // A new write of the same step replaces the unfinished directory.
        try write(store, step: 4)
        #expect(try store.newestValid()?.state.step == 4)
    }

    @Test func aDamagedCheckpointFallsBackToAnOlderOneWithAWarning() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let warnings = WarningLog()
        let store = CheckpointStore(runDirectory: temporary.path, warn: { warnings.append($0) })
        try write(store, step: 1)
        let newest = try write(store, step: 2)
        try Data("payload of step 9".utf8).write(to: URL(fileURLWithPath: newest + "/data.bin"))  // same length, other bytes
        let found = try #require(try store.newestValid())
        #expect(found.state.step == 1)
        #expect(warnings.all.count == 1)
        #expect(warnings.all.first?.contains("step-00000002") == true)
        #expect(warnings.all.first?.contains("damaged") == true)

        // A damaged state.json is caught by the marker's checksum.
        let other = try write(store, step: 3)
        var text = readText(other + "/state.json")
        text = text.replacingOccurrences(of: "\"step\" : 3", with: "\"step\" : 5")
        try Data(text.utf8).write(to: URL(fileURLWithPath: other + "/state.json"))
        #expect(try store.newestValid()?.state.step == 1)

        // Set aside, the damaged ones no longer count among the newest to keep when pruning.
        #expect(try store.newestValid(setAsideDamaged: true)?.state.step == 1)
        #expect(try store.completeCheckpoints().map(\.step) == [1])
        let names = try FileManager.default.contentsOfDirectory(atPath: store.directory).sorted()
        #expect(names.count == 3 && names.filter { $0.hasPrefix("damaged-step-0000000") }.count == 2, "\(names)")
        try write(store, step: 2)
        try store.prune(keepLast: 1, keepEveryEpochs: 0)
        #expect(try store.newestValid()?.state.step == 2)
    }

    @Test func pruningKeepsTheNewestAndEveryNthEpochEnd() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let store = CheckpointStore(runDirectory: temporary.path, warn: { _ in })
        // Steps 1…8; an epoch ends every 2 steps (state.epoch counts completed epochs).
        for step in 1...8 {
            try write(store, step: step, epoch: step / 2, isEpochEnd: step % 2 == 0)
        }
        // An unfinished temporary directory from a crashed writer.
        try FileManager.default.createDirectory(atPath: store.directory + "/.tmp-step-00000003-999", withIntermediateDirectories: true)
        let removed = try store.prune(keepLast: 2, keepEveryEpochs: 2)
        // Kept: 7 and 8 (newest two) and the ends of epochs 2 and 4 (steps 4 and 8).
        #expect(try store.completeCheckpoints().map(\.step) == [4, 7, 8])
        #expect(removed.contains(store.directory + "/.tmp-step-00000003-999"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.directory).sorted()
                == ["step-00000004", "step-00000007", "step-00000008"])
        try store.prune(keepLast: 1, keepEveryEpochs: 0)
        #expect(try store.completeCheckpoints().map(\.step) == [8])
    }

    @Test func directoryNamesAreZeroPaddedSteps() {
        #expect(CheckpointStore.directoryName(step: 0) == "step-00000000")
        #expect(CheckpointStore.directoryName(step: 123_456_789) == "step-123456789")
        #expect(CheckpointStore.step(ofDirectoryName: "step-00001234") == 1234)
        #expect(CheckpointStore.step(ofDirectoryName: "step-12") == nil)
        #expect(CheckpointStore.step(ofDirectoryName: ".tmp-step-00000001-5") == nil)
    }

    @Test func checksumIsFNV1a() {
        var hash = FNV1a64()
        Array("a".utf8).withUnsafeBytes { hash.update($0) }
        #expect(hash.hex == "af63dc4c8601ec8c")  // published FNV-1a 64 test vector for "a"
        #expect(FNV1a64().hex == "cbf29ce484222325")
    }
}

/// Every kind of damage, after the write or by a kill in the middle of it, and a full disk.
@Suite(.serialized) struct CheckpointDamageTests {
    let helper = CheckpointStoreTests()

    enum Damage: String, CaseIterable {
        case flippedByte = "flipped byte", truncated, missingFile = "missing file", missingState = "missing state.json",
             emptyMarker = "empty marker", tornWrite = "torn write (no marker)"
    }

    @Test(arguments: Damage.allCases)
    func aDamagedNewestCheckpointIsNeverLoadedAndTheWarningNamesIt(_ damage: Damage) throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let warnings = WarningLog()
        let store = CheckpointStore(runDirectory: temporary.path, warn: { warnings.append($0) })
        try helper.write(store, step: 1)
        let newest = try helper.write(store, step: 2)
        let data = URL(fileURLWithPath: newest + "/data.bin")
        switch damage {
        case .flippedByte:
            var bytes = try Data(contentsOf: data)
            bytes[3] ^= 0x10
            try bytes.write(to: data)
        case .truncated: try Data(try Data(contentsOf: data).prefix(5)).write(to: data)
        case .missingFile: try FileManager.default.removeItem(at: data)
        case .missingState: try FileManager.default.removeItem(atPath: newest + "/state.json")
        case .emptyMarker: try Data().write(to: URL(fileURLWithPath: newest + "/COMPLETE"))
        case .tornWrite: try FileManager.default.removeItem(atPath: newest + "/COMPLETE")
        }
        let found = try #require(try store.newestValid(setAsideDamaged: true))
        #expect(found.state.step == 1 && found.entry.path.hasSuffix("step-00000001"))
        #expect(warnings.all.count == 1 && warnings.all[0].contains("step-00000002"), "\(warnings.all)")
        #expect(throws: TrainingError.self) { try CheckpointStore.verify(newest) }
    }

    @Test func aFolderThatIsNoCheckpointSaysSo() throws {
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        #expect { try CheckpointStore.verify(temporary.path) } throws: { error in
            "\(error)".contains("is not a checkpoint (no state.json, no COMPLETE marker)")
        }
    }

    /// A tmpfs of 256 KiB mounted by the test (root only; skipped elsewhere): the write fails with
    /// one clear error, leaves nothing behind, and the previous checkpoint still verifies.
    @Test func aFullDiskFailsTheWriteClearlyAndKeepsThePreviousCheckpoint() throws {
        guard getuid() == 0 else { return }
        let temporary = try TemporaryDirectory()
        defer { temporary.remove() }
        let mountPoint = temporary.path + "/small"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mount = try TestProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mountPoint],
                                    logDirectory: temporary.path, name: "mount")
        guard mount.exitStatus(within: 10) == 0 else {
            print("skipped: cannot mount a tmpfs here: \(mount.output)")
            return
        }
        defer {
            let unmount = try? TestProcess("/bin/umount", [mountPoint], logDirectory: temporary.path, name: "umount")
            _ = unmount?.exitStatus(within: 10)
        }
        let store = CheckpointStore(runDirectory: mountPoint, warn: { _ in })
        let previous = try helper.write(store, step: 1)
        var message = ""
        do {
            try store.write(state: helper.state(step: 2)) { directory in
                try FileSystem.writeFile(directory + "/data.bin", bytes: [UInt8](repeating: 7, count: 512 << 10))
                return ["data.bin"]
            }
            Issue.record("a 512 KiB checkpoint fit on a 256 KiB disk")
        } catch {
            message = "\(error)"
        }
        #expect(message.contains("step 2") && message.contains("No space left on device")
                && message.contains(previous) && message.contains("--resume auto"), "\(message)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.directory) == ["step-00000001"])
        #expect(try CheckpointStore.verify(previous).step == 1)
        #expect(try store.newestValid()?.state.step == 1)
    }
}
