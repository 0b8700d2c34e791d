/*
 * vulkan.c: the Whisper network on a Vulkan device (backend.h, API
 * version 2), the same network as the CPU backend (backend/cpu/cpu.c):
 * two GELU convolutions as products, positional embedding, pre-LN
 * encoder blocks, ln_post; decoder with token + positional embedding,
 * causal self-attention over per-slot KV caches, cross-attention over
 * each window's K/V, MLP, final LN, logits against the token embedding.
 *
 * Weights are uploaded once at open, F16 kept F16 (the products convert
 * in registers and accumulate in F32); the convolutions' weights are
 * reordered to [out][tap][in] on the way, so a convolution is a product
 * whose A rows are three consecutive time-major input rows (cpu.c's
 * td_wk_conv3 does the same).
 *
 * Device memory, all sized by plan() from the hyper-parameters and the
 * configuration alone, so memory_need() and open() cannot disagree:
 *   weights    every tensor, in chunks of at most CHUNK bytes
 *   enc_out    [window][n_audio_ctx][n_audio_state]   ln_post output per window slot
 *   cross      per decoder layer, K and V: [window][n_audio_ctx][n_text_state]
 *              (floats, or halves in the first half where cross16)
 *   kv         per decoder layer, K and V: [slot][max_tokens][n_text_state]
 *   work       encoder activations of enc_batch windows (4, or the
 *              window slots where fewer), or the decoder's of
 *              max_rows rows (one region, they never overlap in time)
 *   split      the parts of products split along K (ops.h's
 *              td_vko_split_floats: the encoder's C x n_audio_state
 *              outputs in TD_VKO_SPLIT_PLAN parts; the decoder's products
 *              use it where they fit)
 *   logits     [max_rows][n_vocab] on the device, and as much host-visible
 *              memory to read them back
 *   io         written by the host, read by shaders (TD_VK_MEM_INPUT: in
 *              the card's memory where it maps some for the host): per
 *              call, each row's token and position, KV store offsets
 *              and attention ranges, and the cross-attention's groups of
 *              rows (at most max_rows / 8 + max_windows groups of 8 and
 *              max_rows / 64 + max_windows of 64, each table with its
 *              dispatch's size: ops.h's td_vko_dec_attn_groups and
 *              td_vko_dec_xattn_cm), zeroed at open
 *   sample     the suppression bitmask, each kept row's sampling inputs
 *              and its ~600-byte result (vk_sample.h; max_seq rows)
 *   tab        the addresses that TD_VKO_COLS products write to: each
 *              layer's cross K and V, the encoder's q, k and v
 * plus the device layer's 16 MiB staging buffer, and the one-dispatch
 * decoder step's phase tables (TD_VKO_STEP_BYTES).
 *
 * A call records one command buffer and submits it once (encode: one per
 * group of up to enc_batch windows, after their mels are uploaded, whose
 * products run over all the group's rows; the encoder's q, k and v are
 * one product, and so are all decoder layers' cross K and V of a window,
 * its column blocks written to each layer's buffers). A decode step that
 * keeps its logits on the device for sample() is not submitted by
 * decode() but with the sampling's command buffer (td_vk_submit_later):
 * one host wait per step; every other call (encode, decode,
 * align_weights, a download) runs a step so kept first, kv_copy submits
 * with it (TD_VULKAN_STEP_SUBMITS=2: a submission each, as before). A
 * decode step's command buffer is recorded once per shape (rows,
 * logits rows, the self-attention's split count) and replayed: what
 * changes between steps (tokens, positions, KV offsets, the
 * cross-attention's groups and their count) is read from io.
 * The cross-attention runs per row, or, on NVIDIA's matrix engines where
 * that pays (td_wvk_xcm_pays: a few rows a window on enough windows to
 * fill the card, as a batch's beams, or many rows on few), by groups of
 * up to 64 of a window's rows, each group reading its window's K and V
 * once (ops.h's td_vko_dec_xattn_cm; TD_VULKAN_XCM); TD_VULKAN_XGROUP=1
 * has it read them once for each group of up to 8 of its rows on the
 * shader cores instead (ops.h's td_vko_dec_attn_groups, each row's output
 * the same bits as per row, but slower on an H100: bench/RESULTS.md).
 * The self-attention stays per row (no two rows share a KV slot's keys
 * and count).
 * The decoder's K and V products write straight into the KV slots, an
 * attention's split parts are merged by its own last workgroup, and with
 * few rows LayerNorm runs in the products' prologue and q, k and v are
 * one product: 8 dispatches per layer (17 in the first version, 14 in
 * the second). Products of many rows take the tiled or the
 * cooperative-matrix path, chosen at open by ops.h's td_vko_choose_path
 * (a timed trial, cached per device and driver). sample() runs on the
 * device (vk_sample.h): a decode step that keeps its logits there reads
 * back about 600 bytes per sequence instead of n_vocab floats.
 */
#include "whisper/backend/vulkan/vulkan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "whisper/backend/vulkan/ops.h"
#include "whisper/backend/vulkan/vk_sample.h"

/* Built against the table's version 2 (batched windows, ragged sequences);
 * with an older backend.h this file is empty. */
#if TD_WBACKEND_API_VERSION >= 2

#define CHUNK (512ull << 20)
#define ALIGN 256ull
#define MAX_SEQ_LIMIT 1024
#define MAX_WINDOWS_LIMIT 256
/* Rows (tokens) one decode call may carry: the recordings' keys hold a
 * row count in 16 bits (vk_decode), and the shaders index a step's
 * buffers in 32 bits (logits of every row: rows x n_vocab floats) */
#define MAX_ROWS_LIMIT 65535
#define MAX_CHUNKS 64     /* the weights' allocations (CHUNK bytes at most each) */
/* The cross-attention on the matrix engines (TD_VULKAN_XCM): a call runs
 * it by default where it pays (td_wvk_xcm_pays): a group reads its
 * window's keys and values once for up to TD_VKO_XCM_GROUP rows, where
 * the per-row kernel reads them once a row and splits the keys over many
 * workgroups. A cost model fitted to what an H100 measured (medium, 1500
 * keys, 16 heads, 132 multiprocessors; bench/RESULTS.md, "the
 * cross-attention's rule refitted", vk-xattn's 13 cases in one process),
 * in microseconds a layer:
 *   per row          XCM_ROW_FIX + XCM_ROW_NS x rows x heads x 132 / sms:
 *                    32 rows 110, 64 rows 195 and 213, 160 rows 475, 256
 *                    rows 716 (the model: 108, 196, 460, 724);
 *   matrix engines   XCM_WAVE1 + XCM_WAVE x (waves - 1), waves the
 *                    workgroups (groups x heads) over the multiprocessors,
 *                    rounded up: a workgroup's own time over the keys
 *                    (about 3.4 us a block of 64 keys), whatever its rows:
 *                    16 to 128 workgroups 81 to 88, 144 and 256 135 to
 *                    157, 512 253, 1,024 484 (the model: 82, 140, 255,
 *                    485).
 * The first fit (session 30: a fixed 250 us and 0.24 us a workgroup) was
 * of cases each timed first in its own process, with the card's clocks
 * still low: the first case of a run takes 4x its later time. Both
 * kernels' times grow with the keys alike, so the choice does not depend
 * on them. */
enum { XCM_AUTO, XCM_NEVER, XCM_ALWAYS };
#define XCM_ROW_FIX 20000 /* ns: the per-row kernel's floor */
#define XCM_ROW_NS 172    /* per row and head, on 132 multiprocessors */
#define XCM_WAVE1 82000   /* ns: one wave of matrix-engine workgroups */
#define XCM_WAVE 57500    /* each wave more */

/* vulkan.h; sms 0 taken as an H100's 132 */
int td_wvk_xcm_pays(int R, int heads, int workgroups, int sms)
{
    if (R < 1 || heads < 1 || workgroups < 1)
        return 0;
    int64_t n = sms > 0 ? sms : 132;
    int64_t waves = ((int64_t)workgroups + n - 1) / n;
    int64_t row = (int64_t)XCM_ROW_FIX * n + (int64_t)XCM_ROW_NS * R * heads * 132;
    int64_t xcm = ((int64_t)XCM_WAVE1 + (int64_t)XCM_WAVE * (waves - 1)) * n;
    return row > xcm;
}

/* The encoder runs ENC_BATCH_MAX windows at once where the configuration
 * has that many slots (products of that many times n_audio_ctx rows:
 * fuller grids, fewer dispatches; a transcription hands a GPU backend 4
 * windows a call). Measured on an H100 (bench/RESULTS.md, 2026-12-06,
 * night): medium 23.5 ms a window alone, 21.3 in twos, 20.2 in fours,
 * 19.6 in eights; base 3.6 -> 2.7, small 10.0 -> 7.6. The group's room is
 * in memory_need (the encoder's activations: about 71 MiB a window for
 * medium, 89 for large-v3). */
#define ENC_BATCH_MAX 4
#define ENC_BATCH_FORCE_MAX 8

static uint64_t al(uint64_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

/* ------------------------------------------------------------------ */
/* Plan                                                                 */

typedef struct plan {
    int C, na, nt, nm, nv, nha, nht, nla, nlt, T2;
    int max_seq, max_tokens, max_batch, max_windows, max_rows;
    int enc_batch;           /* windows the encoder runs at once (vk_encode) */
    int xgroup;              /* the cross-attention by groups of a window's rows
                              * (TD_VULKAN_XGROUP=1; default 0; vk_decode) */
    int xcm;                 /* the cross-attention on the matrix engines
                              * (TD_VULKAN_XCM): XCM_AUTO, XCM_NEVER, XCM_ALWAYS */
    int step_submits;        /* TD_VULKAN_STEP_SUBMITS: 1 (a decode step whose
                              * logits stay on the device runs in sample()'s
                              * submission) or 2 (one each, as before) */
    uint64_t weight_bytes;   /* chunks together */
    int n_chunks;
    uint64_t chunk_size[MAX_CHUNKS];
    uint64_t enc_out, cross, kv, work, logits, io, cnt, split;
    uint64_t tab;            /* TD_VKO_COLS's output addresses (vk_open) */
    /* work offsets (bytes): encoder */
    uint64_t e_x, e_h, e_q, e_k, e_v, e_a, e_ff, e_mel, e_x1p;
    /* decoder */
    uint64_t d_x, d_h, d_q, d_k, d_v, d_a, d_ff, d_part;
    /* io offsets (bytes) */
    uint64_t io_tp, io_kvdst, io_self, io_cross, io_last, io_xgrp, io_xcm;
    uint64_t total;
} plan;

/* Sizes in order of upload; visit gets each tensor's byte size. */
typedef struct wvisit {
    plan *P;
    uint64_t cur;            /* bytes used in the current chunk */
} wvisit;

/* Places a region of bytes in the current chunk, or a new one: -1 when
 * all MAX_CHUNKS are taken (a model too large), nothing written. */
static int place(wvisit *v, uint64_t bytes, int *chunk, uint64_t *off)
{
    plan *P = v->P;
    bytes = al(bytes);
    if (P->n_chunks == 0 || v->cur + bytes > CHUNK) {
        if (P->n_chunks == MAX_CHUNKS)
            return -1;
        P->n_chunks++;
        P->chunk_size[P->n_chunks - 1] = 0;
        v->cur = 0;
    }
    *chunk = P->n_chunks - 1;
    *off = v->cur;
    v->cur += bytes;
    P->chunk_size[P->n_chunks - 1] = v->cur;
    return 0;
}

static int hp_ok(const td_whparams *hp, td_error *err)
{
    if (td_whparams_check(hp, err))
        return -1;
    int da = hp->n_audio_state / hp->n_audio_head, dt = hp->n_text_state / hp->n_text_head;
    /* the encoder's heads as td_vko_create takes them (its attention
     * shaders are compiled for those widths), so that memory_need refuses
     * what open would */
    int da_ok = da == 16 || da == 32 || da == 64 || da == 128;
    if (!da_ok || dt > 128 || hp->n_audio_state % 2 || hp->n_text_state % 2 || hp->n_mels % 2) {
        td_error_set(err, TD_EINVAL,
                     "vulkan backend: needs even widths, encoder heads of 16, 32, 64 or 128 "
                     "floats and decoder heads of at most 128");
        return -1;
    }
    return 0;
}

/* A tensor's element count by its role, for plan() (open() checks the
 * model's own against them as it uploads). */
typedef struct tdesc {
    uint64_t n;
    int big;                 /* a 2-D (or conv) weight: stored in the model's wtype */
    int glue;                /* right after the one before, unaligned (one region) */
    int zeros;               /* no model tensor: zeros (k's missing bias) */
} tdesc;

/* The tensors in upload order; returns the count, fills d if not NULL. */
static int tensor_list(const td_whparams *hp, tdesc *d)
{
    uint64_t C = (uint64_t)hp->n_audio_ctx, na = (uint64_t)hp->n_audio_state,
             nt = (uint64_t)hp->n_text_state, nm = (uint64_t)hp->n_mels,
             nv = (uint64_t)hp->n_vocab, tc = (uint64_t)hp->n_text_ctx;
    int n = 0;
#define T(cnt, b) TG(cnt, b, 0, 0)
#define TG(cnt, b, g, z)                         \
    do {                                         \
        if (d)                                   \
            d[n] = (tdesc){(cnt), (b), (g), (z)}; \
        n++;                                     \
    } while (0)
    T(C * na, 0);
    T(3 * nm * na, 1);
    T(na, 0);
    T(3 * na * na, 1);
    T(na, 0);
    T(na, 0);
    T(na, 0);
    for (int l = 0; l < hp->n_audio_layer; l++) {
        /* q, k and v weights in one region, their biases (zeros for k) in
         * another: one product (vk_encode) */
        T(na, 0); T(na, 0);                       /* attn_ln */
        T(na * na, 1);                            /* q */
        TG(na * na, 1, 1, 0);                     /* k */
        TG(na * na, 1, 1, 0);                     /* v */
        T(na, 0);                                 /* q bias */
        TG(na, 0, 1, 1);                          /* zeros for k */
        TG(na, 0, 1, 0);                          /* v bias */
        T(na * na, 1); T(na, 0);                  /* o */
        T(na, 0); T(na, 0);                       /* mlp_ln */
        T(4 * na * na, 1); T(4 * na, 0);          /* mlp0 */
        T(4 * na * na, 1); T(na, 0);              /* mlp2 */
    }
    T(tc * nt, 0);
    T(nv * nt, 1);
    T(nt, 0);
    T(nt, 0);
    for (int l = 0; l < hp->n_text_layer; l++) {
        /* q, k and v weights in one region, and their biases (k has none:
         * zeros) in another: the few-row step does them as one product */
        T(nt, 0); T(nt, 0);                       /* attn_ln */
        T(nt * nt, 1);                            /* q */
        TG(nt * nt, 1, 1, 0);                     /* k */
        TG(nt * nt, 1, 1, 0);                     /* v */
        T(nt, 0);                                 /* q bias */
        TG(nt, 0, 1, 1);                          /* zeros for k */
        TG(nt, 0, 1, 0);                          /* v bias */
        T(nt * nt, 1); T(nt, 0);                  /* o */
        T(nt, 0); T(nt, 0);                       /* cross_ln */
        T(nt * nt, 1); T(nt, 0);                  /* cross q */
        T(nt * nt, 1); T(nt, 0);                  /* cross o */
        T(nt, 0); T(nt, 0);                       /* mlp_ln */
        T(4 * nt * nt, 1); T(4 * nt, 0);          /* mlp0 */
        T(4 * nt * nt, 1); T(nt, 0);              /* mlp2 */
    }
    /* every decoder layer's cross-attention K and V weights, layer by
     * layer, K before V, in one region, and their biases (zeros for K) in
     * another: one product of the encoder's output (vk_encode) */
    for (int l = 0; l < hp->n_text_layer; l++) {
        TG(nt * na, 1, l > 0, 0);                 /* cross k */
        TG(nt * na, 1, 1, 0);                     /* cross v */
    }
    for (int l = 0; l < hp->n_text_layer; l++) {
        TG(nt, 0, l > 0, 1);                      /* zeros for cross k */
        TG(nt, 0, 1, 0);                          /* cross v bias */
    }
#undef T
#undef TG
    return n;
}

static int plan_compute(const td_whparams *hp, enum td_wtype wtype, const td_wconfig *cfg,
                        plan *P, int *chunk_of, uint64_t *off_of, td_error *err)
{
    memset(P, 0, sizeof *P);
    if (hp_ok(hp, err))
        return -1;
    P->C = hp->n_audio_ctx;
    P->T2 = 2 * P->C;
    P->na = hp->n_audio_state;
    P->nt = hp->n_text_state;
    P->nm = hp->n_mels;
    P->nv = hp->n_vocab;
    P->nha = hp->n_audio_head;
    P->nht = hp->n_text_head;
    P->nla = hp->n_audio_layer;
    P->nlt = hp->n_text_layer;
    P->max_seq = cfg->max_seq;
    P->max_tokens = cfg->max_tokens > 0 ? cfg->max_tokens : hp->n_text_ctx;
    P->max_batch = cfg->max_batch_tokens > 0 ? cfg->max_batch_tokens : P->max_tokens;
    P->max_windows = cfg->max_windows > 0 ? cfg->max_windows : 1;
    if (P->max_seq < 1 || P->max_seq > MAX_SEQ_LIMIT)
        return td_error_set(err, TD_EINVAL, "vulkan backend: max_seq %d not in 1..%d",
                            cfg->max_seq, MAX_SEQ_LIMIT), -1;
    if (cfg->max_tokens < 0 || P->max_tokens > hp->n_text_ctx)
        return td_error_set(err, TD_EINVAL, "vulkan backend: max_tokens %d not in 1..%d",
                            cfg->max_tokens, hp->n_text_ctx), -1;
    if (cfg->max_batch_tokens < 0 || P->max_batch > P->max_tokens)
        return td_error_set(err, TD_EINVAL, "vulkan backend: max_batch_tokens %d not in 1..%d",
                            cfg->max_batch_tokens, P->max_tokens), -1;
    if (cfg->max_windows < 0 || P->max_windows > MAX_WINDOWS_LIMIT)
        return td_error_set(err, TD_EINVAL, "vulkan backend: max_windows %d not in 1..%d",
                            cfg->max_windows, MAX_WINDOWS_LIMIT), -1;
    int64_t rows_all = (int64_t)P->max_seq * P->max_batch;
    if (rows_all > MAX_ROWS_LIMIT)
        rows_all = MAX_ROWS_LIMIT;
    if (cfg->max_rows < 0 || cfg->max_rows > rows_all)
        return td_error_set(err, TD_EINVAL, "vulkan backend: max_rows %d not in 1..%lld",
                            cfg->max_rows, (long long)rows_all), -1;
    P->max_rows = cfg->max_rows > 0 ? cfg->max_rows : (int)rows_all;
    if (cfg->compute < TD_WCOMPUTE_AUTO || cfg->compute > TD_WCOMPUTE_INT8)
        return td_error_set(err, TD_EINVAL, "vulkan backend: unknown compute type %d",
                            cfg->compute), -1;

    /* weights */
    int n = tensor_list(hp, NULL);
    tdesc *d = td_vk_calloc((size_t)n, sizeof *d);
    if (!d)
        return td_error_set(err, TD_ENOMEM, "vulkan backend: out of memory"), -1;
    tensor_list(hp, d);
    wvisit v = {P, 0};
    uint64_t ws = wtype == TD_WT_F16 ? 2 : 4;
    int wc = 0;
    uint64_t wo = 0;
    for (int i = 0; i < n; i++) {
        uint64_t bytes = d[i].n * (d[i].big ? ws : 4);
        if (d[i].glue) {
            /* right after the one before: its region was placed whole */
            wo += d[i - 1].n * (d[i - 1].big ? ws : 4);
        } else {
            uint64_t region = bytes;
            for (int j = i + 1; j < n && d[j].glue; j++)
                region += d[j].n * (d[j].big ? ws : 4);
            if (place(&v, region, &wc, &wo)) {
                td_vk_free(d);
                return td_error_set(err, TD_EINVAL, "vulkan backend: model too large"), -1;
            }
        }
        if (chunk_of)
            chunk_of[i] = wc;
        if (off_of)
            off_of[i] = wo;
    }
    td_vk_free(d);
    for (int c = 0; c < P->n_chunks; c++)
        P->weight_bytes += P->chunk_size[c];

    uint64_t C = (uint64_t)P->C, na = (uint64_t)P->na, nt = (uint64_t)P->nt, nm = (uint64_t)P->nm;
    uint64_t W = (uint64_t)P->max_windows, R = (uint64_t)P->max_rows;
    if (W * C * nt >= 1ull << 31) /* the cross K/V product's slot offsets are 32-bit */
        return td_error_set(err, TD_EINVAL, "vulkan backend: %d window slots of %d x %d too many",
                            P->max_windows, P->C, P->nt), -1;
    P->enc_out = al(W * C * na * 4);
    P->cross = al(W * C * nt * 4);
    P->kv = al((uint64_t)P->max_seq * (uint64_t)P->max_tokens * nt * 4);
    uint64_t o = 0;
#define R_(field, bytes) do { P->field = o; o += al(bytes); } while (0)
    /* the decoder's rows */
    R_(d_x, R * nt * 4);
    R_(d_h, R * nt * 4);
    R_(d_q, R * nt * 4);
    R_(d_k, R * nt * 4);
    R_(d_v, R * nt * 4);
    R_(d_a, R * nt * 4);
    R_(d_ff, R * 4 * nt * 4);
    R_(d_part, (uint64_t)td_vko_dec_part_floats(P->max_rows, P->nht, P->nt / P->nht,
                                                P->C > P->max_tokens ? P->C : P->max_tokens) * 4);
    uint64_t dec_end = o;
    /* the encoder's: enc_batch windows of each, one after another */
    uint64_t eb = ENC_BATCH_MAX < W ? ENC_BATCH_MAX : W;
    /* TD_VULKAN_ENC_BATCH=N (1 to ENC_BATCH_FORCE_MAX) sets the group
     * (benchmarks: what grouping gains on a card) */
    const char *ebs = getenv("TD_VULKAN_ENC_BATCH");
    if (ebs && *ebs) {
        char *end;
        long ebv = strtol(ebs, &end, 10);
        if (*end || ebv < 1 || ebv > ENC_BATCH_FORCE_MAX)
            return td_error_set(err, TD_EINVAL,
                                "vulkan backend: TD_VULKAN_ENC_BATCH=%s is not 1 to %d", ebs,
                                ENC_BATCH_FORCE_MAX), -1;
        eb = (uint64_t)ebv < W ? (uint64_t)ebv : W;
    }
    o = 0;
    R_(e_x, eb * C * na * 4);
    R_(e_h, eb * C * na * 4);
    R_(e_q, eb * C * na * 4);
    R_(e_k, eb * C * na * 4);
    R_(e_v, eb * C * na * 4);
    R_(e_a, eb * C * na * 4);
    R_(e_ff, eb * C * 4 * na * 4);
    R_(e_mel, eb * ((uint64_t)P->T2 + 2) * nm * 4);
    R_(e_x1p, eb * ((uint64_t)P->T2 + 2) * na * 4);
    uint64_t enc_end = o;
    P->enc_batch = (int)eb;
    o = dec_end;
    P->work = enc_end > o ? enc_end : o;
    /* TD_VULKAN_XGROUP=1 has the cross-attention run by groups of a
     * window's rows; 0 (or unset) per row: on an H100 the grouped kernel
     * was slower, medium's step 9.7 -> 23.6 ms at 64 rows (one a window),
     * 24.2 -> 30.8 at 256 (four a window; bench/RESULTS.md) */
    const char *xg = getenv("TD_VULKAN_XGROUP");
    if (xg && *xg && strcmp(xg, "0") != 0 && strcmp(xg, "1") != 0)
        return td_error_set(err, TD_EINVAL, "vulkan backend: TD_VULKAN_XGROUP=%s (0 or 1)", xg),
               -1;
    P->xgroup = xg && strcmp(xg, "1") == 0;
    /* TD_VULKAN_XCM: the cross-attention on the matrix engines by groups
     * of up to TD_VKO_XCM_GROUP of a window's rows: auto (or unset) where
     * it pays (td_wvk_xcm_pays), 0 never, 1 always
     * (where the device has the shader; TD_VULKAN_XGROUP=1 wins) */
    const char *xc = getenv("TD_VULKAN_XCM");
    if (xc && *xc && strcmp(xc, "auto") != 0 && strcmp(xc, "0") != 0 && strcmp(xc, "1") != 0)
        return td_error_set(err, TD_EINVAL, "vulkan backend: TD_VULKAN_XCM=%s (auto, 0 or 1)",
                            xc),
               -1;
    P->xcm = !xc || !*xc || strcmp(xc, "auto") == 0 ? XCM_AUTO
             : strcmp(xc, "1") == 0                 ? XCM_ALWAYS
                                                    : XCM_NEVER;
    const char *ss = getenv("TD_VULKAN_STEP_SUBMITS");
    if (ss && *ss && strcmp(ss, "1") != 0 && strcmp(ss, "2") != 0)
        return td_error_set(err, TD_EINVAL, "vulkan backend: TD_VULKAN_STEP_SUBMITS=%s (1 or 2)",
                            ss),
               -1;
    P->step_submits = ss && strcmp(ss, "2") == 0 ? 2 : 1;
    /* TD_VULKAN_ATTN_REG=0 keeps the encoder's attention on the matrix
     * engines in shared memory (ops.h; read by td_vko_create) */
    const char *ar = getenv("TD_VULKAN_ATTN_REG");
    if (ar && *ar && strcmp(ar, "0") != 0 && strcmp(ar, "1") != 0)
        return td_error_set(err, TD_EINVAL, "vulkan backend: TD_VULKAN_ATTN_REG=%s (0 or 1)", ar),
               -1;
    o = 0;
    R_(io_tp, R * 2 * 4);
    R_(io_kvdst, R * 4);
    R_(io_self, R * 2 * 4);
    R_(io_cross, R * 2 * 4);
    R_(io_last, R * 4);
    /* the cross-attention's group table (ops.h): a window's rows fill all
     * its groups but its last, so a call has at most max_rows / G (rounded
     * up) + max_windows groups, and no more than rows (vk_decode) */
    uint64_t xg_max = (R + TD_VKO_ATT_GROUP - 1) / TD_VKO_ATT_GROUP + W;
    R_(io_xgrp, (uint64_t)td_vko_dec_group_ints((int)(xg_max < R ? xg_max : R),
                                                 TD_VKO_ATT_GROUP) * 4);
    uint64_t xc_max = (R + TD_VKO_XCM_GROUP - 1) / TD_VKO_XCM_GROUP + W;
    R_(io_xcm, (uint64_t)td_vko_dec_group_ints((int)(xc_max < R ? xc_max : R),
                                                TD_VKO_XCM_GROUP) * 4);
    P->io = o;
#undef R_
    P->logits = al(R * (uint64_t)P->nv * 4);
    P->cnt = al(R * (uint64_t)P->nht * 4);
    P->tab = al(((uint64_t)P->nlt * 2 + 3) * 8);
    /* the products with the largest K (conv2's 3 na, the MLP's second
     * 4 na) have C x na outputs a window: on an NVIDIA card those with K
     * of 2048 or more (base's MLP output and up) split where one window's
     * rows are too few for the card (ops.c's split_parts); elsewhere only
     * where TD_VULKAN_SPLITK asks for a count (tests); a decoder batch's
     * products (K of 1024 or more) split in it too. The scratch is
     * planned only where the encoder's can split: tiny's K (4 x 384)
     * never reaches TD_VKO_SPLIT_MINK, and its plan keeps the room (its
     * decoder batch's MLP output, K 1536, stays unsplit) */
    const char *sk = getenv("TD_VULKAN_SPLITK");
    int forced = sk && *sk && strcmp(sk, "off") != 0 && strcmp(sk, "auto") != 0;
    P->split = 4 * na >= TD_VKO_SPLIT_MINK || forced
                   ? al((uint64_t)td_vko_split_floats(P->C, P->na) * 4)
                   : 0;
    P->total = P->weight_bytes + P->enc_out + 2 * (uint64_t)P->nlt * (P->cross + P->kv) + P->work +
               2 * P->logits + P->io + P->cnt + P->tab + P->split + (16ull << 20) +
               TD_VKO_STEP_BYTES +
               td_vks_bytes(P->max_seq, P->nv);
    return 0;
}

static int64_t vk_memory_need(const td_whparams *hp, enum td_wtype wtype, const td_wconfig *cfg)
{
    plan P;
    if (plan_compute(hp, wtype, cfg, &P, NULL, NULL, NULL) != 0)
        return -1;
    return (int64_t)P.total;
}

/* ------------------------------------------------------------------ */
/* Context                                                              */

typedef struct wref {
    uint64_t a;              /* device address */
    int f16;
} wref;

typedef struct enc_l {
    uint64_t attn_ln_w, attn_ln_b, q_b, v_b, o_b, mlp_ln_w, mlp_ln_b, mlp0_b, mlp2_b;
    wref q, k, v, o, mlp0, mlp2; /* q, k, v: one region (q's address is all three's) */
} enc_l;

typedef struct dec_l {
    uint64_t attn_ln_w, attn_ln_b, q_b, v_b, o_b, cross_ln_w, cross_ln_b, cq_b, co_b;
    uint64_t qkv_b; /* q's, zeros for k, v's bias: one region (q, k, v weights are one too) */
    uint64_t mlp_ln_w, mlp_ln_b, mlp0_b, mlp2_b;
    wref q, k, v, o, cq, co, mlp0, mlp2;
} dec_l;

struct td_wbackend {
    const td_wmodel *m;
    plan P;
    td_vk *vk;
    td_vko *ops;
    td_vks *smp;            /* sample() on the device (vk_sample.h) */
    unsigned long lost_seen; /* td_vk_later_lost when the kept step was recorded */
    td_vk_buf chunks[64];
    td_vk_buf enc_out, work, logits, readback, io;
    td_vk_buf cnt;          /* dec_attn's merge counters (ops.h): zeroed at open */
    /* TD_VKO_COLS's outputs: [2 l] layer l's cross K, [2 l + 1] its V,
     * [2 n_text_layer + 0..2] the encoder's q, k, v (uint64 addresses) */
    td_vk_buf tab;
    wref cross_w;           /* every layer's cross K and V weights: [layer][k|v][nt][na] */
    uint64_t cross_b;       /* their biases: [layer][zeros | v's bias][nt] */
    td_vk_buf split;        /* the parts of products split along K (ops.h) */
    td_vk_buf *cross_k, *cross_v, *kv_k, *kv_v; /* [n_text_layer] */
    enc_l *el;
    dec_l *dl;
    uint64_t enc_pos, conv1_b, conv2_b, ln_post_w, ln_post_b, dec_pos, dec_ln_w, dec_ln_b;
    wref conv1, conv2, tok;
    unsigned char *encoded; /* [max_windows] */
    int last_rows;          /* logits rows the last decode kept */
    unsigned ops_gen;       /* td_vko_generation when the kept recordings were made */
    char path_note[1024];   /* which product path, and why; the batched steps' kernels */
    int cross16;            /* cross K/V stored as halves (see vk_open) */
    int enc_a_half;         /* the encoder's products take A as halves (vk_open) */
    int enc_att_half;       /* and its attention q, k, v as halves (vk_open) */
    int fuse_ln;            /* LayerNorm in the few-row products (TD_VULKAN_FUSE_LN=0: off) */
    int qkv;                /* q, k and v as one few-row product (TD_VULKAN_QKV=0: off) */
    int step_one;           /* few-row steps' layers as one dispatch (td_vko_step_setup) */
    int xgroup;             /* the cross-attention by groups of a window's rows (plan's
                             * xgroup, where the device takes the grouped shader) */
    int xcm;                /* plan's xcm, XCM_NEVER where the device lacks the shader */
    int xcm_now;            /* the call being recorded runs it (vk_decode) */
    /* align_weights in progress: its heads, its output (host-visible:
     * [al_n][al_rows][n_audio_ctx]) and the rows the current call holds */
    const int *al_heads;
    int al_n, al_rows, al_row0, al_window;
    uint64_t al_out;
    float *mel_t;           /* host: one window's time-major, padded mel */
};

const td_vk_info *td_wvk_device(const td_wbackend *b)
{
    return td_vk_device_info(b->vk);
}

const char *td_wvk_path_note(const td_wbackend *b)
{
    return b->path_note;
}

int td_wvk_cm_probe(td_wbackend *b, int path, int m, int n, int k, unsigned probes, double *ms,
                    td_error *err)
{
    return td_vko_cm_probe(b->ops, (enum td_vko_path)path, m, n, k, probes, ms, err);
}

int td_wvk_enc_batch(const td_wbackend *b)
{
    return b->P.enc_batch;
}

int td_wvk_set_split_parts(td_wbackend *b, int parts)
{
    return td_vko_set_split_parts(b->ops, parts);
}

int td_wvk_cm_peak(td_wbackend *b, int mode, int groups, double *tflops, td_error *err)
{
    return td_vko_cm_peak(b->ops, mode, groups, tflops, err);
}

int td_wvk_set_path(td_wbackend *b, int coopmat, td_error *err)
{
    return td_vko_set_path(b->ops, coopmat ? TD_VKO_COOPMAT : TD_VKO_TILED, err);
}

void td_wvk_profile(td_wbackend *b, int on)
{
    td_vk_profile(b->vk, on);
}

int td_wvk_profile_read(td_wbackend *b, td_vk_prof *out, int max, int reset)
{
    return td_vk_profile_read(b->vk, out, max, reset);
}

int td_wvk_profile_last(const td_wbackend *b, td_vk_disp *out, int max)
{
    return td_vk_profile_last(b->vk, out, max);
}

uint64_t td_wvk_profile_count(const td_wbackend *b)
{
    return td_vk_profile_count(b->vk);
}

static int vk_probe(td_error *err)
{
    return td_vk_probe(err);
}

static void vk_close(td_wbackend *b)
{
    if (!b)
        return;
    if (b->vk) {
        for (int i = 0; i < 64; i++)
            td_vk_buf_destroy(b->vk, &b->chunks[i]);
        td_vk_buf_destroy(b->vk, &b->enc_out);
        td_vk_buf_destroy(b->vk, &b->work);
        td_vk_buf_destroy(b->vk, &b->logits);
        td_vk_buf_destroy(b->vk, &b->readback);
        td_vk_buf_destroy(b->vk, &b->io);
        td_vk_buf_destroy(b->vk, &b->cnt);
        td_vk_buf_destroy(b->vk, &b->tab);
        td_vk_buf_destroy(b->vk, &b->split);
        for (int l = 0; l < b->P.nlt; l++) {
            if (b->cross_k)
                td_vk_buf_destroy(b->vk, &b->cross_k[l]);
            if (b->cross_v)
                td_vk_buf_destroy(b->vk, &b->cross_v[l]);
            if (b->kv_k)
                td_vk_buf_destroy(b->vk, &b->kv_k[l]);
            if (b->kv_v)
                td_vk_buf_destroy(b->vk, &b->kv_v[l]);
        }
        td_vko_free(b->ops);
        td_vks_free(b->smp);
        td_vk_close(b->vk);
    }
    td_vk_free(b->cross_k);
    td_vk_free(b->cross_v);
    td_vk_free(b->kv_k);
    td_vk_free(b->kv_v);
    td_vk_free(b->el);
    td_vk_free(b->dl);
    td_vk_free(b->encoded);
    td_vk_free(b->mel_t);
    td_vk_free(b);
}

/* Upload state: walks the tensors in tensor_list's order. */
typedef struct uploader {
    td_wbackend *b;
    const tdesc *d;
    const int *chunk_of;
    const uint64_t *off_of;
    int i, n;
    td_error *err;
    int rc;
} uploader;

/* Upload tensor t (the next in order) and return its address; conv
 * weights (perm) are reordered [o][i][k] -> [o][k][i] first. */
static uint64_t up(uploader *u, const td_wtensor *t, int *f16, int perm_cin)
{
    if (u->rc)
        return 0;
    if (u->i >= u->n) {
        u->rc = td_error_set(u->err, TD_EINVAL, "vulkan backend: tensor order");
        return 0;
    }
    const tdesc *d = &u->d[u->i];
    if (d->zeros) {
        u->rc = td_error_set(u->err, TD_EINVAL, "vulkan backend: tensor order");
        return 0;
    }
    uint64_t elems = 1;
    for (int k = 0; k < t->n_dims; k++)
        elems *= (uint64_t)t->ne[k];
    size_t es = t->type == TD_WT_F16 ? 2 : 4;
    if (elems != d->n || (!d->big && t->type != TD_WT_F32) ||
        (d->big && t->type != u->b->m->wtype) || t->nbytes != elems * es) {
        u->rc = td_error_set(u->err, TD_EINPUT, "vulkan backend: tensor %s has an unexpected shape or type",
                             t->name);
        return 0;
    }
    td_vk_buf *c = &u->b->chunks[u->chunk_of[u->i]];
    uint64_t off = u->off_of[u->i];
    u->i++;
    if (f16)
        *f16 = t->type == TD_WT_F16;
    if (perm_cin > 0) {
        /* W[o][i][k] (k of 3) -> [o][k][i] */
        size_t c_in = (size_t)perm_cin, c_out = (size_t)(elems / 3 / c_in);
        unsigned char *tmp = td_vk_malloc(elems * es);
        if (!tmp) {
            u->rc = td_error_set(u->err, TD_ENOMEM, "vulkan backend: out of memory");
            return 0;
        }
        const unsigned char *src = t->data;
        for (size_t o = 0; o < c_out; o++)
            for (size_t i = 0; i < c_in; i++)
                for (size_t k = 0; k < 3; k++)
                    memcpy(tmp + ((o * 3 + k) * c_in + i) * es, src + ((o * c_in + i) * 3 + k) * es, es);
        u->rc = td_vk_upload(u->b->vk, c, off, tmp, elems * es, u->err);
        td_vk_free(tmp);
    } else {
        u->rc = td_vk_upload(u->b->vk, c, off, t->data, elems * es, u->err);
    }
    return c->addr + off;
}

/* The next region of the plan holds zeros (floats): k's missing bias.
 * Returns its address. */
static uint64_t up_zeros(uploader *u)
{
    if (u->rc)
        return 0;
    if (u->i >= u->n || !u->d[u->i].zeros) {
        u->rc = td_error_set(u->err, TD_EINVAL, "vulkan backend: tensor order");
        return 0;
    }
    uint64_t bytes = u->d[u->i].n * 4;
    void *z = td_vk_calloc((size_t)bytes, 1);
    if (!z) {
        u->rc = td_error_set(u->err, TD_ENOMEM, "vulkan backend: out of memory");
        return 0;
    }
    td_vk_buf *c = &u->b->chunks[u->chunk_of[u->i]];
    uint64_t off = u->off_of[u->i];
    u->rc = td_vk_upload(u->b->vk, c, off, z, bytes, u->err);
    td_vk_free(z);
    u->i++;
    return c->addr + off;
}

static int vk_open(const td_wmodel *m, const td_wconfig *cfg, td_wbackend **out, td_error *err)
{
    *out = NULL;
    const td_whparams *hp = &m->hp;
    int n_t = tensor_list(hp, NULL);
    int *chunk_of = td_vk_calloc((size_t)n_t, sizeof *chunk_of);
    uint64_t *off_of = td_vk_calloc((size_t)n_t, sizeof *off_of);
    tdesc *d = td_vk_calloc((size_t)n_t, sizeof *d);
    td_wbackend *b = td_vk_calloc(1, sizeof *b);
    int rc;
    if (!chunk_of || !off_of || !d || !b) {
        rc = td_error_set(err, TD_ENOMEM, "vulkan backend: out of memory");
        goto out;
    }
    tensor_list(hp, d);
    b->m = m;
    if (plan_compute(hp, m->wtype, cfg, &b->P, chunk_of, off_of, err) != 0) {
        rc = err ? err->code : TD_EINVAL;
        goto out;
    }
    plan *P = &b->P;
    /* the plan's card (PCI address or UUID); TD_VULKAN_DEVICE for tools */
    rc = td_vk_open(cfg->device ? cfg->device : getenv("TD_VULKAN_DEVICE"), &b->vk, err);
    if (rc)
        goto out;
    const char *prof = getenv("TD_VULKAN_PROFILE");
    if (prof && strcmp(prof, "1") == 0)
        td_vk_profile(b->vk, 1);
    const char *fuse = getenv("TD_VULKAN_FUSE_LN");
    b->fuse_ln = !(fuse && strcmp(fuse, "0") == 0);
    const char *qkv = getenv("TD_VULKAN_QKV");
    b->qkv = !(qkv && strcmp(qkv, "0") == 0);
    rc = td_vko_create(b->vk, P->na / P->nha, P->nt / P->nht, &b->ops, err);
    if (rc)
        goto out;
    if ((rc = td_vks_create(b->vk, P->max_seq, P->nv, &b->smp, err)))
        goto out;
    /* tiled or matrix-engine products: forced, cached or timed (ops.h),
     * on the rows the encoder's products run: a group of windows */
    if (m->wtype == TD_WT_F16 && cfg->compute != TD_WCOMPUTE_F32) {
        rc = td_vko_choose_path(b->ops, P->C * P->enc_batch, P->na, P->na, b->path_note,
                                sizeof b->path_note, err);
    } else {
        rc = td_vko_set_path(b->ops, TD_VKO_TILED, err);
        snprintf(b->path_note, sizeof b->path_note, "products: tiled (%s)",
                 m->wtype == TD_WT_F16 ? "compute f32 asked" : "F32 weights");
    }
    if (rc)
        goto out;
    /* the batched decoder step's products (9 to 256 rows): the path's or
     * the matrix-vector kernels, per row count (ops.h) */
    /* the scratch of products split along K, before the trial below, so
     * that it times a decoder batch's products as they run */
    if (P->split) {
        if ((rc = td_vk_buf_create(b->vk, P->split, TD_VK_MEM_DEVICE, &b->split, err)))
            goto out;
        td_vko_set_split(b->ops, b->split.addr, P->split / 4);
    }
    {
        size_t nl = strlen(b->path_note);
        if (nl + 2 < sizeof b->path_note) {
            memcpy(b->path_note + nl, "; ", 3);
            nl += 2;
        }
        if (m->wtype != TD_WT_F16 || cfg->compute == TD_WCOMPUTE_F32) {
            /* the trial times F16 weights, and F32 results stay those of
             * the tiled products they always were */
            td_vko_set_rows(b->ops, TD_VKO_ROWS_PATH);
            snprintf(b->path_note + nl, sizeof b->path_note - nl,
                     "batched steps: path (%s)",
                     m->wtype == TD_WT_F16 ? "compute f32 asked" : "F32 weights");
        } else if ((rc = td_vko_choose_rows(b->ops, P->nt, P->nt, b->path_note + nl,
                                            sizeof b->path_note - nl, err)))
            goto out;
    }
    /* The cross-attention's K and V as halves (half the bytes the decoder
     * reads every step) where the products already round their inputs to
     * halves (a cooperative-matrix path on F16 weights); floats where
     * results are held to float accuracy (the tiled path, F32 weights or
     * compute). TD_VULKAN_CROSS16=0 or 1 overrides. The buffers are
     * sized for floats either way, so memory_need() does not depend on
     * the trial. */
    int halves_ok = m->wtype == TD_WT_F16 && cfg->compute != TD_WCOMPUTE_F32 &&
                    td_vko_path_get(b->ops) != TD_VKO_TILED;
    b->cross16 = halves_ok;
    {
        const char *c16 = getenv("TD_VULKAN_CROSS16");
        if (c16 && strcmp(c16, "0") == 0)
            b->cross16 = 0;
        else if (c16 && strcmp(c16, "1") == 0)
            b->cross16 = 1;
    }
    /* The encoder's LayerNorm and MLP hand their products A as halves
     * where those products run on matmul_cm.comp (which rounds A to
     * halves as it stages it: the same results, half the bytes loaded;
     * on an H200 the medium encoder's products 15.15 -> 14.16 ms a
     * window). TD_VULKAN_AHALF=0 turns it off. With it, the q, k, v
     * product writes halves for the matrix-engine attention too (on an
     * H100 the medium encoder 20.6 -> 20.2 ms a window, with the kernel
     * then choosing halves by a flag; it is now a compilation of its
     * own: bench/RESULTS.md); TD_VULKAN_ATT_HALF=0 keeps them floats. */
    {
        const char *ah = getenv("TD_VULKAN_AHALF"), *qh = getenv("TD_VULKAN_ATT_HALF");
        b->enc_a_half = !(ah && strcmp(ah, "0") == 0) && m->wtype == TD_WT_F16 &&
                        cfg->compute != TD_WCOMPUTE_F32 && td_vko_a_half_ok(b->ops);
        b->enc_att_half = b->enc_a_half && !(qh && strcmp(qh, "0") == 0);
    }
    /* The cross-attention reads each window's K and V once per group of
     * up to TD_VKO_ATT_GROUP of its rows instead of once per row (ops.h's
     * td_vko_dec_attn_groups: the same bits) where TD_VULKAN_XGROUP=1 asks
     * and the device has the shared memory for it */
    b->xgroup = P->xgroup && td_vko_has_dec_groups(b->ops);
    /* and on the matrix engines, once per group of up to TD_VKO_XCM_GROUP
     * rows, where it pays (td_wvk_xcm_pays; TD_VULKAN_XCM): by default
     * only where the products already round their inputs to halves (as
     * for cross16's default above), not where results are held to float
     * accuracy; TD_VULKAN_XCM=1 takes it anyway */
    int xcm_built = td_vko_has_dec_xcm(b->ops);
    b->xcm = !xcm_built || (P->xcm == XCM_AUTO && !halves_ok) ? XCM_NEVER : P->xcm;
    {
        size_t nl = strlen(b->path_note);
        const char *ar = getenv("TD_VULKAN_ATTN_REG");
        const char *xn =
            b->xgroup                ? "by groups of a window's rows (TD_VULKAN_XGROUP=1)"
            : b->xcm == XCM_ALWAYS   ? "on the matrix engines (TD_VULKAN_XCM=1)"
            : b->xcm == XCM_AUTO     ? "on the matrix engines where a call's rows make it pay "
                                       "(many a window, or a few on many windows), else per row"
            : P->xcm == XCM_NEVER    ? "per row (TD_VULKAN_XCM=0)"
            : !xcm_built && ar && strcmp(ar, "0") == 0 ? "per row (TD_VULKAN_ATTN_REG=0)"
            : !xcm_built             ? "per row (no matrix-engine shader on this device)"
                                     : "per row (float accuracy: F32 weights, compute f32 or the "
                                       "tiled path; TD_VULKAN_XCM=1 takes the matrix engines)";
        snprintf(b->path_note + nl, sizeof b->path_note - nl, "; cross-attention %s%s", xn,
                 b->xgroup || !P->xgroup ? "" : " (no grouped shader on this device)");
    }
    {
        size_t nl = strlen(b->path_note);
        snprintf(b->path_note + nl, sizeof b->path_note - nl, "; cross K/V as %s%s",
                 b->cross16 ? "halves" : "floats",
                 b->enc_a_half ? (b->enc_att_half
                                      ? "; encoder's A (and attention inputs where it can) as halves"
                                      : "; encoder's A as halves")
                               : "");
    }
    if (td_vko_path_get(b->ops) != TD_VKO_TILED) { /* the tiled path runs enc_attn.comp */
        size_t nl = strlen(b->path_note);
        snprintf(b->path_note + nl, sizeof b->path_note - nl, "; encoder %s",
                 td_vko_attn_note(b->ops));
    }

    /* A few-row step's layers as one dispatch of a resident grid
     * (dec_step.comp): TD_VULKAN_STEP_GROUPS=N asks for a grid of N
     * workgroups, 0 or unset for none; "auto" for two a multiprocessor
     * where the device says how many it has. Taken only where the grid
     * passed the check at setup, and only with the few-row products that
     * fuse LayerNorm and take q, k and v as one (the defaults). */
    {
        const char *sg = getenv("TD_VULKAN_STEP_GROUPS");
        int groups = 0;
        if (sg && strcmp(sg, "auto") == 0) {
            int sms = td_vk_device_info(b->vk)->sm_count;
            groups = sms > 0 && sms <= 2048 ? 2 * sms : 0;
        } else if (sg && *sg) {
            char *end;
            long v = strtol(sg, &end, 10);
            if (*end || v < 0 || v > 4096) {
                rc = td_error_set(err, TD_EINVAL,
                                  "vulkan: TD_VULKAN_STEP_GROUPS=%s (auto, or 0 to 4096)", sg);
                goto out;
            }
            groups = (int)v;
        }
        char why[160];
        if (groups > 0 && td_vk_device_info(b->vk)->device_type == VK_PHYSICAL_DEVICE_TYPE_CPU) {
            /* lavapipe: a grid there runs its workgroups on a few threads,
             * and Mesa's compiler ends a shader's loops after 65,535
             * iterations in all, which a step's phases pass (ops.h) */
            snprintf(why, sizeof why, "decoder step: one dispatch a product (a CPU device: "
                     "the one-dispatch step needs a GPU)");
        } else if ((rc = td_vko_step_setup(b->ops, groups, why, sizeof why, err)))
            goto out;
        b->step_one = td_vko_step_groups(b->ops) > 0 && b->fuse_ln && b->qkv;
        size_t nl = strlen(b->path_note);
        snprintf(b->path_note + nl, sizeof b->path_note - nl, "; %s", why);
    }

    b->el = td_vk_calloc((size_t)P->nla, sizeof *b->el);
    b->dl = td_vk_calloc((size_t)P->nlt, sizeof *b->dl);
    b->cross_k = td_vk_calloc((size_t)P->nlt, sizeof *b->cross_k);
    b->cross_v = td_vk_calloc((size_t)P->nlt, sizeof *b->cross_v);
    b->kv_k = td_vk_calloc((size_t)P->nlt, sizeof *b->kv_k);
    b->kv_v = td_vk_calloc((size_t)P->nlt, sizeof *b->kv_v);
    b->encoded = td_vk_calloc((size_t)P->max_windows, 1);
    b->mel_t = td_vk_malloc(((size_t)P->T2 + 2) * (size_t)P->nm * sizeof(float));
    if (!b->el || !b->dl || !b->cross_k || !b->cross_v || !b->kv_k || !b->kv_v || !b->encoded ||
        !b->mel_t) {
        rc = td_error_set(err, TD_ENOMEM, "vulkan backend: out of memory");
        goto out;
    }
    for (int c = 0; c < P->n_chunks; c++)
        if ((rc = td_vk_buf_create(b->vk, P->chunk_size[c], TD_VK_MEM_DEVICE, &b->chunks[c], err)))
            goto out;
    if ((rc = td_vk_buf_create(b->vk, P->enc_out, TD_VK_MEM_DEVICE, &b->enc_out, err)) ||
        (rc = td_vk_buf_create(b->vk, P->work, TD_VK_MEM_DEVICE, &b->work, err)) ||
        (rc = td_vk_buf_create(b->vk, P->logits, TD_VK_MEM_DEVICE, &b->logits, err)) ||
        (rc = td_vk_buf_create(b->vk, P->logits, TD_VK_MEM_READBACK, &b->readback, err)) ||
        (rc = td_vk_buf_create(b->vk, P->io, TD_VK_MEM_INPUT, &b->io, err)) ||
        (rc = td_vk_buf_create(b->vk, P->cnt, TD_VK_MEM_DEVICE, &b->cnt, err)) ||
        (rc = td_vk_buf_create(b->vk, P->tab, TD_VK_MEM_DEVICE, &b->tab, err)) ||
        (rc = td_vk_fill0(b->vk, &b->cnt, 0, P->cnt, err)))
        goto out;
    /* io zeroed: the group tables' unused slots hold row 0, never what the
     * allocation held (a shader may read a slot past its group's rows) */
    memset(b->io.map, 0, P->io);
    for (int l = 0; l < P->nlt; l++)
        if ((rc = td_vk_buf_create(b->vk, P->cross, TD_VK_MEM_DEVICE, &b->cross_k[l], err)) ||
            (rc = td_vk_buf_create(b->vk, P->cross, TD_VK_MEM_DEVICE, &b->cross_v[l], err)) ||
            (rc = td_vk_buf_create(b->vk, P->kv, TD_VK_MEM_DEVICE, &b->kv_k[l], err)) ||
            (rc = td_vk_buf_create(b->vk, P->kv, TD_VK_MEM_DEVICE, &b->kv_v[l], err)))
            goto out;
    {
        uint64_t nl = (uint64_t)P->nlt, n_tab = 2 * nl + 3;
        uint64_t *tab = td_vk_calloc((size_t)n_tab, sizeof *tab);
        if (!tab) {
            rc = td_error_set(err, TD_ENOMEM, "vulkan backend: out of memory");
            goto out;
        }
        for (uint64_t l = 0; l < nl; l++) {
            tab[2 * l] = b->cross_k[l].addr;
            tab[2 * l + 1] = b->cross_v[l].addr;
        }
        tab[2 * nl] = b->work.addr + P->e_q;
        tab[2 * nl + 1] = b->work.addr + P->e_k;
        tab[2 * nl + 2] = b->work.addr + P->e_v;
        rc = td_vk_upload(b->vk, &b->tab, 0, tab, n_tab * 8, err);
        td_vk_free(tab);
        if (rc)
            goto out;
    }
    /* everything zeroed once, so that nothing uninitialized is ever read
     * (the convolution's padding row is zeroed again before each window:
     * the decoder's scratch shares its region, see vk_encode) */
    if ((rc = td_vk_fill0(b->vk, &b->work, 0, b->work.size / 4 * 4, err)))
        goto out;

    /* weights, in tensor_list's order */
    uploader u = {b, d, chunk_of, off_of, 0, n_t, err, 0};
    const td_wenc *e = &m->enc;
    b->enc_pos = up(&u, e->pos, NULL, 0);
    b->conv1.a = up(&u, e->conv1_w, &b->conv1.f16, P->nm);
    b->conv1_b = up(&u, e->conv1_b, NULL, 0);
    b->conv2.a = up(&u, e->conv2_w, &b->conv2.f16, P->na);
    b->conv2_b = up(&u, e->conv2_b, NULL, 0);
    b->ln_post_w = up(&u, e->ln_post.w, NULL, 0);
    b->ln_post_b = up(&u, e->ln_post.b, NULL, 0);
    for (int l = 0; l < P->nla; l++) {
        const td_wenc_layer *s = &e->layers[l];
        enc_l *t = &b->el[l];
        t->attn_ln_w = up(&u, s->attn_ln.w, NULL, 0);
        t->attn_ln_b = up(&u, s->attn_ln.b, NULL, 0);
        t->q.a = up(&u, s->attn.q.w, &t->q.f16, 0);
        t->k.a = up(&u, s->attn.k.w, &t->k.f16, 0);
        t->v.a = up(&u, s->attn.v.w, &t->v.f16, 0);
        t->q_b = up(&u, s->attn.q.b, NULL, 0);
        up_zeros(&u);
        t->v_b = up(&u, s->attn.v.b, NULL, 0);
        t->o.a = up(&u, s->attn.o.w, &t->o.f16, 0);
        t->o_b = up(&u, s->attn.o.b, NULL, 0);
        t->mlp_ln_w = up(&u, s->mlp_ln.w, NULL, 0);
        t->mlp_ln_b = up(&u, s->mlp_ln.b, NULL, 0);
        t->mlp0.a = up(&u, s->mlp0.w, &t->mlp0.f16, 0);
        t->mlp0_b = up(&u, s->mlp0.b, NULL, 0);
        t->mlp2.a = up(&u, s->mlp2.w, &t->mlp2.f16, 0);
        t->mlp2_b = up(&u, s->mlp2.b, NULL, 0);
    }
    const td_wdec *dd = &m->dec;
    b->dec_pos = up(&u, dd->pos, NULL, 0);
    b->tok.a = up(&u, dd->tok, &b->tok.f16, 0);
    b->dec_ln_w = up(&u, dd->ln.w, NULL, 0);
    b->dec_ln_b = up(&u, dd->ln.b, NULL, 0);
    for (int l = 0; l < P->nlt; l++) {
        const td_wdec_layer *s = &dd->layers[l];
        dec_l *t = &b->dl[l];
        t->attn_ln_w = up(&u, s->attn_ln.w, NULL, 0);
        t->attn_ln_b = up(&u, s->attn_ln.b, NULL, 0);
        t->q.a = up(&u, s->attn.q.w, &t->q.f16, 0);
        t->k.a = up(&u, s->attn.k.w, &t->k.f16, 0);
        t->v.a = up(&u, s->attn.v.w, &t->v.f16, 0);
        t->q_b = up(&u, s->attn.q.b, NULL, 0);
        up_zeros(&u);
        t->v_b = up(&u, s->attn.v.b, NULL, 0);
        t->qkv_b = t->q_b;
        t->o.a = up(&u, s->attn.o.w, &t->o.f16, 0);
        t->o_b = up(&u, s->attn.o.b, NULL, 0);
        t->cross_ln_w = up(&u, s->cross_ln.w, NULL, 0);
        t->cross_ln_b = up(&u, s->cross_ln.b, NULL, 0);
        t->cq.a = up(&u, s->cross.q.w, &t->cq.f16, 0);
        t->cq_b = up(&u, s->cross.q.b, NULL, 0);
        t->co.a = up(&u, s->cross.o.w, &t->co.f16, 0);
        t->co_b = up(&u, s->cross.o.b, NULL, 0);
        t->mlp_ln_w = up(&u, s->mlp_ln.w, NULL, 0);
        t->mlp_ln_b = up(&u, s->mlp_ln.b, NULL, 0);
        t->mlp0.a = up(&u, s->mlp0.w, &t->mlp0.f16, 0);
        t->mlp0_b = up(&u, s->mlp0.b, NULL, 0);
        t->mlp2.a = up(&u, s->mlp2.w, &t->mlp2.f16, 0);
        t->mlp2_b = up(&u, s->mlp2.b, NULL, 0);
    }
    for (int l = 0; l < P->nlt; l++) {
        const td_wdec_layer *s = &dd->layers[l];
        wref wk, wv;
        wk.a = up(&u, s->cross.k.w, &wk.f16, 0);
        wv.a = up(&u, s->cross.v.w, &wv.f16, 0);
        if (l == 0)
            b->cross_w = wk;
    }
    for (int l = 0; l < P->nlt; l++) {
        const td_wdec_layer *s = &dd->layers[l];
        uint64_t zb = up_zeros(&u);
        up(&u, s->cross.v.b, NULL, 0);
        if (l == 0)
            b->cross_b = zb;
    }
    if ((rc = u.rc))
        goto out;
    if (u.i != n_t) {
        rc = td_error_set(err, TD_EINVAL, "vulkan backend: %d of %d tensors uploaded", u.i, n_t);
        goto out;
    }
    *out = b;
    b = NULL;
    rc = TD_OK;
out:
    vk_close(b);
    td_vk_free(chunk_of);
    td_vk_free(off_of);
    td_vk_free(d);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Encoder                                                              */

static uint64_t WK(const td_wbackend *b, uint64_t off)
{
    return b->work.addr + off;
}

static void lin(td_wbackend *b, int m, int n, int k, uint64_t a, int lda, wref w, uint64_t bias,
                uint64_t c, int ldc, unsigned flags)
{
    td_vko_linear(b->ops, m, n, k, a, lda, w.a, w.f16, k, bias, 0, 0, c, ldc,
                  flags | (bias ? TD_VKO_BIAS : 0));
}

static int step_check(td_wbackend *b, td_error *err);

static int vk_encode(td_wbackend *b, int n_win, const int *windows, const float *const *mels,
                     td_error *err)
{
    /* a decode step kept for the sampling's submission runs first: what
     * follows writes its inputs */
    int frc = td_vk_flush(b->vk, err);
    if (frc == TD_OK)
        frc = step_check(b, err);
    if (frc)
        return frc;
    plan *P = &b->P;
    if (n_win < 1 || !windows || !mels)
        return td_error_set(err, TD_EINVAL, "vulkan backend: encode of %d windows", n_win);
    for (int i = 0; i < n_win; i++) {
        if (windows[i] < 0 || windows[i] >= P->max_windows)
            return td_error_set(err, TD_EINVAL, "vulkan backend: window slot %d not in 0..%d",
                                windows[i], P->max_windows - 1);
        for (int j = 0; j < i; j++)
            if (windows[j] == windows[i])
                return td_error_set(err, TD_EINVAL, "vulkan backend: window slot %d twice",
                                    windows[i]);
        if (!mels[i])
            return td_error_set(err, TD_EINVAL, "vulkan backend: no mel for window %d", i);
    }
    int C = P->C, na = P->na, nt = P->nt, nm = P->nm, T2 = P->T2;
    td_vko *o = b->ops;
    /* per window: its mel, its first convolution's output, its rows of
     * the activations (bytes) */
    uint64_t mel_w = (uint64_t)(T2 + 2) * nm * 4, x1p_w = (uint64_t)(T2 + 2) * na * 4,
             act_w = (uint64_t)C * na * 4;
    uint64_t ex = WK(b, P->e_x), eh = WK(b, P->e_h), eq = WK(b, P->e_q), ek = WK(b, P->e_k),
             ev = WK(b, P->e_v), ea = WK(b, P->e_a), eff = WK(b, P->e_ff);
    uint64_t emel = WK(b, P->e_mel), x1p = WK(b, P->e_x1p);
    /* groups of up to enc_batch windows: one command buffer each, whose
     * products run over all its windows' rows (nb x C) */
    for (int g0 = 0; g0 < n_win; g0 += P->enc_batch) {
        int nb = n_win - g0 < P->enc_batch ? n_win - g0 : P->enc_batch, rows = nb * C;
        for (int i = 0; i < nb; i++) {
            b->encoded[windows[g0 + i]] = 0;
            /* mel [nm][T2] -> time-major rows 1..T2 of [(T2 + 2)][nm] (rows 0, T2+1 zero) */
            float *mt = b->mel_t;
            memset(mt, 0, (size_t)nm * sizeof *mt);
            memset(mt + (size_t)(T2 + 1) * nm, 0, (size_t)nm * sizeof *mt);
            const float *mel = mels[g0 + i];
            for (int t0 = 0; t0 < T2; t0 += 64) {
                int t1 = t0 + 64 < T2 ? t0 + 64 : T2;
                for (int c = 0; c < nm; c++)
                    for (int t = t0; t < t1; t++)
                        mt[(size_t)(t + 1) * nm + c] = mel[(size_t)c * T2 + t];
            }
            int rc = td_vk_upload(b->vk, &b->work, P->e_mel + i * mel_w, mt, mel_w, err);
            if (rc)
                return rc;
        }
        int rc = td_vk_begin(b->vk, err);
        if (rc)
            return rc;
        /* the second convolution's left padding, row 0 of each x1p, which
         * the first never writes: the decoder's scratch shares this region,
         * and a decode step of many rows writes over it (zeroed in this
         * command buffer, not a submission of its own) */
        for (int i = 0; i < nb; i++) {
            td_vk_zero(b->vk, &b->work, P->e_x1p + i * x1p_w, (uint64_t)na * 4);
            td_vk_concurrent(b->vk, 1);
        }
        td_vk_concurrent(b->vk, 0);
        /* conv1 (stride 1): A row t = mel_t rows t .. t+2; GELU -> x1p rows 1..T2 */
        for (int i = 0; i < nb; i++) {
            td_vko_linear(o, T2, na, 3 * nm, emel + i * mel_w, nm, b->conv1.a, b->conv1.f16,
                          3 * nm, b->conv1_b, 0, 0, x1p + i * x1p_w + (uint64_t)na * 4, na,
                          TD_VKO_BIAS | TD_VKO_GELU);
            td_vk_concurrent(b->vk, 1);
        }
        td_vk_concurrent(b->vk, 0);
        /* conv2 (stride 2), GELU, + positional embedding: one window after
         * another, not together, so that each may split along K as a
         * window alone does (a split refuses dispatches that run
         * together), and every window of a group is computed alike */
        for (int i = 0; i < nb; i++)
            td_vko_linear(o, C, na, 3 * na, x1p + i * x1p_w, 2 * na, b->conv2.a, b->conv2.f16,
                          3 * na, b->conv2_b, b->enc_pos, na, ex + i * act_w, na,
                          TD_VKO_BIAS | TD_VKO_GELU | TD_VKO_ADD);
        for (int l = 0; l < P->nla; l++) {
            const enc_l *L = &b->el[l];
            /* on the matrix engines with F16 weights, the products' A
             * from LayerNorm and the MLP's GELU as halves (TD_VKO_AHALF:
             * half the bytes loaded, the same results: those kernels
             * round A to halves anyway) */
            int ah = b->enc_a_half && td_vko_a_half_ok(o) && L->q.f16 && L->mlp0.f16 &&
                     L->mlp2.f16;
            unsigned af = ah ? TD_VKO_AHALF : 0;
            /* and q, k, v written as halves for the matrix-engine
             * attention, which rounds them to halves anyway (k and v the
             * same bits; window i's rows then start i C na halves on) */
            int qh = ah && b->enc_att_half;
            for (int i = 0; i < nb && qh; i++)
                qh = td_vko_enc_attn_half_ok(o, na, eq + i * act_w / 2, ek + i * act_w / 2,
                                             ev + i * act_w / 2);
            if (ah)
                td_vko_layernorm_half(o, rows, na, ex, na, L->attn_ln_w, L->attn_ln_b, eh, na);
            else
                td_vko_layernorm(o, rows, na, ex, na, L->attn_ln_w, L->attn_ln_b, eh, na, 0);
            /* q, k and v: one product of their weights (one region), its
             * column blocks to eq, ek and ev (the table's last three) */
            td_vko_linear_x(o, &(td_vko_lin){.m = rows, .n = 3 * na, .k = na, .a = eh,
                                             .lda = na, .w = L->q.a, .w_f16 = L->q.f16,
                                             .ldw = na, .bias = L->q_b, .c = eq, .ldc = na,
                                             .flags = TD_VKO_BIAS | TD_VKO_COLS | af |
                                                      (qh ? TD_VKO_HALF : 0),
                                             .split = na,
                                             .tab = b->tab.addr + (uint64_t)P->nlt * 2 * 8});
            /* attention within each window */
            for (int i = 0; i < nb; i++) {
                if (qh)
                    td_vko_enc_attn_half(o, C, P->nha, na, eq + i * act_w / 2,
                                         ek + i * act_w / 2, ev + i * act_w / 2, ea + i * act_w);
                else
                    td_vko_enc_attn(o, C, P->nha, na, eq + i * act_w, ek + i * act_w,
                                    ev + i * act_w, ea + i * act_w);
                td_vk_concurrent(b->vk, 1);
            }
            td_vk_concurrent(b->vk, 0);
            lin(b, rows, na, na, ea, na, L->o, L->o_b, ex, na, TD_VKO_ACC);
            if (ah) {
                td_vko_layernorm_half(o, rows, na, ex, na, L->mlp_ln_w, L->mlp_ln_b, eh, na);
                td_vko_linear_x(o, &(td_vko_lin){.m = rows, .n = 4 * na, .k = na, .a = eh,
                                                 .lda = na, .w = L->mlp0.a, .w_f16 = 1,
                                                 .ldw = na, .bias = L->mlp0_b, .c = eff,
                                                 .ldc = 4 * na,
                                                 .flags = (L->mlp0_b ? TD_VKO_BIAS : 0) |
                                                          TD_VKO_GELU | TD_VKO_HALF |
                                                          TD_VKO_AHALF});
                td_vko_linear_x(o, &(td_vko_lin){.m = rows, .n = na, .k = 4 * na, .a = eff,
                                                 .lda = 4 * na, .w = L->mlp2.a, .w_f16 = 1,
                                                 .ldw = 4 * na, .bias = L->mlp2_b, .c = ex,
                                                 .ldc = na,
                                                 .flags = (L->mlp2_b ? TD_VKO_BIAS : 0) |
                                                          TD_VKO_ACC | TD_VKO_AHALF});
            } else {
                td_vko_layernorm(o, rows, na, ex, na, L->mlp_ln_w, L->mlp_ln_b, eh, na, 0);
                lin(b, rows, 4 * na, na, eh, na, L->mlp0, L->mlp0_b, eff, 4 * na, TD_VKO_GELU);
                lin(b, rows, na, 4 * na, eff, 4 * na, L->mlp2, L->mlp2_b, ex, na, TD_VKO_ACC);
            }
        }
        /* ln_post into each window's slot */
        for (int i = 0; i < nb; i++) {
            uint64_t eo = b->enc_out.addr + (uint64_t)windows[g0 + i] * act_w;
            td_vko_layernorm(o, C, na, ex + i * act_w, na, b->ln_post_w, b->ln_post_b, eo, na,
                             0);
            td_vk_concurrent(b->vk, 1);
        }
        td_vk_concurrent(b->vk, 0);
        /* every decoder layer's cross-attention K and V of each window:
         * one product of all their weights, each column block written to
         * its layer's K or V at the window's slot, as halves or floats */
        for (int i = 0; i < nb; i++) {
            int w = windows[g0 + i];
            uint64_t eo = b->enc_out.addr + (uint64_t)w * act_w;
            td_vko_linear_x(o, &(td_vko_lin){.m = C, .n = 2 * P->nlt * nt, .k = na, .a = eo,
                                             .lda = na, .w = b->cross_w.a,
                                             .w_f16 = b->cross_w.f16, .ldw = na,
                                             .bias = b->cross_b, .c = eo, .ldc = nt,
                                             .flags = TD_VKO_BIAS | TD_VKO_COLS |
                                                      (b->cross16 ? TD_VKO_HALF : 0),
                                             .split = nt, .tab = b->tab.addr,
                                             .cofs = (uint32_t)((uint64_t)w * C * nt)});
            td_vk_concurrent(b->vk, 1);
        }
        td_vk_concurrent(b->vk, 0);
        rc = td_vk_submit(b->vk, err);
        if (rc)
            return rc;
        for (int i = 0; i < nb; i++)
            b->encoded[windows[g0 + i]] = 1;
    }
    return TD_OK;
}

static int vk_encoder_output(td_wbackend *b, int window, float *out, td_error *err)
{
    plan *P = &b->P;
    if (window < 0 || window >= P->max_windows || !b->encoded[window])
        return td_error_set(err, TD_EINVAL, "vulkan backend: window slot %d not encoded", window);
    uint64_t n = (uint64_t)P->C * P->na * 4;
    return td_vk_download(b->vk, &b->enc_out, (uint64_t)window * n, out, n, err);
}

/* ------------------------------------------------------------------ */
/* Decoder                                                              */

/* Record one decode step of R rows (rows_out of logits, the last row of
 * each sequence unless all_logits), self-attention over at most max_self
 * keys, the logits copied to the readback buffer when read. Everything
 * that varies between steps of the same shape is read from io. */
static void dec_record(td_wbackend *b, int R, int rows_out, int all_logits, int max_self,
                       int read)
{
    plan *P = &b->P;
    int nt = P->nt, C = P->C;
    td_vko *o = b->ops;
    uint64_t dx = WK(b, P->d_x), dh = WK(b, P->d_h), dq = WK(b, P->d_q), da = WK(b, P->d_a),
             dff = WK(b, P->d_ff), part = WK(b, P->d_part);
    uint64_t ioa = b->io.addr;
    /* LayerNorm: for few rows in the products' prologue (each workgroup
     * computes its rows' statistics while its first weight loads are in
     * flight), saving 3 dispatches and barriers per layer; for more rows,
     * or with TD_VULKAN_FUSE_LN=0, one dispatch into dh before the
     * products. (The first version's prologue, which waited for the
     * statistics before loading weights, was slower than the dispatch on
     * the H100: 3.47 against 2.88 ms per medium step.) */
    int fuse = b->fuse_ln && td_vko_fuses_ln(o, R);
    /* q, k and v as one product (their weights are one region) where the
     * few-row product takes it, unless TD_VULKAN_QKV=0 */
    int qkv = b->qkv && td_vko_takes_qkv(o, R);
    td_vko_embed(o, R, nt, b->tok.a, b->tok.f16, b->dec_pos, ioa + P->io_tp, dx);
#define LIN(a_, w_, bias_, c_, n_, k_, flags_)                                                  \
    td_vko_linear_x(o, &(td_vko_lin){.m = R, .n = (n_), .k = (k_), .a = (a_), .lda = (k_),      \
                                     .w = (w_).a, .w_f16 = (w_).f16, .ldw = (k_),            \
                                     .bias = (bias_), .c = (c_), .ldc = (n_),                \
                                     .flags = (flags_) | ((bias_) ? TD_VKO_BIAS : 0)})
#define LIN_LN(lnw_, lnb_, w_, bias_, c_, n_, flags_, rowidx_)                                 \
    td_vko_linear_x(o, &(td_vko_lin){.m = R, .n = (n_), .k = nt, .a = fuse ? dx : dh,          \
                                     .lda = nt, .w = (w_).a, .w_f16 = (w_).f16, .ldw = nt,    \
                                     .bias = (bias_), .c = (c_), .ldc = (n_),                \
                                     .flags = (flags_) | ((bias_) ? TD_VKO_BIAS : 0) |       \
                                              (fuse ? TD_VKO_LN : 0),                       \
                                     .ln_w = (lnw_), .ln_b = (lnb_), .rowidx = (rowidx_)})
    /* the layers as one dispatch where set up (few rows: the products
     * that fuse LayerNorm and take q, k and v as one) */
    int one = b->step_one && fuse && qkv && R <= 8;
    if (one)
        td_vko_step_begin(o);
    for (int l = 0; l < P->nlt; l++) {
        const dec_l *L = &b->dl[l];
        if (!fuse)
            td_vko_layernorm(o, R, nt, dx, nt, L->attn_ln_w, L->attn_ln_b, dh, nt, 0);
        if (qkv) {
            /* q, and k and v straight into the KV slots: one product */
            td_vko_linear_x(o, &(td_vko_lin){.m = R, .n = 3 * nt, .k = nt, .a = fuse ? dx : dh,
                                             .lda = nt, .w = L->q.a, .w_f16 = L->q.f16,
                                             .ldw = nt, .bias = L->qkv_b, .c = dq, .ldc = nt,
                                             .flags = TD_VKO_BIAS | TD_VKO_QKV |
                                                      (fuse ? TD_VKO_LN : 0),
                                             .ln_w = L->attn_ln_w, .ln_b = L->attn_ln_b,
                                             .rowidx = ioa + P->io_kvdst,
                                             .c2 = b->kv_k[l].addr, .c3 = b->kv_v[l].addr,
                                             .split = nt});
        } else {
            /* the same as three products: the first waits for what came
             * before, the other two run beside it */
            LIN_LN(L->attn_ln_w, L->attn_ln_b, L->q, L->q_b, dq, nt, 0, 0);
            td_vk_concurrent(b->vk, 1);
            LIN_LN(L->attn_ln_w, L->attn_ln_b, L->k, 0, b->kv_k[l].addr, nt, TD_VKO_ROWIDX,
                   ioa + P->io_kvdst);
            LIN_LN(L->attn_ln_w, L->attn_ln_b, L->v, L->v_b, b->kv_v[l].addr, nt, TD_VKO_ROWIDX,
                   ioa + P->io_kvdst);
            td_vk_concurrent(b->vk, 0);
        }
        td_vko_dec_attn(o, R, P->nht, nt, dq, da, b->kv_k[l].addr, b->kv_v[l].addr,
                        ioa + P->io_self, max_self, part, b->cnt.addr);
        LIN(da, L->o, L->o_b, dx, nt, nt, TD_VKO_ACC);
        if (!fuse)
            td_vko_layernorm(o, R, nt, dx, nt, L->cross_ln_w, L->cross_ln_b, dh, nt, 0);
        LIN_LN(L->cross_ln_w, L->cross_ln_b, L->cq, L->cq_b, dq, nt, 0, 0);
        for (int i = 0; i < b->al_n; i++) /* word alignment's heads of this layer */
            if (b->al_heads[2 * i] == l)
                td_vko_att_weights_x(o, R, nt, dq, b->cross_k[l].addr,
                                     (uint64_t)b->al_window * C * nt, C,
                                     b->al_heads[2 * i + 1] * (nt / P->nht),
                                     b->al_out + (uint64_t)i * b->al_rows * C * 4, b->al_row0,
                                     b->cross16);
        /* the cross-attention: on the matrix engines or by groups of a
         * window's rows (the tables vk_decode wrote into io), else per row */
        if (b->xcm_now)
            td_vko_dec_xattn_cm(o, nt, dq, da, b->cross_k[l].addr, b->cross_v[l].addr,
                                ioa + P->io_cross, &b->io, P->io_xcm, b->cross16);
        else if (b->xgroup)
            td_vko_dec_attn_groups(o, nt, dq, da, b->cross_k[l].addr, b->cross_v[l].addr,
                                   ioa + P->io_cross, &b->io, P->io_xgrp, C, part, b->cnt.addr,
                                   b->cross16);
        else
            td_vko_dec_attn_x(o, R, P->nht, nt, dq, da, b->cross_k[l].addr,
                              b->cross_v[l].addr, ioa + P->io_cross, C, part, b->cnt.addr,
                              b->cross16);
        LIN(da, L->co, L->co_b, dx, nt, nt, TD_VKO_ACC);
        if (!fuse)
            td_vko_layernorm(o, R, nt, dx, nt, L->mlp_ln_w, L->mlp_ln_b, dh, nt, 0);
        LIN_LN(L->mlp_ln_w, L->mlp_ln_b, L->mlp0, L->mlp0_b, dff, 4 * nt, TD_VKO_GELU, 0);
        LIN(dff, L->mlp2, L->mlp2_b, dx, nt, 4 * nt, TD_VKO_ACC);
    }
#undef LIN
#undef LIN_LN
    if (one)
        td_vko_step_end(o);
    td_vko_layernorm(o, rows_out, nt, dx, nt, b->dec_ln_w, b->dec_ln_b, dh, nt,
                     all_logits ? 0 : ioa + P->io_last);
    lin(b, rows_out, P->nv, nt, dh, nt, b->tok, 0, b->logits.addr, P->nv, 0);
    if (read)
        td_vk_copy(b->vk, &b->logits, 0, &b->readback, 0, (uint64_t)rows_out * P->nv * 4);
}

/* The cross-attention's group table (ops.h's) for a call: each window's
 * rows in row order, g at a time, the windows in slot order: the same
 * groups for the same call, every row in one. Its size goes with the
 * table (an indirect dispatch), so the kept recordings need no key for
 * it. */
static void fill_groups(const plan *P, int32_t *table, int g, int n_seq, const td_wseq *seqs)
{
    /* per window: its rows, its first group, its rows placed so far
     * (io is only written: host-visible memory can be slow to read) */
    int wrows[MAX_WINDOWS_LIMIT], wfirst[MAX_WINDOWS_LIMIT], wdone[MAX_WINDOWS_LIMIT];
    memset(wrows, 0, (size_t)P->max_windows * sizeof *wrows);
    memset(wdone, 0, (size_t)P->max_windows * sizeof *wdone);
    for (int s = 0; s < n_seq; s++)
        wrows[seqs[s].window] += seqs[s].n_tokens;
    int n_groups = 0;
    for (int w = 0; w < P->max_windows; w++) {
        wfirst[w] = n_groups;
        n_groups += (wrows[w] + g - 1) / g;
    }
    int r = 0;
    for (int s = 0; s < n_seq; s++)
        for (int t = 0; t < seqs[s].n_tokens; t++, r++) {
            int w = seqs[s].window, i = wdone[w]++;
            int32_t *e = table + TD_VKO_GROUP_HEAD + (size_t)(wfirst[w] + i / g) * (g + 1);
            if (i % g == 0) /* the group's size: g, or the window's rows left */
                e[0] = wrows[w] - i < g ? wrows[w] - i : g;
            e[1 + i % g] = r;
        }
    if (g == TD_VKO_XCM_GROUP)
        td_vko_dec_xcm_head(table, n_groups, P->nht);
    else
        td_vko_dec_group_head(table, n_groups, P->nht, P->C);
}

static int vk_decode(td_wbackend *b, int n_seq, const td_wseq *seqs, const int32_t *tokens,
                     int all_logits, float *logits, td_error *err)
{
    /* nothing to sample until this step has run */
    b->last_rows = 0;
    td_vks_kept(b->smp, 0);
    /* a decode step kept for the sampling's submission runs first: what
     * follows writes its inputs */
    int frc = td_vk_flush(b->vk, err);
    if (frc == TD_OK)
        frc = step_check(b, err);
    if (frc)
        return frc;
    plan *P = &b->P;
    if (all_logits && !logits) /* every row's logits are kept nowhere (backend.h) */
        return td_error_set(err, TD_EINVAL, "vulkan backend: all_logits without a logits buffer");
    if (n_seq < 1 || n_seq > P->max_seq || !seqs || !tokens)
        return td_error_set(err, TD_EINVAL, "vulkan backend: decode of %d sequences (1..%d)", n_seq,
                            P->max_seq);
    int R = 0;
    for (int s = 0; s < n_seq; s++) {
        const td_wseq *q = &seqs[s];
        if (q->slot < 0 || q->slot >= P->max_seq)
            return td_error_set(err, TD_EINVAL, "vulkan backend: KV slot %d not in 0..%d",
                                (int)q->slot, P->max_seq - 1);
        for (int t = 0; t < s; t++)
            if (seqs[t].slot == q->slot)
                return td_error_set(err, TD_EINVAL, "vulkan backend: KV slot %d twice in a call",
                                    (int)q->slot);
        if (q->window < 0 || q->window >= P->max_windows || !b->encoded[q->window])
            return td_error_set(err, TD_EINVAL, "vulkan backend: window slot %d not encoded",
                                (int)q->window);
        if (q->n_tokens < 1 || q->n_tokens > P->max_batch)
            return td_error_set(err, TD_EINVAL, "vulkan backend: %d tokens for one sequence (1..%d)",
                                (int)q->n_tokens, P->max_batch);
        /* n_tokens is 1..max_batch here, so the subtraction cannot wrap
         * (n_past + n_tokens could, for an n_past near INT_MAX) */
        if (q->n_past < 0 || q->n_past > P->max_tokens - q->n_tokens)
            return td_error_set(err, TD_EINVAL,
                                "vulkan backend: positions %d..%lld past the cache (%d)",
                                (int)q->n_past, (long long)q->n_past + q->n_tokens - 1,
                                P->max_tokens);
        R += q->n_tokens;
        if (R > P->max_rows)
            return td_error_set(err, TD_EINVAL, "vulkan backend: more than %d rows in one call",
                                P->max_rows);
    }
    for (int r = 0; r < R; r++)
        if (tokens[r] < 0 || tokens[r] >= P->nv)
            return td_error_set(err, TD_EINVAL, "vulkan backend: token %d out of range",
                                (int)tokens[r]);

    int nt = P->nt, C = P->C;
    unsigned char *io = b->io.map;
    int32_t *tp = (int32_t *)(io + P->io_tp), *kvdst = (int32_t *)(io + P->io_kvdst);
    int32_t *self = (int32_t *)(io + P->io_self), *cross = (int32_t *)(io + P->io_cross);
    int32_t *last = (int32_t *)(io + P->io_last);
    int r = 0;
    for (int s = 0; s < n_seq; s++) {
        const td_wseq *q = &seqs[s];
        int32_t slot0 = q->slot * P->max_tokens * nt;
        for (int t = 0; t < q->n_tokens; t++, r++) {
            int pos = q->n_past + t;
            tp[2 * r] = tokens[r];
            tp[2 * r + 1] = pos;
            kvdst[r] = slot0 + pos * nt;
            self[2 * r] = slot0;
            self[2 * r + 1] = pos + 1;
            cross[2 * r] = q->window * C * nt;
            cross[2 * r + 1] = C;
        }
        last[s] = r - 1;
    }
    /* The cross-attention on the matrix engines where it pays (td_wvk_xcm_pays;
     * TD_VULKAN_XCM: plan) */
    b->xcm_now = 0;
    if (b->xcm != XCM_NEVER && !b->xgroup) {
        int groups = 0;
        for (int s = 0; s < n_seq; s++) {
            int seen = 0, rows = 0;
            for (int t = 0; t < s && !seen; t++)
                seen = seqs[t].window == seqs[s].window;
            if (seen)
                continue;
            for (int t = s; t < n_seq; t++)
                rows += seqs[t].window == seqs[s].window ? seqs[t].n_tokens : 0;
            groups += (rows + TD_VKO_XCM_GROUP - 1) / TD_VKO_XCM_GROUP;
        }
        b->xcm_now = b->xcm == XCM_ALWAYS ||
                     td_wvk_xcm_pays(R, P->nht, groups * P->nht,
                                     td_vk_device_info(b->vk)->sm_count);
    }
    if (b->xcm_now)
        fill_groups(P, (int32_t *)(io + P->io_xcm), TD_VKO_XCM_GROUP, n_seq, seqs);
    else if (b->xgroup)
        fill_groups(P, (int32_t *)(io + P->io_xgrp), TD_VKO_ATT_GROUP, n_seq, seqs);
    int rows_out = all_logits ? R : n_seq;
    int max_self = 0; /* the most keys a row attends to in its slot */
    for (int s = 0; s < n_seq; s++)
        if (seqs[s].n_past + seqs[s].n_tokens > max_self)
            max_self = seqs[s].n_past + seqs[s].n_tokens;

    /* The recording depends on the row counts, the self-attention's split
     * count and the ops' settings, not on tokens or positions (those are
     * read from io): it is kept per shape and replayed. */
    unsigned gen = td_vko_generation(b->ops);
    if (gen != b->ops_gen) {
        td_vk_forget(b->vk);
        b->ops_gen = gen;
    }
    uint64_t n_split = ((uint64_t)max_self + TD_VKO_ATT_SPLIT - 1) / TD_VKO_ATT_SPLIT;
    /* R and rows_out fit 16 bits (MAX_ROWS_LIMIT), n_split 16 */
    uint64_t key = (uint64_t)R | (uint64_t)rows_out << 16 | n_split << 32 |
                   (uint64_t)(all_logits != 0) << 48 | (uint64_t)(logits != NULL) << 49 |
                   (uint64_t)b->xcm_now << 50;
    int replay = 0;
    int rc = b->al_n ? td_vk_begin(b->vk, err) /* alignment passes are not kept */
                     : td_vk_begin_cached(b->vk, key, &replay, err);
    if (rc)
        return rc;
    if (!replay)
        dec_record(b, R, rows_out, all_logits, n_split * TD_VKO_ATT_SPLIT, logits != NULL);
    uint64_t lbytes = (uint64_t)rows_out * P->nv * 4;
    /* with the logits kept on the device for sample(), the step waits to
     * run in the sampling's submission: one host wait a step, not two
     * (the next call of any other kind runs it first) */
    int later = !logits && !all_logits && !b->al_n && P->step_submits == 1;
    b->lost_seen = td_vk_later_lost(b->vk, NULL);
    rc = later ? td_vk_submit_later(b->vk, err) : td_vk_submit(b->vk, err);
    if (rc == TD_OK && !later)
        rc = step_check(b, err);
    if (rc)
        return rc;
    if (logits)
        memcpy(logits, b->readback.map, lbytes);
    b->last_rows = rows_out;
    td_vks_kept(b->smp, logits || all_logits ? 0 : rows_out);
    return TD_OK;
}

static int vk_kv_copy(td_wbackend *b, int n, const td_wkv_copy *pairs, td_error *err)
{
    plan *P = &b->P;
    if (n < 0 || (n > 0 && !pairs))
        return td_error_set(err, TD_EINVAL, "vulkan backend: kv_copy of %d pairs", n);
    for (int i = 0; i < n; i++) {
        const td_wkv_copy *c = &pairs[i];
        if (c->src < 0 || c->src >= P->max_seq || c->dst < 0 || c->dst >= P->max_seq ||
            c->n_pos < 0 || c->n_pos > P->max_tokens)
            return td_error_set(err, TD_EINVAL, "vulkan backend: kv_copy %d -> %d of %d positions",
                                (int)c->src, (int)c->dst, (int)c->n_pos);
        for (int j = 0; j < n; j++)
            if ((j < i && pairs[j].dst == c->dst) || pairs[j].src == c->dst)
                return td_error_set(err, TD_EINVAL,
                                    "vulkan backend: kv_copy destination %d repeated or a source",
                                    (int)c->dst);
    }
    if (n == 0)
        return TD_OK;
    int rc = td_vk_begin(b->vk, err);
    if (rc)
        return rc;
    uint64_t slot = (uint64_t)P->max_tokens * P->nt * 4, row = (uint64_t)P->nt * 4;
    td_vk_concurrent(b->vk, 1);
    for (int i = 0; i < n; i++) {
        if (pairs[i].n_pos == 0)
            continue;
        uint64_t bytes = (uint64_t)pairs[i].n_pos * row;
        for (int l = 0; l < P->nlt; l++) {
            td_vk_copy(b->vk, &b->kv_k[l], pairs[i].src * slot, &b->kv_k[l], pairs[i].dst * slot, bytes);
            td_vk_copy(b->vk, &b->kv_v[l], pairs[i].src * slot, &b->kv_v[l], pairs[i].dst * slot, bytes);
        }
    }
    td_vk_concurrent(b->vk, 0);
    rc = td_vk_submit(b->vk, err); /* with a decode step kept for later, first */
    return rc ? rc : step_check(b, err);
}

/* Decode the tokens from position 0 in chunks the plan takes (the slot's
 * cache carries the context between them), with the heads' weights
 * written by att_weights.comp into a host-visible buffer. */
static int vk_align_weights(td_wbackend *b, int slot, int window, int n_tokens,
                            const int32_t *tokens, int n_heads, const int *heads, float *out,
                            td_error *err)
{
    /* a decode step kept for the sampling's submission runs first: what
     * follows writes its inputs */
    int frc = td_vk_flush(b->vk, err);
    if (frc == TD_OK)
        frc = step_check(b, err);
    if (frc)
        return frc;
    plan *P = &b->P;
    if (n_heads < 1 || n_heads > P->nlt * P->nht || !heads || !out || !tokens)
        return td_error_set(err, TD_EINVAL, "vulkan backend: align_weights of %d heads", n_heads);
    for (int i = 0; i < n_heads; i++)
        if (heads[2 * i] < 0 || heads[2 * i] >= P->nlt || heads[2 * i + 1] < 0 ||
            heads[2 * i + 1] >= P->nht)
            return td_error_set(err, TD_EINVAL, "vulkan backend: no decoder head (%d, %d)",
                                heads[2 * i], heads[2 * i + 1]);
    if (n_tokens < 1 || n_tokens > P->max_tokens)
        return td_error_set(err, TD_EINVAL,
                            "vulkan backend: align_weights of %d tokens, at most %d", n_tokens,
                            P->max_tokens);
    if (window < 0 || window >= P->max_windows || !b->encoded[window])
        return td_error_set(err, TD_EINVAL, "vulkan backend: window slot %d not encoded", window);
    uint64_t bytes = (uint64_t)n_heads * n_tokens * P->C * 4;
    td_vk_buf buf;
    int rc = td_vk_buf_create(b->vk, bytes, TD_VK_MEM_READBACK, &buf, err);
    if (rc)
        return rc;
    b->al_heads = heads;
    b->al_n = n_heads;
    b->al_rows = n_tokens;
    b->al_window = window;
    b->al_out = buf.addr;
    int step = P->max_batch < P->max_rows ? P->max_batch : P->max_rows;
    for (int t0 = 0; t0 < n_tokens && rc == TD_OK; t0 += step) {
        td_wseq q = {.slot = slot, .window = window, .n_past = t0,
                     .n_tokens = n_tokens - t0 < step ? n_tokens - t0 : step};
        b->al_row0 = t0;
        rc = vk_decode(b, 1, &q, tokens + t0, 0, NULL, err);
    }
    b->al_heads = NULL;
    b->al_n = 0;
    b->last_rows = 0; /* this pass's logits are nobody's */
    td_vks_kept(b->smp, 0);
    if (rc == TD_OK)
        memcpy(out, buf.map, bytes);
    td_vk_buf_destroy(b->vk, &buf);
    return rc;
}

/* The sampling step on the device: vk_sample.h. */
/* After a waited submission that may have run a one-dispatch step:
 * where its grid turned out not to be resident at once (ops.h's
 * td_vko_step_failed), that step's results are wrong. The call fails
 * (its scene is tried again) and later steps run a dispatch a product,
 * the kept recordings that hold the one-dispatch step dropped. */
static int step_check(td_wbackend *b, td_error *err)
{
    if (!b->step_one)
        return TD_OK;
    int groups = td_vko_step_groups(b->ops), f = td_vko_step_failed(b->ops, err);
    if (f == 0)
        return TD_OK;
    b->step_one = 0;
    td_vk_forget(b->vk);
    if (f < 0)
        return err->code;
    return td_error_set(err, TD_EENGINE,
                        "vulkan backend: the decoder step as one dispatch of %d workgroups: a "
                        "barrier's wait passed its limit (the grid was not resident at once), so "
                        "the step's results are dropped; later steps run a dispatch a product",
                        groups);
}

static int vk_sample(td_wbackend *b, const td_wsampler *sp, int n, const td_wsample_in *in,
                     td_wsample_out *out, td_error *err)
{
    td_error lost;
    if (td_vk_later_lost(b->vk, &lost) != b->lost_seen) {
        /* the step these rows come from failed with an earlier call's
         * submission (another sequence's sample(), or a kv_copy): none of
         * its rows is there to sample, and each caller hears why */
        b->last_rows = 0;
        td_vks_kept(b->smp, 0);
        return td_error_set(err, lost.code, "vulkan backend: the decode step failed: %s",
                            lost.msg);
    }
    int rc = td_vks_run(b->smp, &b->logits, sp, n, in, out, err);
    if (rc && td_vk_later_lost(b->vk, NULL) != b->lost_seen) {
        b->last_rows = 0;
        td_vks_kept(b->smp, 0);
    }
    if (rc == TD_OK && (rc = step_check(b, err)) != TD_OK) {
        b->last_rows = 0;
        td_vks_kept(b->smp, 0);
    }
    return rc;
}

void td_wvk_sample_stats(const td_wbackend *b, long *calls, long *rows, long *host_rows)
{
    td_vks_stats st;
    td_vks_get_stats(b->smp, &st);
    *calls = st.calls;
    *rows = st.rows;
    *host_rows = st.host_rows;
}

static void vk_identity(const td_wbackend *b, char *pci, size_t pci_len, char *uuid,
                        size_t uuid_len)
{
    const td_vk_info *in = td_vk_device_info(b->vk);
    snprintf(pci, pci_len, "%s", in ? in->pci : "");
    snprintf(uuid, uuid_len, "%s", in ? in->uuid : "");
}

const td_wbackend_ops td_wbackend_vulkan = {
    .api_version = TD_WBACKEND_API_VERSION,
    .name = "vulkan",
    .probe = vk_probe,
    .memory_need = vk_memory_need,
    .open = vk_open,
    .encode = vk_encode,
    .decode = vk_decode,
    .kv_copy = vk_kv_copy,
    .sample = vk_sample,
    .encoder_output = vk_encoder_output,
    .close = vk_close,
    .align_weights = vk_align_weights,
    .identity = vk_identity,
};

#endif /* TD_WBACKEND_API_VERSION >= 2 */
