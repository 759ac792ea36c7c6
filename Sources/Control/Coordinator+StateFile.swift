import Collectives
import Foundation
import Kernels
import System
import Training
#if canImport(Glibc)
import Glibc
#endif

/// Signals, the state file and the summary at the end.
extension Coordinator {
    func handleSignals(now: Double) {
        let terminations = ProcessSignals.terminations, interruptions = ProcessSignals.interruptions
        let received = terminations + interruptions - handledTerminations - handledInterruptions
        if received > 0 {
            handledTerminations = terminations
            handledInterruptions = interruptions
            let reason = interruptions > 0 ? "SIGINT" : "SIGTERM"
            if firstSignalTime == nil || state.phase != .stopping {
                firstSignalTime = firstSignalTime ?? now
                apply(.stopRequested(reason: reason), now: now)
            } else if let first = firstSignalTime, now - first >= 1, !state.phase.isFinal {
                // A second signal (not the same Ctrl-C reaching us twice, through the terminal
                // and through launch.sh): no more waiting for the checkpoint.
                for action in state.end(.stopped, "second stop signal: stopping the workers without waiting", now: now) {
                    perform(action, now: now)
                }
            }
        }
        if configuration.exitWithParent, getppid() != parentAtStart, !state.stopRequested {
            apply(.stopRequested(reason: "the launcher (pid \(parentAtStart)) went away"), now: now)
        }
    }

    /// Writes the state file when it changed (at most twice a second unless `force`), atomically.
    func save(force: Bool) throws {
        let now = wallClockSeconds()
        guard force || (state != savedState && (now - lastSaved >= 0.5 || state.phase != savedState?.phase)) else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let bytes = Array(try encoder.encode(state))
        let path = configuration.runDirectory + "/" + Self.stateFileName
        try FileSystem.writeFile(path + ".tmp", bytes: bytes, synchronize: true)
        try FileSystem.rename(path + ".tmp", path)
        lastSaved = now
        savedState = state
    }

    /// Reads a state file written by `save`.
    public static func readState(_ path: String) throws -> RunState {
        do {
            return try JSONDecoder().decode(RunState.self, from: Data(try FileSystem.readFile(path)))
        } catch let error as SystemCallError {
            throw ControlError("cannot read \(path): \(error.reason)")
        } catch {
            throw ControlError("\(path) is not a coordinator state file (\(error))")
        }
    }

    func printSummary() {
        let status = state.status(now: wallClockSeconds(), live: false)
        let wall = wallClockSeconds() - state.startedAt
        var lines = ["coordinator: run \(state.phase.rawValue): step \(status.step) of \(status.totalSteps), final loss "
                     + (status.loss.map { String(format: "%.4f", $0) } ?? "-") + ", restarts \(state.restarts), "
                     + String(format: "wall time %.1f s", wall) + ", last checkpoint \(status.lastCheckpoint ?? "none")"]
        if !state.failures.isEmpty {
            lines.append("coordinator: failures:")
            lines += state.failures.map { "coordinator:   generation \($0.generation): \($0.what)" }
        }
        let code = CoordinatorExit(rawValue: state.exitCode ?? 1) ?? .failed
        lines.append("coordinator: exit status \(code.rawValue) (\(code.meaning))")
        print(lines.joined(separator: "\n"))
        fflush(stdout)
    }
}
