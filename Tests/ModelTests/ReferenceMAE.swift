import Foundation
import Model

/// A plain double-precision MAE written step by step after the official
/// `models_mae.py` (patch embedding of ALL patches as a convolution, then masking by
/// argsort of the noise, cls token, blocks, norm, decoder with mask tokens gathered
/// by ids_restore, patchify target, masked loss). It shares no code with the model:
/// parameters are read by official name from a [name: values] dictionary.
struct ReferenceMAE {
    let config: ModelConfig
    var weights: [String: [Double]]

    init(config: ModelConfig, parameters: [Float], table: ParameterTable) {
        self.config = config
        weights = [:]
        for tensor in table.tensors {
            weights[tensor.name] = parameters[tensor.offset..<(tensor.offset + tensor.count)].map(Double.init)
        }
    }

    /// get_2d_sincos_pos_embed(width, grid, cls_token=True) as the official numpy code:
    /// grid = meshgrid(w, h); emb_h from grid[0], emb_w from grid[1]; concat.
    static func positionEmbedding(width: Int, grid: Int) -> [[Double]] {
        func oneDimensional(_ dimension: Int, _ positions: [Double]) -> [[Double]] {
            let omega = (0..<(dimension / 2)).map { 1 / pow(10_000, Double($0) / (Double(dimension) / 2)) }
            return positions.map { p in omega.map { sin(p * $0) } + omega.map { cos(p * $0) } }
        }
        // meshgrid(grid_w, grid_h) with default 'xy' indexing: grid[0][i][j] = w[j], grid[1][i][j] = h[i].
        var first: [Double] = [], second: [Double] = []
        for i in 0..<grid { for j in 0..<grid { first.append(Double(j)); second.append(Double(i)) } }
        let h = oneDimensional(width / 2, first), w = oneDimensional(width / 2, second)
        return [[Double](repeating: 0, count: width)] + zip(h, w).map { $0 + $1 }
    }

    func linear(_ x: [[Double]], _ name: String) -> [[Double]] {
        let w = weights[name + ".weight"]!, b = weights[name + ".bias"]!
        let inFeatures = x[0].count, outFeatures = b.count
        return x.map { row in
            (0..<outFeatures).map { o in
                var sum = b[o]
                for i in 0..<inFeatures { sum += row[i] * w[o * inFeatures + i] }
                return sum
            }
        }
    }

    func layerNorm(_ x: [[Double]], _ name: String) -> [[Double]] {
        let w = weights[name + ".weight"]!, b = weights[name + ".bias"]!
        return x.map { row in
            let mean = row.reduce(0, +) / Double(row.count)
            let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(row.count)
            return row.indices.map { (row[$0] - mean) / (variance + 1e-6).squareRoot() * w[$0] + b[$0] }
        }
    }

    func block(_ x: [[Double]], _ prefix: String, heads: Int) -> [[Double]] {
        let width = x[0].count, hd = width / heads, tokens = x.count
        let qkv = linear(layerNorm(x, prefix + "norm1"), prefix + "attn.qkv")
        var attended = [[Double]](repeating: [Double](repeating: 0, count: width), count: tokens)
        for h in 0..<heads {
            for i in 0..<tokens {
                var scores = (0..<tokens).map { j in
                    (0..<hd).reduce(0.0) { $0 + qkv[i][h * hd + $1] * qkv[j][width + h * hd + $1] } / Double(hd).squareRoot()
                }
                let maximum = scores.max()!
                scores = scores.map { exp($0 - maximum) }
                let total = scores.reduce(0, +)
                for e in 0..<hd {
                    attended[i][h * hd + e] = (0..<tokens).reduce(0.0) { $0 + scores[$1] / total * qkv[$1][2 * width + h * hd + e] }
                }
            }
        }
        let projected = linear(attended, prefix + "attn.proj")
        let middle = zip(x, projected).map { zip($0, $1).map(+) }
        let hidden = linear(layerNorm(middle, prefix + "norm2"), prefix + "mlp.fc1")
            .map { $0.map { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) } }
        let output = linear(hidden, prefix + "mlp.fc2")
        return zip(middle, output).map { zip($0, $1).map(+) }
    }

    /// Loss, prediction [N][L][P] and mask [N][L] for images [N, 3, S, S] and noise [N, L].
    func run(images: [Double], noise: [Float], batch: Int, maskRatio: Double, normPix: Bool)
        -> (loss: Double, prediction: [[[Double]]], mask: [[Double]]) {
        let c = config, p = c.patchSize, grid = c.gridSize, size = c.imageSize, L = c.patchCount
        let width = c.encoderWidth
        let keep = Int(Double(L) * (1 - maskRatio))
        let position = Self.positionEmbedding(width: width, grid: grid)
        let decoderPosition = Self.positionEmbedding(width: c.decoderWidth, grid: grid)
        func pixel(_ n: Int, _ channel: Int, _ y: Int, _ x: Int) -> Double {
            images[((n * c.channels + channel) * size + y) * size + x]
        }
        let convWeight = weights["patch_embed.proj.weight"]!, convBias = weights["patch_embed.proj.bias"]!
        var totalLoss = 0.0, maskTotal = 0.0
        var predictions: [[[Double]]] = [], masks: [[Double]] = []
        for n in 0..<batch {
            // Conv2d(3, D, p, stride p) on every patch, then + pos_embed[1:].
            var tokens: [[Double]] = (0..<L).map { l in
                let top = (l / grid) * p, left = (l % grid) * p
                return (0..<width).map { d in
                    var sum = convBias[d]
                    for channel in 0..<c.channels { for i in 0..<p { for j in 0..<p {
                        sum += convWeight[((d * c.channels + channel) * p + i) * p + j] * pixel(n, channel, top + i, left + j)
                    } } }
                    return sum + position[1 + l][d]
                }
            }
            // random_masking
            let sampleNoise = (0..<L).map { noise[n * L + $0] }
            let shuffle = (0..<L).sorted { sampleNoise[$0] < sampleNoise[$1] }
            var restore = [Int](repeating: 0, count: L)
            for (rank, patch) in shuffle.enumerated() { restore[patch] = rank }
            let mask = (0..<L).map { restore[$0] < keep ? 0.0 : 1.0 }
            tokens = shuffle.prefix(keep).map { tokens[$0] }
            let cls = zip(weights["cls_token"]!, position[0]).map(+)
            var x = [cls] + tokens
            for blockIndex in 0..<c.encoderDepth { x = block(x, "blocks.\(blockIndex).", heads: c.encoderHeads) }
            x = layerNorm(x, "norm")
            // Decoder.
            let embedded = linear(x, "decoder_embed")
            let withMaskTokens = Array(embedded.dropFirst()) + [[Double]](repeating: weights["mask_token"]!, count: L - keep)
            let unshuffled = (0..<L).map { withMaskTokens[restore[$0]] }
            var y = [embedded[0]] + unshuffled
            y = y.indices.map { zip(y[$0], decoderPosition[$0]).map(+) }
            for blockIndex in 0..<c.decoderDepth { y = block(y, "decoder_blocks.\(blockIndex).", heads: c.decoderHeads) }
            let prediction = Array(linear(layerNorm(y, "decoder_norm"), "decoder_pred").dropFirst())
            // patchify: (N, 3, h, p, w, p) → (N, h, w, p, p, 3).
            for l in 0..<L {
                let top = (l / grid) * p, left = (l % grid) * p
                var target: [Double] = []
                for i in 0..<p { for j in 0..<p { for channel in 0..<c.channels { target.append(pixel(n, channel, top + i, left + j)) } } }
                if normPix {
                    let mean = target.reduce(0, +) / Double(target.count)
                    let variance = target.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(target.count - 1)
                    target = target.map { ($0 - mean) / (variance + 1e-6).squareRoot() }
                }
                let mse = zip(prediction[l], target).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / Double(target.count)
                totalLoss += mse * mask[l]
                maskTotal += mask[l]
            }
            predictions.append(prediction)
            masks.append(mask)
        }
        return (totalLoss / maskTotal, predictions, masks)
    }
}
