import Collectives
import Foundation
import System
import Testing
import TestSupport
@testable import Control
#if canImport(Glibc)
import Glibc
#endif

/// The framing, the messages and the HMAC handshake, without a coordinator.
struct ProtocolTests {
    @Test func framesAreCutWhereverTheBytesArriveSplit() throws {
        let messages: [ControlMessage] = [.heartbeat(report: nil), .ringTable(addresses: ["127.0.0.1:1", "10.0.0.2:65535"]),
                                          .workerExited(rank: 3, generation: 2, pid: 77, status: 137, description: "killed")]
        let stream = try messages.flatMap { Frame.encode(try $0.encoded()) }
        for pieceSize in [1, 3, 7, stream.count] {
            var reader = FrameReader(limit: Frame.maximumBytes)
            var decoded: [ControlMessage] = []
            for start in stride(from: 0, to: stream.count, by: pieceSize) {
                reader.append(Array(stream[start..<min(stream.count, start + pieceSize)]))
                while let payload = try reader.next() { decoded.append(try ControlMessage.decode(payload)) }
            }
            #expect(decoded == messages, "pieces of \(pieceSize) bytes")
        }
    }

    @Test func framesOfZeroOrTooManyBytesAreRefusedBeforeTheyArrive() throws {
        var empty = FrameReader()
        empty.append([0, 0, 0, 0])
        #expect(throws: ControlError.self) { try empty.next() }
        // An unauthenticated peer announcing 4097 bytes is refused from the header alone.
        var large = FrameReader()
        large.append([0, 0, 0x10, 0x01])
        #expect { try large.next() } throws: { "\($0)".contains("outside 1...4096") }
        var allowed = FrameReader(limit: Frame.maximumBytes)
        allowed.append([0, 0, 0x10, 0x01])
        #expect(try allowed.next() == nil)
    }

    @Test func messagesThatAreNotOursDoNotDecode() {
        for text in ["{}", "{\"heartbeat\":{}, \"stopRun\":{}}", "{\"launchMissiles\":{}}", "not json", "{\"ringTable\":{\"addresses\":5}}"] {
            #expect(throws: ControlError.self, "\(text)") { try ControlMessage.decode(Array(text.utf8)) }
        }
    }

    @Test func theProofDependsOnTheSecretTheNonceAndTheRole() {
        let secret = Array("0123456789abcdef0123456789abcdef".utf8)
        let proof = Authentication.proof(secret: secret, nonce: "aa", role: .worker)
        #expect(Authentication.verify(proof, expected: Authentication.proof(secret: secret, nonce: "aa", role: .worker)))
        #expect(!Authentication.verify(proof, expected: Authentication.proof(secret: secret + [1], nonce: "aa", role: .worker)))
        #expect(!Authentication.verify(proof, expected: Authentication.proof(secret: secret, nonce: "ab", role: .worker)))
        #expect(!Authentication.verify(proof, expected: Authentication.proof(secret: secret, nonce: "aa", role: .agent)))
        #expect(!Authentication.verify("zz", expected: proof))
        // It is HMAC-SHA256 of the labelled nonce, so it can be checked against the RFC's construction.
        #expect(proof == hexString(HMACSHA256.authenticate(key: secret, message: Array("mae-control-1 hello worker aa".utf8))))
        #expect(Authentication.ringToken(secret: secret, generation: 1) != Authentication.ringToken(secret: secret, generation: 2))
    }

    @Test func theSecretFileIsPrivateAndReadBack() throws {
        let directory = try TemporaryDirectory("secret")
        defer { directory.remove() }
        let runDirectory = directory.path + "/run"
        let created = try JobSecret.createOrRead(runDirectory: runDirectory)
        var info = stat()
        #expect(stat(created.path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(stat(runDirectory, &info) == 0 && info.st_mode & 0o777 == 0o700)
        #expect(created.secret.count == 64)
        #expect(try JobSecret.createOrRead(runDirectory: runDirectory).secret == created.secret)
        chmod(created.path, 0o644)
        #expect { try JobSecret.read(created.path) } throws: { "\($0)".contains("chmod 600") }
    }
}
