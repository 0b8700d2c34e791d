/*
 * test_decode.c: unit tests for the Whisper decoding rules and transcribe
 * loop (whisper/decode.c).
 *
 * The decoder is driven by a scripted backend: a td_wbackend_ops written
 * here whose decode() returns logits that each test scripts as a function
 * of the token history, and which keeps every sequence's history (so a
 * wrong n_past or kv_copy shows up as an assertion, and as the script
 * seeing the wrong history). The model is built by hand with the real
 * vocabulary size (51865 multilingual, 51864 English-only), so that the
 * special-token ids are the real ones, and generated token bytes.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"

#include "whisper/decode.h"

#define NV_MULTI 51865
#define NV_EN 51864
#define N_MELS 80
#define WIN 3000
#define MAXS 32
#define HCAP 512
#define BASE (-30.0f) /* logit of every token a script does not mention */

/* ---- a hand-built model ----------------------------------------------- */

typedef struct fake_model {
    td_wmodel m;
    const uint8_t **bytes;
    uint32_t *len;
    char *store;
    size_t used, cap;
} fake_model;

static void fm_set(fake_model *fm, int32_t id, const char *s, size_t n)
{
    assert_true(fm->used + n + 1 <= fm->cap);
    char *p = fm->store + fm->used;
    memcpy(p, s, n);
    p[n] = '\0';
    fm->used += n + 1;
    fm->bytes[id] = (const uint8_t *)p;
    fm->len[id] = (uint32_t)n;
}

static void fm_sets(fake_model *fm, int32_t id, const char *s)
{
    fm_set(fm, id, s, strlen(s));
}

/* Special tokens as DESIGN.md item 7 gives them. */
static void fill_special(td_wmodel *m, int n_vocab)
{
    td_wspecial *sp = &m->sp;
    int en = n_vocab == NV_EN;
    sp->eot = en ? 50256 : 50257;
    sp->sot = sp->eot + 1;
    sp->lang_begin = sp->sot + 1;
    sp->n_langs = en ? 0 : (n_vocab == NV_MULTI ? 99 : 100);
    int shift = n_vocab == 51866;
    sp->translate = (en ? 50357 : 50358) + shift;
    sp->transcribe = sp->translate + 1;
    sp->solm = sp->translate + 2;
    sp->prev = sp->translate + 3;
    sp->nospeech = sp->translate + 4;
    sp->notimestamps = sp->translate + 5;
    sp->ts_begin = sp->translate + 6;
    sp->blank = 220;
    m->multilingual = !en;
}

static void fm_specials(fake_model *fm)
{
    const td_wspecial *sp = &fm->m.sp;
    char buf[32];
    fm_sets(fm, sp->eot, "<|endoftext|>");
    fm_sets(fm, sp->sot, "<|startoftranscript|>");
    for (int i = 0; i < sp->n_langs; i++) {
        snprintf(buf, sizeof buf, "<|%s|>", td_wlang_code(i));
        fm_sets(fm, sp->lang_begin + i, buf);
    }
    fm_sets(fm, sp->translate, "<|translate|>");
    fm_sets(fm, sp->transcribe, "<|transcribe|>");
    fm_sets(fm, sp->solm, "<|startoflm|>");
    fm_sets(fm, sp->prev, "<|startofprev|>");
    fm_sets(fm, sp->nospeech, "<|nospeech|>");
    fm_sets(fm, sp->notimestamps, "<|notimestamps|>");
    for (int i = 0; i + sp->ts_begin < fm->m.hp.n_vocab; i++) {
        snprintf(buf, sizeof buf, "<|%.2f|>", i * 0.02);
        fm_sets(fm, sp->ts_begin + i, buf);
    }
    /* English-only files imply tokens between eot's neighbours and the
     * specials that have no name; give them one */
    for (int32_t id = sp->eot; id < fm->m.hp.n_vocab; id++)
        if (!fm->bytes[id]) {
            snprintf(buf, sizeof buf, "[_extra_token_%d]", id);
            fm_sets(fm, id, buf);
        }
}

static void fm_alloc(fake_model *fm, int n_vocab)
{
    memset(fm, 0, sizeof *fm);
    td_wmodel *m = &fm->m;
    m->path = (char *)"fake.bin";
    m->hp = (td_whparams){n_vocab, 1500, 384, 6, 4, 448, 384, 6, 4, N_MELS, 1};
    fill_special(m, n_vocab);
    fm->bytes = calloc((size_t)n_vocab, sizeof *fm->bytes);
    fm->len = calloc((size_t)n_vocab, sizeof *fm->len);
    fm->cap = (size_t)n_vocab * 40 + (1 << 20);
    fm->store = malloc(fm->cap);
    assert_non_null(fm->bytes);
    assert_non_null(fm->len);
    assert_non_null(fm->store);
    m->tok_bytes = fm->bytes;
    m->tok_len = fm->len;
    m->n_file_tokens = m->sp.eot + 1;
}

/* Token ids the tests use by name. */
enum {
    T_HELLO = 1000, T_WORLD, T_COMMA, T_WONDER, T_FUL, T_THE, T_CAT, T_SAT, T_DOG,
    T_FLAT = 1100,  /* T_FLAT .. T_FLAT + 19: a run of ordinary words */
    T_LTLT = 2000, T_SPPAREN2, T_CJK_BRACKET, T_NOTE_PREFIX = 3268, T_SP_NOTE_PREFIX = 873,
};

/* The fake vocabulary: ASCII symbols at 0..93 as in GPT-2's byte tokens,
 * " " at 220, words elsewhere, and the symbol tokens the suppression looks
 * for at their real multilingual ids. */
static void fm_init(fake_model *fm, int n_vocab)
{
    fm_alloc(fm, n_vocab);
    char buf[32];
    for (int i = 0; i < 94; i++) {
        buf[0] = (char)('!' + i);
        fm_set(fm, i, buf, 1);
    }
    for (int32_t id = 94; id < fm->m.sp.eot; id++) {
        snprintf(buf, sizeof buf, " w%d", id);
        fm_sets(fm, id, buf);
    }
    fm_sets(fm, 220, " ");
    fm_sets(fm, 359, " -");
    fm_sets(fm, 922, " '");
    fm_sets(fm, 931, " \xe2\x99\xaa");          /* " ♪" */
    fm_sets(fm, 3961, "\xe2\x99\xaa");          /* "♪" */
    fm_sets(fm, T_NOTE_PREFIX, "\xe2\x99");     /* first BPE token of "♩" */
    fm_sets(fm, T_SP_NOTE_PREFIX, " \xe2\x99"); /* ... and of " ♩" */
    fm_sets(fm, T_LTLT, "<<");
    fm_sets(fm, T_SPPAREN2, " ((");
    fm_sets(fm, T_CJK_BRACKET, "\xe3\x80\x8c"); /* 「 */
    fm_sets(fm, T_HELLO, " Hello");
    fm_sets(fm, T_WORLD, " world");
    fm_sets(fm, T_COMMA, ",");
    fm_sets(fm, T_WONDER, " wonder");
    fm_sets(fm, T_FUL, "ful");
    fm_sets(fm, T_THE, " the");
    fm_sets(fm, T_CAT, " cat");
    fm_sets(fm, T_SAT, " sat");
    fm_sets(fm, T_DOG, " dog");
    fm_specials(fm);
}

static void fm_free(fake_model *fm)
{
    free(fm->bytes);
    free(fm->len);
    free(fm->store);
}

/* ---- a scripted backend ----------------------------------------------- */

struct td_wbackend;
typedef void (*script_fn)(struct td_wbackend *be, int seq, const int32_t *samp, int ns, float *x);

/* One run: a decode of a window at one temperature, seen from the point
 * where the SOT sequence is complete. */
typedef struct run_rec {
    int seek;
    int32_t init[HCAP];
    int n_init;
} run_rec;

#define MAXW 8                    /* window slots */

struct td_wbackend {
    const td_wmodel *m;
    int sot_len;                  /* tokens of the SOT sequence */
    script_fn script;
    void *user;
    int seek;                     /* window of the sequence being scripted */
    int n_encode, n_decode, n_kv_copy;
    int run;                      /* runs in that window, less one */
    int wseek[MAXW];              /* seek of the window in each slot */
    int wrun[MAXW];               /* runs in each slot's window, less one */
    int32_t hist[MAXS][HCAP];     /* per KV slot */
    int hlen[MAXS];
    run_rec runs[64];
    int n_runs;
    int encodes[64];              /* seek of each encode */
    int enc_len[64];              /* its frames of audio: bin 0 nonzero, then only 0 */
    int bins_equal;               /* every mel bin is bin 0 (checked: rows laid out right) */
    int max_rows_seen;            /* most sequences in one decode call */
    int lang_top;                 /* language index with the top logit at [sot] */
    float ns_logit;               /* nospeech logit at the sot position */
    int hello_trap;               /* a huge non-language logit at [sot] */
    int n_align;                  /* align_weights() calls */
    int align_window[8];          /* the window slot of each */
};

/* The position where sampled tokens start in hist, or -1 while the SOT
 * sequence is not complete. */
static int samp_start(const struct td_wbackend *be, const int32_t *h, int len)
{
    int p = -1;
    for (int i = len - 1; i >= 0; i--)
        if (h[i] == be->m->sp.sot) {
            p = i;
            break;
        }
    assert_true(p >= 0);
    return len >= p + be->sot_len ? p + be->sot_len : -1;
}

static void fill_logits(struct td_wbackend *be, int s, int len, float *x)
{
    const td_wspecial *sp = &be->m->sp;
    const int32_t *h = be->hist[s];
    for (int i = 0; i < be->m->hp.n_vocab; i++)
        x[i] = BASE;
    if (h[len - 1] == sp->sot) {
        x[sp->nospeech] = be->ns_logit;
        if (sp->n_langs) {
            x[sp->lang_begin + be->lang_top] = 5;
            if (be->hello_trap)
                x[T_HELLO] = 100; /* not a language: masked in detection */
        }
    }
    int st = samp_start(be, h, len);
    if (st < 0)
        return;
    be->script(be, s, h + st, len - st, x);
}

/* The mel's first value says the window's seek (plus one). */
static int fb_encode(struct td_wbackend *be, int n_win, const int *windows,
                     const float *const *mels, td_error *err)
{
    (void)err;
    for (int i = 0; i < n_win; i++) {
        int w = windows[i];
        assert_true(w >= 0 && w < MAXW);
        be->wseek[w] = (int)lroundf(mels[i][0]) - 1;
        be->wrun[w] = -1;
        assert_true(be->n_encode < 64);
        int len = 0;
        while (len < WIN && mels[i][len] != 0)
            len++;
        for (int k = len; k < WIN; k++)
            assert_true(mels[i][k] == 0); /* zero after the audio: pad_or_trim */
        for (int b = 1; be->bins_equal && b < N_MELS; b++)
            assert_memory_equal(mels[i] + (size_t)b * WIN, mels[i], WIN * sizeof *mels[i]);
        be->enc_len[be->n_encode] = len;
        be->encodes[be->n_encode++] = be->wseek[w];
    }
    return TD_OK;
}

static int fb_decode(struct td_wbackend *be, int n_seq, const td_wseq *seqs,
                     const int32_t *tokens, int all_logits, float *logits, td_error *err)
{
    (void)err;
    assert_true(n_seq >= 1 && n_seq <= MAXS);
    assert_int_equal(all_logits, 0);
    assert_non_null(logits); /* no sample(): the decoder samples itself */
    be->n_decode++;
    if (n_seq > be->max_rows_seen)
        be->max_rows_seen = n_seq;
    int started[MAXW] = {0};
    const int32_t *tk = tokens;
    for (int s = 0; s < n_seq; s++) {
        const td_wseq *q = &seqs[s];
        assert_true(q->slot >= 0 && q->slot < MAXS && q->window >= 0 && q->window < MAXW);
        assert_true(q->n_past + q->n_tokens <= be->m->hp.n_text_ctx);
        for (int k = 0; k < s; k++)
            assert_int_not_equal(seqs[k].slot, q->slot);
        if (q->n_past == 0)
            be->hlen[q->slot] = 0; /* a new run in this slot */
        assert_int_equal(be->hlen[q->slot], q->n_past); /* the decoder's n_past is right */
        for (int t = 0; t < q->n_tokens; t++) {
            int32_t tok = *tk++;
            assert_true(tok >= 0 && tok < be->m->hp.n_vocab);
            be->hist[q->slot][be->hlen[q->slot]++] = tok;
        }
        /* a new run of the window when its sequences first complete
         * their SOT sequence (all of them in the same call) */
        int len = be->hlen[q->slot];
        if (samp_start(be, be->hist[q->slot], len) == len && !started[q->window]) {
            started[q->window] = 1;
            be->wrun[q->window]++;
            assert_true(be->n_runs < 64);
            run_rec *r = &be->runs[be->n_runs++];
            r->seek = be->wseek[q->window];
            r->n_init = len;
            memcpy(r->init, be->hist[q->slot], (size_t)len * sizeof(int32_t));
        }
    }
    for (int s = 0; s < n_seq; s++) {
        be->seek = be->wseek[seqs[s].window];
        be->run = be->wrun[seqs[s].window];
        fill_logits(be, seqs[s].slot, be->hlen[seqs[s].slot],
                    logits + (size_t)s * (size_t)be->m->hp.n_vocab);
    }
    return TD_OK;
}

static int fb_kv_copy(struct td_wbackend *be, int n, const td_wkv_copy *pairs, td_error *err)
{
    (void)err;
    be->n_kv_copy++;
    assert_true(n >= 1);
    for (int i = 0; i < n; i++) {
        const td_wkv_copy *c = &pairs[i];
        assert_true(c->src >= 0 && c->src < MAXS && c->dst >= 0 && c->dst < MAXS);
        assert_true(be->hlen[c->src] >= c->n_pos);
        for (int k = 0; k < n; k++)
            assert_int_not_equal(pairs[k].src, c->dst); /* no destination is a source */
        memcpy(be->hist[c->dst], be->hist[c->src], (size_t)c->n_pos * sizeof(int32_t));
        be->hlen[c->dst] = c->n_pos;
    }
    return TD_OK;
}

static int fb_probe(td_error *err)
{
    (void)err;
    return TD_OK;
}

static const td_wbackend_ops fake_ops = {
    .api_version = TD_WBACKEND_API_VERSION,
    .name = "scripted",
    .probe = fb_probe,
    .encode = fb_encode,
    .decode = fb_decode,
    .kv_copy = fb_kv_copy,
};

/* Word alignment, scripted: the row that predicts text token k (row
 * n_sot + k; the last text token's row predicts eot, k = n_text) attends
 * to frames [ALIGN_A + 50 k, ALIGN_A + 50 k + 50), one second per token
 * from ALIGN_A (0.5 s) into the window; the other rows attend everywhere
 * alike. So text token k (k >= 1) is spoken from 0.5 + k s. */
#define ALIGN_A 25
static int fb_align_weights(struct td_wbackend *be, int slot, int window, int n_tokens,
                            const int32_t *tokens, int n_heads, const int *heads, float *out,
                            td_error *err)
{
    (void)err;
    (void)heads;
    const int n_ctx = be->m->hp.n_audio_ctx;
    assert_true(slot >= 0 && slot < MAXS && window >= 0 && window < MAXW);
    assert_true(n_tokens >= 3 && n_tokens <= be->m->hp.n_text_ctx);
    assert_int_equal(tokens[0], be->m->sp.sot);
    assert_int_equal(tokens[n_tokens - 1], be->m->sp.eot);
    int n_sot = 0;
    while (n_sot < n_tokens && tokens[n_sot] != be->m->sp.notimestamps)
        n_sot++;
    assert_true(n_sot == be->sot_len);
    if (be->n_align < 8)
        be->align_window[be->n_align] = window;
    be->n_align++;
    be->hlen[slot] = 0; /* the slot's cache is overwritten */
    for (int h = 0; h < n_heads; h++)
        for (int r = 0; r < n_tokens; r++) {
            float *row = out + ((size_t)h * n_tokens + r) * n_ctx;
            int k = r - n_sot;
            double sum = 0;
            for (int c = 0; c < n_ctx; c++) {
                int in = k >= 0 && r < n_tokens - 1 && c >= ALIGN_A + 50 * k &&
                         c < ALIGN_A + 50 * k + 50;
                row[c] = in ? 1.0f : 0.001f;
                sum += row[c];
            }
            for (int c = 0; c < n_ctx; c++)
                row[c] = (float)(row[c] / sum);
        }
    return TD_OK;
}

static const td_wbackend_ops fake_align_ops = {
    .api_version = TD_WBACKEND_API_VERSION,
    .name = "scripted-align",
    .probe = fb_probe,
    .encode = fb_encode,
    .decode = fb_decode,
    .kv_copy = fb_kv_copy,
    .align_weights = fb_align_weights,
};

/* ---- scripts ---------------------------------------------------------- */

/* A plan: at window seek, run r, the model "wants" tok[0..n) then eot. */
typedef struct plan {
    int seek, run;
    int32_t tok[300];
    int n;
    int flat;      /* each token only as likely as 19 others (log p = -ln 20) */
} plan;

typedef struct plans {
    plan p[16];
    int n;
} plans;

static const plan *find_plan(struct td_wbackend *be)
{
    const plans *ps = be->user;
    const plan *best = NULL;
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i].seek == be->seek && ps->p[i].run <= be->run &&
            (!best || ps->p[i].run > best->run))
            best = &ps->p[i];
    return best;
}

/* Follow the plan while the history agrees with it; eot at its end. */
static void plan_script(struct td_wbackend *be, int seq, const int32_t *samp, int ns, float *x)
{
    (void)seq;
    const plan *p = find_plan(be);
    if (!p) {
        x[be->m->sp.eot] = 0;
        return;
    }
    for (int i = 0; i < ns && i < p->n; i++)
        if (samp[i] != p->tok[i])
            return; /* off the plan */
    if (ns > p->n)
        return;
    int32_t want = ns < p->n ? p->tok[ns] : be->m->sp.eot;
    if (p->flat && ns < p->n) {
        /* a hair above 19 others, so that greedy still follows the plan */
        for (int k = 0; k < 19; k++)
            x[T_FLAT + k] = 0;
        x[want] = 0.01f;
    } else {
        x[want] = 0;
    }
}

static void add_plan(plans *ps, int seek, int run, int flat, const int32_t *tok, int n)
{
    assert_true(ps->n < 16 && n <= 300);
    plan *p = &ps->p[ps->n++];
    p->seek = seek;
    p->run = run;
    p->flat = flat;
    memcpy(p->tok, tok, (size_t)n * sizeof *tok);
    p->n = n;
}

/* ---- fixtures --------------------------------------------------------- */

typedef struct fix {
    fake_model fm;
    struct td_wbackend be;
    plans ps;
    td_wdecode_opts o;
    td_wdecoder *d;
    float *win;       /* one window of mel, for decode_window */
    const td_wbackend_ops *ops; /* NULL: fake_ops */
} fix;

static fix *fix_new(int n_vocab)
{
    fix *f = calloc(1, sizeof *f);
    assert_non_null(f);
    fm_init(&f->fm, n_vocab);
    f->be.m = &f->fm.m;
    f->be.script = plan_script;
    f->be.user = &f->ps;
    f->be.ns_logit = BASE;
    f->be.run = -1;
    f->be.sot_len = f->fm.m.multilingual ? 3 : 1;
    td_wdecode_opts_default(&f->o);
    f->o.language = 0;
    f->o.beam_size = 1;
    f->o.best_of = 1;
    f->win = calloc((size_t)N_MELS * WIN, sizeof *f->win);
    assert_non_null(f->win);
    f->win[0] = 1; /* seek 0 */
    return f;
}

static void fix_open(fix *f)
{
    td_error err = {0};
    if (!f->o.timestamps)
        f->be.sot_len = (f->fm.m.multilingual ? 3 : 1) + 1;
    int rc = td_wdecoder_new(&f->fm.m, f->ops ? f->ops : &fake_ops, &f->be, &f->o, &f->d, &err);
    if (rc)
        fail_msg("td_wdecoder_new: %s", err.msg);
}

static void fix_free(fix *f)
{
    td_wdecoder_free(f->d);
    fm_free(&f->fm);
    free(f->win);
    free(f);
}

static int32_t TS(const fix *f, int k)
{
    return f->fm.m.sp.ts_begin + k;
}

/* Decode one window and check its tokens. */
static void expect_window(fix *f, float temp, const int32_t *want, int n_want,
                          td_wwindow_result *res)
{
    td_error err = {0};
    td_wwindow_result local;
    if (!res)
        res = &local;
    int rc = td_wdecoder_decode_window(f->d, f->win, NULL, 0, temp, res, &err);
    if (rc)
        fail_msg("decode_window: %s", err.msg);
    if (res->n_tokens != n_want || memcmp(res->tokens, want, (size_t)n_want * 4) != 0) {
        fprintf(stderr, "got %d tokens:", res->n_tokens);
        for (int i = 0; i < res->n_tokens; i++)
            fprintf(stderr, " %d", res->tokens[i]);
        fprintf(stderr, "\nwanted %d:", n_want);
        for (int i = 0; i < n_want; i++)
            fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
        fail_msg("window tokens differ");
    }
    if (res == &local)
        td_wwindow_result_free(&local);
}

/* A mel of content_frames frames plus 30 s of padding; bin 0 of frame i
 * holds i + 1 so the backend can tell where a window starts. */
static float *make_mel(size_t content, size_t *n_frames)
{
    size_t n = content + WIN;
    float *mel = calloc(n * N_MELS, sizeof *mel);
    assert_non_null(mel);
    for (size_t i = 0; i < n; i++)
        mel[i] = (float)(i + 1);
    *n_frames = n;
    return mel;
}

static void transcribe(fix *f, size_t content, double offset, td_transcript *t, int *lang)
{
    size_t n_frames;
    float *mel = make_mel(content, &n_frames);
    td_error err = {0};
    td_transcript_init(t);
    int rc = td_wdecoder_transcribe(f->d, mel, n_frames, content, offset, t, lang, NULL, NULL,
                                    &err);
    free(mel);
    if (rc)
        fail_msg("transcribe: %s", err.msg);
}

static void expect_seg(const td_transcript *t, size_t i, double start, double end,
                       const char *text)
{
    assert_true(i < t->n_segs);
    const td_segment *s = &t->segs[i];
    if (fabs(s->start - start) > 1e-9 || fabs(s->end - end) > 1e-9 || strcmp(s->text, text))
        fail_msg("segment %zu: [%.3f, %.3f] '%s', wanted [%.3f, %.3f] '%s'", i, s->start, s->end,
                 s->text, start, end, text);
}

#define A(...) ((const int32_t[]){__VA_ARGS__})
#define NA(...) ((int)(sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)))
#define PLAN(f, seek, run, flat, ...) add_plan(&(f)->ps, seek, run, flat, A(__VA_ARGS__), NA(__VA_ARGS__))
#define EXPECT(f, temp, ...) expect_window(f, temp, A(__VA_ARGS__), NA(__VA_ARGS__), NULL)

/* ---- suppressed tokens ------------------------------------------------ */

static int has(const int32_t *ids, int n, int32_t id)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

static void test_suppress_tokens_fake(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    const td_wspecial *sp = &f->fm.m.sp;
    static int32_t ids[NV_MULTI];
    int n = td_wsuppress_tokens(&f->fm.m, ids, NV_MULTI);
    /* the one-character symbols: " # ( ) * + / : ; < = > @ [ \ ] ^ _ ` { | } ~ */
    const char *ascii = "\"#()*+/:;<=>@[\\]^_`{|}~";
    int32_t want[64];
    int nw = 0;
    for (const char *c = ascii; *c; c++)
        want[nw++] = *c - '!';
    const int32_t more[] = {T_SP_NOTE_PREFIX, 359, 922, 931, T_LTLT, T_SPPAREN2, T_CJK_BRACKET,
                            T_NOTE_PREFIX, 3961, sp->sot, sp->translate, sp->transcribe,
                            sp->solm, sp->prev, sp->nospeech};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++)
        want[nw++] = more[i];
    /* sorted */
    for (int i = 1; i < nw; i++)
        for (int j = i; j > 0 && want[j] < want[j - 1]; j--) {
            int32_t t = want[j];
            want[j] = want[j - 1];
            want[j - 1] = t;
        }
    assert_int_equal(n, nw);
    for (int i = 0; i < n; i++)
        assert_int_equal(ids[i], want[i]);
    /* never the blank, eot, notimestamps, languages, words, timestamps */
    assert_false(has(ids, n, 220));
    assert_false(has(ids, n, sp->eot));
    assert_false(has(ids, n, sp->notimestamps));
    assert_false(has(ids, n, sp->lang_begin));
    assert_false(has(ids, n, T_HELLO));
    assert_false(has(ids, n, '!' - '!'));   /* "!" is speech punctuation */
    assert_false(has(ids, n, ',' - '!'));
    /* a short array gets the first entries, and the full count */
    int32_t few[3];
    assert_int_equal(td_wsuppress_tokens(&f->fm.m, few, 3), nw);
    assert_int_equal(few[0], want[0]);
    assert_int_equal(few[2], want[2]);
    fix_free(f);
}

/* Read the vocabulary of a whisper.cpp header file (DESIGN.md item 3)
 * into a fake model; 0 if the file is absent. */
static int load_header_vocab(fake_model *fm, const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return 0;
    int32_t hdr[12];
    assert_int_equal(fread(hdr, 4, 12, fp), 12);
    int n_vocab = hdr[1];
    int32_t nm[2];
    assert_int_equal(fread(nm, 4, 2, fp), 2);
    assert_int_equal(fseek(fp, (long)nm[0] * nm[1] * 4, SEEK_CUR), 0);
    int32_t count;
    assert_int_equal(fread(&count, 4, 1, fp), 1);
    fm_alloc(fm, n_vocab);
    char buf[512];
    for (int i = 0; i < count; i++) {
        uint32_t len;
        assert_int_equal(fread(&len, 4, 1, fp), 1);
        assert_true(len < sizeof buf);
        assert_int_equal(fread(buf, 1, len, fp), len);
        if (i < fm->m.sp.eot)
            fm_set(fm, i, buf, len);
    }
    fclose(fp);
    for (int32_t id = 0; id < fm->m.sp.eot; id++)
        if (!fm->bytes[id])
            fm_set(fm, id, "", 0);
    fm_specials(fm);
    return 1;
}

/* The real vocabularies give openai's lists exactly (as Hugging Face's
 * generation_config.json carries them: openai's non_speech_tokens plus
 * the specials), E2 99 tokens included although the files lost their
 * bytes. */
static void test_suppress_tokens_real(void **state)
{
    (void)state;
    static const int32_t multi[] = {
        1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93,
        359, 503, 522, 542, 873, 893, 902, 918, 922, 931, 1350, 1853, 1982, 2460, 2627, 3246,
        3253, 3268, 3536, 3846, 3961, 4183, 4667, 6585, 6647, 7273, 9061, 9383, 10428, 10929,
        11938, 12033, 12331, 12562, 13793, 14157, 14635, 15265, 15618, 16553, 16604, 18362,
        18956, 20075, 21675, 22520, 26130, 26161, 26435, 28279, 29464, 31650, 32302, 32470,
        36865, 42863, 47425, 49870, 50254, 50258, 50358, 50359, 50360, 50361, 50362};
    static const int32_t english[] = {
        1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93,
        357, 366, 438, 532, 685, 705, 796, 930, 1058, 1220, 1267, 1279, 1303, 1343, 1377, 1391,
        1635, 1782, 1875, 2162, 2361, 2488, 3467, 4008, 4211, 4600, 4808, 5299, 5855, 6329,
        7203, 9609, 9959, 10563, 10786, 11420, 11709, 11907, 13163, 13697, 13700, 14808, 15306,
        16410, 16791, 17992, 19203, 19510, 20724, 22305, 22935, 27007, 30109, 30420, 33409,
        34949, 40283, 40493, 40549, 47282, 49146, 50257, 50357, 50358, 50359, 50360, 50361};
    struct {
        const char *file;
        const int32_t *want;
        int n;
    } cases[] = {
        {"base.header.bin", multi, (int)(sizeof multi / sizeof multi[0])},
        {"large.header.bin", multi, (int)(sizeof multi / sizeof multi[0])},
        {"tiny.en.header.bin", english, (int)(sizeof english / sizeof english[0])},
    };
    int done = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char *path = pathf("../shared/whisper/%s", cases[c].file);
        fake_model fm;
        int ok = load_header_vocab(&fm, path);
        if (!ok) {
            free(path);
            path = pathf("/work/shared/whisper/%s", cases[c].file);
            ok = load_header_vocab(&fm, path);
        }
        free(path);
        if (!ok)
            continue;
        static int32_t ids[NV_MULTI];
        int n = td_wsuppress_tokens(&fm.m, ids, NV_MULTI);
        if (n != cases[c].n || memcmp(ids, cases[c].want, (size_t)n * 4)) {
            for (int i = 0; i < n; i++)
                if (!has(cases[c].want, cases[c].n, ids[i]))
                    fprintf(stderr, "%s: extra %d\n", cases[c].file, ids[i]);
            for (int i = 0; i < cases[c].n; i++)
                if (!has(ids, n, cases[c].want[i]))
                    fprintf(stderr, "%s: missing %d\n", cases[c].file, cases[c].want[i]);
            fail_msg("%s: suppress list differs from openai's", cases[c].file);
        }
        fm_free(&fm);
        done++;
    }
    if (!done) {
        printf("skip: ../shared/whisper/*.header.bin not present\n");
        skip();
    }
}

/* ---- logit filters, one rule at a time ---------------------------------- */

/* A script of logits per step: steps[k] lists (token, logit) pairs for
 * the k-th sampled position; later positions want eot. */
typedef struct step_logits {
    int32_t tok[8];
    float logit[8];
    int n;
} step_logits;

typedef struct steps {
    step_logits s[32];
    int n;
    int32_t ts_all_from;  /* with ts_all: every timestamp from this one */
    float ts_all;         /* ... gets this logit, at step ts_all_step */
    int ts_all_step;
} steps;

static void steps_script(struct td_wbackend *be, int seq, const int32_t *samp, int ns, float *x)
{
    (void)seq;
    (void)samp;
    const steps *st = be->user;
    if (ns >= st->n) {
        x[be->m->sp.eot] = 0;
        return;
    }
    for (int i = 0; i < st->s[ns].n; i++)
        x[st->s[ns].tok[i]] = st->s[ns].logit[i];
    if (st->ts_all_from > 0 && ns == st->ts_all_step)
        for (int t = st->ts_all_from; t < be->m->hp.n_vocab; t++)
            x[t] = st->ts_all;
}

static void set_step(steps *st, int k, int n, const int32_t *tok, const float *lg)
{
    st->s[k].n = n;
    for (int i = 0; i < n; i++) {
        st->s[k].tok[i] = tok[i];
        st->s[k].logit[i] = lg[i];
    }
    if (st->n < k + 1)
        st->n = k + 1;
}

#define UNPAREN(...) __VA_ARGS__
#define STEP(st, k, toks, lgs) set_step(st, k, NA toks, A toks, (const float[]){UNPAREN lgs})

static fix *steps_fix(steps *st, int timestamps)
{
    fix *f = fix_new(NV_MULTI);
    memset(st, 0, sizeof *st);
    f->be.script = steps_script;
    f->be.user = st;
    f->o.timestamps = timestamps;
    return f;
}

static void test_ts_notimestamps_never(void **state)
{
    (void)state;
    steps st;
    fix *f = steps_fix(&st, 1);
    int32_t nt = f->fm.m.sp.notimestamps;
    STEP(&st, 0, (nt, TS(f, 0)), (9, 0));
    STEP(&st, 1, (nt, T_HELLO), (9, 0));
    STEP(&st, 2, (nt, TS(f, 40)), (9, 0));
    fix_open(f);
    EXPECT(f, 0, TS(f, 0), T_HELLO, TS(f, 40));
    fix_free(f);
}

static void test_ts_pair_then_text(void **state)
{
    (void)state;
    steps st;
    fix *f = steps_fix(&st, 1);
    STEP(&st, 0, (TS(f, 0)), (0));
    STEP(&st, 1, (T_HELLO), (0));
    STEP(&st, 2, (TS(f, 10)), (0));
    STEP(&st, 3, (TS(f, 10)), (0));
    /* after the pair the timestamp is the model's favourite, yet text */
    STEP(&st, 4, (TS(f, 30), T_WORLD), (9, 0));
    STEP(&st, 5, (TS(f, 30)), (0));
    fix_open(f);
    EXPECT(f, 0, TS(f, 0), T_HELLO, TS(f, 10), TS(f, 10), T_WORLD, TS(f, 30));
    fix_free(f);
}

static void test_ts_lone_then_ts_or_eot(void **state)
{
    (void)state;
    steps st;
    fix *f = steps_fix(&st, 1);
    int32_t eot = f->fm.m.sp.eot;
    STEP(&st, 0, (TS(f, 0)), (0));
    STEP(&st, 1, (T_HELLO), (0));
    STEP(&st, 2, (TS(f, 10)), (0));
    /* after a lone timestamp text is favoured, but eot is what may come */
    STEP(&st, 3, (T_WORLD, eot), (9, 0));
    fix_open(f);
    EXPECT(f, 0, TS(f, 0), T_HELLO, TS(f, 10));
    td_wdecoder_free(f->d);
    f->d = NULL;
    /* ... or a timestamp */
    STEP(&st, 3, (T_WORLD, TS(f, 12), eot), (9, 0, -5));
    STEP(&st, 4, (T_WORLD), (0));
    STEP(&st, 5, (TS(f, 14)), (0));
    fix_open(f);
    EXPECT(f, 0, TS(f, 0), T_HELLO, TS(f, 10), TS(f, 12), T_WORLD, TS(f, 14));
    fix_free(f);
}

static void test_ts_monotonic(void **state)
{
    (void)state;
    steps st;
    fix *f = steps_fix(&st, 1);
    STEP(&st, 0, (TS(f, 20)), (0));
    STEP(&st, 1, (T_HELLO), (0));
    /* after text: earlier ones and the same one are out, later ones in */
    STEP(&st, 2, (TS(f, 5), TS(f, 20), TS(f, 25)), (9, 8, 0));
    /* after a lone one: an earlier one is out, the same one closes a pair */
    STEP(&st, 3, (TS(f, 24), TS(f, 25)), (9, 0));
    STEP(&st, 4, (T_WORLD), (0));
    /* after text that followed a pair at 25: 25 is out */
    STEP(&st, 5, (TS(f, 25), TS(f, 26)), (9, 0));
    fix_open(f);
    EXPECT(f, 0, TS(f, 20), T_HELLO, TS(f, 25), TS(f, 25), T_WORLD, TS(f, 26));
    fix_free(f);
}

static void test_ts_initial_limit(void **state)
{
    (void)state;
    steps st;
    fix *f = steps_fix(&st, 1);
    /* first token: text and timestamps after 1.0 s (index 50) are out */
    STEP(&st, 0, (T_HELLO, TS(f, 60), TS(f, 51), TS(f, 50), TS(f, 3)), (20, 9, 8, 1, 0));
    STEP(&st, 1, (T_HELLO), (0));
    STEP(&st, 2, (TS(f, 60)), (0));
    fix_open(f);
    EXPECT(f, 0, TS(f, 50), T_HELLO, TS(f, 60));
    fix_free(f);
}

static void test_ts_sum_forces_timestamp(void **state)
{
    (void)state;
    steps st;
    fix *f = steps_fix(&st, 1);
    STEP(&st, 0, (TS(f, 0)), (0));
    STEP(&st, 1, (T_HELLO), (0));
    STEP(&st, 2, (T_WORLD), (0));
    STEP(&st, 3, (TS(f, 100)), (0));
    /* at step 2 every timestamp has logit -3: each alone is far below the
     * text token (0), together log(1500) - 3 = 4.3 above it */
    st.ts_all_from = TS(f, 0);
    st.ts_all = -3;
    st.ts_all_step = 2;
    fix_open(f);
    EXPECT(f, 0, TS(f, 0), T_HELLO, TS(f, 1), TS(f, 100));
    td_wdecoder_free(f->d);
    f->d = NULL;
    /* at -10 they weigh e^-2.7 together: text wins */
    st.ts_all = -10;
    fix_open(f);
    EXPECT(f, 0, TS(f, 0), T_HELLO, T_WORLD, TS(f, 100));
    fix_free(f);
}

static void test_suppress_blank_first_only(void **state)
{
    (void)state;
    steps st;
    fix *f = steps_fix(&st, 0);
    int32_t eot = f->fm.m.sp.eot;
    STEP(&st, 0, (220, eot, T_HELLO), (9, 8, 0));
    STEP(&st, 1, (220, T_WORLD), (9, 0));
    STEP(&st, 2, (eot, T_WORLD), (9, 0));
    fix_open(f);
    EXPECT(f, 0, T_HELLO, 220);
    fix_free(f);
}

static void test_suppressed_symbols(void **state)
{
    (void)state;
    steps st;
    fix *f = steps_fix(&st, 0);
    STEP(&st, 0, ('"' - '!', T_HELLO), (9, 0));
    STEP(&st, 1, (931, T_WORLD), (9, 0));
    STEP(&st, 2, (T_NOTE_PREFIX, 359, T_COMMA), (9, 8, 0));
    STEP(&st, 3, (T_LTLT, f->fm.m.sp.translate, f->fm.m.sp.sot, T_DOG), (9, 9, 9, 0));
    STEP(&st, 4, (f->fm.m.sp.nospeech, f->fm.m.sp.prev, T_CAT), (9, 9, 0));
    fix_open(f);
    EXPECT(f, 0, T_HELLO, T_WORLD, T_COMMA, T_DOG, T_CAT);
    fix_free(f);
}

static void test_greedy_stops_at_eot(void **state)
{
    (void)state;
    steps st;
    fix *f = steps_fix(&st, 0);
    STEP(&st, 0, (T_HELLO), (0));
    STEP(&st, 1, (T_WORLD), (0));
    /* step 2 wants eot (the script's default) */
    fix_open(f);
    EXPECT(f, 0, T_HELLO, T_WORLD);
    /* prompt: [sot] then [lang, task]; then one decode per sampled token
     * ([notimestamps] -> hello, hello -> world, world -> eot): nothing
     * after eot */
    assert_int_equal(f->be.n_decode, 2 + 3);
    assert_int_equal(f->be.n_encode, 1);
    assert_int_equal(f->be.n_kv_copy, 0);
    fix_free(f);
}

static void test_sample_len_and_avg_logprob(void **state)
{
    (void)state;
    steps st;
    fix *f = steps_fix(&st, 0);
    /* two equal candidates each step: log p = log(1/2) (the rest at -30
     * adds < 1e-8) and never eot */
    for (int k = 0; k < 20; k++)
        STEP(&st, k, (T_HELLO, T_WORLD), (0, 0));
    f->o.max_tokens = 5;
    fix_open(f);
    td_wwindow_result r;
    expect_window(f, 0, A(T_HELLO, T_HELLO, T_HELLO, T_HELLO, T_HELLO), 5, &r);
    /* openai: sum_logprobs / (len(tokens) + 1) */
    assert_true(fabs(r.avg_logprob - 5 * log(0.5) / 6) < 1e-5);
    assert_true(r.temperature == 0);
    td_wwindow_result_free(&r);
    fix_free(f);
}

/* Greedy takes the likelier first token; beam search finds the sequence
 * that is likelier as a whole (and finished). */
static void beam_script(struct td_wbackend *be, int seq, const int32_t *samp, int ns, float *x)
{
    (void)seq;
    int32_t eot = be->m->sp.eot;
    if (ns == 0) {
        x[T_HELLO] = (float)log(0.6);
        x[T_WORLD] = (float)log(0.4);
    } else if (ns == 1 && samp[0] == T_HELLO) {
        for (int k = 0; k < 10; k++)
            x[T_FLAT + k] = 0; /* ten ways on, p = 0.1 each */
    } else if (ns == 1 && samp[0] == T_WORLD) {
        x[T_CAT] = 0;
    } else {
        x[eot] = 0;
    }
}

static void test_beam_beats_greedy(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->be.script = beam_script;
    f->o.timestamps = 0;
    fix_open(f);
    EXPECT(f, 0, T_HELLO, T_FLAT);
    td_wdecoder_free(f->d);
    f->d = NULL;

    f->o.beam_size = 5;
    f->be.n_kv_copy = 0;
    fix_open(f);
    td_wwindow_result r;
    expect_window(f, 0, A(T_WORLD, T_CAT), 2, &r);
    /* log 0.4 + log 1 + log 1 over 3 */
    assert_true(fabs(r.avg_logprob - log(0.4) / 3) < 1e-4);
    /* the prompt was forked into the beams, and the caches followed */
    assert_true(f->be.n_kv_copy >= 2);
    td_wwindow_result_free(&r);
    fix_free(f);
}

/* Ten equally likely words at every step, never eot. */
static void flat_script(struct td_wbackend *be, int seq, const int32_t *samp, int ns, float *x)
{
    (void)be;
    (void)seq;
    (void)samp;
    (void)ns;
    for (int k = 0; k < 10; k++)
        x[T_FLAT + k] = 0;
}

static void sample_tokens(int best_of, uint64_t seed, int32_t *out, int *n)
{
    fix *f = fix_new(NV_MULTI);
    f->be.script = flat_script;
    f->o.timestamps = 0;
    f->o.best_of = best_of;
    f->o.max_tokens = 24;
    f->o.seed = seed;
    fix_open(f);
    td_wwindow_result r;
    td_error err = {0};
    assert_int_equal(td_wdecoder_decode_window(f->d, f->win, NULL, 0, 1.0f, &r, &err), TD_OK);
    assert_int_equal(r.n_tokens, 24);
    for (int i = 0; i < r.n_tokens; i++)
        assert_true(r.tokens[i] >= T_FLAT && r.tokens[i] < T_FLAT + 10);
    memcpy(out, r.tokens, (size_t)r.n_tokens * 4);
    *n = r.n_tokens;
    assert_true(r.temperature == 1.0f);
    if (best_of > 1)
        assert_int_equal(f->be.n_kv_copy, 1); /* the prompt forked into the samples */
    td_wwindow_result_free(&r);
    fix_free(f);
}

static void test_sampling_seeded(void **state)
{
    (void)state;
    int32_t a[32], b[32], c[32];
    int na, nb, nc;
    sample_tokens(1, 7, a, &na);
    sample_tokens(1, 7, b, &nb);
    sample_tokens(1, 8, c, &nc);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, (size_t)na * 4);
    assert_true(memcmp(a, c, (size_t)na * 4) != 0);
    /* best-of 3 is deterministic too, and not all one token */
    sample_tokens(3, 11, a, &na);
    sample_tokens(3, 11, b, &nb);
    assert_memory_equal(a, b, (size_t)na * 4);
    int differ = 0;
    for (int i = 1; i < na; i++)
        differ |= a[i] != a[0];
    assert_true(differ);
}

/* ---- language, SOT sequence, prompt ------------------------------------ */

static void test_detect_language(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->be.lang_top = 6; /* "fr"; T_HELLO's logit 100 must not count */
    f->be.hello_trap = 1;
    f->o.language = -1;
    fix_open(f);
    float prob = 0;
    td_error err = {0};
    int lang = td_wdecoder_detect_language(f->d, f->win, &prob, &err);
    assert_int_equal(lang, 6);
    /* e^5 against 98 languages at e^-30 */
    assert_true(fabs(prob - 1.0) < 1e-6);
    fix_free(f);

    /* English-only models say English at once */
    f = fix_new(NV_EN);
    f->o.language = -1;
    fix_open(f);
    assert_int_equal(td_wdecoder_detect_language(f->d, f->win, &prob, &err),
                     td_wlang_index("en"));
    assert_int_equal(f->be.n_encode, 0);
    fix_free(f);
}

static void test_transcribe_detects_language(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->be.lang_top = 2; /* "de" */
    f->o.language = -1;
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, TS(f, 50));
    fix_open(f);
    td_transcript t;
    int lang = -1;
    transcribe(f, 1000, 0, &t, &lang);
    assert_int_equal(lang, 2);
    assert_string_equal(t.language, "de");
    assert_int_equal(f->be.n_runs, 1);
    const td_wspecial *sp = &f->fm.m.sp;
    assert_int_equal(f->be.runs[0].n_init, 3);
    assert_int_equal(f->be.runs[0].init[0], sp->sot);
    assert_int_equal(f->be.runs[0].init[1], sp->lang_begin + 2);
    assert_int_equal(f->be.runs[0].init[2], sp->transcribe);
    /* content shorter than a window: detection saw the padded mel, the
     * window its zero-padded copy; so two encodes */
    assert_int_equal(f->be.n_encode, 2);
    expect_seg(&t, 0, 0, 1.0, "Hello");
    td_transcript_release(&t);
    fix_free(f);
}

static void test_sot_sequences(void **state)
{
    (void)state;
    /* English-only: [sot] alone, with timestamps */
    fix *f = fix_new(NV_EN);
    const td_wspecial *sp = &f->fm.m.sp;
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, TS(f, 50));
    fix_open(f);
    EXPECT(f, 0, TS(f, 0), T_HELLO, TS(f, 50));
    assert_int_equal(f->be.runs[0].n_init, 1);
    assert_int_equal(f->be.runs[0].init[0], sp->sot);
    fix_free(f);

    /* English-only without timestamps: [sot, notimestamps] */
    f = fix_new(NV_EN);
    sp = &f->fm.m.sp;
    f->o.timestamps = 0;
    PLAN(f, 0, 0, 0, T_HELLO);
    fix_open(f);
    EXPECT(f, 0, T_HELLO);
    assert_int_equal(f->be.runs[0].n_init, 2);
    assert_int_equal(f->be.runs[0].init[0], sp->sot);
    assert_int_equal(f->be.runs[0].init[1], sp->notimestamps);
    fix_free(f);

    /* multilingual, translate: [sot, lang, translate] */
    f = fix_new(NV_MULTI);
    sp = &f->fm.m.sp;
    f->o.translate = 1;
    f->o.language = 4;
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, TS(f, 50));
    fix_open(f);
    EXPECT(f, 0, TS(f, 0), T_HELLO, TS(f, 50));
    assert_int_equal(f->be.runs[0].n_init, 3);
    assert_int_equal(f->be.runs[0].init[0], sp->sot);
    assert_int_equal(f->be.runs[0].init[1], sp->lang_begin + 4);
    assert_int_equal(f->be.runs[0].init[2], sp->translate);
    fix_free(f);
}

static void test_prompt_limit(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    const td_wspecial *sp = &f->fm.m.sp;
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, TS(f, 50));
    fix_open(f);
    int32_t prompt[300];
    for (int i = 0; i < 300; i++)
        prompt[i] = 3000 + i;
    td_wwindow_result r;
    td_error err = {0};
    assert_int_equal(td_wdecoder_decode_window(f->d, f->win, prompt, 300, 0, &r, &err), TD_OK);
    assert_int_equal(r.n_tokens, 3);
    td_wwindow_result_free(&r);
    const run_rec *rr = &f->be.runs[0];
    assert_int_equal(rr->n_init, 1 + 223 + 3);
    assert_int_equal(rr->init[0], sp->prev);
    assert_int_equal(rr->init[1], 3000 + 300 - 223);
    assert_int_equal(rr->init[223], 3000 + 299);
    assert_int_equal(rr->init[224], sp->sot);
    /* an empty prompt means no startofprev at all */
    assert_int_equal(td_wdecoder_decode_window(f->d, f->win, prompt, 0, 0, &r, &err), TD_OK);
    assert_int_equal(f->be.runs[1].n_init, 3);
    td_wwindow_result_free(&r);
    fix_free(f);
}

/* ---- compression ratio ------------------------------------------------- */

static void test_compression_ratio(void **state)
{
    (void)state;
    const char *s = "The quick brown fox jumps over the lazy dog.";
    double r = td_wcompression_ratio((const uint8_t *)s, strlen(s));
    assert_true(fabs(r - 44.0 / 51.0) < 1e-12); /* Python: 44 / len(zlib.compress) = 51 */
    assert_true(r < 2.4);
    char rep[2401];
    rep[0] = '\0';
    for (int i = 0; i < 100; i++)
        strcat(rep, "the cat sat on the mat. ");
    r = td_wcompression_ratio((const uint8_t *)rep, strlen(rep));
    assert_true(fabs(r - 48.0) < 1e-12); /* 2400 / 50 */
    assert_true(td_wcompression_ratio((const uint8_t *)"", 0) == 0);
}

/* ---- fallback and silence ---------------------------------------------- */

static void test_fallback_on_repetition(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->o.beam_size = 5;
    f->o.best_of = 5;
    int32_t rep[64];
    int n = 0;
    rep[n++] = TS(f, 0);
    for (int i = 0; i < 30; i++) {
        rep[n++] = T_THE;
        rep[n++] = T_CAT;
    }
    rep[n++] = TS(f, 300);
    add_plan(&f->ps, 0, 0, 0, rep, n);                            /* at T = 0 */
    PLAN(f, 0, 1, 0, TS(f, 0), T_HELLO, T_WORLD, TS(f, 100));     /* at T = 0.2 */
    fix_open(f);
    /* the window's result alone repeats: ratio far above 2.4 */
    td_wwindow_result r;
    td_error err = {0};
    assert_int_equal(td_wdecoder_decode_window(f->d, f->win, NULL, 0, 0, &r, &err), TD_OK);
    assert_int_equal(r.n_tokens, n);
    assert_true(r.compression_ratio > 2.4);
    td_wwindow_result_free(&r);

    f->be.n_runs = 0;
    td_transcript t;
    td_wdecode_stats st0, st;
    td_wdecoder_stats(f->d, &st0);
    transcribe(f, 1000, 0, &t, NULL);
    assert_int_equal(f->be.n_runs, 2); /* T = 0, then T = 0.2 */
    assert_int_equal(t.n_segs, 1);
    expect_seg(&t, 0, 0, 2.0, "Hello world");
    /* The statistics count it: one window, one fallback, the final 4 tokens. */
    td_wdecoder_stats(f->d, &st);
    assert_int_equal(st.windows - st0.windows, 1);
    assert_int_equal(st.fallbacks - st0.fallbacks, 1);
    assert_int_equal(st.silent - st0.silent, 0);
    assert_int_equal(st.tokens - st0.tokens, 4);
    assert_true(st.encoder_runs > st0.encoder_runs && st.decoder_calls > st0.decoder_calls);
    assert_true(st.decoder_s >= st0.decoder_s && st.encoder_s >= st0.encoder_s);
    td_transcript_release(&t);
    fix_free(f);
}

static void test_fallback_on_logprob(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    /* run 0: each token one of 20 equally likely (avg log p = -3 * n/(n+1)) */
    PLAN(f, 0, 0, 1, TS(f, 0), T_FLAT, T_FLAT + 1, T_FLAT + 2, TS(f, 100));
    PLAN(f, 0, 1, 0, TS(f, 0), T_HELLO, T_WORLD, TS(f, 100));
    fix_open(f);
    td_transcript t;
    transcribe(f, 1000, 0, &t, NULL);
    assert_int_equal(f->be.n_runs, 2);
    assert_int_equal(t.n_segs, 1);
    expect_seg(&t, 0, 0, 2.0, "Hello world");
    td_transcript_release(&t);

    /* thresholds off: no retry, the improbable text stays */
    td_wdecoder_free(f->d);
    f->d = NULL;
    f->o.logprob_threshold = NAN;
    f->be.n_runs = 0;
    fix_open(f);
    transcribe(f, 1000, 0, &t, NULL);
    assert_int_equal(f->be.n_runs, 1);
    td_transcript_release(&t);
    fix_free(f);
}

static void test_no_speech_skip(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->be.ns_logit = 10; /* p(nospeech) ~ 1 at the sot position */
    /* window 0: improbable text: silence, skipped, no retry */
    PLAN(f, 0, 0, 1, TS(f, 0), T_FLAT, T_FLAT + 1, TS(f, 100));
    /* window 1 at 30 s: confident text keeps it despite no_speech_prob */
    PLAN(f, 3000, 0, 0, TS(f, 0), T_HELLO, TS(f, 50));
    fix_open(f);
    td_transcript t;
    transcribe(f, 4000, 0, &t, NULL);
    assert_int_equal(f->be.n_encode, 2);
    assert_int_equal(f->be.encodes[0], 0);
    assert_int_equal(f->be.encodes[1], 3000); /* advanced by the whole window */
    assert_int_equal(f->be.n_runs, 2);        /* no fallback on silence */
    td_wdecode_stats st;
    td_wdecoder_stats(f->d, &st);
    assert_int_equal(st.silent, 1);
    assert_int_equal(st.fallbacks, 0);
    assert_int_equal(st.windows, 2);
    assert_int_equal(t.n_segs, 1);
    expect_seg(&t, 0, 30.0, 31.0, "Hello");
    td_transcript_release(&t);
    fix_free(f);
}

/* ---- segments and seek ----------------------------------------------------- */

static void test_seek_to_last_timestamp(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    /* ends in a pair: segments up to it, seek to the last timestamp (5 s) */
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, TS(f, 100), TS(f, 100), T_WORLD, TS(f, 250),
         TS(f, 250));
    /* ends in text: the unfinished segment is decoded again from 7 s */
    PLAN(f, 500, 0, 0, TS(f, 0), T_THE, TS(f, 100), TS(f, 100), T_CAT);
    PLAN(f, 700, 0, 0, TS(f, 0), T_SAT, TS(f, 150));
    fix_open(f);
    td_transcript t;
    transcribe(f, 3500, 0, &t, NULL);
    assert_int_equal(f->be.n_encode, 3);
    assert_int_equal(f->be.encodes[1], 500);
    assert_int_equal(f->be.encodes[2], 700);
    assert_int_equal(t.n_segs, 4);
    expect_seg(&t, 0, 0.0, 2.0, "Hello");
    expect_seg(&t, 1, 2.0, 5.0, "world");
    expect_seg(&t, 2, 5.0, 7.0, "the");
    /* no pair: one segment to the last timestamp; seek by the window */
    expect_seg(&t, 3, 7.0, 10.0, "sat");
    td_transcript_release(&t);
    fix_free(f);
}

static void test_single_timestamp_ending(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, TS(f, 100), TS(f, 100), T_WORLD, TS(f, 250));
    PLAN(f, 3000, 0, 0, TS(f, 10), T_CAT, TS(f, 60));
    fix_open(f);
    td_transcript t;
    transcribe(f, 3500, 12.5, &t, NULL);
    assert_int_equal(f->be.n_encode, 2);
    assert_int_equal(f->be.encodes[1], 3000); /* the whole window */
    assert_int_equal(t.n_segs, 3);
    expect_seg(&t, 0, 12.5 + 0.0, 12.5 + 2.0, "Hello");
    expect_seg(&t, 1, 12.5 + 2.0, 12.5 + 5.0, "world");
    /* no pair in window 2: from the window start to the last timestamp */
    expect_seg(&t, 2, 12.5 + 30.0, 12.5 + 31.2, "cat");
    td_transcript_release(&t);
    fix_free(f);
}

static void test_empty_segments_and_clamp(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    /* a blank-only segment is dropped; the last one ends past the content */
    PLAN(f, 0, 0, 0, TS(f, 0), 220, TS(f, 20), TS(f, 20), T_HELLO, TS(f, 100));
    fix_open(f);
    td_transcript t;
    transcribe(f, 150, 0, &t, NULL);
    assert_int_equal(t.n_segs, 1);
    expect_seg(&t, 0, 0.4, 1.5, "Hello");
    td_transcript_release(&t);
    fix_free(f);
}

static void test_words(void **state)
{
    (void)state;
    steps st;
    fix *f = steps_fix(&st, 1);
    STEP(&st, 0, (TS(f, 50)), (0));
    STEP(&st, 1, (T_HELLO), (0));
    STEP(&st, 2, (T_COMMA), (0));
    STEP(&st, 3, (T_WONDER, T_DOG), (0, 0)); /* p = 1/2 */
    STEP(&st, 4, (T_FUL), (0));
    STEP(&st, 5, (T_WORLD), (0));
    STEP(&st, 6, (TS(f, 150)), (0));
    STEP(&st, 7, (TS(f, 150)), (0));
    fix_open(f);
    td_transcript t;
    transcribe(f, 300, 0, &t, NULL);
    assert_int_equal(t.n_segs, 1);
    expect_seg(&t, 0, 1.0, 3.0, "Hello, wonderful world");
    const td_segment *s = &t.segs[0];
    assert_int_equal(s->n_words, 3);
    /* 6 + 9 + 5 characters over 2 s */
    const char *w[] = {"Hello,", "wonderful", "world"};
    const double ws[] = {1.0, 1.6, 2.5}, we[] = {1.6, 2.5, 3.0};
    for (int i = 0; i < 3; i++) {
        assert_string_equal(s->words[i].text, w[i]);
        assert_true(fabs(s->words[i].start - ws[i]) < 1e-9);
        assert_true(fabs(s->words[i].end - we[i]) < 1e-9);
    }
    assert_true(fabs(s->words[0].prob - 1.0) < 1e-4);
    assert_true(fabs(s->words[1].prob - sqrt(0.5)) < 1e-4); /* exp(mean(log .5, log 1)) */
    td_transcript_release(&t);
    fix_free(f);
}

/* ---- prompt conditioning ------------------------------------------------ */

/* Window 0 (T = 0), window 1 (falls back to T = 0.2), window 2: what
 * prompt does window 2 get? */
static void conditioning_case(int after_fallback, int *n_prompt, int32_t *prompt)
{
    fix *f = fix_new(NV_MULTI);
    f->o.condition_after_fallback = after_fallback;
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, TS(f, 100), TS(f, 100), T_WORLD, TS(f, 150),
         TS(f, 150));
    PLAN(f, 300, 0, 1, TS(f, 0), T_FLAT, T_FLAT + 1, T_FLAT + 2, TS(f, 100));
    PLAN(f, 300, 1, 0, TS(f, 0), T_CAT, TS(f, 100), TS(f, 100));
    PLAN(f, 500, 0, 0, TS(f, 0), T_DOG, TS(f, 100));
    fix_open(f);
    td_transcript t;
    transcribe(f, 1500, 0, &t, NULL);
    assert_int_equal(f->be.n_encode, 3);
    assert_int_equal(f->be.encodes[2], 500);
    assert_int_equal(t.n_segs, 4); /* the fallback window's text is output */
    expect_seg(&t, 2, 3.0, 5.0, "cat");
    const run_rec *r2 = &f->be.runs[f->be.n_runs - 1];
    assert_int_equal(r2->seek, 500);
    *n_prompt = r2->n_init - 3;
    memcpy(prompt, r2->init, (size_t)*n_prompt * 4);
    td_transcript_release(&t);
    fix_free(f);
}

static void test_prompt_conditioning(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI); /* for the ids */
    int32_t prev = f->fm.m.sp.prev;
    int32_t w0[] = {prev, TS(f, 0), T_HELLO, TS(f, 100), TS(f, 100), T_WORLD, TS(f, 150)};
    int32_t w01[] = {prev, TS(f, 0), T_HELLO, TS(f, 100), TS(f, 100), T_WORLD, TS(f, 150),
                     TS(f, 0), T_CAT, TS(f, 100)};
    int32_t p[300];
    int n;
    conditioning_case(0, &n, p);
    assert_int_equal(n, (int)(sizeof w0 / 4));
    assert_memory_equal(p, w0, sizeof w0);
    conditioning_case(1, &n, p);
    assert_int_equal(n, (int)(sizeof w01 / 4));
    assert_memory_equal(p, w01, sizeof w01);
    fix_free(f);
}

/* Silence between two windows of speech: home video starts afresh after
 * it; openai (condition_after_fallback = 1) keeps the earlier text. */
static void test_prompt_after_silence(void **state)
{
    (void)state;
    for (int caf = 0; caf < 2; caf++) {
        fix *f = fix_new(NV_MULTI);
        f->o.condition_after_fallback = caf;
        PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, TS(f, 3000 / 2 - 1));
        PLAN(f, 3000, 0, 1, TS(f, 0), T_FLAT, T_FLAT + 1, TS(f, 100));
        PLAN(f, 6000, 0, 0, TS(f, 0), T_DOG, TS(f, 100));
        fix_open(f);
        /* a high no_speech_prob everywhere; windows 0 and 2 are
         * confident, so only window 1 is skipped as silent */
        td_transcript t;
        f->be.ns_logit = 10;
        transcribe(f, 7000, 0, &t, NULL);
        assert_int_equal(f->be.n_encode, 3);
        assert_int_equal(t.n_segs, 2);
        const run_rec *r2 = &f->be.runs[f->be.n_runs - 1];
        assert_int_equal(r2->seek, 6000);
        if (caf) {
            assert_int_equal(r2->n_init, 1 + 3 + 3);
            assert_int_equal(r2->init[0], f->fm.m.sp.prev);
            assert_int_equal(r2->init[2], T_HELLO);
        } else {
            assert_int_equal(r2->n_init, 3);
        }
        td_transcript_release(&t);
        fix_free(f);
    }
}

static void test_prompt_reset_on_temperature(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->o.condition_after_fallback = 1;
    f->o.compression_ratio_threshold = 0;
    /* window 0 falls back through 0.2 .. 0.6: improbable until run 3 */
    PLAN(f, 0, 0, 1, TS(f, 0), T_FLAT, T_FLAT + 1, T_FLAT + 2, TS(f, 100));
    PLAN(f, 0, 3, 0, TS(f, 0), T_HELLO, TS(f, 100), TS(f, 100));
    PLAN(f, 200, 0, 0, TS(f, 0), T_DOG, TS(f, 100));
    fix_open(f);
    td_transcript t;
    transcribe(f, 1000, 0, &t, NULL);
    assert_int_equal(t.n_segs, 2);
    const run_rec *r = &f->be.runs[f->be.n_runs - 1];
    assert_int_equal(r->seek, 200);
    assert_int_equal(r->n_init, 3); /* T = 0.6 > 0.5: no prompt */
    td_transcript_release(&t);
    fix_free(f);
}

static int count_progress(void *user, double seconds)
{
    double *last = user;
    assert_true(seconds >= last[0]);
    last[0] = seconds;
    last[1] += 1;
    return last[1] >= last[2];
}

static void test_progress_and_abort(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, TS(f, 100));
    PLAN(f, 3000, 0, 0, TS(f, 0), T_HELLO, TS(f, 100));
    fix_open(f);
    size_t n_frames;
    float *mel = make_mel(4500, &n_frames);
    td_transcript t;
    td_transcript_init(&t);
    td_error err = {0};
    double pr[3] = {0, 0, 100};
    assert_int_equal(td_wdecoder_transcribe(f->d, mel, n_frames, 4500, 0, &t, NULL,
                                            count_progress, pr, &err), TD_OK);
    assert_int_equal((int)pr[1], 2);
    assert_true(fabs(pr[0] - 45.0) < 1e-9);
    td_transcript_release(&t);
    /* a nonzero return stops it */
    double stop[3] = {0, 0, 1};
    td_transcript_init(&t);
    assert_int_equal(td_wdecoder_transcribe(f->d, mel, n_frames, 4500, 0, &t, NULL,
                                            count_progress, stop, &err), TD_EABORT);
    assert_int_equal(t.n_segs, 1);
    td_transcript_release(&t);
    free(mel);
    fix_free(f);
}

static void test_bad_options(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    td_error err = {0};
    td_wdecoder *d = NULL;
    f->o.beam_size = 0;
    assert_int_equal(td_wdecoder_new(&f->fm.m, &fake_ops, &f->be, &f->o, &d, &err), TD_EINVAL);
    f->o.beam_size = 1;
    f->o.language = 99; /* the 51865-token model knows 99: 0..98 */
    assert_int_equal(td_wdecoder_new(&f->fm.m, &fake_ops, &f->be, &f->o, &d, &err), TD_EINVAL);
    f->o.language = 0;
    f->o.temperatures[1] = -1;
    assert_int_equal(td_wdecoder_new(&f->fm.m, &fake_ops, &f->be, &f->o, &d, &err), TD_EINVAL);
    assert_null(d);
    fix_free(f);
}


/* ---- batched mode (transcribe_chunks) ----------------------------------- */

/* Chunk k's window of mel: bin 0 of frame i holds 10000 k + i + 1, so the
 * scripted backend sees window k's seek as 10000 k + the frame it starts
 * at (a window that goes on from a seek starts there). */
static float *chunk_mel(int k)
{
    float *mel = calloc((size_t)N_MELS * WIN, sizeof *mel);
    assert_non_null(mel);
    for (size_t i = 0; i < WIN; i++)
        mel[i] = (float)(10000 * k + (int)i + 1);
    return mel;
}

typedef struct chunk_set {
    td_wchunk c[8];
    float *mel[8];
    int n;
} chunk_set;

static void chunks_make(chunk_set *cs, int n, size_t content, double spacing)
{
    assert_true(n <= 8);
    cs->n = n;
    for (int k = 0; k < n; k++) {
        cs->mel[k] = chunk_mel(k);
        cs->c[k] = (td_wchunk){.mel = cs->mel[k], .content_frames = content,
                               .offset = spacing * k};
    }
}

static void chunks_free(chunk_set *cs)
{
    for (int k = 0; k < cs->n; k++)
        free(cs->mel[k]);
}

static int chunks_run(fix *f, chunk_set *cs, td_transcript *t, td_wdecode_progress pr,
                      void *user, td_error *err)
{
    td_transcript_init(t);
    return td_wdecoder_transcribe_chunks(f->d, cs->c, cs->n, t, NULL, pr, user, err);
}

/* chunks_run, which the test expects to succeed: it fails with the
 * error otherwise. */
static void chunks_ok(fix *f, chunk_set *cs, td_transcript *t)
{
    td_error err = {0};
    if (chunks_run(f, cs, t, NULL, NULL, &err))
        fail_msg("transcribe_chunks: %s", err.msg);
}

/* Four chunks two at a time: each decoded on its own (its own window,
 * no prompt), segments in chunk order on the chunks' clocks, and the two
 * windows of a batch share decoder calls. */
static void test_batched_order(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->o.batch = 2;
    const int32_t word[4] = {T_HELLO, T_WORLD, T_THE, T_CAT};
    for (int k = 0; k < 4; k++)
        PLAN(f, 10000 * k, 0, 0, TS(f, 0), word[k], TS(f, 50 + 10 * k));
    fix_open(f);
    chunk_set cs;
    chunks_make(&cs, 4, 800, 40.0);
    td_transcript t;
    chunks_ok(f, &cs, &t);
    assert_int_equal(t.n_segs, 4);
    expect_seg(&t, 0, 0.0, 1.0, "Hello");
    expect_seg(&t, 1, 40.0, 41.2, "world");
    expect_seg(&t, 2, 80.0, 81.4, "the");
    expect_seg(&t, 3, 120.0, 121.6, "cat");
    assert_int_equal(f->be.n_encode, 4);
    assert_int_equal(f->be.max_rows_seen, 2); /* two windows in one call */
    /* no window saw another's text as a prompt */
    for (int r = 0; r < f->be.n_runs; r++)
        assert_int_not_equal(f->be.runs[r].init[0], f->fm.m.sp.prev);
    td_wdecode_stats st;
    td_wdecoder_stats(f->d, &st);
    assert_int_equal(st.windows, 4);
    td_transcript_release(&t);
    chunks_free(&cs);
    fix_free(f);
}

/* A chunk whose first decode repeats itself falls back to the next
 * temperature in later steps while the other chunks go on; its final
 * text is the fallback's, and the order holds. */
static void test_batched_fallback(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->o.batch = 3;
    int32_t rep[64];
    int n = 0;
    rep[n++] = TS(f, 0);
    for (int i = 0; i < 30; i++) {
        rep[n++] = T_THE;
        rep[n++] = T_CAT;
    }
    rep[n++] = TS(f, 300);
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, TS(f, 50));
    add_plan(&f->ps, 10000, 0, 0, rep, n);                    /* chunk 1 at T = 0 */
    PLAN(f, 10000, 1, 0, TS(f, 0), T_SAT, TS(f, 70));         /* at T = 0.2 */
    PLAN(f, 20000, 0, 0, TS(f, 0), T_WORLD, TS(f, 60));
    fix_open(f);
    chunk_set cs;
    chunks_make(&cs, 3, 1000, 30.0);
    td_transcript t;
    chunks_ok(f, &cs, &t);
    assert_int_equal(t.n_segs, 3);
    expect_seg(&t, 0, 0.0, 1.0, "Hello");
    expect_seg(&t, 1, 30.0, 31.4, "sat");
    expect_seg(&t, 2, 60.0, 61.2, "world");
    td_wdecode_stats st;
    td_wdecoder_stats(f->d, &st);
    assert_int_equal(st.fallbacks, 1);
    assert_int_equal(f->be.n_encode, 3); /* the fallback reuses the encoding */
    td_transcript_release(&t);
    chunks_free(&cs);
    fix_free(f);
}

/* A window that ends inside a segment goes on from its last timestamp: a
 * new window of the same chunk from there (encoded again), conditioned on
 * the chunk's text so far; the other chunk is not held up. */
static void test_batched_seek_within_chunk(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->o.batch = 2;
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, TS(f, 100), TS(f, 100), T_WORLD);
    PLAN(f, 200, 0, 0, TS(f, 0), T_THE, TS(f, 50));
    PLAN(f, 10000, 0, 0, TS(f, 0), T_CAT, TS(f, 80));
    fix_open(f);
    chunk_set cs;
    chunks_make(&cs, 2, 2500, 100.0);
    td_transcript t;
    chunks_ok(f, &cs, &t);
    assert_int_equal(t.n_segs, 3);
    expect_seg(&t, 0, 0.0, 2.0, "Hello");
    expect_seg(&t, 1, 2.0, 3.0, "the");
    expect_seg(&t, 2, 100.0, 101.6, "cat");
    assert_int_equal(f->be.n_encode, 3);
    int seen = 0;
    for (int r = 0; r < f->be.n_runs; r++)
        if (f->be.runs[r].seek == 200) {
            seen = 1; /* [prev, ts0, hello, ts100, sot, ...] */
            assert_int_equal(f->be.runs[r].init[0], f->fm.m.sp.prev);
            assert_int_equal(f->be.runs[r].init[2], T_HELLO);
        }
    assert_true(seen);
    td_transcript_release(&t);
    chunks_free(&cs);
    fix_free(f);
}

static int stop_now(void *user, double seconds)
{
    (void)seconds;
    int *calls = user;
    return ++*calls >= 1;
}

/* A stop asked for mid-batch ends the call with TD_EABORT; the decoder
 * gave every slot back and decodes the same chunks again in full. */
static void test_batched_abort(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->o.batch = 2;
    f->o.beam_size = 3;
    const int32_t word[3] = {T_HELLO, T_WORLD, T_THE};
    for (int k = 0; k < 3; k++)
        PLAN(f, 10000 * k, 0, 0, TS(f, 0), word[k], TS(f, 50));
    fix_open(f);
    chunk_set cs;
    chunks_make(&cs, 3, 800, 40.0);
    td_transcript t;
    td_error err = {0};
    int calls = 0;
    assert_int_equal(chunks_run(f, &cs, &t, stop_now, &calls, &err), TD_EABORT);
    assert_true(t.n_segs < 3);
    td_transcript_release(&t);
    err = (td_error){0};
    if (chunks_run(f, &cs, &t, NULL, NULL, &err))
        fail_msg("transcribe_chunks after a stop: %s", err.msg);
    assert_int_equal(t.n_segs, 3);
    expect_seg(&t, 2, 80.0, 81.0, "the");
    td_transcript_release(&t);
    chunks_free(&cs);
    fix_free(f);
}

/* A chunk longer than a window (a view of a longer mel, stride frames a
 * row) is walked as the sequential loop walks its mel: each window the
 * frames from the seek on, at most 3000, zero after the chunk's audio
 * (never the frames past it), each conditioned on the chunk's text; the
 * other chunk decodes beside it. */
static void test_batched_long_chunk(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->o.batch = 2;
    const size_t stride = 9000, content = 7000;
    float *mel = calloc((size_t)N_MELS * stride, sizeof *mel);
    assert_non_null(mel);
    for (size_t b = 0; b < N_MELS; b++) /* past the first chunk's audio: the second's */
        for (size_t i = 0; i < stride; i++)
            mel[b * stride + i] = (float)(i < content ? (int)i + 1 : 10000 + (int)(i - content) + 1);
    f->be.bins_equal = 1;
    /* chunk 0: window 1 ends inside a segment (seek 2000), window 2 at
     * 2000 ends with a single timestamp (the whole window: seek 5000),
     * window 3 at 5000 holds the last 2000 frames */
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, TS(f, 1000), TS(f, 1000), T_WORLD);
    PLAN(f, 2000, 0, 0, TS(f, 0), T_WORLD, TS(f, 600), TS(f, 700), T_THE, TS(f, 1400));
    PLAN(f, 5000, 0, 0, TS(f, 0), T_CAT, TS(f, 300));
    PLAN(f, 10000, 0, 0, TS(f, 0), T_SAT, TS(f, 80)); /* chunk 1 */
    fix_open(f);
    td_wchunk c[2] = {
        {.mel = mel, .stride = stride, .content_frames = content, .offset = 0.0},
        {.mel = mel + content, .stride = stride, .content_frames = 1500, .offset = 70.0},
    };
    td_transcript t;
    td_transcript_init(&t);
    td_error err = {0};
    if (td_wdecoder_transcribe_chunks(f->d, c, 2, &t, NULL, NULL, NULL, &err))
        fail_msg("transcribe_chunks: %s", err.msg);
    assert_int_equal(t.n_segs, 5);
    expect_seg(&t, 0, 0.0, 20.0, "Hello");
    expect_seg(&t, 1, 20.0, 32.0, "world");
    expect_seg(&t, 2, 34.0, 48.0, "the");
    expect_seg(&t, 3, 50.0, 56.0, "cat");
    expect_seg(&t, 4, 70.0, 71.6, "sat");
    assert_int_equal(f->be.n_encode, 4);
    int lens[4] = {0}, seen = 0;
    for (int e = 0; e < f->be.n_encode; e++) {
        int sk = f->be.encodes[e];
        int want = sk == 0 ? 3000 : sk == 2000 ? 3000 : sk == 5000 ? 2000 : 1500;
        assert_int_equal(f->be.enc_len[e], want);
        lens[sk == 0 ? 0 : sk == 2000 ? 1 : sk == 5000 ? 2 : 3]++;
    }
    for (int k = 0; k < 4; k++)
        assert_int_equal(lens[k], 1);
    for (int r = 0; r < f->be.n_runs; r++)
        if (f->be.runs[r].seek == 5000) {
            seen = 1; /* conditioned on the chunk's text before */
            assert_int_equal(f->be.runs[r].init[0], f->fm.m.sp.prev);
        } else if (f->be.runs[r].seek == 10000) {
            assert_int_not_equal(f->be.runs[r].init[0], f->fm.m.sp.prev);
        }
    assert_true(seen);
    assert_int_equal(f->be.max_rows_seen, 2);
    td_transcript_release(&t);
    free(mel);
    fix_free(f);
}

/* Batched mode with beams: every window's beams and forks stay in their
 * own KV slots (the scripted backend checks each slot's history). */
static void test_batched_beams(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->be.script = beam_script;
    f->o.timestamps = 0;
    f->o.beam_size = 5;
    f->o.batch = 3;
    fix_open(f);
    chunk_set cs;
    chunks_make(&cs, 5, 1000, 30.0);
    td_transcript t;
    chunks_ok(f, &cs, &t);
    assert_int_equal(t.n_segs, 5);
    for (int k = 0; k < 5; k++)
        assert_string_equal(t.segs[k].text, "world cat"); /* beam search's answer */
    assert_true(f->be.n_kv_copy >= 3);
    assert_true(f->be.max_rows_seen > 5);
    td_transcript_release(&t);
    chunks_free(&cs);
    fix_free(f);
}

/* ---- word times from the alignment heads --------------------------------- */

/* The scripted alignment puts token k at 0.5 + k s of its window: the
 * words get those times on the scene clock (time_offset added), the
 * segment ends with its last word, and nothing is shared by characters. */
static void test_align_word_times(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->ops = &fake_align_ops;
    PLAN(f, 0, 0, 0, TS(f, 0), T_FLAT, T_FLAT + 1, T_FLAT + 2, T_FLAT + 3, TS(f, 250));
    fix_open(f);
    const char *why = "x";
    assert_int_equal(td_wdecoder_word_times(f->d, &why), 1);
    assert_null(why);
    td_transcript t;
    transcribe(f, 600, 100.0, &t, NULL);
    assert_int_equal(f->be.n_align, 1);
    assert_int_equal(t.n_segs, 1);
    const td_segment *s = &t.segs[0];
    assert_int_equal(s->n_words, 4);
    for (int k = 1; k < 4; k++) {
        if (fabs(s->words[k].start - (100.5 + k)) > 0.06 ||
            fabs(s->words[k].end - (101.5 + k)) > 0.06)
            fail_msg("word %d: %.2f-%.2f, wanted %.2f-%.2f", k, s->words[k].start,
                     s->words[k].end, 100.5 + k, 101.5 + k);
        assert_true(s->words[k].prob > 0.99f);
    }
    assert_true(fabs(s->start - 100.0) < 1e-9);
    assert_true(fabs(s->end - 104.5) < 0.06); /* its last word's end, not the 105 s timestamp */
    td_wdecode_stats st;
    td_wdecoder_stats(f->d, &st);
    assert_int_equal(st.aligned, 1);
    assert_int_equal(st.align_failed, 0);
    td_transcript_release(&t);
    fix_free(f);
}

/* A window that ends inside a segment goes on from its last timestamp
 * (not openai's last word's end: see window_build), and the next window's
 * words come after the words before them even where the window before
 * aligned its last words past that timestamp. */
static void test_align_words_in_order(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->ops = &fake_align_ops;
    /* six words from 0 to 5 s (aligned at 0.5 + k s: the last ends at
     * 6.5 s), then an unfinished segment */
    PLAN(f, 0, 0, 0, TS(f, 0), T_FLAT, T_FLAT + 1, T_FLAT + 2, T_FLAT + 3, T_FLAT + 4,
         T_FLAT + 5, TS(f, 250), TS(f, 250), T_FLAT + 6);
    PLAN(f, 500, 0, 0, TS(f, 0), T_FLAT + 6, T_FLAT + 7, TS(f, 100));
    fix_open(f);
    td_transcript t;
    transcribe(f, 1000, 0, &t, NULL);
    assert_true(f->be.n_encode >= 2);
    assert_int_equal(f->be.encodes[1], 500);
    assert_int_equal(t.n_segs, 2);
    assert_int_equal(t.segs[0].n_words + t.segs[1].n_words, 8);
    double prev = 0;
    for (size_t i = 0; i < t.n_segs; i++)
        for (size_t k = 0; k < t.segs[i].n_words; k++) {
            const td_word *w = &t.segs[i].words[k];
            if (w->start < prev - 1e-9 || w->end < w->start)
                fail_msg("segment %zu word %zu at %.2f-%.2f, after %.2f", i, k, w->start, w->end,
                         prev);
            prev = w->end;
        }
    assert_true(t.segs[0].words[5].end > 6.0); /* past the 5 s timestamp */
    td_transcript_release(&t);
    fix_free(f);
}

/* Batched: each chunk window is aligned in its own window slot. */
static void test_align_batched(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->ops = &fake_align_ops;
    f->o.batch = 2;
    PLAN(f, 0, 0, 0, TS(f, 0), T_FLAT, T_FLAT + 1, T_FLAT + 2, TS(f, 250));
    PLAN(f, 10000, 0, 0, TS(f, 0), T_FLAT + 3, T_FLAT + 4, T_FLAT + 5, TS(f, 250));
    fix_open(f);
    chunk_set cs;
    chunks_make(&cs, 2, 800, 40.0);
    td_transcript t;
    chunks_ok(f, &cs, &t);
    assert_int_equal(t.n_segs, 2);
    assert_int_equal(f->be.n_align, 2);
    assert_int_not_equal(f->be.align_window[0], f->be.align_window[1]);
    for (int c = 0; c < 2; c++) {
        const td_segment *s = &t.segs[c];
        assert_int_equal(s->n_words, 3);
        for (int k = 1; k < 3; k++)
            assert_true(fabs(s->words[k].start - (40.0 * c + 0.5 + k)) < 0.06);
    }
    td_transcript_release(&t);
    chunks_free(&cs);
    fix_free(f);
}

/* No heads known for the model's dimensions, or no align_weights in the
 * backend: character-count times, and the decoder says why. */
static void test_align_unknown_model(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->ops = &fake_align_ops;
    f->fm.m.hp.n_text_layer = 3; /* no released model */
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, T_WORLD, TS(f, 100));
    fix_open(f);
    const char *why = NULL;
    assert_int_equal(td_wdecoder_word_times(f->d, &why), 0);
    assert_non_null(why);
    assert_non_null(strstr(why, "dimensions"));
    td_transcript t;
    transcribe(f, 300, 0, &t, NULL);
    assert_int_equal(f->be.n_align, 0);
    expect_seg(&t, 0, 0, 2.0, "Hello world");
    assert_true(fabs(t.segs[0].words[1].start - 2.0 * 6 / 12) < 1e-9); /* " Hello" " world" */
    td_transcript_release(&t);
    fix_free(f);

    f = fix_new(NV_MULTI); /* the plain scripted backend has no align_weights */
    fix_open(f);
    assert_int_equal(td_wdecoder_word_times(f->d, &why), 0);
    assert_non_null(strstr(why, "align_weights"));
    fix_free(f);
}

/* ---- guards (whisper/guard.h) ------------------------------------------- */

static const td_guard_span speech_30s[] = {{0.0, 30.0}};

/* TS(0), 40 ordinary words, TS(end): words over the whole span. */
static int dense_segment(fix *f, int32_t *tok, int end_ts)
{
    int n = 0;
    tok[n++] = TS(f, 0);
    for (int k = 0; k < 40; k++)
        tok[n++] = 100 + 1237 * k; /* " w100", " w1337", ...: distinct, not repetitive */
    tok[n++] = TS(f, end_ts);
    return n;
}

/* Dropped speech (issue 13's defect): the first decode spreads two words
 * over 20 s of speech; it is decoded again at the next temperature,
 * without a prompt, and the retry (which covers the speech) is kept. */
static void test_guard_sparse_redecodes(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, T_WORLD, TS(f, 1000));
    int32_t tok[64];
    int n = dense_segment(f, tok, 1500);
    add_plan(&f->ps, 0, 1, 0, tok, n);
    fix_open(f);
    td_wdecoder_set_speech(f->d, speech_30s, 1);
    td_transcript t;
    transcribe(f, 3000, 0, &t, NULL);
    assert_int_equal(f->be.n_runs, 2);
    assert_int_not_equal(f->be.runs[1].init[0], f->fm.m.sp.prev); /* no prompt */
    assert_int_equal(t.n_segs, 1);
    assert_int_equal(t.segs[0].n_words, 40);
    assert_int_equal(t.n_issues, 0);
    td_wdecode_stats st;
    td_wdecoder_stats(f->d, &st);
    assert_int_equal(st.guard_redecodes, 1);
    assert_int_equal(st.guard_unresolved, 0);
    assert_int_equal(st.windows, 1);
    td_transcript_release(&t);
    fix_free(f);
}

/* A gap well inside the window: the segments before it are kept and the
 * next window starts at the gap (2 s of words, padded by 0.5 s). */
static void test_guard_gap_restarts_window(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, T_WORLD, TS(f, 100));
    int32_t tok[64];
    int n = dense_segment(f, tok, 1375);
    add_plan(&f->ps, 250, 0, 0, tok, n);
    fix_open(f);
    td_wdecoder_set_speech(f->d, speech_30s, 1);
    td_transcript t;
    transcribe(f, 3000, 0, &t, NULL);
    assert_int_equal(f->be.n_encode, 2);
    assert_int_equal(f->be.encodes[1], 250);
    assert_int_equal(f->be.n_runs, 2);
    assert_int_equal(t.n_segs, 2);
    expect_seg(&t, 0, 0, 2.0, "Hello world");
    assert_true(fabs(t.segs[1].start - 2.5) < 1e-9 && fabs(t.segs[1].end - 30.0) < 1e-9);
    assert_int_equal(t.n_issues, 0);
    td_wdecode_stats st;
    td_wdecoder_stats(f->d, &st);
    assert_int_equal(st.guard_gap_seeks, 1);
    assert_int_equal(st.guard_redecodes, 0);
    td_transcript_release(&t);
    fix_free(f);
}

/* The gap's window finds no words in the gap (hiss the VAD took for
 * speech): the window that left the gap stands, its segments after the
 * gap included, and the gap is an unresolved issue. */
static void test_guard_gap_probe_fails(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, T_WORLD, TS(f, 100), TS(f, 1250), T_THE, T_CAT, T_SAT,
         TS(f, 1400));
    fix_open(f); /* nothing planned at frame 250: the gap's window says nothing */
    td_wdecoder_set_speech(f->d, speech_30s, 1);
    td_transcript t;
    transcribe(f, 3000, 0, &t, NULL);
    assert_int_equal(f->be.n_encode, 2);
    assert_int_equal(f->be.encodes[1], 250);
    assert_int_equal(t.n_segs, 2);
    expect_seg(&t, 0, 0, 2.0, "Hello world");
    expect_seg(&t, 1, 25.0, 28.0, "the cat sat");
    assert_int_equal(t.n_issues, 1);
    assert_string_equal(t.issues[0].reason, "gap");
    assert_true(fabs(t.issues[0].start - 2.5) < 1e-9 && fabs(t.issues[0].end - 24.5) < 1e-9);
    assert_int_equal(t.issues[0].decoded_again, 1); /* by the gap's own window */
    td_wdecode_stats st;
    td_wdecoder_stats(f->d, &st);
    assert_int_equal(st.guard_gap_seeks, 1);
    assert_int_equal(st.guard_unresolved, 1);
    td_transcript_release(&t);
    fix_free(f);
}

/* A short gap (3.5 s here, under 8 s: hiss or music the VAD let through,
 * more often than not) is logged, not decoded again. */
static void test_guard_short_gap_logged(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, T_WORLD, TS(f, 100));
    fix_open(f);
    static const td_guard_span speech[] = {{0.0, 6.0}};
    td_wdecoder_set_speech(f->d, speech, 1);
    td_transcript t;
    transcribe(f, 600, 0, &t, NULL);
    assert_int_equal(f->be.n_runs, 1);
    assert_int_equal(t.n_segs, 1);
    assert_int_equal(t.n_issues, 1);
    assert_string_equal(t.issues[0].reason, "gap");
    assert_true(fabs(t.issues[0].start - 2.5) < 1e-9 && fabs(t.issues[0].end - 6.0) < 1e-9);
    assert_int_equal(t.issues[0].decoded_again, 0); /* logged as such, not as a failed re-decode */
    td_transcript_release(&t);
    fix_free(f);
}

/* The gap's own window finds words early in the gap and leaves gaps
 * after them, a long one among them: that audio was decoded twice (by the
 * window that left the gap and by the gap's window), so the kept issues
 * say so (the log's "decoding again did not clear it"). */
static void test_guard_gap_window_leaves_gap(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, T_WORLD, TS(f, 100), TS(f, 1250), T_THE, T_CAT, T_SAT,
         TS(f, 1400));
    PLAN(f, 250, 0, 0, TS(f, 0), T_HELLO, T_WORLD, TS(f, 50), TS(f, 325), T_THE, T_CAT,
         TS(f, 375));
    fix_open(f);
    td_wdecoder_set_speech(f->d, speech_30s, 1);
    td_transcript t;
    transcribe(f, 3000, 0, &t, NULL);
    assert_int_equal(f->be.encodes[1], 250);
    /* the gap's window: words at 2.5-3.5 and 9-10 s, gaps at 4-8.5 s and
     * 10.5-25 s; then the window at 25 s, where nothing is planned, falls
     * back through every temperature and keeps its gap too */
    assert_int_equal(t.n_issues, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(t.issues[i].reason, "gap");
        assert_int_equal(t.issues[i].decoded_again, 1);
    }
    assert_true(fabs(t.issues[1].start - 10.5) < 1e-9 && fabs(t.issues[1].end - 25.0) < 1e-9);
    td_transcript_release(&t);
    fix_free(f);
}

/* Batched: a short gap kept as first decoded and a repeat kept after every
 * temperature keep their flags through the chunks' transcripts. */
static void test_guard_flags_batched(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->o.batch = 2;
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, T_WORLD, TS(f, 100));
    PLAN(f, 10000, 0, 0, TS(f, 0), T_THE, T_CAT, T_SAT, T_DOG, T_HELLO, TS(f, 100), TS(f, 100),
         T_THE, T_CAT, T_SAT, T_DOG, T_HELLO, TS(f, 200));
    fix_open(f);
    static const td_guard_span speech[] = {{0.0, 6.0}};
    td_wdecoder_set_speech(f->d, speech, 1);
    chunk_set cs;
    chunks_make(&cs, 2, 800, 40.0);
    td_transcript t;
    chunks_ok(f, &cs, &t);
    assert_int_equal(t.n_issues, 2);
    assert_string_equal(t.issues[0].reason, "gap");
    assert_int_equal(t.issues[0].decoded_again, 0);
    assert_string_equal(t.issues[1].reason, "repeat");
    assert_int_equal(t.issues[1].decoded_again, 1);
    td_transcript_release(&t);
    chunks_free(&cs);
    fix_free(f);
}

/* Batched: the same within a chunk; the window at the gap holds just the
 * gap (speech only to 20 s here: 2.5 .. 20.5 s, 1800 frames). */
static void test_guard_gap_batched(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->o.batch = 2;
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, T_WORLD, TS(f, 100));
    int32_t tok[64];
    int n = dense_segment(f, tok, 875);
    add_plan(&f->ps, 250, 0, 0, tok, n);
    fix_open(f);
    static const td_guard_span speech[] = {{0.0, 20.0}};
    td_wdecoder_set_speech(f->d, speech, 1);
    chunk_set cs;
    chunks_make(&cs, 1, 3000, 0.0);
    td_transcript t;
    chunks_ok(f, &cs, &t);
    assert_true(f->be.n_encode >= 2);
    assert_int_equal(f->be.encodes[1], 250);
    assert_true(t.n_segs >= 2);
    expect_seg(&t, 0, 0, 2.0, "Hello world");
    assert_true(fabs(t.segs[1].start - 2.5) < 1e-9 && fabs(t.segs[1].end - 20.0) < 1e-9);
    /* the gap's window ended with the gap: the next one starts at 20.5 s */
    assert_true(f->be.n_encode >= 3);
    assert_int_equal(f->be.encodes[2], 2050);
    td_wdecode_stats st;
    td_wdecoder_stats(f->d, &st);
    assert_int_equal(st.guard_gap_seeks, 1);
    td_transcript_release(&t);
    chunks_free(&cs);
    fix_free(f);
}

/* A segment that says the one before it again is decoded again. */
static void test_guard_repeat_redecodes(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    PLAN(f, 0, 0, 0, TS(f, 0), T_THE, T_CAT, T_SAT, T_DOG, T_HELLO, TS(f, 100), TS(f, 100),
         T_THE, T_CAT, T_SAT, T_DOG, T_HELLO, TS(f, 200));
    PLAN(f, 0, 1, 0, TS(f, 0), T_THE, T_CAT, T_SAT, T_DOG, T_HELLO, TS(f, 100), TS(f, 100),
         T_FLAT, T_FLAT + 1, T_FLAT + 2, TS(f, 200));
    fix_open(f);
    td_transcript t;
    transcribe(f, 500, 0, &t, NULL);
    assert_int_equal(f->be.n_runs, 2);
    assert_int_equal(t.n_segs, 2);
    expect_seg(&t, 1, 2.0, 4.0, "w1100 w1101 w1102");
    td_wdecode_stats st;
    td_wdecoder_stats(f->d, &st);
    assert_int_equal(st.guard_redecodes, 1);
    assert_int_equal(t.n_issues, 0);
    td_transcript_release(&t);
    fix_free(f);
}

/* A loop inside a segment (short enough to pass the compression ratio)
 * is decoded again. */
static void test_guard_loop_redecodes(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    PLAN(f, 0, 0, 0, TS(f, 0), T_THE, T_CAT, T_THE, T_CAT, T_THE, T_CAT, T_THE, T_CAT, T_THE,
         T_CAT, TS(f, 200));
    PLAN(f, 0, 1, 0, TS(f, 0), T_THE, T_CAT, T_SAT, TS(f, 200));
    fix_open(f);
    td_transcript t;
    transcribe(f, 500, 0, &t, NULL);
    assert_int_equal(f->be.n_runs, 2);
    td_wdecode_stats st;
    td_wdecoder_stats(f->d, &st);
    assert_int_equal(st.fallbacks, 0); /* the guard, not the compression ratio */
    assert_int_equal(st.guard_redecodes, 1);
    assert_int_equal(t.n_segs, 1);
    expect_seg(&t, 0, 0, 4.0, "the cat sat");
    td_transcript_release(&t);
    fix_free(f);
}

/* What fails at every temperature is kept (the first attempt: all fail
 * alike), and the issue goes into the transcript with its time range. */
static void test_guard_unresolved(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    PLAN(f, 0, 0, 0, TS(f, 0), T_THE, T_CAT, T_SAT, T_DOG, T_HELLO, TS(f, 100), TS(f, 100),
         T_THE, T_CAT, T_SAT, T_DOG, T_HELLO, TS(f, 200));
    fix_open(f);
    td_transcript t;
    transcribe(f, 500, 0, &t, NULL);
    assert_int_equal(f->be.n_runs, 6); /* every temperature */
    assert_int_equal(t.n_segs, 2);
    assert_int_equal(t.n_issues, 1);
    assert_string_equal(t.issues[0].reason, "repeat");
    assert_true(fabs(t.issues[0].start - 2.0) < 1e-9 && fabs(t.issues[0].end - 4.0) < 1e-9);
    assert_int_equal(t.issues[0].decoded_again, 1);
    td_wdecode_stats st;
    td_wdecoder_stats(f->d, &st);
    assert_int_equal(st.guard_redecodes, 5);
    assert_int_equal(st.guard_unresolved, 1);
    td_transcript_release(&t);
    fix_free(f);
}

/* Batched: a chunk window that repeats is decoded again in later steps
 * while the other chunk goes on; its issue-free retry is kept, in order. */
static void test_guard_batched(void **state)
{
    (void)state;
    fix *f = fix_new(NV_MULTI);
    f->o.batch = 2;
    PLAN(f, 0, 0, 0, TS(f, 0), T_HELLO, TS(f, 50));
    PLAN(f, 10000, 0, 0, TS(f, 0), T_THE, T_CAT, T_SAT, T_DOG, T_HELLO, TS(f, 100), TS(f, 100),
         T_THE, T_CAT, T_SAT, T_DOG, T_HELLO, TS(f, 200));
    PLAN(f, 10000, 1, 0, TS(f, 0), T_THE, T_CAT, T_SAT, T_DOG, T_HELLO, TS(f, 100), TS(f, 100),
         T_FLAT, TS(f, 200));
    fix_open(f);
    chunk_set cs;
    chunks_make(&cs, 2, 800, 40.0);
    td_transcript t;
    chunks_ok(f, &cs, &t);
    assert_int_equal(t.n_segs, 3);
    expect_seg(&t, 0, 0.0, 1.0, "Hello");
    expect_seg(&t, 2, 42.0, 44.0, "w1100");
    assert_int_equal(f->be.n_encode, 2); /* the retry reuses the encoding */
    td_wdecode_stats st;
    td_wdecoder_stats(f->d, &st);
    assert_int_equal(st.guard_redecodes, 1);
    assert_int_equal(t.n_issues, 0);
    td_transcript_release(&t);
    chunks_free(&cs);
    fix_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_suppress_tokens_fake),
        cmocka_unit_test(test_suppress_tokens_real),
        cmocka_unit_test(test_ts_notimestamps_never),
        cmocka_unit_test(test_ts_pair_then_text),
        cmocka_unit_test(test_ts_lone_then_ts_or_eot),
        cmocka_unit_test(test_ts_monotonic),
        cmocka_unit_test(test_ts_initial_limit),
        cmocka_unit_test(test_ts_sum_forces_timestamp),
        cmocka_unit_test(test_suppress_blank_first_only),
        cmocka_unit_test(test_suppressed_symbols),
        cmocka_unit_test(test_greedy_stops_at_eot),
        cmocka_unit_test(test_sample_len_and_avg_logprob),
        cmocka_unit_test(test_beam_beats_greedy),
        cmocka_unit_test(test_sampling_seeded),
        cmocka_unit_test(test_detect_language),
        cmocka_unit_test(test_transcribe_detects_language),
        cmocka_unit_test(test_sot_sequences),
        cmocka_unit_test(test_prompt_limit),
        cmocka_unit_test(test_compression_ratio),
        cmocka_unit_test(test_fallback_on_repetition),
        cmocka_unit_test(test_fallback_on_logprob),
        cmocka_unit_test(test_no_speech_skip),
        cmocka_unit_test(test_seek_to_last_timestamp),
        cmocka_unit_test(test_single_timestamp_ending),
        cmocka_unit_test(test_empty_segments_and_clamp),
        cmocka_unit_test(test_words),
        cmocka_unit_test(test_prompt_conditioning),
        cmocka_unit_test(test_prompt_after_silence),
        cmocka_unit_test(test_prompt_reset_on_temperature),
        cmocka_unit_test(test_progress_and_abort),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_batched_order),
        cmocka_unit_test(test_batched_fallback),
        cmocka_unit_test(test_batched_seek_within_chunk),
        cmocka_unit_test(test_batched_long_chunk),
        cmocka_unit_test(test_batched_abort),
        cmocka_unit_test(test_batched_beams),
        cmocka_unit_test(test_align_word_times),
        cmocka_unit_test(test_align_words_in_order),
        cmocka_unit_test(test_align_batched),
        cmocka_unit_test(test_align_unknown_model),
        cmocka_unit_test(test_guard_sparse_redecodes),
        cmocka_unit_test(test_guard_gap_restarts_window),
        cmocka_unit_test(test_guard_gap_probe_fails),
        cmocka_unit_test(test_guard_short_gap_logged),
        cmocka_unit_test(test_guard_gap_batched),
        cmocka_unit_test(test_guard_gap_window_leaves_gap),
        cmocka_unit_test(test_guard_flags_batched),
        cmocka_unit_test(test_guard_repeat_redecodes),
        cmocka_unit_test(test_guard_loop_redecodes),
        cmocka_unit_test(test_guard_unresolved),
        cmocka_unit_test(test_guard_batched),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
