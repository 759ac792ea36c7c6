import Foundation
import Testing
import TestSupport
@testable import Training

@Suite struct TensorBoardTests {
    func fixture() throws -> [UInt8] {
        let url = try #require(Bundle.module.url(forResource: "reference", withExtension: "tfevents", subdirectory: "Fixtures"))
        return Array(try Data(contentsOf: url))
    }

    @Test func crc32cMatchesThePublishedCheckValues() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        // RFC 3720 (iSCSI) appendix B.4.
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum((0..<32).reversed().map { UInt8($0) }) == 0x113F_DB5C)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    @Test func theReaderReadsTheRealTensorBoardWritersFile() throws {
        let events = try TensorBoardReader.read(fixture())
        #expect(events.count == 4)
        #expect(events[0].fileVersion == "brain.Event:2" && events[0].wallTime == 1_700_000_000.5)
        #expect(events[1].sessionStatus == 1 && events[1].step == 1250)
        #expect(events[2].step == 1250 && events[2].scalars == ["train_loss": 0.75, "lr": Float(1.5e-4)])
        #expect(events[3].step == 2500 && events[3].scalars == ["train_loss": 0.5, "lr": Float(3e-5)])
        // A flipped bit anywhere is caught by a CRC.
        var damaged = try fixture()
        damaged[40] ^= 1
        #expect(throws: TensorBoardReadError.self) { try TensorBoardReader.read(damaged) }
    }

    @Test func writerBytesEqualTheRealTensorBoardWritersForTheSameEvents() throws {
        let temporary = try TemporaryDirectory("tensorboard")
        defer { temporary.remove() }
        let writer = try TensorBoardWriter(directory: temporary.path + "/tb", restartStep: 1250, wallTime: 1_700_000_000.5)
        writer.addScalars([("train_loss", 0.75), ("lr", 1.5e-4)], step: 1250, wallTime: 1_700_000_001.25)
        writer.addScalars([("train_loss", 0.5), ("lr", 3e-5)], step: 2500, wallTime: 1_700_000_003.0)
        try writer.flush()
        #expect(writer.path.hasPrefix(temporary.path + "/tb/events.out.tfevents.1700000000."))
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: writer.path))) == (try fixture()))
        // A second writer in the same second gets a file of its own.
        let second = try TensorBoardWriter(directory: temporary.path + "/tb", wallTime: 1_700_000_000.5)
        #expect(second.path != writer.path)
        #expect(try TensorBoardReader.read(directory: temporary.path + "/tb").map(\.count).sorted() == [1, 4])
    }

    @Test func theStepIsTheOfficialEpoch1000x() {
        // int((data_iter_step / len(data_loader) + epoch) * 1000) at the step's last micro-batch.
        #expect(TensorBoardWriter.epoch1000x(epoch: 0, lastBatch: 0, batchesPerEpoch: 4) == 0)
        #expect(TensorBoardWriter.epoch1000x(epoch: 2, lastBatch: 3, batchesPerEpoch: 4) == 2750)
        #expect(TensorBoardWriter.epoch1000x(epoch: 1, lastBatch: 1, batchesPerEpoch: 3) == 1333)
        #expect(TensorBoardWriter.epoch1000x(epoch: 799, lastBatch: 311, batchesPerEpoch: 312) == 799_996)
    }
}
