import Kernels

/// timm 0.3.2's `Mixup(mixup_alpha, cutmix_alpha, cutmix_minmax=None, prob, switch_prob,
/// mode='batch', correct_lam=True, label_smoothing, num_classes)` as main_finetune.py uses it
/// (defaults 0.8, 1.0, 1.0, 0.5, 0.1).
public struct MixupSettings: Equatable, Sendable {
    /// α of Beta(α, α) for mixup (0: no mixup).
    public var mixupAlpha: Double
    /// α of Beta(α, α) for CutMix (0: no CutMix).
    public var cutmixAlpha: Double
    /// The probability that a batch is mixed at all.
    public var probability: Double
    /// The probability of CutMix rather than mixup when both are on.
    public var switchProbability: Double
    /// Label smoothing ε of the targets.
    public var labelSmoothing: Double

    public init(mixupAlpha: Double = 0.8, cutmixAlpha: Double = 1.0, probability: Double = 1.0,
                switchProbability: Double = 0.5, labelSmoothing: Double = 0.1) throws {
        guard mixupAlpha >= 0, mixupAlpha.isFinite else { throw DataError("--mixup \(mixupAlpha) must be 0 (off) or positive") }
        guard cutmixAlpha >= 0, cutmixAlpha.isFinite else { throw DataError("--cutmix \(cutmixAlpha) must be 0 (off) or positive") }
        guard (0...1).contains(probability) else { throw DataError("--mixup-prob \(probability) must be between 0 and 1") }
        guard (0...1).contains(switchProbability) else {
            throw DataError("--mixup-switch-prob \(switchProbability) must be between 0 and 1")
        }
        guard labelSmoothing >= 0 && labelSmoothing < 1 else { throw DataError("--smoothing \(labelSmoothing) must be in [0, 1)") }
        self.mixupAlpha = mixupAlpha
        self.cutmixAlpha = cutmixAlpha
        self.probability = probability
        self.switchProbability = switchProbability
        self.labelSmoothing = labelSmoothing
    }

    /// Whether batches are mixed at all (main_finetune.py's `mixup_active`).
    public var isActive: Bool { mixupAlpha > 0 || cutmixAlpha > 0 }
}

/// A CutMix box in pixels: rows top..<bottom, columns left..<right.
public struct CutMixBox: Equatable, Sendable {
    public let top: Int, bottom: Int, left: Int, right: Int
}

/// What `mixBatch` did to a batch.
public struct MixupOutcome: Equatable, Sendable {
    /// The weight of each image's own label (1: unmixed); for CutMix, corrected to the
    /// share of the image outside the box.
    public let lambda: Double
    /// The pasted box when the batch was CutMixed, nil for mixup or no mixing.
    public let cutMixBox: CutMixBox?
}

/// timm's `rand_bbox(img_shape, lam)` with `correct_lam=True`: a box of
/// `int(S · sqrt(1 − λ))` per side centred at a uniform pixel (`randint(0, S)` for the row,
/// then the column), clipped to the image, and λ = 1 − box area / image area.
public func cutMixBox(height: Int, width: Int, lambda: Double, random: inout CounterRandom) -> (box: CutMixBox, lambda: Double) {
    let ratio = (1 - lambda).squareRoot()
    let cutHeight = Int(Double(height) * ratio), cutWidth = Int(Double(width) * ratio)
    let centreY = random.nextInt(below: height), centreX = random.nextInt(below: width)
    let box = CutMixBox(top: min(max(centreY - cutHeight / 2, 0), height), bottom: min(max(centreY + cutHeight / 2, 0), height),
                        left: min(max(centreX - cutWidth / 2, 0), width), right: min(max(centreX + cutWidth / 2, 0), width))
    let area = (box.bottom - box.top) * (box.right - box.left)
    return (box, 1 - Double(area) / Double(height * width))
}

/// Mixes a batch in place with its reverse (timm's `mode='batch'`: image i with image
/// N−1−i) and writes the soft targets. With `settings.probability` the batch is mixed:
/// CutMix with `switchProbability` (when both are on), λ ~ Beta(α, α) of the chosen one;
/// CutMix pastes the box of image N−1−i into image i and corrects λ to the box; mixup
/// computes `x·λ + flip(x)·(1 − λ)` in single precision. Targets are
/// `λ·smooth(y) + (1 − λ)·smooth(flip(y))` (`smoothedTargets`).
///
/// Random numbers: `CounterRandom(seed, .mixup, epoch, index: stream)`, drawn in timm's
/// order (mix?, CutMix?, λ, box row, box column). `stream` names the batch: use the
/// batch's index in the epoch times the world size plus the rank, so that every rank
/// mixes its own batch differently and a resumed run mixes as the uninterrupted one.
///
/// - images: [N, channels, height, width], N = labels.count.
/// - targets: [N, classCount], written.
@discardableResult
public func mixBatch(images: UnsafeMutablePointer<Float>, labels: [Int], channels: Int = 3, height: Int, width: Int,
                     classCount: Int, settings: MixupSettings, seed: UInt64, epoch: Int, stream: Int,
                     targets: UnsafeMutablePointer<Float>) -> MixupOutcome {
    let count = labels.count
    var random = CounterRandom(seed: seed, purpose: .mixup, epoch: epoch, index: stream)
    var lambda = 1.0
    var useCutMix = false
    if settings.isActive && random.nextDouble() < settings.probability {
        if settings.mixupAlpha > 0 && settings.cutmixAlpha > 0 {
            useCutMix = random.nextDouble() < settings.switchProbability
            let alpha = useCutMix ? settings.cutmixAlpha : settings.mixupAlpha
            lambda = random.nextBeta(alpha, alpha)
        } else if settings.mixupAlpha > 0 {
            lambda = random.nextBeta(settings.mixupAlpha, settings.mixupAlpha)
        } else {
            useCutMix = true
            lambda = random.nextBeta(settings.cutmixAlpha, settings.cutmixAlpha)
        }
    }
    var box: CutMixBox?
    let plane = height * width, imageFloats = channels * plane
    if lambda != 1 {
        if useCutMix {
            let cut = cutMixBox(height: height, width: width, lambda: lambda, random: &random)
            box = cut.box
            lambda = cut.lambda
            // Image i takes the box of the original image N−1−i: swap the boxes of each pair.
            for first in 0..<(count / 2) {
                let second = count - 1 - first
                for channel in 0..<channels {
                    for row in cut.box.top..<cut.box.bottom {
                        let offset = channel * plane + row * width
                        let a = images + first * imageFloats + offset, b = images + second * imageFloats + offset
                        for column in cut.box.left..<cut.box.right { swap(&a[column], &b[column]) }
                    }
                }
            }
        } else {
            let own = Float(lambda), other = Float(1 - lambda)
            for first in 0..<((count + 1) / 2) {
                let second = count - 1 - first
                let a = images + first * imageFloats, b = images + second * imageFloats
                for element in 0..<imageFloats {
                    let x = a[element], y = b[element]
                    a[element] = x * own + y * other
                    b[element] = y * own + x * other
                }
            }
        }
    }
    mixedTargets(labels: labels, classCount: classCount, smoothing: settings.labelSmoothing, lambda: lambda, targets: targets)
    return MixupOutcome(lambda: lambda, cutMixBox: box)
}

/// timm's `mixup_target`: `λ·smooth(y) + (1 − λ)·smooth(flip(y))` in single precision, where
/// smooth(y) is one-hot with `1 − ε + ε/C` at the label and `ε/C` elsewhere.
/// - targets: [labels.count, classCount], written.
public func mixedTargets(labels: [Int], classCount: Int, smoothing: Double, lambda: Double,
                         targets: UnsafeMutablePointer<Float>) {
    precondition(classCount > 0, "classCount must be positive")
    let offValue = smoothing / Double(classCount)
    let off = Float(offValue), on = Float(1 - smoothing + offValue)
    let own = Float(lambda), other = Float(1 - lambda)
    for (row, label) in labels.enumerated() {
        let flippedLabel = labels[labels.count - 1 - row]
        precondition(label >= 0 && label < classCount, "label \(label) outside 0..<\(classCount)")
        let target = targets + row * classCount
        for column in 0..<classCount {
            let mine = column == label ? on : off, theirs = column == flippedLabel ? on : off
            target[column] = mine * own + theirs * other
        }
    }
}

/// Label-smoothed one-hot targets without mixing (`mixedTargets` with λ = 1; smoothing 0
/// gives plain one-hot): for mixup off, and for evaluation losses.
/// - targets: [labels.count, classCount], written.
public func smoothedTargets(labels: [Int], classCount: Int, smoothing: Double, targets: UnsafeMutablePointer<Float>) {
    mixedTargets(labels: labels, classCount: classCount, smoothing: smoothing, lambda: 1, targets: targets)
}
