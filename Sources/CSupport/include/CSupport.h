#ifndef MAE_CSUPPORT_H
#define MAE_CSUPPORT_H

/// CPU feature detection, which Swift cannot reach: it needs the compiler's
/// cpuid builtins. Used to pick the OpenBLAS kernel family that this CPU
/// supports when OpenBLAS's own detection guesses too low (see BLASRuntime).

/// Returns the name of the strongest OpenBLAS core type whose instructions
/// this CPU supports ("Cooperlake", "SkylakeX", "Haswell"), or NULL when none
/// of those apply (OpenBLAS's own detection is then as good as ours).
const char *mae_cpu_best_openblas_core(void);

/// 1 when the CPU supports the named feature ("avx512f", "avx2", "fma", ...).
int mae_cpu_supports(const char *feature);

#endif
