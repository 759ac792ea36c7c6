import Foundation

/// Plain double-precision definitions of each layer, written from the PyTorch
/// documentation, as the reference the kernels and their backward passes are checked against.
enum Reference {
    /// y[rows, out] = x[rows, in] · w[out, in]ᵀ + b
    static func linear(_ x: [Double], _ w: [Double], _ b: [Double], rows: Int, inFeatures: Int, outFeatures: Int) -> [Double] {
        var y = [Double](repeating: 0, count: rows * outFeatures)
        for r in 0..<rows {
            for o in 0..<outFeatures {
                var sum = b[o]
                for i in 0..<inFeatures { sum += x[r * inFeatures + i] * w[o * inFeatures + i] }
                y[r * outFeatures + o] = sum
            }
        }
        return y
    }

    static func layerNorm(_ x: [Double], _ w: [Double], _ b: [Double], rows: Int, width: Int, epsilon: Double = 1e-6) -> [Double] {
        var y = [Double](repeating: 0, count: rows * width)
        for r in 0..<rows {
            let row = Array(x[(r * width)..<((r + 1) * width)])
            let mean = row.reduce(0, +) / Double(width)
            let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(width)
            for c in 0..<width { y[r * width + c] = (row[c] - mean) / (variance + epsilon).squareRoot() * w[c] + b[c] }
        }
        return y
    }

    static func gelu(_ x: Double) -> Double { 0.5 * x * (1 + erf(x / 2.0.squareRoot())) }

    /// qkv[batch, tokens, 3·H·hd] → output[batch, tokens, H·hd], timm's attention.
    static func attention(_ qkv: [Double], batch: Int, tokens: Int, heads: Int, headDimension: Int) -> [Double] {
        let width = heads * headDimension
        var output = [Double](repeating: 0, count: batch * tokens * width)
        let scale = 1 / Double(headDimension).squareRoot()
        var scores = [Double](repeating: 0, count: tokens)
        for n in 0..<batch {
            for h in 0..<heads {
                for i in 0..<tokens {
                    let q = (n * tokens + i) * 3 * width + h * headDimension
                    for j in 0..<tokens {
                        let k = (n * tokens + j) * 3 * width + width + h * headDimension
                        var sum = 0.0
                        for e in 0..<headDimension { sum += qkv[q + e] * qkv[k + e] }
                        scores[j] = sum * scale
                    }
                    let maximum = scores.max()!
                    var total = 0.0
                    for j in 0..<tokens { scores[j] = exp(scores[j] - maximum); total += scores[j] }
                    for j in 0..<tokens {
                        let v = (n * tokens + j) * 3 * width + 2 * width + h * headDimension
                        for e in 0..<headDimension {
                            output[(n * tokens + i) * width + h * headDimension + e] += scores[j] / total * qkv[v + e]
                        }
                    }
                }
            }
        }
        return output
    }
}
