import Data
import Foundation
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
