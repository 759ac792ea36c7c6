/// A failure of the control plane, with what went wrong and what to do about it.
public struct ControlError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
