import Foundation
import Testing
import TestSupport
@testable import Model

/// Writes a safetensors file byte by byte: a header text (padded to 8 unless told
/// otherwise), an optional declared header length, then `data`.
private func writeRawSafeTensors(_ path: String, header: String, data: [UInt8],
                                 declaredLength: UInt64? = nil, pad: Bool = true) throws {
    var headerBytes = Array(header.utf8)
    if pad { headerBytes += Array(repeating: UInt8(ascii: " "), count: (8 - headerBytes.count % 8) % 8) }
    var length = (declaredLength ?? UInt64(headerBytes.count)).littleEndian
    var file = withUnsafeBytes(of: &length) { Array($0) }
    file += headerBytes
    file += data
    try Data(file).write(to: URL(fileURLWithPath: path))
}

/// The bytes of `values` as stored (little-endian F32).
private func bytes(of values: [Float]) -> [UInt8] {
    values.withUnsafeBytes { Array($0) }
}

/// Reads `path` and returns the error's problem text, or nil if it read.
private func readProblem(_ path: String) -> String? {
    do {
        _ = try SafeTensorsFile.read(path: path)
        return nil
    } catch let error as SafeTensorsError {
        #expect(error.path == path)
        #expect(!error.description.contains("\n"), "error spans lines: \(error)")
        return error.problem
    } catch {
        Issue.record("unexpected error type: \(error)")
        return "\(error)"
    }
}

@Suite struct SafeTensorsTests {
    @Test func roundTripKeepsOrderShapesValuesAndMetadata() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("round.safetensors")
        let matrix: [Float] = (0 ..< 6).map { Float($0) * 0.5 - 1 }
        let scalar: [Float] = [Float.pi]
        let empty: [Float] = []
        let odd: [Float] = [1e-30, -0.0, .greatestFiniteMagnitude, 3, 5]
        let metadata = ["format": "pt", "note": "quote \" backslash \\ newline \n tab \t ü", "step": "12"]
        try matrix.withUnsafeBufferPointer { m in
            try scalar.withUnsafeBufferPointer { s in
                try empty.withUnsafeBufferPointer { e in
                    try odd.withUnsafeBufferPointer { o in
                        try SafeTensorsFile.write(path: path, tensors: [
                            (name: "z.matrix", shape: [2, 3], data: m),
                            (name: "a.scalar", shape: [], data: s),
                            (name: "empty", shape: [0, 4], data: e),
                            (name: "odd", shape: [1, 5, 1], data: o),
                        ], metadata: metadata)
                    }
                }
            }
        }
        let file = try SafeTensorsFile.read(path: path)
        #expect(file.names == ["z.matrix", "a.scalar", "empty", "odd"])
        #expect(file.metadata == metadata)
        #expect(file.tensor(named: "z.matrix")?.shape == [2, 3])
        #expect(file.tensor(named: "a.scalar")?.shape == [])
        #expect(file.tensor(named: "empty")?.shape == [0, 4])
        #expect(file.tensor(named: "odd")?.dtype == .float32)
        #expect(try file.floats(named: "z.matrix") == matrix)
        #expect(try file.floats(named: "a.scalar") == scalar)
        #expect(try file.floats(named: "empty") == [])
        let readOdd = try file.floats(named: "odd")
        #expect(readOdd.map(\.bitPattern) == odd.map(\.bitPattern))
        #expect(file.tensor(named: "missing") == nil)

        // The header is padded to a multiple of 8, so the data starts aligned.
        let raw = try Data(contentsOf: URL(fileURLWithPath: path))
        let headerLength = raw.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        #expect(headerLength % 8 == 0)
        #expect(raw.count == 8 + Int(headerLength) + 4 * (6 + 1 + 0 + 5))
    }

    @Test func emptyTensorListRoundTrips() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        for metadata in [[:], ["only": "metadata"]] as [[String: String]] {
            let path = directory.file("empty.safetensors")
            try SafeTensorsFile.write(path: path, tensors: [], metadata: metadata)
            let file = try SafeTensorsFile.read(path: path)
            #expect(file.tensors.isEmpty)
            #expect(file.metadata == metadata)
        }
    }

    @Test func copyFloatsChecksNameAndCount() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("copy.safetensors")
        let values: [Float] = [1, 2, 3]
        try values.withUnsafeBufferPointer {
            try SafeTensorsFile.write(path: path, tensors: [(name: "v", shape: [3], data: $0)])
        }
        let file = try SafeTensorsFile.read(path: path)
        var destination = [Float](repeating: 0, count: 3)
        try file.copyFloats(named: "v", into: &destination, count: 3)
        #expect(destination == values)
        #expect(throws: SafeTensorsError.self) { try file.copyFloats(named: "v", into: &destination, count: 2) }
        #expect(throws: SafeTensorsError.self) { try file.copyFloats(named: "w", into: &destination, count: 3) }
        #expect(try file.floatBuffer(named: "v").toArray() == values)
    }

    @Test func writerRejectsDuplicateNamesAndWrongShapes() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("bad.safetensors")
        let values: [Float] = [1, 2, 3]
        values.withUnsafeBufferPointer { data in
            #expect(throws: SafeTensorsError.self) {
                try SafeTensorsFile.write(path: path, tensors: [(name: "a", shape: [3], data: data), (name: "a", shape: [3], data: data)])
            }
            #expect(throws: SafeTensorsError.self) {
                try SafeTensorsFile.write(path: path, tensors: [(name: "a", shape: [2, 2], data: data)])
            }
            #expect(throws: SafeTensorsError.self) {
                try SafeTensorsFile.write(path: path, tensors: [(name: "__metadata__", shape: [3], data: data)])
            }
        }
        #expect(throws: SystemCallError.self) {
            try SafeTensorsFile.write(path: directory.file("no/such/dir.safetensors"), tensors: [])
        }
    }

    @Test func missingFileNamesTheCall() throws {
        do {
            _ = try SafeTensorsFile.read(path: "/nonexistent/weights.safetensors")
            Issue.record("reading a missing file succeeded")
        } catch let error as SystemCallError {
            #expect(error.call == "open")
            #expect(error.description.contains("/nonexistent/weights.safetensors"))
        }
    }

    @Test func truncatedAndCorruptFilesAreRejected() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("corrupt.safetensors")
        let two = bytes(of: [1, 2])
        let good = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#

        // Sanity: the well-formed version reads.
        try writeRawSafeTensors(path, header: good, data: two)
        #expect(readProblem(path) == nil)

        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: path))
        #expect(readProblem(path)?.hasPrefix("truncated") == true)

        try Data().write(to: URL(fileURLWithPath: path))
        #expect(readProblem(path)?.hasPrefix("truncated") == true)

        try writeRawSafeTensors(path, header: good, data: two, declaredLength: 1 << 40)
        #expect(readProblem(path)?.contains("exceeds") == true)

        try writeRawSafeTensors(path, header: good, data: [], declaredLength: 4096)
        #expect(readProblem(path)?.hasPrefix("truncated") == true)

        // Data cut short by the last bytes.
        try writeRawSafeTensors(path, header: good, data: Array(two.prefix(5)))
        #expect(readProblem(path)?.hasPrefix("truncated: tensor 'a'") == true)

        try writeRawSafeTensors(path, header: good, data: two + [0, 0, 0, 0])
        #expect(readProblem(path)?.contains("trailing") == true)

        try writeRawSafeTensors(path, header: "[1, 2, 3]", data: [])
        #expect(readProblem(path)?.contains("does not start with '{'") == true)

        try writeRawSafeTensors(path, header: #"{"a": {"dtype": "F32", "sha"#, data: [])
        #expect(readProblem(path)?.hasPrefix("corrupt header") == true)

        try writeRawSafeTensors(path, header: #"{"a":{"dtype":"F32","shape":[2]}}"#, data: two)
        #expect(readProblem(path)?.contains("tensor 'a' needs dtype") == true)

        try writeRawSafeTensors(path, header: #"{"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}}"#, data: two)
        #expect(readProblem(path)?.contains("unknown dtype 'Q7'") == true)

        try writeRawSafeTensors(path, header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: two)
        #expect(readProblem(path)?.contains("needs 12 bytes") == true)

        try writeRawSafeTensors(path, header: #"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, data: two)
        #expect(readProblem(path)?.contains("invalid shape") == true)

        try writeRawSafeTensors(path, header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}}"#, data: two)
        #expect(readProblem(path)?.contains("expected 2") == true)

        let overlapping = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        try writeRawSafeTensors(path, header: overlapping, data: two)
        #expect(readProblem(path)?.contains("overlapping") == true)

        let gap = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        try writeRawSafeTensors(path, header: gap, data: two)
        #expect(readProblem(path)?.contains("expected 0") == true)

        try writeRawSafeTensors(path, header: #"{"__metadata__":{"a":1}}"#, data: [])
        #expect(readProblem(path)?.contains("__metadata__") == true)
    }

    @Test func halfBFloatAndDoubleConvertToFloat() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("dtypes.safetensors")
        let halves: [UInt16] = [0x3c00, 0xc000, 0x0001, 0x7bff, 0x8000, 0x7c00, 0x3555]
        let halfValues: [Float] = [1, -2, 5.960464477539063e-08, 65504, -0.0, .infinity, 0.333251953125]
        let bfloats: [UInt16] = [0x3f80, 0xc0a0, 0x0000]
        let bfloatValues: [Float] = [1, -5, 0]
        let doubles: [Double] = [0.1, -1e300, 2.5]
        var data = halves.withUnsafeBytes { Array($0) }          // 14 bytes
        data += bfloats.withUnsafeBytes { Array($0) }            // 6 bytes
        data += doubles.withUnsafeBytes { Array($0) }            // 24 bytes
        data += [0, 0]                                          // 2 bytes of U8
        let header = #"{"h":{"dtype":"F16","shape":[7],"data_offsets":[0,14]},"#
            + #""b":{"dtype":"BF16","shape":[3],"data_offsets":[14,20]},"#
            + #""d":{"dtype":"F64","shape":[3],"data_offsets":[20,44]},"#
            + #""u":{"dtype":"U8","shape":[2],"data_offsets":[44,46]}}"#
        try writeRawSafeTensors(path, header: header, data: data)
        let file = try SafeTensorsFile.read(path: path)
        #expect(try file.floats(named: "h").map(\.bitPattern) == halfValues.map(\.bitPattern))
        #expect(try file.floats(named: "b") == bfloatValues)
        #expect(try file.floats(named: "d") == doubles.map { Float($0) })
        #expect(file.tensor(named: "u")?.dtype == .uint8)
        #expect(throws: SafeTensorsError.self) { try file.floats(named: "u") }
    }
}

@Suite struct SafeTensorsFixtureTests {
    /// Files written by the reference implementation (Python safetensors) read here.
    @Test func readsFilesWrittenByTheReferenceImplementation() throws {
        let url = try #require(Bundle.module.url(forResource: "micro_inputs", withExtension: "safetensors",
                                                 subdirectory: "Fixtures"))
        let file = try SafeTensorsFile.read(path: url.path)
        #expect(Set(file.names) == ["images", "noise"])
        #expect(file.tensor(named: "images")?.shape == [2, 3, 16, 16])
        #expect(file.tensor(named: "noise")?.shape == [2, 16])
        #expect(file.metadata["source"] == "tools/make_reference.py")
        let noise = try file.floats(named: "noise")
        #expect(noise.allSatisfy { $0 >= 0 && $0 < 1 })
        #expect(Set(noise[0 ..< 16]).count == 16)
    }
}
