/*
 * decode.c: openai-whisper's decoding (whisper/decoding.py, DecodingTask)
 * and transcribe loop (whisper/transcribe.py) over a backend table.
 *
 * One window's decode, as DecodingTask.run does it:
 *
 *   initial tokens = [prev] + prompt[-223:] (when there is a prompt)
 *                    + [sot, language, task] (multilingual) or [sot]
 *                    (+ notimestamps when timestamps are off)
 *   the prompt is decoded once, for sequence 0, in two calls: up to the
 *   sot token (whose logits give no_speech_prob) and the rest (whose
 *   logits are the first step's); kv_copy then forks it into the group
 *   (beam_size beams at T = 0, best_of samples at T > 0);
 *   each step: logit filters in openai's order (SuppressBlank,
 *   SuppressTokens, ApplyTimestampRules), then the token decoder (greedy,
 *   sampling, or beam search with patience 1), until every sequence ended
 *   (or beam_size beams finished), sample_len tokens, or n_text_ctx;
 *   the candidates are ranked by sum logprob / length; the result's
 *   avg_logprob is sum logprob / (length + 1) (the eot counts), and its
 *   compression ratio is that of the stripped text.
 *
 * The transcribe loop walks the mel by seek (mel frames, 10 ms each; one
 * timestamp step is 2 frames, 20 ms): decode with temperature fallback,
 * skip silent windows, split at consecutive timestamp pairs, advance seek,
 * and keep the last text tokens as the next prompt.
 *
 * Where this is not openai-whisper bit for bit (see also decode.h):
 *  - sampling uses tapedeck's own seeded PRNG (splitmix64), not torch's;
 *  - log-softmax is computed in double, openai's in float32;
 *  - top-k ties in beam search go to the lower token id;
 *  - the suppressed symbol tokens are found by their bytes, not by
 *    running the BPE encoder (td_wsuppress_tokens says how);
 *  - word times are the segment's span shared by character counts, not
 *    openai's cross-attention DTW (word_timestamps is off in openai's
 *    default, and it has no word times at all then);
 *  - segment text is stripped of surrounding white space, segments with
 *    no text are dropped, and a segment's end is clamped to the content;
 *  - home video (condition_after_fallback = 0, the default): tokens of a
 *    window whose final temperature was above 0 are not added to the
 *    prompt, and the prompt is reset after a window skipped as silent.
 *    condition_after_fallback = 1 gives openai's behaviour.
 */
#include "whisper/decode.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "util/buf.h"

#define HOP_LENGTH 160
#define SAMPLE_RATE 16000
#define INPUT_STRIDE 2            /* mel frames per encoder output position */
#define MAX_GROUP 64              /* beams or samples decoded together */
#define MAX_INITIAL_TS 1.0        /* seconds: openai's max_initial_timestamp */
#define PROMPT_KEEP 1024          /* tokens of previous text kept for the prompt */
#define TEXT_LIMIT ((size_t)1 << 20)

/* One finished (or, at the end, unfinished) beam-search candidate:
 * its sampled tokens without the eot, their log-probabilities, and the
 * summed log-probability that ranks it. */
typedef struct fin_seq {
    int32_t *tok;
    float *lp;
    int n;
    double sum;
} fin_seq;

/* A beam-search candidate of one step: beam src extended by tok. */
typedef struct cand {
    double score;
    float lp;
    int src;
    int32_t tok;
} cand;

/* The chosen sequence of one window's decode (td_wwindow_result plus the
 * per-token log-probabilities that the word probabilities need). */
typedef struct wres {
    int32_t *tok;                 /* sampled tokens, no eot; cap sample_len + 1 */
    float *lp;
    int n;
    double sum_logprob, avg_logprob, no_speech_prob, compression_ratio;
    float temperature;
} wres;

struct td_wdecoder {
    const td_wmodel *m;
    const td_wbackend_ops *ops;
    td_wbackend *b;
    td_wdecode_opts o;

    int n_vocab, n_ctx, n_mels;
    int win_frames;               /* mel frames per window: 2 * n_audio_ctx (3000) */
    int sample_len;               /* most sampled tokens per window */
    int max_initial_ts;           /* timestamp index: round(1.0 s / 0.02 s) = 50 */
    int max_group;
    int language;                 /* resolved language index, -1 = not yet */
    uint64_t rng;

    int32_t *sup;                 /* tokens suppressed at every step */
    int n_sup;
    float *logits;                /* [max_group][n_vocab] */
    int cap;                      /* tokens per sequence: n_ctx + 2 */
    int32_t *tok, *tok2;          /* [max_group][cap]: full histories, and scratch */
    float *tlp, *tlp2;            /* [max_group][cap]: log-prob of each token */
    double *sum, *sum2;           /* [max_group] */
    int *src;                     /* [max_group] kv_copy sources */
    cand *cands;                  /* [max_group * (max_group + 1)] */
    int *order;                   /* same size: sort scratch */
    fin_seq *fin;                 /* [max_group] */
    int n_fin;
    int32_t *init;                /* [n_ctx]: initial tokens of the window */
    float *win;                   /* [n_mels][win_frames]: one window of mel */
    wres res;
    td_wdecode_stats stats;
};

/* ---- small helpers ---------------------------------------------------- */

void td_wdecode_opts_default(td_wdecode_opts *o)
{
    memset(o, 0, sizeof *o);
    o->language = -1;
    o->translate = 0;
    o->timestamps = 1;
    o->beam_size = 5;
    o->best_of = 5;
    static const float temps[] = {0.0f, 0.2f, 0.4f, 0.6f, 0.8f, 1.0f};
    for (int i = 0; i < 6; i++)
        o->temperatures[i] = temps[i];
    o->n_temperatures = 6;
    o->compression_ratio_threshold = 2.4f;
    o->logprob_threshold = -1.0f;
    o->no_speech_threshold = 0.6f;
    o->condition_on_previous = 1;
    o->condition_after_fallback = 0;
    o->prompt_reset_on_temperature = 0.5f;
    o->max_tokens = 0;
    o->seed = 0;
}

/* splitmix64: small, seedable, and the same on every machine. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
}

/* log(sum(exp(x))) of a row, in double; -inf when every entry is -inf.
 * Returns -1 if the row holds a NaN (a broken backend). */
static int row_lse(const float *x, int n, double *lse)
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

/* log_softmax(x)[i] given the row's log-sum-exp; -inf when the whole
 * row is masked (rather than NaN). */
static double logprob(const float *x, int i, double lse)
{
    return lse == -INFINITY ? -INFINITY : (double)x[i] - lse;
}

static void mask_range(float *x, int from, int to)
{
    for (int i = from; i < to; i++)
        x[i] = -INFINITY;
}

/* Python's str.isspace() for one code point (what str.strip() removes). */
static int py_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 with *bad set to
 * the bytes Python's "replace" handler turns into one U+FFFD (the
 * maximal subpart of a sequence, or one invalid byte). */
static size_t utf8_seq(const uint8_t *s, size_t n, uint32_t *cp, size_t *bad)
{
    uint8_t c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int need;
    uint8_t lo = 0x80, hi = 0xbf;
    uint32_t v;
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
        v = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        v = c & 0x0f;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        v = c & 0x07;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        *bad = 1;
        return 0;
    }
    size_t k = 1;
    for (int j = 0; j < need; j++, k++) {
        if (k >= n || s[k] < lo || s[k] > hi) {
            *bad = k;
            return 0;
        }
        v = (v << 6) | (s[k] & 0x3f);
        lo = 0x80;
        hi = 0xbf;
    }
    *cp = v;
    return k;
}

/* Append s[0..n) to out as valid UTF-8, each invalid part replaced by
 * U+FFFD as Python's bytes.decode("utf-8", errors="replace") does. */
static int utf8_clean(const uint8_t *s, size_t n, td_buf *out)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t bad = 0;
        size_t k = utf8_seq(s + i, n - i, &cp, &bad);
        int rc;
        if (k) {
            rc = td_buf_append(out, s + i, k);
            i += k;
        } else {
            rc = td_buf_append(out, "\xef\xbf\xbd", 3);
            i += bad;
        }
        if (rc)
            return rc;
    }
    return TD_OK;
}

/* [*start, *end) of s without the leading and trailing white space that
 * Python's str.strip() removes; s must be valid UTF-8. */
static void py_strip(const char *s, size_t n, size_t *start, size_t *end)
{
    size_t i = 0, first = n, last = 0;
    while (i < n) {
        uint32_t cp = 0xfffd;
        size_t bad = 0;
        size_t k = utf8_seq((const uint8_t *)s + i, n - i, &cp, &bad);
        if (!k)
            k = bad;
        if (!py_space(cp)) {
            if (first == n)
                first = i;
            last = i + k;
        }
        i += k;
    }
    if (first == n) {
        *start = *end = 0;
        return;
    }
    *start = first;
    *end = last;
}

static size_t count_cps(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

/* The text of tokens (those below limit), as clean UTF-8 in out (reset
 * first), stripped when strip is set. */
static int tokens_text(const td_wmodel *m, const int32_t *tok, int n, int32_t limit, int strip,
                       td_buf *out)
{
    td_buf raw;
    td_buf_init(&raw, TEXT_LIMIT);
    td_buf_reset(out);
    int rc = TD_OK;
    for (int i = 0; i < n && !rc; i++) {
        if (tok[i] >= limit)
            continue;
        size_t len = 0;
        const uint8_t *p = td_wmodel_token(m, tok[i], &len);
        if (p && len)
            rc = td_buf_append(&raw, p, len);
    }
    if (!rc)
        rc = utf8_clean((const uint8_t *)raw.data, raw.len, out);
    td_buf_release(&raw);
    if (rc || !strip || !out->len)
        return rc;
    size_t a, e;
    py_strip(out->data, out->len, &a, &e);
    memmove(out->data, out->data + a, e - a);
    out->len = e - a;
    out->data[out->len] = '\0';
    return TD_OK;
}

double td_wcompression_ratio(const uint8_t *text, size_t len)
{
    /* zlib.compress(text) at the default level: Python's call is compress2
     * with Z_DEFAULT_COMPRESSION, the same stream. */
    uLongf cap = compressBound((uLong)len);
    Bytef *z = malloc(cap ? cap : 1);
    if (!z)
        return NAN;
    int zr = compress2(z, &cap, len ? text : (const Bytef *)"", (uLong)len,
                       Z_DEFAULT_COMPRESSION);
    free(z);
    if (zr != Z_OK || cap == 0)
        return NAN;
    return (double)len / (double)cap;
}

/* ---- suppressed tokens ------------------------------------------------ *
 *
 * openai suppresses the first BPE token of encode(symbol) and of
 * encode(" " + symbol) when that is the only token (always, for the
 * U+2640.. misc symbols), plus " -" and " '". There is no BPE encoder
 * here, so: the token whose bytes are exactly the symbol; for the misc
 * symbols otherwise the longest token that is a byte prefix of it (what
 * BPE's first token is in Whisper's vocabularies: E2 99, or " " E2 99).
 * whisper.cpp's files store those two prefix tokens as U+FFFD, so for
 * the stock vocabularies their ids are known (stock_vocabs). On the real
 * vocabularies this gives openai's lists exactly (test_decode.c checks
 * them against ../shared/whisper's headers).
 */

/* openai's tokenizer.non_speech_tokens: these symbols, alone and after a
 * space, are suppressed when they are one token. */
static const char *const nonspeech_symbols[] = {
    "\"", "#", "(", ")", "*", "+", "/", ":", ";", "<", "=", ">", "@", "[", "\\", "]", "^",
    "_", "`", "{", "|", "}", "~", "「", "」", "『", "』",
    "<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", "(\"", "((", "))", "(((", ")))",
    "[[", "]]", "{{", "}}", "♪♪", "♪♪♪",
};

/* U+2640..U+267F symbols whose first BPE token is suppressed even when
 * they take several tokens (they share their first two UTF-8 bytes). */
static const char *const nonspeech_misc[] = {"♩", "♪", "♫", "♬", "♭", "♮", "♯"};

/* Stock vocabularies whose files lost the bytes of partial UTF-8 tokens
 * (whisper.cpp's converter stored them as U+FFFD): the ids of E2 99 and
 * " E2 99", the first BPE tokens of the misc symbols there. Each is used
 * only when the file has the stock tokens at the anchor ids, and U+FFFD
 * at these. */
typedef struct lost_token {
    int32_t id;
    const char *stored, *real;
} lost_token;

typedef struct stock_vocab {
    int32_t eot;
    int32_t anchor_id[2];
    const char *anchor[2];
    lost_token lost[2];
} stock_vocab;

static const stock_vocab stock_vocabs[] = {
    /* multilingual (tiktoken "multilingual") */
    {50257, {359, 3961}, {" -", "\xe2\x99\xaa"},
     {{3268, "\xef\xbf\xbd", "\xe2\x99"}, {873, " \xef\xbf\xbd", " \xe2\x99"}}},
    /* English-only (GPT-2) */
    {50256, {532, 705}, {" -", " '"},
     {{17992, "\xef\xbf\xbd", "\xe2\x99"}, {20724, " \xef\xbf\xbd", " \xe2\x99"}}},
};

static int token_is(const td_wmodel *m, int32_t id, const char *s)
{
    size_t len = 0;
    const uint8_t *p = td_wmodel_token(m, id, &len);
    return p && len == strlen(s) && memcmp(p, s, len) == 0;
}

/* The bytes of token id, with a stock vocabulary's lost bytes restored. */
static const uint8_t *true_bytes(const td_wmodel *m, const stock_vocab *sv, int32_t id,
                                 size_t *len)
{
    if (sv)
        for (int k = 0; k < 2; k++)
            if (sv->lost[k].id == id) {
                *len = strlen(sv->lost[k].real);
                return (const uint8_t *)sv->lost[k].real;
            }
    return td_wmodel_token(m, id, len);
}

static const stock_vocab *find_stock(const td_wmodel *m)
{
    for (size_t v = 0; v < sizeof stock_vocabs / sizeof stock_vocabs[0]; v++) {
        const stock_vocab *sv = &stock_vocabs[v];
        if (m->sp.eot != sv->eot)
            continue;
        int ok = 1;
        for (int k = 0; k < 2 && ok; k++)
            ok = token_is(m, sv->anchor_id[k], sv->anchor[k]) &&
                 token_is(m, sv->lost[k].id, sv->lost[k].stored);
        if (ok)
            return sv;
    }
    return NULL;
}

/* The text token (below eot) whose bytes are exactly s, or -1. */
static int32_t exact_token(const td_wmodel *m, const stock_vocab *sv, const char *s)
{
    size_t n = strlen(s);
    for (int32_t id = 0; id < m->sp.eot; id++) {
        size_t len = 0;
        const uint8_t *p = true_bytes(m, sv, id, &len);
        if (p && len == n && memcmp(p, s, n) == 0)
            return id;
    }
    return -1;
}

/* The longest text token that is a byte prefix of s and longer than
 * min_len (so that a lone leading space never stands in for a symbol),
 * or -1: what BPE's first token of s would be. */
static int32_t prefix_token(const td_wmodel *m, const stock_vocab *sv, const char *s,
                            size_t min_len)
{
    size_t n = strlen(s), best_len = min_len;
    int32_t best = -1;
    for (int32_t id = 0; id < m->sp.eot; id++) {
        size_t len = 0;
        const uint8_t *p = true_bytes(m, sv, id, &len);
        if (p && len > best_len && len <= n && memcmp(p, s, len) == 0) {
            best = id;
            best_len = len;
        }
    }
    return best;
}

static void mark(uint8_t *set, int n_vocab, int32_t id)
{
    if (id >= 0 && id < n_vocab)
        set[id] = 1;
}

/* Fill set[n_vocab] with openai's suppress_tokens "-1" plus the specials. */
static void suppress_set(const td_wmodel *m, uint8_t *set)
{
    int nv = m->hp.n_vocab;
    const td_wspecial *sp = &m->sp;
    const stock_vocab *sv = find_stock(m);
    memset(set, 0, (size_t)nv);
    char buf[32];

    /* hyphens and quotes are allowed between words, not starting one */
    mark(set, nv, exact_token(m, sv, " -"));
    mark(set, nv, exact_token(m, sv, " '"));
    for (size_t i = 0; i < sizeof nonspeech_symbols / sizeof nonspeech_symbols[0]; i++) {
        mark(set, nv, exact_token(m, sv, nonspeech_symbols[i]));
        snprintf(buf, sizeof buf, " %s", nonspeech_symbols[i]);
        mark(set, nv, exact_token(m, sv, buf));
    }
    for (size_t i = 0; i < sizeof nonspeech_misc / sizeof nonspeech_misc[0]; i++) {
        for (int sp_first = 0; sp_first < 2; sp_first++) {
            snprintf(buf, sizeof buf, "%s%s", sp_first ? " " : "", nonspeech_misc[i]);
            int32_t id = exact_token(m, sv, buf);
            if (id < 0)
                id = prefix_token(m, sv, buf, (size_t)sp_first);
            mark(set, nv, id);
        }
    }
    /* openai: [transcribe, translate, sot, sot_prev, sot_lm] + no_speech */
    mark(set, nv, sp->transcribe);
    mark(set, nv, sp->translate);
    mark(set, nv, sp->sot);
    mark(set, nv, sp->prev);
    mark(set, nv, sp->solm);
    mark(set, nv, sp->nospeech);
}

int td_wsuppress_tokens(const td_wmodel *m, int32_t *ids, int cap)
{
    int nv = m->hp.n_vocab;
    if (nv <= 0 || nv > TD_WMAX_VOCAB)
        return 0;
    uint8_t *set = malloc((size_t)nv);
    if (!set)
        return 0;
    suppress_set(m, set);
    int n = 0;
    for (int i = 0; i < nv; i++)
        if (set[i]) {
            if (n < cap)
                ids[n] = i;
            n++;
        }
    free(set);
    return n;
}

/* ---- decoder lifetime ------------------------------------------------- */

static void wres_reset(wres *r)
{
    r->n = 0;
    r->sum_logprob = 0;
    r->avg_logprob = NAN;
    r->no_speech_prob = NAN;
    r->compression_ratio = NAN;
    r->temperature = 0;
}

void td_wdecoder_free(td_wdecoder *d)
{
    if (!d)
        return;
    free(d->sup);
    free(d->logits);
    free(d->tok);
    free(d->tok2);
    free(d->tlp);
    free(d->tlp2);
    free(d->sum);
    free(d->sum2);
    free(d->src);
    free(d->cands);
    free(d->order);
    if (d->fin)
        for (int i = 0; i < d->max_group; i++) {
            free(d->fin[i].tok);
            free(d->fin[i].lp);
        }
    free(d->fin);
    free(d->init);
    free(d->win);
    free(d->res.tok);
    free(d->res.lp);
    free(d);
}

int td_wdecoder_new(const td_wmodel *m, const td_wbackend_ops *ops, td_wbackend *b,
                    const td_wdecode_opts *opts, td_wdecoder **out, td_error *err)
{
    *out = NULL;
    if (!m || !ops || !b || !opts)
        return td_error_set(err, TD_EINVAL, "whisper decoder: missing model, backend or options");
    if (ops->api_version != TD_WBACKEND_API_VERSION || !ops->encode || !ops->decode ||
        !ops->kv_copy)
        return td_error_set(err, TD_EINVAL, "whisper decoder: backend '%s' has API version %d, "
                            "need %d", ops->name ? ops->name : "?", ops->api_version,
                            TD_WBACKEND_API_VERSION);
    const td_whparams *hp = &m->hp;
    const td_wspecial *sp = &m->sp;
    if (hp->n_vocab <= 0 || hp->n_vocab > TD_WMAX_VOCAB || hp->n_text_ctx < 8 ||
        hp->n_text_ctx > TD_WMAX_TEXT_CTX || hp->n_audio_ctx <= 0 ||
        hp->n_audio_ctx > TD_WMAX_AUDIO_CTX || hp->n_mels <= 0 || hp->n_mels > TD_WMAX_MELS)
        return td_error_set(err, TD_EINVAL, "%s: hyper-parameters out of range for decoding",
                            m->path ? m->path : "model");
    if (sp->eot < 0 || sp->sot < 0 || sp->ts_begin <= sp->eot || sp->ts_begin >= hp->n_vocab ||
        sp->notimestamps < 0 || sp->prev < 0 || sp->transcribe < 0)
        return td_error_set(err, TD_EINVAL, "%s: special tokens missing", m->path ? m->path
                                                                                   : "model");
    const td_wdecode_opts *o = opts;
    if (o->beam_size < 1 || o->beam_size > MAX_GROUP || o->best_of < 1 ||
        o->best_of > MAX_GROUP)
        return td_error_set(err, TD_EINVAL, "whisper decoder: beam size %d / best of %d not in "
                            "1..%d", o->beam_size, o->best_of, MAX_GROUP);
    if (o->n_temperatures < 0 || o->n_temperatures > TD_WDEC_MAX_TEMPS)
        return td_error_set(err, TD_EINVAL, "whisper decoder: %d temperatures (at most %d)",
                            o->n_temperatures, TD_WDEC_MAX_TEMPS);
    for (int i = 0; i < o->n_temperatures; i++)
        if (!(o->temperatures[i] >= 0) || o->temperatures[i] > 100)
            return td_error_set(err, TD_EINVAL, "whisper decoder: bad temperature %g",
                                (double)o->temperatures[i]);
    if (o->max_tokens < 0 || o->max_tokens > hp->n_text_ctx)
        return td_error_set(err, TD_EINVAL, "whisper decoder: max_tokens %d not in 0..%d",
                            o->max_tokens, hp->n_text_ctx);
    if (o->language >= 0 && m->multilingual && o->language >= sp->n_langs)
        return td_error_set(err, TD_EINVAL, "%s: the model knows %d languages, not index %d",
                            m->path ? m->path : "model", sp->n_langs, o->language);
    if (m->multilingual && (sp->n_langs <= 0 || sp->translate < 0))
        return td_error_set(err, TD_EINVAL, "%s: multilingual model without language tokens",
                            m->path ? m->path : "model");

    td_wdecoder *d = calloc(1, sizeof *d);
    if (!d)
        return td_error_set(err, TD_ENOMEM, "out of memory for the whisper decoder");
    d->m = m;
    d->ops = ops;
    d->b = b;
    d->o = *o;
    if (d->o.n_temperatures == 0) {
        d->o.temperatures[0] = 0;
        d->o.n_temperatures = 1;
    }
    d->n_vocab = hp->n_vocab;
    d->n_ctx = hp->n_text_ctx;
    d->n_mels = hp->n_mels;
    d->win_frames = INPUT_STRIDE * hp->n_audio_ctx;
    d->sample_len = o->max_tokens > 0 ? o->max_tokens : hp->n_text_ctx / 2;
    /* precision = 30 s / n_audio_ctx = 0.02 s per timestamp step */
    d->max_initial_ts = (int)lround(MAX_INITIAL_TS / (30.0 / 1500.0));
    d->max_group = o->beam_size > o->best_of ? o->beam_size : o->best_of;
    d->language = m->multilingual ? o->language : td_wlang_index("en");
    d->rng = o->seed;
    d->cap = d->n_ctx + 2;

    size_t g = (size_t)d->max_group, nv = (size_t)d->n_vocab, cap = (size_t)d->cap;
    uint8_t *set = malloc(nv);
    d->sup = malloc(nv * sizeof *d->sup);
    d->logits = malloc(g * nv * sizeof *d->logits);
    d->tok = malloc(g * cap * sizeof *d->tok);
    d->tok2 = malloc(g * cap * sizeof *d->tok2);
    d->tlp = malloc(g * cap * sizeof *d->tlp);
    d->tlp2 = malloc(g * cap * sizeof *d->tlp2);
    d->sum = malloc(g * sizeof *d->sum);
    d->sum2 = malloc(g * sizeof *d->sum2);
    d->src = malloc(g * sizeof *d->src);
    d->cands = malloc(g * (g + 1) * sizeof *d->cands);
    d->order = malloc(g * (g + 1) * sizeof *d->order);
    d->fin = calloc(g, sizeof *d->fin);
    d->init = malloc(cap * sizeof *d->init);
    d->win = malloc((size_t)d->n_mels * (size_t)d->win_frames * sizeof *d->win);
    d->res.tok = malloc(cap * sizeof *d->res.tok);
    d->res.lp = malloc(cap * sizeof *d->res.lp);
    int ok = set && d->sup && d->logits && d->tok && d->tok2 && d->tlp && d->tlp2 && d->sum &&
             d->sum2 && d->src && d->cands && d->order && d->fin && d->init && d->win &&
             d->res.tok && d->res.lp;
    for (size_t i = 0; ok && i < g; i++) {
        d->fin[i].tok = malloc(cap * sizeof *d->fin[i].tok);
        d->fin[i].lp = malloc(cap * sizeof *d->fin[i].lp);
        ok = d->fin[i].tok && d->fin[i].lp;
    }
    if (!ok) {
        free(set);
        td_wdecoder_free(d);
        return td_error_set(err, TD_ENOMEM, "out of memory for the whisper decoder");
    }
    suppress_set(m, set);
    for (int i = 0; i < d->n_vocab; i++)
        if (set[i])
            d->sup[d->n_sup++] = i;
    free(set);
    wres_reset(&d->res);
    *out = d;
    return TD_OK;
}

/* ---- backend calls ---------------------------------------------------- */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void td_wdecoder_stats(const td_wdecoder *d, td_wdecode_stats *out)
{
    *out = d->stats;
}

static int be_encode(td_wdecoder *d, const float *mel, td_error *err)
{
    double t0 = mono_s();
    int rc = d->ops->encode(d->b, mel, err);
    d->stats.encoder_runs++;
    d->stats.encoder_s += mono_s() - t0;
    if (rc)
        td_error_prefix(err, "whisper %s encoder", d->ops->name ? d->ops->name : "backend");
    return rc;
}

static int be_decode(td_wdecoder *d, int n_seq, int n_tokens, const int32_t *tokens, int n_past,
                     float *logits, td_error *err)
{
    if (n_past + n_tokens > d->n_ctx)
        return td_error_set(err, TD_EINVAL, "whisper decoder: %d tokens exceed the text "
                            "context (%d)", n_past + n_tokens, d->n_ctx);
    double t0 = mono_s();
    int rc = d->ops->decode(d->b, n_seq, n_tokens, tokens, n_past, 0, logits, err);
    d->stats.decoder_calls++;
    d->stats.decoder_s += mono_s() - t0;
    if (rc)
        td_error_prefix(err, "whisper %s decoder", d->ops->name ? d->ops->name : "backend");
    return rc;
}

/* Language of the encoded window: one decoder step on [sot], softmax over
 * the language tokens only, argmax (openai's detect_language). */
static int detect_encoded(td_wdecoder *d, int *lang, float *prob, td_error *err)
{
    const td_wspecial *sp = &d->m->sp;
    int32_t sot = sp->sot;
    int rc = be_decode(d, 1, 1, &sot, 0, d->logits, err);
    if (rc)
        return rc;
    const float *x = d->logits + sp->lang_begin;
    double lse;
    if (row_lse(x, sp->n_langs, &lse))
        return td_error_set(err, TD_EENGINE, "whisper decoder: the backend gave NaN logits");
    int best = 0;
    for (int i = 1; i < sp->n_langs; i++)
        if (x[i] > x[best])
            best = i;
    *lang = best;
    if (prob)
        *prob = (float)exp((double)x[best] - lse);
    return TD_OK;
}

int td_wdecoder_detect_language(td_wdecoder *d, const float *mel_window, float *prob,
                                td_error *err)
{
    if (!d->m->multilingual) {
        if (prob)
            *prob = 1.0f;
        return td_wlang_index("en");
    }
    int rc = be_encode(d, mel_window, err);
    if (rc)
        return rc;
    int lang = -1;
    rc = detect_encoded(d, &lang, prob, err);
    return rc ? rc : lang;
}

/* ---- one window ------------------------------------------------------- */

/* SuppressBlank, SuppressTokens and ApplyTimestampRules on one sequence's
 * logits, in openai's order; samp/ns are its sampled tokens so far. */
static void apply_filters(const td_wdecoder *d, float *x, const int32_t *samp, int ns)
{
    const td_wspecial *sp = &d->m->sp;
    int nv = d->n_vocab, tsb = sp->ts_begin;
    if (ns == 0) {
        if (sp->blank >= 0)
            x[sp->blank] = -INFINITY;
        x[sp->eot] = -INFINITY;
    }
    for (int i = 0; i < d->n_sup; i++)
        x[d->sup[i]] = -INFINITY;
    if (!d->o.timestamps)
        return;

    x[sp->notimestamps] = -INFINITY;
    /* timestamps come in pairs, except directly before eot */
    int last_ts = ns >= 1 && samp[ns - 1] >= tsb;
    int penult_ts = ns < 2 || samp[ns - 2] >= tsb;
    if (last_ts) {
        if (penult_ts)
            mask_range(x, tsb, nv);        /* after a pair: text */
        else
            mask_range(x, 0, sp->eot);     /* after a lone one: a timestamp or eot */
    }
    /* timestamps never decrease; after text or a pair they must grow, so
     * that every segment has a nonzero length */
    int32_t last = -1;
    for (int i = ns - 1; i >= 0; i--)
        if (samp[i] >= tsb) {
            last = samp[i];
            break;
        }
    if (last >= 0) {
        int32_t upto = last_ts && !penult_ts ? last : last + 1;
        mask_range(x, tsb, upto < nv ? upto : nv);
    }
    if (ns == 0) {
        mask_range(x, 0, tsb);             /* the first token is a timestamp */
        int allowed = tsb + d->max_initial_ts;
        if (allowed + 1 < nv)
            mask_range(x, allowed + 1, nv);
    }
    /* when the timestamps together outweigh every text token, take one:
     * logsumexp(logprobs[ts:]) > max(logprobs[:ts]) compares the same as
     * the raw logits, the normalizer cancelling */
    double ts_lse, mx = -INFINITY;
    if (row_lse(x + tsb, nv - tsb, &ts_lse))
        return;
    for (int i = 0; i < tsb; i++)
        if (x[i] > mx)
            mx = x[i];
    if (ts_lse > mx)
        mask_range(x, 0, tsb);
}

/* Indices of the k largest entries of x (k <= n), largest first, ties to
 * the lower index (torch.topk leaves ties unspecified). */
static void topk(const float *x, int n, int k, int *idx)
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

static int32_t *seq_tok(const td_wdecoder *d, int32_t *base, int s)
{
    return base + (size_t)s * (size_t)d->cap;
}

static float *seq_lp(const td_wdecoder *d, float *base, int s)
{
    return base + (size_t)s * (size_t)d->cap;
}

/* Greedy (T = 0) or sampling (T > 0) step for every sequence: openai's
 * GreedyDecoder.update. Returns 1 when every sequence has ended. */
static int step_greedy(td_wdecoder *d, int g, int cur, float temp, double *lse_row)
{
    int32_t eot = d->m->sp.eot;
    int done = 1;
    for (int s = 0; s < g; s++) {
        int32_t *t = seq_tok(d, d->tok, s);
        float *lp = seq_lp(d, d->tlp, s);
        if (t[cur - 1] == eot) {
            t[cur] = eot;
            lp[cur] = 0;
            continue;
        }
        const float *x = d->logits + (size_t)s * (size_t)d->n_vocab;
        double lse = lse_row[s];
        int32_t next = 0;
        if (temp == 0) {
            for (int i = 1; i < d->n_vocab; i++)
                if (x[i] > x[next])
                    next = i;
        } else {
            /* Categorical(logits / T): softmax at temperature T */
            double mx = -INFINITY, tot = 0;
            for (int i = 0; i < d->n_vocab; i++)
                if (x[i] > mx)
                    mx = x[i];
            for (int i = 0; i < d->n_vocab; i++)
                tot += exp(((double)x[i] - mx) / temp);
            double u = rng_uniform(&d->rng) * tot, acc = 0;
            next = -1;
            for (int i = 0; i < d->n_vocab; i++) {
                if (x[i] == -INFINITY)
                    continue;
                acc += exp(((double)x[i] - mx) / temp);
                next = i;
                if (acc > u)
                    break;
            }
            if (next < 0)
                next = eot;
        }
        double l = logprob(x, next, lse);
        d->sum[s] += l;
        t[cur] = next;
        lp[cur] = (float)l;
        if (next != eot)
            done = 0;
    }
    return done;
}

static int seq_equal(const td_wdecoder *d, int a, int b, int len)
{
    return memcmp(seq_tok(d, d->tok, a), seq_tok(d, d->tok, b), (size_t)len * sizeof(int32_t))
           == 0;
}

/* Beam search step (openai's BeamSearchDecoder.update, patience 1):
 * extends every beam by its beam_size + 1 best tokens, keeps the best
 * beam_size unfinished candidates, collects finished ones, and makes the
 * KV caches follow. Returns 1 when beam_size candidates have finished,
 * or a negative td_rc. */
static int step_beam(td_wdecoder *d, int g, int cur, int n_init, const double *lse_row,
                     td_error *err)
{
    int32_t eot = d->m->sp.eot;
    int nc = 0, idx[MAX_GROUP + 1];
    for (int j = 0; j < g; j++) {
        const float *x = d->logits + (size_t)j * (size_t)d->n_vocab;
        topk(x, d->n_vocab, g + 1, idx);
        for (int k = 0; k < g + 1; k++) {
            double l = logprob(x, idx[k], lse_row[j]);
            double score = d->sum[j] + l;
            /* the same sequence from an identical beam (all beams are
             * copies of the prompt at first) replaces the earlier entry
             * in place, as a Python dict does */
            int dup = -1;
            for (int c = 0; c < nc && dup < 0; c++)
                if (d->cands[c].tok == idx[k] && seq_equal(d, d->cands[c].src, j, cur))
                    dup = c;
            cand cd = {score, (float)l, j, idx[k]};
            if (dup >= 0)
                d->cands[dup] = cd;
            else
                d->cands[nc++] = cd;
        }
    }
    /* stable sort by score, best first (Python's sorted(reverse=True)) */
    for (int c = 0; c < nc; c++) {
        int j = c;
        while (j > 0 && d->cands[c].score > d->cands[d->order[j - 1]].score) {
            d->order[j] = d->order[j - 1];
            j--;
        }
        d->order[j] = c;
    }
    int saved = 0, identity = 1;
    for (int oi = 0; oi < nc && saved < g; oi++) {
        const cand *c = &d->cands[d->order[oi]];
        const int32_t *t = seq_tok(d, d->tok, c->src);
        const float *lp = seq_lp(d, d->tlp, c->src);
        if (c->tok == eot) {
            /* newly finished, in score order; kept while there is room */
            if (d->n_fin < g) {
                fin_seq *f = &d->fin[d->n_fin++];
                f->n = cur - n_init;
                memcpy(f->tok, t + n_init, (size_t)f->n * sizeof *f->tok);
                memcpy(f->lp, lp + n_init, (size_t)f->n * sizeof *f->lp);
                f->sum = c->score;
            }
            continue;
        }
        int32_t *t2 = seq_tok(d, d->tok2, saved);
        float *lp2 = seq_lp(d, d->tlp2, saved);
        memcpy(t2, t, (size_t)cur * sizeof *t2);
        memcpy(lp2, lp, (size_t)cur * sizeof *lp2);
        t2[cur] = c->tok;
        lp2[cur] = c->lp;
        d->sum2[saved] = c->score;
        d->src[saved] = c->src;
        identity &= c->src == saved;
        saved++;
    }
    if (saved < g) /* cannot happen: each beam offers g + 1 distinct tokens */
        return td_error_set(err, TD_EENGINE, "whisper beam search: %d beams left of %d", saved,
                            g);
    int32_t *tt = d->tok;
    d->tok = d->tok2;
    d->tok2 = tt;
    float *tl = d->tlp;
    d->tlp = d->tlp2;
    d->tlp2 = tl;
    memcpy(d->sum, d->sum2, (size_t)g * sizeof *d->sum);
    if (!identity) {
        int rc = d->ops->kv_copy(d->b, d->src, g, cur, err);
        if (rc) {
            td_error_prefix(err, "whisper %s kv_copy", d->ops->name ? d->ops->name : "backend");
            return rc;
        }
    }
    return d->n_fin >= g;
}

/* Decode the encoded window at temperature temp into d->res. */
static int run_window(td_wdecoder *d, const int32_t *prompt, int n_prompt, float temp,
                      td_error *err)
{
    const td_wmodel *m = d->m;
    const td_wspecial *sp = &m->sp;
    int nv = d->n_vocab, rc;
    int beam = temp == 0 && d->o.beam_size > 1;
    int g = temp == 0 ? (beam ? d->o.beam_size : 1) : d->o.best_of;
    wres *r = &d->res;
    wres_reset(r);
    r->temperature = temp;

    /* initial tokens: [prev] + prompt[-(n_ctx/2 - 1):] + SOT sequence */
    int n_init = 0;
    if (n_prompt > 0) {
        int keep = d->n_ctx / 2 - 1;
        if (n_prompt > keep) {
            prompt += n_prompt - keep;
            n_prompt = keep;
        }
        d->init[n_init++] = sp->prev;
        for (int i = 0; i < n_prompt; i++) {
            if (prompt[i] < 0 || prompt[i] >= nv)
                return td_error_set(err, TD_EINVAL, "whisper decoder: prompt token %d out of "
                                    "range", (int)prompt[i]);
            d->init[n_init++] = prompt[i];
        }
    }
    int sot_index = n_init;
    d->init[n_init++] = sp->sot;
    if (m->multilingual) {
        int lang = d->language;
        if (lang < 0) {
            rc = detect_encoded(d, &lang, NULL, err);
            if (rc)
                return rc;
        }
        d->init[n_init++] = sp->lang_begin + lang;
        d->init[n_init++] = d->o.translate ? sp->translate : sp->transcribe;
    }
    if (!d->o.timestamps)
        d->init[n_init++] = sp->notimestamps;

    /* the prompt, once, for sequence 0: up to sot (no_speech_prob is read
     * at the sot position), then the rest of the SOT sequence */
    rc = be_decode(d, 1, sot_index + 1, d->init, 0, d->logits, err);
    if (rc)
        return rc;
    if (sp->nospeech >= 0) {
        double lse;
        if (row_lse(d->logits, nv, &lse))
            return td_error_set(err, TD_EENGINE, "whisper decoder: the backend gave NaN logits");
        r->no_speech_prob = exp((double)d->logits[sp->nospeech] - lse);
    }
    if (n_init > sot_index + 1) {
        rc = be_decode(d, 1, n_init - sot_index - 1, d->init + sot_index + 1, sot_index + 1,
                       d->logits, err);
        if (rc)
            return rc;
    }
    if (g > 1) {
        for (int s = 0; s < g; s++)
            d->src[s] = 0;
        rc = d->ops->kv_copy(d->b, d->src, g, n_init, err);
        if (rc) {
            td_error_prefix(err, "whisper %s kv_copy", d->ops->name ? d->ops->name : "backend");
            return rc;
        }
        for (int s = 1; s < g; s++)
            memcpy(d->logits + (size_t)s * (size_t)nv, d->logits, (size_t)nv * sizeof(float));
    }
    for (int s = 0; s < g; s++) {
        memcpy(seq_tok(d, d->tok, s), d->init, (size_t)n_init * sizeof(int32_t));
        d->sum[s] = 0;
    }
    d->n_fin = 0;

    double lse_row[MAX_GROUP];
    int32_t last[MAX_GROUP];
    int cur = n_init; /* tokens in every sequence */
    for (int i = 0; i < d->sample_len; i++) {
        if (i > 0) {
            for (int s = 0; s < g; s++)
                last[s] = seq_tok(d, d->tok, s)[cur - 1];
            rc = be_decode(d, g, 1, last, cur - 1, d->logits, err);
            if (rc)
                return rc;
        }
        for (int s = 0; s < g; s++) {
            int32_t *t = seq_tok(d, d->tok, s);
            float *x = d->logits + (size_t)s * (size_t)nv;
            if (!beam && t[cur - 1] == sp->eot)
                continue; /* ended: its next token is eot whatever the logits */
            apply_filters(d, x, t + n_init, cur - n_init);
            if (row_lse(x, nv, &lse_row[s]))
                return td_error_set(err, TD_EENGINE, "whisper decoder: the backend gave NaN "
                                    "logits");
        }
        int done;
        if (beam) {
            done = step_beam(d, g, cur, n_init, lse_row, err);
            if (done < 0)
                return done;
        } else {
            done = step_greedy(d, g, cur, temp, lse_row);
        }
        cur++;
        if (done || cur > d->n_ctx)
            break;
    }

    /* finalize: the candidates, each cut at its first eot */
    if (beam) {
        if (d->n_fin < g) {
            /* not enough finished: add the beams, best first (numpy's
             * argsort reversed: ties go to the higher index) */
            int ord[MAX_GROUP];
            for (int s = 0; s < g; s++) {
                int j = s;
                while (j > 0 && d->sum[s] >= d->sum[ord[j - 1]]) {
                    ord[j] = ord[j - 1];
                    j--;
                }
                ord[j] = s;
            }
            for (int k = 0; k < g && d->n_fin < g; k++) {
                fin_seq *f = &d->fin[d->n_fin++];
                f->n = cur - n_init;
                memcpy(f->tok, seq_tok(d, d->tok, ord[k]) + n_init,
                       (size_t)f->n * sizeof *f->tok);
                memcpy(f->lp, seq_lp(d, d->tlp, ord[k]) + n_init,
                       (size_t)f->n * sizeof *f->lp);
                f->sum = d->sum[ord[k]];
            }
        }
    } else {
        d->n_fin = 0;
        for (int s = 0; s < g; s++) {
            fin_seq *f = &d->fin[d->n_fin++];
            f->n = cur - n_init;
            memcpy(f->tok, seq_tok(d, d->tok, s) + n_init, (size_t)f->n * sizeof *f->tok);
            memcpy(f->lp, seq_lp(d, d->tlp, s) + n_init, (size_t)f->n * sizeof *f->lp);
            f->sum = d->sum[s];
        }
    }
    /* rank by sum logprob / length (length_penalty None); a length of 0,
     * which openai would divide by, counts as 1 */
    int best = -1;
    double best_score = 0;
    for (int k = 0; k < d->n_fin; k++) {
        fin_seq *f = &d->fin[k];
        for (int j = 0; j < f->n; j++)
            if (f->tok[j] == sp->eot) {
                f->n = j;
                break;
            }
        double score = f->sum / (f->n > 0 ? f->n : 1);
        if (best < 0 || score > best_score) {
            best = k;
            best_score = score;
        }
    }
    const fin_seq *f = &d->fin[best];
    memcpy(r->tok, f->tok, (size_t)f->n * sizeof *r->tok);
    memcpy(r->lp, f->lp, (size_t)f->n * sizeof *r->lp);
    r->n = f->n;
    r->sum_logprob = f->sum;
    r->avg_logprob = f->sum / (f->n + 1);

    td_buf text;
    td_buf_init(&text, TEXT_LIMIT);
    rc = tokens_text(m, r->tok, r->n, sp->ts_begin, 1, &text);
    if (!rc)
        r->compression_ratio = td_wcompression_ratio((const uint8_t *)text.data, text.len);
    td_buf_release(&text);
    if (rc)
        return td_error_set(err, rc, "whisper decoder: out of memory for text");
    return TD_OK;
}

int td_wdecoder_decode_window(td_wdecoder *d, const float *mel_window, const int32_t *prompt,
                              int n_prompt, float temperature, td_wwindow_result *res,
                              td_error *err)
{
    memset(res, 0, sizeof *res);
    if (!(temperature >= 0) || n_prompt < 0 || (n_prompt > 0 && !prompt))
        return td_error_set(err, TD_EINVAL, "whisper decoder: bad temperature or prompt");
    int rc = be_encode(d, mel_window, err);
    if (rc)
        return rc;
    rc = run_window(d, prompt, n_prompt, temperature, err);
    if (rc)
        return rc;
    const wres *r = &d->res;
    res->tokens = malloc((size_t)(r->n > 0 ? r->n : 1) * sizeof *res->tokens);
    if (!res->tokens)
        return td_error_set(err, TD_ENOMEM, "out of memory for a window's tokens");
    memcpy(res->tokens, r->tok, (size_t)r->n * sizeof *res->tokens);
    res->n_tokens = r->n;
    res->avg_logprob = r->avg_logprob;
    res->no_speech_prob = r->no_speech_prob;
    res->compression_ratio = r->compression_ratio;
    res->temperature = r->temperature;
    return TD_OK;
}

void td_wwindow_result_free(td_wwindow_result *res)
{
    if (!res)
        return;
    free(res->tokens);
    memset(res, 0, sizeof *res);
}

/* ---- the transcribe loop ---------------------------------------------- */

/* Tokens of previous text, for the prompt: only a tail is kept, as the
 * prompt takes at most n_ctx/2 - 1 of them after reset_since. */
typedef struct prompt_buf {
    int32_t tok[PROMPT_KEEP];
    int n;
    int reset_since;
} prompt_buf;

static void prompt_add(prompt_buf *p, const int32_t *t, int n)
{
    for (int i = 0; i < n; i++) {
        if (p->n == PROMPT_KEEP) {
            int drop = PROMPT_KEEP / 2;
            memmove(p->tok, p->tok + drop, (size_t)(p->n - drop) * sizeof *p->tok);
            p->n -= drop;
            p->reset_since = p->reset_since > drop ? p->reset_since - drop : 0;
        }
        p->tok[p->n++] = t[i];
    }
}

static int needs_fallback(const td_wdecode_opts *o, const wres *r)
{
    int fb = 0;
    if (o->compression_ratio_threshold > 0 &&
        r->compression_ratio > o->compression_ratio_threshold)
        fb = 1; /* too repetitive */
    if (!isnan(o->logprob_threshold) && r->avg_logprob < o->logprob_threshold)
        fb = 1; /* too improbable */
    if (!isnan(o->no_speech_threshold) && r->no_speech_prob > o->no_speech_threshold &&
        !isnan(o->logprob_threshold) && r->avg_logprob < o->logprob_threshold)
        fb = 0; /* silence: no retry will help */
    return fb;
}

/* One segment of the window: tokens tok[0..n) (with their log-probs),
 * from start to end seconds. Words split at tokens that begin with a
 * space; each word gets the share of the span its characters make. Adds
 * nothing (and says so in *added) when the segment is empty or
 * instantaneous, as openai clears those. */
static int add_segment(td_wdecoder *d, td_transcript *out, const int32_t *tok, const float *lp,
                       int n, double start, double end, double content_end, int *added,
                       td_error *err)
{
    const td_wmodel *m = d->m;
    int32_t eot = m->sp.eot;
    *added = 0;
    td_buf text, wbuf;
    td_buf_init(&text, TEXT_LIMIT);
    td_buf_init(&wbuf, TEXT_LIMIT);
    td_word *words = NULL;
    size_t n_words = 0;
    int rc = tokens_text(m, tok, n, eot, 1, &text);
    if (rc)
        goto out_nomem;
    if (start == end || text.len == 0) {
        rc = TD_OK;
        goto out;
    }
    if (end > content_end)
        end = content_end;
    if (start > end)
        start = end;

    /* words: runs of text tokens, each starting at a token with a space */
    int n_text = 0;
    for (int i = 0; i < n; i++)
        n_text += tok[i] < eot;
    words = calloc((size_t)(n_text > 0 ? n_text : 1), sizeof *words);
    double *chars = calloc((size_t)(n_text > 0 ? n_text : 1), sizeof *chars);
    if (!words || !chars) {
        free(chars);
        rc = TD_ENOMEM;
        goto out_nomem;
    }
    double total = 0;
    for (int i = 0; i < n;) {
        if (tok[i] >= eot) {
            i++;
            continue;
        }
        int j = i + 1;
        while (j < n && tok[j] < eot) {
            size_t len = 0;
            const uint8_t *p = td_wmodel_token(m, tok[j], &len);
            if (p && len && p[0] == ' ')
                break;
            j++;
        }
        double lps = 0;
        int cnt = 0;
        for (int k = i; k < j; k++)
            if (tok[k] < eot) {
                lps += lp[k];
                cnt++;
            }
        rc = tokens_text(m, tok + i, j - i, eot, 1, &wbuf);
        if (rc) {
            free(chars);
            goto out_nomem;
        }
        i = j;
        if (wbuf.len == 0)
            continue;
        td_word *w = &words[n_words];
        w->text = strdup(wbuf.data);
        if (!w->text) {
            free(chars);
            rc = TD_ENOMEM;
            goto out_nomem;
        }
        w->prob = (float)exp(lps / (cnt > 0 ? cnt : 1));
        chars[n_words] = (double)count_cps(wbuf.data, wbuf.len);
        total += chars[n_words];
        n_words++;
    }
    double acc = 0;
    for (size_t k = 0; k < n_words; k++) {
        words[k].start = start + (end - start) * (acc / total);
        acc += chars[k];
        words[k].end = k + 1 == n_words ? end : start + (end - start) * (acc / total);
    }
    free(chars);
    rc = td_transcript_add(out, start, end, text.data, words, n_words, err);
    if (rc)
        goto out;
    *added = 1;
    goto out;

out_nomem:
    rc = td_error_set(err, TD_ENOMEM, "out of memory for a whisper segment");
out:
    for (size_t k = 0; k < n_words; k++)
        free(words[k].text);
    free(words);
    td_buf_release(&wbuf);
    td_buf_release(&text);
    return rc;
}

/* Copy mel[:, seek:seek+size] into the window buffer, zero after it
 * (openai's pad_or_trim pads with 0). */
static void copy_window(td_wdecoder *d, const float *mel, size_t n_frames, size_t seek,
                        size_t size)
{
    size_t w = (size_t)d->win_frames;
    for (int b = 0; b < d->n_mels; b++) {
        float *dst = d->win + (size_t)b * w;
        if (size)
            memcpy(dst, mel + (size_t)b * n_frames + seek, size * sizeof *dst);
        memset(dst + size, 0, (w - size) * sizeof *dst);
    }
}

int td_wdecoder_transcribe(td_wdecoder *d, const float *mel, size_t n_frames,
                           size_t content_frames, double time_offset, td_transcript *out,
                           int *language, td_wdecode_progress progress, void *user,
                           td_error *err)
{
    const td_wmodel *m = d->m;
    const td_wspecial *sp = &m->sp;
    const td_wdecode_opts *o = &d->o;
    if (!mel || content_frames > n_frames)
        return td_error_set(err, TD_EINVAL, "whisper decoder: %zu content frames of %zu",
                            content_frames, n_frames);
    size_t W = (size_t)d->win_frames;
    int rc;
    /* time per mel frame and per timestamp step, as openai computes them */
    const double frame_s = (double)HOP_LENGTH / SAMPLE_RATE;
    const double precision = (double)(INPUT_STRIDE * HOP_LENGTH) / SAMPLE_RATE;
    const double content_end = time_offset + (double)content_frames * HOP_LENGTH / SAMPLE_RATE;

    /* language: detected once, on the first 30 s (padding included) */
    int encoded0 = 0;
    if (d->language < 0 && content_frames > 0) {
        copy_window(d, mel, n_frames, 0, n_frames < W ? n_frames : W);
        rc = be_encode(d, d->win, err);
        if (rc)
            return rc;
        int lang = -1;
        rc = detect_encoded(d, &lang, NULL, err);
        if (rc)
            return rc;
        d->language = lang;
        encoded0 = content_frames >= W; /* the first window is this one */
    }
    if (language)
        *language = d->language;
    if (!out->language[0] && td_wlang_code(d->language))
        snprintf(out->language, sizeof out->language, "%s", td_wlang_code(d->language));

    prompt_buf *pb = calloc(1, sizeof *pb);
    if (!pb)
        return td_error_set(err, TD_ENOMEM, "out of memory for the whisper prompt");
    rc = TD_OK;
    size_t seek = 0;
    while (seek < content_frames) {
        double window_offset = (double)seek * HOP_LENGTH / SAMPLE_RATE;
        size_t size = content_frames - seek < W ? content_frames - seek : W;
        double seg_duration = (double)size * HOP_LENGTH / SAMPLE_RATE;
        if (!(seek == 0 && encoded0)) {
            copy_window(d, mel, n_frames, seek, size);
            rc = be_encode(d, d->win, err);
            if (rc)
                goto out;
        }
        /* temperature fallback */
        const int32_t *prompt = pb->tok + pb->reset_since;
        int n_prompt = pb->n - pb->reset_since;
        for (int ti = 0; ti < o->n_temperatures; ti++) {
            rc = run_window(d, prompt, n_prompt, o->temperatures[ti], err);
            if (rc)
                goto out;
            if (!needs_fallback(o, &d->res))
                break;
            if (ti + 1 < o->n_temperatures)
                d->stats.fallbacks++;
        }
        const wres *r = &d->res;
        const int32_t *tok = r->tok;
        int n = r->n;
        d->stats.windows++;

        if (!isnan(o->no_speech_threshold)) {
            int skip = r->no_speech_prob > o->no_speech_threshold;
            if (!isnan(o->logprob_threshold) && r->avg_logprob > o->logprob_threshold)
                skip = 0; /* probable enough to keep despite no_speech_prob */
            if (skip) {
                d->stats.silent++;
                seek += size;
                if (!o->condition_after_fallback)
                    pb->reset_since = pb->n; /* home video: no prompt across silence */
                if (progress && progress(user, (double)seek * frame_s)) {
                    rc = td_error_set(err, TD_EABORT, "whisper transcription stopped");
                    goto out;
                }
                continue;
            }
        }

        d->stats.tokens += n;
        /* segments: split at consecutive timestamps */
        size_t previous_seek = seek;
        int32_t tsb = sp->ts_begin;
        int single_end = n >= 2 && tok[n - 2] < tsb && tok[n - 1] >= tsb;
        int keep_text = o->condition_after_fallback || r->temperature == 0;
        int n_cons = 0;
        for (int i = 0; i + 1 < n; i++)
            n_cons += tok[i] >= tsb && tok[i + 1] >= tsb;
        if (n_cons > 0) {
            int last_slice = 0;
            for (int i = 0; i + 1 <= n; i++) {
                int cur_slice;
                if (i + 1 < n && tok[i] >= tsb && tok[i + 1] >= tsb)
                    cur_slice = i + 1;
                else if (i + 1 == n && single_end)
                    cur_slice = n;
                else
                    continue;
                const int32_t *st = tok + last_slice;
                int sn = cur_slice - last_slice;
                double start = window_offset + (double)(st[0] - tsb) * precision;
                double end = window_offset + (double)(st[sn - 1] - tsb) * precision;
                int added = 0;
                rc = add_segment(d, out, st, r->lp + last_slice, sn, time_offset + start,
                                 time_offset + end, content_end, &added, err);
                if (rc)
                    goto out;
                if (added && keep_text)
                    prompt_add(pb, st, sn);
                last_slice = cur_slice;
            }
            if (single_end) {
                seek += size; /* no speech after the last timestamp */
            } else {
                /* the unfinished segment is decoded again from its start */
                seek += (size_t)(tok[last_slice - 1] - tsb) * INPUT_STRIDE;
            }
        } else {
            double duration = seg_duration;
            int32_t last_ts = -1;
            for (int i = 0; i < n; i++)
                if (tok[i] >= tsb)
                    last_ts = tok[i];
            if (last_ts >= 0 && last_ts != tsb)
                duration = (double)(last_ts - tsb) * precision;
            int added = 0;
            rc = add_segment(d, out, tok, r->lp, n, time_offset + window_offset,
                             time_offset + window_offset + duration, content_end, &added, err);
            if (rc)
                goto out;
            if (added && keep_text)
                prompt_add(pb, tok, n);
            seek += size;
        }
        if (seek <= previous_seek) /* cannot happen under the timestamp rules */
            seek = previous_seek + size;

        if (!o->condition_on_previous || r->temperature > o->prompt_reset_on_temperature)
            pb->reset_since = pb->n; /* no prompt after a high temperature */
        if (progress &&
            progress(user, (double)(seek < content_frames ? seek : content_frames) * frame_s)) {
            rc = td_error_set(err, TD_EABORT, "whisper transcription stopped");
            goto out;
        }
    }
out:
    free(pb);
    return rc;
}
