import Collectives
import Foundation
import Kernels
import Options
import Training
#if canImport(Glibc)
import Glibc
#endif

/// `mae collective-worker`: one rank of an all-reduce benchmark, check or soak loop.
/// Started by `mae bench allreduce`, by `mpirun`, and by the collective tests.
struct CollectiveWorkerCommand: Subcommand {
    static let words = ["collective-worker"]
    static let isInternal = true
    static let spec = CommandSpec(
        name: "mae collective-worker",
        summary: "Internal: one rank of a collective benchmark or test (started by 'mae bench allreduce', "
            + "mpirun and the tests). Modes: bench (time all-reduces, rank 0 prints busbw), check (verify every "
            + "operation against exact expectations), loop (all-reduce repeatedly, printing each iteration), dump "
            + "(average random floats whole and in buckets, write input and results to --output).",
        options: [
            OptionSpec("backend", value: "NAME", default: "tcp", help: "tcp or mpi (mpi: rank and world come from mpirun)"),
            OptionSpec("mode", value: "MODE", default: "bench", help: "bench, check, loop or dump"),
            OptionSpec("output", value: "PATH", help: "dump: the file for this rank's input and results (raw floats)"),
            OptionSpec("seed", value: "S", default: "0", help: "dump: the seed of the random input"),
            OptionSpec("rank", value: "R", default: "0", help: "this rank (tcp)"),
            OptionSpec("world", value: "N", default: "1", help: "number of ranks (tcp)"),
            OptionSpec("address", value: "HOST:PORT", default: "127.0.0.1:29500", help: "rendezvous address (tcp)"),
            OptionSpec("host-rendezvous", value: "BOOL", default: "rank0",
                       help: "whether this rank hosts the rendezvous: yes, no or rank0"),
            OptionSpec("token", value: "TEXT", default: "mae-local", help: "job token shared by the ranks (tcp)"),
            OptionSpec("listen-host", value: "ADDRESS", default: "auto",
                       help: "address the ring listener binds to and announces; auto: this machine's address toward the rendezvous (tcp)"),
            OptionSpec("generation", value: "G", default: "0", help: "job generation (tcp)"),
            OptionSpec("timeout", value: "SECONDS", default: "30",
                       help: "rendezvous and collective timeout (tcp); for mpi, a call that makes no progress for this long ends the job"),
            OptionSpec("floats", value: "F", default: "6175000", help: "buffer length in floats (bench, loop)"),
            OptionSpec("iters", value: "I", default: "5", help: "timed iterations (bench) or iterations (loop)"),
            OptionSpec("pause-ms", value: "MS", default: "0", help: "pause between loop iterations"),
        ] + ringTuningOptions)

    static func run(_ options: ParsedOptions) throws {
        let collective = try makeCollective(options)
        defer { collective.close() }
        switch try options.required("mode") {
        case "bench": try runBenchmark(collective, options)
        case "check": try runChecks(collective)
        case "loop": try runLoop(collective, options)
        case "dump": try runDump(collective, options)
        case let other: throw OptionError("mae collective-worker: --mode must be bench, check, loop or dump, got '\(other)'")
        }
    }

    static func makeCollective(_ options: ParsedOptions) throws -> any Collective {
        switch try options.required("backend") {
        case "tcp":
            let rank = try options.int("rank", in: 0...65535)
            let hosting: Bool?
            switch try options.required("host-rendezvous") {
            case "yes": hosting = true
            case "no": hosting = false
            case "rank0": hosting = nil
            case let other: throw OptionError("mae collective-worker: --host-rendezvous expects yes, no or rank0, got '\(other)'")
            }
            let address = try options.required("address")
            let listenHost = try options.required("listen-host")
            let config = RendezvousConfig(
                rank: rank, worldSize: try options.int("world", in: 1...65535), address: address,
                jobToken: try options.required("token"), generation: try options.int("generation", in: 0...Int.max),
                timeoutSeconds: try options.double("timeout", expectation: "seconds > 0") { $0 > 0 },
                listenHost: listenHost == "auto" ? try SocketAddress.localAddress(toward: SocketAddress(parsing: address)) : listenHost,
                hostsRendezvous: hosting, segmentBytes: try options.int("segment-bytes", in: 4096...(1 << 30)),
                socketBufferBytes: try options.int("socket-buffer-bytes", in: 0...(1 << 30)),
                sendsOnSeparateThread: try yesOrNo(options, "sender-thread"), lanes: try options.int("lanes", in: 1...16),
                spinsBeforeSleeping: options.string("spins") == "auto" ? nil : try options.int("spins", in: 0...Int(Int32.max)),
                congestionControl: try congestionControl(options))
            let transport = try CollectiveTransport.parse(try options.required("transport")) {
                OptionError("mae collective-worker: \($0)")
            }
            return try transport.connect(config, sharedMemorySlotBytes: try options.int("shm-slot-bytes", in: 4096...(1 << 30)))
        case "mpi":
            #if MPI
            return try MPICollective(timeoutSeconds: try options.double("timeout", expectation: "seconds > 0") { $0 > 0 })
            #else
            throw OptionError("mae collective-worker: this mae was built without MPI; rebuild with 'swift build --traits MPI'")
            #endif
        case let other:
            throw OptionError("mae collective-worker: --backend must be tcp or mpi, got '\(other)'")
        }
    }

    /// Rank r holds (r + 1) · (k mod 7 + 1) at element k: every sum and mean is exact in Float.
    static func fill(_ buffer: FloatBuffer, rank: Int) {
        for index in 0..<buffer.count { buffer[index] = Float(rank + 1) * Float(index % 7 + 1) }
    }

    /// The mean of `fill` over `world` ranks at element k.
    static func expectedMean(_ index: Int, world: Int) -> Float { Float(world + 1) / 2 * Float(index % 7 + 1) }

    /// Checks the mean of `fill`, exactly or within `relativeTolerance`.
    static func verifyMean(_ buffer: FloatBuffer, world: Int, relativeTolerance: Float = 0, _ what: String) throws {
        for index in 0..<buffer.count {
            let expected = expectedMean(index, world: world)
            if !(abs(buffer[index] - expected) <= relativeTolerance * expected) {
                throw OptionError("\(what): element \(index) is \(buffer[index]), expected \(expected)")
            }
        }
    }

    /// The `--gradient-wire` of the averages.
    static func wire(_ options: ParsedOptions) throws -> GradientWire {
        try GradientWire.parse(try options.required("gradient-wire")) { OptionError("\(options.command): \($0)") }
    }

    /// A mean of the whole buffer as the gradient exchange makes it, on `wire`.
    static func average(_ collective: any Collective, _ buffer: FloatBuffer, wire: GradientWire) throws {
        try collective.allReduceAverage(buffer.pointer, count: buffer.count,
                                        slice: VectorSlice(offset: 0, wholeCount: buffer.count), wire: wire)
    }

    static func runBenchmark(_ collective: any Collective, _ options: ParsedOptions) throws {
        let floats = try options.int("floats", in: 1...(1 << 31)), iterations = try options.int("iters", in: 1...100_000)
        let world = collective.worldSize, wire = try wire(options)
        let buffer = FloatBuffer(count: floats)
        fill(buffer, rank: collective.rank)
        // On the bf16 wire one mean of `fill` is exact up to 8 ranks (every partial sum is an
        // integer below 256); beyond, and for means of means, each rounding (N − 1 partial
        // sums and the mean per call) may move it by 2⁻⁹ relative.
        let perCall: Float = wire == .bf16 ? Float(world) / 512 : 0
        try average(collective, buffer, wire: wire)  // warm-up, checked
        try verifyMean(buffer, world: world, relativeTolerance: world <= 8 ? 0 : perCall, "warm-up all-reduce")
        try collective.barrier()
        let start = monotonicNow(), cpuStart = processCPUSeconds()
        for _ in 0..<iterations { try average(collective, buffer, wire: wire) }
        try collective.barrier()
        let seconds = (monotonicNow() - start) / Double(iterations)
        let cpuSeconds = (processCPUSeconds() - cpuStart) / Double(iterations)
        try verifyMean(buffer, world: world, relativeTolerance: perCall * Float(iterations + 1), "timed all-reduces")
        if collective.rank == 0 {
            // CPU time (all threads, user + system) says how much work a byte costs, which
            // a busy shared machine distorts less than wall time.
            print("rank0_cpu_ms_per_iteration=\(fixed(cpuSeconds * 1000, 2))")
            print("rank0_collective=\(type(of: collective))")
            if let ring = collective as? TCPRingCollective, let lane = try ring.congestionControls().first {
                print("rank0_congestion_control=\(lane.toRight)")   // what paces rank 0's sends
            }
            let algorithmBandwidth = Double(floats * 4) / seconds / 1e9
            let busBandwidth = algorithmBandwidth * 2 * Double(world - 1) / Double(world)
            print("busbw_GBps=\(fixed(busBandwidth, 3)) algbw_GBps=\(fixed(algorithmBandwidth, 3)) time_ms=\(fixed(seconds * 1000, 2))")
        }
    }

    static func runLoop(_ collective: any Collective, _ options: ParsedOptions) throws {
        let floats = try options.int("floats", in: 1...(1 << 31)), iterations = try options.int("iters", in: 1...Int.max)
        let pause = try options.int("pause-ms", in: 0...60_000)
        let buffer = FloatBuffer(count: floats)
        fill(buffer, rank: collective.rank)
        print("ready rank=\(collective.rank) pid=\(getpid())")
        fflush(stdout)
        for iteration in 1...iterations {
            try collective.allReduceAverage(buffer.pointer, count: floats)
            try verifyMean(buffer, world: collective.worldSize, "iteration \(iteration)")
            print("iteration \(iteration)")
            fflush(stdout)
            if pause > 0 { usleep(UInt32(pause) * 1000) }
        }
    }

    /// Averages random floats of full mantissas and mixed magnitudes on `--gradient-wire`,
    /// once whole and once in buckets (slices of the whole, from its end to its start, as
    /// the overlapped exchange does), and writes [input, whole result, bucketed result] as
    /// raw floats to `--output`, for a test to compare with its own reference.
    static func runDump(_ collective: any Collective, _ options: ParsedOptions) throws {
        guard let path = options.string("output") else { throw OptionError("mae collective-worker: --mode dump needs --output PATH") }
        let floats = try options.int("floats", in: 1...(1 << 28)), wire = try wire(options)
        var random = CounterRandom(seed: UInt64(try options.int("seed", in: 0...Int.max)), purpose: .test, epoch: 0,
                                   index: collective.rank)
        let input = FloatBuffer(count: floats)
        for index in 0..<floats { input[index] = (random.nextFloat() * 2 - 1) * Float(1 + index % 97) / 16 }
        let whole = FloatBuffer(count: floats), bucketed = FloatBuffer(count: floats)
        whole.pointer.update(from: input.pointer, count: floats)
        bucketed.pointer.update(from: input.pointer, count: floats)
        try average(collective, whole, wire: wire)
        let boundaries = [floats, floats * 3 / 4 + 1, floats / 3, floats / 3, min(7, floats / 3), 0]
        for (end, start) in zip(boundaries, boundaries.dropFirst()) {
            try collective.allReduceAverage(bucketed.pointer + start, count: end - start,
                                            slice: VectorSlice(offset: start, wholeCount: floats), wire: wire)
        }
        var bytes: [UInt8] = []
        for buffer in [input, whole, bucketed] {
            bytes += UnsafeRawBufferPointer(start: buffer.pointer, count: floats * 4)
        }
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
            throw OptionError("mae collective-worker: cannot write \(path)")
        }
        print("dump ok rank=\(collective.rank)")
    }

    /// Exercises every operation with lengths that do not divide by the world size.
    static func runChecks(_ collective: any Collective) throws {
        let world = collective.worldSize, rank = collective.rank
        for length in [0, 1, world - 1, world + 1, 1001, 100_003] where length >= 0 {
            // A slice in the middle of a larger buffer; the margins must stay untouched.
            let margin = 5
            let buffer = FloatBuffer(count: length + 2 * margin)
            for index in 0..<buffer.count { buffer[index] = -1 }
            let slice = FloatBuffer(count: length)
            fill(slice, rank: rank)
            (buffer.pointer + margin).update(from: slice.pointer, count: length)
            try collective.allReduceSum(buffer.pointer + margin, count: length)
            for index in 0..<length {
                let expected = Float(world * (world + 1) / 2) * Float(index % 7 + 1)
                guard buffer[margin + index] == expected else {
                    throw OptionError("sum of \(length): element \(index) is \(buffer[margin + index]), expected \(expected)")
                }
            }
            for index in 0..<margin where buffer[index] != -1 || buffer[margin + length + index] != -1 {
                throw OptionError("sum of a slice of \(length) wrote outside the slice")
            }
            fill(slice, rank: rank)
            try collective.allReduceAverage(slice.pointer, count: length)
            try verifyMean(slice, world: world, "mean of \(length)")
            for root in 0..<world {
                for index in 0..<length { slice[index] = rank == root ? Float(index + root) : -7 }
                try collective.broadcast(slice.pointer, count: length, root: root)
                for index in 0..<length where slice[index] != Float(index + root) {
                    throw OptionError("broadcast of \(length) from \(root): element \(index) is \(slice[index])")
                }
            }
        }
        try collective.barrier()
        let scalars = try collective.allReduceScalars([1, Double(rank), 0.5])
        let expected = [Double(world), Double(world * (world - 1) / 2), 0.5 * Double(world)]
        guard scalars == expected else { throw OptionError("scalars are \(scalars), expected \(expected)") }
        try collective.barrier()
        // Random values, whose sums depend on the order of the adds: every rank must print
        // the same digest (and a transport the same one run after run).
        let random = FloatBuffer(count: 100_003)
        var generator = CounterRandom(seed: 7, purpose: .test, index: rank)
        for index in 0..<random.count { random[index] = generator.nextFloat() * 2 - 1 }
        try collective.allReduceAverage(random.pointer, count: random.count)
        var digest = FNV1a64()
        digest.update(UnsafeRawBufferPointer(start: random.pointer, count: random.count * 4))
        print("collective rank=\(rank) kind=\(type(of: collective)) mean_digest=\(digest.hex)")
        if let ring = collective as? TCPRingCollective {
            for (lane, algorithms) in try ring.congestionControls().enumerated() {
                print("congestion_control rank=\(rank) lane=\(lane) to_right=\(algorithms.toRight) from_left=\(algorithms.fromLeft)")
            }
        }
        print("check ok rank=\(rank) world=\(world)")
        fflush(stdout)
    }
}

/// User plus system CPU seconds of this process, all threads.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) * 1e-6
        + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) * 1e-6
}

/// A yes/no option as a Bool.
func yesOrNo(_ options: ParsedOptions, _ name: String) throws -> Bool {
    switch try options.required(name) {
    case "yes": return true
    case "no": return false
    case let other: throw OptionError("\(options.command): --\(name) expects yes or no, got '\(other)'")
    }
}

/// Seconds on the monotonic clock.
func monotonicNow() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}

/// The parsed `--congestion-control`.
func congestionControl(_ options: ParsedOptions) throws -> CongestionControl {
    try WorkerOptions.parseCongestionControl(try options.required("congestion-control"), fail: { OptionError($0) })
}

/// `value` with exactly `digits` decimals (no Foundation formatting needed).
func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = Int((abs(value) * scale).rounded())
    let whole = scaled / Int(scale), fraction = scaled % Int(scale)
    let fractionText = String(fraction)
    let padded = String(repeating: "0", count: max(0, digits - fractionText.count)) + fractionText
    return (value < 0 ? "-" : "") + String(whole) + (digits > 0 ? "." + padded : "")
}

/// The TCP ring's tuning knobs, shared by `mae bench allreduce` and the workers it starts;
/// the defaults are `RendezvousConfig`'s own.
let ringTuningOptions: [OptionSpec] = {
    let defaults = RendezvousConfig(rank: 0, worldSize: 1, jobToken: "defaults")
    return [
        OptionSpec("gradient-wire", value: "fp32|bf16", default: "fp32",
                   help: "number format of the averaged floats between ranks (bf16: rounded on every hop, summed in fp32)"),
        OptionSpec("transport", value: "auto|ring|shm|hierarchical", default: "auto",
                   help: "shm: one shared-memory segment (every rank on this machine); ring: TCP; hierarchical: shared "
                       + "memory inside each machine, a TCP ring per local rank across machines; auto: shm when every "
                       + "rank announced this machine's address, hierarchical when several machines have equally many "
                       + "ranks (two or more each), else ring (tcp)"),
        OptionSpec("shm-slot-bytes", value: "B", default: String(SharedMemoryCollective.defaultSlotBytes),
                   help: "bytes of one rank's region per piece in flight, a multiple of 64 (shm)"),
        OptionSpec("segment-bytes", value: "B", default: String(defaults.segmentBytes), help: "bytes per send/receive (tcp)"),
        OptionSpec("sender-thread", value: "BOOL", default: defaults.sendsOnSeparateThread ? "yes" : "no",
                   help: "yes: a second thread sends while the first receives and reduces; no: one thread (tcp)"),
        OptionSpec("lanes", value: "K", default: String(defaults.lanes), help: "independent rings a call is divided over (tcp)"),
        OptionSpec("socket-buffer-bytes", value: "B", default: String(defaults.socketBufferBytes),
                   help: "SO_SNDBUF/SO_RCVBUF, 0: kernel autotuning (tcp)"),
        OptionSpec("spins", value: "N", default: "auto",
                   help: "socket retries before a waiting rank sleeps, without a sender thread (auto: "
                       + "\(RendezvousConfig.automaticSpins) when this machine has a core per rank and lane, else 0) (tcp)"),
        OptionSpec("congestion-control", value: "auto|system|NAME", default: defaults.congestionControl.description,
                   help: CongestionControl.optionHelp + " (tcp)"),
    ]
}()
