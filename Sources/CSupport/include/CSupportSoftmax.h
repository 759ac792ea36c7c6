#ifndef MAE_CSUPPORT_SOFTMAX_H
#define MAE_CSUPPORT_SOFTMAX_H

#include <stdint.h>

/// Attention's softmax (Kernels' `softmaxInPlace`) 16 floats per instruction, where Swift's
/// loops (its maximum scalar, its exponentials 8 wide for the Haswell baseline) cannot use
/// AVX-512: the same operations with the same order of summation, so the same bits.
/// For each r < rows, values[r · count ..< (r + 1) · count] = the softmax of that row, in
/// place; when `rounded` is not NULL, rounded[r · count + c] = values[r · count + c] rounded to
/// bf16 as mae_round_to_bf16 rounds it (for the bf16 product p·v, which then rounds nothing).
/// Returns 1, or 0 without doing anything where the CPU lacks AVX512F/BW/VL.
int mae_softmax_rows_avx512(float *values, uint16_t *rounded, long rows, long count);

#endif
