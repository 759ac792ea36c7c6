import Foundation
import Testing
@testable import Collectives

/// The ring's choice of TCP congestion control, read back from the kernel.
@Suite(.serialized) struct CongestionControlTests {
    /// The kernel's default for new connections.
    static func systemDefault() throws -> String {
        try String(contentsOfFile: "/proc/sys/net/ipv4/tcp_congestion_control", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Every connection of every rank of a two-lane ring of `world`, under `choice`.
    static func algorithms(_ choice: CongestionControl, world: Int = 3) throws -> [String] {
        let outcomes = try withRing(world, lanes: 2, congestionControl: choice) { ring in
            var value: Float = 1
            try ring.allReduceSum(&value, count: 1)   // the connections carry data under the choice
            guard value == Float(ring.worldSize) else { throw CollectiveError.mismatch("sum \(value)") }
            return try ring.congestionControls().flatMap { [$0.toRight, $0.fromLeft] }
        }
        return try outcomes.flatMap { try $0.get() }
    }

    @Test func automaticUsesRenoBetweenRanksOfThisMachine() throws {
        let algorithms = try Self.algorithms(.automatic)
        #expect(algorithms.count == 3 * 2 * 2)
        #expect(algorithms.allSatisfy { $0 == CongestionControl.withinMachine }, "\(algorithms)")
    }

    @Test func systemKeepsTheKernelsDefault() throws {
        let expected = try Self.systemDefault()
        let algorithms = try Self.algorithms(.system, world: 2)
        #expect(!algorithms.isEmpty && algorithms.allSatisfy { $0 == expected }, "\(algorithms) instead of \(expected)")
    }

    @Test func aNamedAlgorithmIsSetOnEveryConnection() throws {
        // Reno is allowed to every user; when it is also the system default this test
        // still checks that naming it works.
        let algorithms = try Self.algorithms(.named("reno"), world: 2)
        #expect(!algorithms.isEmpty && algorithms.allSatisfy { $0 == "reno" }, "\(algorithms)")
    }

    @Test func anUnknownAlgorithmIsAnErrorThatListsTheAvailableOnes() throws {
        let outcomes = try withRing(2, timeoutSeconds: 5, congestionControl: .named("nosuchcc")) { _ in }
        for outcome in outcomes {
            #expect(throws: CollectiveError.self) { try outcome.get() }
        }
        guard case let .failure(error) = outcomes[0] else { return }
        #expect("\(error)".contains("nosuchcc") && "\(error)".contains("available: ") && "\(error)".contains("reno"),
                "\(error)")
    }

    @Test func parsing() {
        #expect(CongestionControl(parsing: "auto") == .automatic)
        #expect(CongestionControl(parsing: "system") == .system)
        #expect(CongestionControl(parsing: "bbr") == .named("bbr"))
        for bad in ["", "Reno", "reno cubic", "a_name_longer_than_15", "-"] {
            #expect(CongestionControl(parsing: bad) == nil, "accepted '\(bad)'")
        }
    }
}
