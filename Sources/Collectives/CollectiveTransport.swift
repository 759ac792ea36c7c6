/// How the ranks of a job move their bytes: the TCP ring, shared memory, or the
/// choice made from where the ranks are.
public enum CollectiveTransport: String, CaseIterable, Sendable, CustomStringConvertible {
    /// The TCP ring (`TCPRingCollective`), within a machine and across machines.
    case ring
    /// One shared segment (`SharedMemoryCollective`); every rank must be on this machine.
    case sharedMemory = "shm"
    /// Shared memory when every rank announced this machine's address, else the ring.
    case automatic = "auto"

    public var description: String { rawValue }

    /// The `--transport` value `text`; `fail` makes the error for anything else.
    public static func parse(_ text: String, fail: (String) -> Error) throws -> CollectiveTransport {
        guard let transport = CollectiveTransport(rawValue: text) else {
            throw fail("--transport expects ring, shm or auto, got '\(text)'")
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

    /// The ring itself, or the shared-memory collective set up through it. Every rank
    /// decides the same: the address table, and so `ranksOnThisHost == worldSize`, is
    /// the same on all of them.
    private func upgrade(_ ring: TCPRingCollective, _ config: RendezvousConfig, _ slotBytes: Int) throws -> any Collective {
        let everyRankHere = ring.ranksOnThisHost == ring.worldSize
        switch self {
        case .ring: return ring
        case .automatic where !everyRankHere || ring.worldSize == 1: return ring
        case .sharedMemory where ring.worldSize == 1: return ring
        case .sharedMemory, .automatic:
            return try SharedMemoryCollective.join(over: ring, config: config, slotBytes: slotBytes)
        }
    }
}
