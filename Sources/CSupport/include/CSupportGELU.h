#ifndef MAE_CSUPPORT_GELU_H
#define MAE_CSUPPORT_GELU_H

#include <stdint.h>

/// The rows of Kernels' `biasGELUForward` 16 floats per instruction, where Swift's loop
/// (vectorised by LLVM 8 wide for the Haswell baseline) cannot use AVX-512: the same
/// operations in the same order, so the same bits. For r < rows, c < width, with
/// x = pre_activation[r · width + c] + bias[c]: activated[r · width + c] = x · Φ(x), or,
/// when `rounded_activated` is not NULL, that rounded to bf16 there instead (`activated`
/// unread and unwritten); pre_activation[r · width + c] = Φ(x) + x · φ(x).
/// Returns 1, or 0 without doing anything where the CPU lacks AVX512F/BW/VL.
int mae_bias_gelu_avx512(float *activated, uint16_t *rounded_activated, float *pre_activation, const float *bias,
                         long rows, long width);

#endif
