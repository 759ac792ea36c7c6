#if canImport(Glibc)
import Glibc
#endif

/// Counts of SIGTERM, SIGINT and SIGHUP received, written only by the signal handler (a
/// handler may touch nothing but such memory); the control loops read them between polls.
nonisolated(unsafe) private var terminateCount: sig_atomic_t = 0
nonisolated(unsafe) private var interruptCount: sig_atomic_t = 0

/// The coordinator's and the agents' signals: counted, acted on by their loops.
public enum ProcessSignals {
    /// Counts SIGTERM and SIGINT (and SIGHUP as a SIGTERM); ignores SIGPIPE (a closed
    /// terminal or peer is an error of the write, not a death).
    public static func install() {
        signal(SIGPIPE, SIG_IGN)
        for signalNumber in [SIGTERM, SIGINT, SIGHUP] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { number in
                if number == SIGINT { interruptCount += 1 } else { terminateCount += 1 }
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(signalNumber, &action, nil)
        }
        // A launcher may have started us with these signals blocked (the mask survives exec).
        var unblock = sigset_t()
        sigemptyset(&unblock)
        for signalNumber in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&unblock, signalNumber) }
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        // Lines reach a log file or a pipe as they are printed, not when a buffer fills.
        setvbuf(stdout, nil, _IOLBF, 0)
    }

    /// SIGTERM (and SIGHUP) received so far.
    @inline(never) public static var terminations: Int { Int(terminateCount) }
    /// SIGINT received so far.
    @inline(never) public static var interruptions: Int { Int(interruptCount) }
}

/// Seconds since 1970 (wall clock): what the run state records, so that a coordinator
/// started again later reads meaningful times.
public func wallClockSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}

/// This machine's host name.
public func hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
    return String(cString: buffer)
}
