import Foundation
import Kernels
import Testing
import TestSupport

/// The linear probe's kernels: BatchNorm1d without affine, cross-entropy with hard labels, LARS.
@Suite struct ProbeKernelTests {
    /// BatchNorm1d(affine=False) in training mode, in double precision.
    static func batchNorm(_ x: [Double], rows: Int, width: Int, epsilon: Double = 1e-6) -> [Double] {
        var output = [Double](repeating: 0, count: rows * width)
        for column in 0..<width {
            let values = (0..<rows).map { x[$0 * width + column] }
            let mean = values.reduce(0, +) / Double(rows)
            let variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(rows)
            for row in 0..<rows { output[row * width + column] = (values[row] - mean) / (variance + epsilon).squareRoot() }
        }
        return output
    }

    @Test(arguments: [(4, 5), (9, 33), (2, 3)])
    func batchNormForwardBackwardAndRunningStatistics(rows: Int, width: Int) {
        let x = rounded(randomValues(rows * width, seed: 21, in: -2..<3))
        let r = rounded(randomValues(rows * width, seed: 22))
        let output = FloatBuffer(count: rows * width)
        let mean = FloatBuffer(count: width), reciprocalStd = FloatBuffer(count: width)
        let runningMean = buffer(randomValues(width, seed: 23)), runningVariance = buffer(randomValues(width, seed: 24, in: 0.5..<2))
        let (oldMean, oldVariance) = (runningMean.toArray().map(Double.init), runningVariance.toArray().map(Double.init))
        let xb = buffer(x)
        batchNormForwardTraining(output: output.pointer, mean: mean.pointer, reciprocalStd: reciprocalStd.pointer,
                                 input: xb.pointer, runningMean: runningMean.pointer, runningVariance: runningVariance.pointer,
                                 rows: rows, width: width)
        expectClose(output.toArray(), Self.batchNorm(x, rows: rows, width: width), absolute: 2e-6, relative: 2e-6,
                    "batch norm forward")
        // PyTorch: running = 0.9 · running + 0.1 · batch value, the variance unbiased.
        for column in 0..<width {
            let values = (0..<rows).map { x[$0 * width + column] }
            let batchMean = values.reduce(0, +) / Double(rows)
            let unbiased = values.map { ($0 - batchMean) * ($0 - batchMean) }.reduce(0, +) / Double(rows - 1)
            #expect(abs(Double(runningMean.pointer[column]) - (0.9 * oldMean[column] + 0.1 * batchMean)) < 1e-6)
            #expect(abs(Double(runningVariance.pointer[column]) - (0.9 * oldVariance[column] + 0.1 * unbiased)) < 1e-5)
        }

        let dx = FloatBuffer(count: rows * width), rb = buffer(r)
        batchNormBackward(inputGradient: dx.pointer, outputGradient: rb.pointer, output: output.pointer,
                          reciprocalStd: reciprocalStd.pointer, rows: rows, width: width)
        let gx = numericGradient(x) { dot(r, Self.batchNorm($0, rows: rows, width: width)) }
        expectClose(dx.toArray(), gx, absolute: 5e-5, relative: 1e-4, "batch norm d input")

        // Evaluation: the running statistics, per column.
        let evaluated = FloatBuffer(count: rows * width)
        batchNormForwardEvaluation(output: evaluated.pointer, input: xb.pointer, runningMean: runningMean.pointer,
                                   runningVariance: runningVariance.pointer, rows: rows, width: width)
        let expected = (0..<(rows * width)).map { index -> Double in
            let column = index % width
            return (x[index] - Double(runningMean.pointer[column])) / (Double(runningVariance.pointer[column]) + 1e-6).squareRoot()
        }
        expectClose(evaluated.toArray(), expected, absolute: 2e-6, relative: 2e-6, "batch norm evaluation")
    }

    @Test func crossEntropyWithHardLabelsAndItsGradient() {
        let (rows, classes) = (5, 7)
        let z = rounded(randomValues(rows * classes, seed: 31, in: -3..<3))
        let labels = [0, 6, 3, 3, 1]
        func reference(_ logits: [Double]) -> Double {
            (0..<rows).map { row in
                let values = logits[(row * classes)..<((row + 1) * classes)]
                let largest = values.max()!
                return largest + log(values.map { exp($0 - largest) }.reduce(0, +)) - logits[row * classes + labels[row]]
            }.reduce(0, +) / Double(rows)
        }
        let gradient = FloatBuffer(count: rows * classes), zb = buffer(z)
        let loss = crossEntropyHardLabels(logits: zb.pointer, labels: labels, rows: rows, classes: classes,
                                          gradient: gradient.pointer, gradientScale: 0.5)
        #expect(abs(loss - reference(z)) < 1e-9)
        expectClose(gradient.toArray(), numericGradient(z) { 0.5 * reference($0) }, absolute: 1e-6, relative: 1e-5,
                    "cross-entropy d logits")
        // Ranks: the label's place among its row's logits, ties to the lower class.
        let tied = FloatBuffer([1, 3, 3, 0] as [Float])
        #expect(labelRank(logits: tied.pointer, row: 0, classes: 4, label: 1) == 0)
        #expect(labelRank(logits: tied.pointer, row: 0, classes: 4, label: 2) == 1)
        #expect(labelRank(logits: tied.pointer, row: 0, classes: 4, label: 3) == 3)
    }

    /// Two LARS steps worked out by hand from util/lars.py: a 2-D tensor gets the trust ratio
    /// and weight decay, a 1-D one neither.
    @Test func larsStepsMatchTheHandComputedOnes() {
        // Weight [[3, 0], [0, 4]]: ‖p‖ = 5. Gradient [[0.6, 0], [0, 0.8]], weight decay 0.1:
        // d = g + 0.1 p = [[0.9, 0], [0, 1.2]], ‖d‖ = 1.5, q = 0.001 · 5 / 1.5 = 1/300,
        // so d·q = [[0.003, 0], [0, 0.004]] = μ after step 1; p −= 0.5 μ.
        let weight = FloatBuffer([3, 0, 0, 4] as [Float]), gradient = FloatBuffer([0.6, 0, 0, 0.8] as [Float])
        let momentum = FloatBuffer(count: 4)
        larsUpdate(parameters: weight.pointer, gradients: gradient.pointer, momentumBuffer: momentum.pointer, count: 4,
                   adapts: true, learningRate: 0.5, weightDecay: 0.1, momentum: 0.9, trustCoefficient: 0.001)
        expectClose(momentum.toArray(), [0.003, 0, 0, 0.004], absolute: 1e-9, relative: 1e-6, "LARS μ, step 1")
        expectClose(weight.toArray(), [2.9985, 0, 0, 3.998], absolute: 1e-7, relative: 1e-6, "LARS weight, step 1")
        // Bias [1, −2], gradient [0.5, 0.25], no adaptation and no decay: μ = 0.9 μ + g.
        let bias = FloatBuffer([1, -2] as [Float]), biasGradient = FloatBuffer([0.5, 0.25] as [Float])
        let biasMomentum = FloatBuffer([0.1, 0.2] as [Float])
        larsUpdate(parameters: bias.pointer, gradients: biasGradient.pointer, momentumBuffer: biasMomentum.pointer, count: 2,
                   adapts: false, learningRate: 0.5, weightDecay: 0.1, momentum: 0.9, trustCoefficient: 0.001)
        expectClose(biasMomentum.toArray(), [0.59, 0.43], absolute: 1e-7, relative: 1e-6, "LARS bias μ")
        expectClose(bias.toArray(), [0.705, -2.215], absolute: 1e-6, relative: 1e-6, "LARS bias")
        // A zero gradient and zero decay on a 2-D tensor: ‖d‖ = 0, q = 1, the momentum carries on.
        let still = FloatBuffer([1, 1] as [Float]), zero = FloatBuffer(count: 2), carried = FloatBuffer([0.2, -0.2] as [Float])
        larsUpdate(parameters: still.pointer, gradients: zero.pointer, momentumBuffer: carried.pointer, count: 2,
                   adapts: true, learningRate: 1, weightDecay: 0, momentum: 0.5, trustCoefficient: 0.001)
        expectClose(still.toArray(), [0.9, 1.1], absolute: 1e-7, relative: 0, "LARS with a zero update")
    }
}
