import Collectives
import Foundation
import Kernels
import Options

/// `mae bench allreduce`: all-reduce bandwidth of local worker processes over loopback.
struct BenchAllReduceCommand: Subcommand {
    static let words = ["bench", "allreduce"]
    static let spec = CommandSpec(
        name: "mae bench allreduce",
        summary: "Starts WORLD local worker processes that all-reduce (mean) a float32 buffer over loopback, "
            + "checks the reduced values, and prints as its last line 'busbw_GBps=X algbw_GBps=Y time_ms=Z' "
            + "(nccl-tests definitions: algbw = bytes / time, busbw = algbw * 2(N-1)/N).",
        options: [
            OptionSpec("world", value: "N", default: "2", help: "number of worker processes"),
            OptionSpec("floats", value: "F", default: "6175000", help: "buffer length in floats (6175000 = 24.7 MB)"),
            OptionSpec("iters", value: "I", default: "5", help: "timed iterations after one checked warm-up"),
            OptionSpec("backend", value: "NAME", default: "tcp", help: "tcp (our ring) or mpi (Open MPI under mpirun)"),
            OptionSpec("mpi-btl", value: "LIST", default: "tcp,self", help: "Open MPI transports for --backend mpi"),
            OptionSpec("timeout", value: "SECONDS", default: "60", help: "collective timeout (tcp)"),
            OptionSpec("machines", value: "M", default: "1",
                       help: "pretend the workers are on M machines (tcp): rank r announces the loopback address "
                           + "127.0.0.(1 + r·M/WORLD), so ranks with different addresses count as on different machines "
                           + "(for --transport hierarchical on one machine; the bytes still move over loopback)"),
        ] + ringTuningOptions)

    static func run(_ options: ParsedOptions) throws {
        let world = try options.int("world", in: 1...64)
        let floats = try options.int("floats", in: 1...(1 << 31)), iterations = try options.int("iters", in: 1...100_000)
        let executable = selfExecutable()
        let workload = ["--mode", "bench", "--floats", String(floats), "--iters", String(iterations)]
        let backend = try options.required("backend")
        let congestion = try congestionControl(options)
        let machines = try options.int("machines", in: 1...world)
        let transport = backend == "tcp" ? " transport=\(try options.required("transport")) machines=\(machines)" : ""
        let wire = try CollectiveWorkerCommand.wire(options)
        if backend == "mpi" && wire != .fp32 {
            throw OptionError("mae bench allreduce: --gradient-wire \(wire) needs --backend tcp (MPI sums in an order of its own)")
        }
        print("all-reduce benchmark: backend=\(backend)\(transport) world=\(world) floats=\(floats) bytes=\(floats * 4) "
              + "gradient_wire=\(wire) iters=\(iterations)")
        print(CPUInfo.summary)

        var launches: [[String]] = []
        var server: RendezvousServer?
        switch backend {
        case "tcp":
            // The launcher hosts the rendezvous on a free port, so no port can collide.
            let token = "bench-\(ProcessInfo.processInfo.processIdentifier)-\(UInt64(Date().timeIntervalSince1970 * 1e6))"
            let timeout = try options.double("timeout", expectation: "seconds > 0") { $0 > 0 }
            server = try RendezvousServer(address: SocketAddress(host: "127.0.0.1", port: 0), worldSize: world,
                                          jobToken: token, generation: 0, timeoutSeconds: timeout)
            for rank in 0..<world {
                launches.append([executable, "collective-worker", "--backend", "tcp", "--rank", String(rank),
                                 "--world", String(world), "--address", server!.address.description,
                                 "--host-rendezvous", "no", "--token", token, "--timeout", String(timeout),
                                 "--listen-host", "127.0.0.\(1 + rank * machines / world)",
                                 "--segment-bytes", try options.required("segment-bytes"),
                                 "--socket-buffer-bytes", try options.required("socket-buffer-bytes"),
                                 "--lanes", try options.required("lanes"), "--sender-thread", String(try yesOrNo(options, "sender-thread") ? "yes" : "no"),
                                 "--spins", try options.required("spins"),
                                 "--congestion-control", congestion.description,
                                 "--transport", try options.required("transport"),
                                 "--gradient-wire", try options.required("gradient-wire"),
                                 "--shm-slot-bytes", try options.required("shm-slot-bytes")] + workload)
            }
        case "mpi":
            launches.append(["/usr/bin/env", "mpirun", "--allow-run-as-root", "--oversubscribe",
                             "--mca", "btl", try options.required("mpi-btl"), "-np", String(world),
                             executable, "collective-worker", "--backend", "mpi"] + workload)
        default:
            throw OptionError("mae bench allreduce: --backend must be tcp or mpi, got '\(backend)'")
        }
        defer { server?.close() }

        // Rank 0 (or mpirun) reports on standard output; we keep its last line.
        var processes: [Process] = []
        let output = Pipe()
        defer { for process in processes where process.isRunning { process.terminate() } }
        for (index, arguments) in launches.enumerated() {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: arguments[0])
            process.arguments = Array(arguments.dropFirst())
            if index == 0 { process.standardOutput = output }
            try process.run()
            processes.append(process)
        }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        for process in processes { process.waitUntilExit() }
        if let failed = processes.firstIndex(where: { $0.terminationStatus != 0 }) {
            throw OptionError("mae bench allreduce: worker \(failed) failed with status \(processes[failed].terminationStatus) "
                + "(its error is above)")
        }
        guard let result = text.split(separator: "\n").last(where: { $0.hasPrefix("busbw_GBps=") }) else {
            throw OptionError("mae bench allreduce: the workers printed no result; their output was:\n\(text)")
        }
        for line in text.split(separator: "\n") where line.hasPrefix("rank0_") { print(line) }
        print(result)
    }

    /// The path of the running `mae` executable.
    static func selfExecutable() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}
