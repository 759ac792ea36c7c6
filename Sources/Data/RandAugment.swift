import Kernels

/// timm 0.3.2's RandAugment (`rand_augment_transform(config, hparams)` as
/// `create_transform(..., auto_augment=config, interpolation='bicubic')` builds it), on an
/// 8-bit RGB image after the crop and flip:
///
/// - `layers` operations (2 by default) chosen uniformly with replacement from the 15 of
///   `_RAND_TRANSFORMS`, or of `_RAND_INCREASING_TRANSFORMS` with `inc1`;
/// - each applied with probability 0.5 (`u > 0.5` skips it), at magnitude `m`, or with
///   `mstd` > 0 at `gauss(m, mstd)`, clipped to [0, 10];
/// - the magnitude mapped to the operation's argument as timm's `LEVEL_TO_ARG` does, with a
///   random sign (`u > 0.5` negates) for Rotate, Shear, Translate and the `*Increasing`
///   enhancements;
/// - geometric operations with Pillow's bicubic (`interpolation='bicubic'` fixes it; random
///   bilinear/bicubic is only timm's default without it) and the fill colour
///   `round(255 · ImageNet mean)` = (124, 116, 104) that create_transform passes as `img_mean`.
///
/// Random numbers: `CounterRandom(seed, .randAugment, epoch, index: sample)`, drawn in the
/// order: every operation's choice, then for each operation its probability, magnitude
/// noise, and sign.
public struct RandAugmentSettings: Equatable, Sendable {
    /// The magnitude, 0...10 (`m`, default 10).
    public var magnitude: Int
    /// Operations per image (`n`, default 2).
    public var layers: Int
    /// Standard deviation of the gaussian noise on the magnitude (`mstd`, default 0).
    public var magnitudeStandardDeviation: Double
    /// Whether the severity of every operation grows with the magnitude (`inc1`).
    public var increasing: Bool
    /// The configuration string it was parsed from.
    public let configuration: String

    /// Parses timm's configuration string: `rand` then `-`-separated sections `m<int>`,
    /// `n<int>`, `mstd<float>`, `inc<0|1>` in any order, e.g. `rand-m9-mstd0.5-inc1`.
    /// (timm reads `inc0` as on, a slip of `bool('0')`; here `inc0` means off.)
    public init(parsing configuration: String) throws {
        self.configuration = configuration
        magnitude = 10
        layers = 2
        magnitudeStandardDeviation = 0
        increasing = false
        let sections = configuration.split(separator: "-", omittingEmptySubsequences: false)
        guard sections.first == "rand" else {
            throw DataError("RandAugment configuration '\(configuration)' must start with 'rand' (e.g. rand-m9-mstd0.5-inc1)")
        }
        for section in sections.dropFirst() {
            // timm splits each section at its first digit into key and value; a section
            // without a digit is ignored.
            guard let digit = section.firstIndex(where: \.isNumber) else { continue }
            let key = section[..<digit], value = String(section[digit...])
            func bad(_ what: String) -> DataError {
                DataError("RandAugment configuration '\(configuration)': section '\(section)' needs \(what)")
            }
            switch key {
            case "m":
                guard let number = Int(value), (0...10).contains(number) else { throw bad("an integer magnitude 0...10") }
                magnitude = number
            case "n":
                guard let number = Int(value), number >= 1, number <= 16 else { throw bad("an integer 1...16 of operations per image") }
                layers = number
            case "mstd":
                guard let number = Double(value), number >= 0, number.isFinite else { throw bad("a non-negative standard deviation") }
                magnitudeStandardDeviation = number
            case "inc":
                guard let number = Int(value), number == 0 || number == 1 else { throw bad("0 or 1") }
                increasing = number == 1
            case "w":
                throw DataError("RandAugment configuration '\(configuration)': weighted operation choice ('w') is not supported; leave it out")
            default:
                throw DataError("RandAugment configuration '\(configuration)': unknown section '\(section)' (known: m, n, mstd, inc)")
            }
        }
    }

    public static func == (lhs: RandAugmentSettings, rhs: RandAugmentSettings) -> Bool {
        lhs.magnitude == rhs.magnitude && lhs.layers == rhs.layers
            && lhs.magnitudeStandardDeviation == rhs.magnitudeStandardDeviation && lhs.increasing == rhs.increasing
    }
}

/// One of RandAugment's operations (timm's names).
public enum RandAugmentOperation: String, CaseIterable, Sendable {
    case autoContrast = "AutoContrast", equalize = "Equalize", invert = "Invert", rotate = "Rotate"
    case posterize = "Posterize", solarize = "Solarize", solarizeAdd = "SolarizeAdd"
    case color = "Color", contrast = "Contrast", brightness = "Brightness", sharpness = "Sharpness"
    case shearX = "ShearX", shearY = "ShearY", translateXRelative = "TranslateXRel", translateYRelative = "TranslateYRel"
    case posterizeIncreasing = "PosterizeIncreasing", solarizeIncreasing = "SolarizeIncreasing"
    case colorIncreasing = "ColorIncreasing", contrastIncreasing = "ContrastIncreasing"
    case brightnessIncreasing = "BrightnessIncreasing", sharpnessIncreasing = "SharpnessIncreasing"

    /// timm's `_RAND_TRANSFORMS`, in its order (the order the uniform choice indexes).
    public static let standard: [RandAugmentOperation] = [
        .autoContrast, .equalize, .invert, .rotate, .posterize, .solarize, .solarizeAdd,
        .color, .contrast, .brightness, .sharpness, .shearX, .shearY, .translateXRelative, .translateYRelative,
    ]
    /// timm's `_RAND_INCREASING_TRANSFORMS`, in its order.
    public static let increasing: [RandAugmentOperation] = [
        .autoContrast, .equalize, .invert, .rotate, .posterizeIncreasing, .solarizeIncreasing, .solarizeAdd,
        .colorIncreasing, .contrastIncreasing, .brightnessIncreasing, .sharpnessIncreasing,
        .shearX, .shearY, .translateXRelative, .translateYRelative,
    ]

    /// Whether timm's level-to-argument function draws a random sign.
    var drawsSign: Bool {
        switch self {
        case .rotate, .shearX, .shearY, .translateXRelative, .translateYRelative,
             .colorIncreasing, .contrastIncreasing, .brightnessIncreasing, .sharpnessIncreasing: true
        default: false
        }
    }

    /// timm's LEVEL_TO_ARG for a magnitude in [0, 10] and a sign (−1 or 1; 1 where none is drawn).
    func argument(magnitude level: Double, sign: Double) -> Double {
        switch self {
        case .autoContrast, .equalize, .invert: 0
        case .rotate: sign * ((level / 10.0) * 30.0)
        case .posterize: Double(Int((level / 10.0) * 4))
        case .posterizeIncreasing: Double(4 - Int((level / 10.0) * 4))
        case .solarize: Double(Int((level / 10.0) * 256))
        case .solarizeIncreasing: Double(256 - Int((level / 10.0) * 256))
        case .solarizeAdd: Double(Int((level / 10.0) * 110))
        case .color, .contrast, .brightness, .sharpness: (level / 10.0) * 1.8 + 0.1
        case .colorIncreasing, .contrastIncreasing, .brightnessIncreasing, .sharpnessIncreasing:
            1.0 + sign * ((level / 10.0) * 0.9)
        case .shearX, .shearY: sign * ((level / 10.0) * 0.3)
        case .translateXRelative, .translateYRelative: sign * ((level / 10.0) * 0.45)
        }
    }

    /// Applies the operation with its argument (see `argument`) to `pixels` in place.
    /// `scratch` holds at least width · height · 3 bytes.
    func apply(_ pixels: UnsafeMutablePointer<UInt8>, width: Int, height: Int, argument: Double,
               fill: (UInt8, UInt8, UInt8), scratch: UnsafeMutablePointer<UInt8>) {
        let count = width * height
        func affine(_ coefficients: [Double]) {
            scratch.update(from: pixels, count: count * 3)
            affineTransform(output: pixels, input: scratch, width: width, height: height, coefficients: coefficients, fill: fill)
        }
        switch self {
        case .autoContrast: autocontrastImage(pixels, pixelCount: count)
        case .equalize: equalizeImage(pixels, pixelCount: count)
        case .invert: invertImage(pixels, pixelCount: count)
        case .rotate:
            // Image.rotate returns a copy at 0 degrees; the identity transform gives the same bytes.
            affine(rotationCoefficients(degrees: argument, width: width, height: height))
        case .posterize, .posterizeIncreasing: posterizeImage(pixels, pixelCount: count, bits: Int(argument))
        case .solarize, .solarizeIncreasing: solarizeImage(pixels, pixelCount: count, threshold: Int(argument))
        case .solarizeAdd: solarizeAddImage(pixels, pixelCount: count, add: Int(argument))
        case .color, .colorIncreasing: enhanceColor(pixels, pixelCount: count, factor: argument)
        case .contrast, .contrastIncreasing: enhanceContrast(pixels, pixelCount: count, factor: argument)
        case .brightness, .brightnessIncreasing: enhanceBrightness(pixels, pixelCount: count, factor: argument)
        case .sharpness, .sharpnessIncreasing:
            enhanceSharpness(pixels, width: width, height: height, factor: argument, smoothed: scratch)
        case .shearX: affine([1, argument, 0, 0, 1, 0])
        case .shearY: affine([1, 0, 0, argument, 1, 0])
        case .translateXRelative: affine([1, 0, argument * Double(width), 0, 1, 0])
        case .translateYRelative: affine([1, 0, 0, 0, 1, argument * Double(height)])
        }
    }
}

/// The operations RandAugment chose for one image, with their arguments (nil: skipped by
/// the probability 0.5).
public struct RandAugmentDraw: Equatable, Sendable {
    public let operations: [RandAugmentOperation]
    public let arguments: [Double?]
}

extension RandAugmentSettings {
    /// The fill colour of geometric operations: `round(255 · ImageNet mean)`.
    public static let fill: (UInt8, UInt8, UInt8) = (124, 116, 104)

    /// Draws the operations and arguments for one image from `random`.
    public func draw(random: inout CounterRandom) -> RandAugmentDraw {
        let pool = increasing ? RandAugmentOperation.increasing : RandAugmentOperation.standard
        let operations = (0..<layers).map { _ in pool[random.nextInt(below: pool.count)] }
        let arguments: [Double?] = operations.map { operation in
            if random.nextDouble() > 0.5 { return nil }
            var level = Double(magnitude)
            if magnitudeStandardDeviation > 0 { level += magnitudeStandardDeviation * random.nextNormal() }
            level = min(10, max(0, level))
            let sign: Double = operation.drawsSign && random.nextDouble() > 0.5 ? -1 : 1
            return operation.argument(magnitude: level, sign: sign)
        }
        return RandAugmentDraw(operations: operations, arguments: arguments)
    }

    /// RandAugment of sample `index` in `epoch`, in place on `height` rows of `width × 3`
    /// bytes; `scratch` holds at least as many bytes.
    public func apply(_ pixels: UnsafeMutablePointer<UInt8>, width: Int, height: Int, seed: UInt64, epoch: Int, index: Int,
                      scratch: UnsafeMutablePointer<UInt8>) {
        var random = CounterRandom(seed: seed, purpose: .randAugment, epoch: epoch, index: index)
        let chosen = draw(random: &random)
        for (operation, argument) in zip(chosen.operations, chosen.arguments) {
            guard let argument else { continue }
            operation.apply(pixels, width: width, height: height, argument: argument, fill: Self.fill, scratch: scratch)
        }
    }
}
