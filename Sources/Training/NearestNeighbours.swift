import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// The weighted k-nearest-neighbour classifier that DINO reports for a representation's
/// quality (its `knn_classifier`): features are L2-normalised, each evaluation sample's k
/// most similar training samples (cosine similarity) vote for their class with weight
/// exp(similarity / temperature), and the classes are ranked by their summed votes.
public enum NearestNeighbours {
    /// Top-1 and top-5 accuracy in percent.
    public struct Accuracy: Equatable, Sendable {
        public let top1: Double
        public let top5: Double
    }

    /// Scales every row of `features` ([rows, width]) to unit length (rows of zeros stay zero).
    public static func normalizeRows(_ features: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        parallelFor(rows) { range in
            for row in range {
                let vector = features + row * width
                var sum: Double = 0
                for index in 0..<width { sum += Double(vector[index]) * Double(vector[index]) }
                let scale = sum > 0 ? Float(1 / sum.squareRoot()) : 0
                for index in 0..<width { vector[index] *= scale }
            }
        }
    }

    /// Classifies each row of `evaluation` ([evaluationCount, width], unit rows) by its `k`
    /// nearest rows of `training` ([trainingCount, width], unit rows, classes
    /// `trainingLabels` in 0..<classCount) and scores the ranking against `evaluationLabels`.
    /// Ties in similarity go to the earlier training sample, so the result is deterministic.
    public static func accuracy(training: UnsafePointer<Float>, trainingLabels: [Int],
                                evaluation: UnsafePointer<Float>, evaluationLabels: [Int],
                                width: Int, classCount: Int, k: Int, temperature: Double) -> Accuracy {
        let trainingCount = trainingLabels.count, evaluationCount = evaluationLabels.count
        precondition(trainingCount > 0 && evaluationCount > 0 && k >= 1 && temperature > 0)
        let neighbours = min(k, trainingCount)
        // Similarities of a block of evaluation rows at a time: [block, trainingCount].
        let blockRows = max(1, min(evaluationCount, (1 << 24) / max(1, trainingCount)))
        let similarities = FloatBuffer(count: blockRows * trainingCount)
        var top1 = 0, top5 = 0
        var start = 0
        while start < evaluationCount {
            let rows = min(blockRows, evaluationCount - start)
            matrixMultiply(similarities.pointer, ldc: trainingCount, evaluation + start * width, lda: width,
                           training, ldb: width, transposeB: true, m: rows, n: trainingCount, k: width)
            for row in 0..<rows {
                let scores = UnsafePointer(similarities.pointer + row * trainingCount)
                let nearest = nearestIndices(scores, count: trainingCount, k: neighbours)
                var votes = [Double](repeating: 0, count: classCount)
                for index in nearest { votes[trainingLabels[index]] += exp(Double(scores[index]) / temperature) }
                let ranked = (0..<classCount).sorted { votes[$0] != votes[$1] ? votes[$0] > votes[$1] : $0 < $1 }
                let truth = evaluationLabels[start + row]
                if ranked.first == truth { top1 += 1 }
                if ranked.prefix(5).contains(truth) { top5 += 1 }
            }
            start += rows
        }
        return Accuracy(top1: 100 * Double(top1) / Double(evaluationCount),
                        top5: 100 * Double(top5) / Double(evaluationCount))
    }

    /// The indices of the `k` largest of `scores[0..<count]`, largest first; of equal scores
    /// the earlier index first. One pass, keeping the best k in order (k is small).
    static func nearestIndices(_ scores: UnsafePointer<Float>, count: Int, k: Int) -> [Int] {
        var best: [Int] = []
        best.reserveCapacity(k + 1)
        for index in 0..<count {
            let score = scores[index]
            if best.count == k, let last = best.last, score <= scores[last] { continue }
            var position = best.count
            while position > 0 && scores[best[position - 1]] < score { position -= 1 }
            best.insert(index, at: position)
            if best.count > k { best.removeLast() }
        }
        return best
    }
}
