#ifndef MAE_CSUPPORT_TRANSPOSE_H
#define MAE_CSUPPORT_TRANSPOSE_H

/// destination[c · destination_ld + r] = source[r · source_ld + c] for r < rows, c < columns:
/// an fp32 matrix transposed, in 16 × 16 tiles of AVX-512 registers where the CPU has AVX512F
/// and AVX512BW, element by element otherwise: for attention's backward, which stores dvᵀ and
/// dkᵀ so (a Swift loop, strided on one side, took three times as long).
void mae_transpose_floats(float *destination, long destination_ld, const float *source, long source_ld,
                          long rows, long columns);

#endif
