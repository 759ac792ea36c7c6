import Foundation

/// A line chart of one series against a numeric x axis, with a frame, ticks at round
/// values, tick labels, axis labels and a title: the training curves of `mae plot`.
public struct LineChart {
    public var title: String
    public var xLabel: String
    public var yLabel: String
    /// (x, y) in drawing order; non-finite points are left out.
    public var points: [(x: Double, y: Double)]
    public var colour: Colour

    public init(title: String, xLabel: String, yLabel: String, points: [(x: Double, y: Double)],
                colour: Colour = .blue) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.points = points.filter { $0.x.isFinite && $0.y.isFinite }
        self.colour = colour
    }

    /// Draws the chart into the rectangle at (left, top) of the given size.
    public func draw(on canvas: inout Canvas, left: Int, top: Int, width: Int, height: Int) {
        let lineHeight = BitmapFont.lineHeight
        let xRange = Self.range(points.map(\.x)), yRange = Self.range(points.map(\.y))
        let xTicks = Self.ticks(xRange), yTicks = Self.ticks(yRange)
        let yTickLabels = Self.labels(yTicks)
        let yLabelWidth = yTickLabels.map { Canvas.textWidth($0) }.max() ?? 0
        // The plot area: room on the left for the y label and tick labels, below for the x ones.
        let plotLeft = left + lineHeight + 4 + yLabelWidth + 6
        let plotTop = top + lineHeight + 6
        let plotRight = left + width - 10
        let plotBottom = top + height - 2 * lineHeight - 10
        guard plotRight > plotLeft + 10, plotBottom > plotTop + 10 else { return }

        canvas.text(title, x: left + (width - Canvas.textWidth(title)) / 2, y: top)
        func screenX(_ x: Double) -> Int {
            plotLeft + Int(((x - xRange.lower) / (xRange.upper - xRange.lower) * Double(plotRight - plotLeft)).rounded())
        }
        func screenY(_ y: Double) -> Int {
            plotBottom - Int(((y - yRange.lower) / (yRange.upper - yRange.lower) * Double(plotBottom - plotTop)).rounded())
        }
        // Grid lines and ticks at round values.
        for (tick, label) in zip(yTicks, yTickLabels) {
            let y = screenY(tick)
            canvas.line(from: (plotLeft, y), to: (plotRight, y), colour: .lightGrey)
            canvas.line(from: (plotLeft - 4, y), to: (plotLeft, y), colour: .black)
            canvas.text(label, x: plotLeft - 6 - Canvas.textWidth(label), y: y - BitmapFont.glyphHeight / 2)
        }
        for (tick, label) in zip(xTicks, Self.labels(xTicks)) {
            let x = screenX(tick)
            canvas.line(from: (x, plotTop), to: (x, plotBottom), colour: .lightGrey)
            canvas.line(from: (x, plotBottom), to: (x, plotBottom + 4), colour: .black)
            canvas.text(label, x: x - Canvas.textWidth(label) / 2, y: plotBottom + 6)
        }
        // The frame.
        canvas.line(from: (plotLeft, plotTop), to: (plotLeft, plotBottom), colour: .black)
        canvas.line(from: (plotLeft, plotBottom), to: (plotRight, plotBottom), colour: .black)
        canvas.line(from: (plotLeft, plotTop), to: (plotRight, plotTop), colour: .black)
        canvas.line(from: (plotRight, plotTop), to: (plotRight, plotBottom), colour: .black)
        // Axis labels.
        canvas.text(xLabel, x: plotLeft + (plotRight - plotLeft - Canvas.textWidth(xLabel)) / 2,
                    y: plotBottom + 6 + lineHeight + 2)
        canvas.verticalText(yLabel, x: left, y: plotTop + (plotBottom - plotTop + Canvas.textWidth(yLabel)) / 2)
        // The series.
        if points.count == 1, let only = points.first {
            canvas.fill(x: screenX(only.x) - 2, y: screenY(only.y) - 2, width: 5, height: 5, colour: colour)
        }
        for (start, end) in zip(points, points.dropFirst()) {
            canvas.line(from: (screenX(start.x), screenY(start.y)), to: (screenX(end.x), screenY(end.y)),
                        colour: colour, thickness: 2)
        }
    }

    /// The span of `values` widened to round tick values; a single value gets some room.
    static func range(_ values: [Double]) -> (lower: Double, upper: Double) {
        guard var lower = values.min(), var upper = values.max() else { return (0, 1) }
        if lower == upper {
            let room = lower == 0 ? 1 : abs(lower) * 0.1
            lower -= room
            upper += room
        }
        let step = tickStep(lower: lower, upper: upper)
        return ((lower / step).rounded(.down) * step, (upper / step).rounded(.up) * step)
    }

    /// 1, 2 or 5 × a power of ten, giving about five intervals.
    static func tickStep(lower: Double, upper: Double) -> Double {
        let rough = (upper - lower) / 5
        let power = pow(10, (log10(rough)).rounded(.down))
        let fraction = rough / power
        return (fraction < 1.5 ? 1 : fraction < 3.5 ? 2 : fraction < 7.5 ? 5 : 10) * power
    }

    /// The round values from `range.lower` to `range.upper`.
    static func ticks(_ range: (lower: Double, upper: Double)) -> [Double] {
        let step = tickStep(lower: range.lower, upper: range.upper)
        let count = Int(((range.upper - range.lower) / step).rounded())
        return (0...max(0, count)).map { range.lower + Double($0) * step }
    }

    /// Tick labels with as many decimals as the step needs, or in scientific notation
    /// ("1.5e-04") for very small or large values.
    static func labels(_ ticks: [Double]) -> [String] {
        guard ticks.count > 1 else { return ticks.map { String(format: "%g", $0) } }
        let step = ticks[1] - ticks[0]
        let largest = ticks.map(abs).max() ?? 0
        if largest >= 1e5 || (largest < 1e-2 && largest > 0) {
            let digits = max(0, Int((log10(largest) - log10(step)).rounded(.up)))
            return ticks.map { $0 == 0 ? "0" : String(format: "%.\(min(digits, 3))e", $0) }
        }
        let decimals = max(0, Int(-log10(step).rounded(.down)))
        return ticks.map { String(format: "%.\(decimals)f", abs($0) < step / 1e6 ? 0 : $0) }
    }
}
