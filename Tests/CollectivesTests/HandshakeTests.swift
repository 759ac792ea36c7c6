import Foundation
import Testing
@testable import Collectives

/// Processes of another job or an older generation never join a ring.
@Suite(.serialized) struct HandshakeTests {
    @Test func tokensCompareByContent() {
        #expect(constantTimeEqual(Array("secret".utf8), Array("secret".utf8)))
        #expect(!constantTimeEqual(Array("secret".utf8), Array("secreT".utf8)))
        #expect(!constantTimeEqual(Array("secret".utf8), Array("secret2".utf8)))
        #expect(!constantTimeEqual([], Array("x".utf8)))
        #expect(constantTimeEqual([], []))
    }

    @Test func helloRejectsEveryWrongField() {
        let token = Array("job".utf8)
        let good = Hello(purpose: .ring, generation: 4, worldSize: 3, rank: 1, token: token)
        #expect(good.rejection(token: token, generation: 4, worldSize: 3, expectedRank: 1) == nil)
        #expect(good.rejection(token: Array("jog".utf8), generation: 4, worldSize: 3, expectedRank: 1)?.contains("token") == true)
        #expect(good.rejection(token: token, generation: 5, worldSize: 3, expectedRank: 1)?.contains("generation") == true)
        #expect(good.rejection(token: token, generation: 4, worldSize: 4, expectedRank: 1)?.contains("world size") == true)
        #expect(good.rejection(token: token, generation: 4, worldSize: 3, expectedRank: 2)?.contains("rank") == true)
    }

    /// Registers like a rank would, with the given token and generation; returns the error.
    static func register(address: String, token: String, generation: Int, rank: Int, world: Int) -> Error? {
        let config = RendezvousConfig(rank: rank, worldSize: world, address: address, jobToken: token,
                                      generation: generation, timeoutSeconds: 3, hostsRendezvous: false)
        do {
            _ = try exchangeRingAddresses(config, listenerPort: 40_000, deadline: .after(seconds: 3))
            return nil
        } catch {
            return error
        }
    }

    @Test func rendezvousRefusesWrongTokenAndOldGenerationAndStillFormsTheRing() throws {
        let token = uniqueToken("rendezvous")
        let server = try RendezvousServer(address: SocketAddress(host: "127.0.0.1", port: 0), worldSize: 2,
                                          jobToken: token, generation: 7, timeoutSeconds: 20)
        defer { server.close() }
        let address = server.address.description
        let wrongToken = Self.register(address: address, token: token + "x", generation: 7, rank: 0, world: 2)
        let oldGeneration = Self.register(address: address, token: token, generation: 6, rank: 1, world: 2)
        let wrongWorld = Self.register(address: address, token: token, generation: 7, rank: 1, world: 3)
        #expect("\(wrongToken.map { "\($0)" } ?? "accepted")".contains("token"))
        #expect("\(oldGeneration.map { "\($0)" } ?? "accepted")".contains("generation"))
        #expect("\(wrongWorld.map { "\($0)" } ?? "accepted")".contains("world size"))

        let outcomes = runRanks(2, limitSeconds: 30) { rank -> [Float] in
            let config = RendezvousConfig(rank: rank, worldSize: 2, address: address, jobToken: token, generation: 7,
                                          timeoutSeconds: 10, hostsRendezvous: false)
            let ring = try TCPRingCollective.connect(config)
            defer { ring.close() }
            var values: [Float] = [Float(rank + 1), 10]
            try values.withUnsafeMutableBufferPointer { try ring.allReduceSum($0.baseAddress!, count: 2) }
            return values
        }
        for outcome in outcomes { #expect(try outcome.get() == [3, 20]) }
        try server.wait()
    }

    /// Sends a ring hello to `address` and returns how the listener answered.
    static func intrude(_ address: SocketAddress, token: String, generation: UInt64, rank: Int) -> String {
        do {
            let deadline = Deadline.after(seconds: 10)
            let socket = try Socket.connect(to: address, deadline: deadline, context: "intruder")
            defer { socket.close() }
            let hello = Hello(purpose: .ring, generation: generation, worldSize: 2, rank: rank, token: Array(token.utf8))
            try socket.sendAll(hello.encoded(), until: deadline, context: "intruder")
            try HandshakeReply.readStatus(from: socket, until: deadline, context: "intruder")
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    @Test func ringListenerRefusesIntrudersAndTheRingIsUnaffected() throws {
        let token = uniqueToken("listener")
        let listeners = try (0..<2).map { _ in try Socket.listening(on: SocketAddress(host: "127.0.0.1", port: 0)) }
        let addresses = try listeners.map { SocketAddress(host: "127.0.0.1", port: try $0.localPort(context: "test")) }
        // Participants 0 and 1 are the ring's ranks; 2, 3, 4 intrude on rank 1's listener
        // first (they queue in its backlog ahead of rank 0).
        let outcomes = runRanks(5, limitSeconds: 40) { index -> String in
            switch index {
            case 2: return Self.intrude(addresses[1], token: "another job", generation: 2, rank: 0)
            case 3: return Self.intrude(addresses[1], token: token, generation: 1, rank: 0)
            case 4: return Self.intrude(addresses[1], token: token, generation: 2, rank: 1)
            default:
                let rank = index
                usleep(rank == 0 ? 600_000 : 300_000)
                let config = RendezvousConfig(rank: rank, worldSize: 2, address: "127.0.0.1:1", jobToken: token,
                                              generation: 2, timeoutSeconds: 10, hostsRendezvous: false)
                let collective = try TCPRingCollective.formRing(config, listener: listeners[rank], addresses: addresses,
                                                                deadline: .after(seconds: 10))
                defer { collective.close() }
                var values: [Float] = [Float(rank), 1, 2]
                try values.withUnsafeMutableBufferPointer { try collective.allReduceSum($0.baseAddress!, count: 3) }
                return "\(values)"
            }
        }
        let answers = try outcomes.map { try $0.get() }
        #expect(answers[2].contains("token"), "\(answers[2])")
        #expect(answers[3].contains("generation"), "\(answers[3])")
        #expect(answers[4].contains("rank"), "\(answers[4])")
        #expect(answers[0] == "[1.0, 2.0, 4.0]" && answers[1] == "[1.0, 2.0, 4.0]", "\(answers[0...1])")
    }

    /// Ring hellos prove the key without carrying it; a replayed or tampered hello, or one
    /// made with another key, is refused; the acceptor's answer proves the key for this
    /// connector's nonce only.
    @Test func ringHellosProveTheKeyWithoutSendingIt() throws {
        let key = Array("a per-generation ring key".utf8)
        let connector = RingAuthentication(key: key)
        var acceptor = RingAuthentication(key: key)
        var hello = Hello(purpose: .ring, generation: 3, worldSize: 4, rank: 2, token: [], lane: 0, lanes: 1)
        hello.token = try connector.connectToken(for: hello)
        let wire = hello.encoded()
        #expect(!(0...(wire.count - key.count)).contains { Array(wire[$0..<($0 + key.count)]) == key },
                "the key travels in the hello")

        guard case .success(let nonce) = acceptor.admit(hello) else {
            Issue.record("a good hello was refused")
            return
        }
        guard case .failure(.replayed) = acceptor.admit(hello) else {
            Issue.record("a replayed hello was admitted")
            return
        }
        var tampered = hello
        tampered.rank = 1  // claims another rank with the same proof
        guard case .failure(.noProof) = acceptor.admit(tampered) else {
            Issue.record("a hello with a changed rank was admitted")
            return
        }
        var stranger = Hello(purpose: .ring, generation: 3, worldSize: 4, rank: 2, token: [], lane: 0, lanes: 1)
        stranger.token = try RingAuthentication(key: Array("another job".utf8)).connectToken(for: stranger)
        guard case .failure(.noProof) = acceptor.admit(stranger) else {
            Issue.record("a hello made with another key was admitted")
            return
        }

        var answer = Hello(purpose: .ring, generation: 3, worldSize: 4, rank: 3, token: [], lane: 0, lanes: 1)
        answer.token = acceptor.acceptToken(for: answer, connectorNonce: nonce)
        #expect(connector.verifyAccept(answer, connectorNonce: nonce))
        #expect(!connector.verifyAccept(answer, connectorNonce: Array(repeating: 7, count: RingAuthentication.nonceBytes)),
                "an answer for another nonce was accepted")
        #expect(!RingAuthentication(key: Array("another job".utf8)).verifyAccept(answer, connectorNonce: nonce))
    }

    /// A stand-in rendezvous service on a free port: accepts one registration, hands its hello
    /// (as read) to `answer`, sends what that returns, and gives back the hello.
    static func fakeService(token: String, answer: @escaping (Hello) -> [UInt8],
                            register: @escaping (String) -> Error?) throws -> (Hello?, Error?) {
        let listener = try Socket.listening(on: SocketAddress(host: "127.0.0.1", port: 0))
        let address = "127.0.0.1:\(try listener.localPort(context: "fake service"))"
        let outcomes = runRanks(2, limitSeconds: 20) { index -> (Hello?, Error?) in
            if index == 1 { return (nil, register(address)) }
            defer { listener.close() }
            let deadline = Deadline.after(seconds: 10)
            guard let connection = try listener.accept(until: deadline, context: "fake service") else { return (nil, nil) }
            defer { connection.close() }
            let hello = try Hello.read(.rendezvous, from: connection, until: deadline, context: "fake service")
            try connection.sendAll(answer(hello), until: deadline, context: "fake service")
            return (hello, nil)
        }
        return (try outcomes[0].get().0, try outcomes[1].get().1)
    }

    /// A registration proves the token without carrying it, a recorded one played back is
    /// refused, and a table whose answer does not prove the token is not taken.
    @Test func rendezvousRegistrationsProveTheTokenWithoutSendingIt() throws {
        let token = uniqueToken("rendezvous-proof")
        let register = { (address: String) in Self.register(address: address, token: token, generation: 5, rank: 1, world: 2) }
        // A service without the token answers with a well-formed table and a made-up proof.
        let forged: (Hello) -> [UInt8] = { hello in
            var answer = Hello(purpose: .rendezvous, generation: 5, worldSize: 2, rank: 0,
                               token: Array(repeating: 9, count: RingAuthentication.proofBytes))
            var message = WireWriter()
            message.append(HandshakeReply.accepted)
            message.append(bytes: answer.encoded())
            message.append(bytes: encodedRendezvousTable([SocketAddress(host: "127.0.0.1", port: 1),
                                                          SocketAddress(host: hello.host, port: hello.port)]))
            answer.rank = 0
            return message.bytes
        }
        let (recorded, refusal) = try Self.fakeService(token: token, answer: forged, register: register)
        let hello = try #require(recorded)
        let wire = hello.encoded(), secret = Array(token.utf8)
        #expect(!(0...(wire.count - secret.count)).contains { Array(wire[$0..<($0 + secret.count)]) == secret },
                "the job token travels in the registration")
        #expect("\(refusal.map { "\($0)" } ?? "accepted")".contains("does not prove the job token"), "\(String(describing: refusal))")

        // The recorded registration, played back twice to the real service: the second is a replay.
        let server = try RendezvousServer(address: SocketAddress(host: "127.0.0.1", port: 0), worldSize: 2,
                                          jobToken: token, generation: 5, timeoutSeconds: 20)
        defer { server.close() }
        let deadline = Deadline.after(seconds: 10)
        let first = try Socket.connect(to: server.address, deadline: deadline, context: "replay")
        defer { first.close() }
        try first.sendAll(wire, until: deadline, context: "replay")
        let second = try Socket.connect(to: server.address, deadline: deadline, context: "replay")
        defer { second.close() }
        try second.sendAll(wire, until: deadline, context: "replay")
        let answer: String
        do {
            try HandshakeReply.readStatus(from: second, until: deadline, context: "replay")
            answer = "accepted"
        } catch {
            answer = "\(error)"
        }
        #expect(answer.contains("replayed"), "\(answer)")
    }
}
