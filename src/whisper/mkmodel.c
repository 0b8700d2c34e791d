/*
 * mkmodel.c: write ggml Whisper model files with seeded random weights
 * (see mkmodel.h).
 *
 * Same seed, same bytes, on every machine: the generator is our own
 * (splitmix64 seeding xoshiro256**), weights are uniform in [-a, a] with
 * a = std * sqrt(3) computed with IEEE basic operations only (+ - * / sqrt
 * are correctly rounded everywhere; libm's exp/log are not), and floats
 * become halves through our own round-to-nearest-even. The filterbank
 * needs log and exp: those are computed here too, with series that use
 * basic operations only, so that it does not depend on the libm either.
 *
 * The file is streamed (large-v3 is 3 GB of F16) through ggml_writer.h:
 * a temporary file beside the target, fsynced and renamed into place.
 *
 * Builds without the rest of tapedeck: this file, ggml_writer.c,
 * tools/mkmodel.c and src/util/error.c, with libm only.
 */
#include "whisper/mkmodel.h"
#include "whisper/ggml_writer.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Contracting a*b+c into an FMA changes roundings; clang does it by default
 * on FMA targets. GCC in ISO mode (-std=c11) does not, and warns about the
 * pragma, so only clang sees it. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

/* ------------------------------------------------------------------ */
/* Standard dimensions                                                  */

typedef struct dims_row {
    const char *name;
    int32_t state, head, enc_layers, dec_layers, mels, vocab;
} dims_row;

static const dims_row dims_table[] = {
    {"tiny", 384, 6, 4, 4, 80, 51865},
    {"tiny.en", 384, 6, 4, 4, 80, 51864},
    {"base", 512, 8, 6, 6, 80, 51865},
    {"base.en", 512, 8, 6, 6, 80, 51864},
    {"small", 768, 12, 12, 12, 80, 51865},
    {"small.en", 768, 12, 12, 12, 80, 51864},
    {"medium", 1024, 16, 24, 24, 80, 51865},
    {"medium.en", 1024, 16, 24, 24, 80, 51864},
    {"large-v2", 1280, 20, 32, 32, 80, 51865},
    {"large-v3", 1280, 20, 32, 32, 128, 51866},
    {"large-v3-turbo", 1280, 20, 32, 4, 128, 51866},
};

int td_wmk_dims(const char *name, td_whparams *hp, td_error *err)
{
    for (size_t i = 0; i < sizeof dims_table / sizeof dims_table[0]; i++) {
        const dims_row *r = &dims_table[i];
        if (strcmp(r->name, name) != 0)
            continue;
        memset(hp, 0, sizeof *hp);
        hp->n_vocab = r->vocab;
        hp->n_audio_ctx = 1500;
        hp->n_audio_state = r->state;
        hp->n_audio_head = r->head;
        hp->n_audio_layer = r->enc_layers;
        hp->n_text_ctx = 448;
        hp->n_text_state = r->state;
        hp->n_text_head = r->head;
        hp->n_text_layer = r->dec_layers;
        hp->n_mels = r->mels;
        hp->ftype = 1;
        return TD_OK;
    }
    return td_error_set(err, TD_EINVAL,
                        "unknown model dimensions '%s' (tiny, base, small, medium, each also "
                        ".en; large-v2, large-v3, large-v3-turbo)",
                        name);
}

/* The loader's bounds (model.h), so that every file written here loads. */
static int check_dims(const td_whparams *hp, td_error *err)
{
    return td_whparams_check(hp, err);
}

/* ------------------------------------------------------------------ */
/* Deterministic log and exp (basic operations only)                   */

static const double LN2 = 0.69314718055994530942;

/* Natural log of x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)), then
 * log m = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.172, by its series. */
static double det_log(double x)
{
    int e;
    double m = frexp(x, &e); /* exact */
    if (m < 0.70710678118654752440) {
        m *= 2.0;
        e--;
    }
    double s = (m - 1.0) / (m + 1.0);
    double s2 = s * s;
    double term = s, sum = 0.0;
    for (int k = 1; k <= 41; k += 2) {
        sum += term / k;
        term *= s2;
    }
    return 2.0 * sum + e * LN2;
}

/* e^x for moderate x: x = k ln2 + r, |r| <= ln2/2, Taylor series for e^r. */
static double det_exp(double x)
{
    double kf = x / LN2;
    int k = (int)(kf < 0 ? kf - 0.5 : kf + 0.5);
    double r = x - k * LN2;
    double term = 1.0, sum = 1.0;
    for (int i = 1; i <= 24; i++) {
        term = term * r / i;
        sum += term;
    }
    return ldexp(sum, k); /* exact */
}

/* ------------------------------------------------------------------ */
/* Slaney mel filterbank, as librosa.filters.mel computes it             */

/* librosa's Slaney scale: linear below 1 kHz, logarithmic above. */
static const double F_SP = 200.0 / 3.0;
#define MIN_LOG_HZ 1000.0

static double hz_to_mel(double f)
{
    double mels = f / F_SP;
    double min_log_mel = MIN_LOG_HZ / F_SP;
    double logstep = det_log(6.4) / 27.0;
    if (f >= MIN_LOG_HZ)
        mels = min_log_mel + det_log(f / MIN_LOG_HZ) / logstep;
    return mels;
}

static double mel_to_hz(double m)
{
    double f = F_SP * m;
    double min_log_mel = MIN_LOG_HZ / F_SP;
    double logstep = det_log(6.4) / 27.0;
    if (m >= min_log_mel)
        f = MIN_LOG_HZ * det_exp(logstep * (m - min_log_mel));
    return f;
}

#define N_FFT_BINS 201 /* 1 + 400/2 */

void td_wmk_mel_filters(int n_mels, float *out)
{
    /* mel_frequencies(n_mels + 2, fmin 0, fmax 8000): numpy's linspace is
     * i * step + start with the last point set to stop exactly. */
    double mel_f[TD_WMAX_MELS + 2];
    double fft_f[N_FFT_BINS];
    int n_pts = n_mels + 2;
    double min_mel = hz_to_mel(0.0), max_mel = hz_to_mel(8000.0);
    double step = (max_mel - min_mel) / (n_pts - 1);
    for (int i = 0; i < n_pts; i++)
        mel_f[i] = mel_to_hz(i == n_pts - 1 ? max_mel : i * step + min_mel);
    /* rfftfreq(400, 1/16000): k * (1 / (n * d)) */
    double val = 1.0 / (400 * (1.0 / 16000.0));
    for (int k = 0; k < N_FFT_BINS; k++)
        fft_f[k] = k * val;

    for (int i = 0; i < n_mels; i++) {
        double fdiff_lo = mel_f[i + 1] - mel_f[i];
        double fdiff_hi = mel_f[i + 2] - mel_f[i + 1];
        double enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for (int k = 0; k < N_FFT_BINS; k++) {
            double lower = -(mel_f[i] - fft_f[k]) / fdiff_lo;
            double upper = (mel_f[i + 2] - fft_f[k]) / fdiff_hi;
            double w = lower < upper ? lower : upper;
            if (w < 0.0)
                w = 0.0;
            /* librosa fills a float32 array, then scales it in place:
             * two roundings, reproduced here. */
            float w32 = (float)w;
            out[(size_t)i * N_FFT_BINS + k] = (float)((double)w32 * enorm);
        }
    }
}

/* ------------------------------------------------------------------ */
/* PRNG and number formats                                              */

typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256** */
static uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in (-1, 1), symmetric: (r + 1/2) 2^-23 - 1 for a 24-bit r, exact
 * in double. */
static double rng_sym(rng *r)
{
    uint32_t v = (uint32_t)(rng_next(r) >> 40);
    return ((double)v + 0.5) * (1.0 / 8388608.0) - 1.0;
}

/* IEEE binary32 -> binary16, round to nearest even; NaN stays NaN. */
static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) /* >= 65520 rounds to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: a subnormal half, or zero */
        if (ax <= 0x33000000u) /* <= 2^-25: ties to even give zero */
            return (uint16_t)sign;
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* value = m 2^(e-150) = (m >> shift) 2^-24 */
        uint32_t h = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (h & 1u)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = (ax >> 13) - (112u << 10); /* rebias 127 -> 15 */
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++; /* a carry into the exponent is the right answer */
    return (uint16_t)(sign | h);
}

/* How the elements of a tensor are drawn: offset + uniform in [-a, a]. */
typedef struct dist {
    double offset, a;
} dist;

/* std -> the uniform half-width with that std: a = std sqrt(3). For
 * std = c / sqrt(n) this is sqrt(3 c^2 / n), one division and one sqrt. */
static dist dist_inv_sqrt(double c2, double n)
{
    dist d = {0.0, sqrt(3.0 * c2 / n)};
    return d;
}

static dist dist_const(double offset, double std)
{
    dist d = {offset, std * sqrt(3.0)};
    return d;
}

#define CHUNK 16384

static void w_tensor(td_ggml_writer *w, rng *r, const char *name, int n_dims, const int64_t *ne,
                     enum td_wtype type, dist d)
{
    uint64_t n = 1;
    for (int i = 0; i < n_dims; i++)
        n *= (uint64_t)ne[i];
    td_ggml_write_tensor_head(w, name, n_dims, ne, type);

    uint8_t buf[CHUNK * 4];
    size_t fill = 0;
    for (uint64_t i = 0; i < n; i++) {
        /* The product is rounded on its own even where the compiler
         * would fuse it with the add (an FMA rounds once). */
        volatile double x = d.a * rng_sym(r);
        float v = (float)(d.offset + x);
        if (type == TD_WT_F16) {
            uint16_t h = f32_to_f16(v);
            buf[fill++] = (uint8_t)h;
            buf[fill++] = (uint8_t)(h >> 8);
        } else {
            uint32_t u;
            memcpy(&u, &v, sizeof u);
            buf[fill++] = (uint8_t)u;
            buf[fill++] = (uint8_t)(u >> 8);
            buf[fill++] = (uint8_t)(u >> 16);
            buf[fill++] = (uint8_t)(u >> 24);
        }
        if (fill == sizeof buf) {
            td_ggml_write_bytes(w, buf, fill);
            fill = 0;
            if (w->failed_errno)
                return;
        }
    }
    td_ggml_write_bytes(w, buf, fill);
}

/* ------------------------------------------------------------------ */
/* Tensors, in file order                                               */

static void w_vec(td_ggml_writer *w, rng *r, const char *name, int64_t n, dist d)
{
    int64_t ne[1] = {n};
    w_tensor(w, r, name, 1, ne, TD_WT_F32, d);
}

/* LayerNorm: weight 1 + U(std 0.1), bias U(std 0.02). */
static void w_norm(td_ggml_writer *w, rng *r, const char *prefix, int64_t n)
{
    char name[128];
    snprintf(name, sizeof name, "%s.weight", prefix);
    w_vec(w, r, name, n, dist_const(1.0, 0.1));
    snprintf(name, sizeof name, "%s.bias", prefix);
    w_vec(w, r, name, n, dist_const(0.0, 0.02));
}

/* Linear n_in -> n_out: weight ne = {n_in, n_out}, std 1/sqrt(n_in). */
static void w_linear(td_ggml_writer *w, rng *r, const char *prefix, int64_t n_in, int64_t n_out,
                     enum td_wtype wt, int bias)
{
    char name[128];
    int64_t ne[2] = {n_in, n_out};
    snprintf(name, sizeof name, "%s.weight", prefix);
    w_tensor(w, r, name, 2, ne, wt, dist_inv_sqrt(1.0, (double)n_in));
    if (bias) {
        snprintf(name, sizeof name, "%s.bias", prefix);
        w_vec(w, r, name, n_out, dist_const(0.0, 0.02));
    }
}

/* Self- or cross-attention: key has no bias. For cross-attention key and
 * value read the encoder's output, n_kv_in wide. */
static void w_attn(td_ggml_writer *w, rng *r, const char *prefix, int64_t n_state, int64_t n_kv_in,
                   enum td_wtype wt)
{
    char name[128];
    snprintf(name, sizeof name, "%s.query", prefix);
    w_linear(w, r, name, n_state, n_state, wt, 1);
    snprintf(name, sizeof name, "%s.key", prefix);
    w_linear(w, r, name, n_kv_in, n_state, wt, 0);
    snprintf(name, sizeof name, "%s.value", prefix);
    w_linear(w, r, name, n_kv_in, n_state, wt, 1);
    snprintf(name, sizeof name, "%s.out", prefix);
    w_linear(w, r, name, n_state, n_state, wt, 1);
}

static void w_mlp(td_ggml_writer *w, rng *r, const char *prefix, int64_t n, enum td_wtype wt)
{
    char name[128];
    snprintf(name, sizeof name, "%s.mlp.0", prefix);
    w_linear(w, r, name, n, 4 * n, wt, 1);
    snprintf(name, sizeof name, "%s.mlp.2", prefix);
    w_linear(w, r, name, 4 * n, n, wt, 1);
}

static void w_tensors(td_ggml_writer *w, const td_whparams *hp, enum td_wtype wt, uint64_t seed)
{
    rng r;
    rng_seed(&r, seed);
    char name[128];
    int64_t na = hp->n_audio_state, nt = hp->n_text_state;

    /* encoder */
    int64_t pos_ne[2] = {na, hp->n_audio_ctx};
    w_tensor(w, &r, "encoder.positional_embedding", 2, pos_ne, TD_WT_F32, dist_const(0.0, 0.1));
    int64_t c1[3] = {3, hp->n_mels, na};
    w_tensor(w, &r, "encoder.conv1.weight", 3, c1, wt, dist_inv_sqrt(1.0, 3.0 * hp->n_mels));
    int64_t cb[2] = {1, na};
    w_tensor(w, &r, "encoder.conv1.bias", 2, cb, TD_WT_F32, dist_const(0.0, 0.02));
    int64_t c2[3] = {3, na, na};
    w_tensor(w, &r, "encoder.conv2.weight", 3, c2, wt, dist_inv_sqrt(1.0, 3.0 * (double)na));
    w_tensor(w, &r, "encoder.conv2.bias", 2, cb, TD_WT_F32, dist_const(0.0, 0.02));
    for (int i = 0; i < hp->n_audio_layer && !w->failed_errno; i++) {
        char blk[64];
        snprintf(blk, sizeof blk, "encoder.blocks.%d", i);
        snprintf(name, sizeof name, "%s.attn_ln", blk);
        w_norm(w, &r, name, na);
        snprintf(name, sizeof name, "%s.attn", blk);
        w_attn(w, &r, name, na, na, wt);
        snprintf(name, sizeof name, "%s.mlp_ln", blk);
        w_norm(w, &r, name, na);
        w_mlp(w, &r, blk, na, wt);
    }
    w_norm(w, &r, "encoder.ln_post", na);

    /* decoder */
    int64_t dpos_ne[2] = {nt, hp->n_text_ctx};
    w_tensor(w, &r, "decoder.positional_embedding", 2, dpos_ne, TD_WT_F32, dist_const(0.0, 0.1));
    /* Also the output projection: std 3/sqrt(n) gives logits of std ~3,
     * peaky enough that greedy choices are not near-ties. */
    int64_t tok_ne[2] = {nt, hp->n_vocab};
    w_tensor(w, &r, "decoder.token_embedding.weight", 2, tok_ne, wt,
             dist_inv_sqrt(9.0, (double)nt));
    for (int i = 0; i < hp->n_text_layer && !w->failed_errno; i++) {
        char blk[64];
        snprintf(blk, sizeof blk, "decoder.blocks.%d", i);
        snprintf(name, sizeof name, "%s.attn_ln", blk);
        w_norm(w, &r, name, nt);
        snprintf(name, sizeof name, "%s.attn", blk);
        w_attn(w, &r, name, nt, nt, wt);
        snprintf(name, sizeof name, "%s.cross_attn_ln", blk);
        w_norm(w, &r, name, nt);
        snprintf(name, sizeof name, "%s.cross_attn", blk);
        w_attn(w, &r, name, nt, na, wt);
        snprintf(name, sizeof name, "%s.mlp_ln", blk);
        w_norm(w, &r, name, nt);
        w_mlp(w, &r, blk, nt, wt);
    }
    w_norm(w, &r, "decoder.ln", nt);
}

/* ------------------------------------------------------------------ */
/* Vocabulary and filterbank: synthetic, or copied from a header file   */

/* Letters of i in base 26, most significant first ('a' is 0). */
static size_t base26(uint32_t i, char *out)
{
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = (char)('a' + i % 26);
        i /= 26;
    } while (i > 0);
    for (size_t k = 0; k < n; k++)
        out[k] = tmp[n - 1 - k];
    return n;
}

/* Token i of the synthetic vocabulary: GPT-2's single printable bytes
 * first, the blank and the two tokens the non-speech rule looks up at
 * their English-only ids, and distinct made-up words for the rest. */
static size_t synth_token(uint32_t i, char *out)
{
    if (i < 94) {
        out[0] = (char)(33 + i);
        return 1;
    }
    if (i == 220) {
        out[0] = ' ';
        return 1;
    }
    if (i == 532) {
        memcpy(out, " -", 2);
        return 2;
    }
    if (i == 705) {
        memcpy(out, " '", 2);
        return 2;
    }
    if (i % 2 == 0) {
        memcpy(out, " w", 2);
        return 2 + base26(i, out + 2);
    }
    return base26(i, out);
}

static void w_synth_front(td_ggml_writer *w, const td_whparams *hp, int32_t count)
{
    float *filt = malloc((size_t)hp->n_mels * N_FFT_BINS * sizeof *filt);
    if (!filt) {
        w->failed_errno = ENOMEM;
        return;
    }
    td_wmk_mel_filters(hp->n_mels, filt);
    td_ggml_write_i32(w, hp->n_mels);
    td_ggml_write_i32(w, N_FFT_BINS);
    for (size_t i = 0; i < (size_t)hp->n_mels * N_FFT_BINS; i++) {
        uint32_t u;
        memcpy(&u, &filt[i], sizeof u);
        td_ggml_write_i32(w, (int32_t)u);
    }
    free(filt);

    td_ggml_write_i32(w, count);
    for (int32_t i = 0; i < count; i++) {
        char tok[32];
        size_t n = synth_token((uint32_t)i, tok);
        td_ggml_write_i32(w, (int32_t)n);
        td_ggml_write_bytes(w, tok, n);
    }
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Read exactly n bytes of a header file; EOF is a malformed file. */
static int h_read(FILE *f, const char *path, void *p, size_t n, const char *what, td_error *err)
{
    if (fread(p, 1, n, f) == n)
        return TD_OK;
    if (ferror(f))
        return td_error_errno(err, TD_EIO, errno, "%s: read failed", path);
    return td_error_set(err, TD_EINPUT, "%s: file ends in the %s", path, what);
}

/* Read a header file's filterbank and vocabulary (everything after the
 * hparams up to the end of the vocabulary; tensors after it are ignored,
 * so a whole model file works too) into *front. */
static int read_header(const char *path, const td_whparams *hp, uint8_t **front, size_t *front_len,
                       td_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return td_error_errno(err, TD_EIO, errno, "%s: cannot open", path);
    int rc;
    uint8_t *buf = NULL;
    uint8_t head[12 * 4];
    size_t got = fread(head, 1, sizeof head, f);
    if (got < 4 || le32(head) != TD_GGML_MAGIC) {
        rc = ferror(f) ? td_error_errno(err, TD_EIO, errno, "%s: read failed", path)
                       : td_error_set(err, TD_EINPUT, "%s: not a ggml Whisper model file", path);
        goto out_close;
    }
    if (got < sizeof head) {
        rc = td_error_set(err, TD_EINPUT, "%s: file ends in the hyper-parameters", path);
        goto out_close;
    }
    int32_t h_vocab = (int32_t)le32(head + 4), h_mels = (int32_t)le32(head + 40);
    if (h_vocab != hp->n_vocab) {
        rc = td_error_set(err, TD_EINVAL,
                          "%s: its vocabulary is for n_vocab %d, the model asks for %d", path,
                          (int)h_vocab, (int)hp->n_vocab);
        goto out_close;
    }
    if (h_mels != hp->n_mels) {
        rc = td_error_set(err, TD_EINVAL, "%s: has n_mels %d, the model asks for %d", path,
                          (int)h_mels, (int)hp->n_mels);
        goto out_close;
    }

    uint8_t mf[8];
    if ((rc = h_read(f, path, mf, sizeof mf, "mel filters", err)) != TD_OK)
        goto out_close;
    int32_t n_mel = (int32_t)le32(mf), n_fft = (int32_t)le32(mf + 4);
    if (n_mel != hp->n_mels || n_fft != N_FFT_BINS) {
        rc = td_error_set(err, TD_EINPUT, "%s: mel filters are %d x %d, expected %d x %d", path,
                          (int)n_mel, (int)n_fft, (int)hp->n_mels, N_FFT_BINS);
        goto out_close;
    }
    /* Filters, count, then at most count * (4 + TD_WMAX_TOKEN_BYTES). */
    size_t filt_len = (size_t)n_mel * N_FFT_BINS * 4;
    size_t cap = 8 + filt_len + 4 + (size_t)hp->n_vocab * (4 + TD_WMAX_TOKEN_BYTES);
    buf = malloc(cap);
    if (!buf) {
        rc = td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
        goto out_close;
    }
    memcpy(buf, mf, 8);
    size_t len = 8;
    if ((rc = h_read(f, path, buf + len, filt_len + 4, "mel filters", err)) != TD_OK)
        goto out_free;
    len += filt_len;
    int32_t count = (int32_t)le32(buf + len);
    len += 4;
    if (count < 0 || count > hp->n_vocab) {
        rc = td_error_set(err, TD_EINPUT, "%s: vocabulary count %d is out of range (0..%d)", path,
                          (int)count, (int)hp->n_vocab);
        goto out_free;
    }
    for (int32_t i = 0; i < count; i++) {
        if ((rc = h_read(f, path, buf + len, 4, "vocabulary", err)) != TD_OK)
            goto out_free;
        uint32_t tl = le32(buf + len);
        len += 4;
        if (tl > TD_WMAX_TOKEN_BYTES) {
            rc = td_error_set(err, TD_EINPUT, "%s: token %d is %u bytes long (at most %d)", path,
                              (int)i, (unsigned)tl, TD_WMAX_TOKEN_BYTES);
            goto out_free;
        }
        if ((rc = h_read(f, path, buf + len, tl, "vocabulary", err)) != TD_OK)
            goto out_free;
        len += tl;
    }
    *front = buf;
    *front_len = len;
    fclose(f);
    return TD_OK;

out_free:
    free(buf);
out_close:
    fclose(f);
    return rc;
}

/* ------------------------------------------------------------------ */
/* The file                                                             */

int td_wmk_write(const td_wmk_spec *spec, const char *path, td_error *err)
{
    td_whparams hp = spec->hp;
    int rc = check_dims(&hp, err);
    if (rc != TD_OK)
        return rc;
    if (spec->wtype != TD_WT_F16 && spec->wtype != TD_WT_F32)
        return td_error_set(err, TD_EINVAL, "weight type %d is not F16 or F32", (int)spec->wtype);
    hp.ftype = spec->wtype == TD_WT_F16 ? 1 : 0;
    int32_t real_count = hp.n_vocab == 51864 ? 50256 : 50257;
    int32_t count = spec->vocab_count ? spec->vocab_count : real_count;
    if (count < 1 || count > real_count)
        return td_error_set(err, TD_EINVAL, "vocabulary count %d is out of range (1..%d)",
                            (int)count, (int)real_count);

    uint8_t *front = NULL;
    size_t front_len = 0;
    if (spec->header_path) {
        if (spec->vocab_count)
            return td_error_set(err, TD_EINVAL,
                                "a vocabulary count applies to the synthetic vocabulary only");
        if ((rc = read_header(spec->header_path, &hp, &front, &front_len, err)) != TD_OK)
            return rc;
    }

    td_ggml_writer w;
    if ((rc = td_ggml_writer_open(&w, path, err)) != TD_OK)
        goto out_front;
    td_ggml_write_hparams(&w, &hp);
    if (front)
        td_ggml_write_bytes(&w, front, front_len);
    else
        w_synth_front(&w, &hp, count);
    w_tensors(&w, &hp, spec->wtype, spec->seed);
    rc = td_ggml_writer_commit(&w, err);

out_front:
    free(front);
    return rc;
}
