#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// The number of SIGTERM/SIGINT signals received; written only by the signal handler.
/// A plain global because a signal handler may touch nothing but such memory.
nonisolated(unsafe) private var stopSignalCount: sig_atomic_t = 0

/// Graceful shutdown: the first SIGTERM or SIGINT asks the training loop to finish its
/// current step, write a checkpoint and exit 0; a second one exits at once with
/// 128 + the signal number, as a shell reports a signal death.
public enum StopSignal {
    /// Installs the handlers.
    public static func install() {
        for signalNumber in [SIGTERM, SIGINT] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signalNumber in
                if stopSignalCount > 0 {
                    let text: StaticString = "mae-worker: second stop signal: exiting now without a checkpoint\n"
                    _ = write(2, text.utf8Start, text.utf8CodeUnitCount)
                    _exit(128 + signalNumber)
                }
                stopSignalCount = 1
                // Only async-signal-safe calls here: write(2) of a constant.
                let text: StaticString = "mae-worker: stop requested: finishing this step and writing a checkpoint (signal again to exit at once)\n"
                _ = write(2, text.utf8Start, text.utf8CodeUnitCount)
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(signalNumber, &action, nil)
        }
        // A launcher may have started us with these signals blocked (the mask survives exec).
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGTERM)
        sigaddset(&unblock, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    }

    /// True once a stop was asked for. Not inlined, so every call reads the memory again.
    @inline(never)
    public static var isRequested: Bool { stopSignalCount > 0 }
}
