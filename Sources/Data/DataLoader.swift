import Foundation
import Kernels

/// One batch of augmented images for this rank.
public struct Batch {
    /// [N, 3, S, S], normalised (N is the batch size, or less for the last batch without dropLast).
    public let images: FloatBuffer
    /// The dataset index of each image (after replacing skipped files).
    public let sampleIndices: [Int]
    /// The class label of each image.
    public let labels: [Int]
    /// The batch's position in the epoch, 0..<batchesPerEpoch (counted from the split's start
    /// after a resume with another world size, see `DataLoader.startEpoch`).
    public let batchIndex: Int
    /// The position in the epoch's permutation where this micro-batch of all ranks begins:
    /// splitStart + batchIndex × batch × world size. The same on every rank, and distinct for
    /// every micro-batch of the epoch, also across a resume with another world size.
    public let epochPosition: Int
    /// How long `next()` waited for this batch (0 when it was ready).
    public let dataWaitSeconds: Double
}

/// Loads this rank's batches: files are read, decoded and augmented on `threads`
/// background threads, up to `prefetchBatches` batches ahead of the consumer.
///
/// The batches of an epoch are the sampler's indices for this rank cut into
/// `batchesPerEpoch = samplesPerRank / batchSize` batches (drop_last). Sample `i` of
/// epoch `e` is augmented with `CounterRandom(seed, .crop/.flip/.randAugment/.randomErasing, epoch: e, index: i)`,
/// so batches are identical whatever the thread count, timing, or resume point.
///
/// A file that cannot be read or decoded is reported once on standard error, counted in
/// `skippedFiles`, and replaced by the next position of this rank's list for the epoch
/// (wrapping), the same choice every time. `next()` throws only when no file of the
/// shard can be decoded.
public final class DataLoader {
    public let dataset: ImageFolderDataset
    public let sampler: DistributedSampler
    public let batchSize: Int
    public let imageSize: Int
    public let seed: UInt64
    public let threads: Int
    public let prefetchBatches: Int
    /// Whether the last, smaller batch of an epoch is dropped (always for training).
    public let dropLast: Bool
    private let pipeline: Pipeline

    /// Starts `threads` worker threads (at least 1); they idle until `startEpoch`.
    /// `transform` is `.pretraining` for pre-training, `.finetuning(settings)` or `.linearProbe`
    /// for those tasks (Mixup/CutMix is per batch: `mixBatch` on the batch `next()` returns);
    /// for evaluation pass `.evaluation`, a sampler with `shuffle: false`, and `dropLast: false`
    /// (the last batch is then smaller).
    public init(dataset: ImageFolderDataset, sampler: DistributedSampler, batchSize: Int, imageSize: Int,
                seed: UInt64, threads: Int, prefetchBatches: Int = 4,
                transform: ImageTransform = .pretraining, dropLast: Bool = true) {
        precondition(batchSize > 0, "batchSize must be positive")
        precondition(sampler.datasetCount == dataset.count, "the sampler was made for \(sampler.datasetCount) samples, the dataset has \(dataset.count)")
        self.dataset = dataset
        self.sampler = sampler
        self.batchSize = batchSize
        self.imageSize = imageSize
        self.seed = seed
        self.threads = max(1, threads)
        self.prefetchBatches = max(1, prefetchBatches)
        self.dropLast = dropLast
        pipeline = Pipeline(dataset: dataset, batchSize: batchSize, worldSize: sampler.worldSize,
                            augmentation: Augmentation(imageSize: imageSize, transform: transform), seed: seed,
                            prefetchBatches: self.prefetchBatches, dropLast: dropLast)
        pipeline.startWorkers(self.threads)
    }

    deinit { pipeline.stop() }

    /// Batches per epoch for this rank: samplesPerRank / batchSize with `dropLast`
    /// (training), rounded up without.
    public var batchesPerEpoch: Int { pipeline.batches(samples: sampler.samplesPerRank) }

    /// Batches for this rank of an epoch split from position `start` on
    /// (`DistributedSampler.indices(epoch:from:)`); `batchesPerEpoch` for 0.
    public func batchesPerEpoch(splitFrom start: Int) -> Int {
        pipeline.batches(samples: sampler.samplesPerRank(from: start))
    }

    /// Begins `epoch` at batch `fromBatch` (0 for a new epoch; k to resume exactly where
    /// a run stopped after k batches). `splitFrom` is 0, or the positions of the epoch's
    /// permutation taken before a resume with another world size; batches then count from
    /// there. Work prefetched for another epoch is discarded.
    public func startEpoch(_ epoch: Int, splitFrom start: Int = 0, fromBatch: Int = 0) {
        precondition(epoch >= 0, "epoch must not be negative")
        let batches = batchesPerEpoch(splitFrom: start)
        precondition(fromBatch >= 0 && fromBatch <= batches, "fromBatch \(fromBatch) is outside 0...\(batches)")
        pipeline.startEpoch(epoch, order: sampler.indices(epoch: epoch, from: start), splitStart: start, fromBatch: fromBatch)
    }

    /// The next batch of the epoch, waiting for it if needed; nil after the last one.
    /// Throws when `startEpoch` was not called, the loader was stopped, or no image of
    /// this rank's shard can be decoded.
    public func next() throws -> Batch? { try pipeline.next() }

    /// Distinct files skipped so far because they could not be read or decoded.
    public var skippedFiles: Int { pipeline.skippedFiles }

    /// Stops and joins the worker threads; `next()` throws afterwards. Idempotent.
    public func stop() { pipeline.stop() }
}

/// The state the workers share with the consumer, apart from `DataLoader` so that the
/// threads do not keep the loader alive (its deinit stops them).
private final class Pipeline: @unchecked Sendable {
    let dataset: ImageFolderDataset
    let batchSize: Int
    let worldSize: Int
    let augmentation: Augmentation
    let seed: UInt64
    let prefetchBatches: Int
    let dropLast: Bool

    /// Guards everything below; workers and consumer wait on it.
    private let condition = NSCondition()
    private var generation = 0
    private var epoch = -1
    private var order: [Int] = []
    private var splitStart = 0
    /// The current epoch's batches, and the samples they hold: all of the rank's samples,
    /// or only full batches.
    private var batchesPerEpoch = 0
    private var samplesPerEpoch = 0
    private var consumerBatch = 0
    private var nextUnit = 0
    private var batches: [Int: PendingBatch] = [:]
    private var badFiles: Set<Int> = []
    private var failure: DataError?
    private var stopping = false
    private var runningWorkers = 0

    init(dataset: ImageFolderDataset, batchSize: Int, worldSize: Int, augmentation: Augmentation,
         seed: UInt64, prefetchBatches: Int, dropLast: Bool) {
        self.dataset = dataset
        self.batchSize = batchSize
        self.worldSize = worldSize
        self.augmentation = augmentation
        self.seed = seed
        self.prefetchBatches = prefetchBatches
        self.dropLast = dropLast
    }

    /// Batches of a rank's `samples`: only full ones with `dropLast`.
    func batches(samples: Int) -> Int {
        dropLast ? samples / batchSize : (samples + batchSize - 1) / batchSize
    }

    var skippedFiles: Int {
        condition.lock()
        defer { condition.unlock() }
        return badFiles.count
    }

    func startWorkers(_ count: Int) {
        condition.lock()
        runningWorkers = count
        condition.unlock()
        for number in 0..<count {
            let thread = Thread { [self] in workerLoop() }
            thread.name = "mae-data-\(number)"
            thread.start()
        }
    }

    func startEpoch(_ newEpoch: Int, order newOrder: [Int], splitStart start: Int, fromBatch: Int) {
        let batchCount = batches(samples: newOrder.count)
        condition.lock()
        generation += 1
        epoch = newEpoch
        order = newOrder
        splitStart = start
        batchesPerEpoch = batchCount
        samplesPerEpoch = dropLast ? batchCount * batchSize : newOrder.count
        consumerBatch = fromBatch
        nextUnit = fromBatch * batchSize
        batches = [:]
        failure = nil
        condition.broadcast()
        condition.unlock()
    }

    func next() throws -> Batch? {
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { throw DataError("the data loader was stopped; make a new one") }
        guard epoch >= 0 else { throw DataError("DataLoader.next() called before startEpoch(_:); start an epoch first") }
        guard consumerBatch < batchesPerEpoch else { return nil }
        let started = monotonicSeconds()
        var waited = false
        while true {
            if let failure { throw failure }
            if let pending = batches[consumerBatch], pending.remaining == 0 { break }
            waited = true
            condition.wait()
            if stopping { throw DataError("the data loader was stopped while waiting for a batch") }
        }
        let pending = batches.removeValue(forKey: consumerBatch)!
        let batchIndex = consumerBatch
        consumerBatch += 1
        condition.broadcast()   // room to prefetch one more batch
        return Batch(images: pending.images, sampleIndices: pending.sampleIndices,
                     labels: pending.sampleIndices.map { dataset.labels[$0] }, batchIndex: batchIndex,
                     epochPosition: splitStart + batchIndex * batchSize * worldSize,
                     dataWaitSeconds: waited ? monotonicSeconds() - started : 0)
    }

    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        while runningWorkers > 0 { condition.wait() }
        condition.unlock()
    }

    /// Takes work units (one sample of one batch) while the consumer is fewer than
    /// `prefetchBatches` batches behind; decodes and augments them outside the lock.
    private func workerLoop() {
        let decoder = ImageDecoder()
        let resampler = Resampler()
        let scratch = AugmentationScratch()
        let sampleFloats = 3 * augmentation.imageSize * augmentation.imageSize
        condition.lock()
        while !stopping {
            guard epoch >= 0, failure == nil, nextUnit < samplesPerEpoch,
                  nextUnit / batchSize < consumerBatch + prefetchBatches else {
                condition.wait()
                continue
            }
            let unit = nextUnit
            nextUnit += 1
            let batchIndex = unit / batchSize, slot = unit % batchSize
            let pending: PendingBatch
            if let existing = batches[batchIndex] {
                pending = existing
            } else {
                pending = PendingBatch(count: min(batchSize, samplesPerEpoch - batchIndex * batchSize),
                                       floatsPerSample: sampleFloats)
                batches[batchIndex] = pending
            }
            let work = (generation: generation, epoch: epoch, order: order, badFiles: badFiles)
            condition.unlock()

            let result = produceSample(position: unit, order: work.order, epoch: work.epoch, knownBad: work.badFiles,
                                       output: pending.images.pointer + slot * sampleFloats,
                                       decoder: decoder, resampler: resampler, scratch: scratch)

            condition.lock()
            guard work.generation == generation else { continue }   // the epoch was restarted meanwhile
            for (index, reason) in result.newlyBad where badFiles.insert(index).inserted {
                var standardError = FileHandleStream.standardError
                print("warning: skipping \(dataset.path(of: index)): \(reason); "
                      + "using the next sample of this rank's shard instead", to: &standardError)
            }
            if let index = result.index {
                pending.sampleIndices[slot] = index
                pending.remaining -= 1
                if pending.remaining == 0 { condition.broadcast() }
            } else {
                failure = DataError("none of the \(work.order.count) images of this rank's shard could be decoded "
                    + "(see the warnings above); check the dataset folder \(dataset.directory)")
                condition.broadcast()
            }
        }
        runningWorkers -= 1
        condition.broadcast()
        condition.unlock()
    }

    /// Decodes and augments the sample at `position` of this rank's list, or the next
    /// decodable one (wrapping). Returns the dataset index used (nil when none decodes)
    /// and the files found bad on the way.
    private func produceSample(position: Int, order: [Int], epoch: Int, knownBad: Set<Int>,
                               output: UnsafeMutablePointer<Float>, decoder: ImageDecoder,
                               resampler: Resampler, scratch: AugmentationScratch)
        -> (index: Int?, newlyBad: [(Int, String)]) {
        var newlyBad: [(Int, String)] = []
        for step in 0..<order.count {
            let index = order[(position + step) % order.count]
            if knownBad.contains(index) || newlyBad.contains(where: { $0.0 == index }) { continue }
            do {
                let image = try decoder.decode(path: dataset.path(of: index))
                augmentation.apply(output: output, image: image, seed: seed, epoch: epoch, index: index,
                                   resampler: resampler, scratch: scratch)
                return (index, newlyBad)
            } catch {
                let reason = (error as? DataError)?.description ?? "\(error)"
                let prefix = dataset.path(of: index) + ": "
                newlyBad.append((index, reason.hasPrefix(prefix) ? String(reason.dropFirst(prefix.count)) : reason))
            }
        }
        return (nil, newlyBad)
    }
}

/// A batch being filled by the workers.
private final class PendingBatch {
    let images: FloatBuffer
    var sampleIndices: [Int]
    var remaining: Int

    init(count: Int, floatsPerSample: Int) {
        images = FloatBuffer(count: count * floatsPerSample)
        sampleIndices = [Int](repeating: -1, count: count)
        remaining = count
    }
}

/// Seconds on the monotonic clock.
func monotonicSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}
