import Foundation
import Testing
@testable import Collectives

/// The ring listener under random and mutated hellos (`RingFuzzer`): it refuses every one,
/// drops a slow sender after its 5 s, stays up, and the real ring forms after them and reduces
/// correctly. `mae fuzz ring --count N` is the longer run.
@Suite struct RingFuzzTests {
    @Test func ringListenerRefusesFuzzedHellosAndTheRingStillForms() throws {
        let report = try RingFuzzer.run(count: 40, seed: 15)
        #expect(report.sent == 40 && report.refused == 40, "\(report.text)")
        #expect((report.slowSenderDroppedAfter ?? 99) < 7, "\(report.text)")
        #expect(report.reduced == [[1, 2, 4], [1, 2, 4]], "\(report.text)")
    }

    /// The proof covers every field of a hello: one whose port or host was changed (fields the
    /// proof once left out) is refused, and the unchanged one is refused when replayed.
    @Test func aHelloWithAnotherPortOrHostFailsItsProof() throws {
        let key = Array("a key".utf8)
        var acceptor = RingAuthentication(key: key)
        var hello = Hello(purpose: .ring, generation: 2, worldSize: 2, rank: 0, token: [], lane: 0, lanes: 1)
        hello.token = try RingAuthentication(key: key).connectToken(for: hello)
        var moved = hello
        moved.port = 1234
        var renamed = hello
        renamed.host = "elsewhere"
        guard case .failure(.noProof) = acceptor.admit(moved), case .failure(.noProof) = acceptor.admit(renamed) else {
            Issue.record("a hello with another port or host kept its proof")
            return
        }
        guard case .success = acceptor.admit(hello), case .failure(.replayed) = acceptor.admit(hello) else {
            Issue.record("the hello was refused, or its replay admitted")
            return
        }
    }
}
