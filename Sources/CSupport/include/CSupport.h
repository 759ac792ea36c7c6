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

/// A hint to the CPU that the caller is spinning on a memory location (x86 PAUSE),
/// which Swift cannot emit: it frees the core's shared resources for the other
/// hyper-thread and saves power while our pool's workers wait for work.
static inline void mae_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

// bf16 gradients on the wire (--gradient-wire bf16).
#include "CSupportWire.h"
// The GELU forward at 16 floats per instruction.
#include "CSupportGELU.h"
// AdamW at 16 parameters per instruction.
#include "CSupportAdamW.h"
// Attention's softmax at 16 floats per instruction.
#include "CSupportSoftmax.h"
// Per-thread scratch (attention's heads, partial column sums) and the streaming copy.
#include "CSupportScratch.h"

#endif
