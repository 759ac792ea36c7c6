import Kernels
import System
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// A crop rectangle in pixels (torchvision's (i, j, h, w)).
public struct CropBox: Equatable, Sendable {
    public let top: Int
    public let left: Int
    public let height: Int
    public let width: Int
}

/// What happens to a decoded image on its way into a batch.
public enum ImageTransform: Sendable, Equatable {
    /// MAE pre-training: RandomResizedCrop + horizontal flip (see `Augmentation`).
    case pretraining
    /// MAE evaluation (`util/datasets.py build_transform(is_train=False)`): resize the shorter
    /// side to `Int(S / cropFraction)` (cropFraction 224/256 when S ≤ 224, else 1) with Pillow
    /// bicubic, then the central S×S crop; no randomness.
    case evaluation
    /// Fine-tuning (main_finetune.py): RandomResizedCrop with scale (0.08, 1) + flip, then
    /// RandAugment on the bytes, normalisation, and random erasing (see
    /// `FinetuneAugmentationSettings`).
    case finetuning(FinetuneAugmentationSettings)
    /// Linear probing (main_linprobe.py): RandomResizedCrop with scale (0.08, 1) + flip.
    case linearProbe

    /// RandomResizedCrop's area fraction range: (0.2, 1) for pre-training, else torchvision's
    /// and timm's default (0.08, 1).
    public var cropScale: (lower: Double, upper: Double) {
        self == .pretraining ? (0.2, 1.0) : (0.08, 1.0)
    }
}

/// The MAE pre-training augmentation (and, with `.evaluation`, the evaluation transform), torchvision's
/// `Compose([RandomResizedCrop(S, scale=(0.2, 1.0), interpolation=BICUBIC), RandomHorizontalFlip(),
/// ToTensor(), Normalize(mean, std)])` on a PIL RGB image (`.linearProbe` and `.finetuning`
/// crop with scale (0.08, 1.0); `.finetuning` adds RandAugment and random erasing):
///
/// - crop: `RandomResizedCrop.get_params` exactly (10 attempts with area fraction uniform
///   in the scale range and log-uniform aspect ratio, `w = round(sqrt(area·ratio))`,
///   `h = round(sqrt(area/ratio))` with Python's half-to-even rounding, accepted when it
///   fits, top-left uniform; otherwise the central crop clamped to the ratio range), with
///   random numbers from `CounterRandom(seed, .crop, epoch, index: sample)`;
/// - resize of the crop to S×S with Pillow's 8-bit bicubic (see `Resampler`);
/// - horizontal flip when `CounterRandom(seed, .flip, epoch, index: sample).nextFloat() < 0.5`;
/// - `(Float(byte) / 255 − mean[c]) / std[c]` in single precision, as ToTensor then Normalize
///   compute it, written planar [3, S, S].
public struct Augmentation: Sendable {
    /// Output side length S.
    public let imageSize: Int
    /// Area fraction range of RandomResizedCrop.
    public var scale: (lower: Double, upper: Double) { transform.cropScale }
    /// Aspect ratio (width / height) range of RandomResizedCrop.
    public let ratio: (lower: Double, upper: Double) = (3.0 / 4.0, 4.0 / 3.0)
    /// ImageNet channel means and standard deviations (RGB).
    public static let mean: [Float] = [0.485, 0.456, 0.406]
    public static let standardDeviation: [Float] = [0.229, 0.224, 0.225]

    /// The value each byte of each channel becomes: [3, 256].
    private let normalised: [Float]

    /// `.pretraining`, `.linearProbe` (random crop and flip), `.finetuning` (and RandAugment,
    /// random erasing) or `.evaluation` (resize and central crop).
    public let transform: ImageTransform

    public init(imageSize: Int, transform: ImageTransform = .pretraining) {
        precondition(imageSize > 0, "imageSize must be positive")
        self.imageSize = imageSize
        self.transform = transform
        var table = [Float](repeating: 0, count: 3 * 256)
        for channel in 0..<3 {
            for byte in 0..<256 {
                table[channel * 256 + byte] = (Float(byte) / 255 - Augmentation.mean[channel]) / Augmentation.standardDeviation[channel]
            }
        }
        normalised = table
    }

    /// torchvision's `RandomResizedCrop.get_params` for an image of `width × height`.
    public func cropBox(width: Int, height: Int, random: inout CounterRandom) -> CropBox {
        let area = Double(width * height)
        let logRatio = (lower: log(ratio.lower), upper: log(ratio.upper))
        for _ in 0..<10 {
            let targetArea = area * random.nextDouble(in: scale.lower..<scale.upper)
            let aspectRatio = exp(random.nextDouble(in: logRatio.lower..<logRatio.upper))
            let cropWidth = Int((targetArea * aspectRatio).squareRoot().rounded(.toNearestOrEven))
            let cropHeight = Int((targetArea / aspectRatio).squareRoot().rounded(.toNearestOrEven))
            if cropWidth > 0 && cropWidth <= width && cropHeight > 0 && cropHeight <= height {
                let top = random.nextInt(below: height - cropHeight + 1)
                let left = random.nextInt(below: width - cropWidth + 1)
                return CropBox(top: top, left: left, height: cropHeight, width: cropWidth)
            }
        }
        // Fallback: the central crop, clamped to the ratio range.
        let inputRatio = Double(width) / Double(height)
        var cropWidth = width, cropHeight = height
        if inputRatio < ratio.lower {
            cropHeight = Int((Double(width) / ratio.lower).rounded(.toNearestOrEven))
        } else if inputRatio > ratio.upper {
            cropWidth = Int((Double(height) * ratio.upper).rounded(.toNearestOrEven))
        }
        return CropBox(top: (height - cropHeight) / 2, left: (width - cropWidth) / 2, height: cropHeight, width: cropWidth)
    }

    /// The crop of sample `index` in `epoch` for an image of `width × height`.
    public func cropBox(width: Int, height: Int, seed: UInt64, epoch: Int, index: Int) -> CropBox {
        var random = CounterRandom(seed: seed, purpose: .crop, epoch: epoch, index: index)
        return cropBox(width: width, height: height, random: &random)
    }

    /// Whether sample `index` is flipped in `epoch` (probability 0.5).
    public func flips(seed: UInt64, epoch: Int, index: Int) -> Bool {
        var random = CounterRandom(seed: seed, purpose: .flip, epoch: epoch, index: index)
        return random.nextFloat() < 0.5
    }

    /// Transforms one decoded image into `output` ([3, S, S], normalised).
    /// `scratch` holds the resized bytes between the resize and the normalisation.
    public func apply(output: UnsafeMutablePointer<Float>, image: RGBImageView, seed: UInt64, epoch: Int, index: Int,
                      resampler: Resampler, scratch: AugmentationScratch) {
        let side = imageSize
        if transform == .evaluation {
            let resizedSize = evaluationResize(width: image.width, height: image.height)
            let resized = scratch.resized(count: resizedSize.width * resizedSize.height * 3)
            resampler.resize(output: resized, outputWidth: resizedSize.width, outputHeight: resizedSize.height,
                             input: image.pixels, inputWidth: image.width, inputHeight: image.height,
                             inputRowStride: image.width * 3)
            let box = centerCrop(width: resizedSize.width, height: resizedSize.height)
            normalise(output: output, resized: resized + (box.top * resizedSize.width + box.left) * 3,
                      rowStride: resizedSize.width * 3, flip: false)
            return
        }
        let box = cropBox(width: image.width, height: image.height, seed: seed, epoch: epoch, index: index)
        let flip = flips(seed: seed, epoch: epoch, index: index)
        let resized = scratch.resized(count: side * side * 3)
        resampler.resize(output: resized, outputWidth: side, outputHeight: side,
                         input: image.pixels + (box.top * image.width + box.left) * 3,
                         inputWidth: box.width, inputHeight: box.height, inputRowStride: image.width * 3)
        guard case .finetuning(let settings) = transform else {
            normalise(output: output, resized: resized, rowStride: side * 3, flip: flip)
            return
        }
        // timm flips the PIL image before RandAugment (whose shears and translations are not
        // symmetric), so the bytes are flipped here rather than while normalising.
        if flip { flipRows(resized, width: side, height: side) }
        if let randAugment = settings.randAugment {
            randAugment.apply(resized, width: side, height: side, seed: seed, epoch: epoch, index: index,
                              scratch: scratch.operations(count: side * side * 3))
        }
        normalise(output: output, resized: resized, rowStride: side * 3, flip: false)
        settings.randomErasing?.apply(output, width: side, height: side, seed: seed, epoch: epoch, index: index)
    }

    // pixels: [height, width, 3], mirrored left to right in place
    func flipRows(_ pixels: UnsafeMutablePointer<UInt8>, width: Int, height: Int) {
        for row in 0..<height {
            var left = pixels + row * width * 3, right = left + (width - 1) * 3
            while left < right {
                for channel in 0..<3 { swap(&left[channel], &right[channel]) }
                left += 3
                right -= 3
            }
        }
    }

    /// The evaluation resize: torchvision's `Resize(size)` with an int size, which sets the
    /// shorter side to `size` and the longer to `Int(size · long / short)`.
    public func evaluationResize(width: Int, height: Int) -> (width: Int, height: Int) {
        let cropFraction = imageSize <= 224 ? 224.0 / 256.0 : 1.0
        let shortSide = Int(Double(imageSize) / cropFraction)
        if width <= height {
            return (shortSide, Int(Double(shortSide) * Double(height) / Double(width)))
        }
        return (Int(Double(shortSide) * Double(width) / Double(height)), shortSide)
    }

    /// torchvision's `CenterCrop(S)` box: offsets `Int(round((size − S) / 2))`, half to even.
    public func centerCrop(width: Int, height: Int) -> CropBox {
        let top = Int((Double(height - imageSize) / 2).rounded(.toNearestOrEven))
        let left = Int((Double(width - imageSize) / 2).rounded(.toNearestOrEven))
        return CropBox(top: top, left: left, height: imageSize, width: imageSize)
    }

    // output: [3, S, S]; resized: S rows of S × 3 bytes, rowStride bytes apart
    func normalise(output: UnsafeMutablePointer<Float>, resized: UnsafePointer<UInt8>, rowStride: Int, flip: Bool) {
        let side = imageSize
        let plane = side * side
        normalised.withUnsafeBufferPointer { table in
            let red = table.baseAddress!, green = red + 256, blue = red + 512
            for row in 0..<side {
                let source = resized + row &* rowStride
                let target = output + row &* side
                for column in 0..<side {
                    let sourceColumn = flip ? side &- 1 &- column : column
                    let pixel = source + sourceColumn &* 3
                    target[column] = red[Int(pixel[0])]
                    target[plane &+ column] = green[Int(pixel[1])]
                    target[2 &* plane &+ column] = blue[Int(pixel[2])]
                }
            }
        }
    }
}

/// Per-thread scratch memory of the augmentation.
public final class AugmentationScratch {
    private let bytes = ByteBuffer()
    private let operationBytes = ByteBuffer()
    public init() {}
    func resized(count: Int) -> UnsafeMutablePointer<UInt8> {
        bytes.reserve(count)
        return bytes.pointer
    }
    /// A second buffer for RandAugment's operations that cannot work in place.
    func operations(count: Int) -> UnsafeMutablePointer<UInt8> {
        operationBytes.reserve(count)
        return operationBytes.pointer
    }
}
