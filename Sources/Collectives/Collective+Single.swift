/// The collective of a run with one process: every reduction is the identity.
///
/// Lets the training loop call the same collective functions whether or not it
/// is distributed.
public final class SingleProcessCollective: Collective {
    public let rank = 0
    public let worldSize = 1
    private var isClosed = false

    public init() {}

    public func allReduceAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try check(count: count)
    }

    public func allReduceAverage(_ buffer: UnsafeMutablePointer<Float>, count: Int, slice: VectorSlice) throws {
        try check(count: count)
        try slice.check(count: count)
    }

    public var reducesSlicesAsWhole: Bool { true }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try check(count: count)
    }

    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {
        try check(count: count)
        guard root == 0 else {
            throw CollectiveError.invalidArgument("broadcast root \(root) is not a rank of a world of 1")
        }
    }

    public func allReduceScalars(_ values: [Double]) throws -> [Double] {
        try check(count: values.count)
        return values
    }

    public func barrier() throws { try check(count: 0) }

    public func close() { isClosed = true }

    private func check(count: Int) throws {
        guard !isClosed else { throw CollectiveError.closed("close() was called") }
        guard count >= 0 else { throw CollectiveError.invalidArgument("count \(count) is negative") }
    }
}
