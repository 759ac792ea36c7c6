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
