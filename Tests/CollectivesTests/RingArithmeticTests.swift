import Foundation
import Testing
@testable import Collectives

/// The ring's arithmetic, with ranks as threads over loopback sockets.
@Suite(.serialized) struct RingArithmeticTests {
    /// Lengths that do not divide by the world size, shorter than it, and longer
    /// than several segments of 4096 bytes.
    static func lengths(_ world: Int) -> [Int] {
        [0, 1, max(world - 1, 0), world + 1, 1000, 12_347]
    }

    /// Both drivers (a sender thread beside the calling thread, or one thread for
    /// both, sleeping at once or retrying its sockets first) and both one lane and three.
    @Test(arguments: 1...8, [(true, 1, nil), (false, 1, 0), (false, 1, 1_000), (true, 3, nil), (false, 3, 0)])
    func sumsAndMeansEqualANaiveReductionBitForBit(world: Int, driver: (senderThread: Bool, lanes: Int, spins: Int?)) throws {
        // Small segments for odd worlds: a chunk then crosses many segment boundaries.
        let segment = world % 2 == 1 ? 4096 : 1 << 20
        let outcomes = try withRing(world, segmentBytes: segment, senderThread: driver.senderThread,
                                    lanes: driver.lanes, spins: driver.spins) { ring -> [String] in
            var problems: [String] = []
            for length in Self.lengths(world) {
                let inputs = (0..<world).map { randomInput(rank: $0, count: length, seed: 11) }
                let expectedSum = naiveRingSum(inputs, lanes: driver.lanes)
                var values = inputs[ring.rank]
                try values.withUnsafeMutableBufferPointer { try ring.allReduceSum($0.baseAddress ?? emptyBufferPointer(), count: length) }
                if values.map(\.bitPattern) != expectedSum.map(\.bitPattern) { problems.append("sum of \(length) differs") }

                values = inputs[ring.rank]
                try values.withUnsafeMutableBufferPointer { try ring.allReduceAverage($0.baseAddress ?? emptyBufferPointer(), count: length) }
                let expectedMean = expectedSum.map { $0 / Float(world) }
                if values.map(\.bitPattern) != expectedMean.map(\.bitPattern) { problems.append("mean of \(length) differs") }

                // Sanity: the ring's sum is a sum (against double precision, any order).
                for element in 0..<length {
                    let exact = (0..<world).reduce(0.0) { $0 + Double(inputs[$1][element]) }
                    if abs(Double(expectedSum[element]) - exact) > 1e-5 * Double(world) {
                        problems.append("sum of \(length) at \(element) is \(expectedSum[element]), not \(exact)")
                        break
                    }
                }
            }
            return problems
        }
        for (rank, outcome) in outcomes.enumerated() {
            let problems = try outcome.get()
            #expect(problems.isEmpty, "rank \(rank): \(problems)")
        }
    }

    @Test(arguments: [2, 3, 5], [true, false])
    func slicesReduceOnlyTheirElements(world: Int, senderThread: Bool) throws {
        let outcomes = try withRing(world, segmentBytes: 4096, senderThread: senderThread, lanes: 2) { ring -> ([Float], [Float]) in
            let length = 5003, offset = 37
            var buffer = [Float](repeating: -9, count: offset + length + 11)
            let input = randomInput(rank: ring.rank, count: length, seed: 5)
            buffer.replaceSubrange(offset..<offset + length, with: input)
            try buffer.withUnsafeMutableBufferPointer { try ring.allReduceAverage($0.baseAddress! + offset, count: length) }
            return (buffer, input)
        }
        let results = try outcomes.map { try $0.get() }
        let expected = naiveRingSum(results.map(\.1), lanes: 2).map { $0 / Float(world) }
        for (rank, (buffer, _)) in results.enumerated() {
            expectSameBits(Array(buffer[37..<37 + 5003]), expected, "rank \(rank) slice")
            #expect(buffer[..<37].allSatisfy { $0 == -9 } && buffer[(37 + 5003)...].allSatisfy { $0 == -9 },
                    "rank \(rank) wrote outside its slice")
        }
    }

    @Test(arguments: [2, 3, 4], [true, false])
    func broadcastBarrierAndScalars(world: Int, senderThread: Bool) throws {
        let outcomes = try withRing(world, segmentBytes: 4096, senderThread: senderThread, lanes: 2) { ring -> [String] in
            var problems: [String] = []
            for root in 0..<world {
                for length in [0, 1, 3, 9000] {
                    var values = ring.rank == root ? (0..<length).map { Float($0 * 3 + root) } : [Float](repeating: -1, count: length)
                    try values.withUnsafeMutableBufferPointer { try ring.broadcast($0.baseAddress ?? emptyBufferPointer(), count: length, root: root) }
                    if values != (0..<length).map({ Float($0 * 3 + root) }) { problems.append("broadcast \(length) from \(root)") }
                }
            }
            try ring.barrier()
            let scalars = try ring.allReduceScalars([1, Double(ring.rank), 0.25])
            if scalars != [Double(world), Double(world * (world - 1) / 2), 0.25 * Double(world)] {
                problems.append("scalars \(scalars)")
            }
            if try ring.allReduceScalars([]) != [] { problems.append("empty scalars") }
            try ring.barrier()
            return problems
        }
        for (rank, outcome) in outcomes.enumerated() { #expect(try outcome.get().isEmpty, "rank \(rank)") }
    }

    /// Many back-to-back calls of different kinds and sizes on the same connections
    /// keep their data apart, and repeated runs give identical bits.
    @Test func backToBackCallsDoNotMixAndAreDeterministic() throws {
        let world = 3
        func run() throws -> [[Float]] {
            let outcomes = try withRing(world, segmentBytes: 4096, lanes: 3) { ring -> [Float] in
                var collected: [Float] = []
                for round in 0..<6 {
                    let length = [10_001, 3, 777][round % 3]
                    var values = randomInput(rank: ring.rank, count: length, seed: UInt64(round))
                    try values.withUnsafeMutableBufferPointer { try ring.allReduceAverage($0.baseAddress!, count: length) }
                    collected += values
                    try ring.barrier()
                }
                return collected
            }
            return try outcomes.map { try $0.get() }
        }
        let first = try run(), second = try run()
        var expected: [Float] = []
        for round in 0..<6 {
            let length = [10_001, 3, 777][round % 3]
            expected += naiveRingSum((0..<world).map { randomInput(rank: $0, count: length, seed: UInt64(round)) }, lanes: 3)
                .map { $0 / Float(world) }
        }
        for rank in 0..<world {
            expectSameBits(first[rank], expected, "rank \(rank)")
            expectSameBits(second[rank], first[rank], "rank \(rank), second run")
        }
    }

    @Test func callsThatDifferBetweenRanksFailInsteadOfMixing() throws {
        let outcomes = try withRing(2, timeoutSeconds: 3) { ring -> Void in
            var values = [Float](repeating: 1, count: 11)
            try values.withUnsafeMutableBufferPointer {
                try ring.allReduceSum($0.baseAddress!, count: ring.rank == 0 ? 10 : 11)
            }
        }
        for outcome in outcomes {
            #expect(throws: CollectiveError.self) { try outcome.get() }
        }
        if case let .failure(error) = outcomes[0] { #expect("\(error)".contains("differ")) }
    }

    @Test func singleProcessCollectiveIsTheIdentity() throws {
        let single = SingleProcessCollective()
        var values: [Float] = [1, 2, 3]
        try values.withUnsafeMutableBufferPointer {
            try single.allReduceAverage($0.baseAddress!, count: 3)
            try single.allReduceSum($0.baseAddress!, count: 3)
            try single.broadcast($0.baseAddress!, count: 3, root: 0)
        }
        #expect(values == [1, 2, 3])
        #expect(try single.allReduceScalars([2.5]) == [2.5])
        try single.barrier()
        #expect(throws: CollectiveError.self) { try single.broadcast(&values, count: 3, root: 1) }
        single.close()
        #expect(throws: CollectiveError.self) { try single.barrier() }
    }

    @Test func reductionKernelsMatchScalarArithmetic() {
        for count in [1, 15, 16, 17, 100] {
            let a = randomInput(rank: 0, count: count, seed: 9), b = randomInput(rank: 1, count: count, seed: 9)
            var sum = a, mean = a
            sum.withUnsafeMutableBytes { destination in b.withUnsafeBytes { addFloats(destination.baseAddress!, $0.baseAddress!, count: count) } }
            mean.withUnsafeMutableBytes { destination in
                b.withUnsafeBytes { addFloatsAndDivide(destination.baseAddress!, $0.baseAddress!, count: count, divisor: 3) }
            }
            expectSameBits(sum, zip(a, b).map { $0 + $1 }, "add \(count)")
            expectSameBits(mean, zip(a, b).map { ($0 + $1) / 3 }, "add and divide \(count)")
        }
    }
}

/// A valid pointer for calls with zero elements (arrays of zero elements have none).
func emptyBufferPointer() -> UnsafeMutablePointer<Float> {
    struct Holder { nonisolated(unsafe) static let pointer = UnsafeMutablePointer<Float>.allocate(capacity: 1) }
    return Holder.pointer
}
