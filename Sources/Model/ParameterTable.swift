/// The trainable tensors of a model (an MAE, or the fine-tuning classifier): official
/// `state_dict` names and shapes, in the official module order, laid one after another onto a single flat buffer (so the
/// gradient all-reduce and the optimizer each see one vector).

/// One tensor of the table.
public struct TensorInfo: Sendable, Equatable {
    /// The official name, e.g. "blocks.0.attn.qkv.weight".
    public let name: String
    /// The official shape, e.g. [2304, 768] (Linear weights are [out, in]).
    public let shape: [Int]
    /// First element in the flat buffer.
    public let offset: Int
    /// Number of elements (product of `shape`).
    public let count: Int
    /// Whether weight decay applies: false for 1-D tensors and names ending ".bias"
    /// (the reference's `param_groups_weight_decay`), true for weights and the cls/mask tokens.
    public let decays: Bool

    public init(name: String, shape: [Int], offset: Int) {
        self.name = name
        self.shape = shape
        self.offset = offset
        self.count = shape.reduce(1, *)
        self.decays = !(shape.count == 1 || name.hasSuffix(".bias"))
    }
}

/// All trainable tensors of a model.
public struct ParameterTable: Sendable {
    /// In the official order.
    public let tensors: [TensorInfo]
    /// Total number of parameters (the flat buffer's length).
    public let count: Int
    private let positions: [String: Int]

    public init(config: ModelConfig) {
        var entries: [(name: String, shape: [Int])] = Self.encoderEntries(config: config, positionEmbedding: false)
        let decoderWidth = config.decoderWidth
        entries += [("norm.weight", [config.encoderWidth]), ("norm.bias", [config.encoderWidth]),
                    ("decoder_embed.weight", [decoderWidth, config.encoderWidth]),
                    ("decoder_embed.bias", [decoderWidth]), ("mask_token", [1, 1, decoderWidth])]
        entries += Self.blockEntries(prefix: "decoder_blocks", depth: config.decoderDepth, width: decoderWidth,
                                     mlpRatio: config.mlpRatio)
        entries += [("decoder_norm.weight", [decoderWidth]), ("decoder_norm.bias", [decoderWidth]),
                    ("decoder_pred.weight", [config.patchDimension, decoderWidth]),
                    ("decoder_pred.bias", [config.patchDimension])]
        self.init(entries: entries)
    }

    /// A table of these tensors, laid out one after another in this order.
    public init(entries: [(name: String, shape: [Int])]) {
        var tensors: [TensorInfo] = []
        var offset = 0
        for (name, shape) in entries {
            let info = TensorInfo(name: name, shape: shape, offset: offset)
            tensors.append(info)
            offset += info.count
        }
        self.tensors = tensors
        self.count = offset
        self.positions = Dictionary(uniqueKeysWithValues: tensors.enumerated().map { ($1.name, $0) })
    }

    /// The ViT encoder's tensors up to its last block, in timm's order: cls_token,
    /// pos_embed (a trained parameter in timm's ViT, fixed and so absent in the MAE),
    /// patch_embed.proj, blocks.N.
    static func encoderEntries(config: ModelConfig, positionEmbedding: Bool) -> [(name: String, shape: [Int])] {
        let width = config.encoderWidth
        var entries: [(name: String, shape: [Int])] = [("cls_token", [1, 1, width])]
        if positionEmbedding { entries.append(("pos_embed", [1, config.patchCount + 1, width])) }
        entries += [("patch_embed.proj.weight", [width, config.channels, config.patchSize, config.patchSize]),
                    ("patch_embed.proj.bias", [width])]
        return entries + blockEntries(prefix: "blocks", depth: config.encoderDepth, width: width, mlpRatio: config.mlpRatio)
    }

    /// timm `Block` tensors of `depth` blocks named prefix.N.*.
    static func blockEntries(prefix: String, depth: Int, width: Int, mlpRatio: Int) -> [(name: String, shape: [Int])] {
        let hidden = width * mlpRatio
        var entries: [(name: String, shape: [Int])] = []
        for block in 0..<depth {
            let name = "\(prefix).\(block)."
            entries += [(name + "norm1.weight", [width]), (name + "norm1.bias", [width]),
                        (name + "attn.qkv.weight", [3 * width, width]), (name + "attn.qkv.bias", [3 * width]),
                        (name + "attn.proj.weight", [width, width]), (name + "attn.proj.bias", [width]),
                        (name + "norm2.weight", [width]), (name + "norm2.bias", [width]),
                        (name + "mlp.fc1.weight", [hidden, width]), (name + "mlp.fc1.bias", [hidden]),
                        (name + "mlp.fc2.weight", [width, hidden]), (name + "mlp.fc2.bias", [width])]
        }
        return entries
    }

    /// The tensor with this official name, or nil.
    public func tensor(named name: String) -> TensorInfo? {
        positions[name].map { tensors[$0] }
    }

    /// The position of the named tensor in `tensors` (its number), or nil.
    public func number(of name: String) -> Int? { positions[name] }
}
