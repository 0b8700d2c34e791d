/*
 * formats.c: SRT, WebVTT and JSON renderers, and the UTF-8 clean-up they
 * share (see formats.h).
 *
 * Engines emit whatever bytes their vocabularies hold (Whisper's byte-level
 * tokens can split a character in two), and players and JSON parsers choke
 * on invalid UTF-8, control characters and stray blank lines. So every
 * string is sanitised on the way out, and each renderer either appends a
 * whole document or leaves the buffer as it found it.
 */
#include "out/formats.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD */
#define SRT_LT "\xE2\x80\xB9"      /* U+2039 single left-pointing angle quote */
#define SRT_GT "\xE2\x80\xBA"      /* U+203A single right-pointing angle quote */

/* 99999:59:59.999 still fits out[16] with its NUL. */
#define TIMESTAMP_MAX_MS (100000LL * 3600 * 1000 - 1)

/* ---- UTF-8 ---------------------------------------------------------- */

int td_utf8_sanitize(const char *s, int keep_newlines, td_buf *out)
{
    /* Make out->data a string even when nothing is appended. */
    int rc = td_buf_append(out, "", 0);
    if (rc)
        return rc;
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        unsigned c = *p;
        if (c < 0x80) {
            if (c == '\r' && p[1] == '\n') {
                p++; /* CRLF: the '\n' speaks for both */
                continue;
            }
            if (c == '\n' || c == '\r')
                rc = td_buf_putc(out, keep_newlines ? '\n' : ' ');
            else if (c == '\t')
                rc = td_buf_putc(out, ' ');
            else if (c >= 0x20 && c != 0x7F)
                rc = td_buf_putc(out, (char)c);
            if (rc)
                return rc;
            p++;
            continue;
        }
        /* Well-formed sequences as Unicode's table 3-7 lists them; the
         * narrowed second-byte ranges exclude overlongs, surrogates and
         * code points above U+10FFFF. */
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            cp = c & 0x0F;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            cp = c & 0x07;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else {
            rc = td_buf_puts(out, REPLACEMENT);
            if (rc)
                return rc;
            p++;
            continue;
        }
        size_t i = 1;
        for (; i <= need; i++) {
            unsigned b = p[i]; /* the NUL stops this: it is below lo */
            if (b < lo || b > hi)
                break;
            lo = 0x80;
            hi = 0xBF;
            cp = (cp << 6) | (b & 0x3F);
        }
        if (i <= need) {
            /* One U+FFFD for the maximal ill-formed prefix; the byte that
             * broke it is looked at afresh. */
            rc = td_buf_puts(out, REPLACEMENT);
        } else if (cp >= 0x80 && cp <= 0x9F) {
            rc = TD_OK; /* C1 controls: invisible, and some players act on them */
        } else {
            rc = td_buf_append(out, p, i);
        }
        if (rc)
            return rc;
        p += i;
    }
    return TD_OK;
}

/* ---- format list ---------------------------------------------------- */

int td_formats_parse(const char *list, unsigned *mask, td_error *err)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {
        {"srt", TD_FORMAT_SRT},
        {"vtt", TD_FORMAT_VTT},
        {"webvtt", TD_FORMAT_VTT},
        {"json", TD_FORMAT_JSON},
    };
    if (!list)
        return td_error_set(err, TD_EINVAL, "output formats: none given (known: srt, vtt, json)");
    unsigned m = 0;
    const char *p = list;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t' || *a == '\n' || *a == '\r'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\n' || b[-1] == '\r'))
            b--;
        size_t n = (size_t)(b - a);
        if (n > 0) {
            size_t i;
            for (i = 0; i < sizeof names / sizeof names[0]; i++)
                if (strlen(names[i].name) == n && strncasecmp(names[i].name, a, n) == 0)
                    break;
            if (i == sizeof names / sizeof names[0])
                return td_error_set(err, TD_EINVAL,
                                    "output formats: unknown format '%.*s' (known: srt, vtt, json)",
                                    n > 64 ? 64 : (int)n, a);
            m |= names[i].bit;
        }
        if (!*end)
            break;
        p = end + 1;
    }
    if (!m)
        return td_error_set(err, TD_EINVAL,
                            "output formats: empty list '%.64s' (known: srt, vtt, json)", list);
    *mask = m;
    return TD_OK;
}

/* ---- timestamps ----------------------------------------------------- */

static long long to_ms(double seconds)
{
    if (!(seconds > 0)) /* negative, zero and NaN */
        return 0;
    if (seconds * 1000.0 >= (double)TIMESTAMP_MAX_MS)
        return TIMESTAMP_MAX_MS;
    return llround(seconds * 1000.0);
}

void td_format_timestamp(double seconds, char sep, char *out)
{
    unsigned long long ms = (unsigned long long)to_ms(seconds);
    /* to_ms clamped already; the modulo tells the compiler it fits. */
    unsigned h = (unsigned)(ms / 3600000 % 100000);
    unsigned m = (unsigned)(ms / 60000 % 60);
    unsigned s = (unsigned)(ms / 1000 % 60);
    unsigned f = (unsigned)(ms % 1000);
    snprintf(out, 16, "%02u:%02u:%02u%c%03u", h, m, s, sep, f);
}

/* ---- SRT and WebVTT ------------------------------------------------- */

enum text_style { STYLE_SRT, STYLE_VTT };

/* Append the cue's text lines to out, each followed by '\n': sanitised,
 * trimmed, blank ones left out (a blank line ends a cue), markup
 * characters made harmless. *n_lines says how many were written. */
static int cue_lines(const char *text, enum text_style style, td_buf *tmp, td_buf *out,
                     int *n_lines)
{
    *n_lines = 0;
    td_buf_reset(tmp);
    int rc = td_utf8_sanitize(text, 1, tmp);
    if (rc)
        return rc;
    const char *p = tmp->data;
    while (*p) {
        const char *e = strchr(p, '\n');
        if (!e)
            e = p + strlen(p);
        const char *a = p, *b = e;
        while (a < b && *a == ' ')
            a++;
        while (b > a && b[-1] == ' ')
            b--;
        if (a < b) {
            for (const char *q = a; q < b && !rc; q++) {
                if (*q == '<')
                    rc = td_buf_puts(out, style == STYLE_SRT ? SRT_LT : "&lt;");
                else if (*q == '>')
                    rc = td_buf_puts(out, style == STYLE_SRT ? SRT_GT : "&gt;");
                else if (*q == '&' && style == STYLE_VTT)
                    rc = td_buf_puts(out, "&amp;");
                else
                    rc = td_buf_putc(out, *q);
            }
            if (!rc)
                rc = td_buf_putc(out, '\n');
            if (rc)
                return rc;
            (*n_lines)++;
        }
        p = *e ? e + 1 : e;
    }
    return TD_OK;
}

static int render_cues(const td_cue_list *cues, enum text_style style, td_buf *out,
                       td_error *err)
{
    const char *what = style == STYLE_SRT ? "SRT" : "WebVTT";
    const char sep = style == STYLE_SRT ? ',' : '.';
    size_t mark = out->len;
    td_buf tmp, lines;
    td_buf_init(&tmp, out->limit);
    td_buf_init(&lines, out->limit);
    int rc = td_buf_append(out, "", 0);
    if (!rc && style == STYLE_VTT)
        rc = td_buf_puts(out, "WEBVTT\n\n");
    size_t index = 0;
    for (size_t i = 0; !rc && cues && i < cues->count; i++) {
        const td_cue *c = &cues->items[i];
        int n_lines;
        td_buf_reset(&lines);
        rc = cue_lines(c->text, style, &tmp, &lines, &n_lines);
        if (rc || n_lines == 0)
            continue; /* nothing to show: the cue goes, numbering stays consecutive */
        char t0[16], t1[16];
        double end = c->end < c->start ? c->start : c->end;
        td_format_timestamp(c->start, sep, t0);
        td_format_timestamp(end, sep, t1);
        index++;
        if (style == STYLE_SRT)
            rc = td_buf_printf(out, "%zu\n", index);
        if (!rc)
            rc = td_buf_printf(out, "%s --> %s\n", t0, t1);
        if (!rc)
            rc = td_buf_append(out, lines.data, lines.len);
        if (!rc)
            rc = td_buf_putc(out, '\n');
    }
    td_buf_release(&tmp);
    td_buf_release(&lines);
    if (rc) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
        return td_error_set(err, rc, "%s output: larger than %zu bytes or out of memory", what,
                            out->limit);
    }
    return TD_OK;
}

int td_render_srt(const td_cue_list *cues, td_buf *out, td_error *err)
{
    return render_cues(cues, STYLE_SRT, out, err);
}

int td_render_vtt(const td_cue_list *cues, td_buf *out, td_error *err)
{
    return render_cues(cues, STYLE_VTT, out, err);
}

/* ---- JSON ----------------------------------------------------------- */

/* A sanitised JSON string, or JSON null for NULL. jansson refuses invalid
 * UTF-8, so nothing reaches it unsanitised. */
static json_t *jstr(const char *s, int keep_newlines, td_buf *tmp)
{
    if (!s)
        return json_null();
    td_buf_reset(tmp);
    if (td_utf8_sanitize(s, keep_newlines, tmp))
        return NULL;
    return json_string(tmp->data);
}

/* Seconds to the millisecond: finer digits are noise, and %.17g of a
 * binary fraction is unreadable. jansson refuses NaN and infinities. */
static json_t *jtime(double t)
{
    if (!isfinite(t) || t < 0)
        t = 0;
    return json_real(round(t * 1000.0) / 1000.0);
}

static json_t *jprob(float p)
{
    if (!isfinite(p) || p < 0)
        return json_null(); /* the engine has no confidence */
    if (p > 1)
        p = 1;
    return json_real(round((double)p * 10000.0) / 10000.0);
}

static json_t *json_words(const td_segment *seg, td_buf *tmp)
{
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    for (size_t i = 0; i < seg->n_words; i++) {
        const td_word *w = &seg->words[i];
        json_t *o = json_object();
        if (json_array_append_new(arr, o) || json_object_set_new(o, "start", jtime(w->start)) ||
            json_object_set_new(o, "end", jtime(w->end)) ||
            json_object_set_new(o, "word", jstr(w->text ? w->text : "", 0, tmp)) ||
            json_object_set_new(o, "prob", jprob(w->prob)))
            goto out_free;
    }
    return arr;
out_free:
    json_decref(arr);
    return NULL;
}

static json_t *json_segments(const td_transcript *t, td_buf *tmp)
{
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    for (size_t i = 0; t && i < t->n_segs; i++) {
        const td_segment *seg = &t->segs[i];
        json_t *o = json_object();
        if (json_array_append_new(arr, o) || json_object_set_new(o, "start", jtime(seg->start)) ||
            json_object_set_new(o, "end", jtime(seg->end)) ||
            json_object_set_new(o, "text", jstr(seg->text ? seg->text : "", 1, tmp)) ||
            json_object_set_new(o, "words", json_words(seg, tmp)))
            goto out_free;
    }
    return arr;
out_free:
    json_decref(arr);
    return NULL;
}

static json_t *json_cues(const td_cue_list *cues, td_buf *tmp)
{
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    for (size_t i = 0; cues && i < cues->count; i++) {
        const td_cue *c = &cues->items[i];
        json_t *o = json_object();
        if (json_array_append_new(arr, o) || json_object_set_new(o, "start", jtime(c->start)) ||
            json_object_set_new(o, "end", jtime(c->end)) ||
            json_object_set_new(o, "text", jstr(c->text ? c->text : "", 1, tmp)))
            goto out_free;
    }
    return arr;
out_free:
    json_decref(arr);
    return NULL;
}

/* The stretches the engine kept although its checks failed there. */
static json_t *json_unresolved(const td_transcript *t, td_buf *tmp)
{
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    for (size_t i = 0; t && i < t->n_issues; i++) {
        const td_transcript_issue *is = &t->issues[i];
        json_t *o = json_object();
        if (json_array_append_new(arr, o) || json_object_set_new(o, "start", jtime(is->start)) ||
            json_object_set_new(o, "end", jtime(is->end)) ||
            json_object_set_new(o, "reason", jstr(is->reason ? is->reason : "", 0, tmp)))
            goto out_free;
    }
    return arr;
out_free:
    json_decref(arr);
    return NULL;
}

int td_render_json(const td_transcript *t, const td_cue_list *cues, const td_json_meta *meta,
                   td_buf *out, td_error *err)
{
    td_json_meta none = {.duration = -1};
    if (!meta)
        meta = &none;
    td_buf tmp;
    td_buf_init(&tmp, out->limit);
    char *doc = NULL;
    int rc = TD_OK;

    /* The engine fills language[16]; do not trust it to be terminated. */
    char lang[sizeof t->language + 1] = "";
    if (t) {
        memcpy(lang, t->language, sizeof t->language);
        lang[sizeof t->language] = '\0';
    }

    json_t *root = json_object();
    if (!root ||
        json_object_set_new(root, "version", json_integer(1)) ||
        json_object_set_new(root, "scene", jstr(meta->scene, 0, &tmp)) ||
        json_object_set_new(root, "language", lang[0] ? jstr(lang, 0, &tmp) : json_null()) ||
        json_object_set_new(root, "engine", jstr(meta->engine, 0, &tmp)) ||
        json_object_set_new(root, "model", jstr(meta->model, 0, &tmp)) ||
        json_object_set_new(root, "duration",
                            isfinite(meta->duration) && meta->duration >= 0
                                ? jtime(meta->duration)
                                : json_null()) ||
        json_object_set_new(root, "segments", json_segments(t, &tmp)) ||
        json_object_set_new(root, "cues", json_cues(cues, &tmp)) ||
        json_object_set_new(root, "unresolved", json_unresolved(t, &tmp))) {
        rc = td_error_set(err, TD_ENOMEM, "JSON output: out of memory building the document");
        goto out_free_root;
    }
    /* 10 significant digits keep milliseconds up to 10^7 s. */
    doc = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    if (!doc) {
        rc = td_error_set(err, TD_ENOMEM, "JSON output: serialising failed");
        goto out_free_root;
    }
    size_t mark = out->len;
    rc = td_buf_append(out, "", 0);
    if (!rc)
        rc = td_buf_puts(out, doc);
    if (!rc)
        rc = td_buf_putc(out, '\n');
    if (rc) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
        rc = td_error_set(err, rc, "JSON output: larger than %zu bytes or out of memory",
                          out->limit);
    }

    free(doc);
out_free_root:
    json_decref(root);
    td_buf_release(&tmp);
    return rc;
}
