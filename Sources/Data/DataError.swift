/// A failure of the data pipeline, with one line saying what went wrong and what to do.
public struct DataError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ message: String) { description = message }
}
