import Foundation

/// Layer-wise learning-rate decay of fine-tuning, as the official `util/lr_decay.py`
/// (`param_groups_lrd`, after BEiT): the blocks near the input learn slower.

/// The learning-rate scale and weight decay of one tensor.
public struct ParameterGroupSetting: Sendable, Equatable, Hashable {
    /// Multiplies the step's learning rate: layerDecay^(layerCount − layerID).
    public let learningRateScale: Double
    public let weightDecay: Double

    public init(learningRateScale: Double, weightDecay: Double) {
        self.learningRateScale = learningRateScale
        self.weightDecay = weightDecay
    }
}

/// The official `get_layer_id_for_vit`: cls_token, pos_embed and patch_embed.* are layer 0,
/// blocks.i.* layer i + 1, everything else (norm, fc_norm, head) `layerCount` = depth + 1.
public func vitLayerID(name: String, layerCount: Int) -> Int {
    if name == "cls_token" || name == "pos_embed" || name.hasPrefix("patch_embed") { return 0 }
    if name.hasPrefix("blocks") {
        let parts = name.split(separator: ".")
        if parts.count > 1, let block = Int(parts[1]) { return block + 1 }
    }
    return layerCount
}

/// The names timm's ViT excludes from weight decay (`no_weight_decay()`).
public let vitNoWeightDecayNames: Set<String> = ["pos_embed", "cls_token", "dist_token"]

/// One setting per tensor of `table`, in table order, as `param_groups_lrd` assigns them:
/// layerCount = depth + 1, scale layerDecay^(layerCount − layer id), no weight decay for
/// 1-D tensors and `noWeightDecay` names, `weightDecay` for the rest.
public func layerDecaySettings(table: ParameterTable, depth: Int, weightDecay: Double, layerDecay: Double,
                               noWeightDecay: Set<String> = vitNoWeightDecayNames) -> [ParameterGroupSetting] {
    let layerCount = depth + 1
    return table.tensors.map { tensor in
        let decays = !(tensor.shape.count == 1 || noWeightDecay.contains(tensor.name))
        let layer = vitLayerID(name: tensor.name, layerCount: layerCount)
        return ParameterGroupSetting(learningRateScale: pow(layerDecay, Double(layerCount - layer)),
                                     weightDecay: decays ? weightDecay : 0)
    }
}
