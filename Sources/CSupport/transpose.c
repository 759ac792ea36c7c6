// fp32 transposes (CSupportTranspose.h): whole 16 × 16 tiles through registers
// (bfloat16_simd.h's transpose16x16_epi32), the edges element by element.
#include "CSupportTranspose.h"
#include "bfloat16_simd.h"

#if defined(__x86_64__)
AVX512 static void transpose_tile(float *destination, long destination_ld, const float *source, long source_ld) {
    __m512i rows[16];
    for (int row = 0; row < 16; row++) rows[row] = _mm512_castps_si512(_mm512_loadu_ps(source + row * source_ld));
    transpose16x16_epi32(rows);
    for (int column = 0; column < 16; column++) {
        _mm512_storeu_ps(destination + column * destination_ld, _mm512_castsi512_ps(rows[column]));
    }
}
#endif

void mae_transpose_floats(float *destination, long destination_ld, const float *source, long source_ld,
                          long rows, long columns) {
    long whole_rows = 0, whole_columns = 0;  // the part covered by whole tiles
#if defined(__x86_64__)
    if (mae_bf16_uses_avx512()) {
        whole_rows = rows / 16 * 16;
        whole_columns = columns / 16 * 16;
        for (long row0 = 0; row0 < whole_rows; row0 += 16) {
            for (long column0 = 0; column0 < whole_columns; column0 += 16) {
                transpose_tile(destination + column0 * destination_ld + row0, destination_ld,
                               source + row0 * source_ld + column0, source_ld);
            }
        }
    }
#endif
    // The columns right of the tiles for every row, then the rows below them.
    for (long row = 0; row < rows; row++) {
        for (long column = whole_columns; column < columns; column++) {
            destination[column * destination_ld + row] = source[row * source_ld + column];
        }
    }
    for (long row = whole_rows; row < rows; row++) {
        for (long column = 0; column < whole_columns; column++) {
            destination[column * destination_ld + row] = source[row * source_ld + column];
        }
    }
}
