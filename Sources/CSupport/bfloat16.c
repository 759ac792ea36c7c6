// fp32 ↔ bf16 (CSupportBFloat16.h): an AVX-512 loop per call where the CPU has AVX512F/BW,
// then the same arithmetic element by element (bfloat16_simd.h).
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
// as the 16 destination rows column0… (leading dimension rows) from row0. After rounding,
// the 32-bit lanes are transposed in three rounds: pairs of rows interleaved by 32 bits,
// then by 64 bits (each 128-bit lane then holds one column of four rows), then 128-bit
// lanes gathered across the four groups of four rows.
AVX512 static void round_transposed_tile(uint16_t *destination, const float *source, long rows, long ld,
                                         long row0, long column0) {
    __m512i r[16], t[16];
    for (int row = 0; row < 16; row++) r[row] = round16(_mm512_loadu_ps(source + (row0 + row) * ld + column0));
    for (int pair = 0; pair < 16; pair += 2) {
        t[pair] = _mm512_unpacklo_epi32(r[pair], r[pair + 1]);
        t[pair + 1] = _mm512_unpackhi_epi32(r[pair], r[pair + 1]);
    }
    for (int group = 0; group < 16; group += 4) {
        r[group] = _mm512_unpacklo_epi64(t[group], t[group + 2]);      // columns 4L + 0 of rows group…group+3
        r[group + 1] = _mm512_unpackhi_epi64(t[group], t[group + 2]);  // 4L + 1
        r[group + 2] = _mm512_unpacklo_epi64(t[group + 1], t[group + 3]);  // 4L + 2
        r[group + 3] = _mm512_unpackhi_epi64(t[group + 1], t[group + 3]);  // 4L + 3
    }
    for (int j = 0; j < 4; j++) {
        __m512i low01 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x44);     // lanes 0, 1 of rows 0–3 and 4–7
        __m512i high01 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xEE);    // lanes 2, 3
        __m512i low23 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x44);
        __m512i high23 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xEE);
        __m512i columns[4] = {
            _mm512_shuffle_i32x4(low01, low23, 0x88), _mm512_shuffle_i32x4(low01, low23, 0xDD),
            _mm512_shuffle_i32x4(high01, high23, 0x88), _mm512_shuffle_i32x4(high01, high23, 0xDD),
        };
        for (int lane = 0; lane < 4; lane++) {
            long column = column0 + 4 * lane + j;
            _mm256_storeu_si256((__m256i *)(destination + column * rows + row0), _mm512_cvtepi32_epi16(columns[lane]));
        }
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
