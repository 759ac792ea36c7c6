import CSupport
import Foundation
import Kernels
import Testing
@testable import Collectives

// MARK: - The reference: bf16 rounding by value, and the wire's mean

/// `value` rounded to bf16 by value (not by the bit trick of wire.c): the nearer of the two
/// bf16 neighbours, measured exactly in Double, the one with an even last bit on a tie;
/// beyond the largest bf16 (by half an ulp or more) infinity; a NaN stays a NaN of its
/// sign with the quiet bit set.
func referenceBFloat16(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(bits >> 16) | 0x0040 }
    if value.isInfinite { return UInt16(bits >> 16) }
    let sign = bits & 0x8000_0000, magnitude = bits & 0x7FFF_FFFF
    let lower = magnitude & 0xFFFF_0000
    // One bf16 ulp at this exponent (subnormals share the smallest exponent's).
    let exponentBits = magnitude & 0x7F80_0000
    let ulp = exponentBits == 0 ? Double(Float(bitPattern: 0x0001_0000))
        : Double(Float(bitPattern: exponentBits)) / 128
    let below = Double(Float(bitPattern: magnitude)) - Double(Float(bitPattern: lower))
    let above = ulp - below
    let roundsUp = above < below || (above == below && (lower >> 16) & 1 == 1)
    // Rounding up past the largest bf16 gives 0x7F80 (infinity), as IEEE's overflow does.
    return UInt16((sign | (roundsUp ? lower + 0x0001_0000 : lower)) >> 16)
}

func widened(_ value: UInt16) -> Float { Float(bitPattern: UInt32(value) << 16) }

/// The bf16 wire's mean (`GradientWire`) of `inputs` (one array per rank) with the
/// ring's chunks: lanes of [l·n/K, (l+1)·n/K) for the K lanes a call of n floats uses
/// (each at least `laneBytes`), chunk c of a lane starting at rank c;
/// s = x_c, s = widen(round(s)) + x_(c+k), mean = widen(round(s / N)).
func referenceWireMean(_ inputs: [[Float]], lanes: Int = 1, laneBytes: Int = testLaneBytes) -> [Float] {
    ringOrderReduce(inputs, lanes: lanes, laneBytes: laneBytes) { values in
        let sum = values.dropFirst().reduce(values[0]) { widened(referenceBFloat16($0)) + $1 }
        return widened(referenceBFloat16(sum / Float(values.count)))
    }
}

/// Rank `rank`'s input: full mantissas over eight binary orders of magnitude, a bf16 tie
/// every 101 elements, and at the start: +∞ on rank 0 (the mean is +∞), +∞ and −∞ on
/// ranks 0 and 1 (NaN), and fp32's largest on every rank (beyond bf16: +∞).
func wireInput(rank: Int, count: Int) -> [Float] {
    var values = randomInput(rank: rank, count: count, seed: 77).enumerated().map { index, value in
        let scaled = value * Float(1 << (index % 8)) / 16
        return index % 101 == 50 ? Float(bitPattern: scaled.bitPattern & 0xFFFF_0000 | 0x8000) : scaled
    }
    values[0] = rank == 0 ? .infinity : values[0]
    values[1] = rank == 0 ? .infinity : rank == 1 ? -.infinity : values[1]
    values[2] = .greatestFiniteMagnitude
    return values
}

/// The kernels of wire.c on hand-made values, through the AVX-512 loop (16 at a time)
/// and the element-by-element tail alike.
@Suite struct WireArithmeticTests {
    /// (fp32 bits, bf16 bits rounded to nearest, ties to even).
    static let roundings: [(UInt32, UInt16)] = [
        (0x3F80_0000, 0x3F80),   // 1
        (0x3F80_7FFF, 0x3F80),   // just below the half: down
        (0x3F80_8000, 0x3F80),   // 1 + 2⁻⁸, a tie: to the even 1
        (0x3F80_8001, 0x3F81),   // just above the half: up
        (0x3F81_8000, 0x3F82),   // 1 + 3·2⁻⁸, a tie: to the even 1 + 2⁻⁶
        (0xBF81_8000, 0xBF82),   // the same, negative
        (0x0000_0000, 0x0000),   // +0
        (0x8000_0000, 0x8000),   // −0 keeps its sign
        (0x0000_0001, 0x0000),   // the smallest subnormal: down to 0 (rounded, not flushed)
        (0x0001_8000, 0x0002),   // a subnormal tie: to even
        (0x807F_FFFF, 0x8080),   // the largest negative subnormal: up to the smallest normal
        (0x7F80_0000, 0x7F80),   // +∞
        (0xFF80_0000, 0xFF80),   // −∞
        (0x7F7F_FFFF, 0x7F80),   // fp32's largest: beyond bf16's, +∞
        (0x7F7F_7FFF, 0x7F7F),   // below the half to infinity: bf16's largest
        (0x7FC0_0000, 0x7FC0),   // quiet NaN
        (0x7F80_0001, 0x7FC0),   // signalling NaN whose payload is below the cut: quiet, not ∞
        (0xFFA0_0000, 0xFFE0),   // negative signalling NaN: quiet, negative
    ]

    @Test func roundingIsToNearestEvenAsPyTorch() {
        // 16 × 4 values through the vector loop, then a tail of 2, in every position.
        for shift in 0..<Self.roundings.count {
            let table = Array(Self.roundings[shift...] + Self.roundings[..<shift])
            let inputs = (0..<4).flatMap { _ in table }.prefix(66).map { Float(bitPattern: $0.0) }
            let expected = (0..<4).flatMap { _ in table }.prefix(66).map(\.1)
            var output = [UInt16](repeating: 0xDEAD, count: inputs.count)
            mae_round_to_bf16(&output, inputs, inputs.count)
            for index in inputs.indices where output[index] != expected[index] {
                let input = String(inputs[index].bitPattern, radix: 16), got = String(output[index], radix: 16)
                #expect(output[index] == expected[index], "\(input) at \(index) rounded to \(got)")
            }
        }
        // The reference of these tests agrees on every hand-made case.
        for (input, expected) in Self.roundings {
            #expect(referenceBFloat16(Float(bitPattern: input)) == expected, "reference: \(String(input, radix: 16))")
        }
    }

    /// One rounding rule in the program: the wire's and the bf16 matrix products' (products.c).
    @Test func theWireRoundsAsTheProductsDo() {
        let values = randomInput(rank: 0, count: 10_007, seed: 3).enumerated().map { index, value in
            Float(bitPattern: value.bitPattern &+ UInt32(index % 3) << 15) * Float(1 << (index % 20)) / 1024
        } + Self.roundings.map { Float(bitPattern: $0.0) }
        var wire = [UInt16](repeating: 0, count: values.count), products = wire
        mae_round_to_bf16(&wire, values, values.count)
        values.withUnsafeBufferPointer { source in
            products.withUnsafeMutableBufferPointer { roundToBFloat16($0.baseAddress!, source.baseAddress!, count: values.count) }
        }
        #expect(wire == products)
        #expect(wire == values.map(referenceBFloat16))
    }

    @Test func wideningIsExact() {
        let inputs: [UInt16] = [0x3F81, 0x8000, 0x0001, 0x7F80, 0xFF80, 0x7FC1, 0xFFE0] + (0..<16).map { UInt16($0 * 4099) }
        var output = [Float](repeating: 1, count: inputs.count)
        mae_widen_bf16(&output, inputs, inputs.count)
        #expect(output.map(\.bitPattern) == inputs.map { UInt32($0) << 16 })
        #expect(output[0] == 1.0078125)
    }

    /// Adds are fp32 (nothing rounded to bf16); the mean's last add divides in fp32 and
    /// rounds once, to nearest even.
    @Test func addsAreFP32AndTheMeanRoundsOnce() {
        func run(_ destination: [Float], _ source: [UInt16], divisor: Float? = nil) -> [Float] {
            // Each case 17 times: 16 through the vector loop, one in the tail.
            var values = (0..<17).flatMap { _ in destination }
            let bits = (0..<17).flatMap { _ in source }, count = values.count
            if let divisor {
                mae_wire_add_bf16_mean(&values, bits, count, divisor)
            } else {
                mae_wire_add_bf16(&values, bits, count)
            }
            for copy in 1..<17 {
                let part = Array(values[(copy * destination.count)..<((copy + 1) * destination.count)])
                #expect(part.map(\.bitPattern) == values.prefix(destination.count).map(\.bitPattern),
                        "copy \(copy) differs: the vector loop and the tail disagree")
            }
            return Array(values.prefix(destination.count))
        }
        // 1 + 2⁻⁸ stays in fp32; ∞ + (−∞) is NaN; NaN travels.
        let sums = run([1, 1, .infinity, 2], [0x3B80, 0x3F80, 0xFF80, 0x7FC0])
        #expect(sums[0] == 1.00390625 && sums[1] == 2 && sums[2].isNaN && sums[3].isNaN)
        // (1 + 1.0078125) / 2 = 1 + 2⁻⁸: a tie, to the even 1; (1 + 1.0234375) / 2 = 1 + 3·2⁻⁸:
        // a tie, up to 1 + 2⁻⁶; (1 + 1) / 3 = 0.6666667 (0x3F2AAAAB) rounds up to 0.66796875.
        #expect(run([1, 1], [0x3F81, 0x3F83], divisor: 2) == [1, 1.015625])
        #expect(run([1, -1], [0x3F80, 0xBF80], divisor: 3) == [0.66796875, -0.66796875])
        // Beyond bf16's largest after the division: +∞; +∞ stays.
        let large = run([.greatestFiniteMagnitude, .infinity], [0x0000, 0x3F80], divisor: 1)
        #expect(large == [.infinity, .infinity])
    }

    /// Shared memory's one-pass mean rounds as the ring's hops do.
    @Test func theOrderedMeanRoundsBetweenTheAdds() {
        let world = 3, count = 1_003
        let inputs = (0..<world).map { wireInput(rank: $0, count: count) }
        var first = [Float](repeating: 0, count: count), second = first
        inputs[0].withUnsafeBufferPointer { zero in
            inputs[1].withUnsafeBufferPointer { one in
                inputs[2].withUnsafeBufferPointer { two in
                    let sources = [zero.baseAddress, one.baseAddress, two.baseAddress]
                    mae_wire_mean_in_order_bf16(sources, world, &first, &second, count, Float(world))
                }
            }
        }
        var expected = [Float](repeating: 0, count: count)
        for index in 0..<count {
            var sum = inputs[0][index]
            for rank in 1..<world { sum = widened(referenceBFloat16(sum)) + inputs[rank][index] }
            expected[index] = widened(referenceBFloat16(sum / Float(world)))
        }
        expectSameBits(first, expected, "first destination")
        expectSameBits(second, expected, "second destination")
        #expect(first[0] == .infinity && first[1].isNaN && first[2] == .infinity)
    }
}

// MARK: - The wire in the ring and in shared memory

/// The bf16 wire on the ring (ranks as threads over loopback) and in shared memory: the
/// reference's bits on every rank, bucket by bucket as whole, in a reduce-scatter, and the
/// same bits on both transports; the fp32 wire unchanged.
@Suite(.serialized) struct GradientWireTests {
    static let count = 50_003
    static let boundaries = [count, 40_000, 25_001, 25_001, 9, 0]

    /// Marks the elements outside a rank's shard (a signalling NaN, which no arithmetic makes).
    static let outsideShard = Float(bitPattern: 0x7FBA_DBAD)

    /// [whole, buckets, reduce-scatter (this rank's shard, `outsideShard` elsewhere), fp32 wire, plain call].
    @Sendable static func reduce(_ collective: any Collective) throws -> [[Float]] {
        let input = wireInput(rank: collective.rank, count: count)
        var whole = input, buckets = input, scattered = input, fp32 = input, plain = input
        try whole.withUnsafeMutableBufferPointer {
            try collective.allReduceAverage($0.baseAddress!, count: count, slice: VectorSlice(offset: 0, wholeCount: count),
                                            wire: .bf16)
        }
        for (end, start) in zip(boundaries, boundaries.dropFirst()) {
            try buckets.withUnsafeMutableBufferPointer {
                try collective.allReduceAverage($0.baseAddress! + start, count: end - start,
                                                slice: VectorSlice(offset: start, wholeCount: count), wire: .bf16)
            }
        }
        try scattered.withUnsafeMutableBufferPointer { try collective.reduceScatterAverage($0.baseAddress!, count: count, wire: .bf16) }
        var shardOnly = [Float](repeating: outsideShard, count: count)
        for range in collective.shard(count: count, rank: collective.rank) { shardOnly[range] = scattered[range] }
        try fp32.withUnsafeMutableBufferPointer {
            try collective.allReduceAverage($0.baseAddress!, count: count, slice: VectorSlice(offset: 0, wholeCount: count),
                                            wire: .fp32)
        }
        try plain.withUnsafeMutableBufferPointer { try collective.allReduceAverage($0.baseAddress!, count: count) }
        return [whole, buckets, shardOnly, fp32, plain]
    }

    static func check(_ outcomes: [Result<[[Float]], Error>], lanes: Int, _ what: String) throws -> [Float] {
        let world = outcomes.count
        let expected = referenceWireMean((0..<world).map { wireInput(rank: $0, count: count) }, lanes: lanes)
        #expect(expected[0] == .infinity && expected[1].isNaN && expected[2] == .infinity)
        var scatteredEverywhere = [Float](repeating: .nan, count: count)
        for (rank, outcome) in outcomes.enumerated() {
            let results = try outcome.get()
            expectSameBits(results[0], expected, "\(what), rank \(rank): the whole call")
            expectSameBits(results[1], expected, "\(what), rank \(rank): buckets as slices of the whole")
            for index in 0..<count where results[2][index].bitPattern != outsideShard.bitPattern {
                scatteredEverywhere[index] = results[2][index]
            }
            expectSameBits(results[3], results[4], "\(what), rank \(rank): the fp32 wire against the plain call")
            let differing = zip(results[3], expected).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing > count / 2, "\(what), rank \(rank): the fp32 wire should not round (\(differing) differ)")
        }
        // The shards cover the vector: together they are the all-reduce (element 1 is NaN on every rank).
        expectSameBits(scatteredEverywhere, expected, "\(what): reduce-scatter shards")
        return expected
    }

    @Test(arguments: [2, 3, 4], [1, 2])
    func theRingRoundsEveryHopAndAgreesEverywhere(world: Int, lanes: Int) throws {
        _ = try Self.check(try withRing(world, lanes: lanes) { try Self.reduce($0) }, lanes: lanes,
                           "ring, world \(world), lanes \(lanes)")
    }

    /// With one thread that both sends and receives, and small segments (many pieces per step).
    @Test func theRingRoundsWithoutASenderThread() throws {
        _ = try Self.check(try withRing(3, segmentBytes: 4096, senderThread: false) { try Self.reduce($0) }, lanes: 1,
                           "ring, one thread, 4 KiB segments")
    }

    @Test(arguments: [2, 3], [1, 2])
    func sharedMemoryRoundsAsTheRing(world: Int, lanes: Int) throws {
        _ = try Self.check(try withSharedMemory(world, lanes: lanes) { try Self.reduce($0) }, lanes: lanes,
                           "shared memory, world \(world), lanes \(lanes)")
    }

    /// Ranks that choose different wires fail loudly instead of mixing formats.
    @Test(arguments: ["ring", "shm"])
    func ranksOnDifferentWiresFail(transport: String) throws {
        let body: @Sendable (any Collective) throws -> String = { collective in
            var values = [Float](repeating: 1, count: 1000)
            do {
                try values.withUnsafeMutableBufferPointer {
                    try collective.allReduceAverage($0.baseAddress!, count: 1000, slice: VectorSlice(offset: 0, wholeCount: 1000),
                                                    wire: collective.rank == 1 ? .bf16 : .fp32)
                }
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        let outcomes = transport == "ring" ? try withRing(3, timeoutSeconds: 5, body)
            : try withSharedMemory(3, timeoutSeconds: 5, body)
        for (rank, outcome) in outcomes.enumerated() {
            let message = try outcome.get()
            #expect(message.contains("differ") || message.contains("peer lost") || message.contains("closed"),
                    "\(transport) rank \(rank): \(message)")
        }
        #expect(try outcomes.map { try $0.get() }.contains { $0.contains("as bf16") }, "the message names the wire")
    }

    /// One process carries any wire (nothing travels, nothing is rounded).
    @Test func oneProcessLeavesTheValuesAlone() throws {
        let collective = SingleProcessCollective()
        var values: [Float] = [1.0078125 + 1e-6, -3]
        try values.withUnsafeMutableBufferPointer {
            try collective.allReduceAverage($0.baseAddress!, count: 2, slice: VectorSlice(offset: 0, wholeCount: 2), wire: .bf16)
        }
        #expect(collective.carries(.bf16) && values == [1.0078125 + 1e-6, -3])
    }
}

// MARK: - Processes

/// Worker processes (`mae collective-worker --mode dump`) on the bf16 wire over loopback:
/// every rank's whole and bucketed results are the reference's bits.
@Suite(.serialized) struct GradientWireProcessTests {
    @Test(arguments: [(2, 1), (3, 2)])
    func workerProcessesAverageAsTheReference(world: Int, lanes: Int) throws {
        // 600_011 floats (2.4 MB) use both lanes at the ring's 1 MiB minimum per lane.
        let floats = 600_011
        let mae = try maeExecutable()
        let directory = try temporaryDirectory("wire")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let token = uniqueToken("wire")
        let server = try RendezvousServer(address: SocketAddress(host: "127.0.0.1", port: 0), worldSize: world,
                                          jobToken: token, generation: 0, timeoutSeconds: 30)
        defer { server.close() }
        var children: [Child] = []
        defer { for child in children { child.stop() } }
        for rank in 0..<world {
            children.append(try Child(mae, ["collective-worker", "--backend", "tcp", "--transport", "ring", "--mode", "dump",
                                             "--gradient-wire", "bf16", "--floats", String(floats), "--lanes", String(lanes),
                                             "--seed", "9", "--output", directory + "/rank\(rank).bin",
                                             "--rank", String(rank), "--world", String(world),
                                             "--address", server.address.description, "--host-rendezvous", "no",
                                             "--token", token, "--timeout", "30"], directory: directory, name: "rank\(rank)"))
        }
        var dumps: [[Float]] = []
        for (rank, child) in children.enumerated() {
            let status = child.exitStatus(within: 120)
            #expect(status == 0, "rank \(rank) \(status == nil ? "did not finish" : "failed"): \(child.errorOutput)")
            guard status == 0 else { return }
            let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/rank\(rank).bin"))
            try #require(data.count == 3 * floats * 4, "rank \(rank) wrote \(data.count) bytes")
            dumps.append(data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) })
        }
        let inputs = dumps.map { Array($0[0..<floats]) }
        let expected = referenceWireMean(inputs, lanes: lanes, laneBytes: 1 << 20)
        for (rank, dump) in dumps.enumerated() {
            expectSameBits(Array(dump[floats..<(2 * floats)]), expected, "world \(world), rank \(rank): whole")
            expectSameBits(Array(dump[(2 * floats)...]), expected, "world \(world), rank \(rank): buckets")
        }
        // The wire rounds: the exact mean differs from it in most places.
        let exact = (0..<floats).map { index in inputs.reduce(0.0) { $0 + Double($1[index]) } / Double(world) }
        let rounded = zip(expected, exact).filter { Double($0) != $1 }.count
        #expect(rounded > floats / 2)
    }
}

// MARK: - Bytes on the wire

/// The kernel's count of payload bytes received on `descriptor` (tcp_info.tcpi_bytes_received,
/// at byte 128 of Linux's struct tcp_info; glibc's copy of the struct predates the field).
func bytesReceived(_ descriptor: Int32) throws -> UInt64 {
    var information = [UInt8](repeating: 0, count: 232)
    var length = socklen_t(information.count)
    guard getsockopt(descriptor, Int32(IPPROTO_TCP), TCP_INFO, &information, &length) == 0, length >= 136 else {
        throw CollectiveError.systemCall(name: "getsockopt(TCP_INFO)", errno: errno, context: "test: reading tcp_info")
    }
    return information.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 128, as: UInt64.self) }
}

@Suite(.serialized) struct GradientWireBytesTests {
    /// At world 2 each rank receives the whole vector once (its peer's chunk to reduce, then
    /// the other chunk finished), after a 48-byte call header: 4 bytes a float on the fp32
    /// wire, 2 on the bf16 wire. The count starts before a barrier, so the peer cannot have
    /// started the call, and ends after the call; besides the call it may include the peer's
    /// barrier before (a header and one float, 52 bytes; it may also have come earlier) and
    /// the next barrier's bytes, which the peer may already have sent.
    @Test func theBF16WireHalvesTheBytes() throws {
        let count = 1_000_003
        let outcomes = try withRing(2) { ring -> [UInt64] in
            var received: [UInt64] = []
            for wire in [GradientWire.fp32, .bf16] {
                var values = randomInput(rank: ring.rank, count: count, seed: 5)
                let before = try bytesReceived(ring.lanes[0].receiveSocket.descriptor)
                try ring.barrier()
                try values.withUnsafeMutableBufferPointer {
                    try ring.allReduceAverage($0.baseAddress!, count: count, slice: VectorSlice(offset: 0, wholeCount: count),
                                              wire: wire)
                }
                received.append(try bytesReceived(ring.lanes[0].receiveSocket.descriptor) - before)
            }
            try ring.barrier()
            return received
        }
        let barrier = CallHeader.bytes + 4
        for (rank, outcome) in outcomes.enumerated() {
            let received = try outcome.get().map(Int.init)
            for (index, bytesPerFloat) in [4, 2].enumerated() {
                let call = CallHeader.bytes + bytesPerFloat * count
                #expect(call...(call + 2 * barrier) ~= received[index],
                        "rank \(rank), \(bytesPerFloat) bytes a float: received \(received[index]) bytes")
            }
        }
    }
}
