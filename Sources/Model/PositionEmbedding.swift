import Foundation

/// The fixed 2-D sine-cosine position embedding of the reference (`util/pos_embed.py`,
/// `get_2d_sincos_pos_embed(width, grid, cls_token=True)`), computed in double precision
/// and rounded to float as numpy then torch do.
///
/// Layout of the returned [(grid² + 1), width] table: row 0 (the cls token) is zero;
/// row 1 + r·grid + c holds, for the patch at grid row r and column c,
/// [sin(c·ω), cos(c·ω), sin(r·ω), cos(r·ω)], each block width/4 long, with
/// ω_k = 1 / 10000^(k / (width/4)). The column comes first because the reference
/// builds its grid with `meshgrid(w, h)`.
public func sinCosPositionEmbedding(width: Int, gridSize: Int) -> [Float] {
    precondition(width % 4 == 0, "the 2-D sin-cos embedding needs a width divisible by 4")
    let quarter = width / 4
    let omega = (0..<quarter).map { 1 / pow(10_000.0, Double($0) / Double(quarter)) }
    var table = [Float](repeating: 0, count: (gridSize * gridSize + 1) * width)
    for row in 0..<gridSize {
        for column in 0..<gridSize {
            let base = (1 + row * gridSize + column) * width
            for k in 0..<quarter {
                let columnAngle = Double(column) * omega[k], rowAngle = Double(row) * omega[k]
                table[base + k] = Float(sin(columnAngle))
                table[base + quarter + k] = Float(cos(columnAngle))
                table[base + 2 * quarter + k] = Float(sin(rowAngle))
                table[base + 3 * quarter + k] = Float(cos(rowAngle))
            }
        }
    }
    return table
}
