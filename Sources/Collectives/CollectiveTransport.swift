/// How the ranks of a job move their bytes: the TCP ring, shared memory, both in a
/// hierarchy, or the choice made from where the ranks are.
public enum CollectiveTransport: String, CaseIterable, Sendable, CustomStringConvertible {
    /// The TCP ring (`TCPRingCollective`), within a machine and across machines.
    case ring
    /// One shared segment (`SharedMemoryCollective`); every rank must be on this machine.
    case sharedMemory = "shm"
    /// Shared memory inside each machine, a TCP ring per local rank across machines
    /// (`HierarchicalCollective`); needs machines with equal numbers of ranks.
    case hierarchical
    /// Shared memory when every rank announced this machine's address; hierarchical when
    /// the ranks span machines with equally many ranks, two or more each; else the ring.
    case automatic = "auto"

    public var description: String { rawValue }

    /// The `--transport` value `text`; `fail` makes the error for anything else.
    public static func parse(_ text: String, fail: (String) -> Error) throws -> CollectiveTransport {
        guard let transport = CollectiveTransport(rawValue: text) else {
            throw fail("--transport expects ring, shm, hierarchical or auto, got '\(text)'")
        }
        return transport
    }

    /// Joins through the rendezvous service (`TCPRingCollective.connect`) and then, if
    /// this transport asks for it, moves to shared memory over the joined ring.
    public func connect(_ config: RendezvousConfig, sharedMemorySlotBytes: Int = SharedMemoryCollective.defaultSlotBytes)
        throws -> any Collective {
        try upgrade(try TCPRingCollective.connect(config), config, sharedMemorySlotBytes)
    }

    /// Joins with the addresses from `exchangeAddresses` (the coordinator's table), as
    /// `TCPRingCollective.connect(_:exchangeAddresses:)`, then as `connect(_:)`.
    public func connect(_ config: RendezvousConfig,
                        exchangeAddresses: (_ listenerPort: Int) throws -> [SocketAddress]) throws -> any Collective {
        try upgrade(try TCPRingCollective.connect(config, exchangeAddresses: exchangeAddresses), config,
                    SharedMemoryCollective.defaultSlotBytes)
    }

    /// The ring itself, or the collective set up through it. Every rank decides the same:
    /// the address table, and so the placement of ranks on machines, is the same on all.
    private func upgrade(_ ring: TCPRingCollective, _ config: RendezvousConfig, _ slotBytes: Int) throws -> any Collective {
        let placement = MachinePlacement(rankHosts: ring.rankHosts)
        let everyRankHere = placement.machines.count == 1
        switch self {
        case .ring: return ring
        case _ where ring.worldSize == 1: return ring
        case .sharedMemory:
            return try SharedMemoryCollective.join(over: ring, config: config, slotBytes: slotBytes)
        case .automatic, .hierarchical:
            if placement.supportsHierarchy {
                return try HierarchicalCollective.join(over: ring, config: config, slotBytes: slotBytes)
            }
            if everyRankHere {
                if self == .hierarchical && ring.rank == 0 {
                    logCollective("--transport hierarchical: every rank is on one machine, so shared memory alone")
                }
                return try SharedMemoryCollective.join(over: ring, config: config, slotBytes: slotBytes)
            }
            // One rank per machine has nothing to share; unequal machines would leave some
            // columns without a rank on some machines: the flat ring serves both.
            if ring.rank == 0 && (self == .hierarchical || placement.ranksPerMachine == nil) {
                logCollective("--transport \(self): ranks per machine are \(placement) (a hierarchy needs two or more "
                    + "machines with equally many ranks, two or more each), so the flat TCP ring")
            }
            return ring
        }
    }
}
