import Foundation
import Testing
@testable import Collectives

/// The timeout of calls that have none (the MPI backend's).
@Suite struct CallWatchdogTests {
    /// What the watchdog reported, and when.
    final class Expiries: @unchecked Sendable {
        let lock = NSLock()
        var calls: [(description: String, at: Double)] = []
        func record(_ description: String) { lock.withLock { calls.append((description, monotonicSeconds())) } }
        var snapshot: [(description: String, at: Double)] { lock.withLock { calls } }
    }

    @Test func aCallPastItsTimeoutExpiresOnceAndCallsThatEndInTimeDoNot() throws {
        let expiries = Expiries()
        let timeout = 0.3
        let watchdog = try CallWatchdog(timeoutSeconds: timeout) { expiries.record($0) }
        defer { watchdog.stop() }
        // Calls that end well within the timeout, back to back for longer than the timeout.
        for index in 0..<8 {
            watchdog.arm("quick call \(index)")
            usleep(50_000)
            watchdog.disarm()
        }
        #expect(expiries.snapshot.isEmpty, "\(expiries.snapshot)")
        // A call that never ends.
        let start = monotonicSeconds()
        watchdog.arm("stuck call")
        #expect(Child.waitUntil(seconds: 10) { !expiries.snapshot.isEmpty }, "the stuck call never expired")
        usleep(UInt32(timeout * 3 * 1e6))   // it expires once, not again and again
        watchdog.disarm()
        let calls = expiries.snapshot
        #expect(calls.map(\.description) == ["stuck call"])
        if let first = calls.first {
            #expect(first.at - start >= timeout, "expired after \(first.at - start) s, before the timeout of \(timeout) s")
            #expect(first.at - start < timeout + 5, "expired only after \(first.at - start) s")
        }
    }
}
