/// The framing of every control connection: a 4-byte big-endian length, then that many
/// bytes of one JSON-encoded `ControlMessage`. Lengths of 0 or above the limit are
/// protocol errors that close the connection, so a peer can never make us allocate much
/// or wait for a frame that never ends.
public enum Frame {
    /// The largest frame after authentication: the run config and a ring table of thousands of ranks fit.
    public static let maximumBytes = 1 << 20
    /// The largest frame before a peer has proven that it knows the secret.
    public static let maximumUnauthenticatedBytes = 4096

    /// The bytes of one frame holding `payload`.
    public static func encode(_ payload: [UInt8]) -> [UInt8] {
        let count = UInt32(payload.count)
        return [UInt8(count >> 24), UInt8(truncatingIfNeeded: count >> 16), UInt8(truncatingIfNeeded: count >> 8),
                UInt8(truncatingIfNeeded: count)] + payload
    }
}

/// Collects the bytes of a stream and cuts whole frames out of them.
public struct FrameReader: Sendable {
    private var buffer: [UInt8] = []
    /// The limit for the next frames (raised once the peer is authenticated).
    public var limit: Int

    public init(limit: Int = Frame.maximumUnauthenticatedBytes) { self.limit = limit }

    /// Adds received bytes.
    public mutating func append(_ bytes: [UInt8]) { buffer += bytes }

    /// Whether the bytes held exceed what one frame under `limit` may hold, so that
    /// reading more before cutting frames would only let a peer grow the buffer.
    public var isFull: Bool { buffer.count > 4 + limit }

    /// The next whole frame's payload, nil when it has not fully arrived; throws for a
    /// length of 0 or above `limit`.
    public mutating func next() throws -> [UInt8]? {
        guard buffer.count >= 4 else { return nil }
        let length = Int(buffer[0]) << 24 | Int(buffer[1]) << 16 | Int(buffer[2]) << 8 | Int(buffer[3])
        guard length > 0, length <= limit else {
            throw ControlError("a frame of \(length) bytes is outside 1...\(limit) (not our protocol, or a damaged stream)")
        }
        guard buffer.count >= 4 + length else { return nil }
        let payload = Array(buffer[4..<4 + length])
        buffer.removeFirst(4 + length)
        return payload
    }
}
