/*
 * k_simd.h: what kernels.c needs to know of the SIMD variants
 * (k_avx2.c, k_avx512.c): whether they are built, and their tables.
 */
#ifndef TD_WHISPER_K_SIMD_H
#define TD_WHISPER_K_SIMD_H

#include "whisper/kernels.h"

/* The SIMD variants are built with GCC/clang target attributes on x86-64;
 * elsewhere only the scalar kernels exist. */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define TD_WK_X86 1
#else
#define TD_WK_X86 0
#endif

#if TD_WK_X86
extern const td_wk_ops td_wk_ops_avx2;
extern const td_wk_ops td_wk_ops_avx512;
#endif

#endif
