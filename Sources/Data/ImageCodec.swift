import CImageCodec
import System
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// An 8-bit RGB image, interleaved, rows top to bottom; a view into memory owned elsewhere
/// (for a decoded image: by its `ImageDecoder`, until that decoder's next call or its end).
public struct RGBImageView {
    public let pixels: UnsafePointer<UInt8>
    public let width: Int
    public let height: Int
}

/// Reads and decodes JPEG and PNG files into reused buffers; one per thread.
///
/// The format is taken from the file's first bytes, not its name (ImageNet has PNG
/// data in a .JPEG file). Decoding is libjpeg-turbo's default (islow DCT, fancy
/// upsampling) at full size, which is what Pillow does, so pixels match Pillow's.
public final class ImageDecoder {
    private let fileBytes = ByteBuffer()
    private var pixels: UnsafeMutablePointer<UInt8>?
    private var capacity = 0

    public init() {}

    deinit { free(pixels) }

    /// Decodes the file at `path`. The view is valid until the next call (keep the decoder alive meanwhile).
    /// Throws a `DataError` naming the file for an unreadable, corrupt or truncated image.
    public func decode(path: String) throws -> RGBImageView {
        let count = try DataError.reportingSystemCalls { try FileSystem.readFile(path, into: fileBytes) }
        do {
            return try decode(bytes: fileBytes.pointer, count: count)
        } catch let error as DataError {
            throw DataError("\(path): \(error.description)")
        }
    }

    /// Decodes an image held in memory (JPEG or PNG). The view is valid until the next call.
    public func decode(bytes: UnsafePointer<UInt8>, count: Int) throws -> RGBImageView {
        var width: Int32 = 0, height: Int32 = 0
        var message = [CChar](repeating: 0, count: 256)
        let isPNG = count >= 8 && bytes[0] == 0x89 && bytes[1] == 0x50 && bytes[2] == 0x4E && bytes[3] == 0x47
        let isJPEG = count >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8
        guard isPNG || isJPEG else {
            throw DataError(count == 0 ? "empty file" : "neither a JPEG nor a PNG file (unknown leading bytes)")
        }
        let status = message.withUnsafeMutableBufferPointer { text in
            isPNG
                ? mae_png_decode(bytes, count, &pixels, &capacity, &width, &height, text.baseAddress, text.count)
                : mae_jpeg_decode(bytes, count, &pixels, &capacity, &width, &height, text.baseAddress, text.count)
        }
        guard status == 0, let pixels else {
            let reason = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw DataError("cannot decode \(isPNG ? "PNG" : "JPEG"): \(reason)")
        }
        return RGBImageView(pixels: UnsafePointer(pixels), width: Int(width), height: Int(height))
    }
}

/// Image file formats we write.
public enum ImageFileFormat: Sendable {
    case jpeg(quality: Int)
    case png
}

/// Encodes 8-bit interleaved RGB (`width × height × 3` bytes) and writes it to `path`.
public func writeImage(path: String, rgb: UnsafePointer<UInt8>, width: Int, height: Int, format: ImageFileFormat) throws {
    let bytes = try encodeImage(rgb: rgb, width: width, height: height, format: format)
    try DataError.reportingSystemCalls { try FileSystem.writeFile(path, bytes: bytes) }
}

/// Encodes 8-bit interleaved RGB as JPEG (libjpeg-turbo, 4:2:0) or PNG.
public func encodeImage(rgb: UnsafePointer<UInt8>, width: Int, height: Int, format: ImageFileFormat) throws -> [UInt8] {
    precondition(width > 0 && height > 0, "image size must be positive")
    var output: UnsafeMutablePointer<UInt8>?
    var size = 0
    var message = [CChar](repeating: 0, count: 256)
    let status = message.withUnsafeMutableBufferPointer { text -> Int32 in
        switch format {
        case .jpeg(let quality):
            return mae_jpeg_encode(rgb, Int32(width), Int32(height), Int32(min(max(quality, 1), 100)),
                                   &output, &size, text.baseAddress, text.count)
        case .png:
            return mae_png_encode(rgb, Int32(width), Int32(height), &output, &size, text.baseAddress, text.count)
        }
    }
    defer { free(output) }
    guard status == 0, let output else {
        let reason = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        throw DataError("cannot encode a \(width)x\(height) image: \(reason)")
    }
    return Array(UnsafeBufferPointer(start: output, count: size))
}
