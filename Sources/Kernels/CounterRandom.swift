#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11).
///
/// Every random number in a run is a pure function of (seed, purpose, epoch, index,
/// draw number): no hidden state survives between draws of different samples, so a
/// resumed run, another thread order, or another world size draws exactly the same
/// numbers for the same sample.

/// What a stream of random numbers is used for; each purpose is an independent stream.
public enum RandomPurpose: UInt32, Sendable {
    case initialisation = 1
    case permutation = 2
    case crop = 3
    case flip = 4
    case maskNoise = 5
    case synthesis = 6
    case test = 7
    /// RandAugment's choice of operations and their magnitudes (fine-tuning).
    case randAugment = 8
    /// Random erasing's box and noise (fine-tuning).
    case randomErasing = 9
    /// Mixup / CutMix of a batch (fine-tuning).
    case mixup = 10
    /// Fault injection: the control fuzzer's choices of cases and mutations.
    case faults = 11
    /// Stochastic depth of fine-tuning (one draw per sample, block and branch).
    case dropPath = 16
}

/// One Philox4x32-10 block: four 32-bit outputs for a 128-bit counter and 64-bit key.
@inline(__always)
public func philox4x32(counter: (UInt32, UInt32, UInt32, UInt32),
                       key: (UInt32, UInt32)) -> (UInt32, UInt32, UInt32, UInt32) {
    var (c0, c1, c2, c3) = counter
    var (k0, k1) = key
    for round in 0..<10 {
        let product0 = UInt64(0xD251_1F53) &* UInt64(c0)
        let product1 = UInt64(0xCD9E_8D57) &* UInt64(c2)
        let hi0 = UInt32(truncatingIfNeeded: product0 >> 32), lo0 = UInt32(truncatingIfNeeded: product0)
        let hi1 = UInt32(truncatingIfNeeded: product1 >> 32), lo1 = UInt32(truncatingIfNeeded: product1)
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
        if round < 9 {
            k0 &+= 0x9E37_79B9
            k1 &+= 0xBB67_AE85
        }
    }
    return (c0, c1, c2, c3)
}

/// A stream of random numbers for one (seed, purpose, epoch, index).
///
/// `index` is the sample's position in the dataset (or a tensor's number for
/// initialisation); draws within the stream are numbered, so two streams never overlap.
public struct CounterRandom: Sendable {
    private let key: (UInt32, UInt32)
    private let purposeAndEpoch: UInt32
    private let indexLow: UInt32
    private let indexHigh: UInt32
    private var block: UInt32 = 0
    private var buffered: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)
    private var bufferedCount = 0

    /// - Parameters:
    ///   - seed: the run's seed.
    ///   - purpose: what the numbers are for.
    ///   - epoch: the epoch (0 where it does not apply); at most 2^24 − 1.
    ///   - index: the sample or tensor number.
    public init(seed: UInt64, purpose: RandomPurpose, epoch: Int = 0, index: Int = 0) {
        precondition(epoch >= 0 && epoch < (1 << 24), "epoch out of range for the counter layout")
        precondition(index >= 0, "index must not be negative")
        key = (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32))
        purposeAndEpoch = (purpose.rawValue << 24) | UInt32(epoch)
        indexLow = UInt32(truncatingIfNeeded: index)
        indexHigh = UInt32(truncatingIfNeeded: UInt64(index) >> 32)
    }

    /// The next 32 random bits.
    @inline(__always)
    public mutating func nextUInt32() -> UInt32 {
        if bufferedCount == 0 {
            buffered = philox4x32(counter: (block, indexLow, indexHigh, purposeAndEpoch), key: key)
            block &+= 1
            bufferedCount = 4
        }
        bufferedCount -= 1
        switch bufferedCount {
        case 3: return buffered.0
        case 2: return buffered.1
        case 1: return buffered.2
        default: return buffered.3
        }
    }

    /// 64 random bits.
    public mutating func nextUInt64() -> UInt64 {
        UInt64(nextUInt32()) << 32 | UInt64(nextUInt32())
    }

    /// Uniform in [0, 1) with 24 random bits (every Float of that form is equally likely).
    @inline(__always)
    public mutating func nextFloat() -> Float {
        Float(nextUInt32() >> 8) * (1.0 / 16_777_216.0)
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextDouble() -> Double {
        Double(nextUInt64() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Uniform in [low, high).
    public mutating func nextDouble(in range: Range<Double>) -> Double {
        range.lowerBound + (range.upperBound - range.lowerBound) * nextDouble()
    }

    /// A uniform integer in 0..<bound, without modulo bias (Lemire's method).
    public mutating func nextInt(below bound: Int) -> Int {
        precondition(bound > 0 && bound <= Int(UInt32.max), "bound out of range")
        let bound32 = UInt32(bound)
        var product = UInt64(nextUInt32()) &* UInt64(bound32)
        if UInt32(truncatingIfNeeded: product) < bound32 {
            let threshold = (0 &- bound32) % bound32
            while UInt32(truncatingIfNeeded: product) < threshold {
                product = UInt64(nextUInt32()) &* UInt64(bound32)
            }
        }
        return Int(product >> 32)
    }

    /// A standard normal sample (Box–Muller in double precision).
    public mutating func nextNormal() -> Double {
        let u1 = 1.0 - nextDouble()  // (0, 1]: log stays finite
        let u2 = nextDouble()
        return (-2.0 * log(u1)).squareRoot() * cos(2.0 * Double.pi * u2)
    }
}

