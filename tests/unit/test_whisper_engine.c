/*
 * test_whisper_engine.c: the "whisper" speech engine (src/asr/whisper.c)
 * through its ops table, on tiny random-weight models generated at test
 * time (td_wmk_write) and synthetic audio served from memory:
 *   - silence never reaches the model: empty transcript, no error, and
 *     no language when it is to be detected;
 *   - two tone bursts far apart in a minute of silence: every segment and
 *     word time maps back into a burst (the joined speech's clock mapped
 *     through its spans), never into the silence between, and times do
 *     not go backwards; the detected language is reported;
 *   - progress: called while reading and inside the decode (the heartbeat
 *     proxy), seconds non-decreasing and ending at the duration; a nonzero
 *     return stops with TD_EABORT and a message, both while reading and
 *     inside the decode; the engine is reusable after a stop;
 *   - model_name, probe's refusals (a missing model naming what was looked
 *     for, an English-only model asked for German or to translate, a
 *     language Whisper does not have), memory_need against the file size;
 *   - where batched decoding cuts the speech into chunks
 *     (td_whisper_chunk_starts).
 * Random weights transcribe gibberish: only structure and times are
 * checked.
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
#include <sys/stat.h>

#include "asr/engine.h"
#include "testutil.h"
#include "whisper/mkmodel.h"

#define RATE 16000
#define DURATION 60.0
#define BURST_LEN 2.0
#define SLACK 0.6 /* the VAD keeps 0.3 s before an onset and 0.5 s after */

static const double bursts[] = {5.0, 40.0};
#define N_BURSTS (sizeof bursts / sizeof bursts[0])

static char *dir;
static char *multi_path; /* ggml-tiny.bin: multilingual */
static char *en_path;    /* ggml-tiny.en.bin: English-only */

/* ---- fixtures ------------------------------------------------------- */

static char *make_model(const char *name, int32_t n_vocab, uint64_t seed)
{
    td_wmk_spec spec;
    memset(&spec, 0, sizeof spec);
    td_error err = {0};
    assert_int_equal(td_wmk_dims("tiny", &spec.hp, &err), TD_OK);
    spec.hp.n_vocab = n_vocab;
    spec.hp.n_audio_state = spec.hp.n_text_state = 64;
    spec.hp.n_audio_head = spec.hp.n_text_head = 2;
    spec.hp.n_audio_layer = spec.hp.n_text_layer = 2;
    spec.hp.n_audio_ctx = 1500;
    spec.hp.n_text_ctx = 96; /* 48 tokens a window: random weights never stop early */
    spec.wtype = TD_WT_F16;
    spec.seed = seed;
    char *path = pathf("%s/ggml-%s.bin", dir, name);
    if (td_wmk_write(&spec, path, &err) != TD_OK)
        fail_msg("td_wmk_write %s: %s", path, err.msg);
    return path;
}

static int group_setup(void **state)
{
    (void)state;
    dir = make_tmpdir_named("test_whisper_engine");
    /* hermetic: only the test's folder is searched */
    setenv("TAPEDECK_MODELS_DIR", dir, 1);
    multi_path = make_model("tiny", 51865, 11);
    en_path = make_model("tiny.en", 51864, 12);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    rm_tree(dir);
    free(dir);
    free(multi_path);
    free(en_path);
    return 0;
}

static td_engine_config config(const char *model, const char *language)
{
    td_engine_config c;
    memset(&c, 0, sizeof c);
    c.model = model;
    c.language = language;
    c.device = "cpu";
    c.beam_size = 1;
    c.threads = 2;
    return c;
}

/* ---- audio served from memory ---------------------------------------- */

typedef struct mem_source {
    float *pcm;
    size_t n, pos;
} mem_source;

static long mem_read(void *ctx, float *out, size_t max, td_error *err)
{
    (void)err;
    mem_source *m = ctx;
    size_t k = m->n - m->pos < max ? m->n - m->pos : max;
    memcpy(out, m->pcm + m->pos, k * sizeof *out);
    m->pos += k;
    return (long)k;
}

/* DURATION seconds: silence, or with a 300 Hz + 1200 Hz burst (0.3 peak)
 * of BURST_LEN seconds at each of bursts[]. */
static mem_source make_audio(int with_bursts)
{
    mem_source m = {.n = (size_t)(DURATION * RATE)};
    m.pcm = calloc(m.n, sizeof *m.pcm);
    assert_non_null(m.pcm);
    for (size_t b = 0; with_bursts && b < N_BURSTS; b++) {
        size_t at = (size_t)(bursts[b] * RATE), len = (size_t)(BURST_LEN * RATE);
        for (size_t i = 0; i < len; i++) {
            double t = (double)i / RATE;
            m.pcm[at + i] = (float)(0.15 * sin(2 * M_PI * 300 * t) + 0.15 * sin(2 * M_PI * 1200 * t));
        }
    }
    return m;
}

static td_pcm_source source_of(mem_source *m)
{
    m->pos = 0;
    return (td_pcm_source){.read = mem_read, .ctx = m, .duration = (double)m->n / RATE};
}

static int in_burst(double t)
{
    for (size_t b = 0; b < N_BURSTS; b++)
        if (t >= bursts[b] - SLACK && t <= bursts[b] + BURST_LEN + SLACK)
            return 1;
    return 0;
}

/* ---- progress --------------------------------------------------------- */

typedef struct prog {
    int calls;
    int stop_at;          /* call number that returns nonzero; 0: never */
    double last;
    int backwards;        /* seconds went down at some call */
} prog;

static int on_progress(void *user, double seconds)
{
    prog *p = user;
    p->calls++;
    if (p->calls > 1 && seconds < p->last)
        p->backwards = 1;
    p->last = seconds;
    return p->stop_at > 0 && p->calls >= p->stop_at;
}

/* ---- tests ------------------------------------------------------------ */

static td_engine *open_engine(const char *model, const char *language)
{
    td_engine_config c = config(model, language);
    td_engine *e = NULL;
    td_error err = {0};
    if (td_engine_whisper.open(&c, &e, &err) != TD_OK)
        fail_msg("open: %s", err.msg);
    return e;
}

static void test_silence(void **state)
{
    (void)state;
    td_engine *e = open_engine(multi_path, "auto");
    mem_source m = make_audio(0);
    td_pcm_source src = source_of(&m);
    td_transcript t;
    td_transcript_init(&t);
    td_error err = {0};
    prog p = {0};
    assert_int_equal(td_engine_whisper.transcribe(e, &src, &t, on_progress, &p, &err), TD_OK);
    assert_int_equal(t.n_segs, 0);
    assert_string_equal(t.language, ""); /* nothing heard: nothing detected */
    assert_true(p.calls > 0);
    assert_false(p.backwards);
    assert_true(fabs(p.last - DURATION) < 0.6);
    td_transcript_release(&t);
    free(m.pcm);
    td_engine_whisper.close(e);
}

static void check_times(const td_transcript *t)
{
    double prev = 0;
    for (size_t i = 0; i < t->n_segs; i++) {
        const td_segment *s = &t->segs[i];
        if (!in_burst(s->start) || !in_burst(s->end))
            fail_msg("segment %zu [%.3f, %.3f] '%s' outside the bursts", i, s->start, s->end,
                     s->text);
        /* strictly: a zero-length one is text decoded from the padding
         * after the speech, clamped to its end */
        if (s->end <= s->start || s->start < prev - 1e-9)
            fail_msg("segment %zu [%.3f, %.3f] goes backwards (previous at %.3f)", i, s->start,
                     s->end, prev);
        prev = s->start;
        double wprev = s->start;
        for (size_t w = 0; w < s->n_words; w++) {
            const td_word *wd = &s->words[w];
            if (!in_burst(wd->start) || !in_burst(wd->end))
                fail_msg("segment %zu word %zu [%.3f, %.3f] outside the bursts", i, w, wd->start,
                         wd->end);
            if (wd->end < wd->start || wd->start < wprev - 1e-9 || wd->end > s->end + 1e-9)
                fail_msg("segment %zu [%.3f, %.3f] word %zu [%.3f, %.3f] out of order", i,
                         s->start, s->end, w, wd->start, wd->end);
            wprev = wd->end;
        }
    }
}

static void test_bursts(void **state)
{
    (void)state;
    td_engine *e = open_engine(multi_path, "auto");
    assert_string_equal(td_engine_whisper.model_name(e), "tiny");
    mem_source m = make_audio(1);
    td_error err = {0};
    for (int round = 0; round < 2; round++) { /* the same instance, scene after scene */
        td_pcm_source src = source_of(&m);
        td_transcript t;
        td_transcript_init(&t);
        prog p = {0};
        int rc = td_engine_whisper.transcribe(e, &src, &t, on_progress, &p, &err);
        if (rc != TD_OK)
            fail_msg("transcribe: %s", err.msg);
        print_message("round %d: %zu segment(s), language '%s', %d progress calls\n", round,
                      t.n_segs, t.language, p.calls);
        for (size_t i = 0; i < t.n_segs; i++)
            print_message("  [%.2f, %.2f] %zu word(s), first [%.2f, %.2f]\n", t.segs[i].start,
                          t.segs[i].end, t.segs[i].n_words,
                          t.segs[i].n_words ? t.segs[i].words[0].start : -1,
                          t.segs[i].n_words ? t.segs[i].words[0].end : -1);
        check_times(&t);
        assert_true(t.language[0] != '\0'); /* detected on the speech */
        /* the reading (one call per half second) and the decode both report */
        assert_true(p.calls > (int)(DURATION * 2));
        assert_false(p.backwards);
        assert_true(fabs(p.last - DURATION) < 0.6);
        td_transcript_release(&t);
    }
    free(m.pcm);
    td_engine_whisper.close(e);
}

/* A stop while reading, then one inside the decode (after every read's
 * call), then a full run on the same instance. */
static void test_abort(void **state)
{
    (void)state;
    td_engine *e = open_engine(multi_path, "en");
    mem_source m = make_audio(1);
    int read_calls = (int)(DURATION * 2); /* one per half-second read */
    const int stops[] = {3, read_calls + 2};
    for (size_t i = 0; i < sizeof stops / sizeof stops[0]; i++) {
        td_pcm_source src = source_of(&m);
        td_transcript t;
        td_transcript_init(&t);
        td_error err = {0};
        prog p = {.stop_at = stops[i]};
        assert_int_equal(td_engine_whisper.transcribe(e, &src, &t, on_progress, &p, &err),
                         TD_EABORT);
        assert_int_equal(p.calls, stops[i]); /* stopped at once */
        assert_true(strlen(err.msg) > 0);
        td_transcript_release(&t);
    }
    td_pcm_source src = source_of(&m);
    td_transcript t;
    td_transcript_init(&t);
    td_error err = {0};
    prog p = {0};
    assert_int_equal(td_engine_whisper.transcribe(e, &src, &t, on_progress, &p, &err), TD_OK);
    assert_true(p.calls > read_calls + 2); /* the decode did beat: the stop above was in it */
    check_times(&t);
    assert_string_equal(t.language, "en");
    td_transcript_release(&t);
    free(m.pcm);
    td_engine_whisper.close(e);
}

static void expect_probe(const td_engine_config *c, int want, const char *needle)
{
    td_error err = {0};
    int rc = td_engine_whisper.probe(c, &err);
    if (rc != want)
        fail_msg("probe %s/%s: %d (%s), want %d", c->model ? c->model : "-",
                 c->language ? c->language : "-", rc, err.msg, want);
    if (needle && !strstr(err.msg, needle))
        fail_msg("probe message '%s' lacks '%s'", err.msg, needle);
}

static void test_probe(void **state)
{
    (void)state;
    td_engine_config c = config(multi_path, "de");
    expect_probe(&c, TD_OK, NULL);
    c.model = "tiny"; /* by name, from the search path */
    expect_probe(&c, TD_OK, NULL);
    c.model = "ggml-tiny.bin"; /* the file's name is a name too */
    expect_probe(&c, TD_OK, NULL);

    c = config("nosuch", NULL);
    expect_probe(&c, TD_EUNAVAILABLE, "ggml-nosuch.bin");
    expect_probe(&c, TD_EUNAVAILABLE, dir);
    char *missing = pathf("%s/ggml-gone.bin", dir);
    c.model = missing;
    expect_probe(&c, TD_EUNAVAILABLE, missing);
    free(missing);

    c = config(en_path, "de");
    expect_probe(&c, TD_EINVAL, "English-only");
    expect_probe(&c, TD_EINVAL, en_path); /* names the file */
    c.language = "en";
    expect_probe(&c, TD_OK, NULL);
    c.translate = 1;
    expect_probe(&c, TD_EINVAL, "translate");
    c.language = NULL; /* nothing to translate from, whatever the language */
    expect_probe(&c, TD_EINVAL, "translate");

    c = config(multi_path, "xx");
    expect_probe(&c, TD_EINVAL, "'xx'");
    c.language = "de";
    c.translate = 1;
    expect_probe(&c, TD_OK, NULL);

    td_engine *e = NULL;
    td_error err = {0};
    c = config(en_path, "de");
    assert_int_equal(td_engine_whisper.open(&c, &e, &err), TD_EINVAL);
    assert_null(e);
    e = open_engine(en_path, NULL);
    assert_string_equal(td_engine_whisper.model_name(e), "tiny.en");
    td_engine_whisper.close(e);
}

static void test_memory_need(void **state)
{
    (void)state;
    struct stat st;
    assert_int_equal(stat(multi_path, &st), 0);
    td_engine_config c = config(multi_path, NULL);
    int64_t need = td_engine_whisper.memory_need(&c);
    assert_true(need > 0);
    assert_true(need >= (int64_t)st.st_size);
    /* beams cost KV caches */
    c.beam_size = 8;
    assert_true(td_engine_whisper.memory_need(&c) > need);
    c = config("nosuch", NULL);
    assert_true(td_engine_whisper.memory_need(&c) < 0);
}

/* Batched chunks: cut only at utterance starts, ascending, about one per
 * 90 s of speech but at least 4 where the speech needs 4 windows, never
 * more than the batch, as even as the cuts allow. */
static void test_chunk_starts(void **state)
{
    (void)state;
    size_t cuts[200], b[64];
    size_t n_cuts = 0;
    for (size_t t = 0; t < 490 * RATE; t += (size_t)(6.5 * RATE))
        cuts[n_cuts++] = t; /* an utterance every 6.5 s */
    size_t total = 490 * RATE;
    size_t n = td_whisper_chunk_starts(cuts, n_cuts, total, 16, b, 64);
    assert_int_equal(n, 6); /* ceil(490 / 90) */
    assert_int_equal(b[0], 0);
    for (size_t i = 1; i < n; i++) {
        assert_true(b[i] > b[i - 1]);
        int at_cut = 0;
        for (size_t c = 0; c < n_cuts; c++)
            at_cut |= cuts[c] == b[i];
        assert_true(at_cut);
        /* within half an utterance of the even split */
        double want = (double)total * (double)i / 6.0;
        assert_true(fabs((double)b[i] - want) <= 3.25 * RATE + 1);
    }
    /* the batch caps it */
    assert_int_equal(td_whisper_chunk_starts(cuts, n_cuts, total, 4, b, 64), 4);
    assert_int_equal(td_whisper_chunk_starts(cuts, n_cuts, total, 1, b, 64), 1);
    /* a minute of speech: two chunks, not one (it needs two windows) */
    n = td_whisper_chunk_starts(cuts, n_cuts, 55 * RATE, 16, b, 64);
    assert_int_equal(n, 2);
    assert_true(b[1] > 20 * RATE && b[1] < 35 * RATE);
    /* 150 s: four (the parallel floor), not two */
    assert_int_equal(td_whisper_chunk_starts(cuts, n_cuts, 150 * RATE, 16, b, 64), 4);
    /* 20 s: one */
    assert_int_equal(td_whisper_chunk_starts(cuts, n_cuts, 20 * RATE, 16, b, 64), 1);
    /* no utterance start inside: one chunk, however long */
    size_t zero = 0;
    assert_int_equal(td_whisper_chunk_starts(&zero, 1, total, 16, b, 64), 1);
    assert_int_equal(td_whisper_chunk_starts(NULL, 0, total, 16, b, 64), 1);
    assert_int_equal(b[0], 0);
    /* few cuts: as many chunks as there are places to cut */
    size_t two[3] = {0, 100 * RATE, 300 * RATE};
    n = td_whisper_chunk_starts(two, 3, total, 16, b, 64);
    assert_int_equal(n, 3);
    assert_int_equal(b[1], 100 * RATE);
    assert_int_equal(b[2], 300 * RATE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probe),      cmocka_unit_test(test_memory_need),
        cmocka_unit_test(test_silence),    cmocka_unit_test(test_bursts),
        cmocka_unit_test(test_abort),      cmocka_unit_test(test_chunk_starts),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
