import Collectives
import Foundation
import Kernels
import Options
import System
import Training

/// `mae-worker --coordinator HOST:PORT --secret-file F --rank R --generation G`: a worker
/// that an agent started. It proves the job secret, receives its assignment (the run config,
/// the schedule, the checkpoint to start from), forms the ring with the addresses the
/// coordinator hands out, and trains with heartbeats (`WorkerLink`, which also carries the
/// worker through a coordinator that goes away and comes back).
public enum CoordinatedWorker {
    /// The flags of this mode (the run's own flags go to `mae-coordinator serve`).
    public static let flags: Set<String> = ["coordinator", "secret-file", "rank", "generation", "local-workers",
                                            "listen-host", "congestion-control", "host-name", "backend", "peer-timeout",
                                            "transport"]

    /// Validates the flags, then joins and trains. Returns the exit status.
    public static func run(_ options: ParsedOptions) throws -> Int32 {
        func fail(_ message: String) -> OptionError { OptionError("mae-worker: \(message)") }
        let address = try SocketAddress(parsing: try options.required("coordinator"))
        guard let secretPath = options.string("secret-file") else {
            throw fail("--coordinator needs --secret-file RUN_DIR/\(JobSecret.fileName)")
        }
        guard let backend = DistributedSettings.Backend(rawValue: try options.required("backend")) else {
            throw fail("--backend expects tcp or mpi, got '\(options.string("backend") ?? "")'")
        }
        let generation = try options.int("generation", in: 0...Int(Int32.max))
        let localWorkers = try options.optionalInt("local-workers", in: 1...65536) ?? 1
        let congestion = try WorkerOptions.parseCongestionControl(options.required("congestion-control"), fail: fail)
        let transport = try CollectiveTransport.parse(options.required("transport"), fail: fail)
        let secret = try JobSecret.read(secretPath)
        // Under mpirun, MPI gives the rank (and is the rendezvous); the coordinator still hands out the run.
        var mpi: (any Collective)?
        if backend == .mpi {
            let timeout = try options.double("peer-timeout", expectation: "a positive number of seconds") { $0 > 0 }
            mpi = try makeCollective(DistributedSettings(rank: -1, worldSize: -1, rendezvous: nil, jobToken: "",
                                                         generation: generation, backend: .mpi, timeoutSeconds: timeout))
        }
        let rank = try mpi?.rank ?? options.int("rank", in: 0...65535)

        let introduction = Introduction(role: .worker, proof: "", nonce: "", host: options.string("host-name") ?? hostName(),
                                        pid: getpid(), rank: rank, generation: generation)
        let connection = try Authentication.connect(to: address, secret: secret, introduction: introduction,
                                                    deadline: .after(seconds: 30))
        guard case .assignment(let assignment)? = try connection.receive(until: .after(seconds: 30)) else {
            throw ControlError("rank \(rank): the coordinator at \(address) sent no assignment within 30 s")
        }
        if let mpi, mpi.worldSize != assignment.worldSize {
            throw ControlError("mpirun started \(mpi.worldSize) ranks, but the coordinator's run has \(assignment.worldSize)")
        }
        var config = assignment.config
        let cores = ProcessInfo.processInfo.activeProcessorCount
        if assignment.automaticThreads { config.threads = max(1, cores / localWorkers) }
        if assignment.automaticDataThreads { config.dataThreads = max(1, config.threads / 4) }
        let listenHost = try options.string("listen-host") ?? SocketAddress.localAddress(toward: address)

        func waitForTable() throws -> [String] {
            guard case .ringTable(let addresses)? = try connection.receive(until: .after(seconds: assignment.peerTimeoutSeconds)) else {
                throw ControlError("rank \(rank): the other workers did not all join within \(assignment.peerTimeoutSeconds) s")
            }
            return addresses
        }
        let collective: any Collective
        if let mpi {
            // No ring to form: port 0 only says that this rank has joined.
            try connection.send(.ringListener(host: "mpi", port: 0))
            _ = try waitForTable()
            collective = mpi
        } else {
            let ringConfig = RendezvousConfig(rank: rank, worldSize: assignment.worldSize, address: address.description,
                                              jobToken: assignment.ringToken, generation: generation,
                                              timeoutSeconds: assignment.peerTimeoutSeconds, listenHost: listenHost,
                                              hostsRendezvous: false, congestionControl: congestion)
            collective = try transport.connect(ringConfig) { port in
                try connection.send(.ringListener(host: listenHost, port: port))
                return try waitForTable().map { try SocketAddress(parsing: $0) }
            }
        }
        defer { collective.close() }
        if rank == 0 {
            print("rank 0 of \(assignment.worldSize): generation \(generation) joined the coordinator at \(address) "
                + "(collective: \(type(of: collective)))")
            fflush(stdout)
        }
        // Should the coordinator go away, the worker trains on and comes back as this rank of this generation.
        var reconnecting = introduction
        reconnecting.reconnecting = true
        let link = WorkerLink(connection: connection, rank: rank) {
            try Authentication.connect(to: address, secret: secret, introduction: reconnecting, deadline: .after(seconds: 5))
        }
        link.startHeartbeats(every: assignment.heartbeatSeconds)
        let distributed = DistributedSettings(rank: rank, worldSize: assignment.worldSize, rendezvous: address.description,
                                              jobToken: assignment.ringToken, generation: generation, backend: backend,
                                              timeoutSeconds: assignment.peerTimeoutSeconds, listenHost: listenHost,
                                              congestionControl: congestion, transport: transport)
        let summary = try Trainer(config: config, distributed: distributed, collective: collective, control: link,
                                  expectedSchedule: assignment.schedule).run()
        link.finish(steps: summary.steps, stoppedOnRequest: summary.stoppedBySignal)
        return 0
    }
}
