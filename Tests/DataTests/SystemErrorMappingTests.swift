import Testing
@testable import Data

/// The data pipeline's API throws `DataError`: failed system calls reach its callers as one,
/// with the text naming the call, the path and the reason.
@Suite struct DataSystemErrorMappingTests {
    @Test func aMissingImageIsADataErrorNamingTheCall() {
        let missing = "/nonexistent/mae-data-test/image.JPEG"
        do {
            _ = try ImageDecoder().decode(path: missing)
            Issue.record("decoding a missing file succeeded")
        } catch let error as DataError {
            #expect(error.description == "open(\(missing)) failed: No such file or directory")
        } catch {
            Issue.record("not a DataError: \(error)")
        }
    }

    @Test func anUnwritableImagePathIsADataError() throws {
        let pixels = [UInt8](repeating: 128, count: 8 * 8 * 3)
        let missing = "/nonexistent/mae-data-test/out.png"
        #expect(throws: DataError.self) {
            try writeImage(path: missing, rgb: pixels, width: 8, height: 8, format: .png)
        }
    }
}
