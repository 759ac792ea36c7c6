import Data
import Kernels
import System
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// An 8-bit RGB colour.
public struct Colour: Equatable, Sendable {
    public var red: UInt8, green: UInt8, blue: UInt8

    public init(_ red: UInt8, _ green: UInt8, _ blue: UInt8) {
        self.red = red
        self.green = green
        self.blue = blue
    }

    public static let white = Colour(255, 255, 255)
    public static let black = Colour(0, 0, 0)
    public static let grey = Colour(128, 128, 128)
    public static let lightGrey = Colour(225, 225, 225)
    public static let blue = Colour(31, 119, 180)
    public static let orange = Colour(255, 127, 14)
}

/// An RGB raster that figures are drawn on, then written as a PNG: interleaved
/// `width × height × 3` bytes, rows top to bottom. Drawing outside the canvas is clipped.
public struct Canvas {
    public let width: Int
    public let height: Int
    public private(set) var pixels: [UInt8]

    public init(width: Int, height: Int, background: Colour = .white) {
        precondition(width > 0 && height > 0, "a canvas has a positive size")
        self.width = width
        self.height = height
        pixels = [UInt8](repeating: 0, count: width * height * 3)
        fill(x: 0, y: 0, width: width, height: height, colour: background)
    }

    /// The colour at (x, y).
    public func colour(x: Int, y: Int) -> Colour {
        let index = (y * width + x) * 3
        return Colour(pixels[index], pixels[index + 1], pixels[index + 2])
    }

    /// Sets one pixel (ignored outside the canvas).
    public mutating func set(x: Int, y: Int, colour: Colour) {
        guard x >= 0, y >= 0, x < width, y < height else { return }
        let index = (y * width + x) * 3
        pixels[index] = colour.red
        pixels[index + 1] = colour.green
        pixels[index + 2] = colour.blue
    }

    /// Fills a rectangle.
    public mutating func fill(x: Int, y: Int, width rectangleWidth: Int, height rectangleHeight: Int, colour: Colour) {
        let top = max(0, y), bottom = min(height, y + rectangleHeight)
        let left = max(0, x), right = min(width, x + rectangleWidth)
        guard top < bottom, left < right else { return }
        for row in top..<bottom {
            for column in left..<right { set(x: column, y: row, colour: colour) }
        }
    }

    /// A straight line from (x0, y0) to (x1, y1), one pixel wide (Bresenham), `thickness`
    /// pixels when larger.
    public mutating func line(from start: (x: Int, y: Int), to end: (x: Int, y: Int), colour: Colour,
                              thickness: Int = 1) {
        var (x, y) = start
        let dx = abs(end.x - x), dy = -abs(end.y - y)
        let stepX = x < end.x ? 1 : -1, stepY = y < end.y ? 1 : -1
        var error = dx + dy
        let half = (thickness - 1) / 2
        while true {
            fill(x: x - half, y: y - half, width: thickness, height: thickness, colour: colour)
            if x == end.x && y == end.y { break }
            let doubled = 2 * error
            if doubled >= dy { error += dy; x += stepX }
            if doubled <= dx { error += dx; y += stepY }
        }
    }

    /// Draws a planar [3, side, side] image in the ImageNet-normalised space the model
    /// sees, un-normalised as the official demo shows it (`clip((x·std + mean)·255, 0,
    /// 255)`), each pixel a `scale × scale` square, with its top-left corner at (x, y).
    public mutating func drawNormalisedImage(_ image: UnsafePointer<Float>, side: Int, x: Int, y: Int, scale: Int) {
        let plane = side * side
        let mean = Augmentation.mean, deviation = Augmentation.standardDeviation
        func byte(_ channel: Int, _ offset: Int) -> UInt8 {
            let value = (image[channel * plane + offset] * deviation[channel] + mean[channel]) * 255
            return UInt8(value >= 255 ? 255 : value > 0 ? Int(value) : 0)  // NaN becomes 0 rather than trapping
        }
        for row in 0..<side {
            for column in 0..<side {
                let offset = row * side + column
                fill(x: x + column * scale, y: y + row * scale, width: scale, height: scale,
                     colour: Colour(byte(0, offset), byte(1, offset), byte(2, offset)))
            }
        }
    }

    /// The width in pixels of `text` drawn at `scale`.
    public static func textWidth(_ text: String, scale: Int = 1) -> Int {
        text.isEmpty ? 0 : (text.count * BitmapFont.cellWidth - 1) * scale
    }

    /// The height in pixels of one line of text at `scale`.
    public static func textHeight(scale: Int = 1) -> Int { BitmapFont.glyphHeight * scale }

    /// Draws `text` with its top-left corner at (x, y).
    public mutating func text(_ text: String, x: Int, y: Int, scale: Int = 1, colour: Colour = .black) {
        var left = x
        for character in text {
            let rows = BitmapFont.rows(of: character)
            for (row, bits) in rows.enumerated() {
                for column in 0..<BitmapFont.glyphWidth where bits & (1 << (BitmapFont.glyphWidth - 1 - column)) != 0 {
                    fill(x: left + column * scale, y: y + row * scale, width: scale, height: scale, colour: colour)
                }
            }
            left += BitmapFont.cellWidth * scale
        }
    }

    /// Draws `text` rotated a quarter turn counter-clockwise (reading bottom to top), with
    /// the bottom-left corner of its first character at (x, y): for a vertical axis label.
    public mutating func verticalText(_ text: String, x: Int, y: Int, scale: Int = 1, colour: Colour = .black) {
        var bottom = y
        for character in text {
            let rows = BitmapFont.rows(of: character)
            for (row, bits) in rows.enumerated() {
                for column in 0..<BitmapFont.glyphWidth where bits & (1 << (BitmapFont.glyphWidth - 1 - column)) != 0 {
                    fill(x: x + row * scale, y: bottom - (column + 1) * scale, width: scale, height: scale, colour: colour)
                }
            }
            bottom -= BitmapFont.cellWidth * scale
        }
    }

    /// `text` broken at spaces into lines no wider than `width` pixels at `scale` (a word
    /// longer than that stays whole on its own line).
    public static func wrap(_ text: String, width: Int, scale: Int = 1) -> [String] {
        var lines: [String] = []
        var current = ""
        for word in text.split(separator: " ") {
            let candidate = current.isEmpty ? String(word) : current + " " + word
            if textWidth(candidate, scale: scale) <= width || current.isEmpty {
                current = candidate
            } else {
                lines.append(current)
                current = String(word)
            }
        }
        if !current.isEmpty { lines.append(current) }
        return lines
    }

    /// The canvas encoded as a PNG (libpng).
    public func pngBytes() throws -> [UInt8] {
        try pixels.withUnsafeBufferPointer { buffer in
            try encodeImage(rgb: buffer.baseAddress!, width: width, height: height, format: .png)
        }
    }

    /// Writes the canvas as a PNG to `path`: to a temporary file beside it, then renamed,
    /// so that `path` is never half-written. Throws a `FigureError` naming the path.
    public func writePNG(path: String) throws {
        try writeFileAtomically(path: path, bytes: try pngBytes())
    }
}

/// A figure or file that cannot be made or written, with what to do.
public struct FigureError: Error, CustomStringConvertible, Sendable {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

/// Writes `bytes` to `path.tmp-PID`, then renames it to `path`, so that readers see the
/// old file or the whole new one. Throws a `FigureError` naming the path.
public func writeFileAtomically(path: String, bytes: [UInt8]) throws {
    let temporary = path + ".tmp-\(getpid())"
    do {
        try FileSystem.writeFile(temporary, bytes: bytes)
        try FileSystem.rename(temporary, path)
    } catch {
        unlink(temporary)
        throw FigureError("cannot write \(path): \(error); check that its folder exists and is writable")
    }
}
