import Collectives
import Foundation
import Kernels
import Options
import System
import Training

/// `mae-worker --coordinator HOST:PORT --secret-file F --rank R --generation G`: a worker
/// that an agent started. It proves the job secret, receives its assignment (the run config,
/// the schedule, the checkpoint to start from), forms the ring with the addresses the
/// coordinator hands out, and trains with heartbeats.
public enum CoordinatedWorker {
    /// The flags of this mode (the run's own flags go to `mae-coordinator serve`).
    public static let flags: Set<String> = ["coordinator", "secret-file", "rank", "generation", "local-workers",
                                            "listen-host", "congestion-control", "host-name"]

    /// Validates the flags, then joins and trains. Returns the exit status.
    public static func run(_ options: ParsedOptions) throws -> Int32 {
        func fail(_ message: String) -> OptionError { OptionError("mae-worker: \(message)") }
        let address = try SocketAddress(parsing: try options.required("coordinator"))
        guard let secretPath = options.string("secret-file") else {
            throw fail("--coordinator needs --secret-file RUN_DIR/\(JobSecret.fileName)")
        }
        let rank = try options.int("rank", in: 0...65535)
        let generation = try options.int("generation", in: 0...Int(Int32.max))
        let localWorkers = try options.optionalInt("local-workers", in: 1...65536) ?? 1
        let congestion = try WorkerOptions.parseCongestionControl(options.required("congestion-control"), fail: fail)
        let secret = try JobSecret.read(secretPath)

        let introduction = Introduction(role: .worker, proof: "", nonce: "", host: options.string("host-name") ?? hostName(), pid: getpid(), rank: rank,
                                        generation: generation)
        let connection = try Authentication.connect(to: address, secret: secret, introduction: introduction,
                                                    deadline: .after(seconds: 30))
        guard case .assignment(let assignment)? = try connection.receive(until: .after(seconds: 30)) else {
            throw ControlError("rank \(rank): the coordinator at \(address) sent no assignment within 30 s")
        }
        var config = assignment.config
        let cores = ProcessInfo.processInfo.activeProcessorCount
        if assignment.automaticThreads { config.threads = max(1, cores / localWorkers) }
        if assignment.automaticDataThreads { config.dataThreads = max(1, config.threads / 4) }
        let listenHost = try options.string("listen-host") ?? SocketAddress.localAddress(toward: address)

        let ringConfig = RendezvousConfig(rank: rank, worldSize: assignment.worldSize, address: address.description,
                                          jobToken: assignment.ringToken, generation: generation,
                                          timeoutSeconds: assignment.peerTimeoutSeconds, listenHost: listenHost,
                                          hostsRendezvous: false, congestionControl: congestion)
        let collective = try TCPRingCollective.connect(ringConfig) { port in
            try connection.send(.ringListener(host: listenHost, port: port))
            guard case .ringTable(let addresses)? = try connection.receive(until: .after(seconds: assignment.peerTimeoutSeconds)) else {
                throw ControlError("rank \(rank): no ring table from the coordinator within \(assignment.peerTimeoutSeconds) s")
            }
            return try addresses.map { try SocketAddress(parsing: $0) }
        }
        defer { collective.close() }
        if rank == 0 {
            print("rank 0 of \(assignment.worldSize): generation \(generation) joined the coordinator at \(address)")
            fflush(stdout)
        }
        let link = WorkerLink(connection: connection, rank: rank)
        link.startHeartbeats(every: assignment.heartbeatSeconds)
        let distributed = DistributedSettings(rank: rank, worldSize: assignment.worldSize, rendezvous: address.description,
                                              jobToken: assignment.ringToken, generation: generation, backend: .tcp,
                                              timeoutSeconds: assignment.peerTimeoutSeconds, listenHost: listenHost,
                                              congestionControl: congestion)
        let summary = try Trainer(config: config, distributed: distributed, collective: collective, control: link,
                                  expectedSchedule: assignment.schedule).run()
        link.finish(steps: summary.steps, stoppedOnRequest: summary.stoppedBySignal)
        connection.close()
        return 0
    }
}
