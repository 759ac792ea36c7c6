import Model
import Testing
@testable import Training

/// Buckets of the overlapped gradient exchange: whole tensors, from the end of the layout
/// to its start, each at least the bucket size but the last.
@Suite struct GradientBucketTests {
    @Test(arguments: [1, 4096, 1 << 20, 25 << 20, Int.max])
    func bucketsCoverTheLayoutBackwardsAtTensorBoundaries(bucketBytes: Int) throws {
        let table = ParameterTable(config: try ModelConfig.named("mae_vit_tiny_patch4"))
        let buckets = GradientExchange.buckets(of: table, bucketBytes: bucketBytes)
        #expect(buckets.first?.upperBound == table.count && buckets.last?.lowerBound == 0)
        #expect(zip(buckets, buckets.dropFirst()).allSatisfy { $0.lowerBound == $1.upperBound && !$0.isEmpty })
        let starts = Set(table.tensors.map(\.offset))
        #expect(buckets.allSatisfy { starts.contains($0.lowerBound) }, "buckets start at tensors")
        #expect(buckets.dropLast().allSatisfy { $0.count * 4 >= bucketBytes })
        if bucketBytes == 1 { #expect(buckets.count == table.tensors.filter { $0.count > 0 }.count) }
        if bucketBytes == Int.max { #expect(buckets == [0..<table.count]) }
    }
}
