/// The TCP congestion control of the ring's connections.
///
/// Between two ranks on one machine nothing is lost or queued by a network, so
/// congestion control can only cost time. Some systems (this project's test machines
/// among them) default to BBR, which paces every send with kernel timers when the
/// interface has no `fq` queue (loopback has none) and every 10 s drains the
/// connection to 4 packets to measure its round trip: a world-2 all-reduce over
/// loopback ran 1.2–1.35× faster with Reno (docs/PERFORMANCE.md). Between machines
/// the network is real, and the administrator's choice stands.
import System
#if canImport(Glibc)
import Glibc
#endif

/// Which TCP congestion control algorithm ring connections use.
public enum CongestionControl: Sendable, Equatable, CustomStringConvertible {
    /// Reno on connections between ranks of this machine; the system's default on
    /// connections to other machines.
    case automatic
    /// The system's default (`net.ipv4.tcp_congestion_control`) on every connection.
    case system
    /// This algorithm on every connection. Unprivileged processes may choose those in
    /// `net.ipv4.tcp_allowed_congestion_control`.
    case named(String)

    /// The algorithm `automatic` chooses within a machine: built into every Linux
    /// kernel and allowed to every user.
    public static let withinMachine = "reno"

    /// "auto", "system", or an algorithm's name (as Linux spells them: lower-case letters,
    /// digits and underscores, at most 15); nil for anything else.
    public init?(parsing text: String) {
        switch text {
        case "auto": self = .automatic
        case "system": self = .system
        default:
            guard (1...15).contains(text.utf8.count),
                  text.utf8.allSatisfy({ (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
                      || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "_") }) else { return nil }
            self = .named(text)
        }
    }

    /// What the command-line options say about this setting.
    public static let optionHelp = "TCP congestion control of the ring connections: auto (reno between ranks of one "
        + "machine, the system's default between machines), system, or a name such as cubic"

    public var description: String {
        switch self {
        case .automatic: return "auto"
        case .system: return "system"
        case .named(let name): return name
        }
    }

    /// The algorithm to set on `socket`, or nil to keep the system's default.
    func algorithm(for socket: Socket, context: String) throws -> String? {
        switch self {
        case .automatic: return try socket.isWithinThisMachine(context: context) ? Self.withinMachine : nil
        case .system: return nil
        case .named(let name): return name
        }
    }
}

extension Socket {
    /// Sets the connection's congestion control as `choice` decides.
    func applyCongestionControl(_ choice: CongestionControl, context: String) throws {
        guard let name = try choice.algorithm(for: self, context: context) else { return }
        let status = name.withCString { setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_CONGESTION, $0, socklen_t(strlen($0))) }
        guard status == 0 else {
            let code = errno
            let listing: (String, String) = code == EPERM
                ? ("allowed to this user", "/proc/sys/net/ipv4/tcp_allowed_congestion_control")
                : ("available", "/proc/sys/net/ipv4/tcp_available_congestion_control")
            let names = (try? FileSystem.readFile(listing.1)).map { String(decoding: $0, as: UTF8.self) }
            throw CollectiveError.invalidArgument(
                "\(context): cannot use TCP congestion control '\(name)' (\(String(cString: strerror(code)))); "
                    + "\(listing.0): \(names?.trimmingWhitespace ?? "unknown"); choose one of those, or auto or system")
        }
    }

    /// The connection's congestion control algorithm.
    func congestionControl(context: String) throws -> String {
        var name = [CChar](repeating: 0, count: 32)
        var length = socklen_t(name.count - 1)
        guard getsockopt(descriptor, Int32(IPPROTO_TCP), TCP_CONGESTION, &name, &length) == 0 else {
            throw CollectiveError.systemCall(name: "getsockopt", errno: errno, context: context)
        }
        return String(cString: name)
    }

    /// Whether both ends of this connection are on this machine: the peer's address is
    /// a loopback address or this socket's own, so the kernel routes it over loopback.
    func isWithinThisMachine(context: String) throws -> Bool {
        let local = try localAddress(context: context), peer = try peerAddress(context: context)
        return peer.sin_addr.s_addr == local.sin_addr.s_addr || UInt32(bigEndian: peer.sin_addr.s_addr) >> 24 == 127
    }
}

private extension String {
    var trimmingWhitespace: String {
        String(self.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
