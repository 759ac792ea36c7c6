import Kernels
import Model

/// AdamW over the flat parameter layout, as the MAE recipe: one first and one second
/// moment buffer laid out like the parameters, weight decay only for tensors whose
/// `TensorInfo.decays` is true (not biases, norms or other 1-D tensors).
///
/// Tensors are grouped into contiguous runs that share the decay setting, so the update
/// is a handful of `adamwUpdate` calls over long ranges. Fine-tuning gives each tensor
/// its own learning-rate scale and weight decay (layer-wise decay, `layerDecaySettings`).
public final class AdamWOptimizer {
    /// A contiguous range of the flat layout with one weight-decay setting.
    public struct Group: Sendable, Equatable {
        public let offset: Int
        public let count: Int
        public let decays: Bool
        /// Multiplies the step's learning rate (the official `lr_scale`); 1 in pretraining.
        public let learningRateScale: Double
        /// The group's own weight decay, or nil for the optimizer's `weightDecay` where `decays`.
        public let weightDecay: Float?

        public init(offset: Int, count: Int, decays: Bool, learningRateScale: Double = 1, weightDecay: Float? = nil) {
            self.offset = offset
            self.count = count
            self.decays = decays
            self.learningRateScale = learningRateScale
            self.weightDecay = weightDecay
        }
    }

    public let firstMoment: FloatBuffer
    public let secondMoment: FloatBuffer
    public let groups: [Group]
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float
    /// Steps taken so far (PyTorch's `state['step']`); the next update uses `step + 1`.
    public var step: Int = 0

    public init(table: ParameterTable, beta1: Float = 0.9, beta2: Float = 0.95, epsilon: Float = 1e-8,
                weightDecay: Float = 0.05) {
        firstMoment = FloatBuffer(count: table.count)
        secondMoment = FloatBuffer(count: table.count)
        groups = Self.groups(of: table)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }

    /// AdamW with one learning-rate scale and weight decay per tensor of `table` (in table
    /// order, as `layerDecaySettings` returns them). The `weightDecay` property does not
    /// apply to these groups (each carries its own); β2 defaults to torch's 0.999, as
    /// `main_finetune.py` builds AdamW without betas.
    public init(table: ParameterTable, settings: [ParameterGroupSetting], beta1: Float = 0.9, beta2: Float = 0.999,
                epsilon: Float = 1e-8) {
        precondition(settings.count == table.tensors.count, "one setting per tensor")
        firstMoment = FloatBuffer(count: table.count)
        secondMoment = FloatBuffer(count: table.count)
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
        self.groups = groups
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = 0
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

    /// One AdamW step of every parameter with `learningRate` (times each group's scale,
    /// in double precision as PyTorch multiplies `lr · lr_scale` in Python).
    public func update(parameters: FloatBuffer, gradients: FloatBuffer, learningRate: Float) {
        precondition(parameters.count == firstMoment.count && gradients.count == firstMoment.count,
                     "parameters, gradients and moments must share one layout")
        step += 1
        for group in groups {
            adamwUpdate(parameters: parameters.pointer + group.offset, gradients: gradients.pointer + group.offset,
                        firstMoment: firstMoment.pointer + group.offset, secondMoment: secondMoment.pointer + group.offset,
                        count: group.count,
                        learningRate: group.learningRateScale == 1
                            ? learningRate : Float(Double(learningRate) * group.learningRateScale),
                        beta1: beta1, beta2: beta2, epsilon: epsilon,
                        weightDecay: group.weightDecay ?? (group.decays ? weightDecay : 0), step: step)
        }
    }
}
