import Synchronization

/// How `matrixMultiply` cuts one product c[m, n] = op(a)·op(b) over the threads: a grid of
/// `rowGroups` × `columnGroups` parts of c, each computed by one single-threaded OpenBLAS
/// call, and where the kernels need it one more part for the last few rows of c, whole.
///
/// Every part packs its rows of op(a) and its columns of op(b) again (OpenBLAS copies both
/// operands into its own layout on every call), so the grid is chosen for the least work
/// including those copies. Cut by rows alone, every part packs the whole of op(b), usually the
/// weight: with many threads that costs about as much as the product itself.
///
/// The cuts never change a bit of the result (see `matrixMultiply`): rows are cut at multiples
/// of `matrixMultiplyBlock` (48), columns at multiples of `BLASRuntime.columnCutWidth`, and no
/// part is small enough for the "small matrix" kernels of SkylakeX and Cooperlake.
struct ProductCut: Equatable, Sendable {
    let m: Int
    let n: Int
    /// Blocks of rows and of columns of the grid.
    let rowGroups: Int
    let columnGroups: Int
    /// Columns of c per column unit: groups are whole units, the last unit also taking the
    /// columns short of a whole one (so that no cut falls within `columnWidth` of n).
    let columnWidth: Int
    /// The last rows of c, computed whole in a part of their own after the grid's (0: none).
    let tailRows: Int

    var parts: Int { gridParts + (tailRows > 0 ? 1 : 0) }
    var gridParts: Int { rowGroups * columnGroups }

    /// Rows of c in the grid, in units of `matrixMultiplyBlock` (the last one may be short).
    private var rowUnits: Int { (m - tailRows + matrixMultiplyBlock - 1) / matrixMultiplyBlock }
    /// Columns of c in units of `columnWidth` (the last one up to twice as wide).
    private var columnUnits: Int { max(1, n / columnWidth) }

    /// Rows of c in row group `group` (groups of whole units, sizes differing by at most one).
    func rows(ofGroup group: Int) -> Range<Int> {
        let units = rowUnits
        let first = group * units / rowGroups, end = (group + 1) * units / rowGroups
        return first * matrixMultiplyBlock..<min(m - tailRows, end * matrixMultiplyBlock)
    }

    /// Columns of c in column group `group`.
    func columns(ofGroup group: Int) -> Range<Int> {
        let units = columnUnits
        let first = group * units / columnGroups, end = (group + 1) * units / columnGroups
        return first * columnWidth..<(end == units ? n : end * columnWidth)
    }

    /// The rows and columns of c of part `part`: the grid's, row groups varying fastest, then
    /// the tail rows.
    func ranges(ofPart part: Int) -> (rows: Range<Int>, columns: Range<Int>) {
        if part == gridParts { return (m - tailRows..<m, 0..<n) }
        return (rows(ofGroup: part % rowGroups), columns(ofGroup: part / rowGroups))
    }

    /// The cut for `threads` workers: as many parts as the product allows up to two per worker
    /// (so that the others take over the share of a worker whose core is busy elsewhere), and
    /// among those with that many parts the one that `estimatedTime` says finishes first (by
    /// more than 2 %, else the one with fewer column groups).
    /// Every part of the grid has at least two units of rows and 96 columns, and more than
    /// `smallProductLimit` multiply-adds. `columnWidth` nil: columns are never cut.
    /// `tailRowTile` (the Haswell family's 12): when columns are cut, rows past the last
    /// multiple of it go to a part of their own if there are 8 or more (see `matrixMultiply`).
    static func choose(m: Int, n: Int, k: Int, threads: Int, columnWidth: Int?, tailRowTile: Int?) -> ProductCut {
        let whole = ProductCut(m: m, n: n, rowGroups: 1, columnGroups: 1, columnWidth: max(1, n), tailRows: 0)
        guard threads > 1, m > 0, n > 0, k > 0 else { return whole }
        let target = 2 * threads
        var maximumColumnGroups = 1
        if let columnWidth {
            let unitsPerGroup = (2 * matrixMultiplyBlock + columnWidth - 1) / columnWidth
            maximumColumnGroups = max(1, n / columnWidth / unitsPerGroup)
        }
        let rowsPastTheTile = tailRowTile.map { m % $0 } ?? 0
        var best = whole
        var bestTime = Int.max
        for columnGroups in 1...min(maximumColumnGroups, target) {
            let tailRows = columnGroups > 1 && rowsPastTheTile >= 8 ? rowsPastTheTile : 0
            let maximumRowGroups = max(1, (m - tailRows + matrixMultiplyBlock - 1) / matrixMultiplyBlock / 2)
            // The most row groups this many column groups allow; fewer where parts fall
            // below the small-matrix limit (a part's work shrinks as the groups grow).
            var rowGroups = min(maximumRowGroups, max(1, target / columnGroups))
            func cut(_ rowGroups: Int) -> ProductCut {
                ProductCut(m: m, n: n, rowGroups: rowGroups, columnGroups: columnGroups,
                           columnWidth: columnWidth ?? max(1, n), tailRows: tailRows)
            }
            while rowGroups > 1, cut(rowGroups).smallestPartWork(k: k) <= smallProductLimit { rowGroups -= 1 }
            let candidate = cut(rowGroups)
            guard candidate.gridParts > 1, candidate.smallestPartWork(k: k) > smallProductLimit,
                  candidate.gridParts >= best.gridParts else { continue }
            let time = candidate.estimatedTime(threads: threads)
            // Fewer column groups unless more are clearly faster (the estimate is rough).
            if candidate.gridParts > best.gridParts || time < bestTime - bestTime / 50 {
                best = candidate
                bestTime = time
            }
        }
        return best
    }

    /// Floats packed worth one multiply-add: OpenBLAS's Haswell kernels on an AMD EPYC Zen 3,
    /// one thread, c[m, 3072] = a[m, 768]·bᵀ, took 1.10 ms + 0.056 ms per row of c, so packing
    /// b's 2.36 M floats cost as much as about 20 multiply-adds per float.
    static let packingCostInMultiplyAdds = 20

    /// When the last part finishes, in multiply-adds per step of k, if the workers take the
    /// parts in order, each the next one when it is free (as `parallelFor` hands them out),
    /// and a part costs its rows × columns plus `packingCostInMultiplyAdds` × (rows + columns).
    func estimatedTime(threads: Int) -> Int {
        var finish = [Int](repeating: 0, count: min(threads, parts))
        for part in 0..<parts {
            let (rows, columns) = ranges(ofPart: part)
            let cost = rows.count * columns.count + Self.packingCostInMultiplyAdds * (rows.count + columns.count)
            let free = finish.indices.min { finish[$0] < finish[$1] }!
            finish[free] += cost
        }
        return finish.max() ?? 0
    }

    /// The multiply-adds of the grid's smallest part (the tail's rows are few by design).
    private func smallestPartWork(k: Int) -> Int {
        (0..<gridParts).map { let (rows, columns) = ranges(ofPart: $0); return rows.count * columns.count * k }.min() ?? 0
    }

    /// `choose` for this process's OpenBLAS core, remembered per shape and thread count: a
    /// step runs a few dozen shapes about a thousand times.
    static func cached(m: Int, n: Int, k: Int, threads: Int) -> ProductCut {
        let key = Key(m: m, n: n, k: k, threads: threads)
        if let cut = cache.withLock({ $0[key] }) { return cut }
        let cut = choose(m: m, n: n, k: k, threads: threads, columnWidth: BLASRuntime.columnCutWidth,
                         tailRowTile: BLASRuntime.columnCutTailRowTile)
        cache.withLock { $0[key] = cut }
        return cut
    }

    private struct Key: Hashable { let m, n, k, threads: Int }
    private static let cache = Mutex<[Key: ProductCut]>([:])
}
