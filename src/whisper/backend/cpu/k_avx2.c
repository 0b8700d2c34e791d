/*
 * k_avx2.c: the AVX2 (+FMA, F16C) kernels of the Whisper CPU backend, for
 * x86-64 CPUs without AVX-512 (see kernels.h for what each computes).
 * Compiled with target attributes and only called after td_wk_ops_get()
 * has checked the CPU.
 *
 * With 16 ymm registers the 6 x 64 micro-tile is done as four 6 x 16
 * quarters (12 accumulators, 2 B loads and 6 broadcasts per k), each
 * sweeping the same A-panel, which stays in L1.
 */
#include "whisper/backend/cpu/k_simd.h"

#if TD_WK_X86

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL __attribute__((always_inline)) inline

/* exp(x), Cephes' expf polynomial; x clamped so 2^n stays a normal. */
TGT static INL __m256 exp256(__m256 x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.33654f));
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 r2 = _mm256_mul_ps(r, r);
    __m256 y = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* Mask of the first n (0..8) lanes, for maskload/maskstore. */
TGT static INL __m256i lane_mask(int n)
{
    n = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

TGT static INL __m256 load_n(const float *p, int n)
{
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lane_mask(n));
}

TGT static INL void store_n(float *p, __m256 v, int n)
{
    if (n >= 8)
        _mm256_storeu_ps(p, v);
    else if (n > 0)
        _mm256_maskstore_ps(p, lane_mask(n), v);
}

TGT static INL __m256 load_h(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* Up to 8 halves (n < 8 is read element by element: no masked 16-bit load). */
TGT static INL __m256 load_h_n(const uint16_t *p, int n)
{
    if (n >= 8)
        return load_h(p);
    uint16_t tmp[8] = {0};
    memcpy(tmp, p, (size_t)(n > 0 ? n : 0) * sizeof *tmp); /* p may be unaligned */
    return load_h(tmp);
}

TGT static INL float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

TGT static INL float hmax8(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ------------------------------------------------------------------ */

TGT static void f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, load_h(src + i));
    for (; i < n; i++)
        dst[i] = td_wk_w_at(src, TD_WT_F16, i);
}

TGT static void f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        dst[i] = td_wk_f32_to_f16(src[i]);
}

/* ------------------------------------------------------------------ */
/* Micro-kernel: one 6 x 16 quarter                                      */

TGT static INL void mk_q(const int MRV, int kc, const float *ap, const float *bp, float *c,
                         size_t ldc, int ncol, int load, const float *bias)
{
    __m256 acc[TD_WK_MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MRV; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const float *b = bp + (size_t)k * TD_WK_NR;
        const float *a = ap + (size_t)k * TD_WK_MR;
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MRV; i++) {
            __m256 av = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
        }
    }
    __m256 bb0 = _mm256_setzero_ps(), bb1 = bb0;
    if (bias) {
        bb0 = load_n(bias, ncol);
        bb1 = load_n(bias + 8, ncol - 8);
    }
#pragma GCC unroll 6
    for (int i = 0; i < MRV; i++) {
        float *ci = c + (size_t)i * ldc;
        __m256 v0 = _mm256_add_ps(acc[i][0], bb0), v1 = _mm256_add_ps(acc[i][1], bb1);
        if (load) {
            v0 = _mm256_add_ps(v0, load_n(ci, ncol));
            v1 = _mm256_add_ps(v1, load_n(ci + 8, ncol - 8));
        }
        store_n(ci, v0, ncol);
        store_n(ci + 8, v1, ncol - 8);
    }
}

TGT static INL void mk_t(const int MRV, int kc, const float *ap, const float *bp, float *c,
                         size_t ldc, int nr, int load, const float *bias)
{
    for (int q = 0; q < TD_WK_NR; q += 16) {
        if (q >= nr)
            break;
        mk_q(MRV, kc, ap, bp + q, c + q, ldc, nr - q, load, bias ? bias + q : NULL);
    }
}

TGT static void mk_avx2(int kc, const float *ap, const float *bp, float *c, size_t ldc, int mr,
                        int nr, int load, const float *bias)
{
    TD_WK_MK_DISPATCH(mk_t, mr, kc, ap, bp, c, ldc, nr, load, bias);
}

/* ------------------------------------------------------------------ */
/* B packing with 8 x 8 register transposes                              */

TGT static INL void transpose8(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 2; k++) {
        u[4 * k + 0] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
        u[4 * k + 1] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
        u[4 * k + 2] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
        u[4 * k + 3] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[c + 4] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}


TGT static void pack_b_avx2(const void *w, enum td_wtype wt, size_t ldw, int nn, int kk, float *dst)
{
    int f16 = wt == TD_WT_F16;
    int np = (nn + TD_WK_NR - 1) / TD_WK_NR;
    int k8 = kk & ~7;
    for (int p = 0; p < np; p++) {
        float *d = dst + (size_t)p * kk * TD_WK_NR;
        for (int g = 0; g < TD_WK_NR / 8; g++) {
            int r0 = p * TD_WK_NR + g * 8;
            int nrow = nn - r0;
            nrow = nrow < 0 ? 0 : nrow > 8 ? 8 : nrow;
            float *dg = d + g * 8;
            if (nrow == 8) {
                for (int k = 0; k < k8; k += 8) {
                    __m256 r[8];
                    for (int i = 0; i < 8; i++) {
                        size_t off = (size_t)(r0 + i) * ldw + (size_t)k;
                        r[i] = f16 ? load_h((const uint16_t *)w + off)
                                   : _mm256_loadu_ps((const float *)w + off);
                    }
                    transpose8(r);
                    for (int i = 0; i < 8; i++)
                        _mm256_storeu_ps(dg + (size_t)(k + i) * TD_WK_NR, r[i]);
                }
                for (int k = k8; k < kk; k++)
                    for (int i = 0; i < 8; i++)
                        dg[(size_t)k * TD_WK_NR + i] = td_wk_w_at(w, wt, (size_t)(r0 + i) * ldw + (size_t)k);
            } else {
                for (int k = 0; k < kk; k++)
                    for (int i = 0; i < 8; i++)
                        dg[(size_t)k * TD_WK_NR + i] =
                            i < nrow ? td_wk_w_at(w, wt, (size_t)(r0 + i) * ldw + (size_t)k) : 0.0f;
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* Few-row product: 4 outputs x up to 2 rows per pass (8 accumulators)  */


TGT static INL __m256 load_w(const void *w, const int F16, size_t off)
{
    if (F16)
        return load_h((const uint16_t *)w + off);
    return _mm256_loadu_ps((const float *)w + off);
}

TGT static INL __m256 load_w_n(const void *w, const int F16, size_t off, int n)
{
    if (F16)
        return load_h_n((const uint16_t *)w + off, n);
    return load_n((const float *)w + off, n);
}

/* One output j for MM (1..4) rows of A: W row j times each row. */
TGT static INL void gemv_row(const int MM, const int F16, int k, const float *a0, size_t lda,
                             const void *w, size_t o, float bj, float *c, size_t ldc, int load)
{
    int k8 = k & ~7, kt = k - k8;
    __m256 p[4], q0 = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int i = 0; i < MM; i++)
        p[i] = _mm256_setzero_ps();
    int kk = 0;
    if (MM == 1) { /* two chains, for the FMA latency */
        for (; kk + 16 <= k8; kk += 16) {
            p[0] = _mm256_fmadd_ps(load_w(w, F16, o + (size_t)kk), _mm256_loadu_ps(a0 + kk), p[0]);
            q0 = _mm256_fmadd_ps(load_w(w, F16, o + (size_t)kk + 8), _mm256_loadu_ps(a0 + kk + 8), q0);
        }
    }
    for (; kk < k8; kk += 8) {
        __m256 wv = load_w(w, F16, o + (size_t)kk);
#pragma GCC unroll 4
        for (int i = 0; i < MM; i++)
            p[i] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a0 + (size_t)i * lda + (size_t)kk), p[i]);
    }
    if (kt) {
        __m256 wv = load_w_n(w, F16, o + (size_t)k8, kt);
#pragma GCC unroll 4
        for (int i = 0; i < MM; i++)
            p[i] = _mm256_fmadd_ps(wv, load_n(a0 + (size_t)i * lda + (size_t)k8, kt), p[i]);
    }
    p[0] = _mm256_add_ps(p[0], q0);
#pragma GCC unroll 4
    for (int i = 0; i < MM; i++) {
        float sum = hsum8(p[i]) + bj;
        float *ci = c + (size_t)i * ldc;
        *ci = load ? *ci + sum : sum;
    }
}

/* One weight row at a time (a single sequential stream, which the
 * hardware prefetcher follows at full bandwidth), feeding up to 4 rows of
 * A per pass (the row stays in L1 for a second pass when M > 4). */
TGT static INL void gemv_t(const int M, const int F16, int n, int k, const float *a, size_t lda,
                           const void *w, size_t ldw, const float *bias, float *c, size_t ldc,
                           int load)
{
    for (int j = 0; j < n; j++) {
        size_t o = (size_t)j * ldw;
        float bj = bias ? bias[j] : 0.0f;
        gemv_row(M < 4 ? M : 4, F16, k, a, lda, w, o, bj, c + j, ldc, load);
        if (M > 4)
            gemv_row(M > 4 ? M - 4 : 1, F16, k, a + 4 * lda, lda, w, o, bj, c + 4 * ldc + j, ldc,
                     load);
    }
}

#define GEMV_CASE(MV)                                                                              \
    case MV:                                                                                       \
        if (f16)                                                                                   \
            gemv_t(MV, 1, n, k, a, lda, w, ldw, bias, c, ldc, load);                               \
        else                                                                                       \
            gemv_t(MV, 0, n, k, a, lda, w, ldw, bias, c, ldc, load);                               \
        break;

TGT static void gemv_avx2(int m, int n, int k, const float *a, size_t lda, const void *w,
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

TGT static void layernorm_avx2(int n, const float *x, const float *w, const float *b, float eps,
                               float *y)
{
    __m256 s = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8)
        s = _mm256_add_ps(s, load_n(x + i, n - i));
    float mean = hsum8(s) / (float)n;
    __m256 vm = _mm256_set1_ps(mean);
    __m256 v = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) {
        __m256 d = _mm256_sub_ps(load_n(x + i, n - i), vm);
        d = _mm256_and_ps(d, _mm256_castsi256_ps(lane_mask(n - i)));
        v = _mm256_fmadd_ps(d, d, v);
    }
    float var = hsum8(v) / (float)n;
    __m256 rs = _mm256_set1_ps(1.0f / sqrtf(var + eps));
    for (int i = 0; i < n; i += 8) {
        __m256 d = _mm256_mul_ps(_mm256_sub_ps(load_n(x + i, n - i), vm), rs);
        store_n(y + i, _mm256_fmadd_ps(d, load_n(w + i, n - i), load_n(b + i, n - i)), n - i);
    }
}

/* x * Phi(x) with Numerical Recipes' erfc (see k_avx512.c; z clamped
 * and the far negative side 0 as there, to keep clear of subnormals). */
TGT static INL __m256 gelu256(__m256 x)
{
    __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    __m256 z = _mm256_min_ps(_mm256_mul_ps(ax, _mm256_set1_ps(0.70710678118654752f)),
                             _mm256_set1_ps(8.8f));
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
                             _mm256_fmadd_ps(z, _mm256_set1_ps(0.5f), _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_set1_ps(0.17087277f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.82215223f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.48851587f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.13520398f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.27886807f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.18628806f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.09678418f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.37409196f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.00002368f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.26551223f));
    p = _mm256_fnmadd_ps(z, z, p);
    __m256 half = _mm256_mul_ps(_mm256_mul_ps(t, exp256(p)), _mm256_set1_ps(0.5f));
    __m256 pos = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
    __m256 phi = _mm256_blendv_ps(half, _mm256_sub_ps(_mm256_set1_ps(1.0f), half), pos);
    __m256 drop = _mm256_cmp_ps(x, _mm256_set1_ps(-12.44f), _CMP_LT_OQ);
    return _mm256_andnot_ps(drop, _mm256_mul_ps(x, phi));
}

TGT static void gelu_avx2(float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, gelu256(_mm256_loadu_ps(x + i)));
    if (i < n) {
        int r = (int)(n - i);
        store_n(x + i, gelu256(load_n(x + i, r)), r);
    }
}

TGT static void softmax_avx2(float *x, int n, int n_zero)
{
    __m256 mx = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        mx = _mm256_max_ps(mx, _mm256_loadu_ps(x + i));
    float m = hmax8(mx);
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    __m256 vmax = _mm256_set1_ps(m);
    __m256 s = _mm256_setzero_ps();
    for (i = 0; i < n; i += 8) {
        int r = n - i;
        __m256 e = exp256(_mm256_sub_ps(load_n(x + i, r), vmax));
        e = _mm256_and_ps(e, _mm256_castsi256_ps(lane_mask(r)));
        s = _mm256_add_ps(s, e);
        store_n(x + i, e, r);
    }
    __m256 inv = _mm256_set1_ps(1.0f / hsum8(s));
    for (i = 0; i < n; i += 8)
        store_n(x + i, _mm256_mul_ps(load_n(x + i, n - i), inv), n - i);
    if (n_zero > n)
        memset(x + n, 0, (size_t)(n_zero - n) * sizeof(float));
}

TGT static void colexp_avx2(float *st, int rows, float *sum)
{
    for (int q = 0; q < TD_WK_NR; q += 32) {
        __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
        for (int r = 0; r < rows; r++) {
            const float *p = st + (size_t)r * TD_WK_NR + q;
            m0 = _mm256_max_ps(m0, _mm256_loadu_ps(p));
            m1 = _mm256_max_ps(m1, _mm256_loadu_ps(p + 8));
            m2 = _mm256_max_ps(m2, _mm256_loadu_ps(p + 16));
            m3 = _mm256_max_ps(m3, _mm256_loadu_ps(p + 24));
        }
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (int r = 0; r < rows; r++) {
            float *p = st + (size_t)r * TD_WK_NR + q;
            __m256 e0 = exp256(_mm256_sub_ps(_mm256_loadu_ps(p), m0));
            __m256 e1 = exp256(_mm256_sub_ps(_mm256_loadu_ps(p + 8), m1));
            __m256 e2 = exp256(_mm256_sub_ps(_mm256_loadu_ps(p + 16), m2));
            __m256 e3 = exp256(_mm256_sub_ps(_mm256_loadu_ps(p + 24), m3));
            _mm256_storeu_ps(p, e0);
            _mm256_storeu_ps(p + 8, e1);
            _mm256_storeu_ps(p + 16, e2);
            _mm256_storeu_ps(p + 24, e3);
            s0 = _mm256_add_ps(s0, e0);
            s1 = _mm256_add_ps(s1, e1);
            s2 = _mm256_add_ps(s2, e2);
            s3 = _mm256_add_ps(s3, e3);
        }
        _mm256_storeu_ps(sum + q, s0);
        _mm256_storeu_ps(sum + q + 8, s1);
        _mm256_storeu_ps(sum + q + 16, s2);
        _mm256_storeu_ps(sum + q + 24, s3);
    }
}

TGT static float dot_avx2(const float *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i < n; i += 8)
        s0 = _mm256_fmadd_ps(load_n(a + i, n - i), load_n(b + i, n - i), s0);
    return hsum8(_mm256_add_ps(s0, s1));
}

const td_wk_ops td_wk_ops_avx2 = {
    .name = "avx2",
    .isa = TD_WK_AVX2,
    .f16_to_f32 = f16_to_f32_avx2,
    .f32_to_f16 = f32_to_f16_avx2,
    .mk = mk_avx2,
    .pack_b = pack_b_avx2,
    .gemv = gemv_avx2,
    .layernorm = layernorm_avx2,
    .gelu = gelu_avx2,
    .softmax = softmax_avx2,
    .colexp = colexp_avx2,
    .dot = dot_avx2,
};

#endif
