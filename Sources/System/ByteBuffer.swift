/// A growable raw byte buffer owned by one thread and reused from file to file.
public final class ByteBuffer {
    /// The bytes; valid until the next `reserve` that grows the buffer.
    public private(set) var pointer: UnsafeMutablePointer<UInt8>
    /// How many bytes `pointer` holds.
    public private(set) var capacity: Int

    public init(capacity: Int = 1 << 16) {
        self.capacity = max(capacity, 1)
        pointer = .allocate(capacity: self.capacity)
    }

    deinit { pointer.deallocate() }

    /// Makes room for at least `count` bytes, keeping the contents.
    public func reserve(_ count: Int) {
        guard count > capacity else { return }
        let grown = max(count, capacity * 2)
        let replacement = UnsafeMutablePointer<UInt8>.allocate(capacity: grown)
        replacement.update(from: pointer, count: capacity)
        pointer.deallocate()
        pointer = replacement
        capacity = grown
    }
}
