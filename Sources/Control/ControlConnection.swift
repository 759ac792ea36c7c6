import Collectives
import Foundation

/// One framed control connection over a `Socket`: whole messages in, whole messages out.
/// Sends are serialised by a lock (a worker's training thread and heartbeat thread share one).
public final class ControlConnection: @unchecked Sendable {
    public let socket: Socket
    /// Who is at the other end, for messages ("rank 2 on node-a", "the coordinator at …").
    public var peer: String
    public var reader = FrameReader()
    private let sendLock = NSLock()

    public init(socket: Socket, peer: String) {
        self.socket = socket
        self.peer = peer
    }

    /// Sends one message; a peer that takes nothing for 5 s is treated as gone.
    public func send(_ message: ControlMessage) throws {
        let frame = Frame.encode(try message.encoded())
        sendLock.lock()
        defer { sendLock.unlock() }
        guard socket.isOpen else { throw ControlError("the connection to \(peer) is closed") }
        try socket.sendAll(frame, until: .after(seconds: 5), context: "sending \(message.name) to \(peer)")
    }

    /// Receives what has arrived without waiting and returns the whole messages in it;
    /// throws when the peer closed the connection or broke the protocol.
    public func receiveAvailable() throws -> [ControlMessage] {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = try chunk.withUnsafeMutableBytes {
                try socket.receiveSome($0.baseAddress!, count: $0.count, context: "receiving from \(peer)")
            }
            if count == 0 { break }
            reader.append(Array(chunk[0..<count]))
            // A peer that sends faster than we read cannot grow the buffer beyond one frame's limit.
            if count < chunk.count || reader.isFull { break }
        }
        var messages: [ControlMessage] = []
        while let payload = try reader.next() { messages.append(try ControlMessage.decode(payload)) }
        return messages
    }

    /// Waits for the next message until `deadline`; nil when none came in time.
    public func receive(until deadline: Deadline) throws -> ControlMessage? {
        while true {
            if let payload = try reader.next() { return try ControlMessage.decode(payload) }
            guard try socket.wait(for: Int16(POLLIN), until: deadline, context: "waiting for \(peer)") else { return nil }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = try chunk.withUnsafeMutableBytes {
                try socket.receiveSome($0.baseAddress!, count: $0.count, context: "receiving from \(peer)")
            }
            reader.append(Array(chunk[0..<count]))
        }
    }

    public func close() {
        sendLock.lock()
        socket.close()
        sendLock.unlock()
    }
}
