#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Gamma and Beta samples from a counter-based stream (Mixup's λ ~ Beta(α, α)).
extension CounterRandom {
    /// A Gamma(shape, 1) sample: Marsaglia and Tsang's squeeze method (ACM TOMS 26(3), 2000)
    /// for shape ≥ 1; for shape < 1, Gamma(shape + 1) · U^(1/shape) (their note 8).
    /// Each try accepts with probability above 0.95, so the loop ends after a few draws.
    public mutating func nextGamma(shape: Double) -> Double {
        precondition(shape > 0, "the Gamma shape must be positive")
        if shape < 1 {
            let boosted = nextGamma(shape: shape + 1)
            let uniform = 1.0 - nextDouble()   // (0, 1]: the power stays finite
            return boosted * pow(uniform, 1.0 / shape)
        }
        let d = shape - 1.0 / 3.0
        let c = 1.0 / (9.0 * d).squareRoot()
        while true {
            let x = nextNormal()
            let base = 1.0 + c * x
            if base <= 0 { continue }
            let v = base * base * base
            let uniform = 1.0 - nextDouble()
            let xSquared = x * x
            if uniform < 1.0 - 0.0331 * xSquared * xSquared { return d * v }
            if log(uniform) < 0.5 * xSquared + d * (1.0 - v + log(v)) { return d * v }
        }
    }

    /// A Beta(a, b) sample: X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b).
    public mutating func nextBeta(_ a: Double, _ b: Double) -> Double {
        let x = nextGamma(shape: a)
        let y = nextGamma(shape: b)
        return x / (x + y)
    }
}
