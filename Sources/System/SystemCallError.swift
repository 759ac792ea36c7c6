#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// A failed system call: which call, on which path, and why (from errno).
public struct SystemCallError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The call, e.g. "open".
    public let call: String
    /// The path it was made for ("from -> to" for a rename).
    public let path: String
    /// errno at the time of the failure.
    public let code: Int32

    public init(call: String, path: String, code: Int32) {
        self.call = call
        self.path = path
        self.code = code
    }

    /// The reason, e.g. "No such file or directory".
    public var reason: String { Self.reason(for: code) }

    /// The text of an errno value, e.g. "No such file or directory".
    public static func reason(for code: Int32) -> String { String(cString: strerror(code)) }

    public var description: String { "\(call)(\(path)) failed: \(reason)" }
}

/// The one place that turns the C convention (-1 and errno) into Swift.
public enum SystemCall {
    /// Runs `body`, a call that returns a negative value and sets errno when it fails,
    /// again while it fails with EINTR (a signal arrived); any other failure is thrown
    /// as a `SystemCallError` naming `call` and `path`.
    @inlinable @discardableResult
    public static func retrying<Result: BinaryInteger>(_ call: String, path: String, _ body: () -> Result) throws -> Result {
        let result = retryingInterrupted(body)
        guard result >= 0 else { throw SystemCallError(call: call, path: path, code: errno) }
        return result
    }

    /// Runs `body` again while it fails with EINTR and returns its result: a negative
    /// value, with errno set, for any other failure, which the caller handles (for calls
    /// whose errors mean more than "failed", e.g. EAGAIN on a non-blocking socket).
    @inlinable
    public static func retryingInterrupted<Result: BinaryInteger>(_ body: () -> Result) -> Result {
        while true {
            let result = body()
            if result >= 0 || errno != EINTR { return result }
        }
    }
}
