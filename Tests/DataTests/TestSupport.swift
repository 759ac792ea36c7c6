import Foundation
@testable import Data
import System

/// A fresh folder under the system temporary folder, removed by `remove()`.
struct TemporaryFolder {
    let path: String

    init() throws {
        var template = Array((NSTemporaryDirectory() + (NSTemporaryDirectory().hasSuffix("/") ? "" : "/") + "mae-data-test-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw DataError("mkdtemp failed")
        }
        path = String(cString: made)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }

    /// Creates the folders of `relative` and writes `bytes` there.
    func write(_ relative: String, bytes: [UInt8]) throws {
        let full = path + "/" + relative
        try FileSystem.makeDirectories(String(full[..<full.lastIndex(of: "/")!]))
        try FileSystem.writeFile(full, bytes: bytes)
    }

    func read(_ relative: String) throws -> [UInt8] {
        let buffer = ByteBuffer()
        let count = try FileSystem.readFile(path + "/" + relative, into: buffer)
        return Array(UnsafeBufferPointer(start: buffer.pointer, count: count))
    }
}

/// A deterministic RGB test pattern with structure in both directions: [height, width, 3].
func testPattern(width: Int, height: Int) -> [UInt8] {
    var pixels = [UInt8](repeating: 0, count: width * height * 3)
    for y in 0..<height {
        for x in 0..<width {
            for channel in 0..<3 {
                pixels[(y * width + x) * 3 + channel] = UInt8((x * 37 + y * 91 + channel * 53 + (x * y) % 17 * 7) % 256)
            }
        }
    }
    return pixels
}

/// A smooth RGB pattern (JPEG keeps it within a few levels): [height, width, 3].
func smoothPattern(width: Int, height: Int) -> [UInt8] {
    var pixels = [UInt8](repeating: 0, count: width * height * 3)
    for y in 0..<height {
        for x in 0..<width {
            pixels[(y * width + x) * 3] = UInt8(40 + 160 * x / max(width - 1, 1))
            pixels[(y * width + x) * 3 + 1] = UInt8(40 + 160 * y / max(height - 1, 1))
            pixels[(y * width + x) * 3 + 2] = 128
        }
    }
    return pixels
}

func encoded(_ pixels: [UInt8], width: Int, height: Int, format: ImageFileFormat) throws -> [UInt8] {
    try pixels.withUnsafeBufferPointer { try encodeImage(rgb: $0.baseAddress!, width: width, height: height, format: format) }
}

/// `testPattern` squeezed into 60...174 (no channel reaches 0 or 255), for autocontrast and
/// equalize; the same formula as tools/make_pillow_operation_fixtures.py.
func lowContrastPattern(width: Int, height: Int) -> [UInt8] {
    testPattern(width: width, height: height).enumerated().map { UInt8(60 + Int($0.element) % 97 + ($0.offset % 3) * 9) }
}
