// SIMDSupport.swift's `fastExp` for 16 floats at a time, operation for operation, shared
// by the AVX-512 loops that must give the Swift code's bits (gelu.c, softmax.c). No fused
// multiply-adds: Swift rounds every product and sum on its own, and so must this.
#ifndef MAE_FAST_EXP_SIMD_H
#define MAE_FAST_EXP_SIMD_H
#pragma STDC FP_CONTRACT OFF

#include "bfloat16_simd.h"

#if defined(__x86_64__)

// fastExp: clamps (a < b ? a : b, as MINPS), x·log2(e) rounded by adding 1.5·2²³,
// the Cephes polynomial, 2ⁿ built in the exponent bits.
AVX512 static inline __m512 fast_exp16(__m512 input) {
    __m512 x = _mm512_max_ps(_mm512_min_ps(input, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.3f));
    __m512 shifted = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _mm512_set1_ps(12582912.0f));
    __m512 n = _mm512_sub_ps(shifted, _mm512_set1_ps(12582912.0f));
    __m512 r = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f))),
                             _mm512_mul_ps(n, _mm512_set1_ps(-2.1219444e-4f)));
    __m512 p = _mm512_set1_ps(1.98756915e-4f);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.39819995e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.16657959e-2f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.66666655e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.00000012e-1f));
    __m512 y = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r), _mm512_set1_ps(1.0f));
    __m512i integer = _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x4B400000));
    __m512i power = _mm512_slli_epi32(_mm512_add_epi32(integer, _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(power));
}

#endif
#endif
