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
