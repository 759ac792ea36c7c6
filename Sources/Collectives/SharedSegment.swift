/// The memory that the ranks of one machine share: one anonymous file (memfd), mapped
/// by every rank, its layout, and the system calls around it.
///
/// The file has no name in any directory: rank 0 creates it with memfd_create, the
/// others open it through /proc/<rank 0's pid>/fd/<descriptor>, which they learn over
/// the authenticated TCP ring together with a 256-bit secret that the segment's header
/// must carry. Once every rank has mapped it, every descriptor is closed; the memory
/// lives exactly as long as the last mapping, so a crash leaves nothing behind.
import CSharedMemory
#if canImport(Glibc)
import Glibc
#endif

/// Where things are in the segment. Every field is at a fixed offset; the control
/// block of each rank is written only by that rank.
struct SegmentLayout {
    static let magic: UInt64 = 0x4D41_4553_484D_0002    // "MAESHM", version 2
    static let headerBytes = 4096
    /// One rank's control block: counters and pid (line 0), call headers (lines 1–2), failure message (lines 3–4).
    static let controlBytes = 320
    static let messageOffset = 192
    static let messageBytes = 128
    /// Pieces in flight: a rank may fill the next piece's slot while others still read the last one.
    static let slots = 2

    let worldSize: Int
    /// Bytes of one rank's input region in one slot (a multiple of 64).
    let slotBytes: Int

    var controlOffset: Int { Self.headerBytes }
    var dataOffset: Int { (controlOffset + worldSize * Self.controlBytes + 4095) / 4096 * 4096 }
    /// Each slot holds one input region per rank and one result region.
    var totalBytes: Int { dataOffset + Self.slots * (worldSize + 1) * slotBytes }

    func control(_ rank: Int) -> Int { controlOffset + rank * Self.controlBytes }
    func input(slot: Int, rank: Int) -> Int { dataOffset + (slot * (worldSize + 1) + rank) * slotBytes }
    func result(slot: Int) -> Int { input(slot: slot, rank: worldSize) }
}

/// The counters in each rank's control block (byte offsets). Each counts pieces: a
/// rank sets it to the number of the last piece it finished that stage of.
enum Counter: Int {
    case arrived = 0    // its inputs of the piece are in its region (and, first piece of a call, its call header)
    case reduced = 4    // its part of the piece's result is in the result region
    case departed = 8   // it has copied the result out: the slot may be reused
}

/// The fields of the segment's header, written by rank 0 before anyone else maps it (byte offsets).
enum HeaderField {
    static let magic = 0           // UInt64: `SegmentLayout.magic`
    static let worldSize = 8       // UInt32
    static let slotBytes = 12      // UInt32
    static let secret = 16         // 8 × UInt32: the secret rank 0 also sent over the ring
    static let secretWords = 8
}

/// One call header in a control block (byte offsets from the entry), as the ranks compare them.
enum CallHeaderField {
    static let entryBytes = 48
    static let operation = 0       // UInt32
    static let root = 4            // UInt32
    static let sequence = 8        // UInt64
    static let count = 16          // UInt64
    static let offset = 24         // UInt64
    static let wholeCount = 32     // UInt64
    static let wire = 40           // UInt32: `GradientWire.wireCode`
}

/// Other fields of a control block (byte offsets).
enum ControlField {
    static let sleepers = 12       // UInt32: ranks sleeping on this block's counters
    static let state = 16          // UInt32: `RankState`
    static let processID = 20      // UInt32
    static let callHeaders = 64    // two `CallHeader`s of 48 bytes, by sequence parity
}

/// A rank's state as its peers see it.
enum RankState: UInt32 {
    case running = 0, failed = 1, closed = 2
}

/// One mapping of the segment.
final class SharedSegment {
    let base: UnsafeMutableRawPointer
    let byteCount: Int

    /// Creates the anonymous file, sizes it and maps it; returns the mapping and the
    /// descriptor (which the caller closes once every rank has opened it).
    static func create(byteCount: Int, context: String) throws -> (SharedSegment, descriptor: Int32) {
        let descriptor = mae_memfd_create("mae-collective")
        guard descriptor >= 0 else {
            throw CollectiveError.systemCall(name: "memfd_create", errno: errno,
                                             context: "\(context): creating the shared segment (use --transport ring where memfd is unavailable)")
        }
        do {
            guard ftruncate(descriptor, off_t(byteCount)) == 0 else {
                throw CollectiveError.systemCall(name: "ftruncate", errno: errno,
                                                 context: "\(context): sizing the shared segment to \(byteCount) bytes")
            }
            return (try SharedSegment(descriptor: descriptor, byteCount: byteCount, context: context), descriptor)
        } catch {
            Glibc.close(descriptor)
            throw error
        }
    }

    /// Opens the segment that process `processID` holds as descriptor `descriptor` and
    /// maps it; the descriptor opened here is closed again at once.
    static func open(processID: Int32, descriptor: Int32, byteCount: Int, context: String) throws -> SharedSegment {
        let path = "/proc/\(processID)/fd/\(descriptor)"
        var opened: Int32
        repeat { opened = Glibc.open(path, O_RDWR | O_CLOEXEC) } while opened < 0 && errno == EINTR
        guard opened >= 0 else {
            throw CollectiveError.systemCall(name: "open", errno: errno, context: "\(context): opening rank 0's shared segment "
                + "\(path) (ranks in separate process namespaces or under another user cannot share memory: use --transport ring)")
        }
        defer { Glibc.close(opened) }
        var status = stat()
        guard fstat(opened, &status) == 0 else {
            throw CollectiveError.systemCall(name: "fstat", errno: errno, context: "\(context): inspecting \(path)")
        }
        guard Int(status.st_size) == byteCount else {
            throw CollectiveError.rendezvous("\(context): \(path) has \(status.st_size) bytes, expected \(byteCount): "
                + "it is not this job's segment")
        }
        return try SharedSegment(descriptor: opened, byteCount: byteCount, context: context)
    }

    private init(descriptor: Int32, byteCount: Int, context: String) throws {
        guard let address = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0),
              address != MAP_FAILED else {
            throw CollectiveError.systemCall(name: "mmap", errno: errno,
                                             context: "\(context): mapping the shared segment of \(byteCount) bytes")
        }
        base = address
        self.byteCount = byteCount
    }

    deinit { munmap(base, byteCount) }

    // MARK: Shared words

    func word(at offset: Int) -> UnsafeMutablePointer<UInt32> {
        (base + offset).assumingMemoryBound(to: UInt32.self)
    }

    func loadAcquire(_ offset: Int) -> UInt32 { mae_atomic_load_acquire_u32(word(at: offset)) }
    func storeRelease(_ offset: Int, _ value: UInt32) { mae_atomic_store_release_u32(word(at: offset), value) }
}

/// pidfds of the peer processes: poll says at once when one has ended.
struct PeerProcesses {
    /// One descriptor per rank; -1 for this process (and ranks that are threads of it)
    /// and where pidfd_open is unavailable (the timeout still bounds every wait).
    private(set) var descriptors: [Int32]
    let processIDs: [Int32]

    init(processIDs: [Int32]) {
        self.processIDs = processIDs
        let own = getpid()
        descriptors = processIDs.map { $0 == own ? -1 : mae_pidfd_open($0) }
    }

    /// Whether rank `rank`'s process has ended (exited or been killed, reaped or not).
    func hasEnded(_ rank: Int) -> Bool {
        let descriptor = descriptors[rank]
        guard descriptor >= 0 else { return false }
        var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) > 0 && entry.revents != 0
    }

    mutating func close() {
        for descriptor in descriptors where descriptor >= 0 { Glibc.close(descriptor) }
        descriptors = descriptors.map { _ in -1 }
    }
}

/// 256 bits from the system's cryptographic generator (getrandom), as 8 words.
func randomSecret() -> [UInt32] {
    var generator = SystemRandomNumberGenerator()
    return (0..<HeaderField.secretWords).map { _ in UInt32.random(in: .min ... .max, using: &generator) }
}
