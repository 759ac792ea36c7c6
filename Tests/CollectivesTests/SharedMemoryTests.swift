import Foundation
import Testing
@testable import Collectives

/// Joins ranks 0..<world as threads of this process, as `withRing` does, then moves them
/// to shared memory (`listenHosts` gives each rank's announced address: loopback
/// addresses other than 127.0.0.1 make ranks look like other machines).
func withSharedMemory<Value: Sendable>(_ world: Int, lanes: Int = 1, slotBytes: Int = 1 << 16, timeoutSeconds: Double = 20,
                                       transport: CollectiveTransport = .sharedMemory,
                                       listenHosts: [String]? = nil,
                                       _ body: @escaping @Sendable (any Collective) throws -> Value) throws -> [Result<Value, Error>] {
    let token = uniqueToken("shm\(world)")
    let server = try RendezvousServer(address: SocketAddress(host: "127.0.0.1", port: 0), worldSize: world,
                                      jobToken: token, generation: 1, timeoutSeconds: timeoutSeconds)
    defer { server.close() }
    let address = server.address.description
    return runRanks(world, limitSeconds: timeoutSeconds * 3) { rank in
        let config = RendezvousConfig(rank: rank, worldSize: world, address: address, jobToken: token, generation: 1,
                                      timeoutSeconds: timeoutSeconds, listenHost: listenHosts?[rank] ?? "127.0.0.1",
                                      hostsRendezvous: false, lanes: lanes, minimumLaneBytes: testLaneBytes)
        let collective = try transport.connect(config, sharedMemorySlotBytes: slotBytes)
        defer { collective.close() }
        return try body(collective)
    }
}

/// The shared-memory collective: the ring's bits, every operation, and failures.
@Suite(.serialized) struct SharedMemoryTests {
    /// Odd lengths; with 64 KiB slots, 100_003 and 250_001 floats cross several pieces
    /// and pieces cross ring chunks (and lanes) at places that are not piece boundaries.
    static let lengths = [0, 1, 7, 1001, 100_003, 250_001]

    /// Sums and means of random inputs (whose bits depend on the order of the adds)
    /// against the TCP ring's own results, computed here by a real ring.
    @Test(arguments: [2, 3, 4], [1, 2])
    func sumsAndMeansAreTheRingsBitForBit(world: Int, lanes: Int) throws {
        @Sendable func reduce(_ collective: any Collective) throws -> [[Float]] {
            var results: [[Float]] = []
            for length in Self.lengths {
                var values = randomInput(rank: collective.rank, count: length, seed: 23)
                try values.withUnsafeMutableBufferPointer { try collective.allReduceSum($0.baseAddress ?? emptyBufferPointer(), count: length) }
                results.append(values)
                values = randomInput(rank: collective.rank, count: length, seed: 29)
                try values.withUnsafeMutableBufferPointer { try collective.allReduceAverage($0.baseAddress ?? emptyBufferPointer(), count: length) }
                results.append(values)
            }
            return results
        }
        let ring = try withRing(world, lanes: lanes) { try reduce($0) }
        let shared = try withSharedMemory(world, lanes: lanes) { collective -> [[Float]] in
            #expect(collective is SharedMemoryCollective)
            return try reduce(collective)
        }
        let expected = try ring[0].get()
        for rank in 0..<world {
            let results = try shared[rank].get()
            for (index, result) in results.enumerated() {
                expectSameBits(result, expected[index], "world \(world), lanes \(lanes), rank \(rank), "
                    + "\(index % 2 == 0 ? "sum" : "mean") of \(Self.lengths[index / 2])")
            }
        }
        // And against the naive definition of the ring's order (a second, independent witness).
        let inputs = (0..<world).map { randomInput(rank: $0, count: 100_003, seed: 23) }
        expectSameBits(try shared[0].get()[8], naiveRingSum(inputs, lanes: lanes), "world \(world): naive ring sum")
    }

    /// Broadcast from every root, scalars, a barrier and slices that leave their margins.
    @Test(arguments: [2, 3])
    func everyOperationWorks(world: Int) throws {
        let outcomes = try withSharedMemory(world, slotBytes: 4096) { collective -> [String] in
            var problems: [String] = []
            let rank = collective.rank
            for length in [0, 1, 5000] {
                for root in 0..<world {
                    var values = (0..<length).map { rank == root ? Float($0 + root) : -7 }
                    try values.withUnsafeMutableBufferPointer { try collective.broadcast($0.baseAddress ?? emptyBufferPointer(), count: length, root: root) }
                    if values != (0..<length).map({ Float($0 + root) }) { problems.append("broadcast of \(length) from \(root)") }
                }
                var buffer = [Float](repeating: -1, count: length + 6)
                for index in 0..<length { buffer[3 + index] = Float(rank + 1) }
                try buffer.withUnsafeMutableBufferPointer { try collective.allReduceSum($0.baseAddress! + 3, count: length) }
                let total = Float(world * (world + 1) / 2)
                if buffer != [-1, -1, -1] + [Float](repeating: total, count: length) + [-1, -1, -1] {
                    problems.append("slice sum of \(length)")
                }
            }
            let scalars = try collective.allReduceScalars([1, Double(rank), 0.25])
            if scalars != [Double(world), Double(world * (world - 1) / 2), 0.25 * Double(world)] {
                problems.append("scalars \(scalars)")
            }
            if try collective.allReduceScalars([]) != [] { problems.append("empty scalars") }
            try collective.barrier()
            return problems
        }
        for (rank, outcome) in outcomes.enumerated() {
            let problems = try outcome.get()
            #expect(problems.isEmpty, "rank \(rank): \(problems)")
        }
    }

    @Test func callsThatDifferFailOnEveryRank() throws {
        let outcomes = try withSharedMemory(2, timeoutSeconds: 5) { collective -> String in
            var values = [Float](repeating: 1, count: 20)
            do {
                try values.withUnsafeMutableBufferPointer { try collective.allReduceSum($0.baseAddress!, count: 10 + collective.rank) }
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        for (rank, outcome) in outcomes.enumerated() {
            let message = try outcome.get()
            #expect(message.contains("differ") || message.contains("peer lost"), "rank \(rank): \(message)")
        }
    }

    /// A rank that stops calling makes the others fail within the timeout, naming it;
    /// every later call fails at once.
    @Test func aRankThatStopsCallingIsNamedWithinTheTimeout() throws {
        let timeout = 1.0
        let outcomes = try withSharedMemory(3, timeoutSeconds: timeout) { collective in
            try stallLastRank(collective, timeout: timeout)
        }
        for rank in 0..<2 {
            let (elapsed, failure, later) = try outcomes[rank].get()
            // Rank 0 waits for rank 2 (timed out); rank 1 may hear of rank 0's failure first.
            #expect(failure.contains("rank 2 made no progress") || failure.contains("peer lost: rank 1 in")
                        && failure.contains("rank 0"), "rank \(rank): \(failure)")
            #expect(elapsed >= timeout * 0.9 && elapsed < timeout + 5, "rank \(rank) failed after \(elapsed) s")
            #expect(later.contains("closed"), "rank \(rank) after the failure: \(later)")
        }
    }

    /// `auto` picks shared memory when every rank announced this machine's address and
    /// the ring otherwise; `shm` refuses ranks that look like other machines.
    @Test func automaticTransportFollowsTheAddresses() throws {
        let together = try withSharedMemory(2, transport: .automatic) { "\(type(of: $0))" }
        for outcome in together { #expect(try outcome.get() == "SharedMemoryCollective") }
        let apart = try withSharedMemory(2, transport: .automatic, listenHosts: ["127.0.0.1", "127.0.0.2"]) { "\(type(of: $0))" }
        for outcome in apart { #expect(try outcome.get() == "TCPRingCollective") }
        let refused = try withSharedMemory(2, listenHosts: ["127.0.0.1", "127.0.0.2"]) { _ in "joined" }
        for outcome in refused {
            #expect(throws: CollectiveError.self) { try outcome.get() }
        }
    }
}
