import Testing
@testable import Collectives

/// ZeRO's two halves: shards that cover the vector, a reduce-scatter whose shard has the
/// all-reduce's bits, an all-gather that brings every shard to every rank.
@Suite(.serialized) struct ShardTests {
    static let counts = [0, 1, 7, 100_003]

    @Sendable static func exercise(_ collective: any Collective) throws -> [String] {
        var problems: [String] = []
        let rank = collective.rank, world = collective.worldSize
        for count in counts {
            let shards = (0..<world).map { collective.shard(count: count, rank: $0) }
            let covered = shards.joined().flatMap { Array($0) }.sorted()
            if covered != Array(0..<count) { problems.append("shards of \(count) do not partition it") }

            let input = randomInput(rank: rank, count: count, seed: 43).enumerated().map { index, value in
                value * 0.1 * Float(1 + index % 97)
            }
            var whole = input, scattered = input
            try whole.withUnsafeMutableBufferPointer { try collective.allReduceAverage($0.baseAddress ?? emptyBufferPointer(), count: count) }
            try scattered.withUnsafeMutableBufferPointer { try collective.reduceScatterAverage($0.baseAddress ?? emptyBufferPointer(), count: count) }
            let differing = shards[rank].joined().filter { whole[$0].bitPattern != scattered[$0].bitPattern }.count
            if differing > 0 { problems.append("reduce-scatter of \(count): \(differing) owned values differ from the all-reduce") }

            var gathered = [Float](repeating: .nan, count: count)
            for index in shards[rank].joined() { gathered[index] = Float(rank * 1_000_000 + index) }
            try gathered.withUnsafeMutableBufferPointer { try collective.allGather($0.baseAddress ?? emptyBufferPointer(), count: count) }
            for (owner, shard) in shards.enumerated() {
                let wrong = shard.joined().filter { gathered[$0] != Float(owner * 1_000_000 + $0) }.count
                if wrong > 0 { problems.append("all-gather of \(count): \(wrong) values of rank \(owner) missing") }
            }
        }
        return problems
    }

    static func check(_ outcomes: [Result<[String], Error>], _ what: String) throws {
        for (rank, outcome) in outcomes.enumerated() {
            let problems = try outcome.get()
            #expect(problems.isEmpty, "\(what), rank \(rank): \(problems)")
        }
    }

    @Test(arguments: [2, 3], [1, 2])
    func ringHalves(world: Int, lanes: Int) throws {
        try Self.check(try withRing(world, lanes: lanes) { try Self.exercise($0) }, "ring world \(world) lanes \(lanes)")
    }

    @Test(arguments: [2, 3], [1, 2])
    func sharedMemoryHalves(world: Int, lanes: Int) throws {
        try Self.check(try withSharedMemory(world, lanes: lanes) { try Self.exercise($0) },
                       "shared memory world \(world) lanes \(lanes)")
    }

    /// Two and three "machines" (loopback addresses) of two ranks: shards are pieces of
    /// each local rank's column that its cross-machine ring owns.
    @Test(arguments: [2, 3], [1, 2])
    func hierarchicalHalves(machines: Int, lanes: Int) throws {
        let hosts = machineHosts(machines: machines, perMachine: 2)
        try Self.check(try withSharedMemory(hosts.count, lanes: lanes, transport: .hierarchical, listenHosts: hosts) {
            #expect($0 is HierarchicalCollective)
            return try Self.exercise($0)
        }, "hierarchical \(machines) machines lanes \(lanes)")
    }

    @Test func oneProcessOwnsEverything() throws {
        #expect(try Self.exercise(SingleProcessCollective()).isEmpty)
    }
}
