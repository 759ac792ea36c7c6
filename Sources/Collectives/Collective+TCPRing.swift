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
    private let headerOut = UnsafeMutableRawPointer.allocate(byteCount: CallHeader.bytes, alignment: 8)
    private let headerIn = UnsafeMutableRawPointer.allocate(byteCount: CallHeader.bytes, alignment: 8)
    /// Sends while the calling thread receives; nil when one thread does both.
    private var sender: RingSender?

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
        if let sendSocket, config.sendsOnSeparateThread {
            sender = try RingSender(socket: sendSocket, timeoutSeconds: config.timeoutSeconds,
                                    label: "rank \(rank) sending to rank \((rank + 1) % worldSize)")
        }
    }

    deinit {
        sender?.stop()
        headerOut.deallocate()
        headerIn.deallocate()
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
            sender?.stop()
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

    /// Moves the call's bytes. With a sender thread, it sends while this thread
    /// receives and reduces; without one, this thread alternates between the two.
    private func transfer(_ header: CallHeader, _ buffer: UnsafeMutableRawPointer, count: Int) throws {
        guard let sendSocket, let receiveSocket, sendSocket.isOpen, receiveSocket.isOpen else {
            throw CollectiveError.closed("the ring connections are closed")
        }
        let plan = RingPlan(operation: header.operation, rank: rank, world: worldSize, count: count,
                            elementBytes: header.operation == .allReduceScalars ? 8 : 4, root: Int(header.root))
        let left = (rank + worldSize - 1) % worldSize, right = (rank + 1) % worldSize
        header.encode(into: headerOut)
        var sendHalf = SendHalf(plan: plan, buffer: buffer, header: headerOut, segmentBytes: segmentBytes)
        var receiveHalf = ReceiveHalf(plan: plan, buffer: buffer, expectedHeader: header, headerBuffer: headerIn,
                                      scratch: scratch, segmentBytes: segmentBytes, left: left)
        let sendContext = "rank \(rank) sending to rank \(right)"
        let receiveContext = "rank \(rank) receiving from rank \(left)"
        var lastProgress = monotonicSeconds()

        if let sender {
            sender.start(sendHalf)
            do {
                receiving: while true {
                    switch try receiveHalf.move(receiveSocket, context: receiveContext) {
                    case .done: break receiving
                    case .moved, .waiting:
                        lastProgress = monotonicSeconds()
                        if let error = sender.publish(receiveHalf.progress) { throw error }
                    case .blocked:
                        try receiveSocket.setReceiveLowWatermark(min(receiveHalf.bytesComing, segmentBytes / 4),
                                                                 context: receiveContext)
                        try waitForData(receiveSocket, since: lastProgress, header: header, left: left)
                        if let error = sender.publish(receiveHalf.progress) { throw error }
                    }
                }
            } catch {
                sender.abort()
                throw error
            }
            try sender.waitUntilFinished()
            return
        }

        var sendDone = false, receiveDone = false
        while !(sendDone && receiveDone) {
            var progressed = false, wantsWrite = false, wantsRead = false
            if !sendDone {
                switch try sendHalf.move(sendSocket, after: receiveHalf.progress, context: sendContext) {
                case .done: sendDone = true
                case .moved: progressed = true
                case .blocked: wantsWrite = true
                case .waiting: break
                }
            }
            if !receiveDone {
                switch try receiveHalf.move(receiveSocket, context: receiveContext) {
                case .done: receiveDone = true
                case .moved, .waiting: progressed = true
                case .blocked: wantsRead = true
                }
            }
            if progressed || (sendDone && receiveDone) {
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
            if wantsRead {
                try receiveSocket.setReceiveLowWatermark(min(receiveHalf.bytesComing, segmentBytes / 4),
                                                         context: receiveContext)
            }
            pollEntries[0] = pollfd(fd: wantsWrite ? sendSocket.descriptor : -1, events: Int16(POLLOUT), revents: 0)
            pollEntries[1] = pollfd(fd: wantsRead ? receiveSocket.descriptor : -1, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(((timeoutSeconds - idle) * 1000).rounded(.up))
            if Glibc.poll(pollEntries, 2, max(1, milliseconds)) < 0 && errno != EINTR {
                throw CollectiveError.systemCall(name: "poll", errno: errno, context: "rank \(rank) waiting on the ring")
            }
        }
    }

    /// Waits up to one poll slice for data from the left; throws once nothing has
    /// arrived for the timeout.
    private func waitForData(_ socket: Socket, since lastProgress: Double, header: CallHeader, left: Int) throws {
        let idle = monotonicSeconds() - lastProgress
        if idle >= timeoutSeconds {
            throw CollectiveError.timedOut("rank \(rank) in \(header.operation) #\(header.sequence): no data from rank "
                + "\(left) for \(timeoutSeconds) s (a peer stalled, died or stopped calling)")
        }
        let slice = Deadline.after(seconds: min(pollSliceSeconds, timeoutSeconds - idle))
        _ = try socket.wait(for: Int16(POLLIN), until: slice, context: "rank \(rank) waiting for rank \(left)")
    }
}
