import Testing
@testable import Collectives

@Suite struct LocalAddressTests {
    @Test func loopbackRendezvousKeepsTheRingOnLoopback() throws {
        #expect(try SocketAddress.localAddress(toward: SocketAddress(host: "127.0.0.1", port: 29500)) == "127.0.0.1")
        #expect(try SocketAddress.localAddress(toward: SocketAddress(host: "127.0.0.7", port: 1)) == "127.0.0.1")
    }

    @Test func unknownHostIsAnErrorThatSaysWhatToDo() {
        #expect {
            try SocketAddress.localAddress(toward: SocketAddress(host: "no-such-host.invalid", port: 29500))
        } throws: { error in
            "\(error)".contains("no-such-host.invalid")
        }
    }
}
