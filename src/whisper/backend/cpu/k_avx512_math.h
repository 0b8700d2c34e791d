/*
 * k_avx512_math.h: vector math and memory hints shared by the AVX-512 kernel files
 * (k_avx512.c, k_q8_vnni.c). Include only where TD_WK_X86 and
 * <immintrin.h> are in effect; each function carries its own target
 * attribute and inlines into any AVX-512 function.
 */
#ifndef TD_WHISPER_K_AVX512_MATH_H
#define TD_WHISPER_K_AVX512_MATH_H

#include <stddef.h>
#include <immintrin.h>

#define TD_AVX512_MATH __attribute__((target("avx512f,fma"), always_inline))

/* exp(x), Cephes' expf polynomial (~1 ulp on the reduced range). */
TD_AVX512_MATH static inline __m512 exp512(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
    x = _mm512_min_ps(x, _mm512_set1_ps(88.7f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 r2 = _mm512_mul_ps(r, r);
    __m512 y = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

/* Fetch the rows of a micro-kernel's C tile (rows x 64 floats, ldc
 * apart) before its K loop. C is touched only after the loop; in a real
 * product its rows are far apart and out of cache, so the loads (or the
 * stores' read-for-ownership) would stall the end of every call. Fetching
 * the tile first overlaps that with the arithmetic (Ice Lake, one core,
 * 1500-row F16 products: the packed F32 GEMM went from 78-96 to 98-101
 * GFLOP/s; the kernel alone on cached data runs at 172). rows is a
 * constant after inlining. */
TD_AVX512_MATH static inline void prefetch_c_tile(const float *c, size_t ldc, const int rows)
{
#pragma GCC unroll 6
    for (int i = 0; i < rows; i++) {
        const char *ci = (const char *)(c + (size_t)i * ldc);
        _mm_prefetch(ci, _MM_HINT_T0);
        _mm_prefetch(ci + 64, _MM_HINT_T0);
        _mm_prefetch(ci + 128, _MM_HINT_T0);
        _mm_prefetch(ci + 192, _MM_HINT_T0);
    }
}

#endif
