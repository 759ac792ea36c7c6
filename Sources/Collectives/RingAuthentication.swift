import System

/// Proof of the job's key on ring connections, without sending it.
///
/// The key is the ring's job token: under a coordinator a per-generation key derived from
/// the run's secret (`Authentication.ringToken`), so a stale worker of an earlier generation
/// holds the wrong one; for workers started by hand, the `--job-token`. The connecting rank
/// sends a fresh 32-byte nonce and HMAC-SHA256(key, its hello's fields and the nonce); the
/// accepting rank checks it, refuses a nonce it has already seen (a replayed hello), and
/// answers HMAC-SHA256(key, its own fields and the connector's nonce), which the connector
/// checks: each side knows that the other holds the key, and a recorded answer is worthless
/// for the next connection. One message each way, in the order the ring's set-up already
/// sends them (every rank connects and sends before it accepts), so no rank waits on
/// another's handshake before accepting. Messages after the handshake are not signed: this
/// keeps other jobs, stale workers and strangers out of the ring; it is no defence against
/// someone who can rewrite traffic on the network.
struct RingAuthentication {
    static let nonceBytes = 32
    static let proofBytes = 32
    let key: [UInt8]

    /// The token field of a connecting rank's hello: a fresh nonce, then its proof.
    func connectToken(for hello: Hello) throws -> [UInt8] {
        let nonce = try secureRandomBytes(Self.nonceBytes)
        return nonce + proof("connect", hello, nonce: nonce)
    }

    /// Nonces of the hellos admitted so far (by one listener while its ring forms).
    private var admittedNonces = Set<[UInt8]>()

    init(key: [UInt8]) { self.key = key }

    /// The accepting rank's check of a connecting rank's hello: its proof, then that its
    /// nonce is new. Returns the nonce, or why the hello is refused.
    mutating func admit(_ hello: Hello) -> Result<[UInt8], RingAuthenticationFailure> {
        guard hello.token.count == Self.nonceBytes + Self.proofBytes else { return .failure(.noProof) }
        let nonce = Array(hello.token.prefix(Self.nonceBytes))
        let given = Array(hello.token.suffix(Self.proofBytes))
        guard HMACSHA256.constantTimeEqual(given, proof("connect", hello, nonce: nonce)) else { return .failure(.noProof) }
        guard admittedNonces.insert(nonce).inserted else { return .failure(.replayed) }
        return .success(nonce)
    }

    /// The token field of the accepting rank's answer: its proof over the connector's nonce.
    func acceptToken(for answer: Hello, connectorNonce: [UInt8]) -> [UInt8] {
        proof("accept", answer, nonce: connectorNonce)
    }

    /// Whether the accepting rank's answer proves the key for our nonce.
    func verifyAccept(_ answer: Hello, connectorNonce: [UInt8]) -> Bool {
        HMACSHA256.constantTimeEqual(answer.token, proof("accept", answer, nonce: connectorNonce))
    }

    /// HMAC over the role, every field of the hello but its token, and the nonce.
    private func proof(_ role: String, _ hello: Hello, nonce: [UInt8]) -> [UInt8] {
        // The host is last before the nonce and its length is in the text, so no two hellos share a message.
        let fields = "mae-ring-2 \(role) generation \(hello.generation) world \(hello.worldSize) rank \(hello.rank) "
            + "lane \(hello.lane) of \(hello.lanes) port \(hello.port) host \(hello.host.utf8.count) \(hello.host) "
        var message = Array(fields.utf8)
        message += nonce
        return HMACSHA256.authenticate(key: key, message: message)
    }
}

/// Why a ring hello is refused.
enum RingAuthenticationFailure: Error, CustomStringConvertible {
    /// No valid proof of the key: another job, or a stale worker of an earlier generation.
    case noProof
    /// A valid hello seen before: a recording played back.
    case replayed

    var description: String {
        switch self {
        case .noProof: "it does not prove knowledge of the job token (a process of another job?)"
        case .replayed: "a replayed handshake (its nonce was used before)"
        }
    }
}
