/// Unaligned SIMD loads and stores over Float pointers, and an `exp` that vectorises:
/// the C library's `expf` is a call, which would dominate GELU and softmax.

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

/// Runs `body` with a scratch row of `width` floats on this thread's stack when `needed`
/// (nil otherwise): for kernels that compute a row in fp32 and keep it only rounded to bf16.
@inline(__always)
func withRowBuffer<Result>(width: Int, needed: Bool, _ body: (UnsafeMutablePointer<Float>?) -> Result) -> Result {
    guard needed else { return body(nil) }
    return withUnsafeTemporaryAllocation(of: Float.self, capacity: width) { body($0.baseAddress!) }
}

/// e^x with a relative error of a few units in the last place (Cephes `expf`:
/// x = n·ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial for e^r, then 2^n built in
/// the exponent bits). Inputs are clamped to [-87.3, 88], so tiny results stay normal
/// (about 1e-38) instead of becoming zero.
///
/// Written as branch-free scalar code on purpose: in a plain loop over pointers LLVM
/// vectorises it, which the generic SIMD16 min/max and rounding members of the
/// standard library prevent (measured 10× slower). Callers should write to a buffer
/// other than the one they read: for two pointer arguments that might overlap LLVM
/// adds a run-time overlap check, and an in-place call then takes the scalar loop.
/// CSupport's fast_exp_simd.h repeats it for AVX-512 (the C GELU and softmax): a change
/// here needs the same change there.
@inline(__always)
public func fastExp(_ input: Float) -> Float {
    // Clamps in the (a < b ? a : b) form that maps onto the minps/maxps instructions.
    let upper = input < 88 ? input : 88
    let x = upper > -87.3 ? upper : -87.3
    // Round x·log2(e) to the nearest integer by adding 1.5·2^23: the sum's low
    // mantissa bits then hold n, which also gives 2^n without a conversion.
    let shifted = x * 1.442_695_04 + 12_582_912.0
    let n = shifted - 12_582_912.0
    let r = x - n * 0.693_359_375 - n * -2.121_944_4e-4
    var p: Float = 1.987_569_15e-4
    p = p * r + 1.398_199_95e-3
    p = p * r + 8.333_451_9e-3
    p = p * r + 4.166_579_59e-2
    p = p * r + 1.666_666_55e-1
    p = p * r + 5.000_000_12e-1
    let y = p * r * r + r + 1
    let integer = Int32(bitPattern: shifted.bitPattern) &- 0x4B40_0000
    return y * Float(bitPattern: UInt32(bitPattern: (integer &+ 127) &<< 23))
}
