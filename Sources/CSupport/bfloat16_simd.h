// The bf16 rounding shared by bfloat16.c and wire.c: one element at a time, and 16 at a
// time for AVX-512 loops (functions compiled for AVX512F/BW by a target attribute, called
// only where the CPU has them: mae_bf16_uses_avx512()). Both give the same bits.
#ifndef MAE_BFLOAT16_SIMD_H
#define MAE_BFLOAT16_SIMD_H

#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

// To nearest, ties to even, on the bit pattern; a NaN stays a NaN of the same sign with
// its quiet bit set rather than rounding into an infinity.
static inline uint16_t round_one(float value) {
    uint32_t bits;
    memcpy(&bits, &value, 4);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((bits >> 16) | 0x0040u);
    return (uint16_t)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

static inline float widen_one(uint16_t value) {
    uint32_t bits = (uint32_t)value << 16;
    float result;
    memcpy(&result, &bits, 4);
    return result;
}

static inline float round_trip_one(float value) { return widen_one(round_one(value)); }

#if defined(__x86_64__)
#define AVX512 __attribute__((target("avx512f,avx512bw")))

// 16 floats rounded to bf16, each in the low half of a 32-bit lane.
AVX512 static inline __m512i round16(__m512 values) {
    __m512i bits = _mm512_castps_si512(values);
    __m512i high = _mm512_srli_epi32(bits, 16);
    __m512i odd = _mm512_and_si512(high, _mm512_set1_epi32(1));
    __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF)), odd), 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7FFFFFFF)),
                                            _mm512_set1_epi32(0x7F800000));
    return _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(high, _mm512_set1_epi32(0x40)));
}

AVX512 static inline __m512 widen16(const uint16_t *source) {
    __m256i half = _mm256_loadu_si256((const __m256i *)source);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
}

AVX512 static inline __m512 round_trip16(__m512 values) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(round16(values), 16));
}

// The 16 × 16 32-bit lanes of rows[0…15] transposed in place: afterwards rows[c] holds
// lane c of every input row, in row order. Three rounds: pairs of rows interleaved by
// 32 bits, then by 64 bits (each 128-bit lane then holds one column of four rows), then
// 128-bit lanes gathered across the four groups of four rows. (bfloat16.c's transposing
// rounding, and CProducts' small-product kernel packing its operands.)
AVX512 static inline void transpose16x16_epi32(__m512i rows[16]) {
    __m512i t[16], r[16];
    for (int pair = 0; pair < 16; pair += 2) {
        t[pair] = _mm512_unpacklo_epi32(rows[pair], rows[pair + 1]);
        t[pair + 1] = _mm512_unpackhi_epi32(rows[pair], rows[pair + 1]);
    }
    for (int group = 0; group < 16; group += 4) {
        r[group] = _mm512_unpacklo_epi64(t[group], t[group + 2]);          // columns 4L + 0 of rows group…group+3
        r[group + 1] = _mm512_unpackhi_epi64(t[group], t[group + 2]);      // 4L + 1
        r[group + 2] = _mm512_unpacklo_epi64(t[group + 1], t[group + 3]);  // 4L + 2
        r[group + 3] = _mm512_unpackhi_epi64(t[group + 1], t[group + 3]);  // 4L + 3
    }
    for (int j = 0; j < 4; j++) {
        __m512i low01 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x44);   // lanes 0, 1 of rows 0–3 and 4–7
        __m512i high01 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xEE);  // lanes 2, 3
        __m512i low23 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x44);
        __m512i high23 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xEE);
        rows[j] = _mm512_shuffle_i32x4(low01, low23, 0x88);        // column j
        rows[4 + j] = _mm512_shuffle_i32x4(low01, low23, 0xDD);    // 4 + j
        rows[8 + j] = _mm512_shuffle_i32x4(high01, high23, 0x88);  // 8 + j
        rows[12 + j] = _mm512_shuffle_i32x4(high01, high23, 0xDD); // 12 + j
    }
}
#endif

// Each call of bfloat16.c and wire.c: the AVX-512 loop where the CPU has it (it returns
// where it stopped), then the rest element by element.
int mae_bf16_uses_avx512(void);
#if defined(__x86_64__)
#define VECTOR_PART(call) (mae_bf16_uses_avx512() ? (call) : 0)
#else
#define VECTOR_PART(call) 0
#endif

#endif
