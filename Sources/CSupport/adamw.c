// AdamW at 16 parameters per instruction with AVX-512, 8 with AVX (CSupportAdamW.h):
// Kernels/AdamW.swift's update, operation for operation.
#pragma STDC FP_CONTRACT OFF
#include "CSupportAdamW.h"
#include "CSupportBFloat16.h"
#include "bfloat16_simd.h"

#if defined(__x86_64__)
AVX512 static long update_avx512(float *parameters, const float *gradients, float *first_moment, float *second_moment,
                                 uint16_t *rounded_parameters, long count, float decay, float beta1,
                                 float one_minus_beta1, float beta2, float one_minus_beta2, float step_size,
                                 float correction2_root, float epsilon) {
    const __m512 decay16 = _mm512_set1_ps(decay), beta1_16 = _mm512_set1_ps(beta1);
    const __m512 one_minus_beta1_16 = _mm512_set1_ps(one_minus_beta1), beta2_16 = _mm512_set1_ps(beta2);
    const __m512 one_minus_beta2_16 = _mm512_set1_ps(one_minus_beta2), step16 = _mm512_set1_ps(step_size);
    const __m512 root16 = _mm512_set1_ps(correction2_root), epsilon16 = _mm512_set1_ps(epsilon);
    long index = 0;
    for (; index + 16 <= count; index += 16) {
        __m512 g = _mm512_loadu_ps(gradients + index);
        __m512 p = _mm512_mul_ps(_mm512_loadu_ps(parameters + index), decay16);
        __m512 m = _mm512_add_ps(_mm512_mul_ps(beta1_16, _mm512_loadu_ps(first_moment + index)),
                                 _mm512_mul_ps(one_minus_beta1_16, g));
        __m512 v = _mm512_add_ps(_mm512_mul_ps(beta2_16, _mm512_loadu_ps(second_moment + index)),
                                 _mm512_mul_ps(_mm512_mul_ps(one_minus_beta2_16, g), g));
        _mm512_storeu_ps(first_moment + index, m);
        _mm512_storeu_ps(second_moment + index, v);
        __m512 denominator = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(v), root16), epsilon16);
        __m512 updated = _mm512_sub_ps(p, _mm512_mul_ps(step16, _mm512_div_ps(m, denominator)));
        _mm512_storeu_ps(parameters + index, updated);
        if (rounded_parameters) {
            _mm256_storeu_si256((__m256i *)(rounded_parameters + index), _mm512_cvtepi32_epi16(round16(updated)));
        }
    }
    return index;
}

// The same update 8 parameters per instruction for CPUs with AVX but not AVX-512 (AMD
// Zen 2 and 3, Intel before Skylake-SP), where the scalar loop took 8 % of ViT-B's fp32
// step. It writes no rounded copy: that is for bf16 runs, which need AVX-512.
__attribute__((target("avx"))) static long update_avx(float *parameters, const float *gradients, float *first_moment,
                                                      float *second_moment, long count, float decay, float beta1,
                                                      float one_minus_beta1, float beta2, float one_minus_beta2,
                                                      float step_size, float correction2_root, float epsilon) {
    const __m256 decay8 = _mm256_set1_ps(decay), beta1_8 = _mm256_set1_ps(beta1);
    const __m256 one_minus_beta1_8 = _mm256_set1_ps(one_minus_beta1), beta2_8 = _mm256_set1_ps(beta2);
    const __m256 one_minus_beta2_8 = _mm256_set1_ps(one_minus_beta2), step8 = _mm256_set1_ps(step_size);
    const __m256 root8 = _mm256_set1_ps(correction2_root), epsilon8 = _mm256_set1_ps(epsilon);
    long index = 0;
    for (; index + 8 <= count; index += 8) {
        __m256 g = _mm256_loadu_ps(gradients + index);
        __m256 p = _mm256_mul_ps(_mm256_loadu_ps(parameters + index), decay8);
        __m256 m = _mm256_add_ps(_mm256_mul_ps(beta1_8, _mm256_loadu_ps(first_moment + index)),
                                 _mm256_mul_ps(one_minus_beta1_8, g));
        __m256 v = _mm256_add_ps(_mm256_mul_ps(beta2_8, _mm256_loadu_ps(second_moment + index)),
                                 _mm256_mul_ps(_mm256_mul_ps(one_minus_beta2_8, g), g));
        _mm256_storeu_ps(first_moment + index, m);
        _mm256_storeu_ps(second_moment + index, v);
        __m256 denominator = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v), root8), epsilon8);
        __m256 updated = _mm256_sub_ps(p, _mm256_mul_ps(step8, _mm256_div_ps(m, denominator)));
        _mm256_storeu_ps(parameters + index, updated);
    }
    return index;
}
#endif

// The widest vectors mae_adamw_update may use (mae_adamw_limit_vector_bits); every path
// gives the same bits, so changing it while other threads update changes no result.
static int widest_vector_bits = 512;

void mae_adamw_limit_vector_bits(int bits) { __atomic_store_n(&widest_vector_bits, bits, __ATOMIC_RELAXED); }

long mae_adamw_update(float *parameters, const float *gradients, float *first_moment, float *second_moment,
                      uint16_t *rounded_parameters, long count, float decay, float beta1, float one_minus_beta1,
                      float beta2, float one_minus_beta2, float step_size, float correction2_root, float epsilon) {
#if defined(__x86_64__)
    int widest = __atomic_load_n(&widest_vector_bits, __ATOMIC_RELAXED);
    if (widest >= 512 && mae_bf16_uses_avx512()) {
        return update_avx512(parameters, gradients, first_moment, second_moment, rounded_parameters, count, decay, beta1,
                             one_minus_beta1, beta2, one_minus_beta2, step_size, correction2_root, epsilon);
    }
    if (widest >= 256 && !rounded_parameters && __builtin_cpu_supports("avx")) {
        return update_avx(parameters, gradients, first_moment, second_moment, count, decay, beta1, one_minus_beta1,
                          beta2, one_minus_beta2, step_size, correction2_root, epsilon);
    }
#endif
    return 0;
}
