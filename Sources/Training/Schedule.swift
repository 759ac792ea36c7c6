import Foundation

/// The learning-rate recipe of MAE pretraining (facebookresearch/mae, `util/lr_sched.py`):
/// linear warm-up from 0 to the peak, then a half-cycle cosine down to `minimumLearningRate`,
/// evaluated at the fractional epoch `e = epoch + iteration / iterationsPerEpoch`.
///
/// With gradient accumulation the reference adjusts the rate only when
/// `iteration % accumulationSteps == 0`, so every micro-batch of one optimizer step sees
/// the rate of the step's first micro-batch. A pure value: the same inputs always give
/// the same rate, which is what makes resumed runs exact.
public struct LearningRateSchedule: Codable, Sendable, Equatable {
    /// The rate at the end of warm-up (`lr` in the reference).
    public var peakLearningRate: Double
    /// The floor of the cosine (`min_lr`).
    public var minimumLearningRate: Double
    /// Length of the linear warm-up, in epochs (may be 0).
    public var warmupEpochs: Double
    /// Length of the whole run, in epochs; must exceed `warmupEpochs`.
    public var epochs: Int
    /// Micro-batches per epoch per worker (`len(data_loader)` in the reference).
    public var iterationsPerEpoch: Int
    /// Micro-batches per optimizer step (`accum_iter`).
    public var accumulationSteps: Int

    private enum CodingKeys: String, CodingKey {
        case peakLearningRate = "peak_lr", minimumLearningRate = "min_lr", warmupEpochs = "warmup_epochs"
        case epochs, iterationsPerEpoch = "iterations_per_epoch", accumulationSteps = "accum_iter"
    }

    /// Checks the numbers and throws a one-line `TrainingError.invalidConfiguration` naming the flag to change.
    public init(peakLearningRate: Double, minimumLearningRate: Double, warmupEpochs: Double, epochs: Int,
                iterationsPerEpoch: Int, accumulationSteps: Int) throws {
        guard epochs > 0 else { throw TrainingError.invalidConfiguration("--epochs must be at least 1, got \(epochs)") }
        guard warmupEpochs >= 0 else {
            throw TrainingError.invalidConfiguration("--warmup-epochs must not be negative, got \(warmupEpochs)")
        }
        guard warmupEpochs < Double(epochs) else {
            throw TrainingError.invalidConfiguration(
                "--warmup-epochs (\(formatNumber(warmupEpochs))) must be smaller than --epochs (\(epochs)): "
                + "the cosine phase would be empty; pass a smaller --warmup-epochs, e.g. --warmup-epochs \(max(0, epochs / 20))")
        }
        guard peakLearningRate.isFinite, peakLearningRate >= 0 else {
            throw TrainingError.invalidConfiguration("the learning rate must be a finite number ≥ 0, got \(peakLearningRate)")
        }
        guard minimumLearningRate.isFinite, minimumLearningRate >= 0 else {
            throw TrainingError.invalidConfiguration("--min-lr must be a finite number ≥ 0, got \(minimumLearningRate)")
        }
        guard iterationsPerEpoch > 0 else {
            throw TrainingError.invalidConfiguration("an epoch must hold at least one batch (iterations per epoch is \(iterationsPerEpoch))")
        }
        guard accumulationSteps > 0 else {
            throw TrainingError.invalidConfiguration("--accum-iter must be at least 1, got \(accumulationSteps)")
        }
        self.peakLearningRate = peakLearningRate
        self.minimumLearningRate = minimumLearningRate
        self.warmupEpochs = warmupEpochs
        self.epochs = epochs
        self.iterationsPerEpoch = iterationsPerEpoch
        self.accumulationSteps = accumulationSteps
    }

    /// The reference's formula at a fractional epoch.
    public func learningRate(atFractionalEpoch epoch: Double) -> Double {
        if epoch < warmupEpochs {
            return peakLearningRate * epoch / warmupEpochs
        }
        let progress = (epoch - warmupEpochs) / (Double(epochs) - warmupEpochs)
        return minimumLearningRate + (peakLearningRate - minimumLearningRate) * 0.5 * (1 + cos(Double.pi * progress))
    }

    /// The rate in effect for micro-batch `iteration` (0-based, within `epoch`): the rate of
    /// the last accumulation boundary at or before it.
    public func learningRate(epoch: Int, iteration: Int) -> Double {
        let boundary = iteration - iteration % accumulationSteps
        return learningRate(atFractionalEpoch: Double(epoch) + Double(boundary) / Double(iterationsPerEpoch))
    }

    /// Optimizer steps per epoch: trailing micro-batches that cannot fill a whole
    /// accumulation group are not used (see docs/TRAINING.md).
    public var stepsPerEpoch: Int { iterationsPerEpoch / accumulationSteps }

    /// The rate of optimizer step `step` (0-based) within `epoch`.
    public func learningRate(epoch: Int, stepInEpoch step: Int) -> Double {
        learningRate(epoch: epoch, iteration: step * accumulationSteps)
    }
}

/// The learning-rate scaling rule of the paper: `lr = blr × effective batch / 256`.
public func scaledLearningRate(baseLearningRate: Double, effectiveBatchSize: Int) -> Double {
    baseLearningRate * Double(effectiveBatchSize) / 256
}

/// A number for messages: integers without a fractional part.
func formatNumber(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
}
