#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// A child process started with `posix_spawn`, its standard output and error each on a
/// pipe that the parent reads (non-blocking). The owner reaps it with `poll()` and stops it
/// with `signal(_:)`; nothing else signals it. It runs in its own process group, so a Ctrl-C
/// at the terminal reaches its owner, which decides, and not the child directly.
public final class ChildProcess {
    /// The child's process id.
    public let pid: pid_t
    /// Read ends of the child's standard output and error (non-blocking; -1 once closed).
    public private(set) var outputDescriptor: Int32
    public private(set) var errorDescriptor: Int32
    /// How it ended, once `poll()` has seen it end.
    public private(set) var termination: Termination?

    /// How a process ended: an exit status or a signal.
    public enum Termination: Equatable, Sendable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        /// The number a shell reports: the exit status, or 128 + the signal.
        public var shellStatus: Int32 {
            switch self {
            case .exited(let status): status
            case .signaled(let signal): 128 + signal
            }
        }

        public var description: String {
            switch self {
            case .exited(let status): "exited with status \(status)"
            case .signaled(let signal):
                "killed by signal \(signal)" + (signal == SIGKILL ? " (SIGKILL)" : signal == SIGTERM ? " (SIGTERM)" : "")
                    + ", status \(128 + signal)"
            }
        }
    }

    /// Starts `executable` with `arguments` (not including argv[0]) and `environment`
    /// ("NAME=value" entries).
    public init(executable: String, arguments: [String], environment: [String]) throws {
        var outputPipe: [Int32] = [-1, -1], errorPipe: [Int32] = [-1, -1]
        try SystemCall.retrying("pipe", path: executable) { pipe(&outputPipe) }
        do {
            try SystemCall.retrying("pipe", path: executable) { pipe(&errorPipe) }
        } catch {
            outputPipe.forEach { FileSystem.close($0) }
            throw error
        }
        defer { FileSystem.close(outputPipe[1]); FileSystem.close(errorPipe[1]) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outputPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errorPipe[1], 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Own process group; default handlers and an empty mask, whatever the parent ignores or blocks.
        var defaults = sigset_t(), empty = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGCHLD] { sigaddset(&defaults, signal) }
        sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var child: pid_t = 0
        let status = posix_spawn(&child, executable, &actions, &attributes, argv, envp)
        guard status == 0 else {
            FileSystem.close(outputPipe[0]); FileSystem.close(errorPipe[0])
            throw SystemCallError(call: "posix_spawn", path: executable, code: status)
        }
        pid = child
        outputDescriptor = outputPipe[0]
        errorDescriptor = errorPipe[0]
        for descriptor in [outputDescriptor, errorDescriptor] {
            _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
            _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        }
    }

    deinit {
        closeOutput()
        if termination == nil { kill(pid, SIGKILL); _ = poll(waitSeconds: 5) }
    }

    /// Sends `signal` to the child (nothing once it has been reaped: the pid may be reused).
    public func signal(_ signal: Int32) {
        guard termination == nil else { return }
        kill(pid, signal)
    }

    /// Reaps the child if it has ended, waiting at most `waitSeconds`; returns how it ended, or nil.
    @discardableResult
    public func poll(waitSeconds: Double = 0) -> Termination? {
        if let termination { return termination }
        var waited = 0.0
        while true {
            var status: Int32 = 0
            let result = SystemCall.retryingInterrupted { waitpid(pid, &status, WNOHANG) }
            if result == pid {
                // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift cannot import as macros.
                let signal = status & 0x7f
                termination = signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
                return termination
            }
            if result < 0 { termination = .exited(-1); return termination }  // not our child any more (ECHILD)
            if waited >= waitSeconds { return nil }
            usleep(10_000)
            waited += 0.01
        }
    }

    /// Reads what is available on `descriptor` (one of the two pipes); nil at its end
    /// (the pipe is then closed), an empty array when nothing is there yet.
    public func readAvailable(_ descriptor: Int32) -> [UInt8]? {
        guard descriptor >= 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let count = SystemCall.retryingInterrupted { buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) } }
        if count > 0 { return Array(buffer[0..<count]) }
        if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return [] }
        if descriptor == outputDescriptor { FileSystem.close(outputDescriptor); outputDescriptor = -1 }
        if descriptor == errorDescriptor { FileSystem.close(errorDescriptor); errorDescriptor = -1 }
        return nil
    }

    /// Closes both pipes.
    public func closeOutput() {
        if outputDescriptor >= 0 { FileSystem.close(outputDescriptor); outputDescriptor = -1 }
        if errorDescriptor >= 0 { FileSystem.close(errorDescriptor); errorDescriptor = -1 }
    }
}
