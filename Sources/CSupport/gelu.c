// The exact GELU's forward (CSupportGELU.h): GELU.swift's `normalCDFAndDensity` and
// SIMDSupport.swift's `fastExp`, operation for operation.
#include "CSupportGELU.h"
#include "bfloat16_simd.h"

#pragma STDC FP_CONTRACT OFF

#if defined(__x86_64__)
AVX512 static inline __m512 add(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
AVX512 static inline __m512 multiply(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
AVX512 static inline __m512 constant(float value) { return _mm512_set1_ps(value); }

// fastExp: clamped to [-87.3, 88], n = round(x·log2 e) by the 1.5·2²³ shift, the Cephes
// polynomial for e^r, 2^n from the shifted sum's bits.
AVX512 static inline __m512 fast_exp(__m512 input) {
    __m512 upper = _mm512_min_ps(input, constant(88.0f));
    __m512 x = _mm512_max_ps(upper, constant(-87.3f));
    __m512 shifted = add(multiply(x, constant(1.44269504f)), constant(12582912.0f));
    __m512 n = _mm512_sub_ps(shifted, constant(12582912.0f));
    __m512 r = _mm512_sub_ps(_mm512_sub_ps(x, multiply(n, constant(0.693359375f))), multiply(n, constant(-2.1219444e-4f)));
    __m512 p = constant(1.98756915e-4f);
    p = add(multiply(p, r), constant(1.39819995e-3f));
    p = add(multiply(p, r), constant(8.3334519e-3f));
    p = add(multiply(p, r), constant(4.16657959e-2f));
    p = add(multiply(p, r), constant(1.66666655e-1f));
    p = add(multiply(p, r), constant(5.00000012e-1f));
    __m512 y = add(add(multiply(multiply(p, r), r), r), constant(1.0f));
    __m512i integer = _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x4B400000));
    __m512i power = _mm512_slli_epi32(_mm512_add_epi32(integer, _mm512_set1_epi32(127)), 23);
    return multiply(y, _mm512_castsi512_ps(power));
}

AVX512 static long gelu_forward_avx512(float *activated, float *pre_activation, const float *bias, long width) {
    long index = 0;
    for (; index + 16 <= width; index += 16) {
        __m512 x = add(_mm512_loadu_ps(pre_activation + index), _mm512_loadu_ps(bias + index));
        // Φ(x) and φ(x) from one exponential (Abramowitz & Stegun 26.2.17).
        __m512 density = multiply(constant(0.3989422804014327f), fast_exp(multiply(multiply(constant(-0.5f), x), x)));
        __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
        __m512 magnitude = _mm512_mask_sub_ps(x, negative, _mm512_setzero_ps(), x);
        __m512 t = _mm512_div_ps(constant(1.0f), add(constant(1.0f), multiply(constant(0.2316419f), magnitude)));
        __m512 p = constant(1.330274429f);
        p = add(multiply(p, t), constant(-1.821255978f));
        p = add(multiply(p, t), constant(1.781477937f));
        p = add(multiply(p, t), constant(-0.356563782f));
        p = add(multiply(p, t), constant(0.319381530f));
        __m512 tail = multiply(density, multiply(p, t));
        __m512 cdf = _mm512_mask_mov_ps(_mm512_sub_ps(constant(1.0f), tail), negative, tail);
        _mm512_storeu_ps(activated + index, multiply(x, cdf));
        _mm512_storeu_ps(pre_activation + index, add(cdf, multiply(x, density)));
    }
    return index;
}
#endif

long mae_gelu_forward_row(float *activated, float *pre_activation, const float *bias, long width) {
#if defined(__x86_64__)
    static int available = -1;
    if (available < 0) available = __builtin_cpu_supports("avx512f");
    if (available) return gelu_forward_avx512(activated, pre_activation, bias, width);
#endif
    return 0;
}
