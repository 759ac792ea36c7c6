import Foundation
import Kernels

/// The reference's initialisation (`MAE.initialize_weights` and PyTorch's defaults),
/// with every random number from CounterRandom(seed, .initialisation, index: the
/// tensor's number in the table), so that each tensor's values do not depend on
/// the others or on the thread count.
///
/// - Linear weights (qkv included): xavier_uniform, U(±sqrt(6 / (fan_in + fan_out))); biases 0.
/// - patch_embed.proj.weight: xavier_uniform on its [D, C·p·p] view; its bias keeps the
///   Conv2d default U(±1/sqrt(fan_in)) with fan_in = C·p·p.
/// - LayerNorm weights 1, biases 0; cls_token and mask_token normal(0, 0.02).
///
/// Tensors are filled in parallel (each has its own stream, so the values do not
/// depend on which worker fills it).
func initialiseParameters(_ parameters: UnsafeMutablePointer<Float>, table: ParameterTable, seed: UInt64) {
    parallelFor(table.tensors.count) { numbers in
        for number in numbers { initialiseTensor(number, parameters, table: table, seed: seed) }
    }
}

/// Fills tensor `number` of the table.
private func initialiseTensor(_ number: Int, _ parameters: UnsafeMutablePointer<Float>, table: ParameterTable,
                              seed: UInt64) {
    let tensor = table.tensors[number]
    var random = CounterRandom(seed: seed, purpose: .initialisation, index: number)
    let values = parameters + tensor.offset
    let name = tensor.name
    func uniform(_ bound: Double) {
        for index in 0..<tensor.count { values[index] = Float(random.nextDouble(in: -bound..<bound)) }
    }
    func fill(_ value: Float) { values.update(repeating: value, count: tensor.count) }
    if name == "cls_token" || name == "mask_token" {
        for index in 0..<tensor.count { values[index] = Float(0.02 * random.nextNormal()) }
    } else if name == "patch_embed.proj.weight" {
        let fanOut = tensor.shape[0], fanIn = tensor.count / fanOut
        uniform((6.0 / Double(fanIn + fanOut)).squareRoot())
    } else if name == "patch_embed.proj.bias" {
        let weight = table.tensor(named: "patch_embed.proj.weight")!
        uniform(1 / Double(weight.count / weight.shape[0]).squareRoot())
    } else if name.hasSuffix("norm1.weight") || name.hasSuffix("norm2.weight") || name == "norm.weight"
                || name == "decoder_norm.weight" {
        fill(1)
    } else if tensor.shape.count == 2 {
        uniform((6.0 / Double(tensor.shape[0] + tensor.shape[1])).squareRoot())
    } else {
        fill(0)
    }
}

/// timm's ViT initialisation with the fine-tuning head (see `VisionTransformerClassifier.init`),
/// each tensor from CounterRandom(seed, .initialisation, index: its number in the table).
func initialiseClassifierParameters(_ parameters: UnsafeMutablePointer<Float>, table: ParameterTable, seed: UInt64) {
    parallelFor(table.tensors.count) { numbers in
        for number in numbers { initialiseClassifierTensor(number, parameters, table: table, seed: seed) }
    }
}

/// Fills tensor `number` of a classifier table.
func initialiseClassifierTensor(_ number: Int, _ parameters: UnsafeMutablePointer<Float>, table: ParameterTable,
                                seed: UInt64) {
    let tensor = table.tensors[number]
    var random = CounterRandom(seed: seed, purpose: .initialisation, index: number)
    let values = parameters + tensor.offset
    let name = tensor.name
    func truncatedNormal(_ std: Double) {
        for index in 0..<tensor.count { values[index] = Float(random.nextTruncatedNormal(std: std)) }
    }
    if name == "patch_embed.proj.weight" || name == "patch_embed.proj.bias" {
        // Conv2d's default: kaiming_uniform(a = √5) = U(±1/√fan_in), its bias the same bound.
        let weight = table.tensor(named: "patch_embed.proj.weight")!
        let bound = 1 / Double(weight.count / weight.shape[0]).squareRoot()
        for index in 0..<tensor.count { values[index] = Float(random.nextDouble(in: -bound..<bound)) }
    } else if name == "head.weight" {
        truncatedNormal(2e-5)
    } else if name == "cls_token" || name == "pos_embed" || tensor.shape.count == 2 {
        truncatedNormal(0.02)
    } else if name.hasSuffix("norm1.weight") || name.hasSuffix("norm2.weight") || name == "norm.weight"
                || name == "fc_norm.weight" {
        values.update(repeating: 1, count: tensor.count)
    } else {
        values.update(repeating: 0, count: tensor.count)
    }
}

extension CounterRandom {
    /// A normal sample with mean 0 and standard deviation `std`, drawn again while outside
    /// [−2, 2] (timm's `trunc_normal_` bounds are absolute, not in standard deviations).
    mutating func nextTruncatedNormal(std: Double) -> Double {
        for _ in 0..<1_000 {
            let value = std * nextNormal()
            if value >= -2 && value <= 2 { return value }
        }
        return 0  // unreachable for std ≤ 1 (each draw lands inside with probability > 0.95)
    }
}
