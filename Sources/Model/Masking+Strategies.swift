import Kernels
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

// The three masking strategies the MAE paper compares (its Figure 6 and Table 1f):
// random (the official per-sample shuffle), block-wise (as BEiT) and a regular grid.
//
// Each strategy is expressed as the noise that `randomMasking` sorts: the patches a
// strategy keeps get noise in [0, 0.5), the ones it removes noise in [0.5, 1), each
// with a random fraction below that. The ascending argsort then keeps exactly
// `keptCount` patches whatever the strategy drew, so every sample of a batch shows the
// encoder the same number of visible patches, and the model, its arena and its backward
// pass stay the same for every strategy. All numbers come from CounterRandom(seed,
// .maskNoise, epoch, sample), so the masks are a pure function of the sample's key and a
// resumed run masks exactly as an uninterrupted one.

/// Which patches a sample hides from the encoder.
public enum MaskingStrategy: String, CaseIterable, Codable, Sendable {
    /// The official per-sample random shuffle (`random_masking` in models_mae.py).
    case random
    /// Large random rectangles of patches, as BEiT's block-wise masking.
    case block
    /// One patch of every 2×2 square kept (at mask ratio 0.75), the square's corner
    /// drawn per sample.
    case grid

    /// One line per strategy, for help texts.
    public static let optionHelp = "masking: random (the official per-sample shuffle), block (BEiT's block-wise "
        + "masking), grid (keeps one patch of every 2x2; meant for --mask-ratio 0.75)"
}

/// Fills noise[patchCount] for one sample so that its ascending argsort keeps the
/// patches `strategy` chooses. `.random` draws exactly what `fillMaskingNoise(_:patchCount:
/// seed:epoch:sampleIndex:)` draws (the default masking of every existing run).
/// - Parameters:
///   - gridSize: patches per side (patchCount = gridSize²).
///   - keptCount: visible patches per sample (`ModelConfig.keptCount`).
public func fillMaskingNoise(_ noise: UnsafeMutablePointer<Float>, strategy: MaskingStrategy, gridSize: Int,
                             keptCount: Int, seed: UInt64, epoch: Int, sampleIndex: Int) {
    let patchCount = gridSize * gridSize
    precondition(keptCount >= 0 && keptCount <= patchCount, "kept count must be within the patches")
    switch strategy {
    case .random:
        fillMaskingNoise(noise, patchCount: patchCount, seed: seed, epoch: epoch, sampleIndex: sampleIndex)
    case .grid:
        var random = CounterRandom(seed: seed, purpose: .maskNoise, epoch: epoch, index: sampleIndex)
        let rowOffset = random.nextInt(below: 2), columnOffset = random.nextInt(below: 2)
        for row in 0..<gridSize {
            for column in 0..<gridSize {
                let onGrid = row % 2 == rowOffset && column % 2 == columnOffset
                noise[row * gridSize + column] = (onGrid ? 0 : 0.5) + 0.5 * random.nextFloat()
            }
        }
    case .block:
        var random = CounterRandom(seed: seed, purpose: .maskNoise, epoch: epoch, index: sampleIndex)
        let removed = blockMask(gridSize: gridSize, removedCount: patchCount - keptCount, random: &random)
        for patch in 0..<patchCount {
            noise[patch] = (removed[patch] ? 0.5 : 0) + 0.5 * random.nextFloat()
        }
    }
}

/// The smallest block `blockMask` draws: BEiT's 16 patches on its 14×14 grid, scaled to
/// the grid's area (at least 2), so that a small model's blocks are as large relative to
/// its image.
func minimumBlockPatches(gridSize: Int) -> Int {
    max(2, (16 * gridSize * gridSize + 98) / 196)
}

/// BEiT's block-wise masking generator: rectangles of random area (from
/// `minimumBlockPatches` to what is still to be removed) and aspect ratio (0.3 to 1/0.3,
/// log-uniform) at random places, each adding only patches not yet removed and never
/// more than are still to be removed, until `removedCount` patches are removed or ten
/// tries in a row add nothing. Returns removed[patchCount]; it may hold fewer than
/// `removedCount` patches (the caller's noise removes the rest at random).
func blockMask(gridSize: Int, removedCount: Int, random: inout CounterRandom) -> [Bool] {
    var removed = [Bool](repeating: false, count: gridSize * gridSize)
    var count = 0
    let minimumArea = Double(minimumBlockPatches(gridSize: gridSize))
    let logAspect = (low: log(0.3), high: log(1 / 0.3))
    while count < removedCount {
        let budget = removedCount - count
        var added = 0
        for _ in 0..<10 where added == 0 {
            // Between the minimum and the budget, whichever is larger (as Python's uniform(a, b)).
            let area = minimumArea + (Double(budget) - minimumArea) * random.nextDouble()
            let aspect = exp(random.nextDouble(in: logAspect.low..<logAspect.high))
            let height = Int((area * aspect).squareRoot().rounded())
            let width = Int((area / aspect).squareRoot().rounded())
            guard height >= 1, width >= 1, height < gridSize, width < gridSize else { continue }
            let top = random.nextInt(below: gridSize - height + 1)
            let left = random.nextInt(below: gridSize - width + 1)
            var fresh = 0
            for row in top..<(top + height) {
                for column in left..<(left + width) where !removed[row * gridSize + column] { fresh += 1 }
            }
            guard fresh > 0, fresh <= budget else { continue }
            for row in top..<(top + height) {
                for column in left..<(left + width) { removed[row * gridSize + column] = true }
            }
            added = fresh
        }
        if added == 0 { break }
        count += added
    }
    return removed
}
