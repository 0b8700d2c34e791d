/*
 * test_vad.c: the energy voice-activity detector (src/asr/vad.c).
 *
 * Synthetic signals with known answers: silence, tone bursts at known
 * places (onset with its pre-roll, hangover, the pre-roll clipped by the
 * stream's start and by the previous utterance), a noise that starts and
 * stays (absorbed by the floor), both caps, the end of the stream, and
 * that the utterances do not depend on how the stream is cut into feeds.
 * Expected positions are worked out in the comments from vad.c's
 * constants: onset 5 frames, pre-roll 30, hangover 50, frames of 160.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "asr/vad.h"

#define RATE TD_VAD_RATE
#define FR TD_VAD_FRAME

/* ---- helpers ------------------------------------------------------------ */

typedef struct utt {
    uint64_t start;
    size_t n;
    td_vad_end reason;
    float *s; /* a copy: the detector's pointer lives until the next feed */
} utt;

typedef struct utts {
    utt *u;
    size_t n, cap;
} utts;

static void utts_release(utts *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->u[i].s);
    free(l->u);
    memset(l, 0, sizeof *l);
}

static void drain(td_vad *v, utts *l)
{
    td_vad_utterance u;
    while (td_vad_next(v, &u)) {
        if (l->n == l->cap) {
            l->cap = l->cap ? 2 * l->cap : 16;
            l->u = realloc(l->u, l->cap * sizeof *l->u);
            assert_non_null(l->u);
        }
        utt *d = &l->u[l->n++];
        d->start = u.start;
        d->n = u.n_samples;
        d->reason = u.reason;
        d->s = malloc(u.n_samples * sizeof *d->s + 1);
        assert_non_null(d->s);
        memcpy(d->s, u.samples, u.n_samples * sizeof *d->s);
    }
}

/* Feed s[0..n) in chunks of `chunk` samples (0: all at once), draining
 * after each, then end the stream. */
static void run_chunks(td_vad *v, const float *s, size_t n, size_t chunk, utts *out)
{
    memset(out, 0, sizeof *out);
    if (!chunk)
        chunk = n ? n : 1;
    for (size_t i = 0; i < n; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        assert_int_equal(td_vad_feed(v, s + i, k, 0), TD_OK);
        drain(v, out);
    }
    assert_int_equal(td_vad_feed(v, NULL, 0, 1), TD_OK);
    drain(v, out);
}

/* The same with a fresh detector with these caps. */
static void run_params(const td_vad_params *p, const float *s, size_t n, size_t chunk, utts *out)
{
    td_vad *v = NULL;
    td_error err = {0};
    assert_int_equal(td_vad_new(p, &v, &err), TD_OK);
    run_chunks(v, s, n, chunk, out);
    td_vad_free(v);
}

static uint32_t lcg(uint32_t *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return *seed;
}

/* Uniform noise in [-amp, amp). */
static void add_noise(float *s, size_t n, float amp, uint32_t *seed)
{
    for (size_t i = 0; i < n; i++)
        s[i] += amp * ((float)(lcg(seed) >> 8) / 16777216.0f * 2.0f - 1.0f);
}

static void add_tone(float *s, size_t from, size_t to, float amp, double hz)
{
    for (size_t i = from; i < to; i++)
        s[i] += amp * (float)sin(2 * M_PI * hz * (double)i / RATE);
}

static float *signal(size_t n)
{
    float *s = calloc(n, sizeof *s);
    assert_non_null(s);
    return s;
}

/* The utterance holds exactly the input's samples at its place. */
static void check_samples(const utt *u, const float *s, size_t n)
{
    assert_true(u->start + u->n <= n);
    assert_memory_equal(u->s, s + u->start, u->n * sizeof *s);
}

/* ---- tests -------------------------------------------------------------- */

static void test_params(void **state)
{
    td_vad *v = NULL;
    td_error err = {0};
    td_vad_params p = {.soft_samples = 0, .max_samples = TD_VAD_MIN_SAMPLES - 1};
    assert_int_equal(td_vad_new(&p, &v, &err), TD_EINVAL);
    assert_null(v);
    assert_non_null(strstr(err.msg, "voice activity detector"));
    p.max_samples = TD_VAD_MAX_SAMPLES + FR;
    assert_int_equal(td_vad_new(&p, &v, &err), TD_EINVAL);
    p = (td_vad_params){.soft_samples = 10 * RATE + 1, .max_samples = 10 * RATE};
    assert_int_equal(td_vad_new(&p, &v, &err), TD_EINVAL);
    assert_null(v);

    /* The smallest cap, soft 0, and the defaults are accepted. */
    p = (td_vad_params){.soft_samples = 0, .max_samples = TD_VAD_MIN_SAMPLES};
    assert_int_equal(td_vad_new(&p, &v, &err), TD_OK);
    td_vad_free(v);
    assert_int_equal(td_vad_new(NULL, &v, &err), TD_OK);
    td_vad_free(v);
    td_vad_free(NULL);

    assert_int_equal(td_vad_sphinx_defaults.soft_samples, 20 * RATE);
    assert_int_equal(td_vad_sphinx_defaults.max_samples, 30 * RATE);
    assert_int_equal(td_vad_whisper_defaults.soft_samples, 25 * RATE);
    assert_int_equal(td_vad_whisper_defaults.max_samples, 30 * RATE);
}

static void test_silence(void **state)
{
    size_t n = 10 * RATE;
    float *s = signal(n);
    utts l;
    run_params(NULL, s, n, 8000, &l); /* digital silence */
    assert_int_equal(l.n, 0);
    utts_release(&l);

    uint32_t seed = 1;
    add_noise(s, n, 1e-3f, &seed); /* a quiet room, -65 dBFS */
    run_params(NULL, s, n, 8000, &l);
    assert_int_equal(l.n, 0);
    utts_release(&l);

    /* Samples that are not numbers count as silence. */
    for (size_t i = 0; i < n; i += 7)
        s[i] = NAN;
    run_params(NULL, s, n, 8000, &l);
    assert_int_equal(l.n, 0);
    utts_release(&l);

    /* No samples at all. */
    run_params(NULL, s, 0, 0, &l);
    assert_int_equal(l.n, 0);
    utts_release(&l);
    free(s);
}

/* Two tone bursts in near silence, on frame boundaries:
 *   A: 1.0-2.0 s (frames 100..199). The fifth speech frame (104) is the
 *      onset; the utterance starts 30 frames before the run, at frame 70
 *      (0.7 s), and ends after 50 non-speech frames, with frame 249 (its
 *      end is 2.5 s).
 *   B: 2.6-3.0 s (frames 260..299). Its onset (frame 264) would reach back
 *      to frame 230, inside A: the pre-roll stops at A's end (2.5 s).
 *      It ends at frame 349: 3.5 s. */
static void test_bursts(void **state)
{
    size_t n = 5 * RATE;
    float *s = signal(n);
    uint32_t seed = 2;
    add_noise(s, n, 1e-4f, &seed);
    add_tone(s, 1 * RATE, 2 * RATE, 0.3f, 440);
    add_tone(s, 26 * RATE / 10, 3 * RATE, 0.3f, 1000);
    s[RATE + 1234] = NAN; /* a bad sample inside a burst changes nothing */

    utts l;
    run_params(NULL, s, n, 8000, &l);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.u[0].start, 7 * RATE / 10);
    assert_int_equal(l.u[0].n, 18 * RATE / 10);
    assert_int_equal(l.u[0].reason, TD_VAD_END_SILENCE);
    assert_int_equal(l.u[1].start, 25 * RATE / 10);
    assert_int_equal(l.u[1].n, RATE);
    assert_int_equal(l.u[1].reason, TD_VAD_END_SILENCE);
    /* The samples as fed, the NaN included. */
    assert_true(isnan(l.u[0].s[RATE + 1234 - l.u[0].start]));
    s[RATE + 1234] = 0;
    l.u[0].s[RATE + 1234 - l.u[0].start] = 0;
    check_samples(&l.u[0], s, n);
    check_samples(&l.u[1], s, n);
    utts_release(&l);
    free(s);
}

/* A burst at 0.1 s: the pre-roll is clipped at the stream's start. */
static void test_preroll_at_start(void **state)
{
    size_t n = 2 * RATE;
    float *s = signal(n);
    add_tone(s, RATE / 10, RATE / 2, 0.3f, 440);
    utts l;
    run_params(NULL, s, n, 0, &l);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.u[0].start, 0);
    /* Tone frames 10..49, then 50 quiet frames: ends with frame 99. */
    assert_int_equal(l.u[0].n, RATE);
    check_samples(&l.u[0], s, n);
    utts_release(&l);

    /* Four speech frames are not an onset; five are. */
    memset(s, 0, n * sizeof *s);
    add_tone(s, RATE / 2, RATE / 2 + 4 * FR, 0.3f, 440);
    run_params(NULL, s, n, 0, &l);
    assert_int_equal(l.n, 0);
    utts_release(&l);
    add_tone(s, RATE / 2 + 4 * FR, RATE / 2 + 5 * FR, 0.3f, 440);
    run_params(NULL, s, n, 0, &l);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.u[0].start, RATE / 2 - 30 * FR);
    assert_int_equal(l.u[0].n, (30 + 5 + 50) * FR);
    utts_release(&l);
    free(s);
}

/* A pause of 49 frames keeps one utterance; 50 frames end it. */
static void test_hangover(void **state)
{
    size_t n = 4 * RATE;
    float *s = signal(n);
    utts l;

    add_tone(s, RATE, RATE + 50 * FR, 0.3f, 440);
    add_tone(s, RATE + 99 * FR, RATE + 150 * FR, 0.3f, 440); /* 49 quiet frames */
    run_params(NULL, s, n, 0, &l);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.u[0].start, RATE - 30 * FR);
    assert_int_equal(l.u[0].n, (30 + 150 + 50) * FR);
    utts_release(&l);

    memset(s, 0, n * sizeof *s);
    add_tone(s, RATE, RATE + 50 * FR, 0.3f, 440);
    add_tone(s, RATE + 100 * FR, RATE + 150 * FR, 0.3f, 440); /* 50 quiet frames */
    run_params(NULL, s, n, 0, &l);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.u[0].start, RATE - 30 * FR);
    assert_int_equal(l.u[0].n, (30 + 50 + 50) * FR);
    /* The second starts where the first ended: the pre-roll ring was
     * emptied then, so its onset reaches back no further. */
    assert_int_equal(l.u[1].start, RATE + 100 * FR);
    assert_int_equal(l.u[1].n, (50 + 50) * FR);
    check_samples(&l.u[1], s, n);
    utts_release(&l);
    free(s);
}

/* Silence, then a noise at -35 dBFS that starts at 2 s and stays (a fan):
 * it opens an utterance, but the floor absorbs it within seconds (a 70 dB
 * step needs about 400 * ln(70 / 12) frames: 7 s), and a voice 20 dB
 * above the noise at 15 s is found on its own. */
static void test_noise_floor(void **state)
{
    size_t n = 25 * RATE;
    float *s = signal(n);
    uint32_t seed = 3;
    add_noise(s + 2 * RATE, n - 2 * RATE, 0.03f, &seed);
    add_tone(s, 15 * RATE, 16 * RATE, 0.25f, 300);
    /* Samples that are not numbers, in the silence, must not poison the
     * floor (they count as 0, infinities as full scale). */
    s[RATE / 2] = NAN;
    s[RATE / 2 + 3 * FR] = INFINITY;
    s[RATE / 2 + 6 * FR] = -INFINITY;
    utts l;
    run_params(NULL, s, n, 8000, &l);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.u[0].start, 2 * RATE - 30 * FR);
    assert_int_equal(l.u[0].reason, TD_VAD_END_SILENCE);
    uint64_t end0 = l.u[0].start + l.u[0].n;
    print_message("  noise absorbed: utterance 2.0 s .. %.2f s\n", (double)end0 / RATE);
    assert_true(end0 > 6 * RATE && end0 < 11 * RATE);
    assert_int_equal(l.u[1].start, 15 * RATE - 30 * FR);
    assert_int_equal(l.u[1].n, (30 + 100 + 50) * FR);
    check_samples(&l.u[1], s, n);
    utts_release(&l);
    free(s);
}

/* The soft cap: 0.3 s of tone, 0.1 s of silence, over and over (frames
 * f % 40 < 30 are tone). With a 5 s soft cap the first utterance (from 0)
 * holds 500 frames at frame 499 and ends at the next quiet frame, 510;
 * the next starts right there. */
static void test_soft_cap(void **state)
{
    size_t n = 12 * RATE;
    float *s = signal(n);
    for (size_t f = 0; f < n / FR; f++)
        if (f % 40 < 30)
            add_tone(s, f * FR, (f + 1) * FR, 0.3f, 500);
    td_vad_params p = {.soft_samples = 5 * RATE, .max_samples = 8 * RATE};
    utts l;
    run_params(&p, s, n, 1000, &l);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.u[0].start, 0);
    assert_int_equal(l.u[0].n, 511 * FR);
    assert_int_equal(l.u[0].reason, TD_VAD_END_SOFT);
    /* Frames 511..519 quiet, onset at 524: starts at 511, holds at least
     * 500 frames at 1010, quiet from 1030: ends after 1030. */
    assert_int_equal(l.u[1].start, 511 * FR);
    assert_int_equal(l.u[1].n, (1031 - 511) * FR);
    assert_int_equal(l.u[1].reason, TD_VAD_END_SOFT);
    /* The rest (frames 1031..1199) ends with the stream, in a pause. */
    assert_int_equal(l.u[2].start, 1031 * FR);
    assert_int_equal(l.u[2].start + l.u[2].n, n);
    assert_int_equal(l.u[2].reason, TD_VAD_END_STREAM);
    for (size_t i = 0; i < l.n; i++)
        check_samples(&l.u[i], s, n);
    utts_release(&l);
    free(s);
}

/* The hard cap: 1 s of silence (the floor sinks to -100 dB), then 7 s of
 * loud tone (frames 100..799; the floor does not catch up with it: the
 * 96 dB step is still 96 * e^(-700/400) = 17 dB at the end), caps of 3 s:
 * two utterances of exactly 3 s (frames 70..369, the pre-roll included,
 * and 370..669), then the rest with its hangover (670..849). */
static void test_max_cap(void **state)
{
    size_t n = 10 * RATE;
    float *s = signal(n);
    add_tone(s, RATE, 8 * RATE, 0.9f, 700);
    td_vad_params p = {.soft_samples = 3 * RATE, .max_samples = 3 * RATE + 100};
    utts l;
    run_params(&p, s, n, 333, &l);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.u[0].start, 70 * FR);
    assert_int_equal(l.u[0].n, 3 * RATE); /* the cap, rounded down to frames */
    assert_int_equal(l.u[0].reason, TD_VAD_END_MAX);
    assert_int_equal(l.u[1].start, 370 * FR);
    assert_int_equal(l.u[1].n, 3 * RATE);
    assert_int_equal(l.u[1].reason, TD_VAD_END_MAX);
    assert_int_equal(l.u[2].start, 670 * FR);
    assert_int_equal(l.u[2].n, 180 * FR);
    assert_int_equal(l.u[2].reason, TD_VAD_END_SILENCE);
    for (size_t i = 0; i < l.n; i++)
        check_samples(&l.u[i], s, n);
    utts_release(&l);
    free(s);
}

/* The stream ends inside an utterance: it ends with the last partial
 * frame, and the next feed starts a new stream at index 0. */
static void test_stream_end(void **state)
{
    size_t n = 3 * RATE + 77;
    float *s = signal(n);
    add_tone(s, RATE, n, 0.3f, 440);
    td_vad *v = NULL;
    td_error err = {0};
    assert_int_equal(td_vad_new(NULL, &v, &err), TD_OK);
    for (int round = 0; round < 2; round++) {
        utts l;
        run_chunks(v, s, n, 4096, &l);
        assert_int_equal(l.n, 1);
        assert_int_equal(l.u[0].start, RATE - 30 * FR);
        assert_int_equal(l.u[0].n, n - (RATE - 30 * FR));
        assert_int_equal(l.u[0].reason, TD_VAD_END_STREAM);
        check_samples(&l.u[0], s, n);
        utts_release(&l);
    }
    td_vad_free(v);
    free(s);
}

/* Utterances not taken survive later feeds, in order; reset drops them
 * and the open one. */
static void test_undrained_and_reset(void **state)
{
    size_t n = 6 * RATE;
    float *s = signal(n);
    add_tone(s, RATE, 2 * RATE, 0.3f, 440);
    add_tone(s, 3 * RATE, 4 * RATE, 0.3f, 440);
    add_tone(s, 5 * RATE, 6 * RATE, 0.3f, 440);
    td_vad *v = NULL;
    td_error err = {0};
    assert_int_equal(td_vad_new(NULL, &v, &err), TD_OK);
    /* In three feeds, taking nothing in between. */
    assert_int_equal(td_vad_feed(v, s, 2 * RATE + 5000, 0), TD_OK);
    assert_int_equal(td_vad_feed(v, s + 2 * RATE + 5000, 2 * RATE, 0), TD_OK);
    assert_int_equal(td_vad_feed(v, s + 4 * RATE + 5000, n - (4 * RATE + 5000), 1), TD_OK);
    utts l = {0};
    drain(v, &l);
    assert_int_equal(l.n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(l.u[i].start, (1 + 2 * i) * RATE - 30 * FR);
        check_samples(&l.u[i], s, n);
    }
    assert_int_equal(l.u[2].reason, TD_VAD_END_STREAM);
    utts_release(&l);

    /* Take one, feed again (the one taken is dropped, the others kept). */
    assert_int_equal(td_vad_feed(v, s, 4 * RATE + 5000, 0), TD_OK);
    td_vad_utterance u;
    assert_true(td_vad_next(v, &u));
    assert_int_equal(u.start, RATE - 30 * FR);
    assert_int_equal(td_vad_feed(v, s + 4 * RATE + 5000, n - (4 * RATE + 5000), 1), TD_OK);
    drain(v, &l);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.u[0].start, 3 * RATE - 30 * FR);
    check_samples(&l.u[0], s, n);
    check_samples(&l.u[1], s, n);
    utts_release(&l);

    /* Two completed, one taken: the other moves to the front of the
     * store with the open one. */
    assert_int_equal(td_vad_feed(v, s, 4 * RATE + 12000, 0), TD_OK);
    assert_true(td_vad_next(v, &u));
    assert_int_equal(u.start, RATE - 30 * FR);
    assert_int_equal(td_vad_feed(v, s + 4 * RATE + 12000, n - (4 * RATE + 12000), 1), TD_OK);
    drain(v, &l);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.u[0].start, 3 * RATE - 30 * FR);
    assert_int_equal(l.u[1].start, 5 * RATE - 30 * FR);
    check_samples(&l.u[0], s, n);
    check_samples(&l.u[1], s, n);
    utts_release(&l);

    /* Reset in the middle of an utterance, with one not taken. */
    assert_int_equal(td_vad_feed(v, s, 3 * RATE + 8000, 0), TD_OK);
    td_vad_reset(v);
    assert_false(td_vad_next(v, &u));
    float *quiet = signal(n);
    assert_int_equal(td_vad_feed(v, quiet, n, 1), TD_OK);
    assert_false(td_vad_next(v, &u));
    /* And it starts counting from 0 again. */
    run_chunks(v, s, n, 0, &l);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.u[0].start, RATE - 30 * FR);
    utts_release(&l);
    free(quiet);
    td_vad_free(v);
    free(s);
}

/* A busy 40 s (bursts, pauses of every length, a noise that comes and
 * goes, a long stretch that meets the caps), fed whole, in single
 * samples, and in odd and random chunks: the same utterances. */
static void test_chunking_invariance(void **state)
{
    size_t n = 40 * RATE;
    float *s = signal(n);
    uint32_t seed = 4;
    add_noise(s, n, 3e-4f, &seed);
    add_noise(s + 20 * RATE, 8 * RATE, 0.02f, &seed);
    for (size_t k = 0; k < 60; k++) {
        size_t at = (size_t)(lcg(&seed) % (n - RATE));
        size_t len = 200 + lcg(&seed) % (RATE / 2);
        add_tone(s, at, at + len, 0.05f + 0.3f * (float)(k % 5) / 5, 200 + 37.0 * k);
    }
    for (size_t f = 0; f < 14 * RATE / FR; f++)  /* 1-15 s: caps */
        if (f % 40 < 30)
            add_tone(s, RATE + f * FR, RATE + (f + 1) * FR, 0.3f, 500);
    td_vad_params p = {.soft_samples = 5 * RATE, .max_samples = 6 * RATE};

    utts ref;
    run_params(&p, s, n, 0, &ref);
    print_message("  %zu utterances in 40 s\n", ref.n);
    assert_true(ref.n >= 6);
    int reasons[4] = {0};
    for (size_t i = 0; i < ref.n; i++) {
        check_samples(&ref.u[i], s, n);
        reasons[ref.u[i].reason]++;
        if (i)
            assert_true(ref.u[i].start >= ref.u[i - 1].start + ref.u[i - 1].n);
    }
    assert_true(reasons[TD_VAD_END_SILENCE] > 0 && reasons[TD_VAD_END_SOFT] > 0);

    size_t chunks[] = {1, 159, 160, 161, 8000, 65536};
    for (size_t c = 0; c <= sizeof chunks / sizeof chunks[0]; c++) {
        utts l;
        if (c < sizeof chunks / sizeof chunks[0]) {
            run_params(&p, s, n, chunks[c], &l);
        } else {
            /* random chunk sizes, 0 included */
            td_vad *v = NULL;
            td_error err = {0};
            assert_int_equal(td_vad_new(&p, &v, &err), TD_OK);
            memset(&l, 0, sizeof l);
            for (size_t i = 0; i < n;) {
                size_t k = lcg(&seed) % 3000;
                if (k > n - i)
                    k = n - i;
                assert_int_equal(td_vad_feed(v, s + i, k, 0), TD_OK);
                if (lcg(&seed) % 2)
                    drain(v, &l);
                i += k;
            }
            assert_int_equal(td_vad_feed(v, NULL, 0, 1), TD_OK);
            drain(v, &l);
            td_vad_free(v);
        }
        assert_int_equal(l.n, ref.n);
        for (size_t i = 0; i < ref.n; i++) {
            assert_int_equal(l.u[i].start, ref.u[i].start);
            assert_int_equal(l.u[i].n, ref.u[i].n);
            assert_int_equal(l.u[i].reason, ref.u[i].reason);
            assert_memory_equal(l.u[i].s, ref.u[i].s, ref.u[i].n * sizeof *s);
        }
        utts_release(&l);
    }
    utts_release(&ref);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_silence),
        cmocka_unit_test(test_bursts),
        cmocka_unit_test(test_preroll_at_start),
        cmocka_unit_test(test_hangover),
        cmocka_unit_test(test_noise_floor),
        cmocka_unit_test(test_soft_cap),
        cmocka_unit_test(test_max_cap),
        cmocka_unit_test(test_stream_end),
        cmocka_unit_test(test_undrained_and_reset),
        cmocka_unit_test(test_chunking_invariance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
