import Collectives
import Data
import Kernels

/// The evaluation on `val` of a classifying run (`engine_finetune.evaluate`): top-1 and
/// top-5 accuracy in percent and the mean cross-entropy against the hard labels.
public struct EvaluationResult: Codable, Sendable, Equatable {
    public var top1: Double
    public var top5: Double
    public var loss: Double
    /// Images scored (every image of `val` once, whatever the world size).
    public var count: Int

    private enum CodingKeys: String, CodingKey { case top1 = "acc1", top5 = "acc5", loss, count }
}

/// Scores a classifier on `val`, split over the workers as the official `--dist_eval`:
/// rank r takes positions r, r + W, … of the dataset in order (the evaluation transform,
/// no randomness), and the counts are summed over the ranks. Unlike the official sampler,
/// the padding that evens the shards out is not counted, so every image counts once and
/// the counts do not depend on the world size. The loss is the mean over images (the
/// official averages batch means, which depends on how the batches fall).
final class Evaluator {
    let dataset: ImageFolderDataset
    let sampler: DistributedSampler
    let loader: DataLoader
    let batchSize: Int

    init(dataset: ImageFolderDataset, worldSize: Int, rank: Int, batchSize: Int, imageSize: Int, threads: Int) {
        self.dataset = dataset
        self.batchSize = batchSize
        sampler = DistributedSampler(datasetCount: dataset.count, worldSize: worldSize, rank: rank, seed: 0, shuffle: false)
        loader = DataLoader(dataset: dataset, sampler: sampler, batchSize: batchSize, imageSize: imageSize, seed: 0,
                            threads: threads, transform: .evaluation, dropLast: false)
    }

    func stop() { loader.stop() }

    /// Every image of `val` once; all ranks get the same result.
    func evaluate(_ model: any ClassifierTaskModel, collective: any Collective) throws -> EvaluationResult {
        var lossSum = 0.0, top1 = 0.0, top5 = 0.0, count = 0.0
        loader.startEpoch(0)
        while let batch = try loader.next() {
            let rows = batch.sampleIndices.count
            let logits = model.logits(images: batch.images.pointer, batchSize: rows)
            var rowLosses = [Double](repeating: 0, count: rows)
            _ = crossEntropyHardLabels(logits: logits, labels: batch.labels, rows: rows, classes: model.classCount,
                                       rowLosses: &rowLosses)
            for row in 0..<rows {
                // Position in the padded order: past the dataset's end it repeats an image another rank scores.
                let position = sampler.rank + (batch.batchIndex * batchSize + row) * sampler.worldSize
                guard position < dataset.count else { continue }
                let rank = labelRank(logits: logits, row: row, classes: model.classCount, label: batch.labels[row])
                lossSum += rowLosses[row]
                if rank < 1 { top1 += 1 }
                if rank < 5 { top5 += 1 }
                count += 1
            }
        }
        let sums = try collective.allReduceScalars([lossSum, top1, top5, count])
        let total = max(1, sums[3])
        return EvaluationResult(top1: 100 * sums[1] / total, top5: 100 * sums[2] / total, loss: sums[0] / total,
                                count: Int(sums[3]))
    }
}
