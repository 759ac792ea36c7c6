import Kernels
import Model

/// AdamW over the flat parameter layout, as the MAE recipe: one first and one second
/// moment buffer laid out like the parameters, weight decay only for tensors whose
/// `TensorInfo.decays` is true (not biases, norms or other 1-D tensors).
///
/// Tensors are grouped into contiguous runs that share the decay setting, so the update
/// is a handful of `adamwUpdate` calls over long ranges.
public final class AdamWOptimizer {
    /// A contiguous range of the flat layout with one weight-decay setting.
    public struct Group: Sendable, Equatable {
        public let offset: Int
        public let count: Int
        public let decays: Bool
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

    /// One AdamW step of every parameter with `learningRate`.
    public func update(parameters: FloatBuffer, gradients: FloatBuffer, learningRate: Float) {
        precondition(parameters.count == firstMoment.count && gradients.count == firstMoment.count,
                     "parameters, gradients and moments must share one layout")
        step += 1
        for group in groups {
            adamwUpdate(parameters: parameters.pointer + group.offset, gradients: gradients.pointer + group.offset,
                        firstMoment: firstMoment.pointer + group.offset, secondMoment: secondMoment.pointer + group.offset,
                        count: group.count, learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon,
                        weightDecay: group.decays ? weightDecay : 0, step: step)
        }
    }
}
