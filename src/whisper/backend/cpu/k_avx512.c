/*
 * k_avx512.c: the AVX-512 (F, VL, BW with FMA and F16C) kernels of the
 * Whisper CPU backend (see kernels.h for what each computes). Compiled
 * for any x86-64 with target attributes and only called after
 * td_wk_ops_get() has checked the CPU.
 *
 * The micro-kernel keeps a 6 x 64 tile of C in 24 zmm registers: per k it
 * loads 4 vectors of the B-panel and broadcasts 6 values of the A-panel,
 * 24 FMAs (on Zen 4, whose 512-bit FMAs are two 256-bit halves, that is
 * 12 cycles of both FMA pipes against 10 loads). The few-row product
 * (gemv) reads F16 weights directly, 4 output rows at a time, converting
 * 16 halves per instruction (vcvtph2ps), so a decoder token streams each
 * weight once from memory for all its sequences.
 */
#include "whisper/backend/cpu/k_simd.h"

#if TD_WK_X86

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "whisper/backend/cpu/k_avx512_math.h"

#define TGT __attribute__((target("avx512f,avx512vl,avx512bw,avx2,fma,f16c")))
#define INL __attribute__((always_inline)) inline

TGT static INL __mmask16 tail_mask(int n)
{
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* ------------------------------------------------------------------ */

TGT static void f16_to_f32_avx512(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    if (i < n) {
        __mmask16 m = tail_mask((int)(n - i));
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i)));
    }
}

TGT static void f32_to_f16_avx512(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) {
        __mmask16 m = tail_mask((int)(n - i));
        _mm256_mask_storeu_epi16(dst + i, m,
                                 _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i),
                                                 _MM_FROUND_TO_NEAREST_INT));
    }
}

/* ------------------------------------------------------------------ */
/* Micro-kernel                                                          */

TGT static INL void mk_t(const int MRV, int kc, const float *ap, const float *bp, float *c,
                         size_t ldc, int nr, int load, const float *bias)
{
    __m512 acc[TD_WK_MR][4];
    prefetch_c_tile(c, ldc, MRV);
#pragma GCC unroll 6
    for (int i = 0; i < MRV; i++) {
        acc[i][0] = _mm512_setzero_ps();
        acc[i][1] = _mm512_setzero_ps();
        acc[i][2] = _mm512_setzero_ps();
        acc[i][3] = _mm512_setzero_ps();
    }
    for (int k = 0; k < kc; k++) {
        const float *b = bp + (size_t)k * TD_WK_NR;
        const float *a = ap + (size_t)k * TD_WK_MR;
        __m512 b0 = _mm512_loadu_ps(b);
        __m512 b1 = _mm512_loadu_ps(b + 16);
        __m512 b2 = _mm512_loadu_ps(b + 32);
        __m512 b3 = _mm512_loadu_ps(b + 48);
#pragma GCC unroll 6
        for (int i = 0; i < MRV; i++) {
            __m512 av = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(av, b2, acc[i][2]);
            acc[i][3] = _mm512_fmadd_ps(av, b3, acc[i][3]);
        }
    }
    __mmask16 m0 = tail_mask(nr), m1 = tail_mask(nr - 16), m2 = tail_mask(nr - 32),
              m3 = tail_mask(nr - 48);
    __m512 bb0 = _mm512_setzero_ps(), bb1 = bb0, bb2 = bb0, bb3 = bb0;
    if (bias) {
        bb0 = _mm512_maskz_loadu_ps(m0, bias);
        bb1 = _mm512_maskz_loadu_ps(m1, bias + 16);
        bb2 = _mm512_maskz_loadu_ps(m2, bias + 32);
        bb3 = _mm512_maskz_loadu_ps(m3, bias + 48);
    }
#pragma GCC unroll 6
    for (int i = 0; i < MRV; i++) {
        float *ci = c + (size_t)i * ldc;
        __m512 v0 = _mm512_add_ps(acc[i][0], bb0), v1 = _mm512_add_ps(acc[i][1], bb1);
        __m512 v2 = _mm512_add_ps(acc[i][2], bb2), v3 = _mm512_add_ps(acc[i][3], bb3);
        if (load) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, ci));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, ci + 16));
            v2 = _mm512_add_ps(v2, _mm512_maskz_loadu_ps(m2, ci + 32));
            v3 = _mm512_add_ps(v3, _mm512_maskz_loadu_ps(m3, ci + 48));
        }
        _mm512_mask_storeu_ps(ci, m0, v0);
        _mm512_mask_storeu_ps(ci + 16, m1, v1);
        _mm512_mask_storeu_ps(ci + 32, m2, v2);
        _mm512_mask_storeu_ps(ci + 48, m3, v3);
    }
}

TGT static void mk_avx512(int kc, const float *ap, const float *bp, float *c, size_t ldc, int mr,
                          int nr, int load, const float *bias)
{
    TD_WK_MK_DISPATCH(mk_t, mr, kc, ap, bp, c, ldc, nr, load, bias);
}

/* ------------------------------------------------------------------ */
/* B packing: 16 x 16 blocks of W transposed in registers               */

TGT static INL void transpose16(__m512 r[16])
{
    __m512 t[16], u[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) {
        u[4 * k + 0] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
        u[4 * k + 1] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
        u[4 * k + 2] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
        u[4 * k + 3] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
    }
    /* u[4k + c], 128-bit lane L: rows 4k..4k+3 of column 4L + c */
    for (int c = 0; c < 4; c++) {
        __m512 v = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
        __m512 w = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
        __m512 w2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
        r[c] = _mm512_shuffle_f32x4(v, v2, 0x88);
        r[c + 8] = _mm512_shuffle_f32x4(v, v2, 0xDD);
        r[c + 4] = _mm512_shuffle_f32x4(w, w2, 0x88);
        r[c + 12] = _mm512_shuffle_f32x4(w, w2, 0xDD);
    }
}

TGT static void pack_b_avx512(const void *w, enum td_wtype wt, size_t ldw, int nn, int kk, float *dst)
{
    int f16 = wt == TD_WT_F16;
    int np = (nn + TD_WK_NR - 1) / TD_WK_NR;
    int k16 = kk & ~15;
    for (int p = 0; p < np; p++) {
        float *d = dst + (size_t)p * kk * TD_WK_NR;
        for (int g = 0; g < TD_WK_NR / 16; g++) {
            int r0 = p * TD_WK_NR + g * 16;
            int nrow = nn - r0;
            nrow = nrow < 0 ? 0 : nrow > 16 ? 16 : nrow;
            float *dg = d + g * 16;
            if (nrow == 16) {
                for (int k = 0; k < k16; k += 16) {
                    __m512 r[16];
                    for (int i = 0; i < 16; i++) {
                        size_t off = (size_t)(r0 + i) * ldw + (size_t)k;
                        r[i] = f16 ? _mm512_cvtph_ps(_mm256_loadu_si256(
                                         (const __m256i *)((const uint16_t *)w + off)))
                                   : _mm512_loadu_ps((const float *)w + off);
                    }
                    transpose16(r);
                    for (int i = 0; i < 16; i++)
                        _mm512_storeu_ps(dg + (size_t)(k + i) * TD_WK_NR, r[i]);
                }
                for (int k = k16; k < kk; k++)
                    for (int i = 0; i < 16; i++)
                        dg[(size_t)k * TD_WK_NR + i] = td_wk_w_at(w, wt, (size_t)(r0 + i) * ldw + (size_t)k);
            } else {
                for (int k = 0; k < kk; k++)
                    for (int i = 0; i < 16; i++)
                        dg[(size_t)k * TD_WK_NR + i] =
                            i < nrow ? td_wk_w_at(w, wt, (size_t)(r0 + i) * ldw + (size_t)k) : 0.0f;
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* Few-row product reading W directly                                   */


TGT static INL __m512 load_w(const void *w, const int F16, size_t off)
{
    if (F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + off)));
    return _mm512_loadu_ps((const float *)w + off);
}

TGT static INL __m512 load_w_mask(const void *w, const int F16, size_t off, __mmask16 m)
{
    if (F16)
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + off));
    return _mm512_maskz_loadu_ps(m, (const float *)w + off);
}

/* The four horizontal sums of a, b, c, d as one vector. */
TGT static INL __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d)
{
#define HALF(x)                                                                                    \
    _mm256_add_ps(_mm512_castps512_ps256(x),                                                       \
                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)))
    __m256 a8 = HALF(a), b8 = HALF(b), c8 = HALF(c), d8 = HALF(d);
#undef HALF
    __m256 ab = _mm256_hadd_ps(a8, b8);
    __m256 cd = _mm256_hadd_ps(c8, d8);
    __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* Outputs [j, n) one by one (the last n % 4). */
TGT static INL void gemv_tail(const int M, const int F16, int j, int n, int k, const float *a,
                              size_t lda, const void *w, size_t ldw, const float *bias, float *c,
                              size_t ldc, int load)
{
    int k16 = k & ~15;
    __mmask16 km = tail_mask(k - k16);
    for (; j < n; j++) {
        __m512 acc[TD_WK_GEMV_ROWS];
#pragma GCC unroll 6
        for (int i = 0; i < M; i++)
            acc[i] = _mm512_setzero_ps();
        size_t o0 = (size_t)j * ldw;
        for (int kk = 0; kk < k16; kk += 16) {
            __m512 w0 = load_w(w, F16, o0 + (size_t)kk);
#pragma GCC unroll 6
            for (int i = 0; i < M; i++)
                acc[i] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(a + (size_t)i * lda + (size_t)kk), acc[i]);
        }
        if (km) {
            __m512 w0 = load_w_mask(w, F16, o0 + (size_t)k16, km);
#pragma GCC unroll 6
            for (int i = 0; i < M; i++)
                acc[i] = _mm512_fmadd_ps(
                    w0, _mm512_maskz_loadu_ps(km, a + (size_t)i * lda + (size_t)k16), acc[i]);
        }
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) {
            float s = _mm512_reduce_add_ps(acc[i]) + (bias ? bias[j] : 0.0f);
            float *ci = c + (size_t)i * ldc + j;
            *ci = load ? *ci + s : s;
        }
    }
}

/* The end of a four-column GEMV step: reduce each row's four accumulators,
 * add the bias (and C when load), store C[i][j..j+3]. */
TGT static INL void store4(const int M, __m512 acc[4][TD_WK_GEMV_ROWS], const float *bias, int j,
                           float *c, size_t ldc, int load)
{
    __m128 bv = bias ? _mm_loadu_ps(bias + j) : _mm_setzero_ps();
#pragma GCC unroll 6
    for (int i = 0; i < M; i++) {
        __m128 s = _mm_add_ps(reduce4(acc[0][i], acc[1][i], acc[2][i], acc[3][i]), bv);
        float *ci = c + (size_t)i * ldc + j;
        if (load)
            s = _mm_add_ps(s, _mm_loadu_ps(ci));
        _mm_storeu_ps(ci, s);
    }
}

/* acc[q][i] += the 16-lane partial dot products of A's row i with the
 * weight row starting at element o_q, over all k (the tail masked). The
 * two GEMV shapes below differ only in which four rows they read and how
 * they store; PF (a constant) adds the linear prefetch of `ahead`. */
TGT static INL void dot4(const int M, const int F16, const int PF, int k, const float *a,
                         size_t lda, const void *w, size_t o0, size_t o1, size_t o2, size_t o3,
                         const char *ahead, __m512 acc[4][TD_WK_GEMV_ROWS])
{
    const size_t esz = F16 ? 2 : 4;
    int k16 = k & ~15;
    __mmask16 km = tail_mask(k - k16);
    for (int kk = 0; kk < k16; kk += 16) {
        if (PF) {
            const char *pf = ahead + (size_t)4 * kk * esz;
            _mm_prefetch(pf, _MM_HINT_T0);
            _mm_prefetch(pf + 64, _MM_HINT_T0);
            if (!F16) {
                _mm_prefetch(pf + 128, _MM_HINT_T0);
                _mm_prefetch(pf + 192, _MM_HINT_T0);
            }
        }
        __m512 w0 = load_w(w, F16, o0 + (size_t)kk);
        __m512 w1 = load_w(w, F16, o1 + (size_t)kk);
        __m512 w2 = load_w(w, F16, o2 + (size_t)kk);
        __m512 w3 = load_w(w, F16, o3 + (size_t)kk);
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) {
            __m512 x = _mm512_loadu_ps(a + (size_t)i * lda + (size_t)kk);
            acc[0][i] = _mm512_fmadd_ps(w0, x, acc[0][i]);
            acc[1][i] = _mm512_fmadd_ps(w1, x, acc[1][i]);
            acc[2][i] = _mm512_fmadd_ps(w2, x, acc[2][i]);
            acc[3][i] = _mm512_fmadd_ps(w3, x, acc[3][i]);
        }
    }
    if (km) {
        __m512 w0 = load_w_mask(w, F16, o0 + (size_t)k16, km);
        __m512 w1 = load_w_mask(w, F16, o1 + (size_t)k16, km);
        __m512 w2 = load_w_mask(w, F16, o2 + (size_t)k16, km);
        __m512 w3 = load_w_mask(w, F16, o3 + (size_t)k16, km);
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) {
            __m512 x = _mm512_maskz_loadu_ps(km, a + (size_t)i * lda + (size_t)k16);
            acc[0][i] = _mm512_fmadd_ps(w0, x, acc[0][i]);
            acc[1][i] = _mm512_fmadd_ps(w1, x, acc[1][i]);
            acc[2][i] = _mm512_fmadd_ps(w2, x, acc[2][i]);
            acc[3][i] = _mm512_fmadd_ps(w3, x, acc[3][i]);
        }
    }
}

/* With 3 or more rows of A the product is bound by loads, not memory:
 * four weight rows are read side by side so that each A vector feeds four
 * FMAs. Four interleaved streams defeat the hardware prefetcher, so the
 * block two ahead is prefetched linearly (two cache lines per step). */
TGT static INL void gemv_il_t(const int M, const int F16, int n, int k, const float *a, size_t lda,
                              const void *w, size_t ldw, const float *bias, float *c, size_t ldc,
                              int load)
{
    const size_t esz = F16 ? 2 : 4;
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        __m512 acc[4][TD_WK_GEMV_ROWS];
#pragma GCC unroll 6
        for (int i = 0; i < M; i++)
            acc[0][i] = acc[1][i] = acc[2][i] = acc[3][i] = _mm512_setzero_ps();
        size_t o0 = (size_t)j * ldw, o1 = o0 + ldw, o2 = o1 + ldw, o3 = o2 + ldw;
        const char *ahead = (const char *)w + (o0 + 8 * ldw) * esz;
        dot4(M, F16, 1, k, a, lda, w, o0, o1, o2, o3, ahead, acc);
        store4(M, acc, bias, j, c, ldc, load);
    }
    gemv_tail(M, F16, j, n, k, a, lda, w, ldw, bias, c, ldc, load);
}

/* One or two rows of A against many weight rows (a greedy decoder step,
 * bound by memory): four sequential streams at once, the four quarters
 * of the column range side by side, because a core keeps more cache
 * misses in flight with several streams than with one. On the 2-core Ice
 * Lake VM, reading 256 MB: one thread 9.3 GB/s with one stream, 11.6
 * with two, 13.4 with four; two threads 17.9 / 21.3 / 24.3. The tiny
 * decoder step went from 4.5-4.7 to 3.7 ms. (One stream was this
 * kernel's earlier form, chosen on Zen 4 over four adjacent rows read
 * side by side, which is one stream with a jumping pattern.) */
TGT static INL void gemv_q4_t(const int M, const int F16, int n, int k, const float *a, size_t lda,
                              const void *w, size_t ldw, const float *bias, float *c, size_t ldc,
                              int load)
{
    int n4 = n / 4;
    for (int j = 0; j < n4; j++) {
        __m512 acc[4][TD_WK_GEMV_ROWS];
#pragma GCC unroll 6
        for (int i = 0; i < M; i++)
            acc[0][i] = acc[1][i] = acc[2][i] = acc[3][i] = _mm512_setzero_ps();
        size_t o0 = (size_t)j * ldw, o1 = o0 + (size_t)n4 * ldw, o2 = o1 + (size_t)n4 * ldw,
               o3 = o2 + (size_t)n4 * ldw;
        dot4(M, F16, 0, k, a, lda, w, o0, o1, o2, o3, NULL, acc);
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) {
            float s[4];
            _mm_storeu_ps(s, reduce4(acc[0][i], acc[1][i], acc[2][i], acc[3][i]));
            for (int q = 0; q < 4; q++) {
                int col = j + q * n4;
                float v = s[q] + (bias ? bias[col] : 0.0f);
                float *ci = c + (size_t)i * ldc + col;
                *ci = load ? *ci + v : v;
            }
        }
    }
    gemv_tail(M, F16, 4 * n4, n, k, a, lda, w, ldw, bias, c, ldc, load);
}

TGT static INL void gemv_t(const int M, const int F16, int n, int k, const float *a, size_t lda,
                           const void *w, size_t ldw, const float *bias, float *c, size_t ldc,
                           int load)
{
    if (M <= 2)
        gemv_q4_t(M, F16, n, k, a, lda, w, ldw, bias, c, ldc, load);
    else
        gemv_il_t(M, F16, n, k, a, lda, w, ldw, bias, c, ldc, load);
}

#define GEMV_CASE(MV)                                                                              \
    case MV:                                                                                       \
        if (f16)                                                                                   \
            gemv_t(MV, 1, n, k, a, lda, w, ldw, bias, c, ldc, load);                               \
        else                                                                                       \
            gemv_t(MV, 0, n, k, a, lda, w, ldw, bias, c, ldc, load);                               \
        break;

TGT static void gemv_avx512(int m, int n, int k, const float *a, size_t lda, const void *w,
                            enum td_wtype wt, size_t ldw, const float *bias, float *c, size_t ldc,
                            int load)
{
    int f16 = wt == TD_WT_F16;
    switch (m) {
        GEMV_CASE(1)
        GEMV_CASE(2)
        GEMV_CASE(3)
        GEMV_CASE(4)
        GEMV_CASE(5)
        GEMV_CASE(6)
    default:
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Row operations                                                        */

TGT static float hsum_n(const float *x, int n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(x + i));
        s1 = _mm512_add_ps(s1, _mm512_loadu_ps(x + i + 16));
    }
    for (; i < n; i += 16)
        s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

TGT static void layernorm_avx512(int n, const float *x, const float *w, const float *b, float eps,
                                 float *y)
{
    float mean = hsum_n(x, n) / (float)n;
    __m512 vm = _mm512_set1_ps(mean);
    __m512 s0 = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + i), vm);
        s0 = _mm512_fmadd_ps(d, d, s0);
    }
    float var = _mm512_reduce_add_ps(s0) / (float)n;
    __m512 rs = _mm512_set1_ps(1.0f / sqrtf(var + eps));
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm), rs);
        __m512 v = _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, b + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

/* x * Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2 with Numerical Recipes'
 * erfc (relative error < 1.2e-7 everywhere), so the small values of the
 * negative side keep their relative precision. t = 1 / (1 + z / 2) is a
 * true division: the 14-bit reciprocal and a Newton step ran the GELU 5x
 * faster (2.1 against 11.4 ms for 3 million inputs) but moved its
 * results by up to an ulp, and the decodes with them (base int8 on the
 * 10-minute scene, greedy sequential: 59 errors against 36; beam 5: 26
 * against 23; bench/RESULTS.md). z is clamped at 8.8 and the result is 0 below
 * x = -12.44 (where it is under 1e-34): past that the erfc's exponential
 * and the products after it would be subnormal (operations on those
 * cost a microcode assist each: the encoder's GELU ran 25 times slower
 * on rows whose inputs reach -13, 7 % of a batched run's CPU, perf on
 * Ice Lake); for large positive x, Phi is 1 in float either way. */
TGT static INL __m512 gelu512(__m512 x)
{
    __m512 z = _mm512_min_ps(_mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(0.70710678118654752f)),
                             _mm512_set1_ps(8.8f));
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                             _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(0.17087277f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.82215223f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.48851587f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.13520398f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.27886807f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.18628806f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.09678418f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.37409196f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.00002368f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.26551223f));
    p = _mm512_fnmadd_ps(z, z, p);
    __m512 erfc = _mm512_mul_ps(t, exp512(p));
    __m512 half = _mm512_mul_ps(erfc, _mm512_set1_ps(0.5f));
    __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
    __m512 phi = _mm512_mask_sub_ps(half, pos, _mm512_set1_ps(1.0f), half);
    __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-12.44f), _CMP_NLT_UQ); /* NaN stays */
    return _mm512_maskz_mul_ps(keep, x, phi);
}

TGT static void gelu_avx512(float *x, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, gelu512(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = tail_mask((int)(n - i));
        _mm512_mask_storeu_ps(x + i, m, gelu512(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

TGT static void softmax_avx512(float *x, int n, int n_zero)
{
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, x + i));
    }
    __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 s = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vmax));
        e = _mm512_maskz_mov_ps(m, e);
        s = _mm512_add_ps(s, e);
        _mm512_mask_storeu_ps(x + i, m, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(s));
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    }
    if (n_zero > n)
        memset(x + n, 0, (size_t)(n_zero - n) * sizeof(float));
}

TGT static void colexp_avx512(float *st, int rows, float *sum)
{
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    for (int r = 0; r < rows; r++) {
        const float *p = st + (size_t)r * TD_WK_NR;
        m0 = _mm512_max_ps(m0, _mm512_loadu_ps(p));
        m1 = _mm512_max_ps(m1, _mm512_loadu_ps(p + 16));
        m2 = _mm512_max_ps(m2, _mm512_loadu_ps(p + 32));
        m3 = _mm512_max_ps(m3, _mm512_loadu_ps(p + 48));
    }
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int r = 0; r < rows; r++) {
        float *p = st + (size_t)r * TD_WK_NR;
        __m512 e0 = exp512(_mm512_sub_ps(_mm512_loadu_ps(p), m0));
        __m512 e1 = exp512(_mm512_sub_ps(_mm512_loadu_ps(p + 16), m1));
        __m512 e2 = exp512(_mm512_sub_ps(_mm512_loadu_ps(p + 32), m2));
        __m512 e3 = exp512(_mm512_sub_ps(_mm512_loadu_ps(p + 48), m3));
        _mm512_storeu_ps(p, e0);
        _mm512_storeu_ps(p + 16, e1);
        _mm512_storeu_ps(p + 32, e2);
        _mm512_storeu_ps(p + 48, e3);
        s0 = _mm512_add_ps(s0, e0);
        s1 = _mm512_add_ps(s1, e1);
        s2 = _mm512_add_ps(s2, e2);
        s3 = _mm512_add_ps(s3, e3);
    }
    _mm512_storeu_ps(sum, s0);
    _mm512_storeu_ps(sum + 16, s1);
    _mm512_storeu_ps(sum + 32, s2);
    _mm512_storeu_ps(sum + 48, s3);
}

TGT static float dot_avx512(const float *a, const float *b, int n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

const td_wk_ops td_wk_ops_avx512 = {
    .name = "avx512",
    .isa = TD_WK_AVX512,
    .gemv_many_rows = 1,
    .f16_to_f32 = f16_to_f32_avx512,
    .f32_to_f16 = f32_to_f16_avx512,
    .mk = mk_avx512,
    .pack_b = pack_b_avx512,
    .gemv = gemv_avx512,
    .layernorm = layernorm_avx512,
    .gelu = gelu_avx512,
    .softmax = softmax_avx512,
    .colexp = colexp_avx512,
    .dot = dot_avx512,
};

#endif
