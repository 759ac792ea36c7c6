import Collectives
import Foundation
import Options

/// `mae fuzz ring`: the ring handshake's fuzzer (`RingFuzzer`) for a longer run than the test's.
struct FuzzRingCommand: Subcommand {
    static let words = ["fuzz", "ring"]
    static let spec = CommandSpec(
        name: "mae fuzz ring",
        summary: "Forms a ring of two ranks on loopback and, before it forms, sends COUNT broken hellos (flipped bits, "
            + "cuts, random bytes, oversized lengths, another job's key) and one slow sender to a rank's listener; every "
            + "hello must be refused and the ring must then form and reduce. Exits 1 otherwise.",
        options: [
            OptionSpec("count", value: "N", default: "2000", help: "broken hellos to send"),
            OptionSpec("seed", value: "S", default: "1", help: "seed of the mutations (printed, to replay a failure)"),
        ])

    static func run(_ options: ParsedOptions) throws {
        let count = try options.int("count", in: 1...10_000_000)
        let seed = UInt64(try options.int("seed", in: 0...Int.max))
        print("fuzz ring: seed \(seed), \(count) hellos")
        let start = monotonicSeconds()
        let report = try RingFuzzer.run(count: count, seed: seed)
        print("fuzz ring: \(report.text) in " + String(format: "%.1f s", monotonicSeconds() - start))
        guard report.refused == report.sent, report.slowSenderDroppedAfter != nil, report.reduced == [[1, 2, 4], [1, 2, 4]] else {
            throw CollectiveError.handshakeRejected("the ring listener did not refuse every fuzzed hello, or the ring did not form (seed \(seed))")
        }
    }
}
