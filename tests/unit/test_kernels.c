/*
 * test_kernels.c: the Whisper CPU kernels (src/whisper/backend/cpu/kernels.h) against
 * naive double-precision references, for every SIMD variant this CPU
 * runs (scalar always; AVX2 and AVX-512 where supported), plus the
 * drivers (GEMM through the packed kernels and through BLAS, convolution,
 * encoder and decoder attention, the latter with uniform and ragged
 * groups) with 1 and 2 threads, and the pool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"
#include "whisper/backend/cpu/kernels.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                              */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double urand(void) /* uniform [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / (double)(1ull << 52) - 1.0;
}

static float *frand(size_t n, double scale)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(urand() * scale);
    return p;
}

/* Weights in type wt, plus their exact values as double. The weights
 * start one byte past an aligned address, as tensors in a mapped model
 * file may: kernels must not assume alignment (UBSan checks). */
static void *wrand(enum td_wtype wt, size_t n, double **exact)
{
    double *e = malloc((n ? n : 1) * sizeof *e);
    assert_non_null(e);
    size_t esz = wt == TD_WT_F16 ? 2 : 4;
    unsigned char *base = malloc(n * esz + 8);
    assert_non_null(base);
    unsigned char *w = base + 1;
    for (size_t i = 0; i < n; i++) {
        if (wt == TD_WT_F16) {
            uint16_t h = td_wk_f32_to_f16((float)urand());
            memcpy(w + 2 * i, &h, 2);
            e[i] = td_wk_f16_to_f32(h);
        } else {
            float f = (float)urand();
            memcpy(w + 4 * i, &f, 4);
            e[i] = f;
        }
    }
    *exact = e;
    return w;
}

static void wfree(void *w)
{
    free((unsigned char *)w - 1);
}

/* Each variant this CPU runs. */
static int variants(const td_wk_ops **out)
{
    int n = 0;
    for (int i = 0; i < TD_WK_N_ISA; i++) {
        const td_wk_ops *o = td_wk_ops_get((enum td_wk_isa)i);
        if (o)
            out[n++] = o;
    }
    return n;
}

typedef struct ctx_holder {
    td_wk_ctx ctx;
    float *scratch;
} ctx_holder;

static void ctx_open(ctx_holder *h, const td_wk_ops *ops, int threads, int n_ctx, int n_keys, int d,
                     enum td_wk_gemm_impl impl, size_t wconv)
{
    memset(h, 0, sizeof *h);
    td_error err;
    assert_int_equal(td_wk_pool_create(threads, &h->ctx.pool, &err), TD_OK);
    h->ctx.ops = ops;
    h->ctx.impl = impl;
    h->ctx.scratch_floats = td_wk_scratch_floats(n_ctx, n_keys, d);
    h->scratch = aligned_alloc(64, (h->ctx.scratch_floats * (size_t)threads + wconv + 16) * sizeof(float));
    assert_non_null(h->scratch);
    h->ctx.scratch = h->scratch;
    if (wconv) {
        h->ctx.wconv = h->scratch + h->ctx.scratch_floats * (size_t)threads;
        h->ctx.wconv_floats = wconv;
    }
}

static void ctx_close(ctx_holder *h)
{
    td_wk_pool_free(h->ctx.pool);
    free(h->scratch);
}

/* ------------------------------------------------------------------ */
/* Half precision                                                       */

static double half_value(uint16_t h) /* independent decoding, in double */
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0)
        v = ldexp((double)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp(1024.0 + m, e - 25);
    return s ? -v : v;
}

static void test_f16_all_values(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = td_wk_f16_to_f32((uint16_t)h);
        double v = half_value((uint16_t)h);
        if (isnan(v)) {
            assert_true(isnan(f));
            assert_true(isnan(td_wk_f16_to_f32(td_wk_f32_to_f16(f))));
            continue;
        }
        assert_true((double)f == v);
        if (f == 0.0f)
            assert_int_equal(signbit(f) != 0, (h & 0x8000) != 0);
        /* round trip is exact for every non-NaN half */
        assert_int_equal(td_wk_f32_to_f16(f), h);
    }
}

static void test_f16_rounding(void **state)
{
    (void)state;
    assert_int_equal(td_wk_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(td_wk_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(td_wk_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(td_wk_f32_to_f16(65519.0f), 0x7bff); /* below the midpoint */
    assert_int_equal(td_wk_f32_to_f16(65520.0f), 0x7c00); /* ties away to infinity */
    assert_int_equal(td_wk_f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(td_wk_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(td_wk_f32_to_f16(0.1f), 0x2e66);
    assert_int_equal(td_wk_f32_to_f16(-0.0f), 0x8000);
    /* 1 + 2^-11 is the tie between 1 and 1 + 2^-10: even is 1 */
    assert_int_equal(td_wk_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00);
    /* 1 + 3 * 2^-11 ties between 1+2^-10 (odd) and 1+2^-9 (even) */
    assert_int_equal(td_wk_f32_to_f16(1.0f + 3.0f * ldexpf(1.0f, -11)), 0x3c02);
    /* subnormals */
    assert_int_equal(td_wk_f32_to_f16(ldexpf(1.0f, -24)), 0x0001);
    assert_int_equal(td_wk_f32_to_f16(ldexpf(1.0f, -25)), 0x0000);           /* tie to even 0 */
    assert_int_equal(td_wk_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);           /* above the tie */
    assert_int_equal(td_wk_f32_to_f16(ldexpf(3.0f, -25)), 0x0002);           /* 1.5 ulp: to even 2 */
    assert_int_equal(td_wk_f32_to_f16(ldexpf(1023.0f, -24)), 0x03ff);
    assert_int_equal(td_wk_f32_to_f16(ldexpf(2047.0f, -25)), 0x0400);        /* rounds up into normal */
    assert_int_equal(td_wk_f32_to_f16(ldexpf(1.0f, -14)), 0x0400);
    uint16_t qn = td_wk_f32_to_f16(NAN);
    assert_int_equal(qn & 0x7c00, 0x7c00);
    assert_true((qn & 0x3ff) != 0);
    /* nearest for random values: the result is the closest half */
    for (int i = 0; i < 20000; i++) {
        float f = (float)(urand() * 70000.0);
        uint16_t h = td_wk_f32_to_f16(f);
        double v = half_value(h);
        if (isinf(v))
            continue;
        double e = fabs(v - f);
        uint16_t up = (uint16_t)(h + 1), dn = (uint16_t)(h - 1);
        if ((up & 0x7c00) != 0x7c00)
            assert_true(e <= fabs(half_value(up) - f));
        if ((h & 0x7fff) != 0)
            assert_true(e <= fabs(half_value(dn) - f));
    }
}

static void test_f16_variants(void **state)
{
    (void)state;
    const td_wk_ops *ops[TD_WK_N_ISA];
    int nv = variants(ops);
    uint16_t *src = malloc(65536 * sizeof *src + 64);
    float *dst = malloc(65536 * sizeof *dst + 64);
    assert_non_null(src);
    assert_non_null(dst);
    for (uint32_t h = 0; h < 65536; h++)
        src[h] = (uint16_t)h;
    for (int v = 0; v < nv; v++) {
        for (size_t len = 0; len < 40; len++) { /* every tail length */
            memset(dst, 0x55, 64 * sizeof *dst);
            ops[v]->f16_to_f32(src + 15360, dst, len);
            for (size_t i = 0; i < len; i++)
                assert_true(dst[i] == td_wk_f16_to_f32(src[15360 + i]));
            uint32_t guard;
            memcpy(&guard, &dst[len], sizeof guard);
            assert_int_equal(guard, 0x55555555u);
        }
        ops[v]->f16_to_f32(src, dst, 65536);
        for (uint32_t h = 0; h < 65536; h++) {
            float ref = td_wk_f16_to_f32((uint16_t)h);
            if (isnan(ref))
                assert_true(isnan(dst[h]));
            else
                assert_memory_equal(&dst[h], &ref, sizeof ref);
        }
    }
    free(src);
    free(dst);
}

/* f32_to_f16 of every variant rounds as the scalar reference does: every
 * tail length, then floats around every half (ties, midpoints, subnormal
 * halves, overflow, NaN). */
static void test_f32_to_f16_variants(void **state)
{
    (void)state;
    const td_wk_ops *ops[TD_WK_N_ISA];
    int nv = variants(ops);
    size_t n = 65536 * 4;
    float *src = malloc(n * sizeof *src);
    uint16_t *dst = malloc((n + 64) * sizeof *dst);
    assert_non_null(src);
    assert_non_null(dst);
    for (uint32_t h = 0; h < 65536; h++) {
        float f = td_wk_f16_to_f32((uint16_t)h);
        uint32_t b;
        memcpy(&b, &f, sizeof b);
        uint32_t bits[4] = {b, b + 0x1000u, b + 0x0fffu, b + 0x1001u}; /* tie, below, above */
        for (int j = 0; j < 4; j++)
            memcpy(&src[h * 4 + (uint32_t)j], &bits[j], sizeof(float));
    }
    for (int v = 0; v < nv; v++) {
        for (size_t len = 0; len < 40; len++) {
            memset(dst, 0x55, 64 * sizeof *dst);
            ops[v]->f32_to_f16(src + 4 * 15360, dst, len);
            for (size_t i = 0; i < len; i++)
                assert_int_equal(dst[i], td_wk_f32_to_f16(src[4 * 15360 + i]));
            assert_int_equal(dst[len], 0x5555u);
        }
        ops[v]->f32_to_f16(src, dst, n);
        for (size_t i = 0; i < n; i++) {
            uint16_t ref = td_wk_f32_to_f16(src[i]);
            if (isnan(src[i]))
                assert_true((dst[i] & 0x7c00u) == 0x7c00u && (dst[i] & 0x3ffu) != 0);
            else if (dst[i] != ref) {
                print_error("%s f32_to_f16(%a) = %04x, scalar %04x\n", ops[v]->name,
                            (double)src[i], dst[i], ref);
                fail();
            }
        }
    }
    free(src);
    free(dst);
}

/* ------------------------------------------------------------------ */
/* Micro-kernel, packing, few-row product                               */

static void test_mk(void **state)
{
    (void)state;
    const td_wk_ops *ops[TD_WK_N_ISA];
    int nv = variants(ops);
    static const int kcs[] = {1, 7, 64, 257};
    static const int nrs[] = {1, 15, 16, 17, 33, 63, 64};
    const size_t ldc = 80;
    for (int v = 0; v < nv; v++) {
        for (size_t ik = 0; ik < sizeof kcs / sizeof kcs[0]; ik++) {
            int kc = kcs[ik];
            float *ap = frand((size_t)kc * TD_WK_MR, 1.0);
            float *bp = frand((size_t)kc * TD_WK_NR, 1.0);
            float *bias = frand(TD_WK_NR, 1.0);
            for (int mr = 1; mr <= TD_WK_MR; mr++) {
                for (size_t in = 0; in < sizeof nrs / sizeof nrs[0]; in++) {
                    int nr = nrs[in];
                    for (int mode = 0; mode < 4; mode++) {
                        int load = mode & 1, use_bias = mode >> 1;
                        float c[8 * 80], c0[8 * 80];
                        for (size_t i = 0; i < 8 * ldc; i++)
                            c0[i] = c[i] = (float)urand();
                        ops[v]->mk(kc, ap, bp, c, ldc, mr, nr, load, use_bias ? bias : NULL);
                        for (int i = 0; i < 8; i++) {
                            for (size_t j = 0; j < ldc; j++) {
                                size_t at = (size_t)i * ldc + j;
                                if (i >= mr || (int)j >= nr) { /* untouched */
                                    assert_memory_equal(&c[at], &c0[at], sizeof(float));
                                    continue;
                                }
                                double ref = load ? c0[at] : 0.0, mag = fabs(ref);
                                if (use_bias) {
                                    ref += bias[j];
                                    mag += fabs(bias[j]);
                                }
                                for (int k = 0; k < kc; k++) {
                                    double t = (double)ap[k * TD_WK_MR + i] * bp[k * TD_WK_NR + j];
                                    ref += t;
                                    mag += fabs(t);
                                }
                                if (fabs(c[at] - ref) > 1e-6 * mag + 1e-30) {
                                    print_error("%s mk kc %d mr %d nr %d mode %d [%d][%zu]: %g vs %g\n",
                                                ops[v]->name, kc, mr, nr, mode, i, j, c[at], ref);
                                    fail();
                                }
                            }
                        }
                    }
                }
            }
            free(ap);
            free(bp);
            free(bias);
        }
    }
}

static void test_pack_b(void **state)
{
    (void)state;
    const td_wk_ops *ops[TD_WK_N_ISA];
    int nv = variants(ops);
    static const int shapes[][3] = {{64, 16, 16}, {70, 37, 40}, {130, 300, 310}, {5, 3, 3}, {128, 33, 64}};
    for (int wt = 0; wt < 2; wt++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int nn = shapes[s][0], kk = shapes[s][1], ldw = shapes[s][2];
            double *exact;
            void *w = wrand((enum td_wtype)wt, (size_t)nn * ldw, &exact);
            int np = (nn + TD_WK_NR - 1) / TD_WK_NR;
            size_t sz = (size_t)np * kk * TD_WK_NR;
            float *dst = malloc(sz * sizeof *dst);
            assert_non_null(dst);
            for (int v = 0; v < nv; v++) {
                memset(dst, 0x7f, sz * sizeof *dst);
                ops[v]->pack_b(w, (enum td_wtype)wt, (size_t)ldw, nn, kk, dst);
                for (int p = 0; p < np; p++)
                    for (int k = 0; k < kk; k++)
                        for (int j = 0; j < TD_WK_NR; j++) {
                            int n = p * TD_WK_NR + j;
                            double ref = n < nn ? exact[(size_t)n * ldw + k] : 0.0;
                            float got = dst[((size_t)p * kk + k) * TD_WK_NR + j];
                            if ((double)got != ref) {
                                print_error("%s pack_b wt %d %dx%d: p %d k %d j %d: %g vs %g\n",
                                            ops[v]->name, wt, nn, kk, p, k, j, got, ref);
                                fail();
                            }
                        }
            }
            free(dst);
            wfree(w);
            free(exact);
        }
    }
}

static void test_gemv(void **state)
{
    (void)state;
    const td_wk_ops *ops[TD_WK_N_ISA];
    int nv = variants(ops);
    static const int shapes[][2] = {{1, 1}, {3, 15}, {4, 16}, {7, 17}, {37, 100}, {9, 384}};
    for (int wt = 0; wt < 2; wt++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int n = shapes[s][0], k = shapes[s][1];
            size_t ldw = (size_t)k + 3, lda = (size_t)k + 5, ldc = (size_t)n + 2;
            double *exact;
            void *w = wrand((enum td_wtype)wt, (size_t)n * ldw, &exact);
            float *a = frand(TD_WK_GEMV_ROWS * lda, 1.0);
            float *bias = frand((size_t)n, 1.0);
            float *c = malloc(TD_WK_GEMV_ROWS * ldc * sizeof *c);
            float *c0 = malloc(TD_WK_GEMV_ROWS * ldc * sizeof *c0);
            double *ref = malloc(TD_WK_GEMV_ROWS * ldc * sizeof *ref);
            double *mag = malloc(TD_WK_GEMV_ROWS * ldc * sizeof *mag);
            for (int v = 0; v < nv; v++) {
                for (int m = 1; m <= TD_WK_GEMV_ROWS; m++) {
                    for (int mode = 0; mode < 4; mode++) {
                        int load = mode & 1, ub = mode >> 1;
                        for (size_t i = 0; i < TD_WK_GEMV_ROWS * ldc; i++)
                            c[i] = c0[i] = (float)urand();
                        ops[v]->gemv(m, n, k, a, lda, w, (enum td_wtype)wt, ldw, ub ? bias : NULL, c,
                                     ldc, load);
                        for (int i = 0; i < TD_WK_GEMV_ROWS; i++)
                            for (size_t j = 0; j < ldc; j++) {
                                size_t at = (size_t)i * ldc + j;
                                if (i >= m || (int)j >= n) {
                                    assert_memory_equal(&c[at], &c0[at], sizeof(float));
                                    continue;
                                }
                                double r = (load ? c0[at] : 0.0) + (ub ? bias[j] : 0.0);
                                double mg = fabs(r);
                                for (int kk = 0; kk < k; kk++) {
                                    double t = a[(size_t)i * lda + kk] * exact[j * ldw + kk];
                                    r += t;
                                    mg += fabs(t);
                                }
                                if (fabs(c[at] - r) > 1e-6 * mg + 1e-30) {
                                    print_error("%s gemv wt %d m %d n %d k %d: [%d][%zu] %g vs %g\n",
                                                ops[v]->name, wt, m, n, k, i, j, c[at], r);
                                    fail();
                                }
                            }
                    }
                }
            }
            wfree(w);
            free(exact);
            free(a);
            free(bias);
            free(c);
            free(c0);
            free(ref);
            free(mag);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Row operations                                                       */

static void test_layernorm(void **state)
{
    (void)state;
    const td_wk_ops *ops[TD_WK_N_ISA];
    int nv = variants(ops);
    static const int ns[] = {1, 7, 16, 64, 385, 1280};
    for (int v = 0; v < nv; v++) {
        for (size_t s = 0; s < sizeof ns / sizeof ns[0]; s++) {
            int n = ns[s];
            float *x = frand((size_t)n, 3.0);
            for (int i = 0; i < n; i++)
                x[i] += 5.0f; /* an offset, as residual streams have */
            float *w = frand((size_t)n, 1.0), *b = frand((size_t)n, 1.0);
            float *y = malloc(((size_t)n + 1) * sizeof *y);
            y[n] = 12345.0f;
            ops[v]->layernorm(n, x, w, b, 1e-5f, y);
            double mean = 0, var = 0;
            for (int i = 0; i < n; i++)
                mean += x[i];
            mean /= n;
            for (int i = 0; i < n; i++)
                var += (x[i] - mean) * (x[i] - mean);
            var /= n;
            for (int i = 0; i < n; i++) {
                double ref = (x[i] - mean) / sqrt(var + 1e-5) * w[i] + b[i];
                double mag = fabs((x[i] - mean) / sqrt(var + 1e-5) * w[i]) + fabs(b[i]) + 1e-3;
                if (fabs(y[i] - ref) > 2e-5 * mag) {
                    print_error("%s layernorm n %d [%d]: %g vs %g\n", ops[v]->name, n, i, y[i], ref);
                    fail();
                }
            }
            assert_true(y[n] == 12345.0f);
            /* in place */
            ops[v]->layernorm(n, x, w, b, 1e-5f, x);
            assert_memory_equal(x, y, (size_t)n * sizeof *y);
            free(x);
            free(w);
            free(b);
            free(y);
        }
    }
}

static double gelu_ref(double x)
{
    return x * 0.5 * erfc(-x / sqrt(2.0));
}

static void test_gelu(void **state)
{
    (void)state;
    const td_wk_ops *ops[TD_WK_N_ISA];
    int nv = variants(ops);
    size_t n = 20001 + 13 + 801;
    float *x0 = malloc(n * sizeof *x0), *x = malloc((n + 1) * sizeof *x);
    for (size_t i = 0; i < 20001; i++)
        x0[i] = (float)(-10.0 + 20.0 * (double)i / 20000.0);
    float specials[13] = {0.0f, -0.0f, 1e-30f, -1e-30f, 30.0f, -30.0f, 1e30f, -1e30f,
                          0.5f, -0.5f, 3.0f, -3.0f, -5.5f};
    memcpy(x0 + 20001, specials, sizeof specials);
    /* the far tail, -13 to -5, where the kernels cut to zero below
     * -12.44 (the result is under 1e-34 there) and must stay accurate
     * above it, where the loose bound below cannot tell */
    for (size_t i = 0; i < 801; i++)
        x0[20014 + i] = (float)(-13.0 + 8.0 * (double)i / 800.0);
    for (int v = 0; v < nv; v++) {
        for (size_t len = 1; len <= n; len = len < 40 ? len + 1 : (len == n ? n + 1 : n)) {
            memcpy(x, x0, len * sizeof *x);
            x[len] = 777.0f;
            ops[v]->gelu(x, len);
            assert_true(x[len] == 777.0f);
            for (size_t i = 0; i < len; i++) {
                double ref = gelu_ref(x0[i]);
                /* relative 1e-6 of the value, or 1e-7 of |x| (where Phi
                 * is tiny and the result goes to zero) */
                double tol = 1e-6 * fabs(ref) + 1e-7 * fabs(x0[i]) * (fabs(x0[i]) < 1e20 ? 1 : 0) + 1e-37;
                if (x0[i] >= -12.4f && x0[i] <= -5.0f)
                    tol = 1e-4 * fabs(ref); /* normal floats there: relative */
                if (!(fabs(x[i] - ref) <= tol) && !(x[i] == 0.0f && fabs(ref) < 1e-34)) {
                    print_error("%s gelu(%.9g) = %.9g, want %.9g\n", ops[v]->name, x0[i], x[i], ref);
                    fail();
                }
            }
        }
    }
    free(x0);
    free(x);
}

static void test_softmax(void **state)
{
    (void)state;
    const td_wk_ops *ops[TD_WK_N_ISA];
    int nv = variants(ops);
    static const int ns[] = {1, 2, 15, 16, 17, 100, 1500};
    for (int v = 0; v < nv; v++) {
        for (size_t s = 0; s < sizeof ns / sizeof ns[0]; s++) {
            int n = ns[s], nz = n + 21;
            float *x0 = frand((size_t)n, 8.0);
            x0[n / 2] = 40.0f; /* large values must not overflow */
            float *x = malloc(((size_t)nz + 1) * sizeof *x);
            for (int i = 0; i <= nz; i++)
                x[i] = i < n ? x0[i] : 99.0f;
            ops[v]->softmax(x, n, nz);
            double mx = -INFINITY, sum = 0;
            for (int i = 0; i < n; i++)
                mx = x0[i] > mx ? x0[i] : mx;
            for (int i = 0; i < n; i++)
                sum += exp(x0[i] - mx);
            for (int i = 0; i < n; i++) {
                double ref = exp(x0[i] - mx) / sum;
                if (fabs(x[i] - ref) > 2e-6 * ref + 1e-12) {
                    print_error("%s softmax n %d [%d]: %g vs %g\n", ops[v]->name, n, i, x[i], ref);
                    fail();
                }
            }
            for (int i = n; i < nz; i++)
                assert_true(x[i] == 0.0f);
            assert_true(x[nz] == 99.0f);
            free(x0);
            free(x);
        }
    }
}

static void test_colexp_dot(void **state)
{
    (void)state;
    const td_wk_ops *ops[TD_WK_N_ISA];
    int nv = variants(ops);
    int rows = 77;
    float *st0 = frand((size_t)rows * TD_WK_NR, 6.0);
    float *st = malloc((size_t)rows * TD_WK_NR * sizeof *st);
    float sum[TD_WK_NR];
    for (int v = 0; v < nv; v++) {
        memcpy(st, st0, (size_t)rows * TD_WK_NR * sizeof *st);
        ops[v]->colexp(st, rows, sum);
        for (int j = 0; j < TD_WK_NR; j++) {
            double mx = -INFINITY, s = 0;
            for (int r = 0; r < rows; r++)
                mx = st0[r * TD_WK_NR + j] > mx ? st0[r * TD_WK_NR + j] : mx;
            for (int r = 0; r < rows; r++) {
                double e = exp(st0[r * TD_WK_NR + j] - mx);
                s += e;
                assert_true(fabs(st[r * TD_WK_NR + j] - e) <= 2e-6 * e + 1e-30);
            }
            assert_true(fabs(sum[j] - s) <= 2e-6 * s);
        }
        static const int ns[] = {0, 1, 15, 16, 33, 1000};
        for (size_t s = 0; s < sizeof ns / sizeof ns[0]; s++) {
            float *a = frand((size_t)ns[s], 1.0), *b = frand((size_t)ns[s], 1.0);
            double ref = 0, mag = 0;
            for (int i = 0; i < ns[s]; i++) {
                ref += (double)a[i] * b[i];
                mag += fabs((double)a[i] * b[i]);
            }
            float got = ops[v]->dot(a, b, ns[s]);
            assert_true(fabs(got - ref) <= 1e-6 * mag + 1e-30);
            free(a);
            free(b);
        }
    }
    free(st0);
    free(st);
}

/* ------------------------------------------------------------------ */
/* Drivers                                                              */

static void gemm_case(const td_wk_ops *ops, int threads, enum td_wk_gemm_impl impl, int m, int n,
                      int k, enum td_wtype wt, int use_bias, int acc)
{
    ctx_holder h;
    ctx_open(&h, ops, threads, 16, 16, 16, impl, impl == TD_WK_GEMM_BLAS ? 4096 : 0);
    size_t lda = (size_t)k + 1, ldw = (size_t)k + 2, ldc = (size_t)n + 3;
    float *a = frand((size_t)m * lda, 1.0);
    double *exact;
    void *w = wrand(wt, (size_t)n * ldw, &exact);
    float *bias = frand((size_t)n, 1.0);
    float *c = frand((size_t)m * ldc, 1.0);
    float *c0 = malloc((size_t)m * ldc * sizeof *c0);
    memcpy(c0, c, (size_t)m * ldc * sizeof *c0);
    td_wk_gemm(&h.ctx, m, n, k, a, lda, w, wt, ldw, use_bias ? bias : NULL, c, ldc, acc);
    for (int i = 0; i < m; i++)
        for (size_t j = 0; j < ldc; j++) {
            size_t at = (size_t)i * ldc + j;
            if ((int)j >= n) {
                assert_memory_equal(&c[at], &c0[at], sizeof(float));
                continue;
            }
            double r = (acc ? c0[at] : 0.0) + (use_bias ? bias[j] : 0.0), mag = fabs(r);
            for (int kk = 0; kk < k; kk++) {
                double t = a[(size_t)i * lda + kk] * exact[j * ldw + kk];
                r += t;
                mag += fabs(t);
            }
            if (fabs(c[at] - r) > 2e-6 * mag + 1e-30) {
                print_error("%s/%s gemm %dx%dx%d wt %d bias %d acc %d thr %d: [%d][%zu] %g vs %g\n",
                            ops->name, impl == TD_WK_GEMM_BLAS ? "blas" : "own", m, n, k, wt,
                            use_bias, acc, threads, i, j, c[at], r);
                fail();
            }
        }
    free(a);
    wfree(w);
    free(exact);
    free(bias);
    free(c);
    free(c0);
    ctx_close(&h);
}

static void test_gemm(void **state)
{
    (void)state;
    const td_wk_ops *ops[TD_WK_N_ISA];
    int nv = variants(ops);
    /* odd sizes: few rows (gemv path), edges of every block size */
    static const int shapes[][3] = {{1, 1, 1},    {5, 77, 33},   {6, 100, 17}, {7, 65, 129},
                                    {37, 131, 300}, {300, 70, 257}, {13, 1030, 40}, {260, 33, 7}};
    int saved = td_wk_get_direct_rows();
    for (int path = 0; path < 2; path++) { /* direct, then packed past TD_WK_GEMV_ROWS */
        td_wk_set_direct_rows(path == 0 ? saved : TD_WK_GEMV_ROWS);
        for (int v = 0; v < nv; v++)
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                for (int wt = 0; wt < 2; wt++)
                    for (int mode = 0; mode < 4; mode++)
                        gemm_case(ops[v], 1 + (int)((s + (size_t)mode) % 2), TD_WK_GEMM_OWN,
                                  shapes[s][0], shapes[s][1], shapes[s][2], (enum td_wtype)wt,
                                  mode & 1, mode >> 1);
    }
    td_wk_set_direct_rows(saved);
    /* the BLAS path (F16 through a 4096-float slab: several slabs) */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int wt = 0; wt < 2; wt++)
            gemm_case(td_wk_ops_best(), 2, TD_WK_GEMM_BLAS, shapes[s][0], shapes[s][1],
                      shapes[s][2], (enum td_wtype)wt, (int)(s % 2), (int)(s / 2 % 2));
}

static void test_gemm_multi(void **state)
{
    (void)state;
    ctx_holder h;
    ctx_open(&h, td_wk_ops_best(), 2, 16, 16, 16, TD_WK_GEMM_OWN, 0);
    int k = 45;
    for (int m = 1; m <= 70; m += 23) {
        float *a = frand((size_t)m * k, 1.0);
        double *e1, *e2;
        void *w1 = wrand(TD_WT_F16, 50 * (size_t)k, &e1);
        void *w2 = wrand(TD_WT_F16, 90 * (size_t)k, &e2);
        float *b1 = frand(50, 1.0);
        float *c1 = malloc((size_t)m * 50 * sizeof *c1), *c2 = malloc((size_t)m * 90 * sizeof *c2);
        td_wk_gemm_job jobs[2] = {{50, w1, (size_t)k, b1, c1, 50}, {90, w2, (size_t)k, NULL, c2, 90}};
        td_wk_gemm_multi(&h.ctx, m, k, a, (size_t)k, TD_WT_F16, 2, jobs, 0);
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < 50; j++) {
                double r = b1[j];
                for (int kk = 0; kk < k; kk++)
                    r += a[i * k + kk] * e1[j * k + kk];
                assert_true(fabs(c1[i * 50 + j] - r) < 1e-4);
            }
            for (int j = 0; j < 90; j++) {
                double r = 0;
                for (int kk = 0; kk < k; kk++)
                    r += a[i * k + kk] * e2[j * k + kk];
                assert_true(fabs(c2[i * 90 + j] - r) < 1e-4);
            }
        }
        free(a);
        wfree(w1);
        wfree(w2);
        free(e1);
        free(e2);
        free(b1);
        free(c1);
        free(c2);
    }
    ctx_close(&h);
}

static void test_conv3(void **state)
{
    (void)state;
    const td_wk_ops *ops[TD_WK_N_ISA];
    int nv = variants(ops);
    int c_in = 13, c_out = 70, t_in = 41;
    int saved = td_wk_get_direct_rows();
    for (int v = 0; v < nv; v++) {
        for (int stride = 1; stride <= 2; stride++) {
            td_wk_set_direct_rows(stride == 1 ? saved : TD_WK_GEMV_ROWS); /* both GEMMs */
            for (int wt = 0; wt < 4; wt++) { /* F32, F16; then both with BLAS */
                enum td_wk_gemm_impl impl = wt >= 2 ? TD_WK_GEMM_BLAS : TD_WK_GEMM_OWN;
                ctx_holder h;
                ctx_open(&h, ops[v], 2, 16, 16, 16, impl, impl == TD_WK_GEMM_BLAS ? 4096 : 0);
                int n_out = (t_in + 2 - 3) / stride + 1; /* padding 1 */
                float *x = frand((size_t)t_in * c_in, 1.0);  /* [t][i] */
                float *xp = calloc((size_t)(t_in + 3) * c_in, sizeof *xp);
                memcpy(xp + c_in, x, (size_t)t_in * c_in * sizeof *x);
                double *exact;
                void *w = wrand((enum td_wtype)(wt % 2), (size_t)3 * c_in * c_out, &exact);
                float *bias = frand((size_t)c_out, 1.0);
                float *wperm = malloc((size_t)3 * c_in * c_out * sizeof *wperm);
                size_t ldo = (size_t)c_out + 1;
                float *out = malloc((size_t)n_out * ldo * sizeof *out);
                td_wk_conv3(&h.ctx, n_out, stride, c_in, c_out, xp, w, (enum td_wtype)(wt % 2), bias,
                            wperm, out, ldo);
                for (int t = 0; t < n_out; t++)
                    for (int o = 0; o < c_out; o++) {
                        double r = bias[o], mag = fabs(r);
                        for (int i = 0; i < c_in; i++)
                            for (int kk = 0; kk < 3; kk++) {
                                int src = stride * t + kk - 1; /* padding 1 */
                                if (src < 0 || src >= t_in)
                                    continue;
                                double tt = exact[((size_t)o * c_in + i) * 3 + kk] * x[src * c_in + i];
                                r += tt;
                                mag += fabs(tt);
                            }
                        double got = out[(size_t)t * ldo + o];
                        if (fabs(got - r) > 2e-6 * mag) {
                            print_error("%s conv stride %d wt %d [%d][%d]: %g vs %g\n", ops[v]->name,
                                        stride, wt, t, o, got, r);
                            fail();
                        }
                    }
                free(x);
                free(xp);
                wfree(w);
                free(exact);
                free(bias);
                free(wperm);
                free(out);
                ctx_close(&h);
            }
        }
    }
    td_wk_set_direct_rows(saved);
}

/* Reference attention of one head: rows of q against keys [0, nk). */
static void attn_ref(const float *q, const float *k, const float *v, size_t ld, int col0, int d,
                     int nk, double *out)
{
    double *s = malloc((size_t)nk * sizeof *s), mx = -INFINITY, sum = 0;
    for (int j = 0; j < nk; j++) {
        double t = 0;
        for (int dd = 0; dd < d; dd++)
            t += (double)q[col0 + dd] * k[(size_t)j * ld + col0 + dd];
        s[j] = t / sqrt((double)d);
        mx = s[j] > mx ? s[j] : mx;
    }
    for (int j = 0; j < nk; j++) {
        s[j] = exp(s[j] - mx);
        sum += s[j];
    }
    for (int dd = 0; dd < d; dd++) {
        double o = 0;
        for (int j = 0; j < nk; j++)
            o += s[j] * v[(size_t)j * ld + col0 + dd];
        out[dd] = o / sum;
    }
    free(s);
}

static void test_enc_attn(void **state)
{
    (void)state;
    const td_wk_ops *ops[TD_WK_N_ISA];
    int nv = variants(ops);
    static const int cfg[][3] = {{70, 96, 3}, {131, 64, 1}, {64, 128, 2}}; /* n, n_state, heads */
    for (int v = 0; v < nv; v++) {
        for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
            int n = cfg[c][0], ns = cfg[c][1], nh = cfg[c][2], d = ns / nh;
            ctx_holder h;
            ctx_open(&h, ops[v], 1 + (int)(c % 2), n, 16, d, TD_WK_GEMM_OWN, 0);
            float *q = frand((size_t)n * ns, 2.0), *k = frand((size_t)n * ns, 2.0);
            float *vv = frand((size_t)n * ns, 1.0), *out = malloc((size_t)n * ns * sizeof *out);
            size_t af = td_wk_enc_attn_floats(n, ns, nh);
            float *ka = malloc(af * sizeof *ka), *vta = malloc(af * sizeof *vta);
            td_wk_enc_attn(&h.ctx, n, ns, nh, q, k, vv, ka, vta, out);
            double ref[128];
            for (int r = 0; r < n; r++)
                for (int hh = 0; hh < nh; hh++) {
                    attn_ref(q + (size_t)r * ns, k, vv, (size_t)ns, hh * d, d, n, ref);
                    for (int dd = 0; dd < d; dd++) {
                        double got = out[(size_t)r * ns + hh * d + dd];
                        if (fabs(got - ref[dd]) > 1e-5) {
                            print_error("%s enc_attn n %d d %d row %d head %d [%d]: %g vs %g\n",
                                        ops[v]->name, n, d, r, hh, dd, got, ref[dd]);
                            fail();
                        }
                    }
                }
            free(q);
            free(k);
            free(vv);
            free(out);
            free(ka);
            free(vta);
            ctx_close(&h);
        }
    }
}

/* One td_wk_dec_attn call against attn_ref: ng groups, group g with
 * rows[g] query rows and keys0[g] keys before its first row (causal) or in
 * all (cross). ragged: through the g_row0/g_rows/g_keys0 arrays (rows of
 * the groups packed one after another, as the CPU backend lays out a
 * ragged batch), else the uniform fields (all rows[] and keys0[] equal). */
static void dec_attn_case(const td_wk_ops *ops, int threads, int ng, const int *rows,
                          const int *keys0, int nh, int d, int causal, int half, int ragged,
                          const char *what)
{
    int ns = nh * d, max_total = 1, n_rows = 0;
    int row0[8];
    assert_true(ng <= 8);
    for (int g = 0; g < ng; g++) {
        int tot = causal ? keys0[g] + rows[g] : keys0[g];
        max_total = tot > max_total ? tot : max_total;
        row0[g] = n_rows;
        n_rows += rows[g];
    }
    int cap = (max_total + TD_WK_NR - 1) / TD_WK_NR * TD_WK_NR;
    ctx_holder h;
    ctx_open(&h, ops, threads, 16, max_total, d, TD_WK_GEMM_OWN, 0);
    size_t hf = td_wk_kv_head_floats(cap, d);
    float *ptmp = malloc((size_t)cap * sizeof *ptmp);
    float **kv = malloc((size_t)ng * sizeof *kv);
    float **keys = malloc((size_t)ng * sizeof *keys), **vals = malloc((size_t)ng * sizeof *vals);
    for (int g = 0; g < ng; g++) {
        int nk_total = causal ? keys0[g] + rows[g] : keys0[g];
        kv[g] = malloc((size_t)nh * hf * sizeof(float));
        for (size_t i = 0; i < (size_t)nh * hf; i++)
            kv[g][i] = NAN; /* unwritten positions must never be read */
        keys[g] = frand((size_t)(nk_total ? nk_total : 1) * ns, 2.0);
        vals[g] = frand((size_t)(nk_total ? nk_total : 1) * ns, 1.0);
        for (int hh = 0; hh < nh; hh++) {
            float *head = kv[g] + (size_t)hh * hf;
            if (causal) { /* a cache filled position by position */
                for (int p = 0; p < nk_total; p++)
                    td_wk_kv_put(head, cap, d, p, keys[g] + (size_t)p * ns + hh * d,
                                 vals[g] + (size_t)p * ns + hh * d);
            } else {
                td_wk_kv_pack(head, cap, d, nk_total, keys[g], vals[g], (size_t)ns, hh * d, ptmp);
            }
        }
    }
    size_t ld = (size_t)ns + 3;
    float *q = frand((size_t)n_rows * ld, 2.0);
    float *out = malloc((size_t)n_rows * ld * sizeof *out);
    td_wk_dec_attn_args a = {.n_groups = ng, .rows_per_group = rows[0], .n_head = nh, .d = d,
                             .cap = cap, .causal = causal, .n_keys0 = keys0[0], .kv = kv,
                             .q = q, .out = out, .ld = ld, .kvh = NULL};
    if (ragged) {
        a.g_row0 = row0;
        a.g_rows = rows;
        a.g_keys0 = keys0;
        a.rows_per_group = -1; /* ignored with the arrays: a use would show */
        a.n_keys0 = -1;
    }
    uint16_t **kvh = NULL;
    if (half) { /* the cross-attention layout: keys and values rounded to F16 */
        kvh = malloc((size_t)ng * sizeof *kvh);
        float *tmp = malloc((size_t)cap * sizeof *tmp);
        for (int g = 0; g < ng; g++) {
            int nk_total = keys0[g];
            kvh[g] = malloc((size_t)nh * hf * sizeof(uint16_t));
            for (size_t i = 0; i < (size_t)nk_total * ns; i++) {
                keys[g][i] = td_wk_f16_to_f32(td_wk_f32_to_f16(keys[g][i]));
                vals[g][i] = td_wk_f16_to_f32(td_wk_f32_to_f16(vals[g][i]));
            }
            for (int hh = 0; hh < nh; hh++)
                td_wk_kv_pack_f16(ops, kvh[g] + (size_t)hh * hf, cap, d, nk_total, keys[g],
                                  vals[g], (size_t)ns, hh * d, tmp);
        }
        free(tmp);
        a.kv = NULL;
        a.kvh = (const uint16_t *const *)kvh;
    }
    td_wk_dec_attn(&h.ctx, &a);
    double ref[128];
    for (int g = 0; g < ng; g++)
        for (int t = 0; t < rows[g]; t++)
            for (int hh = 0; hh < nh; hh++) {
                int nk = causal ? keys0[g] + t + 1 : keys0[g];
                const float *qr = q + ((size_t)row0[g] + t) * ld;
                /* reference over unpadded rows [nk][ns] */
                attn_ref(qr, keys[g], vals[g], (size_t)ns, hh * d, d, nk, ref);
                for (int dd = 0; dd < d; dd++) {
                    double got = out[((size_t)row0[g] + t) * ld + hh * d + dd];
                    if (!(fabs(got - ref[dd]) <= 1e-5)) {
                        print_error("%s dec_attn %s%s g %d t %d h %d [%d]: %g vs %g\n", ops->name,
                                    what, half ? " (F16 K/V)" : "", g, t, hh, dd, got, ref[dd]);
                        fail();
                    }
                }
            }
    for (int g = 0; g < ng; g++) {
        free(kv[g]);
        free(keys[g]);
        free(vals[g]);
        if (kvh)
            free(kvh[g]);
    }
    free(kvh);
    free(kv);
    free(ptmp);
    free(keys);
    free(vals);
    free(q);
    free(out);
    ctx_close(&h);
}

static void test_dec_attn(void **state)
{
    (void)state;
    const td_wk_ops *ops[TD_WK_N_ISA];
    int nv = variants(ops);
    /* uniform groups: groups, rows per group, heads, d, n_keys0, causal */
    static const int cfg[][6] = {{3, 1, 2, 32, 9, 1},  {1, 5, 3, 64, 70, 0}, {2, 50, 2, 40, 0, 1},
                                 {1, 7, 1, 80, 130, 1}, {4, 2, 2, 16, 1, 0}};
    /* ragged groups (a batch of sequences at their own positions, or of
     * windows' cross K/V): rows and keys0 per group, heads, d, causal */
    static const struct {
        int ng, rows[5], keys0[5], nh, d, causal;
    } rg[] = {
        {4, {1, 5, 1, 18}, {9, 0, 40, 3}, 2, 32, 1},  /* steps, a prompt, a long query block */
        {3, {2, 1, 7}, {70, 33, 130}, 3, 24, 0},       /* cross-attention, windows of other lengths */
        {5, {1, 1, 1, 1, 1}, {0, 17, 5, 64, 16}, 1, 64, 1}, /* beams at ragged positions */
        {2, {3, 40}, {200, 1}, 2, 16, 0},
    };
    for (int v = 0; v < nv; v++) {
        for (size_t cc = 0; cc < 2 * (sizeof cfg / sizeof cfg[0]); cc++) {
            /* each configuration with F32 K/V, then the non-causal ones with F16 */
            size_t c = cc % (sizeof cfg / sizeof cfg[0]);
            int half = cc >= sizeof cfg / sizeof cfg[0];
            if (half && cfg[c][5])
                continue;
            int ng = cfg[c][0], rows[8], keys0[8];
            for (int g = 0; g < ng; g++) {
                rows[g] = cfg[c][1];
                keys0[g] = cfg[c][4];
            }
            char what[32];
            snprintf(what, sizeof what, "cfg %zu", c);
            dec_attn_case(ops[v], 1 + (int)(c % 2), ng, rows, keys0, cfg[c][2], cfg[c][3],
                          cfg[c][5], half, 0, what);
            /* the same through the ragged arrays */
            snprintf(what, sizeof what, "cfg %zu as ragged", c);
            dec_attn_case(ops[v], 1 + (int)(c % 2), ng, rows, keys0, cfg[c][2], cfg[c][3],
                          cfg[c][5], half, 1, what);
        }
        for (size_t cc = 0; cc < 2 * (sizeof rg / sizeof rg[0]); cc++) {
            size_t c = cc % (sizeof rg / sizeof rg[0]);
            int half = cc >= sizeof rg / sizeof rg[0];
            if (half && rg[c].causal)
                continue;
            char what[32];
            snprintf(what, sizeof what, "ragged %zu", c);
            dec_attn_case(ops[v], 1 + (int)(c % 2), rg[c].ng, rg[c].rows, rg[c].keys0, rg[c].nh,
                          rg[c].d, rg[c].causal, half, 1, what);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Pool                                                                 */

typedef struct pool_probe {
    _Atomic int calls;
    _Atomic int seen[8];
    int nth_seen;
} pool_probe;

static void pool_fn(void *arg, int ith, int nth)
{
    pool_probe *p = arg;
    atomic_fetch_add(&p->calls, 1);
    atomic_fetch_add(&p->seen[ith], 1);
    p->nth_seen = nth;
}

static void test_pool(void **state)
{
    (void)state;
    td_error err;
    td_wk_pool *p;
    assert_int_equal(td_wk_pool_create(0, &p, &err), TD_EINVAL);
    for (int n = 1; n <= 4; n++) {
        assert_int_equal(td_wk_pool_create(n, &p, &err), TD_OK);
        assert_int_equal(td_wk_pool_size(p), n);
        pool_probe pr;
        memset(&pr, 0, sizeof pr);
        for (int r = 0; r < 2000; r++)
            td_wk_pool_run(p, pool_fn, &pr);
        /* after the spin window the workers sleep; a run must wake them */
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
        td_wk_pool_run(p, pool_fn, &pr);
        assert_int_equal(atomic_load(&pr.calls), 2001 * n);
        for (int i = 0; i < n; i++)
            assert_int_equal(atomic_load(&pr.seen[i]), 2001);
        assert_int_equal(pr.nth_seen, n);
        td_wk_pool_free(p);
    }
}

int main(void)
{
    const td_wk_ops *ops[TD_WK_N_ISA];
    int nv = variants(ops);
    printf("kernel variants on this CPU:");
    for (int i = 0; i < nv; i++)
        printf(" %s", ops[i]->name);
    printf(" (best: %s)\n", td_wk_ops_best()->name);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_all_values), cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_f16_variants),   cmocka_unit_test(test_f32_to_f16_variants),
        cmocka_unit_test(test_mk),
        cmocka_unit_test(test_pack_b),         cmocka_unit_test(test_gemv),
        cmocka_unit_test(test_layernorm),      cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_softmax),        cmocka_unit_test(test_colexp_dot),
        cmocka_unit_test(test_gemm),           cmocka_unit_test(test_gemm_multi),
        cmocka_unit_test(test_conv3),          cmocka_unit_test(test_enc_attn),
        cmocka_unit_test(test_dec_attn),       cmocka_unit_test(test_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
