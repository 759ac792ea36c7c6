import Dispatch
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
/// The workers come from Dispatch's fixed global pool (`concurrentPerform`), so a
/// call allocates no threads; with one thread the work runs inline on the caller.
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
public func parallelFor(_ count: Int, minimumPerWorker: Int, rangesPerWorker: Int = 4,
                        _ body: (Range<Int>) -> Void) {
    guard count > 0 else { return }
    let threads = Parallel.threads
    let chunks = min(threads * max(1, rangesPerWorker), max(1, count / max(1, minimumPerWorker)))
    if threads == 1 || chunks == 1 {
        body(0..<count)
        return
    }
    let next = Atomic<Int>(0)
    DispatchQueue.concurrentPerform(iterations: min(threads, chunks)) { _ in
        while true {
            let chunk = next.add(1, ordering: .relaxed).oldValue
            if chunk >= chunks { return }
            body((count * chunk / chunks)..<(count * (chunk + 1) / chunks))
        }
    }
}
