/// The number format gradients travel in between ranks (`--gradient-wire`), as PyTorch
/// DDP's `bf16_compress_hook` but summed in fp32.
///
/// With `bf16`, every value a rank sends in a gradient all-reduce (or reduce-scatter) is
/// rounded to bf16 (to nearest, ties to even), and the receiver widens it to fp32 and adds
/// its own fp32 gradient in fp32. In the ring's order for element e of chunk c
/// (`TCPRingCollective`), with x_r rank r's fp32 value:
///
///     s_0 = x_c,   s_k = widen(round(s_(k−1))) + x_(c+k)   for k = 1 … N−1,
///     mean = widen(round(s_(N−1) / N))
///
/// So the partial sums that cross the wire (s_0 … s_(N−2)) are rounded once each, the
/// adds and the division are fp32, and the mean is rounded once by the rank that finishes
/// it, which keeps the rounded value itself and sends it on: every rank ends with the same
/// bits, half the bytes cross each hop, and the result depends only on N, the lanes and
/// the element's position (so buckets give the whole call's bits). Shared memory, which
/// has no wire, applies the same rounding so that results do not depend on the transport;
/// MPI cannot (it sums in its own order) and refuses `bf16`. With one rank nothing
/// travels and nothing is rounded. Infinities stay infinities; NaN stays NaN (quiet, sign
/// kept); fp32 values beyond bf16's largest become infinities.
public enum GradientWire: String, CaseIterable, Codable, Sendable, CustomStringConvertible {
    /// fp32 on the wire: the exact sums of the ring's order (the default).
    case fp32
    /// bf16 on the wire: half the bytes, partial sums rounded as above.
    case bf16

    public var description: String { rawValue }

    /// The help text of `--gradient-wire`.
    public static let optionHelp = "number format of the gradients between workers: fp32, or bf16 (each value sent rounded "
        + "to bf16, summed in fp32, the mean rounded to bf16 on every worker: half the bytes; not with --backend mpi)"

    /// The `--gradient-wire` value `text`; `fail` makes the error for anything else.
    public static func parse(_ text: String, fail: (String) -> Error) throws -> GradientWire {
        guard let wire = GradientWire(rawValue: text) else { throw fail("--gradient-wire expects fp32 or bf16, got '\(text)'") }
        return wire
    }

    /// Bytes of one element on the wire.
    var elementBytes: Int { self == .fp32 ? 4 : 2 }
}

extension GradientWire {
    /// The code of the wire in a call header.
    var wireCode: UInt32 { self == .fp32 ? 0 : 1 }

    init?(wireCode: UInt32) {
        switch wireCode {
        case 0: self = .fp32
        case 1: self = .bf16
        default: return nil
        }
    }
}
