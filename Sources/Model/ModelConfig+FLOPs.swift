/// Analytic floating-point operation counts, for reporting achieved GFLOP/s.
extension ModelConfig {
    /// Multiply-adds counted as 2 FLOPs, of one image's forward pass: every matrix
    /// product (patch embedding of the visible patches, qkv, proj, fc1, fc2, the two
    /// attention products per head, decoder embedding and prediction). Element-wise
    /// work (norms, GELU, softmax) is left out, as is usual.
    public func forwardFlopsPerImage(maskRatio: Double) -> Double {
        let kept = Double(keptCount(maskRatio: maskRatio))
        let encoderTokens = kept + 1, decoderTokens = Double(patchCount) + 1
        let width = Double(encoderWidth), decoderWidth = Double(decoderWidth), ratio = Double(mlpRatio)
        func block(tokens: Double, width: Double) -> Double {
            2 * tokens * width * width * (3 + 1 + 2 * ratio) + 4 * tokens * tokens * width
        }
        return 2 * kept * Double(patchDimension) * width
            + Double(encoderDepth) * block(tokens: encoderTokens, width: width)
            + 2 * encoderTokens * width * decoderWidth
            + Double(decoderDepth) * block(tokens: decoderTokens, width: decoderWidth)
            + 2 * decoderTokens * decoderWidth * Double(patchDimension)
    }

    /// One image's training step (forward + backward ≈ 3 × forward: the backward
    /// takes one product for the input gradient and one for the weight gradient).
    public func trainingFlopsPerImage(maskRatio: Double) -> Double {
        3 * forwardFlopsPerImage(maskRatio: maskRatio)
    }
}
