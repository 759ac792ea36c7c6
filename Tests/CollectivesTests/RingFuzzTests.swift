import Foundation
import Kernels
import Testing
@testable import Collectives
#if canImport(Glibc)
import Glibc
#endif

/// The ring listener under random and mutated hellos: it refuses every one, stays up, and
/// the real ring forms after them and reduces correctly.
@Suite struct RingFuzzTests {
    /// Mutations of a real ring hello (signed with the right key, so only the mutation can
    /// make it wrong), random bytes, oversized lengths and one slow sender (one byte a second).
    static func fuzzCases(key: [UInt8], count: Int, seed: UInt64) throws -> [[UInt8]] {
        var random = CounterRandom(seed: seed, purpose: .faults)
        var hello = Hello(purpose: .ring, generation: 2, worldSize: 2, rank: 0, token: [], lane: 0, lanes: 1)
        hello.token = try RingAuthentication(key: key).connectToken(for: hello)
        let recorded = hello.encoded()
        return (0..<count).map { _ in
            var bytes = recorded
            switch random.nextInt(below: 5) {
            case 0:  // a flipped bit anywhere (magic, fields, nonce, proof, lengths)
                let bit = random.nextInt(below: bytes.count * 8)
                bytes[bit / 8] ^= UInt8(1 << (bit % 8))
            case 1:  // cut short
                bytes = Array(bytes.prefix(random.nextInt(below: bytes.count)))
            case 2:  // random bytes after the right magic
                bytes = Array(bytes.prefix(8)) + (0..<random.nextInt(below: 80)).map { _ in UInt8(truncatingIfNeeded: random.nextUInt32()) }
            case 3:  // a token length far above the limit
                bytes[Hello.fixedBytes - 2] = 0xff
                bytes[Hello.fixedBytes - 1] = 0xff
            default:  // another job's key
                var stranger = hello
                stranger.token = (try? RingAuthentication(key: Array("another job".utf8)).connectToken(for: stranger)) ?? []
                bytes = stranger.encoded()
            }
            return bytes
        }
    }

    /// Sends `bytes`, ends our stream, and returns whether the listener refused or closed (never accepted).
    static func send(_ bytes: [UInt8], to address: SocketAddress) -> Bool {
        guard let socket = try? Socket.connect(to: address, deadline: .after(seconds: 5), context: "fuzzer") else { return false }
        defer { socket.close() }
        try? socket.sendAll(bytes, until: .after(seconds: 2), context: "fuzzer")
        socket.shutdownWriting()
        guard let status = try? socket.receiveExactly(1, until: .after(seconds: 8), context: "fuzzer") else { return true }
        return status[0] == HandshakeReply.rejected
    }

    @Test func ringListenerRefusesFuzzedHellosAndTheRingStillForms() throws {
        let token = uniqueToken("fuzz")
        let key = Array(token.utf8)
        let cases = try Self.fuzzCases(key: key, count: 40, seed: 15)
        let listeners = try (0..<2).map { _ in try Socket.listening(on: SocketAddress(host: "127.0.0.1", port: 0)) }
        let addresses = try listeners.map { SocketAddress(host: "127.0.0.1", port: try $0.localPort(context: "test")) }
        let fuzzDone = Flag()
        // Index 2 fuzzes rank 1's listener, 3 is a slow sender beside it; rank 0 connects
        // only after both, so every fuzzed hello reaches rank 1 before the real one.
        let outcomes = runRanks(4, limitSeconds: 60) { index -> String in
            switch index {
            case 2:
                defer { fuzzDone.raise() }
                let refused = cases.filter { Self.send($0, to: addresses[1]) }.count
                return "\(refused) of \(cases.count) refused"
            case 3:
                // One byte a second: the listener gives it 5 s, then serves the others.
                guard let socket = try? Socket.connect(to: addresses[1], deadline: .after(seconds: 5), context: "slow") else {
                    return "no connection"
                }
                defer { socket.close() }
                let start = monotonicSeconds()
                for byte in cases[0] where monotonicSeconds() - start < 8 {
                    if (try? socket.sendAll([byte], until: .after(seconds: 1), context: "slow")) == nil { break }
                    if socket.isClosedByPeer(waiting: 1) { return String(format: "dropped after %.0f s", monotonicSeconds() - start) }
                }
                return "never dropped"
            default:
                let rank = index
                if rank == 0 { _ = fuzzDone.wait(seconds: 40) }
                let config = RendezvousConfig(rank: rank, worldSize: 2, address: "127.0.0.1:1", jobToken: token,
                                              generation: 2, timeoutSeconds: 40, hostsRendezvous: false)
                let collective = try TCPRingCollective.formRing(config, listener: listeners[rank], addresses: addresses,
                                                                deadline: .after(seconds: 50))
                defer { collective.close() }
                var values: [Float] = [Float(rank), 1, 2]
                try values.withUnsafeMutableBufferPointer { try collective.allReduceSum($0.baseAddress!, count: 3) }
                return "\(values)"
            }
        }
        let answers = try outcomes.map { try $0.get() }
        #expect(answers[2] == "40 of 40 refused", "\(answers[2])")
        #expect(answers[3].hasPrefix("dropped after"), "\(answers[3])")
        #expect(answers[0] == "[1.0, 2.0, 4.0]" && answers[1] == "[1.0, 2.0, 4.0]", "\(answers[0...1])")
    }
}

/// A one-shot signal between test threads.
final class Flag: @unchecked Sendable {
    private let condition = NSCondition()
    private var raised = false

    func raise() {
        condition.lock()
        raised = true
        condition.broadcast()
        condition.unlock()
    }

    /// True when raised within `seconds`.
    func wait(seconds: Double) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date().addingTimeInterval(seconds)
        while !raised { if !condition.wait(until: deadline) { return raised } }
        return true
    }
}

extension Socket {
    /// Reads away what arrives for `seconds`; true when the peer closed the connection.
    func isClosedByPeer(waiting seconds: Double) -> Bool {
        let deadline = Deadline.after(seconds: seconds)
        var chunk = [UInt8](repeating: 0, count: 1024)
        while let ready = try? wait(for: Int16(POLLIN), until: deadline, context: "test"), ready {
            do { _ = try chunk.withUnsafeMutableBytes { try receiveSome($0.baseAddress!, count: $0.count, context: "test") } } catch {
                return true
            }
        }
        return false
    }
}
