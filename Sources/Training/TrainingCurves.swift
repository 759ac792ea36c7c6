import Figures
import Foundation
import System

/// The training curves of a run (`mae plot`, and `RUN_DIR/curves.png` at the end of a
/// run): loss and learning rate against the optimizer step, from `metrics.jsonl`.
public enum TrainingCurves {
    /// One logged step of `metrics.jsonl`.
    public struct Point: Equatable {
        public var step: Int
        public var loss: Double
        public var learningRate: Double
    }

    /// The points of `path` (a `metrics.jsonl`), in file order. Throws a one-line error for
    /// a missing file or a line that is not a metrics record (naming the line).
    public static func read(metricsPath path: String) throws -> [Point] {
        let bytes: [UInt8]
        do {
            bytes = try FileSystem.readFile(path)
        } catch {
            throw TrainingError.invalidConfiguration("cannot read \(path): \(error); is it a run folder of mae-worker?")
        }
        var points: [Point] = []
        for (lineIndex, line) in String(decoding: bytes, as: UTF8.self).split(separator: "\n").enumerated() {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let step = (object["step"] as? NSNumber)?.intValue else {
                // A run killed mid-write can leave a cut last line; the resume drops it.
                if lineIndex == 0 || !line.hasPrefix("{") || line.hasSuffix("}") {
                    throw TrainingError.invalidConfiguration("\(path) line \(lineIndex + 1) is not a metrics record")
                }
                continue
            }
            func number(_ key: String) -> Double {
                if let value = object[key] as? NSNumber { return value.doubleValue }
                if let text = object[key] as? String, let value = Double(text) { return value }  // "nan"
                return .nan
            }
            points.append(Point(step: step, loss: number("loss"), learningRate: number("lr")))
        }
        return points
    }

    /// Loss above, learning rate below, against the step.
    public static func render(_ points: [Point], title: String) -> Canvas {
        let width = 720, chartHeight = 300
        var canvas = Canvas(width: width, height: 2 * chartHeight + 40)
        canvas.text(title, x: 10, y: 10, scale: 2)
        LineChart(title: "train loss", xLabel: "step", yLabel: "loss",
                  points: points.map { (x: Double($0.step), y: $0.loss) }, colour: .blue)
            .draw(on: &canvas, left: 10, top: 40, width: width - 20, height: chartHeight - 10)
        LineChart(title: "learning rate", xLabel: "step", yLabel: "lr",
                  points: points.map { (x: Double($0.step), y: $0.learningRate) }, colour: .orange)
            .draw(on: &canvas, left: 10, top: 40 + chartHeight, width: width - 20, height: chartHeight - 10)
        return canvas
    }

    /// Reads `RUN_DIR/metrics.jsonl` and writes the chart to `out` (temporary file, rename).
    public static func plot(runDirectory: String, out: String) throws {
        let trimmed = runDirectory.count > 1 && runDirectory.hasSuffix("/") ? String(runDirectory.dropLast()) : runDirectory
        let points = try read(metricsPath: trimmed + "/metrics.jsonl")
        guard !points.isEmpty else {
            throw TrainingError.invalidConfiguration("\(trimmed)/metrics.jsonl has no step yet; plot again after --print-every steps")
        }
        let name = trimmed.split(separator: "/").last.map(String.init) ?? trimmed
        try render(points, title: "\(name)  (steps \(points.first!.step) to \(points.last!.step))").writePNG(path: out)
    }
}
