/*
 * cues.c: grouping timed words into subtitle cues (see cues.h).
 *
 * Two passes. First the transcript is flattened into tokens: clean,
 * non-empty pieces of text with times that never go backwards (engines
 * give overlapping, negative or NaN times now and then, and a segment
 * may come with no words at all). Then the tokens are grouped greedily
 * into cues, each cue's lines are balanced, and a last pass extends short
 * cues and guarantees start < end <= next start.
 */
#include "out/cues.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "out/formats.h"
#include "util/buf.h"

/* Engine times beyond this (about 31 years) are garbage; clamping them
 * keeps every sum below finite and every timestamp printable. */
#define TIME_MAX 1e9
/* Rules beyond these are not subtitles any more; the bounds also keep the
 * int arithmetic below far from overflow. */
#define RULE_MAX 10000
/* Times from engines are sums of binary fractions: 1.6 - 1.0 is a hair
 * above 0.6 and 2.3 - 1.7 a hair below. Compare with this slack. */
#define TIME_EPS 1e-9
/* Used to separate two cues that would otherwise touch at one instant. */
#define MIN_GAP 0.001
/* How long a word of n code points can plausibly take to say: slow speech
 * runs about 8 characters a second; the base covers one-letter words
 * drawn out. A word timed longer than this has a silence in its time
 * (character-count times, or an alignment that lingers in a pause). */
#define WORD_BASE_S 0.4
#define WORD_CHAR_S 0.12

static double word_plausible(size_t width)
{
    return WORD_BASE_S + WORD_CHAR_S * (double)width;
}

typedef struct token {
    double start, end;
    char *text;     /* sanitised UTF-8, no spaces inside or around; owned */
    size_t len;     /* bytes */
    size_t width;   /* code points */
    size_t seg;     /* index of the segment it came from */
} token;

static int too_long(const token *t)
{
    return t->end - t->start > word_plausible(t->width);
}

/* When a word opening a cue is spoken, and when one closing it ends. */
static double said_start(const token *t)
{
    return too_long(t) ? t->end - word_plausible(t->width) : t->start;
}

static double said_end(const token *t)
{
    return too_long(t) ? t->start + word_plausible(t->width) : t->end;
}

typedef struct token_list {
    token *items;
    size_t count, cap;
} token_list;

td_cue_rules td_cue_rules_default(void)
{
    td_cue_rules r = {
        .max_line_chars = 42,
        .max_lines = 2,
        .max_duration = 7.0,
        .pause_split = 0.6,
        .min_duration = 0.5,
    };
    return r;
}

void td_cue_list_release(td_cue_list *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->count; i++)
        free(list->items[i].text);
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

static void token_list_release(token_list *tl)
{
    for (size_t i = 0; i < tl->count; i++)
        free(tl->items[i].text);
    free(tl->items);
    memset(tl, 0, sizeof *tl);
}

static size_t utf8_width(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Text that belongs to the word before it ("Hello" "," -> "Hello,"): some
 * engines emit trailing punctuation as a word of its own. */
static int is_trailing_punct(const char *s)
{
    static const char *const marks[] = {
        ",", ".", ";", ":", "!", "?", ")", "]", "}",
        "\xE2\x80\xA6",                                 /* U+2026 ellipsis */
        "\xE3\x80\x82", "\xE3\x80\x81", "\xE3\x80\x8D", /* CJK . , closing quote */
        "\xEF\xBC\x8C", "\xEF\xBC\x81", "\xEF\xBC\x9F", /* fullwidth , ! ? */
    };
    if (!*s)
        return 0;
    while (*s) {
        size_t i, n = 0;
        for (i = 0; i < sizeof marks / sizeof marks[0]; i++) {
            n = strlen(marks[i]);
            if (strncmp(s, marks[i], n) == 0)
                break;
        }
        if (i == sizeof marks / sizeof marks[0])
            return 0;
        s += n;
    }
    return 1;
}

static double clamp_time(double t, double fallback)
{
    if (!isfinite(t))
        return fallback;
    if (t < 0)
        return 0;
    return t > TIME_MAX ? TIME_MAX : t;
}

/* Append one piece of text (raw bytes, no ASCII whitespace) as a token. */
static int push_piece(token_list *tl, const char *piece, size_t len, double start, double end,
                      size_t seg, td_buf *tmp)
{
    char *raw = strndup(piece, len);
    if (!raw)
        return TD_ENOMEM;
    td_buf_reset(tmp);
    int rc = td_utf8_sanitize(raw, 0, tmp);
    free(raw);
    if (rc)
        return rc;
    /* Controls were dropped; U+FFFD replaced bad bytes. Nothing left: skip. */
    if (tmp->len == 0)
        return TD_OK;

    if (tl->count > 0 && tl->items[tl->count - 1].seg == seg && is_trailing_punct(tmp->data)) {
        token *prev = &tl->items[tl->count - 1];
        char *joined = realloc(prev->text, prev->len + tmp->len + 1);
        if (!joined)
            return TD_ENOMEM;
        memcpy(joined + prev->len, tmp->data, tmp->len + 1);
        prev->text = joined;
        prev->len += tmp->len;
        prev->width = utf8_width(joined, prev->len);
        if (end > prev->end)
            prev->end = end;
        return TD_OK;
    }

    if (tl->count == tl->cap) {
        size_t cap = tl->cap ? tl->cap * 2 : 64;
        if (cap > SIZE_MAX / sizeof *tl->items)
            return TD_ENOMEM;
        token *items = realloc(tl->items, cap * sizeof *items);
        if (!items)
            return TD_ENOMEM;
        tl->items = items;
        tl->cap = cap;
    }
    size_t n = tmp->len;
    char *text = td_buf_detach(tmp, NULL);
    if (!text)
        return TD_ENOMEM;
    tl->items[tl->count++] = (token){
        .start = start, .end = end, .text = text, .len = n,
        .width = utf8_width(text, n), .seg = seg,
    };
    return TD_OK;
}

/* Split text at ASCII whitespace and spread the pieces evenly over
 * [start, end]: used for a word that holds several words (or a newline),
 * and for a segment that came without word times. */
static int push_text(token_list *tl, const char *text, double start, double end, size_t seg,
                     td_buf *tmp)
{
    size_t n_pieces = 0;
    for (const char *p = text; *p;) {
        while (*p && is_space(*p))
            p++;
        if (!*p)
            break;
        n_pieces++;
        while (*p && !is_space(*p))
            p++;
    }
    if (n_pieces == 0)
        return TD_OK;
    double step = (end - start) / (double)n_pieces;
    size_t k = 0;
    for (const char *p = text; *p;) {
        while (*p && is_space(*p))
            p++;
        if (!*p)
            break;
        const char *q = p;
        while (*q && !is_space(*q))
            q++;
        double s = start + step * (double)k;
        double e = k + 1 == n_pieces ? end : start + step * (double)(k + 1);
        int rc = push_piece(tl, p, (size_t)(q - p), s, e, seg, tmp);
        if (rc)
            return rc;
        k++;
        p = q;
    }
    return TD_OK;
}

/* Push text timed start..end after everything pushed so far: times are
 * clamped so they never run backwards, and *prev_end follows the last
 * token (a glued punctuation mark may have moved its end). */
static int push_in_order(token_list *tl, const char *text, double start, double end, size_t si,
                         td_buf *tmp, double *prev_end)
{
    double s = clamp_time(start, *prev_end);
    double e = clamp_time(end, s);
    if (s < *prev_end)
        s = *prev_end;
    if (e < s)
        e = s;
    int rc = push_text(tl, text, s, e, si, tmp);
    if (rc == TD_OK && tl->count > 0)
        *prev_end = tl->items[tl->count - 1].end;
    return rc;
}

/* Times are made monotonic here: each token starts no earlier than the
 * one before it ended. Cues built from such tokens cannot overlap. */
static int flatten(const td_transcript *t, token_list *tl, td_buf *tmp)
{
    double prev_end = 0;
    for (size_t si = 0; si < t->n_segs; si++) {
        const td_segment *seg = &t->segs[si];
        size_t before = tl->count;
        for (size_t wi = 0; wi < seg->n_words; wi++) {
            const td_word *w = &seg->words[wi];
            if (!w->text || !w->text[0])
                continue;
            int rc = push_in_order(tl, w->text, w->start, w->end, si, tmp, &prev_end);
            if (rc)
                return rc;
        }
        /* No usable words (an engine with segment times only, or words that
         * were all blank): the segment's text stands in for them. */
        if (tl->count == before && seg->text && seg->text[0]) {
            int rc = push_in_order(tl, seg->text, seg->start, seg->end, si, tmp, &prev_end);
            if (rc)
                return rc;
        }
    }
    return TD_OK;
}

/* Greedy line filling, one token at a time. A token wider than a line
 * takes a line of its own ("full"), so the next token starts a new one.
 * Greedy filling gives the fewest lines for a given width. */
typedef struct fill {
    int lines;
    size_t cur;  /* width of the last line */
    int full;    /* the last line holds an over-long token */
} fill;

static fill fill_add(fill f, size_t w, size_t width)
{
    if (f.lines == 0) {
        f.lines = 1;
        f.cur = w;
        f.full = w > width;
    } else if (w > width) {
        f.lines++;
        f.cur = w;
        f.full = 1;
    } else if (!f.full && f.cur + 1 + w <= width) {
        f.cur += 1 + w;
    } else {
        f.lines++;
        f.cur = w;
        f.full = 0;
    }
    return f;
}

/* Fill lines of at most x code points from the last token backwards, so
 * that spare room ends up on the top line (the bottom-heavy shape that
 * subtitle style guides prefer). Tokens wider than max_w sit alone.
 * Marks brk[i] when a line starts at token i; returns the line count. */
static int fill_backward(const token *tok, size_t n, size_t x, size_t max_w, unsigned char *brk)
{
    int lines = 0;
    size_t cur = 0;
    int open = 0; /* a line is being filled */
    for (size_t k = n; k-- > 0;) {
        size_t w = tok[k].width;
        if (brk)
            brk[k] = 0;
        if (w > max_w) {
            if (open && brk)
                brk[k + 1] = 1;
            lines++;
            open = 0;
            if (brk)
                brk[k] = 1;
            continue;
        }
        if (open && cur + 1 + w <= x) {
            cur += 1 + w;
        } else {
            if (open && brk)
                brk[k + 1] = 1;
            lines++;
            open = 1;
            cur = w;
        }
    }
    if (brk && n > 0)
        brk[0] = 1;
    return lines;
}

/* Lay tokens [0, n) out as the cue text: the fewest lines that the width
 * allows, then among layouts with that many lines the one whose longest
 * line (over-long single tokens aside) is shortest. */
static int layout(const token *tok, size_t n, size_t max_w, td_buf *out, unsigned char *brk)
{
    fill f = {0};
    size_t lo = 1;
    for (size_t i = 0; i < n; i++) {
        f = fill_add(f, tok[i].width, max_w);
        if (tok[i].width <= max_w && tok[i].width > lo)
            lo = tok[i].width;
    }
    size_t hi = max_w; /* feasible: greedy at max_w gave f.lines */
    if (f.lines <= 1) {
        for (size_t i = 0; i < n; i++)
            brk[i] = i == 0;
    } else {
        if (lo > hi)
            lo = hi;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (fill_backward(tok, n, mid, max_w, NULL) <= f.lines)
                hi = mid;
            else
                lo = mid + 1;
        }
        fill_backward(tok, n, hi, max_w, brk);
    }
    for (size_t i = 0; i < n; i++) {
        int rc = TD_OK;
        if (i > 0)
            rc = td_buf_putc(out, brk[i] ? '\n' : ' ');
        if (!rc)
            rc = td_buf_append(out, tok[i].text, tok[i].len);
        if (rc)
            return rc;
    }
    return TD_OK;
}

static int check_rules(const td_cue_rules *r, td_error *err)
{
    if (!r)
        return td_error_set(err, TD_EINVAL, "cue rules: missing");
    if (r->max_line_chars < 1 || r->max_line_chars > RULE_MAX)
        return td_error_set(err, TD_EINVAL, "cue rules: max_line_chars %d is not in 1..%d",
                            r->max_line_chars, RULE_MAX);
    if (r->max_lines < 1 || r->max_lines > RULE_MAX)
        return td_error_set(err, TD_EINVAL, "cue rules: max_lines %d is not in 1..%d",
                            r->max_lines, RULE_MAX);
    if (!(r->max_duration > 0) || !isfinite(r->max_duration))
        return td_error_set(err, TD_EINVAL, "cue rules: max_duration %g is not positive",
                            r->max_duration);
    if (!(r->pause_split > 0) || !isfinite(r->pause_split))
        return td_error_set(err, TD_EINVAL, "cue rules: pause_split %g is not positive",
                            r->pause_split);
    if (!(r->min_duration >= 0) || r->min_duration > r->max_duration)
        return td_error_set(err, TD_EINVAL,
                            "cue rules: min_duration %g is not in 0..max_duration (%g)",
                            r->min_duration, r->max_duration);
    return TD_OK;
}

static int push_cue(td_cue_list *list, size_t *cap, double start, double end, char *text)
{
    if (list->count == *cap) {
        size_t ncap = *cap ? *cap * 2 : 32;
        if (ncap > SIZE_MAX / sizeof *list->items)
            return TD_ENOMEM;
        td_cue *items = realloc(list->items, ncap * sizeof *items);
        if (!items)
            return TD_ENOMEM;
        list->items = items;
        *cap = ncap;
    }
    list->items[list->count++] = (td_cue){.start = start, .end = end, .text = text};
    return TD_OK;
}

/* Short cues get up to min_duration if the next cue leaves room; then
 * every cue is made to last at least MIN_GAP and to end no later than the
 * next one starts (tokens are monotonic, so this only moves anything when
 * words had no duration at all). */
static void fix_times(td_cue_list *list, const td_cue_rules *r)
{
    for (size_t k = 0; k < list->count; k++) {
        td_cue *c = &list->items[k];
        td_cue *next = k + 1 < list->count ? &list->items[k + 1] : NULL;
        if (c->end - c->start < r->min_duration) {
            double want = c->start + r->min_duration;
            if (next && want > next->start)
                want = next->start;
            if (want > c->end)
                c->end = want;
        }
        if (c->end <= c->start) {
            c->end = c->start + MIN_GAP;
            if (next && next->start < c->end)
                next->start = c->end;
        }
    }
}

int td_cues_build(const td_transcript *t, const td_cue_rules *rules, td_cue_list *out,
                  td_error *err)
{
    out->items = NULL;
    out->count = 0;
    int rc = check_rules(rules, err);
    if (rc)
        return rc;
    if (!t)
        return TD_OK;

    token_list tl = {0};
    td_buf tmp, text;
    td_buf_init(&tmp, 0);
    td_buf_init(&text, 0);
    unsigned char *brk = NULL;
    size_t cap = 0;
    const size_t max_w = (size_t)rules->max_line_chars;

    rc = flatten(t, &tl, &tmp);
    if (rc)
        goto out_release;
    if (tl.count == 0)
        goto out_release;
    brk = malloc(tl.count);
    if (!brk) {
        rc = TD_ENOMEM;
        goto out_release;
    }

    for (size_t first = 0; first < tl.count;) {
        const token *tok = tl.items;
        fill f = fill_add((fill){0}, tok[first].width, max_w);
        size_t last = first + 1; /* exclusive */
        for (; last < tl.count; last++) {
            double gap = tok[last].start - tok[last - 1].end;
            if (gap >= rules->pause_split - TIME_EPS)
                break;
            /* Segments are sentences or phrases: a lesser pause will do. */
            if (tok[last].seg != tok[last - 1].seg && gap >= rules->pause_split / 2 - TIME_EPS)
                break;
            if (said_end(&tok[last]) - said_start(&tok[first]) > rules->max_duration + TIME_EPS)
                break;
            fill g = fill_add(f, tok[last].width, max_w);
            if (g.lines > rules->max_lines)
                break;
            f = g;
        }

        td_buf_reset(&text);
        rc = layout(tok + first, last - first, max_w, &text, brk);
        if (rc)
            goto out_release;
        double start = tok[first].start;
        double end = tok[last - 1].end;
        /* A cue starts when its first word is spoken and ends when its last
         * word is: a first word timed longer than it can take to say is
         * said at the end of its time (the silence before it went into it),
         * a last word at the start of its time. A cue of one such word: at
         * the end when it opens its segment, else at the start. */
        const token *a = &tok[first], *z = &tok[last - 1];
        int opens = first == 0 || tok[first - 1].seg != a->seg;
        if (last - first > 1 || opens)
            start = said_start(a);
        if (last - first > 1 || !opens)
            end = said_end(z);
        /* A cue longer than max_duration (one word stretched over a
         * silence the rules above did not see) is still shown no longer
         * than that. */
        if (end - start > rules->max_duration)
            end = start + rules->max_duration;
        char *s = td_buf_detach(&text, NULL);
        if (!s) {
            rc = TD_ENOMEM;
            goto out_release;
        }
        rc = push_cue(out, &cap, start, end, s);
        if (rc) {
            free(s);
            goto out_release;
        }
        first = last;
    }
    fix_times(out, rules);

out_release:
    free(brk);
    token_list_release(&tl);
    td_buf_release(&tmp);
    td_buf_release(&text);
    if (rc) {
        td_cue_list_release(out);
        if (rc == TD_ENOMEM)
            td_error_set(err, TD_ENOMEM, "out of memory building cues");
        else if (err && err->code != rc)
            td_error_set(err, rc, "building cues failed");
    }
    return rc;
}
