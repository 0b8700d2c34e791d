/*
 * align.c: word times from cross-attention by DTW (align.h), written from
 * the behaviour openai-whisper documents in whisper/timing.py and
 * whisper/tokenizer.py (find_alignment, dtw_cpu, backtrace,
 * merge_punctuations, add_word_timestamps, split_to_word_tokens).
 *
 * Python semantics that matter and are kept: `a in b` on strings is a
 * substring test (so "" is in every set, and "!?" counts as punctuation);
 * str.strip() strips Unicode white space; bytes that are not UTF-8 decode
 * to one U+FFFD per maximal ill-formed subpart; DTW costs are stored in
 * float32; times are rounded to two decimals after the window offset is
 * added.
 */
#include "whisper/align.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- alignment heads ---------------------------------------------------
 * openai publishes them in whisper/__init__.py (_ALIGNMENT_HEADS) as
 * base85-encoded gzipped boolean [n_text_layer][n_text_head] arrays;
 * these are those arrays decoded (tests/unit/test_align.c decodes the
 * published strings again and compares). */

static const int16_t h_tiny_en[][2] = {{1, 0}, {2, 0}, {2, 5}, {3, 0}, {3, 1}, {3, 2}, {3, 3}, {3, 4}};
static const int16_t h_tiny[][2] = {{2, 2}, {3, 0}, {3, 2}, {3, 3}, {3, 4}, {3, 5}};
static const int16_t h_base_en[][2] = {{3, 3}, {4, 7}, {5, 1}, {5, 5}, {5, 7}};
static const int16_t h_base[][2] = {{3, 1}, {4, 2}, {4, 3}, {4, 7}, {5, 1}, {5, 2}, {5, 4}, {5, 6}};
static const int16_t h_small_en[][2] = {{6, 6},  {7, 0},  {7, 3},  {7, 8},  {8, 2},
                                        {8, 5},  {8, 7},  {9, 0},  {9, 4},  {9, 8},
                                        {9, 10}, {10, 0}, {10, 1}, {10, 2}, {10, 3},
                                        {10, 6}, {10, 11}, {11, 2}, {11, 4}};
static const int16_t h_small[][2] = {{5, 3}, {5, 9}, {8, 0}, {8, 4}, {8, 7},
                                     {8, 8}, {9, 0}, {9, 7}, {9, 9}, {10, 5}};
static const int16_t h_medium_en[][2] = {{11, 4},  {14, 1},  {14, 12}, {14, 14}, {15, 4},  {16, 0},
                                         {16, 4},  {16, 9},  {17, 12}, {17, 14}, {18, 7},  {18, 10},
                                         {18, 15}, {20, 0},  {20, 3},  {20, 9},  {20, 14}, {21, 12}};
static const int16_t h_medium[][2] = {{13, 15}, {15, 4}, {15, 15}, {16, 1}, {20, 0}, {23, 4}};
static const int16_t h_large_v1[][2] = {{9, 19},  {11, 2},  {11, 4}, {11, 17}, {22, 7},
                                        {22, 11}, {22, 17}, {23, 2}, {23, 15}};
static const int16_t h_large_v2[][2] = {
    {10, 12}, {13, 17}, {16, 11}, {16, 12}, {16, 13}, {17, 15}, {17, 16}, {18, 4},
    {18, 11}, {18, 19}, {19, 11}, {21, 2},  {21, 3},  {22, 3},  {22, 9},  {22, 12},
    {23, 5},  {23, 7},  {23, 13}, {25, 5},  {26, 1},  {26, 12}, {27, 15}};
static const int16_t h_large_v3[][2] = {{7, 0},  {10, 17}, {12, 18}, {13, 12}, {16, 1},
                                        {17, 14}, {19, 11}, {21, 4},  {24, 1},  {25, 6}};
static const int16_t h_turbo[][2] = {{2, 4}, {2, 11}, {3, 3}, {3, 6}, {3, 11}, {3, 14}};

#define HEADS(name, arr) {name, (int)(sizeof arr / sizeof arr[0]), arr}
static const td_align_heads heads_table[] = {
    HEADS("tiny.en", h_tiny_en),     HEADS("tiny", h_tiny),         HEADS("base.en", h_base_en),
    HEADS("base", h_base),           HEADS("small.en", h_small_en), HEADS("small", h_small),
    HEADS("medium.en", h_medium_en), HEADS("medium", h_medium),     HEADS("large-v1", h_large_v1),
    HEADS("large-v2", h_large_v2),   HEADS("large-v3", h_large_v3), HEADS("large-v3-turbo", h_turbo),
};
#define N_MODELS (sizeof heads_table / sizeof heads_table[0])

/* The released models' dimensions, in heads_table's order. Audio and
 * text widths and head counts are equal in every released model. */
static const struct dims {
    int32_t n_vocab, state, heads, audio_layers, text_layers, mels;
} model_dims[N_MODELS] = {
    {51864, 384, 6, 4, 4, 80},      {51865, 384, 6, 4, 4, 80},      {51864, 512, 8, 6, 6, 80},
    {51865, 512, 8, 6, 6, 80},      {51864, 768, 12, 12, 12, 80},   {51865, 768, 12, 12, 12, 80},
    {51864, 1024, 16, 24, 24, 80},  {51865, 1024, 16, 24, 24, 80},  {51865, 1280, 20, 32, 32, 80},
    {51865, 1280, 20, 32, 32, 80},  {51866, 1280, 20, 32, 32, 128}, {51866, 1280, 20, 32, 4, 128},
};

const td_align_heads *td_align_heads_all(size_t *count)
{
    *count = N_MODELS;
    return heads_table;
}

int td_align_heads_find(const td_whparams *hp, const char *name_hint, const td_align_heads **out)
{
    size_t hit[N_MODELS];
    size_t n_hit = 0;
    *out = NULL;
    for (size_t i = 0; i < N_MODELS; i++) {
        const struct dims *d = &model_dims[i];
        if (hp->n_vocab == d->n_vocab && hp->n_audio_state == d->state &&
            hp->n_text_state == d->state && hp->n_audio_head == d->heads &&
            hp->n_text_head == d->heads && hp->n_audio_layer == d->audio_layers &&
            hp->n_text_layer == d->text_layers && hp->n_mels == d->mels)
            hit[n_hit++] = i;
    }
    if (n_hit == 0)
        return TD_ALIGN_MATCH_NONE;
    if (n_hit == 1) {
        *out = &heads_table[hit[0]];
        return TD_ALIGN_MATCH_EXACT;
    }
    /* Only large-v1 and large-v2 share their dimensions. v2 is the one
     * users have had most (whisper.cpp's old ggml-large.bin is v2). */
    for (size_t k = 0; k < n_hit; k++)
        if (name_hint && strstr(name_hint, heads_table[hit[k]].name)) {
            *out = &heads_table[hit[k]];
            return TD_ALIGN_MATCH_BY_NAME;
        }
    for (size_t k = 0; k < n_hit; k++)
        if (strcmp(heads_table[hit[k]].name, "large-v2") == 0)
            *out = &heads_table[hit[k]];
    if (!*out)
        *out = &heads_table[hit[0]];
    return TD_ALIGN_MATCH_GUESS;
}

void td_align_heads_flat(const td_align_heads *h, int *out)
{
    for (int i = 0; i < h->n_heads; i++) {
        out[2 * i] = h->lh[i][0];
        out[2 * i + 1] = h->lh[i][1];
    }
}

int td_align_sequence(const td_wmodel *m, int language, int translate, const int32_t *text,
                      int n_text, int32_t *out, int cap, int *n_sot)
{
    const td_wspecial *sp = &m->sp;
    int32_t head[3];
    int nh = 0;
    if (sp->sot < 0 || sp->notimestamps < 0 || sp->eot < 0)
        return -1;
    head[nh++] = sp->sot;
    if (m->multilingual) {
        if (language < 0 || language >= sp->n_langs)
            return -1;
        int32_t task = translate ? sp->translate : sp->transcribe;
        if (task < 0)
            return -1;
        head[nh++] = sp->lang_begin + language;
        head[nh++] = task;
    }
    *n_sot = nh;
    int n = 0;
#define PUT(t)                                                                                   \
    do {                                                                                         \
        if (n < cap)                                                                             \
            out[n] = (t);                                                                        \
        n++;                                                                                     \
    } while (0)
    for (int i = 0; i < nh; i++)
        PUT(head[i]);
    PUT(sp->notimestamps);
    for (int i = 0; i < n_text; i++)
        if (text[i] >= 0 && text[i] < sp->eot)
            PUT(text[i]);
    PUT(sp->eot);
#undef PUT
    return n;
}

/* ---- the matrix -------------------------------------------------------- */

/* The median of v[0 .. 7) by a sorting network (16 compare-exchanges as
 * min and max, no branches): openai's filter width, where the insertion
 * sort below spent its time in mispredicted branches (4 % of a batched
 * run's CPU). The same value as any sort's middle element. */
static float median7(const float *v)
{
    float a0 = v[0], a1 = v[1], a2 = v[2], a3 = v[3], a4 = v[4], a5 = v[5], a6 = v[6];
#define CE(x, y)                            \
    do {                                    \
        float lo_ = x < y ? x : y;          \
        float hi_ = x < y ? y : x;          \
        x = lo_;                            \
        y = hi_;                            \
    } while (0)
    CE(a0, a6); CE(a2, a3); CE(a4, a5);
    CE(a0, a2); CE(a1, a4); CE(a3, a6);
    CE(a0, a1); CE(a2, a5); CE(a3, a4);
    CE(a1, a2); CE(a4, a6);
    CE(a2, a3); CE(a4, a5);
    CE(a1, a2); CE(a3, a4); CE(a5, a6);
#undef CE
    return a3;
}

/* The median of v[0 .. n), n odd and small (the filter's width), v
 * reordered: an insertion sort, which for a handful of values costs a
 * fraction of qsort's calls through a comparison function (the filter
 * runs once per frame, row and head: it was 5 % of a batched run). */
static float median_small(float *v, int n)
{
    for (int i = 1; i < n; i++) {
        float x = v[i];
        int j = i;
        for (; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
    return v[n / 2];
}

int td_align_matrix(const float *weights, int n_heads, int n_rows, int n_ctx, int n_frames,
                    int medfilt_width, float *out, td_error *err)
{
    if (n_heads < 1 || n_rows < 1 || n_ctx < 1 || n_frames < 1 || n_frames > n_ctx ||
        n_heads > TD_WMAX_LAYERS * TD_WMAX_HEADS || n_rows > 4 * TD_WMAX_TEXT_CTX ||
        n_ctx > TD_WMAX_AUDIO_CTX)
        return td_error_set(err, TD_EINVAL,
                            "alignment matrix: sizes out of range (heads %d, rows %d, frames "
                            "%d of %d)",
                            n_heads, n_rows, n_frames, n_ctx);
    if (medfilt_width < 1 || medfilt_width % 2 == 0 || medfilt_width > 99)
        return td_error_set(err, TD_EINVAL, "alignment matrix: median filter width %d is not "
                            "odd in 1..99", medfilt_width);
    const size_t plane = (size_t)n_rows * (size_t)n_frames;
    float *w = malloc(plane * sizeof *w);
    double *acc = calloc(plane, sizeof *acc);
    double *mean = malloc(2 * (size_t)n_frames * sizeof *mean);
    double *var = mean ? mean + n_frames : NULL;
    if (!w || !acc || !mean) {
        free(w);
        free(acc);
        free(mean);
        return td_error_set(err, TD_ENOMEM, "alignment matrix: out of memory");
    }
    const int pad = medfilt_width / 2;
    int rc = TD_OK;
    for (int h = 0; h < n_heads; h++) {
        /* Renormalise each row over the content frames: a softmax over all
         * n_ctx frames restricted to the first n_frames and rescaled is the
         * softmax over those frames alone, which is what openai takes. */
        for (int r = 0; r < n_rows; r++) {
            const float *src = weights + ((size_t)h * n_rows + r) * (size_t)n_ctx;
            float *dst = w + (size_t)r * n_frames;
            double s = 0;
            for (int f = 0; f < n_frames; f++) {
                if (!isfinite(src[f])) {
                    rc = td_error_set(err, TD_EINVAL,
                                      "alignment matrix: head %d row %d frame %d is not "
                                      "finite",
                                      h, r, f);
                    goto out;
                }
                s += src[f];
            }
            for (int f = 0; f < n_frames; f++)
                dst[f] = s > 0 ? (float)(src[f] / s) : 1.0f / (float)n_frames;
        }
        /* Standardise each frame over the rows (population deviation).
         * Row by row, every frame's sums in one pass (the same additions
         * in the same order as a walk down each frame's column, which
         * strides a whole row per step). */
        for (int f = 0; f < n_frames; f++)
            mean[f] = var[f] = 0;
        for (int r = 0; r < n_rows; r++) {
            const float *row = w + (size_t)r * n_frames;
            for (int f = 0; f < n_frames; f++)
                mean[f] += row[f];
        }
        for (int f = 0; f < n_frames; f++)
            mean[f] /= n_rows;
        for (int r = 0; r < n_rows; r++) {
            const float *row = w + (size_t)r * n_frames;
            for (int f = 0; f < n_frames; f++) {
                double d = row[f] - mean[f];
                var[f] += d * d;
            }
        }
        for (int f = 0; f < n_frames; f++)
            var[f] = sqrt(var[f] / n_rows); /* now the deviation */
        for (int r = 0; r < n_rows; r++) {
            float *row = w + (size_t)r * n_frames;
            for (int f = 0; f < n_frames; f++)
                row[f] = var[f] > 0 ? (float)((row[f] - mean[f]) / var[f]) : 0.0f;
        }
        /* Median filter along the frames, edges reflected (the edge value
         * itself not repeated); too short a row is left as it is. */
        for (int r = 0; r < n_rows; r++) {
            const float *row = w + (size_t)r * n_frames;
            double *a = acc + (size_t)r * n_frames;
            if (n_frames <= pad) {
                for (int f = 0; f < n_frames; f++)
                    a[f] += row[f];
                continue;
            }
            float win[99];
            for (int f = 0; f < n_frames; f++) {
                if (medfilt_width == 7 && f >= 3 && f + 3 < n_frames) {
                    a[f] += median7(row + f - 3); /* openai's width, away from the edges */
                    continue;
                }
                for (int k = 0; k < medfilt_width; k++) {
                    int i = f - pad + k;
                    if (i < 0)
                        i = -i;
                    else if (i >= n_frames)
                        i = 2 * (n_frames - 1) - i;
                    win[k] = row[i];
                }
                a[f] += median_small(win, medfilt_width);
            }
        }
    }
    for (size_t i = 0; i < plane; i++)
        out[i] = (float)(acc[i] / n_heads);
out:
    free(w);
    free(acc);
    free(mean);
    return rc;
}

/* ---- DTW --------------------------------------------------------------- */

int td_align_dtw(const float *cost, int n, int m, int *rows, int *cols, int *len, td_error *err)
{
    if (n < 1 || m < 1 || n > 4 * TD_WMAX_TEXT_CTX || m > TD_WMAX_AUDIO_CTX)
        return td_error_set(err, TD_EINVAL, "dtw: size %d x %d out of range", n, m);
    for (size_t i = 0; i < (size_t)n * m; i++)
        if (!isfinite(cost[i]))
            return td_error_set(err, TD_EINVAL, "dtw: cost %zu is not finite", i);
    /* trace[i][j] for the (n+1) x (m+1) table: 0 diagonal, 1 down, 2 right.
     * Two cost columns suffice, since openai fills column by column. */
    const size_t W = (size_t)m + 1;
    unsigned char *trace = malloc((size_t)(n + 1) * W);
    float *prev = malloc((size_t)(n + 1) * sizeof *prev);
    float *cur = malloc((size_t)(n + 1) * sizeof *cur);
    if (!trace || !prev || !cur) {
        free(trace);
        free(prev);
        free(cur);
        return td_error_set(err, TD_ENOMEM, "dtw: out of memory");
    }
    for (int i = 0; i <= n; i++)
        prev[i] = INFINITY;
    prev[0] = 0; /* column 0: only (0,0) is reachable */
    for (int j = 1; j <= m; j++) {
        cur[0] = INFINITY;
        for (int i = 1; i <= n; i++) {
            float c0 = prev[i - 1], c1 = cur[i - 1], c2 = prev[i];
            float c;
            unsigned char t;
            if (c0 < c1 && c0 < c2)
                c = c0, t = 0;
            else if (c1 < c0 && c1 < c2)
                c = c1, t = 1;
            else
                c = c2, t = 2;
            /* openai adds in float64 and stores in a float32 table */
            cur[i] = (float)((double)cost[(size_t)(i - 1) * m + (j - 1)] + (double)c);
            trace[(size_t)i * W + j] = t;
        }
        float *tmp = prev;
        prev = cur;
        cur = tmp;
    }
    for (size_t j = 0; j < W; j++)
        trace[j] = 2;
    for (int i = 0; i <= n; i++)
        trace[(size_t)i * W] = 1;
    /* Trace back from (n, m) to (0, 0), then reverse. */
    int i = n, j = m, k = 0;
    while (i > 0 || j > 0) {
        rows[k] = i - 1;
        cols[k] = j - 1;
        k++;
        unsigned char t = trace[(size_t)i * W + j];
        if (t == 0)
            i--, j--;
        else if (t == 1)
            i--;
        else
            j--;
    }
    for (int a = 0, b = k - 1; a < b; a++, b--) {
        int r = rows[a], c = cols[a];
        rows[a] = rows[b], cols[a] = cols[b];
        rows[b] = r, cols[b] = c;
    }
    *len = k;
    free(trace);
    free(prev);
    free(cur);
    return TD_OK;
}

int td_align_jumps(const float *matrix, int n_rows, int n_frames, double *jump, td_error *err)
{
    if (n_rows < 1 || n_frames < 1 || n_rows > 4 * TD_WMAX_TEXT_CTX ||
        n_frames > TD_WMAX_AUDIO_CTX)
        return td_error_set(err, TD_EINVAL, "dtw: size %d x %d out of range", n_rows, n_frames);
    size_t nm = (size_t)n_rows * (size_t)n_frames;
    float *cost = malloc(nm * sizeof *cost);
    int *rows = malloc(((size_t)n_rows + (size_t)n_frames) * sizeof *rows);
    int *cols = malloc(((size_t)n_rows + (size_t)n_frames) * sizeof *cols);
    int rc = TD_OK, len = 0;
    if (!cost || !rows || !cols) {
        rc = td_error_set(err, TD_ENOMEM, "dtw: out of memory");
        goto out;
    }
    for (size_t i = 0; i < nm; i++)
        cost[i] = -matrix[i];
    rc = td_align_dtw(cost, n_rows, n_frames, rows, cols, &len, err);
    if (rc)
        goto out;
    /* The path is monotone and moves at most one row a step, so it enters
     * every row exactly once. */
    for (int p = 0, r = 0; p < len && r < n_rows; p++)
        if (p == 0 || rows[p] != rows[p - 1])
            jump[r++] = cols[p] / (double)TD_ALIGN_FRAMES_PER_SECOND;
out:
    free(cost);
    free(rows);
    free(cols);
    return rc;
}

/* ---- text -------------------------------------------------------------- */

#define REPLACEMENT 0xFFFDu

/* Decode one code point at s[0..n) as Python's UTF-8 decoder with
 * errors="replace" does: a maximal ill-formed subpart becomes one U+FFFD.
 * Returns the bytes consumed (>= 1). */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    uint32_t v;
    if (b >= 0xC2 && b <= 0xDF)
        need = 1, v = b & 0x1F;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 2, v = b & 0x0F;
        if (b == 0xE0)
            lo = 0xA0;
        else if (b == 0xED)
            hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3, v = b & 0x07;
        if (b == 0xF0)
            lo = 0x90;
        else if (b == 0xF4)
            hi = 0x8F;
    } else {
        *cp = REPLACEMENT;
        return 1;
    }
    size_t i = 1;
    for (int k = 0; k < need; k++, i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *cp = REPLACEMENT;
            return i;
        }
        v = (v << 6) | (s[i] & 0x3F);
        lo = 0x80, hi = 0xBF;
    }
    *cp = v;
    return i;
}

static size_t utf8_put(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Python's str.isspace. */
static int py_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* str.strip() of valid UTF-8 s: the kept bytes are s[*a .. *b). */
static void py_strip(const char *s, size_t n, size_t *a, size_t *b)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, last_end = 0, first = n;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_next(u + i, n - i, &cp);
        if (!py_space(cp)) {
            if (first == n)
                first = i;
            last_end = i + k;
        }
        i += k;
    }
    if (first == n)
        *a = *b = 0;
    else
        *a = first, *b = last_end;
}

/* Python's `needle in hay` for strings. */
static int py_in(const char *needle, size_t n, const char *hay)
{
    return n == 0 || memmem(hay, strlen(hay), needle, n) != NULL;
}

static int py_stripped_in(const char *s, const char *hay)
{
    size_t a, b;
    py_strip(s, strlen(s), &a, &b);
    return py_in(s + a, b - a, hay);
}

/* string.punctuation */
static const char ascii_punct[] = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

const char td_align_prepend_punct[] = "\"'\xe2\x80\x9c\xc2\xbf([{-";
const char td_align_append_punct[] =
    "\"'.\xe3\x80\x82,\xef\xbc\x8c!\xef\xbc\x81?\xef\xbc\x9f:\xef\xbc\x9a\xe2\x80\x9d)]}\xe3\x80\x81";

int td_align_lang_splits_unicode(const char *lang)
{
    static const char *const l[] = {"zh", "ja", "th", "lo", "my", "yue"};
    if (!lang)
        return 0;
    for (size_t i = 0; i < sizeof l / sizeof l[0]; i++)
        if (strcmp(lang, l[i]) == 0)
            return 1;
    return 0;
}

static const uint8_t *model_token(void *user, int32_t id, size_t *len)
{
    return td_wmodel_token((const td_wmodel *)user, id, len);
}

td_align_vocab td_align_vocab_of(const td_wmodel *m)
{
    td_align_vocab v = {model_token, (void *)m, m->sp.eot};
    return v;
}

void td_align_words_free(td_align_word *w, size_t n)
{
    if (!w)
        return;
    for (size_t i = 0; i < n; i++)
        free(w[i].text);
    free(w);
}

/* Decode bytes to code points with replacement; cps has room for n. */
static size_t decode_cps(const uint8_t *s, size_t n, uint32_t *cps)
{
    size_t i = 0, k = 0;
    while (i < n)
        i += utf8_next(s + i, n - i, &cps[k++]);
    return k;
}

int td_align_split(const td_align_vocab *voc, const int32_t *tokens, int n_tokens,
                   int by_unicode, td_align_word **words_out, size_t *n_out, td_error *err)
{
    *words_out = NULL;
    *n_out = 0;
    if (n_tokens < 0 || n_tokens > 4 * TD_WMAX_TEXT_CTX)
        return td_error_set(err, TD_EINVAL, "word split: %d tokens", n_tokens);
    if (n_tokens == 0)
        return TD_OK;
    /* All the text's bytes, and where each token's start. */
    size_t total = 0;
    size_t *off = malloc(((size_t)n_tokens + 1) * sizeof *off);
    if (!off)
        return td_error_set(err, TD_ENOMEM, "word split: out of memory");
    for (int t = 0; t < n_tokens; t++) {
        size_t len = 0;
        const uint8_t *b =
            tokens[t] >= 0 && tokens[t] < voc->eot ? voc->token(voc->user, tokens[t], &len) : NULL;
        if (!b || len > TD_WMAX_TOKEN_BYTES) {
            free(off);
            return td_error_set(err, TD_EINVAL, "word split: token %d (id %d) is not text", t,
                                (int)tokens[t]);
        }
        off[t] = total;
        total += len;
    }
    off[n_tokens] = total;
    int rc = TD_OK;
    uint8_t *bytes = malloc(total + 1);
    uint32_t *full = malloc((total + 1) * sizeof *full);
    uint32_t *part = malloc((total + 1) * sizeof *part);
    /* Each piece's decoded text: at most 3 bytes of output per input byte
     * (U+FFFD is 3 bytes and stands for at least one). */
    char *txt = malloc(3 * total + 1);
    td_align_word *w = calloc((size_t)n_tokens, sizeof *w);
    size_t nw = 0;
    if (!bytes || !full || !part || !txt || !w) {
        rc = td_error_set(err, TD_ENOMEM, "word split: out of memory");
        goto out;
    }
    for (int t = 0; t < n_tokens; t++) {
        size_t len;
        const uint8_t *b = voc->token(voc->user, tokens[t], &len);
        memcpy(bytes + off[t], b, len);
    }
    size_t n_full = decode_cps(bytes, total, full);
    size_t cp_off = 0; /* code points of the pieces so far */
    int first = 0;     /* first token of the piece being built */
    for (int t = 0; t < n_tokens; t++) {
        size_t a = off[first], n = off[t + 1] - a;
        size_t np = decode_cps(bytes + a, n, part);
        size_t bad = np;
        for (size_t k = 0; k < np; k++)
            if (part[k] == REPLACEMENT) {
                bad = k;
                break;
            }
        /* A piece is complete when it decodes cleanly, or when its first
         * U+FFFD is one the whole text has too (bytes that are bad in any
         * context). */
        if (bad < np && !(cp_off + bad < n_full && full[cp_off + bad] == REPLACEMENT))
            continue;
        size_t tl = 0;
        for (size_t k = 0; k < np; k++)
            tl += utf8_put(part[k], txt + tl);
        txt[tl] = 0;
        cp_off += np;
        int ntok = t + 1 - first;
        first = t + 1;
        int join = 0;
        if (!by_unicode && nw > 0) {
            int with_space = txt[0] == ' ';
            int punct = py_stripped_in(txt, ascii_punct);
            join = !with_space && !punct;
        }
        if (join) {
            td_align_word *d = &w[nw - 1];
            size_t ol = strlen(d->text);
            char *s = realloc(d->text, ol + tl + 1);
            if (!s) {
                rc = td_error_set(err, TD_ENOMEM, "word split: out of memory");
                goto out;
            }
            memcpy(s + ol, txt, tl + 1);
            d->text = s;
            d->n_tokens += ntok;
        } else {
            td_align_word *d = &w[nw];
            d->text = malloc(tl + 1);
            if (!d->text) {
                rc = td_error_set(err, TD_ENOMEM, "word split: out of memory");
                goto out;
            }
            memcpy(d->text, txt, tl + 1);
            d->n_tokens = ntok;
            d->prob = -1;
            nw++;
        }
    }
    *words_out = w;
    *n_out = nw;
    w = NULL;
out:
    td_align_words_free(w, nw);
    free(off);
    free(bytes);
    free(full);
    free(part);
    free(txt);
    return rc;
}

static int str_cat(char **dst, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (!s)
        return -1;
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    free(*dst);
    *dst = s;
    return 0;
}

static int set_empty(char **s)
{
    char *e = malloc(1);
    if (!e)
        return -1;
    e[0] = 0;
    free(*s);
    *s = e;
    return 0;
}

int td_align_merge_punct(td_align_word *w, size_t n, const char *prepend, const char *append,
                         td_error *err)
{
    if (n < 2)
        return TD_OK;
    /* Leading punctuation, right to left: j is the word that absorbs. */
    size_t j = n - 1;
    for (size_t i = n - 1; i-- > 0;) {
        td_align_word *p = &w[i], *f = &w[j];
        if (p->text[0] == ' ' && py_stripped_in(p->text, prepend)) {
            if (str_cat(&f->text, p->text, f->text) || set_empty(&p->text))
                return td_error_set(err, TD_ENOMEM, "punctuation merge: out of memory");
            f->n_tokens += p->n_tokens;
            p->n_tokens = 0;
        } else {
            j = i;
        }
    }
    /* Trailing punctuation, left to right: i is the word that absorbs. */
    size_t i = 0;
    for (j = 1; j < n; j++) {
        td_align_word *p = &w[i], *f = &w[j];
        size_t pl = strlen(p->text);
        if (!(pl > 0 && p->text[pl - 1] == ' ') && py_in(f->text, strlen(f->text), append)) {
            if (str_cat(&p->text, p->text, f->text) || set_empty(&f->text))
                return td_error_set(err, TD_ENOMEM, "punctuation merge: out of memory");
            p->n_tokens += f->n_tokens;
            f->n_tokens = 0;
        } else {
            i = j;
        }
    }
    return TD_OK;
}

/* ---- one window ---------------------------------------------------------- */

void td_align_seg_release(td_align_seg *s)
{
    for (size_t i = 0; i < s->n_words; i++)
        free(s->words[i].text);
    free(s->words);
    s->words = NULL;
    s->n_words = 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* round(x, 2) for the sums of frame times and seek offsets met here. */
static double round2(double x)
{
    return round(x * 100.0) / 100.0;
}

static int is_text(const td_align_vocab *voc, int32_t id)
{
    return id >= 0 && id < voc->eot;
}

/* Word text without surrounding white space, as td_word holds it. */
static char *stripped_copy(const char *s)
{
    size_t a, b;
    py_strip(s, strlen(s), &a, &b);
    char *o = malloc(b - a + 1);
    if (o) {
        memcpy(o, s + a, b - a);
        o[b - a] = 0;
    }
    return o;
}

int td_align_window(const td_align_vocab *voc, const td_align_window_in *in, td_align_seg *segs,
                    size_t n_segs, double *last_speech, td_error *err)
{
    int n_text = in->n_rows - in->n_sot - 2;
    if (in->n_sot < 1 || n_text < 0)
        return td_error_set(err, TD_EINVAL,
                            "align: %d rows cannot hold a %d-token sot sequence, notimestamps "
                            "and eot",
                            in->n_rows, in->n_sot);
    int count = 0;
    for (size_t s = 0; s < n_segs; s++) {
        if (segs[s].words || segs[s].n_tokens < 0)
            return td_error_set(err, TD_EINVAL, "align: segment %zu already has words", s);
        for (int t = 0; t < segs[s].n_tokens; t++)
            count += is_text(voc, segs[s].tokens[t]);
    }
    if (count != n_text)
        return td_error_set(err, TD_EINVAL,
                            "align: the segments hold %d text tokens, the weights %d", count,
                            n_text);
    if (n_segs == 0)
        return TD_OK;

    int rc = TD_OK;
    int32_t *text = malloc(((size_t)n_text + 1) * sizeof *text);
    float *mat = malloc((size_t)in->n_rows * (size_t)(in->n_frames > 0 ? in->n_frames : 1) *
                        sizeof *mat);
    int N = n_text + 1, M = in->n_frames;
    double *jump = malloc((size_t)N * sizeof *jump);
    double *dur = NULL;
    td_align_word *w = NULL;
    size_t nw = 0;
    if (!text || !mat || !jump) {
        rc = td_error_set(err, TD_ENOMEM, "align: out of memory");
        goto out;
    }
    int k = 0;
    for (size_t s = 0; s < n_segs; s++)
        for (int t = 0; t < segs[s].n_tokens; t++)
            if (is_text(voc, segs[s].tokens[t]))
                text[k++] = segs[s].tokens[t];

    double median = 0;
    if (n_text > 0) {
        rc = td_align_matrix(in->weights, in->n_heads, in->n_rows, in->n_ctx, in->n_frames,
                             in->medfilt_width > 0 ? in->medfilt_width : TD_ALIGN_MEDFILT_WIDTH,
                             mat, err);
        if (rc)
            goto out;
        /* Rows notimestamps .. last text token (the sot sequence and eot
         * rows only took part in the standardisation). */
        rc = td_align_jumps(mat + (size_t)in->n_sot * M, N, M, jump, err);
        if (rc)
            goto out;

        int by_unicode = td_align_lang_splits_unicode(in->language ? in->language : "en");
        rc = td_align_split(voc, text, n_text, by_unicode, &w, &nw, err);
        if (rc)
            goto out;
        int b = 0;
        for (size_t i = 0; i < nw; i++) {
            w[i].start = jump[b];
            w[i].end = jump[b + w[i].n_tokens];
            if (in->token_probs) {
                double sum = 0;
                for (int t = b; t < b + w[i].n_tokens; t++)
                    sum += in->token_probs[t];
                w[i].prob = (float)(sum / w[i].n_tokens);
            }
            b += w[i].n_tokens;
        }

        /* Median of the nonzero word durations, capped at 0.7 s. */
        dur = malloc((nw ? nw : 1) * sizeof *dur);
        if (!dur) {
            rc = td_error_set(err, TD_ENOMEM, "align: out of memory");
            goto out;
        }
        size_t nd = 0;
        for (size_t i = 0; i < nw; i++)
            if (w[i].end - w[i].start != 0)
                dur[nd++] = w[i].end - w[i].start;
        if (nd > 0) {
            qsort(dur, nd, sizeof *dur, cmp_double);
            median = nd % 2 ? dur[nd / 2] : (dur[nd / 2 - 1] + dur[nd / 2]) / 2;
        }
        if (median > 0.7)
            median = 0.7;
        double max_dur = 2 * median;
        /* Over-long words at sentence ends: a sentence mark keeps its
         * start, the word after one keeps its end. */
        static const char marks[] = ".\xe3\x80\x82!\xef\xbc\x81?\xef\xbc\x9f";
        if (nd > 0)
            for (size_t i = 1; i < nw; i++)
                if (w[i].end - w[i].start > max_dur) {
                    if (py_in(w[i].text, strlen(w[i].text), marks))
                        w[i].end = w[i].start + max_dur;
                    else if (py_in(w[i - 1].text, strlen(w[i - 1].text), marks))
                        w[i].start = w[i].end - max_dur;
                }
        rc = td_align_merge_punct(w, nw, td_align_prepend_punct, td_align_append_punct, err);
        if (rc)
            goto out;
    }

    /* Hand the words back to their segments, then clip each segment's
     * first and last word as openai does. */
    double max_dur = 2 * median;
    double last = *last_speech;
    size_t wi = 0;
    for (size_t s = 0; s < n_segs; s++) {
        td_align_seg *sg = &segs[s];
        int seg_text = 0;
        for (int t = 0; t < sg->n_tokens; t++)
            seg_text += is_text(voc, sg->tokens[t]);
        size_t first = wi, cnt = 0;
        for (int saved = 0; wi < nw && saved < seg_text; wi++) {
            cnt += w[wi].text[0] != 0;
            saved += w[wi].n_tokens;
        }
        if (cnt == 0)
            continue;
        sg->words = calloc(cnt, sizeof *sg->words);
        if (!sg->words) {
            rc = td_error_set(err, TD_ENOMEM, "align: out of memory");
            goto out;
        }
        for (size_t i = first; i < wi; i++) {
            if (!w[i].text[0])
                continue;
            td_word *d = &sg->words[sg->n_words];
            d->text = stripped_copy(w[i].text);
            if (!d->text) {
                rc = td_error_set(err, TD_ENOMEM, "align: out of memory");
                goto out;
            }
            d->start = round2(in->time_offset + w[i].start);
            d->end = round2(in->time_offset + w[i].end);
            d->prob = w[i].prob;
            sg->n_words++;
        }
        td_word *ws = sg->words;
        size_t n = sg->n_words;
        /* The first (and second) word after a pause: no longer than twice
         * the median duration. */
        if (ws[0].end - last > median * 4 &&
            (ws[0].end - ws[0].start > max_dur || (n > 1 && ws[1].end - ws[0].start > max_dur * 2))) {
            if (n > 1 && ws[1].end - ws[1].start > max_dur) {
                double boundary = fmax(ws[1].end / 2, ws[1].end - max_dur);
                ws[0].end = ws[1].start = boundary;
            }
            ws[0].start = fmax(0, ws[0].end - max_dur);
        }
        /* A first word that starts well before its segment is cut at the
         * segment's start; otherwise the segment starts with its word. */
        if (sg->start < ws[0].end && sg->start - 0.5 > ws[0].start)
            ws[0].start = fmax(0, fmin(ws[0].end - median, sg->start));
        else
            sg->start = ws[0].start;
        /* The same for the last word past the segment's end. */
        if (sg->end > ws[n - 1].start && sg->end + 0.5 < ws[n - 1].end)
            ws[n - 1].end = fmax(ws[n - 1].start + median, sg->end);
        else
            sg->end = ws[n - 1].end;
        last = sg->end;
    }
    /* What transcribe keeps as the last speech: the last word's end, or
     * the last segment's end when no segment has words. */
    {
        double e = segs[n_segs - 1].end;
        for (size_t s = n_segs; s-- > 0;)
            if (segs[s].n_words) {
                e = segs[s].words[segs[s].n_words - 1].end;
                break;
            }
        *last_speech = e;
    }
out:
    if (rc)
        for (size_t s = 0; s < n_segs; s++)
            td_align_seg_release(&segs[s]);
    td_align_words_free(w, nw);
    free(text);
    free(mat);
    free(jump);
    free(dur);
    return rc;
}

/* ---- with a backend ---------------------------------------------------- */

int td_align_run(const td_wbackend_ops *ops, td_wbackend *b, const td_wmodel *m,
                 const td_align_run_in *in, td_align_seg *segs, size_t n_segs,
                 double *last_speech, td_error *err)
{
    if (!ops->align_weights)
        return td_error_set(err, TD_EUNAVAILABLE, "backend %s has no word alignment",
                            ops->name);
    if (!in->heads || in->heads->n_heads < 1 || in->heads->n_heads > TD_WMAX_LAYERS * TD_WMAX_HEADS)
        return td_error_set(err, TD_EINVAL, "align: no alignment heads");
    int n_text = 0;
    for (size_t s = 0; s < n_segs; s++) {
        if (segs[s].n_tokens < 0 || segs[s].n_tokens > TD_WMAX_TEXT_CTX)
            return td_error_set(err, TD_EINVAL, "align: segment %zu has %d tokens", s,
                                segs[s].n_tokens);
        n_text += segs[s].n_tokens;
    }
    int cap = n_text + 5, n_sot = 0;
    int32_t *text = malloc(((size_t)n_text + 1) * sizeof *text);
    int32_t *seq = malloc((size_t)cap * sizeof *seq);
    int *heads = malloc(2 * (size_t)in->heads->n_heads * sizeof *heads);
    float *w = NULL;
    int rc = TD_OK;
    if (!text || !seq || !heads) {
        rc = td_error_set(err, TD_ENOMEM, "align: out of memory");
        goto out;
    }
    int k = 0;
    for (size_t s = 0; s < n_segs; s++)
        for (int t = 0; t < segs[s].n_tokens; t++)
            text[k++] = segs[s].tokens[t];
    int n = td_align_sequence(m, in->language, in->translate, text, k, seq, cap, &n_sot);
    if (n < 0 || n > cap) {
        rc = td_error_set(err, TD_EINVAL, "align: no alignment sequence for language %d",
                          in->language);
        goto out;
    }
    if (n - n_sot - 2 == 0) {
        /* no text: nothing to run, but the segments' bookkeeping stays */
        td_align_window_in wi = {.weights = NULL, .n_heads = in->heads->n_heads, .n_rows = n,
                                 .n_ctx = m->hp.n_audio_ctx, .n_sot = n_sot,
                                 .n_frames = in->n_frames, .time_offset = in->time_offset,
                                 .language = in->language_code};
        td_align_vocab voc = td_align_vocab_of(m);
        rc = td_align_window(&voc, &wi, segs, n_segs, last_speech, err);
        goto out;
    }
    td_align_heads_flat(in->heads, heads);
    size_t nw = (size_t)in->heads->n_heads * (size_t)n * (size_t)m->hp.n_audio_ctx;
    w = malloc(nw * sizeof *w);
    if (!w) {
        rc = td_error_set(err, TD_ENOMEM, "align: out of memory");
        goto out;
    }
    rc = ops->align_weights(b, in->slot, in->window, n, seq, in->heads->n_heads, heads, w, err);
    if (rc)
        goto out;
    td_align_window_in wi = {.weights = w, .n_heads = in->heads->n_heads, .n_rows = n,
                             .n_ctx = m->hp.n_audio_ctx, .n_sot = n_sot,
                             .n_frames = in->n_frames, .token_probs = in->token_probs,
                             .time_offset = in->time_offset, .language = in->language_code};
    td_align_vocab voc = td_align_vocab_of(m);
    rc = td_align_window(&voc, &wi, segs, n_segs, last_speech, err);
out:
    free(text);
    free(seq);
    free(heads);
    free(w);
    return rc;
}
