/*
 * ops.h: the Vulkan backend's operations, recorded into the device's
 * current command buffer (vk.h): the linear-layer product with its fused
 * epilogue (bias, GELU, an added matrix, the residual), LayerNorm, the
 * encoder's and the decoder's attention, the decoder's embedding and KV
 * stores. Arguments are device addresses (td_vk_buf.addr + byte offset)
 * and sizes in elements; nothing is checked here that the caller (the
 * backend, or a test) has not already bounded.
 *
 * Products: W is [n][k] (ldw) as halves (ldw even) or floats; A and C are
 * floats, or halves where TD_VKO_AHALF and TD_VKO_HALF say so. Few rows
 * (at most TD_VKO_MATVEC_ROWS) take the matrix-vector shader, which
 * reads each weight once per 8 rows; more take the tiled one (64 x 64
 * tiles; a 128 x 128 variant with 8 x 8 outputs per thread ran 7x slower
 * on the H100, its accumulators in local memory), or, with
 * F16 weights on a device with GL_NV_cooperative_matrix, the matrix-engine
 * shader (matmul_cm.comp: A rounded to halves, so about 2e-4 normalized
 * error on the H100 where the tiled path has 1e-6), in tiles of 128 x 128
 * where the grid has at least td_vko_set_cm_big_min's count of them, else
 * 64 x 128 or 64 x 64 (three shapes of it), or with the fragments loaded
 * straight from device memory, no shared-memory staging (matmul_cmd.comp,
 * 64 x 128 or 64 x 64 tiles).
 * td_vko_set_matvec_rows moves the first switch and
 * td_vko_set_path the second (tests reach every path); td_vko_choose_path
 * times each once per device and driver (a cache file). On a
 * cooperative-matrix path the encoder's attention runs on the matrix
 * engines too (enc_attn_cm.comp, heads of 32 or 64: q, k, v rounded to
 * halves). The word alignment's attention weights are here too.
 *
 * Ownership: td_vko_create makes the pipelines on vk; td_vko_free
 * destroys them (before td_vk_close).
 */
#ifndef TD_WHISPER_VK_OPS_H
#define TD_WHISPER_VK_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "whisper/backend/vulkan/vk.h"

#define TD_VKO_MATVEC_ROWS 8

enum {
    TD_VKO_BIAS = 1, /* + bias[n] */
    TD_VKO_GELU = 2, /* then exact GELU */
    TD_VKO_ADD = 4,  /* then + add[m][n] (ldadd) */
    TD_VKO_ACC = 8,  /* then + C[m][n]: accumulate into C */
    TD_VKO_LN = 16,  /* A's rows LayerNorm'ed first (td_vko_lin.ln_w, ln_b; eps 1e-5) */
    TD_VKO_ROWIDX = 32, /* row m of C at c + rowidx[m] floats instead of m * ldc */
    TD_VKO_QKV = 128,   /* columns [0, split) to c (ldc), [split, 2 split) to c2 + rowidx[m]
                         * and [2 split, 3 split) to c3 + rowidx[m]: the decoder's q, k and v
                         * as one product of concatenated weights (few rows only) */
    TD_VKO_COLS = 1024, /* column n to block j = n / split: its column n - j split at the
                         * address tab[j] (tab: uint64s on the device), row m at element
                         * cofs + m ldc (or cofs + rowidx[m]): many outputs of one
                         * product, each in its own place (the cross-attention's K and V
                         * of every decoder layer, the encoder's q, k and v) */
    TD_VKO_HALF = 2048, /* outputs as halves (element offsets and strides in halves; n,
                         * ldc, cofs, split and rowidx even, the outputs 4-byte aligned;
                         * no TD_VKO_ACC) */
    TD_VKO_AHALF = 65536, /* A as halves (lda in halves, a 4-byte aligned), as its producer
                           * wrote them (td_vko_layernorm_half, TD_VKO_HALF): half the
                           * bytes a product loads. Only where td_vko_a_half_ok() and the
                           * weights are F16: matmul_cm.comp rounds float A to halves
                           * as it stages it, with the same rounding, so the result is
                           * bitwise that of float A; no TD_VKO_LN or TD_VKO_QKV */
};
/* TD_VKO_COLS and TD_VKO_HALF are taken by the tiled and the
 * cooperative-matrix kernels only: td_vko_linear_x sends such products
 * there whatever their row count, and those kernels have no LayerNorm
 * prologue and no q, k, v split: TD_VKO_LN and TD_VKO_QKV must not be
 * combined with them (nor TD_VKO_ACC with TD_VKO_HALF); TD_VKO_COLS needs
 * split > 0 with n a multiple of it (the callers' and the tests' shapes). */

/* Product paths for more rows than the matrix-vector shader takes. */
enum td_vko_path {
    TD_VKO_TILED = 0,
    TD_VKO_COOPMAT = 1,   /* matmul_cm.comp (or matmul_cmk.comp, VK_KHR_cooperative_matrix),
                           * 128 x 128 tiles on grids big enough, else 64 x 128 */
    TD_VKO_COOPMAT64 = 2, /* the same, 64 x 128 tiles always */
    TD_VKO_CMDIRECT = 3,  /* matmul_cmd.comp (fragments straight from device memory), 64 x 128
                           * tiles, where K and N are multiples of 16 and A and W allow 16-byte
                           * loads; matmul_cm.comp's 64 x 128 takes the rest */
    TD_VKO_CMDIRECT64 = 4, /* the same in 64 x 64 tiles */
    /* matmul_cm.comp with 128 x 128 tiles on grids big enough (as
     * TD_VKO_COOPMAT), else 64 x 64 tiles (twice the workgroups of 64 x
     * 128: the medium encoder's 1500 x 1024 products fill an H100's 132
     * multiprocessors evenly), */
    TD_VKO_CM64X64 = 5,    /* by 4 subgroups of 32 x 32, K in steps of 32 */
    TD_VKO_CM64X64K64 = 6, /* by 4 subgroups of 32 x 32, K in steps of 64 */
    TD_VKO_CM64X64S2 = 7,  /* by 2 subgroups of 64 x 32, K in steps of 32 */
    /* coopmat's tiles (128 x 128 on grids big enough, else 64 x 128) with
     * each thread's loads issued two K steps ahead of their products
     * instead of one (two sets of registers) */
    TD_VKO_CMAHEAD = 8,
    /* 128 x 128 tiles on grids big enough (else 64 x 128) by 4 subgroups of
     * 64 x 64, not 8 of 64 x 32: each fragment read from shared memory
     * feeds twice the products, at about twice the registers a thread */
    TD_VKO_CM128W = 9,
};
#define TD_VKO_NPATHS 10

/* Products on the cooperative-matrix path take 128 x 128 tiles when the
 * grid has at least this many of them (default 256, about two a
 * multiprocessor on an H100; TD_VULKAN_CM_BIG_MIN in the environment at
 * td_vko_create sets another), else 64 x 128 tiles. 0: always 128. */
#define TD_VKO_CM_BIG_MIN 256

typedef struct td_vko td_vko;

/* Products split along K (the tiled and cooperative-matrix paths): where
 * a product's grid has fewer workgroups than two a multiprocessor of the
 * card (vk.h's sm_count) and K is at least TD_VKO_SPLIT_MINK, workgroups
 * along a third grid dimension each take a range of K and write their
 * sums as floats to a scratch region, and a second dispatch
 * (matmul_sum.comp) adds the parts in a fixed order (the same result
 * every run) and applies the epilogue: about three workgroups a
 * multiprocessor, at most TD_VKO_SPLIT_MAX parts of about k / parts
 * each (no more parts than k / 256; the last part may be shorter),
 * no more than the scratch holds, and none while td_vk_concurrent is on
 * (one scratch). The medium encoder's 1500 x 1024 x 4096 product: 96
 * tiles of 128 x 128 for an H100's 132 multiprocessors, in 4 parts.
 * Grids of fewer workgroups than half the multiprocessors with at most
 * TD_VKO_ROWS_MAX rows (a decoder batch's products) split from K of
 * TD_VKO_SPLIT_MINK_SMALL, into about two workgroups a multiprocessor, no
 * more parts than k / 128. */
#define TD_VKO_SPLIT_MINK 2048
#define TD_VKO_SPLIT_MINK_SMALL 1024
#define TD_VKO_SPLIT_MAX 16
#define TD_VKO_SPLIT_PLAN 4 /* parts td_vko_split_floats plans for */
/* The scratch floats to reserve for products of m x n: TD_VKO_SPLIT_PLAN
 * parts of m x n rounded up to 4 floats a row. */
size_t td_vko_split_floats(int m, int n);
/* The scratch: floats at the device address scratch (16-byte aligned,
 * the caller's, used by every split product until changed; 0: no split). */
void td_vko_set_split(td_vko *o, uint64_t scratch, size_t floats);
/* -1: by the card (the default: ops.c's SPLIT_AUTO); 0 (or 1): never; 2
 * to TD_VKO_SPLIT_MAX: every product of
 * the two paths with K above 64, in that many parts where the scratch
 * holds them (tests, benchmarks). TD_VULKAN_SPLITK=auto, off or a count
 * at td_vko_create sets the first. Returns the setting before. */
int td_vko_set_split_parts(td_vko *o, int parts);

/* Pipelines for heads of d_audio (16, 32, 64 or 128: Whisper has 64) and
 * d_text (up to 128) floats. */
int td_vko_create(td_vk *vk, int d_audio, int d_text, td_vko **out, td_error *err);
void td_vko_free(td_vko *o);
void td_vko_set_matvec_rows(td_vko *o, int rows);
void td_vko_set_cm_big_min(td_vko *o, int tiles);
/* "tiled", "coopmat", "coopmat64", "cmdirect", "cmdirect64", "cm64x64", "cm64x64k64",
 * "cm64x64s2", "cmahead", "cm128w" */
const char *td_vko_path_name(enum td_vko_path path);
/* Force a path: TD_EUNAVAILABLE (with the reason) where the device has no
 * such path; the tiled path is always there. */
int td_vko_set_path(td_vko *o, enum td_vko_path path, td_error *err);
enum td_vko_path td_vko_path_get(const td_vko *o);
/* Whether the cooperative-matrix pipeline exists on this device. */
int td_vko_has_coopmat(const td_vko *o);
/* Incremented whenever the matvec switch or the path changes: command
 * buffers recorded before then (vk.h's td_vk_begin_cached) are stale. */
unsigned td_vko_generation(const td_vko *o);
/* Choose the path for this device: TD_VULKAN_MATMUL=(a path's name) in the
 * environment forces it; else the answer cached for this device and
 * driver under $XDG_CACHE_HOME/tapedeck/ (or ~/.cache/tapedeck/); else a
 * timed trial of each on products of m rows by n x k and 4n x k halves
 * (the encoder's rows, a group of windows', at most 8192, and widths: its
 * attention's and its MLP's first)
 * that also checks the cooperative-matrix result against the tiled one,
 * written to that cache (a cache that cannot be written is no error).
 * *why gets a line saying what was chosen and how. */
int td_vko_choose_path(td_vko *o, int m, int n, int k, char *why, size_t why_len,
                       td_error *err);

/* The matrix engines' rate in TFLOP/s through the cooperative-matrix
 * extension (cm_peak.comp, whose head lists the modes; 0: fragments in
 * registers, 1: reloaded from shared halves every step, 2: from shared
 * 16-byte vectors, 3 to 7: 2 with one thing as matmul_cm.comp does it)
 * over groups workgroups of 8 subgroups (0: 1056, 8 a multiprocessor of
 * an H100): a benchmark's floor, and a diagnosis. TD_EUNAVAILABLE
 * without the path. Submits its own command buffers (none may be open). */
#define TD_VKO_CM_PEAK_MODES 8
int td_vko_cm_peak(td_vko *o, int mode, int groups, double *tflops, td_error *err);

/* Probes of what holds a cooperative-matrix product back (a benchmark's;
 * the results are then wrong): every K step loads from K offset 0 (a few
 * cache lines instead of the operands' megabytes), no products (the
 * feeding alone), no loads after the first step (matmul_cm.comp only). */
enum { /* above the TD_VKO_* flags and the shaders' own (ops.c) */
    TD_VKO_PROBE_SAME = 4096,
    TD_VKO_PROBE_NOMMA = 8192,
    TD_VKO_PROBE_NOLOAD = 16384,
};
/* *ms: one m x n x k product (F16 W, A and C of the encoder's layout, no
 * epilogue) on path with the probes given (and TD_VKO_AHALF: A read as
 * halves), best of 3 rounds of 8 after a warm-up. Restores the path.
 * Submits its own command buffers. */
int td_vko_cm_probe(td_vko *o, enum td_vko_path path, int m, int n, int k, unsigned probes,
                    double *ms, td_error *err);

/* Products of 9 to TD_VKO_ROWS_MAX rows (a batched decoder step): the
 * path's (tiled or cooperative-matrix; the default), or the
 * matrix-vector shader, with one column per team of 32 threads
 * (matvec) or four (matvec4: each load of A serves four weight rows,
 * the grid ordered so that weights come from memory about once), which
 * also fuse LayerNorm and q, k, v as the few-row products do, or
 * matrows.comp (8 columns x 64 rows a workgroup, K split 8 ways, 4 x 4
 * outputs a thread; F16 weights with 16-byte loads, else matvec runs;
 * q, k, v fused, LayerNorm not). Chosen per class of row count (up to
 * 16, 32, 64, 128, 256). */
enum td_vko_rows {
    TD_VKO_ROWS_PATH = 0,
    TD_VKO_ROWS_MATVEC = 1,
    TD_VKO_ROWS_MATVEC4 = 2,
    TD_VKO_ROWS_MATROWS = 3,
    TD_VKO_ROWS_MATROWS2 = 4, /* the same with two groups of loads in flight per thread */
};
#define TD_VKO_ROWS_N 5
#define TD_VKO_ROWS_MAX 256
#define TD_VKO_ROWS_CLASSES 5
/* "path", "matvec", "matvec4", "matrows", "matrows2" */
const char *td_vko_rows_name(enum td_vko_rows k);
/* Every class to k (tests, benchmarks). */
void td_vko_set_rows(td_vko *o, enum td_vko_rows k);
/* Choose per class: TD_VULKAN_ROWS=(a name) in the environment forces
 * one; on a CPU device (lavapipe) the path's; else the answer cached for
 * this device, driver and product path beside td_vko_choose_path's, or
 * a timed trial of the path, matvec and matvec4 (matrows and matrows2
 * only by TD_VULKAN_ROWS until a card has run them) on 16, 32, 64, 128
 * and 256 rows of
 * products n x k and 4n x k (the decoder's widths), results checked
 * against the path's, written to that cache. Call after the path is set.
 * *why says what was chosen. */
int td_vko_choose_rows(td_vko *o, int n, int k, char *why, size_t why_len, td_error *err);
/* td_vko_choose_rows' cached trial itself, on any device (a CPU device
 * too: the tests run it on lavapipe), without TD_VULKAN_ROWS. */
int td_vko_trial_rows(td_vko *o, int n, int k, char *why, size_t why_len, td_error *err);

/* C (ldc) = epilogue(A (m x k, lda) . W^T) with flags TD_VKO_* (no LN, no ROWIDX). */
void td_vko_linear(td_vko *o, int m, int n, int k, uint64_t a, int lda, uint64_t w, int w_f16,
                   int ldw, uint64_t bias, uint64_t add, int ldadd, uint64_t c, int ldc,
                   unsigned flags);

/* The same with every option. TD_VKO_LN and TD_VKO_QKV are taken only
 * by products of at most the matvec rows or on a matvec kernel of
 * td_vko_rows (td_vko_fuses_ln; TD_VKO_QKV on matrows too:
 * td_vko_takes_qkv); for more,
 * run td_vko_layernorm into a scratch first and pass that as A without
 * the flag, and q, k and v as three products. */
typedef struct td_vko_lin {
    int m, n, k;
    uint64_t a;
    int lda;
    uint64_t w;
    int w_f16, ldw;
    uint64_t bias, add;
    int ldadd;
    uint64_t c;
    int ldc;
    unsigned flags;
    uint64_t ln_w, ln_b; /* TD_VKO_LN: LayerNorm weight and bias [k] */
    uint64_t rowidx;     /* TD_VKO_ROWIDX, TD_VKO_QKV: [m] ints */
    uint64_t c2, c3;     /* TD_VKO_QKV: the second and third outputs */
    int split;           /* TD_VKO_QKV: columns per output (n = 3 split); TD_VKO_COLS:
                          * columns per block */
    uint64_t tab;        /* TD_VKO_COLS: [n / split] output addresses (uint64s; n a
                          * multiple of split) */
    uint32_t cofs;       /* TD_VKO_COLS: elements before row 0 in every block */
} td_vko_lin;
void td_vko_linear_x(td_vko *o, const td_vko_lin *l);
int td_vko_fuses_ln(const td_vko *o, int m);
/* Whether a product of m rows takes TD_VKO_QKV. */
int td_vko_takes_qkv(const td_vko *o, int m);

/* y[r] (ldy) = LayerNorm(x[i]) (ldx, eps 1e-5) for r < rows, where i =
 * idx[r] (ints) when idx is not 0, else r. */
void td_vko_layernorm(td_vko *o, int rows, int n, uint64_t x, int ldx, uint64_t w, uint64_t b,
                      uint64_t y, int ldy, uint64_t idx);
/* The same, y written as halves (n and ldy even, y 4-byte aligned), no
 * idx: the A of products with TD_VKO_AHALF. */
void td_vko_layernorm_half(td_vko *o, int rows, int n, uint64_t x, int ldx, uint64_t w,
                           uint64_t b, uint64_t y, int ldy);
/* Whether products may take TD_VKO_AHALF: a path of matmul_cm.comp is in
 * use (with F16 weights it rounds A to halves as it stages it); not the
 * tiled path, not the direct-load ones (they read A as floats). */
int td_vko_a_half_ok(const td_vko *o);

/* Encoder self-attention over n rows (ld floats apart), n_head heads of
 * d_audio: out = softmax(q k^T / sqrt(d)) v per head. On a
 * cooperative-matrix path, with heads of 32 or 64, ld a multiple of 4 and
 * q, k, v 16-byte aligned: on the matrix engines (about 1e-3 normalized
 * error); else enc_attn.comp in floats. The output is floats. On the
 * matrix engines the scores stay in registers (enc_attn_cmr.comp) where
 * that shader gave enc_attn_cm.comp's results at td_vko_create (and
 * TD_VULKAN_ATTN_REG is not 0); td_vko_attn_note says which runs. */
void td_vko_enc_attn(td_vko *o, int n, int n_head, int ld, uint64_t q, uint64_t k, uint64_t v,
                     uint64_t out);
/* The same with q, k and v as halves (ld halves apart, as a product with
 * TD_VKO_HALF writes them): only where td_vko_enc_attn_half_ok() says
 * the matrix-engine kernel takes them (it rounds floats to halves
 * anyway: k and v the same bits, q rounded twice, scaled after its
 * product's rounding; half the bytes loaded). */
void td_vko_enc_attn_half(td_vko *o, int n, int n_head, int ld, uint64_t q, uint64_t k,
                          uint64_t v, uint64_t out);
int td_vko_enc_attn_half_ok(const td_vko *o, int ld, uint64_t q, uint64_t k, uint64_t v);
/* Which encoder attention runs and why ("attention: ..."), for the log;
 * owned by o. */
const char *td_vko_attn_note(const td_vko *o);

/* Decoder attention of rows q (ld) against keys and values at k and v:
 * row r's keys are info[2r+1] rows (ld apart) from float offset info[2r]
 * (info: ints), at least 1 and at most max_keys of them. Heads of d_text.
 * One dispatch (dec_attn.comp), split over the keys in blocks of
 * TD_VKO_ATT_SPLIT whose parts go to part:
 * td_vko_dec_part_floats(rows, n_head, d, max_keys) floats (one block:
 * no parts); the last block of each (row, head) to finish merges them,
 * counting in cnt: rows x n_head ints that must be zero before the first
 * call and that each call leaves zero (a buffer of its own, zeroed once:
 * nothing else may write there). */
#define TD_VKO_ATT_SPLIT 128
size_t td_vko_dec_part_floats(int rows, int n_head, int d, int max_keys);
void td_vko_dec_attn(td_vko *o, int rows, int n_head, int ld, uint64_t q, uint64_t out,
                     uint64_t k, uint64_t v, uint64_t info, int max_keys, uint64_t part,
                     uint64_t cnt);

/* The same with keys and values as halves where kv16 (offsets and ld
 * still in elements; 8-byte aligned where ld, the offsets and the head's
 * column allow 4-element loads). */
void td_vko_dec_attn_x(td_vko *o, int rows, int n_head, int ld, uint64_t q, uint64_t out,
                       uint64_t k, uint64_t v, uint64_t info, int max_keys, uint64_t part,
                       uint64_t cnt, int kv16);

/* The same for groups of rows that attend to the same keys (the
 * cross-attention's rows of one window: a window's beams, a big batch's
 * sequences of one window): a workgroup per (group, head, block of keys)
 * loads the block's keys and values once and computes every row of the
 * group (dec_attn_group.comp), so that a group's keys and values come
 * from memory once instead of once per row. Each row's output is bitwise
 * what td_vko_dec_attn_x gives it on the same inputs (the same blocks,
 * the same arithmetic and reductions per row: the shader's head says
 * how), so grouping changes nothing downstream.
 *
 * The group table, ints at table->addr + table_off (table a
 * TD_VK_MEM_INPUT buffer, which takes indirect dispatches; table_off a
 * multiple of 4), written by the host before the submit, so that a kept
 * recording replays with each call's groups:
 *   [0, TD_VKO_GROUP_HEAD)  the dispatch's size: td_vko_dec_group_head
 *                           writes it (groups, n_head, blocks of keys, 0)
 *   then per group, TD_VKO_ATT_GROUP + 1 ints: its row count n (1 to
 *   TD_VKO_ATT_GROUP) and n row indices (< the rows of q, out and info).
 * Every row appears in at most one group; the rows of a group have equal
 * info entries (the group takes its first row's keys). Parts and
 * counters as td_vko_dec_attn_x's (sized by the rows, the counters left
 * zero: a group counts in its first row's). Only where
 * td_vko_has_dec_groups (the device gives a workgroup the shared memory:
 * 26 KiB for heads of 64). */
#define TD_VKO_ATT_GROUP 8 /* dec_attn_group.comp's G */
#define TD_VKO_GROUP_HEAD 4
/* The ints of a table of up to groups entries of g rows at most
 * (TD_VKO_ATT_GROUP, or TD_VKO_XCM_GROUP for td_vko_dec_xattn_cm). */
size_t td_vko_dec_group_ints(int groups, int g);
void td_vko_dec_group_head(int32_t *table, int n_groups, int n_head, int max_keys);
int td_vko_has_dec_groups(const td_vko *o);
void td_vko_dec_attn_groups(td_vko *o, int ld, uint64_t q, uint64_t out, uint64_t k, uint64_t v,
                            uint64_t info, const td_vk_buf *table, uint64_t table_off,
                            int max_keys, uint64_t part, uint64_t cnt, int kv16);

/* The cross-attention of groups of up to TD_VKO_XCM_GROUP rows on the
 * matrix engines (enc_attn_cmr.comp's compilations 4 and 5, the encoder's
 * attention with rows gathered by a table): a workgroup per (group,
 * head) takes the group's queries as halves, streams its window's keys
 * and values once in blocks of 64, and keeps scores, softmax and output
 * in the matrix engines' registers. Not the per-row kernel's bits: q, K,
 * V and the probabilities are rounded to halves (about 1e-3 normalized,
 * as the encoder's attention), sums in floats. No parts or counters.
 * The table as td_vko_dec_attn_groups' with groups of TD_VKO_XCM_GROUP
 * (entries of TD_VKO_XCM_GROUP + 1 ints), its head written by
 * td_vko_dec_xcm_head (groups, n_head, 1, 0). Heads of 64, ld a multiple
 * of 4, q, k, v and info entries as td_vko_dec_attn_x's with kv16 (keys
 * and values as halves) or not, but k and v 16-byte aligned (8 as halves)
 * and each info entry's first key element a multiple of 4; q and out
 * floats. Only
 * where td_vko_has_dec_xcm: a device with NVIDIA's cooperative matrices
 * where the encoder's register attention passed its check at
 * td_vko_create (the same layout assumption), heads of 64, and
 * TD_VULKAN_ATTN_REG not 0. */
#define TD_VKO_XCM_GROUP 64 /* enc_attn_cm.glsl's BQ */
int td_vko_has_dec_xcm(const td_vko *o);
void td_vko_dec_xcm_head(int32_t *table, int n_groups, int n_head);
void td_vko_dec_xattn_cm(td_vko *o, int ld, uint64_t q, uint64_t out, uint64_t k, uint64_t v,
                         uint64_t info, const td_vk_buf *table, uint64_t table_off, int kv16);

/* y (halves, n of them) = x (n floats), n even and at most 2^32 - 2. */
void td_vko_to_half(td_vko *o, size_t n, uint64_t x, uint64_t y);

/* Word alignment: o[(orow0 + r) * nk + j] = softmax_j(q[r]_h . k[j]_h /
 * sqrt(d_text)) for rows r < rows of q (ld apart), the head at float
 * column h0, keys k[j] (j < nk) at float offset kofs, ld apart. */
void td_vko_att_weights(td_vko *o, int rows, int ld, uint64_t q, uint64_t k, uint64_t kofs,
                        int nk, int h0, uint64_t out, int orow0);

/* The same with the keys as halves where k16. */
void td_vko_att_weights_x(td_vko *o, int rows, int ld, uint64_t q, uint64_t k, uint64_t kofs,
                          int nk, int h0, uint64_t out, int orow0, int k16);

/* x[r] = tok[tp[2r]] + pos[tp[2r+1]], rows of n (tok halves or floats). */
void td_vko_embed(td_vko *o, int rows, int n, uint64_t tok, int tok_f16, uint64_t pos,
                  uint64_t tp, uint64_t x);

/* The decoder step as one dispatch (dec_step.comp): for steps of at most
 * 8 rows, whose time goes to ~8 dependent dispatches a layer, not to
 * their bytes.
 * td_vko_step_setup builds it for a grid of groups workgroups (0: off)
 * and checks, with empty phases, that every workgroup of such a grid is
 * resident at once on this device (the grid's barriers need it); it
 * writes which it is into why. A grid that failed the check leaves the
 * step off: td_vko_step_groups gives 0. Heads of 64 only (every
 * Whisper's decoder). Errors: out of memory, a lost device.
 * Between td_vko_step_begin and td_vko_step_end, the few-row products
 * with weights as halves (td_vko_linear_x on the matvec kernels) and the
 * decoder attention (td_vko_dec_attn_x) are held as phases of one
 * dispatch, each computing what its own dispatch would, bit for bit; any
 * other td_vko call in between dispatches the phases held first, then
 * itself. Only td_vko calls may come between begin and end: anything
 * recorded on the td_vk directly would run before the phases held.
 * Without a successful setup, begin and end do nothing. */
#define TD_VKO_STEP_BYTES ((1u << 20) + 256) /* device memory the setup takes */
int td_vko_step_setup(td_vko *o, int groups, char *why, size_t why_len, td_error *err);
int td_vko_step_groups(const td_vko *o);
/* Whether a step since the last call had a barrier's wait pass its limit
 * (its grid was not resident at once after all: its results are wrong):
 * 1, and the step is then off (td_vko_step_groups gives 0; recordings
 * that hold a one-dispatch step must be dropped); 0 if not; -1 (err set)
 * where the barrier's words could not be reset. Read after the
 * submission that ran the step has been waited for. */
int td_vko_step_failed(td_vko *o, td_error *err);
/* For tests: after a successful setup, a grid of groups that the check
 * did not pass (to see a wait pass its limit, and td_vko_step_failed). */
void td_vko_step_groups_unchecked(td_vko *o, int groups);
void td_vko_step_begin(td_vko *o);
void td_vko_step_end(td_vko *o);

/* kc[dst[r] + i] = k[r][i], vc[dst[r] + i] = v[r][i], rows of n. */
void td_vko_kv_put(td_vko *o, int rows, int n, uint64_t k, uint64_t v, uint64_t kc, uint64_t vc,
                   uint64_t dst);

#endif
