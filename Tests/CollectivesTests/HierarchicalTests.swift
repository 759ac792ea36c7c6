import Foundation
import Testing
@testable import Collectives

/// The loopback addresses that make ranks look like `machines` machines of `perMachine`
/// ranks each (ranks numbered machine by machine unless `interleaved`).
func machineHosts(machines: Int, perMachine: Int, interleaved: Bool = false) -> [String] {
    (0..<machines * perMachine).map { rank in "127.0.0.\(1 + (interleaved ? rank % machines : rank / perMachine))" }
}

/// The hierarchical collective's sum, computed naively: each machine's sum in the ring's
/// order over its ranks for the whole vector, then column j (elements [j·n/L, (j+1)·n/L))
/// of those machine sums in the ring's order over the machines.
func naiveHierarchicalSum(_ inputs: [[Float]], machines: [[Int]], lanes: Int) -> [Float] {
    let count = inputs[0].count, perMachine = machines[0].count
    let machineSums = machines.map { ranks in naiveRingSum(ranks.map { inputs[$0] }, lanes: lanes) }
    var result = [Float](repeating: 0, count: count)
    for column in 0..<perMachine {
        let first = column * count / perMachine, end = (column + 1) * count / perMachine
        guard end > first else { continue }
        result.replaceSubrange(first..<end, with: naiveRingSum(machineSums.map { Array($0[first..<end]) }, lanes: lanes))
    }
    return result
}

/// Shared memory inside "machines" (loopback addresses 127.0.0.x), a TCP ring per local
/// rank across them: the order of the sums, bucketed calls, every operation, the fallbacks.
@Suite(.serialized) struct HierarchicalTests {
    static let lengths = [0, 1, 7, 1001, 100_003, 250_001]

    /// Sums and means of random inputs: bit for bit the naive hierarchical order on every
    /// rank (so the same bits everywhere), and close to a float64 reference.
    @Test(arguments: [(2, 2, 1), (2, 2, 2), (2, 3, 1), (3, 2, 1), (3, 2, 2)])
    func sumsAndMeansFollowTheHierarchicalOrder(machines machineCount: Int, perMachine: Int, lanes: Int) throws {
        let hosts = machineHosts(machines: machineCount, perMachine: perMachine)
        let world = hosts.count
        let outcomes = try withSharedMemory(world, lanes: lanes, transport: .hierarchical,
                                            listenHosts: hosts) { collective -> [[Float]] in
            #expect(collective is HierarchicalCollective)
            var results: [[Float]] = []
            for length in Self.lengths {
                var values = randomInput(rank: collective.rank, count: length, seed: 31)
                try values.withUnsafeMutableBufferPointer { try collective.allReduceSum($0.baseAddress ?? emptyBufferPointer(), count: length) }
                results.append(values)
                values = randomInput(rank: collective.rank, count: length, seed: 37)
                try values.withUnsafeMutableBufferPointer { try collective.allReduceAverage($0.baseAddress ?? emptyBufferPointer(), count: length) }
                results.append(values)
            }
            return results
        }
        let machines = MachinePlacement(rankHosts: hosts).machines
        for (index, length) in Self.lengths.enumerated() {
            let sumInputs = (0..<world).map { randomInput(rank: $0, count: length, seed: 31) }
            let meanInputs = (0..<world).map { randomInput(rank: $0, count: length, seed: 37) }
            let expectedSum = naiveHierarchicalSum(sumInputs, machines: machines, lanes: lanes)
            let expectedMean = naiveHierarchicalSum(meanInputs, machines: machines, lanes: lanes).map { $0 / Float(world) }
            for rank in 0..<world {
                let results = try outcomes[rank].get()
                let what = "\(machineCount)×\(perMachine), lanes \(lanes), rank \(rank), length \(length)"
                expectSameBits(results[2 * index], expectedSum, "\(what): sum")
                expectSameBits(results[2 * index + 1], expectedMean, "\(what): mean")
                // An independent witness of the values: the float64 sum, to float32 rounding.
                var worst = 0.0
                for element in 0..<length {
                    let reference = sumInputs.reduce(0.0) { $0 + Double($1[element]) }
                    worst = max(worst, abs(Double(results[2 * index][element]) - reference))
                }
                #expect(worst <= 1e-5 * Double(world), "\(what): sum is \(worst) from the float64 reference")
            }
        }
    }

    /// A vector reduced bucket by bucket (at boundaries that cut columns, lanes and ring
    /// chunks) has the bits of one call of the whole, and a repeated run the same bits again.
    /// Three machines of three ranks: with two, a sum of two has one order and could not
    /// tell a wrong order from the right one.
    @Test(arguments: [1, 2])
    func bucketsAndRepeatedRunsGiveTheWholeCallsBits(lanes: Int) throws {
        let hosts = machineHosts(machines: 3, perMachine: 3, interleaved: true)
        let count = 250_001
        let boundaries = [0, 1, 4_999, 62_500, 62_501, 83_334, 125_000, 190_000, 250_000, count]
        let outcomes = try withSharedMemory(9, lanes: lanes, transport: .hierarchical,
                                            listenHosts: hosts) { collective -> [[Float]] in
            var runs: [[Float]] = []
            for _ in 0..<2 {
                var whole = randomInput(rank: collective.rank, count: count, seed: 41)
                try whole.withUnsafeMutableBufferPointer { try collective.allReduceAverage($0.baseAddress!, count: count) }
                runs.append(whole)
            }
            var bucketed = randomInput(rank: collective.rank, count: count, seed: 41)
            try bucketed.withUnsafeMutableBufferPointer { buffer in
                for (first, end) in zip(boundaries, boundaries.dropFirst()) {
                    try collective.allReduceAverage(buffer.baseAddress! + first, count: end - first,
                                                    slice: VectorSlice(offset: first, wholeCount: count))
                }
            }
            return runs + [bucketed]
        }
        let reference = try outcomes[0].get()[0]
        for rank in 0..<9 {
            let results = try outcomes[rank].get()
            expectSameBits(results[0], reference, "lanes \(lanes), rank \(rank): whole call")
            expectSameBits(results[1], reference, "lanes \(lanes), rank \(rank): repeated whole call")
            expectSameBits(results[2], reference, "lanes \(lanes), rank \(rank): bucket by bucket")
        }
        // Ranks 0, 3 and 6 share machine 127.0.0.1, and so on.
        let machines = MachinePlacement(rankHosts: hosts).machines
        #expect(machines == [[0, 3, 6], [1, 4, 7], [2, 5, 8]])
        let inputs = (0..<9).map { randomInput(rank: $0, count: count, seed: 41) }
        expectSameBits(reference, naiveHierarchicalSum(inputs, machines: machines, lanes: lanes).map { $0 / 9 },
                       "lanes \(lanes): naive hierarchical mean")
    }

    /// Broadcast from every root, slices that leave their margins, scalars and barriers.
    @Test func everyOperationWorks() throws {
        let hosts = machineHosts(machines: 2, perMachine: 2)
        let outcomes = try withSharedMemory(4, slotBytes: 4096, transport: .hierarchical,
                                            listenHosts: hosts) { collective -> [String] in
            var problems: [String] = []
            let rank = collective.rank, world = collective.worldSize
            for length in [0, 1, 3, 5000] {
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
            try collective.barrier()
            return problems
        }
        for (rank, outcome) in outcomes.enumerated() {
            let problems = try outcome.get()
            #expect(problems.isEmpty, "rank \(rank): \(problems)")
        }
    }

    /// `auto` picks the hierarchy for machines with equally many ranks (two or more);
    /// `hierarchical` falls back to shared memory on one machine and to the ring for
    /// one rank per machine or unequal machines.
    @Test func theTransportFollowsThePlacement() throws {
        func kinds(_ transport: CollectiveTransport, _ hosts: [String]) throws -> [String] {
            try withSharedMemory(hosts.count, transport: transport, listenHosts: hosts) { "\(type(of: $0))" }
                .map { try $0.get() }
        }
        let twoByTwo = machineHosts(machines: 2, perMachine: 2)
        #expect(try kinds(.automatic, twoByTwo) == Array(repeating: "HierarchicalCollective", count: 4))
        #expect(try kinds(.ring, twoByTwo) == Array(repeating: "TCPRingCollective", count: 4))
        #expect(try kinds(.hierarchical, machineHosts(machines: 1, perMachine: 3))
                    == Array(repeating: "SharedMemoryCollective", count: 3))
        #expect(try kinds(.hierarchical, machineHosts(machines: 3, perMachine: 1))
                    == Array(repeating: "TCPRingCollective", count: 3))
        let unequal = ["127.0.0.1", "127.0.0.1", "127.0.0.2"]
        #expect(try kinds(.hierarchical, unequal) == Array(repeating: "TCPRingCollective", count: 3))
        #expect(try kinds(.automatic, unequal) == Array(repeating: "TCPRingCollective", count: 3))
    }

    @Test func placementGroupsRanksByHost() {
        let placement = MachinePlacement(rankHosts: ["b", "a", "b", "a", "c", "c"])
        #expect(placement.machines == [[0, 2], [1, 3], [4, 5]])
        #expect(placement.ranksPerMachine == 2)
        #expect(placement.supportsHierarchy)
        #expect(placement.position(of: 3) == (machine: 1, localRank: 1))
        #expect(placement.position(of: 4) == (machine: 2, localRank: 0))
        #expect(MachinePlacement(rankHosts: ["a", "a", "b"]).ranksPerMachine == nil)
        #expect(!MachinePlacement(rankHosts: ["a", "a", "b"]).supportsHierarchy)
        #expect(!MachinePlacement(rankHosts: ["a", "b"]).supportsHierarchy)
        #expect(!MachinePlacement(rankHosts: ["a", "a"]).supportsHierarchy)
    }

    /// A rank that stops calling makes the others fail within the timeout (its local peer
    /// in shared memory, its cross-machine peer over TCP, the rest hear of their failures).
    @Test func aRankThatStopsCallingMakesTheOthersFailWithinTheTimeout() throws {
        let timeout = 1.0
        let hosts = machineHosts(machines: 2, perMachine: 2)
        let outcomes = try withSharedMemory(4, timeoutSeconds: timeout, transport: .hierarchical,
                                            listenHosts: hosts) { collective in
            try stallLastRank(collective, timeout: timeout)
        }
        for rank in 0..<3 {
            let (elapsed, failure, later) = try outcomes[rank].get()
            #expect(failure.contains("timed out") || failure.contains("peer lost"), "rank \(rank): \(failure)")
            #expect(elapsed < timeout + 5, "rank \(rank) failed after \(elapsed) s")
            #expect(later.contains("closed"), "rank \(rank) after the failure: \(later)")
        }
    }
}
