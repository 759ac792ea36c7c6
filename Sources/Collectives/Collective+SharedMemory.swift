/// All-reduce through shared memory, for ranks that share a machine.
///
/// The ranks map one segment (`SharedSegment`) and move a call's elements through it
/// in pieces of `slotBytes`, two pieces in flight. For each piece, every rank:
/// 1. copies the parts of its piece that other ranks reduce into its own input region
///    and publishes `arrived` (the first piece of a call also publishes its call header,
///    which every rank checks against its own, so calls that differ fail loudly);
/// 2. once every rank has arrived, reduces its own part of the piece (part r of N) from
///    every rank's region and its own buffer, in one pass, into its buffer and the
///    shared result region, and publishes `reduced`;
/// 3. once every rank has reduced, copies the other parts of the result into its
///    buffer and publishes `departed` (a slot is reused only after every rank departed).
/// Every element is read once by its reducer and copied once per rank: the kernel's
/// TCP stack, its two copies per byte and its system calls are gone.
///
/// Determinism: the sum of each element is taken in the TCP ring's order for the same
/// world size and lanes, ((x_c + x_{c+1}) + …) + x_{c−1} where c is the ring chunk of
/// the element (`RingChunks`), and a mean divides that sum by N. So the results are the
/// same bits run to run, on every rank, and as `TCPRingCollective`'s. A mean with the
/// bf16 gradient wire rounds as the ring's wire does (`GradientWire`): there is no wire
/// here and no byte is saved, but the results do not depend on the transport.
///
/// Waiting: a rank waits on another's counter by spinning (only where each rank has a
/// core, as the ring decides), then sleeping on it with futex, in slices of at most
/// 50 ms after which it checks whether the peer's process has ended (pidfd) or the peer
/// reported a failure; a wait with no progress for `timeoutSeconds` fails, naming the
/// rank. A rank that fails marks its control block so the others fail at once.
import CSharedMemory
import CSupport
import Kernels
#if canImport(Glibc)
import Glibc
#endif

public final class SharedMemoryCollective: Collective {
    public let rank: Int
    public let worldSize: Int
    /// Limit for a wait without progress (seconds).
    public let timeoutSeconds: Double
    /// The ring's lane settings, which decide the order of each element's sum.
    private let lanes: Int
    private let minimumLaneBytes: Int
    /// Polls of a counter before a waiting rank sleeps on it.
    let spinsBeforeSleeping: Int
    private let segment: SharedSegment
    private let layout: SegmentLayout
    private var peers: PeerProcesses
    private let callLock = Lock()
    private var sequence: UInt64 = 0
    /// The number of the last piece this rank moved (all ranks move the same pieces).
    private var piece: UInt32 = 0
    private var failure: String?
    /// Source pointers of one reduction, in summation order (allocated once).
    private let sources: UnsafeMutablePointer<UnsafeRawPointer>
    private let emptyBuffer = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)

    /// The default size of one rank's region for one piece: small enough that a
    /// piece's regions of four ranks stay in the last-level cache.
    public static let defaultSlotBytes = 1 << 20
    /// The default `spinsBeforeSleeping` where each rank has a core: a fraction of a
    /// millisecond of polling. 20,000 was as fast on an idle machine but 3–4× slower when
    /// another process took one of the two cores (docs/PERFORMANCE.md).
    public static let automaticSpins = 2_000
    private static let sleepSliceSeconds = 0.05

    // MARK: Joining

    /// Sets up the segment through `ring` (already joined, so the job token and
    /// generation have been checked), then closes `ring`. Every rank must be on this
    /// machine (`ring.ranksOnThisHost == worldSize`); throws within the timeout otherwise.
    public static func join(over ring: TCPRingCollective, config: RendezvousConfig,
                            slotBytes: Int = defaultSlotBytes) throws -> SharedMemoryCollective {
        defer { ring.close() }
        let rank = ring.rank, world = ring.worldSize
        guard slotBytes >= 4096, slotBytes % 64 == 0, slotBytes <= 1 << 30 else {
            throw CollectiveError.invalidArgument("shared-memory slot of \(slotBytes) bytes must be a multiple of 64 in 4096...\(1 << 30)")
        }
        guard ring.ranksOnThisHost == world else {
            throw CollectiveError.rendezvous("rank \(rank): only \(ring.ranksOnThisHost) of \(world) ranks announced this "
                + "machine's address; shared memory needs every rank on one machine (use --transport ring or auto)")
        }
        let layout = SegmentLayout(worldSize: world, slotBytes: slotBytes)
        let context = "rank \(rank) joining the shared-memory collective"
        // Rank 0 announces where its segment is and the secret its header carries:
        // pid, descriptor, byte count (two words), secret (eight words).
        var announcement = [UInt32](repeating: 0, count: 12)
        var created: (SharedSegment, descriptor: Int32)?
        defer { if let descriptor = created?.descriptor { Glibc.close(descriptor) } }
        if rank == 0 {
            created = try SharedSegment.create(byteCount: layout.totalBytes, context: context)
            let secret = randomSecret()
            let base = created!.0.base
            base.storeBytes(of: SegmentLayout.magic, toByteOffset: HeaderField.magic, as: UInt64.self)
            base.storeBytes(of: UInt32(world), toByteOffset: HeaderField.worldSize, as: UInt32.self)
            base.storeBytes(of: UInt32(slotBytes), toByteOffset: HeaderField.slotBytes, as: UInt32.self)
            for (index, word) in secret.enumerated() {
                base.storeBytes(of: word, toByteOffset: HeaderField.secret + 4 * index, as: UInt32.self)
            }
            announcement = [UInt32(bitPattern: getpid()), UInt32(bitPattern: created!.descriptor),
                            UInt32(truncatingIfNeeded: layout.totalBytes), UInt32(truncatingIfNeeded: layout.totalBytes >> 32)] + secret
        }
        // The broadcast only copies bytes, so words travel unchanged as Float bit patterns.
        try announcement.withUnsafeMutableBufferPointer { words in
            try words.withMemoryRebound(to: Float.self) { try ring.broadcast($0.baseAddress!, count: 12, root: 0) }
        }
        let announcedBytes = Int(announcement[2]) | Int(announcement[3]) << 32
        guard announcedBytes == layout.totalBytes else {
            throw CollectiveError.mismatch("\(context): rank 0's segment has \(announcedBytes) bytes, this rank expects "
                + "\(layout.totalBytes) (ranks use different slot sizes)")
        }
        let segment = try created?.0 ?? SharedSegment.open(processID: Int32(bitPattern: announcement[0]),
                                                           descriptor: Int32(bitPattern: announcement[1]),
                                                           byteCount: layout.totalBytes, context: context)
        let base = segment.base
        let secretMatches = (0..<HeaderField.secretWords).allSatisfy {
            base.load(fromByteOffset: HeaderField.secret + 4 * $0, as: UInt32.self) == announcement[4 + $0]
        }
        guard base.load(fromByteOffset: HeaderField.magic, as: UInt64.self) == SegmentLayout.magic, secretMatches,
              base.load(fromByteOffset: HeaderField.worldSize, as: UInt32.self) == UInt32(world),
              base.load(fromByteOffset: HeaderField.slotBytes, as: UInt32.self) == UInt32(slotBytes) else {
            throw CollectiveError.handshakeRejected("\(context): the segment at rank 0's descriptor does not carry this "
                + "job's secret (another process, or ranks in separate process namespaces: use --transport ring)")
        }
        segment.storeRelease(layout.control(rank) + ControlField.processID, UInt32(bitPattern: getpid()))
        // Once every rank has mapped the segment, the descriptors go (rank 0's in the defer above).
        try ring.barrier()
        let processIDs = (0..<world).map { Int32(bitPattern: segment.loadAcquire(layout.control($0) + ControlField.processID)) }
        let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let spins = config.spinsBeforeSleeping ?? (world <= cores ? automaticSpins : 0)
        return SharedMemoryCollective(rank: rank, worldSize: world, config: config, segment: segment, layout: layout,
                                      peers: PeerProcesses(processIDs: processIDs), spins: spins)
    }

    private init(rank: Int, worldSize: Int, config: RendezvousConfig, segment: SharedSegment, layout: SegmentLayout,
                 peers: PeerProcesses, spins: Int) {
        self.rank = rank
        self.worldSize = worldSize
        timeoutSeconds = config.timeoutSeconds
        lanes = config.lanes
        minimumLaneBytes = config.minimumLaneBytes
        spinsBeforeSleeping = spins
        self.segment = segment
        self.layout = layout
        self.peers = peers
        sources = .allocate(capacity: worldSize)
    }

    deinit {
        close()
        sources.deallocate()
        emptyBuffer.deallocate()
    }

    // MARK: Collective

    public func allReduceAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try perform(.allReduceAverage, UnsafeMutableRawPointer(buffer), count: count, root: 0)
    }

    public func allReduceAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int, slice: VectorSlice) throws {
        try allReduceAverage(buffer, count: count, slice: slice, wire: .fp32)
    }

    public func allReduceAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int, slice: VectorSlice,
                                 wire: GradientWire) throws {
        try slice.check(count: count)
        try perform(.allReduceAverage, UnsafeMutableRawPointer(buffer), count: count, root: 0, slice: slice, wire: wire)
    }

    /// The all-reduce, which leaves every shard reduced.
    public func reduceScatterAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int, wire: GradientWire) throws {
        try perform(.allReduceAverage, UnsafeMutableRawPointer(buffer), count: count, root: 0, wire: wire)
    }

    /// Both: the bf16 wire's rounding is applied to the sums (`GradientWire`).
    public func carries(_ wire: GradientWire) -> Bool { true }

    /// Each element's sum starts at the rank that the whole vector's ring chunk says.
    public var reducesSlicesAsWhole: Bool { true }

    /// The TCP ring's shards, so that ownership does not depend on the transport (the
    /// reduce-scatter is the all-reduce, the all-gather broadcasts: the defaults).
    public func shard(count: Int, rank: Int) -> [Range<Int>] {
        ringShard(count: count, world: worldSize, rank: rank,
                  lanes: lanesUsed(count: count, elementBytes: 4, lanes: lanes, minimumLaneBytes: minimumLaneBytes))
    }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try perform(.allReduceSum, UnsafeMutableRawPointer(buffer), count: count, root: 0)
    }

    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {
        guard (0..<worldSize).contains(root) else {
            throw CollectiveError.invalidArgument("broadcast root \(root) is outside 0..<\(worldSize)")
        }
        try perform(.broadcast, UnsafeMutableRawPointer(buffer), count: count, root: root)
    }

    public func allReduceScalars(_ values: [Double]) throws -> [Double] {
        var result = values
        try result.withUnsafeMutableBytes { bytes in
            try perform(.allReduceScalars, bytes.baseAddress ?? emptyBuffer, count: values.count, root: 0)
        }
        return result
    }

    public func barrier() throws {
        var token: Float = 1
        try perform(.barrier, &token, count: 1, root: 0)
        guard token == Float(worldSize) else {
            throw CollectiveError.mismatch("barrier counted \(token) ranks instead of \(worldSize)")
        }
    }

    /// Marks this rank closed (peers still waiting for it fail at once) and releases
    /// the pidfds; the mapping goes with the object. Safe to call twice.
    public func close() {
        callLock.withLock {
            if failure == nil {
                failure = "close() was called"
                announce(.closed, message: "closed its collective")
            }
            peers.close()
        }
    }

    // MARK: Halves for the hierarchical collective

    /// Sums `buffer[0..<count]`, a slice of a longer vector, over every rank in the order
    /// the whole vector's sum takes (as `allReduceAverage(_:count:slice:)`), but leaves
    /// each rank only its `owned[rank]` (call elements) finished: the reduce-scatter of
    /// `HierarchicalCollective`, which skips copying out what other ranks carry on with.
    func reduceScatterSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, slice: VectorSlice,
                          owned: [Range<Int>]) throws {
        try slice.check(count: count)
        try perform(.allReduceSum, UnsafeMutableRawPointer(buffer), count: count, root: 0, slice: slice, owned: owned)
    }

    /// Copies `buffer[owned[r]]` of every rank r into the buffers of all others (`owned`
    /// in call elements, disjoint): the all-gather of `HierarchicalCollective`.
    func gather(_ buffer: UnsafeMutablePointer<Float>, count: Int, slice: VectorSlice, owned: [Range<Int>]) throws {
        try slice.check(count: count)
        try perform(.allGather, UnsafeMutableRawPointer(buffer), count: count, root: 0, slice: slice, owned: owned)
    }

    // MARK: One call

    /// `owned`: for a sum, the elements each rank ends with (nil: all); for `.allGather`,
    /// the elements each rank contributes.
    private func perform(_ operation: Operation, _ buffer: UnsafeMutableRawPointer, count: Int, root: Int,
                         slice: VectorSlice? = nil, owned: [Range<Int>]? = nil, wire: GradientWire = .fp32) throws {
        guard count >= 0 else { throw CollectiveError.invalidArgument("count \(count) is negative") }
        try callLock.withLock {
            if let failure { throw CollectiveError.closed(failure) }
            guard worldSize > 1 else { return }
            sequence += 1
            let header = CallHeader(operation: operation, sequence: sequence, count: UInt64(count), root: UInt32(root),
                                    offset: UInt64(slice?.offset ?? 0), wholeCount: UInt64(slice?.wholeCount ?? count),
                                    wire: wire)
            do {
                guard owned.map({ $0.count == worldSize && $0.allSatisfy { $0.lowerBound >= 0 && $0.upperBound <= count } })
                    ?? true else {
                    throw CollectiveError.invalidArgument("owned ranges \(owned!) do not give each of \(worldSize) ranks "
                        + "elements within 0..<\(count)")
                }
                try move(header, buffer, owned: owned)
            } catch {
                failure = "an earlier call failed: \(error)"
                announce(.failed, message: "\(error)")
                throw error
            }
        }
    }

    /// Moves one call's elements through the segment, piece by piece.
    private func move(_ header: CallHeader, _ buffer: UnsafeMutableRawPointer, owned: [Range<Int>]?) throws {
        let elementBytes = header.operation == .allReduceScalars ? 8 : 4
        let count = Int(header.count), world = worldSize
        let pieceElements = layout.slotBytes / elementBytes
        let pieces = max(1, (count + pieceElements - 1) / pieceElements)
        // The chunks of the whole vector that the call is a slice of, in the call's element numbers.
        let wholeCount = Int(header.wholeCount)
        let chunks = RingChunks(count: wholeCount, world: world,
                                lanes: lanesUsed(count: wholeCount, elementBytes: elementBytes, lanes: lanes,
                                                 minimumLaneBytes: minimumLaneBytes),
                                offset: Int(header.offset))
        let isBroadcast = header.operation == .broadcast, root = Int(header.root)
        let isGather = header.operation == .allGather
        writeCallHeader(header)
        for index in 0..<pieces {
            let number = piece &+ 1
            let slot = Int(number % UInt32(SegmentLayout.slots))
            let start = index * pieceElements, length = min(count - start, pieceElements)
            func part(_ owner: Int) -> (start: Int, count: Int) {
                let first = start + owner * length / world, end = start + (owner + 1) * length / world
                return (first, end - first)
            }
            func region(_ owner: Int) -> UnsafeMutableRawPointer { segment.base + layout.input(slot: slot, rank: owner) }
            /// The elements of `owner`'s owned range in this piece.
            func ownedPart(_ owner: Int) -> (start: Int, count: Int) {
                let first = max(start, owned![owner].lowerBound), end = min(start + length, owned![owner].upperBound)
                return (first, max(0, end - first))
            }
            let result = segment.base + layout.result(slot: slot)

            // The slot's last use (two pieces ago) must be over on every rank.
            try waitForAll(.departed, atLeast: number &- UInt32(SegmentLayout.slots), header)
            if isBroadcast {
                if rank == root { region(rank).copyMemory(from: buffer + start * elementBytes, byteCount: length * elementBytes) }
            } else if isGather {
                let (first, elements) = ownedPart(rank)
                (region(rank) + (first - start) * elementBytes)
                    .copyMemory(from: buffer + first * elementBytes, byteCount: elements * elementBytes)
            } else {
                for owner in 0..<world where owner != rank {
                    let (first, elements) = part(owner)
                    (region(rank) + (first - start) * elementBytes)
                        .copyMemory(from: buffer + first * elementBytes, byteCount: elements * elementBytes)
                }
            }
            publish(.arrived, number)
            try waitForAll(.arrived, atLeast: number, header)
            if index == 0 { try checkCallHeaders(header) }

            if isBroadcast {
                if rank != root {
                    (buffer + start * elementBytes).copyMemory(from: region(root), byteCount: length * elementBytes)
                }
                publish(.reduced, number)
            } else if isGather {
                for owner in 0..<world where owner != rank {
                    let (first, elements) = ownedPart(owner)
                    (buffer + first * elementBytes)
                        .copyMemory(from: region(owner) + (first - start) * elementBytes, byteCount: elements * elementBytes)
                }
                publish(.reduced, number)
            } else {
                let (first, elements) = part(rank)
                reduce(first: first, count: elements, pieceStart: start, elementBytes: elementBytes, chunks: chunks,
                       divides: header.operation == .allReduceAverage, wire: header.wire,
                       buffer: buffer, regions: region, result: result)
                publish(.reduced, number)
                try waitForAll(.reduced, atLeast: number, header)
                for owner in 0..<world where owner != rank {
                    var (first, elements) = part(owner)
                    if let owned {
                        // Only what this rank keeps: the others' parts are theirs to carry on with.
                        let end = min(first + elements, owned[rank].upperBound)
                        first = max(first, owned[rank].lowerBound)
                        elements = max(0, end - first)
                    }
                    (buffer + first * elementBytes)
                        .copyMemory(from: result + (first - start) * elementBytes, byteCount: elements * elementBytes)
                }
            }
            publish(.departed, number)
            piece = number
        }
    }

    /// Sums elements [first, first + count) of the call over every rank, in the ring's
    /// order, into this rank's buffer and the result region (which holds the piece that
    /// starts at element `pieceStart`), rounded between the adds as the ring's bf16 wire does.
    private func reduce(first: Int, count: Int, pieceStart: Int, elementBytes: Int, chunks: RingChunks, divides: Bool,
                        wire: GradientWire, buffer: UnsafeMutableRawPointer, regions: (Int) -> UnsafeMutableRawPointer,
                        result: UnsafeMutableRawPointer) {
        var element = first
        let end = first + count
        while element < end {
            // Elements up to the next chunk boundary start their sums at the same rank.
            let (chunk, chunkEnd) = chunks.chunk(containing: element)
            let stop = min(end, chunkEnd)
            for step in 0..<worldSize {
                let owner = (chunk + step) % worldSize
                sources[step] = owner == rank ? UnsafeRawPointer(buffer + element * elementBytes)
                    : UnsafeRawPointer(regions(owner) + (element - pieceStart) * elementBytes)
            }
            let ownDestination = buffer + element * elementBytes
            let sharedDestination = result + (element - pieceStart) * elementBytes
            if elementBytes == 8 {
                sumDoublesInOrder(sources, sourceCount: worldSize, into: ownDestination, sharedDestination,
                                  count: stop - element)
            } else if wire == .bf16 {
                // Only means travel as bf16; the sources are Float memory (the rebound view is for C).
                sources.withMemoryRebound(to: UnsafePointer<Float>?.self, capacity: worldSize) {
                    mae_wire_mean_in_order_bf16($0, worldSize, ownDestination.assumingMemoryBound(to: Float.self),
                                                sharedDestination.assumingMemoryBound(to: Float.self), stop - element,
                                                Float(worldSize))
                }
            } else {
                sumFloatsInOrder(sources, sourceCount: worldSize, into: ownDestination, sharedDestination,
                                 count: stop - element, divisor: divides ? Float(worldSize) : nil)
            }
            element = stop
        }
    }

    // MARK: Control blocks

    private func counterOffset(_ counter: Counter, of owner: Int) -> Int { layout.control(owner) + counter.rawValue }

    /// Sets this rank's counter, then wakes peers sleeping on this block, if any.
    private func publish(_ counter: Counter, _ value: UInt32) {
        segment.storeRelease(counterOffset(counter, of: rank), value)
        // The fence orders the store before the load of `sleepers`; a peer that adds
        // itself to `sleepers` re-reads the counter after that add (Dekker's pattern).
        mae_atomic_fence()
        if segment.loadAcquire(layout.control(rank) + ControlField.sleepers) != 0 {
            for counter in [Counter.arrived, .reduced, .departed] {
                _ = mae_futex_wake_all(segment.word(at: counterOffset(counter, of: rank)))
            }
        }
    }

    /// Records this rank's end in its control block and wakes every sleeping peer.
    private func announce(_ state: RankState, message: String) {
        let text = Array("rank \(rank) \(message)".utf8.prefix(SegmentLayout.messageBytes - 1)) + [0]
        let messageStart = segment.base + layout.control(rank) + SegmentLayout.messageOffset
        text.withUnsafeBytes { messageStart.copyMemory(from: $0.baseAddress!, byteCount: text.count) }
        segment.storeRelease(layout.control(rank) + ControlField.state, state.rawValue)
        mae_atomic_fence()
        for counter in [Counter.arrived, .reduced, .departed] {
            _ = mae_futex_wake_all(segment.word(at: counterOffset(counter, of: rank)))
        }
    }

    private func writeCallHeader(_ header: CallHeader) {
        let entry = callHeaderEntry(of: rank, header.sequence)
        entry.storeBytes(of: header.operation.rawValue, toByteOffset: CallHeaderField.operation, as: UInt32.self)
        entry.storeBytes(of: header.root, toByteOffset: CallHeaderField.root, as: UInt32.self)
        entry.storeBytes(of: header.sequence, toByteOffset: CallHeaderField.sequence, as: UInt64.self)
        entry.storeBytes(of: header.count, toByteOffset: CallHeaderField.count, as: UInt64.self)
        entry.storeBytes(of: header.offset, toByteOffset: CallHeaderField.offset, as: UInt64.self)
        entry.storeBytes(of: header.wholeCount, toByteOffset: CallHeaderField.wholeCount, as: UInt64.self)
        entry.storeBytes(of: header.wire.wireCode, toByteOffset: CallHeaderField.wire, as: UInt32.self)
    }

    /// Where `owner` keeps the header of call `sequence`: two entries, by the sequence's parity.
    private func callHeaderEntry(of owner: Int, _ sequence: UInt64) -> UnsafeMutableRawPointer {
        segment.base + layout.control(owner) + ControlField.callHeaders + Int(sequence & 1) * CallHeaderField.entryBytes
    }

    /// Compares every rank's call header with this rank's (after all have arrived; a
    /// rank overwrites a header only two calls later, after every rank departed this one).
    private func checkCallHeaders(_ header: CallHeader) throws {
        for owner in 0..<worldSize where owner != rank {
            let entry = callHeaderEntry(of: owner, header.sequence)
            let operation = Operation(rawValue: entry.load(fromByteOffset: CallHeaderField.operation, as: UInt32.self))
            let wire = GradientWire(wireCode: entry.load(fromByteOffset: CallHeaderField.wire, as: UInt32.self))
            let theirs: CallHeader? = if let operation, let wire {
                CallHeader(operation: operation, sequence: entry.load(fromByteOffset: CallHeaderField.sequence, as: UInt64.self),
                           count: entry.load(fromByteOffset: CallHeaderField.count, as: UInt64.self),
                           root: entry.load(fromByteOffset: CallHeaderField.root, as: UInt32.self),
                           offset: entry.load(fromByteOffset: CallHeaderField.offset, as: UInt64.self),
                           wholeCount: entry.load(fromByteOffset: CallHeaderField.wholeCount, as: UInt64.self), wire: wire)
            } else {
                nil
            }
            guard theirs == header else {
                throw CollectiveError.mismatch("rank \(owner) called \(theirs.map { "\($0)" } ?? "an unknown operation") "
                    + "while rank \(rank) called \(header)")
            }
        }
    }

    /// Waits until every other rank's `counter` has reached `target` (in wrapping
    /// order): spins, then sleeps on it; fails when a peer ended or reported a failure,
    /// or after `timeoutSeconds` without that rank's progress.
    private func waitForAll(_ counter: Counter, atLeast target: UInt32, _ header: CallHeader) throws {
        for owner in 0..<worldSize where owner != rank {
            let offset = counterOffset(counter, of: owner)
            func reached() -> Bool { Int32(bitPattern: segment.loadAcquire(offset) &- target) >= 0 }
            if reached() { continue }
            var spins = 0
            while spins < spinsBeforeSleeping {
                if reached() { break }
                mae_spin_pause()
                spins += 1
            }
            if reached() { continue }
            let deadline = monotonicSeconds() + timeoutSeconds
            let sleepers = segment.word(at: layout.control(owner) + ControlField.sleepers)
            while true {
                try checkPeer(owner, header)
                let remaining = deadline - monotonicSeconds()
                if remaining <= 0 {
                    throw CollectiveError.timedOut("rank \(rank) in \(header.operation) #\(header.sequence): rank \(owner) "
                        + "made no progress for \(timeoutSeconds) s (a peer stalled, died or stopped calling)")
                }
                _ = mae_atomic_fetch_add_u32(sleepers, 1)
                let seen = segment.loadAcquire(offset)
                if Int32(bitPattern: seen &- target) < 0 {
                    let slice = min(remaining, Self.sleepSliceSeconds)
                    _ = mae_futex_wait(segment.word(at: offset), seen, Int64(slice * 1e9))
                }
                _ = mae_atomic_fetch_add_u32(sleepers, UInt32.max)    // minus one
                if reached() { break }
            }
        }
    }

    /// Throws when rank `owner` has reported a failure or its process has ended.
    private func checkPeer(_ owner: Int, _ header: CallHeader) throws {
        let state = segment.loadAcquire(layout.control(owner) + ControlField.state)
        if state != RankState.running.rawValue {
            let message = String(cString: (segment.base + layout.control(owner) + SegmentLayout.messageOffset)
                .assumingMemoryBound(to: CChar.self))
            throw CollectiveError.peerClosed("rank \(rank) in \(header.operation) #\(header.sequence): \(message)")
        }
        if peers.hasEnded(owner) {
            throw CollectiveError.peerClosed("rank \(rank) in \(header.operation) #\(header.sequence): rank \(owner) "
                + "(process \(peers.processIDs[owner])) ended while this rank waited for it")
        }
    }
}

/// Which TCP-ring chunk each element of a call falls in: lane l of K owns elements
/// [l·n/K, (l+1)·n/K), and chunk c of a lane of m elements is its [c·m/N, (c+1)·m/N).
/// The chunk decides at which rank the ring starts the element's sum. For a call that
/// is a slice of a longer vector, n is the whole's length and element numbers are the
/// call's (the whole's minus `offset`).
struct RingChunks {
    /// Chunk starts in increasing order, with the chunk index of each, and the end at the end.
    private var starts: [Int] = []
    private var indices: [Int] = []

    init(count: Int, world: Int, lanes: Int, offset: Int = 0) {
        for lane in 0..<lanes {
            let slice = laneSlice(lane, count: count, lanesUsed: lanes)
            for chunk in 0..<world {
                starts.append(slice.start + chunk * slice.count / world - offset)
                indices.append(chunk)
            }
        }
        starts.append(count - offset)
    }

    /// The chunk of `element` and the first element after it that is in another chunk.
    func chunk(containing element: Int) -> (chunk: Int, end: Int) {
        // Few chunks (lanes × world): a linear search is as fast as any.
        var index = 0
        while starts[index + 1] <= element { index += 1 }
        return (indices[index], starts[index + 1])
    }
}
