import Kernels
import Model

/// AdamW over the flat parameter layout, as the MAE recipe: one first and one second
/// moment buffer laid out like the parameters, weight decay only for tensors whose
/// `TensorInfo.decays` is true (not biases, norms or other 1-D tensors).
///
/// Tensors are grouped into contiguous runs that share the decay setting, so the update
/// is a handful of `adamwUpdate` calls over long ranges. Fine-tuning gives each tensor
/// its own learning-rate scale and weight decay (layer-wise decay, `layerDecaySettings`).
///
/// Sharded (ZeRO stage 1, `--shard-optimizer`), it updates only the ranges of the layout
/// in `shard` and keeps moments only for them, one after another; AdamW is element-wise,
/// so those elements get the bits of the whole update.
public final class AdamWOptimizer {
    /// A contiguous range of the flat layout with one weight-decay setting, and where its
    /// moments start (`offset` unless sharded).
    public struct Group: Sendable, Equatable {
        public let offset: Int
        public let count: Int
        public let decays: Bool
        public let momentOffset: Int
        /// Multiplies the step's learning rate (the official `lr_scale`); 1 in pretraining.
        public let learningRateScale: Double
        /// The group's own weight decay, or nil for the optimizer's `weightDecay` where `decays`.
        public let weightDecay: Float?

        public init(offset: Int, count: Int, decays: Bool, momentOffset: Int? = nil, learningRateScale: Double = 1,
                    weightDecay: Float? = nil) {
            self.offset = offset
            self.count = count
            self.decays = decays
            self.momentOffset = momentOffset ?? offset
            self.learningRateScale = learningRateScale
            self.weightDecay = weightDecay
        }

        /// The part of this group in `first..<end` (a shard's range), its moments at `momentOffset`.
        func restricted(to first: Int, _ end: Int, momentOffset: Int) -> Group {
            Group(offset: first, count: end - first, decays: decays, momentOffset: momentOffset,
                  learningRateScale: learningRateScale, weightDecay: weightDecay)
        }
    }

    /// Moments of the elements in `shard`, in layout order (the whole layout unsharded).
    public let firstMoment: FloatBuffer
    public let secondMoment: FloatBuffer
    public let groups: [Group]
    /// The ranges of the layout this optimizer updates: the whole layout, or a rank's shard.
    public let shard: [Range<Int>]
    /// Whether `shard` is less than the whole layout.
    public let isSharded: Bool
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float
    /// Steps taken so far (PyTorch's `state['step']`); the next update uses `step + 1`.
    public var step: Int = 0

    /// `shard`: the ranges of the layout this rank updates (nil: all of it).
    public convenience init(table: ParameterTable, shard: [Range<Int>]? = nil, beta1: Float = 0.9, beta2: Float = 0.95,
                            epsilon: Float = 1e-8, weightDecay: Float = 0.05) {
        self.init(wholeGroups: Self.groups(of: table), count: table.count, shard: shard, beta1: beta1, beta2: beta2,
                  epsilon: epsilon, weightDecay: weightDecay)
    }

    /// AdamW with one learning-rate scale and weight decay per tensor of `table` (in table
    /// order, as `layerDecaySettings` returns them). The `weightDecay` property does not
    /// apply to these groups (each carries its own); β2 defaults to torch's 0.999, as
    /// `main_finetune.py` builds AdamW without betas.
    public convenience init(table: ParameterTable, settings: [ParameterGroupSetting], shard: [Range<Int>]? = nil,
                            beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8) {
        precondition(settings.count == table.tensors.count, "one setting per tensor")
        var groups: [Group] = []
        for (tensor, setting) in zip(table.tensors, settings) where tensor.count > 0 {
            let decay = Float(setting.weightDecay)
            if let last = groups.last, last.learningRateScale == setting.learningRateScale, last.weightDecay == decay,
               last.offset + last.count == tensor.offset {
                groups[groups.count - 1] = Group(offset: last.offset, count: last.count + tensor.count, decays: decay != 0,
                                                 learningRateScale: last.learningRateScale, weightDecay: decay)
            } else {
                groups.append(Group(offset: tensor.offset, count: tensor.count, decays: decay != 0,
                                    learningRateScale: setting.learningRateScale, weightDecay: decay))
            }
        }
        self.init(wholeGroups: groups, count: table.count, shard: shard, beta1: beta1, beta2: beta2, epsilon: epsilon,
                  weightDecay: 0)
    }

    /// The groups of the whole layout of `count` elements, cut to `shard` when given.
    private init(wholeGroups whole: [Group], count: Int, shard: [Range<Int>]?, beta1: Float, beta2: Float,
                 epsilon: Float, weightDecay: Float) {
        if let shard {
            var groups: [Group] = [], momentOffset = 0
            for range in shard {
                for group in whole {
                    let first = max(range.lowerBound, group.offset), end = min(range.upperBound, group.offset + group.count)
                    guard end > first else { continue }
                    groups.append(group.restricted(to: first, end, momentOffset: momentOffset))
                    momentOffset += end - first
                }
            }
            self.groups = groups
            self.shard = shard
            isSharded = true
        } else {
            groups = whole
            self.shard = [0..<count]
            isSharded = false
        }
        let momentCount = self.shard.reduce(0) { $0 + $1.count }
        firstMoment = FloatBuffer(count: momentCount)
        secondMoment = FloatBuffer(count: momentCount)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }

    /// Contiguous runs of tensors sharing `decays`, in layout order.
    public static func groups(of table: ParameterTable) -> [Group] {
        var groups: [Group] = []
        for tensor in table.tensors.sorted(by: { $0.offset < $1.offset }) where tensor.count > 0 {
            if let last = groups.last, last.decays == tensor.decays, last.offset + last.count == tensor.offset {
                groups[groups.count - 1] = Group(offset: last.offset, count: last.count + tensor.count, decays: last.decays)
            } else {
                groups.append(Group(offset: tensor.offset, count: tensor.count, decays: tensor.decays))
            }
        }
        return groups
    }

    /// Whether this optimizer is unsharded and its groups cover the whole layout: every
    /// update then writes every parameter (frozen ones too, with learning rate 0).
    public var updatesWholeLayout: Bool {
        !isSharded && groups.reduce(0) { $0 + $1.count } == shard.reduce(0) { $0 + $1.count }
    }

    /// One AdamW step of `model`'s parameters from its gradients, the model told of it. In
    /// bf16, where this optimizer updates the whole layout, the step writes the model's bf16
    /// copy of the parameters as it writes them, and the next step reads it without a
    /// rounding pass; otherwise (fp32, or sharded, where the other ranks' ranges arrive by
    /// all-gather afterwards and the caller tells the model again) the copy is marked stale.
    public func update(model: MAEModel, learningRate: Float) {
        let rounded = updatesWholeLayout ? model.roundedParametersForUpdate() : nil
        update(parameters: model.parameters, gradients: model.gradients, learningRate: learningRate,
               roundedParameters: rounded)
        if rounded != nil { model.roundedParametersWritten() } else { model.parametersDidChange() }
    }

    /// One AdamW step of every parameter (of the shard) with `learningRate` (times each
    /// group's scale, in double precision as PyTorch multiplies `lr · lr_scale` in Python).
    /// `roundedParameters`, when given, receives each updated parameter rounded to bf16
    /// (same layout; `adamwUpdate`).
    public func update(parameters: FloatBuffer, gradients: FloatBuffer, learningRate: Float,
                       roundedParameters: UnsafeMutablePointer<UInt16>? = nil) {
        precondition(parameters.count == gradients.count && shard.allSatisfy { $0.upperBound <= parameters.count },
                     "parameters, gradients and moments must share one layout")
        step += 1
        for group in groups {
            adamwUpdate(parameters: parameters.pointer + group.offset, gradients: gradients.pointer + group.offset,
                        firstMoment: firstMoment.pointer + group.momentOffset,
                        secondMoment: secondMoment.pointer + group.momentOffset,
                        count: group.count,
                        learningRate: group.learningRateScale == 1
                            ? learningRate : Float(Double(learningRate) * group.learningRateScale),
                        beta1: beta1, beta2: beta2, epsilon: epsilon,
                        weightDecay: group.weightDecay ?? (group.decays ? weightDecay : 0), step: step,
                        roundedParameters: roundedParameters.map { $0 + group.offset })
        }
    }

    /// Copies the moments of the shard into `first` and `second`, laid out as the whole layout.
    public func copyMoments(intoWhole first: UnsafeMutablePointer<Float>, _ second: UnsafeMutablePointer<Float>) {
        var momentOffset = 0
        for range in shard {
            (first + range.lowerBound).update(from: firstMoment.pointer + momentOffset, count: range.count)
            (second + range.lowerBound).update(from: secondMoment.pointer + momentOffset, count: range.count)
            momentOffset += range.count
        }
    }

    /// Takes the moments of the shard from `first` and `second`, laid out as the whole layout.
    public func takeMoments(fromWhole first: UnsafePointer<Float>, _ second: UnsafePointer<Float>) {
        var momentOffset = 0
        for range in shard {
            (firstMoment.pointer + momentOffset).update(from: first + range.lowerBound, count: range.count)
            (secondMoment.pointer + momentOffset).update(from: second + range.lowerBound, count: range.count)
            momentOffset += range.count
        }
    }
}
