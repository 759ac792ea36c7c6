// Attention's per-head scratch (CSupportScratch.h).
#include "CSupportScratch.h"
#include "CSupportBFloat16.h"
#include "bfloat16_simd.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static __thread float *scratch;
static __thread long scratch_capacity;

float *mae_attention_scratch(long count) {
    if (count > scratch_capacity) {
        free(scratch);
        scratch = aligned_alloc(64, ((size_t)count * sizeof(float) + 63) / 64 * 64);
        scratch_capacity = scratch ? count : 0;
    }
    return scratch;
}

#if defined(__x86_64__)
// From `index`, where destination + index is 64-byte aligned: whole vectors of 16 streamed.
AVX512 static long stream_avx512(float *destination, const float *source, long index, long count) {
    for (; index + 16 <= count; index += 16) _mm512_stream_ps(destination + index, _mm512_loadu_ps(source + index));
    return index;
}
#endif

void mae_stream_copy(float *destination, const float *source, long count) {
    long index = 0;
#if defined(__x86_64__)
    if (mae_bf16_uses_avx512()) {
        long misaligned = (long)(((uintptr_t)destination & 63) / sizeof(float));
        long head = misaligned == 0 ? 0 : 16 - misaligned;
        if (head < count) {
            memcpy(destination, source, (size_t)head * sizeof(float));
            index = stream_avx512(destination, source, head, count);
        }
    }
#endif
    memcpy(destination + index, source + index, (size_t)(count - index) * sizeof(float));
#if defined(__x86_64__)
    __builtin_ia32_sfence();
#endif
}
