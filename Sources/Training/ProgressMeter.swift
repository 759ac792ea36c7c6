import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Throughput between progress lines.
final class ProgressMeter {
    let totalSteps: Int
    let imagesPerStep: Int
    private let start: Double
    private var intervalStart: Double
    private var intervalStartStep: Int
    private var intervalDataWait = 0.0
    private var intervalCommunicationWait = 0.0

    struct Interval {
        var imagesPerSecond: Double
        var dataWaitShare: Double
        /// Mean seconds per step spent waiting for the gradient all-reduce after the backward.
        var communicationWaitPerStep: Double
        var secondsPerStep: Double
        var etaSeconds: Double
        var elapsedSeconds: Double
    }

    init(startStep: Int, totalSteps: Int, imagesPerStep: Int) {
        self.totalSteps = totalSteps
        self.imagesPerStep = imagesPerStep
        start = monotonicSeconds()
        intervalStart = start
        intervalStartStep = startStep
    }

    func record(dataWait: Double, communicationWait: Double) {
        intervalDataWait += dataWait
        intervalCommunicationWait += communicationWait
    }

    func takeInterval(step: Int) -> Interval {
        let now = monotonicSeconds()
        let seconds = max(now - intervalStart, 1e-9)
        let steps = max(step - intervalStartStep, 1)
        let secondsPerStep = seconds / Double(steps)
        let interval = Interval(imagesPerSecond: Double(steps * imagesPerStep) / seconds,
                                dataWaitShare: min(1, intervalDataWait / seconds),
                                communicationWaitPerStep: intervalCommunicationWait / Double(steps),
                                secondsPerStep: secondsPerStep,
                                etaSeconds: secondsPerStep * Double(max(0, totalSteps - step)),
                                elapsedSeconds: now - start)
        intervalStart = now
        intervalStartStep = step
        intervalDataWait = 0
        intervalCommunicationWait = 0
        return interval
    }
}

/// Seconds on the monotonic clock.
func monotonicSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}
