import Kernels
import System
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Writes a deterministic ImageNet-style dataset of real JPEG files (quality 90):
/// `root/train/class_KKK/class_KKK_NNNNN.JPEG` (`perClass` per class) and
/// `root/val/...` (`valPerClass` per class), each `size × size` pixels.
///
/// Every class has its own structure a model can learn: a shape (disk, square, triangle,
/// ring or cross, by class number), a hue, and a stripe texture whose frequency and
/// direction depend on the class. Each image draws its position, size, rotation,
/// background shade and pixel noise from `CounterRandom(seed, .synthesis, index: image)`,
/// where train images are numbered first and val images after them. The same arguments
/// give byte-identical files.
///
/// With `difficulty: .hard` colour gives nothing away: every image draws its own hues,
/// saturations and textures from the same distributions whatever its class. A class is a
/// composition of two shapes: a large one (disk, square, triangle, ring or cross, `label % 5`)
/// with a small one (`(label / 5) % 5`) attached at its rim, the pair rotated, scaled and placed
/// at random, among clutter (random short strokes and dots in random colours) and noise.
/// Only the shapes and their arrangement tell classes apart, so pixel statistics (which a
/// random encoder's features mostly carry) score poorly (docs/DATA.md has the measurements).
/// Classes 25 to 49 put the small shape at the centre of the large one instead of its rim;
/// the hard set has at most 50 classes.
///
/// `difficulty: .medium` sits between the two: colour gives nothing away, as in the hard set (the
/// background and the shape draw their own colours, the shape a clearly lighter or darker value
/// than its background), but a class is one large shape (`label % 5`), plain for classes 0–4 and
/// striped for classes 5–9, placed, scaled and rotated at random, with pixel noise and no clutter.
/// At most 10 classes.
///
/// Refuses (throws) to write into a folder that has train/ or val/ content it did not
/// make (no `SYNTHETIC.txt` marker), so a real dataset is never overwritten.
/// `progress`, when given, is called after each class folder with (images written, images in all).
public func synthesizeDataset(root: String, classes: Int, perClass: Int, valPerClass: Int, size: Int, seed: UInt64,
                              difficulty: SyntheticDifficulty = .easy,
                              progress: ((Int, Int) -> Void)? = nil) throws {
    guard classes > 0, perClass > 0, valPerClass >= 0, size >= 8 else {
        throw DataError("synthesizeDataset needs classes ≥ 1, perClass ≥ 1, valPerClass ≥ 0 and size ≥ 8 "
            + "(got \(classes), \(perClass), \(valPerClass), \(size))")
    }
    guard difficulty != .hard || classes <= 50 else {
        throw DataError("the hard synthetic set has at most 50 classes (compositions of two of 5 shapes, "
            + "at the rim or the centre); got \(classes)")
    }
    guard difficulty != .medium || classes <= 10 else {
        throw DataError("the medium synthetic set has at most 10 classes (5 shapes, plain or striped); got \(classes)")
    }
    let marker = root + "/SYNTHETIC.txt"
    for split in ["train", "val"] where FileSystem.kind(of: root + "/" + split) == .directory {
        let hasContent = !(try DataError.reportingSystemCalls { try FileSystem.entries(of: root + "/" + split) }).isEmpty
        if hasContent && FileSystem.kind(of: marker) != .regularFile {
            throw DataError("\(root)/\(split) already holds files that 'mae synth-data' did not write; "
                + "choose an empty or new folder")
        }
    }
    try DataError.reportingSystemCalls { try FileSystem.makeDirectories(root) }
    let description = "synthetic MAE dataset: classes=\(classes) per-class=\(perClass) val-per-class=\(valPerClass) "
        + "size=\(size) seed=\(seed)" + (difficulty == .easy ? "" : " difficulty=\(difficulty.rawValue)") + "\n"
    try DataError.reportingSystemCalls { try FileSystem.writeFile(marker, bytes: Array(description.utf8)) }

    let painter = SyntheticPainter(size: size, seed: seed)
    let total = classes * (perClass + valPerClass)
    var written = 0
    for (split, count, firstIndex) in [("train", perClass, 0), ("val", valPerClass, classes * perClass)] where count > 0 {
        for label in 0..<classes {
            let className = "class_" + zeroPadded(label, width: 3)
            let folder = root + "/" + split + "/" + className
            try DataError.reportingSystemCalls { try FileSystem.makeDirectories(folder) }
            for number in 0..<count {
                let index = firstIndex + label * count + number
                switch difficulty {
                case .easy: painter.paint(label: label, index: index)
                case .medium: painter.paintMedium(label: label, index: index)
                case .hard: painter.paintHard(label: label, index: index)
                }
                try writeImage(path: folder + "/" + className + "_" + zeroPadded(number, width: 5) + ".JPEG",
                               rgb: painter.pixels, width: size, height: size, format: .jpeg(quality: 90))
            }
            written += count
            progress?(written, total)
        }
    }
}

/// How much `synthesizeDataset`'s classes give away.
public enum SyntheticDifficulty: String, Sendable, CaseIterable {
    /// Each class its own shape, hue and stripe texture: a random encoder separates them.
    case easy
    /// Same colour statistics for every class; each class one shape, plain or striped, without clutter.
    case medium
    /// Same colour statistics for every class; classes differ only by a composition of shapes.
    case hard
}

private func zeroPadded(_ value: Int, width: Int) -> String {
    let digits = String(value)
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
}

/// Renders one synthetic image at a time into a reused RGB buffer.
private final class SyntheticPainter {
    let size: Int
    let seed: UInt64
    let pixels: UnsafeMutablePointer<UInt8>

    init(size: Int, seed: UInt64) {
        self.size = size
        self.seed = seed
        pixels = .allocate(capacity: size * size * 3)
    }

    deinit { pixels.deallocate() }

    func paint(label: Int, index: Int) {
        var random = CounterRandom(seed: seed, purpose: .synthesis, index: index)
        let side = Double(size)
        // Class structure.
        let shape = label % 5
        let hue = (Double(label) * 0.618_033_988_75).truncatingRemainder(dividingBy: 1)
        let stripeFrequency = Double(2 + (label / 5) % 4)          // stripes across the shape
        let stripeAngle = Double((label / 20) % 4) * Double.pi / 4
        let foreground = rgb(hue: hue, saturation: 0.75, value: 0.9)
        let backgroundHue = (hue + 0.5).truncatingRemainder(dividingBy: 1)
        // Per-image variation.
        let centerX = side * random.nextDouble(in: 0.3..<0.7)
        let centerY = side * random.nextDouble(in: 0.3..<0.7)
        let radius = side * random.nextDouble(in: 0.18..<0.38)
        let rotation = random.nextDouble(in: 0..<(2 * Double.pi))
        let shade = random.nextDouble(in: 0.15..<0.45)
        let noiseAmplitude = random.nextDouble(in: 4..<20)
        let background = rgb(hue: backgroundHue, saturation: 0.35, value: shade)
        let (cosine, sine) = (cos(rotation), sin(rotation))
        let (stripeX, stripeY) = (cos(stripeAngle + rotation), sin(stripeAngle + rotation))

        for y in 0..<size {
            for x in 0..<size {
                let dx = Double(x) + 0.5 - centerX, dy = Double(y) + 0.5 - centerY
                // Coordinates in the shape's frame, in units of its radius.
                let u = (cosine * dx + sine * dy) / radius
                let v = (-sine * dx + cosine * dy) / radius
                let inside = Self.isInside(shape: shape, u: u, v: v)
                var colour: (Double, Double, Double)
                if inside {
                    let phase = (stripeX * dx + stripeY * dy) / radius * stripeFrequency * Double.pi
                    let texture = 0.75 + 0.25 * sin(phase)
                    colour = (foreground.0 * texture, foreground.1 * texture, foreground.2 * texture)
                } else {
                    let gradient = 0.85 + 0.3 * Double(y) / side
                    colour = (background.0 * gradient, background.1 * gradient, background.2 * gradient)
                }
                let noise = (Double(random.nextUInt32() >> 8) / 16_777_216.0 - 0.5) * 2 * noiseAmplitude
                let pixel = pixels + (y * size + x) * 3
                pixel[0] = byte(colour.0 * 255 + noise)
                pixel[1] = byte(colour.1 * 255 + noise)
                pixel[2] = byte(colour.2 * 255 + noise)
            }
        }
    }

    /// Whether (u, v), in units of the radius in the shape's frame, lies in shape 0...4
    /// (disk, square, triangle, ring, cross).
    static func isInside(shape: Int, u: Double, v: Double) -> Bool {
        switch shape {
        case 0: return u * u + v * v <= 1
        case 1: return abs(u) <= 0.8 && abs(v) <= 0.8
        case 2: return v <= 0.6 && abs(u) <= (v + 1) * 0.6
        case 3: let r2 = u * u + v * v; return r2 <= 1 && r2 >= 0.35
        default: return (abs(u) <= 1 && abs(v) <= 0.3) || (abs(v) <= 1 && abs(u) <= 0.3)
        }
    }

    /// One image of the medium set (see `synthesizeDataset`). Draw order: background, the
    /// shape's placement, its colour and stripes, then the noise.
    func paintMedium(label: Int, index: Int) {
        var random = CounterRandom(seed: seed, purpose: .synthesis, index: index)
        let side = Double(size)
        let shape = label % 5, striped = label >= 5
        let backgroundValue = random.nextDouble(in: 0.15..<0.85)
        let background = rgb(hue: random.nextDouble(), saturation: random.nextDouble(in: 0.1..<0.6), value: backgroundValue)
        let gradientAngle = random.nextDouble(in: 0..<(2 * Double.pi))
        let gradient = (x: cos(gradientAngle) * 0.3 / side, y: sin(gradientAngle) * 0.3 / side)
        let radius = side * random.nextDouble(in: 0.24..<0.36)
        let rotation = random.nextDouble(in: 0..<(2 * Double.pi))
        let centerX = side * (0.5 + random.nextDouble(in: -0.12..<0.12))
        let centerY = side * (0.5 + random.nextDouble(in: -0.12..<0.12))
        // A random colour, but a value clearly apart from the background's so the outline shows.
        let contrast = random.nextDouble(in: 0.35..<0.5)
        let foreground = rgb(hue: random.nextDouble(), saturation: random.nextDouble(in: 0.3..<0.9),
                             value: backgroundValue >= 0.5 ? backgroundValue - contrast : backgroundValue + contrast)
        let stripeAngle = random.nextDouble(in: 0..<(2 * Double.pi))
        let stripe = (x: cos(stripeAngle), y: sin(stripeAngle))
        let noiseAmplitude = random.nextDouble(in: 4..<12)
        let (cosine, sine) = (cos(rotation), sin(rotation))

        for y in 0..<size {
            for x in 0..<size {
                let dx = Double(x) + 0.5 - centerX, dy = Double(y) + 0.5 - centerY
                let u = (cosine * dx + sine * dy) / radius
                let v = (-sine * dx + cosine * dy) / radius
                var colour: (Double, Double, Double)
                if Self.isInside(shape: shape, u: u, v: v) {
                    // Stripes of period 0.8 radius, dark to full: a texture the plain classes lack.
                    let texture = striped ? 0.55 + 0.45 * sin((stripe.x * dx + stripe.y * dy) / radius * 2.5 * Double.pi) : 1
                    colour = (foreground.0 * texture, foreground.1 * texture, foreground.2 * texture)
                } else {
                    let shade = 1 + gradient.x * dx + gradient.y * dy
                    colour = (background.0 * shade, background.1 * shade, background.2 * shade)
                }
                let noise = (Double(random.nextUInt32() >> 8) / 16_777_216.0 - 0.5) * 2 * noiseAmplitude
                let pixel = pixels + (y * size + x) * 3
                pixel[0] = byte(colour.0 * 255 + noise)
                pixel[1] = byte(colour.1 * 255 + noise)
                pixel[2] = byte(colour.2 * 255 + noise)
            }
        }
    }

    /// One image of the hard set (see `synthesizeDataset`). Draw order: background, the
    /// pair's placement, the two shapes' colours and textures, the clutter, then the noise.
    func paintHard(label: Int, index: Int) {
        var random = CounterRandom(seed: seed, purpose: .synthesis, index: index)
        let side = Double(size)
        let bigShape = label % 5, smallShape = (label / 5) % 5
        let smallAtCentre = label >= 25
        // Background: a random hue, dark or light, with a gradient in a random direction.
        let background = rgb(hue: random.nextDouble(), saturation: random.nextDouble(in: 0.1..<0.6),
                             value: random.nextDouble(in: 0.15..<0.85))
        let gradientAngle = random.nextDouble(in: 0..<(2 * Double.pi))
        let gradient = (x: cos(gradientAngle) * 0.3 / side, y: sin(gradientAngle) * 0.3 / side)
        // The pair: the large shape's centre, radius and rotation; the small one sits on its rim.
        let radius = side * random.nextDouble(in: 0.16..<0.26)
        let rotation = random.nextDouble(in: 0..<(2 * Double.pi))
        let centerX = side * 0.5 + random.nextDouble(in: -0.12..<0.12) * side
        let centerY = side * 0.5 + random.nextDouble(in: -0.12..<0.12) * side
        let smallRadius = radius * random.nextDouble(in: 0.45..<0.6)
        let offset = smallAtCentre ? 0 : radius + smallRadius * 0.9
        let smallX = centerX + cos(rotation) * offset
        let smallY = centerY + sin(rotation) * offset
        struct Part { let shape: Int; let x: Double; let y: Double; let radius: Double; let cosine: Double; let sine: Double
                      let colour: (Double, Double, Double); let stripe: (Double, Double); let frequency: Double }
        func part(_ shape: Int, _ x: Double, _ y: Double, _ r: Double, _ angle: Double, random: inout CounterRandom) -> Part {
            let colour = rgb(hue: random.nextDouble(), saturation: random.nextDouble(in: 0.3..<0.9),
                             value: random.nextDouble(in: 0.35..<1.0))
            let stripeAngle = random.nextDouble(in: 0..<(2 * Double.pi))
            return Part(shape: shape, x: x, y: y, radius: r, cosine: cos(angle), sine: sin(angle), colour: colour,
                        stripe: (cos(stripeAngle), sin(stripeAngle)), frequency: random.nextDouble(in: 1..<5))
        }
        let parts = [part(bigShape, centerX, centerY, radius, rotation, random: &random),
                     part(smallShape, smallX, smallY, smallRadius, rotation + random.nextDouble(in: -0.5..<0.5), random: &random)]
        // Clutter: 6 to 11 short strokes and dots of random colours, anywhere.
        struct Stroke { let x0: Double; let y0: Double; let x1: Double; let y1: Double; let width: Double; let colour: (Double, Double, Double) }
        let strokes: [Stroke] = (0..<(6 + random.nextInt(below: 6))).map { _ in
            let x0 = side * random.nextDouble(), y0 = side * random.nextDouble()
            let length = side * random.nextDouble(in: 0..<0.18), angle = random.nextDouble(in: 0..<(2 * Double.pi))
            return Stroke(x0: x0, y0: y0, x1: x0 + length * cos(angle), y1: y0 + length * sin(angle),
                          width: side * random.nextDouble(in: 0.01..<0.035),
                          colour: rgb(hue: random.nextDouble(), saturation: random.nextDouble(in: 0.2..<0.9),
                                      value: random.nextDouble(in: 0.2..<1.0)))
        }
        let noiseAmplitude = random.nextDouble(in: 6..<24)

        for y in 0..<size {
            for x in 0..<size {
                let px = Double(x) + 0.5, py = Double(y) + 0.5
                let shade = 1 + gradient.x * (px - side / 2) + gradient.y * (py - side / 2)
                var colour = (background.0 * shade, background.1 * shade, background.2 * shade)
                for stroke in strokes {
                    // Distance from the pixel to the segment.
                    let sx = stroke.x1 - stroke.x0, sy = stroke.y1 - stroke.y0
                    let lengthSquared = max(sx * sx + sy * sy, 1e-9)
                    let t = min(max(((px - stroke.x0) * sx + (py - stroke.y0) * sy) / lengthSquared, 0), 1)
                    let ex = px - (stroke.x0 + t * sx), ey = py - (stroke.y0 + t * sy)
                    if ex * ex + ey * ey <= stroke.width * stroke.width { colour = stroke.colour }
                }
                for part in parts {
                    let dx = px - part.x, dy = py - part.y
                    let u = (part.cosine * dx + part.sine * dy) / part.radius
                    let v = (-part.sine * dx + part.cosine * dy) / part.radius
                    guard Self.isInside(shape: part.shape, u: u, v: v) else { continue }
                    let phase = (part.stripe.0 * dx + part.stripe.1 * dy) / part.radius * part.frequency * Double.pi
                    let texture = 0.75 + 0.25 * sin(phase)
                    colour = (part.colour.0 * texture, part.colour.1 * texture, part.colour.2 * texture)
                }
                let noise = (Double(random.nextUInt32() >> 8) / 16_777_216.0 - 0.5) * 2 * noiseAmplitude
                let pixel = pixels + (y * size + x) * 3
                pixel[0] = byte(colour.0 * 255 + noise)
                pixel[1] = byte(colour.1 * 255 + noise)
                pixel[2] = byte(colour.2 * 255 + noise)
            }
        }
    }

    private func byte(_ value: Double) -> UInt8 { UInt8(max(0, min(255, value.rounded()))) }

    /// HSV to RGB, components in 0...1.
    private func rgb(hue: Double, saturation: Double, value: Double) -> (Double, Double, Double) {
        let sector = hue * 6
        let index = Int(sector) % 6
        let fraction = sector - sector.rounded(.down)
        let p = value * (1 - saturation), q = value * (1 - saturation * fraction), t = value * (1 - saturation * (1 - fraction))
        switch index {
        case 0: return (value, t, p)
        case 1: return (q, value, p)
        case 2: return (p, value, t)
        case 3: return (p, q, value)
        case 4: return (t, p, value)
        default: return (value, p, q)
        }
    }
}
