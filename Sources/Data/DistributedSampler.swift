import Kernels

/// Splits a dataset among the ranks of a data-parallel job, as PyTorch's
/// `DistributedSampler(shuffle=True, drop_last=False)` does, with our permutation:
///
/// 1. each epoch, a permutation of 0..<count by Fisher–Yates (from the last position
///    down, swap with a uniform earlier-or-same position) driven by
///    `CounterRandom(seed, .permutation, epoch: e, index: 0)`;
/// 2. padded to `samplesPerRank × worldSize` by repeating the permutation from its start
///    (as often as needed when the dataset is smaller than the world);
/// 3. rank r takes positions r, r + W, r + 2W, ...
///
/// Every rank computes the same permutation, so no communication is needed, and the
/// result depends only on (seed, epoch, count, world size, rank).
public struct DistributedSampler: Sendable {
    public let datasetCount: Int
    public let worldSize: Int
    public let rank: Int
    public let seed: UInt64
    /// False keeps the dataset order (PyTorch's `shuffle=False`, for evaluation).
    public let shuffle: Bool

    public init(datasetCount: Int, worldSize: Int, rank: Int, seed: UInt64, shuffle: Bool = true) {
        precondition(datasetCount > 0, "DistributedSampler needs a non-empty dataset")
        precondition(worldSize > 0 && rank >= 0 && rank < worldSize, "rank \(rank) is outside world size \(worldSize)")
        self.datasetCount = datasetCount
        self.worldSize = worldSize
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
    }

    /// ceil(count / worldSize): every rank gets this many samples per epoch.
    public var samplesPerRank: Int { (datasetCount + worldSize - 1) / worldSize }

    /// The padded length, samplesPerRank × worldSize.
    public var totalSize: Int { samplesPerRank * worldSize }

    /// The permutation of the whole dataset for `epoch` (before padding and sharding);
    /// the identity when `shuffle` is false.
    public func permutation(epoch: Int) -> [Int] {
        var order = Array(0..<datasetCount)
        guard shuffle else { return order }
        var random = CounterRandom(seed: seed, purpose: .permutation, epoch: epoch, index: 0)
        var position = datasetCount - 1
        while position > 0 {
            let other = random.nextInt(below: position + 1)
            order.swapAt(position, other)
            position -= 1
        }
        return order
    }

    /// This rank's dataset indices for `epoch`, in order (length `samplesPerRank`).
    public func indices(epoch: Int) -> [Int] {
        let order = permutation(epoch: epoch)
        var result: [Int] = []
        result.reserveCapacity(samplesPerRank)
        var position = rank
        while position < totalSize {
            result.append(order[position % datasetCount])   // padding wraps to the start
            position += worldSize
        }
        return result
    }
}
