import Kernels

/// A pre-norm transformer block (timm's `Block`, as MAE uses it):
///   middle = input + proj(attention(norm1(input)))
///   output = middle + fc2(GELU(fc1(norm2(middle))))
/// With drop path (stochastic depth, fine-tuning only) each branch is divided by the keep
/// probability and multiplied per sample by 0 (dropped) or 1 (kept) before the residual
/// add, in timm's order `x.div(keep_prob) * random_tensor`.

/// Where one block's tensors start in the flat parameter (and gradient) buffer.
struct BlockOffsets {
    let norm1Weight, norm1Bias, qkvWeight, qkvBias, projectionWeight, projectionBias: Int
    let norm2Weight, norm2Bias, fc1Weight, fc1Bias, fc2Weight, fc2Bias: Int

    /// The four linear layers' weights (qkv, proj, fc1, fc2), whose gradients `blockBackward`
    /// can assign rather than add.
    var linearWeights: [Int] { [qkvWeight, projectionWeight, fc1Weight, fc2Weight] }

    init(table: ParameterTable, prefix: String) {
        func offset(_ suffix: String) -> Int {
            guard let tensor = table.tensor(named: prefix + suffix) else {
                preconditionFailure("parameter table lacks \(prefix + suffix)")
            }
            return tensor.offset
        }
        norm1Weight = offset("norm1.weight"); norm1Bias = offset("norm1.bias")
        qkvWeight = offset("attn.qkv.weight"); qkvBias = offset("attn.qkv.bias")
        projectionWeight = offset("attn.proj.weight"); projectionBias = offset("attn.proj.bias")
        norm2Weight = offset("norm2.weight"); norm2Bias = offset("norm2.bias")
        fc1Weight = offset("mlp.fc1.weight"); fc1Bias = offset("mlp.fc1.bias")
        fc2Weight = offset("mlp.fc2.weight"); fc2Bias = offset("mlp.fc2.bias")
    }
}

/// How a pass runs its matrix products: in `precision`, and in bf16 with the weights
/// taken from `roundedParameters` (the parameters rounded to bf16 once per step, same
/// layout), so no product rounds a weight again.
struct Products {
    let precision: Precision
    let roundedParameters: UnsafePointer<UInt16>?

    /// The rounded weight at `offset` of the parameter layout; nil in fp32.
    func weight(_ offset: Int) -> UnsafePointer<UInt16>? { roundedParameters.map { $0 + offset } }

    /// Every product in fp32 (the fine-tuning classifier, which has no bf16 path yet).
    static let fp32 = Products(precision: .fp32, roundedParameters: nil)

    /// In bf16, the inputs of the qkv, proj, fc1 and fc2 products (`norm1`, `attention`, `norm2`,
    /// `activated`) are read by those products alone, in the forward and for the weight
    /// gradients, so their producers (layer norm, attention, GELU) write them rounded to bf16
    /// as they go, into the first half of their own memory: no rounding pass in either
    /// direction, and the same bits as rounding the fp32 values. This is that memory viewed as bf16 values; nil in fp32,
    /// where it holds fp32 values.
    func roundedActivation(_ activation: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<UInt16>? {
        precision == .bf16 ? UnsafeMutableRawPointer(activation).assumingMemoryBound(to: UInt16.self) : nil
    }
}

/// The sizes a block runs at.
struct BlockShape {
    let batch: Int, tokens: Int, width: Int, heads: Int, hidden: Int
    var rows: Int { batch * tokens }
    var headDimension: Int { width / heads }
}

/// What one block's forward saves for its backward, inside the activation arena.
struct BlockActivations {
    var input: UnsafeMutablePointer<Float>          // [rows, width] (the previous block's output)
    var norm1: UnsafeMutablePointer<Float>          // [rows, width]
    var mean1: UnsafeMutablePointer<Float>          // [rows]
    var reciprocalStd1: UnsafeMutablePointer<Float> // [rows]
    var qkv: UnsafeMutablePointer<Float>            // [rows, 3·width]
    var probabilities: UnsafeMutablePointer<Float>  // [batch, heads, tokens, tokens]
    var attention: UnsafeMutablePointer<Float>      // [rows, width], before proj
    var middle: UnsafeMutablePointer<Float>         // [rows, width]
    var norm2: UnsafeMutablePointer<Float>          // [rows, width]
    var mean2: UnsafeMutablePointer<Float>          // [rows]
    var reciprocalStd2: UnsafeMutablePointer<Float> // [rows]
    var hidden: UnsafeMutablePointer<Float>         // [rows, hidden], GELU'(fc1 output) after the forward
    var activated: UnsafeMutablePointer<Float>      // [rows, hidden], after GELU
    var output: UnsafeMutablePointer<Float>         // [rows, width] (the next block's input)
}

/// Drop path of one block (timm's `drop_path`): per-sample keep masks, [batch] each
/// (1 kept, 0 dropped), and the keep probability 1 − rate.
struct BlockDropPath {
    let attention: UnsafePointer<Float>
    let mlp: UnsafePointer<Float>
    let keep: Float
}

/// output = stream + (branch / keep) · mask[sample], over [rows, width] with
/// sample = row / tokens. `output` may be `stream` or `branch`.
private func addDroppedBranch(output: UnsafeMutablePointer<Float>, stream: UnsafePointer<Float>,
                              branch: UnsafePointer<Float>, masks: UnsafePointer<Float>, keep: Float,
                              shape s: BlockShape) {
    parallelFor(s.rows, minimumPerWorker: max(1, 16_384 / max(s.width, 1))) { range in
        for row in range {
            let mask = masks[row / s.tokens]
            let offset = row * s.width
            for column in 0..<s.width {
                output[offset + column] = stream[offset + column] + branch[offset + column] / keep * mask
            }
        }
    }
}

/// output = gradient · mask[sample] / keep over [rows, width]: the branch's share of a
/// drop-path residual's gradient (autograd's order for `div` then `mul`).
private func dropPathGradient(output: UnsafeMutablePointer<Float>, gradient: UnsafePointer<Float>,
                              masks: UnsafePointer<Float>, keep: Float, shape s: BlockShape) {
    parallelFor(s.rows, minimumPerWorker: max(1, 16_384 / max(s.width, 1))) { range in
        for row in range {
            let mask = masks[row / s.tokens]
            let offset = row * s.width
            for column in 0..<s.width { output[offset + column] = gradient[offset + column] * mask / keep }
        }
    }
}

/// Gradient scratch shared by all blocks of one stack (sized for the largest).
struct BlockScratch {
    var stream: UnsafeMutablePointer<Float>         // [rows, width]: d output on entry, d input on exit
    var norm: UnsafeMutablePointer<Float>           // [rows, width]
    var qkv: UnsafeMutablePointer<Float>            // [rows, 3·width]
    var attention: UnsafeMutablePointer<Float>      // [rows, width]
    var hidden: UnsafeMutablePointer<Float>         // [rows, hidden]
}

/// One block's forward; `dropPath` nil is the plain block (pretraining, evaluation).
/// With drop path, `a.middle` and `a.output` first take the branch alone, then the
/// scaled residual sum in place (the backward needs only the branch inputs).
func blockForward(parameters p: UnsafePointer<Float>, products x: Products, offsets o: BlockOffsets,
                  activations a: BlockActivations, shape s: BlockShape, dropPath: BlockDropPath? = nil) {
    let norm1 = x.roundedActivation(a.norm1), norm2 = x.roundedActivation(a.norm2)
    let activated = x.roundedActivation(a.activated), attention = x.roundedActivation(a.attention)
    layerNormForward(output: a.norm1, mean: a.mean1, reciprocalStd: a.reciprocalStd1, input: a.input,
                     weight: p + o.norm1Weight, bias: p + o.norm1Bias, rows: s.rows, width: s.width,
                     roundedOutput: norm1)
    linearForward(output: a.qkv, input: a.norm1, weight: p + o.qkvWeight, bias: p + o.qkvBias,
                  rows: s.rows, inFeatures: s.width, outFeatures: 3 * s.width,
                  precision: x.precision, roundedWeight: x.weight(o.qkvWeight), roundedInput: norm1)
    attentionForward(output: a.attention, probabilities: a.probabilities, qkv: a.qkv,
                     batch: s.batch, tokens: s.tokens, heads: s.heads, headDimension: s.headDimension,
                     precision: x.precision, roundedOutput: attention)
    linearForward(output: a.middle, input: a.attention, weight: p + o.projectionWeight,
                  bias: p + o.projectionBias, residual: dropPath == nil ? a.input : nil,
                  rows: s.rows, inFeatures: s.width, outFeatures: s.width,
                  precision: x.precision, roundedWeight: x.weight(o.projectionWeight), roundedInput: attention)
    if let dropPath {
        addDroppedBranch(output: a.middle, stream: a.input, branch: a.middle, masks: dropPath.attention,
                         keep: dropPath.keep, shape: s)
    }
    layerNormForward(output: a.norm2, mean: a.mean2, reciprocalStd: a.reciprocalStd2, input: a.middle,
                     weight: p + o.norm2Weight, bias: p + o.norm2Bias, rows: s.rows, width: s.width,
                     roundedOutput: norm2)
    // fc1 without its bias; the bias joins GELU in one pass, which leaves GELU' in `hidden`.
    matrixMultiply(a.hidden, ldc: s.hidden, a.norm2, lda: s.width, p + o.fc1Weight, ldb: s.width,
                   transposeB: true, roundedA: norm2.map { UnsafePointer($0) }, roundedB: x.weight(o.fc1Weight),
                   m: s.rows, n: s.hidden, k: s.width, precision: x.precision)
    biasGELUForward(activated: a.activated, preActivation: a.hidden, bias: p + o.fc1Bias,
                    rows: s.rows, width: s.hidden, roundedActivated: activated)
    linearForward(output: a.output, input: a.activated, weight: p + o.fc2Weight, bias: p + o.fc2Bias,
                  residual: dropPath == nil ? a.middle : nil, rows: s.rows, inFeatures: s.hidden, outFeatures: s.width,
                  precision: x.precision, roundedWeight: x.weight(o.fc2Weight), roundedInput: activated)
    if let dropPath {
        addDroppedBranch(output: a.output, stream: a.middle, branch: a.output, masks: dropPath.mlp,
                         keep: dropPath.keep, shape: s)
    }
}

/// Backward of `blockForward`. On entry `scratch.stream` holds ∂loss/∂output; on
/// exit it holds ∂loss/∂input. Parameter gradients are added into `g`, but those of the four
/// linear layers' weights (`BlockOffsets.linearWeights`) are assigned when
/// `assignsWeightGradients` (see `linearBackward`).
func blockBackward(parameters p: UnsafePointer<Float>, products x: Products, gradients g: UnsafeMutablePointer<Float>,
                   offsets o: BlockOffsets, activations a: BlockActivations,
                   scratch d: BlockScratch, shape s: BlockShape, dropPath: BlockDropPath? = nil,
                   assignsWeightGradients: Bool = false) {
    // MLP branch. The residual passes d output straight to d middle; with drop path the
    // branch sees it scaled per sample (in d.attention, free until the attention branch).
    var mlpGradient = UnsafePointer(d.stream)
    if let dropPath {
        dropPathGradient(output: d.attention, gradient: d.stream, masks: dropPath.mlp, keep: dropPath.keep, shape: s)
        mlpGradient = UnsafePointer(d.attention)
    }
    linearBackward(inputGradient: d.hidden, weightGradient: g + o.fc2Weight, biasGradient: g + o.fc2Bias,
                   outputGradient: mlpGradient, input: a.activated, weight: p + o.fc2Weight,
                   rows: s.rows, inFeatures: s.hidden, outFeatures: s.width,
                   precision: x.precision, roundedWeight: x.weight(o.fc2Weight),
                   roundedInput: x.roundedActivation(a.activated),
                   assignsWeightGradient: assignsWeightGradients)
    // GELU's backward multiplies by its derivative; in bf16 the fc1 backward does it as it
    // rounds its output gradient, saving a pass over the hidden activations.
    let fusesGELU = x.precision == .bf16
    if !fusesGELU {
        geluBackward(inputGradient: d.hidden, outputGradient: d.hidden, derivative: a.hidden, count: s.rows * s.hidden)
    }
    linearBackward(inputGradient: d.norm, weightGradient: g + o.fc1Weight, biasGradient: g + o.fc1Bias,
                   outputGradient: d.hidden, outputGradientFactor: fusesGELU ? UnsafePointer(a.hidden) : nil,
                   input: a.norm2, weight: p + o.fc1Weight,
                   rows: s.rows, inFeatures: s.width, outFeatures: s.hidden,
                   precision: x.precision, roundedWeight: x.weight(o.fc1Weight),
                   roundedInput: x.roundedActivation(a.norm2),
                   assignsWeightGradient: assignsWeightGradients)
    layerNormBackward(inputGradient: d.stream, weightGradient: g + o.norm2Weight, biasGradient: g + o.norm2Bias,
                      outputGradient: d.norm, input: a.middle, mean: a.mean2, reciprocalStd: a.reciprocalStd2,
                      weight: p + o.norm2Weight, residualGradient: d.stream, rows: s.rows, width: s.width)
    // Attention branch; d middle passes straight to d input (scaled into d.norm, free
    // until the qkv backward, for drop path).
    var attentionGradient = UnsafePointer(d.stream)
    if let dropPath {
        dropPathGradient(output: d.norm, gradient: d.stream, masks: dropPath.attention, keep: dropPath.keep, shape: s)
        attentionGradient = UnsafePointer(d.norm)
    }
    linearBackward(inputGradient: d.attention, weightGradient: g + o.projectionWeight,
                   biasGradient: g + o.projectionBias, outputGradient: attentionGradient, input: a.attention,
                   weight: p + o.projectionWeight, rows: s.rows, inFeatures: s.width, outFeatures: s.width,
                   precision: x.precision, roundedWeight: x.weight(o.projectionWeight),
                   roundedInput: x.roundedActivation(a.attention),
                   assignsWeightGradient: assignsWeightGradients)
    attentionBackward(qkvGradient: d.qkv, outputGradient: d.attention, qkv: a.qkv, probabilities: a.probabilities,
                      batch: s.batch, tokens: s.tokens, heads: s.heads, headDimension: s.headDimension,
                      precision: x.precision)
    linearBackward(inputGradient: d.norm, weightGradient: g + o.qkvWeight, biasGradient: g + o.qkvBias,
                   outputGradient: d.qkv, input: a.norm1, weight: p + o.qkvWeight,
                   rows: s.rows, inFeatures: s.width, outFeatures: 3 * s.width,
                   precision: x.precision, roundedWeight: x.weight(o.qkvWeight),
                   roundedInput: x.roundedActivation(a.norm1),
                   assignsWeightGradient: assignsWeightGradients)
    layerNormBackward(inputGradient: d.stream, weightGradient: g + o.norm1Weight, biasGradient: g + o.norm1Bias,
                      outputGradient: d.norm, input: a.input, mean: a.mean1, reciprocalStd: a.reciprocalStd1,
                      weight: p + o.norm1Weight, residualGradient: d.stream, rows: s.rows, width: s.width)
}
