import Testing
@testable import Kernels

@Suite struct CounterRandomTests {
    /// Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32_10).
    @Test func philoxMatchesPublishedVectors() {
        let zero = philox4x32(counter: (0, 0, 0, 0), key: (0, 0))
        #expect([zero.0, zero.1, zero.2, zero.3] == [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8])
        let ones = philox4x32(counter: (.max, .max, .max, .max), key: (.max, .max))
        #expect([ones.0, ones.1, ones.2, ones.3] == [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd])
        let pi = philox4x32(counter: (0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344),
                            key: (0xa409_3822, 0x299f_31d0))
        #expect([pi.0, pi.1, pi.2, pi.3] == [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1])
    }

    @Test func streamsAreReproducibleAndIndependent() {
        var first = CounterRandom(seed: 42, purpose: .crop, epoch: 3, index: 7)
        var again = CounterRandom(seed: 42, purpose: .crop, epoch: 3, index: 7)
        var other = CounterRandom(seed: 42, purpose: .crop, epoch: 3, index: 8)
        let a = (0..<9).map { _ in first.nextUInt32() }
        let b = (0..<9).map { _ in again.nextUInt32() }
        let c = (0..<9).map { _ in other.nextUInt32() }
        #expect(a == b)
        #expect(a != c)
    }

    @Test func uniformAndNormalMoments() {
        var random = CounterRandom(seed: 1, purpose: .test)
        let count = 200_000
        var sum = 0.0, sumSquares = 0.0, uniformSum = 0.0
        for _ in 0..<count {
            let x = random.nextNormal()
            sum += x; sumSquares += x * x
            let u = random.nextFloat()
            #expect(u >= 0 && u < 1)
            uniformSum += Double(u)
        }
        #expect(abs(sum / Double(count)) < 0.01)
        #expect(abs(sumSquares / Double(count) - 1) < 0.02)
        #expect(abs(uniformSum / Double(count) - 0.5) < 0.005)
        for bound in [1, 3, 10, 1000] {
            for _ in 0..<100 { #expect(random.nextInt(below: bound) < bound) }
        }
    }
}
