/// The fine-tuning augmentation's settings: main_finetune.py's `build_transform(is_train=True)`,
/// timm's `create_transform(input_size, is_train=True, color_jitter=None,
/// auto_augment=--aa, interpolation='bicubic', re_prob=--reprob, re_mode=--remode,
/// re_count=--recount)`:
/// RandomResizedCrop(scale 0.08–1, bicubic) → flip → RandAugment → normalise → random erasing.
public struct FinetuneAugmentationSettings: Equatable, Sendable {
    /// RandAugment, or nil when off (`--aa none`).
    public var randAugment: RandAugmentSettings?
    /// Random erasing, or nil when off (`--reprob 0`).
    public var randomErasing: RandomErasing?

    /// The official defaults: `rand-m9-mstd0.5-inc1`, reprob 0.25, remode pixel, recount 1.
    public static let official = try! FinetuneAugmentationSettings()

    /// - Parameters:
    ///   - randAugment: timm's configuration string (`rand-m9-mstd0.5-inc1`), or "none" / "" for none.
    ///   - reprob: the probability of random erasing, 0...1 (0 turns it off).
    ///   - remode: `pixel`, `rand` or `const`.
    ///   - recount: the most erased boxes per image, at least 1.
    /// - Throws: `DataError` with a one-line message for a bad value.
    public init(randAugment: String = "rand-m9-mstd0.5-inc1", reprob: Double = 0.25,
                remode: String = "pixel", recount: Int = 1) throws {
        self.randAugment = randAugment.isEmpty || randAugment == "none" ? nil : try RandAugmentSettings(parsing: randAugment)
        guard reprob >= 0 && reprob <= 1 else {
            throw DataError("--reprob \(reprob) must be a probability between 0 and 1")
        }
        guard let mode = RandomErasingMode(rawValue: remode) else {
            throw DataError("--remode '\(remode)' is not one of pixel, rand, const")
        }
        guard recount >= 1 else { throw DataError("--recount \(recount) must be at least 1") }
        randomErasing = reprob > 0 ? RandomErasing(probability: reprob, mode: mode, count: recount) : nil
    }
}
