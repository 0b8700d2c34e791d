/*
 * sample.c: one sampling step on one row of logits (sample.h). The
 * decoding rules and the CPU backend's sample() both call this, so that
 * a decode is the same whichever side samples.
 */
#include "whisper/sample.h"

#include <math.h>
#include <string.h>

int td_wrow_lse(const float *x, int n, double *lse)
{
    double mx = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (isnan(x[i]))
            return -1;
        if (x[i] > mx)
            mx = x[i];
    }
    if (mx == -INFINITY) {
        *lse = -INFINITY;
        return 0;
    }
    double s = 0;
    for (int i = 0; i < n; i++)
        s += exp((double)x[i] - mx);
    *lse = mx + log(s);
    return 0;
}

static double logaddexp(double a, double b)
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
        double max_text = -INFINITY;
        for (int i = 0; i < tsb; i++)
            if (x[i] > max_text)
                max_text = x[i];
        lse = logaddexp(lse_text, lse_ts);
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
        double mx = -INFINITY;
        for (int i = 0; i < nv; i++)
            if (x[i] > mx)
                mx = x[i];
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
        double t = in->temperature, mx = -INFINITY, tot = 0;
        for (int i = 0; i < nv; i++)
            if (x[i] > mx)
                mx = x[i];
        int32_t next = -1;
        if (mx != -INFINITY) {
            for (int i = 0; i < nv; i++)
                tot += exp(((double)x[i] - mx) / t);
            double u = in->u * tot, acc = 0;
            for (int i = 0; i < nv; i++) {
                if (x[i] == -INFINITY)
                    continue;
                acc += exp(((double)x[i] - mx) / t);
                next = i;
                if (acc > u)
                    break;
            }
        }
        if (next < 0)
            next = sp->eot;
        out->sampled = next;
        out->sampled_lp = lse == -INFINITY ? -INFINITY : (double)x[next] - lse;
    }
}
