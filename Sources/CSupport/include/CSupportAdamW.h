#ifndef MAE_CSUPPORT_ADAMW_H
#define MAE_CSUPPORT_ADAMW_H

#include <stdint.h>

/// The AdamW update of Kernels' `adamwUpdate`, 16 parameters per instruction where the CPU
/// has AVX512F/BW, 8 where it has AVX only (then not when `rounded_parameters` is given: bf16
/// runs need AVX-512). In C because Swift's square root does not vectorise (SIMD16's becomes
/// sixteen scalar ones, a scalar loop's calls sqrtf), which left the update at a third of
/// the memory's speed. Every operation is the Swift code's, in its order, each rounded (no
/// fused multiply-add; the square root and the divisions are correctly rounded either way),
/// so the bits are the same:
///   p = parameters[i] · decay;  m = beta1 · m[i] + one_minus_beta1 · g;
///   v = beta2 · v[i] + (one_minus_beta2 · g) · g;
///   parameters[i] = p − step_size · (m / (sqrt(v) / correction2_root + epsilon)),
/// and, when `rounded_parameters` is not NULL, that rounded to bf16 there (`mae_round_to_bf16`).
/// Returns the count done from the start (a multiple of 16 or 8; 0 on a CPU without AVX, or
/// without AVX-512 when asked for the rounded copy): the caller updates the rest.
long mae_adamw_update(float *parameters, const float *gradients, float *first_moment, float *second_moment,
                      uint16_t *rounded_parameters, long count, float decay, float beta1, float one_minus_beta1,
                      float beta2, float one_minus_beta2, float step_size, float correction2_root, float epsilon);

/// Lets mae_adamw_update use vectors of at most `bits` (512, 256, or 0 for none), for tests
/// that check each path against the scalar code on a CPU that has them all.
void mae_adamw_limit_vector_bits(int bits);

#endif
