import Foundation

/// Pillow's operations on 8-bit RGB images that timm's RandAugment uses (ImageOps,
/// ImageEnhance, `Image.transform(AFFINE, BICUBIC)`), reproduced with Pillow's own
/// arithmetic so that the results equal Pillow 13's byte for byte (checked against
/// fixtures made with tools/make_pillow_operation_fixtures.py).
///
/// Every image here is `height` rows of `width × 3` bytes, RGB interleaved, rows contiguous.

// MARK: - Point operations (lookup tables)

/// Applies one 256-entry table per channel in place: tables is [3, 256].
func applyLookupTables(_ pixels: UnsafeMutablePointer<UInt8>, pixelCount: Int, tables: [UInt8]) {
    precondition(tables.count == 768, "one 256-entry table per channel")
    tables.withUnsafeBufferPointer { table in
        let red = table.baseAddress!, green = red + 256, blue = red + 512
        for pixel in 0..<pixelCount {
            let byte = pixels + pixel &* 3
            byte[0] = red[Int(byte[0])]
            byte[1] = green[Int(byte[1])]
            byte[2] = blue[Int(byte[2])]
        }
    }
}

/// The same table for all three channels.
func applyLookupTable(_ pixels: UnsafeMutablePointer<UInt8>, pixelCount: Int, table: [UInt8]) {
    applyLookupTables(pixels, pixelCount: pixelCount, tables: table + table + table)
}

/// The per-channel histograms: [3, 256].
func channelHistograms(_ pixels: UnsafePointer<UInt8>, pixelCount: Int) -> [Int] {
    var histogram = [Int](repeating: 0, count: 768)
    for pixel in 0..<pixelCount {
        let byte = pixels + pixel &* 3
        histogram[Int(byte[0])] += 1
        histogram[256 + Int(byte[1])] += 1
        histogram[512 + Int(byte[2])] += 1
    }
    return histogram
}

/// `ImageOps.autocontrastImage(image)` (cutoff 0): each channel stretched so that its darkest
/// value becomes 0 and its lightest 255, `int(i · scale + offset)` in double precision.
func autocontrastImage(_ pixels: UnsafeMutablePointer<UInt8>, pixelCount: Int) {
    let histogram = channelHistograms(pixels, pixelCount: pixelCount)
    var tables: [UInt8] = []
    for channel in 0..<3 {
        let counts = histogram[channel * 256..<(channel + 1) * 256]
        let low = counts.firstIndex { $0 != 0 }.map { $0 - channel * 256 } ?? 255
        let high = counts.lastIndex { $0 != 0 }.map { $0 - channel * 256 } ?? 0
        if high <= low {
            tables += (0..<256).map { UInt8($0) }
            continue
        }
        let scale = 255.0 / Double(high - low)
        let offset = Double(-low) * scale
        tables += (0..<256).map { UInt8(min(max(Int(Double($0) * scale + offset), 0), 255)) }
    }
    applyLookupTables(pixels, pixelCount: pixelCount, tables: tables)
}

/// `ImageOps.equalizeImage(image)`: per channel, `step = (count − last non-empty bin) // 255`,
/// value i maps to `(step // 2 + pixels below i) // step` (Pillow's `point` clips it to 255).
func equalizeImage(_ pixels: UnsafeMutablePointer<UInt8>, pixelCount: Int) {
    let histogram = channelHistograms(pixels, pixelCount: pixelCount)
    var tables: [UInt8] = []
    for channel in 0..<3 {
        let counts = Array(histogram[channel * 256..<(channel + 1) * 256])
        let nonEmpty = counts.filter { $0 != 0 }
        let step = nonEmpty.count <= 1 ? 0 : (nonEmpty.reduce(0, +) - nonEmpty.last!) / 255
        if step == 0 {
            tables += (0..<256).map { UInt8($0) }
            continue
        }
        var running = step / 2
        for value in 0..<256 {
            tables.append(UInt8(min(running / step, 255)))
            running += counts[value]
        }
    }
    applyLookupTables(pixels, pixelCount: pixelCount, tables: tables)
}

/// `ImageOps.invert`: 255 − v.
func invertImage(_ pixels: UnsafeMutablePointer<UInt8>, pixelCount: Int) {
    applyLookupTable(pixels, pixelCount: pixelCount, table: (0..<256).map { UInt8(255 - $0) })
}

/// `ImageOps.posterizeImage(image, bits)`: keeps the `bits` high bits. Zero bits gives black, as
/// Pillow before 10 did (Pillow 10+ refuses 0, which timm's PosterizeIncreasing reaches at
/// magnitude 10).
func posterizeImage(_ pixels: UnsafeMutablePointer<UInt8>, pixelCount: Int, bits: Int) {
    precondition(bits >= 0 && bits <= 8, "posterize keeps 0 to 8 bits")
    if bits >= 8 { return }
    let mask = ~((1 << (8 - bits)) - 1)
    applyLookupTable(pixels, pixelCount: pixelCount, table: (0..<256).map { UInt8($0 & mask & 255) })
}

/// `ImageOps.solarizeImage(image, threshold)`: values at or above the threshold inverted.
func solarizeImage(_ pixels: UnsafeMutablePointer<UInt8>, pixelCount: Int, threshold: Int) {
    applyLookupTable(pixels, pixelCount: pixelCount, table: (0..<256).map { UInt8($0 < threshold ? $0 : 255 - $0) })
}

/// timm's `solarize_add(image, add, threshold=128)`: `min(255, v + add)` below the threshold.
func solarizeAddImage(_ pixels: UnsafeMutablePointer<UInt8>, pixelCount: Int, add: Int, threshold: Int = 128) {
    applyLookupTable(pixels, pixelCount: pixelCount, table: (0..<256).map { UInt8($0 < threshold ? min(255, $0 + add) : $0) })
}

// MARK: - ImageEnhance (blends with a degenerate image)

/// `Image.blend(degenerate, image, factor)` for one byte (ImagingBlend): in single
/// precision, truncated; clipped to 0...255 when extrapolating (factor outside [0, 1]).
@inline(__always)
func blendByte(degenerate: UInt8, image: UInt8, factor: Float) -> UInt8 {
    let value = Float(Int32(degenerate)) + factor * Float(Int32(image) - Int32(degenerate))
    if factor >= 0 && factor <= 1 { return UInt8(value) }
    return value <= 0 ? 0 : value >= 255 ? 255 : UInt8(value)
}

/// The luma of Pillow's RGB → L conversion (ITU-R 601-2 in 16-bit fixed point).
@inline(__always)
func luma(_ pixel: UnsafePointer<UInt8>) -> UInt8 {
    let red: Int = Int(pixel[0]) &* 19595, green: Int = Int(pixel[1]) &* 38470, blue: Int = Int(pixel[2]) &* 7471
    return UInt8(truncatingIfNeeded: (red &+ green &+ blue &+ 0x8000) >> 16)
}

/// `ImageEnhance.Color(image).enhance(factor)`: blend with the image's grey version.
func enhanceColor(_ pixels: UnsafeMutablePointer<UInt8>, pixelCount: Int, factor: Double) {
    let alpha = Float(factor)
    for pixel in 0..<pixelCount {
        let byte = pixels + pixel &* 3
        let grey = luma(byte)
        for channel in 0..<3 { byte[channel] = blendByte(degenerate: grey, image: byte[channel], factor: alpha) }
    }
}

/// `ImageEnhance.Contrast(image).enhance(factor)`: blend with a constant grey at the mean
/// luma, `int(mean + 0.5)`.
func enhanceContrast(_ pixels: UnsafeMutablePointer<UInt8>, pixelCount: Int, factor: Double) {
    var lumaSum = 0
    for pixel in 0..<pixelCount { lumaSum += Int(luma(pixels + pixel &* 3)) }
    let meanLuma: Double = Double(lumaSum) / Double(pixelCount)
    let mean = UInt8(Int(meanLuma + 0.5))
    let alpha = Float(factor)
    let table = (0..<256).map { blendByte(degenerate: mean, image: UInt8($0), factor: alpha) }
    applyLookupTable(pixels, pixelCount: pixelCount, table: table)
}

/// `ImageEnhance.Brightness(image).enhance(factor)`: blend with black.
func enhanceBrightness(_ pixels: UnsafeMutablePointer<UInt8>, pixelCount: Int, factor: Double) {
    let alpha = Float(factor)
    applyLookupTable(pixels, pixelCount: pixelCount, table: (0..<256).map { blendByte(degenerate: 0, image: UInt8($0), factor: alpha) })
}

/// `ImageEnhance.Sharpness(image).enhance(factor)`: blend with `ImageFilter.SMOOTH`
/// (3×3 kernel [1 1 1; 1 5 1; 1 1 1] / 13 in single precision, +0.5 and truncation;
/// the border rows and columns copied unchanged). `smoothed` is scratch of the same size.
func enhanceSharpness(_ pixels: UnsafeMutablePointer<UInt8>, width: Int, height: Int, factor: Double,
                      smoothed: UnsafeMutablePointer<UInt8>) {
    let count = width * height * 3
    smoothed.update(from: pixels, count: count)
    let edge = Float(1) / Float(13), centre = Float(5) / Float(13)
    let rowBytes = width * 3
    if width > 2 && height > 2 {
        for row in 1..<(height - 1) {
            let above = pixels + (row - 1) * rowBytes, here = pixels + row * rowBytes, below = pixels + (row + 1) * rowBytes
            let target = smoothed + row * rowBytes
            for column in 1..<(width - 1) {
                for channel in 0..<3 {
                    let x = column * 3 + channel
                    // Pillow's KERNEL1x3 sums, row below first, each row left to right.
                    var sum: Float = 0.5
                    sum += Float(below[x - 3]) * edge + Float(below[x]) * edge + Float(below[x + 3]) * edge
                    sum += Float(here[x - 3]) * edge + Float(here[x]) * centre + Float(here[x + 3]) * edge
                    sum += Float(above[x - 3]) * edge + Float(above[x]) * edge + Float(above[x + 3]) * edge
                    target[x] = sum <= 0 ? 0 : sum >= 255 ? 255 : UInt8(sum)
                }
            }
        }
    }
    let alpha = Float(factor)
    for index in 0..<count { pixels[index] = blendByte(degenerate: smoothed[index], image: pixels[index], factor: alpha) }
}

// MARK: - Affine transform

/// `image.transform(size, Image.AFFINE, (a, b, c, d, e, f), resample=BICUBIC, fillcolor=fill)`:
/// output pixel (x, y) samples the input at (a·(x+½) + b·(y+½) + c, d·(x+½) + e·(y+½) + f)
/// with Pillow's bicubic_filter32RGB (its own cubic, double precision, edge pixels
/// repeated, truncated to a byte); points outside the input keep the fill colour.
/// `output` must not overlap `input`.
func affineTransform(output: UnsafeMutablePointer<UInt8>, input: UnsafePointer<UInt8>, width: Int, height: Int,
                     coefficients: [Double], fill: (UInt8, UInt8, UInt8)) {
    precondition(coefficients.count == 6, "an affine transform has six coefficients")
    let (a0, a1, a2, a3, a4, a5) = (coefficients[0], coefficients[1], coefficients[2],
                                    coefficients[3], coefficients[4], coefficients[5])
    let rowBytes = width * 3
    @inline(__always) func clampColumn(_ x: Int) -> Int { x < 0 ? 0 : x < width ? x : width - 1 }
    @inline(__always) func cubic(_ v1: Double, _ v2: Double, _ v3: Double, _ v4: Double, _ d: Double) -> Double {
        let p1 = v2
        let p2 = -v1 + v3
        let p3 = 2 * (v1 - v2) + v3 - v4
        let p4 = -v1 + v2 - v3 + v4
        return p1 + d * (p2 + d * (p3 + d * p4))
    }
    for y in 0..<height {
        for x in 0..<width {
            let target = output + y * rowBytes + x * 3
            let outX = Double(x) + 0.5, outY = Double(y) + 0.5
            var inX = a0 * outX + a1 * outY + a2
            var inY = a3 * outX + a4 * outY + a5
            if inX < 0 || inX >= Double(width) || inY < 0 || inY >= Double(height) {
                target[0] = fill.0; target[1] = fill.1; target[2] = fill.2
                continue
            }
            inX -= 0.5
            inY -= 0.5
            // Pillow's FLOOR: floor below zero, truncation above.
            var column = inX < 0 ? Int(inX.rounded(.down)) : Int(inX)
            var row = inY < 0 ? Int(inY.rounded(.down)) : Int(inY)
            let dx = inX - Double(column), dy = inY - Double(row)
            column -= 1
            row -= 1
            let x0 = clampColumn(column) * 3, x1 = clampColumn(column + 1) * 3
            let x2 = clampColumn(column + 2) * 3, x3 = clampColumn(column + 3) * 3
            for channel in 0..<3 {
                func rowValue(_ r: Int) -> Double {
                    let source = input + r * rowBytes + channel
                    return cubic(Double(source[x0]), Double(source[x1]), Double(source[x2]), Double(source[x3]), dx)
                }
                let v1 = rowValue(row < 0 ? 0 : row < height ? row : height - 1)
                let v2 = row + 1 >= 0 && row + 1 < height ? rowValue(row + 1) : v1
                let v3 = row + 2 >= 0 && row + 2 < height ? rowValue(row + 2) : v2
                let v4 = row + 3 >= 0 && row + 3 < height ? rowValue(row + 3) : v3
                let value = cubic(v1, v2, v3, v4, dy)
                target[channel] = value <= 0 ? 0 : value >= 255 ? 255 : UInt8(value)
            }
        }
    }
}

/// The inverse matrix of `Image.rotate(degrees)` about the image centre (no expand or
/// translation), with the cosine and sine rounded to 15 decimals as Pillow rounds them.
func rotationCoefficients(degrees: Double, width: Int, height: Int) -> [Double] {
    let angle = -(degrees * (Double.pi / 180.0))
    let cosine = roundedTo15Decimals(cos(angle)), sine = roundedTo15Decimals(sin(angle))
    var matrix = [cosine, sine, 0.0, roundedTo15Decimals(-sin(angle)), cosine, 0.0]
    let centreX = Double(width) / 2, centreY = Double(height) / 2
    let shiftX = matrix[0] * -centreX + matrix[1] * -centreY + matrix[2]
    let shiftY = matrix[3] * -centreX + matrix[4] * -centreY + matrix[5]
    matrix[2] = shiftX + centreX
    matrix[5] = shiftY + centreY
    return matrix
}

/// Python's `round(value, 15)`: the double nearest to the value's exact decimal expansion
/// rounded to 15 places (glibc's printf rounds that expansion correctly).
func roundedTo15Decimals(_ value: Double) -> Double {
    Double(String(format: "%.15f", value))!
}
