import Collectives
import Foundation
import Model

/// The gradient all-reduce of a training step, after the backward or overlapped with it
/// (PyTorch DDP's buckets).
///
/// With overlap, the flat gradient is cut into buckets at tensor boundaries, in the order
/// the backward finishes them: the backward runs from the end of the layout (the decoder's
/// head and last block) to its start, so bucket 0 is the layout's tail. As the model's
/// backward reports that a tail of the layout is final, a communication thread averages
/// each bucket inside it while the backward goes on; `finish` waits for the last one.
/// Every bucket is reduced as a slice of the whole vector (`VectorSlice`), so each element
/// is summed in the order one call over the whole vector uses: the result has the same
/// bits with or without overlap, whatever the bucket size. With the bf16 wire
/// (`GradientWire`) too: its rounding depends only on each element's place in the whole.
///
/// Calls come from one thread (the step's); the communication thread only reduces
/// buckets between `backwardProgress()` and `finish()`, when the step makes no other
/// collective call, so every rank issues the same calls in the same order.
public final class GradientExchange {
    /// The default bucket size: DDP's `bucket_cap_mb` of 25 MB.
    public static let defaultBucketMegabytes = 25.0

    public let collective: any Collective
    public let gradients: UnsafeMutablePointer<Float>
    public let count: Int
    /// Element ranges of the flat layout, in the order the backward completes them.
    public let buckets: [Range<Int>]
    /// Whether buckets are reduced during the backward (false: one call after it).
    public let overlaps: Bool
    /// Whether `finish` reduce-scatters instead (the sharded optimizer needs only its shard).
    public let reduceScatters: Bool
    /// How the gradients travel between the workers (`--gradient-wire`).
    public let wire: GradientWire

    /// What the step's thread and the communication thread share (the fields below the
    /// condition only under it).
    private final class Queue: @unchecked Sendable {
        let collective: any Collective
        let gradients: UnsafeMutablePointer<Float>
        let wire: GradientWire
        let condition = NSCondition()
        /// Buckets handed to the communication thread in this step, and those it finished.
        var queued = 0
        var reduced = 0
        var failure: Error?
        var stopping = false

        init(collective: any Collective, gradients: UnsafeMutablePointer<Float>, wire: GradientWire) {
            self.collective = collective
            self.gradients = gradients
            self.wire = wire
        }
    }
    private let queue: Queue
    private var threadStarted = false

    /// `overlaps` must only be true where the collective reduces slices as the whole;
    /// `reduceScatters` (one reduce-scatter after the backward) excludes it; the collective
    /// must carry `wire`.
    public init(collective: any Collective, gradients: UnsafeMutablePointer<Float>, table: ParameterTable,
                bucketBytes: Int, overlaps: Bool, reduceScatters: Bool = false, wire: GradientWire = .fp32) {
        precondition(!overlaps || collective.reducesSlicesAsWhole, "overlap needs slices reduced as the whole vector")
        precondition(!(overlaps && reduceScatters), "a reduce-scatter is not overlapped")
        precondition(collective.carries(wire), "the collective does not carry gradients as \(wire)")
        self.reduceScatters = reduceScatters
        self.wire = wire
        self.collective = collective
        self.gradients = gradients
        queue = Queue(collective: collective, gradients: gradients, wire: wire)
        count = table.count
        buckets = Self.buckets(of: table, bucketBytes: bucketBytes)
        self.overlaps = overlaps && collective.worldSize > 1
    }

    deinit {
        queue.condition.lock()
        queue.stopping = true
        queue.condition.broadcast()
        queue.condition.unlock()
    }

    /// Tensors in reverse layout order, gathered into ranges of at least `bucketBytes`
    /// (the last, at the layout's start, may be shorter); a tensor is never cut.
    public static func buckets(of table: ParameterTable, bucketBytes: Int) -> [Range<Int>] {
        var buckets: [Range<Int>] = []
        var end = table.count
        for tensor in table.tensors.sorted(by: { $0.offset > $1.offset }) where tensor.count > 0 {
            if (end - tensor.offset) * MemoryLayout<Float>.size >= bucketBytes {
                buckets.append(tensor.offset..<end)
                end = tensor.offset
            }
        }
        if end > 0 { buckets.append(0..<end) }
        return buckets
    }

    /// The progress callback for the model's backward of the step's last micro-batch, or
    /// nil without overlap. Called with o, it hands every bucket that lies in o..<count to
    /// the communication thread.
    public func backwardProgress() -> ((Int) -> Void)? {
        guard overlaps else { return nil }
        startThreadIfNeeded()
        let queue = queue, buckets = buckets
        queue.condition.lock()
        queue.queued = 0
        queue.reduced = 0
        queue.condition.unlock()
        return { finishedFrom in
            queue.condition.lock()
            var ready = queue.queued
            while ready < buckets.count && buckets[ready].lowerBound >= finishedFrom { ready += 1 }
            if ready > queue.queued {
                queue.queued = ready
                queue.condition.broadcast()
            }
            queue.condition.unlock()
        }
    }

    /// Ends the exchange of the step: without overlap, averages the whole vector (or this
    /// rank's shard of it) now; with it, waits until every bucket is averaged. Returns the
    /// seconds this took: the communication the step waited for after the backward.
    public func finish() throws -> Double {
        let start = monotonicSeconds()
        guard collective.worldSize > 1 else { return 0 }
        guard overlaps else {
            if reduceScatters {
                try collective.reduceScatterAverage(gradients, count: count, wire: wire)
            } else {
                try collective.allReduceAverage(gradients, count: count, slice: VectorSlice(offset: 0, wholeCount: count),
                                                wire: wire)
            }
            return monotonicSeconds() - start
        }
        queue.condition.lock()
        // Buckets the backward never reported (it reports 0 last) go now.
        if queue.queued < buckets.count {
            queue.queued = buckets.count
            queue.condition.broadcast()
        }
        while queue.reduced < buckets.count && queue.failure == nil { queue.condition.wait() }
        let error = queue.failure
        queue.condition.unlock()
        if let error { throw error }
        return monotonicSeconds() - start
    }

    /// Starts the communication thread, which averages queued buckets in order until the
    /// exchange goes (it holds the queue, not the exchange, so the exchange can go).
    private func startThreadIfNeeded() {
        guard !threadStarted else { return }
        threadStarted = true
        let queue = queue, buckets = buckets, count = count
        let thread = Thread {
            while true {
                queue.condition.lock()
                while queue.reduced >= queue.queued && !queue.stopping { queue.condition.wait() }
                if queue.stopping { queue.condition.unlock(); return }
                let bucket = buckets[queue.reduced]
                let failed = queue.failure != nil
                queue.condition.unlock()
                var thrown: Error?
                if !failed {
                    do {
                        try queue.collective.allReduceAverage(queue.gradients + bucket.lowerBound, count: bucket.count,
                                                        slice: VectorSlice(offset: bucket.lowerBound, wholeCount: count),
                                                        wire: queue.wire)
                    } catch {
                        thrown = error
                    }
                }
                queue.condition.lock()
                if let thrown, queue.failure == nil { queue.failure = thrown }
                queue.reduced += 1
                queue.condition.broadcast()
                queue.condition.unlock()
            }
        }
        thread.name = "gradient exchange"
        thread.stackSize = 1 << 20
        thread.start()
    }
}
