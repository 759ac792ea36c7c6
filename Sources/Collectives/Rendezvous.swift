/// Rendezvous: how the ranks of a ring find each other.
///
/// Rank 0 (or the launcher) hosts a tiny service at a known address. Every rank
/// binds its ring listener on a port the kernel picks, registers (rank, host, port)
/// there with the generation and a proof of the job token (`RingAuthentication`: a
/// nonce and an HMAC; the token never crosses the wire), and receives the full table
/// once all ranks have registered, with the service's proof over its nonce and the
/// table. A registration without the proof, a replayed one, an old generation, another
/// world size or a rank that is already taken is refused and logged; the service
/// keeps waiting for the real rank. Everything has a timeout.
import Dispatch
import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// How one rank joins a TCP ring.
public struct RendezvousConfig: Sendable {
    /// This process's rank, 0..<worldSize.
    public var rank: Int
    /// Number of ranks.
    public var worldSize: Int
    /// The rendezvous service, "host:port"; rank 0 hosts it unless `hostsRendezvous` is false.
    public var address: String
    /// A secret shared by the ranks of one job; connections that do not know it are refused.
    public var jobToken: String
    /// The job's restart counter; processes of another generation are refused.
    public var generation: Int
    /// Limit for the rendezvous, and for every collective call without progress.
    public var timeoutSeconds: Double
    /// Address this rank's ring listener binds to and announces to the others.
    public var listenHost: String
    /// Whether this process hosts the rendezvous service (default: rank 0). A launcher
    /// that hosts it itself (`RendezvousServer`) sets this to false for every rank.
    public var hostsRendezvous: Bool
    /// Bytes moved per send or receive and the size of the reduction scratch buffer.
    public var segmentBytes: Int
    /// SO_SNDBUF and SO_RCVBUF of the ring sockets; 0 leaves them to the kernel's autotuning.
    public var socketBufferBytes: Int
    /// Whether a second thread sends while the calling thread receives and reduces;
    /// otherwise one thread alternates between the two (the default: on loopback it
    /// did as well or better, and it is the thread that can wait by spinning).
    public var sendsOnSeparateThread: Bool
    /// Independent rings (each with its own connections and threads) that a call's
    /// elements are divided over; more lanes keep more cores copying. Every rank must
    /// use the same count.
    public var lanes: Int
    /// How many times a waiting ring thread retries its sockets (without a sender
    /// thread) before it sleeps in `poll`; nil chooses: `automaticSpins` when this
    /// machine has a core for each of its ranks, else 0. Spinning spares the peer the
    /// wake-up of a sleeping receiver, which in a virtual machine is an interprocessor
    /// interrupt: two ranks on two cores all-reduce 1.2–1.3× faster (docs/PERFORMANCE.md).
    /// With more ranks than cores it would take the core another rank needs.
    public var spinsBeforeSleeping: Int?
    /// Calls with fewer bytes than this per lane use fewer lanes.
    public var minimumLaneBytes: Int
    /// The TCP congestion control of the ring connections (see `CongestionControl`).
    public var congestionControl: CongestionControl

    public init(rank: Int, worldSize: Int, address: String = "127.0.0.1:29500", jobToken: String,
                generation: Int = 0, timeoutSeconds: Double = 30, listenHost: String = "127.0.0.1",
                hostsRendezvous: Bool? = nil, segmentBytes: Int = 4 << 20, socketBufferBytes: Int = 1 << 20,
                sendsOnSeparateThread: Bool = false, lanes: Int = 1, minimumLaneBytes: Int = 1 << 20,
                spinsBeforeSleeping: Int? = nil, congestionControl: CongestionControl = .automatic) {
        self.rank = rank
        self.worldSize = worldSize
        self.address = address
        self.jobToken = jobToken
        self.generation = generation
        self.timeoutSeconds = timeoutSeconds
        self.listenHost = listenHost
        self.hostsRendezvous = hostsRendezvous ?? (rank == 0)
        self.segmentBytes = segmentBytes
        self.socketBufferBytes = socketBufferBytes
        self.sendsOnSeparateThread = sendsOnSeparateThread
        self.lanes = lanes
        self.minimumLaneBytes = minimumLaneBytes
        self.spinsBeforeSleeping = spinsBeforeSleeping
        self.congestionControl = congestionControl
    }

    /// The spins `spinsBeforeSleeping == nil` chooses where each rank has a core:
    /// about 0.1–0.2 s of retries (two non-blocking system calls each) before sleeping.
    public static let automaticSpins = 100_000

    /// Throws `invalidArgument` naming the first bad field.
    func validate() throws {
        guard worldSize >= 1 else { throw CollectiveError.invalidArgument("world size \(worldSize) must be at least 1") }
        guard (0..<worldSize).contains(rank) else {
            throw CollectiveError.invalidArgument("rank \(rank) is outside 0..<\(worldSize)")
        }
        guard !jobToken.isEmpty, jobToken.utf8.count <= Hello.maximumStringBytes else {
            throw CollectiveError.invalidArgument("job token must have 1...\(Hello.maximumStringBytes) bytes")
        }
        guard generation >= 0 else { throw CollectiveError.invalidArgument("generation \(generation) is negative") }
        guard timeoutSeconds > 0, timeoutSeconds.isFinite else {
            throw CollectiveError.invalidArgument("timeout \(timeoutSeconds) s must be positive")
        }
        guard segmentBytes >= 4096 else {
            throw CollectiveError.invalidArgument("segment of \(segmentBytes) bytes is below the 4096-byte minimum")
        }
        guard minimumLaneBytes >= 1 else {
            throw CollectiveError.invalidArgument("minimum lane bytes \(minimumLaneBytes) must be positive")
        }
        guard (1...16).contains(lanes) else { throw CollectiveError.invalidArgument("lanes \(lanes) must be in 1...16") }
        guard socketBufferBytes >= 0 else {
            throw CollectiveError.invalidArgument("socket buffer of \(socketBufferBytes) bytes is negative")
        }
        _ = try SocketAddress(parsing: address)
    }
}

/// Writes one line to standard error (refused connections are logged, never fatal).
func logCollective(_ message: String) {
    var standardError = FileHandleStream.standardError
    print("collectives: \(message)", to: &standardError)
}

/// The rendezvous service: collects every rank's ring address and hands the table out.
///
/// Runs on its own thread from `init` until the table has been sent to every rank,
/// the timeout passes or `close()` is called.
public final class RendezvousServer: @unchecked Sendable {
    /// Where the service listens (with the actual port when 0 was asked for).
    public let address: SocketAddress
    private let listener: Socket
    private let worldSize: Int
    private var authentication: RingAuthentication
    private let generation: UInt64
    private let timeoutSeconds: Double
    private let finished = DispatchSemaphore(value: 0)
    private var outcome: CollectiveError?
    private let stopRequested = AtomicFlag()

    /// Binds `address` (port 0 picks a free port) and starts serving.
    public init(address: SocketAddress, worldSize: Int, jobToken: String, generation: Int, timeoutSeconds: Double) throws {
        listener = try Socket.listening(on: address)
        self.address = SocketAddress(host: address.host, port: try listener.localPort(context: "rendezvous service"))
        self.worldSize = worldSize
        authentication = RingAuthentication(key: Array(jobToken.utf8), domain: RingAuthentication.rendezvousDomain)
        self.generation = UInt64(generation)
        self.timeoutSeconds = timeoutSeconds
        DispatchQueue.global().async { [self] in
            do { try serve() } catch let error as CollectiveError { outcome = error } catch {
                outcome = .rendezvous("\(error)")
            }
            listener.close()
            finished.signal()
        }
    }

    /// Waits until the service has finished; throws what made it fail.
    public func wait() throws {
        finished.wait()
        finished.signal()
        if let outcome { throw outcome }
    }

    /// Stops waiting for registrations (the service thread ends within 0.2 s).
    public func close() { stopRequested.value = true }

    private struct Registration {
        let socket: Socket
        let host: String
        let port: Int
        /// The registrant's nonce, which the service's proof answers.
        let nonce: [UInt8]
    }

    private func serve() throws {
        let deadline = Deadline.after(seconds: timeoutSeconds)
        var registered = [Registration?](repeating: nil, count: worldSize)
        while registered.contains(where: { $0 == nil }) {
            if stopRequested.value { throw CollectiveError.rendezvous("the service was closed") }
            if deadline.hasPassed {
                let missing = registered.indices.filter { registered[$0] == nil }
                let reason = "ranks \(missing) did not register within \(timeoutSeconds) s"
                for case let registration? in registered {
                    try? registration.socket.sendAll(HandshakeReply.rejection(reason), until: .after(seconds: 1),
                                                     context: "rendezvous service")
                }
                throw CollectiveError.rendezvous(reason)
            }
            // Wake up every 0.2 s to notice close() and the deadline.
            let slice = Deadline(time: min(deadline.time, monotonicSeconds() + 0.2))
            guard let connection = try listener.accept(until: slice, context: "rendezvous service") else { continue }
            // A silent client may hold us at most 5 s, then the others get their turn.
            let helloDeadline = Deadline(time: min(deadline.time, monotonicSeconds() + 5))
            let context = "rendezvous registration"
            do {
                let hello = try Hello.read(.rendezvous, from: connection, until: helloDeadline, context: context)
                // The proof first: a stranger learns nothing about the job from the answer.
                var reason: String?, nonce: [UInt8] = []
                switch authentication.admit(hello) {
                case let .success(admitted): nonce = admitted
                case let .failure(failure): reason = failure.description
                }
                if reason == nil {
                    reason = hello.rejection(token: nil, generation: generation, worldSize: worldSize, expectedRank: nil)
                }
                if reason == nil, registered[hello.rank] != nil { reason = "rank \(hello.rank) has already registered" }
                if reason == nil, !(1...65535).contains(hello.port) { reason = "listener port \(hello.port) is invalid" }
                if let reason {
                    logCollective("rendezvous refused a registration (rank \(hello.rank)): \(reason)")
                    try? connection.sendAll(HandshakeReply.rejection(reason), until: helloDeadline, context: context)
                    connection.close()
                    continue
                }
                registered[hello.rank] = Registration(socket: connection, host: hello.host, port: hello.port, nonce: nonce)
            } catch {
                logCollective("rendezvous dropped a connection: \(error)")
                connection.close()
            }
        }
        let table = encodedRendezvousTable(registered.compactMap { $0 }.map { SocketAddress(host: $0.host, port: $0.port) })
        for case let registration? in registered {
            var answer = Hello(purpose: .rendezvous, generation: generation, worldSize: worldSize, rank: 0, token: [])
            answer.token = authentication.acceptToken(for: answer, connectorNonce: registration.nonce, payload: table)
            var message = WireWriter()
            message.append(HandshakeReply.accepted)
            message.append(bytes: answer.encoded())
            message.append(bytes: table)
            // A rank that died meanwhile fails here; the others notice when they build the ring.
            try? registration.socket.sendAll(message.bytes, until: deadline, context: "rendezvous table")
            registration.socket.close()
        }
    }
}

/// The rendezvous table as it travels (and as the service's proof covers it): the count,
/// then each rank's host and port.
func encodedRendezvousTable(_ addresses: [SocketAddress]) -> [UInt8] {
    var table = WireWriter()
    table.append(UInt32(addresses.count))
    for address in addresses {
        table.append(string: Array(address.host.utf8))
        table.append(UInt16(address.port))
    }
    return table.bytes
}

/// Registers this rank's ring listener with the rendezvous service and returns
/// every rank's ring address, indexed by rank. The table is taken only with the
/// service's proof of the job token over this registration's nonce and the table.
func exchangeRingAddresses(_ config: RendezvousConfig, listenerPort: Int, deadline: Deadline) throws -> [SocketAddress] {
    let service = try SocketAddress(parsing: config.address)
    let context = "rank \(config.rank) registering with the rendezvous at \(service)"
    let authentication = RingAuthentication(key: Array(config.jobToken.utf8), domain: RingAuthentication.rendezvousDomain)
    let socket = try Socket.connect(to: service, deadline: deadline, context: context)
    defer { socket.close() }
    var hello = Hello(purpose: .rendezvous, generation: UInt64(config.generation), worldSize: config.worldSize,
                      rank: config.rank, token: [], host: config.listenHost, port: listenerPort)
    hello.token = try authentication.connectToken(for: hello)
    let nonce = Array(hello.token.prefix(RingAuthentication.nonceBytes))
    try socket.sendAll(hello.encoded(), until: deadline, context: context)
    do {
        try HandshakeReply.readStatus(from: socket, until: deadline, context: context)
    } catch let CollectiveError.handshakeRejected(reason) {
        throw CollectiveError.rendezvous(reason)
    }
    let serviceHello = try Hello.read(.rendezvous, from: socket, until: deadline, context: context)
    if let reason = serviceHello.rejection(token: nil, generation: UInt64(config.generation),
                                           worldSize: config.worldSize, expectedRank: nil) {
        throw CollectiveError.handshakeRejected("\(context): the service is not of this job: \(reason)")
    }
    var countReader = WireReader(try socket.receiveExactly(4, until: deadline, context: context))
    let count = Int(try countReader.uint32())
    guard count == config.worldSize else {
        throw CollectiveError.rendezvous("\(context): table has \(count) ranks, expected \(config.worldSize)")
    }
    var addresses: [SocketAddress] = []
    for _ in 0..<count {
        var lengthReader = WireReader(try socket.receiveExactly(2, until: deadline, context: context))
        let length = Int(try lengthReader.uint16())
        guard length <= Hello.maximumStringBytes else {
            throw CollectiveError.rendezvous("\(context): host name of \(length) bytes in the table")
        }
        let host = String(decoding: try socket.receiveExactly(length, until: deadline, context: context), as: UTF8.self)
        var portReader = WireReader(try socket.receiveExactly(2, until: deadline, context: context))
        addresses.append(SocketAddress(host: host, port: Int(try portReader.uint16())))
    }
    guard authentication.verifyAccept(serviceHello, connectorNonce: nonce, payload: encodedRendezvousTable(addresses)) else {
        throw CollectiveError.handshakeRejected(
            "\(context): the service's answer does not prove the job token (another job's service, or a forged table)")
    }
    return addresses
}
