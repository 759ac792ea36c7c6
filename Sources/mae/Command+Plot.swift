import Options
import Training

/// `mae plot RUN_DIR`: the run's loss and learning rate against the step, as a PNG.
struct PlotCommand: Subcommand {
    static let words = ["plot"]
    static let spec = CommandSpec(
        name: "mae plot",
        summary: "Draws a run's training curves as a PNG chart. Loss and learning rate against the step, from "
            + "RUN_DIR/metrics.jsonl; the trainer draws the same RUN_DIR/curves.png at the end of a run.",
        usage: "RUN_DIR",
        options: [
            OptionSpec("out", value: "FILE.png", help: "the PNG to write (default: RUN_DIR/curves.png)"),
        ])

    static func run(_ options: ParsedOptions) throws {
        guard options.positional.count == 1, let runDirectory = options.positional.first else {
            throw OptionError("mae plot: expected one run folder RUN_DIR (see --help)")
        }
        let out = options.string("out") ?? runDirectory + "/curves.png"
        guard out.lowercased().hasSuffix(".png") else { throw OptionError("mae plot: --out \(out) must name a .png file") }
        try TrainingCurves.plot(runDirectory: runDirectory, out: out)
        print("wrote \(out)")
    }
}
