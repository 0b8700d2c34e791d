/*
 * mel.c: Whisper's log-mel front end (see mel.h), matching openai-whisper's
 * log_mel_spectrogram and transformers' WhisperFeatureExtractor.
 *
 * Both references compute torch.stft(audio, 400, 160, hann_window(400),
 * center=True, pad_mode="reflect") (transformers' numpy path: the same
 * frames, np.pad "reflect", a float64 rfft), take |X|^2, drop the last
 * frame, multiply by the filterbank and take log10(max(mel, 1e-10)). We do
 * every step in double and round once, at the end: the result is closer to
 * the exact value than either reference, which differ from each other by
 * about 1e-6 relative.
 *
 * Per frame (f = 0 .. n/160 - 1, centred on sample 160 f):
 *   x[j] = w[j] * pcm[reflect(160 f - 200 + j)]       j < 400, w periodic Hann
 *   X    = rfft400(x)                                   201 bins
 *   mel  = filters (n_mels, 201) @ |X|^2 (201,)         only the nonzero span of each row
 *   out[m][f] = log10(max(mel[m], 1e-10))
 *
 * The 400-point real FFT is a 200-point complex FFT of the even/odd
 * samples packed as z[m] = x[2m] + i x[2m+1], followed by the usual split
 * (X[k] = E[k] + W400^k O[k]). The complex FFT is a Stockham autosort
 * (no bit reversal, natural order out) with radices 4, 2, 5, 5 and
 * precomputed twiddles. The filterbank rows are triangles a few bins wide,
 * so the sparse product costs ~2 multiply-adds per bin instead of n_mels.
 *
 * Threads split the frames into contiguous ranges; every frame is computed
 * the same way whatever the split, so the result does not depend on the
 * thread count.
 */
#include "whisper/mel.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NFFT TD_WMEL_NFFT                 /* 400 */
#define HALF (NFFT / 2)                   /* 200: the complex FFT's length */
#define BINS TD_WMEL_BINS                 /* 201 */
#define HOP TD_WMEL_HOP                   /* 160 */
#define PAD (NFFT / 2)                    /* reflected samples at each end */
#define MEL_FLOOR 1e-10
#define MAX_MELS 1024                     /* 80 or 128 in practice */
#define MAX_THREADS 64
#define MIN_FRAMES_PER_THREAD 64          /* below this a thread costs more than it saves */

/* The complex FFT's stages: radix p after L points are combined. */
#define N_STAGES 4
static const int radix[N_STAGES] = {4, 2, 5, 5};
#define TWIDDLES 199                      /* sum over stages of L * (p - 1): 3 + 4 + 32 + 160 */

_Static_assert(4 * 2 * 5 * 5 == HALF, "the radices multiply to the FFT length");

/* Everything that depends only on the transform and the filterbank, shared
 * read-only by the threads. */
typedef struct plan {
    double window[NFFT];                  /* periodic Hann: 0.5 - 0.5 cos(2 pi j / 400) */
    double tw_re[TWIDDLES], tw_im[TWIDDLES]; /* per stage, [s][t-1] = W_{L p}^{t s} */
    double split_re[HALF + 1], split_im[HALF + 1]; /* W400^k = exp(-2 pi i k / 400) */
    /* The filterbank, nonzero spans only: row m covers bins
     * [lo[m], lo[m] + len[m]) with weights w[off[m] ...]. */
    int n_mels;
    int *lo, *len;
    size_t *off;
    double *w;
} plan;

/* ---- the plan ---------------------------------------------------------- */

static void plan_transform(plan *p)
{
    for (int j = 0; j < NFFT; j++)
        p->window[j] = 0.5 - 0.5 * cos(2.0 * M_PI * j / NFFT);
    int at = 0, L = 1;
    for (int st = 0; st < N_STAGES; st++) {
        int r = radix[st];
        for (int s = 0; s < L; s++)
            for (int t = 1; t < r; t++) {
                /* Reduce t * s modulo L * r before the division, so the
                 * angle is exact to the last bit. */
                double a = -2.0 * M_PI * (double)((t * s) % (L * r)) / (L * r);
                p->tw_re[at] = cos(a);
                p->tw_im[at] = sin(a);
                at++;
            }
        L *= r;
    }
    for (int k = 0; k <= HALF; k++) {
        double a = -2.0 * M_PI * k / NFFT;
        p->split_re[k] = cos(a);
        p->split_im[k] = sin(a);
    }
}

static void plan_release(plan *p)
{
    free(p->lo);
    free(p->len);
    free(p->off);
    free(p->w);
}

static int plan_filters(plan *p, const float *filters, int n_mels)
{
    p->n_mels = n_mels;
    p->lo = malloc((size_t)n_mels * sizeof *p->lo);
    p->len = malloc((size_t)n_mels * sizeof *p->len);
    p->off = malloc((size_t)n_mels * sizeof *p->off);
    if (!p->lo || !p->len || !p->off)
        return TD_ENOMEM;
    size_t total = 0;
    for (int m = 0; m < n_mels; m++) {
        const float *row = filters + (size_t)m * BINS;
        int lo = 0, hi = BINS;
        while (lo < BINS && row[lo] == 0.0f)
            lo++;
        while (hi > lo && row[hi - 1] == 0.0f)
            hi--;
        p->lo[m] = lo;
        p->len[m] = hi - lo;
        p->off[m] = total;
        total += (size_t)(hi - lo);
    }
    p->w = malloc((total ? total : 1) * sizeof *p->w);
    if (!p->w)
        return TD_ENOMEM;
    for (int m = 0; m < n_mels; m++) {
        const float *row = filters + (size_t)m * BINS + p->lo[m];
        for (int k = 0; k < p->len[m]; k++)
            p->w[p->off[m] + (size_t)k] = row[k];
    }
    return TD_OK;
}

/* ---- the complex FFT --------------------------------------------------- */

/* One Stockham stage of radix R after L points: for each of the r' = n /
 * (L R) residues k and each s < L, the R sub-transforms y[s r + k + r' t]
 * (r = r' R) are twiddled by W_{L R}^{t s} and combined into
 * out[(s + L u) r' + k], u < R. */
static void stage2(const double *restrict xr, const double *restrict xi, double *restrict yr,
                   double *restrict yi, int L, const double *tr, const double *ti)
{
    const int rq = HALF / (L * 2), r = rq * 2;
    for (int s = 0; s < L; s++) {
        const double w1r = tr[s], w1i = ti[s];
        const double *ar = xr + s * r, *ai = xi + s * r;
        double *or0 = yr + s * rq, *oi0 = yi + s * rq;
        double *or1 = yr + (s + L) * rq, *oi1 = yi + (s + L) * rq;
        for (int k = 0; k < rq; k++) {
            double a0r = ar[k], a0i = ai[k];
            double br = ar[k + rq], bi = ai[k + rq];
            double a1r = br * w1r - bi * w1i, a1i = br * w1i + bi * w1r;
            or0[k] = a0r + a1r;
            oi0[k] = a0i + a1i;
            or1[k] = a0r - a1r;
            oi1[k] = a0i - a1i;
        }
    }
}

static void stage4(const double *restrict xr, const double *restrict xi, double *restrict yr,
                   double *restrict yi, int L, const double *tr, const double *ti)
{
    const int rq = HALF / (L * 4), r = rq * 4;
    for (int s = 0; s < L; s++) {
        const double w1r = tr[3 * s], w1i = ti[3 * s];
        const double w2r = tr[3 * s + 1], w2i = ti[3 * s + 1];
        const double w3r = tr[3 * s + 2], w3i = ti[3 * s + 2];
        const double *ar = xr + s * r, *ai = xi + s * r;
        for (int k = 0; k < rq; k++) {
            double a0r = ar[k], a0i = ai[k];
            double br = ar[k + rq], bi = ai[k + rq];
            double a1r = br * w1r - bi * w1i, a1i = br * w1i + bi * w1r;
            br = ar[k + 2 * rq], bi = ai[k + 2 * rq];
            double a2r = br * w2r - bi * w2i, a2i = br * w2i + bi * w2r;
            br = ar[k + 3 * rq], bi = ai[k + 3 * rq];
            double a3r = br * w3r - bi * w3i, a3i = br * w3i + bi * w3r;
            /* W4 = -i: y1 = (a0 - a2) - i (a1 - a3), y3 = (a0 - a2) + i (a1 - a3) */
            double s02r = a0r + a2r, s02i = a0i + a2i, d02r = a0r - a2r, d02i = a0i - a2i;
            double s13r = a1r + a3r, s13i = a1i + a3i, d13r = a1r - a3r, d13i = a1i - a3i;
            yr[(s + 0 * L) * rq + k] = s02r + s13r;
            yi[(s + 0 * L) * rq + k] = s02i + s13i;
            yr[(s + 1 * L) * rq + k] = d02r + d13i;
            yi[(s + 1 * L) * rq + k] = d02i - d13r;
            yr[(s + 2 * L) * rq + k] = s02r - s13r;
            yi[(s + 2 * L) * rq + k] = s02i - s13i;
            yr[(s + 3 * L) * rq + k] = d02r - d13i;
            yi[(s + 3 * L) * rq + k] = d02i + d13r;
        }
    }
}

static void stage5(const double *restrict xr, const double *restrict xi, double *restrict yr,
                   double *restrict yi, int L, const double *tr, const double *ti)
{
    /* cos and sin of 2 pi / 5 and 4 pi / 5 */
    const double c1 = 0.30901699437494742410, c2 = -0.80901699437494742410;
    const double s1 = 0.95105651629515357212, s2 = 0.58778525229247312917;
    const int rq = HALF / (L * 5), r = rq * 5;
    for (int s = 0; s < L; s++) {
        const double *wr = tr + 4 * s, *wi = ti + 4 * s;
        const double *ar = xr + s * r, *ai = xi + s * r;
        for (int k = 0; k < rq; k++) {
            double a0r = ar[k], a0i = ai[k];
            double a_r[4], a_i[4];
            for (int t = 0; t < 4; t++) {
                double br = ar[k + (t + 1) * rq], bi = ai[k + (t + 1) * rq];
                a_r[t] = br * wr[t] - bi * wi[t];
                a_i[t] = br * wi[t] + bi * wr[t];
            }
            /* t1 = a1 + a4, t2 = a2 + a3, t3 = a1 - a4, t4 = a2 - a3 */
            double t1r = a_r[0] + a_r[3], t1i = a_i[0] + a_i[3];
            double t2r = a_r[1] + a_r[2], t2i = a_i[1] + a_i[2];
            double t3r = a_r[0] - a_r[3], t3i = a_i[0] - a_i[3];
            double t4r = a_r[1] - a_r[2], t4i = a_i[1] - a_i[2];
            double b1r = a0r + c1 * t1r + c2 * t2r, b1i = a0i + c1 * t1i + c2 * t2i;
            double b2r = a0r + c2 * t1r + c1 * t2r, b2i = a0i + c2 * t1i + c1 * t2i;
            double d1r = s1 * t3r + s2 * t4r, d1i = s1 * t3i + s2 * t4i;
            double d2r = s2 * t3r - s1 * t4r, d2i = s2 * t3i - s1 * t4i;
            /* y1 = b1 - i d1, y4 = b1 + i d1, y2 = b2 - i d2, y3 = b2 + i d2 */
            yr[(s + 0 * L) * rq + k] = a0r + t1r + t2r;
            yi[(s + 0 * L) * rq + k] = a0i + t1i + t2i;
            yr[(s + 1 * L) * rq + k] = b1r + d1i;
            yi[(s + 1 * L) * rq + k] = b1i - d1r;
            yr[(s + 4 * L) * rq + k] = b1r - d1i;
            yi[(s + 4 * L) * rq + k] = b1i + d1r;
            yr[(s + 2 * L) * rq + k] = b2r + d2i;
            yi[(s + 2 * L) * rq + k] = b2i - d2r;
            yr[(s + 3 * L) * rq + k] = b2r - d2i;
            yi[(s + 3 * L) * rq + k] = b2i + d2r;
        }
    }
}

/* The 200-point DFT of (re, im), in place; tmp_* are scratch. */
static void fft200(const plan *p, double *re, double *im, double *tmp_re, double *tmp_im)
{
    double *xr = re, *xi = im, *yr = tmp_re, *yi = tmp_im;
    int at = 0, L = 1;
    for (int st = 0; st < N_STAGES; st++) {
        int r = radix[st];
        const double *tr = p->tw_re + at, *ti = p->tw_im + at;
        if (r == 4)
            stage4(xr, xi, yr, yi, L, tr, ti);
        else if (r == 2)
            stage2(xr, xi, yr, yi, L, tr, ti);
        else
            stage5(xr, xi, yr, yi, L, tr, ti);
        at += L * (r - 1);
        L *= r;
        double *t = xr; xr = yr; yr = t;
        t = xi; xi = yi; yi = t;
    }
    /* An even number of stages leaves the result where it started. */
    _Static_assert(N_STAGES % 2 == 0, "fft200's result is in re/im");
}

/* ---- frames ------------------------------------------------------------ */

/* Index of the centred, reflected signal: numpy's and torch's "reflect"
 * (the edge sample is not repeated). Needs n > PAD. */
static size_t reflect(long i, size_t n)
{
    if (i < 0)
        return (size_t)-i;
    if ((size_t)i >= n)
        return 2 * (n - 1) - (size_t)i;
    return (size_t)i;
}

typedef struct job {
    const plan *p;
    const float *pcm;
    size_t n;
    float *out;
    size_t n_frames;
    size_t f0, f1;                        /* frames [f0, f1) */
} job;

static void frames(const job *j)
{
    const plan *p = j->p;
    const float *pcm = j->pcm;
    double zr[HALF], zi[HALF], tr[HALF], ti[HALF], power[BINS];
    for (size_t f = j->f0; f < j->f1; f++) {
        /* Window, packing even samples as real and odd as imaginary. */
        long first = (long)(f * HOP) - PAD;
        if (first >= 0 && (size_t)first + NFFT <= j->n) {
            const float *x = pcm + first;
            for (int m = 0; m < HALF; m++) {
                zr[m] = p->window[2 * m] * x[2 * m];
                zi[m] = p->window[2 * m + 1] * x[2 * m + 1];
            }
        } else {
            for (int m = 0; m < HALF; m++) {
                zr[m] = p->window[2 * m] * pcm[reflect(first + 2 * m, j->n)];
                zi[m] = p->window[2 * m + 1] * pcm[reflect(first + 2 * m + 1, j->n)];
            }
        }
        fft200(p, zr, zi, tr, ti);
        /* Split: E = (Z[k] + conj Z[200-k]) / 2, O = (Z[k] - conj Z[200-k]) / 2i,
         * X[k] = E + W400^k O. */
        power[0] = (zr[0] + zi[0]) * (zr[0] + zi[0]);           /* Z[200] is Z[0] */
        power[HALF] = (zr[0] - zi[0]) * (zr[0] - zi[0]);
        for (int k = 1; k < HALF; k++) {
            double ar = zr[k], ai = zi[k], cr = zr[HALF - k], ci = zi[HALF - k];
            double er = 0.5 * (ar + cr), ei = 0.5 * (ai - ci);
            double or_ = 0.5 * (ai + ci), oi = -0.5 * (ar - cr);
            double wr = p->split_re[k], wi = p->split_im[k];
            double xr = er + wr * or_ - wi * oi;
            double xi = ei + wr * oi + wi * or_;
            power[k] = xr * xr + xi * xi;
        }
        for (int m = 0; m < p->n_mels; m++) {
            const double *w = p->w + p->off[m];
            const double *pw = power + p->lo[m];
            double sum = 0;
            for (int k = 0; k < p->len[m]; k++)
                sum += w[k] * pw[k];
            j->out[(size_t)m * j->n_frames + f] = (float)log10(sum > MEL_FLOOR ? sum : MEL_FLOOR);
        }
    }
}

static void *frames_thread(void *arg)
{
    frames(arg);
    return NULL;
}

/* ---- the interface ----------------------------------------------------- */

size_t td_wmel_frames(size_t n_samples)
{
    return n_samples / HOP;
}

int td_wmel_log(const float *pcm, size_t n, const float *filters, int n_mels, float *out,
                int n_threads, td_error *err)
{
    if (!pcm || !filters || !out)
        return td_error_set(err, TD_EINVAL, "log-mel: no samples, filterbank or output");
    if (n_mels <= 0 || n_mels > MAX_MELS)
        return td_error_set(err, TD_EINVAL, "log-mel: %d mel bins (want 1 to %d)", n_mels,
                            MAX_MELS);
    if (n <= PAD)
        return td_error_set(err, TD_EINVAL, "log-mel: %zu samples are too few to reflect a "
                            "%d-point frame (want at least %d)", n, NFFT, PAD + 1);
    size_t n_frames = td_wmel_frames(n);
    if (n_frames > SIZE_MAX / sizeof *out / (size_t)n_mels || n > (size_t)LONG_MAX - NFFT)
        return td_error_set(err, TD_EINVAL, "log-mel: %zu samples are too many", n);

    int rc = TD_OK;
    plan *p = calloc(1, sizeof *p);
    if (!p)
        return td_error_set(err, TD_ENOMEM, "log-mel: out of memory");
    plan_transform(p);
    if (plan_filters(p, filters, n_mels)) {
        rc = td_error_set(err, TD_ENOMEM, "log-mel: out of memory");
        goto out_free_plan;
    }

    size_t max_threads = n_frames / MIN_FRAMES_PER_THREAD;
    size_t nt = n_threads > 1 ? (size_t)n_threads : 1;
    if (nt > MAX_THREADS)
        nt = MAX_THREADS;
    if (nt > max_threads)
        nt = max_threads ? max_threads : 1;
    job jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (size_t t = 0; t < nt; t++)
        jobs[t] = (job){.p = p, .pcm = pcm, .n = n, .out = out, .n_frames = n_frames,
                        .f0 = n_frames * t / nt, .f1 = n_frames * (t + 1) / nt};
    /* The calling thread takes the first range. A thread that cannot be
     * started costs time, not the result: its range is done here too. */
    for (size_t t = 1; t < nt; t++)
        started[t] = pthread_create(&tids[t], NULL, frames_thread, &jobs[t]) == 0;
    frames(&jobs[0]);
    for (size_t t = 1; t < nt; t++) {
        if (!started[t])
            frames(&jobs[t]);
        else if (pthread_join(tids[t], NULL) != 0 && rc == TD_OK)
            rc = td_error_set(err, TD_EINVAL, "log-mel: cannot join a worker thread");
    }

out_free_plan:
    plan_release(p);
    free(p);
    return rc;
}

void td_wmel_normalize(float *logmel, size_t count)
{
    if (!count)
        return;
    float max = -INFINITY;
    for (size_t i = 0; i < count; i++)
        if (logmel[i] > max)
            max = logmel[i];
    /* As the references do it, in float: maximum(x, max - 8), (x + 4) / 4. */
    float lowest = max - 8.0f;
    for (size_t i = 0; i < count; i++) {
        float v = logmel[i] < lowest ? lowest : logmel[i];
        logmel[i] = (v + 4.0f) / 4.0f;
    }
}
