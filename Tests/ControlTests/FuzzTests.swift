import Collectives
import Control
import Kernels
import Data
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `mae-coordinator fuzz` against a live coordinator: random and mutated control messages,
/// replayed handshakes and a slow sender are refused and logged with the sender's address,
/// the coordinator answers a real status after every round, and the run it then coordinates
/// trains to the end without a restart.
@Suite(.serialized) struct FuzzTests {
    @Test func theCoordinatorRefusesFuzzedMessagesStaysUpAndItsRunIsUnaffected() throws {
        let temporary = try TemporaryDirectory("fuzz")
        defer { temporary.remove() }
        let data = temporary.path + "/data"
        try synthesizeDataset(root: data, classes: 2, perClass: 8, valPerClass: 1, size: 24, seed: 11)
        let run = CoordinatedRun(root: temporary.path, name: "fuzzed")
        defer { run.stopAll() }
        try run.startCoordinator(world: 2, workerFlags: [
            "--data", data, "--model-shape", "4,16,1,2,8,1,2", "--input-size", "16", "--batch-size", "2", "--epochs", "2",
            "--warmup-epochs", "1", "--lr", "1e-3", "--seed", "5", "--threads", "1", "--data-threads", "1",
            "--batch-shards", "1", "--print-every", "1", "--checkpoint-every", "4"])

        // While the coordinator waits for its agent: 60 connections of every kind, a status every 10.
        let fuzz = try TestProcess(try TestProcess.product("mae-coordinator"),
                                   ["fuzz", "--run-dir", run.runDirectory, "--seed", "3", "--count", "60", "--seconds", "20",
                                    "--slow-seconds", "7"], logDirectory: temporary.path, name: "fuzz")
        defer { fuzz.stop() }
        #expect(fuzz.exitStatus(within: 60) == 0, "\(fuzz.output)\n\(run.output)")
        #expect(fuzz.output.contains("60 connections"), "\(fuzz.output)")
        #expect(run.coordinator?.isRunning == true)

        let log = run.coordinator?.output ?? ""
        let refusals = log.split(separator: "\n").filter { $0.contains("refused a connection from 127.0.0.1:") }
        #expect(refusals.count >= 30, "\(log)")
        #expect(refusals.contains { $0.contains("wrong proof") }, "a replayed or flipped hello was not refused: \(log)")
        #expect(refusals.contains { $0.contains("expected a hello") }, "a message out of order was not refused: \(log)")
        #expect(refusals.contains { $0.contains("outside 1...4096") }, "an oversized frame was not refused: \(log)")
        #expect(refusals.contains { $0.contains("no hello within 5 s") }, "the slow sender was not dropped: \(log)")

        try run.startAgent(count: 2)
        #expect(run.coordinator?.exitStatus(within: 120) == 0, "\(run.output)")
        let state = try run.state()
        #expect(state.restarts == 0 && state.phase == .finished, "\(run.output)")
        #expect(run.liveWorkers().isEmpty)
    }
}

/// The other side: what an agent, a worker or a command does when something that is not the
/// coordinator answers on its address (random bytes, oversized or cut frames, the wrong message,
/// a welcome that proves nothing, one byte a second). Every case fails within the deadline with an
/// error; none is taken for the coordinator.
@Suite struct FakeCoordinatorTests {
    static func answers(secret: [UInt8], count: Int) throws -> [[UInt8]] {
        var random = CounterRandom(seed: 9, purpose: .faults)
        let challenge = Frame.encode(try ControlMessage.challenge(nonce: try Authentication.nonce()).encoded())
        return try (0..<count).map { index -> [UInt8] in
            switch index % 6 {
            case 0: return (0..<random.nextInt(below: 200) + 1).map { _ in UInt8(truncatingIfNeeded: random.nextUInt32()) }
            case 1: return [0xff, 0xff, 0xff, 0xff] + Array(challenge.dropFirst(4))
            case 2: return Array(challenge.prefix(random.nextInt(below: challenge.count)))
            case 3: return challenge + Frame.encode(try ControlMessage.welcome(proof: String(repeating: "ab", count: 32)).encoded())
            case 4: return Frame.encode(try ControlMessage.welcome(proof: "00").encoded())
            default:
                var flipped = challenge + Frame.encode(try ControlMessage.statusRequest.encoded())
                let bit = random.nextInt(below: flipped.count * 8)
                flipped[bit / 8] ^= UInt8(1 << (bit % 8))
                return flipped
            }
        }
    }

    @Test func aFakeCoordinatorIsNeverTakenForTheRealOne() throws {
        let secret = Array(String(repeating: "5e", count: 32).utf8)
        let cases = try Self.answers(secret: secret, count: 24)
        let listener = try Socket.listening(on: SocketAddress(host: "127.0.0.1", port: 0))
        defer { listener.close() }
        let address = SocketAddress(host: "127.0.0.1", port: try listener.localPort(context: "test"))
        let server = Thread {
            for bytes in cases {
                guard let connection = try? listener.accept(until: .after(seconds: 10), context: "fake coordinator") else { return }
                try? connection.sendAll(bytes, until: .after(seconds: 2), context: "fake coordinator")
                usleep(300_000)  // the client reads what it got before the close
                connection.close()
            }
        }
        server.start()
        let introduction = Introduction(role: .agent, proof: "", nonce: "", host: "test", pid: getpid(), rank: 0, rankCount: 1)
        for (index, _) in cases.enumerated() {
            let start = monotonicSeconds()
            #expect(throws: (any Error).self, "case \(index) was taken for the coordinator") {
                _ = try Authentication.connect(to: address, secret: secret, introduction: introduction, deadline: .after(seconds: 3))
            }
            #expect(monotonicSeconds() - start < 4, "case \(index) took \(monotonicSeconds() - start) s")
        }
    }
}
