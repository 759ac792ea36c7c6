import Collectives
import Foundation
import Options

/// `mae-coordinator fuzz`: the control protocol's fuzzer against a live coordinator (`ControlFuzzer`).
extension CoordinatorCommands {
    public static let fuzzSpec = CommandSpec(
        name: "mae-coordinator fuzz", summary: "Sends random and mutated control messages (bit flips, cuts, oversized "
            + "lengths, wrong order, replayed handshakes, deep JSON, one byte a second) to a live coordinator, each on a "
            + "new connection, and checks that it still answers a real status. Exits 1 at the first time it does not. "
            + "Meant for a test run of your own: the coordinator logs every refusal.",
        options: targetOptions + [
            OptionSpec("seed", value: "S", default: "1", help: "seed of the sequence of cases (printed, to replay a failure)"),
            OptionSpec("count", value: "N", default: "200", help: "connections to send"),
            OptionSpec("seconds", value: "SECONDS", default: "60", help: "stop sending after this long"),
            OptionSpec("slow-seconds", value: "SECONDS", default: "7", help: "how long each slow sender dribbles its bytes"),
        ])

    public static func fuzz(_ options: ParsedOptions) throws -> Int32 {
        let target = try target(options, command: "mae-coordinator fuzz")
        guard let address = target.address, let secretPath = target.secretPath else {
            throw ControlError("mae-coordinator fuzz: the run has no live coordinator address")
        }
        let seed = UInt64(try options.int("seed", in: 0...Int.max))
        let fuzzer = ControlFuzzer(address: address, secret: try JobSecret.read(secretPath), seed: seed,
                                   slowSeconds: try options.double("slow-seconds", expectation: "a positive number of seconds") { $0 > 0 })
        print("fuzz: seed \(seed), coordinator \(address)")
        let start = monotonicSeconds()
        let report = try fuzzer.run(count: try options.int("count", in: 1...10_000_000),
                                    seconds: try options.double("seconds", expectation: "a positive number of seconds") { $0 > 0 },
                                    log: { print($0) })
        print("fuzz: \(report.text) in " + String(format: "%.1f s", monotonicSeconds() - start))
        return 0
    }
}
