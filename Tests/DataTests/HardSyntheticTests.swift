import Testing
@testable import Data

@Suite struct HardSyntheticDatasetTests {
    /// Each training image's colour histogram (4 levels per channel: 64 bins, fractions of the
    /// pixels) and its label.
    func colourHistograms(root: String) throws -> [(histogram: [Double], label: Int)] {
        let train = try ImageFolderDataset(root: root)
        let decoder = ImageDecoder()
        return try (0..<train.count).map { index in
            let image = try decoder.decode(path: train.path(of: index))
            let pixels = image.width * image.height
            var histogram = [Double](repeating: 0, count: 64)
            for pixel in 0..<pixels {
                let bin = Int(image.pixels[pixel * 3]) / 64 * 16 + Int(image.pixels[pixel * 3 + 1]) / 64 * 4
                    + Int(image.pixels[pixel * 3 + 2]) / 64
                histogram[bin] += 1 / Double(pixels)
            }
            return (histogram, train.labels[index])
        }
    }

    /// Leave-one-out accuracy of the nearest class mean of the colour histograms: how much
    /// colour alone gives the class away.
    func colourAccuracy(root: String, classes: Int) throws -> Double {
        let samples = try colourHistograms(root: root)
        var sums = [[Double]](repeating: [Double](repeating: 0, count: 64), count: classes)
        var counts = [Int](repeating: 0, count: classes)
        for sample in samples {
            sums[sample.label] = zip(sums[sample.label], sample.histogram).map { $0 + $1 }
            counts[sample.label] += 1
        }
        var correct = 0
        for sample in samples {
            let distances = (0..<classes).map { label -> Double in
                let own = label == sample.label
                let count = Double(counts[label] - (own ? 1 : 0))
                return (0..<64).map { bin -> Double in
                    let mean = (sums[label][bin] - (own ? sample.histogram[bin] : 0)) / count
                    return (mean - sample.histogram[bin]) * (mean - sample.histogram[bin])
                }.reduce(0, +)
            }
            if distances.firstIndex(of: distances.min()!) == sample.label { correct += 1 }
        }
        return Double(correct) / Double(samples.count)
    }

    /// Colour alone classifies most of the easy set (77 % with this seed), the hard set hardly better
    /// than chance (1/5). Same arguments give the same bytes.
    @Test func hardClassesShareTheirColourStatistics() throws {
        let easy = try TemporaryFolder(), hard = try TemporaryFolder(), again = try TemporaryFolder()
        defer { easy.remove(); hard.remove(); again.remove() }
        try synthesizeDataset(root: easy.path, classes: 5, perClass: 24, valPerClass: 0, size: 24, seed: 1)
        try synthesizeDataset(root: hard.path, classes: 5, perClass: 24, valPerClass: 0, size: 24, seed: 1, difficulty: .hard)
        try synthesizeDataset(root: again.path, classes: 5, perClass: 24, valPerClass: 0, size: 24, seed: 1, difficulty: .hard)
        let easyAccuracy = try colourAccuracy(root: easy.path, classes: 5)
        let hardAccuracy = try colourAccuracy(root: hard.path, classes: 5)
        #expect(easyAccuracy > 0.6, "easy: colour alone classifies \(easyAccuracy)")
        #expect(hardAccuracy < 0.4, "hard: colour alone classifies \(hardAccuracy)")
        let files = try ImageFolderDataset(root: hard.path).files
        for file in files.prefix(10) { #expect(try hard.read("train/" + file) == again.read("train/" + file)) }
        #expect(String(decoding: try hard.read("SYNTHETIC.txt"), as: UTF8.self).contains("difficulty=hard"))
        #expect(throws: DataError.self) {
            try synthesizeDataset(root: hard.path, classes: 51, perClass: 1, valPerClass: 0, size: 16, seed: 1, difficulty: .hard)
        }
    }

    /// The medium set: colour alone hardly better than chance (1/10); plain and striped classes of
    /// the same shape differ inside the shape; same arguments give the same bytes; at most 10 classes.
    @Test func mediumClassesShareTheirColourStatistics() throws {
        let medium = try TemporaryFolder(), again = try TemporaryFolder()
        defer { medium.remove(); again.remove() }
        try synthesizeDataset(root: medium.path, classes: 10, perClass: 24, valPerClass: 0, size: 24, seed: 1, difficulty: .medium)
        try synthesizeDataset(root: again.path, classes: 10, perClass: 24, valPerClass: 0, size: 24, seed: 1, difficulty: .medium)
        let accuracy = try colourAccuracy(root: medium.path, classes: 10)
        #expect(accuracy < 0.25, "medium: colour alone classifies \(accuracy)")
        let files = try ImageFolderDataset(root: medium.path).files
        for file in files.prefix(10) { #expect(try medium.read("train/" + file) == again.read("train/" + file)) }
        #expect(String(decoding: try medium.read("SYNTHETIC.txt"), as: UTF8.self).contains("difficulty=medium"))
        #expect(throws: DataError.self) {
            try synthesizeDataset(root: medium.path, classes: 11, perClass: 1, valPerClass: 0, size: 16, seed: 1, difficulty: .medium)
        }
    }
}
