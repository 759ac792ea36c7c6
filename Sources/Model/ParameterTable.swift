/// The trainable tensors of an MAE: official `state_dict` names and shapes, in the
/// official module order, laid one after another onto a single flat buffer (so the
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

/// All trainable tensors of a configuration.
public struct ParameterTable: Sendable {
    /// In the official order.
    public let tensors: [TensorInfo]
    /// Total number of parameters (the flat buffer's length).
    public let count: Int
    private let positions: [String: Int]

    public init(config: ModelConfig) {
        var tensors: [TensorInfo] = []
        var offset = 0
        func add(_ name: String, _ shape: [Int]) {
            let info = TensorInfo(name: name, shape: shape, offset: offset)
            tensors.append(info)
            offset += info.count
        }
        func addBlocks(_ prefix: String, depth: Int, width: Int) {
            let hidden = width * config.mlpRatio
            for block in 0..<depth {
                let name = "\(prefix).\(block)."
                add(name + "norm1.weight", [width])
                add(name + "norm1.bias", [width])
                add(name + "attn.qkv.weight", [3 * width, width])
                add(name + "attn.qkv.bias", [3 * width])
                add(name + "attn.proj.weight", [width, width])
                add(name + "attn.proj.bias", [width])
                add(name + "norm2.weight", [width])
                add(name + "norm2.bias", [width])
                add(name + "mlp.fc1.weight", [hidden, width])
                add(name + "mlp.fc1.bias", [hidden])
                add(name + "mlp.fc2.weight", [width, hidden])
                add(name + "mlp.fc2.bias", [width])
            }
        }
        let width = config.encoderWidth, decoderWidth = config.decoderWidth
        add("cls_token", [1, 1, width])
        add("patch_embed.proj.weight", [width, config.channels, config.patchSize, config.patchSize])
        add("patch_embed.proj.bias", [width])
        addBlocks("blocks", depth: config.encoderDepth, width: width)
        add("norm.weight", [width])
        add("norm.bias", [width])
        add("decoder_embed.weight", [decoderWidth, width])
        add("decoder_embed.bias", [decoderWidth])
        add("mask_token", [1, 1, decoderWidth])
        addBlocks("decoder_blocks", depth: config.decoderDepth, width: decoderWidth)
        add("decoder_norm.weight", [decoderWidth])
        add("decoder_norm.bias", [decoderWidth])
        add("decoder_pred.weight", [config.patchDimension, decoderWidth])
        add("decoder_pred.bias", [config.patchDimension])
        self.tensors = tensors
        self.count = offset
        self.positions = Dictionary(uniqueKeysWithValues: tensors.enumerated().map { ($1.name, $0) })
    }

    /// The tensor with this official name, or nil.
    public func tensor(named name: String) -> TensorInfo? {
        positions[name].map { tensors[$0] }
    }

    /// The position of the named tensor in `tensors` (its number), or nil.
    public func number(of name: String) -> Int? { positions[name] }
}
