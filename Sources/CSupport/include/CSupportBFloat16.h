#ifndef MAE_CSUPPORT_BFLOAT16_H
#define MAE_CSUPPORT_BFLOAT16_H

#include <stdint.h>

/// Rounding fp32 to bf16 and widening it back, for the bf16 products (CProducts, the
/// model's rounded weights) and the bf16 gradient wire (CSupportWire.h). In C because
/// Swift cannot compile one function for AVX-512 and another for CPUs without it: each
/// call runs 16 floats per instruction where the CPU has AVX512F and AVX512BW, element by
/// element otherwise, with the same bits either way.
///
/// Rounding: to nearest, ties to even, on the bit pattern (as PyTorch's
/// round_to_nearest_even): subnormals are rounded, not flushed (unlike VCVTNEPS2BF16),
/// finite values beyond the largest bf16 become infinities, a NaN stays a NaN of the same
/// sign with its quiet bit set. Widening bf16 to fp32 is exact.

/// destination[i] = source[i] rounded to bf16.
void mae_round_to_bf16(uint16_t *destination, const float *source, long count);

/// destination[i] = source[i] rounded to bf16 and widened again (a bf16 value held in fp32).
void mae_round_trip_bf16(float *destination, const float *source, long count);

/// destination[c · rows + r] = source[r · ld + c] rounded to bf16, for r < rows, c < columns:
/// the transpose of a [rows, columns] matrix (leading dimension ld) into a compact
/// [columns, rows] one, in tiles of 16 × 16 so that reads and writes stay in few cache lines.
void mae_round_to_bf16_transposed(uint16_t *destination, const float *source, long rows, long columns, long ld);

/// plain[r · plain_ld + c] = transposed[c · transposed_ld + r] = v[r, c] rounded to bf16,
/// for r < rows, c < columns, where v[r, c] = source[r · ld + c], times factor[r · ld + c]
/// when `factor` is not NULL: `mae_round_to_bf16` of each row and
/// `mae_round_to_bf16_transposed` in one read of the source (a linear layer's output
/// gradient, which its input-gradient product reads by rows and its weight-gradient
/// product transposed; the factor is GELU's derivative, whose backward is that product):
/// strips of 16 rows rounded, then transposed as bf16 while in cache. When `column_sums` is
/// not NULL, column_sums[c] += v[r, c] for each row r in order (the bias gradient, in the
/// additions a loop over the rows does).
void mae_round_to_bf16_both(uint16_t *plain, long plain_ld, uint16_t *transposed, long transposed_ld,
                            const float *source, const float *factor, long rows, long columns, long ld,
                            float *column_sums);

/// A buffer of `count` bf16 values belonging to the calling thread, valid until its next
/// call: for `mae_round_to_bf16_both`'s two outputs, apart from the buffers of CProducts
/// (its `mae_bf16_thread_buffer` and those of the products), which the products reading
/// them use meanwhile. NULL when memory runs out.
uint16_t *mae_bf16_both_buffer(long count);

/// A buffer of `count` bf16 values belonging to the calling thread, valid until its next
/// call: for the probabilities of one attention head, rounded by the softmax for the p·v
/// product, apart from the buffers of CProducts and `mae_bf16_both_buffer`. NULL when memory
/// runs out.
uint16_t *mae_bf16_attention_buffer(long count);

/// destination[i] = source[i] widened to fp32.
void mae_widen_bf16(float *destination, const uint16_t *source, long count);

/// 1 when the calls above (and those of CSupportWire.h) run their AVX-512 loops on this CPU.
int mae_bf16_uses_avx512(void);

#endif
