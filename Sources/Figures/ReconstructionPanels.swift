import Kernels
import Model

/// The four panels of the official demo (facebookresearch/mae `demo/mae_visualize.ipynb`)
/// for one image, each planar [3, S, S] in the normalised space the model sees.
public struct ReconstructionPanels {
    /// The image as the model saw it.
    public var original: [Float]
    /// original × (1 − mask): removed patches become 0, the mean colour (grey) once shown.
    public var masked: [Float]
    /// The model's prediction of every patch, unpatchified.
    public var reconstruction: [Float]
    /// original × (1 − mask) + reconstruction × mask: the visible patches pasted back.
    public var pasted: [Float]

    /// The column labels of the four panels, with the share of patches removed.
    public static func labels(maskRatio: Double) -> [String] {
        ["original", "masked \(percent(maskRatio))", "reconstruction", "reconstruction + visible"]
    }

    /// The panels of sample `sample` of a batch after `MAEModel.forward`.
    /// - Parameters:
    ///   - images: the batch the model saw, [N, 3, S, S].
    ///   - prediction: `MAEModel.prediction`, [N, L, p·p·3] in patchify order.
    ///   - mask: `MAEModel.mask`, [N, L], 1 = removed.
    ///   - normPixLoss: whether the model predicts per-patch normalised pixels; if so the
    ///     prediction is un-normalised with each patch's own mean and variance in the
    ///     original (unbiased, + 1e-6, as the loss normalised it), which is how the
    ///     official demo shows such a model.
    public init(images: UnsafePointer<Float>, prediction: UnsafePointer<Float>, mask: UnsafePointer<Float>,
                sample: Int, config: ModelConfig, normPixLoss: Bool) {
        let side = config.imageSize, patchCount = config.patchCount, width = config.patchDimension
        let imageFloats = config.channels * side * side
        let image = images + sample * imageFloats
        let sampleMask = mask + sample * patchCount

        let target = FloatBuffer(count: patchCount * width)
        patchify(output: target.pointer, images: image, batch: 1, channels: config.channels, imageSize: side,
                 patchSize: config.patchSize)
        let predicted = FloatBuffer(count: patchCount * width)
        predicted.pointer.update(from: prediction + sample * patchCount * width, count: patchCount * width)
        if normPixLoss {
            for patch in 0..<patchCount {
                let t = target.pointer + patch * width, p = predicted.pointer + patch * width
                var sum = 0.0
                for index in 0..<width { sum += Double(t[index]) }
                let mean = sum / Double(width)
                var squares = 0.0
                for index in 0..<width { squares += (Double(t[index]) - mean) * (Double(t[index]) - mean) }
                let standardDeviation = (squares / Double(max(width - 1, 1)) + 1e-6).squareRoot()
                for index in 0..<width { p[index] = Float(Double(p[index]) * standardDeviation + mean) }
            }
        }
        // Panels are assembled in patch space, where the mask applies per row.
        let maskedPatches = FloatBuffer(count: patchCount * width), pastedPatches = FloatBuffer(count: patchCount * width)
        for patch in 0..<patchCount {
            let removed = sampleMask[patch] > 0.5
            for index in 0..<width {
                let offset = patch * width + index
                maskedPatches[offset] = removed ? 0 : target[offset]
                pastedPatches[offset] = removed ? predicted[offset] : target[offset]
            }
        }
        func unpatchified(_ patches: FloatBuffer) -> [Float] {
            var pixels = [Float](repeating: 0, count: imageFloats)
            pixels.withUnsafeMutableBufferPointer { output in
                unpatchify(images: output.baseAddress!, patches: patches.pointer, batch: 1, channels: config.channels,
                           imageSize: side, patchSize: config.patchSize)
            }
            return pixels
        }
        original = Array(UnsafeBufferPointer(start: image, count: imageFloats))
        masked = unpatchified(maskedPatches)
        reconstruction = unpatchified(predicted)
        pasted = unpatchified(pastedPatches)
    }

    /// The four panels in column order.
    public var all: [[Float]] { [original, masked, reconstruction, pasted] }
}

/// "75%" for 0.75 ("87.5%" when needed).
public func percent(_ ratio: Double) -> String {
    let value = ratio * 100
    let rounded = value.rounded()
    return abs(value - rounded) < 1e-9 ? "\(Int(rounded))%" : "\((value * 10).rounded() / 10)%"
}
