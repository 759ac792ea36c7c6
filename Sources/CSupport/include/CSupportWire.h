#ifndef MAE_CSUPPORT_WIRE_H
#define MAE_CSUPPORT_WIRE_H

#include <stdint.h>

#include "CSupportBFloat16.h"

/// The arithmetic of gradients carried as bf16 between ranks (`--gradient-wire bf16`),
/// beside the rounding and widening of CSupportBFloat16.h, in C for the same reason and
/// with the same rounding. Sums and the mean's division are fp32 operations, each rounded
/// once (no fused operations).

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

#endif
