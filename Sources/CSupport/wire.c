// bf16 gradients on the wire (CSupportWire.h): each function has an AVX-512 loop,
// compiled for AVX512F/BW by a target attribute and chosen at run time, and the same
// arithmetic element by element for the tail and for CPUs without AVX-512
// (bfloat16_simd.h holds the rounding both share with bfloat16.c).
#include "CSupportWire.h"
#include "bfloat16_simd.h"

#if defined(__x86_64__)
AVX512 static long add_avx512(float *destination, const uint16_t *source, long count) {
    long index = 0;
    for (; index + 16 <= count; index += 16) {
        _mm512_storeu_ps(destination + index, _mm512_add_ps(_mm512_loadu_ps(destination + index), widen16(source + index)));
    }
    return index;
}

AVX512 static long add_mean_avx512(float *destination, const uint16_t *source, long count, float divisor) {
    __m512 divisors = _mm512_set1_ps(divisor);
    long index = 0;
    for (; index + 16 <= count; index += 16) {
        __m512 sum = _mm512_add_ps(_mm512_loadu_ps(destination + index), widen16(source + index));
        _mm512_storeu_ps(destination + index, round_trip16(_mm512_div_ps(sum, divisors)));
    }
    return index;
}

AVX512 static long mean_in_order_avx512(const float *const *sources, long source_count, float *first, float *second,
                                        long count, float divisor) {
    __m512 divisors = _mm512_set1_ps(divisor);
    long index = 0;
    for (; index + 16 <= count; index += 16) {
        __m512 sum = _mm512_loadu_ps(sources[0] + index);
        for (long source = 1; source < source_count; source++) {
            sum = _mm512_add_ps(round_trip16(sum), _mm512_loadu_ps(sources[source] + index));
        }
        sum = round_trip16(_mm512_div_ps(sum, divisors));
        _mm512_storeu_ps(first + index, sum);
        _mm512_storeu_ps(second + index, sum);
    }
    return index;
}
#endif

void mae_wire_add_bf16(float *destination, const uint16_t *source, long count) {
    for (long index = VECTOR_PART(add_avx512(destination, source, count)); index < count; index++) {
        destination[index] = destination[index] + widen_one(source[index]);
    }
}

void mae_wire_add_bf16_mean(float *destination, const uint16_t *source, long count, float divisor) {
    for (long index = VECTOR_PART(add_mean_avx512(destination, source, count, divisor)); index < count; index++) {
        destination[index] = round_trip_one((destination[index] + widen_one(source[index])) / divisor);
    }
}

void mae_wire_mean_in_order_bf16(const float *const *sources, long source_count, float *first, float *second,
                                 long count, float divisor) {
    long start = VECTOR_PART(mean_in_order_avx512(sources, source_count, first, second, count, divisor));
    for (long index = start; index < count; index++) {
        float sum = sources[0][index];
        for (long source = 1; source < source_count; source++) sum = round_trip_one(sum) + sources[source][index];
        sum = round_trip_one(sum / divisor);
        first[index] = sum;
        second[index] = sum;
    }
}
