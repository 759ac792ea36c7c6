// The small bf16 products' arithmetic on AMX tiles, on CPUs with AMX-BF16 (Intel Sapphire
// Rapids and later): the same packed operands as the VDPBF16PS tiles of small_products.c,
// summed by TDPBF16PS, which multiplies a 16 × 32 bf16 tile of a by a 32 × 16 one of b
// into a 16 × 16 fp32 tile of c in one instruction. There oneDNN's large products run on
// AMX at 1.6–4.4× OpenBLAS's fp32 rate, while VDPBF16PS ran attention's per-head products
// at 0.5–1.1× it; the tiles run them about 3× faster (docs/PERFORMANCE.md).
//
// The packed layouts serve the tiles as they are: a row of an a tile is one row of a's
// packed words (16 pairs of k, 64 bytes), a row of a b tile one pair of k of b's packed
// words (16 columns). Every element of c is summed over its pairs in order, 16 pairs per
// instruction, from 0, whatever the tiling and the thread count: its bits depend on its
// inputs alone (TDPBF16PS's rules on subnormals and rounding are VDPBF16PS's; the order of
// additions inside an instruction is the hardware's, fixed).
#pragma STDC FP_CONTRACT OFF
#define _GNU_SOURCE  // strcasestr
#include "small_products.h"
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#define AMX_KERNEL __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,amx-tile,amx-bf16")))

// Linux lends a process the tile registers' state (8 KiB per thread, saved on context
// switches) only once the process asks for it (arch/x86/include/uapi/asm/prctl.h).
enum { arch_request_component_permission = 0x1023, tile_data_feature = 18 };

static int amx_usable;
static __thread int amx_turned_off;  // by mae_bf16_use_amx, on this thread

// oneDNN's own limit on the instruction sets its kernels use (ONEDNN_MAX_CPU_ISA, or the
// older name DNNL_MAX_CPU_ISA: SSE41 … AVX512_CORE_BF16, AVX512_CORE_AMX, ALL) set below
// AMX keeps its kernels off the tiles; ours follow it, so that one variable turns AMX off
// for every bf16 product (to compare with a CPU without AMX, say).
static int instruction_set_limit_allows_amx(void) {
    const char *limit = getenv("ONEDNN_MAX_CPU_ISA");
    if (!limit || !*limit) limit = getenv("DNNL_MAX_CPU_ISA");
    if (!limit || !*limit || strcasecmp(limit, "ALL") == 0 || strcasecmp(limit, "DEFAULT") == 0) return 1;
    return strcasestr(limit, "AMX") != NULL;
}

static void probe_amx(void) {
    if (!instruction_set_limit_allows_amx()) return;
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return;
    int has_bf16 = (edx >> 22) & 1, has_tiles = (edx >> 24) & 1;
    if (!has_bf16 || !has_tiles || !mae_bf16_small_kernel_available()) return;
    // The operating system must save the tile state (XCR0 bits 17 and 18) and grant it.
    unsigned int low, high;
    __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
    if ((low & (3u << 17)) != (3u << 17)) return;
    amx_usable = syscall(SYS_arch_prctl, arch_request_component_permission, tile_data_feature) == 0;
}

int mae_bf16_amx_available(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, probe_amx);
    return amx_usable && !amx_turned_off;
}

void mae_bf16_use_amx(int enabled) { amx_turned_off = !enabled; }

// The tiles' palette: 0–3 the 2 × 2 tiles of c, 4–5 two tiles of a, 6–7 two of b; each 16
// rows of 64 bytes. Loaded at every call: oneDNN's kernels on the same thread configure
// the tiles their own way between our calls.
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} tile_configuration;

AMX_KERNEL static void configure_tiles(void) {
    tile_configuration configuration;
    memset(&configuration, 0, sizeof configuration);
    configuration.palette = 1;
    for (int tile = 0; tile < 8; tile++) {
        configuration.bytes_per_row[tile] = 64;
        configuration.rows[tile] = 16;
    }
    _tile_loadconfig(&configuration);
}

// c (or c16) [rows, columns] = alpha · sums (+ c when accumulating), sums [32][32] fp32: the
// last step of small_products.c's tiles (store_sums).
AMX_KERNEL static void store_block(float *c, uint16_t *c16, long ldc, const float *sums, long rows, long columns,
                                   float alpha, int accumulate) {
    __m512 scale = _mm512_set1_ps(alpha);
    for (long row = 0; row < rows; row++) {
        for (long column = 0; column < columns; column += 16) {
            store_sums(c16 ? NULL : c + row * ldc + column, c16 ? c16 + row * ldc + column : NULL,
                       lanes(columns - column), _mm512_load_ps(sums + row * 32 + column), scale, accumulate);
        }
    }
}

AMX_KERNEL void mae_bf16_amx_tiles(float *c, uint16_t *c16, long ldc, const uint32_t *a_packed, long a_stride,
                                   const uint32_t *b_packed, long b_stride, long m, long n, long pairs,
                                   float alpha, int accumulate) {
    configure_tiles();
    float sums[32 * 32] __attribute__((aligned(64)));
    long a_bytes = a_stride * 4, b_bytes = b_stride * 4;
    for (long row0 = 0; row0 < m; row0 += 32) {
        int two_rows = m - row0 > 16;
        for (long column0 = 0; column0 < n; column0 += 32) {
            int two_columns = n - column0 > 16;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (long pair0 = 0; pair0 < pairs; pair0 += 16) {
                const uint32_t *a = a_packed + row0 * a_stride + pair0, *b = b_packed + pair0 * b_stride + column0;
                _tile_loadd(4, a, a_bytes);
                _tile_loadd(6, b, b_bytes);
                _tile_dpbf16ps(0, 4, 6);
                if (two_columns) {
                    _tile_loadd(7, b + 16, b_bytes);
                    _tile_dpbf16ps(1, 4, 7);
                }
                if (two_rows) {
                    _tile_loadd(5, a + 16 * a_stride, a_bytes);
                    _tile_dpbf16ps(2, 5, 6);
                    if (two_columns) _tile_dpbf16ps(3, 5, 7);
                }
            }
            _tile_stored(0, sums, 128);
            _tile_stored(1, sums + 16, 128);
            _tile_stored(2, sums + 16 * 32, 128);
            _tile_stored(3, sums + 16 * 32 + 16, 128);
            long rows = m - row0 < 32 ? m - row0 : 32, columns = n - column0 < 32 ? n - column0 : 32;
            store_block(c16 ? NULL : c + row0 * ldc + column0, c16 ? c16 + row0 * ldc + column0 : NULL, ldc, sums,
                        rows, columns, alpha, accumulate);
        }
    }
    // Back to the initial state, which the kernel need not save on a context switch.
    _tile_release();
}

#else

int mae_bf16_amx_available(void) { return 0; }
void mae_bf16_use_amx(int enabled) {}
void mae_bf16_amx_tiles(float *c, uint16_t *c16, long ldc, const uint32_t *a_packed, long a_stride,
                        const uint32_t *b_packed, long b_stride, long m, long n, long pairs, float alpha,
                        int accumulate) {}

#endif
