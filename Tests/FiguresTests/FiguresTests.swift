import Data
@testable import Figures
import Foundation
import Kernels
import Model
import Testing

@Suite struct FiguresTests {
    /// A model shape with 4 patches of 2×2 pixels: small enough to check by hand.
    let config = ModelConfig(name: "figure_test", imageSize: 4, patchSize: 2, encoderWidth: 8, encoderDepth: 1,
                             encoderHeads: 1, decoderWidth: 8, decoderDepth: 1, decoderHeads: 1)

    /// A batch of one image whose values are all different.
    func image() -> [Float] { (0..<48).map { Float($0) / 24 - 1 } }

    @Test func panelsFollowTheOfficialDemo() {
        let pixels = image()
        var target = [Float](repeating: 0, count: 48)
        patchify(output: &target, images: pixels, batch: 1, channels: 3, imageSize: 4, patchSize: 2)
        // A prediction that is the target plus 10 in every value, and patches 1 and 2 removed.
        let prediction = target.map { $0 + 10 }
        let mask: [Float] = [0, 1, 1, 0]
        let panels = ReconstructionPanels(images: pixels, prediction: prediction, mask: mask, sample: 0,
                                          config: config, normPixLoss: false)
        #expect(panels.original == pixels)
        #expect(panels.reconstruction == pixels.map { $0 + 10 })
        // Patch 1 is the top-right 2×2 square, patch 2 the bottom-left, in every channel.
        for channel in 0..<3 {
            for row in 0..<4 {
                for column in 0..<4 {
                    let index = channel * 16 + row * 4 + column
                    let removed = (row < 2) != (column < 2)
                    #expect(panels.masked[index] == (removed ? 0 : pixels[index]))
                    #expect(panels.pasted[index] == (removed ? pixels[index] + 10 : pixels[index]))
                }
            }
        }
    }

    @Test func normPixPredictionsAreShownWithEachPatchsOwnMeanAndVariance() {
        let pixels = image()
        var target = [Float](repeating: 0, count: 48)
        patchify(output: &target, images: pixels, batch: 1, channels: 3, imageSize: 4, patchSize: 2)
        // A perfect norm-pix model predicts the normalised target; shown, it is the image again.
        var normalised = target
        normalizePatches(&normalised, rows: 4, width: 12)
        #expect(normalised != target)
        let panels = ReconstructionPanels(images: pixels, prediction: normalised, mask: [1, 1, 1, 1], sample: 0,
                                          config: config, normPixLoss: true)
        for (shown, original) in zip(panels.reconstruction, pixels) { #expect(abs(shown - original) < 1e-4) }
        let raw = ReconstructionPanels(images: pixels, prediction: normalised, mask: [1, 1, 1, 1], sample: 0,
                                       config: config, normPixLoss: false)
        #expect(zip(raw.reconstruction, pixels).contains { abs($0 - $1) > 0.1 })
    }

    @Test func gridIsAPNGThatLibpngReadsBackPixelForPixel() throws {
        let panels = ReconstructionPanels(images: image(), prediction: [Float](repeating: 0, count: 48),
                                          mask: [0, 1, 1, 0], sample: 0, config: config, normPixLoss: false)
        let grid = ImageGrid(title: "test figure", columnLabels: ReconstructionPanels.labels(maskRatio: 0.5),
                             side: 4, rows: [panels.all, panels.all])
        let canvas = grid.render(scale: 8)
        let bytes = try canvas.pngBytes()
        #expect(Array(bytes.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let decoder = ImageDecoder()  // owns the decoded pixels
        let decoded = try bytes.withUnsafeBufferPointer { try decoder.decode(bytes: $0.baseAddress!, count: $0.count) }
        #expect(decoded.width == canvas.width && decoded.height == canvas.height)
        let same = Array(UnsafeBufferPointer(start: decoded.pixels, count: canvas.pixels.count)) == canvas.pixels
        withExtendedLifetime(decoder) {}
        #expect(same, "the decoded PNG has the canvas's pixels")
        // The original's first pixel, un-normalised: (x·std + mean)·255, clipped.
        let expected = (0..<3).map { channel -> UInt8 in
            let value = (image()[channel * 16] * Augmentation.standardDeviation[channel] + Augmentation.mean[channel]) * 255
            return UInt8(max(0, min(255, Int(value))))
        }
        var found = false
        for y in 0..<canvas.height where !found {
            for x in 0..<canvas.width {
                let colour = canvas.colour(x: x, y: y)
                if [colour.red, colour.green, colour.blue] == expected { found = true; break }
            }
        }
        #expect(found, "the first image's top-left pixel appears in the figure")
        // The labels leave ink above the images: some dark pixels in the label band.
        #expect(canvas.pixels.contains(0))
    }

    @Test func textIsDrawnWhereAskedAndWrapsToAWidth() {
        var canvas = Canvas(width: 40, height: 12)
        canvas.text("ab", x: 2, y: 3)
        var inked: [(Int, Int)] = []
        for y in 0..<12 { for x in 0..<40 where canvas.colour(x: x, y: y) == .black { inked.append((x, y)) } }
        #expect(!inked.isEmpty)
        #expect(inked.allSatisfy { $0.0 >= 2 && $0.0 < 2 + Canvas.textWidth("ab") && $0.1 >= 3 && $0.1 < 10 })
        #expect(Canvas.textWidth("ab") == 11)
        #expect(Canvas.wrap("reconstruction + visible", width: 100) == ["reconstruction +", "visible"])
        #expect(Canvas.wrap("original", width: 10) == ["original"])
        // Upper case is drawn as lower case; an unknown character as a box, not nothing.
        var upper = Canvas(width: 12, height: 12), lower = Canvas(width: 12, height: 12), box = Canvas(width: 12, height: 12)
        upper.text("A", x: 1, y: 1)
        lower.text("a", x: 1, y: 1)
        box.text("€", x: 1, y: 1)
        #expect(upper.pixels == lower.pixels)
        #expect(box.pixels != Canvas(width: 12, height: 12).pixels)
    }

    @Test func chartTicksAreRoundValuesCoveringTheData() {
        let range = LineChart.range([0.312, 0.93])
        #expect(range.lower <= 0.312 && range.upper >= 0.93)
        let ticks = LineChart.ticks(range)
        #expect(ticks.first == range.lower && abs(ticks.last! - range.upper) < 1e-12)
        #expect(LineChart.labels(ticks) == ["0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1.0"])
        #expect(LineChart.labels(LineChart.ticks(LineChart.range([0, 1000]))) == ["0", "200", "400", "600", "800", "1000"])
        #expect(LineChart.labels([0, 5e-5, 1e-4, 1.5e-4]) == ["0", "5.0e-05", "1.0e-04", "1.5e-04"])
        let single = LineChart.range([2, 2])
        #expect(single.lower < 2 && single.upper > 2)
    }

    @Test func aChartDrawsItsSeriesInsideItsFrame() throws {
        var canvas = Canvas(width: 400, height: 240)
        let points: [(x: Double, y: Double)] = (0..<50).map { step -> (x: Double, y: Double) in
            (x: Double(step * 10), y: 1 / Double(step + 1))
        }
        LineChart(title: "loss", xLabel: "step", yLabel: "loss", points: points, colour: .orange)
            .draw(on: &canvas, left: 0, top: 0, width: 400, height: 240)
        var orange = 0
        for y in 0..<240 { for x in 0..<400 where canvas.colour(x: x, y: y) == .orange { orange += 1 } }
        #expect(orange > 300, "the series is drawn")
        // Nothing of the series outside the canvas's middle region (the frame is inset).
        for y in 0..<240 { #expect(canvas.colour(x: 399, y: y) != .orange) }
    }

    @Test func aFigureThatCannotBeWrittenLeavesNothingBehind() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("figures-\(getpid())").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let canvas = Canvas(width: 4, height: 4)
        #expect(throws: FigureError.self) { try canvas.writePNG(path: folder + "/missing/figure.png") }
        // A directory in the way of the rename: the temporary file is removed again.
        try FileManager.default.createDirectory(atPath: folder + "/taken.png/inner", withIntermediateDirectories: true)
        #expect(throws: FigureError.self) { try canvas.writePNG(path: folder + "/taken.png") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).sorted() == ["taken.png"])
        try canvas.writePNG(path: folder + "/ok.png")
        #expect(FileManager.default.fileExists(atPath: folder + "/ok.png"))
    }
}
