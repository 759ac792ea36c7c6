import Testing
@testable import Collectives

/// A vector averaged bucket by bucket, each bucket a `VectorSlice` of the whole (as the
/// overlapped gradient exchange does), has the bits of one call over the whole vector,
/// on the ring and in shared memory, with one lane and with two.
@Suite(.serialized) struct SliceReductionTests {
    static let count = 100_003
    /// Bucket boundaries that cut chunks and lanes anywhere, reduced from the end of the
    /// vector to its start (the backward's order), with an empty bucket among them.
    static let boundaries = [count, 99_999, 61_000, 61_000, 33_334, 7, 1, 0]

    /// Each rank's results: the whole call, the buckets as slices, the buckets as plain calls.
    @Sendable static func reduce(_ collective: any Collective) throws -> [[Float]] {
        // Full mantissas and mixed magnitudes, so that sums of three round by their order
        // (`randomInput`'s values alone are multiples of 2^-23, whose sums are mostly exact).
        let input = randomInput(rank: collective.rank, count: count, seed: 41).enumerated().map { index, value in
            value * 0.1 * Float(1 + index % 97)
        }
        var whole = input, sliced = input, separate = input
        try whole.withUnsafeMutableBufferPointer { try collective.allReduceAverage($0.baseAddress!, count: count) }
        for (end, start) in zip(boundaries, boundaries.dropFirst()) {
            try sliced.withUnsafeMutableBufferPointer {
                try collective.allReduceAverage($0.baseAddress! + start, count: end - start,
                                                slice: VectorSlice(offset: start, wholeCount: count))
            }
            try separate.withUnsafeMutableBufferPointer {
                try collective.allReduceAverage($0.baseAddress! + start, count: end - start)
            }
        }
        return [whole, sliced, separate]
    }

    static func check(_ outcomes: [Result<[[Float]], Error>], _ what: String) throws {
        let expected = try outcomes[0].get()[0]
        for (rank, outcome) in outcomes.enumerated() {
            let results = try outcome.get()
            expectSameBits(results[0], expected, "\(what), rank \(rank): the whole call")
            expectSameBits(results[1], expected, "\(what), rank \(rank): buckets as slices of the whole")
            // The witness that the order matters: buckets reduced on their own sum many
            // elements from another rank on, which rounds differently.
            let differing = zip(results[2], expected).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing > 0, "\(what), rank \(rank): buckets reduced alone should differ from the whole somewhere")
        }
    }

    @Test(arguments: [3, 4], [1, 2])
    func ringBucketsHaveTheWholeCallsBits(world: Int, lanes: Int) throws {
        try Self.check(try withRing(world, lanes: lanes) { try Self.reduce($0) }, "ring, world \(world), lanes \(lanes)")
    }

    @Test(arguments: [3, 4], [1, 2])
    func sharedMemoryBucketsHaveTheWholeCallsBits(world: Int, lanes: Int) throws {
        try Self.check(try withSharedMemory(world, lanes: lanes) { try Self.reduce($0) },
                       "shared memory, world \(world), lanes \(lanes)")
    }

    @Test func slicesOutsideTheWholeAreRefused() throws {
        let collective = SingleProcessCollective()
        var values: [Float] = [1, 2, 3]
        #expect(throws: CollectiveError.self) {
            try values.withUnsafeMutableBufferPointer {
                try collective.allReduceAverage($0.baseAddress!, count: 3, slice: VectorSlice(offset: 2, wholeCount: 4))
            }
        }
        try values.withUnsafeMutableBufferPointer {
            try collective.allReduceAverage($0.baseAddress!, count: 3, slice: VectorSlice(offset: 1, wholeCount: 4))
        }
        #expect(values == [1, 2, 3] && collective.reducesSlicesAsWhole)
    }

    /// Ranks that place the same count at different offsets fail loudly instead of mixing data.
    @Test func slicesThatDifferBetweenRanksFail() throws {
        let outcomes = try withRing(3, timeoutSeconds: 5) { ring -> String in
            var values = [Float](repeating: 1, count: 100)
            do {
                try values.withUnsafeMutableBufferPointer {
                    try ring.allReduceAverage($0.baseAddress!, count: 50,
                                              slice: VectorSlice(offset: ring.rank == 0 ? 0 : 50, wholeCount: 100))
                }
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        for (rank, outcome) in outcomes.enumerated() {
            let message = try outcome.get()
            #expect(message.contains("differ") || message.contains("peer lost") || message.contains("closed"),
                    "rank \(rank): \(message)")
        }
    }
}
