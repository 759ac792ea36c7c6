import Kernels
import Model
import Testing
@testable import Training

/// ZeRO stage 1 in one process: three optimizers, each over its shard (ranges that cut
/// tensors and decay groups anywhere), give every parameter and moment of the whole
/// optimizer's update bit for bit, with a third of the moments each.
@Suite struct ShardedOptimizerTests {
    @Test func shardsUpdateAsTheWhole() {
        let model = MAEModel(config: tinyModelConfig(), seed: 4)
        let count = model.table.count
        let shards: [[Range<Int>]] = [[0..<101, (count / 2)..<(count / 2 + 7)],
                                      [101..<(count / 2)],
                                      [(count / 2 + 7)..<count]]
        let whole = AdamWOptimizer(table: model.table)
        let parts = shards.map { AdamWOptimizer(table: model.table, shard: $0) }
        #expect(parts.map(\.firstMoment.count).reduce(0, +) == count && parts.allSatisfy(\.isSharded))
        let expected = FloatBuffer(model.parameters.toArray()), actual = FloatBuffer(model.parameters.toArray())
        var random = CounterRandom(seed: 9, purpose: .test)
        for step in 1...3 {
            let gradients = FloatBuffer((0..<count).map { _ in random.nextFloat() - 0.5 })
            whole.update(parameters: expected, gradients: gradients, learningRate: 1e-3 * Float(step))
            for part in parts { part.update(parameters: actual, gradients: gradients, learningRate: 1e-3 * Float(step)) }
        }
        let differing = zip(actual.toArray(), expected.toArray()).filter { $0.bitPattern != $1.bitPattern }.count
        #expect(differing == 0, "\(differing) parameters differ")
        let first = FloatBuffer(count: count), second = FloatBuffer(count: count)
        for part in parts { part.copyMoments(intoWhole: first.pointer, second.pointer) }
        #expect(first.toArray() == whole.firstMoment.toArray() && second.toArray() == whole.secondMoment.toArray())
        // And back: a shard takes its moments from the whole layout.
        let again = AdamWOptimizer(table: model.table, shard: shards[1])
        again.takeMoments(fromWhole: first.pointer, second.pointer)
        #expect(again.firstMoment.toArray() == parts[1].firstMoment.toArray())
    }
}
