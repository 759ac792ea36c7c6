#if MPI
/// The collective layer over Open MPI (build with `swift build --traits MPI`).
///
/// Ranks and world size come from MPI (run the workers under `mpirun`). Errors are
/// returned, not fatal (MPI_ERRORS_RETURN), and become `CollectiveError`s. A peer
/// that dies is handled by Open MPI: `mpirun` ends the whole job. A stalled peer
/// would block every other rank forever (MPI has no timeouts and cannot cancel a
/// call), so with a timeout a `CallWatchdog` ends the process when one call makes no
/// progress for that long, with a message; `mpirun` then ends the job. The TCP ring
/// instead throws from the call, closes and lets the caller decide.
import CMPI
#if canImport(Glibc)
import Glibc
#endif

public final class MPICollective: Collective {
    public let rank: Int
    public let worldSize: Int
    private let communicator: MPI_Comm
    private let callLock = Lock()
    private var isClosed = false
    /// MPI counts are 32-bit; longer buffers go in pieces of this many elements.
    static let maximumPiece = Int(Int32.max)

    /// Ends this process when a call runs past the timeout; nil without one.
    private let watchdog: CallWatchdog?

    /// Initialises MPI (once per process) and joins MPI_COMM_WORLD. With
    /// `timeoutSeconds`, a call that makes no progress for that long ends the process
    /// (exit status 3) after saying so on standard error.
    public init(timeoutSeconds: Double? = nil) throws {
        var initialised: Int32 = 0
        MPI_Initialized(&initialised)
        if initialised == 0 {
            // Calls may come from any one thread at a time (we serialise them).
            var provided: Int32 = 0
            try MPICollective.check(MPI_Init_thread(nil, nil, Int32(MPI_THREAD_SERIALIZED), &provided), "MPI_Init_thread")
        }
        communicator = mae_mpi_comm_world()
        try MPICollective.check(MPI_Comm_set_errhandler(communicator, mae_mpi_errors_return()), "MPI_Comm_set_errhandler")
        var rank: Int32 = 0, size: Int32 = 0
        try MPICollective.check(MPI_Comm_rank(communicator, &rank), "MPI_Comm_rank")
        try MPICollective.check(MPI_Comm_size(communicator, &size), "MPI_Comm_size")
        self.rank = Int(rank)
        self.worldSize = Int(size)
        watchdog = try timeoutSeconds.map { timeout in
            try CallWatchdog(timeoutSeconds: timeout) { [rank] call in
                // The calling thread is inside MPI and cannot be unwound: say why and end
                // the process at once (no exit handlers, which could call into MPI).
                let message = "collectives: rank \(rank): \(call) made no progress for \(timeout) s (a peer stalled, "
                    + "died or stopped calling); MPI cannot cancel it, so this process exits and mpirun ends the job\n"
                fputs(message, stderr)
                fflush(stderr)
                _exit(MPICollective.timeoutExitStatus)
            }
        }
    }

    /// The exit status of a process whose MPI call ran past the timeout.
    public static let timeoutExitStatus: Int32 = 3

    /// Turns an MPI return code into an error naming the call and MPI's message.
    static func check(_ code: Int32, _ call: String) throws {
        guard code != MPI_SUCCESS else { return }
        var text = [CChar](repeating: 0, count: Int(MPI_MAX_ERROR_STRING) + 1)
        var length: Int32 = 0
        MPI_Error_string(code, &text, &length)
        throw CollectiveError.systemCall(name: call, errno: 0, context: "MPI: \(String(cString: text))")
    }

    public func allReduceAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try allReduceSum(buffer, count: count)
        let divisor = Float(worldSize)
        for index in 0..<count { buffer[index] /= divisor }
    }

    /// MPI chooses its algorithm, and so the order of the adds, by the message size:
    /// the slice is reduced on its own, with the whole call's bits only for two ranks.
    public func allReduceAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int, slice: VectorSlice) throws {
        try slice.check(count: count)
        try allReduceAverage(buffer, count: count)
    }

    public var reducesSlicesAsWhole: Bool { worldSize <= 2 }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try inPieces(count, "MPI_Allreduce of \(count) floats") { start, length in
            try MPICollective.check(MPI_Allreduce(mae_mpi_in_place(), buffer + start, length, mae_mpi_float(),
                                                  mae_mpi_sum(), communicator), "MPI_Allreduce")
        }
    }

    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {
        guard (0..<worldSize).contains(root) else {
            throw CollectiveError.invalidArgument("broadcast root \(root) is outside 0..<\(worldSize)")
        }
        try inPieces(count, "MPI_Bcast of \(count) floats from rank \(root)") { start, length in
            try MPICollective.check(MPI_Bcast(buffer + start, length, mae_mpi_float(), Int32(root), communicator),
                                    "MPI_Bcast")
        }
    }

    public func allReduceScalars(_ values: [Double]) throws -> [Double] {
        var result = values
        try inPieces(values.count, "MPI_Allreduce of \(values.count) scalars") { start, length in
            try result.withUnsafeMutableBufferPointer { pointer in
                try MPICollective.check(MPI_Allreduce(mae_mpi_in_place(), pointer.baseAddress! + start, length,
                                                      mae_mpi_double(), mae_mpi_sum(), communicator), "MPI_Allreduce")
            }
        }
        return result
    }

    public func barrier() throws {
        try callLock.withLock {
            guard !isClosed else { throw CollectiveError.closed("close() was called (MPI is finalised)") }
            watchdog?.arm("MPI_Barrier")
            defer { watchdog?.disarm() }
            try MPICollective.check(MPI_Barrier(communicator), "MPI_Barrier")
        }
    }

    /// Finalises MPI (once); later calls throw.
    public func close() {
        callLock.withLock {
            guard !isClosed else { return }
            isClosed = true
            watchdog?.stop()
            var finalised: Int32 = 0
            MPI_Finalized(&finalised)
            if finalised == 0 { MPI_Finalize() }
        }
    }

    /// Runs `body` for each piece of at most `maximumPiece` elements, holding the call
    /// lock, under the watchdog as `call`.
    private func inPieces(_ count: Int, _ call: @autoclosure () -> String, _ body: (Int, Int32) throws -> Void) throws {
        guard count >= 0 else { throw CollectiveError.invalidArgument("count \(count) is negative") }
        try callLock.withLock {
            guard !isClosed else { throw CollectiveError.closed("close() was called (MPI is finalised)") }
            if let watchdog { watchdog.arm(call()) }
            defer { watchdog?.disarm() }
            var start = 0
            while start < count {
                let length = min(count - start, MPICollective.maximumPiece)
                try body(start, Int32(length))
                start += length
            }
        }
    }
}
#endif
