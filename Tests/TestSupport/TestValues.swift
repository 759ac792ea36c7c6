import Foundation
import Kernels

/// Deterministic test values, uniform in [low, high), from CounterRandom(.test).
public func randomValues(_ count: Int, seed: Int, in range: Range<Double> = -1..<1) -> [Double] {
    var random = CounterRandom(seed: 1234, purpose: .test, index: seed)
    return (0..<count).map { _ in random.nextDouble(in: range) }
}

/// A fresh directory under the system's temporary directory, removed by `remove()`.
public struct TemporaryDirectory: Sendable {
    public let path: String

    public init(_ label: String = "test") throws {
        path = NSTemporaryDirectory() + "mae-\(label)-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// The path of `name` inside the directory.
    public func file(_ name: String) -> String { path + "/" + name }

    public func remove() { try? FileManager.default.removeItem(atPath: path) }
}
