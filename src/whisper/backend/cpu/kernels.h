/*
 * kernels.h: the CPU backend's compute kernels, their SIMD variants, the
 * thread pool that runs them, and the drivers (GEMM, attention) built on
 * them. Internal to the Whisper CPU backend (cpu.c) and its tests.
 *
 * Variants. Every low-level kernel exists as portable C (scalar), AVX2
 * (+FMA, F16C) and AVX-512 (F, VL, BW + FMA, F16C), compiled with
 * __attribute__((target)) so that the library runs on any x86-64 (and any
 * other architecture, where only scalar is built); td_wk_ops_best() picks
 * the widest one this CPU supports, once. Tests run every variant the host
 * supports against scalar and against double-precision references.
 *
 * Layouts. Matrices are row-major floats. A linear layer's weight W is
 * [n_out][n_in] (F16 or F32, as mapped from the model file) and computes
 * C = A . W^T + bias. Two GEMMs of our own do it:
 *   - direct (ops->gemv): W read where it is mapped, F16 converted in
 *     registers, TD_WK_GEMV_ROWS rows of A per pass. For few rows (decoder
 *     tokens) it streams the weights once at memory speed (four streams
 *     at once for one or two rows); with AVX-512 it is blocked 4 weight
 *     rows x 6 A rows and also wins for many rows on AMD whenever a
 *     thread's share of W stays in cache (see kernels.c; on Intel, F16
 *     products of more than 48 rows pack);
 *   - packed, BLIS-style: A-panels (rows in groups of TD_WK_MR, [k][MR])
 *     and B-panels (columns in groups of TD_WK_NR, [k][NR], F16 converted
 *     while packing), zero-padded, so that one micro-kernel (mk) computes
 *     an MR x NR tile of C from a K-long A-panel and B-panel. It runs the
 *     attention, weights too large for the cache, and variants without a
 *     blocked gemv.
 * OpenBLAS's sgemm is the third choice (td_wk_set_gemm_impl), kept for
 * comparison: encoder ms per window, 2 threads, this 2-core Zen 4 VM:
 * tiny 216 ours / 230 OpenBLAS, base 522 / 616, small 1967 / 2333
 * (bench/whisper-cpu.sh). The attention code keeps keys and values
 * already packed (the decoder's caches and cross K/V), so decoding never
 * repacks them.
 *
 * Threads. td_wk_pool runs one function on n threads (the caller is thread
 * 0) with persistent workers that spin briefly and then sleep on a futex,
 * so that the many small steps of a decoder token cost microseconds to
 * hand out. The drivers split work themselves (rows, columns, or a task
 * counter).
 */
#ifndef TD_WHISPER_KERNELS_H
#define TD_WHISPER_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"
#include "whisper/backend.h"
#include "whisper/model.h"

/* ------------------------------------------------------------------ */
/* Tile shape shared by every variant (the packed layouts depend on it). */

#define TD_WK_MR 6         /* micro-tile rows (A-panel height) */
#define TD_WK_NR 64        /* micro-tile columns (B-panel width) */
#define TD_WK_KC 384       /* K block of the packed GEMM */
#define TD_WK_MC 72        /* rows of A packed at once (12 panels) */
#define TD_WK_NC 1024      /* columns of B packed at once (16 panels) */
#define TD_WK_GEMV_ROWS 6  /* rows of A per pass of the direct GEMM */
#define TD_WK_ATT_QB 48    /* decoder attention: query rows per task (8 A-panels) */

/* ------------------------------------------------------------------ */
/* Half precision (IEEE binary16) conversion, exact scalar versions.     */

float td_wk_f16_to_f32(uint16_t h);
uint16_t td_wk_f32_to_f16(float f); /* round to nearest even; NaN stays NaN */

/* Element i of weights as mapped from a model file. Tensor data there is
 * not aligned (the format has no padding), so scalar code reads it with
 * memcpy; SIMD code uses unaligned loads. */
static inline float td_wk_w_at(const void *w, enum td_wtype wt, size_t i)
{
    if (wt == TD_WT_F16) {
        uint16_t h;
        __builtin_memcpy(&h, (const unsigned char *)w + 2 * i, sizeof h);
        return td_wk_f16_to_f32(h);
    }
    float f;
    __builtin_memcpy(&f, (const unsigned char *)w + 4 * i, sizeof f);
    return f;
}

/* ------------------------------------------------------------------ */
/* One variant's kernels.                                                */

enum td_wk_isa {
    TD_WK_SCALAR = 0,
    TD_WK_AVX2 = 1,
    TD_WK_AVX512 = 2,
    TD_WK_N_ISA = 3,
};

typedef struct td_wk_ops {
    const char *name;  /* "scalar", "avx2", "avx512" */
    enum td_wk_isa isa;
    /* gemv is register-blocked well enough (4 weight rows x 6 A rows) to
     * beat packing for products of many rows whose weights fit in cache */
    int gemv_many_rows;

    /* dst[i] = half src[i] as float, i < n (src need not be aligned). */
    void (*f16_to_f32)(const uint16_t *src, float *dst, size_t n);
    /* dst[i] = src[i] rounded to half (nearest even, as td_wk_f32_to_f16). */
    void (*f32_to_f16)(const float *src, uint16_t *dst, size_t n);

    /* Micro-kernel: C[mr][nr] (ldc) = (load ? C : 0) + (bias ? bias[j] : 0)
     * + sum_k ap[k][i] * bp[k][j], for i < mr <= MR, j < nr <= NR.
     * ap is an A-panel (stride MR per k), bp a B-panel (stride NR). Only
     * the mr x nr corner of C is read or written. */
    void (*mk)(int kc, const float *ap, const float *bp, float *c, size_t ldc, int mr, int nr,
               int load, const float *bias);

    /* Pack B-panels from W rows n < nn, columns k < kk of W ([n][k], ldw
     * elements per row, F16 or F32, unaligned): dst holds ceil(nn / NR) panels of kk x
     * NR floats, columns past nn zero. */
    void (*pack_b)(const void *w, enum td_wtype wt, size_t ldw, int nn, int kk, float *dst);

    /* Few-row product reading W directly (no packing): for i < m <=
     * TD_WK_GEMV_ROWS, j < n: C[i][j] = (load ? C[i][j] : 0) + (bias ?
     * bias[j] : 0) + sum_k A[i][k] W[j][k]. W need not be aligned; every
     * float array (A, C, bias) must be. */
    void (*gemv)(int m, int n, int k, const float *a, size_t lda, const void *w,
                 enum td_wtype wt, size_t ldw, const float *bias, float *c, size_t ldc, int load);

    /* y = (x - mean) / sqrt(var + eps) * w + b over n elements (y may be x). */
    void (*layernorm)(int n, const float *x, const float *w, const float *b, float eps, float *y);

    /* x = x * Phi(x) (exact GELU, erf form), in place. */
    void (*gelu)(float *x, size_t n);

    /* x[0..n) = softmax(x[0..n)), in place; x[n..n_zero) = 0. */
    void (*softmax)(float *x, int n, int n_zero);

    /* Column softmax of st[rows][NR] without the division: each column j
     * becomes exp(st - max_j) and sum[j] gets its sum. */
    void (*colexp)(float *st, int rows, float *sum);

    /* sum a[i] * b[i]. */
    float (*dot)(const float *a, const float *b, int n);
} td_wk_ops;

/* The variant isa if this CPU runs it (and it was built), else NULL. */
const td_wk_ops *td_wk_ops_get(enum td_wk_isa isa);
/* The widest variant this CPU runs; TD_WHISPER_ISA=scalar|avx2|avx512 in
 * the environment caps it (for comparisons). */
const td_wk_ops *td_wk_ops_best(void);

/* ------------------------------------------------------------------ */
/* Thread pool.                                                          */

typedef struct td_wk_pool td_wk_pool;
typedef void (*td_wk_task)(void *arg, int ith, int nth);

/* n threads in all (n - 1 workers; 1 = none). Workers block every signal. */
int td_wk_pool_create(int n, td_wk_pool **out, td_error *err);
/* Run fn(arg, ith, n) on every thread, the caller as ith 0; returns when
 * all are done. */
void td_wk_pool_run(td_wk_pool *p, td_wk_task fn, void *arg);
int td_wk_pool_size(const td_wk_pool *p);
void td_wk_pool_free(td_wk_pool *p);

/* ------------------------------------------------------------------ */
/* Drivers: a context holds the variant, the pool and each thread's      */
/* scratch.                                                              */

enum td_wk_gemm_impl {
    TD_WK_GEMM_OWN = 0,   /* ours, direct or packed (default: measured faster, above) */
    TD_WK_GEMM_BLAS = 1,  /* OpenBLAS sgemm on F32 (F16 converted in slabs) for
                           * products of more than TD_WK_GEMV_ROWS rows */
};

typedef struct td_wk_ctx {
    const td_wk_ops *ops;
    td_wk_pool *pool;
    enum td_wk_gemm_impl impl;
    float *scratch;        /* n_threads x scratch_floats */
    size_t scratch_floats; /* per thread */
    float *wconv;          /* BLAS only: F16 -> F32 slab, wconv_floats */
    size_t wconv_floats;
} td_wk_ctx;

/* Per-thread scratch the drivers need for these shapes: GEMMs with up to
 * n_max columns, encoder attention over n_ctx keys, decoder attention over
 * up to n_keys keys, heads of d floats. */
size_t td_wk_scratch_floats(int n_ctx, int n_keys, int d);

/* C (ldc) = (accumulate ? C : 0) + A (m x k, lda) . W^T + bias, with W
 * [n][k] (ldw) F16 or F32 and bias[n] or NULL. Threads: all of ctx's. */
void td_wk_gemm(td_wk_ctx *ctx, int m, int n, int k, const float *a, size_t lda, const void *w,
                enum td_wtype wt, size_t ldw, const float *bias, float *c, size_t ldc,
                int accumulate);

/* Several products of the same A (m x k) in one pass of the threads, e.g.
 * the q, k, v projections: job i computes c_i (+)= A . w_i^T + bias_i. */
typedef struct td_wk_gemm_job {
    int n;
    const void *w;
    size_t ldw;
    const float *bias;
    float *c;
    size_t ldc;
} td_wk_gemm_job;
void td_wk_gemm_multi(td_wk_ctx *ctx, int m, int k, const float *a, size_t lda, enum td_wtype wt,
                      int n_jobs, const td_wk_gemm_job *jobs, int accumulate);

/* Convolution with kernel 3 over time-major rows, as a GEMM:
 * out[t][o] (ldo) = bias[o] + sum_{i,k} W[o][i][k] xp[stride * t + k][i]
 * for t < n_out, where xp ([.][c_in]) is the input with one zero row in
 * front (and behind when needed), i.e. padding 1. W is the model's conv
 * weight (ne = {3, c_in, c_out}, F16 or F32); wperm is scratch of
 * 3 * c_in * c_out floats (W reordered to [o][k][i], so that one A row
 * is 3 consecutive input rows). */
void td_wk_conv3(td_wk_ctx *ctx, int n_out, int stride, int c_in, int c_out, const float *xp,
                 const void *w, enum td_wtype wt, const float *bias, float *wperm, float *out,
                 size_t ldo);

/* The reordering td_wk_conv3 does first: wperm[o][k][i] = W[o][i][k]
 * (3 * c_in * c_out floats), so that the convolution is a product with
 * rows of 3 * c_in inputs (the int8 path quantizes it once at open). */
void td_wk_conv3_perm(td_wk_ctx *ctx, int c_in, int c_out, const void *w, enum td_wtype wt,
                      float *wperm);

/* Parallel row operations over the pool. */
void td_wk_layernorm_rows(td_wk_ctx *ctx, int rows, int n, const float *x, size_t ldx,
                          const float *w, const float *b, float *y, size_t ldy);
/* x[i] = gelu(x[i]) (+ add[i] if add), i < n. */
void td_wk_gelu_add(td_wk_ctx *ctx, float *x, size_t n, const float *add);

/* Encoder self-attention over n rows (keys = queries = all rows):
 * out[i][h*d..] = softmax(q_h k_h^T / sqrt(d)) v_h for each head h. q, k, v
 * and out are [n][n_state] (ld n_state). ka and vta are scratch of
 * td_wk_enc_attn_floats(n, n_state, n_head) floats each. */
size_t td_wk_enc_attn_floats(int n, int n_state, int n_head);
void td_wk_enc_attn(td_wk_ctx *ctx, int n, int n_state, int n_head, const float *q,
                    const float *k, const float *v, float *ka, float *vta, float *out);

/* Decoder-side packed keys and values of one head, K then V in one block
 * of td_wk_kv_head_floats(cap, d) floats: K as B-panels over key positions
 * ([cap / NR][d][NR]), then V as B-panels over the head's d columns
 * ([ceil(d / NR)][cap][NR]). cap is a multiple of NR. */
size_t td_wk_kv_head_floats(int cap, int d);
/* Store one position's key and value (the head's d floats each). */
void td_wk_kv_put(float *head, int cap, int d, int pos, const float *krow, const float *vrow);
/* The cross-attention keys and values of one head (what the decoder's
 * queries attend to without a causal mask), in the same
 * td_wk_kv_head_floats(cap, d) block but laid out for few-row products:
 * K as rows [cap][d], then V transposed, rows [d][cap]; positions past n
 * zero. Scores and the weighted sum are then GEMVs (ops->gemv) over whole
 * rows, which read the block as several streams at once (one core keeps
 * more misses in flight with several; see k_avx512.c's gemv_q4_t).
 * Packed from K and V rows ([n][ld], the head's slice starting at column
 * col0). tmp: scratch of cap floats. */
void td_wk_kv_pack(float *head, int cap, int d, int n, const float *k, const float *v, size_t ld,
                   int col0, float *tmp);

/* The same block stored as halves (td_wk_kv_head_floats(cap, d) halves,
 * same layout), for td_wk_set_cross_f16. tmp: scratch of cap floats. */
void td_wk_kv_pack_f16(const td_wk_ops *ops, uint16_t *head, int cap, int d, int n,
                       const float *k, const float *v, size_t ld, int col0, float *tmp);

/* Decoder attention. Rows come in groups that share keys: group g owns
 * rows [g * rows_per_group, +rows_per_group) of q and out ([.][ld]) and
 * the packed K/V at kv[g] (n_head head blocks, head h at kv[g] + h *
 * td_wk_kv_head_floats(cap, d)). Row t of a group attends to keys
 * [0, n_keys0 + t + 1) when causal (blocks from td_wk_kv_put), else
 * [0, n_keys0) (blocks from td_wk_kv_pack or td_wk_kv_pack_f16). */
typedef struct td_wk_dec_attn_args {
    int n_groups, rows_per_group, n_head, d, cap;
    int causal, n_keys0;
    float *const *kv;      /* [n_groups] */
    /* Ragged groups (all three or none): group g's rows start at q row
     * g_row0[g], it has g_rows[g] of them, and g_keys0[g] keys before its
     * first row (causal) or in all (cross); rows_per_group and n_keys0
     * are then ignored. */
    const int *g_row0, *g_rows, *g_keys0;
    const float *q;
    float *out;
    size_t ld;             /* row stride of q and out (n_state) */
    const uint16_t *const *kvh; /* instead of kv when not NULL: blocks of halves
                                 * (td_wk_kv_pack_f16) */
} td_wk_dec_attn_args;
void td_wk_dec_attn(td_wk_ctx *ctx, const td_wk_dec_attn_args *a);

/* GEMM implementation for contexts opened from now on (process-wide;
 * benchmarks and tests switch it). TD_WHISPER_GEMM=blas|own in the
 * environment sets the initial value. */
void td_wk_set_gemm_impl(enum td_wk_gemm_impl impl);
enum td_wk_gemm_impl td_wk_get_gemm_impl(void);
/* Products of more than this many rows always use the packed GEMM
 * (default: no cap; products whose per-thread weights fit in cache read
 * them directly, see kernels.c). Process-wide; TD_WHISPER_GEMV_ROWS in
 * the environment sets the initial value. Tests use it to reach both. */
void td_wk_set_direct_rows(int max_rows);
int td_wk_get_direct_rows(void);

/* Cross-attention K/V stored as F32 (default: the reference) or F16 (as
 * whisper.cpp stores them), for contexts opened from now on. F16 makes a
 * decoder step read half the bytes of the encoder-side keys and values
 * (tiny: 72 -> 63 MB a token), but its rounding (2^-11 relative) moves
 * the logits away from HF's float64: 5e-6 relative L2 on random weights
 * (bound 1e-5), 6.7e-5 on the real tiny.en weights, whose peaked
 * attention passes the rounding of a few values straight through (bound
 * 2e-5, HF float32 1e-6). So it is opt-in for F32 compute:
 * TD_WHISPER_CROSS=f16 in the environment, or td_wk_set_cross_f16(1).
 * int8 compute (q8.h) always stores halves: its own error is far larger. */
void td_wk_set_cross_f16(int on);
int td_wk_get_cross_f16(void);

/* Cap the BLAS library's threads (no-op without BLAS). */
void td_wk_blas_threads(int n);

/* ------------------------------------------------------------------ */
/* CPU backend internals exposed for tests and benchmarks.               */

/* Bytes of tensor data a ggml file of these hparams and weight type holds
 * (what td_wmodel's weight_bytes sums). */
int64_t td_wcpu_weight_bytes(const td_whparams *hp, enum td_wtype wtype);
/* Bytes of the one arena open() allocates for hp/cfg (memory_need is this
 * plus td_wcpu_mapped_bytes); -1 for an invalid configuration. */
int64_t td_wcpu_arena_bytes(const td_whparams *hp, const td_wconfig *cfg);
/* Bytes of the mapped model that stay resident under cfg: all of
 * td_wcpu_weight_bytes, but with int8 compute only the F32 vectors and the
 * token embedding (the rest is released once copied). memory_need is this
 * plus td_wcpu_arena_bytes. */
int64_t td_wcpu_mapped_bytes(const td_whparams *hp, enum td_wtype wtype, const td_wconfig *cfg);
/* The arena size an open context actually allocated. */
size_t td_wcpu_arena_size(const td_wbackend *b);
/* The kernels variant an open context uses, and a switch to another one
 * (tests run the whole network with each variant the CPU supports). */
const char *td_wcpu_isa_name(const td_wbackend *b);
void td_wcpu_use_ops(td_wbackend *b, const td_wk_ops *ops);

#endif
