import Kernels

/// MAE's per-sample random masking (`random_masking` in the reference), driven by
/// noise that the caller draws (so that the mask is a pure function of the seed,
/// epoch and sample index, and so that tests can choose it).

/// Fills noise[patchCount] for one sample, uniform in [0, 1), from
/// CounterRandom(seed, .maskNoise, epoch, index: sampleIndex).
public func fillMaskingNoise(_ noise: UnsafeMutablePointer<Float>, patchCount: Int, seed: UInt64,
                             epoch: Int, sampleIndex: Int) {
    var random = CounterRandom(seed: seed, purpose: .maskNoise, epoch: epoch, index: sampleIndex)
    for index in 0..<patchCount { noise[index] = random.nextFloat() }
}

/// For one sample of noise[patchCount]:
/// - shuffle[patchCount] = argsort(noise), ascending (ties broken by index, a stable sort,
///   which equals torch.argsort whenever the values are distinct): the first
///   `keptCount` patches are kept, in that order;
/// - restore[patchCount] = argsort(shuffle): the position of each patch in `shuffle`;
/// - mask[patchCount] = 1 for removed patches, 0 for kept ones, in the original patch order.
public func randomMasking(shuffle: UnsafeMutablePointer<Int32>, restore: UnsafeMutablePointer<Int32>,
                          mask: UnsafeMutablePointer<Float>, noise: UnsafePointer<Float>,
                          patchCount: Int, keptCount: Int) {
    var order = UnsafeMutableBufferPointer(start: shuffle, count: patchCount)
    for index in 0..<patchCount { order[index] = Int32(index) }
    order.sort { left, right in
        let a = noise[Int(left)], b = noise[Int(right)]
        return a < b || (a == b && left < right)
    }
    for position in 0..<patchCount {
        let patch = Int(shuffle[position])
        restore[patch] = Int32(position)
        mask[patch] = position < keptCount ? 0 : 1
    }
}
