/// Resizing a position embedding to another patch grid, as the official
/// `util/pos_embed.interpolate_pos_embed` does when fine-tuning at another image size:
/// the extra tokens (the class token) are kept, the grid part is resized with
/// `torch.nn.functional.interpolate(mode='bicubic', align_corners=False)`.

/// embedding[(extraTokens + oldGrid²), width] (row r·grid + c after the extra tokens) →
/// [(extraTokens + newGrid²), width]. Computed in double precision, rounded to Float.
///
/// PyTorch's bicubic: source coordinate (o + 0.5) · old/new − 0.5, Keys' cubic kernel
/// with A = −0.75 over the 4 × 4 neighbours, indices clamped to the border.
public func interpolatePositionEmbedding(_ embedding: [Float], width: Int, extraTokens: Int,
                                         from oldGrid: Int, to newGrid: Int) -> [Float] {
    precondition(embedding.count == (extraTokens + oldGrid * oldGrid) * width, "embedding size does not match its grid")
    if oldGrid == newGrid { return embedding }
    var result = [Float](repeating: 0, count: (extraTokens + newGrid * newGrid) * width)
    for index in 0..<(extraTokens * width) { result[index] = embedding[index] }
    let scale = Double(oldGrid) / Double(newGrid)
    /// The four source indices and their weights for output position `output`.
    func taps(_ output: Int) -> [(index: Int, weight: Double)] {
        let real = scale * (Double(output) + 0.5) - 0.5
        let floorReal = real.rounded(.down)
        let t = real - floorReal
        let weights = bicubicWeights(t)
        return (0..<4).map { k in (min(max(Int(floorReal) - 1 + k, 0), oldGrid - 1), weights[k]) }
    }
    let rowTaps = (0..<newGrid).map(taps)  // the same for columns: the grid is square
    for row in 0..<newGrid {
        for column in 0..<newGrid {
            let destination = (extraTokens + row * newGrid + column) * width
            for channel in 0..<width {
                var sum = 0.0
                for (sourceRow, rowWeight) in rowTaps[row] {
                    var rowSum = 0.0
                    for (sourceColumn, columnWeight) in rowTaps[column] {
                        rowSum += columnWeight
                            * Double(embedding[(extraTokens + sourceRow * oldGrid + sourceColumn) * width + channel])
                    }
                    sum += rowWeight * rowSum
                }
                result[destination + channel] = Float(sum)
            }
        }
    }
    return result
}

/// Keys' cubic convolution weights (A = −0.75, PyTorch's) of the taps at −1, 0, 1, 2
/// for a fractional position t in [0, 1).
private func bicubicWeights(_ t: Double) -> [Double] {
    let a = -0.75
    func near(_ x: Double) -> Double { ((a + 2) * x - (a + 3)) * x * x + 1 }          // |x| ≤ 1
    func far(_ x: Double) -> Double { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }     // 1 < |x| < 2
    return [far(t + 1), near(t), near(1 - t), far(2 - t)]
}
