import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The path of a product (`mae`, `mae-worker`) built next to the test bundle, which
/// `swift build --build-tests` builds with the tests; nil when there is none.
public func builtExecutable(_ name: String) -> String? {
    let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    var directory = testBinary.deletingLastPathComponent()
    var candidates = [directory.appendingPathComponent(name).path]
    for _ in 0..<4 {  // inside an .xctest bundle the products are a few levels up
        directory = directory.deletingLastPathComponent()
        candidates.append(directory.appendingPathComponent(name).path)
    }
    candidates.append(FileManager.default.currentDirectoryPath + "/.build/debug/" + name)
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}
