// bf16 gradients on the wire (CSupportWire.h): each function has an AVX-512 loop,
// compiled for AVX512F/BW by a target attribute and chosen at run time, and the same
// arithmetic element by element for the tail and for CPUs without AVX-512.
#include "CSupportWire.h"
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static inline uint16_t round_one(float value) {
    uint32_t bits;
    memcpy(&bits, &value, 4);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((bits >> 16) | 0x0040u);  // NaN: quiet, sign kept
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

AVX512 static long round_avx512(uint16_t *destination, const float *source, long count) {
    long index = 0;
    for (; index + 16 <= count; index += 16) {
        __m256i packed = _mm512_cvtepi32_epi16(round16(_mm512_loadu_ps(source + index)));
        _mm256_storeu_si256((__m256i *)(destination + index), packed);
    }
    return index;
}

AVX512 static long widen_avx512(float *destination, const uint16_t *source, long count) {
    long index = 0;
    for (; index + 16 <= count; index += 16) _mm512_storeu_ps(destination + index, widen16(source + index));
    return index;
}

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

int mae_wire_uses_avx512(void) {
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#else
    return 0;
#endif
}

// Each call: the AVX-512 loop where the CPU has it (it returns where it stopped), then
// the rest element by element.
#if defined(__x86_64__)
#define VECTOR_PART(call) (mae_wire_uses_avx512() ? (call) : 0)
#else
#define VECTOR_PART(call) 0
#endif

void mae_wire_round_to_bf16(uint16_t *destination, const float *source, long count) {
    for (long index = VECTOR_PART(round_avx512(destination, source, count)); index < count; index++) {
        destination[index] = round_one(source[index]);
    }
}

void mae_wire_widen_bf16(float *destination, const uint16_t *source, long count) {
    for (long index = VECTOR_PART(widen_avx512(destination, source, count)); index < count; index++) {
        destination[index] = widen_one(source[index]);
    }
}

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
