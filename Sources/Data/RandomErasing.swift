import Kernels
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// What random erasing writes into its box (timm's `re_mode`).
public enum RandomErasingMode: String, Equatable, Sendable, CaseIterable {
    /// Zeros (the normalised mean).
    case const
    /// One standard-normal value per channel.
    case rand
    /// A standard-normal value per pixel and channel (MAE fine-tuning's choice).
    case pixel
}

/// timm 0.3.2's `RandomErasing(probability, mode, max_count=count, device='cpu')` on one
/// normalised image [3, S, S]: with the probability, `randint(1, count)` boxes (1 when
/// count is 1), each from up to 10 attempts of area fraction uniform in [0.02, 1/3] divided
/// by the box count and log-uniform aspect ratio in [0.3, 1/0.3],
/// `h = round(sqrt(area · ratio))`, `w = round(sqrt(area / ratio))` (half to even),
/// accepted when `w < S` and `h < S`, top-left uniform.
///
/// Random numbers: `CounterRandom(seed, .randomErasing, epoch, index: sample)`.
public struct RandomErasing: Equatable, Sendable {
    public let probability: Double
    public let mode: RandomErasingMode
    /// The most boxes per image (timm's `max_count`; the least is 1).
    public let count: Int
    public let minimumArea = 0.02
    public let maximumArea = 1.0 / 3.0
    public let logAspectRatio = (lower: log(0.3), upper: log(1.0 / 0.3))

    public init(probability: Double, mode: RandomErasingMode, count: Int) {
        precondition(probability >= 0 && probability <= 1, "the erasing probability must be in [0, 1]")
        precondition(count >= 1, "the erasing count must be at least 1")
        self.probability = probability
        self.mode = mode
        self.count = count
    }

    public static func == (lhs: RandomErasing, rhs: RandomErasing) -> Bool {
        lhs.probability == rhs.probability && lhs.mode == rhs.mode && lhs.count == rhs.count
    }

    /// The boxes for an image of `height × width` pixels; each is erased in turn.
    public func boxes(width: Int, height: Int, random: inout CounterRandom) -> [CropBox] {
        if random.nextDouble() > probability { return [] }
        let area = Double(width * height)
        let boxCount = count == 1 ? 1 : 1 + random.nextInt(below: count)
        var boxes: [CropBox] = []
        for _ in 0..<boxCount {
            for _ in 0..<10 {
                let targetArea = random.nextDouble(in: minimumArea..<maximumArea) * area / Double(boxCount)
                let aspectRatio = exp(random.nextDouble(in: logAspectRatio.lower..<logAspectRatio.upper))
                let boxHeight = Int((targetArea * aspectRatio).squareRoot().rounded(.toNearestOrEven))
                let boxWidth = Int((targetArea / aspectRatio).squareRoot().rounded(.toNearestOrEven))
                if boxWidth < width && boxHeight < height {
                    let top = random.nextInt(below: height - boxHeight + 1)
                    let left = random.nextInt(below: width - boxWidth + 1)
                    boxes.append(CropBox(top: top, left: left, height: boxHeight, width: boxWidth))
                    break
                }
            }
        }
        return boxes
    }

    /// Erases in `image` ([channels, height, width]) the boxes of sample `index` in `epoch`.
    /// The noise is drawn after all the boxes: box by box, channel by channel, row by row.
    public func apply(_ image: UnsafeMutablePointer<Float>, channels: Int = 3, width: Int, height: Int,
                      seed: UInt64, epoch: Int, index: Int) {
        if probability == 0 { return }
        var random = CounterRandom(seed: seed, purpose: .randomErasing, epoch: epoch, index: index)
        // Every box is drawn first: timm draws a box's noise right after it, but its noise
        // comes from torch's generator, not Python's, so the streams never interleave.
        let chosen = boxes(width: width, height: height, random: &random)
        for box in chosen {
            var channelValue: Float = 0
            for channel in 0..<channels {
                if mode == .rand { channelValue = Float(random.nextNormal()) }
                for row in box.top..<(box.top + box.height) {
                    let target = image + (channel * height + row) * width + box.left
                    for column in 0..<box.width {
                        target[column] = mode == .pixel ? Float(random.nextNormal()) : channelValue
                    }
                }
            }
        }
    }
}
