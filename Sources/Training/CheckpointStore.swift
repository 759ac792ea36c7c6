import Foundation
import System

/// A complete checkpoint found on disk.
public struct CheckpointEntry: Sendable, Equatable {
    /// The checkpoint directory.
    public let path: String
    /// The global optimizer step in its name.
    public let step: Int
}

/// Checkpoint directories of a run: `RUN_DIR/checkpoints/step-NNNNNNNN/` holding the
/// files a writer puts there, `state.json`, and last a `COMPLETE` marker.
///
/// Atomicity: everything is written into a temporary directory, every file is fsynced,
/// the directory is renamed to its final name and its parent fsynced, and only then is
/// the `COMPLETE` marker (holding the checksum of `state.json`) written and fsynced. A
/// directory without the marker is never loaded, whatever else it holds; a crash at
/// any point leaves either no new checkpoint or a complete one.
public struct CheckpointStore: Sendable {
    /// `RUN_DIR/checkpoints`.
    public let directory: String
    /// Receives warnings (checksum failures, skipped directories).
    public let warn: @Sendable (String) -> Void

    public static let stateFileName = "state.json"
    public static let completeMarkerName = "COMPLETE"
    static let temporaryPrefix = ".tmp-"
    static let damagedPrefix = "damaged-"

    public init(runDirectory: String, warn: @escaping @Sendable (String) -> Void) {
        directory = runDirectory + "/checkpoints"
        self.warn = warn
    }

    /// "step-00001234".
    public static func directoryName(step: Int) -> String {
        let digits = String(step)
        return "step-" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    /// The step of a directory name "step-NNNNNNNN", or nil.
    static func step(ofDirectoryName name: String) -> Int? {
        guard name.hasPrefix("step-") else { return nil }
        let digits = name.dropFirst(5)
        guard digits.count >= 8, digits.allSatisfy(\.isASCII), let step = Int(digits), step >= 0 else { return nil }
        return step
    }

    /// Writes a checkpoint for `state.step`.
    ///
    /// - Parameters:
    ///   - state: the state to save; its `checksums` are filled in here.
    ///   - writeFiles: writes the checkpoint's data files into the directory it is given
    ///     (a temporary one) and returns their names; they are fsynced and checksummed after.
    /// - Returns: the final checkpoint directory.
    @discardableResult
    public func write(state: CheckpointState, writeFiles: (String) throws -> [String]) throws -> String {
        let name = Self.directoryName(step: state.step)
        let temporary = directory + "/" + Self.temporaryPrefix + name + "-\(getpid())"
        let final = directory + "/" + name
        do {
            return try write(state: state, temporary: temporary, final: final, writeFiles: writeFiles)
        } catch {
            // A full disk or another failure: nothing half-written stays, and the previous checkpoint
            // is untouched (a directory without the marker would never be loaded, but takes space).
            try? FileSystem.removeTree(temporary)
            if !FileSystem.exists(final + "/" + Self.completeMarkerName) { try? FileSystem.removeTree(final) }
            let previous = (try? completeCheckpoints().last?.path) ?? nil
            throw TrainingError.checkpoint("could not write the checkpoint of step \(state.step) in \(directory): \(error); "
                                           + (previous.map { "the previous checkpoint \($0) is intact" } ?? "there is no earlier checkpoint")
                                           + ". If the disk is full, free space there (or lower --keep-checkpoints), then resume with --resume auto")
        }
    }

    private func write(state: CheckpointState, temporary: String, final: String,
                       writeFiles: (String) throws -> [String]) throws -> String {
        try TrainingError.reportingSystemCalls {
            try FileSystem.makeDirectories(directory)
            try FileSystem.removeTree(temporary)
            try FileSystem.makeDirectory(temporary)
        }

        var state = state
        var checksums: [String: String] = [:]
        for file in try writeFiles(temporary) {
            let path = temporary + "/" + file
            try TrainingError.reportingSystemCalls { try FileSystem.fsync(path: path) }
            checksums[file] = try FNV1a64.ofFile(path)
        }
        state.checksums = checksums
        let stateBytes = try state.encoded()
        var hash = FNV1a64()
        stateBytes.withUnsafeBytes { hash.update($0) }
        let marker = "complete \(Self.stateFileName) fnv1a64:\(hash.hex)\n"
        try TrainingError.reportingSystemCalls {
            try FileSystem.writeFile(temporary + "/" + Self.stateFileName, bytes: stateBytes, synchronize: true)
            try FileSystem.fsync(path: temporary)

            // An older directory of the same step (an unfinished write, or a checkpoint this run
            // went back behind) gives way to the new one.
            try FileSystem.removeTree(final)
            try FileSystem.rename(temporary, final)
            try FileSystem.fsync(path: directory)

            try FileSystem.writeFile(final + "/" + Self.completeMarkerName, bytes: Array(marker.utf8), synchronize: true)
            try FileSystem.fsync(path: final)
        }
        return final
    }

    /// Complete checkpoints (with the marker), oldest first. Directories without the marker are skipped.
    public func completeCheckpoints() throws -> [CheckpointEntry] {
        guard FileSystem.isDirectory(directory) else { return [] }
        return try TrainingError.reportingSystemCalls { try FileSystem.contents(of: directory) }.compactMap { name -> CheckpointEntry? in
            guard let step = Self.step(ofDirectoryName: name) else { return nil }
            let path = directory + "/" + name
            guard FileSystem.exists(path + "/" + Self.completeMarkerName) else { return nil }
            return CheckpointEntry(path: path, step: step)
        }.sorted { $0.step < $1.step }
    }

    /// Reads and verifies one checkpoint directory: the marker must exist, and `state.json`
    /// and every file it lists must match their checksums.
    public static func verify(_ path: String) throws -> CheckpointState {
        let markerPath = path + "/" + completeMarkerName
        guard FileSystem.exists(markerPath) || FileSystem.exists(path + "/" + stateFileName) else {
            throw TrainingError.checkpoint("\(path) is not a checkpoint (no \(stateFileName), no \(completeMarkerName) marker); "
                                           + "pass a folder RUN_DIR/checkpoints/step-NNNNNNNN, or --resume auto")
        }
        guard FileSystem.exists(markerPath) else {
            throw TrainingError.checkpoint("\(path) is not a complete checkpoint (no \(completeMarkerName) marker): "
                                           + "its write did not finish")
        }
        let marker = String(decoding: try TrainingError.reportingSystemCalls { try FileSystem.readFile(markerPath) }, as: UTF8.self)
        let stateBytes = try TrainingError.reportingSystemCalls { try FileSystem.readFile(path + "/" + stateFileName) }
        var hash = FNV1a64()
        stateBytes.withUnsafeBytes { hash.update($0) }
        guard marker.contains("fnv1a64:" + hash.hex) else {
            throw TrainingError.checkpoint("\(path)/\(stateFileName) does not match the checksum in its \(completeMarkerName) marker")
        }
        let state = try CheckpointState.decode(stateBytes, path: path + "/" + stateFileName)
        for (file, expected) in state.checksums.sorted(by: { $0.key < $1.key }) {
            let filePath = path + "/" + file
            guard FileSystem.exists(filePath) else {
                throw TrainingError.checkpoint("\(filePath) is missing")
            }
            let actual = try FNV1a64.ofFile(filePath)
            guard actual == expected else {
                throw TrainingError.checkpoint("\(filePath) is damaged: checksum \(actual), expected \(expected)")
            }
        }
        return state
    }

    /// The newest complete checkpoint that verifies; an older one is taken, with a warning,
    /// when newer ones fail their checks. Nil when there is none.
    ///
    /// - Parameter setAsideDamaged: rename each checkpoint that fails to `damaged-step-…`
    ///   (kept for inspection, never loaded or pruned), so that a run resuming behind it
    ///   neither counts it among the newest to keep nor trips over it again.
    public func newestValid(setAsideDamaged: Bool = false) throws -> (entry: CheckpointEntry, state: CheckpointState)? {
        let complete = try completeCheckpoints()
        for name in try unfinishedDirectories() where (Self.step(ofDirectoryName: name) ?? 0) > (complete.last?.step ?? -1) {
            warn("warning: skipping checkpoint \(directory)/\(name): it has no \(Self.completeMarkerName) marker "
                 + "(its write was interrupted); it is never loaded")
        }
        for entry in complete.reversed() {
            do {
                return (entry, try Self.verify(entry.path))
            } catch let error as TrainingError {
                var note = "trying an older one"
                if setAsideDamaged {
                    let aside = directory + "/" + Self.damagedPrefix + Self.directoryName(step: entry.step) + "-\(getpid())"
                    try TrainingError.reportingSystemCalls {
                        try FileSystem.rename(entry.path, aside)
                        try FileSystem.fsync(path: directory)
                    }
                    note = "moved it to \(aside); " + note
                }
                warn("warning: skipping checkpoint \(entry.path): \(error); \(note)")
            }
        }
        return nil
    }

    /// Deletes checkpoints outside the policy: the newest `keepLast` complete ones stay, and so
    /// does every epoch-end checkpoint whose completed-epoch count is a multiple of
    /// `keepEveryEpochs` (when > 0). Unfinished directories (no marker, or temporary ones
    /// of this or another process) older than the newest complete checkpoint are removed too.
    /// Returns the removed paths.
    @discardableResult
    public func prune(keepLast: Int, keepEveryEpochs: Int) throws -> [String] {
        guard FileSystem.isDirectory(directory) else { return [] }
        let complete = try completeCheckpoints()
        let kept = Set(complete.suffix(max(0, keepLast)).map(\.step))
        var removed: [String] = []
        for entry in complete where !kept.contains(entry.step) {
            if keepEveryEpochs > 0, let state = try? Self.readStateUnverified(entry.path),
               state.isEpochEnd, state.epoch > 0, state.epoch % keepEveryEpochs == 0 {
                continue
            }
            try TrainingError.reportingSystemCalls { try FileSystem.removeTree(entry.path) }
            removed.append(entry.path)
        }
        let newest = complete.last?.step ?? Int.max
        for name in try TrainingError.reportingSystemCalls({ try FileSystem.contents(of: directory) }) {
            let path = directory + "/" + name
            let unfinishedStep: Int?
            if name.hasPrefix(Self.temporaryPrefix) {
                unfinishedStep = Self.step(ofDirectoryName: String(name.dropFirst(Self.temporaryPrefix.count).prefix(13)))
            } else if let step = Self.step(ofDirectoryName: name), !FileSystem.exists(path + "/" + Self.completeMarkerName) {
                unfinishedStep = step
            } else {
                unfinishedStep = nil
            }
            if let step = unfinishedStep, step < newest {
                try TrainingError.reportingSystemCalls { try FileSystem.removeTree(path) }
                removed.append(path)
            }
        }
        return removed
    }

    /// Names of step directories without the marker (torn writes); temporary ones are not listed.
    func unfinishedDirectories() throws -> [String] {
        guard FileSystem.isDirectory(directory) else { return [] }
        return try TrainingError.reportingSystemCalls { try FileSystem.contents(of: directory) }.filter { name in
            Self.step(ofDirectoryName: name) != nil && !FileSystem.exists(directory + "/" + name + "/" + Self.completeMarkerName)
        }.sorted()
    }

    static func readStateUnverified(_ path: String) throws -> CheckpointState {
        let bytes = try TrainingError.reportingSystemCalls { try FileSystem.readFile(path + "/" + stateFileName) }
        return try CheckpointState.decode(bytes, path: path + "/" + stateFileName)
    }
}
