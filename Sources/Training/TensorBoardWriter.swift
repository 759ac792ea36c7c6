import Foundation
import System

/// TensorBoard event files, written as the official script's `SummaryWriter` writes them
/// (`main_pretrain.py`: tags `train_loss` and `lr` at step `epoch_1000x`), so that the
/// real `tensorboard --logdir RUN_DIR/tensorboard` shows the curves.
///
/// The format, written here without a library:
/// - a file `events.out.tfevents.<seconds>.<host>` of TFRecords: each record is the data's
///   length (UInt64, little-endian), the masked CRC-32C of those 8 bytes (UInt32), the
///   data, and the masked CRC-32C of the data;
/// - each record's data is a protobuf `Event`: wall_time (field 1, double), step (2,
///   int64), and one of file_version (3, string: the first record, "brain.Event:2"),
///   summary (5: `Summary` with repeated value (1) = {tag (1, string), simple_value (2,
///   float)}) or session_log (7: `SessionLog` with status (1) START = 1).
///
/// A resumed run opens a new file that starts with a SessionLog START at the resume step:
/// TensorBoard then drops the earlier files' points from that step on, which the resumed
/// run writes again (as it rewrites `metrics.jsonl`).
public final class TensorBoardWriter {
    /// The event file.
    public let path: String
    private var pending: [UInt8] = []

    /// Creates `directory` and a new event file in it, with the file-version record (and,
    /// given `restartStep`, the SessionLog START of a resumed run).
    public init(directory: String, restartStep: Int? = nil, wallTime: Double = Date().timeIntervalSince1970) throws {
        try TrainingError.reportingSystemCalls { try FileSystem.makeDirectories(directory) }
        let host = ProcessInfo.processInfo.hostName.isEmpty ? "localhost" : ProcessInfo.processInfo.hostName
        var candidate = directory + "/events.out.tfevents.\(Int(wallTime)).\(host)"
        var suffix = 1
        while FileSystem.exists(candidate) {  // two writers within a second (a quick resume)
            candidate = directory + "/events.out.tfevents.\(Int(wallTime)).\(host).\(suffix)"
            suffix += 1
        }
        path = candidate
        var event = ProtobufWriter()
        event.double(field: 1, wallTime)
        event.string(field: 3, "brain.Event:2")
        append(record: event.bytes)
        if let restartStep {
            var sessionLog = ProtobufWriter()
            sessionLog.varint(field: 1, 1)  // SessionLog.START
            var restart = ProtobufWriter()
            restart.double(field: 1, wallTime)
            restart.varint(field: 2, UInt64(restartStep))
            restart.message(field: 7, sessionLog.bytes)
            append(record: restart.bytes)
        }
        try flush()
    }

    /// Adds scalars at one step (one Event whose Summary holds a value per tag); written
    /// by the next `flush`.
    public func addScalars(_ values: [(tag: String, value: Double)], step: Int,
                           wallTime: Double = Date().timeIntervalSince1970) {
        var summary = ProtobufWriter()
        for (tag, value) in values {
            var entry = ProtobufWriter()
            entry.string(field: 1, tag)
            entry.float(field: 2, Float(value))
            summary.message(field: 1, entry.bytes)
        }
        var event = ProtobufWriter()
        event.double(field: 1, wallTime)
        event.varint(field: 2, UInt64(bitPattern: Int64(step)))
        event.message(field: 5, summary.bytes)
        append(record: event.bytes)
    }

    /// Appends the pending records to the file: whole records only, in one write.
    public func flush() throws {
        guard !pending.isEmpty else { return }
        let text = pending
        try TrainingError.reportingSystemCalls {
            let descriptor = try FileSystem.open(path, flags: O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC)
            defer { FileSystem.close(descriptor) }
            try text.withUnsafeBytes { try FileSystem.writeAll(descriptor, $0, path: path) }
        }
        pending.removeAll(keepingCapacity: true)
    }

    /// The official x axis: `int((data_iter_step / len(data_loader) + epoch) * 1000)` at the
    /// last micro-batch of an optimizer step (the official script logs when
    /// `(data_iter_step + 1) % accum_iter == 0`).
    /// - Parameters:
    ///   - lastBatch: the 0-based index in the epoch of the step's last micro-batch.
    ///   - batchesPerEpoch: micro-batches per epoch per worker (`len(data_loader)`).
    public static func epoch1000x(epoch: Int, lastBatch: Int, batchesPerEpoch: Int) -> Int {
        epoch1000x(epoch: epoch, fraction: Double(lastBatch) / Double(batchesPerEpoch))
    }

    /// The same axis at a fraction of the epoch (`EpochSplit.fraction(samplesDone:)`).
    public static func epoch1000x(epoch: Int, fraction: Double) -> Int {
        Int((fraction + Double(epoch)) * 1000)
    }

    private func append(record data: [UInt8]) {
        let length = withUnsafeBytes(of: UInt64(data.count).littleEndian) { Array($0) }
        pending += length
        pending += withUnsafeBytes(of: CRC32C.masked(length).littleEndian) { Array($0) }
        pending += data
        pending += withUnsafeBytes(of: CRC32C.masked(data).littleEndian) { Array($0) }
    }
}

/// The few protobuf encodings an Event needs (proto3 wire format).
struct ProtobufWriter {
    private(set) var bytes: [UInt8] = []

    mutating func rawVarint(_ value: UInt64) {
        var rest = value
        while rest >= 0x80 {
            bytes.append(UInt8(rest & 0x7F) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    private mutating func key(_ field: Int, wireType: UInt64) { rawVarint(UInt64(field) << 3 | wireType) }

    mutating func varint(field: Int, _ value: UInt64) {
        key(field, wireType: 0)
        rawVarint(value)
    }

    mutating func double(field: Int, _ value: Double) {
        key(field, wireType: 1)
        bytes += withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) }
    }

    mutating func float(field: Int, _ value: Float) {
        key(field, wireType: 5)
        bytes += withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) }
    }

    mutating func message(field: Int, _ content: [UInt8]) {
        key(field, wireType: 2)
        rawVarint(UInt64(content.count))
        bytes += content
    }

    mutating func string(field: Int, _ text: String) { message(field: field, Array(text.utf8)) }
}
