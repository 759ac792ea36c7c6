import Data
import Foundation
import Options

/// `mae bench data`: measures the loader alone (read, decode, augment, batch).
struct BenchDataCommand: Subcommand {
    static let words = ["bench", "data"]
    static let spec = CommandSpec(
        name: "mae bench data",
        summary: "Measures the data pipeline alone: images per second read, decoded and augmented into batches "
            + "(after one warm-up batch). The last line is img_per_s=X.",
        options: [
            OptionSpec("data", value: "DIR", help: "dataset folder (DIR/train/<class>/ or the class folders); required"),
            OptionSpec("batch", value: "B", default: "64", help: "batch size"),
            OptionSpec("input-size", value: "S", default: "32", help: "output image side"),
            OptionSpec("threads", value: "T", default: "2", help: "decoding threads"),
            OptionSpec("batches", value: "K", default: "50", help: "batches to time (epochs repeat as needed)"),
            OptionSpec("prefetch", value: "P", default: "4", help: "batches decoded ahead"),
            OptionSpec("seed", value: "S", default: "0", help: "random seed"),
            OptionSpec("transform", value: "NAME", default: "pretraining",
                       help: "pretraining, linprobe (crop scale 0.08-1 + flip), finetuning (the official "
                           + "rand-m9-mstd0.5-inc1 RandAugment and random erasing 0.25 too) or evaluation"),
        ])

    static func run(_ options: ParsedOptions) throws {
        let root = try options.required("data")
        let batchSize = try options.int("batch", in: 1...65_536)
        let imageSize = try options.int("input-size", in: 1...4096)
        let threads = try options.int("threads", in: 1...256)
        let batches = try options.int("batches", in: 1...1_000_000)
        let prefetch = try options.int("prefetch", in: 1...1024)
        let seed = UInt64(try options.int("seed", in: 0...Int.max))
        let transformName = options.string("transform") ?? "pretraining"
        let transform: ImageTransform
        switch transformName {
        case "pretraining": transform = .pretraining
        case "linprobe": transform = .linearProbe
        case "finetuning": transform = .finetuning(.official)
        case "evaluation": transform = .evaluation
        default:
            throw OptionError("mae bench data: --transform \(transformName) is not one of pretraining, linprobe, finetuning, evaluation")
        }
        let dataset = try ImageFolderDataset(root: root)
        let sampler = DistributedSampler(datasetCount: dataset.count, worldSize: 1, rank: 0, seed: seed)
        guard sampler.samplesPerRank >= batchSize else {
            throw OptionError("mae bench data: --batch \(batchSize) is larger than the dataset (\(dataset.count) images)")
        }
        let loader = DataLoader(dataset: dataset, sampler: sampler, batchSize: batchSize, imageSize: imageSize,
                                seed: seed, threads: threads, prefetchBatches: prefetch, transform: transform)
        defer { loader.stop() }
        print("dataset \(dataset.directory): \(dataset.count) images, \(dataset.classNames.count) classes; "
              + "batch \(batchSize), \(imageSize) px, \(threads) thread(s), prefetch \(prefetch), transform \(transformName)")
        var epoch = 0
        loader.startEpoch(epoch)
        func nextBatch() throws -> Batch {
            if let batch = try loader.next() { return batch }
            epoch += 1
            loader.startEpoch(epoch)
            guard let batch = try loader.next() else { throw OptionError("mae bench data: an epoch has no batch") }
            return batch
        }
        _ = try nextBatch()   // warm-up: threads started, buffers grown
        let started = Double(DispatchTime.now().uptimeNanoseconds) * 1e-9
        var waited = 0.0
        for _ in 0..<batches { waited += try nextBatch().dataWaitSeconds }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 - started
        let rate = Double(batches * batchSize) / seconds
        print("batches=\(batches) seconds=" + String(format: "%.3f", seconds) + " skipped_files=\(loader.skippedFiles) "
              + "wait_s=" + String(format: "%.3f", waited))
        print("img_per_s=" + String(format: "%.1f", rate))
    }
}
