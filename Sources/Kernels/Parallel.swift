import CSupport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The thread count shared by every kernel. Our element-wise kernels split their
/// work over `threads` workers with `parallelFor`, and `matrixMultiply` cuts large
/// products into one block per worker, each a single-threaded OpenBLAS call: one
/// pool does all the work, so OpenBLAS's own threads (which spin while idle) never
/// compete with ours for the cores. Measured on two cores, OpenBLAS's threading
/// spent 30–80% more CPU time per training step than this.
///
/// The workers are our own persistent threads (`WorkerPool`), started on first use,
/// so a call allocates nothing; with one thread the work runs inline on the caller.
/// Code that calls `BLASRuntime.setThreads` itself oversubscribes the cores.
///
/// Work is only ever split so that each output element is computed by one worker in
/// a fixed order, which makes every kernel's result independent of the thread count.
public enum Parallel {
    /// Our pool's width; read by `parallelFor` and `matrixMultiply` on every call.
    /// Its first use also puts OpenBLAS on one thread, so that until `setThreads` is
    /// called every kernel, OpenBLAS's included, runs on the calling thread alone.
    nonisolated(unsafe) private static var threadCount: Int = {
        BLASRuntime.setThreads(1)
        return 1
    }()

    /// The number of workers every kernel uses.
    public static var threads: Int { threadCount }

    /// Whether `matrixMultiply` splits products over our pool with OpenBLAS on one
    /// thread (the default), rather than letting OpenBLAS thread each product itself.
    /// MAE_OPENBLAS_THREADING=1 selects the latter, for comparison.
    public static let splitsProducts: Bool = getenv("MAE_OPENBLAS_THREADING").map { String(cString: $0) != "1" } ?? true

    /// Whether a `parallelFor` called now would run inline on its caller, the pool being
    /// busy with a region (this caller's, as in a batch shard, or another thread's).
    static var runsInline: Bool { threadCount == 1 || WorkerPool.shared.isRunning }

    /// Sets the number of threads every kernel uses to `count` (at least 1): our
    /// pool's width, and OpenBLAS's (one thread per call when our pool splits the
    /// products, see `splitsProducts`).
    public static func setThreads(_ count: Int) {
        threadCount = max(1, count)
        BLASRuntime.setThreads(splitsProducts ? 1 : threadCount)
    }
}

/// Runs `body` over `0..<count` split into contiguous, non-empty ranges, on at most
/// `Parallel.threads` workers, and returns when all are done.
@inline(__always)
public func parallelFor(_ count: Int, _ body: (Range<Int>) -> Void) {
    parallelFor(count, minimumPerWorker: 1, body)
}

/// As `parallelFor(_:_:)`, with at least `minimumPerWorker` items per range, so that
/// small loops run inline instead of paying for a hand-off to the pool.
///
/// The work is cut into up to `rangesPerWorker` ranges per worker, and each worker
/// takes the next untaken range until none is left: when another process holds one
/// core for a while (the normal case next to data-loading threads, or on a shared
/// machine), the other workers finish its share instead of waiting for it.
///
/// A call made while the pool is busy (from inside another `parallelFor`, or from a
/// second thread) runs inline on its caller.
public func parallelFor(_ count: Int, minimumPerWorker: Int, rangesPerWorker: Int = 4,
                        _ body: (Range<Int>) -> Void) {
    guard count > 0 else { return }
    let threads = Parallel.threads
    let chunks = min(threads * max(1, rangesPerWorker), max(1, count / max(1, minimumPerWorker)))
    if threads == 1 || chunks == 1 || !WorkerPool.shared.run(count: count, chunks: chunks, threads: threads, body) {
        body(0..<count)
    }
}

/// Our persistent pool: `threads − 1` worker threads, the caller being the first
/// worker. A region costs two atomic updates and no allocation: the workers spin
/// briefly (with the CPU's pause hint) for the next region, since the next one
/// usually follows within microseconds, and only then sleep on a condition
/// variable. Dispatch's `concurrentPerform` cost about a third more CPU time per
/// training step on two threads, most of it waking its threads for each of the
/// ~850 regions of a step.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()

    /// Pause hints a worker spins for (about 40 ns each) before it sleeps, and that
    /// the caller spins for, waiting on the workers, before it yields its core.
    private let spinLimit: Int = getenv("MAE_POOL_SPINS").flatMap { Int(String(cString: $0)) } ?? 2_000

    private let isBusy = Atomic<Bool>(false)
    private let generation = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    private let nextChunk = Atomic<Int>(0)
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    // The region's job: written by the caller before it advances `generation`, read
    // by the workers after they see it advance.
    private var job: ((Range<Int>) -> Void)?
    private var count = 0
    private var chunks = 0
    private var activeWorkers = 0
    /// Worker threads started so far (they live as long as the process); written by
    /// the caller while it holds `isBusy`, with no region in flight.
    private var startedWorkers = 0

    private init() {
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    /// Whether a region is running: a `parallelFor` called now runs inline on its caller.
    var isRunning: Bool { isBusy.load(ordering: .relaxed) }

    /// Runs `body` over `chunks` ranges of `0..<count` on `threads` workers, the
    /// caller included; returns false, having run nothing, when the pool is busy.
    func run(count: Int, chunks: Int, threads: Int, _ body: (Range<Int>) -> Void) -> Bool {
        guard isBusy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            return false
        }
        defer { isBusy.store(false, ordering: .releasing) }
        while startedWorkers < threads - 1 { startWorker(index: startedWorkers) }
        withoutActuallyEscaping(body) { body in
            job = body
            self.count = count
            self.chunks = chunks
            activeWorkers = threads - 1
            nextChunk.store(0, ordering: .relaxed)
            // Every started worker reports back, so none lags a region behind.
            pending.store(startedWorkers, ordering: .relaxed)
            generation.add(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(mutex)
                pthread_cond_broadcast(condition)
                pthread_mutex_unlock(mutex)
            }
            takeChunks(body)
            var spins = 0
            while pending.load(ordering: .acquiring) > 0 {
                if spins < spinLimit {
                    spins += 1
                    mae_cpu_relax()
                } else {
                    sched_yield()
                }
            }
            job = nil
        }
        return true
    }

    private func takeChunks(_ body: (Range<Int>) -> Void) {
        let count = self.count, chunks = self.chunks
        while true {
            let chunk = nextChunk.add(1, ordering: .relaxed).oldValue
            if chunk >= chunks { return }
            body((count * chunk / chunks)..<(count * (chunk + 1) / chunks))
        }
    }

    /// A function of its own so that the worker's reference to the job is released
    /// before it reports back: the caller then checks that the job did not escape.
    @inline(never)
    private func takeChunksOfJob() {
        if let body = job { takeChunks(body) }
    }

    private func startWorker(index: Int) {
        final class Start {
            let index: Int, generation: Int
            init(index: Int, generation: Int) { self.index = index; self.generation = generation }
        }
        let start = Start(index: index, generation: generation.load(ordering: .relaxed))
        var thread = pthread_t()
        let context = Unmanaged.passRetained(start).toOpaque()
        let status = pthread_create(&thread, nil, { context in
            let start = Unmanaged<Start>.fromOpaque(context!).takeRetainedValue()
            WorkerPool.shared.work(index: start.index, seen: start.generation)  // never returns
        }, context)
        // Without a thread of its own the pool cannot run; the process has hit its
        // thread limit, and nothing it computes later could be trusted to finish.
        precondition(status == 0, "pthread_create failed (\(status)): raise the process's thread limit (ulimit -u)")
        pthread_detach(thread)
        startedWorkers += 1
    }

    private func work(index: Int, seen: Int) -> Never {
        var seen = seen
        while true {
            var spins = 0
            var current = generation.load(ordering: .acquiring)
            while current == seen {
                if spins < spinLimit {
                    spins += 1
                    mae_cpu_relax()
                } else {
                    // The caller reads `sleepers` after advancing `generation`, and we
                    // read `generation` after counting ourselves in `sleepers` (both
                    // sequentially consistent), so one of us sees the other.
                    pthread_mutex_lock(mutex)
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    while generation.load(ordering: .sequentiallyConsistent) == seen {
                        pthread_cond_wait(condition, mutex)
                    }
                    sleepers.subtract(1, ordering: .sequentiallyConsistent)
                    pthread_mutex_unlock(mutex)
                }
                current = generation.load(ordering: .acquiring)
            }
            seen = current
            if index < activeWorkers { takeChunksOfJob() }
            pending.subtract(1, ordering: .releasing)
        }
    }
}
