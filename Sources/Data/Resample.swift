import System

/// Pillow's 8-bit bicubic resampling (`Image.resize(size, Image.BICUBIC)` on an RGB
/// image, src/libImaging/Resample.c), reproduced exactly so that our crops equal
/// torchvision's PIL path pixel for pixel:
///
/// - separable, each pass rounding to 8 bits: normally a horizontal pass into a temporary
///   holding only the rows the vertical pass reads, then the vertical pass; but vertical
///   first when the height shrinks by more than twice what the width does (as current
///   Pillow does; checked against Pillow 13.0); a pass whose size does not change is skipped;
/// - output pixel `o` of an axis is centred at input coordinate `(o + 0.5) · scale` with
///   `scale = in/out`; the kernel is Keys' cubic with a = −0.5 and support 2, stretched by
///   `max(scale, 1)` when downsampling (antialiasing); taps are the input pixels from
///   `Int(center − support + 0.5)` to `Int(center + support + 0.5)` clamped to the image,
///   weights normalised to sum 1 over those taps;
/// - weights in fixed point with 22 fractional bits (rounded half away from zero),
///   sums start at 2^21 (rounding) and each pass clips `sum >> 22` to 0...255.
public final class Resampler {
    /// Fractional bits of Pillow's 8-bit fixed point: 32 − 8 − 2.
    static let precisionBits = 22

    private let temporary = ByteBuffer()
    private var horizontal = AxisCoefficients()
    private var vertical = AxisCoefficients()

    public init() {}

    /// Resizes an RGB image.
    /// - output: [outputHeight, outputWidth, 3] bytes.
    /// - input: `inputHeight` rows of `inputWidth × 3` bytes, rows `inputRowStride` bytes apart
    ///   (a crop of a larger image is a pointer to its first pixel and the larger stride).
    public func resize(output: UnsafeMutablePointer<UInt8>, outputWidth: Int, outputHeight: Int,
                       input: UnsafePointer<UInt8>, inputWidth: Int, inputHeight: Int, inputRowStride: Int) {
        precondition(outputWidth > 0 && outputHeight > 0 && inputWidth > 0 && inputHeight > 0, "image sizes must be positive")
        let needsHorizontal = outputWidth != inputWidth
        let needsVertical = outputHeight != inputHeight
        if !needsHorizontal && !needsVertical {
            for row in 0..<outputHeight {
                (output + row * outputWidth * 3).update(from: input + row * inputRowStride, count: outputWidth * 3)
            }
            return
        }
        // Pillow runs the vertical pass first when the height shrinks more than twice as
        // much as the width (fewer rows for the horizontal pass); the order changes the
        // rounding between the passes, so it is followed exactly.
        let heightReduction = inputHeight - outputHeight, widthReduction = inputWidth - outputWidth
        let horizontalFirst = !(heightReduction > 0 && heightReduction > widthReduction * 2)
        if needsVertical { vertical.compute(inputSize: inputHeight, outputSize: outputHeight) }
        if needsHorizontal { horizontal.compute(inputSize: inputWidth, outputSize: outputWidth) }
        if !needsVertical {
            horizontalPass(output: output, input: input, inputRowStride: inputRowStride, rows: inputHeight, outputWidth: outputWidth)
        } else if !needsHorizontal {
            verticalPass(output: output, input: input, inputRowStride: inputRowStride, width: inputWidth,
                         outputHeight: outputHeight, rowOffset: 0)
        } else if horizontalFirst {
            // Only the rows the vertical pass reads are resampled horizontally.
            let firstRow = vertical.firstInput
            let rows = vertical.endInput - firstRow
            temporary.reserve(rows * outputWidth * 3)
            horizontalPass(output: temporary.pointer, input: input + firstRow * inputRowStride, inputRowStride: inputRowStride,
                           rows: rows, outputWidth: outputWidth)
            verticalPass(output: output, input: temporary.pointer, inputRowStride: outputWidth * 3, width: outputWidth,
                         outputHeight: outputHeight, rowOffset: -firstRow)
        } else {
            temporary.reserve(outputHeight * inputWidth * 3)
            verticalPass(output: temporary.pointer, input: input, inputRowStride: inputRowStride, width: inputWidth,
                         outputHeight: outputHeight, rowOffset: 0)
            horizontalPass(output: output, input: temporary.pointer, inputRowStride: inputWidth * 3,
                           rows: outputHeight, outputWidth: outputWidth)
        }
    }

    // output: [rows, outputWidth, 3]; input: rows of pixels, inputRowStride bytes apart
    private func horizontalPass(output: UnsafeMutablePointer<UInt8>, input: UnsafePointer<UInt8>, inputRowStride: Int,
                                rows: Int, outputWidth: Int) {
        let kernelSize = horizontal.kernelSize
        horizontal.withPointers { bounds, weights in
            for row in 0..<rows {
                let source = input + row * inputRowStride
                let target = output + row * outputWidth * 3
                for column in 0..<outputWidth {
                    let first = bounds[2 &* column], count = bounds[2 &* column &+ 1]
                    let kernel = weights + column &* kernelSize
                    var red: Int32 = 1 << 21, green: Int32 = 1 << 21, blue: Int32 = 1 << 21
                    var pixel = source + first &* 3
                    for tap in 0..<count {
                        let weight = kernel[tap]
                        red &+= Int32(pixel[0]) &* weight
                        green &+= Int32(pixel[1]) &* weight
                        blue &+= Int32(pixel[2]) &* weight
                        pixel += 3
                    }
                    target[3 &* column] = clip8(red)
                    target[3 &* column &+ 1] = clip8(green)
                    target[3 &* column &+ 2] = clip8(blue)
                }
            }
        }
    }

    // output: [outputHeight, width, 3]; input: rows of width × 3 bytes, inputRowStride apart,
    // whose row 0 is the image's row −rowOffset (a temporary holding only the rows read)
    private func verticalPass(output: UnsafeMutablePointer<UInt8>, input: UnsafePointer<UInt8>, inputRowStride: Int,
                              width: Int, outputHeight: Int, rowOffset: Int) {
        let kernelSize = vertical.kernelSize
        let rowBytes = width * 3
        vertical.withPointers { bounds, weights in
            for row in 0..<outputHeight {
                let first = bounds[2 &* row] &+ rowOffset, count = bounds[2 &* row &+ 1]
                let kernel = weights + row &* kernelSize
                let target = output + row &* rowBytes
                for byte in 0..<rowBytes {
                    var sum: Int32 = 1 << 21
                    var pixel = input + (first &* inputRowStride &+ byte)
                    for tap in 0..<count {
                        sum &+= Int32(pixel.pointee) &* kernel[tap]
                        pixel += inputRowStride
                    }
                    target[byte] = clip8(sum)
                }
            }
        }
    }
}

/// Pillow's clip8: the fixed-point sum shifted down and clamped to a byte.
@inline(__always)
func clip8(_ sum: Int32) -> UInt8 {
    let value = sum >> Int32(Resampler.precisionBits)
    return value <= 0 ? 0 : value >= 255 ? 255 : UInt8(truncatingIfNeeded: value)
}

/// Keys' cubic convolution kernel with a = −0.5 (Pillow's bicubic_filter).
@inline(__always)
func bicubicKernel(_ distance: Double) -> Double {
    let a = -0.5
    let x = distance < 0 ? -distance : distance
    if x < 1.0 { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1 }
    if x < 2.0 { return (((x - 5) * x + 8) * x - 4) * a }
    return 0.0
}

/// One axis's taps and fixed-point weights (Pillow's precompute_coeffs and
/// normalize_coeffs_8bpc, for the box covering the whole input).
struct AxisCoefficients {
    private(set) var kernelSize = 0
    /// For each output: first input index, number of taps.
    private(set) var bounds: [Int] = []
    /// [outputs, kernelSize] weights with 22 fractional bits; unused taps are 0.
    private(set) var weights: [Int32] = []
    private var computedInputSize = -1
    private var computedOutputSize = -1

    /// First input index any output reads.
    var firstInput: Int { bounds[0] }
    /// One past the last input index any output reads.
    var endInput: Int { bounds[bounds.count - 2] + bounds[bounds.count - 1] }

    mutating func compute(inputSize: Int, outputSize: Int) {
        if computedInputSize == inputSize && computedOutputSize == outputSize { return }
        let scale = Double(inputSize) / Double(outputSize)
        let filterScale = max(scale, 1.0)
        let support = 2.0 * filterScale
        kernelSize = Int(support.rounded(.up)) * 2 + 1
        bounds = [Int](repeating: 0, count: 2 * outputSize)
        weights = [Int32](repeating: 0, count: outputSize * kernelSize)
        var kernel = [Double](repeating: 0, count: kernelSize)
        let inverseScale = 1.0 / filterScale
        for output in 0..<outputSize {
            let center = (Double(output) + 0.5) * scale
            // C's (int) cast truncates toward zero, as Swift's Int(_:) does.
            let first = max(Int(center - support + 0.5), 0)
            let count = min(Int(center + support + 0.5), inputSize) - first
            var total = 0.0
            for tap in 0..<count {
                let weight = bicubicKernel((Double(tap + first) - center + 0.5) * inverseScale)
                kernel[tap] = weight
                total += weight
            }
            for tap in 0..<kernelSize {
                var weight = tap < count ? kernel[tap] : 0
                if tap < count && total != 0 { weight /= total }
                let scaled = weight * Double(1 << Resampler.precisionBits)
                weights[output * kernelSize + tap] = Int32(weight < 0 ? -0.5 + scaled : 0.5 + scaled)
            }
            bounds[2 * output] = first
            bounds[2 * output + 1] = count
        }
        computedInputSize = inputSize
        computedOutputSize = outputSize
    }

    func withPointers<Result>(_ body: (UnsafePointer<Int>, UnsafePointer<Int32>) -> Result) -> Result {
        bounds.withUnsafeBufferPointer { boundsPointer in
            weights.withUnsafeBufferPointer { weightsPointer in body(boundsPointer.baseAddress!, weightsPointer.baseAddress!) }
        }
    }
}
