/*
 * k_simd.h: what kernels.c needs to know of the SIMD variants
 * (k_avx2.c, k_avx512.c): whether they are built, and their tables.
 */
#ifndef TD_WHISPER_K_SIMD_H
#define TD_WHISPER_K_SIMD_H

#include "whisper/backend/cpu/kernels.h"

/* The SIMD variants are built with GCC/clang target attributes on x86-64;
 * elsewhere only the scalar kernels exist. */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define TD_WK_X86 1
#else
#define TD_WK_X86 0
#endif

/* A micro-kernel's entry: mr (1..TD_WK_MR) is turned into a compile-time
 * constant, so that each variant's mk_t is unrolled for that many rows. */
#define TD_WK_MK_DISPATCH(mk_t, mr, kc, ap, bp, c, ldc, nr, load, bias) \
    do {                                                                \
        switch (mr) {                                                   \
        case 6: mk_t(6, kc, ap, bp, c, ldc, nr, load, bias); break;     \
        case 5: mk_t(5, kc, ap, bp, c, ldc, nr, load, bias); break;     \
        case 4: mk_t(4, kc, ap, bp, c, ldc, nr, load, bias); break;     \
        case 3: mk_t(3, kc, ap, bp, c, ldc, nr, load, bias); break;     \
        case 2: mk_t(2, kc, ap, bp, c, ldc, nr, load, bias); break;     \
        case 1: mk_t(1, kc, ap, bp, c, ldc, nr, load, bias); break;     \
        default: break;                                                 \
        }                                                               \
    } while (0)

#if TD_WK_X86
extern const td_wk_ops td_wk_ops_avx2;
extern const td_wk_ops td_wk_ops_avx512;
#endif

#endif
