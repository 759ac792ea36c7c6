/// A failure of the control plane, with what went wrong and what to do about it.
public struct ControlError: Error, CustomStringConvertible, Sendable {
    public let description: String
    /// True when the coordinator answered the handshake with `refused` (it is there, and
    /// will not have this peer), as opposed to not being reachable.
    public let isRefusal: Bool

    public init(_ description: String, isRefusal: Bool = false) {
        self.description = description
        self.isRefusal = isRefusal
    }
}
