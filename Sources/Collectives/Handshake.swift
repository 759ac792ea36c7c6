/// The handshake that every ring and rendezvous connection starts with: both
/// sides prove that they belong to the same job (a shared token) and the same
/// generation (a restart counter), so that a process of another job or a stale
/// process of an earlier attempt never joins a ring. The token never travels:
/// ring and rendezvous hellos carry a nonce and an HMAC proof of it in their token
/// field (`RingAuthentication`). This keeps jobs, generations and strangers apart;
/// it is not encryption, and messages after the handshake are not signed.

/// Little-endian encoding of handshake messages.
struct WireWriter {
    private(set) var bytes: [UInt8] = []

    mutating func append(_ value: UInt8) { bytes.append(value) }
    mutating func append(_ value: UInt16) { for shift in stride(from: 0, to: 16, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> shift)) } }
    mutating func append(_ value: UInt32) { for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> shift)) } }
    mutating func append(_ value: UInt64) { for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> shift)) } }
    mutating func append(bytes more: [UInt8]) { bytes.append(contentsOf: more) }
    /// A 16-bit length, then the bytes.
    mutating func append(string: [UInt8]) {
        append(UInt16(string.count))
        bytes.append(contentsOf: string)
    }
}

/// Little-endian decoding; reading past the end is a protocol error.
struct WireReader {
    let bytes: [UInt8]
    private(set) var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    private mutating func take(_ count: Int) throws -> ArraySlice<UInt8> {
        guard offset + count <= bytes.count else {
            throw CollectiveError.handshakeRejected("message ends early (\(bytes.count) bytes, wanted \(offset + count))")
        }
        defer { offset += count }
        return bytes[offset..<offset + count]
    }

    private mutating func integer(_ count: Int) throws -> UInt64 {
        try take(count).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    mutating func uint8() throws -> UInt8 { UInt8(try integer(1)) }
    mutating func uint16() throws -> UInt16 { UInt16(try integer(2)) }
    mutating func uint32() throws -> UInt32 { UInt32(try integer(4)) }
    mutating func uint64() throws -> UInt64 { try integer(8) }
    mutating func raw(_ count: Int) throws -> [UInt8] { Array(try take(count)) }
    mutating func string() throws -> [UInt8] { try raw(Int(try uint16())) }
}

/// True when `a` and `b` are equal; the time taken depends only on their lengths,
/// never on where they first differ.
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference = UInt64(a.count ^ b.count)
    for index in 0..<max(a.count, b.count) {
        let left = index < a.count ? a[index] : 0
        let right = index < b.count ? b[index] : 0
        difference |= UInt64(left ^ right)
    }
    return difference == 0
}

/// The first message on every connection: who the sender is and which job and
/// generation it belongs to. Rendezvous registrations also carry the address of
/// the sender's ring listener.
struct Hello: Equatable {
    /// Which protocol the connection speaks.
    enum Purpose: String {
        /// Version 2: the token field carries a nonce and a proof, never the key
        /// (`RingAuthentication`).
        case ring = "MAERING2"
        /// Version 2: registrations and the service's answer carry proofs, never the key.
        case rendezvous = "MAERDZV2"
        var magic: [UInt8] { Array(rawValue.utf8) }
    }

    /// Longest accepted token and host name, so a bad peer cannot make us allocate much.
    static let maximumStringBytes = 1024
    /// magic, generation, world size, rank, token length.
    static let fixedBytes = 8 + 8 + 4 + 4 + 2

    var purpose: Purpose
    var generation: UInt64
    var worldSize: Int
    var rank: Int
    var token: [UInt8]
    var host: String = ""
    var port: Int = 0
    /// Which lane of how many a ring connection carries (0 of 1 for registrations).
    var lane: Int = 0
    var lanes: Int = 1

    func encoded() -> [UInt8] {
        var writer = WireWriter()
        writer.append(bytes: purpose.magic)
        writer.append(generation)
        writer.append(UInt32(worldSize))
        writer.append(UInt32(rank))
        writer.append(string: token)
        writer.append(string: Array(host.utf8))
        writer.append(UInt16(port))
        writer.append(UInt16(lane))
        writer.append(UInt16(lanes))
        return writer.bytes
    }

    /// Reads one hello of `purpose`; throws `handshakeRejected` for anything else.
    static func read(_ purpose: Purpose, from socket: Socket, until deadline: Deadline, context: String) throws -> Hello {
        var reader = WireReader(try socket.receiveExactly(fixedBytes, until: deadline, context: context))
        guard try reader.raw(8) == purpose.magic else {
            throw CollectiveError.handshakeRejected("\(context): the peer does not speak the \(purpose) protocol")
        }
        let generation = try reader.uint64()
        let worldSize = Int(try reader.uint32())
        let rank = Int(try reader.uint32())
        let tokenLength = Int(try reader.uint16())
        guard tokenLength <= maximumStringBytes else {
            throw CollectiveError.handshakeRejected("\(context): token of \(tokenLength) bytes is too long")
        }
        let token = try socket.receiveExactly(tokenLength, until: deadline, context: context)
        var hostReader = WireReader(try socket.receiveExactly(2, until: deadline, context: context))
        let hostLength = Int(try hostReader.uint16())
        guard hostLength <= maximumStringBytes else {
            throw CollectiveError.handshakeRejected("\(context): host name of \(hostLength) bytes is too long")
        }
        let host = String(decoding: try socket.receiveExactly(hostLength, until: deadline, context: context), as: UTF8.self)
        var tailReader = WireReader(try socket.receiveExactly(6, until: deadline, context: context))
        let port = Int(try tailReader.uint16())
        let lane = Int(try tailReader.uint16()), lanes = Int(try tailReader.uint16())
        return Hello(purpose: purpose, generation: generation, worldSize: worldSize, rank: rank,
                     token: token, host: host, port: port, lane: lane, lanes: lanes)
    }

    /// Why `self` (what a peer sent) does not belong to our job, or nil when it does.
    /// `expectedRank` nil accepts any rank of the world; `expectedToken` nil leaves the
    /// token to the caller (ring hellos carry a proof instead: `RingAuthentication`).
    func rejection(token expectedToken: [UInt8]?, generation expectedGeneration: UInt64,
                   worldSize expectedWorldSize: Int, expectedRank: Int?) -> String? {
        // Compare the token first and always, so the answer's timing says nothing about it.
        if let expectedToken, !constantTimeEqual(token, expectedToken) {
            return "job token does not match (a process of another job?)"
        }
        if generation != expectedGeneration {
            return "generation \(generation) is not the current generation \(expectedGeneration) (a stale process?)"
        }
        if worldSize != expectedWorldSize { return "world size \(worldSize) differs from ours, \(expectedWorldSize)" }
        if let expectedRank, rank != expectedRank { return "rank \(rank) connected where rank \(expectedRank) was expected" }
        if !(0..<expectedWorldSize).contains(rank) { return "rank \(rank) is outside 0..<\(expectedWorldSize)" }
        return nil
    }
}

/// The answer to a hello: accepted (followed by the acceptor's own data) or rejected with a reason.
enum HandshakeReply {
    static let accepted: UInt8 = 1
    static let rejected: UInt8 = 0

    static func rejection(_ reason: String) -> [UInt8] {
        var writer = WireWriter()
        writer.append(rejected)
        writer.append(string: Array(reason.utf8.prefix(Hello.maximumStringBytes)))
        return writer.bytes
    }

    /// Reads the status byte; throws with the peer's reason when it rejected us.
    static func readStatus(from socket: Socket, until deadline: Deadline, context: String) throws {
        let status = try socket.receiveExactly(1, until: deadline, context: context)[0]
        if status == accepted { return }
        var reader = WireReader(try socket.receiveExactly(2, until: deadline, context: context))
        let length = min(Int(try reader.uint16()), Hello.maximumStringBytes)
        let reason = String(decoding: try socket.receiveExactly(length, until: deadline, context: context), as: UTF8.self)
        throw CollectiveError.handshakeRejected("\(context): the peer refused us: \(reason)")
    }
}
