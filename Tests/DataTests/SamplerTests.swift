import Testing
@testable import Data

@Suite struct DistributedSamplerTests {
    @Test(arguments: [(10, 1), (10, 3), (10, 4), (7, 8), (3, 7), (100, 5), (1, 2)])
    func shardsFollowPyTorchSemantics(count: Int, world: Int) {
        let samplers = (0..<world).map { DistributedSampler(datasetCount: count, worldSize: world, rank: $0, seed: 42) }
        let perRank = (count + world - 1) / world
        for epoch in 0..<3 {
            let permutation = samplers[0].permutation(epoch: epoch)
            #expect(permutation.sorted() == Array(0..<count), "a permutation")
            // PyTorch: pad by repeating the permutation from its start, rank r takes r::W.
            var padded = permutation
            while padded.count < perRank * world { padded += permutation }
            padded = Array(padded.prefix(perRank * world))
            var covered = Set<Int>()
            for (rank, sampler) in samplers.enumerated() {
                let indices = sampler.indices(epoch: epoch)
                #expect(sampler.samplesPerRank == perRank)
                #expect(indices.count == perRank)
                #expect(indices == stride(from: rank, to: padded.count, by: world).map { padded[$0] })
                covered.formUnion(indices)
            }
            #expect(covered == Set(0..<count), "every index is on some rank")
        }
    }

    @Test func permutationDependsOnSeedAndEpochOnly() {
        let sampler = DistributedSampler(datasetCount: 1000, worldSize: 2, rank: 1, seed: 7)
        let same = DistributedSampler(datasetCount: 1000, worldSize: 2, rank: 1, seed: 7)
        let otherSeed = DistributedSampler(datasetCount: 1000, worldSize: 2, rank: 1, seed: 8)
        #expect(sampler.indices(epoch: 3) == same.indices(epoch: 3))
        #expect(sampler.indices(epoch: 3) != sampler.indices(epoch: 4))
        #expect(sampler.indices(epoch: 3) != otherSeed.indices(epoch: 3))
        #expect(sampler.permutation(epoch: 0) != Array(0..<1000), "shuffled")
    }

    @Test func fisherYatesIsUniformOnThreeElements() {
        // Each of the 6 orders of 3 elements appears about 1/6 of the time over 6000 epochs.
        var counts: [[Int]: Int] = [:]
        let sampler = DistributedSampler(datasetCount: 3, worldSize: 1, rank: 0, seed: 11)
        for epoch in 0..<6000 { counts[sampler.permutation(epoch: epoch), default: 0] += 1 }
        #expect(counts.count == 6)
        for (order, count) in counts { #expect(count > 850 && count < 1150, "\(order) appeared \(count) times") }
    }

    @Test func withoutShuffleRanksInterleaveTheDatasetOrder() {
        let samplers = (0..<3).map { DistributedSampler(datasetCount: 7, worldSize: 3, rank: $0, seed: 1, shuffle: false) }
        #expect(samplers.map { $0.indices(epoch: 5) } == [[0, 3, 6], [1, 4, 0], [2, 5, 1]])
    }
}

/// A run resumed with another world size inside an epoch: the rest of the epoch split from
/// the positions taken so far.
@Suite struct ResizedSplitTests {
    /// W workers take k batches of B each, then W' workers split the rest: the prefix and the
    /// rest hold every sample of the epoch exactly once, apart from the padding at the end.
    @Test(arguments: [(37, 2, 3, 2, 3), (36, 2, 3, 2, 3), (100, 4, 1, 5, 3), (100, 3, 7, 4, 2), (11, 1, 4, 2, 1),
                      (50, 5, 2, 3, 2), (9, 3, 5, 1, 1)])
    func theRestOfAnEpochIsSplitAmongTheNewWorkersOnce(count: Int, world: Int, newWorld: Int, batch: Int, batchesTaken: Int) {
        let old = (0..<world).map { DistributedSampler(datasetCount: count, worldSize: world, rank: $0, seed: 3) }
        let new = (0..<newWorld).map { DistributedSampler(datasetCount: count, worldSize: newWorld, rank: $0, seed: 3) }
        for epoch in 0..<2 {
            let permutation = old[0].permutation(epoch: epoch)
            let taken = batchesTaken * batch * world
            let prefix = old.flatMap { Array($0.indices(epoch: epoch).prefix(batchesTaken * batch)) }
            #expect(Set(prefix) == Set(permutation.prefix(taken)), "the W workers took the permutation's first \(taken)")
            #expect(prefix.count == taken)
            let rest = new.map { $0.indices(epoch: epoch, from: taken) }
            let perRank = (count - taken + newWorld - 1) / newWorld
            #expect(rest.allSatisfy { $0.count == perRank } && new[0].samplesPerRank(from: taken) == perRank)
            let padding = perRank * newWorld - (count - taken)
            var seen = [Int](repeating: 0, count: count)
            for index in prefix + rest.joined() { seen[index] += 1 }
            // Every sample once; the padding repeats the permutation's first samples.
            #expect(seen.reduce(0, +) == count + padding)
            #expect(seen.allSatisfy { $0 >= 1 }, "every sample of the epoch is taken")
            #expect(Set(permutation.prefix(padding)) == Set((0..<count).filter { seen[$0] == 2 }))
            #expect(seen.allSatisfy { $0 <= 2 } && padding < newWorld)
            // Rank r of W' takes positions taken + r, taken + r + W', ... in that order.
            for (rank, indices) in rest.enumerated() {
                #expect(indices == stride(from: taken + rank, to: taken + perRank * newWorld, by: newWorld)
                    .map { permutation[$0 % count] })
            }
        }
    }

    /// The same world size from a batch boundary gives exactly the rest of the whole epoch's
    /// indices, so a resume without a resize reads the same samples.
    @Test(arguments: [(37, 2, 3), (100, 3, 5), (8, 4, 1), (7, 8, 1)])
    func theSameWorldSizeGivesTodaysIndices(count: Int, world: Int, batch: Int) {
        for rank in 0..<world {
            let sampler = DistributedSampler(datasetCount: count, worldSize: world, rank: rank, seed: 9)
            let whole = sampler.indices(epoch: 4)
            #expect(sampler.indices(epoch: 4, from: 0) == whole)
            var batchesTaken = 0
            while (batchesTaken + 1) * batch * world < count {
                batchesTaken += 1
                #expect(sampler.indices(epoch: 4, from: batchesTaken * batch * world) == Array(whole.dropFirst(batchesTaken * batch)))
            }
        }
    }
}
