/*
 * q8.h: the CPU backend's int8 path (--compute int8): linear layers,
 * convolutions and the encoder's attention products computed int8 by
 * int8 with 32-bit integer sums (AVX-512 VNNI's vpdpbusd: 64
 * multiply-adds per instruction, where an FMA does 16). Weights are
 * quantized once at open, activations row by row as they are used.
 * Internal to the Whisper CPU backend (cpu.c) and its tests.
 *
 * Why: in F32 the encoder's products are bound by the FMA rate
 * (kernels.h) and the decoder's by the bytes of weights it reads per
 * token; int8 weights are half of F16's bytes and vpdpbusd did 3.3-3.5x
 * the arithmetic per second of the FMA on the Ice Lake VM
 * (bench/RESULTS.md). The numerics are CTranslate2's int8 (what
 * faster-whisper runs on CPUs): symmetric per-output-row weight scales,
 * symmetric per-input-row activation scales, round to nearest even. The
 * attention's probabilities are unsigned bytes with one scale per query.
 * LayerNorm, GELU, softmax and the decoder's own attention stay F32, and
 * the F32 path stays the numerical reference (test_whisper_golden bounds
 * both).
 *
 * Quantization, for a weight row j (an output) and an activation row i:
 *   sb[j] = max_k |W[j][k]| / 127,  wq[j][k] = round(W[j][k] / sb[j])  in [-127, 127]
 *   sa[i] = max_k |A[i][k]| / 127,  aq[i][k] = round(A[i][k] / sa[i]) in [-127, 127]
 *   C[i][j] = sa[i] sb[j] sum_k aq[i][k] wq[j][k] + bias[j]
 * (in float, as x * (127 / max |x|)). A row whose largest magnitude is
 * below TD_Q8_TINY, or not finite, or holding a NaN, counts as zeros:
 * scale 0, all values 0 (127 / max would overflow; such a row's products
 * are below 1e-58). vpdpbusd multiplies unsigned by signed bytes, so
 * activations are stored as aq + 128 (1..255) and the product is
 * corrected by 128 * sum_k wq[j][k], kept per row j. Sums stay below 2^31
 * for k up to 66000.
 *
 * Layouts (k a multiple of 4, as in every Whisper dimension):
 *   weights:     panels of NR outputs, [n_panels][k / 4][NR][4] bytes:
 *                four consecutive k of one output form one 32-bit lane,
 *                so one 64-byte load feeds 16 outputs x 4 k;
 *   activations: panels of MR rows, [rows / MR][k / 4][MR][4] bytes, so
 *                that a row's four k are one 32-bit broadcast.
 * The micro-kernels read whole panels of sb and bsum (padded with zeros
 * past n). Per-thread scratch of ctx: td_q8_weight_init needs k floats
 * and k bytes, td_q8_gemm k bytes, td_q8_enc_attn its own figure below.
 */
#ifndef TD_WHISPER_Q8_H
#define TD_WHISPER_Q8_H

#include <stddef.h>
#include <stdint.h>

#include "whisper/backend/cpu/kernels.h"

#define TD_Q8_MR 6      /* activation rows per micro-tile */
#define TD_Q8_NR 64     /* weight rows (outputs) per panel */
#define TD_Q8_KC 512    /* k per block: a weight panel's block is 32 KB (L1) */
#define TD_Q8_TINY 1e-30f

/* ------------------------------------------------------------------ */
/* Kernels (scalar reference; AVX-512 VNNI where the CPU has it).       */

typedef struct td_q8_ops {
    const char *name; /* "scalar", "avx512-vnni" */

    /* Micro-kernel over kq groups of 4 k: for i < mr <= MR, j < nr <= NR,
     *   acc = sum_g sum_t ap[g][i][t] * bp[g][j][t]   (u8 x s8, in int32)
     *   C[i][j] (ldc) = (load ? C[i][j] : 0) + sa[i] sb[j] (acc - (bsum ? bsum[j] : 0))
     *                   + (bias ? bias[j] : 0)
     * ap: an activation panel block (stride MR * 4 bytes per group), bp a
     * weight panel block (stride NR * 4). Only the mr x nr corner of C is
     * touched. */
    void (*mk)(int kq, const uint8_t *ap, const int8_t *bp, float *c, size_t ldc, int mr, int nr,
               int load, const float *sa, const float *sb, const int32_t *bsum, const float *bias);

    /* One activation row against four whole panels side by side (a greedy
     * decoder step, bound by memory: a core keeps more misses in flight
     * reading four streams than one; see k_avx512.c's gemv_q4_t). Panel q
     * starts at bp + q * pstride; it computes 4 * NR consecutive outputs
     * c[0 .. 4 NR) as mk does with mr = 1, nr = NR, sb, bsum and bias
     * (when not NULL) read at [0 .. 4 NR). */
    void (*mk1x4)(int kq, const uint8_t *ap, const int8_t *bp, size_t pstride, float *c,
                  int load, float sa, const float *sb, const int32_t *bsum, const float *bias);

    /* Quantize one row of k floats that are all >= 0 (probabilities) to
     * the whole unsigned range, no offset: dst[t] = round(x[t] * (255 /
     * max x)); returns max x / 255 (0, all zeros, for a row that counts as
     * zeros). Products with these take bsum NULL. */
    float (*quant_row_u8)(const float *x, int k, uint8_t *dst);

    /* A softmax row straight to bytes: e[t] = exp(x[t] - max x) for t < n
     * (written back to x), dst[t] = round(255 e[t]) (the largest is 255),
     * dst[n .. n4) = 0; returns 1 / (255 sum e), the scale that makes
     * dst the probabilities. For P V with bsum NULL. */
    float (*softmax_u8)(float *x, int n, int n4, uint8_t *dst);

    /* Quantize one row of k floats: dst[t] = round(x[t] * (127 / max |x|))
     * + 128; returns s = max |x| / 127 (all 128 and s = 0 for a row that
     * counts as zeros, above). */
    float (*quant_row)(const float *x, int k, uint8_t *dst);
} td_q8_ops;

/* The widest int8 kernels this CPU runs (scalar everywhere else), or the
 * scalar ones when TD_WHISPER_ISA in the environment asks for less than
 * avx512. */
const td_q8_ops *td_q8_ops_best(void);
const td_q8_ops *td_q8_ops_scalar(void);
/* 1 if this CPU has the fast int8 kernels (AVX-512 VNNI). */
int td_q8_fast(void);

/* ------------------------------------------------------------------ */
/* Weights                                                              */

typedef struct td_q8_weight {
    int n, k;          /* outputs (rows of W) and inputs; k % 4 == 0 */
    int n_panels;      /* ceil(n / NR) */
    int8_t *q;         /* [n_panels][k / 4][NR][4]; outputs past n are zero */
    float *scale;      /* [n_panels * NR] sb; 0 past n */
    int32_t *bsum;     /* [n_panels * NR] 128 * sum_k wq[j][k] */
} td_q8_weight;

/* Bytes td_q8_weight_init carves for an n x k weight (64-byte aligned
 * parts). */
size_t td_q8_weight_bytes(int n, int k);

/* Quantize W ([n][k], ldw elements per row, F16 or F32 as mapped, not
 * necessarily aligned) into mem (td_q8_weight_bytes(n, k) bytes, 64-byte
 * aligned), which dst then points into (dst does not own it). Threads: all
 * of ctx's. k must be a positive multiple of 4. */
void td_q8_weight_init(td_wk_ctx *ctx, const void *w, enum td_wtype wt, size_t ldw, int n, int k,
                       void *mem, td_q8_weight *dst);

/* ------------------------------------------------------------------ */
/* Products                                                             */

/* Scratch for quantized activations of up to max_rows rows of up to max_k
 * inputs (bytes; 64-byte aligned start expected). */
size_t td_q8_act_bytes(int max_rows, int max_k);

typedef struct td_q8_job {
    const td_q8_weight *w;
    const float *bias;  /* [w->n] or NULL */
    float *c;
    size_t ldc;
} td_q8_job;

/* For each job: c (+)= A (m x k, lda) . W^T + bias, k = jobs[i].w->k for
 * all jobs (they share A, which is quantized once into act, of
 * td_q8_act_bytes(m, k) bytes or more). accumulate: add to C. Threads:
 * all of ctx's. */
void td_q8_gemm(td_wk_ctx *ctx, const td_q8_ops *ops, int m, int k, const float *a, size_t lda,
                void *act, int n_jobs, const td_q8_job *jobs, int accumulate);

/* ------------------------------------------------------------------ */
/* Encoder self-attention                                               */

/* The same contract as td_wk_enc_attn (kernels.h): out[i][h*d..] =
 * softmax(q_h k_h^T / sqrt(d)) v_h for every head, q, k, v and out
 * [n][n_state]; but both products in int8: per head, K's rows and V^T's
 * rows (one per output dimension) quantized as weights, Q's rows as
 * activations, the probabilities (softmax in F32) as unsigned bytes with
 * one scale per query. work: td_q8_enc_attn_bytes() bytes, 64-byte
 * aligned. Per-thread scratch of ctx: td_q8_enc_attn_scratch_floats(n)
 * floats; 0 returned when ctx has less (nothing done: use the F32 one). */
size_t td_q8_enc_attn_bytes(int n, int n_state, int n_head);
size_t td_q8_enc_attn_scratch_floats(int n);
int td_q8_enc_attn(td_wk_ctx *ctx, const td_q8_ops *ops, int n, int n_state, int n_head,
                   const float *q, const float *k, const float *v, void *work, float *out);

#endif
