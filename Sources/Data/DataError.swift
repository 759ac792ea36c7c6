import System

/// A failure of the data pipeline, with one line saying what went wrong and what to do.
public struct DataError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ message: String) { description = message }
}

extension DataError {
    /// Runs `body`, reporting a failed system call as a `DataError` with the same text,
    /// since the data pipeline's API throws `DataError` only.
    static func reportingSystemCalls<Result>(_ body: () throws -> Result) rethrows -> Result {
        do { return try body() } catch let error as SystemCallError { throw DataError(error.description) }
    }
}
