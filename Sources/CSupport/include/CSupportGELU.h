#ifndef MAE_CSUPPORT_GELU_H
#define MAE_CSUPPORT_GELU_H

/// The exact GELU's forward (Sources/Kernels/GELU.swift) 16 elements per instruction where
/// the CPU has AVX512F. In C because Swift cannot compile one function for AVX-512 and
/// another for CPUs without it; LLVM vectorises the Swift loop at 256 bits, whose chain of
/// dependent operations (an exponential, a division, two polynomials) leaves the core
/// waiting: twice the elements per instruction halve that. Every operation is the Swift
/// code's, in its order, each rounded (no fused multiply-add), so the bits are the same.

/// For x = pre_activation[i] + bias[i], i below the returned count (a multiple of 16; 0
/// without AVX512F): activated[i] = x · Φ(x) and pre_activation[i] = Φ(x) + x · φ(x), as
/// `biasGELUForward`; the caller computes the rest of the row.
long mae_gelu_forward_row(float *activated, float *pre_activation, const float *bias, long width);

#endif
