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
/// the next piece is on the wire. By default one thread alternates between sending
/// and receiving (reducing each piece from a small cache-resident scratch buffer)
/// with non-blocking sockets, retrying for a while before it sleeps in `poll`
/// (`spinsBeforeSleeping`); with `sendsOnSeparateThread` a sender thread sends while
/// the calling thread receives and reduces. No buffers are allocated per call.
///
/// Determinism: element e of chunk c is summed in ring order starting at rank c,
/// ((x_c + x_{c+1}) + x_{c+2}) + … + x_{c−1}, and a mean divides that sum by N.
/// The order depends only on N and the element's position, so results are the
/// same bits run to run and on every rank.
///
/// bf16 wire (`GradientWire`, averages of gradients only): each hop sends its floats
/// rounded to bf16 (half the bytes) and the receiver adds them in fp32; the rank that
/// finishes a chunk's mean rounds it, keeps the rounded value and forwards it, so every
/// rank still ends with the same bits.
///
/// Lanes: a call's elements can be split over several independent rings (lanes,
/// each with its own connections and threads), like NCCL's socket striping, so that
/// more cores copy at once. Lane l reduces elements [l·n/K, (l+1)·n/K) of the K lanes
/// a call uses; calls shorter than `minimumLaneBytes` per lane use fewer lanes. The
/// division depends only on n, K and N, so results stay deterministic.
///
/// Slices: a call that is a slice of a longer vector (a gradient bucket) is divided over
/// the lanes and chunks of the whole vector, so its elements are summed as in one call
/// over the whole; the reduce-scatter and all-gather are the two halves of the all-reduce.
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
    private let minimumLaneBytes: Int
    /// Socket retries before the one-thread transfer sleeps in poll (`RendezvousConfig.spinsBeforeSleeping`).
    let spinsBeforeSleeping: Int
    /// Ranks (this one included) that announced this rank's host: they share its machine.
    public let ranksOnThisHost: Int
    /// The host each rank announced, indexed by rank (this rank's own `listenHost` for a
    /// world of one): ranks with the same host share a machine.
    public let rankHosts: [String]
    /// The rings a call's elements are divided over; one unless `config.lanes` > 1.
    private(set) var lanes: [RingLane] = []
    private let callLock = Lock()
    private var sequence: UInt64 = 0
    private var failure: String?
    /// A valid pointer for calls of zero elements.
    private let emptyBuffer = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)

    // MARK: Joining

    /// Joins the ring: binds a listener, registers with the rendezvous (hosting it
    /// when `config.hostsRendezvous`), connects to rank+1 and accepts rank−1, both
    /// with the token/generation handshake. Throws within `config.timeoutSeconds`.
    public static func connect(_ config: RendezvousConfig) throws -> TCPRingCollective {
        try config.validate()
        let deadline = Deadline.after(seconds: config.timeoutSeconds)
        if config.worldSize == 1 { return try TCPRingCollective(config: config, connections: []) }
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

    /// Joins the ring with the ring's addresses from somewhere else than the rendezvous
    /// service (the coordinator of `mae-coordinator`): binds the listener on
    /// `config.listenHost`, hands its port to `exchangeAddresses`, which returns every
    /// rank's listener address indexed by rank, then connects as `connect` does.
    /// `config.address` and `config.hostsRendezvous` are not used.
    public static func connect(_ config: RendezvousConfig,
                               exchangeAddresses: (_ listenerPort: Int) throws -> [SocketAddress]) throws -> TCPRingCollective {
        try config.validate()
        let deadline = Deadline.after(seconds: config.timeoutSeconds)
        if config.worldSize == 1 { return try TCPRingCollective(config: config, connections: []) }
        let listener = try Socket.listening(on: SocketAddress(host: config.listenHost, port: 0))
        defer { listener.close() }
        let addresses = try exchangeAddresses(try listener.localPort(context: "ring listener"))
        guard addresses.count == config.worldSize else {
            throw CollectiveError.rendezvous("rank \(config.rank) received \(addresses.count) ring addresses for a world of \(config.worldSize)")
        }
        return try formRing(config, listener: listener, addresses: addresses, deadline: deadline)
    }

    /// Connects to the right neighbour and accepts the left one on `listener` (one
    /// connection per lane each way), given every rank's listener address.
    /// Connections that fail the handshake are refused, logged and never join;
    /// accepting continues until every lane of the real left neighbour arrived or
    /// `deadline` passes.
    static func formRing(_ config: RendezvousConfig, listener: Socket, addresses: [SocketAddress],
                         deadline: Deadline) throws -> TCPRingCollective {
        let rank = config.rank, world = config.worldSize, laneCount = config.lanes
        let right = (rank + 1) % world, left = (rank + world - 1) % world
        let generation = UInt64(config.generation)
        var authentication = RingAuthentication(key: Array(config.jobToken.utf8))
        func hello(lane: Int) -> Hello {
            Hello(purpose: .ring, generation: generation, worldSize: world, rank: rank, token: [],
                  lane: lane, lanes: laneCount)
        }

        // Every rank connects and sends its hello before it accepts, and reads the answers
        // last, so no rank waits on another's handshake before accepting.
        let rightContext = "rank \(rank) connecting to rank \(right) at \(addresses[right])"
        var toRight: [Socket] = []
        var nonces: [[UInt8]] = []
        for lane in 0..<laneCount {
            let socket = try Socket.connect(to: addresses[right], deadline: deadline, context: rightContext)
            var mine = hello(lane: lane)
            mine.token = try authentication.connectToken(for: mine)
            nonces.append(Array(mine.token.prefix(RingAuthentication.nonceBytes)))
            try socket.sendAll(mine.encoded(), until: deadline, context: rightContext)
            toRight.append(socket)
        }

        var fromLeft = [Socket?](repeating: nil, count: laneCount)
        while fromLeft.contains(where: { $0 == nil }) {
            let context = "rank \(rank) accepting rank \(left)"
            guard let candidate = try listener.accept(until: deadline, context: context) else {
                throw CollectiveError.timedOut("\(context): rank \(left) did not connect within \(config.timeoutSeconds) s")
            }
            // A silent connection may hold us at most 5 s; the real neighbour waits in the backlog.
            let helloDeadline = Deadline(time: min(deadline.time, monotonicSeconds() + 5))
            do {
                let theirs = try Hello.read(.ring, from: candidate, until: helloDeadline, context: context)
                var reason = theirs.rejection(token: nil, generation: generation, worldSize: world, expectedRank: left)
                var nonce: [UInt8] = []
                if reason == nil {
                    switch authentication.admit(theirs) {
                    case .success(let theirNonce): nonce = theirNonce
                    case .failure(let failure): reason = failure.description
                    }
                }
                if reason == nil, theirs.lanes != laneCount {
                    reason = "\(theirs.lanes) lanes where this rank uses \(laneCount)"
                }
                if reason == nil, !(0..<laneCount).contains(theirs.lane) || fromLeft[theirs.lane] != nil {
                    reason = "lane \(theirs.lane) is invalid or already connected"
                }
                if let reason {
                    logCollective("rank \(rank) refused a ring connection from \(candidate.peerDescription): \(reason)")
                    try? candidate.sendAll(HandshakeReply.rejection(reason), until: helloDeadline, context: context)
                    candidate.close()
                    continue
                }
                var answer = hello(lane: theirs.lane)
                answer.token = authentication.acceptToken(for: answer, connectorNonce: nonce)
                try candidate.sendAll([HandshakeReply.accepted] + answer.encoded(), until: deadline, context: context)
                fromLeft[theirs.lane] = candidate
            } catch {
                logCollective("rank \(rank) dropped a ring connection from \(candidate.peerDescription): \(error)")
                candidate.close()
            }
        }

        for (lane, socket) in toRight.enumerated() {
            try HandshakeReply.readStatus(from: socket, until: deadline, context: rightContext)
            let theirs = try Hello.read(.ring, from: socket, until: deadline, context: rightContext)
            var reason = theirs.rejection(token: nil, generation: generation, worldSize: world, expectedRank: right)
            if reason == nil, theirs.lane != lane || theirs.lanes != laneCount {
                reason = "answered for lane \(theirs.lane) of \(theirs.lanes), expected lane \(lane) of \(laneCount)"
            }
            if reason == nil, !authentication.verifyAccept(theirs, connectorNonce: nonces[lane]) {
                reason = RingAuthenticationFailure.noProof.description
            }
            if let reason { throw CollectiveError.handshakeRejected("\(rightContext): \(reason)") }
        }
        return try TCPRingCollective(config: config, connections: zip(toRight, fromLeft).map { ($0, $1!) },
                                     rankHosts: addresses.map(\.host))
    }

    private init(config: RendezvousConfig, connections: [(toRight: Socket, fromLeft: Socket)],
                 rankHosts: [String]? = nil) throws {
        rank = config.rank
        worldSize = config.worldSize
        timeoutSeconds = config.timeoutSeconds
        segmentBytes = config.segmentBytes
        minimumLaneBytes = config.minimumLaneBytes
        let hosts = rankHosts ?? [config.listenHost]
        self.rankHosts = hosts
        // Ranks that announced this rank's host share its cores.
        let ranksOnThisHost = hosts.filter { $0 == hosts[config.rank] }.count
        self.ranksOnThisHost = ranksOnThisHost
        let hasCoreEach = ranksOnThisHost * config.lanes <= Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        spinsBeforeSleeping = config.spinsBeforeSleeping ?? (hasCoreEach ? RendezvousConfig.automaticSpins : 0)
        for (index, connection) in connections.enumerated() {
            lanes.append(try RingLane(index: index, rank: rank, worldSize: worldSize, sendSocket: connection.toRight,
                                      receiveSocket: connection.fromLeft, config: config))
        }
    }

    /// The congestion control algorithm of each lane's connection to the right and from
    /// the left, as the kernel reports it.
    public func congestionControls() throws -> [(toRight: String, fromLeft: String)] {
        try lanes.map { (try $0.sendSocket.congestionControl(context: "ring connection to the right"),
                         try $0.receiveSocket.congestionControl(context: "ring connection from the left")) }
    }

    deinit {
        for lane in lanes { lane.close() }
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

    /// Both wires: bf16 sends each hop's floats rounded (`GradientWire`).
    public func carries(_ wire: GradientWire) -> Bool { true }

    /// The lanes and chunks of a slice are those of the whole vector.
    public var reducesSlicesAsWhole: Bool { true }

    /// Chunk (rank + 1) of each lane, where the ring's reduce-scatter leaves the sums.
    public func shard(count: Int, rank: Int) -> [Range<Int>] {
        ringShard(count: count, world: worldSize, rank: rank,
                  lanes: lanesUsed(count: count, elementBytes: 4, lanes: lanes.count, minimumLaneBytes: minimumLaneBytes))
    }

    /// The first half of the ring all-reduce: the same sums, half the bytes.
    public func reduceScatterAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try perform(.reduceScatterAverage, UnsafeMutableRawPointer(buffer), count: count, root: 0)
    }

    public func reduceScatterAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int, wire: GradientWire) throws {
        try perform(.reduceScatterAverage, UnsafeMutableRawPointer(buffer), count: count, root: 0, wire: wire)
    }

    /// The second half of the ring all-reduce.
    public func allGather(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try perform(.allGather, UnsafeMutableRawPointer(buffer), count: count, root: 0)
    }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try perform(.allReduceSum, UnsafeMutableRawPointer(buffer), count: count, root: 0)
    }

    /// `allReduceSum` of a slice of a longer vector, summed in the whole vector's order (as
    /// `allReduceAverage(_:count:slice:)`): the hierarchical collective's step across machines.
    func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, slice: VectorSlice) throws {
        try slice.check(count: count)
        try perform(.allReduceSum, UnsafeMutableRawPointer(buffer), count: count, root: 0, slice: slice)
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
            try perform(.allReduceScalars, bytes.baseAddress ?? emptyBuffer, count: values.count, root: 0)
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
            for lane in lanes { lane.close() }
        }
    }

    // MARK: One call

    /// Runs one collective call on the ring; on any error closes the connections for good.
    /// A call that is `slice` of a longer vector divides its elements over the lanes, and
    /// each lane's over the chunks, as a call of the whole vector would.
    private func perform(_ operation: Operation, _ buffer: UnsafeMutableRawPointer, count: Int, root: Int,
                         slice: VectorSlice? = nil, wire: GradientWire = .fp32) throws {
        guard count >= 0 else { throw CollectiveError.invalidArgument("count \(count) is negative") }
        try callLock.withLock {
            if let failure { throw CollectiveError.closed(failure) }
            guard worldSize > 1 else { return }
            sequence += 1
            let elementBytes = operation == .allReduceScalars ? 8 : 4
            let whole = slice ?? VectorSlice(offset: 0, wholeCount: count)
            let used = lanesUsed(count: whole.wholeCount, elementBytes: elementBytes, lanes: lanes.count,
                                 minimumLaneBytes: minimumLaneBytes)
            // Each lane's part of this call: the call's elements within the lane's part of the whole.
            var parts: [(lane: Int, header: CallHeader, start: Int)] = []
            for index in 0..<used {
                let lane = laneSlice(index, count: whole.wholeCount, lanesUsed: used)
                let first = max(lane.start, whole.offset), end = min(lane.start + lane.count, whole.offset + count)
                guard end > first else { continue }
                parts.append((index, CallHeader(operation: operation, sequence: sequence, count: UInt64(end - first),
                                                root: UInt32(root), offset: UInt64(first - lane.start),
                                                wholeCount: UInt64(lane.count), wire: wire), first - whole.offset))
            }
            // A call of no elements still meets the other ranks on lane 0.
            if parts.isEmpty {
                parts = [(0, CallHeader(operation: operation, sequence: sequence, count: 0, root: UInt32(root), wire: wire), 0)]
            }
            do {
                // The first lane to fail records its error (the cause) and shuts every
                // lane down, so the others fail at once with consequences, not causes.
                let firstFailure = FirstFailure()
                let fail = { [lanes] (error: Error) in
                    firstFailure.record(error)
                    for lane in lanes { lane.shutdown() }
                }
                // Other parts run on their lanes' workers while this thread runs the first.
                for part in parts.dropFirst().reversed() {
                    let lane = lanes[part.lane], start = buffer + part.start * elementBytes
                    lane.worker!.submit { [self] in
                        do { try transfer(on: lane, part.header, start) } catch { fail(error) }
                    }
                }
                do {
                    try transfer(on: lanes[parts[0].lane], parts[0].header, buffer + parts[0].start * elementBytes)
                } catch {
                    fail(error)
                }
                for part in parts.dropFirst() { try? lanes[part.lane].worker!.wait() }
                if let error = firstFailure.error { throw error }
            } catch {
                failure = "an earlier call failed: \(error)"
                for lane in lanes { lane.close() }
                throw error
            }
        }
    }

    /// Moves the call's bytes. With a sender thread, it sends while this thread
    /// receives and reduces; without one, this thread alternates between the two.
    private func transfer(on lane: RingLane, _ header: CallHeader, _ buffer: UnsafeMutableRawPointer) throws {
        let sendSocket = lane.sendSocket, receiveSocket = lane.receiveSocket
        guard sendSocket.isOpen, receiveSocket.isOpen else { throw CollectiveError.closed("the ring connections are closed") }
        let headerOut = lane.headerOut, headerIn = lane.headerIn, scratch = lane.scratch, pollEntries = lane.pollEntries
        let plan = RingPlan(operation: header.operation, rank: rank, world: worldSize, count: Int(header.count),
                            elementBytes: header.operation == .allReduceScalars ? 8 : 4, root: Int(header.root),
                            offset: Int(header.offset), wholeCount: Int(header.wholeCount), wire: header.wire)
        let left = (rank + worldSize - 1) % worldSize, right = (rank + 1) % worldSize
        header.encode(into: headerOut)
        var sendHalf = SendHalf(plan: plan, buffer: buffer, header: headerOut, segmentBytes: segmentBytes,
                                staging: lane.staging)
        var receiveHalf = ReceiveHalf(plan: plan, buffer: buffer, expectedHeader: header, headerBuffer: headerIn,
                                      scratch: scratch, segmentBytes: segmentBytes, left: left)
        let sendContext = "rank \(rank) sending to rank \(right) (lane \(lane.index))"
        let receiveContext = "rank \(rank) receiving from rank \(left) (lane \(lane.index))"
        var lastProgress = monotonicSeconds()

        if let sender = lane.sender {
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
        var spins = 0
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
                spins = 0
                continue
            }
            // Nothing moved: retry a while (the next bytes are usually microseconds
            // away), then sleep until a socket is ready, or give up after the timeout.
            if spins < spinsBeforeSleeping {
                spins += 1
                continue
            }
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

/// The first error recorded by any of a call's lanes.
final class FirstFailure: @unchecked Sendable {
    private let lock = Lock()
    private var first: Error?

    func record(_ error: Error) { lock.withLock { if first == nil { first = error } } }
    var error: Error? { lock.withLock { first } }
}
