/// The arithmetic of a reduction: element-wise adds over raw pointers, 16 floats
/// per SIMD operation. The destination is a slice of the caller's buffer, so it is
/// only Float-aligned: loads and stores are unaligned ones (as fast as aligned
/// ones on x86-64 when the data happens to be aligned).

/// destination[i] = destination[i] + source[i], for i in 0..<count.
@inline(__always)
func addFloats(_ destination: UnsafeMutableRawPointer, // [count] Float
               _ source: UnsafeRawPointer,             // [count] Float
               count: Int) {
    var index = 0
    while index &+ 16 <= count {
        let offset = index &* 4
        let sum = destination.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
            + source.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
        destination.storeBytes(of: sum, toByteOffset: offset, as: SIMD16<Float>.self)
        index &+= 16
    }
    while index < count {
        let offset = index &* 4
        let sum = destination.loadUnaligned(fromByteOffset: offset, as: Float.self)
            + source.loadUnaligned(fromByteOffset: offset, as: Float.self)
        destination.storeBytes(of: sum, toByteOffset: offset, as: Float.self)
        index &+= 1
    }
}

/// destination[i] = (destination[i] + source[i]) / divisor: the last add of a mean,
/// divided (not multiplied by a reciprocal) so the result equals sum / N exactly.
@inline(__always)
func addFloatsAndDivide(_ destination: UnsafeMutableRawPointer, // [count] Float
                        _ source: UnsafeRawPointer,             // [count] Float
                        count: Int, divisor: Float) {
    let divisors = SIMD16<Float>(repeating: divisor)
    var index = 0
    while index &+ 16 <= count {
        let offset = index &* 4
        let sum = destination.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
            + source.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
        destination.storeBytes(of: sum / divisors, toByteOffset: offset, as: SIMD16<Float>.self)
        index &+= 16
    }
    while index < count {
        let offset = index &* 4
        let sum = destination.loadUnaligned(fromByteOffset: offset, as: Float.self)
            + source.loadUnaligned(fromByteOffset: offset, as: Float.self)
        destination.storeBytes(of: sum / divisor, toByteOffset: offset, as: Float.self)
        index &+= 1
    }
}

/// destination[i] = destination[i] + source[i] for Doubles (the few logging scalars).
func addDoubles(_ destination: UnsafeMutableRawPointer, // [count] Double
                _ source: UnsafeRawPointer,             // [count] Double
                count: Int) {
    for index in 0..<count {
        let offset = index &* 8
        let sum = destination.loadUnaligned(fromByteOffset: offset, as: Double.self)
            + source.loadUnaligned(fromByteOffset: offset, as: Double.self)
        destination.storeBytes(of: sum, toByteOffset: offset, as: Double.self)
    }
}

/// first[i] = second[i] = (((sources[0][i] + sources[1][i]) + sources[2][i]) + …), divided
/// by `divisor` when one is given: the ordered sum of `sourceCount` inputs in one pass
/// (each add rounded to Float, as the ring's adds are). `first` may be one of the sources.
@inline(__always)
func sumFloatsInOrder(_ sources: UnsafePointer<UnsafeRawPointer>, sourceCount: Int, // [sourceCount] → [count] Float
                      into first: UnsafeMutableRawPointer,                             // [count] Float
                      _ second: UnsafeMutableRawPointer,                               // [count] Float
                      count: Int, divisor: Float?) {
    let divisors = SIMD16<Float>(repeating: divisor ?? 1)
    var index = 0
    while index &+ 16 <= count {
        let offset = index &* 4
        var sum = sources[0].loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
        for source in 1..<sourceCount {
            sum = sum + sources[source].loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
        }
        if divisor != nil { sum = sum / divisors }
        first.storeBytes(of: sum, toByteOffset: offset, as: SIMD16<Float>.self)
        second.storeBytes(of: sum, toByteOffset: offset, as: SIMD16<Float>.self)
        index &+= 16
    }
    while index < count {
        let offset = index &* 4
        var sum = sources[0].loadUnaligned(fromByteOffset: offset, as: Float.self)
        for source in 1..<sourceCount { sum = sum + sources[source].loadUnaligned(fromByteOffset: offset, as: Float.self) }
        if let divisor { sum = sum / divisor }
        first.storeBytes(of: sum, toByteOffset: offset, as: Float.self)
        second.storeBytes(of: sum, toByteOffset: offset, as: Float.self)
        index &+= 1
    }
}

/// `sumFloatsInOrder` for Doubles (the few logging scalars), without a divisor.
func sumDoublesInOrder(_ sources: UnsafePointer<UnsafeRawPointer>, sourceCount: Int, // [sourceCount] → [count] Double
                       into first: UnsafeMutableRawPointer,                             // [count] Double
                       _ second: UnsafeMutableRawPointer,                               // [count] Double
                       count: Int) {
    for index in 0..<count {
        let offset = index &* 8
        var sum = sources[0].loadUnaligned(fromByteOffset: offset, as: Double.self)
        for source in 1..<sourceCount { sum = sum + sources[source].loadUnaligned(fromByteOffset: offset, as: Double.self) }
        first.storeBytes(of: sum, toByteOffset: offset, as: Double.self)
        second.storeBytes(of: sum, toByteOffset: offset, as: Double.self)
    }
}
