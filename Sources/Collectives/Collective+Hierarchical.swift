/// Hierarchical all-reduce for ranks on several machines with several ranks each
/// (Horovod's hierarchical all-reduce, NCCL's rings over nodes).
///
/// M machines with L ranks each. Local rank j of a machine owns part j of the vector,
/// elements [j·n/L, (j+1)·n/L) (its "column"). An all-reduce takes three steps:
/// 1. inside each machine, a reduce-scatter through shared memory: local rank j ends with
///    its machine's sum of column j (`SharedMemoryCollective.reduceScatterSum`);
/// 2. across machines, local rank j of every machine all-reduces column j over its own TCP
///    ring of M ranks (`TCPRingCollective`): all L rings run at once, each on its own
///    connections and cores, and each carries 1/L of the vector, so every byte crosses
///    between machines 2(M−1)/M times per machine instead of the flat ring's 2(N−1)/N per rank;
/// 3. inside each machine, an all-gather through shared memory of the finished columns.
/// A mean divides the final sum by N once, before step 3 (as the ring's last add does).
///
/// Determinism: element e of column j is the machine sums S_m(e) added in the cross-machine
/// ring's order for column j, ((S_c + S_{c+1}) + …) + S_{c−1} with c the ring chunk of e in
/// the column, and each S_m(e) is the machine's local ranks' values added in the shared-memory
/// collective's (the ring's) order for the whole vector over L ranks. Both orders depend only
/// on the element's position in the whole vector, L, M and the lane settings: the same bits
/// on every rank, run to run, and whether the vector is reduced in one call or in slices
/// (bucket by bucket). They differ from the flat ring's bits over N ranks (another order).
///
/// Which ranks share a machine comes from the hosts the ranks announced in the rendezvous or
/// to the coordinator (`TCPRingCollective.rankHosts`, `MachinePlacement`). Machines must have
/// equal numbers of ranks; `CollectiveTransport` falls back to the flat ring otherwise.
///
/// Small calls (scalars, barriers) go over the flat ring of all N ranks that the job joined
/// first; broadcasts go to the root's local index on every machine over its cross-machine
/// ring, then inside each machine through shared memory.
///
/// Failures: each part detects what it detects alone (the ring a closed or silent
/// connection, shared memory an ended or failed peer process, both within `timeoutSeconds`);
/// a rank whose call fails closes all three parts, so its local peers (shared memory) and
/// its cross-machine peers (TCP) fail at once instead of waiting for the timeout.
import Kernels
#if canImport(Glibc)
import Glibc
#endif

public final class HierarchicalCollective: Collective {
    public let rank: Int
    public let worldSize: Int
    /// Which ranks share a machine.
    public let placement: MachinePlacement
    /// This rank's machine: its index in `placement.machines`.
    public let machine: Int
    /// This rank's index among its machine's ranks; it drives column `localRank` across machines.
    public let localRank: Int
    /// The flat ring of every rank: scalars and barriers.
    private let everyRank: TCPRingCollective
    /// This machine's ranks, through shared memory.
    private let local: SharedMemoryCollective
    /// Local rank `localRank` of every machine: column `localRank` across machines.
    private let acrossMachines: TCPRingCollective
    /// The ring's lane settings, which decide the cross-machine shards.
    private let lanes: Int
    private let minimumLaneBytes: Int
    private let callLock = Lock()
    private var failure: String?

    // MARK: Joining

    /// Sets up the machine's shared memory and this rank's cross-machine ring through `ring`
    /// (already joined, so the job token and generation have been checked), which stays
    /// open for scalars and barriers. Every machine must have the same number of ranks, at
    /// least two, on at least two machines (`MachinePlacement.supportsHierarchy`).
    public static func join(over ring: TCPRingCollective, config: RendezvousConfig,
                            slotBytes: Int = SharedMemoryCollective.defaultSlotBytes) throws -> HierarchicalCollective {
        let placement = MachinePlacement(rankHosts: ring.rankHosts)
        guard placement.supportsHierarchy, let ranksPerMachine = placement.ranksPerMachine else {
            ring.close()
            throw CollectiveError.rendezvous("rank \(ring.rank): the hierarchical collective needs at least two machines "
                + "with the same number (at least two) of ranks each; the ranks are placed \(placement) "
                + "(use --transport auto or ring)")
        }
        let (machine, localRank) = placement.position(of: ring.rank)
        var built: (local: SharedMemoryCollective?, across: TCPRingCollective?) = (nil, nil)
        do {
            // The sub-rings' listeners announce their ports over the joined ring; each
            // sub-ring's handshake checks the job token, its world size and the left rank.
            func connect(rank subRank: Int, members: [Int], spins: Int?) throws -> TCPRingCollective {
                var sub = config
                sub.rank = subRank
                sub.worldSize = members.count
                sub.hostsRendezvous = false
                sub.spinsBeforeSleeping = spins
                return try TCPRingCollective.connect(sub) { port in
                    var ports = [Double](repeating: 0, count: ring.worldSize)
                    ports[ring.rank] = Double(port)
                    // Integers below 2^16 summed with zeros: exact.
                    ports = try ring.allReduceScalars(ports)
                    return members.map { SocketAddress(host: ring.rankHosts[$0], port: Int(ports[$0])) }
                }
            }
            let localRing = try connect(rank: localRank, members: placement.machines[machine],
                                        spins: config.spinsBeforeSleeping)
            var localConfig = config
            localConfig.rank = localRank
            localConfig.worldSize = ranksPerMachine
            built.local = try SharedMemoryCollective.join(over: localRing, config: localConfig, slotBytes: slotBytes)
            // Every local rank drives a cross-machine ring: spinning only where each has a core.
            let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
            let spins = config.spinsBeforeSleeping
                ?? (ranksPerMachine * config.lanes <= cores ? RendezvousConfig.automaticSpins : 0)
            built.across = try connect(rank: machine, members: placement.machines.map { $0[localRank] }, spins: spins)
        } catch {
            built.local?.close()
            built.across?.close()
            ring.close()
            throw error
        }
        return HierarchicalCollective(ring: ring, placement: placement, local: built.local!, across: built.across!,
                                      config: config)
    }

    private init(ring: TCPRingCollective, placement: MachinePlacement, local: SharedMemoryCollective,
                 across: TCPRingCollective, config: RendezvousConfig) {
        rank = ring.rank
        worldSize = ring.worldSize
        self.placement = placement
        (machine, localRank) = placement.position(of: ring.rank)
        everyRank = ring
        self.local = local
        acrossMachines = across
        lanes = config.lanes
        minimumLaneBytes = config.minimumLaneBytes
    }

    deinit { close() }

    // MARK: Collective

    public func allReduceAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try reduce(buffer, count: count, slice: VectorSlice(offset: 0, wholeCount: count), divides: true)
    }

    public func allReduceAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int, slice: VectorSlice) throws {
        try reduce(buffer, count: count, slice: slice, divides: true)
    }

    /// Columns and both orders of summation are those of the whole vector.
    public var reducesSlicesAsWhole: Bool { true }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try reduce(buffer, count: count, slice: VectorSlice(offset: 0, wholeCount: count), divides: false)
    }

    /// Rank (machine m, local rank j) owns the elements of column j that the cross-machine
    /// ring's reduce-scatter leaves at rank m, so `allGather` is that ring's all-gather of
    /// the column followed by the machine's gather of columns.
    public func shard(count: Int, rank: Int) -> [Range<Int>] {
        let (machine, localRank) = placement.position(of: rank)
        let column = self.column(localRank, of: count)
        let lanesInUse = lanesUsed(count: column.count, elementBytes: 4, lanes: lanes, minimumLaneBytes: minimumLaneBytes)
        return ringShard(count: column.count, world: placement.machines.count, rank: machine, lanes: lanesInUse)
            .map { ($0.lowerBound + column.lowerBound)..<($0.upperBound + column.lowerBound) }
    }

    /// The all-reduce's first three steps: this rank's whole column ends reduced, its shard
    /// included, and the machine's gather of columns is left out. Across machines it is a
    /// whole all-reduce of the column: the ring has no reduce-scatter that sums without
    /// dividing by its own world size, and dividing twice (by M, then by L) would not give
    /// `allReduceAverage`'s bits.
    public func reduceScatterAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try reduce(buffer, count: count, slice: VectorSlice(offset: 0, wholeCount: count), divides: true, gathers: false)
    }

    public func allGather(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        guard count >= 0 else { throw CollectiveError.invalidArgument("count \(count) is negative") }
        try perform {
            let column = self.column(localRank, of: count)
            try acrossMachines.allGather(buffer + column.lowerBound, count: column.count)
            try local.gather(buffer, count: count, slice: VectorSlice(offset: 0, wholeCount: count),
                             owned: columns(ofCall: VectorSlice(offset: 0, wholeCount: count), count: count))
        }
    }

    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {
        guard (0..<worldSize).contains(root) else {
            throw CollectiveError.invalidArgument("broadcast root \(root) is outside 0..<\(worldSize)")
        }
        guard count >= 0 else { throw CollectiveError.invalidArgument("count \(count) is negative") }
        let (rootMachine, rootLocalRank) = placement.position(of: root)
        try perform {
            // The root's local index on every machine takes the data over its cross-machine
            // ring, then hands it to its machine's other ranks.
            if localRank == rootLocalRank { try acrossMachines.broadcast(buffer, count: count, root: rootMachine) }
            try local.broadcast(buffer, count: count, root: rootLocalRank)
        }
    }

    public func allReduceScalars(_ values: [Double]) throws -> [Double] {
        try perform { try everyRank.allReduceScalars(values) }
    }

    public func barrier() throws {
        try perform { try everyRank.barrier() }
    }

    /// Closes the three parts (peers still waiting for this rank fail at once). Safe to call twice.
    public func close() {
        callLock.withLock {
            if failure == nil { failure = "close() was called" }
            closeParts()
        }
    }

    // MARK: Calls

    /// Runs `body` as one call: refuses it after a failure, and closes every part when it fails.
    private func perform<Value>(_ body: () throws -> Value) throws -> Value {
        try callLock.withLock {
            if let failure { throw CollectiveError.closed(failure) }
            do {
                return try body()
            } catch {
                failure = "an earlier call failed: \(error)"
                closeParts()
                throw error
            }
        }
    }

    private func closeParts() {
        local.close()
        acrossMachines.close()
        everyRank.close()
    }

    /// The steps of an all-reduce of `buffer[0..<count]`, the elements at `slice.offset` of a
    /// vector of `slice.wholeCount`; without `gathers`, each rank ends with its column only.
    private func reduce(_ buffer: UnsafeMutablePointer<Float>, count: Int, slice: VectorSlice, divides: Bool,
                        gathers: Bool = true) throws {
        guard count >= 0 else { throw CollectiveError.invalidArgument("count \(count) is negative") }
        try slice.check(count: count)
        try perform {
            let owned = columns(ofCall: slice, count: count)
            let mine = owned[localRank]
            try local.reduceScatterSum(buffer, count: count, slice: slice, owned: owned)
            // Every member of this cross-machine ring computes the same (possibly empty) part.
            if !mine.isEmpty {
                let column = self.column(localRank, of: slice.wholeCount)
                try acrossMachines.allReduceSum(buffer + mine.lowerBound, count: mine.count,
                                                slice: VectorSlice(offset: slice.offset + mine.lowerBound - column.lowerBound,
                                                                   wholeCount: column.count))
            }
            if divides {
                // One division of the finished sum, as the ring's last add of a mean.
                let divisor = Float(worldSize)
                for index in mine { buffer[index] /= divisor }
            }
            if gathers { try local.gather(buffer, count: count, slice: slice, owned: owned) }
        }
    }

    /// Column `localRank` of a vector of `count`: [j·n/L, (j+1)·n/L).
    private func column(_ localRank: Int, of count: Int) -> Range<Int> {
        let ranks = placement.ranksPerMachine!
        return (localRank * count / ranks)..<((localRank + 1) * count / ranks)
    }

    /// Each local rank's column within a call of `count` elements at `slice.offset` of the
    /// whole, in the call's element numbers (empty where the call misses the column).
    private func columns(ofCall slice: VectorSlice, count: Int) -> [Range<Int>] {
        (0..<placement.ranksPerMachine!).map { localRank in
            let column = self.column(localRank, of: slice.wholeCount)
            let first = min(max(column.lowerBound - slice.offset, 0), count)
            let end = min(max(column.upperBound - slice.offset, first), count)
            return first..<end
        }
    }
}

/// Which ranks share a machine: ranks that announced the same host do.
public struct MachinePlacement: Equatable, Sendable, CustomStringConvertible {
    /// The ranks of each machine in increasing order; machines in the order of their lowest rank.
    public let machines: [[Int]]

    /// Groups ranks by the host each announced (`rankHosts[rank]`).
    public init(rankHosts: [String]) {
        var machines: [[Int]] = []
        var machineOfHost: [String: Int] = [:]
        for (rank, host) in rankHosts.enumerated() {
            if let machine = machineOfHost[host] {
                machines[machine].append(rank)
            } else {
                machineOfHost[host] = machines.count
                machines.append([rank])
            }
        }
        self.machines = machines
    }

    /// The number of ranks on each machine when every machine has the same, else nil.
    public var ranksPerMachine: Int? {
        guard let first = machines.first, machines.allSatisfy({ $0.count == first.count }) else { return nil }
        return first.count
    }

    /// Whether the hierarchy has two levels: two machines or more, of two ranks or more, equally many.
    public var supportsHierarchy: Bool { machines.count >= 2 && (ranksPerMachine ?? 0) >= 2 }

    /// The machine of `rank` and its index among that machine's ranks.
    public func position(of rank: Int) -> (machine: Int, localRank: Int) {
        for (machine, ranks) in machines.enumerated() {
            if let localRank = ranks.firstIndex(of: rank) { return (machine, localRank) }
        }
        preconditionFailure("rank \(rank) is not placed on any machine")
    }

    /// "[0, 1] [2, 3]": the ranks of each machine.
    public var description: String { machines.map { "\($0)" }.joined(separator: " ") }
}
