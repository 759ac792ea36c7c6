// fp32 ↔ bf16 (CSupportBFloat16.h): an AVX-512 loop per call where the CPU has AVX512F/BW,
// then the same arithmetic element by element (bfloat16_simd.h).
// No fused multiply-adds: the GELU backward's product and the column sums round each step
// as Swift's element-wise loops do.
#pragma STDC FP_CONTRACT OFF
#include "CSupportBFloat16.h"
#include "bfloat16_simd.h"

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

// The 16 × 16 bf16 values from row0, column0 of `plain` (leading dimension plain_ld),
// transposed into `transposed` (leading dimension transposed_ld) from column0, row0: each
// 128-bit lane on its own (columns 0–7 low, 8–15 high), pairs of rows interleaved by 16
// bits, then by 32 (four rows per column), then 64 (eight), and last the lanes of rows
// 0–7 and 8–15 joined.
AVX512 static void transpose_tile_16bit(uint16_t *transposed, long transposed_ld, const uint16_t *plain, long plain_ld,
                                        long row0, long column0) {
    __m256i r[16], a[16], b[16];
    for (int row = 0; row < 16; row++) r[row] = _mm256_loadu_si256((const __m256i *)(plain + (row0 + row) * plain_ld + column0));
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

#if defined(__x86_64__)
AVX512 static long round_row_avx512(uint16_t *plain, const float *source, const float *factor, float *sums, long count) {
    long index = 0;
    for (; index + 16 <= count; index += 16) {
        __m512 value = _mm512_loadu_ps(source + index);
        if (factor) value = _mm512_mul_ps(value, _mm512_loadu_ps(factor + index));
        _mm256_storeu_si256((__m256i *)(plain + index), _mm512_cvtepi32_epi16(round16(value)));
        if (sums) _mm512_storeu_ps(sums + index, _mm512_add_ps(_mm512_loadu_ps(sums + index), value));
    }
    return index;
}
#endif

// plain[i] = (source[i] · factor[i], or source[i] when factor is NULL) rounded, and the
// value added to sums[i] when sums is not NULL: one product and one addition an element,
// as element-wise loops do them.
static void round_row(uint16_t *plain, const float *source, const float *factor, float *sums, long count) {
    for (long index = VECTOR_PART(round_row_avx512(plain, source, factor, sums, count)); index < count; index++) {
        float value = factor ? source[index] * factor[index] : source[index];
        plain[index] = round_one(value);
        if (sums) sums[index] += value;
    }
}

void mae_round_to_bf16_both(uint16_t *plain, long plain_ld, uint16_t *transposed, long transposed_ld,
                            const float *source, const float *factor, long rows, long columns, long ld,
                            float *column_sums) {
    // By strips of 16 rows: each row (times its factors) rounded as mae_round_to_bf16 rounds
    // it and added to the column sums, reading the source once and in order (the order the
    // hardware prefetches best), then the strip's bf16 rows, still in cache, transposed: the
    // same bits both ways by construction.
    for (long row0 = 0; row0 < rows; row0 += 16) {
        long row1 = row0 + 16 < rows ? row0 + 16 : rows;
        for (long row = row0; row < row1; row++) {
            round_row(plain + row * plain_ld, source + row * ld, factor ? factor + row * ld : NULL, column_sums, columns);
        }
        long whole_columns = 0;
#if defined(__x86_64__)
        if (row1 - row0 == 16 && mae_bf16_uses_avx512()) {
            whole_columns = columns / 16 * 16;
            for (long column0 = 0; column0 < whole_columns; column0 += 16) {
                transpose_tile_16bit(transposed, transposed_ld, plain, plain_ld, row0, column0);
            }
        }
#endif
        for (long column = whole_columns; column < columns; column++) {
            for (long row = row0; row < row1; row++) transposed[column * transposed_ld + row] = plain[row * plain_ld + column];
        }
    }
}
