// The bf16 small-product kernel of small_products.c, for products.c (not public API).
#ifndef MAE_SMALL_PRODUCTS_H
#define MAE_SMALL_PRODUCTS_H

#include <stdint.h>

#if defined(__x86_64__)
#include "../CSupport/bfloat16_simd.h"
#include <immintrin.h>

// The first `count` of 16 lanes (none when count ≤ 0).
static inline __mmask16 lanes(long count) {
    return count >= 16 ? (__mmask16)0xFFFF : count <= 0 ? 0 : (__mmask16)((1u << count) - 1);
}

// The last step of both kernels' tiles, for 16 sums of a row of c in the lanes of `mask`:
// c = alpha · sum, or alpha · sum + c in one fused multiply-add when accumulating; or, with
// `c16` (not accumulating), alpha · sum rounded to bf16 as mae_round_to_bf16 rounds it.
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline))
static inline void store_sums(float *c, uint16_t *c16, __mmask16 mask, __m512 sum, __m512 scale, int accumulate) {
    if (c16) {
        _mm256_mask_storeu_epi16(c16, mask, _mm512_cvtepi32_epi16(round16(_mm512_mul_ps(sum, scale))));
        return;
    }
    __m512 value = accumulate ? _mm512_fmadd_ps(sum, scale, _mm512_maskz_loadu_ps(mask, c)) : _mm512_mul_ps(sum, scale);
    _mm512_mask_storeu_ps(c, mask, value);
}
#endif

/// 1 when this CPU has AVX512_BF16 (with AVX512F/BW/VL), so that
/// `mae_bf16_small_product_avx512` can run.
int mae_bf16_small_kernel_available(void);

/// c[m, n] = alpha · op(a)[m, k] · op(b)[k, n] + beta · c (row-major, beta 0 or 1), the
/// operands rounded to bf16 (or already bf16) and their products summed in fp32 with
/// VDPBF16PS, on the calling thread; arguments as `mae_bf16_matmul`. Only where
/// `mae_bf16_small_kernel_available()`. Returns 0, or -1 when memory for its packed
/// operands runs out.
int mae_bf16_small_product_avx512(float *c, long ldc,
                                  const void *a, int a_is_bf16, long lda, int transpose_a,
                                  const void *b, int b_is_bf16, long ldb, int transpose_b,
                                  long m, long n, long k, float alpha, float beta);

/// op(b)[k, n] (stored [k][ldb], or [n][ldb] when `transpose_b`; fp32, rounded as it goes,
/// or bf16) packed in oneDNN's layout BA16a64b2a (tiles of 32 k × 64 n, pairs of k
/// interleaved; zero past k and n), its blocks of 64 columns first_block ..< first_block +
/// block_count (so that threads can share the packing). Only where
/// `mae_bf16_small_kernel_available()`.
void mae_bf16_pack_ba16a64b2a(uint16_t *packed, const void *b, int b_is_bf16, long ldb, int transpose_b,
                              long n, long k, long first_block, long block_count);

/// c[m, n] (or, when `c16` is not NULL, c16 rounded to bf16) = alpha · a · b (+ c when
/// `accumulate`) on AMX tiles, from a packed by rows (a_packed[i · a_stride + pair], rows
/// up to m rounded up to 16, zero past `pairs` up to a_stride) and b packed by pairs
/// (b_packed[pair · b_stride + j], pairs up to a multiple of 16, zero past them and past n
/// up to b_stride, a multiple of 16): small_products_amx.c. Only where
/// `mae_bf16_amx_available()`.
void mae_bf16_amx_tiles(float *c, uint16_t *c16, long ldc, const uint32_t *a_packed, long a_stride,
                        const uint32_t *b_packed, long b_stride, long m, long n, long pairs, float alpha,
                        int accumulate);

#endif
