import Data
import Foundation
import Options

/// `mae synth-data DIR`: writes the deterministic synthetic JPEG dataset.
struct SynthDataCommand: Subcommand {
    static let words = ["synth-data"]
    static let spec = CommandSpec(
        name: "mae synth-data",
        summary: "Writes a deterministic ImageNet-style dataset of real JPEG files (DIR/train/<class>/, DIR/val/<class>/): "
            + "each class has its own shape, hue and texture (--difficulty easy), its own shape, plain or striped, in random "
            + "colours (--difficulty medium, at most 10 classes), or only its own composition of two shapes "
            + "among random colours, clutter and noise (--difficulty hard); the same seed gives byte-identical files.",
        usage: "DIR",
        options: [
            OptionSpec("classes", value: "N", default: "10", help: "number of classes"),
            OptionSpec("per-class", value: "N", default: "200", help: "training images per class"),
            OptionSpec("val-per-class", value: "N", default: "20", help: "validation images per class"),
            OptionSpec("size", value: "PX", default: "64", help: "image side in pixels"),
            OptionSpec("seed", value: "S", default: "0", help: "random seed"),
            OptionSpec("difficulty", value: "LEVEL", default: "easy",
                       help: "easy (classes differ in colour too: a random encoder's k-NN separates them), medium "
                           + "(random colours; one shape, plain or striped, per class; at most 10 classes) or hard "
                           + "(same colour statistics for every class: only shape composition tells them apart)"),
        ])

    static func run(_ options: ParsedOptions) throws {
        guard options.positional.count == 1, let directory = options.positional.first else {
            throw OptionError("mae synth-data: expected one folder argument DIR (see --help)")
        }
        let classes = try options.int("classes", in: 1...100_000)
        let perClass = try options.int("per-class", in: 1...1_000_000)
        let valPerClass = try options.int("val-per-class", in: 0...1_000_000)
        let size = try options.int("size", in: 8...4096)
        let seed = try options.int("seed", in: 0...Int.max)
        let difficultyName = options.string("difficulty") ?? "easy"
        guard let difficulty = SyntheticDifficulty(rawValue: difficultyName) else {
            throw OptionError("mae synth-data: --difficulty \(difficultyName) is not one of easy, medium, hard")
        }
        let started = Double(DispatchTime.now().uptimeNanoseconds) * 1e-9
        // Large datasets take a while: a plain line every tenth of the way (not for small ones).
        let images = classes * (perClass + valPerClass)
        var reported = 0
        try synthesizeDataset(root: directory, classes: classes, perClass: perClass, valPerClass: valPerClass,
                              size: size, seed: UInt64(seed), difficulty: difficulty) { written, total in
            guard total >= 10_000, written * 10 / total > reported, written < total else { return }
            reported = written * 10 / total
            print("synth-data: \(written)/\(total) images written")
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 - started
        print("wrote \(images) images (\(classes) classes, \(size)x\(size) JPEG) to \(directory) in "
              + String(format: "%.2f", seconds) + " s")
    }
}
