/*
 * cpu.c: the CPU compute backend of the Whisper network (backend.h), the
 * numerical reference the GPU backends are tested against.
 *
 * The network is openai-whisper's model.py: encoder = two GELU
 * convolutions (kernel 3, padding 1, strides 1 and 2), positional
 * embedding, pre-LayerNorm residual blocks (self-attention, GELU MLP) and
 * ln_post; decoder = token + positional embedding, blocks of causal
 * self-attention with a KV cache, cross-attention against the encoder's
 * keys and values (computed once per window in encode()), MLP, a final
 * LayerNorm, and logits against the token embedding (tied). LayerNorm eps
 * 1e-5; GELU is the exact erf form.
 *
 * Weights are read where the model maps them (F16 stays F16): the big
 * products pack panels of them on the fly (kernels.h), the decoder's
 * few-row products stream them through SIMD conversion. With int8
 * compute (td_wconfig.compute) the products run on int8 copies made at
 * open instead (q8.h), the encoder's attention too, and the cross K/V
 * are stored as halves. Only the small
 * F32 vectors (biases, LayerNorm parameters, positional embeddings) are
 * copied at open, because the file leaves tensor data unaligned.
 *
 * Memory: everything open() holds besides the mapped weights lives in one
 * arena whose layout layout_compute() derives from the hyper-parameters
 * and the configuration alone, so memory_need() and open() cannot
 * disagree (test_cpu_backend checks it). Regions, in floats:
 *   params   copies of biases, LayerNorm weights, positional embeddings
 *   enc_out  [n_audio_ctx][n_audio_state]          the last encode's ln_post output
 *   cross    [window slot][text layer][head] K rows, V^T rows over n_audio_ctx
 *            keys (F32; halves with td_wk_set_cross_f16, in half the space)
 *   kv       [text layer][slot][head] packed K/V over max_tokens positions
 *   logits   [max_seq][n_vocab]: a decode's last-token rows kept for sample()
 *   work     encoder and decoder activations (one reused region)
 *   scratch  per thread: GEMM packing, attention blocks
 *   wconv    BLAS only: an F16 -> F32 slab
 *   q8w      int8 only: every linear layer's and convolution's int8 copy
 *            (q8.h; the F16 pages each was made from are released)
 *   q8act    int8 only: the quantized activations of one product
 * Not counted: this struct, the per-layer pointer tables (a few KB), the
 * worker threads' stacks (virtual, 8 MB each by default), and, during an
 * align_weights() call with halved cross K/V, one head's keys widened
 * (n_audio_ctx x head width floats: 384 KB).
 *
 * Batches (backend.h, API version 2): encode() runs the windows of a batch
 * one after another (the encoder's products are large enough to keep every
 * core busy one window at a time) into their window slots; decode() runs
 * every row of every sequence through each weight matrix at once, which is
 * where batching pays on a CPU: the decoder's weights are read once per
 * step for all sequences instead of once per sequence. Self-attention
 * takes each sequence's own KV slot and length; cross-attention takes each
 * run of consecutive sequences on one window as one group, so a window's
 * beams read its cross K/V once.
 *
 * Word alignment (align_weights, openai's timing.py): the sequence is
 * decoded in its KV slot as usual, and at each layer that has alignment
 * heads their cross-attention probabilities are computed once more from
 * the query rows and the window's keys (align_probs), since the fused
 * attention kernel never holds a whole row of them.
 */
#include "whisper/backend.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "whisper/backend/cpu/kernels.h"
#include "whisper/backend/cpu/q8.h"
#include "whisper/sample.h"

#define MAX_SEQ 256     /* KV slots */
#define MAX_WINDOWS 64  /* window slots */
#define MAX_THREADS 256
#define ALIGN_F 16 /* floats: 64 bytes */

static size_t al(size_t n)
{
    return (n + ALIGN_F - 1) / ALIGN_F * ALIGN_F;
}

static size_t rnd(size_t x, size_t to)
{
    return (x + to - 1) / to * to;
}

/* ------------------------------------------------------------------ */
/* Arena layout                                                         */

typedef struct layout {
    /* resolved configuration */
    int n_threads, max_seq, max_tokens, max_batch, max_windows, max_rows;
    int blas;
    int cross_f16;           /* cross K/V stored as halves (kernels.h) */
    int q8;                  /* linear layers in int8 (q8.h) */
    int q8_attn;             /* and the encoder's attention products */
    /* shapes */
    int C, na, nt, nm, nha, nht, da, dt, cap_c, cap_s, R;
    size_t kvf_c, kvf_s;     /* floats per packed head */
    size_t scratch_floats;   /* per thread */
    size_t wconv_floats;
    size_t params_floats;
    /* offsets in floats from the arena start */
    size_t o_params, o_enc_out, o_cross, o_kv, o_logits, o_work, o_scratch, o_wconv, o_q8w,
        o_q8act;
    size_t cross_floats;     /* one window slot's cross K/V, all layers */
    size_t q8w_bytes, q8act_bytes;
    /* offsets inside work: encoder */
    size_t ex, mel_t, x1p, convw, eh, eq, ek, ev, eka, evta, eff;
    /* offsets inside work: decoder */
    size_t dx, dh, dq, dk, dv, da_, dff;
    size_t work_floats;
    size_t total_floats;
} layout;

/* Floats of the copied small parameters (see params_take's order). */
static size_t params_size(const td_whparams *hp)
{
    size_t na = (size_t)hp->n_audio_state, nt = (size_t)hp->n_text_state;
    size_t e = al((size_t)hp->n_audio_ctx * na) + 2 * al(na) + 2 * al(na) /* pos, conv b, ln_post */;
    size_t el = 2 * al(na) + 3 * al(na) + 2 * al(na) + al(4 * na) + al(na);
    size_t d = al((size_t)hp->n_text_ctx * nt) + 2 * al(nt);
    size_t dl = 2 * al(nt) + 3 * al(nt) + 2 * al(nt) + 3 * al(nt) + 2 * al(nt) + al(4 * nt) + al(nt);
    return e + (size_t)hp->n_audio_layer * el + d + (size_t)hp->n_text_layer * dl;
}

static int hp_valid(const td_whparams *hp)
{
    return hp->n_vocab > 0 && hp->n_vocab <= TD_WMAX_VOCAB && hp->n_audio_ctx > 0 &&
           hp->n_audio_ctx <= TD_WMAX_AUDIO_CTX && hp->n_audio_state > 0 &&
           hp->n_audio_state <= TD_WMAX_STATE && hp->n_audio_head > 0 &&
           hp->n_audio_head <= TD_WMAX_HEADS && hp->n_audio_state % hp->n_audio_head == 0 &&
           hp->n_audio_layer > 0 && hp->n_audio_layer <= TD_WMAX_LAYERS && hp->n_text_ctx > 0 &&
           hp->n_text_ctx <= TD_WMAX_TEXT_CTX && hp->n_text_state > 0 &&
           hp->n_text_state <= TD_WMAX_STATE && hp->n_text_head > 0 &&
           hp->n_text_head <= TD_WMAX_HEADS && hp->n_text_state % hp->n_text_head == 0 &&
           hp->n_text_layer > 0 && hp->n_text_layer <= TD_WMAX_LAYERS && hp->n_mels > 0 &&
           hp->n_mels <= TD_WMAX_MELS;
}

static int resolve_threads(int n)
{
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    return n > MAX_THREADS ? MAX_THREADS : n;
}

/* Bytes of every linear layer's int8 weights (q8.h), in the order
 * q8_init() carves them. */
static size_t q8_weight_bytes(const td_whparams *hp)
{
    int na = hp->n_audio_state, nt = hp->n_text_state;
    size_t e = 4 * td_q8_weight_bytes(na, na) + td_q8_weight_bytes(4 * na, na) +
               td_q8_weight_bytes(na, 4 * na);
    size_t d = 6 * td_q8_weight_bytes(nt, nt) + 2 * td_q8_weight_bytes(nt, na) +
               td_q8_weight_bytes(4 * nt, nt) + td_q8_weight_bytes(nt, 4 * nt);
    size_t conv = td_q8_weight_bytes(na, 3 * hp->n_mels) + td_q8_weight_bytes(na, 3 * na);
    return (size_t)hp->n_audio_layer * e + (size_t)hp->n_text_layer * d +
           td_q8_weight_bytes(hp->n_vocab, nt) + conv;
}

/* The arena for hp under cfg; 0, or -1 with the reason in err. */
static int layout_compute(const td_whparams *hp, const td_wconfig *cfg, layout *L, td_error *err)
{
    memset(L, 0, sizeof *L);
    if (!hp_valid(hp))
        return td_error_set(err, TD_EINVAL, "cpu backend: hyper-parameters out of bounds"), -1;
    L->max_tokens = cfg->max_tokens > 0 ? cfg->max_tokens : hp->n_text_ctx;
    L->max_batch = cfg->max_batch_tokens > 0 ? cfg->max_batch_tokens : L->max_tokens;
    L->max_seq = cfg->max_seq;
    if (L->max_seq < 1 || L->max_seq > MAX_SEQ)
        return td_error_set(err, TD_EINVAL, "cpu backend: max_seq %d not in 1..%d", cfg->max_seq,
                            MAX_SEQ), -1;
    L->max_windows = cfg->max_windows > 0 ? cfg->max_windows : 1;
    if (L->max_windows > MAX_WINDOWS || cfg->max_windows < 0)
        return td_error_set(err, TD_EINVAL, "cpu backend: max_windows %d not in 1..%d",
                            cfg->max_windows, MAX_WINDOWS), -1;
    if (L->max_tokens > hp->n_text_ctx || cfg->max_tokens < 0)
        return td_error_set(err, TD_EINVAL, "cpu backend: max_tokens %d not in 1..%d",
                            cfg->max_tokens, hp->n_text_ctx), -1;
    if (L->max_batch > L->max_tokens || cfg->max_batch_tokens < 0)
        return td_error_set(err, TD_EINVAL, "cpu backend: max_batch_tokens %d not in 1..%d",
                            cfg->max_batch_tokens, L->max_tokens), -1;
    L->n_threads = resolve_threads(cfg->n_threads);
    L->blas = td_wk_get_gemm_impl() == TD_WK_GEMM_BLAS;
    if (cfg->compute < TD_WCOMPUTE_AUTO || cfg->compute > TD_WCOMPUTE_INT8)
        return td_error_set(err, TD_EINVAL, "cpu backend: unknown compute type %d", cfg->compute), -1;
    L->q8 = td_wcompute_resolve((enum td_wcompute)cfg->compute) == TD_WCOMPUTE_INT8;
    if (L->q8 && (hp->n_audio_state % 4 || hp->n_text_state % 4 || hp->n_mels % 4))
        return td_error_set(err, TD_EINVAL, "cpu backend: int8 needs widths divisible by 4"), -1;
    /* With int8 products the cross K/V's F16 rounding (2^-11) is far below
     * the quantization's (2^-8 of a row's largest value), and halves cut
     * a decoder step's bytes (base: 134 -> 67 MB with int8 weights). */
    L->cross_f16 = td_wk_get_cross_f16() || L->q8;
    /* TD_WHISPER_INT8_ATTN=0 keeps the encoder's attention in F32 under
     * int8 (for comparisons) */
    const char *ia = getenv("TD_WHISPER_INT8_ATTN");
    L->q8_attn = L->q8 && !(ia && strcmp(ia, "0") == 0) &&
                 hp->n_audio_state / hp->n_audio_head <= TD_Q8_NR &&
                 (hp->n_audio_state / hp->n_audio_head) % 4 == 0;

    L->C = hp->n_audio_ctx;
    L->na = hp->n_audio_state;
    L->nt = hp->n_text_state;
    L->nm = hp->n_mels;
    L->nha = hp->n_audio_head;
    L->nht = hp->n_text_head;
    L->da = L->na / L->nha;
    L->dt = L->nt / L->nht;
    L->cap_c = (int)rnd((size_t)L->C, TD_WK_NR);
    L->cap_s = (int)rnd((size_t)L->max_tokens, TD_WK_NR);
    L->max_rows = cfg->max_rows > 0 ? cfg->max_rows : L->max_seq * L->max_batch;
    if (cfg->max_rows < 0 || L->max_rows > L->max_seq * L->max_tokens)
        return td_error_set(err, TD_EINVAL, "cpu backend: max_rows %d not in 1..%d", cfg->max_rows,
                            L->max_seq * L->max_tokens), -1;
    L->R = L->max_rows;
    L->kvf_c = td_wk_kv_head_floats(L->cap_c, L->dt);
    L->kvf_s = td_wk_kv_head_floats(L->cap_s, L->dt);
    int max_keys = L->cap_c > L->cap_s ? L->cap_c : L->cap_s;
    L->scratch_floats = td_wk_scratch_floats(L->C, max_keys, L->da > L->dt ? L->da : L->dt);
    if (L->q8_attn && L->scratch_floats < td_q8_enc_attn_scratch_floats(L->C))
        L->scratch_floats = rnd(td_q8_enc_attn_scratch_floats(L->C), ALIGN_F);
    if (L->blas) {
        size_t a = 4 * (size_t)L->na * L->na, b = 4 * (size_t)L->nt * L->nt,
               c = (size_t)L->na * L->nt;
        L->wconv_floats = a > b ? a : b;
        L->wconv_floats = L->wconv_floats > c ? L->wconv_floats : c;
    }
    L->params_floats = params_size(hp);

    size_t C = (size_t)L->C, na = (size_t)L->na, nt = (size_t)L->nt, nm = (size_t)L->nm;
    size_t nsm = na > nt ? na : nt;
    size_t T2 = 2 * C;
    /* encoder: ex, then either the convolution buffers or the block ones */
    size_t o = 0;
    L->ex = o;
    o += al(C * na);
    size_t phase = o;
    L->mel_t = o;
    o += al((T2 + 2) * nm);
    L->x1p = o;
    o += al((T2 + 2) * na);
    L->convw = o;
    o += al(na * 3 * (nm > na ? nm : na));
    size_t conv_end = o;
    o = phase;
    L->eh = o;
    o += al(C * nsm);
    L->eq = o;
    o += al(C * nsm);
    L->ek = o;
    o += al(C * nsm);
    L->ev = o;
    o += al(C * nsm);
    size_t af = al(td_wk_enc_attn_floats(L->C, L->na, L->nha));
    if (L->q8_attn) { /* the int8 attention's work area is eka and evta together */
        size_t need = td_q8_enc_attn_bytes(L->C, L->na, L->nha) / sizeof(float) / 2 + 1;
        af = af > al(need) ? af : al(need);
    }
    L->eka = o;
    o += af;
    L->evta = o;
    o += af;
    L->eff = o;
    o += al(C * 4 * na);
    size_t enc_end = o > conv_end ? o : conv_end;
    /* decoder: its own use of the same region */
    size_t R = (size_t)L->R;
    o = 0;
    L->dx = o;
    o += al(R * nt);
    L->dh = o;
    o += al(R * nt);
    L->dq = o;
    o += al(R * nt);
    L->dk = o;
    o += al(R * nt);
    L->dv = o;
    o += al(R * nt);
    L->da_ = o;
    o += al(R * nt);
    L->dff = o;
    o += al(R * 4 * nt);
    L->work_floats = enc_end > o ? enc_end : o;

    o = 0;
    L->o_params = o;
    o += L->params_floats;
    L->o_enc_out = o;
    o += al(C * na);
    L->o_cross = o;
    /* kvf_c is a multiple of 16, so halves fill whole floats */
    L->cross_floats = (size_t)hp->n_text_layer * (size_t)L->nht * L->kvf_c / (L->cross_f16 ? 2 : 1);
    o += (size_t)L->max_windows * L->cross_floats;
    L->o_kv = o;
    o += (size_t)hp->n_text_layer * (size_t)L->max_seq * (size_t)L->nht * L->kvf_s;
    L->o_logits = o; /* the last-token rows of a decode kept for sample() */
    o += al((size_t)L->max_seq * (size_t)hp->n_vocab);
    L->o_work = o;
    o += L->work_floats;
    L->o_scratch = o;
    o += (size_t)L->n_threads * L->scratch_floats;
    L->o_wconv = o;
    o += al(L->wconv_floats);
    if (L->q8) {
        L->q8w_bytes = q8_weight_bytes(hp);
        int rows = L->C > L->R ? L->C : L->R;
        size_t lin = td_q8_act_bytes(rows, 4 * (int)nsm);
        size_t conv1 = td_q8_act_bytes(2 * L->C, 3 * L->nm), conv2 = td_q8_act_bytes(L->C, 3 * L->na);
        L->q8act_bytes = lin > conv1 ? lin : conv1;
        L->q8act_bytes = L->q8act_bytes > conv2 ? L->q8act_bytes : conv2;
    }
    L->o_q8w = o;
    o += al(L->q8w_bytes / sizeof(float) + 1);
    L->o_q8act = o;
    o += al(L->q8act_bytes / sizeof(float) + 1);
    L->total_floats = o;
    return 0;
}

int64_t td_wcpu_weight_bytes(const td_whparams *hp, enum td_wtype wtype)
{
    int64_t ws = wtype == TD_WT_F16 ? 2 : 4;
    int64_t na = hp->n_audio_state, nt = hp->n_text_state, C = hp->n_audio_ctx;
    int64_t e = 4 * C * na                         /* positional embedding */
                + ws * 3 * hp->n_mels * na + 4 * na /* conv1 */
                + ws * 3 * na * na + 4 * na         /* conv2 */
                + 4 * 2 * na;                       /* ln_post */
    int64_t el = 4 * 4 * na                         /* attn_ln, mlp_ln */
                 + ws * 4 * na * na + 4 * 3 * na    /* q, k, v, out (k without bias) */
                 + ws * 8 * na * na + 4 * 5 * na;   /* mlp.0, mlp.2 */
    int64_t d = 4 * (int64_t)hp->n_text_ctx * nt   /* positional embedding */
                + ws * (int64_t)hp->n_vocab * nt    /* token embedding */
                + 4 * 2 * nt;                       /* ln */
    int64_t dl = 4 * 6 * nt                         /* attn_ln, cross_attn_ln, mlp_ln */
                 + ws * 4 * nt * nt + 4 * 3 * nt    /* self-attention */
                 + ws * 2 * nt * nt + ws * 2 * na * nt + 4 * 3 * nt /* cross: q, out; k, v */
                 + ws * 8 * nt * nt + 4 * 5 * nt;   /* mlp */
    return e + hp->n_audio_layer * el + d + hp->n_text_layer * dl;
}

int64_t td_wcpu_arena_bytes(const td_whparams *hp, const td_wconfig *cfg)
{
    layout L;
    if (layout_compute(hp, cfg, &L, NULL) != 0)
        return -1;
    return (int64_t)(L.total_floats * sizeof(float));
}

int64_t td_wcpu_mapped_bytes(const td_whparams *hp, enum td_wtype wtype, const td_wconfig *cfg)
{
    int64_t all = td_wcpu_weight_bytes(hp, wtype);
    if (td_wcompute_resolve((enum td_wcompute)cfg->compute) != TD_WCOMPUTE_INT8)
        return all;
    /* int8 releases each linear layer's and convolution's pages once it
     * has their int8 copy (q8_take); what stays is the F32 vectors and the
     * token embedding, whose rows decoding reads (and which, the largest
     * tensor, also bounds the moment of quantizing one) */
    int64_t ws = wtype == TD_WT_F16 ? 2 : 4;
    int64_t na = hp->n_audio_state, nt = hp->n_text_state;
    int64_t released = hp->n_audio_layer * 12 * na * na +
                       hp->n_text_layer * (14 * nt * nt + 2 * na * nt) +
                       3 * (int64_t)hp->n_mels * na + 3 * na * na;
    return all - ws * released;
}

static int64_t cpu_memory_need(const td_whparams *hp, enum td_wtype wtype, const td_wconfig *cfg)
{
    int64_t arena = td_wcpu_arena_bytes(hp, cfg);
    if (arena < 0)
        return -1;
    return td_wcpu_mapped_bytes(hp, wtype, cfg) + arena;
}

/* ------------------------------------------------------------------ */
/* Context                                                              */

typedef struct enc_lp {
    const float *attn_ln_w, *attn_ln_b, *q_b, *v_b, *o_b, *mlp_ln_w, *mlp_ln_b, *mlp0_b, *mlp2_b;
} enc_lp;

typedef struct dec_lp {
    const float *attn_ln_w, *attn_ln_b, *q_b, *v_b, *o_b;
    const float *cross_ln_w, *cross_ln_b, *cq_b, *cv_b, *co_b;
    const float *mlp_ln_w, *mlp_ln_b, *mlp0_b, *mlp2_b;
} dec_lp;

/* A layer's linear weights in int8 (q8.h), when the context computes so. */
typedef struct enc_q8 {
    td_q8_weight q, k, v, o, mlp0, mlp2;
} enc_q8;

typedef struct dec_q8 {
    td_q8_weight q, k, v, o, cq, ck, cv, co, mlp0, mlp2;
} dec_q8;

struct td_wbackend {
    const td_wmodel *m;
    layout L;
    td_wk_ctx kc;
    const td_q8_ops *q8ops; /* NULL: F32 products */
    enc_q8 *eq8;
    dec_q8 *dq8;
    td_q8_weight tok_q8;
    td_q8_weight conv1_q8, conv2_q8; /* over rows of 3 * c_in inputs (td_wk_conv3_perm) */
    float *arena;
    size_t arena_bytes;
    /* copied parameters */
    const float *enc_pos, *conv1_b, *conv2_b, *ln_post_w, *ln_post_b;
    const float *dec_pos, *dec_ln_w, *dec_ln_b;
    enc_lp *elp;
    dec_lp *dlp;
    int last_window;         /* window slot of the last encode (enc_out), -1 = none */
    unsigned char encoded[MAX_WINDOWS]; /* window slots that hold an encoding */
    int kept_rows;           /* last-token rows in the logits region, 0 = none */
    unsigned char row_sampled[MAX_SEQ]; /* kept rows already sampled (masked in place) */
    /* per-call group tables for the attention kernels */
    float *g_kv[MAX_SEQ];
    int g_row0[MAX_SEQ], g_rows[MAX_SEQ], g_keys0[MAX_SEQ];
    /* align_weights' hook into decode: the heads (layer, head pairs) whose
     * cross-attention probabilities go to al_out, rows al_row0.. of
     * al_rows; NULL = off. al_k: scratch of TD_WK_GEMV_ROWS scaled queries. */
    const int *al_heads;
    int al_n, al_rows, al_row0;
    float *al_out, *al_k;
    /* benchmark hook (bench_script below); 0 = off */
    int bench_tokens;
    int bench_prompt_end[MAX_SEQ];
    long bench_encodes, bench_calls, bench_rows;
};

/* Copy one F32 vector (n floats, checked against the tensor) into the
 * params region; a tensor of another type or size is refused. */
static const float *params_take(float **cur, const td_wtensor *t, size_t n, int *bad)
{
    float *p = *cur;
    *cur += al(n);
    if (!t || t->type != TD_WT_F32 || t->nbytes != n * sizeof(float)) {
        *bad = 1;
        return p;
    }
    memcpy(p, t->data, n * sizeof(float));
    return p;
}

static int params_copy(td_wbackend *b)
{
    const td_wmodel *m = b->m;
    const td_whparams *hp = &m->hp;
    size_t na = (size_t)hp->n_audio_state, nt = (size_t)hp->n_text_state;
    float *cur = b->arena + b->L.o_params;
    int bad = 0;
    b->enc_pos = params_take(&cur, m->enc.pos, (size_t)hp->n_audio_ctx * na, &bad);
    b->conv1_b = params_take(&cur, m->enc.conv1_b, na, &bad);
    b->conv2_b = params_take(&cur, m->enc.conv2_b, na, &bad);
    b->ln_post_w = params_take(&cur, m->enc.ln_post.w, na, &bad);
    b->ln_post_b = params_take(&cur, m->enc.ln_post.b, na, &bad);
    for (int l = 0; l < hp->n_audio_layer; l++) {
        const td_wenc_layer *el = &m->enc.layers[l];
        enc_lp *p = &b->elp[l];
        p->attn_ln_w = params_take(&cur, el->attn_ln.w, na, &bad);
        p->attn_ln_b = params_take(&cur, el->attn_ln.b, na, &bad);
        p->q_b = params_take(&cur, el->attn.q.b, na, &bad);
        p->v_b = params_take(&cur, el->attn.v.b, na, &bad);
        p->o_b = params_take(&cur, el->attn.o.b, na, &bad);
        p->mlp_ln_w = params_take(&cur, el->mlp_ln.w, na, &bad);
        p->mlp_ln_b = params_take(&cur, el->mlp_ln.b, na, &bad);
        p->mlp0_b = params_take(&cur, el->mlp0.b, 4 * na, &bad);
        p->mlp2_b = params_take(&cur, el->mlp2.b, na, &bad);
    }
    b->dec_pos = params_take(&cur, m->dec.pos, (size_t)hp->n_text_ctx * nt, &bad);
    b->dec_ln_w = params_take(&cur, m->dec.ln.w, nt, &bad);
    b->dec_ln_b = params_take(&cur, m->dec.ln.b, nt, &bad);
    for (int l = 0; l < hp->n_text_layer; l++) {
        const td_wdec_layer *dl = &m->dec.layers[l];
        dec_lp *p = &b->dlp[l];
        p->attn_ln_w = params_take(&cur, dl->attn_ln.w, nt, &bad);
        p->attn_ln_b = params_take(&cur, dl->attn_ln.b, nt, &bad);
        p->q_b = params_take(&cur, dl->attn.q.b, nt, &bad);
        p->v_b = params_take(&cur, dl->attn.v.b, nt, &bad);
        p->o_b = params_take(&cur, dl->attn.o.b, nt, &bad);
        p->cross_ln_w = params_take(&cur, dl->cross_ln.w, nt, &bad);
        p->cross_ln_b = params_take(&cur, dl->cross_ln.b, nt, &bad);
        p->cq_b = params_take(&cur, dl->cross.q.b, nt, &bad);
        p->cv_b = params_take(&cur, dl->cross.v.b, nt, &bad);
        p->co_b = params_take(&cur, dl->cross.o.b, nt, &bad);
        p->mlp_ln_w = params_take(&cur, dl->mlp_ln.w, nt, &bad);
        p->mlp_ln_b = params_take(&cur, dl->mlp_ln.b, nt, &bad);
        p->mlp0_b = params_take(&cur, dl->mlp0.b, 4 * nt, &bad);
        p->mlp2_b = params_take(&cur, dl->mlp2.b, nt, &bad);
    }
    /* the order above must match params_size() */
    if ((size_t)(cur - (b->arena + b->L.o_params)) != b->L.params_floats)
        bad = 1;
    return bad ? -1 : 0;
}

/* A weight matrix must be [n_out][n_in] of the model's weight type (the
 * products of one layer share a type). */
static int mat_ok(const td_wtensor *t, int64_t n_in, int64_t n_out, enum td_wtype wt)
{
    return t && t->type == wt && (wt == TD_WT_F16 || wt == TD_WT_F32) && t->ne[0] == n_in &&
           t->ne[1] == n_out && t->data;
}

static int weights_ok(const td_wmodel *m)
{
    const td_whparams *hp = &m->hp;
    enum td_wtype wt = m->wtype;
    int64_t na = hp->n_audio_state, nt = hp->n_text_state;
    if (!m->enc.conv1_w || m->enc.conv1_w->ne[0] != 3 || m->enc.conv1_w->ne[1] != hp->n_mels ||
        m->enc.conv1_w->ne[2] != na || !m->enc.conv2_w || m->enc.conv2_w->ne[0] != 3 ||
        m->enc.conv2_w->ne[1] != na || m->enc.conv2_w->ne[2] != na)
        return 0;
    if (m->enc.conv1_w->type != TD_WT_F16 && m->enc.conv1_w->type != TD_WT_F32)
        return 0;
    if (m->enc.conv2_w->type != TD_WT_F16 && m->enc.conv2_w->type != TD_WT_F32)
        return 0;
    for (int l = 0; l < hp->n_audio_layer; l++) {
        const td_wenc_layer *e = &m->enc.layers[l];
        if (!mat_ok(e->attn.q.w, na, na, wt) || !mat_ok(e->attn.k.w, na, na, wt) ||
            !mat_ok(e->attn.v.w, na, na, wt) || !mat_ok(e->attn.o.w, na, na, wt) ||
            !mat_ok(e->mlp0.w, na, 4 * na, wt) || !mat_ok(e->mlp2.w, 4 * na, na, wt))
            return 0;
    }
    for (int l = 0; l < hp->n_text_layer; l++) {
        const td_wdec_layer *d = &m->dec.layers[l];
        if (!mat_ok(d->attn.q.w, nt, nt, wt) || !mat_ok(d->attn.k.w, nt, nt, wt) ||
            !mat_ok(d->attn.v.w, nt, nt, wt) || !mat_ok(d->attn.o.w, nt, nt, wt) ||
            !mat_ok(d->cross.q.w, nt, nt, wt) || !mat_ok(d->cross.k.w, na, nt, wt) ||
            !mat_ok(d->cross.v.w, na, nt, wt) || !mat_ok(d->cross.o.w, nt, nt, wt) ||
            !mat_ok(d->mlp0.w, nt, 4 * nt, wt) || !mat_ok(d->mlp2.w, 4 * nt, nt, wt))
            return 0;
    }
    return mat_ok(m->dec.tok, nt, hp->n_vocab, wt);
}

static int cpu_probe(td_error *err)
{
    (void)err;
    return TD_OK;
}

static void cpu_close(td_wbackend *b)
{
    if (!b)
        return;
    if (b->bench_tokens > 0)
        fprintf(stderr, "[whisper-bench-hook] encodes=%ld decode_calls=%ld tokens=%ld\n",
                b->bench_encodes, b->bench_calls, b->bench_rows);
    td_wk_pool_free(b->kc.pool);
    if (b->arena)
        munmap(b->arena, b->arena_bytes);
    free(b->elp);
    free(b->dlp);
    free(b->eq8);
    free(b->dq8);
    free(b);
}

/* Quantize every linear layer into the arena's int8 region, in
 * q8_weight_bytes()'s order. */
static void q8_take(td_wbackend *b, unsigned char **cur, const td_wtensor *t, int n, int k,
                    td_q8_weight *dst)
{
    td_q8_weight_init(&b->kc, t->data, t->type, (size_t)k, n, k, *cur, dst);
    *cur += td_q8_weight_bytes(n, k);
    /* The F16 pages just read are not read again (but for the token
     * embedding's rows, one per decoded token, which come back from the
     * page cache): let them go tensor by tensor, or the worker would hold
     * the weights twice (base: 141 MB F16 beside 75 MB int8). Only a
     * hint: a failure costs memory, not correctness, so it is ignored. */
    (void)td_wmodel_release_pages(b->m, t->data, t->nbytes);
}

static int q8_init(td_wbackend *b, td_error *err)
{
    const td_wmodel *m = b->m;
    int na = m->hp.n_audio_state, nt = m->hp.n_text_state;
    b->eq8 = calloc((size_t)m->hp.n_audio_layer, sizeof *b->eq8);
    b->dq8 = calloc((size_t)m->hp.n_text_layer, sizeof *b->dq8);
    if (!b->eq8 || !b->dq8)
        return td_error_set(err, TD_ENOMEM, "cpu backend: out of memory");
    unsigned char *base = (unsigned char *)(b->arena + b->L.o_q8w), *cur = base;
    for (int l = 0; l < m->hp.n_audio_layer; l++) {
        const td_wenc_layer *el = &m->enc.layers[l];
        enc_q8 *q = &b->eq8[l];
        q8_take(b, &cur, el->attn.q.w, na, na, &q->q);
        q8_take(b, &cur, el->attn.k.w, na, na, &q->k);
        q8_take(b, &cur, el->attn.v.w, na, na, &q->v);
        q8_take(b, &cur, el->attn.o.w, na, na, &q->o);
        q8_take(b, &cur, el->mlp0.w, 4 * na, na, &q->mlp0);
        q8_take(b, &cur, el->mlp2.w, na, 4 * na, &q->mlp2);
    }
    for (int l = 0; l < m->hp.n_text_layer; l++) {
        const td_wdec_layer *dl = &m->dec.layers[l];
        dec_q8 *q = &b->dq8[l];
        q8_take(b, &cur, dl->attn.q.w, nt, nt, &q->q);
        q8_take(b, &cur, dl->attn.k.w, nt, nt, &q->k);
        q8_take(b, &cur, dl->attn.v.w, nt, nt, &q->v);
        q8_take(b, &cur, dl->attn.o.w, nt, nt, &q->o);
        q8_take(b, &cur, dl->cross.q.w, nt, nt, &q->cq);
        q8_take(b, &cur, dl->cross.k.w, nt, na, &q->ck);
        q8_take(b, &cur, dl->cross.v.w, nt, na, &q->cv);
        q8_take(b, &cur, dl->cross.o.w, nt, nt, &q->co);
        q8_take(b, &cur, dl->mlp0.w, 4 * nt, nt, &q->mlp0);
        q8_take(b, &cur, dl->mlp2.w, nt, 4 * nt, &q->mlp2);
    }
    q8_take(b, &cur, m->dec.tok, m->hp.n_vocab, nt, &b->tok_q8);
    /* the convolutions, reordered into the work region first (free now) */
    float *wperm = b->arena + b->L.o_work + b->L.convw;
    int nm = m->hp.n_mels;
    td_wk_conv3_perm(&b->kc, nm, na, m->enc.conv1_w->data, m->enc.conv1_w->type, wperm);
    td_q8_weight_init(&b->kc, wperm, TD_WT_F32, (size_t)3 * nm, na, 3 * nm, cur, &b->conv1_q8);
    cur += td_q8_weight_bytes(na, 3 * nm);
    (void)td_wmodel_release_pages(m, m->enc.conv1_w->data, m->enc.conv1_w->nbytes);
    td_wk_conv3_perm(&b->kc, na, na, m->enc.conv2_w->data, m->enc.conv2_w->type, wperm);
    td_q8_weight_init(&b->kc, wperm, TD_WT_F32, (size_t)3 * na, na, 3 * na, cur, &b->conv2_q8);
    cur += td_q8_weight_bytes(na, 3 * na);
    (void)td_wmodel_release_pages(m, m->enc.conv2_w->data, m->enc.conv2_w->nbytes);
    if ((size_t)(cur - base) != b->L.q8w_bytes) /* the order must match q8_weight_bytes() */
        return td_error_set(err, TD_EINVAL, "cpu backend: int8 weight layout mismatch");
    b->q8ops = td_q8_ops_best();
    return TD_OK;
}

static int cpu_open(const td_wmodel *m, const td_wconfig *cfg, td_wbackend **out, td_error *err)
{
    *out = NULL;
    if (!m || !cfg)
        return td_error_set(err, TD_EINVAL, "cpu backend: no model or configuration");
    td_wbackend *b = calloc(1, sizeof *b);
    if (!b)
        return td_error_set(err, TD_ENOMEM, "cpu backend: out of memory");
    b->m = m;
    const char *bt = getenv("TD_WHISPER_BENCH_TOKENS");
    b->bench_tokens = bt ? atoi(bt) : 0;
    int rc = TD_OK;
    if (layout_compute(&m->hp, cfg, &b->L, err) != 0) {
        rc = TD_EINVAL;
        goto fail;
    }
    if (!weights_ok(m)) {
        rc = td_error_set(err, TD_EINPUT, "%s: weight shapes or types the cpu backend cannot use",
                          m->path ? m->path : "model");
        goto fail;
    }
    b->elp = calloc((size_t)m->hp.n_audio_layer, sizeof *b->elp);
    b->dlp = calloc((size_t)m->hp.n_text_layer, sizeof *b->dlp);
    if (!b->elp || !b->dlp) {
        rc = td_error_set(err, TD_ENOMEM, "cpu backend: out of memory");
        goto fail;
    }
    b->arena_bytes = b->L.total_floats * sizeof(float);
    void *p = mmap(NULL, b->arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        rc = td_error_errno(err, TD_ENOMEM, errno, "cpu backend: %zu MB of buffers",
                            b->arena_bytes >> 20);
        goto fail;
    }
    b->arena = p;
    if (params_copy(b) != 0) {
        rc = td_error_set(err, TD_EINPUT, "%s: bias, norm or embedding tensors not F32 of the right size",
                          m->path ? m->path : "model");
        goto fail;
    }
    rc = td_wk_pool_create(b->L.n_threads, &b->kc.pool, err);
    if (rc != TD_OK)
        goto fail;
    b->kc.ops = td_wk_ops_best();
    b->kc.impl = b->L.blas ? TD_WK_GEMM_BLAS : TD_WK_GEMM_OWN;
    b->kc.scratch = b->arena + b->L.o_scratch;
    b->kc.scratch_floats = b->L.scratch_floats;
    if (b->L.blas) {
        b->kc.wconv = b->arena + b->L.o_wconv;
        b->kc.wconv_floats = b->L.wconv_floats;
        td_wk_blas_threads(b->L.n_threads);
    }
    if (b->L.q8) {
        rc = q8_init(b, err);
        if (rc != TD_OK)
            goto fail;
    }
    b->last_window = -1;
    *out = b;
    return TD_OK;
fail:
    cpu_close(b);
    return rc;
}

size_t td_wcpu_arena_size(const td_wbackend *b)
{
    return b->arena_bytes;
}

const char *td_wcpu_isa_name(const td_wbackend *b)
{
    return b->kc.ops->name;
}

void td_wcpu_use_ops(td_wbackend *b, const td_wk_ops *ops)
{
    if (ops)
        b->kc.ops = ops;
}

/* ------------------------------------------------------------------ */
/* Encoder                                                              */

static inline float *W(td_wbackend *b, size_t off)
{
    return b->arena + b->L.o_work + off;
}

/* A linear layer's product for the context's compute type: job i computes
 * c_i (+)= A (m x k) . W_i^T + bias_i, from the mapped weights (F32
 * products) or their int8 copies (q8). */
typedef struct lin_job {
    const td_wtensor *w;
    const td_q8_weight *wq;
    const float *bias;
    float *c;
    size_t ldc;
} lin_job;

static void linear(td_wbackend *b, int m, int k, const float *a, size_t lda, int n_jobs,
                   const lin_job *jobs, int accumulate)
{
    if (b->q8ops) {
        td_q8_job qj[4];
        for (int j = 0; j < n_jobs; j++)
            qj[j] = (td_q8_job){jobs[j].wq, jobs[j].bias, jobs[j].c, jobs[j].ldc};
        td_q8_gemm(&b->kc, b->q8ops, m, k, a, lda, b->arena + b->L.o_q8act, n_jobs, qj,
                   accumulate);
        return;
    }
    td_wk_gemm_job gj[4];
    for (int j = 0; j < n_jobs; j++)
        gj[j] = (td_wk_gemm_job){(int)jobs[j].w->ne[1], jobs[j].w->data, (size_t)k, jobs[j].bias,
                                 jobs[j].c, jobs[j].ldc};
    td_wk_gemm_multi(&b->kc, m, k, a, lda, jobs[0].w->type, n_jobs, gj, accumulate);
}

static void linear1(td_wbackend *b, int m, int k, const float *a, size_t lda,
                    const td_wtensor *w, const td_q8_weight *wq, const float *bias, float *c,
                    size_t ldc, int accumulate)
{
    lin_job j = {w, wq, bias, c, ldc};
    linear(b, m, k, a, lda, 1, &j, accumulate);
}

typedef struct cross_pack {
    td_wbackend *b;
    int window, layer;
    const float *k, *v;
} cross_pack;

/* Window slot w's cross K/V of one layer (F32 or halves). */
static float *cross_layer(td_wbackend *b, int w, int layer)
{
    const layout *L = &b->L;
    float *base = b->arena + L->o_cross + (size_t)w * L->cross_floats;
    if (L->cross_f16)
        return (float *)((uint16_t *)base + (size_t)layer * L->nht * L->kvf_c);
    return base + (size_t)layer * L->nht * L->kvf_c;
}

static void cross_pack_task(void *arg, int ith, int nth)
{
    cross_pack *c = arg;
    const layout *L = &c->b->L;
    if (L->cross_f16) {
        uint16_t *base = (uint16_t *)cross_layer(c->b, c->window, c->layer);
        float *tmp = c->b->kc.scratch + (size_t)ith * c->b->kc.scratch_floats;
        for (int h = ith; h < L->nht; h += nth)
            td_wk_kv_pack_f16(c->b->kc.ops, base + (size_t)h * L->kvf_c, L->cap_c, L->dt, L->C,
                              c->k, c->v, (size_t)L->nt, h * L->dt, tmp);
        return;
    }
    float *base = cross_layer(c->b, c->window, c->layer);
    float *tmp = c->b->kc.scratch + (size_t)ith * c->b->kc.scratch_floats;
    for (int h = ith; h < L->nht; h += nth)
        td_wk_kv_pack(base + (size_t)h * L->kvf_c, L->cap_c, L->dt, L->C, c->k, c->v,
                      (size_t)L->nt, h * L->dt, tmp);
}

/* The encoder over one window into window slot w. */
static void encode_one(td_wbackend *b, int w, const float *mel)
{
    const td_wmodel *m = b->m;
    const layout *L = &b->L;
    td_wk_ctx *kc = &b->kc;
    size_t C = (size_t)L->C, na = (size_t)L->na, nt = (size_t)L->nt, nm = (size_t)L->nm;
    size_t T2 = 2 * C;
    float *ex = W(b, L->ex), *mel_t = W(b, L->mel_t), *x1p = W(b, L->x1p), *convw = W(b, L->convw);

    /* mel [n_mels][T2] -> time-major rows with a zero row on each side */
    memset(mel_t, 0, nm * sizeof(float));
    memset(mel_t + (T2 + 1) * nm, 0, nm * sizeof(float));
    for (size_t t0 = 0; t0 < T2; t0 += 64) {
        size_t t1 = t0 + 64 < T2 ? t0 + 64 : T2;
        for (size_t i = 0; i < nm; i++)
            for (size_t t = t0; t < t1; t++)
                mel_t[(t + 1) * nm + i] = mel[i * T2 + t];
    }
    /* conv1 (stride 1) into x1p rows 1..T2, GELU; rows 0 and T2+1 are the padding */
    memset(x1p, 0, na * sizeof(float));
    memset(x1p + (T2 + 1) * na, 0, na * sizeof(float));
    if (b->q8ops) { /* A row t: input rows t .. t+2 (lda c_in) */
        td_q8_job j1 = {&b->conv1_q8, b->conv1_b, x1p + na, na};
        td_q8_gemm(kc, b->q8ops, (int)T2, 3 * L->nm, mel_t, nm, b->arena + L->o_q8act, 1, &j1, 0);
    } else {
        td_wk_conv3(kc, (int)T2, 1, L->nm, L->na, mel_t, m->enc.conv1_w->data,
                    m->enc.conv1_w->type, b->conv1_b, convw, x1p + na, na);
    }
    td_wk_gelu_add(kc, x1p + na, T2 * na, NULL);
    /* conv2 (stride 2), GELU, + positional embedding */
    if (b->q8ops) { /* A row t: input rows 2t .. 2t+2 (lda 2 c_in) */
        td_q8_job j2 = {&b->conv2_q8, b->conv2_b, ex, na};
        td_q8_gemm(kc, b->q8ops, L->C, 3 * L->na, x1p, 2 * na, b->arena + L->o_q8act, 1, &j2, 0);
    } else {
        td_wk_conv3(kc, L->C, 2, L->na, L->na, x1p, m->enc.conv2_w->data, m->enc.conv2_w->type,
                    b->conv2_b, convw, ex, na);
    }
    td_wk_gelu_add(kc, ex, C * na, b->enc_pos);

    float *eh = W(b, L->eh), *eq = W(b, L->eq), *ek = W(b, L->ek), *ev = W(b, L->ev);
    float *eka = W(b, L->eka), *evta = W(b, L->evta), *eff = W(b, L->eff);
    for (int l = 0; l < m->hp.n_audio_layer; l++) {
        const td_wenc_layer *el = &m->enc.layers[l];
        const enc_lp *p = &b->elp[l];
        /* x += attn(ln(x)) */
        td_wk_layernorm_rows(kc, L->C, L->na, ex, na, p->attn_ln_w, p->attn_ln_b, eh, na);
        const enc_q8 *q = b->eq8 ? &b->eq8[l] : NULL;
        lin_job qkv[3] = {
            {el->attn.q.w, q ? &q->q : NULL, p->q_b, eq, na},
            {el->attn.k.w, q ? &q->k : NULL, NULL, ek, na},
            {el->attn.v.w, q ? &q->v : NULL, p->v_b, ev, na},
        };
        linear(b, L->C, L->na, eh, na, 3, qkv, 0);
        if (!L->q8_attn ||
            !td_q8_enc_attn(kc, b->q8ops, L->C, L->na, L->nha, eq, ek, ev, eka, eh))
            td_wk_enc_attn(kc, L->C, L->na, L->nha, eq, ek, ev, eka, evta, eh);
        linear1(b, L->C, L->na, eh, na, el->attn.o.w, q ? &q->o : NULL, p->o_b, ex, na, 1);
        /* x += mlp(ln(x)) */
        td_wk_layernorm_rows(kc, L->C, L->na, ex, na, p->mlp_ln_w, p->mlp_ln_b, eh, na);
        linear1(b, L->C, L->na, eh, na, el->mlp0.w, q ? &q->mlp0 : NULL, p->mlp0_b, eff, 4 * na,
                0);
        td_wk_gelu_add(kc, eff, C * 4 * na, NULL);
        linear1(b, L->C, 4 * L->na, eff, 4 * na, el->mlp2.w, q ? &q->mlp2 : NULL, p->mlp2_b, ex,
                na, 1);
    }
    float *enc_out = b->arena + L->o_enc_out;
    td_wk_layernorm_rows(kc, L->C, L->na, ex, na, b->ln_post_w, b->ln_post_b, enc_out, na);

    /* every decoder layer's cross-attention keys and values, packed */
    for (int l = 0; l < m->hp.n_text_layer; l++) {
        const td_wdec_layer *dl = &m->dec.layers[l];
        const dec_q8 *q = b->dq8 ? &b->dq8[l] : NULL;
        lin_job kv[2] = {
            {dl->cross.k.w, q ? &q->ck : NULL, NULL, eq, nt},
            {dl->cross.v.w, q ? &q->cv : NULL, b->dlp[l].cv_b, ek, nt},
        };
        linear(b, L->C, L->na, enc_out, na, 2, kv, 0);
        cross_pack cp = {b, w, l, eq, ek};
        td_wk_pool_run(kc->pool, cross_pack_task, &cp);
    }
    b->encoded[w] = 1;
    b->last_window = w;
    b->bench_encodes++;
}

static int cpu_encode(td_wbackend *b, int n_win, const int *windows, const float *const *mels,
                      td_error *err)
{
    if (n_win < 1 || n_win > b->L.max_windows || !windows || !mels)
        return td_error_set(err, TD_EINVAL, "cpu backend: encode of %d windows (at most %d)",
                            n_win, b->L.max_windows);
    for (int i = 0; i < n_win; i++) {
        if (windows[i] < 0 || windows[i] >= b->L.max_windows || !mels[i])
            return td_error_set(err, TD_EINVAL, "cpu backend: window slot %d not in 0..%d, or no mel",
                                windows[i], b->L.max_windows - 1);
        for (int j = 0; j < i; j++)
            if (windows[j] == windows[i])
                return td_error_set(err, TD_EINVAL, "cpu backend: window slot %d twice in one encode",
                                    windows[i]);
    }
    for (int i = 0; i < n_win; i++)
        encode_one(b, windows[i], mels[i]);
    return TD_OK;
}

/* Only the last window encoded keeps its encoder output (the others keep
 * their cross K/V, which is all decoding needs): tests read it right
 * after encoding. */
static int cpu_encoder_output(td_wbackend *b, int window, float *out, td_error *err)
{
    if (window < 0 || window != b->last_window)
        return td_error_set(err, TD_EINVAL, "cpu backend: encoder output of window slot %d: "
                            "only the last one encoded (%d) is kept", window, b->last_window);
    memcpy(out, b->arena + b->L.o_enc_out, (size_t)b->L.C * b->L.na * sizeof(float));
    return TD_OK;
}

/* ------------------------------------------------------------------ */
/* Decoder                                                              */

static float *kv_layer_slot(td_wbackend *b, int layer, int slot)
{
    const layout *L = &b->L;
    return b->arena + L->o_kv +
           ((size_t)layer * L->max_seq + (size_t)slot) * (size_t)L->nht * L->kvf_s;
}

/*
 * Benchmark hook, for bench/whisper-e2e.sh only: TD_WHISPER_BENCH_TOKENS=N
 * in the environment. A random-weight model decodes garbage of any length
 * (usually the 224-token cap, then every temperature fallback), so an end
 * to end timing with it measures nothing steady. With the hook every
 * decode call still runs the whole network (all weights read, all FLOPs
 * done), and then the logits it returns are replaced by a scripted,
 * confident distribution: a varying ordinary text token (logit 30 against
 * 0 for the rest) for the first N tokens after each prompt, then the end
 * of text. The decoding rules run on top unchanged (the first token is
 * still a timestamp), so each 30-s window decodes about N tokens at
 * temperature 0 with no fallback, the way clear speech does. close()
 * prints the counts (encoder windows, decode calls, token rows) to stderr
 * so that the benchmark can report what it timed.
 */
static void bench_script(td_wbackend *b, int n_seq, const td_wseq *seqs, const int32_t *tokens,
                         int all_logits, float *logits)
{
    const td_wmodel *m = b->m;
    int nv = m->hp.n_vocab;
    size_t row = 0;
    for (int s = 0; s < n_seq; s++) {
        const td_wseq *q = &seqs[s];
        /* the prompt ends after its last special token (sot, language,
         * task, notimestamps): sampled tokens are text, timestamps, eot */
        for (int t = 0; t < q->n_tokens; t++) {
            int32_t tk = *tokens++;
            if (t == 0 && q->n_past == 0)
                b->bench_prompt_end[q->slot] = 0;
            if (tk > m->sp.eot && tk < m->sp.ts_begin)
                b->bench_prompt_end[q->slot] = q->n_past + t + 1;
        }
        b->bench_rows += q->n_tokens;
        for (int t = all_logits ? 0 : q->n_tokens - 1; t < q->n_tokens; t++) {
            int pos = q->n_past + t; /* predicts position pos + 1 */
            int i = pos + 1 - b->bench_prompt_end[q->slot]; /* tokens sampled before it */
            int target = i >= b->bench_tokens ? m->sp.eot
                                              : 1000 + (int)(((unsigned)pos * 7919u + 13u) % 29000u);
            if (target >= nv)
                target = m->sp.eot;
            float *r = logits + row++ * (size_t)nv;
            memset(r, 0, (size_t)nv * sizeof *r);
            r[target] = 30.0f;
        }
    }
    b->bench_calls++;
}

/* Check a decode call's sequences; the number of rows in *rows. */
static int seqs_check(td_wbackend *b, int n_seq, const td_wseq *seqs, const int32_t *tokens,
                      int *rows, td_error *err)
{
    const layout *L = &b->L;
    if (n_seq < 1 || n_seq > L->max_seq || !seqs || !tokens)
        return td_error_set(err, TD_EINVAL, "cpu backend: %d sequences, at most %d", n_seq,
                            L->max_seq);
    unsigned char used[MAX_SEQ] = {0};
    int R = 0;
    for (int s = 0; s < n_seq; s++) {
        const td_wseq *q = &seqs[s];
        if (q->slot < 0 || q->slot >= L->max_seq || used[q->slot])
            return td_error_set(err, TD_EINVAL, "cpu backend: KV slot %d out of range or twice",
                                q->slot);
        used[q->slot] = 1;
        if (q->window < 0 || q->window >= L->max_windows || !b->encoded[q->window])
            return td_error_set(err, TD_EINVAL, "cpu backend: window slot %d is not encoded",
                                q->window);
        if (q->n_tokens < 1 || q->n_tokens > L->max_batch)
            return td_error_set(err, TD_EINVAL, "cpu backend: %d tokens in one call, at most %d",
                                q->n_tokens, L->max_batch);
        /* n_tokens is 1..max_batch here, so the subtraction cannot wrap
         * (n_past + n_tokens could, for an n_past near INT_MAX) */
        if (q->n_past < 0 || q->n_past > L->max_tokens - q->n_tokens)
            return td_error_set(err, TD_EINVAL,
                                "cpu backend: positions %d..%lld past the cache (%d)", q->n_past,
                                (long long)q->n_past + q->n_tokens - 1, L->max_tokens);
        if (R > L->R - q->n_tokens)
            return td_error_set(err, TD_EINVAL, "cpu backend: more than %d tokens in one call",
                                L->R);
        R += q->n_tokens;
    }
    for (int r = 0; r < R; r++)
        if (tokens[r] < 0 || tokens[r] >= b->m->hp.n_vocab)
            return td_error_set(err, TD_EINVAL, "cpu backend: token %d out of range", (int)tokens[r]);
    *rows = R;
    return TD_OK;
}

/* align_weights: softmax(q . K^T / sqrt(d)) over the window's frames, for
 * the asked heads of layer l and the call's R rows (one sequence); q is
 * the cross-attention query dq. The scores are the kernels' direct
 * products (ops->gemv, up to TD_WK_GEMV_ROWS rows a pass over K's rows)
 * and their softmax (ops->softmax): scalar loops here were 3 % of a
 * batched run, one pass per window over its text. */
static void align_probs(td_wbackend *b, int l, int window, const float *dq, int R)
{
    const layout *L = &b->L;
    const td_wk_ops *ops = b->kc.ops;
    const float scale = 1.0f / sqrtf((float)L->dt);
    const size_t d = (size_t)L->dt;
    float *qs = b->al_k; /* [TD_WK_GEMV_ROWS][d]: the rows' scaled queries */
    for (int i = 0; i < b->al_n; i++) {
        if (b->al_heads[2 * i] != l)
            continue;
        int h = b->al_heads[2 * i + 1];
        /* K rows [C][d] open the head's packed block (td_wk_kv_pack) */
        const void *k;
        enum td_wtype kt = TD_WT_F32;
        if (L->cross_f16) {
            k = (const uint16_t *)cross_layer(b, window, l) + (size_t)h * L->kvf_c;
            kt = TD_WT_F16;
        } else {
            k = cross_layer(b, window, l) + (size_t)h * L->kvf_c;
        }
        for (int r0 = 0; r0 < R; r0 += TD_WK_GEMV_ROWS) {
            int m = R - r0 < TD_WK_GEMV_ROWS ? R - r0 : TD_WK_GEMV_ROWS;
            for (int r = 0; r < m; r++)
                for (size_t e = 0; e < d; e++)
                    qs[(size_t)r * d + e] = dq[(size_t)(r0 + r) * L->nt + (size_t)h * d + e] * scale;
            float *o = b->al_out + ((size_t)i * b->al_rows + (size_t)(b->al_row0 + r0)) * L->C;
            ops->gemv(m, L->C, (int)d, qs, d, k, kt, d, NULL, o, (size_t)L->C, 0);
            for (int r = 0; r < m; r++)
                ops->softmax(o + (size_t)r * L->C, L->C, L->C);
        }
    }
}

static int cpu_decode(td_wbackend *b, int n_seq, const td_wseq *seqs, const int32_t *tokens,
                      int all_logits, float *logits, td_error *err)
{
    const td_wmodel *m = b->m;
    const layout *L = &b->L;
    td_wk_ctx *kc = &b->kc;
    int R = 0, rc;
    b->kept_rows = 0;
    if ((rc = seqs_check(b, n_seq, seqs, tokens, &R, err)) != TD_OK)
        return rc;
    if (!logits && all_logits)
        return td_error_set(err, TD_EINVAL, "cpu backend: all_logits needs a logits buffer");

    size_t nt = (size_t)L->nt, d = (size_t)L->dt;
    float *dx = W(b, L->dx), *dh = W(b, L->dh), *dq = W(b, L->dq), *dk = W(b, L->dk);
    float *dv = W(b, L->dv), *da = W(b, L->da_), *dff = W(b, L->dff);
    const td_wtensor *tok = m->dec.tok;

    /* x = token_embedding[tokens] + positional_embedding[n_past + t];
     * group tables: each sequence's rows */
    for (int s = 0, r = 0; s < n_seq; s++) {
        const td_wseq *q = &seqs[s];
        b->g_row0[s] = r;
        b->g_rows[s] = q->n_tokens;
        b->g_keys0[s] = q->n_past;
        for (int t = 0; t < q->n_tokens; t++, r++) {
            float *x = dx + (size_t)r * nt;
            if (tok->type == TD_WT_F16)
                kc->ops->f16_to_f32((const uint16_t *)tok->data + (size_t)tokens[r] * nt, x, nt);
            else
                memcpy(x, (const float *)tok->data + (size_t)tokens[r] * nt, nt * sizeof(float));
            const float *pos = b->dec_pos + (size_t)(q->n_past + t) * nt;
            for (size_t i = 0; i < nt; i++)
                x[i] += pos[i];
        }
    }
    /* cross-attention groups: runs of consecutive sequences on one window */
    int n_cg = 0;
    int c_row0[MAX_SEQ], c_rows[MAX_SEQ], c_win[MAX_SEQ];
    for (int s = 0; s < n_seq; s++) {
        if (n_cg > 0 && c_win[n_cg - 1] == seqs[s].window) {
            c_rows[n_cg - 1] += seqs[s].n_tokens;
            continue;
        }
        c_win[n_cg] = seqs[s].window;
        c_row0[n_cg] = b->g_row0[s];
        c_rows[n_cg] = seqs[s].n_tokens;
        n_cg++;
    }
    int c_keys0[MAX_SEQ];
    for (int g = 0; g < n_cg; g++)
        c_keys0[g] = L->C;

    float *cross[MAX_SEQ];
    const uint16_t *cross16[MAX_SEQ];
    for (int l = 0; l < m->hp.n_text_layer; l++) {
        const td_wdec_layer *dl = &m->dec.layers[l];
        const dec_lp *p = &b->dlp[l];
        /* x += self_attn(ln(x)), causal, through each sequence's KV slot */
        td_wk_layernorm_rows(kc, R, L->nt, dx, nt, p->attn_ln_w, p->attn_ln_b, dh, nt);
        const dec_q8 *q = b->dq8 ? &b->dq8[l] : NULL;
        lin_job qkv[3] = {
            {dl->attn.q.w, q ? &q->q : NULL, p->q_b, dq, nt},
            {dl->attn.k.w, q ? &q->k : NULL, NULL, dk, nt},
            {dl->attn.v.w, q ? &q->v : NULL, p->v_b, dv, nt},
        };
        linear(b, R, L->nt, dh, nt, 3, qkv, 0);
        for (int s = 0; s < n_seq; s++) {
            float *kvp = kv_layer_slot(b, l, seqs[s].slot);
            b->g_kv[s] = kvp;
            for (int t = 0; t < seqs[s].n_tokens; t++) {
                size_t r = (size_t)b->g_row0[s] + (size_t)t;
                for (int h = 0; h < L->nht; h++)
                    td_wk_kv_put(kvp + (size_t)h * L->kvf_s, L->cap_s, L->dt, seqs[s].n_past + t,
                                 dk + r * nt + (size_t)h * d, dv + r * nt + (size_t)h * d);
            }
        }
        td_wk_dec_attn_args sa = {.n_groups = n_seq, .n_head = L->nht, .d = L->dt,
                                  .cap = L->cap_s, .causal = 1, .kv = b->g_kv, .kvh = NULL,
                                  .q = dq, .out = da, .ld = nt, .g_row0 = b->g_row0,
                                  .g_rows = b->g_rows, .g_keys0 = b->g_keys0};
        td_wk_dec_attn(kc, &sa);
        linear1(b, R, L->nt, da, nt, dl->attn.o.w, q ? &q->o : NULL, p->o_b, dx, nt, 1);

        /* x += cross_attn(ln(x), encoder output of the sequence's window) */
        td_wk_layernorm_rows(kc, R, L->nt, dx, nt, p->cross_ln_w, p->cross_ln_b, dh, nt);
        linear1(b, R, L->nt, dh, nt, dl->cross.q.w, q ? &q->cq : NULL, p->cq_b, dq, nt, 0);
        if (b->al_out)
            align_probs(b, l, seqs[0].window, dq, R);
        for (int g = 0; g < n_cg; g++) {
            cross[g] = cross_layer(b, c_win[g], l);
            cross16[g] = (const uint16_t *)cross[g];
        }
        td_wk_dec_attn_args ca = {.n_groups = n_cg, .n_head = L->nht, .d = L->dt,
                                  .cap = L->cap_c, .causal = 0, .kv = cross,
                                  .kvh = L->cross_f16 ? cross16 : NULL,
                                  .q = dq, .out = da, .ld = nt, .g_row0 = c_row0,
                                  .g_rows = c_rows, .g_keys0 = c_keys0};
        td_wk_dec_attn(kc, &ca);
        linear1(b, R, L->nt, da, nt, dl->cross.o.w, q ? &q->co : NULL, p->co_b, dx, nt, 1);

        /* x += mlp(ln(x)) */
        td_wk_layernorm_rows(kc, R, L->nt, dx, nt, p->mlp_ln_w, p->mlp_ln_b, dh, nt);
        linear1(b, R, L->nt, dh, nt, dl->mlp0.w, q ? &q->mlp0 : NULL, p->mlp0_b, dff, 4 * nt, 0);
        td_wk_gelu_add(kc, dff, (size_t)R * 4 * nt, NULL);
        linear1(b, R, 4 * L->nt, dff, 4 * nt, dl->mlp2.w, q ? &q->mlp2 : NULL, p->mlp2_b, dx, nt,
                1);
    }

    /* final LayerNorm of the rows that get logits, then x . token_embedding^T */
    int rows;
    if (all_logits) {
        rows = R;
        td_wk_layernorm_rows(kc, R, L->nt, dx, nt, b->dec_ln_w, b->dec_ln_b, dh, nt);
    } else {
        rows = n_seq;
        for (int s = 0; s < n_seq; s++)
            kc->ops->layernorm(L->nt, dx + ((size_t)b->g_row0[s] + (size_t)seqs[s].n_tokens - 1) * nt,
                               b->dec_ln_w, b->dec_ln_b, 1e-5f, dh + (size_t)s * nt);
    }
    float *dst = logits ? logits : b->arena + L->o_logits;
    linear1(b, rows, L->nt, dh, nt, tok, b->q8ops ? &b->tok_q8 : NULL, NULL, dst,
            (size_t)m->hp.n_vocab, 0);
    if (b->bench_tokens > 0)
        bench_script(b, n_seq, seqs, tokens, all_logits, dst);
    if (!logits) {
        b->kept_rows = rows;
        memset(b->row_sampled, 0, (size_t)rows);
    }
    return TD_OK;
}

/* The rows of one sample() call, handed out to the pool's threads one at
 * a time: each row is independent (masked in place, its own output), and
 * a batched step has up to a few dozen rows of 51,865 logits, a few
 * milliseconds on one thread. */
typedef struct sample_job {
    td_wbackend *b;
    const td_wsampler *sp;
    const td_wsample_in *in;
    td_wsample_out *out;
    int n;
    _Atomic int next;
} sample_job;

static void sample_task(void *arg, int ith, int nth)
{
    sample_job *j = arg;
    int nv = j->b->m->hp.n_vocab;
    (void)ith;
    (void)nth;
    for (;;) {
        int i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n)
            return;
        td_wsample_row(j->sp, nv,
                       j->b->arena + j->b->L.o_logits + (size_t)j->in[i].row * (size_t)nv,
                       &j->in[i], &j->out[i]);
    }
}

static int cpu_sample(td_wbackend *b, const td_wsampler *sp, int n, const td_wsample_in *in,
                      td_wsample_out *out, td_error *err)
{
    if (n < 0 || (n > 0 && (!in || !out)) || !sp || (sp->n_suppress > 0 && !sp->suppress))
        return td_error_set(err, TD_EINVAL, "cpu backend: sample of %d rows", n);
    for (int i = 0; i < n; i++) {
        if (in[i].row < 0 || in[i].row >= b->kept_rows)
            return td_error_set(err, TD_EINVAL, "cpu backend: sample row %d of %d kept", in[i].row,
                                b->kept_rows);
        for (int j = 0; j < i; j++)
            if (in[j].row == in[i].row)
                return td_error_set(err, TD_EINVAL, "cpu backend: sample row %d twice",
                                    in[i].row);
        if (b->row_sampled[in[i].row])
            return td_error_set(err, TD_EINVAL, "cpu backend: row %d was sampled already",
                                in[i].row);
    }
    /* rows are masked in place: each is sampled once */
    sample_job j = {.b = b, .sp = sp, .in = in, .out = out, .n = n};
    atomic_store(&j.next, 0);
    if (n > 1)
        td_wk_pool_run(b->kc.pool, sample_task, &j);
    else
        sample_task(&j, 0, 1);
    for (int i = 0; i < n; i++)
        b->row_sampled[in[i].row] = 1;
    return TD_OK;
}

/* Copy positions [0, n_past) of every layer's cache from slot from to slot to. */
static void kv_slot_copy(td_wbackend *b, int from, int to, int n_past)
{
    const layout *L = &b->L;
    size_t d = (size_t)L->dt, kpanels = rnd((size_t)n_past, TD_WK_NR);
    for (int l = 0; l < b->m->hp.n_text_layer; l++) {
        float *src = kv_layer_slot(b, l, from), *dst = kv_layer_slot(b, l, to);
        for (int h = 0; h < L->nht; h++) {
            float *sh = src + (size_t)h * L->kvf_s, *dh = dst + (size_t)h * L->kvf_s;
            /* K panels holding positions < n_past */
            memcpy(dh, sh, kpanels * d * sizeof(float));
            /* V: rows < n_past of each column panel */
            for (size_t dp = 0; dp < d; dp += TD_WK_NR) {
                size_t off = (size_t)L->cap_s * d + dp * (size_t)L->cap_s;
                memcpy(dh + off, sh + off, (size_t)n_past * TD_WK_NR * sizeof(float));
            }
        }
    }
}

static int cpu_kv_copy(td_wbackend *b, int n, const td_wkv_copy *pairs, td_error *err)
{
    const layout *L = &b->L;
    if (n < 0 || (n > 0 && !pairs))
        return td_error_set(err, TD_EINVAL, "cpu backend: kv_copy of %d pairs", n);
    unsigned char dst[MAX_SEQ] = {0}, src[MAX_SEQ] = {0};
    for (int i = 0; i < n; i++) {
        const td_wkv_copy *c = &pairs[i];
        if (c->src < 0 || c->src >= L->max_seq || c->dst < 0 || c->dst >= L->max_seq ||
            c->n_pos < 0 || c->n_pos > L->max_tokens || dst[c->dst])
            return td_error_set(err, TD_EINVAL, "cpu backend: kv_copy %d -> %d of %d positions",
                                c->src, c->dst, c->n_pos);
        dst[c->dst] = 1;
        src[c->src] = 1;
    }
    for (int i = 0; i < n; i++)
        if (src[pairs[i].dst])
            return td_error_set(err, TD_EINVAL, "cpu backend: kv_copy into slot %d, also a source",
                                pairs[i].dst);
    for (int i = 0; i < n; i++) {
        if (pairs[i].n_pos > 0 && pairs[i].src != pairs[i].dst)
            kv_slot_copy(b, pairs[i].src, pairs[i].dst, pairs[i].n_pos);
        if (b->bench_tokens > 0)
            b->bench_prompt_end[pairs[i].dst] = b->bench_prompt_end[pairs[i].src];
    }
    return TD_OK;
}

/* Decode the sequence from position 0 in chunks the context takes (its
 * KV slot carries the chunks' context), with align_probs hooked in. */
static int cpu_align_weights(td_wbackend *b, int slot, int window, int n_tokens,
                             const int32_t *tokens, int n_heads, const int *heads, float *out,
                             td_error *err)
{
    const layout *L = &b->L;
    if (n_heads < 1 || !heads || !out || !tokens)
        return td_error_set(err, TD_EINVAL, "cpu backend: align_weights of %d heads", n_heads);
    for (int i = 0; i < n_heads; i++)
        if (heads[2 * i] < 0 || heads[2 * i] >= b->m->hp.n_text_layer || heads[2 * i + 1] < 0 ||
            heads[2 * i + 1] >= L->nht)
            return td_error_set(err, TD_EINVAL, "cpu backend: no decoder head (%d, %d)",
                                heads[2 * i], heads[2 * i + 1]);
    if (n_tokens < 1 || n_tokens > L->max_tokens)
        return td_error_set(err, TD_EINVAL, "cpu backend: align_weights of %d tokens, at most %d",
                            n_tokens, L->max_tokens);
    if (window < 0 || window >= L->max_windows || !b->encoded[window])
        return td_error_set(err, TD_EINVAL, "cpu backend: window slot %d holds no encoding",
                            window);
    b->al_k = malloc((size_t)TD_WK_GEMV_ROWS * (size_t)L->dt * sizeof *b->al_k);
    if (!b->al_k)
        return td_error_set(err, TD_ENOMEM, "cpu backend: align_weights: out of memory");
    b->al_heads = heads;
    b->al_n = n_heads;
    b->al_rows = n_tokens;
    b->al_out = out;
    int step = L->max_batch < L->max_rows ? L->max_batch : L->max_rows;
    int rc = TD_OK;
    for (int t0 = 0; t0 < n_tokens && rc == TD_OK; t0 += step) {
        td_wseq q = {.slot = slot, .window = window, .n_past = t0,
                     .n_tokens = n_tokens - t0 < step ? n_tokens - t0 : step};
        b->al_row0 = t0;
        rc = cpu_decode(b, 1, &q, tokens + t0, 0, NULL, err);
    }
    b->al_out = NULL;
    b->kept_rows = 0; /* the logits of this pass are nobody's to sample */
    free(b->al_k);
    b->al_k = NULL;
    return rc;
}

const td_wbackend_ops td_wbackend_cpu = {
    .api_version = TD_WBACKEND_API_VERSION,
    .name = "cpu",
    .probe = cpu_probe,
    .memory_need = cpu_memory_need,
    .open = cpu_open,
    .encode = cpu_encode,
    .decode = cpu_decode,
    .kv_copy = cpu_kv_copy,
    .sample = cpu_sample,
    .encoder_output = cpu_encoder_output,
    .close = cpu_close,
    .align_weights = cpu_align_weights,
};
