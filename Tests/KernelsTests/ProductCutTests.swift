@testable import Kernels
import Testing

/// The grids `matrixMultiply` cuts products into: every element of c in exactly one part, cuts
/// only where the loaded kernels keep every result, and fewer copies of the weight than rows
/// alone. (That the cuts keep every bit is checked under each OpenBLAS core type by
/// `OpenBLASCoreTypeTests`.)
@Suite struct ProductCutTests {
    /// ViT-B's and the tiny model's shapes at batch 8 and 64, the weight-gradient forms, and odd sizes.
    static let shapes: [(m: Int, n: Int, k: Int)] = [
        (400, 3072, 768), (400, 768, 3072), (400, 2304, 768), (1576, 2048, 512), (768, 3072, 400),
        (3200, 3072, 768), (3200, 768, 3072), (12_608, 512, 2048), (104, 1280, 96), (394, 768, 256),
        (1088, 192, 768), (136, 576, 192), (333, 777, 555), (97, 1000, 61), (50, 50, 64),
    ]
    /// The column widths of the kernel families: rows only, any multiple of 48, OpenBLAS's
    /// Haswell blocks (with their tail rows).
    static let widths: [(columnWidth: Int?, tailRowTile: Int?)] = [(nil, nil), (48, nil), (320, 12)]

    @Test func everyElementIsInExactlyOnePartAndCutsFallWhereTheyMay() {
        for (m, n, k) in Self.shapes {
            for (columnWidth, tailRowTile) in Self.widths {
                for threads in [2, 3, 4, 8, 16, 64] {
                    let cut = ProductCut.choose(m: m, n: n, k: k, threads: threads, columnWidth: columnWidth,
                                                tailRowTile: tailRowTile)
                    let name = "\(m)×\(n)×\(k), width \(columnWidth.map(String.init) ?? "none"), \(threads) threads"
                    var rectangles: [(rows: Range<Int>, columns: Range<Int>)] = []
                    for part in 0..<cut.parts {
                        let (rows, columns) = cut.ranges(ofPart: part)
                        #expect(!rows.isEmpty && !columns.isEmpty, "\(name): part \(part) is empty")
                        #expect(rows.upperBound <= m && columns.upperBound <= n, "\(name): part \(part) outside c")
                        if part < cut.gridParts {
                            #expect(rows.lowerBound % matrixMultiplyBlock == 0, "\(name): rows \(rows)")
                            #expect(cut.parts == 1 || rows.count * columns.count * k > smallProductLimit,
                                    "\(name): part \(part) is small enough for the small-matrix kernels")
                        }
                        if columns.lowerBound > 0 {
                            let width = try! #require(columnWidth, "\(name): columns cut where they may not be")
                            #expect(columns.lowerBound % width == 0 && n - columns.lowerBound >= width,
                                    "\(name): columns \(columns)")
                        }
                        rectangles.append((rows, columns))
                    }
                    // Inside c, disjoint, and as large as c together: every element exactly once.
                    let area = rectangles.reduce(0) { $0 + $1.rows.count * $1.columns.count }
                    #expect(area == m * n, "\(name): \(cut) covers \(area) of \(m * n) elements")
                    for (index, first) in rectangles.enumerated() {
                        for second in rectangles[(index + 1)...] {
                            #expect(!(first.rows.overlaps(second.rows) && first.columns.overlaps(second.columns)),
                                    "\(name): parts overlap in \(cut)")
                        }
                    }
                    #expect(cut.parts <= 2 * threads + 1, "\(name): \(cut.parts) parts")
                }
            }
        }
    }

    /// On the Haswell family, rows past the last multiple of 12 get a part of their own when
    /// there are 8 or more of them and columns are cut; otherwise none.
    @Test func tailRowsAreSetApartOnlyWhereTheTilesWouldDiffer() {
        for m in 96...107 {
            let cut = ProductCut.choose(m: m, n: 1280, k: 96, threads: 4, columnWidth: 320, tailRowTile: 12)
            #expect(cut.columnGroups > 1, "m \(m): \(cut)")
            #expect(cut.tailRows == (m % 12 >= 8 ? m % 12 : 0), "m \(m): \(cut)")
        }
        let rowsOnly = ProductCut.choose(m: 3200, n: 768, k: 768, threads: 2, columnWidth: 320, tailRowTile: 12)
        #expect(rowsOnly.columnGroups == 1 && rowsOnly.tailRows == 0, "\(rowsOnly)")
    }

    /// Where columns may be cut, a wide product with few rows is cut by columns, so that the
    /// weight is packed once in all; with many threads the grid packs the weight far fewer
    /// times per part than rows alone and gives every thread a part, where rows alone leave
    /// half the threads idle.
    @Test func gridsPackTheWeightFewerTimesThanRowsAlone() {
        let fc1 = ProductCut.choose(m: 400, n: 3072, k: 768, threads: 2, columnWidth: 320, tailRowTile: 12)
        #expect(fc1.columnGroups > 1 && fc1.parts == 4, "\(fc1)")
        let rows = ProductCut.choose(m: 400, n: 3072, k: 768, threads: 2, columnWidth: nil, tailRowTile: nil)
        #expect(rows.columnGroups == 1 && rows.rowGroups == 4, "\(rows)")
        #expect(fc1.estimatedTime(threads: 2) < rows.estimatedTime(threads: 2))

        for width in [48, 320] {
            let grid = ProductCut.choose(m: 3200, n: 3072, k: 768, threads: 64, columnWidth: width, tailRowTile: 12)
            let rowsAlone = ProductCut.choose(m: 3200, n: 3072, k: 768, threads: 64, columnWidth: nil, tailRowTile: nil)
            #expect(rowsAlone.rowGroups == 33, "\(rowsAlone)")
            #expect(grid.parts >= 64, "width \(width): \(grid)")
            #expect(grid.estimatedTime(threads: 64) < rowsAlone.estimatedTime(threads: 64) * 2 / 3, "width \(width): \(grid)")
        }
    }

    /// The checks at start-up: on the Haswell family OpenBLAS's column blocks are 320 wide.
    @Test func columnCutWidthMatchesTheLoadedCore() {
        switch BLASRuntime.coreName.lowercased() {
        case "haswell", "zen":
            #expect(BLASRuntime.columnCutWidth == 320)
            #expect(BLASRuntime.columnCutsAt(320, keepResultsOf: (m: 12, n: 640, k: 16)))
            #expect(!BLASRuntime.columnCutsAt(48, keepResultsOf: (m: 12, n: 640, k: 16)),
                    "a cut inside a block of columns kept every result: the probe cannot tell")
        case "prescott", "nehalem", "sandybridge", "skylakex", "cooperlake":
            #expect(BLASRuntime.columnCutWidth == 48)
        default:
            break
        }
    }
}
