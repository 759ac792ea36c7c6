import Foundation
import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// The ring handshake's fuzzer (`mae fuzz ring` and a test): a ring of two ranks forms in this
/// process on loopback, and before rank 0 connects, rank 1's listener receives `count` broken
/// hellos and one slow sender. Each hello is a recorded real one (signed with the right key, so
/// only the mutation can make it wrong) with a bit flipped or cut short, random bytes after the
/// magic, an oversized token length, or one signed with another job's key. Every one must be
/// refused, the slow sender dropped, and the real ring must then form and reduce correctly.
/// Randomness is counter-based and keyed by `seed`.
public enum RingFuzzer {
    /// What a run did.
    public struct Report: Sendable {
        public var sent = 0
        /// Hellos the listener refused or closed (never accepted).
        public var refused = 0
        /// Seconds after which the listener dropped the slow sender (nil: it never did).
        public var slowSenderDroppedAfter: Double?
        /// Each rank's all-reduce of [rank, 1, 2] once the real ring formed: [1, 2, 4] each.
        public var reduced: [[Float]] = []

        public var text: String {
            "\(sent) fuzzed hellos, \(refused) refused; slow sender "
                + (slowSenderDroppedAfter.map { String(format: "dropped after %.0f s", $0) } ?? "never dropped")
                + "; the real ring then reduced to \(reduced.map { "\($0)" }.joined(separator: " and "))"
        }
    }

    /// Runs the fuzzer; throws when the real ring does not form afterwards.
    public static func run(count: Int, seed: UInt64, slowSeconds: Double = 8) throws -> Report {
        let token = "fuzz-\(getpid())-\(UInt64(monotonicSeconds() * 1e9))"
        let cases = try hellos(key: Array(token.utf8), count: count, seed: seed)
        let listeners = try (0..<2).map { _ in try Socket.listening(on: SocketAddress(host: "127.0.0.1", port: 0)) }
        defer { for listener in listeners { listener.close() } }
        let addresses = try listeners.map { SocketAddress(host: "127.0.0.1", port: try $0.localPort(context: "ring fuzzer")) }
        // Generous: every case is answered at once, the slow sender holds the listener at most 5 s.
        let limit = 60 + Double(count) * 0.05
        let results = Results()
        let fuzzDone = DispatchSemaphore(value: 0)
        func start(_ body: @escaping @Sendable () -> Void) {
            let thread = Thread(block: body)
            thread.stackSize = 1 << 22
            thread.start()
        }
        let group = DispatchGroup()
        for index in 0..<4 {
            group.enter()
            start {
                defer { group.leave() }
                switch index {
                case 2:
                    results.set(refused: cases.filter { send($0, to: addresses[1]) }.count)
                    fuzzDone.signal()
                case 3:
                    results.set(slowDroppedAfter: slowSender(cases[0], to: addresses[1], seconds: slowSeconds))
                default:
                    let rank = index
                    if rank == 0 { _ = fuzzDone.wait(timeout: .now() + limit) }
                    do {
                        let config = RendezvousConfig(rank: rank, worldSize: 2, address: "127.0.0.1:1", jobToken: token,
                                                      generation: 2, timeoutSeconds: limit, hostsRendezvous: false)
                        let collective = try TCPRingCollective.formRing(config, listener: listeners[rank], addresses: addresses,
                                                                        deadline: .after(seconds: limit + 10))
                        defer { collective.close() }
                        var values: [Float] = [Float(rank), 1, 2]
                        try values.withUnsafeMutableBufferPointer { try collective.allReduceSum($0.baseAddress!, count: 3) }
                        results.set(rank: rank, reduced: values)
                    } catch {
                        results.set(rank: rank, error: error)
                    }
                }
            }
        }
        guard group.wait(timeout: .now() + limit + 30) == .success else {
            throw CollectiveError.timedOut("ring fuzzer: the ranks did not finish within \(Int(limit + 30)) s (seed \(seed))")
        }
        if let error = results.error { throw error }
        return Report(sent: cases.count, refused: results.refused, slowSenderDroppedAfter: results.slowDroppedAfter,
                      reduced: [results.reduced[0] ?? [], results.reduced[1] ?? []])
    }

    /// `count` broken hellos for a ring of two ranks in generation 2, as rank 0 would send them.
    static func hellos(key: [UInt8], count: Int, seed: UInt64) throws -> [[UInt8]] {
        var random = CounterRandom(seed: seed, purpose: .faults)
        var hello = Hello(purpose: .ring, generation: 2, worldSize: 2, rank: 0, token: [], lane: 0, lanes: 1)
        hello.token = try RingAuthentication(key: key).connectToken(for: hello)
        let recorded = hello.encoded()
        var stranger = hello
        stranger.token = try RingAuthentication(key: Array("another job".utf8)).connectToken(for: stranger)
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
                bytes = stranger.encoded()
            }
            return bytes
        }
    }

    /// Sends `bytes`, ends our stream, and returns whether the listener refused or closed (never accepted).
    static func send(_ bytes: [UInt8], to address: SocketAddress) -> Bool {
        guard let socket = try? Socket.connect(to: address, deadline: .after(seconds: 5), context: "ring fuzzer") else { return false }
        defer { socket.close() }
        try? socket.sendAll(bytes, until: .after(seconds: 2), context: "ring fuzzer")
        socket.shutdownWriting()
        guard let status = try? socket.receiveExactly(1, until: .after(seconds: 8), context: "ring fuzzer") else { return true }
        return status[0] == HandshakeReply.rejected
    }

    /// One byte a second of `bytes`; the seconds until the listener dropped it, nil if it never did.
    static func slowSender(_ bytes: [UInt8], to address: SocketAddress, seconds: Double) -> Double? {
        guard let socket = try? Socket.connect(to: address, deadline: .after(seconds: 5), context: "slow sender") else { return nil }
        defer { socket.close() }
        let start = monotonicSeconds()
        for byte in bytes where monotonicSeconds() - start < seconds {
            if (try? socket.sendAll([byte], until: .after(seconds: 1), context: "slow sender")) == nil { return monotonicSeconds() - start }
            // Reads away what arrives for a second; the listener's close shows as end of stream.
            let deadline = Deadline.after(seconds: 1)
            var chunk = [UInt8](repeating: 0, count: 1024)
            while let ready = try? socket.wait(for: Int16(POLLIN), until: deadline, context: "slow sender"), ready {
                do { _ = try chunk.withUnsafeMutableBytes { try socket.receiveSome($0.baseAddress!, count: $0.count, context: "slow sender") } } catch {
                    return monotonicSeconds() - start
                }
            }
        }
        return nil
    }

    /// What the threads found.
    final class Results: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var refused = 0
        private(set) var slowDroppedAfter: Double?
        private(set) var reduced: [[Float]?] = [nil, nil]
        private(set) var error: Error?

        func set(refused: Int) { lock.lock(); self.refused = refused; lock.unlock() }
        func set(slowDroppedAfter: Double?) { lock.lock(); self.slowDroppedAfter = slowDroppedAfter; lock.unlock() }
        func set(rank: Int, reduced: [Float]) { lock.lock(); self.reduced[rank] = reduced; lock.unlock() }
        func set(rank: Int, error: Error) { lock.lock(); if self.error == nil { self.error = error }; lock.unlock() }
    }
}
