/// Ring all-reduce over TCP, the bandwidth-optimal algorithm.
///
/// N ranks in a ring; each sends to rank+1 and receives from rank−1 over two
/// connections. The buffer is cut into N chunks; chunk c holds elements
/// [c·n/N, (c+1)·n/N). Reduce-scatter: at step s (0..<N−1) rank i sends chunk
/// (i−s) mod N and adds the chunk (i−s−1) mod N that arrives into its own; after
/// N−1 steps rank i holds the finished chunk (i+1) mod N. All-gather: N−1 more
/// steps forward finished chunks, which are stored as they arrive. Each rank sends
/// and receives 2(N−1)/N of the buffer.
///
/// The steps are not separated by waits: the transfer is one stream per direction.
/// Bytes of step s are sent as soon as the same bytes of step s−1 have arrived and
/// been reduced, so a chunk flows through in pieces of at most `segmentBytes` while
/// the next piece is on the wire. One thread drives both directions with
/// non-blocking sockets and `poll`, reducing each received piece from a small
/// cache-resident scratch buffer. Nothing is allocated per call.
///
/// Determinism: element e of chunk c is summed in ring order starting at rank c,
/// ((x_c + x_{c+1}) + x_{c+2}) + … + x_{c−1}, and a mean divides that sum by N.
/// The order depends only on N and the element's position, so results are the
/// same bits run to run and on every rank.
///
/// Every call starts with a small header (operation, sequence number, count,
/// root) that each rank checks against its own, so calls that differ between
/// ranks fail loudly instead of mixing data.
import Kernels
#if canImport(Glibc)
import Glibc
#endif

public final class TCPRingCollective: Collective {
    public let rank: Int
    public let worldSize: Int
    /// Limit for a call without progress (seconds).
    public let timeoutSeconds: Double
    private let segmentBytes: Int
    private var sendSocket: Socket?     // to rank + 1
    private var receiveSocket: Socket?  // from rank − 1
    /// Receives land here before they are added into the buffer; `segmentBytes` long.
    private let scratch: UnsafeMutableRawPointer
    private let callLock = Lock()
    private var sequence: UInt64 = 0
    private var failure: String?
    private let pollEntries = UnsafeMutablePointer<pollfd>.allocate(capacity: 2)
    private var headerOut = [UInt8](repeating: 0, count: CallHeader.bytes)
    private var headerIn = [UInt8](repeating: 0, count: CallHeader.bytes)

    // MARK: Joining

    /// Joins the ring: binds a listener, registers with the rendezvous (hosting it
    /// when `config.hostsRendezvous`), connects to rank+1 and accepts rank−1, both
    /// with the token/generation handshake. Throws within `config.timeoutSeconds`.
    public static func connect(_ config: RendezvousConfig) throws -> TCPRingCollective {
        try config.validate()
        let deadline = Deadline.after(seconds: config.timeoutSeconds)
        if config.worldSize == 1 {
            return try TCPRingCollective(rank: 0, worldSize: 1, sendSocket: nil, receiveSocket: nil, config: config)
        }
        var server: RendezvousServer?
        if config.hostsRendezvous {
            server = try RendezvousServer(address: try SocketAddress(parsing: config.address), worldSize: config.worldSize,
                                          jobToken: config.jobToken, generation: config.generation,
                                          timeoutSeconds: config.timeoutSeconds)
        }
        defer { server?.close() }
        let listener = try Socket.listening(on: SocketAddress(host: config.listenHost, port: 0))
        defer { listener.close() }
        let port = try listener.localPort(context: "ring listener")
        let addresses = try exchangeRingAddresses(config, listenerPort: port, deadline: deadline)
        return try formRing(config, listener: listener, addresses: addresses, deadline: deadline)
    }

    /// Connects to the right neighbour and accepts the left one on `listener`,
    /// given every rank's listener address. Connections that fail the handshake are
    /// refused, logged and never join; accepting continues until the real left
    /// neighbour arrives or `deadline` passes.
    static func formRing(_ config: RendezvousConfig, listener: Socket, addresses: [SocketAddress],
                         deadline: Deadline) throws -> TCPRingCollective {
        let rank = config.rank, world = config.worldSize
        let right = (rank + 1) % world, left = (rank + world - 1) % world
        let token = Array(config.jobToken.utf8), generation = UInt64(config.generation)
        let ownHello = Hello(purpose: .ring, generation: generation, worldSize: world, rank: rank, token: token)

        let rightContext = "rank \(rank) connecting to rank \(right) at \(addresses[right])"
        let toRight = try Socket.connect(to: addresses[right], deadline: deadline, context: rightContext)
        try toRight.sendAll(ownHello.encoded(), until: deadline, context: rightContext)

        var fromLeft: Socket?
        while fromLeft == nil {
            let context = "rank \(rank) accepting rank \(left)"
            guard let candidate = try listener.accept(until: deadline, context: context) else {
                throw CollectiveError.timedOut("\(context): rank \(left) did not connect within \(config.timeoutSeconds) s")
            }
            // A silent connection may hold us at most 5 s; the real neighbour waits in the backlog.
            let helloDeadline = Deadline(time: min(deadline.time, monotonicSeconds() + 5))
            do {
                let hello = try Hello.read(.ring, from: candidate, until: helloDeadline, context: context)
                if let reason = hello.rejection(token: token, generation: generation, worldSize: world, expectedRank: left) {
                    logCollective("rank \(rank) refused a ring connection: \(reason)")
                    try? candidate.sendAll(HandshakeReply.rejection(reason), until: helloDeadline, context: context)
                    candidate.close()
                    continue
                }
                try candidate.sendAll([HandshakeReply.accepted] + ownHello.encoded(), until: deadline, context: context)
                fromLeft = candidate
            } catch {
                logCollective("rank \(rank) dropped a ring connection: \(error)")
                candidate.close()
            }
        }

        try HandshakeReply.readStatus(from: toRight, until: deadline, context: rightContext)
        let rightHello = try Hello.read(.ring, from: toRight, until: deadline, context: rightContext)
        if let reason = rightHello.rejection(token: token, generation: generation, worldSize: world, expectedRank: right) {
            throw CollectiveError.handshakeRejected("\(rightContext): \(reason)")
        }
        return try TCPRingCollective(rank: rank, worldSize: world, sendSocket: toRight, receiveSocket: fromLeft,
                                     config: config)
    }

    private init(rank: Int, worldSize: Int, sendSocket: Socket?, receiveSocket: Socket?, config: RendezvousConfig) throws {
        self.rank = rank
        self.worldSize = worldSize
        self.timeoutSeconds = config.timeoutSeconds
        self.segmentBytes = config.segmentBytes
        self.sendSocket = sendSocket
        self.receiveSocket = receiveSocket
        scratch = UnsafeMutableRawPointer.allocate(byteCount: config.segmentBytes, alignment: 64)
        try sendSocket?.configureForBulkTransfer(bufferBytes: config.socketBufferBytes, context: "ring connection to the right")
        try receiveSocket?.configureForBulkTransfer(bufferBytes: config.socketBufferBytes, context: "ring connection from the left")
    }

    deinit {
        sendSocket?.close()
        receiveSocket?.close()
        scratch.deallocate()
        pollEntries.deallocate()
    }

    // MARK: Collective

    public func allReduceAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try perform(.allReduceAverage, UnsafeMutableRawPointer(buffer), count: count, root: 0)
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
            // An empty array has no base address; the call must still happen on every rank.
            let base = bytes.baseAddress ?? scratch
            try perform(.allReduceScalars, base, count: values.count, root: 0)
        }
        return result
    }

    public func barrier() throws {
        // An all-reduce of one value: every rank's result depends on every rank's call.
        var token: Float = 1
        try perform(.barrier, &token, count: 1, root: 0)
        guard token == Float(worldSize) else {
            throw CollectiveError.mismatch("barrier counted \(token) ranks instead of \(worldSize)")
        }
    }

    public func close() {
        callLock.withLock {
            if failure == nil { failure = "close() was called" }
            sendSocket?.close()
            receiveSocket?.close()
        }
    }

    // MARK: One call

    /// Runs one collective call on the ring; on any error closes the sockets for good.
    private func perform(_ operation: Operation, _ buffer: UnsafeMutableRawPointer, count: Int, root: Int) throws {
        guard count >= 0 else { throw CollectiveError.invalidArgument("count \(count) is negative") }
        try callLock.withLock {
            if let failure { throw CollectiveError.closed(failure) }
            guard worldSize > 1 else { return }
            sequence += 1
            let header = CallHeader(operation: operation, sequence: sequence, count: UInt64(count), root: UInt32(root))
            do {
                try transfer(header, buffer, count: count)
            } catch {
                failure = "an earlier call failed: \(error)"
                sendSocket?.close()
                receiveSocket?.close()
                throw error
            }
        }
    }

    /// Which bytes move at each step of a call, and what happens to received ones.
    private struct Plan {
        let operation: Operation
        let rank: Int
        let world: Int
        let count: Int
        let elementBytes: Int
        let root: Int

        /// Position in the broadcast chain, 0 at the root.
        var chainPosition: Int { (rank - root + world) % world }

        var sendSteps: Int {
            if operation == .broadcast { return chainPosition == world - 1 ? 0 : 1 }
            return 2 * (world - 1)
        }

        var receiveSteps: Int {
            if operation == .broadcast { return chainPosition == 0 ? 0 : 1 }
            return 2 * (world - 1)
        }

        /// Byte range [start, start + length) of chunk `chunk`.
        func chunkBytes(_ chunk: Int) -> (start: Int, length: Int) {
            let first = chunk * count / world, end = (chunk + 1) * count / world
            return (first * elementBytes, (end - first) * elementBytes)
        }

        func sendRange(_ step: Int) -> (start: Int, length: Int) {
            if operation == .broadcast { return (0, count * elementBytes) }
            return chunkBytes(((rank - step) % world + world) % world)
        }

        func receiveRange(_ step: Int) -> (start: Int, length: Int) {
            if operation == .broadcast { return (0, count * elementBytes) }
            return chunkBytes(((rank - step - 1) % world + world) % world)
        }

        /// The receive step whose bytes send step `step` forwards (nil: own data).
        func sendDependency(_ step: Int) -> Int? {
            if operation == .broadcast { return chainPosition == 0 ? nil : step }
            return step == 0 ? nil : step - 1
        }

        /// Receive steps of the reduce-scatter add into the buffer; the others store.
        func receiveReduces(_ step: Int) -> Bool { operation != .broadcast && step < world - 1 }

        /// The last add of a mean divides by the world size.
        func receiveDivides(_ step: Int) -> Bool { operation == .allReduceAverage && step == world - 2 }
    }

    /// Moves the call's bytes: one loop drives both directions until every step is done.
    private func transfer(_ header: CallHeader, _ buffer: UnsafeMutableRawPointer, count: Int) throws {
        guard let sendSocket, let receiveSocket, sendSocket.isOpen, receiveSocket.isOpen else {
            throw CollectiveError.closed("the ring connections are closed")
        }
        let plan = Plan(operation: header.operation, rank: rank, world: worldSize, count: count,
                        elementBytes: header.operation == .allReduceScalars ? 8 : 4, root: Int(header.root))
        let left = (rank + worldSize - 1) % worldSize, right = (rank + 1) % worldSize
        header.encode(into: &headerOut)

        var headerSent = 0, headerReceived = 0
        var sendStep = 0, sent = 0                // bytes of the current send step already sent
        var receiveStep = 0, received = 0         // bytes of the current receive step already received
        var ready = 0                             // ... of which stored or reduced into the buffer
        var pending = 0                           // received bytes waiting in `scratch` (part of an element)
        var lastProgress = monotonicSeconds()
        let headerLength = CallHeader.bytes

        while true {
            // Empty steps (chunks of zero elements) are done at once.
            while sendStep < plan.sendSteps && plan.sendRange(sendStep).length == 0 { sendStep += 1 }
            while receiveStep < plan.receiveSteps && plan.receiveRange(receiveStep).length == 0 { receiveStep += 1 }
            let sending = headerSent < headerLength || sendStep < plan.sendSteps
            let receiving = headerReceived < headerLength || receiveStep < plan.receiveSteps
            if !sending && !receiving { return }
            var progressed = false, wantsWrite = false, wantsRead = false

            // Send what is ready.
            if headerSent < headerLength {
                let count = try headerOut.withUnsafeBytes {
                    try sendSocket.sendSome($0.baseAddress! + headerSent, count: headerLength - headerSent,
                                            context: "rank \(rank) sending to rank \(right)")
                }
                headerSent += count
                if count > 0 { progressed = true } else { wantsWrite = true }
            } else if sendStep < plan.sendSteps {
                let range = plan.sendRange(sendStep)
                var available = range.length
                if let dependency = plan.sendDependency(sendStep) {
                    available = receiveStep > dependency ? range.length : (receiveStep == dependency ? ready : 0)
                }
                let length = min(available - sent, segmentBytes)
                if length > 0 {
                    let count = try sendSocket.sendSome(buffer + range.start + sent, count: length,
                                                        context: "rank \(rank) sending to rank \(right)")
                    sent += count
                    if count > 0 { progressed = true } else { wantsWrite = true }
                    if sent == range.length { sendStep += 1; sent = 0 }
                }
            }

            // Receive what has arrived, and store or reduce it.
            if headerReceived < headerLength {
                let count = try headerIn.withUnsafeMutableBytes {
                    try receiveSocket.receiveSome($0.baseAddress! + headerReceived, count: headerLength - headerReceived,
                                                  context: "rank \(rank) receiving from rank \(left)")
                }
                headerReceived += count
                if count > 0 { progressed = true } else { wantsRead = true }
                if headerReceived == headerLength {
                    let theirs = try CallHeader(decoding: headerIn)
                    if theirs != header {
                        throw CollectiveError.mismatch("rank \(left) called \(theirs) while rank \(rank) called \(header)")
                    }
                }
            } else if receiveStep < plan.receiveSteps {
                let range = plan.receiveRange(receiveStep)
                let context = "rank \(rank) receiving from rank \(left)"
                var count = 0
                if plan.receiveReduces(receiveStep) {
                    let length = min(segmentBytes - pending, range.length - received)
                    count = try receiveSocket.receiveSome(scratch + pending, count: length, context: context)
                    pending += count
                    let whole = pending / plan.elementBytes
                    if whole > 0 {
                        let destination = buffer + range.start + ready
                        if plan.elementBytes == 8 {
                            addDoubles(destination, scratch, count: whole)
                        } else if plan.receiveDivides(receiveStep) {
                            addFloatsAndDivide(destination, scratch, count: whole, divisor: Float(worldSize))
                        } else {
                            addFloats(destination, scratch, count: whole)
                        }
                        let used = whole * plan.elementBytes
                        ready += used
                        pending -= used
                        if pending > 0 { scratch.copyMemory(from: scratch + used, byteCount: pending) }
                    }
                } else {
                    let length = min(segmentBytes, range.length - received)
                    count = try receiveSocket.receiveSome(buffer + range.start + received, count: length, context: context)
                    ready += count
                }
                received += count
                if count > 0 { progressed = true } else { wantsRead = true }
                if received == range.length { receiveStep += 1; received = 0; ready = 0 }
            }

            if progressed {
                lastProgress = monotonicSeconds()
                continue
            }
            // Nothing moved: sleep until a socket is ready, or give up after the timeout.
            let idle = monotonicSeconds() - lastProgress
            if idle >= timeoutSeconds {
                let waitingFor = wantsRead ? "no data from rank \(left)" : "rank \(right) accepted no data"
                throw CollectiveError.timedOut("rank \(rank) in \(header.operation) #\(header.sequence): \(waitingFor) "
                    + "for \(timeoutSeconds) s (a peer stalled, died or stopped calling)")
            }
            pollEntries[0] = pollfd(fd: wantsWrite ? sendSocket.descriptor : -1, events: Int16(POLLOUT), revents: 0)
            pollEntries[1] = pollfd(fd: wantsRead ? receiveSocket.descriptor : -1, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(((timeoutSeconds - idle) * 1000).rounded(.up))
            if Glibc.poll(pollEntries, 2, max(1, milliseconds)) < 0 && errno != EINTR {
                throw CollectiveError.systemCall(name: "poll", errno: errno, context: "rank \(rank) waiting on the ring")
            }
        }
    }
}

/// The kinds of call, as they travel in the call header.
enum Operation: UInt32, CustomStringConvertible {
    case allReduceSum = 1, allReduceAverage = 2, broadcast = 3, allReduceScalars = 4, barrier = 5

    var description: String {
        switch self {
        case .allReduceSum: return "allReduceSum"
        case .allReduceAverage: return "allReduceAverage"
        case .broadcast: return "broadcast"
        case .allReduceScalars: return "allReduceScalars"
        case .barrier: return "barrier"
        }
    }
}

/// The first bytes of every call on the wire; each rank checks its left neighbour's.
struct CallHeader: Equatable, CustomStringConvertible {
    static let bytes = 28
    static let magic: UInt32 = 0x4D41_4543  // "MAEC"

    var operation: Operation
    var sequence: UInt64
    var count: UInt64
    var root: UInt32

    func encode(into bytes: inout [UInt8]) {
        var writer = WireWriter()
        writer.append(Self.magic)
        writer.append(operation.rawValue)
        writer.append(sequence)
        writer.append(count)
        writer.append(root)
        bytes.withUnsafeMutableBufferPointer { destination in
            for (index, byte) in writer.bytes.enumerated() { destination[index] = byte }
        }
    }

    init(operation: Operation, sequence: UInt64, count: UInt64, root: UInt32) {
        self.operation = operation
        self.sequence = sequence
        self.count = count
        self.root = root
    }

    init(decoding bytes: [UInt8]) throws {
        var reader = WireReader(bytes)
        guard try reader.uint32() == Self.magic, let operation = Operation(rawValue: try reader.uint32()) else {
            throw CollectiveError.mismatch("the left neighbour sent bytes that are not a call header (a desynchronised stream)")
        }
        self.operation = operation
        sequence = try reader.uint64()
        count = try reader.uint64()
        root = try reader.uint32()
    }

    var description: String {
        operation == .broadcast ? "\(operation) #\(sequence) of \(count) elements from root \(root)"
            : "\(operation) #\(sequence) of \(count) elements"
    }
}
