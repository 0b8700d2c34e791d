/*
 * test_mel.c: Whisper's log-mel front end (src/whisper/mel.c).
 *
 * Against a plain double-precision DFT written here (reflect padding,
 * periodic Hann, |X|^2, filterbank, log10), on noise, tones and the
 * reflected edges; exact power levels of bin-centred tones; a pure tone in
 * the right mel bin of a synthetic filterbank and of Whisper's own (from
 * ../shared/whisper, skipped when absent); silence; frame counts; the
 * normalisation; thread counts giving identical bytes; jfk.wav's
 * statistics (skipped when absent).
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
#include <time.h>

#include "testutil.h"
#include "whisper/mel.h"

#define SHARED "../shared/whisper"
#define RATE TD_WMEL_RATE
#define NFFT TD_WMEL_NFFT
#define HOP TD_WMEL_HOP
#define BINS TD_WMEL_BINS

/* ---- helpers ------------------------------------------------------------ */

static uint32_t lcg(uint32_t *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return *seed;
}

static float *noise(size_t n, float amp, uint32_t seed)
{
    float *s = malloc(n * sizeof *s + 1);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        s[i] = amp * ((float)(lcg(&seed) >> 8) / 16777216.0f * 2.0f - 1.0f);
    return s;
}

static void add_tone(float *s, size_t n, float amp, double hz)
{
    for (size_t i = 0; i < n; i++)
        s[i] += amp * (float)sin(2 * M_PI * hz * (double)i / RATE);
}

static float *alloc_out(size_t n, int n_mels)
{
    size_t count = td_wmel_frames(n) * (size_t)n_mels;
    float *o = malloc(count * sizeof *o + 1);
    assert_non_null(o);
    return o;
}

/* A triangular filterbank on a linear scale: filter m rises from bin
 * 4m to 4m + 4 and falls to 4m + 8, peak 1 (n_mels = 48 covers the bins). */
#define TRI_MELS 48
static float *tri_filters(void)
{
    float *f = calloc((size_t)TRI_MELS * BINS, sizeof *f);
    assert_non_null(f);
    for (int m = 0; m < TRI_MELS; m++)
        for (int k = 4 * m; k <= 4 * m + 8 && k < BINS; k++)
            f[m * BINS + k] = 1.0f - (float)abs(k - (4 * m + 4)) / 4.0f;
    return f;
}

/* One filter per bin: the log-mel is then the log power spectrum. */
static float *identity_filters(void)
{
    float *f = calloc((size_t)BINS * BINS, sizeof *f);
    assert_non_null(f);
    for (int k = 0; k < BINS; k++)
        f[k * BINS + k] = 1.0f;
    return f;
}

/* Whisper's 80 x 201 filterbank from a model header: magic, 11 int32
 * hparams, n_mel, n_fft, then the floats. NULL when the file is absent. */
static float *whisper_filters(void)
{
    FILE *fp = fopen(SHARED "/tiny.header.bin", "rb");
    if (!fp)
        return NULL;
    int32_t head[14];
    assert_int_equal(fread(head, sizeof head[0], 14, fp), 14);
    assert_int_equal((uint32_t)head[0], 0x67676d6cu);
    assert_int_equal(head[12], 80);
    assert_int_equal(head[13], BINS);
    float *f = malloc((size_t)80 * BINS * sizeof *f);
    assert_non_null(f);
    assert_int_equal(fread(f, sizeof *f, (size_t)80 * BINS, fp), (size_t)80 * BINS);
    fclose(fp);
    return f;
}

/* The reference: frame f of the centred, reflect-padded signal, windowed
 * with the periodic Hann, DFT summed directly in double. */
static void ref_frame(const float *s, size_t n, size_t f, const float *filters, int n_mels,
                      double *out)
{
    static double c[NFFT], sn[NFFT];
    static int init;
    if (!init) {
        for (int j = 0; j < NFFT; j++) {
            c[j] = cos(2 * M_PI * j / NFFT);
            sn[j] = sin(2 * M_PI * j / NFFT);
        }
        init = 1;
    }
    double x[NFFT], power[BINS];
    for (int j = 0; j < NFFT; j++) {
        long i = (long)(f * HOP) + j - NFFT / 2;
        long r = i < 0 ? -i : i >= (long)n ? 2 * ((long)n - 1) - i : i;
        assert_true(r >= 0 && r < (long)n);
        x[j] = (0.5 - 0.5 * c[j]) * s[r];
    }
    for (int k = 0; k < BINS; k++) {
        double re = 0, im = 0;
        for (int j = 0; j < NFFT; j++) {
            int a = (int)(((long)k * j) % NFFT);
            re += x[j] * c[a];
            im -= x[j] * sn[a];
        }
        power[k] = re * re + im * im;
    }
    for (int m = 0; m < n_mels; m++) {
        double sum = 0;
        for (int k = 0; k < BINS; k++)
            sum += (double)filters[m * BINS + k] * power[k];
        out[m] = log10(sum > 1e-10 ? sum : 1e-10);
    }
}

/* Largest |ours - ref| / max(1, |ref|) over the given frames. */
static double max_rel_error(const float *s, size_t n, const float *filters, int n_mels,
                            const float *out, const size_t *fs, size_t nfs)
{
    size_t nf = td_wmel_frames(n);
    double *ref = malloc((size_t)n_mels * sizeof *ref);
    assert_non_null(ref);
    double worst = 0;
    for (size_t i = 0; i < nfs; i++) {
        assert_true(fs[i] < nf);
        ref_frame(s, n, fs[i], filters, n_mels, ref);
        for (int m = 0; m < n_mels; m++) {
            double a = out[(size_t)m * nf + fs[i]], b = ref[m];
            double e = fabs(a - b) / (fabs(b) > 1 ? fabs(b) : 1);
            if (e > worst)
                worst = e;
        }
    }
    free(ref);
    return worst;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- tests -------------------------------------------------------------- */

static void test_frames_and_errors(void **state)
{
    assert_int_equal(td_wmel_frames(0), 0);
    assert_int_equal(td_wmel_frames(159), 0);
    assert_int_equal(td_wmel_frames(201), 1);
    assert_int_equal(td_wmel_frames(319), 1);
    assert_int_equal(td_wmel_frames(320), 2);
    assert_int_equal(td_wmel_frames(TD_WMEL_WINDOW_SAMPLES), TD_WMEL_WINDOW_FRAMES);
    assert_int_equal(td_wmel_frames(TD_WMEL_WINDOW_SAMPLES + 159), TD_WMEL_WINDOW_FRAMES);

    float *tri = tri_filters();
    float *s = noise(5000, 0.1f, 1);
    float out[8 * TRI_MELS];
    td_error err = {0};
    assert_int_equal(td_wmel_log(s, 200, tri, TRI_MELS, out, 1, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "200 samples"));
    assert_int_equal(td_wmel_log(s, 0, tri, TRI_MELS, out, 1, &err), TD_EINVAL);
    assert_int_equal(td_wmel_log(NULL, 1000, tri, TRI_MELS, out, 1, &err), TD_EINVAL);
    assert_int_equal(td_wmel_log(s, 1000, NULL, TRI_MELS, out, 1, &err), TD_EINVAL);
    assert_int_equal(td_wmel_log(s, 1000, tri, 0, out, 1, &err), TD_EINVAL);
    assert_int_equal(td_wmel_log(s, 1000, tri, 100000, out, 1, &err), TD_EINVAL);

    /* The shortest input that can be reflected, and a few odd lengths:
     * each frame agrees with the reference (the last one reflects the
     * end), and nothing is written past n / 160 frames. */
    size_t lens[] = {201, 202, 320, 359, 1000, 4321};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t n = lens[i], nf = td_wmel_frames(n);
        float *o = calloc(nf * TRI_MELS + 16, sizeof *o);
        assert_non_null(o);
        for (size_t k = 0; k < 16; k++)
            o[nf * TRI_MELS + k] = 12345.0f;
        assert_int_equal(td_wmel_log(s, n, tri, TRI_MELS, o, 1, &err), TD_OK);
        for (size_t k = 0; k < 16; k++)
            assert_true(o[nf * TRI_MELS + k] == 12345.0f);
        size_t fs[32];
        size_t nfs = 0;
        for (size_t f = 0; f < nf && nfs < 32; f++)
            fs[nfs++] = f;
        assert_true(max_rel_error(s, n, tri, TRI_MELS, o, fs, nfs) < 1e-6);
        free(o);
    }
    free(s);
    free(tri);
}

/* Noise plus tones over 10 s: every frame at both ends (where the
 * signal is reflected) and a spread of frames in the middle, against the
 * direct DFT. */
static void test_against_dft(void **state)
{
    size_t n = 10 * RATE + 37, nf = td_wmel_frames(n);
    float *s = noise(n, 0.2f, 2);
    add_tone(s, n, 0.3f, 440);
    add_tone(s, n, 0.05f, 3517.3);
    add_tone(s, n, 0.01f, 7900);
    float *filters[2] = {tri_filters(), whisper_filters()};
    int mels[2] = {TRI_MELS, 80};
    size_t fs[64], nfs = 0;
    for (size_t f = 0; f < 4; f++)
        fs[nfs++] = f;
    for (size_t f = nf - 4; f < nf; f++)
        fs[nfs++] = f;
    for (size_t f = 7; f < nf && nfs < 64; f += 19)
        fs[nfs++] = f;
    for (int b = 0; b < 2; b++) {
        if (!filters[b])
            continue;
        float *o = alloc_out(n, mels[b]);
        td_error err = {0};
        assert_int_equal(td_wmel_log(s, n, filters[b], mels[b], o, 1, &err), TD_OK);
        double e = max_rel_error(s, n, filters[b], mels[b], o, fs, nfs);
        print_message("  %s filterbank: max relative error %.2e over %zu frames\n",
                      b ? "whisper's" : "triangular", e, nfs);
        /* float's rounding of the output is 6e-8 of it; the rest would be
         * the transform's */
        assert_true(e < 2e-7);
        free(o);
        free(filters[b]);
    }
    if (!filters[1])
        print_message("  (whisper's filterbank skipped: %s absent)\n", SHARED);
    free(s);
}

/* A tone of amplitude A exactly on bin k: with the periodic Hann, |X[k]| =
 * A N / 4 and |X[k +- 1]| = A N / 8, every other bin 0. */
static void test_bin_power(void **state)
{
    size_t n = 2 * RATE, nf = td_wmel_frames(n);
    float *id = identity_filters();
    float *o = alloc_out(n, BINS);
    const int ks[] = {10, 25, 77, 150};
    for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
        int k = ks[t];
        float *s = calloc(n, sizeof *s);
        assert_non_null(s);
        add_tone(s, n, 0.5f, k * (double)RATE / NFFT);
        td_error err = {0};
        assert_int_equal(td_wmel_log(s, n, id, BINS, o, 1, &err), TD_OK);
        size_t f = nf / 2;
        double peak = log10(pow(0.5 * NFFT / 4, 2)), side = log10(pow(0.5 * NFFT / 8, 2));
        assert_float_equal(o[(size_t)k * nf + f], peak, 1e-5);
        assert_float_equal(o[(size_t)(k - 1) * nf + f], side, 1e-5);
        assert_float_equal(o[(size_t)(k + 1) * nf + f], side, 1e-5);
        /* Elsewhere: float rounding of the input only (< 1e-6 of the peak). */
        for (int b = 0; b < BINS; b++)
            if (abs(b - k) > 1)
                assert_true(o[(size_t)b * nf + f] < peak - 6);
        free(s);
    }
    free(o);
    free(id);
}

/* Index of the largest value of column f. */
static int argmax_mel(const float *o, size_t nf, int n_mels, size_t f)
{
    int best = 0;
    for (int m = 1; m < n_mels; m++)
        if (o[(size_t)m * nf + f] > o[(size_t)best * nf + f])
            best = m;
    return best;
}

/* The bin that filter m weighs the most. */
static int peak_bin(const float *filters, int m)
{
    int best = 0;
    for (int k = 1; k < BINS; k++)
        if (filters[m * BINS + k] > filters[m * BINS + best])
            best = k;
    return best;
}

/* A tone on the bin where filter `mels[t]` peaks lands in that filter,
 * and only leakage reaches filters further away. */
static void tone_lands(const float *filters, int n_mels, const int *mels, size_t nt)
{
    size_t n = RATE, nf = td_wmel_frames(n);
    float *o = alloc_out(n, n_mels);
    for (size_t t = 0; t < nt; t++) {
        int want = mels[t], k = peak_bin(filters, want);
        double hz = k * (double)RATE / NFFT;
        float *s = calloc(n, sizeof *s);
        assert_non_null(s);
        add_tone(s, n, 0.5f, hz);
        td_error err = {0};
        assert_int_equal(td_wmel_log(s, n, filters, n_mels, o, 2, &err), TD_OK);
        for (size_t f = 10; f < nf - 10; f += 7)
            assert_int_equal(argmax_mel(o, nf, n_mels, f), want);
        /* Filters far from the tone see only leakage, 10^3 below. */
        size_t f = nf / 2;
        for (int m = 0; m < n_mels; m++)
            if (abs(m - want) > 3)
                assert_true(o[(size_t)m * nf + f] < o[(size_t)want * nf + f] - 3);
        print_message("  %.0f Hz -> mel bin %d (%.2f)\n", hz, want,
                      o[(size_t)want * nf + f]);
        free(s);
    }
    free(o);
}

static void test_tone_synthetic(void **state)
{
    float *tri = tri_filters();
    const int mels[] = {1, 6, 18, 43};
    tone_lands(tri, TRI_MELS, mels, sizeof mels / sizeof mels[0]);
    free(tri);
}

static void test_tone_whisper_filters(void **state)
{
    float *wf = whisper_filters();
    if (!wf) {
        print_message("skip: %s absent (Whisper reference data)\n", SHARED);
        skip();
    }
    const int mels[] = {5, 20, 40, 70};
    tone_lands(wf, 80, mels, sizeof mels / sizeof mels[0]);
    free(wf);
}

static void test_silence(void **state)
{
    size_t n = 3 * RATE + 5, nf = td_wmel_frames(n);
    float *s = calloc(n, sizeof *s);
    assert_non_null(s);
    float *tri = tri_filters();
    float *o = alloc_out(n, TRI_MELS);
    td_error err = {0};
    assert_int_equal(td_wmel_log(s, n, tri, TRI_MELS, o, 2, &err), TD_OK);
    for (size_t i = 0; i < nf * TRI_MELS; i++)
        assert_true(o[i] == -10.0f);
    td_wmel_normalize(o, nf * TRI_MELS);
    for (size_t i = 0; i < nf * TRI_MELS; i++)
        assert_true(o[i] == -1.5f);
    free(o);
    free(tri);
    free(s);
}

static void test_normalize(void **state)
{
    float v[] = {2.0f, -7.0f, -5.9f, -10.0f, 1.0f, -6.0f};
    td_wmel_normalize(v, 6);
    /* max 2: everything below -6 becomes -6, then (x + 4) / 4 */
    const float want[] = {1.5f, -0.5f, (-5.9f + 4.0f) / 4.0f, -0.5f, 1.25f, -0.5f};
    for (int i = 0; i < 6; i++)
        assert_true(v[i] == want[i]);
    float one = -3.0f;
    td_wmel_normalize(&one, 1);
    assert_true(one == 0.25f);
    td_wmel_normalize(NULL, 0);
}

/* Any thread count gives the same bytes. */
static void test_threads(void **state)
{
    size_t n = 20 * RATE + 99;
    size_t count = td_wmel_frames(n) * TRI_MELS;
    float *s = noise(n, 0.1f, 5);
    add_tone(s, n, 0.2f, 1234.5);
    float *tri = tri_filters();
    float *one = alloc_out(n, TRI_MELS), *many = alloc_out(n, TRI_MELS);
    td_error err = {0};
    assert_int_equal(td_wmel_log(s, n, tri, TRI_MELS, one, 1, &err), TD_OK);
    const int counts[] = {0, 2, 3, 7, 64, 1000};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        memset(many, 0xff, count * sizeof *many);
        assert_int_equal(td_wmel_log(s, n, tri, TRI_MELS, many, counts[i], &err), TD_OK);
        assert_memory_equal(one, many, count * sizeof *one);
    }
    free(one);
    free(many);
    free(tri);
    free(s);
}

/* A 30-s window on one thread, for the record (the bound is loose: the
 * sanitizer build and a busy machine must pass too). */
static void test_speed(void **state)
{
    size_t n = TD_WMEL_WINDOW_SAMPLES;
    float *s = noise(n, 0.1f, 6);
    float *tri = tri_filters();
    float *o = alloc_out(n, TRI_MELS);
    td_error err = {0};
    double best = 1e9;
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();
        assert_int_equal(td_wmel_log(s, n, tri, TRI_MELS, o, 1, &err), TD_OK);
        double t = now_s() - t0;
        if (t < best)
            best = t;
    }
    print_message("  30-s window (3000 frames), 1 thread: %.2f ms\n", best * 1e3);
    assert_true(best < 0.5);
    free(o);
    free(tri);
    free(s);
}

/* ---- jfk.wav ------------------------------------------------------------- */

static void test_jfk(void **state)
{
    float *s = NULL;
    size_t n = read_wav_16k(SHARED "/jfk.wav", &s);
    float *wf = whisper_filters();
    if (!n || !wf) {
        free(s);
        free(wf);
        print_message("skip: %s absent (Whisper reference data)\n", SHARED);
        skip();
    }
    size_t nf = td_wmel_frames(n), count = nf * 80;
    float *o = alloc_out(n, 80);
    td_error err = {0};
    assert_int_equal(td_wmel_log(s, n, wf, 80, o, 2, &err), TD_OK);
    float lo = INFINITY, hi = -INFINITY;
    double sum = 0;
    for (size_t i = 0; i < count; i++) {
        lo = o[i] < lo ? o[i] : lo;
        hi = o[i] > hi ? o[i] : hi;
        sum += o[i];
    }
    /* Loudness per frame: the mean over the mel bins. The quietest and
     * loudest tenths of the frames must differ by a lot (speech and its
     * pauses), and the loud ones sit in the speech band. */
    double *fe = malloc(nf * sizeof *fe);
    assert_non_null(fe);
    for (size_t f = 0; f < nf; f++) {
        double e = 0;
        for (int m = 0; m < 80; m++)
            e += o[(size_t)m * nf + f];
        fe[f] = e / 80;
    }
    size_t loud = 0;
    for (size_t f = 0; f < nf; f++)
        if (fe[f] > fe[loud])
            loud = f;
    int peak_mel = argmax_mel(o, nf, 80, loud);
    td_wmel_normalize(o, count);
    float nlo = INFINITY, nhi = -INFINITY;
    double nsum = 0;
    for (size_t i = 0; i < count; i++) {
        nlo = o[i] < nlo ? o[i] : nlo;
        nhi = o[i] > nhi ? o[i] : nhi;
        nsum += o[i];
    }
    print_message("  jfk.wav: %zu samples, %zu frames; log10 mel min %.3f max %.3f mean %.3f\n",
                  n, nf, lo, hi, sum / count);
    print_message("  normalised: min %.4f max %.4f mean %.4f; loudest frame %zu (%.2f s), "
                  "its peak mel bin %d\n", nlo, nhi, nsum / count, loud, loud / 100.0, peak_mel);
    assert_int_equal(nf, n / 160);
    assert_true(hi > -1 && hi < 4);            /* 16-bit speech at a normal level */
    assert_true(lo >= -10);
    assert_true(nhi == (hi + 4) / 4);
    assert_true(fabsf(nlo - (nhi - 2.0f)) < 1e-6 || nlo > nhi - 2.0f);
    assert_true(nsum / count > nlo && nsum / count < nhi);
    assert_true(peak_mel >= 5 && peak_mel <= 60);  /* 100 Hz .. 3.5 kHz */
    free(fe);
    free(o);
    free(wf);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames_and_errors),
        cmocka_unit_test(test_against_dft),
        cmocka_unit_test(test_bin_power),
        cmocka_unit_test(test_tone_synthetic),
        cmocka_unit_test(test_tone_whisper_filters),
        cmocka_unit_test(test_silence),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_speed),
        cmocka_unit_test(test_jfk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
