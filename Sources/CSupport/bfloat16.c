// fp32 ↔ bf16 (CSupportBFloat16.h): an AVX-512 loop per call where the CPU has AVX512F/BW,
// then the same arithmetic element by element (bfloat16_simd.h).
#include "CSupportBFloat16.h"
#include "bfloat16_simd.h"
#include <stdlib.h>

int mae_bf16_uses_avx512(void) {
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#else
    return 0;
#endif
}

#if defined(__x86_64__)
AVX512 static long round_avx512(uint16_t *destination, const float *source, long count) {
    long index = 0;
    for (; index + 16 <= count; index += 16) {
        __m256i packed = _mm512_cvtepi32_epi16(round16(_mm512_loadu_ps(source + index)));
        _mm256_storeu_si256((__m256i *)(destination + index), packed);
    }
    return index;
}

AVX512 static long round_trip_avx512(float *destination, const float *source, long count) {
    long index = 0;
    for (; index + 16 <= count; index += 16) _mm512_storeu_ps(destination + index, round_trip16(_mm512_loadu_ps(source + index)));
    return index;
}

AVX512 static long widen_avx512(float *destination, const uint16_t *source, long count) {
    long index = 0;
    for (; index + 16 <= count; index += 16) _mm512_storeu_ps(destination + index, widen16(source + index));
    return index;
}

// One 16 × 16 tile: source rows row0… (leading dimension ld) from column0, rounded, written
// as the 16 destination rows column0… (leading dimension rows) from row0.
AVX512 static void round_transposed_tile(uint16_t *destination, const float *source, long rows, long ld,
                                         long row0, long column0) {
    __m512i r[16];
    for (int row = 0; row < 16; row++) r[row] = round16(_mm512_loadu_ps(source + (row0 + row) * ld + column0));
    transpose16x16_epi32(r);
    for (int column = 0; column < 16; column++) {
        _mm256_storeu_si256((__m256i *)(destination + (column0 + column) * rows + row0), _mm512_cvtepi32_epi16(r[column]));
    }
}

// As round_transposed_tile, also storing each rounded source row into `plain` before the
// transpose: one read of the source for both. (round_both_tile_bf16 where it can.)
AVX512 static void round_both_tile(uint16_t *plain, long plain_ld, uint16_t *transposed, long transposed_ld,
                                   const float *source, long ld, long row0, long column0) {
    __m512i r[16];
    for (int row = 0; row < 16; row++) {
        r[row] = round16(_mm512_loadu_ps(source + (row0 + row) * ld + column0));
        _mm256_storeu_si256((__m256i *)(plain + (row0 + row) * plain_ld + column0), _mm512_cvtepi32_epi16(r[row]));
    }
    transpose16x16_epi32(r);
    for (int column = 0; column < 16; column++) {
        _mm256_storeu_si256((__m256i *)(transposed + (column0 + column) * transposed_ld + row0),
                            _mm512_cvtepi32_epi16(r[column]));
    }
}

// The same tile with VCVTNEPS2BF16 (AVX512_BF16) rounding each row and the transpose on
// the 16-bit results: about half the instructions of round_both_tile. That instruction
// rounds to nearest even as round16 does, and turns a NaN into the same quiet NaN, but
// treats subnormal inputs as zero, so a tile holding one returns 0 for round_both_tile
// to do instead.
#define AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
AVX512_BF16 static int round_both_tile_bf16(uint16_t *plain, long plain_ld, uint16_t *transposed, long transposed_ld,
                                            const float *source, long ld, long row0, long column0) {
    __m256i r[16], a[16], b[16];
    __mmask16 subnormal = 0;
    for (int row = 0; row < 16; row++) {
        __m512 values = _mm512_loadu_ps(source + (row0 + row) * ld + column0);
        // Sixteen rows read side by side are more streams than the hardware prefetches well:
        // the same rows four tiles on are asked for now (twice as fast on a cold source).
        _mm_prefetch((const char *)(source + (row0 + row) * ld + column0 + 64), _MM_HINT_T0);
        // |x| − 1 < 0x7FFFFF (unsigned): exactly the subnormals (zero wraps around).
        __m512i magnitude = _mm512_and_si512(_mm512_castps_si512(values), _mm512_set1_epi32(0x7FFFFFFF));
        subnormal |= _mm512_cmplt_epu32_mask(_mm512_sub_epi32(magnitude, _mm512_set1_epi32(1)),
                                             _mm512_set1_epi32(0x7FFFFF));
        r[row] = (__m256i)_mm512_cvtneps_pbh(values);
    }
    if (subnormal) return 0;
    for (int row = 0; row < 16; row++) _mm256_storeu_si256((__m256i *)(plain + (row0 + row) * plain_ld + column0), r[row]);
    // A 16 × 16 transpose of 16-bit values, each 128-bit lane on its own (columns 0–7 low,
    // 8–15 high): pairs of rows interleaved by 16 bits, then by 32 (four rows per column),
    // then 64 (eight), and last the lanes of rows 0–7 and 8–15 joined.
    for (int pair = 0; pair < 16; pair += 2) {
        a[pair] = _mm256_unpacklo_epi16(r[pair], r[pair + 1]);      // columns 0–3 of the lane
        a[pair + 1] = _mm256_unpackhi_epi16(r[pair], r[pair + 1]);  // columns 4–7
    }
    for (int group = 0; group < 16; group += 4) {
        b[group] = _mm256_unpacklo_epi32(a[group], a[group + 2]);          // columns 0, 1 of rows group…group+3
        b[group + 1] = _mm256_unpackhi_epi32(a[group], a[group + 2]);      // 2, 3
        b[group + 2] = _mm256_unpacklo_epi32(a[group + 1], a[group + 3]);  // 4, 5
        b[group + 3] = _mm256_unpackhi_epi32(a[group + 1], a[group + 3]);  // 6, 7
    }
    for (int q = 0; q < 4; q++) {
        a[2 * q] = _mm256_unpacklo_epi64(b[q], b[4 + q]);           // column 2q of rows 0–7
        a[2 * q + 1] = _mm256_unpackhi_epi64(b[q], b[4 + q]);       // 2q + 1
        a[8 + 2 * q] = _mm256_unpacklo_epi64(b[8 + q], b[12 + q]);  // column 2q of rows 8–15
        a[9 + 2 * q] = _mm256_unpackhi_epi64(b[8 + q], b[12 + q]);  // 2q + 1
    }
    for (int column = 0; column < 8; column++) {
        __m256i low = _mm256_permute2x128_si256(a[column], a[8 + column], 0x20);   // column
        __m256i high = _mm256_permute2x128_si256(a[column], a[8 + column], 0x31);  // 8 + column
        _mm256_storeu_si256((__m256i *)(transposed + (column0 + column) * transposed_ld + row0), low);
        _mm256_storeu_si256((__m256i *)(transposed + (column0 + 8 + column) * transposed_ld + row0), high);
    }
    return 1;
}
#endif

void mae_round_to_bf16(uint16_t *destination, const float *source, long count) {
    for (long index = VECTOR_PART(round_avx512(destination, source, count)); index < count; index++) {
        destination[index] = round_one(source[index]);
    }
}

void mae_round_trip_bf16(float *destination, const float *source, long count) {
    for (long index = VECTOR_PART(round_trip_avx512(destination, source, count)); index < count; index++) {
        destination[index] = round_trip_one(source[index]);
    }
}

void mae_widen_bf16(float *destination, const uint16_t *source, long count) {
    for (long index = VECTOR_PART(widen_avx512(destination, source, count)); index < count; index++) {
        destination[index] = widen_one(source[index]);
    }
}

void mae_round_to_bf16_transposed(uint16_t *destination, const float *source, long rows, long columns, long ld) {
    long whole_rows = 0, whole_columns = 0;  // the part covered by whole 16 × 16 tiles
#if defined(__x86_64__)
    if (mae_bf16_uses_avx512()) {
        whole_rows = rows / 16 * 16;
        whole_columns = columns / 16 * 16;
        for (long row0 = 0; row0 < whole_rows; row0 += 16) {
            for (long column0 = 0; column0 < whole_columns; column0 += 16) {
                round_transposed_tile(destination, source, rows, ld, row0, column0);
            }
        }
    }
#endif
    // The rest: the columns right of the tiles for every row, then the rows below them.
    for (long row0 = 0; row0 < rows; row0 += 16) {
        long row1 = row0 + 16 < rows ? row0 + 16 : rows;
        long first_column = row1 <= whole_rows ? whole_columns : 0;
        for (long column0 = first_column; column0 < columns; column0 += 16) {
            long column1 = column0 + 16 < columns ? column0 + 16 : columns;
            for (long column = column0; column < column1; column++) {
                for (long row = row0; row < row1; row++) {
                    destination[column * rows + row] = round_one(source[row * ld + column]);
                }
            }
        }
    }
}

void mae_round_to_bf16_both(uint16_t *plain, long plain_ld, uint16_t *transposed, long transposed_ld,
                            const float *source, long rows, long columns, long ld) {
    long whole_rows = 0, whole_columns = 0;  // the part covered by whole 16 × 16 tiles
#if defined(__x86_64__)
    if (mae_bf16_uses_avx512()) {
        int has_bf16 = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vl");
        whole_rows = rows / 16 * 16;
        whole_columns = columns / 16 * 16;
        for (long row0 = 0; row0 < whole_rows; row0 += 16) {
            for (long column0 = 0; column0 < whole_columns; column0 += 16) {
                if (has_bf16 && round_both_tile_bf16(plain, plain_ld, transposed, transposed_ld, source, ld, row0, column0)) continue;
                round_both_tile(plain, plain_ld, transposed, transposed_ld, source, ld, row0, column0);
            }
        }
    }
#endif
    // The rest, as in mae_round_to_bf16_transposed.
    for (long row0 = 0; row0 < rows; row0 += 16) {
        long row1 = row0 + 16 < rows ? row0 + 16 : rows;
        long first_column = row1 <= whole_rows ? whole_columns : 0;
        for (long column0 = first_column; column0 < columns; column0 += 16) {
            long column1 = column0 + 16 < columns ? column0 + 16 : columns;
            for (long row = row0; row < row1; row++) {
                for (long column = column0; column < column1; column++) {
                    uint16_t value = round_one(source[row * ld + column]);
                    plain[row * plain_ld + column] = value;
                    transposed[column * transposed_ld + row] = value;
                }
            }
        }
    }
}

static __thread uint16_t *both_buffer;
static __thread long both_capacity;

uint16_t *mae_bf16_both_buffer(long count) {
    if (count > both_capacity) {
        free(both_buffer);
        both_buffer = malloc((size_t)count * sizeof(uint16_t));
        both_capacity = both_buffer ? count : 0;
    }
    return both_buffer;
}
