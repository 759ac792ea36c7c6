import Kernels
import System

/// The tensors of a weights file of either format the official code publishes or reads:
/// safetensors, or a PyTorch `.pth` written by `torch.save` (a zip archive whose pickle is
/// a state dict, or a dict holding one under "model" or "state_dict"). Values are converted
/// to Float on reading.
public struct WeightsFile {
    /// One tensor.
    public struct Tensor {
        public let name: String
        public let shape: [Int]
        /// The element type as the file names it ("F32", "FloatStorage", ...).
        public let dtype: String
        public let values: [Float]
    }

    public let path: String
    /// In the file's order.
    public let tensors: [Tensor]
    /// The other entries of a `.pth` dict beside the state dict (e.g. "epoch", "args"); for
    /// safetensors, the metadata keys.
    public let otherKeys: [String]

    /// The tensor called `name`, or nil.
    public func tensor(named name: String) -> Tensor? { tensors.first { $0.name == name } }

    /// Reads `path`, by its content: a zip archive is a `.pth`, anything else safetensors.
    /// Throws a one-line error naming the file and the problem.
    public static func read(path: String) throws -> WeightsFile {
        // Mapping costs nothing until pages are touched; only the first four bytes are.
        let mapping = try MappedFile(path: path)
        let isZip = withExtendedLifetime(mapping) { Array(mapping.bytes.prefix(4)) == [0x50, 0x4B, 0x03, 0x04] }
        return isZip ? try readTorch(path: path) : try readSafeTensors(path: path)
    }

    static func readSafeTensors(path: String) throws -> WeightsFile {
        let file = try SafeTensorsFile.read(path: path)
        let tensors = try file.tensors.map { tensor -> Tensor in
            guard tensor.dtype.convertsToFloat else {
                throw WeightsError(path: path, problem: "tensor '\(tensor.name)' has dtype \(tensor.dtype.rawValue); weights must be F32, F16, BF16 or F64")
            }
            return Tensor(name: tensor.name, shape: tensor.shape, dtype: tensor.dtype.rawValue,
                          values: try file.floats(named: tensor.name))
        }
        return WeightsFile(path: path, tensors: tensors, otherKeys: file.metadata.keys.sorted())
    }

    static func readTorch(path: String) throws -> WeightsFile {
        func failure(_ problem: String) -> WeightsError { WeightsError(path: path, problem: problem) }
        let archive = try TorchZipArchive(path: path)
        defer { withExtendedLifetime(archive) {} }  // the entries are views into its mapping
        guard let pickleName = archive.entries.keys.filter({ $0.hasSuffix("/data.pkl") || $0 == "data.pkl" }).min(),
              let pickle = archive.entries[pickleName] else {
            throw failure("a zip archive without data.pkl: not a file torch.save wrote")
        }
        let prefix = String(pickleName.dropLast("data.pkl".count))
        if let order = archive.entries[prefix + "byteorder"], String(decoding: order, as: UTF8.self) != "little" {
            throw failure("tensors stored big-endian; re-save the file on a little-endian machine")
        }
        let root: PickleValue
        do {
            root = try unpickle(pickle)
        } catch let error as PickleError {
            throw failure(error.message)
        }
        guard case .dict(let top) = root else { throw failure("the pickle holds no dict (not a state dict or checkpoint)") }
        // The official checkpoints: {"model": state_dict, ...}; a bare state dict also works.
        var stateDict = top
        var otherKeys: [String] = []
        if !top.values.contains(where: { if case .tensor = $0 { return true } else { return false } }) {
            guard let key = ["model", "state_dict"].first(where: { top[$0] != nil }), case .dict(let inner)? = top[key] else {
                throw failure("missing key 'model': the dict has \(top.stringKeys.map { "'\($0)'" }.joined(separator: ", ")) "
                              + "and no tensors of its own (expected torch.save({'model': model.state_dict()}) or a state dict)")
            }
            stateDict = inner
            otherKeys = top.stringKeys.filter { $0 != key }
        }
        var tensors: [Tensor] = []
        for (key, value) in zip(stateDict.keys, stateDict.values) {
            guard case .string(let name) = key else { throw failure("a state dict key that is not a string") }
            guard case .tensor(let reference) = value else {
                throw failure("entry '\(name)' of the state dict is not a tensor")
            }
            guard let storage = archive.entries[prefix + "data/" + reference.storageKey] else {
                throw failure("tensor '\(name)': its storage data/\(reference.storageKey) is missing from the archive")
            }
            tensors.append(Tensor(name: name, shape: reference.shape, dtype: reference.storageType,
                                  values: try gather(reference, from: storage, name: name, failure: failure)))
        }
        return WeightsFile(path: path, tensors: tensors, otherKeys: otherKeys)
    }

    /// The tensor's elements in row-major order, converted to Float, whatever its strides.
    private static func gather(_ tensor: TorchTensorReference, from storage: UnsafeRawBufferPointer, name: String,
                               failure: (String) -> WeightsError) throws -> [Float] {
        let elementSize: Int
        let convert: (UnsafeRawBufferPointer, Int) -> Float
        switch tensor.storageType {
        case "FloatStorage":
            elementSize = 4
            convert = { Float(bitPattern: UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: $1 * 4, as: UInt32.self))) }
        case "DoubleStorage":
            elementSize = 8
            convert = { Float(Double(bitPattern: UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: $1 * 8, as: UInt64.self)))) }
        case "HalfStorage":
            elementSize = 2
            convert = { Float(Float16(bitPattern: UInt16(littleEndian: $0.loadUnaligned(fromByteOffset: $1 * 2, as: UInt16.self)))) }
        case "BFloat16Storage":
            elementSize = 2
            convert = { Float(bitPattern: UInt32(UInt16(littleEndian: $0.loadUnaligned(fromByteOffset: $1 * 2, as: UInt16.self))) << 16) }
        default:
            throw failure("tensor '\(name)' is \(tensor.storageType); weights must be float, double, half or bfloat16")
        }
        guard tensor.shape.count == tensor.strides.count, tensor.shape.allSatisfy({ $0 >= 0 }), tensor.storageOffset >= 0 else {
            throw failure("tensor '\(name)' has an invalid shape \(tensor.shape) or strides \(tensor.strides)")
        }
        let count = tensor.shape.reduce(1, *)
        var values = [Float](repeating: 0, count: count)
        guard count > 0 else { return values }
        let elements = storage.count / elementSize
        var largest = tensor.storageOffset
        for (size, stride) in zip(tensor.shape, tensor.strides) { largest += (size - 1) * stride }
        guard largest < elements, tensor.strides.allSatisfy({ $0 >= 0 }) else {
            throw failure("tensor '\(name)' reaches past its storage of \(elements) elements (a damaged file?)")
        }
        var index = [Int](repeating: 0, count: tensor.shape.count)
        for output in 0..<count {
            var element = tensor.storageOffset
            for axis in index.indices { element += index[axis] * tensor.strides[axis] }
            values[output] = convert(storage, element)
            var axis = index.count - 1
            while axis >= 0 {
                index[axis] += 1
                if index[axis] < tensor.shape[axis] { break }
                index[axis] = 0
                axis -= 1
            }
        }
        return values
    }
}

