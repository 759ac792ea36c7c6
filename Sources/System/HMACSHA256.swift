/// HMAC-SHA256 (RFC 2104, FIPS 198-1): the control plane proves that a process knows the
/// job secret by answering a random challenge with this, so the secret never travels.
public enum HMACSHA256 {
    /// SHA-256 works on 64-byte blocks; longer keys are hashed first (RFC 2104, section 2).
    static let blockBytes = 64

    /// The 32-byte authentication code of `message` under `key`.
    public static func authenticate(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var block = key.count > blockBytes ? SHA256.digest(key) : key
        block += [UInt8](repeating: 0, count: blockBytes - block.count)
        var inner = SHA256()
        inner.update(block.map { $0 ^ 0x36 })
        inner.update(message)
        var outer = SHA256()
        outer.update(block.map { $0 ^ 0x5c })
        outer.update(inner.finalize())
        return outer.finalize()
    }

    /// True when `a` and `b` are equal; the time taken depends only on their lengths, never
    /// on where they first differ, so a wrong code reveals nothing about the right one.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt64(a.count ^ b.count)
        for index in 0..<max(a.count, b.count) {
            difference |= UInt64((index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0))
        }
        return difference == 0
    }
}
