import Kernels

/// Stochastic depth of fine-tuning (timm's `DropPath`, as the official `models_vit.py`
/// uses it): in block i each residual branch of a sample is dropped with probability
/// rate_i = linspace(0, dropPath, depth)[i], and kept branches are scaled by 1 / (1 − rate_i).

/// Which random numbers a training step's drop path uses: each sample draws from
/// CounterRandom(seed, .dropPath, epoch, index: its dataset index), two numbers per block
/// (attention branch, then MLP branch) in block order. The draws are a pure function of
/// the sample's key, so a resumed run or another world size drops the same branches.
public struct DropPathKey: Sendable, Equatable {
    public let seed: UInt64
    public let epoch: Int
    /// The dataset index of each sample of the batch, in batch order.
    public let sampleIndices: [Int]

    public init(seed: UInt64, epoch: Int, sampleIndices: [Int]) {
        self.seed = seed
        self.epoch = epoch
        self.sampleIndices = sampleIndices
    }
}

/// timm's rule `[x.item() for x in torch.linspace(0, dropPath, depth)]`: rates rising
/// linearly from 0 at the first block to `dropPath` at the last, each rounded to Float
/// as torch's float32 linspace holds them.
public func dropPathRates(dropPath: Double, depth: Int) -> [Double] {
    guard depth > 1 else { return [Double](repeating: 0, count: max(depth, 0)) }
    return (0..<depth).map { Double(Float(dropPath * Double($0) / Double(depth - 1))) }
}

/// Fills masks[block][branch][sample] ([depth, 2, batch]) with 1 (kept) or 0 (dropped):
/// a branch is kept when ⌊(1 − rate) + u⌋ = 1 for its uniform draw u, as timm binarises
/// `keep_prob + torch.rand`. A block of rate 0 keeps every branch (timm's `nn.Identity`);
/// its draws are taken all the same, so every block's numbers stay at fixed positions.
func fillDropPathMasks(_ masks: UnsafeMutablePointer<Float>, rates: [Double], key: DropPathKey) {
    let batch = key.sampleIndices.count
    for (sample, index) in key.sampleIndices.enumerated() {
        var random = CounterRandom(seed: key.seed, purpose: .dropPath, epoch: key.epoch, index: index)
        for (block, rate) in rates.enumerated() {
            let keep = Float(1 - rate)
            for branch in 0..<2 {
                let draw = random.nextFloat()
                masks[(block * 2 + branch) * batch + sample] = rate == 0 || (keep + draw).rounded(.down) >= 1 ? 1 : 0
            }
        }
    }
}
