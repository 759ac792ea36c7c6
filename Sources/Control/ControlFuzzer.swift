import Collectives
import Foundation
import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// Sends random and mutated messages to a live coordinator and checks after each round that
/// it still answers a real `status`: the control protocol's fuzzer (`mae-coordinator fuzz`).
///
/// It first records a real session (challenge, hello, welcome, status request) with the
/// secret, then sends, each on a fresh connection, one of the `Kind`s below: mutations of the
/// recorded frames (a bit flip, a cut, an oversized length, the wrong order, a replay of the
/// recorded hello), random bytes, and slow senders (one byte a second for a bounded time).
/// Every case either is refused (the coordinator closes the connection) or is harmless.
/// Randomness is counter-based and keyed by `seed`, so a failing sequence replays exactly.
public struct ControlFuzzer {
    /// One kind of hostile or broken connection.
    public enum Kind: String, CaseIterable, Sendable {
        /// Random bytes (with a plausible length prefix or none).
        case randomBytes = "random-bytes"
        /// The recorded hello with one bit flipped (in the length or the JSON).
        case flippedHello = "flipped-hello"
        /// The recorded hello cut short, then the connection closed.
        case truncatedHello = "truncated-hello"
        /// A length prefix above the limit (before or after authentication).
        case oversizedLength = "oversized-length"
        /// A message that is not a hello first (status request, welcome, a worker's heartbeat).
        case wrongOrder = "wrong-order"
        /// The recorded hello sent again: its proof answers an old nonce.
        case replayedHello = "replayed-hello"
        /// JSON nested deeper than any message, within the size limit.
        case deepJSON = "deep-json"
        /// After a real handshake as a command: a recorded status request mutated (flip or cut).
        case mutatedAfterAuthentication = "mutated-after-authentication"
        /// One byte a second of the recorded hello, for at most `slowSeconds`.
        case slowSender = "slow-sender"
    }

    /// What a run did.
    public struct Report: Sendable {
        /// Connections sent, by kind.
        public var sent: [Kind: Int] = [:]
        /// Connections the coordinator closed or refused (the expected answer to all but harmless mutations).
        public var refused = 0
        /// Real status requests answered between the rounds.
        public var statusAnswers = 0
        public var messages: Int { sent.values.reduce(0, +) }

        public var text: String {
            Kind.allCases.map { "\($0.rawValue) \(sent[$0] ?? 0)" }.joined(separator: ", ")
                + "; \(messages) connections, \(refused) refused or closed by the coordinator, \(statusAnswers) status answers"
        }
    }

    let address: SocketAddress
    let secret: [UInt8]
    let seed: UInt64
    /// The longest a slow sender dribbles (the coordinator drops it after 5 s).
    let slowSeconds: Double

    public init(address: SocketAddress, secret: [UInt8], seed: UInt64, slowSeconds: Double = 7) {
        self.address = address
        self.secret = secret
        self.seed = seed
        self.slowSeconds = slowSeconds
    }

    /// Sends `count` connections (at most `seconds` long in all), one `status` after every
    /// `statusEvery`; throws as soon as the coordinator stops answering a real status.
    /// Slow senders run on a thread of their own beside the others, so they also show that
    /// one slow peer blocks nobody.
    public func run(count: Int, seconds: Double, statusEvery: Int = 10, log: (String) -> Void = { _ in }) throws -> Report {
        let recorded = try recordSession()
        var report = Report()
        var random = CounterRandom(seed: seed, purpose: .faults)
        let end = monotonicSeconds() + seconds
        let slow = SlowSenders()
        defer { slow.waitForAll() }
        for index in 0..<count where monotonicSeconds() < end {
            let kind = Kind.allCases[random.nextInt(below: Kind.allCases.count)]
            report.sent[kind, default: 0] += 1
            if kind == .slowSender {
                slow.start(bytes: Frame.encode(recorded.hello), to: address, seconds: slowSeconds)
            } else if try send(kind, recorded: recorded, random: &random) {
                report.refused += 1
            }
            if (index + 1) % statusEvery == 0 || index + 1 == count {
                try checkStatus(after: kind, index: index)
                report.statusAnswers += 1
                log("fuzz: \(index + 1) connections, coordinator answers")
            }
        }
        slow.waitForAll()
        report.refused += slow.closedByPeer
        try checkStatus(after: .slowSender, index: count)
        report.statusAnswers += 1
        return report
    }

    // MARK: Recording

    struct Recorded {
        /// The payloads of a real session: the hello we sent and a status request.
        var hello: [UInt8]
        var statusRequest: [UInt8]
        /// A message no command may send (a worker's heartbeat) and a coordinator's message.
        var heartbeat: [UInt8]
        var welcome: [UInt8]
    }

    /// A real handshake and status request, as the bytes on the wire.
    func recordSession() throws -> Recorded {
        let connection = ControlConnection(socket: try Socket.connect(to: address, deadline: .after(seconds: 5),
                                                                      context: "fuzzer connecting"),
                                           peer: "the coordinator at \(address)")
        defer { connection.close() }
        guard case .challenge(let nonce)? = try connection.receive(until: .after(seconds: 5)) else {
            throw ControlError("\(address) sent no challenge: is it a mae-coordinator?")
        }
        let introduction = Introduction(role: .control, proof: Authentication.proof(secret: secret, nonce: nonce, role: .control),
                                        nonce: try Authentication.nonce(), host: "fuzzer", pid: getpid())
        let hello = try ControlMessage.hello(introduction).encoded()
        try connection.send(.hello(introduction))
        guard case .welcome(let proof)? = try connection.receive(until: .after(seconds: 5)) else {
            throw ControlError("\(address) did not welcome the fuzzer's real hello: wrong secret?")
        }
        return Recorded(hello: hello, statusRequest: try ControlMessage.statusRequest.encoded(),
                        heartbeat: try ControlMessage.heartbeat(report: nil).encoded(),
                        welcome: try ControlMessage.welcome(proof: proof).encoded())
    }

    // MARK: Cases

    /// Sends one case; true when the coordinator closed or refused the connection.
    func send(_ kind: Kind, recorded: Recorded, random: inout CounterRandom) throws -> Bool {
        let connection = try Socket.connect(to: address, deadline: .after(seconds: 5), context: "fuzzer connecting")
        defer { connection.close() }
        var bytes: [UInt8]
        switch kind {
        case .randomBytes:
            bytes = (0..<random.nextInt(below: 64) + 1).map { _ in UInt8(truncatingIfNeeded: random.nextUInt32()) }
            if random.nextInt(below: 2) == 0 { bytes = Frame.encode(bytes) }
        case .flippedHello:
            bytes = Frame.encode(recorded.hello)
            let bit = random.nextInt(below: bytes.count * 8)
            bytes[bit / 8] ^= UInt8(1 << (bit % 8))
        case .truncatedHello:
            bytes = Array(Frame.encode(recorded.hello).prefix(random.nextInt(below: recorded.hello.count + 4)))
        case .oversizedLength:
            let length = [Frame.maximumUnauthenticatedBytes + 1, Frame.maximumBytes + 1, Int(UInt32.max), 0][random.nextInt(below: 4)]
            bytes = [UInt8(truncatingIfNeeded: length >> 24), UInt8(truncatingIfNeeded: length >> 16),
                     UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length)] + Array(recorded.hello.prefix(64))
        case .wrongOrder:
            bytes = Frame.encode([recorded.statusRequest, recorded.heartbeat, recorded.welcome][random.nextInt(below: 3)])
                + Frame.encode(recorded.hello)
        case .replayedHello:
            bytes = Frame.encode(recorded.hello)
        case .deepJSON:
            let depth = random.nextInt(below: 1500) + 500
            bytes = Frame.encode(Array((String(repeating: "[", count: depth) + String(repeating: "]", count: depth)).utf8))
        case .mutatedAfterAuthentication:
            return try sendAfterAuthentication(recorded: recorded, random: &random)
        case .slowSender:
            preconditionFailure("slow senders run on their own thread")
        }
        // The challenge arrives first; then what we send and the end of our stream, then we wait
        // for the close or a refusal (a cut frame is answered by our end of stream, not a timeout).
        try? connection.sendAll(bytes, until: .after(seconds: 2), context: "fuzzer sending \(kind.rawValue)")
        connection.shutdownWriting()
        return Self.waitForClose(connection, seconds: 6)
    }

    /// A real handshake as a command, then a mutated status request (or an oversized frame).
    func sendAfterAuthentication(recorded: Recorded, random: inout CounterRandom) throws -> Bool {
        let introduction = Introduction(role: .control, proof: "", nonce: "", host: "fuzzer", pid: getpid())
        let connection = try Authentication.connect(to: address, secret: secret, introduction: introduction,
                                                    deadline: .after(seconds: 5))
        defer { connection.close() }
        var bytes = Frame.encode(recorded.statusRequest)
        switch random.nextInt(below: 3) {
        case 0:
            let bit = random.nextInt(below: bytes.count * 8)
            bytes[bit / 8] ^= UInt8(1 << (bit % 8))
        case 1:
            bytes = Array(bytes.prefix(random.nextInt(below: bytes.count)))
        default:
            bytes = [0x7f, 0xff, 0xff, 0xff] + bytes
        }
        try? connection.socket.sendAll(bytes, until: .after(seconds: 2), context: "fuzzer sending after the handshake")
        // A mutation that still decodes as a status request is answered; anything else closes the connection.
        connection.socket.shutdownWriting()
        return Self.waitForClose(connection.socket, seconds: 6)
    }

    /// Reads until the peer closes (true) or `seconds` pass (false).
    static func waitForClose(_ socket: Socket, seconds: Double) -> Bool {
        let deadline = Deadline.after(seconds: seconds)
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            guard let ready = try? socket.wait(for: Int16(POLLIN), until: deadline, context: "fuzzer"), ready else { return false }
            do {
                _ = try chunk.withUnsafeMutableBytes { try socket.receiveSome($0.baseAddress!, count: $0.count, context: "fuzzer") }
            } catch {
                return true
            }
        }
    }

    /// A real status request must still be answered.
    func checkStatus(after kind: Kind, index: Int) throws {
        let introduction = Introduction(role: .control, proof: "", nonce: "", host: "fuzzer", pid: getpid())
        do {
            let connection = try Authentication.connect(to: address, secret: secret, introduction: introduction,
                                                        deadline: .after(seconds: 5))
            defer { connection.close() }
            try connection.send(.statusRequest)
            guard case .status? = try connection.receive(until: .after(seconds: 5)) else {
                throw ControlError("no status within 5 s")
            }
        } catch {
            throw ControlError("the coordinator at \(address) no longer answers a status after fuzz connection \(index + 1) "
                               + "(\(kind.rawValue), seed \(seed)): \(error)")
        }
    }
}

/// Slow senders beside the fuzzer's other connections: each dribbles one byte a second.
final class SlowSenders: @unchecked Sendable {
    private let lock = NSLock()
    private var threads: [Thread] = []
    private var running = 0
    private(set) var closedByPeer = 0

    func start(bytes: [UInt8], to address: SocketAddress, seconds: Double) {
        lock.lock()
        running += 1
        lock.unlock()
        let thread = Thread { [self] in
            var closed = false
            if let socket = try? Socket.connect(to: address, deadline: .after(seconds: 5), context: "slow sender") {
                let end = monotonicSeconds() + seconds
                for byte in bytes where monotonicSeconds() < end {
                    if (try? socket.sendAll([byte], until: .after(seconds: 1), context: "slow sender")) == nil { closed = true; break }
                    // The coordinator's challenge is read away; its close shows as end of stream.
                    if ControlFuzzer.waitForClose(socket, seconds: 1) { closed = true; break }
                }
                socket.close()
            }
            lock.lock()
            running -= 1
            if closed { closedByPeer += 1 }
            lock.unlock()
        }
        thread.start()
    }

    /// Waits (bounded by the senders' own limits) until every slow sender ended.
    func waitForAll() {
        while true {
            lock.lock()
            let left = running
            lock.unlock()
            if left == 0 { return }
            usleep(50_000)
        }
    }
}
