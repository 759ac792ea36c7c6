// Per-thread buffers (CSupportScratch.h, and CSupportBFloat16.h's) and the streaming copy.
#include "CSupportScratch.h"
#include "CSupportBFloat16.h"
#include "bfloat16_simd.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// A thread's buffer grown to at least `bytes` bytes, 64-byte aligned; its contents are not
// kept when it grows. NULL when memory runs out.
static void *reserve(void **buffer, size_t *capacity, size_t bytes) {
    if (bytes > *capacity) {
        free(*buffer);
        *buffer = aligned_alloc(64, (bytes + 63) / 64 * 64);
        *capacity = *buffer ? bytes : 0;
    }
    return *buffer;
}

// Each thread's buffers, one per use (their header says which may be in use together).
static __thread void *attention_scratch, *partial_sums, *both_buffer, *attention_buffer;
static __thread size_t attention_scratch_bytes, partial_sums_bytes, both_buffer_bytes, attention_buffer_bytes;

float *mae_attention_scratch(long count) { return reserve(&attention_scratch, &attention_scratch_bytes, (size_t)count * 4); }

float *mae_partial_sums_buffer(long count) { return reserve(&partial_sums, &partial_sums_bytes, (size_t)count * 4); }

uint16_t *mae_bf16_both_buffer(long count) { return reserve(&both_buffer, &both_buffer_bytes, (size_t)count * 2); }

uint16_t *mae_bf16_attention_buffer(long count) {
    return reserve(&attention_buffer, &attention_buffer_bytes, (size_t)count * 2);
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
