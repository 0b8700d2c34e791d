/*
 * k_q8_vnni.c: the int8 path's AVX-512 VNNI kernels (see q8.h for what
 * each computes). Compiled for any x86-64 with target attributes and only
 * called after td_q8_ops_best() has checked the CPU.
 *
 * The micro-kernel has the F32 one's shape (k_avx512.c): a 6 x 64 tile
 * of int32 sums in 24 zmm registers, per group of four k 4 loads of the
 * weight panel and 6 broadcasts of the activation panel feeding 24
 * vpdpbusd, each 64 multiply-adds (16 outputs x 4 k) where an FMA does 16.
 */
#include "whisper/backend/cpu/k_simd.h"
#include "whisper/backend/cpu/q8.h"

#if TD_WK_X86

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "whisper/backend/cpu/k_avx512_math.h"

#define TGT __attribute__((target("avx512f,avx512vl,avx512bw,avx512vnni,avx2,fma")))
#define INL __attribute__((always_inline)) inline

TGT static INL __mmask16 tail_mask(int n)
{
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* acc += the u8 x s8 dot products of a and b, four bytes per lane. GCC 12
 * compiles _mm512_dpbusd_epi32 as a three-operand operation: with 24
 * accumulators it copied each one to another register and spilled some to
 * the stack around every instruction (the tile's kernel ran at a third of
 * its rate). Tying the accumulator in asm keeps vpdpbusd in place. */
#define DPBUSD(acc, a, b) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))

TGT static INL void mk_t(const int MRV, int kq, const uint8_t *ap, const int8_t *bp, float *c,
                         size_t ldc, int nr, int load, const float *sa, const float *sb,
                         const int32_t *bsum, const float *bias)
{
    __m512i acc[TD_Q8_MR][4];
    prefetch_c_tile(c, ldc, MRV);
#pragma GCC unroll 6
    for (int i = 0; i < MRV; i++)
        acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = _mm512_setzero_si512();
    for (int g = 0; g < kq; g++) {
        const int8_t *b = bp + (size_t)g * TD_Q8_NR * 4;
        const uint8_t *a = ap + (size_t)g * TD_Q8_MR * 4;
        __m512i b0 = _mm512_loadu_si512(b);
        __m512i b1 = _mm512_loadu_si512(b + 64);
        __m512i b2 = _mm512_loadu_si512(b + 128);
        __m512i b3 = _mm512_loadu_si512(b + 192);
#pragma GCC unroll 6
        for (int i = 0; i < MRV; i++) {
            int32_t w;
            memcpy(&w, a + 4 * i, 4);
            __m512i av = _mm512_set1_epi32(w);
            DPBUSD(acc[i][0], av, b0);
            DPBUSD(acc[i][1], av, b1);
            DPBUSD(acc[i][2], av, b2);
            DPBUSD(acc[i][3], av, b3);
        }
    }
    __mmask16 m[4] = {tail_mask(nr), tail_mask(nr - 16), tail_mask(nr - 32), tail_mask(nr - 48)};
    __m512 sbv[4], bv[4];
    __m512i bs[4];
    /* every loop over the tile unrolled, so that acc stays in registers */
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
        /* sb and bsum are padded to whole panels; bias is not */
        sbv[q] = _mm512_loadu_ps(sb + 16 * q);
        bs[q] = bsum ? _mm512_loadu_si512(bsum + 16 * q) : _mm512_setzero_si512();
        bv[q] = bias ? _mm512_maskz_loadu_ps(m[q], bias + 16 * q) : _mm512_setzero_ps();
    }
#pragma GCC unroll 6
    for (int i = 0; i < MRV; i++) {
        float *ci = c + (size_t)i * ldc;
        __m512 sav = _mm512_set1_ps(sa[i]);
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++) {
            __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][q], bs[q]));
            v = _mm512_fmadd_ps(v, _mm512_mul_ps(sav, sbv[q]), bv[q]);
            if (load)
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m[q], ci + 16 * q));
            _mm512_mask_storeu_ps(ci + 16 * q, m[q], v);
        }
    }
}

TGT static void mk_vnni(int kq, const uint8_t *ap, const int8_t *bp, float *c, size_t ldc, int mr,
                        int nr, int load, const float *sa, const float *sb, const int32_t *bsum,
                        const float *bias)
{
    switch (mr) {
    case 6: mk_t(6, kq, ap, bp, c, ldc, nr, load, sa, sb, bsum, bias); break;
    case 5: mk_t(5, kq, ap, bp, c, ldc, nr, load, sa, sb, bsum, bias); break;
    case 4: mk_t(4, kq, ap, bp, c, ldc, nr, load, sa, sb, bsum, bias); break;
    case 3: mk_t(3, kq, ap, bp, c, ldc, nr, load, sa, sb, bsum, bias); break;
    case 2: mk_t(2, kq, ap, bp, c, ldc, nr, load, sa, sb, bsum, bias); break;
    case 1: mk_t(1, kq, ap, bp, c, ldc, nr, load, sa, sb, bsum, bias); break;
    default: break;
    }
}

TGT static void mk1x4_vnni(int kq, const uint8_t *ap, const int8_t *bp, size_t pstride, float *c,
                           int load, float sa, const float *sb, const int32_t *bsum,
                           const float *bias)
{
    __m512i acc[4][4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++)
        acc[q][0] = acc[q][1] = acc[q][2] = acc[q][3] = _mm512_setzero_si512();
    const int8_t *b0 = bp, *b1 = bp + pstride, *b2 = bp + 2 * pstride, *b3 = bp + 3 * pstride;
    for (int g = 0; g < kq; g++) {
        int32_t w;
        memcpy(&w, ap + (size_t)g * TD_Q8_MR * 4, 4);
        __m512i av = _mm512_set1_epi32(w);
        size_t o = (size_t)g * TD_Q8_NR * 4;
#define PANEL(q, bq)                                                                               \
    do {                                                                                           \
        __m512i x0 = _mm512_loadu_si512(bq + o), x1 = _mm512_loadu_si512(bq + o + 64);             \
        __m512i x2 = _mm512_loadu_si512(bq + o + 128), x3 = _mm512_loadu_si512(bq + o + 192);      \
        DPBUSD(acc[q][0], av, x0);                                                                 \
        DPBUSD(acc[q][1], av, x1);                                                                 \
        DPBUSD(acc[q][2], av, x2);                                                                 \
        DPBUSD(acc[q][3], av, x3);                                                                 \
    } while (0)
        PANEL(0, b0);
        PANEL(1, b1);
        PANEL(2, b2);
        PANEL(3, b3);
#undef PANEL
    }
    __m512 sav = _mm512_set1_ps(sa);
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            size_t o = (size_t)q * TD_Q8_NR + (size_t)v * 16;
            __m512i s = acc[q][v];
            if (bsum)
                s = _mm512_sub_epi32(s, _mm512_loadu_si512(bsum + o));
            __m512 r = _mm512_mul_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(sav, _mm512_loadu_ps(sb + o)));
            if (bias)
                r = _mm512_add_ps(r, _mm512_loadu_ps(bias + o));
            if (load)
                r = _mm512_add_ps(r, _mm512_loadu_ps(c + o));
            _mm512_storeu_ps(c + o, r);
        }
    }
}

TGT static float quant_row_vnni(const float *x, int k, uint8_t *dst)
{
    __m512 mx = _mm512_setzero_ps();
    __mmask16 nan = 0; /* a NaN anywhere makes the row zeros, as in the scalar kernel */
    for (int t = 0; t < k; t += 16) {
        __mmask16 m = tail_mask(k - t);
        __m512 v = _mm512_maskz_loadu_ps(m, x + t);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        mx = _mm512_max_ps(mx, _mm512_abs_ps(v));
    }
    float amax = _mm512_reduce_max_ps(mx);
    if (nan || !(amax >= TD_Q8_TINY) || !isfinite(amax)) {
        memset(dst, 128, (size_t)k);
        return 0.0f;
    }
    __m512 inv = _mm512_set1_ps(127.0f / amax);
    __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127), off = _mm512_set1_epi32(128);
    for (int t = 0; t < k; t += 16) {
        __mmask16 m = tail_mask(k - t);
        /* the default rounding (MXCSR): nearest, ties to even, as lrintf */
        __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + t), inv));
        q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), off);
        _mm512_mask_cvtepi32_storeu_epi8(dst + t, m, q);
    }
    return amax / 127.0f;
}

/* dst[0..16) (masked) = x * scale rounded (nearest even) and clamped to
 * 0..255: the unsigned bytes of probabilities. */
TGT static INL void store_u8(uint8_t *dst, __mmask16 m, __m512 x, __m512 scale)
{
    __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(x, scale));
    q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_setzero_si512()), _mm512_set1_epi32(255));
    _mm512_mask_cvtepi32_storeu_epi8(dst, m, q);
}

TGT static float quant_row_u8_vnni(const float *x, int k, uint8_t *dst)
{
    __m512 mx = _mm512_setzero_ps();
    __mmask16 nan = 0;
    for (int t = 0; t < k; t += 16) {
        __mmask16 m = tail_mask(k - t);
        __m512 v = _mm512_maskz_loadu_ps(m, x + t);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        mx = _mm512_max_ps(mx, v);
    }
    float amax = _mm512_reduce_max_ps(mx);
    if (nan || !(amax >= TD_Q8_TINY) || !isfinite(amax)) {
        memset(dst, 0, (size_t)k);
        return 0.0f;
    }
    __m512 inv = _mm512_set1_ps(255.0f / amax);
    for (int t = 0; t < k; t += 16) {
        __mmask16 m = tail_mask(k - t);
        store_u8(dst + t, m, _mm512_maskz_loadu_ps(m, x + t), inv);
    }
    return amax / 255.0f;
}

TGT static float softmax_u8_vnni(float *x, int n, int n4, uint8_t *dst)
{
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int t = 0; t < n; t += 16) {
        __mmask16 m = tail_mask(n - t);
        mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, x + t));
    }
    __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps(), k255 = _mm512_set1_ps(255.0f);
    for (int t = 0; t < n; t += 16) {
        __mmask16 m = tail_mask(n - t);
        __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + t), vmax)));
        sum = _mm512_add_ps(sum, e);
        _mm512_mask_storeu_ps(x + t, m, e);
        store_u8(dst + t, m, e, k255);
    }
    memset(dst + n, 0, (size_t)(n4 - n));
    return 1.0f / (255.0f * _mm512_reduce_add_ps(sum));
}

const td_q8_ops td_q8_ops_vnni = {
    .name = "avx512-vnni",
    .mk = mk_vnni,
    .mk1x4 = mk1x4_vnni,
    .quant_row_u8 = quant_row_u8_vnni,
    .softmax_u8 = softmax_u8_vnni,
    .quant_row = quant_row_vnni,
};

#endif
