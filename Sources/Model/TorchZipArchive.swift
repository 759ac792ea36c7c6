import System

// The zip container of `torch.save` (PyTorch ≥ 1.6): `NAME/data.pkl` (the pickle),
// `NAME/data/<key>` (each storage's raw little-endian bytes), `NAME/version` and, since
// 1.13, `NAME/byteorder`. PyTorch's writer (miniz) stores every entry uncompressed and
// aligns data to 64 bytes, so only stored entries are read; zip64 sizes and offsets
// (archives of 4 GiB and more) are understood.

/// A `torch.save` zip archive mapped into memory: its stored entries by name.
struct TorchZipArchive {
    let path: String
    private let mapping: MappedFile
    /// Entry name → its bytes, a view into the mapping.
    let entries: [String: UnsafeRawBufferPointer]

    init(path: String) throws {
        self.path = path
        mapping = try MappedFile(path: path)
        let bytes = mapping.bytes
        func failure(_ problem: String) -> WeightsError { WeightsError(path: path, problem: problem) }
        func read<T: FixedWidthInteger>(_ type: T.Type, _ offset: Int) throws -> T {
            guard offset >= 0, offset + MemoryLayout<T>.size <= bytes.count else {
                throw failure("truncated zip archive (a record runs past the end of the file)")
            }
            return T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        }

        // The end-of-central-directory record is in the last 64 KiB + 22 bytes.
        var endRecord = -1
        var position = bytes.count - 22
        while position >= max(0, bytes.count - 22 - 65_535) {
            if try read(UInt32.self, position) == 0x0605_4B50 { endRecord = position; break }
            position -= 1
        }
        guard endRecord >= 0 else {
            throw failure("not a zip archive (no end of central directory); a .pth from torch.save ≥ 1.6 is a zip file")
        }
        var entryCount = Int(try read(UInt16.self, endRecord + 10))
        var directoryOffset = Int(try read(UInt32.self, endRecord + 16))
        if directoryOffset == 0xFFFF_FFFF || entryCount == 0xFFFF {
            // Zip64: the locator just before points at the zip64 end record.
            let locator = endRecord - 20
            guard try read(UInt32.self, locator) == 0x0706_4B50 else { throw failure("corrupt zip64 archive (no locator)") }
            let zip64End = Int(try read(UInt64.self, locator + 8))
            guard try read(UInt32.self, zip64End) == 0x0606_4B50 else { throw failure("corrupt zip64 archive (no end record)") }
            entryCount = Int(try read(UInt64.self, zip64End + 32))
            directoryOffset = Int(try read(UInt64.self, zip64End + 48))
        }

        var entries: [String: UnsafeRawBufferPointer] = [:]
        var record = directoryOffset
        for _ in 0..<entryCount {
            guard try read(UInt32.self, record) == 0x0201_4B50 else { throw failure("corrupt zip central directory") }
            let method = try read(UInt16.self, record + 10)
            var compressedSize = Int(try read(UInt32.self, record + 20))
            var size = Int(try read(UInt32.self, record + 24))
            let nameLength = Int(try read(UInt16.self, record + 28))
            let extraLength = Int(try read(UInt16.self, record + 30))
            let commentLength = Int(try read(UInt16.self, record + 32))
            var localHeader = Int(try read(UInt32.self, record + 42))
            guard record + 46 + nameLength <= bytes.count else { throw failure("truncated zip central directory") }
            let name = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(record + 46)..<(record + 46 + nameLength)]),
                              as: UTF8.self)
            // Zip64 extra field: the 64-bit values of the fields that read 0xFFFFFFFF, in order.
            var extra = record + 46 + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let tag = try read(UInt16.self, extra), length = Int(try read(UInt16.self, extra + 2))
                if tag == 0x0001 {
                    var field = extra + 4
                    if size == 0xFFFF_FFFF { size = Int(try read(UInt64.self, field)); field += 8 }
                    if compressedSize == 0xFFFF_FFFF { compressedSize = Int(try read(UInt64.self, field)); field += 8 }
                    if localHeader == 0xFFFF_FFFF { localHeader = Int(try read(UInt64.self, field)) }
                }
                extra += 4 + length
            }
            guard method == 0, compressedSize == size else {
                throw failure("entry '\(name)' is compressed (method \(method)); torch.save stores entries uncompressed, "
                              + "so this is not a file torch.save wrote (re-save it with torch.save)")
            }
            guard try read(UInt32.self, localHeader) == 0x0403_4B50 else { throw failure("corrupt zip local header of '\(name)'") }
            let dataStart = localHeader + 30 + Int(try read(UInt16.self, localHeader + 26)) + Int(try read(UInt16.self, localHeader + 28))
            guard dataStart + size <= bytes.count else {
                throw failure("truncated: entry '\(name)' runs past the end of the file")
            }
            entries[name] = UnsafeRawBufferPointer(rebasing: bytes[dataStart..<(dataStart + size)])
            record += 46 + nameLength + extraLength + commentLength
        }
        self.entries = entries
    }
}
