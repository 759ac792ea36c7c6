// The bf16 products too small for oneDNN (at most MAE_BF16_SMALL_PRODUCT_LIMIT multiply-
// adds: attention's per-head products and other products run in one call), on CPUs with
// AVX512_BF16.
//
// Each call packs both operands into per-thread buffers, rounding them to bf16 as it
// goes (no separate rounding pass), in the layout VDPBF16PS reads, then sums tiles of c
// in fp32 registers. The packed unit is a 32-bit word holding a pair of consecutive k
// side by side (the "VNNI" layout), k padded with a zero when odd:
//
//   word(x, pair, index) = bf16 x[2·pair][index] (low half) | bf16 x[2·pair + 1][index] (high half)
//
// op(b)[k, n] is packed as b_packed[pair · stride + j], stride = n rounded up to 16 words
// (one cache line; the padding is zero): from b stored with k down its rows (nn, tn), 16
// columns at a time from two stored rows, interleaving their halves; from b stored with k
// along its rows (nt, tt), 16 × 16 words at a time: 16 stored rows of 32 values rounded
// into 16 pairs each, then transposed. op(a)[m, k] stored with k down its rows (tn, tt) is
// packed the same way, a_packed[pair · stride + i]; stored with k along its rows (nn, nt)
// it is packed row by row without a transpose, a_packed[i · stride + pair], stride = the
// pairs rounded up to 16 words.
//
// A tile is up to 12 rows × 32 columns of c (24 accumulators of 16 floats): for each
// pair, the two vectors of 16 columns of b's packed row and, for each row, a's word
// broadcast, VDPBF16PS adding both products into the row's accumulators. Every element
// of c is thus summed over k in one fixed order (pairs in order, from 0), whatever the
// tiling, the leading dimensions and the thread count: its bits depend on its inputs
// alone. Then c = alpha · sum (beta 0) or alpha · sum + c in one fused multiply-add
// (beta 1), only the columns < n stored. The exception, chosen by the shape alone: one or
// two last columns past a multiple of 16 with a packed by rows and b transposed (q·kᵀ of
// 17 or 65 tokens) are dot products instead (`dot_tail`), each summed in 16 lanes over
// the pairs and then across the lanes in a fixed order: other bits, as deterministic.
//
// VDPBF16PS is the instruction oneDNN's brgemm kernels (brg:avx512_core_bf16) use for
// the larger bf16 products, with its rules: bf16 inputs that are subnormal count as 0,
// subnormal results are flushed to 0, rounding is to nearest even whatever MXCSR says,
// and it adds a pair's two products into the accumulator one after the other, each
// addition rounded (the odd-k product first: measured on AMD Zen 4, as Intel's manual
// describes it), so a product of bf16 values is exact and only the sums round, as in
// OpenBLAS's fp32 sums of the same rounded values (in another order).
// No fused multiply-adds but the explicit ones: the softmax backward repeats Swift's
// separately rounded products and sums.
#pragma STDC FP_CONTRACT OFF
#include "small_products.h"
#include "CProducts.h"
#include "CSupportBFloat16.h"
// The rounding shared with CSupport (same bits as mae_round_to_bf16): to nearest even on
// the bit pattern, subnormals rounded, NaN kept.
#include "../CSupport/bfloat16_simd.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void mae_prefetch_rows(const void *base, long rows, long bytes, long stride, int for_writing) {
    if (bytes <= 0) return;
    for (long row = 0; row < rows; row++) {
        uintptr_t first = (uintptr_t)base + (uintptr_t)(row * stride);
        for (uintptr_t line = first & ~(uintptr_t)63; line < first + (uintptr_t)bytes; line += 64) {
            if (for_writing) __builtin_prefetch((const void *)line, 1, 2);
            else __builtin_prefetch((const void *)line, 0, 2);
        }
    }
}

#if defined(__x86_64__)

#define BF16_KERNEL __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))

int mae_bf16_small_kernel_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bf16");
}

enum { tile_rows = 12 };  // with 2 vectors of columns: 24 accumulators and 2 of b of the 32 registers

static __thread uint32_t *packed_a, *packed_b, *packed_ds_down, *packed_p_down, *packed_a_rows;
static __thread size_t packed_a_capacity, packed_b_capacity, packed_ds_down_capacity, packed_p_down_capacity,
    packed_a_rows_capacity;

static uint32_t *reserve_packed(uint32_t **buffer, size_t *capacity, size_t count) {
    if (count > *capacity) {
        free(*buffer);
        *buffer = aligned_alloc(64, (count * 4 + 63) / 64 * 64);
        *capacity = *buffer ? count : 0;
    }
    return *buffer;
}

// 32 floats (`low`, then `high`) rounded to 32 bf16 as mae_round_to_bf16 rounds them.
// VCVTNE2PS2BF16 rounds to nearest even and quiets a NaN as it does, in one instruction,
// but flushes fp32 subnormals to 0 where mae_round_to_bf16 rounds them: to bf16
// subnormals, which VDPBF16PS reads as 0 anyway, or, from just below 2⁻¹²⁶, up to 2⁻¹²⁶.
// So a vector with a subnormal (rare) takes the bit-exact way: the packed words are
// those of mae_round_to_bf16 whatever the values.
BF16_KERNEL static inline __m512i round32(__m512 low, __m512 high) {
    if (__builtin_expect(_kortestz_mask16_u8(_mm512_fpclass_ps_mask(low, 0x20), _mm512_fpclass_ps_mask(high, 0x20)), 1)) {
        return (__m512i)_mm512_cvtne2ps_pbh(high, low);
    }
    __m256i low16 = _mm512_cvtepi32_epi16(round16(low)), high16 = _mm512_cvtepi32_epi16(round16(high));
    return _mm512_inserti64x4(_mm512_castsi256_si512(low16), high16, 1);
}

// 16 values of a stored row from `column` (0 past `count` of them), fp32.
BF16_KERNEL static inline __m512 load16(const float *row, long column, long count) {
    return count >= 16 ? _mm512_loadu_ps(row + column) : _mm512_maskz_loadu_ps(lanes(count), row + column);
}

// 16 values of a stored bf16 row from `column` (0 past `count` of them), each in the low
// half of a 32-bit lane.
BF16_KERNEL static inline __m512i load16_bf16(const uint16_t *row, long column, long count) {
    return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(lanes(count), row + column));
}

// 32 values of a stored row from `first` (0 past `count` of them) as 16 pairs of bf16.
BF16_KERNEL static inline __m512i load_pairs(const void *row, int is_bf16, long first, long count) {
    if (is_bf16) {
        __mmask32 mask = count >= 32 ? 0xFFFFFFFFu : count <= 0 ? 0 : (__mmask32)((1u << count) - 1);
        return _mm512_maskz_loadu_epi16(mask, (const uint16_t *)row + first);
    }
    return round32(load16(row, first, count), load16(row, first + 16, count - 16));
}

// 32 bf16, an even row's 16 values and then its odd row's, interleaved into the 16 words
// of their pairs (word j: the even row's value j low, the odd row's high).
BF16_KERNEL static inline __m512i interleave_pairs(__m512i rows) {
    const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                           23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(order, rows);
}

// An operand stored [k][ld] (k down the rows; `width` indices along them), packed.
BF16_KERNEL static void pack_down_rows(uint32_t *packed, long stride, const void *source, int is_bf16, long ld,
                                       long k, long width) {
    size_t row_bytes = (size_t)ld * (is_bf16 ? 2 : 4);
    for (long pair = 0; pair < (k + 1) / 2; pair++) {
        const char *even = (const char *)source + (size_t)(2 * pair) * row_bytes;
        int has_odd = 2 * pair + 1 < k;
        for (long index = 0; index < stride; index += 16) {
            __m512i words;
            if (is_bf16) {
                __m512i low = load16_bf16((const uint16_t *)even, index, width - index);
                __m512i high = has_odd ? load16_bf16((const uint16_t *)(even + row_bytes), index, width - index)
                                       : _mm512_setzero_si512();
                words = _mm512_or_si512(low, _mm512_slli_epi32(high, 16));
            } else {
                __m512 low = load16((const float *)even, index, width - index);
                __m512 high = has_odd ? load16((const float *)(even + row_bytes), index, width - index) : _mm512_setzero_ps();
                words = interleave_pairs(round32(low, high));
            }
            _mm512_store_si512(packed + pair * stride + index, words);
        }
    }
}

// An operand stored [width][ld] (k along the rows), its first `indices` (a multiple of 16,
// at most the stride) packed (0 past width). Inlined, so that `words` stays in registers
// (a call of its own kept them in memory: half the speed).
BF16_KERNEL static inline __attribute__((always_inline))
void pack_along_rows(uint32_t *packed, long stride, long indices, const void *source, int is_bf16, long ld, long k,
                     long width) {
    size_t row_bytes = (size_t)ld * (is_bf16 ? 2 : 4);
    long pairs = (k + 1) / 2;
    for (long index0 = 0; index0 < indices; index0 += 16) {
        for (long pair0 = 0; pair0 < pairs; pair0 += 16) {
            __m512i words[16];  // in registers: every loop over it unrolled
#pragma GCC unroll 16
            for (int row = 0; row < 16; row++) {
                const char *stored = (const char *)source + (size_t)(index0 + row) * row_bytes;
                words[row] = index0 + row < width ? load_pairs(stored, is_bf16, 2 * pair0, k - 2 * pair0)
                                                  : _mm512_setzero_si512();
            }
            transpose16x16_epi32(words);  // words[q]: pair pair0 + q of the 16 indices
            long count = pairs - pair0 < 16 ? pairs - pair0 : 16;
#pragma GCC unroll 16
            for (int q = 0; q < 16; q++) {
                if (q < count) _mm512_store_si512(packed + (pair0 + q) * stride + index0, words[q]);
            }
        }
    }
}

// An operand stored [rows][ld] (k along the rows), each row packed into its own pairs:
// packed[row · stride + pair], stride a multiple of 16 words.
BF16_KERNEL static void pack_rows(uint32_t *packed, long stride, const void *source, int is_bf16, long ld,
                                  long k, long rows) {
    size_t row_bytes = (size_t)ld * (is_bf16 ? 2 : 4);
    for (long row = 0; row < rows; row++) {
        const char *stored = (const char *)source + (size_t)row * row_bytes;
        for (long pair0 = 0; pair0 < (k + 1) / 2; pair0 += 16) {
            _mm512_store_si512(packed + row * stride + pair0, load_pairs(stored, is_bf16, 2 * pair0, k - 2 * pair0));
        }
    }
}

// oneDNN's brgemm kernels read b in its layout BA16a64b2a: tiles of 32 k × 64 n, each the
// packing above of its 16 pairs with a stride of 64 words (zero past k and n); the tiles
// of one block of 64 columns follow each other down k, then the next block. A transposed
// b (k along its stored rows) is packed 16 stored rows at a time down all of k: a block's
// 64 rows read side by side, tile by tile, are more streams than the hardware prefetcher
// follows, and ran 1.8× slower from memory here (docs/PERFORMANCE.md).
BF16_KERNEL void mae_bf16_pack_ba16a64b2a(uint16_t *packed, const void *b, int b_is_bf16, long ldb, int transpose_b,
                                          long n, long k, long first_block, long block_count) {
    long k_tiles = (k + 31) / 32;
    size_t element = b_is_bf16 ? 2 : 4, row_bytes = (size_t)ldb * element;
    for (long block = first_block; block < first_block + block_count; block++) {
        long column0 = block * 64, width = n - column0 < 64 ? n - column0 : 64;
        uint32_t *words = (uint32_t *)packed + (size_t)block * k_tiles * 1024;
        if (transpose_b) {
            for (long index0 = 0; index0 < 64; index0 += 16) {
                const char *rows = (const char *)b + (size_t)(column0 + index0) * row_bytes;
                for (long tile = 0; tile < k_tiles; tile++) {
                    long k0 = tile * 32, depth = k - k0 < 32 ? k - k0 : 32;
                    pack_along_rows(words + tile * 1024 + index0, 64, 16, rows + (size_t)k0 * element, b_is_bf16, ldb,
                                    depth, width - index0);
                }
            }
        } else {
            for (long tile = 0; tile < k_tiles; tile++) {
                long k0 = tile * 32, depth = k - k0 < 32 ? k - k0 : 32;
                pack_down_rows(words + tile * 1024, 64, (const char *)b + (size_t)k0 * row_bytes + (size_t)column0 * element,
                               b_is_bf16, ldb, depth, width);
            }
        }
        // Zero past k, in the last tile.
        long last_pairs = (k - (k_tiles - 1) * 32 + 1) / 2;
        if (last_pairs < 16) memset(words + (k_tiles - 1) * 1024 + last_pairs * 64, 0, (size_t)(16 - last_pairs) * 64 * 4);
    }
}

// One tile of `rows` rows × `vectors` vectors of 16 columns of c (the last one's columns
// masked by `last`), from a's packed words (a pair's rows side by side, or each row's
// pairs side by side when `a_by_rows`) and b's; `rows`, `vectors` and `a_by_rows` are
// constants at every call (run_tile), so the accumulators stay in registers. With `c16`
// (not accumulating), c is written there rounded to bf16 instead, as mae_round_to_bf16
// rounds the fp32 value.
BF16_KERNEL static inline __attribute__((always_inline))
void tile(const int rows, const int vectors, const int a_by_rows, const uint32_t *a, long a_stride,
          const uint32_t *b, long b_stride, long pairs, float *c, uint16_t *c16, long ldc, __mmask16 last,
          float alpha, int accumulate) {
    __m512 sum[tile_rows][2];
#pragma GCC unroll 12
    for (int row = 0; row < rows; row++) {
        for (int vector = 0; vector < vectors; vector++) sum[row][vector] = _mm512_setzero_ps();
    }
    for (long pair = 0; pair < pairs; pair++) {
        const uint32_t *b_words = b + pair * b_stride;
        __m512bh b0 = (__m512bh)_mm512_load_si512(b_words);
        __m512bh b1 = vectors == 2 ? (__m512bh)_mm512_load_si512(b_words + 16) : b0;
#pragma GCC unroll 12
        for (int row = 0; row < rows; row++) {
            uint32_t a_word = a_by_rows ? a[row * a_stride + pair] : a[pair * a_stride + row];
            __m512bh a_pair = (__m512bh)_mm512_set1_epi32((int)a_word);
            sum[row][0] = _mm512_dpbf16_ps(sum[row][0], b0, a_pair);
            if (vectors == 2) sum[row][1] = _mm512_dpbf16_ps(sum[row][1], b1, a_pair);
        }
    }
    __m512 scale = _mm512_set1_ps(alpha);
#pragma GCC unroll 12
    for (int row = 0; row < rows; row++) {
#pragma GCC unroll 2
        for (int vector = 0; vector < vectors; vector++) {
            __mmask16 mask = vector == vectors - 1 ? last : (__mmask16)0xFFFF;
            store_sums(c16 ? NULL : c + row * ldc + 16 * vector, c16 ? c16 + row * ldc + 16 * vector : NULL, mask,
                       sum[row][vector], scale, accumulate);
        }
    }
}

BF16_KERNEL static void run_tile(long rows, int vectors, int a_by_rows, const uint32_t *a, long a_stride,
                                 const uint32_t *b, long b_stride, long pairs, float *c, uint16_t *c16, long ldc,
                                 __mmask16 last, float alpha, int accumulate) {
#define TILE_CASE(R) \
    case R: \
        if (a_by_rows && vectors == 2) tile(R, 2, 1, a, a_stride, b, b_stride, pairs, c, c16, ldc, last, alpha, accumulate); \
        else if (a_by_rows) tile(R, 1, 1, a, a_stride, b, b_stride, pairs, c, c16, ldc, last, alpha, accumulate); \
        else if (vectors == 2) tile(R, 2, 0, a, a_stride, b, b_stride, pairs, c, c16, ldc, last, alpha, accumulate); \
        else tile(R, 1, 0, a, a_stride, b, b_stride, pairs, c, c16, ldc, last, alpha, accumulate); \
        break;
    switch (rows) {
        TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4) TILE_CASE(5) TILE_CASE(6)
        TILE_CASE(7) TILE_CASE(8) TILE_CASE(9) TILE_CASE(10) TILE_CASE(11) TILE_CASE(12)
    }
#undef TILE_CASE
}

// c[i][0] (i < rows) = alpha · Σ a row i · b (+ c when accumulating): each packed row of a
// (its pairs side by side, `stride` words, zero past k) times b's pairs packed the same
// way, VDPBF16PS over 16 pairs at a time, then the 16 lanes summed in a fixed order.
BF16_KERNEL static void dot_tail(float *c, uint16_t *c16, long ldc, const uint32_t *a, long stride, const uint32_t *b,
                                 long rows, float alpha, int accumulate) {
    for (long row = 0; row < rows; row++) {
        __m512 sum = _mm512_setzero_ps();
        for (long word = 0; word < stride; word += 16) {
            sum = _mm512_dpbf16_ps(sum, (__m512bh)_mm512_load_si512(b + word), (__m512bh)_mm512_load_si512(a + row * stride + word));
        }
        // Lanes summed in halves: 8 + 8, 4 + 4, 2 + 2, 1 + 1.
        __m256 half8 = _mm256_add_ps(_mm512_castps512_ps256(sum), _mm512_extractf32x8_ps(sum, 1));
        __m128 half4 = _mm_add_ps(_mm256_castps256_ps128(half8), _mm256_extractf128_ps(half8, 1));
        __m128 half2 = _mm_add_ps(half4, _mm_movehl_ps(half4, half4));
        __m128 total = _mm_add_ss(half2, _mm_movehdup_ps(half2));
        __m128 scale = _mm_set_ss(alpha);
        if (c16) {
            c16[row * ldc] = round_one(_mm_cvtss_f32(_mm_mul_ss(total, scale)));
            continue;
        }
        float *out = c + row * ldc;
        _mm_store_ss(out, accumulate ? _mm_fmadd_ss(total, scale, _mm_load_ss(out)) : _mm_mul_ss(total, scale));
    }
}

// a packed down (a_down[pair · down_stride + i], zero past m up to down_stride, at least m
// rounded up to 16) packed again by rows, as the AMX tiles read a: by_rows[i · stride + pair]
// for i < m rounded up to 16, stride the pairs rounded up to 16, zero past `pairs`; 16 × 16
// words at a time.
BF16_KERNEL static void repack_by_rows(uint32_t *by_rows, long stride, const uint32_t *down, long down_stride,
                                       long m, long pairs) {
    for (long i0 = 0; i0 < m; i0 += 16) {
        for (long pair0 = 0; pair0 < stride; pair0 += 16) {
            __m512i words[16];
#pragma GCC unroll 16
            for (int q = 0; q < 16; q++) {
                words[q] = pair0 + q < pairs ? _mm512_load_si512(down + (pair0 + q) * down_stride + i0)
                                             : _mm512_setzero_si512();
            }
            transpose16x16_epi32(words);  // words[r]: the pairs pair0… of row i0 + r
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++) _mm512_store_si512(by_rows + (i0 + r) * stride + pair0, words[r]);
        }
    }
}

// The AMX tiles of mae_bf16_amx_tiles read whole tiles: 16 rows of a and 16 pairs of b at a
// time. So b's packed pairs past `pairs` (up to a multiple of 16) are set to zero, whose
// products add nothing, and a's packed rows past m likewise (their sums are not stored).
// The buffers hold the rows up to those multiples (small_product, head_backward).
static int run_amx_tiles(float *c, uint16_t *c16, long ldc, uint32_t *a_packed, int a_by_rows, long a_stride,
                         uint32_t *b_packed, long b_stride, long m, long n, long pairs, float alpha, int accumulate) {
    long pairs16 = (pairs + 15) / 16 * 16, m16 = (m + 15) / 16 * 16;
    memset(b_packed + pairs * b_stride, 0, (size_t)((pairs16 - pairs) * b_stride) * 4);
    if (a_by_rows) {
        memset(a_packed + m * a_stride, 0, (size_t)((m16 - m) * a_stride) * 4);
    } else {
        uint32_t *by_rows = reserve_packed(&packed_a_rows, &packed_a_rows_capacity, (size_t)(m16 * pairs16));
        if (!by_rows) return -1;
        repack_by_rows(by_rows, pairs16, a_packed, a_stride, m, pairs);
        a_packed = by_rows;
        a_stride = pairs16;
    }
    mae_bf16_amx_tiles(c, c16, ldc, a_packed, a_stride, b_packed, b_stride, m, n, pairs, alpha, accumulate);
    return 0;
}

// c[m, n] (or c16) = alpha · the packed a times the packed b (+ c when accumulating), over
// `pairs` pairs of k: on AMX tiles where the CPU has them (run_amx_tiles), else tiles of
// up to tile_rows rows × 32 columns. Returns 0, or -1 when memory runs out.
BF16_KERNEL static int run_tiles(float *c, uint16_t *c16, long ldc, uint32_t *a_packed, int a_by_rows,
                                 long a_stride, uint32_t *b_packed, long b_stride, long m, long n, long pairs,
                                 float alpha, int accumulate) {
    if (mae_bf16_amx_available()) {
        return run_amx_tiles(c, c16, ldc, a_packed, a_by_rows, a_stride, b_packed, b_stride, m, n, pairs, alpha,
                             accumulate);
    }
    // Row blocks of at most tile_rows, as even as they come (17 rows: 9 and 8).
    long row_blocks = (m + tile_rows - 1) / tile_rows;
    for (long column0 = 0; column0 < n; column0 += 32) {
        long width = n - column0 < 32 ? n - column0 : 32;
        int vectors = width > 16 ? 2 : 1;
        __mmask16 last = lanes(width - 16 * (vectors - 1));
        long row0 = 0;
        for (long block = 0; block < row_blocks; block++) {
            long rows = m / row_blocks + (block < m % row_blocks ? 1 : 0);
            run_tile(rows, vectors, a_by_rows, a_packed + (a_by_rows ? row0 * a_stride : row0), a_stride,
                     b_packed + column0, b_stride, pairs,
                     c16 ? NULL : c + row0 * ldc + column0, c16 ? c16 + row0 * ldc + column0 : NULL, ldc, last, alpha,
                     accumulate);
            row0 += rows;
        }
    }
    return 0;
}

// The product into fp32 c, or (`c16` not NULL, beta 0) rounded to bf16 into c16.
BF16_KERNEL static int small_product(float *c, uint16_t *c16, long ldc,
                                     const void *a, int a_is_bf16, long lda, int transpose_a,
                                     const void *b, int b_is_bf16, long ldb, int transpose_b,
                                     long m, long n, long k, float alpha, float beta) {
    if (m <= 0 || n <= 0) return 0;
    if (k == 0) {  // the product of nothing is 0
        for (long row = 0; row < m && beta == 0.0f; row++) {
            if (c16) memset(c16 + row * ldc, 0, (size_t)n * 2);
            else memset(c + row * ldc, 0, (size_t)n * 4);
        }
        return 0;
    }
    long pairs = (k + 1) / 2;
    // a stored [k][lda] when transposed: packed as op(a)ᵀ[k, m] (pairs of k, then rows);
    // [m][lda] otherwise: each row's pairs in turn (no transpose), the tile reading a's
    // words row by row.
    int a_by_rows = !transpose_a;
    // The last one or two columns past a multiple of 16 (attention's 17 and 65 tokens, in
    // q·kᵀ and dOutput·vᵀ) would each take a vector of 16 columns through every pair: with
    // a packed by rows and b stored [n][ldb], they are instead dot products (`dot_tail`).
    // Not on AMX, whose tiles of 16 columns take them at no cost worth a second path.
    long tail = a_by_rows && transpose_b && n > 16 && n % 16 <= 2 && !mae_bf16_amx_available() ? n % 16 : 0;
    long tiled = n - tail;
    long a_stride = a_by_rows ? (pairs + 15) / 16 * 16 : (m + 15) / 16 * 16, b_stride = (tiled + 15) / 16 * 16;
    // Rows up to multiples of 16 for the AMX tiles (run_amx_tiles), and one for dot_tail's b.
    long a_rows = a_by_rows ? (m + 15) / 16 * 16 : pairs, b_rows = (pairs + 15) / 16 * 16;
    uint32_t *a_packed = reserve_packed(&packed_a, &packed_a_capacity, (size_t)(a_rows * a_stride));
    uint32_t *b_packed = reserve_packed(&packed_b, &packed_b_capacity, (size_t)(b_rows * b_stride + a_stride));
    if (!a_packed || !b_packed) return -1;
    if (transpose_a) pack_down_rows(a_packed, a_stride, a, a_is_bf16, lda, k, m);
    else pack_rows(a_packed, a_stride, a, a_is_bf16, lda, k, m);
    // op(b)[k, n]: b stored [n][ldb] when transposed, [k][ldb] otherwise.
    if (transpose_b) pack_along_rows(b_packed, b_stride, b_stride, b, b_is_bf16, ldb, k, tiled);
    else pack_down_rows(b_packed, b_stride, b, b_is_bf16, ldb, k, tiled);
    if (run_tiles(c, c16, ldc, a_packed, a_by_rows, a_stride, b_packed, b_stride, m, tiled, pairs, alpha, beta != 0.0f)) {
        return -1;
    }
    for (long column = tiled; column < n; column++) {
        uint32_t *b_row = b_packed + pairs * b_stride;
        pack_rows(b_row, a_stride, (const char *)b + (size_t)column * (size_t)ldb * (b_is_bf16 ? 2 : 4), b_is_bf16, ldb, k, 1);
        dot_tail(c16 ? NULL : c + column, c16 ? c16 + column : NULL, ldc, a_packed, a_stride, b_row, m, alpha,
                 beta != 0.0f);
    }
    return 0;
}

int mae_bf16_small_product_avx512(float *c, long ldc, const void *a, int a_is_bf16, long lda, int transpose_a,
                                  const void *b, int b_is_bf16, long ldb, int transpose_b,
                                  long m, long n, long k, float alpha, float beta) {
    return small_product(c, NULL, ldc, a, a_is_bf16, lda, transpose_a, b, b_is_bf16, ldb, transpose_b, m, n, k, alpha, beta);
}

// Σ g[i] · p[i] as Kernels' softmaxBackwardInPlace sums it: the whole vectors of 16 lane by
// lane (from +0), then the lanes in order (from −0, as Swift's SIMD sum()), then the rest
// one by one, each product and sum rounded on its own.
BF16_KERNEL static float softmax_backward_dot(const float *g, const float *p, long count) {
    __m512 dot16 = _mm512_setzero_ps();
    long index = 0;
    for (; index + 16 <= count; index += 16) {
        dot16 = _mm512_add_ps(dot16, _mm512_mul_ps(_mm512_loadu_ps(g + index), _mm512_loadu_ps(p + index)));
    }
    float lanes16[16];
    _mm512_storeu_ps(lanes16, dot16);
    float dot = -0.0f;
    for (int lane = 0; lane < 16; lane++) dot += lanes16[lane];
    for (; index < count; index++) dot += g[index] * p[index];
    return dot;
}

// One head's bf16 attention backward on the small kernel (mae_bf16_attention_head_backward).
BF16_KERNEL static int head_backward(float *dq, float *dk, float *dv, long ld, const float *q, const float *k,
                                     const float *v, const float *d_output, long ld_output, const float *p, float *dp,
                                     long tokens, long head_dimension, float scale) {
    // dp[tokens, tokens] = dOutput · vᵀ
    if (small_product(dp, NULL, tokens, d_output, 0, ld_output, 0, v, 0, ld, 1, tokens, tokens, head_dimension, 1.0f,
                      0.0f)) {
        return -1;
    }
    long pairs = (tokens + 1) / 2;
    // ds packed as dq = ds·k reads it (each row's pairs, `by_rows_stride` words a row), and ds
    // and p as dk = dsᵀ·q and dv = pᵀ·dOutput read them (rows 2r and 2r + 1 interleaved,
    // `down_stride` words a pair of rows): what small_product's packing would write.
    long by_rows_stride = (pairs + 15) / 16 * 16, down_stride = (tokens + 15) / 16 * 16;
    long b_stride = (head_dimension + 15) / 16 * 16;
    // Rows up to multiples of 16 for the AMX tiles (run_amx_tiles).
    long padded_tokens = down_stride, padded_pairs = (pairs + 15) / 16 * 16;
    uint32_t *ds_by_rows = reserve_packed(&packed_a, &packed_a_capacity, (size_t)(padded_tokens * by_rows_stride));
    uint32_t *ds_down = reserve_packed(&packed_ds_down, &packed_ds_down_capacity, (size_t)(pairs * down_stride));
    uint32_t *p_down = reserve_packed(&packed_p_down, &packed_p_down_capacity, (size_t)(pairs * down_stride));
    uint32_t *b_packed = reserve_packed(&packed_b, &packed_b_capacity, (size_t)(padded_pairs * b_stride));
    if (!ds_by_rows || !ds_down || !p_down || !b_packed) return -1;
    const __m512 scale16 = _mm512_set1_ps(scale);
    long columns = down_stride > 2 * by_rows_stride ? down_stride : 2 * by_rows_stride;
    for (long pair = 0; pair < pairs; pair++) {
        long even = 2 * pair;
        int has_odd = even + 1 < tokens;
        const float *g0 = dp + even * tokens, *p0 = p + even * tokens;
        const float *g1 = g0 + tokens, *p1 = p0 + tokens;
        // ds = (scale · p) · (dp − Σ_keys dp ∘ p), row by row as softmaxBackwardInPlace computes it.
        __m512 dot0 = _mm512_set1_ps(softmax_backward_dot(g0, p0, tokens));
        __m512 dot1 = has_odd ? _mm512_set1_ps(softmax_backward_dot(g1, p1, tokens)) : _mm512_setzero_ps();
        uint16_t *row0 = (uint16_t *)(ds_by_rows + even * by_rows_stride), *row1 = row0 + 2 * by_rows_stride;
        for (long column = 0; column < columns; column += 16) {
            __mmask16 mask = lanes(tokens - column), odd_mask = has_odd ? mask : 0;  // 0 past the rows
            __m512 probability0 = _mm512_maskz_loadu_ps(mask, p0 + column);
            __m512 probability1 = _mm512_maskz_loadu_ps(odd_mask, p1 + column);
            __m512 ds0 = _mm512_maskz_mul_ps(mask, _mm512_mul_ps(scale16, probability0),
                                             _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, g0 + column), dot0));
            __m512 ds1 = _mm512_maskz_mul_ps(odd_mask, _mm512_mul_ps(scale16, probability1),
                                             _mm512_sub_ps(_mm512_maskz_loadu_ps(odd_mask, g1 + column), dot1));
            __m512i rounded = round32(ds0, ds1);  // ds0's 16 bf16, then ds1's
            if (column < 2 * by_rows_stride) {
                _mm256_storeu_si256((__m256i *)(row0 + column), _mm512_castsi512_si256(rounded));
                if (has_odd) _mm256_storeu_si256((__m256i *)(row1 + column), _mm512_extracti64x4_epi64(rounded, 1));
            }
            if (column < down_stride) {
                _mm512_store_si512(ds_down + pair * down_stride + column, interleave_pairs(rounded));
                _mm512_store_si512(p_down + pair * down_stride + column,
                                   interleave_pairs(round32(probability0, probability1)));
            }
        }
    }
    // dv = pᵀ · dOutput; dq = ds · k; dk = dsᵀ · q (b stored [tokens][ld], k down its rows).
    pack_down_rows(b_packed, b_stride, d_output, 0, ld_output, tokens, head_dimension);
    if (run_tiles(dv, NULL, ld, p_down, 0, down_stride, b_packed, b_stride, tokens, head_dimension, pairs, 1.0f, 0)) {
        return -1;
    }
    pack_down_rows(b_packed, b_stride, k, 0, ld, tokens, head_dimension);
    if (run_tiles(dq, NULL, ld, ds_by_rows, 1, by_rows_stride, b_packed, b_stride, tokens, head_dimension, pairs, 1.0f, 0)) {
        return -1;
    }
    pack_down_rows(b_packed, b_stride, q, 0, ld, tokens, head_dimension);
    if (run_tiles(dk, NULL, ld, ds_down, 0, down_stride, b_packed, b_stride, tokens, head_dimension, pairs, 1.0f, 0)) {
        return -1;
    }
    return 1;
}

int mae_bf16_attention_head_backward(float *dq, float *dk, float *dv, long ld, const float *q, const float *k,
                                     const float *v, const float *d_output, long ld_output, const float *p, float *dp,
                                     long tokens, long head_dimension, float scale) {
    if (tokens <= 0 || head_dimension <= 0) return 0;
    if (tokens * tokens * head_dimension > MAE_BF16_SMALL_PRODUCT_LIMIT || !mae_bf16_small_kernel_available()) return 0;
    return head_backward(dq, dk, dv, ld, q, k, v, d_output, ld_output, p, dp, tokens, head_dimension, scale);
}

#else

int mae_bf16_attention_head_backward(float *dq, float *dk, float *dv, long ld, const float *q, const float *k,
                                     const float *v, const float *d_output, long ld_output, const float *p, float *dp,
                                     long tokens, long head_dimension, float scale) {
    return 0;
}

int mae_bf16_small_kernel_available(void) { return 0; }

void mae_bf16_pack_ba16a64b2a(uint16_t *packed, const void *b, int b_is_bf16, long ldb, int transpose_b,
                              long n, long k, long first_block, long block_count) {}

int mae_bf16_small_product_avx512(float *c, long ldc, const void *a, int a_is_bf16, long lda, int transpose_a,
                                  const void *b, int b_is_bf16, long ldb, int transpose_b,
                                  long m, long n, long k, float alpha, float beta) {
    return -1;
}

#endif

static __thread float *unrounded;
static __thread size_t unrounded_capacity;

int mae_bf16_matmul_rounded_output(uint16_t *c, long ldc, const void *a, int a_is_bf16, long lda, int transpose_a,
                                   const void *b, int b_is_bf16, long ldb, int transpose_b,
                                   long m, long n, long k, float alpha) {
    if (m <= 0 || n <= 0) return 0;
#if defined(__x86_64__)
    // The shapes and CPUs on which mae_bf16_matmul runs the small kernel: its fp32 c rounded
    // in the tiles' last step, the same bits.
    if (m * n * k <= MAE_BF16_SMALL_PRODUCT_LIMIT && mae_bf16_small_kernel_available()) {
        return small_product(NULL, c, ldc, a, a_is_bf16, lda, transpose_a, b, b_is_bf16, ldb, transpose_b,
                             m, n, k, alpha, 0.0f) ? -2 : 0;
    }
#endif
    if ((size_t)(m * n) > unrounded_capacity) {
        free(unrounded);
        unrounded = malloc((size_t)(m * n) * sizeof(float));
        unrounded_capacity = unrounded ? (size_t)(m * n) : 0;
        if (!unrounded) return -2;
    }
    if (mae_bf16_matmul(unrounded, n, a, a_is_bf16, lda, transpose_a, b, b_is_bf16, ldb, transpose_b, m, n, k, alpha, 0.0f)) {
        return -1;
    }
    for (long row = 0; row < m; row++) mae_round_to_bf16(c + row * ldc, unrounded + row * n, n);
    return 0;
}
