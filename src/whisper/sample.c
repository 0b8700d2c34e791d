/*
 * sample.c: one sampling step on one row of logits (sample.h). The
 * decoding rules and the CPU backend's sample() both call this, so that
 * a decode is the same whichever side samples.
 *
 * The exponentials are computed in float by exp_nonpos() below, not by
 * libm's double exp(): a step samples every row of a batch (80 rows of
 * 51,865 logits for 16 windows x 5 beams), and exp() was most of a
 * temperature fallback's time (three passes per row; 70 % of a
 * sanitizer run of a random-weight model). The logits themselves are
 * floats, whose rounding (1e-6 absolute at magnitudes near 16) is larger
 * than the float exponential's (2e-7 relative); sums stay in double.
 */
#include "whisper/sample.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) for x <= 0 (0 for x below -87, where the float result would be
 * denormal, and for -inf): Cody-Waite reduction x = n ln2 + r with
 * |r| <= ln2 / 2 and a degree-7 polynomial for exp(r) (relative error
 * under 2e-7; the coefficients are Cephes' minimax fit). No calls, no
 * branches: the loops over a row vectorize. */
static inline float exp_nonpos(float x)
{
    const float lo = -87.0f;
    float xc = x < lo ? lo : x;
    /* n = round(x / ln2) by the 1.5 * 2^23 trick (|x / ln2| < 2^22) */
    float t = xc * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = xc - n * 0.693359375f;        /* ln2's high part, exact in float */
    r = r - n * -2.12194440e-4f;            /* and the rest */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23; /* 2^n, n in [-126, 0] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < lo ? 0.0f : p * scale;
}

/* The row loops are built for AVX-512 and AVX2 beside the baseline, the
 * best chosen at load time (gcc's function multi-versioning). Results are
 * the same on each: every lane does the same IEEE operations in the same
 * order (ISO C mode contracts no multiply-add). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define ROW_LOOP __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ROW_LOOP
#endif

/* Rows are summed in blocks of SUM_BLOCK floats, each block in float
 * over SUM_LANES interleaved partial sums (a vector's lanes), the blocks
 * in double. */
enum { SUM_BLOCK = 256, SUM_LANES = 16 };

/* sum of exp((x[i] - shift) * scale) over one block of n <= SUM_BLOCK
 * floats (x[i] <= shift, scale > 0). Not inlined: the temperature draw's
 * walk must see exactly the block sums its total was made of. */
ROW_LOOP static __attribute__((noinline)) float block_sum_exp(const float *x, int n,
                                                              float shift, float scale)
{
    float e[SUM_BLOCK];
    for (int i = 0; i < n; i++)
        e[i] = exp_nonpos((x[i] - shift) * scale);
    for (int i = n; i < SUM_BLOCK; i++)
        e[i] = 0;
    float lane[SUM_LANES] = {0};
    for (int i = 0; i < SUM_BLOCK; i += SUM_LANES)
        for (int j = 0; j < SUM_LANES; j++)
            lane[j] += e[i + j];
    float s = 0;
    for (int j = 0; j < SUM_LANES; j++)
        s += lane[j];
    return s;
}

static double sum_exp(const float *x, int n, float shift, float scale)
{
    double s = 0;
    for (int i = 0; i < n; i += SUM_BLOCK)
        s += block_sum_exp(x + i, n - i < SUM_BLOCK ? n - i : SUM_BLOCK, shift, scale);
    return s;
}

/* The largest of n floats (-inf for none) over SUM_LANES interleaved
 * lanes (a vector's), and whether any is a NaN. */
ROW_LOOP static __attribute__((noinline)) float row_max(const float *x, int n, int *has_nan)
{
    float lane[SUM_LANES];
    int bad[SUM_LANES];
    for (int j = 0; j < SUM_LANES; j++) {
        lane[j] = -INFINITY;
        bad[j] = 0;
    }
    int full = n - n % SUM_LANES;
    for (int i = 0; i < full; i += SUM_LANES)
        for (int j = 0; j < SUM_LANES; j++) {
            float v = x[i + j];
            bad[j] |= v != v;
            lane[j] = v > lane[j] ? v : lane[j];
        }
    float mx = -INFINITY;
    int nan = 0;
    for (int i = full; i < n; i++) {
        nan |= x[i] != x[i];
        mx = x[i] > mx ? x[i] : mx;
    }
    for (int j = 0; j < SUM_LANES; j++) {
        nan |= bad[j];
        mx = lane[j] > mx ? lane[j] : mx;
    }
    *has_nan = nan;
    return mx;
}

int td_wrow_lse(const float *x, int n, double *lse)
{
    int nan;
    float mx = row_max(x, n, &nan);
    if (nan)
        return -1;
    if (mx == -INFINITY) {
        *lse = -INFINITY;
        return 0;
    }
    *lse = (double)mx + log(sum_exp(x, n, mx, 1.0f));
    return 0;
}

double td_logaddexp(double a, double b)
{
    if (a == -INFINITY)
        return b;
    if (b == -INFINITY)
        return a;
    double m = a > b ? a : b;
    return m + log(exp(a - m) + exp(b - m));
}

static void mask(float *x, int n, int from, int to)
{
    if (from < 0)
        from = 0;
    if (to > n)
        to = n;
    for (int i = from; i < to; i++)
        x[i] = -INFINITY;
}

/* Indices of the k largest entries of x (k <= n), largest first, ties to
 * the lower index (torch.topk leaves ties unspecified). */
static void topk(const float *x, int n, int k, int32_t *idx)
{
    int have = 0;
    for (int i = 0; i < n; i++) {
        float v = x[i];
        if (have == k && !(v > x[idx[k - 1]]))
            continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && v > x[idx[j - 1]]) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }
}

void td_wsample_row(const td_wsampler *sp, int nv, float *x, const td_wsample_in *in,
                    td_wsample_out *out)
{
    out->no_speech_prob = NAN;
    out->ts_lse = -INFINITY;
    out->best_text_lp = -INFINITY;
    out->forced_ts = 0;
    out->all_masked = 0;
    out->has_nan = 0;
    out->sampled = -1;
    out->sampled_lp = -INFINITY;

    double lse;
    if ((in->flags & TD_WSAMPLE_NOSPEECH) && sp->nospeech >= 0 && sp->nospeech < nv) {
        if (td_wrow_lse(x, nv, &lse)) {
            out->has_nan = 1;
            return;
        }
        out->no_speech_prob = exp((double)x[sp->nospeech] - lse);
    }

    /* SuppressBlank, SuppressTokens, the row's timestamp masks */
    if (in->flags & TD_WSAMPLE_BLANK) {
        if (sp->blank >= 0 && sp->blank < nv)
            x[sp->blank] = -INFINITY;
        if (sp->eot >= 0 && sp->eot < nv)
            x[sp->eot] = -INFINITY;
    }
    for (int i = 0; i < sp->n_suppress; i++)
        if (sp->suppress[i] >= 0 && sp->suppress[i] < nv)
            x[sp->suppress[i]] = -INFINITY;
    int nr = in->n_ranges < TD_WSAMPLE_MAX_RANGES ? in->n_ranges : TD_WSAMPLE_MAX_RANGES;
    for (int r = 0; r < nr; r++)
        mask(x, nv, in->ranges[r][0], in->ranges[r][1]);

    /* The row's log-sum-exp in two parts (text, timestamps), which the
     * timestamp rule compares: when the timestamps together outweigh
     * every text token, only a timestamp may follow. logsumexp over the
     * timestamps' log-probs > the best text log-prob compares the same as
     * on raw logits, the normaliser cancelling. */
    int tsb = sp->ts_begin;
    if (tsb > 0 && tsb < nv) {
        double lse_text, lse_ts;
        if (td_wrow_lse(x, tsb, &lse_text) || td_wrow_lse(x + tsb, nv - tsb, &lse_ts)) {
            out->has_nan = 1;
            return;
        }
        int nan;
        double max_text = row_max(x, tsb, &nan);
        lse = td_logaddexp(lse_text, lse_ts);
        if (lse != -INFINITY) {
            out->ts_lse = lse_ts - lse;
            out->best_text_lp = max_text - lse;
        }
        if ((in->flags & TD_WSAMPLE_TS_RULE) && lse_ts > max_text) {
            mask(x, nv, 0, tsb);
            out->forced_ts = 1;
            lse = lse_ts;
        }
    } else {
        if (td_wrow_lse(x, nv, &lse)) {
            out->has_nan = 1;
            return;
        }
        int nan;
        double mx = row_max(x, nv, &nan);
        if (lse != -INFINITY)
            out->best_text_lp = mx - lse;
    }
    out->all_masked = lse == -INFINITY;

    int k = sp->k < 1 ? 1 : sp->k > TD_WSAMPLE_MAX_K ? TD_WSAMPLE_MAX_K : sp->k;
    if (k > nv)
        k = nv;
    topk(x, nv, k, out->top);
    for (int i = 0; i < k; i++)
        out->top_lp[i] = lse == -INFINITY ? -INFINITY : (double)x[out->top[i]] - lse;

    if (in->temperature > 0) {
        /* Categorical(logits / T), by the cumulative sum in id order */
        int nan;
        float mx = row_max(x, nv, &nan), scale = (float)(1.0 / in->temperature);
        int32_t next = -1;
        if (mx != -INFINITY) {
            double u = in->u * sum_exp(x, nv, mx, scale), acc = 0;
            /* walk the same block sums the total was made of, then the
             * tokens of the block where the cumulative sum passes u */
            int passed = 0;
            for (int b = 0; b < nv && !passed; b += SUM_BLOCK) {
                int n = nv - b < SUM_BLOCK ? nv - b : SUM_BLOCK;
                double part = block_sum_exp(x + b, n, mx, scale);
                if (acc + part <= u && b + n < nv) {
                    acc += part;
                    continue;
                }
                for (int i = b; i < b + n; i++) {
                    if (x[i] == -INFINITY)
                        continue;
                    acc += exp_nonpos((x[i] - mx) * scale);
                    next = i;
                    if (acc > u) {
                        passed = 1;
                        break;
                    }
                }
                /* not passed inside (the walk's rounding): go on; the
                 * last token walked stands if u is never passed */
            }
        }
        if (next < 0)
            next = sp->eot;
        out->sampled = next;
        out->sampled_lp = lse == -INFINITY ? -INFINITY : (double)x[next] - lse;
    }
}
