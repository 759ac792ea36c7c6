/// Unaligned SIMD loads and stores over Float pointers, and vectorised `exp` and
/// `erf`: the standard library's scalar `expf`/`erff` would dominate GELU and softmax.

/// Loads 16 floats starting at `pointer` (no alignment needed).
@inline(__always)
public func load16(_ pointer: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(pointer).loadUnaligned(as: SIMD16<Float>.self)
}

/// Stores 16 floats starting at `pointer` (no alignment needed).
@inline(__always)
public func store16(_ value: SIMD16<Float>, _ pointer: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: SIMD16<Float>.self)
}

/// e^x with a relative error of a few units in the last place (Cephes `expf`:
/// x = n·ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial for e^r, then 2^n by
/// building the exponent bits). Inputs are clamped to [-87.3, 88], so tiny results
/// stay normal (about 1e-38) instead of becoming zero.
@inline(__always)
public func exp16(_ input: SIMD16<Float>) -> SIMD16<Float> {
    let x = pointwiseMax(pointwiseMin(input, SIMD16(repeating: 88.0)), SIMD16(repeating: -87.3))
    let n = (x * 1.442_695_04).rounded(.toNearestOrEven)
    let r = x - n * 0.693_359_375 - n * -2.121_944_4e-4
    var p = SIMD16<Float>(repeating: 1.987_569_15e-4)
    p = p * r + 1.398_199_95e-3
    p = p * r + 8.333_451_9e-3
    p = p * r + 4.166_579_59e-2
    p = p * r + 1.666_666_55e-1
    p = p * r + 5.000_000_12e-1
    let y = p * r * r + r + 1
    let exponent = (SIMD16<Int32>(n, rounding: .towardZero) &+ 127) &<< 23
    return y * unsafeBitCast(exponent, to: SIMD16<Float>.self)
}

/// Scalar e^x with the same algorithm as `exp16` (for loop tails).
@inline(__always)
public func expScalar(_ input: Float) -> Float {
    let x = max(min(input, 88.0), -87.3)
    let n = (x * 1.442_695_04).rounded(.toNearestOrEven)
    let r = x - n * 0.693_359_375 - n * -2.121_944_4e-4
    var p: Float = 1.987_569_15e-4
    p = p * r + 1.398_199_95e-3
    p = p * r + 8.333_451_9e-3
    p = p * r + 4.166_579_59e-2
    p = p * r + 1.666_666_55e-1
    p = p * r + 5.000_000_12e-1
    let y = p * r * r + r + 1
    return y * Float(bitPattern: UInt32(Int32(n) + 127) << 23)
}

/// erf(x) as an odd/even rational polynomial on [-4, 4] (outside, erf is ±1 in
/// single precision); the coefficients are those of Eigen and XLA's float erf.
/// Absolute error below 5e-7 against the exact erf.
@inline(__always)
public func erf16(_ input: SIMD16<Float>) -> SIMD16<Float> {
    let x = pointwiseMax(pointwiseMin(input, SIMD16(repeating: 4)), SIMD16(repeating: -4))
    let x2 = x * x
    var p = x2 * -2.726_142_258_013_06e-10 + 2.770_681_424_959_02e-08
    p = x2 * p + -2.101_024_020_825_08e-06
    p = x2 * p + -5.692_506_394_623_46e-05
    p = x2 * p + -7.349_906_303_268_55e-04
    p = x2 * p + -2.954_599_808_540_25e-03
    p = x2 * p + -1.609_603_332_624_15e-02
    p = x * p
    var q = x2 * -1.456_607_184_649_96e-05 + -2.133_740_552_789_05e-04
    q = x2 * q + -1.682_826_974_382_03e-03
    q = x2 * q + -7.373_329_167_204_68e-03
    q = x2 * q + -1.426_473_905_141_89e-02
    return p / q
}

/// Scalar erf with the same polynomial as `erf16` (for loop tails).
@inline(__always)
public func erfScalar(_ input: Float) -> Float {
    let x = max(min(input, 4), -4)
    let x2 = x * x
    var p = x2 * -2.726_142_258_013_06e-10 + 2.770_681_424_959_02e-08
    p = x2 * p + -2.101_024_020_825_08e-06
    p = x2 * p + -5.692_506_394_623_46e-05
    p = x2 * p + -7.349_906_303_268_55e-04
    p = x2 * p + -2.954_599_808_540_25e-03
    p = x2 * p + -1.609_603_332_624_15e-02
    p = x * p
    var q = x2 * -1.456_607_184_649_96e-05 + -2.133_740_552_789_05e-04
    q = x2 * q + -1.682_826_974_382_03e-03
    q = x2 * q + -7.373_329_167_204_68e-03
    q = x2 * q + -1.426_473_905_141_89e-02
    return p / q
}
