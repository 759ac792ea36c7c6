import Collectives
import System
#if canImport(Glibc)
import Glibc
#endif

/// Proof of the job secret without sending it: HMAC-SHA256 challenge and response.
///
/// The coordinator opens every connection with a fresh random nonce; the peer answers with
/// HMAC(secret, "mae-control-1 hello ROLE NONCE") and a nonce of its own, which the
/// coordinator answers with HMAC(secret, "mae-control-1 welcome NONCE"), so each side knows
/// the other holds the secret. A recorded answer is worthless for the next connection (a new
/// nonce). Messages after the handshake are not signed or encrypted: the protocol keeps
/// processes of other jobs and strangers out on a trusted network; it is no defence against
/// someone who can rewrite traffic on it.
public enum Authentication {
    static let helloLabel = "mae-control-1 hello "
    static let welcomeLabel = "mae-control-1 welcome "

    /// The peer's answer to a challenge, as hex.
    public static func proof(secret: [UInt8], nonce: String, role: Introduction.Role) -> String {
        hexString(HMACSHA256.authenticate(key: secret, message: Array((helloLabel + role.rawValue + " " + nonce).utf8)))
    }

    /// The coordinator's answer to the peer's nonce, as hex.
    public static func welcomeProof(secret: [UInt8], nonce: String) -> String {
        hexString(HMACSHA256.authenticate(key: secret, message: Array((welcomeLabel + nonce).utf8)))
    }

    /// True when `proof` (hex) is the right answer; compared in constant time.
    public static func verify(_ proof: String, expected: String) -> Bool {
        guard let given = bytes(fromHex: proof), let wanted = bytes(fromHex: expected) else { return false }
        return HMACSHA256.constantTimeEqual(given, wanted)
    }

    /// The token of one generation's ring connections: derived from the secret, so the
    /// secret itself never travels, and different in every generation, so a stale worker of
    /// an earlier one is refused by the ring's handshake.
    public static func ringToken(secret: [UInt8], generation: Int) -> String {
        hexString(HMACSHA256.authenticate(key: secret, message: Array("mae-ring-1 generation \(generation)".utf8)))
    }

    /// 32 random bytes from the kernel, as hex.
    public static func nonce() throws -> String { hexString(try secureRandomBytes(32)) }

    /// Once the hello is sent, the answer is awaited at least this long, whatever the caller's
    /// deadline: the coordinator counts the peer as joined when it reads the hello, so a peer
    /// that gave up then would leave it a connection that closes at once (a lost agent or
    /// worker, and a restart). Only a coordinator that hangs or is cut off makes it wait so long.
    public static let answerSeconds = 10.0

    /// Connects to the coordinator at `address` and proves the secret; returns the
    /// authenticated connection. Refused connections (nothing listens yet) are retried until
    /// `deadline`; the answer to the hello is awaited at least `answerSeconds`.
    public static func connect(to address: SocketAddress, secret: [UInt8], introduction: Introduction,
                               deadline: Deadline) throws -> ControlConnection {
        let connection = ControlConnection(socket: try Socket.connect(to: address, deadline: deadline,
                                                                      context: "connecting to the coordinator"),
                                           peer: "the coordinator at \(address)")
        guard case .challenge(let nonce)? = try connection.receive(until: deadline) else {
            throw ControlError("\(address) did not send a challenge in time: is it a mae-coordinator?")
        }
        var hello = introduction
        hello.proof = proof(secret: secret, nonce: nonce, role: introduction.role)
        hello.nonce = try Authentication.nonce()
        try connection.send(.hello(hello))
        switch try connection.receive(until: Deadline(time: max(deadline.time, monotonicSeconds() + answerSeconds))) {
        case .welcome(let answer)?:
            guard verify(answer, expected: welcomeProof(secret: secret, nonce: hello.nonce)) else {
                throw ControlError("the coordinator at \(address) does not know this run's secret (another run on that port?)")
            }
        case .refused(let reason)?:
            throw ControlError("the coordinator at \(address) refused us: \(reason)", isRefusal: true)
        case let other?:
            throw ControlError("the coordinator at \(address) answered \(other.name) instead of welcome")
        case nil:
            throw ControlError("the coordinator at \(address) did not answer the handshake in time")
        }
        connection.reader.limit = Frame.maximumBytes
        return connection
    }
}

/// The job secret: 32 random bytes as hex in `RUN_DIR/job.secret`, mode 0600, in a run
/// directory of mode 0700. Everyone who can read it can join or steer the run.
public enum JobSecret {
    public static let fileName = "job.secret"

    /// Reads the run's secret, creating the run directory and the secret when they do not exist.
    public static func createOrRead(runDirectory: String) throws -> (path: String, secret: [UInt8]) {
        try FileSystem.makeDirectories(runDirectory)
        try SystemCall.retrying("chmod", path: runDirectory) { chmod(runDirectory, 0o700) }
        let path = runDirectory + "/" + fileName
        if FileSystem.exists(path) { return (path, try read(path)) }
        let text = hexString(try secureRandomBytes(32)) + "\n"
        let descriptor = try FileSystem.open(path, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o600)
        do {
            try Array(text.utf8).withUnsafeBytes { try FileSystem.writeAll(descriptor, $0, path: path) }
            try FileSystem.fsync(descriptor, path: path)
        } catch {
            FileSystem.close(descriptor)
            throw error
        }
        try FileSystem.close(descriptor, path: path)
        return (path, try read(path))
    }

    /// Reads a secret file; refuses one that others may read, or that is not a secret.
    public static func read(_ path: String) throws -> [UInt8] {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw ControlError("cannot read the job secret \(path): \(SystemCallError.reason(for: errno)); "
                               + "it is RUN_DIR/\(fileName), written by 'mae-coordinator serve'")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw ControlError("the job secret \(path) may be read by others (mode \(String(info.st_mode & 0o777, radix: 8))); "
                               + "run 'chmod 600 \(path)'")
        }
        let text = String(decoding: try FileSystem.readFile(path), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.utf8.count >= 32, bytes(fromHex: text) != nil else {
            throw ControlError("\(path) does not hold a job secret (64 hex digits)")
        }
        return Array(text.utf8)
    }
}
