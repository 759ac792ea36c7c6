import Foundation
import TestSupport
import Kernels
import Testing
@testable import Collectives

/// Runs `body` for ranks 0..<world, each on its own thread (ranks as threads in one
/// process, over loopback sockets), and returns each rank's outcome. Gives up
/// waiting after `limitSeconds` (a rank that did not finish is reported as such).
func runRanks<Value: Sendable>(_ world: Int, limitSeconds: Double = 60,
                               _ body: @escaping @Sendable (Int) throws -> Value) -> [Result<Value, Error>] {
    let outcomes = RankOutcomes<Value>(world)
    let group = DispatchGroup()
    for rank in 0..<world {
        group.enter()
        let thread = Thread {
            let result = Result { try body(rank) }
            outcomes.lock.lock()
            outcomes.values[rank] = result
            outcomes.lock.unlock()
            group.leave()
        }
        thread.stackSize = 1 << 22
        thread.start()
    }
    _ = group.wait(timeout: .now() + limitSeconds)
    outcomes.lock.lock()
    defer { outcomes.lock.unlock() }
    return outcomes.values.enumerated().map { rank, value in
        value ?? .failure(CollectiveError.timedOut("test: rank \(rank) did not finish within \(limitSeconds) s"))
    }
}

/// The ranks' results, filled in by their threads.
final class RankOutcomes<Value>: @unchecked Sendable {
    let lock = NSLock()
    var values: [Result<Value, Error>?]
    init(_ count: Int) { values = Array(repeating: nil, count: count) }
}

/// A job token unique to this test process and call.
func uniqueToken(_ label: String) -> String {
    "test-\(label)-\(getpid())-\(UInt64(monotonicSeconds() * 1e9))"
}

/// Joins ranks 0..<world into a ring through a rendezvous the test hosts on a free port.
func withRing<Value: Sendable>(_ world: Int, segmentBytes: Int = 1 << 20, timeoutSeconds: Double = 20,
                               senderThread: Bool = true, lanes: Int = 1, spins: Int? = nil,
                               congestionControl: CongestionControl = .automatic,
                               _ body: @escaping @Sendable (TCPRingCollective) throws -> Value) throws -> [Result<Value, Error>] {
    let token = uniqueToken("ring\(world)")
    let server = try RendezvousServer(address: SocketAddress(host: "127.0.0.1", port: 0), worldSize: world,
                                      jobToken: token, generation: 3, timeoutSeconds: timeoutSeconds)
    defer { server.close() }
    let address = server.address.description
    // The ranks' own timeouts bound every call; the limit only catches a hang, with room for a
    // loaded machine (where forming the ring alone may take seconds).
    return runRanks(world, limitSeconds: timeoutSeconds * 3 + 30) { rank in
        let config = RendezvousConfig(rank: rank, worldSize: world, address: address, jobToken: token, generation: 3,
                                      timeoutSeconds: timeoutSeconds, hostsRendezvous: false, segmentBytes: segmentBytes,
                                      sendsOnSeparateThread: senderThread, lanes: lanes,
                                      minimumLaneBytes: testLaneBytes, spinsBeforeSleeping: spins,
                                      congestionControl: congestionControl)
        let ring = try TCPRingCollective.connect(config)
        defer { ring.close() }
        return try body(ring)
    }
}

/// Expects `actual` to equal `expected` bit for bit; reports the number of differing
/// elements and the worst one.
func expectSameBits(_ actual: [Float], _ expected: [Float], _ what: String,
                    sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(actual.count == expected.count, "\(what): \(actual.count) elements, expected \(expected.count)",
            sourceLocation: sourceLocation)
    var differing = 0, worst = -1, worstError: Float = -1
    for index in 0..<min(actual.count, expected.count) where actual[index].bitPattern != expected[index].bitPattern {
        differing += 1
        let error = abs(actual[index] - expected[index])
        if !(error <= worstError) { worst = index; worstError = error }
    }
    let worstPair = worst >= 0 ? "\(actual[worst]) vs \(expected[worst])" : ""
    #expect(differing == 0, "\(what): \(differing) elements differ; worst at \(worst): \(worstPair)",
            sourceLocation: sourceLocation)
}

/// Rank `rank`'s input of `count` random floats in [-1, 1).
func randomInput(rank: Int, count: Int, seed: UInt64) -> [Float] {
    var random = CounterRandom(seed: seed, purpose: .test, epoch: count % (1 << 20), index: rank)
    return (0..<count).map { _ in random.nextFloat() * 2 - 1 }
}

/// Lanes in the tests get used from this many bytes on, so short buffers exercise them.
let testLaneBytes = 4096

/// Each element of the ranks' `inputs` reduced in the TCP ring's order: with K lanes in use
/// (each gets at least `laneBytes`), lane l owns elements [l·n/K, (l+1)·n/K); within a lane of
/// m elements, element e of chunk c (lane elements [c·m/N, (c+1)·m/N)) is `reduce` of the
/// values x_c, x_{c+1}, …, x_{c−1}, ranks in ring order from c.
func ringOrderReduce(_ inputs: [[Float]], lanes: Int = 1, laneBytes: Int = testLaneBytes,
                     _ reduce: ([Float]) -> Float) -> [Float] {
    let world = inputs.count, count = inputs[0].count
    let used = max(1, min(lanes, count * 4 / laneBytes))
    var result = [Float](repeating: 0, count: count)
    for lane in 0..<used {
        let laneStart = lane * count / used, laneCount = (lane + 1) * count / used - laneStart
        for chunk in 0..<world {
            for local in (chunk * laneCount / world)..<((chunk + 1) * laneCount / world) {
                let element = laneStart + local
                result[element] = reduce((0..<world).map { inputs[(chunk + $0) % world][element] })
            }
        }
    }
    return result
}

/// The ring's sum, computed naively: ((x_c + x_{c+1}) + …) + x_{c−1} (`ringOrderReduce`).
func naiveRingSum(_ inputs: [[Float]], lanes: Int = 1) -> [Float] {
    ringOrderReduce(inputs, lanes: lanes) { values in values.dropFirst().reduce(values[0], +) }
}

/// The built `mae` executable next to the test bundle (`swift build --build-tests` builds both).
func maeExecutable() throws -> String {
    guard let path = builtExecutable("mae") else {
        throw CollectiveError.invalidArgument("no built 'mae' next to the tests; run 'swift build --build-tests' first")
    }
    return path
}

/// A child process whose output goes to files; the test stops it by pid.
final class Child {
    let process = Process()
    let outputPath: String
    let errorPath: String

    init(_ executable: String, _ arguments: [String], directory: String, name: String) throws {
        outputPath = directory + "/\(name).out"
        errorPath = directory + "/\(name).err"
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle(forWritingAtPath: outputPath)
        process.standardError = FileHandle(forWritingAtPath: errorPath)
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    var errorOutput: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }

    /// Waits until `condition` holds, polling every 20 ms for at most `seconds`.
    @discardableResult
    static func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = monotonicSeconds() + seconds
        while monotonicSeconds() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }

    /// Waits at most `seconds` for the process to end; true when it did.
    func waitForExit(seconds: Double) -> Bool { Child.waitUntil(seconds: seconds) { !process.isRunning } }

    /// The exit status once the process has ended within `seconds`; nil while it still
    /// runs (Foundation traps on the status of a running process).
    func exitStatus(within seconds: Double) -> Int32? {
        waitForExit(seconds: seconds) ? process.terminationStatus : nil
    }

    /// SIGKILL (also ends a stopped process) and reap; safe to call twice.
    func stop() {
        if process.isRunning {
            kill(pid, SIGKILL)
            _ = waitForExit(seconds: 10)
        }
    }
}

/// A fresh temporary directory for one test's files.
func temporaryDirectory(_ label: String) throws -> String {
    let path = NSTemporaryDirectory() + "mae-collectives-\(label)-\(getpid())-\(UInt64(monotonicSeconds() * 1e6))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// What a rank sees when the last rank stops calling: every rank all-reduces
/// once, then the last one sleeps for three timeouts while the others time a second
/// all-reduce and then try a barrier. Returns (seconds until the second call failed, its
/// error, the barrier's error), "no error" where a call returned; zeros and empty strings
/// on the sleeping rank.
func stallLastRank(_ collective: any Collective, timeout: Double) throws -> (Double, String, String) {
    var values = [Float](repeating: 1, count: 100_000)
    try values.withUnsafeMutableBufferPointer { try collective.allReduceSum($0.baseAddress!, count: 100_000) }
    if collective.rank == collective.worldSize - 1 {
        usleep(UInt32(timeout * 3 * 1e6))   // never makes the second call
        return (0, "", "")
    }
    let start = monotonicSeconds()
    var failure = "no error"
    do {
        try values.withUnsafeMutableBufferPointer { try collective.allReduceSum($0.baseAddress!, count: 100_000) }
    } catch {
        failure = "\(error)"
    }
    let elapsed = monotonicSeconds() - start
    var later = "no error"
    do { try collective.barrier() } catch { later = "\(error)" }
    return (elapsed, failure, later)
}
