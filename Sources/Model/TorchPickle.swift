// A reader for the pickle inside a `torch.save` file: exactly the opcodes that pickling a
// dict of tensors (a state dict, possibly inside {"model": ...}) uses, protocols 2 to 4.
//
// Nothing is ever executed. A pickle names functions (GLOBAL) and asks for them to be
// called (REDUCE); this reader recognises the few torch uses to rebuild tensors and
// ordered dicts and applies their meaning itself. Any other call becomes an opaque value
// that can be carried around (e.g. the `args` Namespace of a training checkpoint) but not
// used as a tensor. An opcode outside the list is an error that names it.

/// A value of the pickle.
indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple([PickleValue])
    case list(PickleList)
    case dict(PickleDict)
    /// A function or class the pickle names (never called).
    case global(module: String, name: String)
    /// What an unrecognised call would have made: only its name is kept.
    case opaque(String)
    /// A persistent storage reference: its element type's name (e.g. "FloatStorage") and
    /// its key in the archive (`data/<key>`).
    case storage(type: String, key: String)
    case tensor(TorchTensorReference)
}

/// A mutable list (APPEND after memoisation must be seen through the memo).
final class PickleList { var items: [PickleValue] = [] }

/// A mutable dict, keys in insertion order (torch's OrderedDict).
final class PickleDict {
    var keys: [PickleValue] = []
    var values: [PickleValue] = []

    /// The value under the string key `key`.
    subscript(key: String) -> PickleValue? {
        for (index, stored) in keys.enumerated() { if case .string(key) = stored { return values[index] } }
        return nil
    }

    /// The string keys, for messages.
    var stringKeys: [String] { keys.compactMap { if case .string(let key) = $0 { return key } else { return nil } } }
}

/// A tensor as `torch._utils._rebuild_tensor_v2` describes it.
struct TorchTensorReference {
    var storageType: String
    var storageKey: String
    /// In elements.
    var storageOffset: Int
    var shape: [Int]
    /// In elements.
    var strides: [Int]
}

/// Why a pickle cannot be read.
struct PickleError: Error {
    let message: String
}

/// Runs the pickle machine over `bytes`; returns the value STOP leaves.
func unpickle(_ bytes: UnsafeRawBufferPointer) throws -> PickleValue {
    var stack: [PickleValue] = []
    var marks: [Int] = []
    var memo: [Int: PickleValue] = [:]
    var position = 0

    func fail(_ message: String) -> PickleError { PickleError(message: message) }
    func take(_ count: Int) throws -> UnsafeRawBufferPointer {
        guard count >= 0, position + count <= bytes.count else { throw fail("truncated pickle at byte \(position)") }
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + count)])
    }
    func integer<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        let raw = try take(MemoryLayout<T>.size)
        return T(littleEndian: raw.loadUnaligned(as: T.self))
    }
    func line() throws -> String {
        var end = position
        while end < bytes.count && bytes[end] != 0x0A { end += 1 }
        guard end < bytes.count else { throw fail("truncated pickle (an unterminated line) at byte \(position)") }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[position..<end]), as: UTF8.self)
        position = end + 1
        return text
    }
    func pop() throws -> PickleValue {
        guard let value = stack.popLast() else { throw fail("pickle stack underflow at byte \(position)") }
        return value
    }
    func popToMark() throws -> [PickleValue] {
        guard let mark = marks.popLast(), mark <= stack.count else { throw fail("pickle MARK missing at byte \(position)") }
        defer { stack.removeSubrange(mark...) }
        return Array(stack[mark...])
    }
    func text(_ raw: UnsafeRawBufferPointer) -> PickleValue { .string(String(decoding: raw, as: UTF8.self)) }

    while true {
        let opcodeAt = position
        let opcode = try take(1)[0]
        switch opcode {
        case 0x80: _ = try take(1)                                   // PROTO
        case 0x95: _ = try take(8)                                   // FRAME
        case 0x28: marks.append(stack.count)                         // MARK '('
        case 0x2E: return try pop()                                  // STOP '.'
        case 0x4E: stack.append(.none)                              // NONE 'N'
        case 0x88: stack.append(.bool(true))                         // NEWTRUE
        case 0x89: stack.append(.bool(false))                        // NEWFALSE
        case 0x4A: stack.append(.int(Int(try integer(Int32.self))))  // BININT 'J'
        case 0x4B: stack.append(.int(Int(try take(1)[0])))           // BININT1 'K'
        case 0x4D: stack.append(.int(Int(try integer(UInt16.self)))) // BININT2 'M'
        case 0x8A:                                                   // LONG1
            let count = Int(try take(1)[0])
            guard count <= 8 else { throw fail("integer of \(count) bytes at byte \(opcodeAt) is too large") }
            let raw = try take(count)
            var value: UInt64 = 0
            for (index, byte) in raw.enumerated() { value |= UInt64(byte) << (8 * UInt64(index)) }
            if count > 0 && count < 8 && raw[count - 1] & 0x80 != 0 { value |= ~0 << (8 * UInt64(count)) }  // sign
            stack.append(.int(Int(Int64(bitPattern: value))))
        case 0x47:                                                   // BINFLOAT 'G' (big-endian)
            stack.append(.float(Double(bitPattern: UInt64(bigEndian: try take(8).loadUnaligned(as: UInt64.self)))))
        case 0x58: stack.append(text(try take(Int(try integer(UInt32.self)))))     // BINUNICODE 'X'
        case 0x8C: stack.append(text(try take(Int(try take(1)[0]))))               // SHORT_BINUNICODE
        case 0x8D: stack.append(text(try take(Int(try integer(UInt64.self)))))     // BINUNICODE8
        case 0x55: stack.append(text(try take(Int(try take(1)[0]))))               // SHORT_BINSTRING 'U'
        case 0x54: stack.append(text(try take(Int(try integer(UInt32.self)))))     // BINSTRING 'T'
        case 0x43: stack.append(.bytes(Array(try take(Int(try take(1)[0])))))      // SHORT_BINBYTES 'C'
        case 0x42: stack.append(.bytes(Array(try take(Int(try integer(UInt32.self))))))  // BINBYTES 'B'
        case 0x29: stack.append(.tuple([]))                          // EMPTY_TUPLE ')'
        case 0x74: stack.append(.tuple(try popToMark()))             // TUPLE 't'
        case 0x85: stack.append(.tuple([try pop()]))                 // TUPLE1
        case 0x86: let b = try pop(), a = try pop(); stack.append(.tuple([a, b]))          // TUPLE2
        case 0x87: let c = try pop(), b = try pop(), a = try pop(); stack.append(.tuple([a, b, c]))  // TUPLE3
        case 0x5D: stack.append(.list(PickleList()))                 // EMPTY_LIST ']'
        case 0x61:                                                   // APPEND 'a'
            let item = try pop()
            guard case .list(let list) = stack.last else { throw fail("APPEND to a non-list at byte \(opcodeAt)") }
            list.items.append(item)
        case 0x65:                                                   // APPENDS 'e'
            let items = try popToMark()
            guard case .list(let list) = stack.last else { throw fail("APPENDS to a non-list at byte \(opcodeAt)") }
            list.items += items
        case 0x7D: stack.append(.dict(PickleDict()))                 // EMPTY_DICT '}'
        case 0x73:                                                   // SETITEM 's'
            let value = try pop(), key = try pop()
            guard case .dict(let dict) = stack.last else { throw fail("SETITEM on a non-dict at byte \(opcodeAt)") }
            dict.keys.append(key)
            dict.values.append(value)
        case 0x75:                                                   // SETITEMS 'u'
            let items = try popToMark()
            guard items.count % 2 == 0, case .dict(let dict) = stack.last else {
                throw fail("SETITEMS on a non-dict at byte \(opcodeAt)")
            }
            for pair in stride(from: 0, to: items.count, by: 2) {
                dict.keys.append(items[pair])
                dict.values.append(items[pair + 1])
            }
        case 0x63:                                                   // GLOBAL 'c'
            let module = try line(), name = try line()
            stack.append(.global(module: module, name: name))
        case 0x93:                                                   // STACK_GLOBAL
            guard case .string(let name) = try pop(), case .string(let module) = try pop() else {
                throw fail("STACK_GLOBAL without names at byte \(opcodeAt)")
            }
            stack.append(.global(module: module, name: name))
        case 0x52, 0x81:                                             // REDUCE 'R', NEWOBJ
            let arguments = try pop(), callable = try pop()
            guard case .tuple(let values) = arguments else { throw fail("REDUCE without an argument tuple at byte \(opcodeAt)") }
            stack.append(try call(callable, values, at: opcodeAt))
        case 0x62: _ = try pop()                                     // BUILD 'b': state is not needed (OrderedDict _metadata)
            guard !stack.isEmpty else { throw fail("BUILD without an object at byte \(opcodeAt)") }
        case 0x51:                                                   // BINPERSID 'Q'
            guard case .tuple(let id) = try pop(), id.count >= 3, case .string("storage") = id[0],
                  case .global(_, let type) = id[1], case .string(let key) = id[2] else {
                throw fail("a persistent id at byte \(opcodeAt) that is not a torch storage")
            }
            stack.append(.storage(type: type, key: key))
        case 0x71: memo[Int(try take(1)[0])] = stack.last            // BINPUT 'q'
        case 0x72: memo[Int(try integer(UInt32.self))] = stack.last  // LONG_BINPUT 'r'
        case 0x94: memo[memo.count] = stack.last                     // MEMOIZE
        case 0x68, 0x6A:                                             // BINGET 'h', LONG_BINGET 'j'
            let index = opcode == 0x68 ? Int(try take(1)[0]) : Int(try integer(UInt32.self))
            guard let value = memo[index] else { throw fail("memo entry \(index) missing at byte \(opcodeAt)") }
            stack.append(value)
        case 0x30: _ = try pop()                                     // POP '0'
        case 0x31: _ = try popToMark()                               // POP_MARK '1'
        default:
            let printable = opcode >= 0x20 && opcode < 0x7F ? " ('\(Character(Unicode.Scalar(opcode)))')" : ""
            throw fail("unsupported pickle opcode 0x\(String(opcode, radix: 16, uppercase: true))\(printable) at byte "
                       + "\(opcodeAt): not a state dict saved by torch.save (nothing was executed)")
        }
    }
}

/// What REDUCE of `callable` on `arguments` means, for the functions torch's pickles use;
/// anything else becomes an opaque value.
private func call(_ callable: PickleValue, _ arguments: [PickleValue], at offset: Int) throws -> PickleValue {
    guard case .global(let module, let name) = callable else {
        throw PickleError(message: "REDUCE of a value that is not a named function at byte \(offset)")
    }
    switch (module, name) {
    case ("collections", "OrderedDict"):
        return .dict(PickleDict())
    case ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"):
        guard arguments.count >= 4, case .storage(let type, let key) = arguments[0], case .int(let offset) = arguments[1],
              case .tuple(let sizes) = arguments[2], case .tuple(let strides) = arguments[3] else {
            throw PickleError(message: "a tensor at byte \(offset) with arguments other than torch's")
        }
        func integers(_ values: [PickleValue]) throws -> [Int] {
            try values.map { value in
                guard case .int(let number) = value else { throw PickleError(message: "a non-integer size at byte \(offset)") }
                return number
            }
        }
        return .tensor(TorchTensorReference(storageType: type, storageKey: key, storageOffset: offset,
                                            shape: try integers(sizes), strides: try integers(strides)))
    case ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"):
        guard let data = arguments.first, case .tensor = data else {
            throw PickleError(message: "a parameter at byte \(offset) without a tensor")
        }
        return data
    default:
        return .opaque("\(module).\(name)")
    }
}
