import Foundation
import Kernels
import Testing
import TestSupport
@testable import Training

/// DINO's weighted k-NN classifier: the k most similar training rows vote with weight
/// exp(similarity / T); ranked classes give top-1 and top-5.
struct NearestNeighboursTests {
    /// Two points of class 1 a little less similar than one of class 0: with a small
    /// temperature the closest point outweighs the pair, with a large one the pair wins.
    @Test func votesAreWeightedBySimilarity() {
        // Unit vectors in 2-D at angles 0 (the query), 0.1 (class 0), 0.3 and 0.35 (class 1), 3 (class 1, far).
        let angles: [Double] = [0.1, 0.3, 0.35, 3]
        let training = FloatBuffer(angles.flatMap { [Float(cos($0)), Float(sin($0))] })
        let query = FloatBuffer([1, 0])
        func accuracy(_ temperature: Double, truth: Int) -> NearestNeighbours.Accuracy {
            NearestNeighbours.accuracy(training: training.pointer, trainingLabels: [0, 1, 1, 1],
                                       evaluation: query.pointer, evaluationLabels: [truth], width: 2, classCount: 2,
                                       k: 3, temperature: temperature)
        }
        // exp(cos 0.1 / 0.01) outweighs exp(cos 0.3 / 0.01) + exp(cos 0.35 / 0.01) by far.
        #expect(accuracy(0.01, truth: 0).top1 == 100)
        #expect(accuracy(0.01, truth: 1).top1 == 0)
        // At T = 100 the weights are nearly equal: two votes beat one.
        #expect(accuracy(100, truth: 1).top1 == 100)
        // Two classes: the truth is always among the top five.
        #expect(accuracy(0.01, truth: 1).top5 == 100)
    }

    /// Accuracy over several queries, against a direct count.
    @Test func accuracyCountsEveryQuery() {
        // Three clusters on the axes of 3-D space; queries near each axis, one mislabelled.
        let training = FloatBuffer([1, 0, 0, 0.9, 0.1, 0, 0, 1, 0, 0.1, 0.9, 0, 0, 0, 1, 0, 0.1, 0.9].map { Float($0) })
        NearestNeighbours.normalizeRows(training.pointer, rows: 6, width: 3)
        let queries = FloatBuffer([0.95, 0.05, 0, 0, 0.95, 0.05, 0.05, 0, 0.95, 1, 0, 0].map { Float($0) })
        NearestNeighbours.normalizeRows(queries.pointer, rows: 4, width: 3)
        let result = NearestNeighbours.accuracy(training: training.pointer, trainingLabels: [0, 0, 1, 1, 2, 2],
                                                evaluation: queries.pointer, evaluationLabels: [0, 1, 2, 2], width: 3,
                                                classCount: 3, k: 2, temperature: 0.07)
        #expect(result.top1 == 75)
        #expect(result.top5 == 100)
    }

    /// The one-pass selection gives what a full sort gives, ties to the earlier index.
    @Test func nearestIndicesMatchASort() {
        let values = randomValues(500, seed: 71).map { Float(($0 * 20).rounded() / 20) }  // many ties
        let scores = FloatBuffer(values)
        for k in [1, 5, 20, 500] {
            let expected = (0..<values.count).sorted { values[$0] != values[$1] ? values[$0] > values[$1] : $0 < $1 }
            #expect(NearestNeighbours.nearestIndices(scores.pointer, count: values.count, k: k) == Array(expected.prefix(k)),
                    "k \(k)")
        }
    }

    @Test func rowsAreScaledToUnitLength() {
        let rows = FloatBuffer([3, 4, 0, 0, 0, 0].map { Float($0) })
        NearestNeighbours.normalizeRows(rows.pointer, rows: 2, width: 3)
        expectClose(rows.toArray(), [0.6, 0.8, 0, 0, 0, 0], absolute: 1e-7, "normalised rows")
    }
}
