#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// A fixed-size, 64-byte aligned, zero-initialised array of Float that owns its memory.
///
/// Parameters, gradients, optimizer moments and activation arenas are each one
/// `FloatBuffer`; kernels receive its raw pointer, so no array bounds checks,
/// copy-on-write or reference counting happen inside loops.
public final class FloatBuffer: @unchecked Sendable {
    /// The first element. Valid for `count` elements until the buffer is released.
    public let pointer: UnsafeMutablePointer<Float>
    /// Number of elements.
    public let count: Int

    /// Allocates `count` zeroed elements.
    public init(count: Int) {
        precondition(count >= 0, "FloatBuffer count must not be negative")
        self.count = count
        var raw: UnsafeMutableRawPointer?
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            fatalError("out of memory allocating \(bytes) bytes")
        }
        memset(raw, 0, bytes)
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    /// Copies `values` into a new buffer.
    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { pointer.update(from: base, count: values.count) }
        }
    }

    deinit { free(pointer) }

    /// Sets every element to zero (in parallel for large buffers: zeroing ViT-B's
    /// gradients is 447 MB of writes per step).
    public func zero() {
        let base = pointer
        parallelFor(count, minimumPerWorker: 1 << 20) { range in
            memset(base + range.lowerBound, 0, range.count * MemoryLayout<Float>.stride)
        }
    }

    /// The elements as a buffer pointer (valid while `self` is alive).
    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }

    /// A copy of the elements as an array (for tests and small tensors).
    public func toArray() -> [Float] { Array(buffer) }

    /// Element access, for tests and setup code; kernels use `pointer`.
    public subscript(index: Int) -> Float {
        get { precondition(index >= 0 && index < count); return pointer[index] }
        set { precondition(index >= 0 && index < count); pointer[index] = newValue }
    }
}
