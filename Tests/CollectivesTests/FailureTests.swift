import Foundation
import Testing
@testable import Collectives

/// A peer that dies, stalls or stops calling makes every other rank's call fail
/// within the timeout instead of hanging.
@Suite(.serialized) struct FailureTests {
    /// With a sender thread, with one thread, and with one thread that retries its
    /// sockets for a while before it sleeps (the retries must not stretch the timeout).
    @Test(arguments: [(true, nil), (false, 0), (false, 200_000)])
    func aRankThatStopsCallingMakesTheOthersTimeOut(senderThread: Bool, spins: Int?) throws {
        let timeout = 1.0
        let outcomes = try withRing(3, timeoutSeconds: timeout, senderThread: senderThread, lanes: 2,
                                    spins: spins) { ring in
            try stallLastRank(ring, timeout: timeout)
        }
        for rank in 0..<2 {
            let (elapsed, failure, later) = try outcomes[rank].get()
            #expect(failure.contains("timed out") || failure.contains("peer lost"), "rank \(rank): \(failure)")
            // Bounded, with slack for a loaded machine: the call must not hang.
            #expect(elapsed < timeout + 10, "rank \(rank) failed only after \(elapsed) s")
            #expect(later.contains("closed"), "rank \(rank) after the failure: \(later)")
        }
    }

    /// Starts `world` worker processes that all-reduce in a loop over `transport`, waits
    /// until all are running, runs `whileRunning` with their pids, applies `signal` to
    /// rank 1, and returns the other ranks' ends. `hierarchical` runs 4 ranks on two
    /// "machines" (loopback addresses 127.0.0.1 and 127.0.0.2) of two each. `timeout` bounds
    /// forming the ring too, from each process's start: on a loaded machine the processes
    /// start seconds apart, so it is not shorter than 5 s.
    func signalOneWorker(_ signal: Int32, transport: String, timeout: Double,
                         whileRunning: ([Int32]) -> Void = { _ in })
        throws -> [(rank: Int, exited: Bool, status: Int32, error: String, seconds: Double)] {
        let hosts = transport == "hierarchical" ? machineHosts(machines: 2, perMachine: 2) : ["127.0.0.1", "127.0.0.1", "127.0.0.1"]
        let world = hosts.count
        let mae = try maeExecutable()
        let directory = try temporaryDirectory("signal\(signal)")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let token = uniqueToken("signal")
        let server = try RendezvousServer(address: SocketAddress(host: "127.0.0.1", port: 0), worldSize: world,
                                          jobToken: token, generation: 0, timeoutSeconds: 20)
        defer { server.close() }
        var children: [Child] = []
        defer { for child in children { child.stop() } }
        for rank in 0..<world {
            children.append(try Child(mae, ["collective-worker", "--backend", "tcp", "--transport", transport,
                                             "--mode", "loop", "--rank", String(rank),
                                             "--world", String(world), "--address", server.address.description,
                                             "--host-rendezvous", "no", "--token", token, "--timeout", String(timeout),
                                             "--listen-host", hosts[rank],
                                             "--floats", "600000", "--iters", "100000", "--pause-ms", "20"],
                                      directory: directory, name: "rank\(rank)"))
        }
        let running = Child.waitUntil(seconds: 40) { children.allSatisfy { $0.output.contains("iteration 3\n") } }
        #expect(running, "workers did not start: \(children.map { $0.errorOutput })")
        guard running else { return [] }
        whileRunning(children.map(\.pid))
        kill(children[1].pid, signal)
        let signalled = monotonicSeconds()
        var ends: [(rank: Int, exited: Bool, status: Int32, error: String, seconds: Double)] = []
        for rank in 0..<world where rank != 1 {
            let exited = children[rank].waitForExit(seconds: timeout + 15)
            ends.append((rank, exited, exited ? children[rank].process.terminationStatus : 0, children[rank].errorOutput,
                         monotonicSeconds() - signalled))
        }
        return ends
    }

    @Test(arguments: ["ring", "shm", "hierarchical"])
    func killingAPeerMakesEveryOtherRankFail(transport: String) throws {
        let start = monotonicSeconds()
        // A killed peer's connections close: the others fail at once, well before their timeout.
        let timeout = 10.0
        for end in try signalOneWorker(SIGKILL, transport: transport, timeout: timeout) {
            #expect(end.seconds < timeout, "rank \(end.rank) ended only \(end.seconds) s after the kill (its timeout?)")
            #expect(end.exited, "rank \(end.rank) still runs after its peer was killed")
            #expect(end.status != 0, "rank \(end.rank) exited with success")
            #expect(end.error.contains("collective"), "rank \(end.rank): \(end.error)")
            if transport == "shm" {
                // The pidfd says at once that the process ended: the error names it.
                #expect(end.error.contains("rank 1 (process"), "rank \(end.rank): \(end.error)")
            }
        }
        #expect(monotonicSeconds() - start < 60)
    }

    @Test(arguments: ["ring", "shm", "hierarchical"])
    func stoppingAPeerMakesEveryOtherRankFailWithinTheTimeout(transport: String) throws {
        for end in try signalOneWorker(SIGSTOP, transport: transport, timeout: 5) {
            #expect(end.exited, "rank \(end.rank) still runs after its peer was stopped")
            #expect(end.status != 0, "rank \(end.rank) exited with success")
            #expect(end.error.contains("timed out") || end.error.contains("peer lost"), "rank \(end.rank): \(end.error)")
            if transport == "shm" {
                #expect(end.error.contains("rank 1 made no progress") || end.error.contains("peer lost"),
                        "rank \(end.rank): \(end.error)")
            }
        }
    }

    /// The shared segment is mapped by every rank but reachable by no name and no open
    /// descriptor once all have joined, so no crash can leave it behind.
    @Test func theSharedSegmentHasNoNameAndNoDescriptor() throws {
        let namedBefore = Set((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? [])
        var checked = 0
        _ = try signalOneWorker(SIGKILL, transport: "shm", timeout: 10) { pids in
            for pid in pids {
                let maps = (try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)) ?? ""
                #expect(maps.contains("/memfd:mae-collective (deleted)"), "rank process \(pid) has not mapped the segment")
                let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
                for descriptor in descriptors {
                    let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(descriptor)")) ?? ""
                    #expect(!target.contains("memfd"), "process \(pid) still holds the segment as descriptor \(descriptor)")
                }
                checked += 1
            }
        }
        #expect(checked == 3)
        let namedAfter = Set((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? [])
        #expect(namedAfter.subtracting(namedBefore).isEmpty, "left in /dev/shm: \(namedAfter.subtracting(namedBefore))")
    }

    /// The worker's own check of every operation, over real processes and the
    /// bench's code path (rank 0 hosts the rendezvous itself); every rank ends with the same
    /// bits of a mean whose bits depend on the order of the adds.
    @Test(arguments: ["ring", "shm", "hierarchical"])
    func workerProcessesPassTheirChecks(transport: String) throws {
        let mae = try maeExecutable()
        let directory = try temporaryDirectory("check")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // A free port for rank 0 to host the rendezvous on.
        let probe = try Socket.listening(on: SocketAddress(host: "127.0.0.1", port: 0))
        let port = try probe.localPort(context: "test")
        probe.close()
        let token = uniqueToken("check")
        // Hierarchical: two "machines" (loopback addresses) of two ranks each.
        let hosts = transport == "hierarchical" ? machineHosts(machines: 2, perMachine: 2) : ["127.0.0.1", "127.0.0.1", "127.0.0.1"]
        let kind = ["ring": "TCPRingCollective", "shm": "SharedMemoryCollective", "hierarchical": "HierarchicalCollective"][transport]!
        var children: [Child] = []
        defer { for child in children { child.stop() } }
        for rank in hosts.indices {
            children.append(try Child(mae, ["collective-worker", "--backend", "tcp", "--transport", transport,
                                             "--mode", "check", "--rank", String(rank), "--listen-host", hosts[rank],
                                             "--world", String(hosts.count), "--address", "127.0.0.1:\(port)", "--token", token,
                                             "--timeout", "20"], directory: directory, name: "rank\(rank)"))
        }
        var digests: Set<String> = []
        for (rank, child) in children.enumerated() {
            let status = child.exitStatus(within: 60)
            #expect(status == 0, "rank \(rank) \(status == nil ? "did not finish" : "failed"): \(child.errorOutput)")
            #expect(child.output.contains("check ok rank=\(rank) world=\(hosts.count)"), "rank \(rank): \(child.output)")
            #expect(child.output.contains("kind=\(kind) "), "rank \(rank): \(child.output)")
            for line in child.output.split(separator: "\n") where line.hasPrefix("collective ") {
                digests.insert(String(line.split(separator: " ").last!))
            }
        }
        #expect(digests.count == 1, "the ranks' means differ: \(digests)")
    }
}
