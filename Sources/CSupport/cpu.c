#include "CSupport.h"
#include <string.h>
#include <unistd.h>

// __builtin_cpu_supports needs a string literal, so each feature we ask about
// is spelled out here.
int mae_cpu_supports(const char *feature) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (strcmp(feature, "avx512bf16") == 0) return __builtin_cpu_supports("avx512bf16") != 0;
    if (strcmp(feature, "avx512f") == 0) return __builtin_cpu_supports("avx512f") != 0;
    if (strcmp(feature, "avx512vl") == 0) return __builtin_cpu_supports("avx512vl") != 0;
    if (strcmp(feature, "avx512bw") == 0) return __builtin_cpu_supports("avx512bw") != 0;
    if (strcmp(feature, "avx512dq") == 0) return __builtin_cpu_supports("avx512dq") != 0;
    if (strcmp(feature, "avx2") == 0) return __builtin_cpu_supports("avx2") != 0;
    if (strcmp(feature, "avx") == 0) return __builtin_cpu_supports("avx") != 0;
    if (strcmp(feature, "sse4.2") == 0) return __builtin_cpu_supports("sse4.2") != 0;
    if (strcmp(feature, "fma") == 0) return __builtin_cpu_supports("fma") != 0;
#endif
    (void)feature;
    return 0;
}

const char *mae_cpu_best_openblas_core(void) {
    int avx512 = mae_cpu_supports("avx512f") && mae_cpu_supports("avx512vl") &&
                 mae_cpu_supports("avx512bw") && mae_cpu_supports("avx512dq");
    if (avx512 && mae_cpu_supports("avx512bf16")) return "Cooperlake";
    if (avx512) return "SkylakeX";
    if (mae_cpu_supports("avx2") && mae_cpu_supports("fma")) return "Haswell";
    return 0;
}

// The Swift modules are compiled for a CPU level (Package.swift, MAE_TARGET_CPU) and
// may use its instructions anywhere, so the check runs before main, as a constructor:
// on an older CPU the program stops with this message instead of dying of SIGILL.
#if defined(__x86_64__) && defined(MAE_REQUIRE_X86_64_V3)
__attribute__((constructor)) static void mae_check_cpu_level(void) {
    __builtin_cpu_init();
    int supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi2");
#if defined(MAE_REQUIRE_X86_64_V4)
    supported = supported && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#endif
    if (supported) return;
    static const char message[] =
        "error: this program was built for a newer CPU than this one (it needs AVX2 and FMA"
#if defined(MAE_REQUIRE_X86_64_V4)
        " and AVX-512"
#endif
        "); rebuild it for any x86-64 CPU with: MAE_TARGET_CPU=x86-64 swift build -c release\n";
    ssize_t ignored = write(2, message, sizeof message - 1);
    (void)ignored;
    _exit(1);
}
#endif
