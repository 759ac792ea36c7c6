#ifndef MAE_CSUPPORT_WIRE_H
#define MAE_CSUPPORT_WIRE_H

#include <stdint.h>

/// The arithmetic of gradients carried as bf16 between ranks (`--gradient-wire bf16`),
/// in C because Swift cannot compile one function for AVX-512 and another for CPUs
/// without it: each call runs 16 floats per instruction where the CPU has AVX512F and
/// AVX512BW, element by element otherwise, with the same bits either way.
///
/// Rounding: to nearest, ties to even, on the bit pattern (as PyTorch's
/// round_to_nearest_even and products.c): subnormals are rounded, not flushed (unlike
/// VCVTNEPS2BF16), finite values beyond the largest bf16 become infinities, a NaN stays a
/// NaN of the same sign with its quiet bit set. Widening bf16 to fp32 is exact. Sums and
/// the mean's division are fp32 operations, each rounded once (no fused operations).

/// destination[i] = source[i] rounded to bf16.
void mae_wire_round_to_bf16(uint16_t *destination, const float *source, long count);

/// destination[i] = source[i] widened to fp32.
void mae_wire_widen_bf16(float *destination, const uint16_t *source, long count);

/// destination[i] = destination[i] + widened source[i] (in fp32).
void mae_wire_add_bf16(float *destination, const uint16_t *source, long count);

/// destination[i] = ((destination[i] + widened source[i]) / divisor) rounded to bf16 and
/// widened again: the last add of a mean, whose result travels and stays as bf16.
void mae_wire_add_bf16_mean(float *destination, const uint16_t *source, long count, float divisor);

/// first[i] = second[i] = the ring's bf16-wire mean of sources[0..<source_count][i]:
/// s = sources[0][i]; s = widen(round(s)) + sources[k][i] for k = 1, 2, …; then
/// widen(round(s / divisor)). `first` may be one of the sources.
void mae_wire_mean_in_order_bf16(const float *const *sources, long source_count,
                                 float *first, float *second, long count, float divisor);

/// 1 when the calls above run their AVX-512 loops on this CPU (for tests and benchmarks).
int mae_wire_uses_avx512(void);

#endif
