/// One lane of a ring: its two connections, buffers and threads. A collective
/// with several lanes divides each call's elements over them (see
/// `laneSlice`), and every lane but lane 0 runs its part on its own worker thread.
#if canImport(Glibc)
import Glibc
#endif

/// How many lanes a call of `count` elements uses: all of them when each gets at
/// least `minimumLaneBytes`, fewer for shorter calls (there the hand-off to other
/// threads costs more than it brings), at least one.
func lanesUsed(count: Int, elementBytes: Int, lanes: Int, minimumLaneBytes: Int) -> Int {
    max(1, min(lanes, count * elementBytes / minimumLaneBytes))
}

/// The elements lane `lane` of `lanesUsed` reduces: [lane·n/K, (lane+1)·n/K).
func laneSlice(_ lane: Int, count: Int, lanesUsed: Int) -> (start: Int, count: Int) {
    let start = lane * count / lanesUsed, end = (lane + 1) * count / lanesUsed
    return (start, end - start)
}

/// A thread that runs submitted jobs one at a time; `wait` returns the job's error.
final class WorkerThread: @unchecked Sendable {
    private let condition = Condition()
    private var job: (() throws -> Void)?
    private var running = false
    private var failure: Error?
    private var stopping = false

    init() throws {
        try startThread("a ring lane's worker thread") { [self] in run() }
    }

    /// Starts `job` on the thread (the previous one must have been waited for).
    func submit(_ job: @escaping () throws -> Void) {
        condition.withLock {
            self.job = job
            running = true
            failure = nil
            condition.broadcast()
        }
    }

    /// Waits until the job is done; throws what it threw.
    func wait() throws {
        let error: Error? = condition.withLock {
            while running { condition.wait() }
            return failure
        }
        if let error { throw error }
    }

    /// Ends the thread once it is idle.
    func stop() {
        condition.withLock {
            stopping = true
            condition.broadcast()
        }
    }

    private func run() {
        while true {
            condition.lock()
            while job == nil && !stopping { condition.wait() }
            guard let next = job else { condition.unlock(); return }
            job = nil
            condition.unlock()
            var thrown: Error?
            do { try next() } catch { thrown = error }
            condition.withLock {
                failure = thrown
                running = false
                condition.broadcast()
            }
        }
    }
}

/// The connections, buffers and threads of one lane.
final class RingLane {
    let index: Int
    let sendSocket: Socket       // to rank + 1
    let receiveSocket: Socket    // from rank − 1
    /// Receives land here before they are added into the buffer; `segmentBytes` long.
    let scratch: UnsafeMutableRawPointer
    /// Sends of the bf16 wire are rounded into this first; `segmentBytes` long (its pages
    /// are only touched by bf16 calls).
    let staging: UnsafeMutableRawPointer
    let headerOut = UnsafeMutableRawPointer.allocate(byteCount: CallHeader.bytes, alignment: 8)
    let headerIn = UnsafeMutableRawPointer.allocate(byteCount: CallHeader.bytes, alignment: 8)
    let pollEntries = UnsafeMutablePointer<pollfd>.allocate(capacity: 2)
    /// Sends while another thread receives; nil when one thread does both.
    let sender: RingSender?
    /// Runs this lane's part of a call; nil for lane 0, which runs on the calling thread.
    let worker: WorkerThread?

    init(index: Int, rank: Int, worldSize: Int, sendSocket: Socket, receiveSocket: Socket, config: RendezvousConfig) throws {
        self.index = index
        self.sendSocket = sendSocket
        self.receiveSocket = receiveSocket
        scratch = UnsafeMutableRawPointer.allocate(byteCount: config.segmentBytes, alignment: 64)
        staging = UnsafeMutableRawPointer.allocate(byteCount: config.segmentBytes, alignment: 64)
        for (socket, context) in [(sendSocket, "ring connection to the right"), (receiveSocket, "ring connection from the left")] {
            try socket.configureForBulkTransfer(bufferBytes: config.socketBufferBytes, context: context)
            try socket.applyCongestionControl(config.congestionControl, context: context)
        }
        sender = config.sendsOnSeparateThread
            ? try RingSender(socket: sendSocket, timeoutSeconds: config.timeoutSeconds,
                             label: "rank \(rank) sending to rank \((rank + 1) % worldSize) (lane \(index))")
            : nil
        worker = index > 0 ? try WorkerThread() : nil
    }

    deinit {
        close()
        scratch.deallocate()
        staging.deallocate()
        headerOut.deallocate()
        headerIn.deallocate()
        pollEntries.deallocate()
    }

    /// Makes every pending and future transfer on this lane fail at once, without
    /// freeing the descriptors that another thread may still be polling.
    func shutdown() {
        if sendSocket.isOpen { _ = Glibc.shutdown(sendSocket.descriptor, Int32(SHUT_RDWR)) }
        if receiveSocket.isOpen { _ = Glibc.shutdown(receiveSocket.descriptor, Int32(SHUT_RDWR)) }
    }

    /// Stops the threads and closes the connections (only when no call is running).
    func close() {
        sender?.stop()
        worker?.stop()
        sendSocket.close()
        receiveSocket.close()
    }
}
