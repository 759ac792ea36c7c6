#include "CSupport.h"
#include <string.h>

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
