import Collectives
import Data
import Foundation
import Kernels
import Options
import System
import Training
#if canImport(Glibc)
import Glibc
#endif

/// The subcommands of `mae-coordinator`: their declarations and what each does. The
/// executable only picks one and exits with what it returns.
public enum CoordinatorCommands {
    public static let summary = """
        usage: mae-coordinator COMMAND [options]

        The control plane of a mae training run: one coordinator per run, one agent per machine.

        commands:
          serve       the coordinator: rendezvous, heartbeats, checkpoints, automatic restarts, status, /metrics
          agent       starts and watches one machine's workers for the coordinator
          status      shows a live or finished run (--json for scripts, --watch to follow it)
          stop        ends a run gracefully: a checkpoint, then every process stops
          checkpoint  asks the workers for a checkpoint now
          fuzz        sends random and mutated control messages to a live coordinator (a robustness test)

        'mae-coordinator COMMAND --help' describes a command's options.
        Exit statuses of serve: 0 finished, 1 failed after the restarts ran out, 2 bad configuration,
        3 stopped on request (resumable with --resume auto).
        """

    // MARK: serve

    public static let serveSpec = CommandSpec(
        name: "mae-coordinator serve", summary: "Runs the coordinator of one training run. The workers' flags follow "
            + "'--' (see 'mae-worker --help'): the coordinator checks them, computes the schedule from the dataset once "
            + "for everyone, and hands them to every worker with the checkpoint to start from.",
        usage: "-- WORKER FLAGS", options: [
            OptionSpec("world-size", value: "N", help: "number of workers (required)"),
            OptionSpec("addr", value: "HOST:PORT", default: "127.0.0.1:0",
                       help: "where agents, workers and commands connect (port 0: a free one, written to --port-file and the state file)"),
            OptionSpec("metrics-addr", value: "HOST:PORT", default: "127.0.0.1:0", help: "where /metrics is served (Prometheus text)"),
            OptionSpec("max-restarts", value: "K", default: "3", help: "restarts after failures before the run fails"),
            OptionSpec("heartbeat-timeout", value: "SECONDS", default: "10",
                       help: "silence after which a worker or agent counts as failed (stopped or hung)"),
            OptionSpec("heartbeat-interval", value: "SECONDS", default: "1", help: "seconds between heartbeats"),
            OptionSpec("rendezvous-timeout", value: "SECONDS", default: "120",
                       help: "how long agents may take to connect and workers to join"),
            OptionSpec("stop-grace", value: "SECONDS", default: "5", help: "seconds agents wait between SIGTERM and SIGKILL"),
            OptionSpec("stop-timeout", value: "SECONDS", default: "300",
                       help: "how long a graceful stop (finish the step, write a checkpoint) may take"),
            OptionSpec("adopt-timeout", value: "SECONDS", default: "30",
                       help: "started again on a run that was training: how long to wait for its agents and workers to "
                           + "reconnect and be adopted before restarting them from the newest checkpoint"),
            OptionSpec("port-file", value: "PATH", help: "write HOST:PORT here once listening (for launchers)"),
            .flag("exit-with-parent", help: "stop gracefully when the process that started the coordinator ends"),
        ])

    /// Validates `serve`'s flags and the workers' flags (the dataset is listed to compute the schedule).
    public static func serveConfiguration(_ options: ParsedOptions) throws -> CoordinatorConfiguration {
        func fail(_ message: String) -> OptionError { OptionError("mae-coordinator serve: \(message)") }
        guard options.has("world-size") else { throw fail("--world-size N is required") }
        let worldSize = try options.int("world-size", in: 1...65536)
        let workerArguments = options.positional
        guard !workerArguments.contains(where: { ["--standalone", "--rank", "--world-size", "--rendezvous", "--job-token",
                                                  "--coordinator", "--backend", "--generation", "--transport"].contains($0) }) else {
            throw fail("the worker flags after '--' must not place the worker (--rank, --world-size, --rendezvous, "
                       + "--backend, ...): the coordinator does that (--transport: give it to launch.sh or the agents)")
        }
        guard let workerOptions = try WorkerOptions.spec.parse(workerArguments + ["--standalone"]) else {
            throw fail("--help is not a worker flag here; see 'mae-worker --help'")
        }
        guard workerOptions.positional.isEmpty else {
            throw fail("unexpected worker argument '\(workerOptions.positional[0])'")
        }
        let (config, _) = try WorkerOptions.parse(workerOptions)
        let peerTimeout = try workerOptions.double("peer-timeout", expectation: "a positive number of seconds") { $0 > 0 }

        let dataset = try ImageFolderDataset(root: config.dataRoot, split: "train")
        do {
            _ = try config.validationDataset(training: dataset)  // fine-tuning and probing: val present, same classes
        } catch let error as TrainingError {
            throw fail("\(error)")
        }
        let sampler = DistributedSampler(datasetCount: dataset.count, worldSize: worldSize, rank: 0, seed: config.seed)
        let batches = sampler.samplesPerRank / config.batchSize
        guard batches >= config.accumulationSteps else {
            throw fail("the dataset's \(dataset.count) images give each of the \(worldSize) workers \(batches) batches of "
                       + "\(config.batchSize) per epoch, fewer than one optimizer step (--accum-iter \(config.accumulationSteps)); "
                       + "lower --batch-size or --accum-iter, or use fewer workers (--world-size)")
        }
        let schedule = try config.schedule(worldSize: worldSize, iterationsPerEpoch: batches)
        let totalSteps = min(config.epochs * schedule.stepsPerEpoch, config.maxSteps ?? Int.max)
        func seconds(_ name: String) throws -> Double {
            try options.double(name, expectation: "a positive number of seconds") { $0 > 0 && $0.isFinite }
        }
        let policy = CoordinatorPolicy(worldSize: worldSize, maxRestarts: try options.int("max-restarts", in: 0...1_000_000),
                                       heartbeatTimeoutSeconds: try seconds("heartbeat-timeout"),
                                       rendezvousTimeoutSeconds: try seconds("rendezvous-timeout"),
                                       stopGraceSeconds: try seconds("stop-grace"), stopTimeoutSeconds: try seconds("stop-timeout"))
        let heartbeat = try seconds("heartbeat-interval")
        guard heartbeat * 2 <= policy.heartbeatTimeoutSeconds else {
            throw fail("--heartbeat-timeout \(policy.heartbeatTimeoutSeconds) must be at least twice --heartbeat-interval \(heartbeat)")
        }
        return CoordinatorConfiguration(
            runDirectory: config.runDirectory, listenAddress: try SocketAddress(parsing: options.required("addr")),
            metricsAddress: try SocketAddress(parsing: options.required("metrics-addr")), policy: policy, runConfig: config,
            automaticThreads: workerOptions.string("threads") == "auto",
            automaticDataThreads: workerOptions.string("data-threads") == "auto", schedule: schedule, totalSteps: totalSteps,
            peerTimeoutSeconds: peerTimeout, heartbeatSeconds: heartbeat, exitWithParent: options.flag("exit-with-parent"),
            portFile: options.string("port-file"), adoptTimeoutSeconds: try seconds("adopt-timeout"))
    }

    // MARK: agent

    public static let agentSpec = CommandSpec(
        name: "mae-coordinator agent", summary: "Starts and watches this machine's workers (ranks --first-rank ..< "
            + "--first-rank + --nproc) for the coordinator: forwards their output (rank 0 to this terminal, every rank to "
            + "RUN_DIR/logs/rank-N.log), reports their exits, and stops them (SIGTERM, then SIGKILL) when told, or when "
            + "the coordinator stays away longer than --reconnect-timeout.", options: [
            OptionSpec("coordinator", value: "HOST:PORT", help: "the coordinator's address (required)"),
            OptionSpec("run-dir", value: "DIR", help: "the run directory (required): logs go to DIR/logs"),
            OptionSpec("secret-file", value: "PATH", help: "the job secret (default: RUN_DIR/job.secret)"),
            OptionSpec("first-rank", value: "R", default: "0", help: "the first rank this machine runs"),
            OptionSpec("nproc", value: "K", help: "workers on this machine (required)"),
            OptionSpec("host-name", value: "NAME", help: "this machine's name in status and messages (default: its host name)"),
            OptionSpec("worker", value: "PATH", help: "the mae-worker to start (default: the one next to mae-coordinator)"),
            OptionSpec("listen-host", value: "ADDRESS",
                       help: "address the workers' ring listeners use (default: this machine's address toward the coordinator)"),
            OptionSpec("congestion-control", value: "auto|system|NAME", default: "auto", help: "passed to the workers"),
            OptionSpec("transport", value: "auto|ring|shm", default: "auto",
                       help: "passed to the workers: shm (shared memory, every worker on one machine), ring (TCP) or auto"),
            OptionSpec("grace", value: "SECONDS", default: "5", help: "seconds between SIGTERM and SIGKILL when stopping workers"),
            OptionSpec("reconnect-timeout", value: "SECONDS", default: "60",
                       help: "how long to wait for a coordinator that is not up yet, or went away (the workers train on "
                           + "meanwhile; then they are stopped, after a checkpoint)"),
            OptionSpec("heartbeat-interval", value: "SECONDS", default: "1", help: "seconds between heartbeats"),
            OptionSpec("backend", value: "tcp|mpi", default: "tcp",
                       help: "mpi: start this machine's ranks as one mpirun job (a build with --traits MPI; one agent per run)"),
            OptionSpec("mpirun", value: "COMMAND", default: "mpirun --allow-run-as-root --oversubscribe --mca btl tcp,self",
                       help: "the mpirun command line with --backend mpi (-np and the worker are added)"),
        ])

    public static func agentConfiguration(_ options: ParsedOptions) throws -> AgentConfiguration {
        func fail(_ message: String) -> OptionError { OptionError("mae-coordinator agent: \(message)") }
        guard let coordinator = options.string("coordinator") else { throw fail("--coordinator HOST:PORT is required") }
        guard let runDirectory = options.string("run-dir") else { throw fail("--run-dir DIR is required") }
        guard options.has("nproc") else { throw fail("--nproc K is required") }
        let worker = options.string("worker") ?? siblingExecutable("mae-worker")
        guard FileManager.default.isExecutableFile(atPath: worker) else {
            throw fail("\(worker) is not an executable mae-worker; build it (swift build -c release) or pass --worker PATH")
        }
        let transport = try CollectiveTransport.parse(try options.required("transport"), fail: fail)
        var workerArguments = ["--congestion-control", try options.required("congestion-control"), "--transport", transport.rawValue]
        if let listenHost = options.string("listen-host") { workerArguments += ["--listen-host", listenHost] }
        func seconds(_ name: String) throws -> Double {
            try options.double(name, expectation: "a positive number of seconds") { $0 > 0 && $0.isFinite }
        }
        let backend = try options.required("backend")
        guard backend == "tcp" || backend == "mpi" else { throw fail("--backend expects tcp or mpi, got '\(backend)'") }
        let mpirun = backend == "mpi" ? try options.required("mpirun").split(separator: " ").map(String.init) : nil
        guard mpirun?.isEmpty != true else { throw fail("--mpirun must name a command") }
        return AgentConfiguration(
            coordinator: try SocketAddress(parsing: coordinator),
            secretPath: options.string("secret-file") ?? runDirectory + "/" + JobSecret.fileName,
            firstRank: try options.int("first-rank", in: 0...65535), rankCount: try options.int("nproc", in: 1...4096),
            host: options.string("host-name") ?? hostName(), runDirectory: runDirectory, workerExecutable: worker,
            workerArguments: workerArguments, graceSeconds: try seconds("grace"),
            reconnectSeconds: try seconds("reconnect-timeout"), heartbeatSeconds: try seconds("heartbeat-interval"),
            mpirun: mpirun)
    }

    /// An executable in the same folder as this one.
    static func siblingExecutable(_ name: String) -> String {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent(name).path
    }

    // MARK: status, stop, checkpoint

    static let targetOptions = [
        OptionSpec("run-dir", value: "DIR", help: "the run directory (finds the coordinator, and the state of a finished run)"),
        OptionSpec("addr", value: "HOST:PORT", help: "the coordinator's address instead (needs --secret-file)"),
        OptionSpec("secret-file", value: "PATH", help: "the job secret (default: RUN_DIR/job.secret)"),
    ]

    public static let statusSpec = CommandSpec(
        name: "mae-coordinator status", summary: "Shows a run: its state, generation, restarts, epoch, step, loss, lr, "
            + "img/s, ETA, last checkpoint and one row per rank. A live coordinator answers; a finished or dead run is read "
            + "from RUN_DIR/coordinator.json. Exits 1 when nothing answers and no run directory is given.",
        options: targetOptions + [
            .flag("json", help: "one JSON object (keys: state, generation, restarts, step, total_steps, epoch, loss, lr, "
                  + "img_per_s, last_checkpoint, ranks, ...)"),
            .flag("watch", help: "print again every --interval seconds until the run is over"),
            OptionSpec("interval", value: "SECONDS", default: "2", help: "seconds between updates with --watch"),
        ])
    public static let stopSpec = CommandSpec(
        name: "mae-coordinator stop", summary: "Ends a run gracefully: the workers finish their step, write a checkpoint "
            + "and exit; the coordinator exits 3 (resumable with --resume auto).", options: targetOptions)
    public static let checkpointSpec = CommandSpec(
        name: "mae-coordinator checkpoint", summary: "Asks the workers to write a checkpoint after their current step.",
        options: targetOptions)

    /// Where to reach a run: its address and secret, and the state file when there is a run directory.
    struct Target {
        var address: SocketAddress?
        var secretPath: String?
        var statePath: String?
    }

    static func target(_ options: ParsedOptions, command: String) throws -> Target {
        if let runDirectory = options.string("run-dir") {
            let statePath = runDirectory + "/" + Coordinator.stateFileName
            guard FileSystem.exists(statePath) else {
                throw ControlError("\(command): \(runDirectory) has no \(Coordinator.stateFileName): not a run directory of "
                                   + "mae-coordinator (or it has not started yet)")
            }
            let state = try Coordinator.readState(statePath)
            let address = try options.string("addr").map(SocketAddress.init(parsing:)) ?? (try? SocketAddress(parsing: state.address))
            return Target(address: address, secretPath: options.string("secret-file") ?? runDirectory + "/" + JobSecret.fileName,
                          statePath: statePath)
        }
        guard let addr = options.string("addr") else { throw OptionError("\(command): pass --run-dir DIR or --addr HOST:PORT") }
        guard let secret = options.string("secret-file") else {
            throw OptionError("\(command): --addr needs --secret-file (RUN_DIR/\(JobSecret.fileName) of the run)")
        }
        return Target(address: try SocketAddress(parsing: addr), secretPath: secret, statePath: nil)
    }

    /// Sends one request to the coordinator and returns its answer.
    static func ask(_ request: ControlMessage, target: Target) throws -> ControlMessage {
        guard let address = target.address, let secretPath = target.secretPath else { throw ControlError("no coordinator address") }
        let secret = try JobSecret.read(secretPath)
        let introduction = Introduction(role: .control, proof: "", nonce: "", host: hostName(), pid: getpid())
        let connection = try Authentication.connect(to: address, secret: secret, introduction: introduction,
                                                    deadline: .after(seconds: 2))
        defer { connection.close() }
        try connection.send(request)
        guard let answer = try connection.receive(until: .after(seconds: 5)) else {
            throw ControlError("the coordinator at \(address) did not answer within 5 s")
        }
        return answer
    }

    /// The run's status: from the live coordinator, else from the state file.
    static func currentStatus(_ target: Target) throws -> RunStatus {
        var liveError: Error?
        if target.address != nil {
            do {
                if case .status(let status) = try ask(.statusRequest, target: target) { return status }
            } catch {
                liveError = error
            }
        }
        if let statePath = target.statePath {
            return try Coordinator.readState(statePath).status(now: wallClockSeconds(), live: false)
        }
        throw ControlError("no coordinator answered at \(target.address?.description ?? "?")"
                           + (liveError.map { ": \($0)" } ?? ""))
    }

    public static func status(_ options: ParsedOptions) throws -> Int32 {
        let target = try target(options, command: "mae-coordinator status")
        let interval = try options.double("interval", expectation: "a positive number of seconds") { $0 > 0 }
        while true {
            let status = try currentStatus(target)
            print(options.flag("json") ? try status.json() : status.text + (options.flag("watch") ? "\n" : ""))
            fflush(stdout)
            guard options.flag("watch"), status.live, !(RunPhase(rawValue: status.state)?.isFinal ?? true) else { return 0 }
            usleep(useconds_t(interval * 1_000_000))
        }
    }

    public static func stop(_ options: ParsedOptions) throws -> Int32 {
        try acknowledge(.stopRun, target: target(options, command: "mae-coordinator stop"))
    }

    public static func checkpoint(_ options: ParsedOptions) throws -> Int32 {
        try acknowledge(.checkpointRun, target: target(options, command: "mae-coordinator checkpoint"))
    }

    static func acknowledge(_ request: ControlMessage, target: Target) throws -> Int32 {
        switch try ask(request, target: target) {
        case .acknowledged(let message):
            print(message)
            return 0
        case let other:
            throw ControlError("the coordinator answered \(other.name)")
        }
    }
}
