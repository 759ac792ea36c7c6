import Kernels
import Testing
import TestSupport
@testable import Data

/// Every batch of one epoch: images as arrays, and the sample indices.
private func epochBatches(_ loader: DataLoader, epoch: Int, splitFrom start: Int = 0,
                          fromBatch: Int = 0) throws -> [(images: [Float], indices: [Int], batchIndex: Int)] {
    loader.startEpoch(epoch, splitFrom: start, fromBatch: fromBatch)
    var batches: [(images: [Float], indices: [Int], batchIndex: Int)] = []
    for _ in 0..<(loader.batchesPerEpoch(splitFrom: start) + 1) {   // bounded: one more call must return nil
        guard let batch = try loader.next() else { break }
        #expect(batch.dataWaitSeconds >= 0)
        #expect(batch.labels.count == batch.sampleIndices.count)
        batches.append((batch.images.toArray(), batch.sampleIndices, batch.batchIndex))
    }
    return batches
}

@Suite(.timeLimit(.minutes(2))) struct DataLoaderTests {
    @Test func sameBatchesWithOneAndThreeThreadsAndAfterResume() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        try synthesizeDataset(root: folder.path, classes: 4, perClass: 10, valPerClass: 0, size: 24, seed: 3)
        let dataset = try ImageFolderDataset(root: folder.path)
        let sampler = DistributedSampler(datasetCount: dataset.count, worldSize: 2, rank: 1, seed: 9)
        let single = DataLoader(dataset: dataset, sampler: sampler, batchSize: 4, imageSize: 16, seed: 9, threads: 1)
        let triple = DataLoader(dataset: dataset, sampler: sampler, batchSize: 4, imageSize: 16, seed: 9, threads: 3,
                                prefetchBatches: 2)
        defer { single.stop(); triple.stop() }
        #expect(single.batchesPerEpoch == 5)   // 40 images / 2 ranks / batch 4
        for epoch in 0..<2 {
            let one = try epochBatches(single, epoch: epoch)
            let three = try epochBatches(triple, epoch: epoch)
            #expect(one.count == 5 && three.count == 5)
            #expect(one.map(\.batchIndex) == Array(0..<5))
            let expectedIndices = sampler.indices(epoch: epoch)
            #expect(one.flatMap(\.indices) == expectedIndices, "batches follow the sampler's order")
            for (a, b) in zip(one, three) {
                #expect(a.indices == b.indices)
                let worst = compareValues(a.images, b.images)
                #expect(worst.difference == 0, "batch \(a.batchIndex) element \(worst.index): \(worst.actual) vs \(worst.expected)")
            }
            // Resume in the middle of the epoch, on the loader that just finished another epoch.
            let resumed = try epochBatches(triple, epoch: epoch, fromBatch: 3)
            #expect(resumed.map(\.batchIndex) == [3, 4])
            for (a, b) in zip(one.suffix(2), resumed) {
                #expect(a.indices == b.indices && a.images == b.images)
            }
        }
        // Different epochs give different augmentations of the same sample.
        let epoch0 = try epochBatches(single, epoch: 0), epoch1 = try epochBatches(single, epoch: 1)
        #expect(epoch0[0].images != epoch1[0].images)
    }

    /// Two workers take two batches each, then three split the rest of the epoch: together
    /// they load every sample of the epoch once, each with the augmentation one worker alone
    /// gives it (it depends on the seed, the epoch and the sample only).
    @Test func threeWorkersLoadTheRestOfAnEpochTwoWorkersBegan() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        try synthesizeDataset(root: folder.path, classes: 4, perClass: 10, valPerClass: 0, size: 24, seed: 3)
        let dataset = try ImageFolderDataset(root: folder.path)
        func loaders(world: Int) -> [DataLoader] {
            (0..<world).map {
                DataLoader(dataset: dataset, sampler: DistributedSampler(datasetCount: dataset.count, worldSize: world, rank: $0, seed: 6),
                           batchSize: 4, imageSize: 16, seed: 6, threads: 1)
            }
        }
        let two = loaders(world: 2), three = loaders(world: 3), alone = loaders(world: 1)
        defer { (two + three + alone).forEach { $0.stop() } }
        var images: [Int: [Float]] = [:]
        for batch in try epochBatches(alone[0], epoch: 1) {
            for (slot, index) in batch.indices.enumerated() {
                images[index] = Array(batch.images[(slot * 768)..<((slot + 1) * 768)])   // 3 × 16 × 16
            }
        }
        #expect(images.count == 40)
        var seen: [Int] = []
        for loader in two { seen += try epochBatches(loader, epoch: 1).prefix(2).flatMap(\.indices) }
        #expect(seen.count == 16)
        for loader in three {
            #expect(loader.batchesPerEpoch(splitFrom: 16) == 2)   // 24 left / 3 workers / batch 4
            for batch in try epochBatches(loader, epoch: 1, splitFrom: 16) {
                seen += batch.indices
                for (slot, index) in batch.indices.enumerated() {
                    #expect(Array(batch.images[(slot * 768)..<((slot + 1) * 768)]) == images[index], "sample \(index)")
                }
            }
        }
        #expect(seen.sorted() == Array(0..<40), "every sample of the epoch once")
    }

    /// The fine-tuning transform through the loader: the same batches with one and three
    /// threads and after a resume, and the images differ from the linear-probe transform's
    /// (RandAugment and erasing ran).
    @Test func finetuningBatchesAreThreadIndependentAndResumable() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        try synthesizeDataset(root: folder.path, classes: 2, perClass: 8, valPerClass: 0, size: 24, seed: 4)
        let dataset = try ImageFolderDataset(root: folder.path)
        let sampler = DistributedSampler(datasetCount: dataset.count, worldSize: 1, rank: 0, seed: 2)
        let transform = ImageTransform.finetuning(.official)
        let single = DataLoader(dataset: dataset, sampler: sampler, batchSize: 4, imageSize: 16, seed: 2, threads: 1,
                                transform: transform)
        let triple = DataLoader(dataset: dataset, sampler: sampler, batchSize: 4, imageSize: 16, seed: 2, threads: 3,
                                transform: transform)
        let probe = DataLoader(dataset: dataset, sampler: sampler, batchSize: 4, imageSize: 16, seed: 2, threads: 1,
                               transform: .linearProbe)
        defer { single.stop(); triple.stop(); probe.stop() }
        let one = try epochBatches(single, epoch: 1), three = try epochBatches(triple, epoch: 1)
        #expect(one.count == 4)
        for (a, b) in zip(one, three) { #expect(a.indices == b.indices && a.images == b.images) }
        let resumed = try epochBatches(triple, epoch: 1, fromBatch: 2)
        for (a, b) in zip(one.suffix(2), resumed) { #expect(a.indices == b.indices && a.images == b.images) }
        let plain = try epochBatches(probe, epoch: 1)
        #expect(zip(one, plain).filter { $0.images != $1.images }.count >= 3, "RandAugment and erasing change most batches")
    }

    @Test func batchHoldsTheAugmentedSamples() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        try synthesizeDataset(root: folder.path, classes: 2, perClass: 4, valPerClass: 0, size: 20, seed: 1)
        let dataset = try ImageFolderDataset(root: folder.path)
        let sampler = DistributedSampler(datasetCount: dataset.count, worldSize: 1, rank: 0, seed: 4)
        let loader = DataLoader(dataset: dataset, sampler: sampler, batchSize: 3, imageSize: 12, seed: 4, threads: 2)
        defer { loader.stop() }
        let batches = try epochBatches(loader, epoch: 2)
        #expect(batches.count == 2)   // 8 samples, batch 3, drop_last
        let augmentation = Augmentation(imageSize: 12)
        let decoder = ImageDecoder(), resampler = Resampler(), scratch = AugmentationScratch()
        let expected = FloatBuffer(count: 3 * 12 * 12)
        for batch in batches {
            for (slot, index) in batch.indices.enumerated() {
                let image = try decoder.decode(path: dataset.path(of: index))
                augmentation.apply(output: expected.pointer, image: image, seed: 4, epoch: 2, index: index,
                                   resampler: resampler, scratch: scratch)
                let actual = Array(batch.images[(slot * 432)..<((slot + 1) * 432)])
                #expect(compareValues(actual, expected.toArray()).difference == 0, "sample \(index)")
            }
        }
    }

    @Test func corruptFilesAreSkippedCountedAndReplacedByTheNextSample() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        try synthesizeDataset(root: folder.path, classes: 2, perClass: 6, valPerClass: 0, size: 16, seed: 2)
        let good = try folder.read("train/class_000/class_000_00000.JPEG")
        try folder.write("train/class_000/class_000_00001.JPEG", bytes: Array(good.prefix(good.count / 2)))  // truncated
        try folder.write("train/class_001/class_001_00002.JPEG", bytes: [])                                 // empty
        try folder.write("train/class_001/class_001_00003.png", bytes: [0x89, 0x50, 0x4E, 0x47, 13, 10, 26, 10, 0, 0])  // broken PNG
        let dataset = try ImageFolderDataset(root: folder.path)
        let bad = Set(["class_000/class_000_00001.JPEG", "class_001/class_001_00002.JPEG", "class_001/class_001_00003.png"]
            .map { dataset.files.firstIndex(of: $0)! })
        let sampler = DistributedSampler(datasetCount: dataset.count, worldSize: 1, rank: 0, seed: 5)
        let loader = DataLoader(dataset: dataset, sampler: sampler, batchSize: 13, imageSize: 8, seed: 5, threads: 2)
        defer { loader.stop() }
        let order = sampler.indices(epoch: 0)
        let batches = try epochBatches(loader, epoch: 0)
        #expect(batches.count == 1)
        #expect(loader.skippedFiles == 3)
        let used = batches[0].indices
        for position in 0..<order.count {
            // The first decodable sample at or after this position (wrapping).
            let replacement = (0..<order.count).map { order[(position + $0) % order.count] }.first { !bad.contains($0) }
            #expect(used[position] == replacement, "position \(position)")
        }
        // The next epoch skips the same files without counting them again.
        _ = try epochBatches(loader, epoch: 1)
        #expect(loader.skippedFiles == 3)
    }

    @Test func evaluationLoaderKeepsOrderAndTheLastPartialBatch() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        try synthesizeDataset(root: folder.path, classes: 2, perClass: 1, valPerClass: 4, size: 20, seed: 1)
        let dataset = try ImageFolderDataset(root: folder.path, split: "val")
        let sampler = DistributedSampler(datasetCount: dataset.count, worldSize: 1, rank: 0, seed: 0, shuffle: false)
        let loader = DataLoader(dataset: dataset, sampler: sampler, batchSize: 3, imageSize: 12, seed: 0, threads: 2,
                                transform: .evaluation, dropLast: false)
        defer { loader.stop() }
        #expect(loader.batchesPerEpoch == 3)   // 8 images: 3 + 3 + 2
        let first = try epochBatches(loader, epoch: 0), second = try epochBatches(loader, epoch: 1)
        #expect(first.map(\.indices) == [[0, 1, 2], [3, 4, 5], [6, 7]])
        #expect(first[2].images.count == 2 * 3 * 12 * 12)
        #expect(first.map(\.images) == second.map(\.images), "no randomness in evaluation")
        let augmentation = Augmentation(imageSize: 12, transform: .evaluation)
        let decoder = ImageDecoder()
        let expected = FloatBuffer(count: 3 * 12 * 12)
        let image = try decoder.decode(path: dataset.path(of: 7))
        augmentation.apply(output: expected.pointer, image: image, seed: 9, epoch: 9, index: 9,
                           resampler: Resampler(), scratch: AugmentationScratch())
        #expect(Array(first[2].images[432...]) == expected.toArray())
    }

    @Test func misuseAndHopelessShardsAreErrors() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        try folder.write("train/a/1.jpg", bytes: [1, 2, 3])
        try folder.write("train/a/2.jpg", bytes: [0xFF, 0xD8, 0xFF])
        let dataset = try ImageFolderDataset(root: folder.path)
        let sampler = DistributedSampler(datasetCount: dataset.count, worldSize: 1, rank: 0, seed: 0)
        let loader = DataLoader(dataset: dataset, sampler: sampler, batchSize: 1, imageSize: 8, seed: 0, threads: 1)
        #expect { try loader.next() } throws: { "\($0)".contains("startEpoch") }
        loader.startEpoch(0)
        #expect { try loader.next() } throws: { "\($0)".contains("none of the 2 images") }
        #expect(loader.skippedFiles == 2)
        loader.stop()
        loader.stop()   // idempotent
        #expect { try loader.next() } throws: { "\($0)".contains("stopped") }
    }
}

@Suite struct SynthesizeDatasetTests {
    @Test func sameSeedGivesTheSameBytes() throws {
        let first = try TemporaryFolder(), second = try TemporaryFolder(), third = try TemporaryFolder()
        defer { first.remove(); second.remove(); third.remove() }
        try synthesizeDataset(root: first.path, classes: 3, perClass: 4, valPerClass: 2, size: 32, seed: 7)
        try synthesizeDataset(root: second.path, classes: 3, perClass: 4, valPerClass: 2, size: 32, seed: 7)
        try synthesizeDataset(root: third.path, classes: 3, perClass: 4, valPerClass: 2, size: 32, seed: 8)
        let train = try ImageFolderDataset(root: first.path)
        let validation = try ImageFolderDataset(root: first.path, split: "val")
        #expect(train.count == 12 && validation.count == 6 && train.classNames == ["class_000", "class_001", "class_002"])
        #expect(train.fingerprint == (try ImageFolderDataset(root: second.path)).fingerprint)
        var differing = 0
        for file in train.files {
            let bytes = try first.read("train/" + file)
            #expect(bytes == (try second.read("train/" + file)), "\(file)")
            if bytes != (try third.read("train/" + file)) { differing += 1 }
        }
        #expect(differing == train.count, "another seed changes every image")
        // Real JPEGs of the requested size.
        let decoder = ImageDecoder()
        let image = try decoder.decode(path: validation.path(of: 0))
        #expect(image.width == 32 && image.height == 32)
        // Rewriting over its own output is allowed; over a foreign dataset it is not.
        try synthesizeDataset(root: first.path, classes: 3, perClass: 4, valPerClass: 2, size: 32, seed: 7)
        let foreign = try TemporaryFolder()
        defer { foreign.remove() }
        try foreign.write("train/real/1.JPEG", bytes: [1])
        #expect { try synthesizeDataset(root: foreign.path, classes: 1, perClass: 1, valPerClass: 0, size: 16, seed: 0) } throws: {
            "\($0)".contains("did not write")
        }
    }

    @Test func classesDifferOnAverage() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        try synthesizeDataset(root: folder.path, classes: 2, perClass: 6, valPerClass: 0, size: 24, seed: 0)
        let dataset = try ImageFolderDataset(root: folder.path)
        let decoder = ImageDecoder()
        var meanColour = [[Double]](repeating: [0, 0, 0], count: 2)
        for index in 0..<dataset.count {
            let image = try decoder.decode(path: dataset.path(of: index))
            for pixel in 0..<(24 * 24) {
                for channel in 0..<3 { meanColour[dataset.labels[index]][channel] += Double(image.pixels[pixel * 3 + channel]) }
            }
        }
        let distance = zip(meanColour[0], meanColour[1]).map { abs($0 - $1) / Double(6 * 24 * 24) }.max()!
        #expect(distance > 10, "class colours differ by \(distance) levels")
    }
}
