import Testing
import System
#if canImport(Glibc)
import Glibc
#endif

@Suite struct SystemCallTests {
    @Test func interruptedCallsAreRetried() throws {
        var attempts = 0
        let result = try SystemCall.retrying("read", path: "/some/file") { () -> Int in
            attempts += 1
            if attempts < 3 { errno = EINTR; return -1 }
            return 7
        }
        #expect(result == 7)
        #expect(attempts == 3)
    }

    @Test func otherFailuresAreThrownOnceNamingCallPathAndReason() {
        var attempts = 0
        do {
            try SystemCall.retrying("open", path: "/no/such/file") { () -> Int32 in
                attempts += 1
                errno = ENOENT
                return -1
            }
            Issue.record("a failing call did not throw")
        } catch let error as SystemCallError {
            #expect(error == SystemCallError(call: "open", path: "/no/such/file", code: ENOENT))
            #expect(error.description == "open(/no/such/file) failed: No such file or directory")
        } catch {
            Issue.record("unexpected error \(error)")
        }
        #expect(attempts == 1)
    }

    @Test func retryingInterruptedReturnsOtherFailuresToTheCaller() {
        var attempts = 0
        let result = SystemCall.retryingInterrupted { () -> Int in
            attempts += 1
            errno = attempts == 1 ? EINTR : EAGAIN
            return -1
        }
        #expect(result == -1)
        #expect(errno == EAGAIN)
        #expect(attempts == 2)
    }
}
