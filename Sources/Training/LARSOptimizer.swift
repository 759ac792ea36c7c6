import Kernels

/// LARS as the official linear probe uses it (`util/lars.py`, `LARS(head.parameters(), lr,
/// weight_decay)`): momentum 0.9, trust coefficient 0.001, and neither weight decay nor the
/// trust ratio for 1-D tensors (biases). One momentum buffer laid out like the parameters.
public final class LARSOptimizer {
    /// A tensor of the flat layout: where it is and whether it gets the trust ratio (2-D and up).
    public struct Tensor: Sendable, Equatable {
        public let offset: Int
        public let count: Int
        public let adapts: Bool

        public init(offset: Int, count: Int, adapts: Bool) {
            self.offset = offset
            self.count = count
            self.adapts = adapts
        }
    }

    public let tensors: [Tensor]
    /// μ of every tensor (`param_state['mu']`), the parameters' layout.
    public let momentumBuffer: FloatBuffer
    public var weightDecay: Float
    public var momentum: Float
    public var trustCoefficient: Float
    /// Steps taken (LARS keeps no count; recorded for the checkpoint and the log).
    public var step = 0

    public init(tensors: [Tensor], weightDecay: Float = 0, momentum: Float = 0.9, trustCoefficient: Float = 0.001) {
        self.tensors = tensors
        momentumBuffer = FloatBuffer(count: tensors.map { $0.offset + $0.count }.max() ?? 0)
        self.weightDecay = weightDecay
        self.momentum = momentum
        self.trustCoefficient = trustCoefficient
    }

    /// One step of every tensor with `learningRate`.
    public func update(parameters: FloatBuffer, gradients: FloatBuffer, learningRate: Float) {
        precondition(parameters.count == momentumBuffer.count && gradients.count == momentumBuffer.count,
                     "parameters, gradients and momentum must share one layout")
        step += 1
        for tensor in tensors {
            larsUpdate(parameters: parameters.pointer + tensor.offset, gradients: gradients.pointer + tensor.offset,
                       momentumBuffer: momentumBuffer.pointer + tensor.offset, count: tensor.count, adapts: tensor.adapts,
                       learningRate: learningRate, weightDecay: weightDecay, momentum: momentum,
                       trustCoefficient: trustCoefficient)
        }
    }
}
