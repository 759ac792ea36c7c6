#if canImport(Glibc)
import Glibc
#endif

extension SocketAddress {
    /// The IPv4 address of this machine's interface that routes toward `remote`: the address
    /// a ring listener must announce so that workers on other machines can reach it.
    ///
    /// Connecting a UDP socket sends no packet; it only makes the kernel choose the route
    /// and source address, which `getsockname` then reads. A loopback `remote` gives
    /// 127.0.0.1, so single-machine jobs never leave loopback.
    public static func localAddress(toward remote: SocketAddress) throws -> String {
        var target = try SocketAddress(host: remote.host, port: max(remote.port, 1)).resolved()
        let descriptor = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard descriptor >= 0 else { throw systemCallError("socket", toward: remote) }
        defer { Glibc.close(descriptor) }
        let connected = withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw systemCallError("connect", toward: remote) }
        var local = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard named == 0 else { throw systemCallError("getsockname", toward: remote) }
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        guard inet_ntop(AF_INET, &local.sin_addr, &text, socklen_t(text.count)) != nil else {
            throw systemCallError("inet_ntop", toward: remote)
        }
        return String(cString: text)
    }
}

private func systemCallError(_ call: String, toward remote: SocketAddress) -> CollectiveError {
    let reason = String(cString: strerror(errno))
    return CollectiveError.invalidArgument(
        "cannot find this machine's address toward \(remote) (\(call): \(reason)); pass --listen-host ADDRESS")
}
