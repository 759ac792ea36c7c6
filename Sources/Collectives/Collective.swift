/// The collective layer: how data-parallel workers exchange gradients.
///
/// Workers hold one flat Float buffer of gradients; after backward every worker
/// calls `allReduceAverage` on it (or on slices of it, bucket by bucket) and all
/// of them end with the same bits. These implementations share this interface:
/// `SingleProcessCollective` (world 1), `TCPRingCollective` (a ring over TCP,
/// our own), `SharedMemoryCollective` (every rank on one machine),
/// `HierarchicalCollective` (shared memory inside machines, TCP rings across) and
/// `MPICollective` (Open MPI, behind the package trait `MPI`).
#if canImport(Glibc)
import Glibc
#endif

/// A group of `worldSize` processes that reduce and broadcast buffers together.
///
/// Every rank must issue the same calls, in the same order, with the same counts;
/// a call made by one rank waits for the matching call of every other rank.
/// Calls from several threads are serialised, but the order of calls must still
/// be the same on every rank. After any error the collective is closed: every
/// later call throws, and the caller is expected to abort the step.
public protocol Collective: AnyObject {
    /// This process's rank, 0..<worldSize.
    var rank: Int { get }
    /// Number of processes in the group.
    var worldSize: Int { get }
    /// Replaces `buffer[0..<count]` by the element-wise mean over all ranks, in place.
    /// Pass `base + offset` to reduce a slice. Every rank gets the same bits.
    func allReduceAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// Replaces `buffer[0..<count]`, elements `slice.offset..<slice.offset + count` of a
    /// vector of `slice.wholeCount` elements, by the element-wise mean over all ranks,
    /// with each element summed in the order that one `allReduceAverage` of the whole
    /// vector uses, where `reducesSlicesAsWhole` is true: so a vector reduced bucket by
    /// bucket gets the same bits as in one call, whatever the bucket boundaries.
    func allReduceAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int, slice: VectorSlice) throws
    /// `allReduceAverage(_:count:slice:)` with the values carried between ranks as `wire`
    /// says (`GradientWire`: bf16 rounds what travels); `.fp32` is that call itself.
    /// Throws for a wire this collective does not `carry`.
    func allReduceAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int, slice: VectorSlice, wire: GradientWire) throws
    /// `reduceScatterAverage(_:count:)` with the values carried as `wire` says: this rank's
    /// shard gets the bits of `allReduceAverage(_:count:slice:wire:)` there.
    func reduceScatterAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int, wire: GradientWire) throws
    /// Whether the calls with a `wire` accept this one (every collective carries fp32).
    func carries(_ wire: GradientWire) -> Bool
    /// Whether `allReduceAverage(_:count:slice:)` gives the whole call's bits (true for
    /// the ring, shared memory, the hierarchy and one process; MPI only for two ranks,
    /// whose sums have one order).
    var reducesSlicesAsWhole: Bool { get }
    /// The elements of a vector of `count` that `rank` owns in `reduceScatterAverage` and
    /// `allGather`: the ranks' shards are disjoint and cover 0..<count, the same on every rank.
    func shard(count: Int, rank: Int) -> [Range<Int>]
    /// Replaces this rank's shard of `buffer[0..<count]` by the element-wise mean over all
    /// ranks, with the bits `allReduceAverage` gives there; the rest of the buffer is left
    /// in an unspecified state (ZeRO's reduce-scatter of the gradients).
    func reduceScatterAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// Copies every rank's shard of `buffer[0..<count]` into the buffers of all other ranks
    /// (ZeRO's all-gather of the parameters each rank updated).
    func allGather(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// Replaces `buffer[0..<count]` by the element-wise sum over all ranks, in place.
    func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// Copies `buffer[0..<count]` of rank `root` into the buffer of every other rank.
    func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws
    /// Sums a few scalars over all ranks (for logging: losses, counts, timings).
    func allReduceScalars(_ values: [Double]) throws -> [Double]
    /// Returns once every rank has called it.
    func barrier() throws
    /// Releases connections and resources; later calls throw. Safe to call twice.
    func close()
}

extension Collective {
    /// Contiguous shards: rank r owns [r·n/N, (r+1)·n/N).
    public func shard(count: Int, rank: Int) -> [Range<Int>] {
        [(rank * count / worldSize)..<((rank + 1) * count / worldSize)]
    }

    /// An all-reduce, which also leaves the other shards reduced (for backends without a
    /// reduce-scatter of their own).
    public func reduceScatterAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try allReduceAverage(buffer, count: count)
    }

    /// fp32 only, and anything with one rank, where nothing travels.
    public func carries(_ wire: GradientWire) -> Bool { wire == .fp32 || worldSize == 1 }

    public func allReduceAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int, slice: VectorSlice,
                                 wire: GradientWire) throws {
        try checkCarries(wire)
        try allReduceAverage(buffer, count: count, slice: slice)
    }

    public func reduceScatterAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int, wire: GradientWire) throws {
        try checkCarries(wire)
        try reduceScatterAverage(buffer, count: count)
    }

    /// Throws unless `carries(wire)`.
    func checkCarries(_ wire: GradientWire) throws {
        guard carries(wire) else {
            throw CollectiveError.invalidArgument("\(type(of: self)) does not carry gradients as \(wire) (--gradient-wire \(wire) "
                + "needs the tcp backend: the ring or shared memory); use --gradient-wire fp32")
        }
    }

    /// One broadcast per range of each rank's shard, from that rank.
    public func allGather(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        for owner in 0..<worldSize {
            for range in shard(count: count, rank: owner) {
                try broadcast(buffer + range.lowerBound, count: range.count, root: owner)
            }
        }
    }
}

/// The TCP ring's shards: in lane l of K (elements [l·n/K, (l+1)·n/K), m of them), rank r
/// owns chunk (r + 1) mod N, [c·m/N, (c+1)·m/N), where its reduce-scatter ends.
func ringShard(count: Int, world: Int, rank: Int, lanes: Int) -> [Range<Int>] {
    let chunk = (rank + 1) % world
    return (0..<lanes).compactMap { lane in
        let slice = laneSlice(lane, count: count, lanesUsed: lanes)
        let first = slice.start + chunk * slice.count / world, end = slice.start + (chunk + 1) * slice.count / world
        return end > first ? first..<end : nil
    }
}

/// Where a call's elements lie in a longer vector that is reduced in several calls.
public struct VectorSlice: Sendable, Equatable {
    /// The first element of the call in the whole vector.
    public let offset: Int
    /// The whole vector's length.
    public let wholeCount: Int

    public init(offset: Int, wholeCount: Int) {
        self.offset = offset
        self.wholeCount = wholeCount
    }

    /// Throws unless `count` elements from `offset` fit in the whole.
    func check(count: Int) throws {
        guard offset >= 0, count >= 0, offset <= wholeCount - count else {
            throw CollectiveError.invalidArgument("a slice of \(count) elements at \(offset) does not fit a vector of \(wholeCount)")
        }
    }
}

/// What went wrong in a collective call, as one line that says what to do.
public enum CollectiveError: Error, CustomStringConvertible, Equatable {
    /// A system call failed: the call's name, errno and what we were doing.
    case systemCall(name: String, errno: Int32, context: String)
    /// No progress for the configured timeout (a peer stalled or is gone).
    case timedOut(String)
    /// A peer closed its connection or died.
    case peerClosed(String)
    /// A connection failed the job-token/generation handshake.
    case handshakeRejected(String)
    /// Rendezvous failed (bad address, refused registration, incomplete table).
    case rendezvous(String)
    /// Ranks issued different collective calls (operation, count, root or order).
    case mismatch(String)
    /// A call after `close()` or after an earlier failure.
    case closed(String)
    /// A bad argument (negative count, root out of range, ...).
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .systemCall(name, code, context):
            return "\(context): \(name) failed: \(String(cString: strerror(code))) (errno \(code))"
        case let .timedOut(message): return "collective timed out: \(message)"
        case let .peerClosed(message): return "collective peer lost: \(message)"
        case let .handshakeRejected(message): return "handshake rejected: \(message)"
        case let .rendezvous(message): return "rendezvous failed: \(message)"
        case let .mismatch(message): return "collective calls differ between ranks: \(message)"
        case let .closed(message): return "collective is closed: \(message)"
        case let .invalidArgument(message): return "invalid collective argument: \(message)"
        }
    }
}
