/*
 * decode.c: openai-whisper's decoding (whisper/decoding.py, DecodingTask)
 * and transcribe loop (whisper/transcribe.py) over a backend table, one
 * window at a time (sequential) or many at once (batched).
 *
 * One window's decode, as DecodingTask.run does it (a "job", see wjob):
 *
 *   initial tokens = [prev] + prompt[-223:] (when there is a prompt)
 *                    + [sot, language, task] (multilingual) or [sot]
 *                    (+ notimestamps when timestamps are off)
 *   all but the last initial token are decoded once into sequence 0's KV
 *   slot, in pieces that end at the sot token when it is not last (its
 *   logits give no_speech_prob); kv_copy forks them into the group's
 *   slots (beam_size beams at T = 0, best_of samples at T > 0), and each
 *   sequence's first step feeds the last initial token;
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
 * and keep the last text tokens as the next prompt. Each window's decode
 * is made into segments with word times (window_build), checked by the
 * guards and kept, restarted at a gap, or decoded again (window_settle).
 *
 * Batched (td_wdecoder_transcribe_chunks): every job that is not done
 * adds its sequences to one backend call per step (jobs_step), and the
 * sampling step runs on the backend where it has sample(). Each chunk of
 * speech walks its own seek as the loop above does; a finished job's
 * window and KV slots take the next chunk (or the same chunk's next
 * window, or its next temperature) at once.
 *
 * Where this is not openai-whisper bit for bit (see also decode.h):
 *  - sampling uses tapedeck's own seeded PRNG (splitmix64), not torch's;
 *  - log-softmax is computed in double, openai's in float32;
 *  - top-k ties in beam search go to the lower token id;
 *  - the suppressed symbol tokens are found by their bytes, not by
 *    running the BPE encoder (td_wsuppress_tokens says how);
 *  - word times always (openai's word_timestamps=True, whisper/align.h),
 *    or, for a model whose alignment heads are not known, the segment's
 *    span shared by character counts; with them a window that ends inside
 *    a segment still goes on from its last timestamp (openai's goes on
 *    from the last word's end), and words are kept in time order;
 *  - the guards (whisper/guard.h, decode.h): a window that drops or
 *    repeats speech is decoded again, or the next window starts at the gap;
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
#include "whisper/align.h"
#include "whisper/sample.h"

#define HOP_LENGTH 160
#define SAMPLE_RATE 16000
#define INPUT_STRIDE 2            /* mel frames per encoder output position */
#define MAX_GROUP 64              /* beams or samples decoded together */
#define MAX_INITIAL_TS 1.0        /* seconds: openai's max_initial_timestamp */
#define PROMPT_KEEP 1024          /* tokens of previous text kept for the prompt */
#define TEXT_LIMIT ((size_t)1 << 20)
#define GUARD_CAP 16              /* issues kept per window */
#define GAP_SEEK_MIN_S 1.0        /* a gap this far into a window starts the next one */
#define GAP_RETRIES 1             /* temperatures tried again for gaps alone */
#define GAP_LONG_S 8.0            /* uncovered speech that is decoded again (shorter: logged) */
#define SPEECH_MAX ((size_t)1 << 20) /* speech regions looked at */

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

/* One window's decode at one temperature (a "job"): DecodingTask.run as a
 * state machine that steps together with other jobs, so that a batch of
 * windows shares every decoder call.
 *
 *   PRE   init[0 .. n_pre) is decoded into slot[0], in at most two pieces:
 *         up to the sot token when sot is not last (its row gives
 *         no_speech_prob), then the rest; n_pre = n_init - 1
 *   (fork) slot[0]'s n_pre positions are copied into slot[1 .. g)
 *   STEP  each live sequence feeds its last token (the first step: the
 *         last initial token, so every sequence gets its own row of
 *         logits) and one token is chosen per sequence (greedy, sampling
 *         or beam search), until every sequence ended, sample_len steps,
 *         or the text context is full
 *   DONE  the candidates are ranked into res
 */
enum job_phase { JOB_PRE, JOB_STEP, JOB_DONE };

typedef struct wjob {
    int window;                   /* window slot */
    int chunk;                    /* batched mode: the chunk it decodes; -1 = none */
    int temp_index;               /* index into the options' temperatures */
    float temp;
    int beam, g;                  /* beam search (T = 0, beam_size > 1); sequences */
    int phase;
    int n_init, sot_index, n_pre, pre_done;
    int cur;                      /* tokens in every sequence */
    int steps;                    /* tokens chosen so far */
    int slot[MAX_GROUP];          /* KV slot of each sequence */
    int row[MAX_GROUP];           /* its row in the current call, -1 = none */
    int32_t *init;                /* [cap]: initial tokens */
    int32_t *tok, *tok2;          /* [g][cap]: full histories, and scratch */
    float *tlp, *tlp2;            /* [g][cap]: log-prob of each token */
    double *sum, *sum2;           /* [g] */
    int *src;                     /* [g] beam sources of a step */
    cand *cands;                  /* [g * (g + 1)] */
    int *order;                   /* same size: sort scratch */
    fin_seq *fin;                 /* [g] */
    int n_fin;
    double no_speech_prob;
    wres res;
} wjob;

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
    int n_jobs;                   /* windows decoded together (opts.batch) */
    int max_rows;                 /* most tokens in one decode call */
    int language;                 /* resolved language index, -1 = not yet */
    uint64_t rng;
    int cap;                      /* tokens per sequence: n_ctx + 2 */

    int32_t *sup;                 /* tokens suppressed at every step */
    int n_sup;
    td_wsampler sampler;
    wjob *jobs;                   /* [n_jobs] */
    int *free_slots;              /* KV slots not held by a job */
    int n_free;
    /* one decode call */
    td_wseq *seqs;                /* [n_jobs * max_group] */
    int32_t *call_tok;            /* [max_rows] */
    td_wsample_in *s_in;          /* [n_jobs * max_group] */
    td_wsample_out *s_out;
    td_wkv_copy *pairs;           /* [n_jobs * max_group] */
    float *logits;                /* [n_jobs * max_group][n_vocab], without sample() */
    float *win;                   /* [n_mels][win_frames]: one window of mel */
    float *jwin;                  /* batched: [n_jobs][n_mels][win_frames], a chunk's rest */
    td_wdecode_stats stats;
    /* word alignment */
    const td_align_heads *heads;  /* NULL: character-count word times */
    const char *no_align;         /* why heads is NULL */
    td_align_seg *aseg;           /* [cap]: a window's segments */
    int *aseg_from;               /* [cap]: where each starts in the window's tokens */
    float *probs;                 /* [cap]: text token probabilities */
    /* guards */
    td_guard_params gp;
    const td_guard_span *speech;  /* borrowed (td_wdecoder_set_speech) */
    size_t n_speech;
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
    o->word_align = 1;
    o->guard = 1;
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

static void job_release(wjob *j, int g)
{
    free(j->init);
    free(j->tok);
    free(j->tok2);
    free(j->tlp);
    free(j->tlp2);
    free(j->sum);
    free(j->sum2);
    free(j->src);
    free(j->cands);
    free(j->order);
    if (j->fin)
        for (int i = 0; i < g; i++) {
            free(j->fin[i].tok);
            free(j->fin[i].lp);
        }
    free(j->fin);
    free(j->res.tok);
    free(j->res.lp);
}

/* A job's tables for up to g sequences of cap tokens; 0 or TD_ENOMEM. */
static int job_alloc(wjob *j, int g, int cap)
{
    size_t G = (size_t)g, C = (size_t)cap;
    j->init = malloc(C * sizeof *j->init);
    j->tok = malloc(G * C * sizeof *j->tok);
    j->tok2 = malloc(G * C * sizeof *j->tok2);
    j->tlp = malloc(G * C * sizeof *j->tlp);
    j->tlp2 = malloc(G * C * sizeof *j->tlp2);
    j->sum = malloc(G * sizeof *j->sum);
    j->sum2 = malloc(G * sizeof *j->sum2);
    j->src = malloc(G * sizeof *j->src);
    j->cands = malloc(G * (G + 1) * sizeof *j->cands);
    j->order = malloc(G * (G + 1) * sizeof *j->order);
    j->fin = calloc(G, sizeof *j->fin);
    j->res.tok = malloc(C * sizeof *j->res.tok);
    j->res.lp = malloc(C * sizeof *j->res.lp);
    int ok = j->init && j->tok && j->tok2 && j->tlp && j->tlp2 && j->sum && j->sum2 && j->src &&
             j->cands && j->order && j->fin && j->res.tok && j->res.lp;
    for (size_t i = 0; ok && i < G; i++) {
        j->fin[i].tok = malloc(C * sizeof *j->fin[i].tok);
        j->fin[i].lp = malloc(C * sizeof *j->fin[i].lp);
        ok = j->fin[i].tok && j->fin[i].lp;
    }
    j->phase = JOB_DONE;
    j->chunk = -1;
    wres_reset(&j->res);
    return ok ? TD_OK : TD_ENOMEM;
}

void td_wdecoder_free(td_wdecoder *d)
{
    if (!d)
        return;
    if (d->jobs)
        for (int i = 0; i < d->n_jobs; i++)
            job_release(&d->jobs[i], d->max_group);
    free(d->jobs);
    free(d->sup);
    free(d->free_slots);
    free(d->seqs);
    free(d->call_tok);
    free(d->s_in);
    free(d->s_out);
    free(d->pairs);
    free(d->logits);
    free(d->win);
    free(d->jwin);
    free(d->aseg);
    free(d->aseg_from);
    free(d->probs);
    free(d);
}

int td_wdecoder_word_times(const td_wdecoder *d, const char **why)
{
    if (why)
        *why = d->heads ? NULL : d->no_align;
    return d->heads != NULL;
}

void td_wdecoder_set_speech(td_wdecoder *d, const td_guard_span *speech, size_t n)
{
    d->speech = n ? speech : NULL;
    d->n_speech = speech ? (n < SPEECH_MAX ? n : SPEECH_MAX) : 0;
}

/* Longest initial token sequence: [prev] + 223 prompt tokens + sot,
 * language, task, notimestamps. */
static int max_init(const td_whparams *hp)
{
    return hp->n_text_ctx / 2 + 4;
}

int td_wdecode_backend_config(const td_whparams *hp, const td_wdecode_opts *o, td_wconfig *cfg)
{
    int g = o->beam_size > o->best_of ? o->beam_size : o->best_of;
    int batch = o->batch > 0 ? o->batch : 1;
    if (g < 1 || g > MAX_GROUP || batch > TD_WDEC_MAX_BATCH || batch * g > TD_WDEC_MAX_SEQS ||
        hp->n_text_ctx < 8)
        return TD_EINVAL;
    cfg->max_seq = batch * g;
    cfg->max_windows = batch;
    cfg->max_tokens = 0;
    /* a prompt goes in one piece; one call carries every job's rows */
    cfg->max_batch_tokens = max_init(hp);
    /* every job's step, and one prompt beside them, so that a prompt is
     * never starved by the others' steps */
    cfg->max_rows = batch * g + cfg->max_batch_tokens;
    return TD_OK;
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
    if (o->batch < 0 || o->batch > TD_WDEC_MAX_BATCH)
        return td_error_set(err, TD_EINVAL, "whisper decoder: batch %d not in 1..%d", o->batch,
                            TD_WDEC_MAX_BATCH);
    if ((o->batch > 0 ? o->batch : 1) * (o->beam_size > o->best_of ? o->beam_size : o->best_of) >
        TD_WDEC_MAX_SEQS)
        return td_error_set(err, TD_EINVAL, "whisper decoder: batch %d x %d sequences is more "
                            "than %d", o->batch, o->beam_size > o->best_of ? o->beam_size
                                                                           : o->best_of,
                            TD_WDEC_MAX_SEQS);
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
    d->n_jobs = o->batch > 0 ? o->batch : 1;
    td_wconfig need = {0};
    td_wdecode_backend_config(hp, &d->o, &need);
    d->max_rows = need.max_rows;
    d->language = m->multilingual ? o->language : td_wlang_index("en");
    d->rng = o->seed;
    d->cap = d->n_ctx + 2;

    size_t nv = (size_t)d->n_vocab, seqs = (size_t)d->n_jobs * (size_t)d->max_group;
    uint8_t *set = malloc(nv);
    d->sup = malloc((nv + 1) * sizeof *d->sup);
    d->jobs = calloc((size_t)d->n_jobs, sizeof *d->jobs);
    d->free_slots = malloc(seqs * sizeof *d->free_slots);
    d->seqs = malloc(seqs * sizeof *d->seqs);
    d->call_tok = malloc((size_t)d->max_rows * sizeof *d->call_tok);
    d->s_in = malloc(seqs * sizeof *d->s_in);
    d->s_out = malloc(seqs * sizeof *d->s_out);
    d->pairs = malloc(seqs * sizeof *d->pairs);
    d->logits = ops->sample ? NULL : malloc(seqs * nv * sizeof *d->logits);
    d->win = malloc((size_t)d->n_mels * (size_t)d->win_frames * sizeof *d->win);
    d->aseg = calloc((size_t)d->cap, sizeof *d->aseg);
    d->aseg_from = malloc((size_t)d->cap * sizeof *d->aseg_from);
    d->probs = malloc((size_t)d->cap * sizeof *d->probs);
    int ok = set && d->sup && d->jobs && d->free_slots && d->seqs && d->call_tok && d->s_in &&
             d->s_out && d->pairs && (ops->sample || d->logits) && d->win && d->aseg &&
             d->aseg_from && d->probs;
    for (int i = 0; ok && i < d->n_jobs; i++)
        ok = job_alloc(&d->jobs[i], d->max_group, d->cap) == TD_OK;
    if (!ok) {
        free(set);
        td_wdecoder_free(d);
        return td_error_set(err, TD_ENOMEM, "out of memory for the whisper decoder");
    }
    for (int i = 0; i < (int)seqs; i++)
        d->free_slots[d->n_free++] = (int)seqs - 1 - i; /* slot 0 handed out first */
    suppress_set(m, set);
    if (d->o.timestamps)
        set[sp->notimestamps] = 1; /* ApplyTimestampRules, always */
    for (int i = 0; i < d->n_vocab; i++)
        if (set[i])
            d->sup[d->n_sup++] = i;
    free(set);
    d->sampler = (td_wsampler){.suppress = d->sup, .n_suppress = d->n_sup, .eot = sp->eot,
                               .blank = sp->blank, .ts_begin = d->o.timestamps ? sp->ts_begin : -1,
                               .nospeech = sp->nospeech, .k = d->max_group + 1};
    /* word alignment: the released model with these dimensions and vocabulary */
    if (!d->o.word_align) {
        d->no_align = "word alignment is off";
    } else if (!ops->align_weights) {
        d->no_align = "the backend has no word alignment (align_weights)";
    } else if (td_align_heads_find(hp, m->path, &d->heads) == TD_ALIGN_MATCH_NONE || !d->heads) {
        d->heads = NULL;
        d->no_align = "no released Whisper model has this model's dimensions and vocabulary, "
                      "so its alignment heads are not known";
    }
    td_guard_params_default(&d->gp);
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

static int be_encode(td_wdecoder *d, int n, const int *windows, const float *const *mels,
                     td_error *err)
{
    double t0 = mono_s();
    int rc = d->ops->encode(d->b, n, windows, mels, err);
    d->stats.encoder_runs += n;
    d->stats.encoder_s += mono_s() - t0;
    if (rc)
        td_error_prefix(err, "whisper %s encoder", d->ops->name ? d->ops->name : "backend");
    return rc;
}

/* One decode call over n sequences (tokens one sequence after another);
 * then n_s sampling rows in[] -> out[], on the backend when it samples,
 * else here on the logits it returns. */
static int be_step(td_wdecoder *d, int n, const td_wseq *seqs, const int32_t *tokens, int n_s,
                   const td_wsample_in *in, td_wsample_out *out, td_error *err)
{
    for (int s = 0; s < n; s++)
        if (seqs[s].n_past + seqs[s].n_tokens > d->n_ctx)
            return td_error_set(err, TD_EINVAL, "whisper decoder: %d tokens exceed the text "
                                "context (%d)", seqs[s].n_past + seqs[s].n_tokens, d->n_ctx);
    double t0 = mono_s();
    int rc = d->ops->decode(d->b, n, seqs, tokens, 0, d->logits, err);
    d->stats.decoder_calls++;
    if (rc) {
        td_error_prefix(err, "whisper %s decoder", d->ops->name ? d->ops->name : "backend");
        return rc;
    }
    if (d->ops->sample && n_s > 0) {
        rc = d->ops->sample(d->b, &d->sampler, n_s, in, out, err);
        if (rc)
            td_error_prefix(err, "whisper %s sample", d->ops->name ? d->ops->name : "backend");
    } else {
        for (int i = 0; i < n_s; i++)
            td_wsample_row(&d->sampler, d->n_vocab, d->logits + (size_t)in[i].row * d->n_vocab,
                           &in[i], &out[i]);
    }
    d->stats.decoder_s += mono_s() - t0;
    for (int i = 0; rc == TD_OK && i < n_s; i++)
        if (out[i].has_nan)
            rc = td_error_set(err, TD_EENGINE, "whisper decoder: the backend gave NaN logits");
    return rc;
}

static int be_kv_copy(td_wdecoder *d, int n, const td_wkv_copy *pairs, td_error *err)
{
    if (n == 0)
        return TD_OK;
    int rc = d->ops->kv_copy(d->b, n, pairs, err);
    if (rc)
        td_error_prefix(err, "whisper %s kv_copy", d->ops->name ? d->ops->name : "backend");
    return rc;
}

/* Language of window slot w (encoded): one decoder step on [sot] in KV
 * slot 0 (no job holds it then), softmax over the language tokens only,
 * argmax (openai's detect_language). */
static int detect_encoded(td_wdecoder *d, int w, int *lang, float *prob, td_error *err)
{
    const td_wspecial *sp = &d->m->sp;
    int32_t sot = sp->sot;
    td_wseq q = {.slot = d->free_slots[d->n_free - 1], .window = w, .n_past = 0, .n_tokens = 1};
    /* all but the language tokens masked: the top token is the language */
    td_wsample_in in = {.row = 0, .n_ranges = 2,
                        .ranges = {{0, sp->lang_begin}, {sp->lang_begin + sp->n_langs, d->n_vocab}}};
    td_wsampler smp = {.eot = -1, .blank = -1, .ts_begin = -1, .nospeech = -1, .k = 1};
    td_wsampler keep = d->sampler;
    d->sampler = smp;
    td_wsample_out out;
    int rc = be_step(d, 1, &q, &sot, 1, &in, &out, err);
    d->sampler = keep;
    if (rc)
        return rc;
    *lang = out.top[0] - sp->lang_begin;
    if (*lang < 0 || *lang >= sp->n_langs)
        *lang = 0;
    if (prob)
        *prob = (float)exp(out.top_lp[0]);
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
    int w = 0;
    int rc = be_encode(d, 1, &w, &mel_window, err);
    if (rc)
        return rc;
    int lang = -1;
    rc = detect_encoded(d, 0, &lang, prob, err);
    return rc ? rc : lang;
}

/* ---- one window, as a job --------------------------------------------- */

static int32_t *seq_tok(const td_wdecoder *d, int32_t *base, int s)
{
    return base + (size_t)s * (size_t)d->cap;
}

static float *seq_lp(const td_wdecoder *d, float *base, int s)
{
    return base + (size_t)s * (size_t)d->cap;
}

/* The masks of openai's logit filters for one sequence whose sampled
 * tokens so far are samp[0..ns): SuppressBlank on the first token, the
 * timestamp rules' ranges (SuppressTokens is the sampler's fixed list). */
static void filters_in(const td_wdecoder *d, const int32_t *samp, int ns, td_wsample_in *in)
{
    const td_wspecial *sp = &d->m->sp;
    int nv = d->n_vocab, tsb = sp->ts_begin;
    in->flags = ns == 0 ? TD_WSAMPLE_BLANK : 0;
    in->n_ranges = 0;
    if (!d->o.timestamps)
        return;
    in->flags |= TD_WSAMPLE_TS_RULE;
    /* timestamps come in pairs, except directly before eot */
    int last_ts = ns >= 1 && samp[ns - 1] >= tsb;
    int penult_ts = ns < 2 || samp[ns - 2] >= tsb;
    if (last_ts) {
        in->ranges[in->n_ranges][0] = penult_ts ? tsb : 0; /* after a pair: text */
        in->ranges[in->n_ranges][1] = penult_ts ? nv : sp->eot; /* after a lone one: ts or eot */
        in->n_ranges++;
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
        in->ranges[in->n_ranges][0] = tsb;
        in->ranges[in->n_ranges][1] = upto < nv ? upto : nv;
        in->n_ranges++;
    }
    if (ns == 0) {
        in->ranges[in->n_ranges][0] = 0; /* the first token is a timestamp */
        in->ranges[in->n_ranges][1] = tsb;
        in->n_ranges++;
        int allowed = tsb + d->max_initial_ts;
        if (allowed + 1 < nv) {
            in->ranges[in->n_ranges][0] = allowed + 1;
            in->ranges[in->n_ranges][1] = nv;
            in->n_ranges++;
        }
    }
}

/* Start job j on window slot w at temperature index ti with the given
 * prompt (previous text): initial tokens and KV slots. */
static int job_start(td_wdecoder *d, wjob *j, int w, int ti, const int32_t *prompt, int n_prompt,
                     td_error *err)
{
    const td_wmodel *m = d->m;
    const td_wspecial *sp = &m->sp;
    float temp = d->o.temperatures[ti];
    j->window = w;
    j->temp_index = ti;
    j->temp = temp;
    j->beam = temp == 0 && d->o.beam_size > 1;
    j->g = temp == 0 ? (j->beam ? d->o.beam_size : 1) : d->o.best_of;
    wres_reset(&j->res);
    j->res.temperature = temp;
    j->no_speech_prob = NAN;

    /* initial tokens: [prev] + prompt[-(n_ctx/2 - 1):] + SOT sequence */
    int n_init = 0;
    if (n_prompt > 0) {
        int keep = d->n_ctx / 2 - 1;
        if (n_prompt > keep) {
            prompt += n_prompt - keep;
            n_prompt = keep;
        }
        j->init[n_init++] = sp->prev;
        for (int i = 0; i < n_prompt; i++) {
            if (prompt[i] < 0 || prompt[i] >= d->n_vocab)
                return td_error_set(err, TD_EINVAL, "whisper decoder: prompt token %d out of "
                                    "range", (int)prompt[i]);
            j->init[n_init++] = prompt[i];
        }
    }
    j->sot_index = n_init;
    j->init[n_init++] = sp->sot;
    if (m->multilingual) {
        j->init[n_init++] = sp->lang_begin + d->language;
        j->init[n_init++] = d->o.translate ? sp->translate : sp->transcribe;
    }
    if (!d->o.timestamps)
        j->init[n_init++] = sp->notimestamps;
    j->n_init = n_init;
    j->n_pre = n_init - 1;
    j->pre_done = 0;
    if (d->n_free < j->g) /* cannot happen: n_jobs * max_group slots */
        return td_error_set(err, TD_EINVAL, "whisper decoder: out of KV slots");
    for (int s = 0; s < j->g; s++)
        j->slot[s] = d->free_slots[--d->n_free];
    for (int s = 0; s < j->g; s++) {
        memcpy(seq_tok(d, j->tok, s), j->init, (size_t)n_init * sizeof(int32_t));
        j->sum[s] = 0;
    }
    j->n_fin = 0;
    j->cur = n_init;
    j->steps = 0;
    j->phase = j->n_pre > 0 ? JOB_PRE : JOB_STEP;
    return TD_OK;
}

static void job_free_slots(td_wdecoder *d, wjob *j)
{
    for (int s = 0; s < j->g; s++)
        d->free_slots[d->n_free++] = j->slot[s];
    j->g = 0;
}

/* The tokens of job j in the next call: appends its sequences to d->seqs
 * and its sampling rows to d->s_in; returns the rows it adds, or 0 when it
 * has nothing to decode (DONE) or its rows would pass max_rows (it waits
 * for the next call; the first job of a call always fits). */
static int job_collect(td_wdecoder *d, wjob *j, int *n_seq, int *n_rows, int *n_s)
{
    const int32_t eot = d->m->sp.eot;
    for (int s = 0; s < MAX_GROUP; s++)
        j->row[s] = -1;
    if (j->phase == JOB_PRE) {
        /* up to sot when it is not the last of the pre-fork tokens, else all */
        int end = j->pre_done <= j->sot_index && j->sot_index < j->n_pre ? j->sot_index + 1
                                                                          : j->n_pre;
        int n = end - j->pre_done;
        if (*n_rows + n > d->max_rows)
            return 0;
        d->seqs[*n_seq] = (td_wseq){.slot = j->slot[0], .window = j->window,
                                    .n_past = j->pre_done, .n_tokens = n};
        memcpy(d->call_tok + *n_rows, j->init + j->pre_done, (size_t)n * sizeof(int32_t));
        if (end == j->sot_index + 1) { /* the sot row: no_speech_prob */
            j->row[0] = *n_s;
            d->s_in[*n_s] = (td_wsample_in){.row = *n_seq, .flags = TD_WSAMPLE_NOSPEECH};
            (*n_s)++;
        }
        (*n_seq)++;
        *n_rows += n;
        return n;
    }
    if (j->phase != JOB_STEP)
        return 0;
    int live = 0;
    for (int s = 0; s < j->g; s++)
        live += j->beam || seq_tok(d, j->tok, s)[j->cur - 1] != eot;
    if (*n_rows + live > d->max_rows)
        return 0;
    for (int s = 0; s < j->g; s++) {
        int32_t *t = seq_tok(d, j->tok, s);
        if (!j->beam && t[j->cur - 1] == eot)
            continue; /* ended: its next token is eot whatever the logits */
        d->seqs[*n_seq] = (td_wseq){.slot = j->slot[s], .window = j->window,
                                    .n_past = j->cur - 1, .n_tokens = 1};
        d->call_tok[*n_rows] = t[j->cur - 1];
        td_wsample_in *in = &d->s_in[*n_s];
        memset(in, 0, sizeof *in);
        in->row = *n_seq;
        filters_in(d, t + j->n_init, j->cur - j->n_init, in);
        if (j->steps == 0 && s == 0 && j->sot_index == j->n_init - 1)
            in->flags |= TD_WSAMPLE_NOSPEECH; /* the first step's row is sot's */
        if (j->temp > 0) {
            in->temperature = j->temp;
            in->u = rng_uniform(&d->rng);
        }
        j->row[s] = *n_s;
        (*n_s)++;
        (*n_seq)++;
        (*n_rows)++;
    }
    return live;
}

static int seq_equal(const td_wdecoder *d, const wjob *j, int a, int b, int len)
{
    return memcmp(seq_tok(d, j->tok, a), seq_tok(d, j->tok, b), (size_t)len * sizeof(int32_t)) ==
           0;
}

/* Greedy (T = 0) or sampling (T > 0) step: openai's GreedyDecoder.update.
 * Returns 1 when every sequence has ended. */
static int step_greedy(td_wdecoder *d, wjob *j)
{
    int32_t eot = d->m->sp.eot;
    int cur = j->cur, done = 1;
    for (int s = 0; s < j->g; s++) {
        int32_t *t = seq_tok(d, j->tok, s);
        float *lp = seq_lp(d, j->tlp, s);
        if (t[cur - 1] == eot) {
            t[cur] = eot;
            lp[cur] = 0;
            continue;
        }
        const td_wsample_out *o = &d->s_out[j->row[s]];
        int32_t next = j->temp == 0 ? o->top[0] : o->sampled;
        double l = j->temp == 0 ? o->top_lp[0] : o->sampled_lp;
        j->sum[s] += l;
        t[cur] = next;
        lp[cur] = (float)l;
        if (next != eot)
            done = 0;
    }
    return done;
}

/* Beam search step (openai's BeamSearchDecoder.update, patience 1):
 * extends every beam by its beam_size + 1 best tokens, keeps the best
 * beam_size unfinished candidates, collects finished ones, and makes the
 * KV slots follow (a kept source keeps its slot; extra forks are copied
 * into the slots no candidate kept, as pairs for one kv_copy call).
 * Returns 1 when beam_size candidates have finished, 0 to go on, or a
 * negative td_rc. */
static int step_beam(td_wdecoder *d, wjob *j, int *n_pairs, td_error *err)
{
    int32_t eot = d->m->sp.eot;
    int g = j->g, cur = j->cur, n_init = j->n_init;
    int nc = 0;
    for (int b = 0; b < g; b++) {
        const td_wsample_out *o = &d->s_out[j->row[b]];
        for (int k = 0; k < g + 1; k++) {
            double l = o->top_lp[k];
            double score = j->sum[b] + l;
            /* the same sequence from an identical beam (all beams are
             * copies of the prompt at first) replaces the earlier entry
             * in place, as a Python dict does */
            int dup = -1;
            for (int c = 0; c < nc && dup < 0; c++)
                if (j->cands[c].tok == o->top[k] && seq_equal(d, j, j->cands[c].src, b, cur))
                    dup = c;
            cand cd = {score, (float)l, b, o->top[k]};
            if (dup >= 0)
                j->cands[dup] = cd;
            else
                j->cands[nc++] = cd;
        }
    }
    /* stable sort by score, best first (Python's sorted(reverse=True)) */
    for (int c = 0; c < nc; c++) {
        int k = c;
        while (k > 0 && j->cands[c].score > j->cands[j->order[k - 1]].score) {
            j->order[k] = j->order[k - 1];
            k--;
        }
        j->order[k] = c;
    }
    int saved = 0;
    for (int oi = 0; oi < nc && saved < g; oi++) {
        const cand *c = &j->cands[j->order[oi]];
        const int32_t *t = seq_tok(d, j->tok, c->src);
        const float *lp = seq_lp(d, j->tlp, c->src);
        if (c->tok == eot) {
            /* newly finished, in score order; kept while there is room */
            if (j->n_fin < g) {
                fin_seq *f = &j->fin[j->n_fin++];
                f->n = cur - n_init;
                memcpy(f->tok, t + n_init, (size_t)f->n * sizeof *f->tok);
                memcpy(f->lp, lp + n_init, (size_t)f->n * sizeof *f->lp);
                f->sum = c->score;
            }
            continue;
        }
        int32_t *t2 = seq_tok(d, j->tok2, saved);
        float *lp2 = seq_lp(d, j->tlp2, saved);
        memcpy(t2, t, (size_t)cur * sizeof *t2);
        memcpy(lp2, lp, (size_t)cur * sizeof *lp2);
        t2[cur] = c->tok;
        lp2[cur] = c->lp;
        j->sum2[saved] = c->score;
        j->src[saved] = c->src;
        saved++;
    }
    if (saved < g) /* cannot happen: each beam offers g + 1 distinct tokens */
        return td_error_set(err, TD_EENGINE, "whisper beam search: %d beams left of %d", saved,
                            g);
    int32_t *tt = j->tok;
    j->tok = j->tok2;
    j->tok2 = tt;
    float *tl = j->tlp;
    j->tlp = j->tlp2;
    j->tlp2 = tl;
    memcpy(j->sum, j->sum2, (size_t)g * sizeof *j->sum);
    /* slots: beam b takes the slot of its source when it is the first to
     * take it; the others get copies in the slots nobody kept */
    int new_slot[MAX_GROUP], kept[MAX_GROUP] = {0}, copy[MAX_GROUP] = {0};
    for (int b = 0; b < g; b++) {
        int s = j->src[b];
        if (!kept[s]) {
            kept[s] = 1;
            new_slot[b] = j->slot[s];
        } else {
            copy[b] = 1;
        }
    }
    int spare[MAX_GROUP], n_spare = 0;
    for (int b = 0; b < g; b++)
        if (!kept[b])
            spare[n_spare++] = j->slot[b];
    for (int b = 0; b < g; b++) {
        if (!copy[b])
            continue;
        int to = spare[--n_spare]; /* as many spares as copies */
        d->pairs[(*n_pairs)++] = (td_wkv_copy){.src = j->slot[j->src[b]], .dst = to,
                                               .n_pos = cur};
        new_slot[b] = to;
    }
    memcpy(j->slot, new_slot, (size_t)g * sizeof *new_slot);
    return j->n_fin >= g;
}

/* Rank the candidates into j->res: each cut at its first eot, by sum
 * logprob / length (length_penalty None). */
static int job_finish(td_wdecoder *d, wjob *j)
{
    const td_wmodel *m = d->m;
    const td_wspecial *sp = &m->sp;
    int g = j->g, cur = j->cur, n_init = j->n_init;
    if (j->beam) {
        if (j->n_fin < g) {
            /* not enough finished: add the beams, best first (numpy's
             * argsort reversed: ties go to the higher index) */
            int ord[MAX_GROUP];
            for (int s = 0; s < g; s++) {
                int k = s;
                while (k > 0 && j->sum[s] >= j->sum[ord[k - 1]]) {
                    ord[k] = ord[k - 1];
                    k--;
                }
                ord[k] = s;
            }
            for (int k = 0; k < g && j->n_fin < g; k++) {
                fin_seq *f = &j->fin[j->n_fin++];
                f->n = cur - n_init;
                memcpy(f->tok, seq_tok(d, j->tok, ord[k]) + n_init,
                       (size_t)f->n * sizeof *f->tok);
                memcpy(f->lp, seq_lp(d, j->tlp, ord[k]) + n_init,
                       (size_t)f->n * sizeof *f->lp);
                f->sum = j->sum[ord[k]];
            }
        }
    } else {
        j->n_fin = 0;
        for (int s = 0; s < g; s++) {
            fin_seq *f = &j->fin[j->n_fin++];
            f->n = cur - n_init;
            memcpy(f->tok, seq_tok(d, j->tok, s) + n_init, (size_t)f->n * sizeof *f->tok);
            memcpy(f->lp, seq_lp(d, j->tlp, s) + n_init, (size_t)f->n * sizeof *f->lp);
            f->sum = j->sum[s];
        }
    }
    /* a length of 0, which openai would divide by, counts as 1 */
    int best = -1;
    double best_score = 0;
    for (int k = 0; k < j->n_fin; k++) {
        fin_seq *f = &j->fin[k];
        for (int i = 0; i < f->n; i++)
            if (f->tok[i] == sp->eot) {
                f->n = i;
                break;
            }
        double score = f->sum / (f->n > 0 ? f->n : 1);
        if (best < 0 || score > best_score) {
            best = k;
            best_score = score;
        }
    }
    wres *r = &j->res;
    const fin_seq *f = &j->fin[best];
    memcpy(r->tok, f->tok, (size_t)f->n * sizeof *r->tok);
    memcpy(r->lp, f->lp, (size_t)f->n * sizeof *r->lp);
    r->n = f->n;
    r->sum_logprob = f->sum;
    r->avg_logprob = f->sum / (f->n + 1);
    r->no_speech_prob = j->no_speech_prob;
    r->temperature = j->temp;

    td_buf text;
    td_buf_init(&text, TEXT_LIMIT);
    int rc = tokens_text(m, r->tok, r->n, sp->ts_begin, 1, &text);
    if (!rc)
        r->compression_ratio = td_wcompression_ratio((const uint8_t *)text.data, text.len);
    td_buf_release(&text);
    job_free_slots(d, j);
    j->phase = JOB_DONE;
    return rc;
}

/* One decoder call for every job that is not done: each job's prompt
 * piece or step, then the choice of the next tokens, the forks, and the
 * jobs that finished. Returns TD_OK; *active counts the jobs still going. */
static int jobs_step(td_wdecoder *d, wjob **jobs, int n_jobs, int *active, td_error *err)
{
    int n_seq = 0, n_rows = 0, n_s = 0, rc;
    int took[TD_WDEC_MAX_BATCH];
    for (int i = 0; i < n_jobs; i++)
        took[i] = job_collect(d, jobs[i], &n_seq, &n_rows, &n_s) > 0;
    if (n_seq == 0) {
        *active = 0;
        for (int i = 0; i < n_jobs; i++)
            if (jobs[i]->phase != JOB_DONE) /* cannot happen: see job_collect */
                return td_error_set(err, TD_EINVAL, "whisper decoder: a job fits no call");
        return TD_OK;
    }
    rc = be_step(d, n_seq, d->seqs, d->call_tok, n_s, d->s_in, d->s_out, err);
    if (rc)
        return rc;
    int n_pairs = 0;
    *active = 0;
    for (int i = 0; i < n_jobs; i++) {
        wjob *j = jobs[i];
        if (!took[i]) {
            *active += j->phase != JOB_DONE;
            continue;
        }
        if (j->phase == JOB_PRE) {
            const td_wseq *q = NULL;
            for (int s = 0; s < n_seq && !q; s++)
                if (d->seqs[s].slot == j->slot[0])
                    q = &d->seqs[s];
            if (j->row[0] >= 0)
                j->no_speech_prob = d->s_out[j->row[0]].no_speech_prob;
            j->pre_done += q->n_tokens;
            if (j->pre_done == j->n_pre) { /* fork the prompt into the group */
                for (int s = 1; s < j->g; s++)
                    d->pairs[n_pairs++] = (td_wkv_copy){.src = j->slot[0], .dst = j->slot[s],
                                                        .n_pos = j->n_pre};
                j->phase = JOB_STEP;
            }
            (*active)++;
            continue;
        }
        if (j->steps == 0 && j->row[0] >= 0 && j->sot_index == j->n_init - 1)
            j->no_speech_prob = d->s_out[j->row[0]].no_speech_prob;
        int done;
        if (j->beam) {
            done = step_beam(d, j, &n_pairs, err);
            if (done < 0)
                return done;
        } else {
            done = step_greedy(d, j);
        }
        j->cur++;
        j->steps++;
        if (done || j->steps >= d->sample_len || j->cur > d->n_ctx) {
            rc = job_finish(d, j);
            if (rc)
                return td_error_set(err, rc, "whisper decoder: out of memory for text");
        } else {
            (*active)++;
        }
    }
    return be_kv_copy(d, n_pairs, d->pairs, err);
}

/* Decode the encoded window slot 0 at temperature index ti with job 0. */
static int run_window(td_wdecoder *d, const int32_t *prompt, int n_prompt, int ti, td_error *err)
{
    wjob *j = &d->jobs[0];
    int rc = job_start(d, j, 0, ti, prompt, n_prompt, err);
    if (rc)
        return rc;
    int active = 1;
    while (active && rc == TD_OK)
        rc = jobs_step(d, &j, 1, &active, err);
    if (rc && j->phase != JOB_DONE) {
        job_free_slots(d, j);
        j->phase = JOB_DONE;
    }
    return rc;
}

int td_wdecoder_decode_window(td_wdecoder *d, const float *mel_window, const int32_t *prompt,
                              int n_prompt, float temperature, td_wwindow_result *res,
                              td_error *err)
{
    memset(res, 0, sizeof *res);
    if (!(temperature >= 0) || n_prompt < 0 || (n_prompt > 0 && !prompt))
        return td_error_set(err, TD_EINVAL, "whisper decoder: bad temperature or prompt");
    int w = 0;
    int rc = be_encode(d, 1, &w, &mel_window, err);
    if (rc)
        return rc;
    if (d->language < 0) {
        rc = detect_encoded(d, 0, &d->language, NULL, err);
        if (rc)
            return rc;
    }
    /* the temperature as a one-entry schedule */
    td_wdecode_opts keep = d->o;
    d->o.temperatures[0] = temperature;
    d->o.n_temperatures = 1;
    rc = run_window(d, prompt, n_prompt, 0, err);
    d->o = keep;
    if (rc)
        return rc;
    const wres *r = &d->jobs[0].res;
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

/* ---- a window's segments ------------------------------------------------ */

/* Words of a segment by character count: runs of text tokens, each
 * starting at a token with a space, each given the share of [start, end]
 * its characters make, and the mean probability of its tokens. On success
 * *words (caller frees each text and the array) and *n_words. */
static int char_words(td_wdecoder *d, const int32_t *tok, const float *lp, int n, double start,
                      double end, td_word **words_out, size_t *n_out)
{
    const td_wmodel *m = d->m;
    int32_t eot = m->sp.eot;
    *words_out = NULL;
    *n_out = 0;
    int n_text = 0;
    for (int i = 0; i < n; i++)
        n_text += tok[i] < eot;
    td_word *words = calloc((size_t)(n_text > 0 ? n_text : 1), sizeof *words);
    double *chars = calloc((size_t)(n_text > 0 ? n_text : 1), sizeof *chars);
    td_buf wbuf;
    td_buf_init(&wbuf, TEXT_LIMIT);
    size_t n_words = 0;
    int rc = TD_OK;
    if (!words || !chars) {
        rc = TD_ENOMEM;
        goto out;
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
        if (rc)
            goto out;
        i = j;
        if (wbuf.len == 0)
            continue;
        td_word *w = &words[n_words];
        w->text = strdup(wbuf.data);
        if (!w->text) {
            rc = TD_ENOMEM;
            goto out;
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
out:
    free(chars);
    td_buf_release(&wbuf);
    if (rc) {
        for (size_t k = 0; k < n_words; k++)
            free(words[k].text);
        free(words);
        return rc;
    }
    *words_out = words;
    *n_out = n_words;
    return TD_OK;
}

/* One decode of a window made into segments, before it is kept: what the
 * guards look at, and what is appended to the transcript and the prompt
 * once the window is settled. */
typedef struct wattempt {
    td_transcript segs;           /* the window's segments, on the output clock */
    int32_t *ptok;                /* [cap]: their tokens (timestamps too), for the prompt */
    int *pend;                    /* [cap]: ptok's length after segment k */
    int keep_text;                /* the tokens may go to the prompt */
    int n_tokens;                 /* tokens of the decode (stats) */
    size_t seek;                  /* where the next window starts (mel frames) */
    double last_speech;           /* the alignment's last speech after this window */
    td_guard_issue iss[GUARD_CAP];
    size_t n_iss;
    float temperature;
} wattempt;

/* A stream of windows (the sequential loop's, or one batched job's
 * chunk): its prompt, the alignment's last speech, and the attempts at
 * its current window. */
typedef struct wstream {
    prompt_buf pb;
    double last_speech;
    wattempt cur, best;
    int have_best;
    int retrying;                 /* the window is being decoded again for a guard */
    int retries;                  /* times it was */
    int gap_started;              /* the window starts at a gap the one before left */
    size_t limit;                 /* its frames: the gap's (0: as many as there are) */
    int gap_next;                 /* the next window starts at a gap ... */
    size_t limit_next;            /* ... and holds this many frames */
    /* While a gap's window is decoded, the window that left the gap waits
     * with its segments after the gap: kept if the gap's window finds no
     * words in the gap either (then it is hiss or music), dropped and
     * decoded again after the gap if it does. */
    int probing;
    wattempt orig;
    size_t orig_from;             /* its first segment after the gap */
    size_t orig_seek;             /* and where it went on */
    td_guard_issue orig_gap;
} wstream;

static void attempt_release(wattempt *a)
{
    td_transcript_release(&a->segs);
    free(a->ptok);
    free(a->pend);
}

static int stream_init(wstream *s, int cap)
{
    memset(s, 0, sizeof *s);
    s->cur.ptok = malloc((size_t)cap * sizeof *s->cur.ptok);
    s->cur.pend = malloc((size_t)cap * sizeof *s->cur.pend);
    s->best.ptok = malloc((size_t)cap * sizeof *s->best.ptok);
    s->best.pend = malloc((size_t)cap * sizeof *s->best.pend);
    s->orig.ptok = malloc((size_t)cap * sizeof *s->orig.ptok);
    s->orig.pend = malloc((size_t)cap * sizeof *s->orig.pend);
    return s->cur.ptok && s->cur.pend && s->best.ptok && s->best.pend && s->orig.ptok &&
                   s->orig.pend
               ? TD_OK
               : TD_ENOMEM;
}

static void stream_release(wstream *s)
{
    attempt_release(&s->cur);
    attempt_release(&s->best);
    attempt_release(&s->orig);
}

/* A new window (or chunk): no attempts yet. */
static void stream_next_window(wstream *s)
{
    td_transcript_release(&s->best.segs);
    s->have_best = 0;
    s->retrying = 0;
    s->retries = 0;
    s->gap_started = s->gap_next;
    s->limit = s->limit_next;
    s->gap_next = 0;
    s->limit_next = 0;
}

/* The frames of the window at seek: a window that starts at a gap holds
 * only the gap. */
static size_t window_size(const wstream *s, size_t content, size_t seek, size_t W)
{
    size_t size = content - seek < W ? content - seek : W;
    return s->limit && s->limit < size ? s->limit : size;
}

/* The window's decode r as segments into a (emptied first), openai's way:
 * split at consecutive timestamps, the seek advance (to the last
 * timestamp when the window ends inside a segment, which is then decoded
 * again; by the whole window otherwise), word times from the alignment
 * heads (kept after last_speech, the words before) or by character
 * count, segments that end up empty or instantaneous dropped.
 * The window starts at frame seek of a stretch whose frame 0 is at
 * time_offset, holds size frames of audio and is encoded in window slot
 * wslot; times are clamped to content_end. last_speech: the alignment's
 * (openai's last_speech_timestamp) before the window. */
static int window_build(td_wdecoder *d, const wres *r, int wslot, size_t seek, size_t size,
                        double time_offset, double content_end, double last_speech,
                        wattempt *a, td_error *err)
{
    const td_wdecode_opts *o = &d->o;
    const td_wspecial *sp = &d->m->sp;
    const int32_t *tok = r->tok;
    int n = r->n, rc = TD_OK;
    const double precision = (double)(INPUT_STRIDE * HOP_LENGTH) / SAMPLE_RATE;
    double window_offset = (double)seek * HOP_LENGTH / SAMPLE_RATE;
    double seg_duration = (double)size * HOP_LENGTH / SAMPLE_RATE;
    int32_t tsb = sp->ts_begin, eot = sp->eot;

    td_transcript_release(&a->segs);
    a->n_iss = 0;
    a->temperature = r->temperature;
    a->keep_text = o->condition_after_fallback || r->temperature == 0;
    a->n_tokens = n;
    a->last_speech = last_speech;

    /* slices: [from, from + n) of tok, with their timestamps' times */
    td_align_seg *sl = d->aseg;
    int *from = d->aseg_from;
    size_t n_sl = 0;
    int single_end = n >= 2 && tok[n - 2] < tsb && tok[n - 1] >= tsb;
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
            from[n_sl] = last_slice;
            sl[n_sl++] = (td_align_seg){
                .tokens = st, .n_tokens = sn,
                .start = time_offset + window_offset + (double)(st[0] - tsb) * precision,
                .end = time_offset + window_offset + (double)(st[sn - 1] - tsb) * precision};
            last_slice = cur_slice;
        }
        if (single_end)
            a->seek = seek + size; /* no speech after the last timestamp */
        else /* the unfinished segment is decoded again from its start */
            a->seek = seek + (size_t)(tok[last_slice - 1] - tsb) * INPUT_STRIDE;
    } else {
        double duration = seg_duration;
        int32_t last_ts = -1;
        for (int i = 0; i < n; i++)
            if (tok[i] >= tsb)
                last_ts = tok[i];
        if (last_ts >= 0 && last_ts != tsb)
            duration = (double)(last_ts - tsb) * precision;
        from[n_sl] = 0;
        sl[n_sl++] = (td_align_seg){.tokens = tok, .n_tokens = n,
                                    .start = time_offset + window_offset,
                                    .end = time_offset + window_offset + duration};
        a->seek = seek + size;
    }

    /* word times from the alignment heads */
    int aligned = 0;
    if (d->heads && n_sl > 0) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (tok[i] < eot)
                d->probs[k++] = (float)exp(r->lp[i]);
        td_align_run_in in = {
            .heads = d->heads,
            .slot = d->free_slots[d->n_free - 1], /* its cache is free to overwrite */
            .window = wslot,
            .language = d->language,
            .translate = o->translate,
            .language_code = td_wlang_code(d->language),
            .n_frames = (int)(size / INPUT_STRIDE),
            .time_offset = time_offset + window_offset,
            .token_probs = d->probs,
        };
        double ls = last_speech;
        td_error aerr;
        double t0 = mono_s();
        rc = td_align_run(d->ops, d->b, d->m, &in, sl, n_sl, &ls, &aerr);
        d->stats.decoder_s += mono_s() - t0;
        if (rc == TD_ENOMEM || rc == TD_EABORT || rc == TD_EENGINE) {
            if (err)
                *err = aerr;
            goto out;
        }
        if (rc == TD_OK) {
            aligned = 1;
            a->last_speech = ls;
            d->stats.aligned++;
            /* openai's word_timestamps also moves the seek of a window
             * that ends inside a segment to its last word's end; not here:
             * on the 10-minute scene (bench/RESULTS.md) that lost two
             * utterances with base f32 and cost 7 errors in 993 words with
             * tiny.en batched. The next window starts at the last
             * timestamp, as without word times, and its words are kept
             * after the words before them (below). */
        } else {
            d->stats.align_failed++; /* this window keeps character-count times */
            rc = TD_OK;
        }
    }
    if (a->seek <= seek) /* cannot happen under the timestamp rules */
        a->seek = seek + size;

    /* the segments, as openai keeps them */
    td_buf text;
    td_buf_init(&text, TEXT_LIMIT);
    int np = 0;
    for (size_t s = 0; s < n_sl && rc == TD_OK; s++) {
        td_align_seg *g = &sl[s];
        rc = tokens_text(d->m, g->tokens, g->n_tokens, eot, 1, &text);
        if (rc) {
            rc = td_error_set(err, TD_ENOMEM, "out of memory for a whisper segment");
            break;
        }
        double start = g->start, end = g->end;
        if (start == end || text.len == 0)
            continue; /* openai clears these */
        if (end > content_end)
            end = content_end;
        if (start > end)
            start = end;
        td_word *words = NULL;
        size_t n_words = 0;
        if (aligned) {
            /* in time order with the words before: the window before may
             * have aligned its last words past the timestamp this one
             * starts at */
            for (size_t w = 0; w < g->n_words; w++) {
                td_word *x = &g->words[w];
                x->end = fmin(fmax(x->end, last_speech), content_end);
                x->start = fmin(fmax(x->start, last_speech), x->end);
            }
            if (g->n_words && start < g->words[0].start)
                start = fmin(g->words[0].start, end);
            rc = td_transcript_add(&a->segs, start, end, text.data, g->words, g->n_words, err);
        } else {
            rc = char_words(d, g->tokens, r->lp + from[s], g->n_tokens, start, end, &words,
                            &n_words);
            if (rc)
                rc = td_error_set(err, TD_ENOMEM, "out of memory for a whisper segment");
            else
                rc = td_transcript_add(&a->segs, start, end, text.data, words, n_words, err);
            for (size_t w = 0; w < n_words; w++)
                free(words[w].text);
            free(words);
        }
        if (rc)
            break;
        memcpy(a->ptok + np, g->tokens, (size_t)g->n_tokens * sizeof *a->ptok);
        np += g->n_tokens;
        a->pend[a->segs.n_segs - 1] = np;
        if (!aligned)
            a->last_speech = end;
    }
    td_buf_release(&text);
out:
    for (size_t s = 0; s < n_sl; s++)
        td_align_seg_release(&sl[s]);
    return rc;
}

/* What a commit does with the attempt's issues: drops them, or adds them
 * to the transcript as unresolved, kept as first decoded or after the
 * window was decoded again. */
enum issues_to { ISSUES_DROP, ISSUES_KEPT_FIRST, ISSUES_KEPT_AGAIN };

/* Append segments [0, n_keep) of a to out and their tokens to the prompt
 * (when the attempt's temperature allows), and a's issues as issues says. */
static int window_commit_from(td_wdecoder *d, wstream *st, const wattempt *a, size_t from,
                              size_t n_keep, enum issues_to issues, td_transcript *out,
                              td_error *err)
{
    int rc = TD_OK;
    for (size_t k = from; k < n_keep && rc == TD_OK; k++) {
        const td_segment *s = &a->segs.segs[k];
        rc = td_transcript_add(out, s->start, s->end, s->text, s->words, s->n_words, err);
    }
    if (rc)
        return rc;
    if (a->keep_text && n_keep > from) {
        int p0 = from > 0 ? a->pend[from - 1] : 0;
        prompt_add(&st->pb, a->ptok + p0, a->pend[n_keep - 1] - p0);
    }
    if (n_keep > from)
        st->last_speech = n_keep == a->segs.n_segs ? a->last_speech : a->segs.segs[n_keep - 1].end;
    if (from == 0)
        d->stats.tokens += a->n_tokens;
    if (issues != ISSUES_DROP)
        for (size_t i = 0; i < a->n_iss && i < GUARD_CAP && rc == TD_OK; i++) {
            rc = td_transcript_add_issue(out, a->iss[i].start, a->iss[i].end,
                                         td_guard_reason_name(a->iss[i].reason),
                                         issues == ISSUES_KEPT_AGAIN, err);
            d->stats.guard_unresolved++;
        }
    return rc;
}

/* Segments [0, n_keep) of a (see window_commit_from). */
static int window_commit(td_wdecoder *d, wstream *st, const wattempt *a, size_t n_keep,
                         enum issues_to issues, td_transcript *out, td_error *err)
{
    return window_commit_from(d, st, a, 0, n_keep, issues, out, err);
}

/* The gap's window found no words in the gap: the window that left it is
 * kept after all (its segments after the gap, its seek), and the gap is
 * an unresolved issue. */
static int probe_failed(td_wdecoder *d, wstream *st, td_transcript *out, size_t *seekp,
                        float *temp, td_error *err)
{
    wattempt *o = &st->orig;
    st->probing = 0;
    int rc = window_commit_from(d, st, o, st->orig_from, o->segs.n_segs, ISSUES_DROP, out, err);
    if (!rc) { /* the gap's own window was its second decode */
        rc = td_transcript_add_issue(out, st->orig_gap.start, st->orig_gap.end,
                                     td_guard_reason_name(st->orig_gap.reason), 1, err);
        d->stats.guard_unresolved++;
    }
    *seekp = o->seek;
    *temp = o->temperature;
    td_transcript_release(&o->segs);
    return rc;
}

enum { WIN_DONE = 0, WIN_RETRY = 1 };

/* Settle the window that starts at frame seek0 (time t0 on the output
 * clock) with its attempt st->cur, decoded at temperature index ti: keep
 * it when the guards pass (or are off); on a gap well inside it, keep
 * what comes before the gap and start the next window there; else ask for
 * another decode at the next temperature (WIN_RETRY, *next_ti); when none
 * is left, keep the attempt with the fewest issues and add them to out.
 * prev: the segment before the window, or NULL. On WIN_DONE *seekp is the
 * next window's seek and *temp the kept attempt's temperature. */
static int window_settle(td_wdecoder *d, wstream *st, int ti, size_t seek0, double time_offset,
                         double content_end, const td_segment *prev, td_transcript *out,
                         size_t *seekp, float *temp, int *next_ti, td_error *err)
{
    wattempt *a = &st->cur;
    const double frame_s = (double)HOP_LENGTH / SAMPLE_RATE;
    double t0 = time_offset + (double)seek0 * frame_s;
    double t1 = fmin(time_offset + (double)a->seek * frame_s, content_end);
    if (st->probing) {
        /* the gap's window: words in the gap, or the window before stands */
        size_t in_gap = 0;
        for (size_t k = 0; k < a->segs.n_segs; k++)
            for (size_t w = 0; w < a->segs.segs[k].n_words; w++) {
                const td_word *x = &a->segs.segs[k].words[w];
                double mid = (x->start + x->end) / 2;
                in_gap += mid >= st->orig_gap.start - d->gp.word_pad_s &&
                          mid <= st->orig_gap.end + d->gp.word_pad_s;
            }
        if (in_gap == 0) {
            int rc = probe_failed(d, st, out, seekp, temp, err);
            return rc ? rc : WIN_DONE;
        }
        st->probing = 0; /* found: the window before is decoded again after the gap */
        td_transcript_release(&st->orig.segs);
    }
    if (d->o.guard) {
        size_t n = td_guard_window(&d->gp, d->speech, d->n_speech, t0, t1, prev, a->segs.segs,
                                   a->segs.n_segs, a->iss, GUARD_CAP);
        a->n_iss = n < GUARD_CAP ? n : GUARD_CAP;
    }
    int rc;
    if (a->n_iss == 0) {
        rc = window_commit(d, st, a, a->segs.n_segs, ISSUES_DROP, out, err);
        *seekp = a->seek;
        *temp = a->temperature;
        return rc ? rc : WIN_DONE;
    }
    /* the earliest issue a gap well inside the window, before every
     * other issue: keep the segments before it, start the next window at it */
    const td_guard_issue *first = &a->iss[0];
    for (size_t i = 1; i < a->n_iss; i++)
        if (a->iss[i].start < first->start)
            first = &a->iss[i];
    if (first->reason == TD_GUARD_GAP && first->measure >= GAP_LONG_S &&
        first->start > t0 + GAP_SEEK_MIN_S) {
        size_t keep = 0;
        while (keep < a->segs.n_segs && a->segs.segs[keep].end <= first->start + d->gp.word_pad_s)
            keep++;
        int clean = 1;
        for (size_t i = 0; i < a->n_iss; i++)
            if (a->iss[i].seg >= 0 && (size_t)a->iss[i].seg < keep)
                clean = 0;
        size_t gap_seek = (size_t)floor((first->start - time_offset) / frame_s + 1e-6);
        if (clean && gap_seek > seek0) {
            d->stats.guard_gap_seeks++;
            /* the next window holds the gap alone: with the speech after it
             * in view, Whisper tends to jump to that and drop the gap again */
            st->gap_next = 1;
            st->limit_next = (size_t)ceil((first->end + d->gp.word_pad_s - first->start) / frame_s);
            rc = window_commit(d, st, a, keep, ISSUES_DROP, out, err);
            *seekp = gap_seek;
            *temp = a->temperature;
            /* this window's rest waits for the gap's window (probe_failed) */
            st->orig_gap = *first; /* first points into st->cur, swapped below */
            st->orig_from = keep;
            st->probing = 1;
            wattempt t = st->orig;
            st->orig = st->cur;
            st->cur = t;
            td_transcript_release(&st->cur.segs);
            return rc ? rc : WIN_DONE;
        }
    }
    /* Gaps alone: a short one (what the VAD takes for speech is often
     * hiss or music, which no decode turns into words) is only logged; a
     * long one gets one more temperature, none in a window that holds a
     * gap already. (Before the swap below: a is st->cur.) */
    int only_gaps = 1, long_gap = 0;
    for (size_t i = 0; i < a->n_iss; i++) {
        only_gaps &= a->iss[i].reason == TD_GUARD_GAP;
        long_gap |= a->iss[i].reason == TD_GUARD_GAP && a->iss[i].measure >= GAP_LONG_S;
    }
    /* remember the best attempt so far: fewer issues, else the earlier */
    if (!st->have_best || a->n_iss < st->best.n_iss) {
        wattempt t = st->best;
        st->best = st->cur;
        st->cur = t;
        st->have_best = 1;
        td_transcript_release(&st->cur.segs);
    }
    int may_retry = ti + 1 < d->o.n_temperatures &&
                    !(only_gaps && (!long_gap || st->gap_started || st->retries >= GAP_RETRIES));
    if (may_retry) {
        d->stats.guard_redecodes++;
        st->retrying = 1;
        st->retries++;
        *next_ti = ti + 1;
        return WIN_RETRY;
    }
    const wattempt *keep = &st->best;
    /* decoded again: at a later temperature than the first (a guard's
     * retry or the ordinary fallback), or a gap's own window (its audio
     * was decoded once already, by the window that left the gap) */
    enum issues_to issues = ti > 0 || st->gap_started ? ISSUES_KEPT_AGAIN : ISSUES_KEPT_FIRST;
    rc = window_commit(d, st, keep, keep->segs.n_segs, issues, out, err);
    *seekp = keep->seek;
    *temp = keep->temperature;
    return rc ? rc : WIN_DONE;
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

static int is_silent(const td_wdecode_opts *o, const wres *r)
{
    if (isnan(o->no_speech_threshold))
        return 0;
    int skip = r->no_speech_prob > o->no_speech_threshold;
    if (!isnan(o->logprob_threshold) && r->avg_logprob > o->logprob_threshold)
        skip = 0; /* probable enough to keep despite no_speech_prob */
    return skip;
}

int td_wdecoder_transcribe(td_wdecoder *d, const float *mel, size_t n_frames,
                           size_t content_frames, double time_offset, td_transcript *out,
                           int *language, td_wdecode_progress progress, void *user,
                           td_error *err)
{
    const td_wdecode_opts *o = &d->o;
    if (!mel || content_frames > n_frames)
        return td_error_set(err, TD_EINVAL, "whisper decoder: %zu content frames of %zu",
                            content_frames, n_frames);
    size_t W = (size_t)d->win_frames;
    int rc;
    /* time per mel frame and per timestamp step, as openai computes them */
    const double frame_s = (double)HOP_LENGTH / SAMPLE_RATE;
    const double content_end = time_offset + (double)content_frames * HOP_LENGTH / SAMPLE_RATE;

    /* language: detected once, on the first 30 s (padding included) */
    int encoded0 = 0;
    if (d->language < 0 && content_frames > 0) {
        copy_window(d, mel, n_frames, 0, n_frames < W ? n_frames : W);
        int w0 = 0;
        const float *win = d->win;
        rc = be_encode(d, 1, &w0, &win, err);
        if (rc)
            return rc;
        int lang = -1;
        rc = detect_encoded(d, 0, &lang, NULL, err);
        if (rc)
            return rc;
        d->language = lang;
        encoded0 = content_frames >= W; /* the first window is this one */
    }
    if (language)
        *language = d->language;
    if (!out->language[0] && td_wlang_code(d->language))
        snprintf(out->language, sizeof out->language, "%s", td_wlang_code(d->language));

    wstream *st = malloc(sizeof *st);
    if (!st || stream_init(st, d->cap) != TD_OK) {
        if (st)
            stream_release(st);
        free(st);
        return td_error_set(err, TD_ENOMEM, "out of memory for the whisper prompt");
    }
    st->last_speech = time_offset;
    size_t out_first = out->n_segs; /* segments before are not this stream's */
    rc = TD_OK;
    size_t seek = 0;
    while (seek < content_frames) {
        stream_next_window(st);
        size_t size = window_size(st, content_frames, seek, W);
        if (!(seek == 0 && encoded0)) {
            copy_window(d, mel, n_frames, seek, size);
            int w0 = 0;
            const float *win = d->win;
            rc = be_encode(d, 1, &w0, &win, err);
            if (rc)
                goto out;
        }
        d->stats.windows++;
        int ti0 = 0, skipped = 0;
        float kept_temp = 0;
        for (;;) {
            /* temperature fallback; a guard's retry goes on from ti0 without a prompt */
            const int32_t *prompt = st->pb.tok + st->pb.reset_since;
            int n_prompt = st->retrying ? 0 : st->pb.n - st->pb.reset_since;
            int ti = ti0;
            for (; ti < o->n_temperatures; ti++) {
                rc = run_window(d, prompt, n_prompt, ti, err);
                if (rc)
                    goto out;
                if (!needs_fallback(o, &d->jobs[0].res))
                    break;
                if (ti + 1 < o->n_temperatures)
                    d->stats.fallbacks++;
            }
            if (ti == o->n_temperatures)
                ti--;
            const wres *r = &d->jobs[0].res;
            if (st->probing && is_silent(o, r)) {
                /* the gap's window heard no speech: the window before stands */
                rc = probe_failed(d, st, out, &seek, &kept_temp, err);
                if (rc)
                    goto out;
                break;
            }
            if (!st->retrying && is_silent(o, r)) {
                skipped = 1;
                break;
            }
            if (st->retrying && is_silent(o, r)) {
                wres none = *r;
                none.n = 0; /* a retry judged silent: an attempt without segments */
                rc = window_build(d, &none, 0, seek, size, time_offset, content_end,
                                  st->last_speech, &st->cur, err);
            } else {
                rc = window_build(d, r, 0, seek, size, time_offset, content_end,
                                  st->last_speech, &st->cur, err);
            }
            if (rc)
                goto out;
            const td_segment *prev = out->n_segs > out_first ? &out->segs[out->n_segs - 1] : NULL;
            size_t next_seek = seek;
            int next_ti = 0;
            rc = window_settle(d, st, ti, seek, time_offset, content_end, prev, out, &next_seek,
                               &kept_temp, &next_ti, err);
            if (rc < 0 || rc > WIN_RETRY)
                goto out;
            if (rc == WIN_RETRY) {
                ti0 = next_ti;
                continue;
            }
            seek = next_seek;
            break;
        }
        rc = TD_OK;
        if (skipped) {
            d->stats.silent++;
            seek += size;
            if (!o->condition_after_fallback)
                st->pb.reset_since = st->pb.n; /* home video: no prompt across silence */
        } else if (!o->condition_on_previous || kept_temp > o->prompt_reset_on_temperature) {
            st->pb.reset_since = st->pb.n; /* no prompt after a high temperature */
        }
        if (progress &&
            progress(user, (double)(seek < content_frames ? seek : content_frames) * frame_s)) {
            rc = td_error_set(err, TD_EABORT, "whisper transcription stopped");
            goto out;
        }
    }
out:
    stream_release(st);
    free(st);
    return rc;
}

/* ---- batched transcription --------------------------------------------- */

static size_t chunk_stride(const td_wchunk *c, size_t W)
{
    return c->stride ? c->stride : W;
}

/* The window of chunk c that starts at frame seek and holds size frames
 * into win ([n_mels][W]), zero after them. */
static void chunk_window(const td_wdecoder *d, const td_wchunk *c, size_t seek, size_t size,
                         float *win)
{
    size_t W = (size_t)d->win_frames, stride = chunk_stride(c, W);
    for (int b = 0; b < d->n_mels; b++) {
        memcpy(win + (size_t)b * W, c->mel + (size_t)b * stride + seek, size * sizeof *win);
        memset(win + (size_t)b * W + size, 0, (W - size) * sizeof *win);
    }
}

/* Abandon every job (after an error): their slots go back to the pool. */
static void jobs_reset(td_wdecoder *d)
{
    for (int i = 0; i < d->n_jobs; i++) {
        wjob *j = &d->jobs[i];
        if (j->phase != JOB_DONE) {
            job_free_slots(d, j);
            j->phase = JOB_DONE;
        }
        j->chunk = -1;
    }
}

int td_wdecoder_transcribe_chunks(td_wdecoder *d, const td_wchunk *chunks, int n,
                                  td_transcript *out, int *language,
                                  td_wdecode_progress progress, void *user, td_error *err)
{
    const td_wdecode_opts *o = &d->o;
    size_t W = (size_t)d->win_frames, n_mels = (size_t)d->n_mels;
    if (n < 0 || (n > 0 && !chunks))
        return td_error_set(err, TD_EINVAL, "whisper decoder: %d chunks", n);
    for (int i = 0; i < n; i++)
        if (!chunks[i].mel || chunks[i].content_frames > chunk_stride(&chunks[i], W) ||
            chunks[i].content_frames == 0)
            return td_error_set(err, TD_EINVAL, "whisper decoder: chunk %d: no mel, no audio, "
                                "or more audio than its rows hold", i);
    if (n == 0) {
        if (language)
            *language = d->language;
        return TD_OK;
    }
    if (!d->jwin) {
        d->jwin = malloc((size_t)d->n_jobs * n_mels * W * sizeof *d->jwin);
        if (!d->jwin)
            return td_error_set(err, TD_ENOMEM, "out of memory for the whisper windows");
    }
    int rc = TD_OK;
    td_transcript *parts = calloc((size_t)n, sizeof *parts);
    unsigned char *done = calloc((size_t)n, 1);
    size_t *seek = calloc((size_t)n, sizeof *seek);
    wstream *sts = calloc((size_t)d->n_jobs, sizeof *sts); /* each job's chunk */
    int ok = parts && done && seek && sts;
    for (int i = 0; ok && i < d->n_jobs; i++)
        ok = stream_init(&sts[i], d->cap) == TD_OK;
    if (!ok) {
        for (int i = 0; sts && i < d->n_jobs; i++)
            stream_release(&sts[i]);
        free(parts);
        free(done);
        free(seek);
        free(sts);
        return td_error_set(err, TD_ENOMEM, "out of memory for the whisper chunks");
    }
    for (int i = 0; i < n; i++)
        td_transcript_init(&parts[i]);

    /* language: detected once, on the first chunk's first window, whose
     * encoding window slot 0 then keeps (and job 0, which takes chunk 0,
     * its mel) */
    int encoded0 = 0;
    if (d->language < 0) {
        int w0 = 0;
        size_t c0 = chunks[0].content_frames < W ? chunks[0].content_frames : W;
        chunk_window(d, &chunks[0], 0, c0, d->jwin);
        const float *m0 = d->jwin;
        rc = be_encode(d, 1, &w0, &m0, err);
        if (!rc)
            rc = detect_encoded(d, 0, &d->language, NULL, err);
        if (rc)
            goto out;
        encoded0 = 1;
    }
    if (language)
        *language = d->language;
    if (!out->language[0] && td_wlang_code(d->language))
        snprintf(out->language, sizeof out->language, "%s", td_wlang_code(d->language));

    int next = 0, n_done = 0, emitted = 0;
    int win_free[TD_WDEC_MAX_BATCH], n_win_free = 0;
    unsigned char again[TD_WDEC_MAX_BATCH] = {0}; /* job's chunk goes on from its seek */
    for (int w = d->n_jobs - 1; w >= 0; w--)
        win_free[n_win_free++] = w; /* slot 0 first */
    wjob *act[TD_WDEC_MAX_BATCH];
    while (n_done < n) {
        /* windows to encode, together: new chunks in idle jobs, and
         * chunks that go on from where their last window stopped */
        int enc_w[TD_WDEC_MAX_BATCH], enc_job[TD_WDEC_MAX_BATCH], n_enc = 0;
        const float *enc_mel[TD_WDEC_MAX_BATCH];
        for (int i = 0; i < d->n_jobs; i++) {
            wjob *j = &d->jobs[i];
            if (j->chunk >= 0 && again[i]) {
                enc_w[n_enc] = j->window;
                enc_job[n_enc] = i;
                enc_mel[n_enc++] = d->jwin + (size_t)i * n_mels * W;
                again[i] = 0;
                continue;
            }
            if (j->chunk >= 0 || next >= n)
                continue;
            int w = win_free[--n_win_free];
            j->chunk = next;
            j->window = w;
            /* no text across chunks */
            sts[i].pb.n = sts[i].pb.reset_since = 0;
            sts[i].last_speech = chunks[next].offset;
            sts[i].gap_next = 0;
            sts[i].limit_next = 0;
            sts[i].probing = 0;
            stream_next_window(&sts[i]);
            d->stats.windows++;
            if (!(next == 0 && encoded0 && w == 0)) {
                const td_wchunk *c = &chunks[next];
                float *win = d->jwin + (size_t)i * n_mels * W;
                chunk_window(d, c, 0, window_size(&sts[i], c->content_frames, 0, W), win);
                enc_w[n_enc] = w;
                enc_job[n_enc] = i;
                enc_mel[n_enc++] = win;
            } else {
                rc = job_start(d, j, w, 0, NULL, 0, err);
                if (rc)
                    goto out;
            }
            next++;
        }
        if (n_enc > 0 && (rc = be_encode(d, n_enc, enc_w, enc_mel, err)) != TD_OK)
            goto out;
        for (int e = 0; e < n_enc; e++) {
            wjob *j = &d->jobs[enc_job[e]];
            const prompt_buf *pb = &sts[enc_job[e]].pb;
            rc = job_start(d, j, j->window, 0, pb->tok + pb->reset_since, pb->n - pb->reset_since,
                           err);
            if (rc)
                goto out;
        }
        int n_act = 0;
        for (int i = 0; i < d->n_jobs; i++)
            if (d->jobs[i].phase != JOB_DONE)
                act[n_act++] = &d->jobs[i];
        int active;
        rc = jobs_step(d, act, n_act, &active, err);
        if (rc)
            goto out;
        /* jobs that finished: fall back (in later steps), go on in the
         * chunk from the new seek, or the chunk is done */
        for (int i = 0; i < d->n_jobs; i++) {
            wjob *j = &d->jobs[i];
            if (j->chunk < 0 || j->phase != JOB_DONE || again[i])
                continue;
            wstream *st = &sts[i];
            prompt_buf *pb = &st->pb;
            if (needs_fallback(o, &j->res) && j->temp_index + 1 < o->n_temperatures) {
                d->stats.fallbacks++;
                int np = st->retrying ? 0 : pb->n - pb->reset_since;
                rc = job_start(d, j, j->window, j->temp_index + 1, pb->tok + pb->reset_since, np,
                               err);
                if (rc)
                    goto out;
                continue;
            }
            const td_wchunk *c = &chunks[j->chunk];
            size_t *sk = &seek[j->chunk];
            size_t size = window_size(st, c->content_frames, *sk, W);
            double content_end = c->offset + (double)c->content_frames * HOP_LENGTH / SAMPLE_RATE;
            int silent = is_silent(o, &j->res);
            if (silent && st->probing) {
                /* the gap's window heard no speech: the window before stands */
                float kept_temp = 0;
                rc = probe_failed(d, st, &parts[j->chunk], sk, &kept_temp, err);
                if (rc)
                    goto out;
            } else if (silent && !st->retrying) {
                d->stats.silent++;
                *sk += size;
                if (!o->condition_after_fallback)
                    pb->reset_since = pb->n; /* home video: no prompt across silence */
            } else {
                wres none = j->res;
                if (silent)
                    none.n = 0; /* a retry judged silent: an attempt without segments */
                rc = window_build(d, &none, j->window, *sk, size, c->offset, content_end,
                                  st->last_speech, &st->cur, err);
                if (rc)
                    goto out;
                td_transcript *part = &parts[j->chunk];
                const td_segment *prev = part->n_segs ? &part->segs[part->n_segs - 1] : NULL;
                size_t next_seek = *sk;
                float kept_temp = 0;
                int next_ti = 0;
                rc = window_settle(d, st, j->temp_index, *sk, c->offset, content_end, prev, part,
                                   &next_seek, &kept_temp, &next_ti, err);
                if (rc < 0 || rc > WIN_RETRY)
                    goto out;
                if (rc == WIN_RETRY) {
                    rc = job_start(d, j, j->window, next_ti, NULL, 0, err);
                    if (rc)
                        goto out;
                    continue;
                }
                rc = TD_OK;
                *sk = next_seek;
                if (!o->condition_on_previous || kept_temp > o->prompt_reset_on_temperature)
                    pb->reset_since = pb->n; /* no prompt after a high temperature */
            }
            if (*sk < c->content_frames) {
                /* the rest of the chunk, from the new seek, as a window */
                stream_next_window(st);
                chunk_window(d, c, *sk, window_size(st, c->content_frames, *sk, W),
                             d->jwin + (size_t)i * n_mels * W);
                again[i] = 1;
                d->stats.windows++;
                continue;
            }
            done[j->chunk] = 1;
            n_done++;
            win_free[n_win_free++] = j->window;
            j->chunk = -1;
        }
        /* segments in chunk order, as soon as every earlier chunk is done */
        int moved = 0;
        while (emitted < n && done[emitted]) {
            td_transcript *p = &parts[emitted];
            for (size_t k = 0; k < p->n_segs && rc == TD_OK; k++)
                rc = td_transcript_add(out, p->segs[k].start, p->segs[k].end, p->segs[k].text,
                                       p->segs[k].words, p->segs[k].n_words, err);
            for (size_t k = 0; k < p->n_issues && rc == TD_OK; k++)
                rc = td_transcript_add_issue(out, p->issues[k].start, p->issues[k].end,
                                             p->issues[k].reason, p->issues[k].decoded_again,
                                             err);
            if (rc)
                goto out;
            td_transcript_release(p);
            emitted++;
            moved = 1;
        }
        if (moved && progress) {
            const td_wchunk *c = &chunks[emitted - 1];
            double t = c->offset + (double)c->content_frames * HOP_LENGTH / SAMPLE_RATE;
            if (progress(user, t)) {
                rc = td_error_set(err, TD_EABORT, "whisper transcription stopped");
                goto out;
            }
        }
    }
out:
    jobs_reset(d);
    for (int i = 0; i < n; i++)
        td_transcript_release(&parts[i]);
    for (int i = 0; i < d->n_jobs; i++)
        stream_release(&sts[i]);
    free(parts);
    free(done);
    free(seek);
    free(sts);
    return rc;
}
