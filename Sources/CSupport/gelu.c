// GELU with AVX-512 (CSupportGELU.h): Kernels/GELU.swift's `normalCDFAndDensity` and
// SIMDSupport.swift's `fastExp` (fast_exp_simd.h), operation for operation. No fused
// multiply-adds: Swift rounds every product and sum on its own, and so must this.
#pragma STDC FP_CONTRACT OFF
#include "CSupportGELU.h"
#include "bfloat16_simd.h"
#include "fast_exp_simd.h"

#if defined(__x86_64__)

// AVX512VL for the masked 16-bit store of the bf16 output.
#define AVX512_VL __attribute__((target("avx512f,avx512bw,avx512vl")))
#define MUL _mm512_mul_ps
#define ADD _mm512_add_ps
#define SUB _mm512_sub_ps
#define SET _mm512_set1_ps

// One vector of x: GELU(x) returned, GELU'(x) in *derivative.
AVX512 static inline __m512 gelu16(__m512 x, __m512 *derivative) {
    __m512 density = MUL(SET(0.3989422804014327f), fast_exp16(MUL(MUL(SET(-0.5f), x), x)));
    __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512 magnitude = _mm512_mask_sub_ps(x, negative, _mm512_setzero_ps(), x);  // x < 0 ? -x : x
    __m512 t = _mm512_div_ps(SET(1.0f), ADD(SET(1.0f), MUL(SET(0.2316419f), magnitude)));
    __m512 p = SET(1.330274429f);
    p = ADD(MUL(p, t), SET(-1.821255978f));
    p = ADD(MUL(p, t), SET(1.781477937f));
    p = ADD(MUL(p, t), SET(-0.356563782f));
    p = ADD(MUL(p, t), SET(0.319381530f));
    __m512 tail = MUL(density, MUL(p, t));
    __m512 cdf = _mm512_mask_mov_ps(SUB(SET(1.0f), tail), negative, tail);
    *derivative = ADD(cdf, MUL(x, density));
    return MUL(x, cdf);
}

AVX512_VL static void rows_avx512(float *activated, uint16_t *rounded_activated, float *pre_activation,
                               const float *bias, long rows, long width) {
    for (long row = 0; row < rows; row++) {
        float *h = pre_activation + row * width;
        for (long column = 0; column < width; column += 16) {
            __mmask16 lanes = width - column >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (width - column)) - 1);
            __m512 x = ADD(_mm512_maskz_loadu_ps(lanes, h + column), _mm512_maskz_loadu_ps(lanes, bias + column));
            __m512 derivative;
            __m512 value = gelu16(x, &derivative);
            _mm512_mask_storeu_ps(h + column, lanes, derivative);
            if (rounded_activated) {
                _mm256_mask_storeu_epi16(rounded_activated + row * width + column, lanes, _mm512_cvtepi32_epi16(round16(value)));
            } else {
                _mm512_mask_storeu_ps(activated + row * width + column, lanes, value);
            }
        }
    }
}
#endif

int mae_bias_gelu_avx512(float *activated, uint16_t *rounded_activated, float *pre_activation, const float *bias,
                         long rows, long width) {
#if defined(__x86_64__)
    if (mae_bf16_uses_avx512() && __builtin_cpu_supports("avx512vl")) {
        rows_avx512(activated, rounded_activated, pre_activation, bias, rows, width);
        return 1;
    }
#endif
    return 0;
}
