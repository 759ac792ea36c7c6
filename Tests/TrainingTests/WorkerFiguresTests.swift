import Data
import Foundation
import Model
import System
import Testing
import TestSupport
@testable import Training

extension WorkerProcessTests {
    /// Block masking resumes bitwise exactly, and a run leaves what users look at:
    /// reconstruction figures (every 2 epochs and at the end), TensorBoard events with the
    /// official tags and steps (a resumed run's file restarting at its first step), and curves.png.
    @Test func blockMaskedRunResumesExactlyAndDrawsItsFigures() throws {
        defer { temporary.remove() }
        try run("block-straight", ["--masking", "block", "--reconstruct-every", "2"])
        try run("block-stopped", ["--masking", "block", "--max-steps", "5"])
        try run("block-stopped", ["--masking", "block", "--resume", "auto"])
        try run("random", [])
        let final = CheckpointStore.directoryName(step: 12)
        for file in ["model.safetensors", "optimizer.safetensors"] {
            let expected = try bytes(temporary.path + "/block-straight/checkpoints/\(final)/" + file)
            #expect(try bytes(temporary.path + "/block-stopped/checkpoints/\(final)/" + file) == expected, "\(file) differs")
            #expect(try bytes(temporary.path + "/random/checkpoints/\(final)/" + file) != expected, "block masked like random")
        }

        // Figures: PNGs that libpng reads, at the epochs asked for.
        let figures = try FileManager.default.contentsOfDirectory(atPath: temporary.path + "/block-straight/reconstructions")
        #expect(figures.sorted() == ["epoch-0002.png", "epoch-0003.png"])
        let decoder = ImageDecoder()
        for path in ["/block-straight/reconstructions/epoch-0003.png", "/block-straight/curves.png"] {
            let image = try decoder.decode(path: temporary.path + path)
            #expect(image.width > 100 && image.height > 100, "\(path) is \(image.width)x\(image.height)")
        }

        // TensorBoard: one event per step at epoch_1000x, the values those of metrics.jsonl.
        let straight = try TensorBoardReader.read(directory: temporary.path + "/block-straight/tensorboard")
        #expect(straight.count == 1)
        let events = straight[0]
        #expect(events.first?.fileVersion == "brain.Event:2")
        let scalars = events.filter { !$0.scalars.isEmpty }
        let expectedSteps: [Int64] = (0..<12).map { (step: Int) -> Int64 in Int64((step / 4) * 1000 + (step % 4) * 250) }
        #expect(scalars.map(\.step) == expectedSteps)
        #expect(scalars.allSatisfy { $0.scalarTags == ["train_loss", "lr"] })
        let metrics = try TrainingCurves.read(metricsPath: temporary.path + "/block-straight/metrics.jsonl")
        #expect(scalars.map { $0.scalars["train_loss"]! } == metrics.map { Float($0.loss) })
        #expect(scalars.map { $0.scalars["lr"]! } == metrics.map { Float($0.learningRate) })

        // The resumed run: a second file that restarts at step 5's x (epoch 1, batch 1 → 1250).
        let resumed = try TensorBoardReader.read(directory: temporary.path + "/block-stopped/tensorboard")
        #expect(resumed.count == 2)
        #expect(resumed.map { $0.filter { !$0.scalars.isEmpty }.count } == [5, 7])
        #expect(resumed.last?.dropFirst().first.map { $0.sessionStatus == 1 && $0.step == 1250 } == true)
        let resumedScalars = resumed.flatMap { $0.filter { !$0.scalars.isEmpty } }
        #expect(resumedScalars.map { $0.scalars["train_loss"]! } == scalars.map { $0.scalars["train_loss"]! })
    }
}

extension WorkerProcessTests {
    /// The built `mae`, beside `mae-worker`.
    static let maeExecutable: String? = WorkerProcess.executable.map { String($0.dropLast("mae-worker".count)) + "mae" }

    /// Runs `mae arguments`; returns the process (finished).
    func mae(_ arguments: [String], name: String) throws -> WorkerProcess {
        let process = try WorkerProcess(arguments, logDirectory: temporary.path, name: name, executable: Self.maeExecutable)
        _ = try process.wait(seconds: 60)
        return process
    }

    /// `mae reconstruct` and `mae plot` on a run they did not make; bad input is one line and
    /// exit 1 with nothing written.
    @Test func reconstructAndPlotCommandsDrawFromARun() throws {
        defer { temporary.remove() }
        try run("source", ["--max-steps", "4"])
        let runDirectory = temporary.path + "/source"
        let decoder = ImageDecoder()
        func png(_ name: String) throws -> (width: Int, height: Int) {
            let image = try decoder.decode(path: temporary.path + "/" + name)
            return (image.width, image.height)
        }

        // The val folder holds two images: --count 3 draws both.
        let four = try mae(["reconstruct", "--checkpoint", runDirectory, "--data", data, "--count", "3",
                            "--masking", "grid", "--out", temporary.path + "/four.png"], name: "four")
        #expect(four.process.terminationStatus == 0, "\(four.errors)")
        let ratios = try mae(["reconstruct", "--checkpoint", checkpoint("source", step: 4),
                              "--images", data + "/val/" + (try firstImage(split: "val")),
                              "--mask-ratios", "0.5,0.75,0.9", "--out", temporary.path + "/ratios.png"], name: "ratios")
        #expect(ratios.process.terminationStatus == 0, "\(ratios.errors)")
        // Two rows each: the ratios figure is wider (labelled rows), the four panels' figure taller
        // ("reconstruction + visible" takes two lines of label).
        let (fourWidth, fourHeight) = try png("four.png"), (ratiosWidth, ratiosHeight) = try png("ratios.png")
        #expect(ratiosWidth > fourWidth && fourHeight > ratiosHeight)
        let strategies = try mae(["reconstruct", "--checkpoint", runDirectory, "--data", data, "--masking", "random,block,grid",
                                  "--out", temporary.path + "/strategies.png"], name: "strategies")
        #expect(strategies.process.terminationStatus == 0, "\(strategies.errors)")
        let (strategiesWidth, strategiesHeight) = try png("strategies.png")
        // Labelled rows of four panels: wider than the unlabelled figure; three rows, taller than two.
        #expect(strategiesWidth > fourWidth && strategiesHeight > fourHeight, "\(strategiesWidth)x\(strategiesHeight)")
        let both = try mae(["reconstruct", "--checkpoint", runDirectory, "--data", data, "--masking", "random,grid",
                            "--mask-ratios", "0.5,0.75", "--out", temporary.path + "/bad-both.png"], name: "both")
        #expect(both.process.terminationStatus == 1 && both.errors.contains("not both"), "\(both.errors)")
        let weightsFile = try mae(["reconstruct", "--checkpoint", checkpoint("source", step: 4) + "/model.safetensors",
                                   "--data", data, "--out", temporary.path + "/file.png"], name: "file")
        #expect(weightsFile.process.terminationStatus == 1)
        #expect(weightsFile.errors.contains("pass --model NAME"), "\(weightsFile.errors)")

        let plot = try mae(["plot", runDirectory], name: "plot")
        #expect(plot.process.terminationStatus == 0, "\(plot.errors)")
        #expect(try png("source/curves.png").width == 720)

        // Bad input: an image that does not decode, another model's weights, an unwritable output.
        try FileSystem.writeFile(temporary.path + "/broken.jpg", bytes: [0xFF, 0xD8, 0xFF, 0x00, 0x01])
        let cases: [([String], String)] = [
            (["--checkpoint", runDirectory, "--images", temporary.path + "/broken.jpg", "--out", temporary.path + "/bad1.png"],
             "broken.jpg"),
            (["--checkpoint", checkpoint("source", step: 4) + "/model.safetensors", "--model", "mae_vit_tiny_patch4",
              "--data", data, "--out", temporary.path + "/bad2.png"], "model.safetensors"),
            (["--checkpoint", runDirectory, "--data", data, "--out", temporary.path + "/missing/bad3.png"], "cannot write"),
        ]
        for (number, (arguments, expected)) in cases.enumerated() {
            let failed = try mae(["reconstruct"] + arguments, name: "bad\(number)")
            #expect(failed.process.terminationStatus == 1)
            let lines = failed.errors.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].hasPrefix("error: ") && lines[0].contains(expected), "\(failed.errors)")
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: temporary.path).filter { $0.hasPrefix("bad") && $0.hasSuffix(".png") }
        #expect(left.isEmpty, "half-written outputs: \(left)")
    }

    func firstImage(split: String) throws -> String {
        let classFolder = try FileManager.default.contentsOfDirectory(atPath: data + "/" + split).sorted()[0]
        let image = try FileManager.default.contentsOfDirectory(atPath: data + "/\(split)/\(classFolder)").sorted()[0]
        return classFolder + "/" + image
    }
}

extension WorkerProcessTests {
    /// `mae export` (both formats), `mae inspect`, `mae import`'s refusal of another model's
    /// weights, and a run that starts from exported weights.
    @Test func weightsCommandsExportInspectAndStartARun() throws {
        defer { temporary.remove() }
        try run("source", ["--max-steps", "4"])
        let runDirectory = temporary.path + "/source", out = temporary.path
        let saved = try SafeTensorsFile.read(path: checkpoint("source", step: 4) + "/model.safetensors")

        let whole = try mae(["export", "--checkpoint", runDirectory, "--format", "mae", "--out", out + "/mae.safetensors"],
                            name: "export-mae")
        #expect(whole.process.terminationStatus == 0, "\(whole.errors)")
        let exported = try SafeTensorsFile.read(path: out + "/mae.safetensors")
        #expect(Set(exported.names) == Set(saved.names) && exported.names.contains("decoder_pos_embed"))
        for name in saved.names { #expect(try exported.floats(named: name) == saved.floats(named: name), "\(name)") }
        #expect(exported.metadata["step"] == "4")

        let encoder = try mae(["export", "--checkpoint", runDirectory, "--format", "timm", "--out", out + "/timm.safetensors"],
                              name: "export-timm")
        #expect(encoder.process.terminationStatus == 0, "\(encoder.errors)")
        let timm = try SafeTensorsFile.read(path: out + "/timm.safetensors")
        #expect(timm.names.contains("pos_embed") && timm.names.contains("norm.weight"))
        #expect(!timm.names.contains { $0.hasPrefix("decoder") || $0 == "mask_token" })

        let inspected = try mae(["inspect", checkpoint("source", step: 4)], name: "inspect")
        #expect(inspected.process.terminationStatus == 0, "\(inspected.errors)")
        #expect(inspected.output.contains("checksums verified") && inspected.output.contains("step: 4, epoch: 1")
                && inspected.output.contains("blocks.0.attn.qkv.weight [48, 16]"), "\(inspected.output)")
        let listed = try mae(["inspect", out + "/timm.safetensors"], name: "inspect-file")
        #expect(listed.output.contains("pos_embed [1, 17, 16] F32"), "\(listed.output)")

        // Bad input: one line, exit 1, nothing written.
        let unwritable = try mae(["export", "--checkpoint", runDirectory, "--out", out + "/missing/x.safetensors"], name: "bad-out")
        #expect(unwritable.process.terminationStatus == 1 && unwritable.errors.hasPrefix("error: cannot write"), "\(unwritable.errors)")
        let otherModel = try mae(["import", "--weights", out + "/mae.safetensors", "--model", "mae_vit_tiny_patch4",
                                  "--out", out + "/imported"], name: "bad-import")
        #expect(otherModel.process.terminationStatus == 1, "\(otherModel.output)")
        #expect(otherModel.errors.split(separator: "\n").count == 1 && otherModel.errors.contains("mae.safetensors: tensor '"),
                "\(otherModel.errors)")
        #expect(!FileManager.default.fileExists(atPath: out + "/imported/model.safetensors"))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty, "\(leftovers)")

        // A fresh run from the exported weights; with lr 0 its first checkpoint holds them unchanged.
        let started = try run("from-weights", ["--init-weights", out + "/mae.safetensors", "--lr", "0", "--max-steps", "1"])
        #expect(started.output.contains("starting from the weights of"), "\(started.output)")
        let after = try SafeTensorsFile.read(path: checkpoint("from-weights", step: 1) + "/model.safetensors")
        for name in saved.names { #expect(try after.floats(named: name) == saved.floats(named: name), "\(name) changed") }
    }
}

extension WorkerProcessTests {
    /// With 2 micro-batches per step the x axis is that of the step's last micro-batch, as the
    /// official script logs when (data_iter_step + 1) % accum_iter == 0: 4 batches per epoch
    /// give 250 and 750 in epoch 0, 1250 in epoch 1.
    @Test func tensorBoardStepsFollowTheLastMicroBatchWithAccumulation() throws {
        defer { temporary.remove() }
        try run("accum-tb", ["--accum-iter", "2", "--max-steps", "3"])
        let files = try TensorBoardReader.read(directory: temporary.path + "/accum-tb/tensorboard")
        let steps = files.flatMap { $0.filter { !$0.scalars.isEmpty }.map(\.step) }
        #expect(steps == [250, 750, 1250])
    }
}
