/// TCP sockets for the ring and the rendezvous, with every system call wrapped
/// once: EINTR is retried, and a failure becomes a `CollectiveError.systemCall`
/// that names the call and what we were doing. All sockets are non-blocking;
/// the blocking-style helpers wait in `poll` until a deadline.
#if canImport(Glibc)
import Glibc
#endif

/// Seconds on the monotonic clock.
public func monotonicSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}

/// A point in monotonic time after which a wait gives up.
public struct Deadline: Sendable {
    public let time: Double

    public init(time: Double) { self.time = time }

    public static func after(seconds: Double) -> Deadline { Deadline(time: monotonicSeconds() + seconds) }

    /// Seconds left, never negative.
    public var remaining: Double { max(0, time - monotonicSeconds()) }
    public var hasPassed: Bool { monotonicSeconds() >= time }

    /// Milliseconds for `poll`, rounded up so that a wait never ends early.
    var pollMilliseconds: Int32 { Int32(min(Double(Int32.max), (remaining * 1000).rounded(.up))) }
}

/// A host and TCP port, written "host:port".
public struct SocketAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses "host:port" (IPv4 address or host name; port 0...65535).
    public init(parsing text: String) throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65535).contains(port), colon != text.startIndex else {
            throw CollectiveError.invalidArgument("address '\(text)' is not HOST:PORT (e.g. 127.0.0.1:29500)")
        }
        self.init(host: String(text[..<colon]), port: port)
    }

    public var description: String { "\(host):\(port)" }

    /// The IPv4 socket address, resolving a host name if needed.
    func resolved() throws -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        if inet_pton(AF_INET, host, &address.sin_addr) == 1 { return address }
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        defer { if list != nil { freeaddrinfo(list) } }
        guard status == 0, let first = list, let found = first.pointee.ai_addr else {
            let reason = status == 0 ? "no IPv4 address" : String(cString: gai_strerror(status))
            throw CollectiveError.invalidArgument("cannot resolve host '\(host)': \(reason)")
        }
        found.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { address.sin_addr = $0.pointee.sin_addr }
        return address
    }
}

/// One TCP socket that this process owns; `close()` releases it (also on deinit).
public final class Socket {
    public private(set) var descriptor: Int32
    /// The SO_RCVLOWAT last set (the kernel's default is 1).
    private var receiveLowWatermark = 1

    public init(descriptor: Int32) { self.descriptor = descriptor }

    deinit { close() }

    /// Closes the descriptor once; later calls do nothing.
    public func close() {
        guard descriptor >= 0 else { return }
        _ = Glibc.close(descriptor)  // EINTR on close must not be retried on Linux: the descriptor is gone.
        descriptor = -1
    }

    public var isOpen: Bool { descriptor >= 0 }

    // MARK: Creating

    private static func makeDescriptor(_ context: String) throws -> Int32 {
        let descriptor = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw CollectiveError.systemCall(name: "socket", errno: errno, context: context) }
        return descriptor
    }

    /// A listening socket bound to `address` (port 0: the kernel picks one; see `localPort`).
    public static func listening(on address: SocketAddress, backlog: Int32 = 64) throws -> Socket {
        let context = "listening on \(address)"
        let socket = Socket(descriptor: try makeDescriptor(context))
        try socket.setOption(SOL_SOCKET, SO_REUSEADDR, 1, context)
        var bound = try address.resolved()
        let status = withUnsafePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(socket.descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard status == 0 else {
            let failure = errno
            let advice = failure == EADDRINUSE ? ", which another process uses; choose another port (port 0 picks a free one)" : ""
            throw CollectiveError.systemCall(name: "bind", errno: failure, context: context + advice)
        }
        guard Glibc.listen(socket.descriptor, backlog) == 0 else {
            throw CollectiveError.systemCall(name: "listen", errno: errno, context: context)
        }
        return socket
    }

    /// Connects to `address`, waiting until `deadline`; retries refused connections
    /// (the peer may not listen yet) every 50 ms.
    public static func connect(to address: SocketAddress, deadline: Deadline, context: String) throws -> Socket {
        var target = try address.resolved()
        while true {
            let socket = Socket(descriptor: try makeDescriptor(context))
            let status = withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(socket.descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            var failure = status == 0 ? 0 : errno
            if failure == EINPROGRESS || failure == EINTR {
                guard try socket.wait(for: Int16(POLLOUT), until: deadline, context: context) else {
                    throw CollectiveError.timedOut("\(context): no connection to \(address) within the timeout")
                }
                failure = try socket.pendingError(context)
            }
            if failure == 0 { return socket }
            if failure == ECONNREFUSED && !deadline.hasPassed {
                usleep(50_000)
                continue
            }
            if failure == ECONNREFUSED {
                throw CollectiveError.timedOut("\(context): \(address) refused connections until the timeout")
            }
            throw CollectiveError.systemCall(name: "connect", errno: failure, context: "\(context) (\(address))")
        }
    }

    /// Accepts one connection, or returns nil when `deadline` passes first.
    public func accept(until deadline: Deadline, context: String) throws -> Socket? {
        while true {
            // accept4 is not visible without _GNU_SOURCE; accept then set the flags.
            let accepted = Glibc.accept(descriptor, nil, nil)
            if accepted >= 0 {
                let socket = Socket(descriptor: accepted)
                let flags = fcntl(accepted, F_GETFL)
                guard flags >= 0, fcntl(accepted, F_SETFL, flags | O_NONBLOCK) == 0,
                      fcntl(accepted, F_SETFD, FD_CLOEXEC) == 0 else {
                    throw CollectiveError.systemCall(name: "fcntl", errno: errno, context: context)
                }
                return socket
            }
            let failure = errno
            switch failure {
            case EINTR, ECONNABORTED: continue
            case EAGAIN, EWOULDBLOCK:
                guard try wait(for: Int16(POLLIN), until: deadline, context: context) else { return nil }
            default: throw CollectiveError.systemCall(name: "accept", errno: failure, context: context)
            }
        }
    }

    // MARK: Options

    public func setOption(_ level: Int32, _ name: Int32, _ value: Int32, _ context: String) throws {
        var value = value
        guard setsockopt(descriptor, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw CollectiveError.systemCall(name: "setsockopt", errno: errno, context: context)
        }
    }

    /// TCP_NODELAY (no Nagle delay on the last small piece of a message) and, when
    /// `bufferBytes` > 0, send and receive buffers of that size.
    func configureForBulkTransfer(bufferBytes: Int, context: String) throws {
        try setOption(Int32(IPPROTO_TCP), TCP_NODELAY, 1, context)
        if bufferBytes > 0 {
            try setOption(SOL_SOCKET, SO_SNDBUF, Int32(clamping: bufferBytes), context)
            try setOption(SOL_SOCKET, SO_RCVBUF, Int32(clamping: bufferBytes), context)
        }
    }

    /// Makes `poll` report the socket readable only once `bytes` have arrived, so a
    /// waiting receiver wakes for a large piece instead of for every packet.
    /// Callers never ask for more bytes than the peer is about to send.
    func setReceiveLowWatermark(_ bytes: Int, context: @autoclosure () -> String) throws {
        let value = max(1, bytes)
        guard value != receiveLowWatermark else { return }
        try setOption(SOL_SOCKET, SO_RCVLOWAT, Int32(clamping: value), context())
        receiveLowWatermark = value
    }

    /// The port this socket is bound to.
    public func localPort(context: String) throws -> Int {
        Int(UInt16(bigEndian: try localAddress(context: context).sin_port))
    }

    /// This end's address (getsockname).
    func localAddress(context: String) throws -> sockaddr_in { try address("getsockname", getsockname, context: context) }

    /// The other end's address (getpeername).
    func peerAddress(context: String) throws -> sockaddr_in { try address("getpeername", getpeername, context: context) }

    /// The other end as "HOST:PORT" for log lines ("an unknown peer" when the kernel cannot say).
    public var peerDescription: String {
        guard var peer = try? peerAddress(context: "naming the peer") else { return "an unknown peer" }
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        guard inet_ntop(AF_INET, &peer.sin_addr, &text, socklen_t(text.count)) != nil else { return "an unknown peer" }
        return String(cString: text) + ":" + String(UInt16(bigEndian: peer.sin_port))
    }

    private func address(_ name: String, _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32,
                         context: String) throws -> sockaddr_in {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let status = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(descriptor, $0, &length) }
        }
        guard status == 0 else { throw CollectiveError.systemCall(name: name, errno: errno, context: context) }
        return address
    }

    /// The socket's pending error (SO_ERROR), e.g. after a non-blocking connect.
    func pendingError(_ context: String) throws -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &value, &length) == 0 else {
            throw CollectiveError.systemCall(name: "getsockopt", errno: errno, context: context)
        }
        return value
    }

    // MARK: Waiting

    /// Waits until the socket is ready for `events` (or has an error or hang-up);
    /// returns false when `deadline` passes first.
    public func wait(for events: Int16, until deadline: Deadline, context: String) throws -> Bool {
        var entry = pollfd(fd: descriptor, events: events, revents: 0)
        while true {
            let ready = Glibc.poll(&entry, 1, deadline.pollMilliseconds)
            if ready > 0 { return true }
            if ready == 0 { if deadline.hasPassed { return false } else { continue } }
            if errno != EINTR { throw CollectiveError.systemCall(name: "poll", errno: errno, context: context) }
        }
    }

    // MARK: Non-blocking transfer

    /// Sends what the kernel takes now; returns the byte count, 0 when it would block.
    @inline(__always)
    public func sendSome(_ bytes: UnsafeRawPointer, count: Int, context: @autoclosure () -> String) throws -> Int {
        while true {
            let sent = Glibc.send(descriptor, bytes, count, Int32(MSG_NOSIGNAL))
            if sent >= 0 { return sent }
            let failure = errno
            if failure == EINTR { continue }
            if failure == EAGAIN || failure == EWOULDBLOCK { return 0 }
            if failure == EPIPE || failure == ECONNRESET {
                throw CollectiveError.peerClosed("\(context()): connection closed by the peer while sending")
            }
            throw CollectiveError.systemCall(name: "send", errno: failure, context: context())
        }
    }

    /// Receives what has arrived; returns the byte count, 0 when nothing is there yet.
    /// The peer closing the connection is an error.
    @inline(__always)
    public func receiveSome(_ bytes: UnsafeMutableRawPointer, count: Int, context: @autoclosure () -> String) throws -> Int {
        while true {
            let received = Glibc.recv(descriptor, bytes, count, 0)
            if received > 0 { return received }
            if received == 0 {
                throw CollectiveError.peerClosed("\(context()): the peer closed the connection (process ended?)")
            }
            let failure = errno
            if failure == EINTR { continue }
            if failure == EAGAIN || failure == EWOULDBLOCK { return 0 }
            if failure == ECONNRESET {
                throw CollectiveError.peerClosed("\(context()): connection reset by the peer (process died?)")
            }
            throw CollectiveError.systemCall(name: "recv", errno: failure, context: context())
        }
    }

    /// Ends our direction of the stream (the peer reads end of stream); receiving goes on.
    public func shutdownWriting() {
        _ = Glibc.shutdown(descriptor, Int32(SHUT_WR))
    }

    // MARK: Whole messages (handshakes, rendezvous)

    /// Sends all of `bytes` before `deadline`.
    public func sendAll(_ bytes: [UInt8], until deadline: Deadline, context: String) throws {
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let sent = try sendSome(raw.baseAddress! + offset, count: raw.count - offset, context: context)
                offset += sent
                if sent == 0, !(try wait(for: Int16(POLLOUT), until: deadline, context: context)) {
                    throw CollectiveError.timedOut("\(context): the peer took no data within the timeout")
                }
            }
        }
    }

    /// Receives exactly `count` bytes before `deadline`.
    public func receiveExactly(_ count: Int, until deadline: Deadline, context: String) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < count {
                let received = try receiveSome(raw.baseAddress! + offset, count: count - offset, context: context)
                offset += received
                if received == 0, !(try wait(for: Int16(POLLIN), until: deadline, context: context)) {
                    throw CollectiveError.timedOut("\(context): no data from the peer within the timeout")
                }
            }
        }
        return bytes
    }
}
