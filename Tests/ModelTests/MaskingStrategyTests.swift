import Kernels
@testable import Model
import Testing

@Suite struct MaskingStrategyTests {
    /// The mask (1 = removed) that `randomMasking` makes from a strategy's noise.
    func mask(_ strategy: MaskingStrategy, gridSize: Int, kept: Int, seed: UInt64 = 5, epoch: Int = 1,
              sample: Int) -> [Float] {
        let count = gridSize * gridSize
        let noise = FloatBuffer(count: count)
        fillMaskingNoise(noise.pointer, strategy: strategy, gridSize: gridSize, keptCount: kept, seed: seed,
                         epoch: epoch, sampleIndex: sample)
        var shuffle = [Int32](repeating: 0, count: count), restore = shuffle
        var mask = [Float](repeating: -1, count: count)
        randomMasking(shuffle: &shuffle, restore: &restore, mask: &mask, noise: noise.pointer,
                      patchCount: count, keptCount: kept)
        return mask
    }

    /// Pairs of side-by-side patches of which one is removed and the other kept: few for
    /// masks made of large blocks, about half of all pairs for a random mask at 50 %.
    func mixedEdges(_ mask: [Float], gridSize: Int) -> Int {
        var edges = 0
        for row in 0..<gridSize {
            for column in 0..<gridSize {
                let here = mask[row * gridSize + column]
                if column + 1 < gridSize, mask[row * gridSize + column + 1] != here { edges += 1 }
                if row + 1 < gridSize, mask[(row + 1) * gridSize + column] != here { edges += 1 }
            }
        }
        return edges
    }

    @Test func randomIsTheOfficialShuffleUnchanged() {
        let a = FloatBuffer(count: 196), b = FloatBuffer(count: 196)
        for sample in [0, 1, 17, 1_000_003] {
            fillMaskingNoise(a.pointer, patchCount: 196, seed: 9, epoch: 4, sampleIndex: sample)
            fillMaskingNoise(b.pointer, strategy: .random, gridSize: 14, keptCount: 49, seed: 9, epoch: 4,
                             sampleIndex: sample)
            #expect(a.toArray() == b.toArray())
        }
    }

    @Test(arguments: MaskingStrategy.allCases)
    func everySampleKeepsTheSameNumberOfPatches(_ strategy: MaskingStrategy) {
        for (gridSize, ratio) in [(14, 0.75), (14, 0.5), (8, 0.75), (8, 0.9), (7, 0.75)] {
            let kept = Int(Double(gridSize * gridSize) * (1 - ratio))
            for sample in 0..<40 {
                let removed = mask(strategy, gridSize: gridSize, kept: kept, sample: sample)
                #expect(removed.allSatisfy { $0 == 0 || $0 == 1 })
                #expect(removed.reduce(0, +) == Float(gridSize * gridSize - kept),
                        "\(strategy) grid \(gridSize) ratio \(ratio) sample \(sample)")
            }
        }
    }

    @Test(arguments: [14, 8])
    func gridKeepsOnePatchOfEveryTwoByTwoAtThreeQuarters(gridSize: Int) {
        var corners = Set<Int>()
        for sample in 0..<40 {
            let removed = mask(.grid, gridSize: gridSize, kept: gridSize * gridSize / 4, sample: sample)
            let keptPatches = (0..<(gridSize * gridSize)).filter { removed[$0] == 0 }
            // Every kept patch sits on the same corner of its 2×2 square...
            let corner = Set(keptPatches.map { ($0 / gridSize % 2) * 2 + $0 % gridSize % 2 })
            #expect(corner.count == 1)
            corners.formUnion(corner)
            // ...and every 2×2 square holds exactly one kept patch.
            for top in stride(from: 0, to: gridSize, by: 2) {
                for left in stride(from: 0, to: gridSize, by: 2) {
                    let square = [0, 1, gridSize, gridSize + 1].map { top * gridSize + left + $0 }
                    #expect(square.filter { removed[$0] == 0 }.count == 1)
                }
            }
        }
        #expect(corners.count == 4)  // the corner is drawn per sample
    }

    @Test func blockRemovesRectanglesNotScatteredPatches() {
        let gridSize = 14, kept = 98  // the paper's block-wise comparison at 50 %
        var blockEdges = 0, randomEdges = 0
        for sample in 0..<50 {
            blockEdges += mixedEdges(mask(.block, gridSize: gridSize, kept: kept, sample: sample), gridSize: gridSize)
            randomEdges += mixedEdges(mask(.random, gridSize: gridSize, kept: kept, sample: sample), gridSize: gridSize)
        }
        // A random mask at 50 % mixes about half of the 364 neighbour pairs; blocks far fewer.
        #expect(randomEdges > 50 * 150)
        #expect(blockEdges * 2 < randomEdges, "block \(blockEdges) vs random \(randomEdges) mixed edges")
    }

    @Test(arguments: [(14, 75), (14, 147), (8, 32), (8, 48)])
    func blockGeneratorNeverRemovesMoreThanAskedAndNearlyAll(gridSize: Int, target: Int) {
        var total = 0
        for sample in 0..<100 {
            var random = CounterRandom(seed: 3, purpose: .maskNoise, epoch: 0, index: sample)
            let count = blockMask(gridSize: gridSize, removedCount: target, random: &random).filter { $0 }.count
            #expect(count <= target)
            total += count
        }
        // The few patches the blocks leave to remove are removed at random by the noise.
        #expect(Double(total) >= 0.95 * Double(100 * target), "blocks removed \(total) of \(100 * target)")
    }

    @Test func blocksScaleWithTheGrid() {
        #expect(minimumBlockPatches(gridSize: 14) == 16)  // BEiT's own
        #expect(minimumBlockPatches(gridSize: 8) == 5)
    }

    @Test(arguments: MaskingStrategy.allCases)
    func masksAreAPureFunctionOfSeedEpochAndSample(_ strategy: MaskingStrategy) {
        let first = mask(strategy, gridSize: 8, kept: 16, seed: 1, epoch: 2, sample: 3)
        #expect(mask(strategy, gridSize: 8, kept: 16, seed: 1, epoch: 2, sample: 3) == first)
        let others = [mask(strategy, gridSize: 8, kept: 16, seed: 1, epoch: 3, sample: 3),
                      mask(strategy, gridSize: 8, kept: 16, seed: 1, epoch: 2, sample: 4),
                      mask(strategy, gridSize: 8, kept: 16, seed: 2, epoch: 2, sample: 3)]
        // Grid has only four masks, so one of three keys may repeat one by chance.
        #expect(others.filter { $0 != first }.count >= (strategy == .grid ? 1 : 3))
    }
}
