/*
 * q8.c: the int8 path's portable kernels (the reference the VNNI ones are
 * tested against), weight quantization, and the product driver that
 * quantizes activations and splits the work over the pool (see q8.h).
 * The AVX-512 VNNI kernels live in k_q8_vnni.c.
 */
#include "whisper/backend/cpu/q8.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "whisper/backend/cpu/k_simd.h"

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

/* x rounded and clamped to 0..255 (NaN gives 0, as the SIMD conversion's
 * "integer indefinite" does after its clamp). */
static uint8_t quant_u8_one(float x)
{
    if (!(x >= 0.0f))
        return 0;
    if (x > 255.0f)
        return 255;
    return (uint8_t)round_even(x);
}

static float quant_row_scalar(const float *x, int k, uint8_t *dst)
{
    float amax = 0.0f;
    int nan = 0; /* a NaN anywhere makes the row zeros (q8.h) */
    for (int t = 0; t < k; t++) {
        float v = fabsf(x[t]);
        nan |= v != v;
        amax = v > amax ? v : amax;
    }
    if (nan || !(amax >= TD_Q8_TINY) || !isfinite(amax)) {
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

static float quant_row_u8_scalar(const float *x, int k, uint8_t *dst)
{
    float amax = 0.0f;
    int nan = 0;
    for (int t = 0; t < k; t++) {
        nan |= x[t] != x[t];
        amax = x[t] > amax ? x[t] : amax;
    }
    if (nan || !(amax >= TD_Q8_TINY) || !isfinite(amax)) {
        memset(dst, 0, (size_t)k);
        return 0.0f;
    }
    float inv = 255.0f / amax;
    for (int t = 0; t < k; t++) {
        float v = x[t] * inv;
        dst[t] = quant_u8_one(v);
    }
    return amax / 255.0f;
}

static float softmax_u8_scalar(float *x, int n, int n4, uint8_t *dst)
{
    float mx = -INFINITY;
    for (int t = 0; t < n; t++)
        mx = x[t] > mx ? x[t] : mx;
    float sum = 0.0f;
    for (int t = 0; t < n; t++) {
        x[t] = expf(x[t] - mx);
        sum += x[t];
        float v = x[t] * 255.0f;
        dst[t] = quant_u8_one(v);
    }
    memset(dst + n, 0, (size_t)(n4 - n));
    return 1.0f / (255.0f * sum);
}

static const td_q8_ops ops_scalar = {
    .name = "scalar",
    .mk = mk_scalar,
    .mk1x4 = mk1x4_scalar,
    .quant_row_u8 = quant_row_u8_scalar,
    .softmax_u8 = softmax_u8_scalar,
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

/* Point dst's parts into mem (td_q8_weight_bytes(n, k) bytes). */
static void weight_carve(void *mem, int n, int k, td_q8_weight *dst)
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
}

/* Output j of d from k floats (row NULL: a padding output, all zero),
 * quantized by ops->quant_row, whose rule is the weights' too (q8.h):
 * its bytes are q + 128, i.e. q with the top bit flipped. tmp: k bytes. */
static void weight_row(const td_q8_ops *ops, td_q8_weight *d, int j, const float *row,
                       uint8_t *tmp)
{
    int k = d->k, lane = j % TD_Q8_NR;
    int8_t *panel = d->q + (size_t)(j / TD_Q8_NR) * panel_bytes(k);
    float s = 0.0f;
    if (row)
        s = ops->quant_row(row, k, tmp);
    else
        memset(tmp, 128, (size_t)k);
    uint32_t total = 0;
    for (int t = 0; t < k; t++)
        total += tmp[t];
    for (int g = 0; g < k / 4; g++) {
        uint32_t w;
        memcpy(&w, tmp + 4 * g, 4);
        w ^= 0x80808080u;
        memcpy(panel + ((size_t)g * TD_Q8_NR + (size_t)lane) * 4, &w, 4);
    }
    d->scale[j] = s;
    d->bsum[j] = 128 * ((int32_t)total - 128 * k);
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
    uint8_t *tmp = (uint8_t *)(row + k);
    const td_q8_ops *ops = td_q8_ops_best();
    for (int p = p0; p < p1; p++) {
        for (int jj = 0; jj < TD_Q8_NR; jj++) {
            int j = p * TD_Q8_NR + jj;
            if (j >= d->n) {
                weight_row(ops, d, j, NULL, tmp);
                continue;
            }
            if (wi->wt == TD_WT_F16)
                wi->ctx->ops->f16_to_f32((const uint16_t *)wi->w + (size_t)j * wi->ldw, row,
                                         (size_t)k);
            else
                memcpy(row, (const float *)wi->w + (size_t)j * wi->ldw, (size_t)k * sizeof(float));
            weight_row(ops, d, j, row, tmp);
        }
    }
}

void td_q8_weight_init(td_wk_ctx *ctx, const void *w, enum td_wtype wt, size_t ldw, int n, int k,
                       void *mem, td_q8_weight *dst)
{
    weight_carve(mem, n, k, dst);
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

/* ------------------------------------------------------------------ */
/* Encoder self-attention                                               */
/*
 * Per head h (d = n_state / n_head <= NR, a multiple of 4), prepared once
 * per call into work, one head per task:
 *   K_h   as a weight of n outputs (keys) over d inputs,
 *   V_h^T as a weight of d outputs over n4 inputs (keys, zero past n),
 *   Q_h   as activation panels of n rows over d, its scales times 1/sqrt d.
 * Then one task per (head, block of ATT_QB queries): the scores S =
 * Q K^T ([ATT_QB][npad] floats in the thread's scratch), an F32 softmax
 * per row, the probabilities quantized as unsigned bytes, and O = P V
 * straight into out.
 */

#define ATT_QB 48 /* queries per task: 8 micro-tile rows */

static int att_n4(int n)
{
    return (n + 3) / 4 * 4;
}

static size_t att_head_bytes(int n, int d)
{
    return td_q8_weight_bytes(n, d) + td_q8_weight_bytes(d, att_n4(n)) + td_q8_act_bytes(n, d);
}

size_t td_q8_enc_attn_bytes(int n, int n_state, int n_head)
{
    return (size_t)n_head * att_head_bytes(n, n_state / n_head);
}

size_t td_q8_enc_attn_scratch_floats(int n)
{
    size_t n4 = (size_t)att_n4(n), npad = rnd((size_t)n, TD_Q8_NR);
    /* compute: scores, P panels (bytes), P scales, a row of bytes */
    size_t run = ATT_QB * npad + ATT_QB * n4 / 4 + ATT_QB + n4 / 4 + 64;
    /* prepare: V_h^T as floats [NR][n4 + NR], a row of bytes */
    size_t prep = TD_Q8_NR * (n4 + TD_Q8_NR) + n4 / 4 + 64;
    return run > prep ? run : prep;
}

typedef struct q8_attn {
    td_wk_ctx *ctx;
    const td_q8_ops *ops;
    int n, ns, nh, d, n4;
    const float *q, *k, *v;
    unsigned char *work;
    float *out;
    _Atomic int next;
    int n_tasks;
} q8_attn;

typedef struct att_head {
    td_q8_weight kw, vw;
    unsigned char *qact;
} att_head;

static void att_parts(const q8_attn *a, int h, att_head *hd)
{
    unsigned char *p = a->work + (size_t)h * att_head_bytes(a->n, a->d);
    weight_carve(p, a->n, a->d, &hd->kw);
    p += td_q8_weight_bytes(a->n, a->d);
    weight_carve(p, a->d, a->n4, &hd->vw);
    p += td_q8_weight_bytes(a->d, a->n4);
    hd->qact = p;
}

/* Row r (of an MR group) of an activation panel over kq groups of 4. */
static void act_put_row(uint8_t *panel, int r, const uint8_t *row, int kq)
{
    for (int q = 0; q < kq; q++)
        memcpy(panel + ((size_t)q * TD_Q8_MR + (size_t)r) * 4, row + (size_t)q * 4, 4);
}

static void att_prep_task(void *arg, int ith, int nth)
{
    q8_attn *a = arg;
    (void)nth;
    const td_wk_ops *fops = a->ctx->ops;
    int n = a->n, d = a->d, n4 = a->n4;
    float *vt = thread_floats(a->ctx, ith);                     /* [NR][n4 + NR] */
    size_t ldv = (size_t)n4 + TD_Q8_NR;
    uint8_t *tmp = (uint8_t *)(vt + (size_t)TD_Q8_NR * ldv);
    float inv_sqrt_d = 1.0f / sqrtf((float)d);
    for (;;) {
        int h = atomic_fetch_add(&a->next, 1);
        if (h >= a->nh)
            return;
        att_head hd;
        att_parts(a, h, &hd);
        /* keys: one weight row each */
        for (int j = 0; j < hd.kw.n_panels * TD_Q8_NR; j++)
            weight_row(a->ops, &hd.kw, j, j < n ? a->k + (size_t)j * a->ns + (size_t)h * d : NULL,
                       tmp);
        /* V_h^T, 64 keys at a time transposed in registers (pack_b), then
         * one weight row per dimension */
        for (int t0 = 0; t0 < n; t0 += TD_Q8_NR) {
            int nn = n - t0 < TD_Q8_NR ? n - t0 : TD_Q8_NR;
            /* [d][NR] block: dim i, key t0 + c at vt[i * ldv + t0 + c] */
            float blk[TD_Q8_NR * TD_Q8_NR];
            fops->pack_b(a->v + (size_t)t0 * a->ns + (size_t)h * d, TD_WT_F32, (size_t)a->ns, nn,
                         d, blk);
            for (int i = 0; i < d; i++)
                memcpy(vt + (size_t)i * ldv + t0, blk + (size_t)i * TD_Q8_NR,
                       (size_t)nn * sizeof(float));
        }
        for (int i = 0; i < d; i++) {
            for (int t = n; t < n4; t++)
                vt[(size_t)i * ldv + (size_t)t] = 0.0f;
        }
        for (int i = 0; i < hd.vw.n_panels * TD_Q8_NR; i++)
            weight_row(a->ops, &hd.vw, i, i < d ? vt + (size_t)i * ldv : NULL, tmp);
        /* queries: activation panels, scales including 1/sqrt(d) */
        float *sa = act_scales(hd.qact, n, d);
        int groups = (n + TD_Q8_MR - 1) / TD_Q8_MR;
        for (int gi = 0; gi < groups; gi++)
            for (int r = 0; r < TD_Q8_MR; r++) {
                int i = gi * TD_Q8_MR + r;
                if (i < n) {
                    sa[i] = a->ops->quant_row(a->q + (size_t)i * a->ns + (size_t)h * d, d, tmp) *
                            inv_sqrt_d;
                } else {
                    memset(tmp, 128, (size_t)d);
                    sa[i] = 0.0f;
                }
                act_put_row(act_panel(hd.qact, d, gi), r, tmp, d / 4);
            }
    }
}

static void att_task(void *arg, int ith, int nth)
{
    q8_attn *a = arg;
    (void)nth;
    int n = a->n, d = a->d, n4 = a->n4;
    size_t npad = rnd((size_t)n, TD_Q8_NR);
    float *sc = thread_floats(a->ctx, ith);                 /* [ATT_QB][npad] */
    uint8_t *pp = (uint8_t *)(sc + ATT_QB * npad);          /* [ATT_QB / MR][n4 / 4][MR][4] */
    float *ps = (float *)(pp + (size_t)ATT_QB * (size_t)n4); /* [ATT_QB] */
    uint8_t *tmp = (uint8_t *)(ps + ATT_QB);
    int n_qb = (n + ATT_QB - 1) / ATT_QB;
    for (;;) {
        int t = atomic_fetch_add(&a->next, 1);
        if (t >= a->n_tasks)
            return;
        int h = t / n_qb, r0 = (t % n_qb) * ATT_QB;
        int rows = n - r0 < ATT_QB ? n - r0 : ATT_QB;
        att_head hd;
        att_parts(a, h, &hd);
        const float *qs = act_scales(hd.qact, n, d);
        int g0 = r0 / TD_Q8_MR, ng = (rows + TD_Q8_MR - 1) / TD_Q8_MR;
        /* scores */
        for (int p = 0; p < hd.kw.n_panels; p++)
            for (int g = 0; g < ng; g++) {
                int i0 = (g0 + g) * TD_Q8_MR;
                int mr = n - i0 < TD_Q8_MR ? n - i0 : TD_Q8_MR;
                a->ops->mk(d / 4, act_panel(hd.qact, d, g0 + g),
                           hd.kw.q + (size_t)p * panel_bytes(d),
                           sc + (size_t)g * TD_Q8_MR * npad + (size_t)p * TD_Q8_NR, npad, mr,
                           TD_Q8_NR, 0, qs + i0, hd.kw.scale + (size_t)p * TD_Q8_NR,
                           hd.kw.bsum + (size_t)p * TD_Q8_NR, NULL);
            }
        /* probabilities, quantized row by row into P panels */
        for (int g = 0; g < ng; g++)
            for (int r = 0; r < TD_Q8_MR; r++) {
                int i = g * TD_Q8_MR + r;
                if (i < rows) {
                    ps[i] = a->ops->softmax_u8(sc + (size_t)i * npad, n, n4, tmp);
                } else {
                    memset(tmp, 0, (size_t)n4);
                    ps[i] = 0.0f;
                }
                act_put_row(pp + (size_t)g * TD_Q8_MR * (size_t)n4, r, tmp, n4 / 4);
            }
        /* O = P V: d outputs of each query, into out */
        for (int g = 0; g < ng; g++) {
            int i0 = g * TD_Q8_MR;
            int mr = rows - i0 < TD_Q8_MR ? rows - i0 : TD_Q8_MR;
            a->ops->mk(n4 / 4, pp + (size_t)g * TD_Q8_MR * (size_t)n4, hd.vw.q,
                       a->out + (size_t)(r0 + i0) * a->ns + (size_t)h * d, (size_t)a->ns, mr, d, 0,
                       ps + i0, hd.vw.scale, NULL, NULL);
        }
    }
}

int td_q8_enc_attn(td_wk_ctx *ctx, const td_q8_ops *ops, int n, int n_state, int n_head,
                   const float *q, const float *k, const float *v, void *work, float *out)
{
    int d = n_state / n_head;
    if (d > TD_Q8_NR || d % 4 != 0 || n < 1 ||
        ctx->scratch_floats < td_q8_enc_attn_scratch_floats(n))
        return 0;
    q8_attn a = {.ctx = ctx, .ops = ops, .n = n, .ns = n_state, .nh = n_head, .d = d,
                 .n4 = att_n4(n), .q = q, .k = k, .v = v, .work = work, .out = out};
    atomic_store(&a.next, 0);
    td_wk_pool_run(ctx->pool, att_prep_task, &a);
    a.n_tasks = n_head * ((n + ATT_QB - 1) / ATT_QB);
    atomic_store(&a.next, 0);
    td_wk_pool_run(ctx->pool, att_task, &a);
    return 1;
}
