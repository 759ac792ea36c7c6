/// The data movement of one ring call, as two halves: the send half streams this
/// rank's bytes to rank+1, the receive half takes rank−1's bytes and stores or
/// reduces them. Each half makes one non-blocking move at a time, so they can be
/// driven by one thread (alternating) or by two (the send half on the ring's
/// sender thread). The send half may only forward bytes that the receive half has
/// finished: `ReceiveProgress` is what connects them.
import CSupport
#if canImport(Glibc)
import Glibc
#endif

/// The kinds of call, as they travel in the call header.
enum Operation: UInt32, CustomStringConvertible {
    case allReduceSum = 1, allReduceAverage = 2, broadcast = 3, allReduceScalars = 4, barrier = 5
    /// The first and the second half of an all-reduce average.
    case reduceScatterAverage = 6, allGather = 7

    var description: String {
        switch self {
        case .allReduceSum: return "allReduceSum"
        case .allReduceAverage: return "allReduceAverage"
        case .broadcast: return "broadcast"
        case .allReduceScalars: return "allReduceScalars"
        case .barrier: return "barrier"
        case .reduceScatterAverage: return "reduceScatterAverage"
        case .allGather: return "allGather"
        }
    }
}

/// The first bytes of every call on the wire; each rank checks its left neighbour's.
struct CallHeader: Equatable, CustomStringConvertible {
    static let bytes = 48
    static let magic: UInt32 = 0x4D41_4543  // "MAEC"

    var operation: Operation
    var sequence: UInt64
    var count: UInt64
    var root: UInt32
    /// Where the call's elements lie in the vector whose ring chunks decide the order of
    /// the sums (`RingPlan`): its first element there, and that vector's length.
    var offset: UInt64
    var wholeCount: UInt64
    /// How the values travel (bf16 only for the averages of `GradientWire`).
    var wire: GradientWire

    init(operation: Operation, sequence: UInt64, count: UInt64, root: UInt32, offset: UInt64 = 0,
         wholeCount: UInt64? = nil, wire: GradientWire = .fp32) {
        self.operation = operation
        self.sequence = sequence
        self.count = count
        self.root = root
        self.offset = offset
        self.wholeCount = wholeCount ?? count
        self.wire = wire
    }

    init(decoding bytes: UnsafeRawBufferPointer) throws {
        var reader = WireReader(Array(bytes))
        guard try reader.uint32() == Self.magic, let operation = Operation(rawValue: try reader.uint32()) else {
            throw CollectiveError.mismatch("the left neighbour sent bytes that are not a call header (a desynchronised stream)")
        }
        self.operation = operation
        sequence = try reader.uint64()
        count = try reader.uint64()
        root = try reader.uint32()
        offset = try reader.uint64()
        wholeCount = try reader.uint64()
        guard let wire = GradientWire(wireCode: try reader.uint32()) else {
            throw CollectiveError.mismatch("the left neighbour sent a call header with an unknown gradient wire")
        }
        self.wire = wire
    }

    /// Writes the `bytes` encoded bytes to `destination`.
    func encode(into destination: UnsafeMutableRawPointer) {
        var writer = WireWriter()
        writer.append(Self.magic)
        writer.append(operation.rawValue)
        writer.append(sequence)
        writer.append(count)
        writer.append(root)
        writer.append(offset)
        writer.append(wholeCount)
        writer.append(wire.wireCode)
        writer.bytes.withUnsafeBytes { destination.copyMemory(from: $0.baseAddress!, byteCount: Self.bytes) }
    }

    var description: String {
        let placement = count == wholeCount ? "" : " at \(offset) of \(wholeCount)"
        let format = wire == .fp32 ? "" : " as \(wire)"
        return operation == .broadcast ? "\(operation) #\(sequence) of \(count) elements from root \(root)"
            : "\(operation) #\(sequence) of \(count) elements" + placement + format
    }
}

/// Which bytes move at each step of a call, and what happens to received ones.
struct RingPlan {
    let operation: Operation
    let rank: Int
    let world: Int
    let count: Int
    let elementBytes: Int
    let root: Int
    /// The call is elements [offset, offset + count) of a vector of `wholeCount`, whose
    /// chunks are the ring's: the call's chunk c is its part of the whole's chunk c.
    var offset = 0
    var wholeCount: Int
    /// bf16: every step sends its floats rounded to bf16 and receives bf16 (`GradientWire`);
    /// byte ranges and progress still count the buffer's 4-byte floats.
    var wire: GradientWire

    init(operation: Operation, rank: Int, world: Int, count: Int, elementBytes: Int, root: Int,
         offset: Int = 0, wholeCount: Int? = nil, wire: GradientWire = .fp32) {
        self.operation = operation
        self.rank = rank
        self.world = world
        self.count = count
        self.elementBytes = elementBytes
        self.root = root
        self.offset = offset
        self.wholeCount = wholeCount ?? count
        self.wire = wire
    }

    /// The bytes on the wire of `length` bytes of the buffer.
    func wireBytes(_ length: Int) -> Int { wire == .fp32 ? length : length / elementBytes * wire.elementBytes }

    /// Position in the broadcast chain, 0 at the root.
    var chainPosition: Int { (rank - root + world) % world }

    var sendSteps: Int {
        if operation == .broadcast { return chainPosition == world - 1 ? 0 : 1 }
        return isHalf ? world - 1 : 2 * (world - 1)
    }

    var receiveSteps: Int {
        if operation == .broadcast { return chainPosition == 0 ? 0 : 1 }
        return isHalf ? world - 1 : 2 * (world - 1)
    }

    /// A reduce-scatter or an all-gather: the first or the second N − 1 steps of an all-reduce.
    var isHalf: Bool { operation == .reduceScatterAverage || operation == .allGather }

    /// The all-reduce step that step `step` of this call is.
    private func allReduceStep(_ step: Int) -> Int { operation == .allGather ? step + world - 1 : step }

    /// Byte range [start, start + length) of chunk `chunk`: the call's part of the whole's
    /// elements [c·n/N, (c+1)·n/N) (all of them when the call is the whole).
    func chunkBytes(_ chunk: Int) -> (start: Int, length: Int) {
        func clamped(_ element: Int) -> Int { min(max(element - offset, 0), count) }
        let first = clamped(chunk * wholeCount / world), end = clamped((chunk + 1) * wholeCount / world)
        return (first * elementBytes, (end - first) * elementBytes)
    }

    func sendRange(_ step: Int) -> (start: Int, length: Int) {
        if operation == .broadcast { return (0, count * elementBytes) }
        return chunkBytes(((rank - allReduceStep(step)) % world + world) % world)
    }

    func receiveRange(_ step: Int) -> (start: Int, length: Int) {
        if operation == .broadcast { return (0, count * elementBytes) }
        return chunkBytes(((rank - allReduceStep(step) - 1) % world + world) % world)
    }

    /// The receive step whose bytes send step `step` forwards (nil: own data).
    func sendDependency(_ step: Int) -> Int? {
        if operation == .broadcast { return chainPosition == 0 ? nil : step }
        return step == 0 ? nil : step - 1
    }

    /// Receive steps of the reduce-scatter add into the buffer; the others store.
    func receiveReduces(_ step: Int) -> Bool { operation != .broadcast && allReduceStep(step) < world - 1 }

    /// The last add of a mean divides by the world size.
    func receiveDivides(_ step: Int) -> Bool {
        (operation == .allReduceAverage || operation == .reduceScatterAverage) && step == world - 2
    }
}

/// How far the receive half is: the current step, and how many of its bytes are
/// final in the buffer (stored, or reduced).
struct ReceiveProgress: Equatable {
    var step = 0
    var ready = 0
}

/// The result of one move of a half.
enum Move {
    case moved      // bytes went through
    case blocked    // the socket would block: wait for it in poll
    case waiting    // (send half) nothing is ready to forward yet
    case done
}

/// This rank's outgoing stream of one call: header, then the send steps.
struct SendHalf {
    let plan: RingPlan
    let buffer: UnsafeMutableRawPointer
    let header: UnsafeRawPointer      // CallHeader.bytes
    let segmentBytes: Int
    /// bf16 wire: the piece being sent, rounded (segmentBytes); not used for fp32.
    let staging: UnsafeMutableRawPointer
    private var headerSent = 0
    private var step = 0
    private var sent = 0              // bytes of the current step already sent (buffer bytes)
    private var staged = 0            // bf16 wire: bytes of the rounded piece in `staging`
    private var stagedSent = 0        // … of which sent

    init(plan: RingPlan, buffer: UnsafeMutableRawPointer, header: UnsafeRawPointer, segmentBytes: Int,
         staging: UnsafeMutableRawPointer) {
        self.plan = plan
        self.buffer = buffer
        self.header = header
        self.segmentBytes = segmentBytes
        self.staging = staging
    }

    /// Sends what is ready, once, without blocking.
    mutating func move(_ socket: Socket, after progress: ReceiveProgress, context: @autoclosure () -> String) throws -> Move {
        if headerSent < CallHeader.bytes {
            let count = try socket.sendSome(header + headerSent, count: CallHeader.bytes - headerSent, context: context())
            headerSent += count
            return count > 0 ? .moved : .blocked
        }
        // Empty steps (chunks of zero elements) are done at once.
        while step < plan.sendSteps && plan.sendRange(step).length == 0 { step += 1 }
        guard step < plan.sendSteps else { return .done }
        let range = plan.sendRange(step)
        var available = range.length
        if let dependency = plan.sendDependency(step) {
            available = progress.step > dependency ? range.length : (progress.step == dependency ? progress.ready : 0)
        }
        if plan.wire == .bf16 { return try moveRounded(socket, range: range, available: available, context: context()) }
        let length = min(available - sent, segmentBytes)
        guard length > 0 else { return .waiting }
        let count = try socket.sendSome(buffer + range.start + sent, count: length, context: context())
        sent += count
        if sent == range.length { step += 1; sent = 0 }
        return count > 0 ? .moved : .blocked
    }

    /// The bf16 wire's move: rounds the next piece of at most `segmentBytes` on the wire
    /// into `staging` once the last one is sent, then sends from there. (Received bytes
    /// become ready in whole floats on this wire, so pieces are whole floats.)
    private mutating func moveRounded(_ socket: Socket, range: (start: Int, length: Int), available: Int,
                                      context: String) throws -> Move {
        if staged == 0 {
            let elements = min(available - sent, plan.elementBytes * segmentBytes / GradientWire.bf16.elementBytes)
                / plan.elementBytes
            guard elements > 0 else { return .waiting }
            mae_round_to_bf16(staging.assumingMemoryBound(to: UInt16.self),
                                   (buffer + range.start + sent).assumingMemoryBound(to: Float.self), elements)
            staged = elements * GradientWire.bf16.elementBytes
            stagedSent = 0
        }
        let count = try socket.sendSome(staging + stagedSent, count: staged - stagedSent, context: context)
        stagedSent += count
        if stagedSent == staged {
            sent += staged / GradientWire.bf16.elementBytes * plan.elementBytes
            staged = 0
            if sent == range.length { step += 1; sent = 0 }
        }
        return count > 0 ? .moved : .blocked
    }
}

/// The incoming stream of one call: the left neighbour's header, then the receive steps.
struct ReceiveHalf {
    let plan: RingPlan
    let buffer: UnsafeMutableRawPointer
    let expectedHeader: CallHeader
    let headerBuffer: UnsafeMutableRawPointer   // CallHeader.bytes
    let scratch: UnsafeMutableRawPointer        // segmentBytes
    let segmentBytes: Int
    let left: Int
    private var headerReceived = 0
    private(set) var progress = ReceiveProgress()
    private var received = 0                    // bytes of the current step received (wire bytes)
    private var pending = 0                     // received bytes in `scratch` short of a whole element

    init(plan: RingPlan, buffer: UnsafeMutableRawPointer, expectedHeader: CallHeader, headerBuffer: UnsafeMutableRawPointer,
         scratch: UnsafeMutableRawPointer, segmentBytes: Int, left: Int) {
        self.plan = plan
        self.buffer = buffer
        self.expectedHeader = expectedHeader
        self.headerBuffer = headerBuffer
        self.scratch = scratch
        self.segmentBytes = segmentBytes
        self.left = left
    }

    /// Bytes that will arrive without anything more from this rank: the rest of the
    /// header, or of the current receive step.
    var bytesComing: Int {
        if headerReceived < CallHeader.bytes { return CallHeader.bytes - headerReceived }
        var step = progress.step
        while step < plan.receiveSteps && plan.receiveRange(step).length == 0 { step += 1 }
        guard step < plan.receiveSteps else { return 0 }
        return plan.wireBytes(plan.receiveRange(step).length) - (step == progress.step ? received : 0)
    }

    /// Receives what has arrived, once, without blocking, and stores or reduces it.
    mutating func move(_ socket: Socket, context: @autoclosure () -> String) throws -> Move {
        if headerReceived < CallHeader.bytes {
            let count = try socket.receiveSome(headerBuffer + headerReceived, count: CallHeader.bytes - headerReceived,
                                               context: context())
            headerReceived += count
            if headerReceived == CallHeader.bytes {
                let theirs = try CallHeader(decoding: UnsafeRawBufferPointer(start: headerBuffer, count: CallHeader.bytes))
                if theirs != expectedHeader {
                    throw CollectiveError.mismatch("rank \(left) called \(theirs) while rank \(plan.rank) called \(expectedHeader)")
                }
            }
            return count > 0 ? .moved : .blocked
        }
        while progress.step < plan.receiveSteps && plan.receiveRange(progress.step).length == 0 { progress.step += 1 }
        guard progress.step < plan.receiveSteps else { return .done }
        let range = plan.receiveRange(progress.step)
        if plan.wire == .bf16 { return try moveRounded(socket, range: range, context: context()) }
        var count = 0
        if plan.receiveReduces(progress.step) {
            let length = min(segmentBytes - pending, range.length - received)
            count = try socket.receiveSome(scratch + pending, count: length, context: context())
            pending += count
            let whole = pending / plan.elementBytes
            if whole > 0 {
                let destination = buffer + range.start + progress.ready
                if plan.elementBytes == 8 {
                    addDoubles(destination, scratch, count: whole)
                } else if plan.receiveDivides(progress.step) {
                    addFloatsAndDivide(destination, scratch, count: whole, divisor: Float(plan.world))
                } else {
                    addFloats(destination, scratch, count: whole)
                }
                let used = whole * plan.elementBytes
                progress.ready += used
                pending -= used
                if pending > 0 { scratch.copyMemory(from: scratch + used, byteCount: pending) }
            }
        } else {
            let length = min(segmentBytes, range.length - received)
            count = try socket.receiveSome(buffer + range.start + received, count: length, context: context())
            progress.ready += count
        }
        received += count
        if received == range.length {
            progress = ReceiveProgress(step: progress.step + 1, ready: 0)
            received = 0
        }
        return count > 0 ? .moved : .blocked
    }

    /// The bf16 wire's move: every step receives bf16 into `scratch`, then widens whole
    /// elements into the buffer: adds them (reduce-scatter), adds, divides and rounds them
    /// (the mean's last add, `GradientWire`), or stores them (all-gather).
    private mutating func moveRounded(_ socket: Socket, range: (start: Int, length: Int), context: String) throws -> Move {
        let wireElementBytes = GradientWire.bf16.elementBytes, wireLength = plan.wireBytes(range.length)
        let count = try socket.receiveSome(scratch + pending, count: min(segmentBytes - pending, wireLength - received),
                                           context: context)
        pending += count
        let whole = pending / wireElementBytes
        if whole > 0 {
            let destination = (buffer + range.start + progress.ready).assumingMemoryBound(to: Float.self)
            let source = scratch.assumingMemoryBound(to: UInt16.self)
            if !plan.receiveReduces(progress.step) {
                mae_widen_bf16(destination, source, whole)
            } else if plan.receiveDivides(progress.step) {
                mae_wire_add_bf16_mean(destination, source, whole, Float(plan.world))
            } else {
                mae_wire_add_bf16(destination, source, whole)
            }
            progress.ready += whole * plan.elementBytes
            let used = whole * wireElementBytes
            pending -= used
            if pending > 0 { scratch.copyMemory(from: scratch + used, byteCount: pending) }
        }
        received += count
        if received == wireLength {
            progress = ReceiveProgress(step: progress.step + 1, ready: 0)
            received = 0
        }
        return count > 0 ? .moved : .blocked
    }
}
