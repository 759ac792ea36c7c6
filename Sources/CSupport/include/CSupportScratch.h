#ifndef MAE_CSUPPORT_SCRATCH_H
#define MAE_CSUPPORT_SCRATCH_H

/// Per-thread scratch that stays in the core's cache from one call to the next (scratch.c),
/// and the streaming copy of what leaves it.

/// A 64-byte aligned buffer of `count` floats belonging to the calling thread, valid until
/// its next call: one head's [tokens, tokens] scores, then probabilities, in the forward and
/// their gradient in the backward. The same lines serve head after head, so the products
/// writing them find them in cache instead of reading a fresh slice of memory first.
/// Its contents are not kept across calls that grow it. NULL when memory runs out.
float *mae_attention_scratch(long count);

/// A 64-byte aligned buffer of `count` floats belonging to the calling thread, valid until
/// its next call, apart from `mae_attention_scratch`: the partial column sums of a pass whose
/// workers take groups of rows (Kernels' `addPartialSums`), which those workers fill while
/// the calling thread waits for them. Its contents are not kept across calls that grow it.
/// NULL when memory runs out.
float *mae_partial_sums_buffer(long count);

/// destination[i] = source[i] for i < count, with non-temporal stores where the CPU has
/// AVX-512 (the unaligned ends plainly): for data read again only much later (a head's
/// probabilities, which the backward reads), so that the copy neither reads the
/// destination's lines first nor evicts the cache. Ends with a store fence, so what it
/// wrote is ordered before the caller's later stores (the pool's completion flags).
void mae_stream_copy(float *destination, const float *source, long count);

#endif
