/// A figure of square images in rows and labelled columns (and optionally labelled
/// rows) under a title: the layout of the reconstruction figures.
public struct ImageGrid {
    /// One line above everything; nil: none.
    public var title: String?
    /// A label above each column (wrapped to the column's width).
    public var columnLabels: [String]
    /// A label left of each row; nil: no row labels.
    public var rowLabels: [String]?
    /// The side in pixels of every image.
    public let side: Int
    /// rows × columns of planar [3, side, side] images in the model's normalised space.
    public var rows: [[[Float]]]

    public init(title: String?, columnLabels: [String], rowLabels: [String]? = nil, side: Int, rows: [[[Float]]]) {
        precondition(rows.allSatisfy { $0.count == columnLabels.count }, "every row has one image per column")
        precondition(rows.allSatisfy { $0.allSatisfy { $0.count == 3 * side * side } }, "images are [3, side, side]")
        precondition(rowLabels == nil || rowLabels!.count == rows.count, "one label per row")
        self.title = title
        self.columnLabels = columnLabels
        self.rowLabels = rowLabels
        self.side = side
        self.rows = rows
    }

    /// The integer scale that makes small images (32 px) at least 128 px on screen.
    public static func defaultScale(side: Int) -> Int { max(1, (128 + side - 1) / side) }

    /// Space between images and around the figure, in pixels.
    static let gap = 6, margin = 10

    /// Draws the grid; images are magnified `scale` times (pixels stay sharp squares).
    public func render(scale: Int? = nil) -> Canvas {
        let magnification = scale ?? Self.defaultScale(side: side)
        let panel = side * magnification
        let textScale = panel >= 200 ? 2 : 1
        let lineHeight = BitmapFont.lineHeight * textScale
        let wrapped = columnLabels.map { Canvas.wrap($0, width: panel, scale: textScale) }
        let labelHeight = (wrapped.map(\.count).max() ?? 0) * lineHeight
        let rowLabelWidth = rowLabels.map { labels in
            (labels.map { Canvas.textWidth($0, scale: textScale) }.max() ?? 0) + Self.gap
        } ?? 0
        let titleHeight = title == nil ? 0 : lineHeight + Self.gap
        let columns = columnLabels.count
        let gridWidth = columns * panel + (columns - 1) * Self.gap
        let width = max(2 * Self.margin + rowLabelWidth + gridWidth,
                        2 * Self.margin + Canvas.textWidth(title ?? "", scale: textScale))
        let top = Self.margin + titleHeight + labelHeight + Self.gap
        let height = top + rows.count * panel + (rows.count - 1) * Self.gap + Self.margin

        var canvas = Canvas(width: width, height: height)
        if let title { canvas.text(title, x: Self.margin, y: Self.margin, scale: textScale) }
        let left = Self.margin + rowLabelWidth
        for (column, lines) in wrapped.enumerated() {
            let x = left + column * (panel + Self.gap)
            // Labels sit on the images: the last line just above the panel, centred.
            let firstY = top - Self.gap - lines.count * lineHeight + (lineHeight - BitmapFont.glyphHeight * textScale)
            for (number, line) in lines.enumerated() {
                let lineX = x + max(0, (panel - Canvas.textWidth(line, scale: textScale)) / 2)
                canvas.text(line, x: lineX, y: firstY + number * lineHeight, scale: textScale)
            }
        }
        for (rowNumber, row) in rows.enumerated() {
            let y = top + rowNumber * (panel + Self.gap)
            if let label = rowLabels?[rowNumber] {
                canvas.text(label, x: Self.margin, y: y + (panel - BitmapFont.glyphHeight * textScale) / 2, scale: textScale)
            }
            for (column, image) in row.enumerated() {
                image.withUnsafeBufferPointer { pixels in
                    canvas.drawNormalisedImage(pixels.baseAddress!, side: side, x: left + column * (panel + Self.gap),
                                               y: y, scale: magnification)
                }
            }
        }
        return canvas
    }
}
