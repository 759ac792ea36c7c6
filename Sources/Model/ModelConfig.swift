/// MAE model configurations, following facebookresearch/mae `models_mae.py`
/// (`mae_vit_base_patch16_dec512d8b` and friends) plus two small configs for CPUs.

/// Errors about a model's configuration or its inputs; each description is one line
/// that says what is wrong and what to do.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    /// A model name that is not one of `ModelConfig.knownNames`.
    case unknownModel(name: String, known: [String])
    /// A configuration whose sizes do not fit together.
    case invalidConfig(name: String, reason: String)

    public var description: String {
        switch self {
        case let .unknownModel(name, known):
            return "unknown model '\(name)'; known models: \(known.joined(separator: ", "))"
        case let .invalidConfig(name, reason):
            return "invalid configuration for model '\(name)': \(reason)"
        }
    }
}

/// The sizes of one MAE (a ViT encoder that sees only the visible patches, and a
/// light decoder that reconstructs every patch's pixels).
public struct ModelConfig: Codable, Sendable, Equatable {
    public var name: String
    /// Input images are imageSize × imageSize with `channels` channels (3).
    public var imageSize: Int
    public var patchSize: Int
    public var channels: Int
    public var encoderWidth: Int
    public var encoderDepth: Int
    public var encoderHeads: Int
    public var decoderWidth: Int
    public var decoderDepth: Int
    public var decoderHeads: Int
    /// MLP hidden width = mlpRatio × width (4).
    public var mlpRatio: Int

    enum CodingKeys: String, CodingKey {
        case name
        case imageSize = "image_size"
        case patchSize = "patch_size"
        case channels
        case encoderWidth = "encoder_width"
        case encoderDepth = "encoder_depth"
        case encoderHeads = "encoder_heads"
        case decoderWidth = "decoder_width"
        case decoderDepth = "decoder_depth"
        case decoderHeads = "decoder_heads"
        case mlpRatio = "mlp_ratio"
    }

    public init(name: String, imageSize: Int, patchSize: Int, encoderWidth: Int, encoderDepth: Int,
                encoderHeads: Int, decoderWidth: Int, decoderDepth: Int, decoderHeads: Int,
                mlpRatio: Int = 4, channels: Int = 3) {
        self.name = name
        self.imageSize = imageSize
        self.patchSize = patchSize
        self.channels = channels
        self.encoderWidth = encoderWidth
        self.encoderDepth = encoderDepth
        self.encoderHeads = encoderHeads
        self.decoderWidth = decoderWidth
        self.decoderDepth = decoderDepth
        self.decoderHeads = decoderHeads
        self.mlpRatio = mlpRatio
    }

    /// The named configurations, in increasing size.
    public static let knownNames = ["mae_vit_tiny_patch4", "mae_vit_small_patch8", "mae_vit_base_patch16",
                                    "mae_vit_large_patch16", "mae_vit_huge_patch14"]

    /// A named configuration, at its default image size (32, 64, 224, 224, 224) or at `imageSize`.
    /// Throws `ModelError` for an unknown name or an image size the patch does not divide.
    public static func named(_ name: String, imageSize: Int? = nil) throws -> ModelConfig {
        var config: ModelConfig
        switch name {
        case "mae_vit_tiny_patch4":
            config = ModelConfig(name: name, imageSize: 32, patchSize: 4, encoderWidth: 192, encoderDepth: 12,
                                 encoderHeads: 3, decoderWidth: 128, decoderDepth: 4, decoderHeads: 4)
        case "mae_vit_small_patch8":
            config = ModelConfig(name: name, imageSize: 64, patchSize: 8, encoderWidth: 384, encoderDepth: 12,
                                 encoderHeads: 6, decoderWidth: 256, decoderDepth: 4, decoderHeads: 8)
        case "mae_vit_base_patch16":
            config = ModelConfig(name: name, imageSize: 224, patchSize: 16, encoderWidth: 768, encoderDepth: 12,
                                 encoderHeads: 12, decoderWidth: 512, decoderDepth: 8, decoderHeads: 16)
        case "mae_vit_large_patch16":
            config = ModelConfig(name: name, imageSize: 224, patchSize: 16, encoderWidth: 1024, encoderDepth: 24,
                                 encoderHeads: 16, decoderWidth: 512, decoderDepth: 8, decoderHeads: 16)
        case "mae_vit_huge_patch14":
            config = ModelConfig(name: name, imageSize: 224, patchSize: 14, encoderWidth: 1280, encoderDepth: 32,
                                 encoderHeads: 16, decoderWidth: 512, decoderDepth: 8, decoderHeads: 16)
        default:
            throw ModelError.unknownModel(name: name, known: knownNames)
        }
        if let imageSize { config.imageSize = imageSize }
        try config.validate()
        return config
    }

    /// Patches per side: imageSize / patchSize.
    public var gridSize: Int { imageSize / patchSize }
    /// L, the number of patches.
    public var patchCount: Int { gridSize * gridSize }
    /// Values per patch: p · p · channels.
    public var patchDimension: Int { patchSize * patchSize * channels }
    /// Visible patches per image: `int(L * (1 - mask_ratio))` as the reference.
    public func keptCount(maskRatio: Double) -> Int { Int(Double(patchCount) * (1 - maskRatio)) }

    /// Throws `ModelError.invalidConfig` when the sizes do not fit together.
    public func validate() throws {
        if let reason = problem { throw ModelError.invalidConfig(name: name, reason: reason) }
    }

    /// What is wrong with the sizes, or nil.
    var problem: String? {
        let positive = [("image size", imageSize), ("patch size", patchSize), ("channels", channels),
                        ("encoder width", encoderWidth), ("encoder depth", encoderDepth),
                        ("encoder heads", encoderHeads), ("decoder width", decoderWidth),
                        ("decoder depth", decoderDepth), ("decoder heads", decoderHeads), ("mlp ratio", mlpRatio)]
        for (label, value) in positive where value < 1 { return "\(label) must be positive, got \(value)" }
        if imageSize % patchSize != 0 {
            return "image size \(imageSize) is not a multiple of the patch size \(patchSize); pick a multiple of \(patchSize)"
        }
        if encoderWidth % encoderHeads != 0 { return "encoder width \(encoderWidth) is not divisible by \(encoderHeads) heads" }
        if decoderWidth % decoderHeads != 0 { return "decoder width \(decoderWidth) is not divisible by \(decoderHeads) heads" }
        if encoderWidth % 4 != 0 || decoderWidth % 4 != 0 {
            return "widths must be multiples of 4 for the 2-D sin-cos position embedding"
        }
        return nil
    }
}
