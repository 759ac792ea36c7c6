import Foundation
@testable import Training

/// A reader of TensorBoard event files for the tests, written from the format (TFRecord
/// framing with masked CRC-32C, protobuf Event/Summary/SessionLog), independent of the
/// writer's code: it checks both CRCs of every record and decodes the fields the writer
/// uses, failing on anything it does not expect.
struct TensorBoardEvent: Equatable {
    var wallTime: Double = 0
    var step: Int64 = 0
    var fileVersion: String?
    var scalars: [String: Float] = [:]
    var scalarTags: [String] = []
    /// SessionLog.status (1: START), nil when the event has none.
    var sessionStatus: Int?
}

struct TensorBoardReadError: Error, CustomStringConvertible {
    let description: String
}

enum TensorBoardReader {
    static func read(_ bytes: [UInt8]) throws -> [TensorBoardEvent] {
        var events: [TensorBoardEvent] = []
        var offset = 0
        func little<T: FixedWidthInteger>(_ type: T.Type, at position: Int) -> T {
            var value: T = 0
            for index in 0..<MemoryLayout<T>.size { value |= T(bytes[position + index]) << (8 * index) }
            return value
        }
        while offset < bytes.count {
            guard offset + 12 <= bytes.count else { throw TensorBoardReadError(description: "truncated record header at \(offset)") }
            let length = Int(little(UInt64.self, at: offset))
            guard little(UInt32.self, at: offset + 8) == CRC32C.masked(bytes[offset..<(offset + 8)]) else {
                throw TensorBoardReadError(description: "bad length CRC at \(offset)")
            }
            let start = offset + 12, end = start + length
            guard end + 4 <= bytes.count else { throw TensorBoardReadError(description: "truncated record at \(offset)") }
            guard little(UInt32.self, at: end) == CRC32C.masked(bytes[start..<end]) else {
                throw TensorBoardReadError(description: "bad data CRC at \(offset)")
            }
            events.append(try event(Array(bytes[start..<end])))
            offset = end + 4
        }
        return events
    }

    /// (field, wire type, value or bytes) of one protobuf message.
    static func fields(_ bytes: [UInt8]) throws -> [(field: Int, wire: Int, number: UInt64, payload: [UInt8])] {
        var result: [(Int, Int, UInt64, [UInt8])] = []
        var index = 0
        func varint() throws -> UInt64 {
            var value: UInt64 = 0, shift: UInt64 = 0
            while true {
                guard index < bytes.count, shift < 64 else { throw TensorBoardReadError(description: "bad varint") }
                let byte = bytes[index]
                index += 1
                value |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return value }
                shift += 7
            }
        }
        func fixed(_ count: Int) throws -> UInt64 {
            guard index + count <= bytes.count else { throw TensorBoardReadError(description: "truncated fixed field") }
            var value: UInt64 = 0
            for offset in 0..<count { value |= UInt64(bytes[index + offset]) << (8 * UInt64(offset)) }
            index += count
            return value
        }
        while index < bytes.count {
            let key = try varint()
            let field = Int(key >> 3), wire = Int(key & 7)
            switch wire {
            case 0: result.append((field, wire, try varint(), []))
            case 1: result.append((field, wire, try fixed(8), []))
            case 5: result.append((field, wire, try fixed(4), []))
            case 2:
                let length = Int(try varint())
                guard index + length <= bytes.count else { throw TensorBoardReadError(description: "truncated bytes field") }
                result.append((field, wire, 0, Array(bytes[index..<(index + length)])))
                index += length
            default: throw TensorBoardReadError(description: "unexpected wire type \(wire)")
            }
        }
        return result
    }

    static func event(_ bytes: [UInt8]) throws -> TensorBoardEvent {
        var event = TensorBoardEvent()
        for (field, wire, number, payload) in try fields(bytes) {
            switch (field, wire) {
            case (1, 1): event.wallTime = Double(bitPattern: number)
            case (2, 0): event.step = Int64(bitPattern: number)
            case (3, 2): event.fileVersion = String(decoding: payload, as: UTF8.self)
            case (5, 2):
                for value in try fields(payload) {
                    guard value.field == 1, value.wire == 2 else { throw TensorBoardReadError(description: "unexpected Summary field") }
                    var tag = "", scalar: Float?
                    for part in try fields(value.payload) {
                        switch (part.field, part.wire) {
                        case (1, 2): tag = String(decoding: part.payload, as: UTF8.self)
                        case (2, 5): scalar = Float(bitPattern: UInt32(part.number))
                        default: throw TensorBoardReadError(description: "unexpected Summary.Value field \(part.field)")
                        }
                    }
                    guard let scalar else { throw TensorBoardReadError(description: "a value without simple_value") }
                    event.scalars[tag] = scalar
                    event.scalarTags.append(tag)
                }
            case (7, 2):
                for part in try fields(payload) where part.field == 1 { event.sessionStatus = Int(part.number) }
                if event.sessionStatus == nil { event.sessionStatus = 0 }
            default: throw TensorBoardReadError(description: "unexpected Event field \(field) (wire \(wire))")
            }
        }
        return event
    }

    /// Every event of every event file in `directory`, files in name order.
    static func read(directory: String) throws -> [[TensorBoardEvent]] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.contains("tfevents") }.sorted()
        return try names.map { try read(Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/" + $0)))) }
    }
}
