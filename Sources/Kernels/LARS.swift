/// One LARS step of one tensor, as the MAE linear probe's optimizer (facebookresearch/mae,
/// `util/lars.py`): for a tensor of two or more dimensions the gradient gets the weight
/// decay (d = g + wd · p) and is scaled by the trust ratio q = η · ‖p‖ / ‖d‖ (1 when either
/// norm is 0); 1-D tensors (biases, norms) take the plain gradient. Then heavy-ball momentum:
/// μ = momentum · μ + d, p −= lr · μ. Norms are summed in order in double precision.
public func larsUpdate(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>,
                       momentumBuffer: UnsafeMutablePointer<Float>, count: Int, adapts: Bool,
                       learningRate: Float, weightDecay: Float, momentum: Float, trustCoefficient: Float) {
    var scale: Float = 1
    var decay: Float = 0
    if adapts {
        decay = weightDecay
        var parameterSquares = 0.0, updateSquares = 0.0
        for index in 0..<count {
            let value = Double(parameters[index])
            let update = Double(gradients[index] + decay * parameters[index])
            parameterSquares += value * value
            updateSquares += update * update
        }
        let parameterNorm = parameterSquares.squareRoot(), updateNorm = updateSquares.squareRoot()
        if parameterNorm > 0 && updateNorm > 0 {
            scale = Float(Double(trustCoefficient) * parameterNorm / updateNorm)
        }
    }
    for index in 0..<count {
        let update = (gradients[index] + decay * parameters[index]) * scale
        momentumBuffer[index] = momentum * momentumBuffer[index] + update
        parameters[index] -= learningRate * momentumBuffer[index]
    }
}
