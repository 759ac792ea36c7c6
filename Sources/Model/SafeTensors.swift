import Foundation
import Kernels
import System
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

// The safetensors format (huggingface/safetensors): an 8-byte little-endian header
// length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, and an
// optional "__metadata__": {string: string}}, then the tensors' raw little-endian bytes,
// with offsets relative to the end of the header. The reference implementation pads the
// header with spaces to a multiple of 8 bytes and requires the tensors to tile the data
// section exactly: no gaps, no overlaps, nothing left over.

#if _endian(big)
#error("safetensors stores little-endian data; this reader and writer assume a little-endian host")
#endif

/// A safetensors file that cannot be read or written, with the file and the problem.
public struct SafeTensorsError: Error, CustomStringConvertible, Sendable {
    /// The file.
    public let path: String
    /// What is wrong, one line.
    public let problem: String

    public init(path: String, problem: String) {
        self.path = path
        self.problem = problem
    }

    public var description: String { "\(path): \(problem)" }
}

/// The element types of the safetensors format.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case bool = "BOOL", uint8 = "U8", int8 = "I8", float8E5M2 = "F8_E5M2", float8E4M3 = "F8_E4M3"
    case int16 = "I16", uint16 = "U16", float16 = "F16", bfloat16 = "BF16"
    case int32 = "I32", uint32 = "U32", float32 = "F32"
    case float64 = "F64", int64 = "I64", uint64 = "U64"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .bool, .uint8, .int8, .float8E5M2, .float8E4M3: return 1
        case .int16, .uint16, .float16, .bfloat16: return 2
        case .int32, .uint32, .float32: return 4
        case .float64, .int64, .uint64: return 8
        }
    }

    /// Whether `SafeTensorsFile` converts this type to Float (the types weights come in).
    public var convertsToFloat: Bool { [.float32, .float16, .bfloat16, .float64].contains(self) }
}

/// A safetensors file mapped into memory and fully validated.
///
/// Tensor data is not copied on reading: `tensor(named:)` returns views into the
/// mapping, valid while this value (or a copy of it) is alive; `copyFloats` converts
/// into caller-owned storage.
public struct SafeTensorsFile: @unchecked Sendable {
    /// One tensor of the file.
    public struct Tensor {
        /// Its name (the key in the header).
        public let name: String
        /// Its element type.
        public let dtype: SafeTensorsDType
        /// Its shape; [] for a scalar.
        public let shape: [Int]
        /// Its raw little-endian bytes, a view into the file.
        public let data: UnsafeRawBufferPointer
        /// Number of elements (the product of the shape).
        public var elementCount: Int { shape.reduce(1, *) }
    }

    /// The file it was read from.
    public let path: String
    /// The string map stored under "__metadata__" (empty when absent).
    public let metadata: [String: String]
    /// The tensors in the order of their data in the file.
    public let tensors: [Tensor]

    private let mapping: MappedFile
    private let indexByName: [String: Int]

    /// The largest header the reference implementation accepts; a bigger one means a corrupt length.
    static let maximumHeaderLength = 100_000_000

    /// The tensor names in file order.
    public var names: [String] { tensors.map(\.name) }

    /// The tensor called `name`, or nil.
    public func tensor(named name: String) -> Tensor? {
        indexByName[name].map { tensors[$0] }
    }

    /// Reads and validates `path`: header length within the file, JSON header with known
    /// dtypes, non-negative shapes whose size matches the byte range, and byte ranges
    /// that tile the data section exactly.
    public static func read(path: String) throws -> SafeTensorsFile {
        let mapping = try MappedFile(path: path)
        let bytes = mapping.bytes
        func failure(_ problem: String) -> SafeTensorsError { SafeTensorsError(path: path, problem: problem) }

        guard bytes.count >= 8 else {
            throw failure("truncated: \(bytes.count) bytes, too short for the 8-byte header length (not a safetensors file?)")
        }
        let declaredLength = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard declaredLength <= UInt64(maximumHeaderLength) else {
            throw failure("corrupt: header length \(declaredLength) exceeds the format's limit of \(maximumHeaderLength) bytes (not a safetensors file?)")
        }
        let headerLength = Int(declaredLength)
        guard headerLength <= bytes.count - 8 else {
            throw failure("truncated: the header needs \(headerLength) bytes but only \(bytes.count - 8) follow the length field")
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8 ..< 8 + headerLength])
        guard headerBytes.first == UInt8(ascii: "{") else {
            throw failure("corrupt: the header does not start with '{' (not a safetensors file?)")
        }
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: Data(headerBytes))
        } catch let error as HeaderError {
            throw failure("corrupt header: \(error.message)")
        } catch {
            throw failure("corrupt header: not valid safetensors JSON (\(oneLine(error)))")
        }

        let dataStart = 8 + headerLength
        let dataLength = bytes.count - dataStart
        let entries = header.entries.sorted {
            ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name)
        }
        var tensors: [Tensor] = []
        tensors.reserveCapacity(entries.count)
        var expectedBegin = 0
        for entry in entries {
            guard let dtype = SafeTensorsDType(rawValue: entry.dtype) else {
                throw failure("corrupt header: tensor '\(entry.name)' has unknown dtype '\(entry.dtype)'")
            }
            var elements = 1
            for dimension in entry.shape {
                let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
                guard dimension >= 0, !overflow else {
                    throw failure("corrupt header: tensor '\(entry.name)' has invalid shape \(entry.shape)")
                }
                elements = product
            }
            let (byteCount, overflow) = elements.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, entry.begin >= 0, entry.end >= entry.begin, entry.end - entry.begin == byteCount else {
                throw failure("corrupt header: tensor '\(entry.name)' of \(dtype.rawValue) \(entry.shape) needs \(overflow ? "too many" : String(byteCount)) bytes but data_offsets are [\(entry.begin), \(entry.end)]")
            }
            guard entry.end <= dataLength else {
                throw failure("truncated: tensor '\(entry.name)' ends at data byte \(entry.end) but the data section has only \(dataLength) bytes")
            }
            guard entry.begin == expectedBegin else {
                throw failure("corrupt header: tensor '\(entry.name)' starts at data byte \(entry.begin), expected \(expectedBegin) (overlapping or non-contiguous tensors)")
            }
            expectedBegin = entry.end
            let data = UnsafeRawBufferPointer(rebasing: bytes[dataStart + entry.begin ..< dataStart + entry.end])
            tensors.append(Tensor(name: entry.name, dtype: dtype, shape: entry.shape, data: data))
        }
        guard expectedBegin == dataLength else {
            throw failure("corrupt: the tensors cover \(expectedBegin) data bytes but the data section has \(dataLength) (trailing bytes)")
        }
        var indexByName: [String: Int] = [:]
        for (index, tensor) in tensors.enumerated() { indexByName[tensor.name] = index }
        return SafeTensorsFile(path: path, metadata: header.metadata, tensors: tensors,
                               mapping: mapping, indexByName: indexByName)
    }

    /// Converts the tensor `name` to Float into `destination`, which must hold exactly
    /// `count` elements. F32 is copied; F16, BF16 and F64 are converted.
    public func copyFloats(named name: String, into destination: UnsafeMutablePointer<Float>, count: Int) throws {
        guard let tensor = tensor(named: name) else {
            throw SafeTensorsError(path: path, problem: "no tensor named '\(name)'")
        }
        guard tensor.elementCount == count else {
            throw SafeTensorsError(path: path, problem: "tensor '\(name)' has \(tensor.elementCount) elements \(tensor.shape), expected \(count)")
        }
        try Self.convert(tensor, into: destination, path: path)
    }

    /// The tensor `name` as a new array of Float (for small tensors and tests).
    public func floats(named name: String) throws -> [Float] {
        guard let tensor = tensor(named: name) else {
            throw SafeTensorsError(path: path, problem: "no tensor named '\(name)'")
        }
        return try [Float](unsafeUninitializedCapacity: tensor.elementCount) { buffer, initialized in
            if let base = buffer.baseAddress { try Self.convert(tensor, into: base, path: path) }
            initialized = tensor.elementCount
        }
    }

    /// The tensor `name` as a new `FloatBuffer`.
    public func floatBuffer(named name: String) throws -> FloatBuffer {
        guard let tensor = tensor(named: name) else {
            throw SafeTensorsError(path: path, problem: "no tensor named '\(name)'")
        }
        let buffer = FloatBuffer(count: tensor.elementCount)
        try Self.convert(tensor, into: buffer.pointer, path: path)
        return buffer
    }

    private static func convert(_ tensor: Tensor, into destination: UnsafeMutablePointer<Float>, path: String) throws {
        let source = tensor.data
        let count = tensor.elementCount
        guard count > 0, let base = source.baseAddress else { return }
        switch tensor.dtype {
        case .float32:
            // The mapping only guarantees byte alignment of a tensor, so copy bytes.
            memcpy(destination, base, count * 4)
        case .float64:
            for index in 0 ..< count {
                destination[index] = Float(Double(bitPattern: source.loadUnaligned(fromByteOffset: index &* 8, as: UInt64.self)))
            }
        case .bfloat16:
            for index in 0 ..< count {
                let bits = source.loadUnaligned(fromByteOffset: index &* 2, as: UInt16.self)
                destination[index] = Float(bitPattern: UInt32(bits) << 16)
            }
        case .float16:
            for index in 0 ..< count {
                destination[index] = floatFromHalf(source.loadUnaligned(fromByteOffset: index &* 2, as: UInt16.self))
            }
        default:
            throw SafeTensorsError(path: path, problem: "tensor '\(tensor.name)' has dtype \(tensor.dtype.rawValue); only F32, F16, BF16 and F64 convert to Float")
        }
    }

    /// Writes `tensors` as F32 in the given order, with `metadata` under "__metadata__"
    /// (left out when empty), the header padded with spaces to a multiple of 8 bytes as
    /// the reference implementation does. Overwrites `path` in place; writing to a
    /// temporary name and renaming is the caller's choice.
    public static func write(path: String,
                             tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)],
                             metadata: [String: String] = [:]) throws {
        func failure(_ problem: String) -> SafeTensorsError { SafeTensorsError(path: path, problem: problem) }
        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            fields.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var seen = Set<String>()
        var offset = 0
        for tensor in tensors {
            guard tensor.name != "__metadata__", !tensor.name.isEmpty else {
                throw failure("cannot write a tensor named '\(tensor.name)'")
            }
            guard seen.insert(tensor.name).inserted else { throw failure("tensor '\(tensor.name)' given twice") }
            guard tensor.shape.allSatisfy({ $0 >= 0 }), tensor.shape.reduce(1, *) == tensor.data.count else {
                throw failure("tensor '\(tensor.name)' has shape \(tensor.shape) but \(tensor.data.count) elements")
            }
            let end = offset + tensor.data.count * 4
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            fields.append("\(jsonString(tensor.name)):{\"dtype\":\"F32\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var header = Array("{\(fields.joined(separator: ","))}".utf8)
        header.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - header.count % 8) % 8))

        let descriptor = try FileSystem.open(path, flags: O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC)
        do {
            var length = UInt64(header.count).littleEndian
            try withUnsafeBytes(of: &length) { try FileSystem.writeAll(descriptor, $0, path: path) }
            try header.withUnsafeBytes { try FileSystem.writeAll(descriptor, $0, path: path) }
            for tensor in tensors {
                try FileSystem.writeAll(descriptor, UnsafeRawBufferPointer(tensor.data), path: path)
            }
        } catch {
            FileSystem.close(descriptor)
            throw error
        }
        try FileSystem.close(descriptor, path: path)
    }
}

// MARK: - Header decoding

/// A header problem found while decoding, already phrased for the user.
private struct HeaderError: Error { let message: String }

/// Any JSON object key.
private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// The header: every key but "__metadata__" is a tensor.
private struct Header: Decodable {
    struct Entry {
        let name: String
        let dtype: String
        let shape: [Int]
        let begin: Int
        let end: Int
    }

    private struct EntryFields: Decodable {
        let dtype: String
        let shape: [Int]
        let data_offsets: [Int]
    }

    var metadata: [String: String] = [:]
    var entries: [Entry] = []

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        for key in container.allKeys {
            if key.stringValue == "__metadata__" {
                guard let map = try? container.decode([String: String].self, forKey: key) else {
                    throw HeaderError(message: "__metadata__ must be an object of strings")
                }
                metadata = map
                continue
            }
            guard let fields = try? container.decode(EntryFields.self, forKey: key) else {
                throw HeaderError(message: "tensor '\(key.stringValue)' needs dtype (string), shape and data_offsets (integer arrays)")
            }
            guard fields.data_offsets.count == 2 else {
                throw HeaderError(message: "tensor '\(key.stringValue)' has \(fields.data_offsets.count) data_offsets, expected 2")
            }
            entries.append(Entry(name: key.stringValue, dtype: fields.dtype, shape: fields.shape,
                                 begin: fields.data_offsets[0], end: fields.data_offsets[1]))
        }
    }
}

// MARK: - Helpers

/// `text` as a JSON string literal.
private func jsonString(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
    }
    return result + "\""
}

/// An error's description on one line (decoding errors span several).
private func oneLine(_ error: Error) -> String {
    let text: String
    if case DecodingError.dataCorrupted(let context) = error {
        text = context.debugDescription + ((context.underlyingError).map { ": \($0)" } ?? "")
    } else {
        text = "\(error)"
    }
    return text.split(whereSeparator: \.isNewline).joined(separator: " ")
}

/// IEEE 754 half precision to single precision, exactly (every half is a float).
@inline(__always)
func floatFromHalf(_ bits: UInt16) -> Float {
    let sign = UInt32(bits & 0x8000) << 16
    let exponent = Int(bits >> 10) & 0x1f
    let mantissa = UInt32(bits & 0x3ff)
    switch exponent {
    case 0:
        // Zero or subnormal: mantissa × 2^-24.
        let magnitude = Float(mantissa) * (1.0 / 16_777_216.0)
        return sign == 0 ? magnitude : -magnitude
    case 31:
        return Float(bitPattern: sign | 0x7f80_0000 | (mantissa << 13))
    default:
        return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
    }
}
