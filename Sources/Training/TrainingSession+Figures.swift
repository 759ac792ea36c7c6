import Figures
import Foundation
import Kernels
import Model
import System

/// What rank 0 shows of a run besides its logs: TensorBoard event files
/// (`RUN_DIR/tensorboard/`), reconstruction figures (`RUN_DIR/reconstructions/`) and the
/// curves (`RUN_DIR/curves.png`). Failing to draw a figure is a warning, not the end of a
/// training run; failing to write TensorBoard events is an error like any log.
extension TrainingSession {
    /// Images shown in the run's reconstruction figures.
    static let reconstructionImageCount = 4

    var tensorBoardDirectory: String { config.runDirectory + "/tensorboard" }
    var reconstructionDirectory: String { config.runDirectory + "/reconstructions" }
    var curvesPath: String { config.runDirectory + "/curves.png" }

    /// The official x axis of the step that starts at the current position, at its last
    /// micro-batch: the share of the epoch's samples taken before it (the official batch ratio
    /// for an epoch of one world size; continued across a resume with another one).
    var nextTensorBoardStep: Int {
        let split = epochSplit
        let samples = split.samplesDone(beforeStep: position.stepInEpoch, micro: config.accumulationSteps - 1)
        return TensorBoardWriter.epoch1000x(epoch: position.epoch, fraction: split.fraction(samplesDone: samples))
    }

    /// Opens rank 0's event file; a resumed run marks a restart at its first step.
    func openTensorBoard(resumed: Bool) throws -> TensorBoardWriter? {
        guard rank == 0 else { return nil }
        return try TensorBoardWriter(directory: tensorBoardDirectory, restartStep: resumed ? nextTensorBoardStep : nil)
    }

    /// Draws the reconstruction figure of the current model into
    /// `RUN_DIR/reconstructions/epoch-NNNN.png` (NNNN: epochs completed). Rank 0 only.
    func writeReconstructions() {
        guard rank == 0, let model else { return }
        do {
            if reconstructionImages == nil {
                let paths = try Reconstruction.datasetImagePaths(root: config.dataRoot, split: nil,
                                                                 count: Self.reconstructionImageCount)
                reconstructionImages = (try Reconstruction.loadImages(paths: paths, imageSize: config.model.imageSize),
                                        paths.count)
            }
            guard let (images, count) = reconstructionImages else { return }
            try TrainingError.reportingSystemCalls { try FileSystem.makeDirectories(reconstructionDirectory) }
            let title = Reconstruction.title(model: config.model, step: position.step, epoch: position.epoch,
                                             strategy: config.maskingStrategy, normPixLoss: config.normPixLoss)
            let grid = Reconstruction.figure(model: model, images: images, count: count, maskRatio: config.maskRatio,
                                             strategy: config.maskingStrategy, seed: config.seed,
                                             normPixLoss: config.normPixLoss, title: title)
            let path = reconstructionDirectory + "/" + String(format: "epoch-%04d.png", position.epoch)
            try grid.render().writePNG(path: path)
            log.info("reconstructions \(path)")
        } catch {
            log.warn("warning: no reconstruction figure this time: \(error)")
        }
    }

    /// Draws `RUN_DIR/curves.png` from `metrics.jsonl`. Rank 0 only.
    func writeCurves() {
        guard rank == 0 else { return }
        do {
            try TrainingCurves.plot(runDirectory: config.runDirectory, out: curvesPath)
            log.info("curves \(curvesPath)")
        } catch {
            log.warn("warning: no curves figure: \(error)")
        }
    }
}
