import System

/// Proof of the job's key on ring connections and rendezvous registrations, without sending it.
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
///
/// The rendezvous of workers started by hand uses the same exchange in its own `domain`
/// (so a registration's proof is no ring hello's), and its answer's proof also covers the
/// address table that follows it.
struct RingAuthentication {
    static let nonceBytes = 32
    static let proofBytes = 32
    /// The domain of ring connections.
    static let ringDomain = "mae-ring-2"
    /// The domain of rendezvous registrations (`exchangeRingAddresses`, `RendezvousServer`).
    static let rendezvousDomain = "mae-rendezvous-2"
    let key: [UInt8]
    /// The protocol the proofs belong to; it opens every proven message.
    let domain: String

    /// The token field of a connecting rank's hello: a fresh nonce, then its proof.
    func connectToken(for hello: Hello) throws -> [UInt8] {
        let nonce = try secureRandomBytes(Self.nonceBytes)
        return nonce + proof("connect", hello, nonce: nonce)
    }

    /// Nonces of the hellos admitted so far (by one listener while its ring forms).
    private var admittedNonces = Set<[UInt8]>()

    init(key: [UInt8], domain: String = RingAuthentication.ringDomain) {
        self.key = key
        self.domain = domain
    }

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

    /// The token field of the accepting side's answer: its proof over the connector's nonce
    /// and the `payload` that follows the answer (the rendezvous table; empty on the ring).
    func acceptToken(for answer: Hello, connectorNonce: [UInt8], payload: [UInt8] = []) -> [UInt8] {
        proof("accept", answer, nonce: connectorNonce, payload: payload)
    }

    /// Whether the accepting side's answer proves the key for our nonce and `payload`.
    func verifyAccept(_ answer: Hello, connectorNonce: [UInt8], payload: [UInt8] = []) -> Bool {
        HMACSHA256.constantTimeEqual(answer.token, proof("accept", answer, nonce: connectorNonce, payload: payload))
    }

    /// HMAC over the domain, the role, every field of the hello but its token, the nonce and
    /// the payload.
    private func proof(_ role: String, _ hello: Hello, nonce: [UInt8], payload: [UInt8] = []) -> [UInt8] {
        // The host is last before the nonce and its length is in the text, so no two hellos share a message;
        // the nonce has a fixed length, so the payload after it cannot be confused with it.
        let fields = "\(domain) \(role) generation \(hello.generation) world \(hello.worldSize) rank \(hello.rank) "
            + "lane \(hello.lane) of \(hello.lanes) port \(hello.port) host \(hello.host.utf8.count) \(hello.host) "
        var message = Array(fields.utf8)
        message += nonce
        message += payload
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
