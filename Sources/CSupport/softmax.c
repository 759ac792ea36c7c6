// The softmax with AVX-512 (CSupportSoftmax.h): Kernels/Attention.swift's `softmaxInPlace`,
// operation for operation and sum for sum. No fused multiply-adds (see fast_exp_simd.h).
#pragma STDC FP_CONTRACT OFF
#include "CSupportSoftmax.h"
#include "bfloat16_simd.h"
#include "fast_exp_simd.h"
#include <math.h>

#if defined(__x86_64__)

// AVX512VL for the masked 16-bit store of the bf16 output.
#define AVX512_VL __attribute__((target("avx512f,avx512bw,avx512vl")))

// The first `count` of 16 lanes (all when count ≥ 16).
static inline __mmask16 first_lanes(long count) {
    return count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1);
}

AVX512_VL static void row_avx512(float *values, uint16_t *rounded, long count) {
    // The maximum, lane by lane as Swift's (x > m ? x : m, MAXPS's rule: a NaN is passed
    // over), then across the lanes. Order matters only for the sign of a zero maximum,
    // and x − (±0) then gives e^x the same bits.
    __m512 maximum16 = _mm512_set1_ps(-INFINITY);
    for (long column = 0; column < count; column += 16) {
        __mmask16 lanes = first_lanes(count - column);
        maximum16 = _mm512_mask_max_ps(maximum16, lanes, _mm512_maskz_loadu_ps(lanes, values + column), maximum16);
    }
    __m512 maximum = _mm512_set1_ps(_mm512_reduce_max_ps(maximum16));
    // The exponentials; Swift sums the full chunks of 16 lane by lane (from +0), then the
    // lanes in order (from −0, SIMD.sum()), then the tail's elements in order.
    __m512 sum16 = _mm512_setzero_ps();
    long full = count / 16 * 16;
    for (long column = 0; column < full; column += 16) {
        __m512 exponential = fast_exp16(_mm512_sub_ps(_mm512_loadu_ps(values + column), maximum));
        _mm512_storeu_ps(values + column, exponential);
        sum16 = _mm512_add_ps(sum16, exponential);
    }
    float lanes[16];
    _mm512_storeu_ps(lanes, sum16);
    float sum = -0.0f;
    for (int lane = 0; lane < 16; lane++) sum += lanes[lane];
    if (full < count) {
        __mmask16 tail = first_lanes(count - full);
        __m512 exponential = fast_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, values + full), maximum));
        _mm512_mask_storeu_ps(values + full, tail, exponential);
        _mm512_storeu_ps(lanes, exponential);
        for (long lane = 0; lane < count - full; lane++) sum += lanes[lane];
    }
    __m512 reciprocal = _mm512_set1_ps(1.0f / sum);
    for (long column = 0; column < count; column += 16) {
        __mmask16 lanes = first_lanes(count - column);
        __m512 probability = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, values + column), reciprocal);
        _mm512_mask_storeu_ps(values + column, lanes, probability);
        if (rounded) _mm256_mask_storeu_epi16(rounded + column, lanes, _mm512_cvtepi32_epi16(round16(probability)));
    }
}
#endif

int mae_softmax_rows_avx512(float *values, uint16_t *rounded, long rows, long count) {
#if defined(__x86_64__)
    if (mae_bf16_uses_avx512() && __builtin_cpu_supports("avx512vl")) {
        for (long row = 0; row < rows; row++) row_avx512(values + row * count, rounded ? rounded + row * count : NULL, count);
        return 1;
    }
#endif
    return 0;
}
