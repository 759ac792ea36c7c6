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
///
/// After k batches of B on every rank, the ranks together have taken exactly the positions
/// 0..<k·B·W of the permutation, whatever W is. So a run resumed with another world size
/// W' inside an epoch splits the rest of it from there (`indices(epoch:from:)`): rank r
/// takes positions start + r, start + r + W', ..., padded as above to a multiple of W'.
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

    /// Every rank's share of the epoch's positions from `start` on: ceil((count - start) / worldSize).
    public func samplesPerRank(from start: Int) -> Int {
        precondition(start >= 0 && start < datasetCount, "start \(start) is outside the epoch's 0..<\(datasetCount) positions")
        return Self.samplesPerRank(datasetCount: datasetCount, worldSize: worldSize, from: start)
    }

    /// The same share for any split, without a sampler (a checkpoint's world size, say).
    public static func samplesPerRank(datasetCount: Int, worldSize: Int, from start: Int) -> Int {
        (datasetCount - start + worldSize - 1) / worldSize
    }

    /// This rank's dataset indices for `epoch`, in order: the positions start + rank,
    /// start + rank + W, ... of the permutation, padded to `samplesPerRank(from: start)`
    /// each by wrapping to its start. `start` is 0 for a whole epoch (then the length is
    /// `samplesPerRank`), or the positions other ranks took before this world size split the
    /// epoch (a run resumed with another world size).
    public func indices(epoch: Int, from start: Int = 0) -> [Int] {
        let order = permutation(epoch: epoch)
        let count = samplesPerRank(from: start)
        var result: [Int] = []
        result.reserveCapacity(count)
        var position = start + rank
        let end = start + count * worldSize
        while position < end {
            result.append(order[position % datasetCount])   // padding wraps to the start
            position += worldSize
        }
        return result
    }
}
