/*
 * guard.c: the drop and repeat checks of a decoded window (guard.h).
 *
 * Text is compared as "units": words lower-cased with punctuation
 * dropped, or, for text without spaces (Chinese, Japanese, Thai), its
 * code points. Only the first UNITS_CAP units and TEXT_CAP bytes of a
 * segment are looked at: a window holds at most 224 tokens, far less.
 */
#include "whisper/guard.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_CAP 16384
#define UNITS_CAP 2048

void td_guard_params_default(td_guard_params *p)
{
    p->gap_speech_s = 3.0;
    p->word_pad_s = 0.5;
    p->sparse_min_speech_s = 5.0;
    p->sparse_min_wps = 1.0;
    p->repeat_min_words = 4;
    p->repeat_min_frac = 0.8;
    p->loop_max_period = 16;
    p->loop_min_repeats = 3;
    p->loop_min_units = 8;
}

const char *td_guard_reason_name(td_guard_reason r)
{
    switch (r) {
    case TD_GUARD_GAP:
        return "gap";
    case TD_GUARD_SPARSE:
        return "sparse";
    case TD_GUARD_REPEAT:
        return "repeat";
    case TD_GUARD_LOOP:
        return "loop";
    }
    return "?";
}

/* ---- time -------------------------------------------------------------- */

static double overlap(double a0, double a1, double b0, double b1)
{
    double lo = a0 > b0 ? a0 : b0, hi = a1 < b1 ? a1 : b1;
    return hi > lo ? hi - lo : 0;
}

/* Seconds of speech inside [a, b). */
static double speech_in(const td_guard_span *sp, size_t n, double a, double b)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += overlap(sp[i].start, sp[i].end, a, b);
    return s;
}

static int cmp_span(const void *x, const void *y)
{
    const td_guard_span *a = x, *b = y;
    return (a->start > b->start) - (a->start < b->start);
}

static size_t push(td_guard_issue *out, size_t cap, size_t n, const td_guard_issue *is)
{
    if (n < cap)
        out[n] = *is;
    return n + 1;
}

size_t td_guard_gaps(const td_guard_params *p, const td_guard_span *speech, size_t n_speech,
                     double t0, double t1, const td_segment *segs, size_t n_segs,
                     td_guard_issue *out, size_t cap)
{
    if (!(t1 > t0) || n_speech == 0)
        return 0;
    size_t n_cov = 0;
    for (size_t s = 0; s < n_segs; s++)
        n_cov += segs[s].n_words ? segs[s].n_words : 1;
    td_guard_span *cov = malloc((n_cov ? n_cov : 1) * sizeof *cov);
    if (!cov)
        return 0; /* cannot check; reporting a gap would be a guess */
    size_t k = 0;
    for (size_t s = 0; s < n_segs; s++) {
        const td_segment *g = &segs[s];
        if (g->n_words) {
            for (size_t w = 0; w < g->n_words; w++) {
                cov[k].start = g->words[w].start - p->word_pad_s;
                cov[k].end = g->words[w].end + p->word_pad_s;
                k++;
            }
        } else if (g->text && g->text[0]) {
            cov[k].start = g->start;
            cov[k].end = g->end;
            k++;
        }
    }
    qsort(cov, k, sizeof *cov, cmp_span);
    /* Walk the holes between covered stretches inside [t0, t1). */
    size_t found = 0;
    double hole = t0;
    for (size_t i = 0; i <= k; i++) {
        double next = i < k ? cov[i].start : t1;
        if (next > t1)
            next = t1;
        if (next > hole) {
            double s = speech_in(speech, n_speech, hole, next);
            if (s > p->gap_speech_s) {
                td_guard_issue is = {TD_GUARD_GAP, 0, 0, -1, s, 0};
                int first = 1;
                for (size_t j = 0; j < n_speech; j++)
                    if (overlap(speech[j].start, speech[j].end, hole, next) > 0) {
                        double a = speech[j].start > hole ? speech[j].start : hole;
                        double b = speech[j].end < next ? speech[j].end : next;
                        if (first)
                            is.start = a, first = 0;
                        is.end = b;
                    }
                found = push(out, cap, found, &is);
            }
        }
        if (i < k && cov[i].end > hole)
            hole = cov[i].end;
        if (hole >= t1)
            break;
    }
    free(cov);
    return found;
}

/* ---- text units -------------------------------------------------------- */

typedef struct units {
    char buf[TEXT_CAP];
    uint16_t off[UNITS_CAP], len[UNITS_CAP];
    int n;
} units;

static size_t cp_len(unsigned char b)
{
    return b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
}

static uint32_t cp_value(const unsigned char *s, size_t n)
{
    if (n == 1)
        return s[0];
    uint32_t v = s[0] & (0x7F >> n);
    for (size_t i = 1; i < n; i++)
        v = (v << 6) | (s[i] & 0x3F);
    return v;
}

/* Separators: white space and punctuation, ASCII and the common
 * non-ASCII marks (quotes, dashes, ellipsis, CJK and full-width marks). */
static int separator(uint32_t c)
{
    if (c < 0x80)
        return !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
    return c == 0xA0 || c == 0xA1 || c == 0xAB || c == 0xB7 || c == 0xBB || c == 0xBF ||
           (c >= 0x2000 && c <= 0x206F) || (c >= 0x3000 && c <= 0x303F) ||
           (c >= 0xFF01 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) ||
           (c >= 0xFF3B && c <= 0xFF40) || (c >= 0xFF5B && c <= 0xFF65);
}

/* Split text into words; when that gives fewer than 4 words but 16 or
 * more characters, into characters instead (text without spaces). */
static void to_units(const char *text, units *u)
{
    u->n = 0;
    if (!text)
        return;
    size_t n = strlen(text), o = 0;
    int words = 0, chars = 0;
    /* normalised copy: separators become one space */
    int sep = 1;
    for (size_t i = 0; i < n;) {
        size_t l = cp_len((unsigned char)text[i]);
        if (i + l > n)
            l = n - i;
        uint32_t c = cp_value((const unsigned char *)text + i, l);
        if (separator(c)) {
            if (!sep && o + 1 < TEXT_CAP)
                u->buf[o++] = ' ';
            sep = 1;
        } else {
            if (o + l + 1 >= TEXT_CAP)
                break;
            words += sep;
            chars++;
            sep = 0;
            for (size_t j = 0; j < l; j++) {
                char ch = text[i + j];
                u->buf[o++] = l == 1 && ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
            }
        }
        i += l;
    }
    u->buf[o] = 0;
    int by_char = words < 4 && chars >= 16;
    for (size_t i = 0; i < o && u->n < UNITS_CAP;) {
        if (u->buf[i] == ' ') {
            i++;
            continue;
        }
        size_t j = i;
        if (by_char)
            j += cp_len((unsigned char)u->buf[i]);
        else
            while (j < o && u->buf[j] != ' ')
                j++;
        u->off[u->n] = (uint16_t)i;
        u->len[u->n] = (uint16_t)(j - i);
        u->n++;
        i = j;
    }
}

static int unit_eq(const units *a, int i, const units *b, int j)
{
    return a->len[i] == b->len[j] && memcmp(a->buf + a->off[i], b->buf + b->off[j], a->len[i]) == 0;
}

/* ---- per segment ------------------------------------------------------- */

static size_t count_words(const td_segment *s)
{
    if (s->n_words)
        return s->n_words;
    size_t n = 0;
    int in = 0;
    for (const char *c = s->text ? s->text : ""; *c; c++) {
        int sp = *c == ' ' || *c == '\t' || *c == '\n' || *c == '\r';
        n += !sp && !in;
        in = !sp;
    }
    return n;
}

int td_guard_sparse(const td_guard_params *p, const td_guard_span *speech, size_t n_speech,
                    const td_segment *seg, int idx, td_guard_issue *out)
{
    double s = speech_in(speech, n_speech, seg->start, seg->end);
    if (s < p->sparse_min_speech_s)
        return 0;
    size_t n = count_words(seg);
    double wps = (double)n / s;
    if (wps >= p->sparse_min_wps)
        return 0;
    td_guard_issue is = {TD_GUARD_SPARSE, seg->start, seg->end, idx, wps, (int)n};
    *out = is;
    return 1;
}

int td_guard_repeat(const td_guard_params *p, const td_segment *prev, const td_segment *seg,
                    int idx, td_guard_issue *out)
{
    if (!prev)
        return 0;
    units *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    int *row = NULL;
    int hit = 0;
    if (!a || !b)
        goto out;
    to_units(prev->text, a);
    to_units(seg->text, b);
    if (b->n < p->repeat_min_words || a->n < p->repeat_min_words)
        goto out;
    /* Longest run of consecutive equal units (longest common substring):
     * row[j] = length of the common run ending at a[i], b[j]. */
    row = calloc((size_t)b->n + 1, sizeof *row);
    if (!row)
        goto out;
    int best = 0;
    for (int i = 0; i < a->n; i++)
        for (int j = b->n; j >= 1; j--) {
            row[j] = unit_eq(a, i, b, j - 1) ? row[j - 1] + 1 : 0;
            if (row[j] > best)
                best = row[j];
        }
    if (best >= p->repeat_min_words && best >= p->repeat_min_frac * b->n) {
        td_guard_issue is = {TD_GUARD_REPEAT, seg->start, seg->end, idx, best, b->n};
        *out = is;
        hit = 1;
    }
out:
    free(row);
    free(a);
    free(b);
    return hit;
}

int td_guard_loop(const td_guard_params *p, const td_segment *seg, int idx, td_guard_issue *out)
{
    units *u = malloc(sizeof *u);
    if (!u)
        return 0;
    to_units(seg->text, u);
    int best_reps = 0, best_p = 0, best_cov = 0;
    for (int per = 1; per <= p->loop_max_period && 2 * per <= u->n; per++) {
        /* a run of L positions with u[i] == u[i + per] is the unit at its
         * start repeated (L + per) / per times */
        int run = 0;
        for (int i = 0; i + per < u->n; i++) {
            run = unit_eq(u, i, u, i + per) ? run + 1 : 0;
            int reps = (run + per) / per, cov = reps * per;
            if (run && reps >= p->loop_min_repeats && cov >= p->loop_min_units && cov > best_cov)
                best_reps = reps, best_p = per, best_cov = cov;
        }
    }
    free(u);
    if (!best_reps)
        return 0;
    td_guard_issue is = {TD_GUARD_LOOP, seg->start, seg->end, idx, best_reps, best_p};
    *out = is;
    return 1;
}

size_t td_guard_window(const td_guard_params *p, const td_guard_span *speech, size_t n_speech,
                       double t0, double t1, const td_segment *prev, const td_segment *segs,
                       size_t n_segs, td_guard_issue *out, size_t cap)
{
    size_t n = td_guard_gaps(p, speech, n_speech, t0, t1, segs, n_segs, out, cap);
    for (size_t s = 0; s < n_segs; s++) {
        td_guard_issue is;
        if (td_guard_sparse(p, speech, n_speech, &segs[s], (int)s, &is))
            n = push(out, cap, n, &is);
        if (td_guard_repeat(p, s ? &segs[s - 1] : prev, &segs[s], (int)s, &is))
            n = push(out, cap, n, &is);
        if (td_guard_loop(p, &segs[s], (int)s, &is))
            n = push(out, cap, n, &is);
    }
    return n;
}
