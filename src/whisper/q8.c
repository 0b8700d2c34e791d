/*
 * q8.c: the int8 path's portable kernels (the reference the VNNI ones are
 * tested against), weight quantization, and the product driver that
 * quantizes activations and splits the work over the pool (see q8.h).
 * The AVX-512 VNNI kernels live in k_q8_vnni.c.
 */
#include "whisper/q8.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "whisper/k_simd.h"

#if TD_WK_X86
extern const td_q8_ops td_q8_ops_vnni;
#endif

#define ALIGN_B 64

static size_t rnd(size_t x, size_t to)
{
    return (x + to - 1) / to * to;
}

/* ------------------------------------------------------------------ */
/* Scalar kernels                                                       */

static void mk_scalar(int kq, const uint8_t *ap, const int8_t *bp, float *c, size_t ldc, int mr,
                      int nr, int load, const float *sa, const float *sb, const int32_t *bsum,
                      const float *bias)
{
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            int32_t acc = 0;
            for (int g = 0; g < kq; g++) {
                const uint8_t *a = ap + ((size_t)g * TD_Q8_MR + (size_t)i) * 4;
                const int8_t *b = bp + ((size_t)g * TD_Q8_NR + (size_t)j) * 4;
                acc += (int32_t)a[0] * b[0] + (int32_t)a[1] * b[1] + (int32_t)a[2] * b[2] +
                       (int32_t)a[3] * b[3];
            }
            if (bsum)
                acc -= bsum[j];
            float v = sa[i] * sb[j] * (float)acc + (bias ? bias[j] : 0.0f);
            float *ci = c + (size_t)i * ldc + (size_t)j;
            *ci = load ? *ci + v : v;
        }
}

static void mk1x4_scalar(int kq, const uint8_t *ap, const int8_t *bp, size_t pstride, float *c,
                         int load, float sa, const float *sb, const int32_t *bsum,
                         const float *bias)
{
    for (int q = 0; q < 4; q++) {
        size_t o = (size_t)q * TD_Q8_NR;
        mk_scalar(kq, ap, bp + (size_t)q * pstride, c + o, 0, 1, TD_Q8_NR, load, &sa, sb + o,
                  bsum ? bsum + o : NULL, bias ? bias + o : NULL);
    }
}

/* Round to nearest, ties to even (the SIMD conversion's rounding), for
 * |x| < 2^22: adding 1.5 * 2^23 leaves no fraction bits, so the addition
 * itself rounds (in the default mode); lrintf is a libm call in the
 * weight quantization's inner loop. */
static int32_t round_even(float x)
{
    return (int32_t)((x + 12582912.0f) - 12582912.0f);
}

/* x rounded and clamped to [-127, 127]; NaN gives -127, as the SIMD
 * conversion's "integer indefinite" does after its clamp. */
static int32_t quant_one(float x)
{
    if (!(x >= -127.0f))
        return -127;
    if (x > 127.0f)
        return 127;
    return round_even(x);
}

static float quant_row_scalar(const float *x, int k, uint8_t *dst)
{
    float amax = 0.0f;
    for (int t = 0; t < k; t++) {
        float v = fabsf(x[t]);
        amax = v > amax ? v : amax;
    }
    if (!(amax >= TD_Q8_TINY) || !isfinite(amax)) {
        memset(dst, 128, (size_t)k);
        return 0.0f;
    }
    float inv = 127.0f / amax;
    for (int t = 0; t < k; t++) {
        int32_t q = quant_one(x[t] * inv);
        dst[t] = (uint8_t)(q + 128);
    }
    return amax / 127.0f;
}

static const td_q8_ops ops_scalar = {
    .name = "scalar",
    .mk = mk_scalar,
    .mk1x4 = mk1x4_scalar,
    .quant_row = quant_row_scalar,
};

const td_q8_ops *td_q8_ops_scalar(void)
{
    return &ops_scalar;
}

#if TD_WK_X86
static int has_vnni(void)
{
    __builtin_cpu_init();
    return td_wk_ops_get(TD_WK_AVX512) != NULL && __builtin_cpu_supports("avx512vnni");
}
#endif

int td_q8_fast(void)
{
#if TD_WK_X86
    return has_vnni();
#else
    return 0;
#endif
}

static const td_q8_ops *best_ops;
static pthread_once_t best_once = PTHREAD_ONCE_INIT;

static void pick_best(void)
{
    best_ops = &ops_scalar;
#if TD_WK_X86
    const char *env = getenv("TD_WHISPER_ISA");
    int capped = env && (strcmp(env, "scalar") == 0 || strcmp(env, "avx2") == 0);
    if (!capped && has_vnni())
        best_ops = &td_q8_ops_vnni;
#endif
}

const td_q8_ops *td_q8_ops_best(void)
{
    pthread_once(&best_once, pick_best);
    return best_ops;
}

/* ------------------------------------------------------------------ */
/* Work splitting                                                       */

/* Thread ith's share [*lo, *hi) of [0, total). */
static void split(int total, int ith, int nth, int *lo, int *hi)
{
    int per = total / nth, extra = total % nth;
    *lo = ith * per + (ith < extra ? ith : extra);
    *hi = *lo + per + (ith < extra ? 1 : 0);
}

static float *thread_floats(const td_wk_ctx *ctx, int ith)
{
    return ctx->scratch + (size_t)ith * ctx->scratch_floats;
}

/* ------------------------------------------------------------------ */
/* Weights                                                              */

static size_t panel_bytes(int k)
{
    return (size_t)k * TD_Q8_NR;
}

size_t td_q8_weight_bytes(int n, int k)
{
    size_t np = (size_t)(n + TD_Q8_NR - 1) / TD_Q8_NR;
    return rnd(np * panel_bytes(k), ALIGN_B) + 2 * rnd(np * TD_Q8_NR * 4, ALIGN_B);
}

typedef struct winit {
    td_wk_ctx *ctx;
    const void *w;
    enum td_wtype wt;
    size_t ldw;
    td_q8_weight *dst;
} winit;

static void winit_task(void *arg, int ith, int nth)
{
    winit *wi = arg;
    td_q8_weight *d = wi->dst;
    int k = d->k, p0, p1;
    split(d->n_panels, ith, nth, &p0, &p1);
    float *row = thread_floats(wi->ctx, ith);
    for (int p = p0; p < p1; p++) {
        int8_t *panel = d->q + (size_t)p * panel_bytes(k);
        for (int jj = 0; jj < TD_Q8_NR; jj++) {
            int j = p * TD_Q8_NR + jj;
            if (j >= d->n) {
                for (int t = 0; t < k; t++)
                    panel[((size_t)(t / 4) * TD_Q8_NR + (size_t)jj) * 4 + (size_t)(t % 4)] = 0;
                d->scale[j] = 0.0f;
                d->bsum[j] = 0;
                continue;
            }
            if (wi->wt == TD_WT_F16)
                wi->ctx->ops->f16_to_f32((const uint16_t *)wi->w + (size_t)j * wi->ldw, row,
                                         (size_t)k);
            else
                memcpy(row, (const float *)wi->w + (size_t)j * wi->ldw, (size_t)k * sizeof(float));
            float amax = 0.0f;
            for (int t = 0; t < k; t++) {
                float v = fabsf(row[t]);
                amax = v > amax ? v : amax;
            }
            if (!(amax >= TD_Q8_TINY) || !isfinite(amax))
                amax = 0.0f; /* counts as zeros (q8.h) */
            float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
            int32_t sum = 0;
            for (int t = 0; t < k; t++) {
                int32_t q = quant_one(row[t] * inv);
                panel[((size_t)(t / 4) * TD_Q8_NR + (size_t)jj) * 4 + (size_t)(t % 4)] = (int8_t)q;
                sum += q;
            }
            d->scale[j] = amax / 127.0f;
            d->bsum[j] = 128 * sum;
        }
    }
}

void td_q8_weight_init(td_wk_ctx *ctx, const void *w, enum td_wtype wt, size_t ldw, int n, int k,
                       void *mem, td_q8_weight *dst)
{
    size_t np = (size_t)(n + TD_Q8_NR - 1) / TD_Q8_NR;
    unsigned char *p = mem;
    dst->n = n;
    dst->k = k;
    dst->n_panels = (int)np;
    dst->q = (int8_t *)p;
    p += rnd(np * panel_bytes(k), ALIGN_B);
    dst->scale = (float *)p;
    p += rnd(np * TD_Q8_NR * 4, ALIGN_B);
    dst->bsum = (int32_t *)p;
    winit wi = {ctx, w, wt, ldw, dst};
    td_wk_pool_run(ctx->pool, winit_task, &wi);
}

/* ------------------------------------------------------------------ */
/* Activations                                                          */

size_t td_q8_act_bytes(int max_rows, int max_k)
{
    size_t rows = rnd((size_t)max_rows, TD_Q8_MR);
    return rnd(rows * (size_t)max_k, ALIGN_B) + rnd(rows * sizeof(float), ALIGN_B);
}

/* Where row group g's panel and the scales start in act. */
static uint8_t *act_panel(void *act, int k, int g)
{
    return (uint8_t *)act + (size_t)g * TD_Q8_MR * (size_t)k;
}

static float *act_scales(void *act, int m, int k)
{
    size_t rows = rnd((size_t)m, TD_Q8_MR);
    return (float *)((unsigned char *)act + rnd(rows * (size_t)k, ALIGN_B));
}

typedef struct q8_gemm {
    td_wk_ctx *ctx;
    const td_q8_ops *ops;
    int m, k;
    const float *a;
    size_t lda;
    void *act;
    int n_jobs;
    const td_q8_job *jobs;
    int acc;
    int split_rows;
    int n_units;       /* panels of all jobs, end to end */
    _Atomic int next;  /* next unit when splitting panels */
} q8_gemm;

static void quant_task(void *arg, int ith, int nth)
{
    q8_gemm *g = arg;
    int k = g->k, kq = k / 4;
    int groups = (g->m + TD_Q8_MR - 1) / TD_Q8_MR, g0, g1;
    split(groups, ith, nth, &g0, &g1);
    uint8_t *tmp = (uint8_t *)thread_floats(g->ctx, ith);
    float *sa = act_scales(g->act, g->m, k);
    for (int gi = g0; gi < g1; gi++) {
        uint8_t *panel = act_panel(g->act, k, gi);
        for (int r = 0; r < TD_Q8_MR; r++) {
            int i = gi * TD_Q8_MR + r;
            if (i < g->m) {
                sa[i] = g->ops->quant_row(g->a + (size_t)i * g->lda, k, tmp);
            } else {
                memset(tmp, 128, (size_t)k);
                sa[i] = 0.0f;
            }
            /* four k of the row are one 32-bit word of the panel */
            for (int q = 0; q < kq; q++)
                memcpy(panel + ((size_t)q * TD_Q8_MR + (size_t)r) * 4, tmp + (size_t)q * 4, 4);
        }
    }
}

/* Rows groups [g0, g1) of A against panels [p0, p1) of job jb. */
static void q8_block(const q8_gemm *g, const td_q8_job *jb, int g0, int g1, int p0, int p1)
{
    const td_q8_weight *w = jb->w;
    int k = g->k;
    const float *sa = act_scales(g->act, g->m, k);
    for (int pc = 0; pc < k; pc += TD_Q8_KC) {
        int kc = k - pc < TD_Q8_KC ? k - pc : TD_Q8_KC;
        int first = pc == 0;
        int load = g->acc || !first;
        for (int p = p0; p < p1; p++) {
            int j0 = p * TD_Q8_NR;
            int nr = w->n - j0 < TD_Q8_NR ? w->n - j0 : TD_Q8_NR;
            const int8_t *bp = w->q + (size_t)p * panel_bytes(k) + (size_t)pc * TD_Q8_NR;
            if (g->m == 1 && p + 4 <= p1 && w->n - j0 >= 4 * TD_Q8_NR) {
                g->ops->mk1x4(kc / 4, act_panel(g->act, k, 0) + (size_t)pc * TD_Q8_MR, bp,
                              panel_bytes(k), jb->c + (size_t)j0, load, sa[0], w->scale + j0,
                              first ? w->bsum + j0 : NULL, first && jb->bias ? jb->bias + j0 : NULL);
                p += 3;
                continue;
            }
            for (int gi = g0; gi < g1; gi++) {
                int i0 = gi * TD_Q8_MR;
                int mr = g->m - i0 < TD_Q8_MR ? g->m - i0 : TD_Q8_MR;
                const uint8_t *ap = act_panel(g->act, k, gi) + (size_t)pc * TD_Q8_MR;
                g->ops->mk(kc / 4, ap, bp, jb->c + (size_t)i0 * jb->ldc + (size_t)j0, jb->ldc, mr,
                           nr, load, sa + i0, w->scale + j0, first ? w->bsum + j0 : NULL,
                           first && jb->bias ? jb->bias + j0 : NULL);
            }
        }
    }
}

static void gemm_task(void *arg, int ith, int nth)
{
    q8_gemm *g = arg;
    int groups = (g->m + TD_Q8_MR - 1) / TD_Q8_MR;
    if (g->split_rows) {
        int g0, g1;
        split(groups, ith, nth, &g0, &g1);
        for (int j = 0; j < g->n_jobs; j++)
            q8_block(g, &g->jobs[j], g0, g1, 0, g->jobs[j].w->n_panels);
        return;
    }
    /* few rows: panels handed out from a counter, four at a time */
    for (;;) {
        int u0 = atomic_fetch_add(&g->next, 4);
        if (u0 >= g->n_units)
            return;
        int u1 = u0 + 4 < g->n_units ? u0 + 4 : g->n_units;
        int base = 0;
        for (int j = 0; j < g->n_jobs && base < u1; j++) {
            int np = g->jobs[j].w->n_panels;
            int a0 = u0 > base ? u0 - base : 0;
            int a1 = u1 - base < np ? u1 - base : np;
            if (a1 > a0)
                q8_block(g, &g->jobs[j], 0, groups, a0, a1);
            base += np;
        }
    }
}

void td_q8_gemm(td_wk_ctx *ctx, const td_q8_ops *ops, int m, int k, const float *a, size_t lda,
                void *act, int n_jobs, const td_q8_job *jobs, int accumulate)
{
    if (m <= 0 || n_jobs <= 0)
        return;
    q8_gemm g = {.ctx = ctx, .ops = ops, .m = m, .k = k, .a = a, .lda = lda, .act = act,
                 .n_jobs = n_jobs, .jobs = jobs, .acc = accumulate};
    for (int j = 0; j < n_jobs; j++)
        g.n_units += jobs[j].w->n_panels;
    int nth = td_wk_pool_size(ctx->pool);
    int groups = (m + TD_Q8_MR - 1) / TD_Q8_MR;
    /* Many rows: each thread takes a band of rows and every panel, so each
     * reads the weights once per band; few rows: the weights are the
     * traffic, so threads share out the panels. */
    g.split_rows = groups >= 8 * nth;
    atomic_store(&g.next, 0);
    if (groups >= nth)
        td_wk_pool_run(ctx->pool, quant_task, &g);
    else /* a decoder step: not worth waking the pool for */
        quant_task(&g, 0, 1);
    td_wk_pool_run(ctx->pool, gemm_task, &g);
}
