/*
 * test_cpu_backend.c: the Whisper CPU backend (src/whisper/backend/cpu/cpu.c) against
 * a straightforward forward pass written here in double precision, on
 * small random-weight models generated at test time (td_wmk_write):
 *   - encoder output and logits within 1e-5 relative L2 error, F16 and
 *     F32 models, every SIMD variant this CPU runs, each of our two GEMMs
 *     (direct and packed) and OpenBLAS's;
 *   - the KV cache: tokens fed one at a time give the logits of the whole
 *     sequence decoded at once; last-token logits equal all_logits' last;
 *   - several sequences in one call equal each sequence alone; kv_copy
 *     forks, reorders and copies caches as documented;
 *   - 1 and 2 threads agree to 1e-6;
 *   - memory_need is exact: weights as the loader counts them plus the
 *     arena open() allocates; bad configurations and calls are refused;
 *   - the backend table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "whisper/backend.h"
#include "whisper/backend/cpu/kernels.h"
#include "whisper/mkmodel.h"
#include "whisper/model.h"

/* ------------------------------------------------------------------ */
/* Reference forward pass, double precision                             */

static double tget(const td_wtensor *t, size_t i)
{
    return td_wk_w_at(t->data, t->type, i);
}

/* y[r][o] = b[o] + sum_i x[r][i] W[o][i] */
static void ref_linear(const double *x, int rows, int n_in, const td_wlinear *l, int n_out,
                       double *y)
{
    double *w = malloc((size_t)n_in * n_out * sizeof *w);
    assert_non_null(w);
    for (size_t i = 0; i < (size_t)n_in * n_out; i++)
        w[i] = tget(l->w, i);
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < n_out; o++) {
            double s = l->b ? tget(l->b, (size_t)o) : 0.0;
            const double *xr = x + (size_t)r * n_in, *wo = w + (size_t)o * n_in;
            for (int i = 0; i < n_in; i++)
                s += xr[i] * wo[i];
            y[(size_t)r * n_out + o] = s;
        }
    free(w);
}

static void ref_ln(const double *x, int rows, int n, const td_wnorm *nm, double *y)
{
    for (int r = 0; r < rows; r++) {
        const double *xr = x + (size_t)r * n;
        double mean = 0, var = 0;
        for (int i = 0; i < n; i++)
            mean += xr[i];
        mean /= n;
        for (int i = 0; i < n; i++)
            var += (xr[i] - mean) * (xr[i] - mean);
        var /= n;
        for (int i = 0; i < n; i++)
            y[(size_t)r * n + i] =
                (xr[i] - mean) / sqrt(var + 1e-5) * tget(nm->w, (size_t)i) + tget(nm->b, (size_t)i);
    }
}

static double gelu(double x)
{
    return x * 0.5 * erfc(-x / sqrt(2.0));
}

/* out = attention of nq query rows over nk key rows, heads of d; query
 * row t sees keys [0, causal ? causal_base + t + 1 : nk). */
static void ref_attn(const double *q, int nq, const double *k, const double *v, int nk, int n_state,
                     int n_head, int causal, int causal_base, double *out)
{
    int d = n_state / n_head;
    double *s = malloc((size_t)nk * sizeof *s);
    for (int t = 0; t < nq; t++) {
        int n = causal ? causal_base + t + 1 : nk;
        for (int h = 0; h < n_head; h++) {
            const double *qr = q + (size_t)t * n_state + h * d;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < n; j++) {
                const double *kr = k + (size_t)j * n_state + h * d;
                double dot = 0;
                for (int i = 0; i < d; i++)
                    dot += qr[i] * kr[i];
                s[j] = dot / sqrt((double)d);
                mx = s[j] > mx ? s[j] : mx;
            }
            for (int j = 0; j < n; j++) {
                s[j] = exp(s[j] - mx);
                sum += s[j];
            }
            double *o = out + (size_t)t * n_state + h * d;
            for (int i = 0; i < d; i++)
                o[i] = 0;
            for (int j = 0; j < n; j++) {
                const double *vr = v + (size_t)j * n_state + h * d;
                double p = s[j] / sum;
                for (int i = 0; i < d; i++)
                    o[i] += p * vr[i];
            }
        }
    }
    free(s);
}

typedef struct ref {
    const td_wmodel *m;
    double *enc;              /* [C][na] after ln_post */
    double **ck, **cv;        /* per decoder layer [C][nt] */
    double **ckh, **cvh;      /* the same rounded to F16, as the backend stores them
                               * when asked to (td_wk_set_cross_f16) */
} ref;

static void ref_encode(ref *rf, const td_wmodel *m, const float *mel)
{
    const td_whparams *hp = &m->hp;
    int C = hp->n_audio_ctx, T2 = 2 * C, na = hp->n_audio_state, nm = hp->n_mels;
    rf->m = m;
    double *x1 = calloc((size_t)T2 * na, sizeof *x1);
    for (int t = 0; t < T2; t++)
        for (int o = 0; o < na; o++) {
            double s = tget(m->enc.conv1_b, (size_t)o);
            for (int i = 0; i < nm; i++)
                for (int k = 0; k < 3; k++) {
                    int src = t + k - 1;
                    if (src >= 0 && src < T2)
                        s += tget(m->enc.conv1_w, ((size_t)o * nm + i) * 3 + k) * mel[(size_t)i * T2 + src];
                }
            x1[(size_t)t * na + o] = gelu(s);
        }
    double *x = calloc((size_t)C * na, sizeof *x);
    for (int t = 0; t < C; t++)
        for (int o = 0; o < na; o++) {
            double s = tget(m->enc.conv2_b, (size_t)o);
            for (int i = 0; i < na; i++)
                for (int k = 0; k < 3; k++) {
                    int src = 2 * t + k - 1;
                    if (src >= 0 && src < T2)
                        s += tget(m->enc.conv2_w, ((size_t)o * na + i) * 3 + k) * x1[(size_t)src * na + i];
                }
            x[(size_t)t * na + o] = gelu(s) + tget(m->enc.pos, (size_t)t * na + o);
        }
    size_t sz = (size_t)C * na;
    double *h = malloc(sz * sizeof *h), *q = malloc(sz * sizeof *q), *k = malloc(sz * sizeof *k);
    double *v = malloc(sz * sizeof *v), *a = malloc(sz * sizeof *a), *y = malloc(sz * sizeof *y);
    double *ff = malloc(sz * 4 * sizeof *ff);
    for (int l = 0; l < hp->n_audio_layer; l++) {
        const td_wenc_layer *L = &m->enc.layers[l];
        ref_ln(x, C, na, &L->attn_ln, h);
        ref_linear(h, C, na, &L->attn.q, na, q);
        ref_linear(h, C, na, &L->attn.k, na, k);
        ref_linear(h, C, na, &L->attn.v, na, v);
        ref_attn(q, C, k, v, C, na, hp->n_audio_head, 0, 0, a);
        ref_linear(a, C, na, &L->attn.o, na, y);
        for (size_t i = 0; i < sz; i++)
            x[i] += y[i];
        ref_ln(x, C, na, &L->mlp_ln, h);
        ref_linear(h, C, na, &L->mlp0, 4 * na, ff);
        for (size_t i = 0; i < sz * 4; i++)
            ff[i] = gelu(ff[i]);
        ref_linear(ff, C, 4 * na, &L->mlp2, na, y);
        for (size_t i = 0; i < sz; i++)
            x[i] += y[i];
    }
    rf->enc = malloc(sz * sizeof *rf->enc);
    ref_ln(x, C, na, &m->enc.ln_post, rf->enc);
    int nt = hp->n_text_state;
    rf->ck = calloc((size_t)hp->n_text_layer, sizeof *rf->ck);
    rf->cv = calloc((size_t)hp->n_text_layer, sizeof *rf->cv);
    rf->ckh = calloc((size_t)hp->n_text_layer, sizeof *rf->ckh);
    rf->cvh = calloc((size_t)hp->n_text_layer, sizeof *rf->cvh);
    for (int l = 0; l < hp->n_text_layer; l++) {
        rf->ck[l] = malloc((size_t)C * nt * sizeof(double));
        rf->cv[l] = malloc((size_t)C * nt * sizeof(double));
        rf->ckh[l] = malloc((size_t)C * nt * sizeof(double));
        rf->cvh[l] = malloc((size_t)C * nt * sizeof(double));
        ref_linear(rf->enc, C, na, &m->dec.layers[l].cross.k, nt, rf->ck[l]);
        ref_linear(rf->enc, C, na, &m->dec.layers[l].cross.v, nt, rf->cv[l]);
        for (size_t i = 0; i < (size_t)C * nt; i++) {
            rf->ckh[l][i] = td_wk_f16_to_f32(td_wk_f32_to_f16((float)rf->ck[l][i]));
            rf->cvh[l][i] = td_wk_f16_to_f32(td_wk_f32_to_f16((float)rf->cv[l][i]));
        }
    }
    free(x1);
    free(x);
    free(h);
    free(q);
    free(k);
    free(v);
    free(a);
    free(y);
    free(ff);
}

static void ref_free(ref *rf)
{
    if (!rf->m)
        return;
    for (int l = 0; l < rf->m->hp.n_text_layer; l++) {
        free(rf->ck[l]);
        free(rf->cv[l]);
        free(rf->ckh[l]);
        free(rf->cvh[l]);
    }
    free(rf->ck);
    free(rf->cv);
    free(rf->ckh);
    free(rf->cvh);
    free(rf->enc);
    memset(rf, 0, sizeof *rf);
}

/* Logits of every position of tokens[0..n) (a whole sequence, no cache):
 * out is [n][n_vocab]. half: against cross K/V rounded to F16. */
static void ref_decode(const ref *rf, const int32_t *tokens, int n, int half, double *out)
{
    const td_wmodel *m = rf->m;
    const td_whparams *hp = &m->hp;
    int nt = hp->n_text_state, C = hp->n_audio_ctx, nv = hp->n_vocab;
    size_t sz = (size_t)n * nt;
    double *x = calloc(sz, sizeof *x), *h = calloc(sz, sizeof *h), *q = calloc(sz, sizeof *q);
    double *k = calloc(sz, sizeof *k), *v = calloc(sz, sizeof *v), *a = calloc(sz, sizeof *a);
    double *y = calloc(sz, sizeof *y), *ff = calloc(sz * 4, sizeof *ff);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < nt; i++)
            x[(size_t)t * nt + i] = tget(m->dec.tok, (size_t)tokens[t] * nt + i) +
                                    tget(m->dec.pos, (size_t)t * nt + i);
    for (int l = 0; l < hp->n_text_layer; l++) {
        const td_wdec_layer *L = &m->dec.layers[l];
        ref_ln(x, n, nt, &L->attn_ln, h);
        ref_linear(h, n, nt, &L->attn.q, nt, q);
        ref_linear(h, n, nt, &L->attn.k, nt, k);
        ref_linear(h, n, nt, &L->attn.v, nt, v);
        ref_attn(q, n, k, v, n, nt, hp->n_text_head, 1, 0, a);
        ref_linear(a, n, nt, &L->attn.o, nt, y);
        for (size_t i = 0; i < sz; i++)
            x[i] += y[i];
        ref_ln(x, n, nt, &L->cross_ln, h);
        ref_linear(h, n, nt, &L->cross.q, nt, q);
        ref_attn(q, n, half ? rf->ckh[l] : rf->ck[l], half ? rf->cvh[l] : rf->cv[l], C, nt,
                 hp->n_text_head, 0, 0, a);
        ref_linear(a, n, nt, &L->cross.o, nt, y);
        for (size_t i = 0; i < sz; i++)
            x[i] += y[i];
        ref_ln(x, n, nt, &L->mlp_ln, h);
        ref_linear(h, n, nt, &L->mlp0, 4 * nt, ff);
        for (size_t i = 0; i < sz * 4; i++)
            ff[i] = gelu(ff[i]);
        ref_linear(ff, n, 4 * nt, &L->mlp2, nt, y);
        for (size_t i = 0; i < sz; i++)
            x[i] += y[i];
    }
    ref_ln(x, n, nt, &m->dec.ln, h);
    for (int t = 0; t < n; t++)
        for (int o = 0; o < nv; o++) {
            double s = 0;
            for (int i = 0; i < nt; i++)
                s += h[(size_t)t * nt + i] * tget(m->dec.tok, (size_t)o * nt + i);
            out[(size_t)t * nv + o] = s;
        }
    free(x);
    free(h);
    free(q);
    free(k);
    free(v);
    free(a);
    free(y);
    free(ff);
}

/* ------------------------------------------------------------------ */
/* Fixtures                                                             */

static double rel_l2_fd(const float *got, const double *want, size_t n)
{
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        e += d * d;
        r += want[i] * want[i];
    }
    return sqrt(e / (r > 0 ? r : 1e-300));
}

static double rel_l2_ff(const float *got, const float *want, size_t n)
{
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        e += d * d;
        r += (double)want[i] * want[i];
    }
    return sqrt(e / (r > 0 ? r : 1e-300));
}

typedef struct fixture {
    char *dir;
    td_wmodel *m;
    float *mel;
    ref rf;
} fixture;

static fixture f16fx, f32fx;

static void fixture_make(fixture *fx, enum td_wtype wt, int state, int heads, int enc_layers,
                         int dec_layers, int n_audio_ctx, uint64_t seed)
{
    td_wmk_spec spec;
    memset(&spec, 0, sizeof spec);
    td_error err;
    assert_int_equal(td_wmk_dims("tiny", &spec.hp, &err), TD_OK);
    spec.hp.n_audio_state = spec.hp.n_text_state = state;
    spec.hp.n_audio_head = spec.hp.n_text_head = heads;
    spec.hp.n_audio_layer = enc_layers;
    spec.hp.n_text_layer = dec_layers;
    spec.hp.n_audio_ctx = n_audio_ctx;
    spec.wtype = wt;
    spec.seed = seed;
    spec.vocab_count = 600; /* a small file; the special tokens are implied */
    fx->dir = make_tmpdir_named("test_cpu_backend");
    char *path = pathf("%s/model.bin", fx->dir);
    if (td_wmk_write(&spec, path, &err) != TD_OK)
        fail_msg("td_wmk_write: %s", err.msg);
    if (td_wmodel_open(path, &fx->m, &err) != TD_OK)
        fail_msg("td_wmodel_open: %s", err.msg);
    free(path);
    size_t n_mel = (size_t)fx->m->hp.n_mels * 2 * (size_t)n_audio_ctx;
    fx->mel = malloc(n_mel * sizeof *fx->mel);
    uint64_t r = seed * 7919 + 1;
    for (size_t i = 0; i < n_mel; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        fx->mel[i] = (float)((double)(r >> 11) / (double)(1ull << 53) * 3.0 - 1.5);
    }
    ref_encode(&fx->rf, fx->m, fx->mel);
}

static void fixture_free(fixture *fx)
{
    ref_free(&fx->rf);
    td_wmodel_close(fx->m);
    free(fx->mel);
    if (fx->dir) {
        rm_tree(fx->dir);
        free(fx->dir);
    }
    memset(fx, 0, sizeof *fx);
}

static int setup(void **state)
{
    (void)state;
    /* F16: the released layout, 30-s windows (1500 frames), d_head 32 */
    fixture_make(&f16fx, TD_WT_F16, 64, 2, 2, 2, 1500, 1);
    /* F32: other shapes (d_head 24, a state that is no multiple of 16,
     * 3 decoder layers, a short window) to reach the kernels' edges */
    fixture_make(&f32fx, TD_WT_F32, 72, 3, 2, 3, 200, 2);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fixture_free(&f16fx);
    fixture_free(&f32fx);
    return 0;
}

static td_wbackend *open_cfg(const td_wmodel *m, int threads, int max_seq, int max_tokens,
                             int max_batch)
{
    td_wconfig cfg = {threads, max_seq, max_tokens, max_batch, TD_WCOMPUTE_F32};
    td_wbackend *b = NULL;
    td_error err;
    if (td_wbackend_cpu.open(m, &cfg, &b, &err) != TD_OK)
        fail_msg("open: %s", err.msg);
    return b;
}

static void encode_ok(td_wbackend *b, const float *mel)
{
    td_error err;
    if (td_wbackend_cpu.encode(b, mel, &err) != TD_OK)
        fail_msg("encode: %s", err.msg);
}

static void decode_ok(td_wbackend *b, int n_seq, int n_tokens, const int32_t *tokens, int n_past,
                      int all, float *logits)
{
    td_error err;
    if (td_wbackend_cpu.decode(b, n_seq, n_tokens, tokens, n_past, all, logits, &err) != TD_OK)
        fail_msg("decode: %s", err.msg);
}

static const int32_t seq_a[6] = {50258, 50259, 50359, 50363, 220, 1000};
static const int32_t seq_b[6] = {50258, 50260, 50359, 12, 51864, 7};
static const int32_t seq_c[6] = {50258, 50261, 50360, 50364, 0, 31000};

/* Encoder output and all-position logits of seq_a against the reference. */
static void check_against_ref(fixture *fx, td_wbackend *b, const char *what)
{
    const td_whparams *hp = &fx->m->hp;
    size_t ne = (size_t)hp->n_audio_ctx * hp->n_audio_state;
    float *enc = malloc(ne * sizeof *enc);
    td_error err;
    encode_ok(b, fx->mel);
    assert_int_equal(td_wbackend_cpu.encoder_output(b, enc, &err), TD_OK);
    double e_enc = rel_l2_fd(enc, fx->rf.enc, ne);
    int n = 6, nv = hp->n_vocab;
    float *lg = malloc((size_t)n * nv * sizeof *lg);
    double *rl = malloc((size_t)n * nv * sizeof *rl);
    decode_ok(b, 1, n, seq_a, 0, 1, lg);
    ref_decode(&fx->rf, seq_a, n, td_wk_get_cross_f16(), rl);
    double e_lg = rel_l2_fd(lg, rl, (size_t)n * nv);
    print_message("    %s: encoder rel L2 %.2e, logits rel L2 %.2e\n", what, e_enc, e_lg);
    assert_true(e_enc < 1e-5);
    assert_true(e_lg < 1e-5);
    free(enc);
    free(lg);
    free(rl);
}

/* ------------------------------------------------------------------ */
/* Tests                                                                */

static void test_forward_f16(void **state)
{
    (void)state;
    td_wbackend *b = open_cfg(f16fx.m, 2, 1, 0, 0);
    check_against_ref(&f16fx, b, td_wcpu_isa_name(b));
    td_wbackend_cpu.close(b);
}

static void test_forward_f32(void **state)
{
    (void)state;
    td_wbackend *b = open_cfg(f32fx.m, 2, 1, 0, 0);
    check_against_ref(&f32fx, b, td_wcpu_isa_name(b));
    td_wbackend_cpu.close(b);
}

/* F16 cross K/V (TD_WHISPER_CROSS=f16) against the reference whose cross
 * K/V are rounded the same way: the same bound as F32 against the exact
 * one, so everything but that rounding is checked as tightly. */
static void test_forward_cross_f16(void **state)
{
    (void)state;
    int saved = td_wk_get_cross_f16();
    td_wk_set_cross_f16(1);
    fixture *fxs[2] = {&f32fx, &f16fx};
    for (int f = 0; f < 2; f++) {
        td_wbackend *b = open_cfg(fxs[f]->m, 2, 1, 0, 0);
        check_against_ref(fxs[f], b, f ? "F16 cross K/V, F16" : "F16 cross K/V, F32");
        td_wbackend_cpu.close(b);
    }
    td_wk_set_cross_f16(saved);
}

static void test_forward_variants(void **state)
{
    (void)state;
    for (int i = 0; i < TD_WK_N_ISA; i++) {
        const td_wk_ops *ops = td_wk_ops_get((enum td_wk_isa)i);
        if (!ops)
            continue;
        fixture *fxs[2] = {&f32fx, &f16fx};
        for (int f = 0; f < 2; f++) {
            /* plain C on the 30-s window is slow under the sanitizers; its
             * F16 paths are checked kernel by kernel in test_kernels */
            if (ops->isa == TD_WK_SCALAR && f == 1)
                continue;
            td_wbackend *b = open_cfg(fxs[f]->m, 2, 1, 0, 0);
            td_wcpu_use_ops(b, ops);
            char what[64];
            snprintf(what, sizeof what, "%s, %s", ops->name, f ? "F16" : "F32");
            check_against_ref(fxs[f], b, what);
            td_wbackend_cpu.close(b);
        }
    }
}

static void test_forward_blas(void **state)
{
    (void)state;
    enum td_wk_gemm_impl old = td_wk_get_gemm_impl();
    td_wk_set_gemm_impl(TD_WK_GEMM_BLAS);
    fixture *fxs[2] = {&f32fx, &f16fx};
    for (int f = 0; f < 2; f++) {
        td_wbackend *b = open_cfg(fxs[f]->m, 2, 1, 0, 0);
        /* the BLAS slab is part of the arena, and memory_need knows it */
        td_wconfig cfg = {2, 1, 0, 0, TD_WCOMPUTE_F32};
        assert_int_equal(td_wbackend_cpu.memory_need(&fxs[f]->m->hp, fxs[f]->m->wtype, &cfg) -
                             (int64_t)fxs[f]->m->weight_bytes,
                         (int64_t)td_wcpu_arena_size(b));
        check_against_ref(fxs[f], b, f ? "OpenBLAS GEMM, F16" : "OpenBLAS GEMM, F32");
        td_wbackend_cpu.close(b);
    }
    td_wk_set_gemm_impl(old);
}

/* The packed GEMM for every product past TD_WK_GEMV_ROWS rows (by
 * default only weights beyond the cache take it). */
static void test_forward_packed(void **state)
{
    (void)state;
    int saved = td_wk_get_direct_rows();
    td_wk_set_direct_rows(TD_WK_GEMV_ROWS);
    fixture *fxs[2] = {&f32fx, &f16fx};
    for (int f = 0; f < 2; f++) {
        td_wbackend *b = open_cfg(fxs[f]->m, 2, 1, 0, 0);
        check_against_ref(fxs[f], b, f ? "packed GEMM, F16" : "packed GEMM, F32");
        td_wbackend_cpu.close(b);
    }
    td_wk_set_direct_rows(saved);
}

/* Tokens one at a time through the cache = the whole sequence at once. */
static void test_incremental(void **state)
{
    (void)state;
    fixture *fxs[2] = {&f16fx, &f32fx};
    for (int f = 0; f < 2; f++) {
        const td_wmodel *m = fxs[f]->m;
        int nv = m->hp.n_vocab, n = 6;
        td_wbackend *b = open_cfg(m, 2, 1, 0, 0);
        encode_ok(b, fxs[f]->mel);
        float *all = malloc((size_t)n * nv * sizeof *all), *one = malloc((size_t)nv * sizeof *one);
        decode_ok(b, 1, n, seq_b, 0, 1, all);
        for (int t = 0; t < n; t++) {
            decode_ok(b, 1, 1, seq_b + t, t, 0, one);
            double e = rel_l2_ff(one, all + (size_t)t * nv, (size_t)nv);
            assert_true(e < 1e-5);
        }
        /* a prompt in two pieces, last-token logits only */
        decode_ok(b, 1, 2, seq_b, 0, 0, one);
        assert_true(rel_l2_ff(one, all + (size_t)1 * nv, (size_t)nv) < 1e-5);
        decode_ok(b, 1, 4, seq_b + 2, 2, 0, one);
        assert_true(rel_l2_ff(one, all + (size_t)5 * nv, (size_t)nv) < 1e-5);
        free(all);
        free(one);
        td_wbackend_cpu.close(b);
    }
}

/* n_seq sequences in one call = each one alone. */
static void test_multi_seq(void **state)
{
    (void)state;
    const td_wmodel *m = f32fx.m;
    int nv = m->hp.n_vocab;
    td_wbackend *b = open_cfg(m, 2, 3, 0, 0);
    encode_ok(b, f32fx.mel);
    /* prompts of 4 tokens for 3 sequences at once, all logits */
    int32_t toks[12];
    memcpy(toks, seq_a, 4 * sizeof *toks);
    memcpy(toks + 4, seq_b, 4 * sizeof *toks);
    memcpy(toks + 8, seq_c, 4 * sizeof *toks);
    float *together = malloc((size_t)12 * nv * sizeof *together);
    decode_ok(b, 3, 4, toks, 0, 1, together);
    /* then one more token each, last-token logits */
    int32_t next[3] = {seq_a[4], seq_b[4], seq_c[4]};
    float *step = malloc((size_t)3 * nv * sizeof *step);
    decode_ok(b, 3, 1, next, 4, 0, step);
    td_wbackend_cpu.close(b);

    const int32_t *seqs[3] = {seq_a, seq_b, seq_c};
    float *alone = malloc((size_t)5 * nv * sizeof *alone);
    for (int s = 0; s < 3; s++) {
        b = open_cfg(m, 2, 1, 0, 0);
        encode_ok(b, f32fx.mel);
        decode_ok(b, 1, 5, seqs[s], 0, 1, alone);
        for (int t = 0; t < 4; t++)
            assert_true(rel_l2_ff(together + ((size_t)s * 4 + t) * nv, alone + (size_t)t * nv,
                                  (size_t)nv) < 1e-6);
        assert_true(rel_l2_ff(step + (size_t)s * nv, alone + (size_t)4 * nv, (size_t)nv) < 1e-5);
        td_wbackend_cpu.close(b);
    }
    free(together);
    free(step);
    free(alone);
}

/* kv_copy: sequence d continues what sequence src[d] held. */
static void test_kv_copy(void **state)
{
    (void)state;
    const td_wmodel *m = f16fx.m;
    int nv = m->hp.n_vocab;
    /* reference logits of each prompt (first 4 tokens) followed by token X */
    const int32_t *seqs[3] = {seq_a, seq_b, seq_c};
    int32_t X = 4000;
    double *want[3];
    for (int s = 0; s < 3; s++) {
        int32_t t5[5];
        memcpy(t5, seqs[s], 4 * sizeof *t5);
        t5[4] = X;
        double *r = malloc((size_t)5 * nv * sizeof *r);
        ref_decode(&f16fx.rf, t5, 5, td_wk_get_cross_f16(), r);
        want[s] = malloc((size_t)nv * sizeof(double));
        memcpy(want[s], r + (size_t)4 * nv, (size_t)nv * sizeof(double));
        free(r);
    }
    td_wbackend *b = open_cfg(m, 2, 4, 32, 8);
    encode_ok(b, f16fx.mel);
    float *lg = malloc((size_t)4 * nv * sizeof *lg);
    int32_t toks[12], xs[4] = {X, X, X, X};
    td_error err;
    static const int perms[][4] = {
        {2, 0, 0, -1}, /* fork and reorder */
        {1, 2, 0, -1}, /* a rotation: every slot is remapped, nothing copied */
        {0, 0, 0, -1}, /* one source, three takers */
        {3, 3, 1, -1}, /* a source at or beyond n_seq, kept untouched */
    };
    encode_ok(b, f16fx.mel);
    for (size_t p = 0; p < sizeof perms / sizeof perms[0]; p++) {
        /* fresh prompts overwrite positions 0..3 of whatever slots the
         * sequences map to now */
        memcpy(toks, seq_a, 4 * sizeof *toks);
        memcpy(toks + 4, seq_b, 4 * sizeof *toks);
        memcpy(toks + 8, seq_c, 4 * sizeof *toks);
        decode_ok(b, 3, 4, toks, 0, 0, lg);
        /* sequence 3 holds seq_c too, decoded alone */
        int src_fill[4] = {0, 1, 2, 2};
        assert_int_equal(td_wbackend_cpu.kv_copy(b, src_fill, 4, 4, &err), TD_OK);
        int src[3] = {perms[p][0], perms[p][1], perms[p][2]};
        assert_int_equal(td_wbackend_cpu.kv_copy(b, src, 3, 4, &err), TD_OK);
        decode_ok(b, 3, 1, xs, 4, 0, lg);
        for (int d = 0; d < 3; d++) {
            int from = src[d] == 3 ? 2 : src[d]; /* sequence 3 held seq_c */
            double e = rel_l2_fd(lg + (size_t)d * nv, want[from], (size_t)nv);
            if (!(e < 1e-5))
                fail_msg("perm %zu: sequence %d (from %d): rel L2 %.2e", p, d, src[d], e);
        }
        /* sequence 3 was not rewritten (n_seq 3): it still continues seq_c */
        int32_t x4 = X;
        int src3[1] = {3};
        assert_int_equal(td_wbackend_cpu.kv_copy(b, src3, 1, 4, &err), TD_OK);
        decode_ok(b, 1, 1, &x4, 4, 0, lg);
        assert_true(rel_l2_fd(lg, want[2], (size_t)nv) < 1e-5);
    }
    for (int s = 0; s < 3; s++)
        free(want[s]);
    free(lg);
    td_wbackend_cpu.close(b);
}

static void test_threads(void **state)
{
    (void)state;
    fixture *fxs[2] = {&f16fx, &f32fx};
    for (int f = 0; f < 2; f++) {
        const td_wmodel *m = fxs[f]->m;
        const td_whparams *hp = &m->hp;
        size_t ne = (size_t)hp->n_audio_ctx * hp->n_audio_state;
        int nv = hp->n_vocab;
        float *enc[2], *lg[2];
        for (int k = 0; k < 2; k++) {
            td_wbackend *b = open_cfg(m, k + 1, 2, 0, 0);
            td_error err;
            encode_ok(b, fxs[f]->mel);
            enc[k] = malloc(ne * sizeof(float));
            assert_int_equal(td_wbackend_cpu.encoder_output(b, enc[k], &err), TD_OK);
            lg[k] = malloc((size_t)12 * nv * sizeof(float));
            int32_t toks[12];
            memcpy(toks, seq_a, 6 * sizeof *toks);
            memcpy(toks + 6, seq_c, 6 * sizeof *toks);
            decode_ok(b, 2, 6, toks, 0, 1, lg[k]);
            td_wbackend_cpu.close(b);
        }
        assert_true(rel_l2_ff(enc[1], enc[0], ne) < 1e-6);
        assert_true(rel_l2_ff(lg[1], lg[0], (size_t)12 * nv) < 1e-6);
        for (int k = 0; k < 2; k++) {
            free(enc[k]);
            free(lg[k]);
        }
    }
}

static void test_memory_need(void **state)
{
    (void)state;
    fixture *fxs[2] = {&f16fx, &f32fx};
    static const int cfgs[][4] = {{1, 1, 0, 0}, {2, 5, 0, 0}, {2, 5, 224, 16}, {3, 2, 100, 1}};
    for (int f = 0; f < 2; f++) {
        const td_wmodel *m = fxs[f]->m;
        /* weight bytes as the file holds them, computed from hparams alone */
        assert_int_equal(td_wcpu_weight_bytes(&m->hp, m->wtype), (int64_t)m->weight_bytes);
        for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
            td_wconfig cfg = {cfgs[c][0], cfgs[c][1], cfgs[c][2], cfgs[c][3], TD_WCOMPUTE_F32};
            int64_t need = td_wbackend_cpu.memory_need(&m->hp, m->wtype, &cfg);
            td_wbackend *b = open_cfg(m, cfg.n_threads, cfg.max_seq, cfg.max_tokens,
                                      cfg.max_batch_tokens);
            assert_int_equal(need - (int64_t)m->weight_bytes, (int64_t)td_wcpu_arena_size(b));
            assert_int_equal(td_wcpu_arena_bytes(&m->hp, &cfg), (int64_t)td_wcpu_arena_size(b));
            td_wbackend_cpu.close(b);
        }
        /* int8 (q8.h) holds an int8 copy of every linear layer on top, and
         * memory_need still matches what open() holds */
        td_wconfig c8 = {2, 5, 0, 0, TD_WCOMPUTE_INT8}, c32 = {2, 5, 0, 0, TD_WCOMPUTE_F32};
        td_wbackend *b8 = NULL;
        td_error err8 = {0};
        assert_int_equal(td_wbackend_cpu.open(m, &c8, &b8, &err8), TD_OK);
        int64_t need8 = td_wbackend_cpu.memory_need(&m->hp, m->wtype, &c8);
        int64_t mapped8 = td_wcpu_mapped_bytes(&m->hp, m->wtype, &c8);
        assert_int_equal(need8 - mapped8, (int64_t)td_wcpu_arena_size(b8));
        td_wbackend_cpu.close(b8);
        /* what stays mapped: everything but the released linear layers and
         * convolutions, i.e. at least the token embedding */
        int64_t ws = m->wtype == TD_WT_F16 ? 2 : 4;
        int64_t tok = ws * (int64_t)m->hp.n_vocab * m->hp.n_text_state;
        assert_true(mapped8 >= tok && mapped8 < (int64_t)m->weight_bytes);
        assert_int_equal(td_wcpu_mapped_bytes(&m->hp, m->wtype, &c32), (int64_t)m->weight_bytes);
        int64_t arena32 = td_wcpu_arena_bytes(&m->hp, &c32);
        int64_t linear_params = (int64_t)m->hp.n_audio_layer * 12 * m->hp.n_audio_state *
                                    m->hp.n_audio_state +
                                (int64_t)m->hp.n_text_layer * 14 * m->hp.n_text_state *
                                    m->hp.n_text_state +
                                (int64_t)m->hp.n_vocab * m->hp.n_text_state;
        /* the arena holds the int8 copies (cross K/V halves give some back) */
        assert_true((need8 - mapped8) - arena32 >= linear_params / 2);
        td_wconfig cbad = {2, 1, 0, 0, 7};
        assert_int_equal(td_wbackend_cpu.memory_need(&m->hp, m->wtype, &cbad), -1);
        /* the KV cache grows with sequences and length */
        td_wconfig c1 = {2, 1, 0, 0, TD_WCOMPUTE_F32}, c5 = {2, 5, 0, 0, TD_WCOMPUTE_F32}, c5s = {2, 5, 64, 0, TD_WCOMPUTE_F32};
        int64_t n1 = td_wbackend_cpu.memory_need(&m->hp, m->wtype, &c1);
        int64_t n5 = td_wbackend_cpu.memory_need(&m->hp, m->wtype, &c5);
        int64_t n5s = td_wbackend_cpu.memory_need(&m->hp, m->wtype, &c5s);
        int64_t kv_per_seq = (int64_t)m->hp.n_text_layer * 2 * 448 * m->hp.n_text_state * 4;
        assert_true(n5 - n1 >= 4 * kv_per_seq);
        assert_true(n5s < n5);
    }
    /* a real size: tiny, F16, beam 5 */
    td_whparams hp;
    td_error err;
    assert_int_equal(td_wmk_dims("tiny", &hp, &err), TD_OK);
    td_wconfig cfg = {2, 5, 0, 0, TD_WCOMPUTE_F32};
    int64_t need = td_wbackend_cpu.memory_need(&hp, TD_WT_F16, &cfg);
    print_message("    tiny F16, 2 threads, 5 sequences: memory_need %.1f MB (weights %.1f MB)\n",
                  need / 1e6, td_wcpu_weight_bytes(&hp, TD_WT_F16) / 1e6);
    assert_true(need > td_wcpu_weight_bytes(&hp, TD_WT_F16));
    /* invalid configurations */
    const td_wmodel *m = f16fx.m;
    static const int bad[][4] = {{2, 0, 0, 0}, {2, 65, 0, 0}, {2, 1, 449, 0}, {2, 1, 10, 11},
                                 {2, 1, -1, 0}};
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        td_wconfig bc = {bad[c][0], bad[c][1], bad[c][2], bad[c][3], TD_WCOMPUTE_F32};
        assert_int_equal(td_wbackend_cpu.memory_need(&m->hp, m->wtype, &bc), -1);
        td_wbackend *b = (td_wbackend *)&bc;
        assert_int_equal(td_wbackend_cpu.open(m, &bc, &b, &err), TD_EINVAL);
        assert_null(b);
    }
}

static void test_errors(void **state)
{
    (void)state;
    const td_wmodel *m = f32fx.m;
    int nv = m->hp.n_vocab;
    td_wbackend *b = open_cfg(m, 1, 2, 16, 4);
    td_error err;
    float *lg = malloc((size_t)8 * nv * sizeof *lg);
    float *enc = malloc((size_t)m->hp.n_audio_ctx * m->hp.n_audio_state * sizeof *enc);
    int32_t t[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(td_wbackend_cpu.decode(b, 1, 1, t, 0, 0, lg, &err), TD_EINVAL);
    assert_int_equal(td_wbackend_cpu.encoder_output(b, enc, &err), TD_EINVAL);
    assert_int_equal(td_wbackend_cpu.encode(b, NULL, &err), TD_EINVAL);
    encode_ok(b, f32fx.mel);
    assert_int_equal(td_wbackend_cpu.decode(b, 3, 1, t, 0, 0, lg, &err), TD_EINVAL);  /* n_seq */
    assert_int_equal(td_wbackend_cpu.decode(b, 1, 5, t, 0, 0, lg, &err), TD_EINVAL);  /* batch */
    assert_int_equal(td_wbackend_cpu.decode(b, 1, 4, t, 13, 0, lg, &err), TD_EINVAL); /* cache */
    assert_int_equal(td_wbackend_cpu.decode(b, 1, 1, t, -1, 0, lg, &err), TD_EINVAL);
    int32_t badtok[1] = {nv};
    assert_int_equal(td_wbackend_cpu.decode(b, 1, 1, badtok, 0, 0, lg, &err), TD_EINVAL);
    badtok[0] = -1;
    assert_int_equal(td_wbackend_cpu.decode(b, 1, 1, badtok, 0, 0, lg, &err), TD_EINVAL);
    int src_bad[2] = {0, 2};
    assert_int_equal(td_wbackend_cpu.kv_copy(b, src_bad, 2, 0, &err), TD_EINVAL);
    int src_ok[2] = {1, 0};
    assert_int_equal(td_wbackend_cpu.kv_copy(b, src_ok, 3, 0, &err), TD_EINVAL);
    assert_int_equal(td_wbackend_cpu.kv_copy(b, src_ok, 2, 17, &err), TD_EINVAL);
    assert_int_equal(td_wbackend_cpu.kv_copy(b, src_ok, 2, 0, &err), TD_OK);
    /* the last position of the cache is usable */
    decode_ok(b, 1, 4, t, 12, 0, lg);
    free(lg);
    free(enc);
    td_wbackend_cpu.close(b);
    td_wbackend_cpu.close(NULL);
}

static void test_table(void **state)
{
    (void)state;
    size_t n = 0;
    const td_wbackend_ops *const *list = td_wbackend_list(&n);
    assert_true(n >= 1);
    assert_ptr_equal(list[0], &td_wbackend_cpu);
    assert_ptr_equal(td_wbackend_find("cpu"), &td_wbackend_cpu);
    assert_null(td_wbackend_find("nope"));
    assert_null(td_wbackend_find(NULL));
    assert_int_equal(td_wbackend_cpu.api_version, TD_WBACKEND_API_VERSION);
    assert_string_equal(td_wbackend_cpu.name, "cpu");
    td_error err;
    assert_int_equal(td_wbackend_cpu.probe(&err), TD_OK);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(list[i]->open);
        assert_non_null(list[i]->memory_need);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),        cmocka_unit_test(test_forward_f16),
        cmocka_unit_test(test_forward_f32),  cmocka_unit_test(test_forward_cross_f16),
        cmocka_unit_test(test_forward_variants),
        cmocka_unit_test(test_forward_blas), cmocka_unit_test(test_forward_packed),
        cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_multi_seq),    cmocka_unit_test(test_kv_copy),
        cmocka_unit_test(test_threads),      cmocka_unit_test(test_memory_need),
        cmocka_unit_test(test_errors),
    };
    const char *filter = getenv("TEST_FILTER"); /* e.g. TEST_FILTER='test_kv*' */
    if (filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, setup, teardown);
}
