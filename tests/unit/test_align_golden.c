/*
 * test_align_golden.c: word alignment (src/whisper/align.c) on real
 * cross-attention: the alignment heads' weights of the golden sets
 * (tests/fixtures/whisper/NAME.align.{json,f32}, made by
 * scripts/whisper-oracle.py: `npalign` from its numpy-only float64
 * forward pass, or `align` from HF transformers, which adds HF's own
 * token and word timestamps).
 *
 * Checked on every set: the heads the oracle decoded from openai's
 * published strings are tapedeck's table's; the weights are
 * probabilities. On tiny.en-real (OpenAI's tiny.en on jfk.wav): the
 * words of the transcript come out in order, inside the speech, each
 * with a plausible length. Where the set holds HF's timestamps: the same
 * algorithm as HF's (DTW over every row, all 1500 frames) gives HF's
 * token timestamps and word timestamps within one frame (20 ms) on every
 * token and word (in the layout of the transformers that made the set,
 * see check_hf_tokens), and openai's own variant (content frames only,
 * rows notimestamps..text) is compared with HF's words and the
 * differences printed.
 *
 * The CPU backend's align_weights against the reference weights (F32 and
 * int8; tiny-f16 always, tiny.en with the cached weights), td_align_run
 * end to end, and the drop/repeat checks (guard.c) on jfk.wav: the VAD's
 * regions against the aligned transcript find nothing, and find the gap
 * when a segment is removed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "golden.h"
#include "testutil.h"
#include "util/hash.h"
#include "asr/vad.h"
#include "whisper/align.h"
#include "whisper/guard.h"
#include "whisper/backend.h"
#include "whisper/ct2.h"
#include "whisper/mkmodel.h"
#include "whisper/model.h"

static char *fix_dir;

/* ---- one set ------------------------------------------------------------ */

typedef struct aset {
    json_t *meta;        /* NAME.align.json */
    json_t *set;         /* NAME.json */
    float *w;            /* [H][T][C] */
    int H, T, C;
    int n_sot, n_text;
    int32_t *seq;        /* T tokens */
    /* vocab from the meta's text_token_bytes */
    uint8_t **bytes;
    size_t *len;
    int32_t eot;
} aset;

static const uint8_t *set_token(void *user, int32_t id, size_t *len)
{
    const aset *s = user;
    /* text token k of the sequence is looked up by id: find its position */
    for (int k = 0; k < s->n_text; k++)
        if (s->seq[s->n_sot + 1 + k] == id) {
            *len = s->len[k];
            return s->bytes[k];
        }
    return NULL;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* 0 and the set, or 1 when its files are absent (the test skips). */
static int load_set(const char *name, aset *s)
{
    memset(s, 0, sizeof *s);
    char *mp = pathf("%s.align.json", name), *sp = pathf("%s.json", name);
    s->meta = golden_load_json(fix_dir, mp, 1);
    free(mp);
    if (!s->meta) {
        free(sp);
        return 1;
    }
    s->set = golden_load_json(fix_dir, sp, 0);
    free(sp);
    json_t *shape = json_object_get(s->meta, "shape");
    assert_int_equal(json_array_size(shape), 3);
    s->H = (int)json_integer_value(json_array_get(shape, 0));
    s->T = (int)json_integer_value(json_array_get(shape, 1));
    s->C = (int)json_integer_value(json_array_get(shape, 2));
    assert_true(s->H > 0 && s->T > 2 && s->C == 1500);
    size_t n = (size_t)s->H * s->T * s->C;
    s->w = golden_read_f32(fix_dir, gj_str(s->meta, "file"), n);
    json_t *seq = json_object_get(s->meta, "sequence");
    assert_int_equal((int)json_array_size(seq), s->T);
    s->seq = malloc((size_t)s->T * sizeof *s->seq);
    assert_non_null(s->seq);
    for (int i = 0; i < s->T; i++)
        s->seq[i] = (int32_t)json_integer_value(json_array_get(seq, (size_t)i));
    s->n_sot = (int)json_array_size(json_object_get(s->meta, "sot_sequence"));
    s->n_text = s->T - s->n_sot - 2;
    s->eot = (int32_t)json_integer_value(
        json_object_get(json_object_get(s->set, "special"), "eot"));
    assert_int_equal(s->seq[s->T - 1], s->eot);
    json_t *tb = json_object_get(s->meta, "text_token_bytes");
    assert_int_equal((int)json_array_size(tb), s->n_text);
    s->bytes = calloc((size_t)s->n_text + 1, sizeof *s->bytes);
    s->len = calloc((size_t)s->n_text + 1, sizeof *s->len);
    assert_true(s->bytes && s->len);
    for (int k = 0; k < s->n_text; k++) {
        const char *hx = json_string_value(json_array_get(tb, (size_t)k));
        size_t l = strlen(hx) / 2;
        s->bytes[k] = malloc(l + 1);
        assert_non_null(s->bytes[k]);
        for (size_t i = 0; i < l; i++)
            s->bytes[k][i] = (uint8_t)(hexval(hx[2 * i]) * 16 + hexval(hx[2 * i + 1]));
        s->len[k] = l;
    }
    return 0;
}

static void free_set(aset *s)
{
    json_decref(s->meta);
    json_decref(s->set);
    free(s->w);
    free(s->seq);
    for (int k = 0; k < s->n_text; k++)
        free(s->bytes[k]);
    free(s->bytes);
    free(s->len);
}

/* ---- checks --------------------------------------------------------------- */

static void check_heads_and_weights(const aset *s)
{
    size_t n;
    const td_align_heads *all = td_align_heads_all(&n);
    const char *of = json_string_value(json_object_get(s->meta, "heads_of"));
    const td_align_heads *h = NULL;
    for (size_t i = 0; i < n; i++)
        if (strcmp(all[i].name, of) == 0)
            h = &all[i];
    assert_non_null(h);
    json_t *heads = json_object_get(s->meta, "heads");
    assert_int_equal((int)json_array_size(heads), h->n_heads);
    assert_int_equal(s->H, h->n_heads);
    for (int i = 0; i < h->n_heads; i++) {
        json_t *p = json_array_get(heads, (size_t)i);
        assert_int_equal(json_integer_value(json_array_get(p, 0)), h->lh[i][0]);
        assert_int_equal(json_integer_value(json_array_get(p, 1)), h->lh[i][1]);
    }
    for (int r = 0; r < s->H * s->T; r++) {
        double sum = 0;
        for (int c = 0; c < s->C; c++)
            sum += s->w[(size_t)r * s->C + c];
        assert_true(fabs(sum - 1) < 1e-4);
    }
}

/* HF's variant (all 1500 frames, no renormalisation, median filter and
 * head mean as openai's) in the layout the set's transformers used:
 *   "all-rows" (4.4x): every row of the sequence; sequence token i
 *     (i >= 1) gets the time the path enters row i - 1;
 *   "prefix-dropped" (4.5x, 5.x; hf_num_input_ids = P): rows P .. T-2
 *     (generate() has no row for eot, and drops the sot sequence and
 *     notimestamps); tokens before P get 0, token P + k the time the
 *     path enters row k, eot the last text token's.
 * Checks HF's token timestamps within one frame (20 ms), then HF's word
 * timestamps (pairs (ts[i], ts[i + 1]) grouped into words by HF's own
 * token indices) within one frame on every word. Returns the number of
 * words compared (0: the set has no HF timestamps). */
static size_t check_hf_tokens(const aset *s)
{
    json_t *ts = json_object_get(s->meta, "hf_token_timestamps_full");
    if (!ts)
        return 0;
    assert_int_equal((int)json_array_size(ts), s->T + 0);
    const char *layout = json_string_value(json_object_get(s->meta, "hf_layout"));
    int dropped = layout && strcmp(layout, "prefix-dropped") == 0;
    int P = dropped ? (int)json_integer_value(json_object_get(s->meta, "hf_num_input_ids")) : 0;
    if (dropped)
        assert_int_equal(P, s->n_sot + 1);
    int r0 = dropped ? P : 0, R = dropped ? s->T - 1 - P : s->T;
    assert_true(R >= 1);
    float *sub = malloc((size_t)s->H * R * s->C * sizeof *sub);
    float *mat = malloc((size_t)R * s->C * sizeof *mat);
    double *jump = malloc((size_t)R * sizeof *jump);
    double *mine = calloc((size_t)s->T, sizeof *mine);
    assert_true(sub && mat && jump && mine);
    for (int h = 0; h < s->H; h++)
        memcpy(sub + (size_t)h * R * s->C, s->w + ((size_t)h * s->T + r0) * s->C,
               (size_t)R * s->C * sizeof *sub);
    td_error err;
    assert_int_equal(td_align_matrix(sub, s->H, R, s->C, s->C, 7, mat, &err), TD_OK);
    assert_int_equal(td_align_jumps(mat, R, s->C, jump, &err), TD_OK);
    if (dropped) {
        for (int k = 0; k < R; k++)
            mine[P + k] = jump[k];
        mine[s->T - 1] = jump[R - 1];
    } else {
        for (int i = 1; i < s->T; i++)
            mine[i] = jump[i - 1];
    }
    double worst = 0;
    for (int i = 0; i < s->T; i++)
        worst = fmax(worst, fabs(mine[i] - json_real_value(json_array_get(ts, (size_t)i))));
    printf("  HF token timestamps (%s, all frames): largest difference %.3f s over %d tokens\n",
           dropped ? "generate()'s rows" : "all rows", worst, s->T);
    assert_true(worst <= 0.02 + 1e-6);

    size_t n_words = 0;
    json_t *hw = json_object_get(s->meta, "hf_words_full");
    if (hw) {
        int base = s->n_sot + 1;
        double wworst = 0;
        for (size_t k = 0; k < json_array_size(hw); k++) {
            json_t *o = json_array_get(hw, k);
            json_t *ix = json_object_get(o, "tokens");
            assert_true(json_array_size(ix) >= 1);
            int first = (int)json_integer_value(json_array_get(ix, 0));
            int last = (int)json_integer_value(json_array_get(ix, json_array_size(ix) - 1));
            assert_true(first >= 0 && last < s->n_text && first <= last);
            double st = round(mine[base + first] * 100) / 100;
            double en = round(mine[base + last + 1] * 100) / 100;
            wworst = fmax(wworst, fabs(st - json_real_value(json_object_get(o, "start"))));
            wworst = fmax(wworst, fabs(en - json_real_value(json_object_get(o, "end"))));
            n_words++;
        }
        printf("  HF word timestamps: %zu words, largest difference %.3f s\n", n_words, wworst);
        assert_true(wworst <= 0.02 + 1e-6);
    }
    free(sub);
    free(mat);
    free(jump);
    free(mine);
    return n_words;
}

/* The set's transcript as segments: text between timestamp tokens. */
typedef struct segs {
    td_align_seg s[16];
    int32_t tok[16][64];
    size_t n;
} segs;

static void transcript_segments(const aset *s, segs *out)
{
    memset(out, 0, sizeof *out);
    json_t *g = json_object_get(json_object_get(s->set, "greedy"), "tokens");
    int32_t tsb = (int32_t)json_integer_value(
        json_object_get(json_object_get(s->set, "special"), "ts_begin"));
    size_t n = json_array_size(g);
    int open = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t t = (int32_t)json_integer_value(json_array_get(g, i));
        if (t >= tsb) {
            double sec = (t - tsb) * 0.02;
            if (!open) {
                assert_true(out->n < 16);
                out->s[out->n].start = sec;
                out->s[out->n].tokens = out->tok[out->n];
                open = 1;
            } else {
                out->s[out->n].end = sec;
                out->n++;
                open = 0;
            }
        } else {
            assert_true(open);
            td_align_seg *sg = &out->s[out->n];
            assert_true(sg->n_tokens < 64);
            out->tok[out->n][sg->n_tokens++] = t;
        }
    }
}

/* The transcript's words from weights w (the set's, or a backend's). */
static void align_words(aset *s, const float *w, segs *sg)
{
    transcript_segments(s, sg);
    td_align_vocab voc = {set_token, s, s->eot};
    td_align_window_in in = {0};
    in.weights = w;
    in.n_heads = s->H;
    in.n_rows = s->T;
    in.n_ctx = s->C;
    in.n_sot = s->n_sot;
    in.n_frames = (int)json_integer_value(json_object_get(s->meta, "content_frames")) / 2;
    in.language = "en";
    double last = 0;
    td_error err;
    if (td_align_window(&voc, &in, sg->s, sg->n, &last, &err) != TD_OK)
        fail_msg("td_align_window: %s", err.msg);
}

static void segs_release(segs *sg)
{
    for (size_t i = 0; i < sg->n; i++)
        td_align_seg_release(&sg->s[i]);
}

static void test_tiny_en_real(void **state)
{
    (void)state;
    aset s;
    if (load_set("tiny.en-real", &s)) {
        printf("  skipped: tests/fixtures/whisper/tiny.en-real.align.json absent\n");
        skip();
    }
    check_heads_and_weights(&s);
    /* HF's words, where the set has them: all 22, each within a frame */
    if (json_object_get(s.meta, "hf_words_full"))
        assert_int_equal(check_hf_tokens(&s), 22);
    segs sg;
    align_words(&s, s.w, &sg);
    assert_int_equal(sg.n, 2);
    /* "And so my fellow Americans ask not what your country can do for
     * you" / "ask what you can do for your country.": 22 words, in order,
     * inside the 11 s of audio, none longer than 1.4 s (twice the 0.7 s
     * cap on the median), none ending before it starts. */
    size_t total = 0;
    double prev_end = 0;
    printf("  words (openai's rules):");
    for (size_t i = 0; i < sg.n; i++)
        for (size_t k = 0; k < sg.s[i].n_words; k++) {
            const td_word *w = &sg.s[i].words[k];
            printf(" %s %.2f-%.2f", w->text, w->start, w->end);
            assert_true(w->start >= prev_end - 1e-9);
            assert_true(w->end >= w->start);
            assert_true(w->end <= 11.0 + 1e-9);
            prev_end = w->end;
            total++;
        }
    printf("\n");
    assert_int_equal(total, 22);
    assert_string_equal(sg.s[0].words[0].text, "And");
    assert_string_equal(sg.s[1].words[sg.s[1].n_words - 1].text, "country.");

    /* Against HF's own word timestamps, where the set has them. */
    json_t *hw = json_object_get(s.meta, "hf_words_full");
    if (hw) {
        double worst = 0;
        size_t k = 0;
        for (size_t i = 0; i < sg.n; i++)
            for (size_t j = 0; j < sg.s[i].n_words && k < json_array_size(hw); j++, k++) {
                json_t *o = json_array_get(hw, k);
                double ds = fabs(sg.s[i].words[j].start - json_real_value(json_object_get(o, "start")));
                double de = fabs(sg.s[i].words[j].end - json_real_value(json_object_get(o, "end")));
                worst = fmax(worst, fmax(ds, de));
            }
        printf("  against HF's words: %zu of %zu words, largest difference %.2f s\n", k,
               json_array_size(hw), worst);
        assert_int_equal(k, json_array_size(hw));
    }
    segs_release(&sg);
    free_set(&s);
}

static void test_tiny_f16(void **state)
{
    (void)state;
    aset s;
    if (load_set("tiny-f16", &s)) {
        printf("  skipped: tests/fixtures/whisper/tiny-f16.align.json absent\n");
        skip();
    }
    check_heads_and_weights(&s);
    check_hf_tokens(&s);
    free_set(&s);
}

/* ---- the CPU backend's align_weights against the reference ----------- */

/* tiny-f16 regenerated from its recipe (tapedeck-mkmodel --dims tiny
 * --ftype f16 --seed 2, as tiny-f16.json records it), checked against the
 * hash the reference read. */
static td_wmodel *tiny_f16_model(const aset *s, char **path)
{
    td_error err = {0};
    char tmpl[] = "/tmp/td-align-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    *path = pathf("%s/tiny-f16.bin", tmpl);
    assert_int_equal(golden_write_model(s->set, "tiny-f16", *path), 1);
    /* the alignment reference read the same model */
    assert_string_equal(gj_str(s->set, "model_sha256"), gj_str(s->meta, "model_sha256"));
    td_wmodel *m = NULL;
    if (td_wmodel_open(*path, &m, &err) != TD_OK)
        fail_msg("td_wmodel_open: %s", err.msg);
    return m;
}

static float *read_mel(const aset *s, int n_mels)
{
    return golden_read_f32(fix_dir, gj_str(s->set, "mel.file"), (size_t)n_mels * 3000);
}

/* align_weights of a context with this compute type; the largest
 * absolute difference from the reference's probabilities and the
 * relative L2 error. */
static void backend_weights(const aset *s, const td_wmodel *m, const float *mel, int compute,
                            int max_batch, double *max_abs, double *rel_l2, float **out_w)
{
    td_error err = {0};
    td_wconfig cfg = {.n_threads = 2, .max_seq = 2, .max_tokens = 0,
                      .max_batch_tokens = max_batch, .compute = compute, .max_windows = 2};
    td_wbackend *b = NULL;
    if (td_wbackend_cpu.open(m, &cfg, &b, &err) != TD_OK)
        fail_msg("open: %s", err.msg);
    assert_non_null(td_wbackend_cpu.align_weights);
    int win = 1;
    const float *mels[1] = {mel};
    if (td_wbackend_cpu.encode(b, 1, &win, mels, &err) != TD_OK)
        fail_msg("encode: %s", err.msg);
    int heads[2 * 32];
    size_t n_all;
    const td_align_heads *all = td_align_heads_all(&n_all), *h = NULL;
    for (size_t i = 0; i < n_all; i++)
        if (strcmp(all[i].name, json_string_value(json_object_get(s->meta, "heads_of"))) == 0)
            h = &all[i];
    assert_non_null(h);
    td_align_heads_flat(h, heads);
    size_t n = (size_t)s->H * s->T * s->C;
    float *w = malloc(n * sizeof *w);
    assert_non_null(w);
    if (td_wbackend_cpu.align_weights(b, 1, win, s->T, s->seq, h->n_heads, heads, w, &err) != TD_OK)
        fail_msg("align_weights: %s", err.msg);
    /* bad arguments are refused */
    int bad[2] = {m->hp.n_text_layer, 0};
    assert_int_equal(td_wbackend_cpu.align_weights(b, 1, win, s->T, s->seq, 1, bad, w, &err),
                     TD_EINVAL);
    assert_int_equal(td_wbackend_cpu.align_weights(b, 1, 0, s->T, s->seq, 1, heads, w, &err),
                     TD_EINVAL); /* window slot 0 holds no encoding */
    double num = 0, den = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)w[i] - (double)s->w[i];
        num += d * d;
        den += (double)s->w[i] * s->w[i];
        mx = fmax(mx, fabs(d));
    }
    *max_abs = mx;
    *rel_l2 = sqrt(num / den);
    td_wbackend_cpu.close(b);
    if (out_w)
        *out_w = w;
    else
        free(w);
}

/* Real speech: tiny.en (imported from the cache as F16, hashed against
 * the set) on jfk.wav. The backend's F32 weights give the reference's
 * words, each boundary within one frame (20 ms); int8's within five. */
static void test_cpu_align_real(void **state)
{
    (void)state;
    aset s;
    if (load_set("tiny.en-real", &s)) {
        printf("  skipped: tests/fixtures/whisper/tiny.en-real.align.json absent\n");
        skip();
    }
    char tmpl[] = "/tmp/td-align-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    char *path = pathf("%s/tiny.en.bin", tmpl);
    if (!golden_write_model(s.set, "tiny.en-real", path)) {
        printf("  skipped: no cached tiny.en weights (scripts/fetch-whisper-weights.sh "
               "tiny.en, or $TAPEDECK_WEIGHTS_CACHE)\n");
        rmdir(tmpl);
        free(path);
        free_set(&s);
        skip();
    }
    /* the alignment reference read the same model */
    assert_string_equal(gj_str(s.set, "model_sha256"), gj_str(s.meta, "model_sha256"));
    td_error err = {0};
    td_wmodel *m = NULL;
    if (td_wmodel_open(path, &m, &err) != TD_OK)
        fail_msg("td_wmodel_open: %s", err.msg);
    float *mel = read_mel(&s, m->hp.n_mels);
    segs ref;
    align_words(&s, s.w, &ref);
    const int computes[] = {TD_WCOMPUTE_F32, TD_WCOMPUTE_INT8};
    for (int c = 0; c < 2; c++) {
        double mx, rl;
        float *w = NULL;
        backend_weights(&s, m, mel, computes[c], 0, &mx, &rl, &w);
        segs got;
        align_words(&s, w, &got);
        double worst = 0;
        assert_int_equal(got.n, ref.n);
        for (size_t i = 0; i < ref.n; i++) {
            assert_int_equal(got.s[i].n_words, ref.s[i].n_words);
            for (size_t k = 0; k < ref.s[i].n_words; k++) {
                assert_string_equal(got.s[i].words[k].text, ref.s[i].words[k].text);
                worst = fmax(worst, fabs(got.s[i].words[k].start - ref.s[i].words[k].start));
                worst = fmax(worst, fabs(got.s[i].words[k].end - ref.s[i].words[k].end));
            }
        }
        printf("  %s: weights max abs %.3g, rel L2 %.3g; word times differ by at most %.2f s\n",
               c ? "int8" : "f32", mx, rl, worst);
        /* int8: q and the cross K come from int8 products (K kept as
         * halves); its weights are off by a few percent and words have
         * moved by two frames (40 ms): allowed five. */
        assert_true(worst <= (c ? 0.1 : 0.02) + 1e-9);
        segs_release(&got);
        free(w);
    }
    /* The one-call path (td_align_run) on a fresh F32 context gives the
     * same words and segment times as the reference's weights. */
    {
        td_wconfig cfg = {.n_threads = 2, .max_seq = 1, .compute = TD_WCOMPUTE_F32};
        td_wbackend *b = NULL;
        if (td_wbackend_cpu.open(m, &cfg, &b, &err) != TD_OK)
            fail_msg("open: %s", err.msg);
        int win = 0;
        const float *mels[1] = {mel};
        assert_int_equal(td_wbackend_cpu.encode(b, 1, &win, mels, &err), TD_OK);
        td_whparams hp = m->hp;
        td_align_run_in ri = {0};
        assert_int_equal(td_align_heads_find(&hp, "tiny.en", &ri.heads), TD_ALIGN_MATCH_EXACT);
        ri.language = -1;
        ri.language_code = "en";
        ri.n_frames = (int)json_integer_value(json_object_get(s.meta, "content_frames")) / 2;
        segs got;
        transcript_segments(&s, &got);
        double last = 0;
        if (td_align_run(&td_wbackend_cpu, b, m, &ri, got.s, got.n, &last, &err) != TD_OK)
            fail_msg("td_align_run: %s", err.msg);
        for (size_t i = 0; i < ref.n; i++) {
            assert_int_equal(got.s[i].n_words, ref.s[i].n_words);
            assert_true(fabs(got.s[i].start - ref.s[i].start) <= 0.02 + 1e-9);
            assert_true(fabs(got.s[i].end - ref.s[i].end) <= 0.02 + 1e-9);
            for (size_t k = 0; k < ref.s[i].n_words; k++) {
                assert_string_equal(got.s[i].words[k].text, ref.s[i].words[k].text);
                assert_true(fabs(got.s[i].words[k].start - ref.s[i].words[k].start) <= 0.02 + 1e-9);
                assert_true(fabs(got.s[i].words[k].end - ref.s[i].words[k].end) <= 0.02 + 1e-9);
            }
        }
        segs_release(&got);
        /* a backend without the entry says so */
        td_wbackend_ops none = td_wbackend_cpu;
        none.align_weights = NULL;
        transcript_segments(&s, &got);
        assert_int_equal(td_align_run(&none, b, m, &ri, got.s, got.n, &last, &err),
                         TD_EUNAVAILABLE);
        td_wbackend_cpu.close(b);
    }
    segs_release(&ref);
    free(mel);
    td_wmodel_close(m);
    unlink(path);
    rmdir(tmpl);
    free(path);
    free_set(&s);
}

static void test_cpu_align_weights(void **state)
{
    (void)state;
    aset s;
    if (load_set("tiny-f16", &s)) {
        printf("  skipped: tests/fixtures/whisper/tiny-f16.align.json absent\n");
        skip();
    }
    char *path = NULL;
    td_wmodel *m = tiny_f16_model(&s, &path);
    float *mel = read_mel(&s, m->hp.n_mels);
    double mx, rl;
    float *w = NULL;
    /* F32: the reference's float64 up to float32 arithmetic */
    backend_weights(&s, m, mel, TD_WCOMPUTE_F32, 0, &mx, &rl, &w);
    printf("  f32: max abs %.3g, rel L2 %.3g\n", mx, rl);
    assert_true(mx < 1e-4 && rl < 1e-4);
    /* the sequence in chunks of 5 tokens through the KV cache: the same */
    double mx5, rl5;
    float *w5 = NULL;
    backend_weights(&s, m, mel, TD_WCOMPUTE_F32, 5, &mx5, &rl5, &w5);
    for (size_t i = 0; i < (size_t)s.H * s.T * s.C; i++)
        assert_true(fabsf(w5[i] - w[i]) < 1e-6f);
    /* td_align_run on a backend without the entry: unavailable, so the
     * caller keeps character-count times */
    {
        td_wbackend_ops none = td_wbackend_cpu;
        none.align_weights = NULL;
        td_align_run_in ri = {0};
        td_whparams hp = m->hp;
        assert_int_equal(td_align_heads_find(&hp, NULL, &ri.heads), TD_ALIGN_MATCH_EXACT);
        double last = 0;
        td_error err;
        assert_int_equal(td_align_run(&none, NULL, m, &ri, NULL, 0, &last, &err),
                         TD_EUNAVAILABLE);
    }
    /* int8 products and half cross K/V: within their rounding */
    backend_weights(&s, m, mel, TD_WCOMPUTE_INT8, 0, &mx, &rl, NULL);
    printf("  int8: max abs %.3g, rel L2 %.3g\n", mx, rl);
    assert_true(rl < 5e-2);
    free(w);
    free(w5);
    free(mel);
    td_wmodel_close(m);
    unlink(path);
    char *slash = strrchr(path, '/');
    *slash = 0;
    rmdir(path);
    free(path);
    free_set(&s);
}

/* jfk.wav (../shared/whisper beside the repo, as test_whisper_golden
 * finds it; 16 kHz mono s16 PCM) as floats, or NULL when absent. */
static float *read_jfk(size_t *n)
{
    char *p = golden_shared_file(fix_dir, "jfk.wav");
    if (!p)
        return NULL;
    FILE *f = fopen(p, "rb");
    free(p);
    if (!f)
        return NULL;
    unsigned char h[12], c[8];
    assert_int_equal(fread(h, 1, 12, f), 12);
    assert_true(memcmp(h, "RIFF", 4) == 0 && memcmp(h + 8, "WAVE", 4) == 0);
    /* walk the chunks to "data" (fmt checked on the way) */
    for (;;) {
        assert_int_equal(fread(c, 1, 8, f), 8);
        uint32_t len = (uint32_t)c[4] | (uint32_t)c[5] << 8 | (uint32_t)c[6] << 16 |
                       (uint32_t)c[7] << 24;
        if (memcmp(c, "data", 4) == 0) {
            *n = len / 2;
            break;
        }
        unsigned char body[64];
        if (memcmp(c, "fmt ", 4) == 0) {
            assert_true(len >= 16 && len <= sizeof body);
            assert_int_equal(fread(body, 1, len, f), len);
            assert_true(body[0] == 1 && body[2] == 1 && body[4] == 0x80 && body[5] == 0x3e &&
                        body[14] == 16); /* PCM, mono, 16000 Hz, 16 bits */
        } else {
            assert_int_equal(fseek(f, (long)(len + (len & 1)), SEEK_CUR), 0);
        }
    }
    int16_t *pcm = malloc(*n * 2);
    float *x = malloc(*n * sizeof *x);
    assert_true(pcm && x);
    assert_int_equal(fread(pcm, 2, *n, f), *n);
    fclose(f);
    for (size_t i = 0; i < *n; i++)
        x[i] = pcm[i] / 32768.0f;
    free(pcm);
    return x;
}

/* Clean real speech must not trip the drop/repeat checks: the VAD's
 * regions of jfk.wav against tiny.en's aligned transcript of it. */
static void test_guard_real_clean(void **state)
{
    (void)state;
    aset s;
    if (load_set("tiny.en-real", &s)) {
        printf("  skipped: tests/fixtures/whisper/tiny.en-real.align.json absent\n");
        skip();
    }
    size_t n = 0;
    float *x = read_jfk(&n);
    if (!x) {
        printf("  skipped: ../shared/whisper/jfk.wav absent\n");
        free_set(&s);
        skip();
    }
    td_error err;
    td_vad *v = NULL;
    assert_int_equal(td_vad_new(&td_vad_whisper_defaults, &v, &err), TD_OK);
    assert_int_equal(td_vad_feed(v, x, n, 1), TD_OK);
    td_guard_span sp[32];
    size_t ns = 0;
    td_vad_utterance u;
    while (td_vad_next(v, &u)) {
        assert_true(ns < 32);
        sp[ns].start = (double)u.start / TD_VAD_RATE;
        sp[ns].end = (double)(u.start + u.n_samples) / TD_VAD_RATE;
        printf("  speech %.2f-%.2f\n", sp[ns].start, sp[ns].end);
        ns++;
    }
    td_vad_free(v);
    assert_true(ns >= 1);
    segs sg;
    align_words(&s, s.w, &sg);
    td_segment seg[16];
    char *text[16];
    for (size_t i = 0; i < sg.n; i++) {
        size_t len = 0;
        for (size_t k = 0; k < sg.s[i].n_words; k++)
            len += strlen(sg.s[i].words[k].text) + 1;
        text[i] = calloc(len + 1, 1);
        assert_non_null(text[i]);
        for (size_t k = 0; k < sg.s[i].n_words; k++) {
            if (k)
                strcat(text[i], " ");
            strcat(text[i], sg.s[i].words[k].text);
        }
        seg[i] = (td_segment){sg.s[i].start, sg.s[i].end, text[i], sg.s[i].words, sg.s[i].n_words};
    }
    td_guard_params p;
    td_guard_params_default(&p);
    td_guard_issue is[8];
    size_t found = td_guard_window(&p, sp, ns, 0, (double)n / TD_VAD_RATE, NULL, seg, sg.n, is, 8);
    for (size_t i = 0; i < found && i < 8; i++)
        printf("  issue %s %.2f-%.2f\n", td_guard_reason_name(is[i].reason), is[i].start,
               is[i].end);
    assert_int_equal(found, 0);
    /* and dropping the first segment (0-8 s) is seen: its speech is
     * uncovered (the second holds only 2.5 s, under the 3-s threshold) */
    found = td_guard_window(&p, sp, ns, 0, (double)n / TD_VAD_RATE, NULL, seg + 1, 1, is, 8);
    assert_int_equal(found, 1);
    assert_int_equal(is[0].reason, TD_GUARD_GAP);
    assert_true(is[0].start < 0.5 && is[0].end > 7.0);
    printf("  without the first segment: %s %.2f-%.2f (%.1f s of speech)\n",
           td_guard_reason_name(is[0].reason), is[0].start, is[0].end, is[0].measure);
    for (size_t i = 0; i < sg.n; i++)
        free(text[i]);
    segs_release(&sg);
    free(x);
    free_set(&s);
}

static int setup_all(void **state)
{
    (void)state;
    fix_dir = golden_fixtures_dir();
    if (!fix_dir) {
        fprintf(stderr, "test_align_golden: tests/fixtures/whisper not found (run from the repo "
                        "root or set TAPEDECK_FIXTURES)\n");
        return -1;
    }
    return 0;
}

static int teardown_all(void **state)
{
    (void)state;
    free(fix_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_f16),
        cmocka_unit_test(test_tiny_en_real),
        cmocka_unit_test(test_cpu_align_weights),
        cmocka_unit_test(test_cpu_align_real),
        cmocka_unit_test(test_guard_real_clean),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
