/* test_formats.c: unit tests for the SRT, WebVTT and JSON writers and the
 * UTF-8 clean-up (out/formats.c), including reading the SRT back. */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"

#include "asr/transcript.h"
#include "out/cues.h"
#include "out/formats.h"
#include "util/buf.h"

/* ---- helpers -------------------------------------------------------- */


/* Independent check: is s valid UTF-8 without C0 controls (except '\n')? */
static int valid_clean_utf8(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len); /* jansson checks UTF-8 itself */
    if (!j)
        return 0;
    json_decref(j);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\n') || c == 0x7F)
            return 0;
    }
    return 1;
}

static char *sanitize(const char *s, int keep_newlines)
{
    td_buf b;
    td_buf_init(&b, 0);
    assert_int_equal(td_utf8_sanitize(s, keep_newlines, &b), TD_OK);
    return td_buf_detach(&b, NULL);
}

static void cue_list(td_cue_list *l, const td_cue *items, size_t n)
{
    l->items = calloc(n ? n : 1, sizeof *l->items);
    assert_non_null(l->items);
    l->count = n;
    for (size_t i = 0; i < n; i++) {
        l->items[i] = items[i];
        l->items[i].text = strdup(items[i].text);
        assert_non_null(l->items[i].text);
    }
}

static char *render(int (*fn)(const td_cue_list *, td_buf *, td_error *), const td_cue_list *l)
{
    td_buf b;
    td_buf_init(&b, 0);
    td_error err = {0};
    assert_int_equal(fn(l, &b, &err), TD_OK);
    return td_buf_detach(&b, NULL);
}

static double parse_ts(const char *s, char sep, const char **end)
{
    unsigned h, m, sec, ms;
    char c;
    int n = 0;
    assert_int_equal(sscanf(s, "%u:%2u:%2u%c%3u%n", &h, &m, &sec, &c, &ms, &n), 5);
    assert_true(c == sep);
    assert_true(m < 60 && sec < 60);
    assert_true(n >= 12);
    assert_true(s[n - 4] == sep && s[n - 7] == ':' && s[n - 10] == ':');
    *end = s + n;
    return h * 3600.0 + m * 60.0 + sec + ms / 1000.0;
}

/* Read an SRT (or, with vtt, a WebVTT) document back and check its
 * structure: consecutive indices, well-formed and monotonic times, 1..2
 * non-empty lines per cue, each at most 42 code points unless it is a
 * single over-long word, nothing a player would read as markup. Returns
 * the number of cues. */
static size_t check_subtitles(const char *doc, int vtt)
{
    const char *p = doc;
    if (vtt) {
        assert_true(strncmp(p, "WEBVTT\n\n", 8) == 0);
        p += 8;
    }
    if (!*p)
        return 0;
    size_t len = strlen(p);
    assert_true(len >= 2 && p[len - 2] == '\n' && p[len - 1] == '\n');
    size_t index = 0;
    double prev_end = 0;
    while (*p) {
        index++;
        if (!vtt) {
            char *e;
            unsigned long idx = strtoul(p, &e, 10);
            assert_int_equal(idx, index);
            assert_true(*e == '\n');
            p = e + 1;
        }
        const char *q;
        double s = parse_ts(p, vtt ? '.' : ',', &q);
        assert_true(strncmp(q, " --> ", 5) == 0);
        double e = parse_ts(q + 5, vtt ? '.' : ',', &q);
        assert_true(*q == '\n');
        p = q + 1;
        assert_true(s >= prev_end - 1e-9);
        assert_true(e >= s);
        prev_end = e;
        int lines = 0;
        while (*p != '\n') {
            const char *nl = strchr(p, '\n');
            assert_non_null(nl);
            size_t n = (size_t)(nl - p);
            assert_true(n > 0);
            lines++;
            assert_true(valid_clean_utf8(p, n));
            assert_null(memchr(p, '<', n));
            assert_null(memchr(p, '>', n));
            /* In VTT an entity stands for one character. */
            size_t width = cps(p, n);
            for (const char *a = p; vtt && (a = memchr(a, '&', (size_t)(nl - a))); a++)
                width -= strncmp(a, "&amp;", 5) == 0 ? 4 : 3;
            if (width > 42)
                assert_null(memchr(p, ' ', n));
            p = nl + 1;
        }
        assert_true(lines >= 1 && lines <= 2);
        p++; /* the blank line ending the cue */
    }
    return index;
}

/* ---- timestamps ----------------------------------------------------- */

static void test_timestamps(void **state)
{
    (void)state;
    char ts[16];
    td_format_timestamp(0, ',', ts);
    assert_string_equal(ts, "00:00:00,000");
    td_format_timestamp(0.0005, ',', ts);
    assert_string_equal(ts, "00:00:00,001");
    td_format_timestamp(0.0004, ',', ts);
    assert_string_equal(ts, "00:00:00,000");
    td_format_timestamp(59.9996, ',', ts);
    assert_string_equal(ts, "00:01:00,000");
    td_format_timestamp(3600, ',', ts);
    assert_string_equal(ts, "01:00:00,000");
    td_format_timestamp(3723.456, '.', ts);
    assert_string_equal(ts, "01:02:03.456");
    td_format_timestamp(99 * 3600 + 59 * 60 + 59.999, ',', ts);
    assert_string_equal(ts, "99:59:59,999");
    td_format_timestamp(100 * 3600, ',', ts);
    assert_string_equal(ts, "100:00:00,000");
    td_format_timestamp(-5, ',', ts);
    assert_string_equal(ts, "00:00:00,000");
    td_format_timestamp(NAN, '.', ts);
    assert_string_equal(ts, "00:00:00.000");
    td_format_timestamp(INFINITY, ',', ts);
    assert_string_equal(ts, "99999:59:59,999");
    td_format_timestamp(1e300, ',', ts);
    assert_string_equal(ts, "99999:59:59,999");
}

/* ---- format list ---------------------------------------------------- */

static void test_formats_parse(void **state)
{
    (void)state;
    unsigned m = 0;
    td_error err = {0};
    assert_int_equal(td_formats_parse("srt", &m, &err), TD_OK);
    assert_int_equal(m, TD_FORMAT_SRT);
    assert_int_equal(td_formats_parse(" SRT , vtt,JSON ", &m, &err), TD_OK);
    assert_int_equal(m, TD_FORMAT_SRT | TD_FORMAT_VTT | TD_FORMAT_JSON);
    assert_int_equal(td_formats_parse("json,Json,json", &m, &err), TD_OK);
    assert_int_equal(m, TD_FORMAT_JSON);
    assert_int_equal(td_formats_parse("webvtt,", &m, &err), TD_OK);
    assert_int_equal(m, TD_FORMAT_VTT);

    m = 12345;
    assert_int_equal(td_formats_parse("", &m, &err), TD_EINVAL);
    assert_int_equal(m, 12345); /* untouched on error */
    assert_int_equal(td_formats_parse(" , ", &m, &err), TD_EINVAL);
    assert_int_equal(td_formats_parse(NULL, &m, &err), TD_EINVAL);
    assert_int_equal(td_formats_parse("srt,subrip", &m, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "'subrip'"));
    assert_int_equal(err.code, TD_EINVAL);
    assert_int_equal(td_formats_parse("srtx", &m, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "'srtx'"));
    assert_int_equal(td_formats_parse("sr", &m, &err), TD_EINVAL);
}

/* ---- UTF-8 ---------------------------------------------------------- */

static void expect_sanitized(const char *in, int keep, const char *want)
{
    char *got = sanitize(in, keep);
    assert_string_equal(got, want);
    free(got);
}

#define R "\xEF\xBF\xBD"

static void test_sanitize(void **state)
{
    (void)state;
    expect_sanitized("", 0, "");
    expect_sanitized(NULL, 0, "");
    expect_sanitized("plain ASCII", 0, "plain ASCII");
    /* Valid multibyte, including a 4-byte emoji, passes untouched. */
    expect_sanitized("caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80", 0,
                     "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80");
    expect_sanitized("\xEF\xBF\xBF\xF4\x8F\xBF\xBF", 0, "\xEF\xBF\xBF\xF4\x8F\xBF\xBF");
    /* Overlongs. */
    expect_sanitized("a\xC0\xAF" "b", 0, "a" R R "b");
    expect_sanitized("\xE0\x80\xAF", 0, R R R);
    expect_sanitized("\xF0\x80\x80\xAF", 0, R R R R);
    /* Surrogates. */
    expect_sanitized("\xED\xA0\x80x", 0, R R R "x");
    /* Above U+10FFFF, and bytes that never occur. */
    expect_sanitized("\xF4\x90\x80\x80", 0, R R R R);
    expect_sanitized("\xF5\x80\xFE\xFF", 0, R R R R);
    /* Truncated sequences: one U+FFFD each, the next byte read afresh. */
    expect_sanitized("\xE6\x97", 0, R);
    expect_sanitized("\xE6\x97" "A", 0, R "A");
    expect_sanitized("\xF0\x9F\x98", 0, R);
    expect_sanitized("\xE6\xE6\x97\xA5", 0, R "\xE6\x97\xA5");
    expect_sanitized("\x80\xBF", 0, R R);
    /* Controls: C0 and DEL dropped, C1 (U+0085) dropped, tab a space. */
    expect_sanitized("a\x01" "b\x7f" "c\x1b[0m", 0, "abc[0m");
    expect_sanitized("a\xC2\x85" "b", 0, "ab");
    expect_sanitized("a\tb", 0, "a b");
    /* Line breaks: kept on request, else spaces; CRLF and CR count once. */
    expect_sanitized("a\nb\r\nc\rd", 1, "a\nb\nc\nd");
    expect_sanitized("a\nb\r\nc\rd", 0, "a b c d");

    /* Appends to what is there. */
    td_buf b;
    td_buf_init(&b, 0);
    assert_int_equal(td_buf_puts(&b, "x"), TD_OK);
    assert_int_equal(td_utf8_sanitize("\xff", 0, &b), TD_OK);
    assert_string_equal(b.data, "x" R);
    td_buf_release(&b);

    /* A hard limit is reported, not overrun. */
    td_buf_init(&b, 4);
    assert_int_equal(td_utf8_sanitize("abcdefgh", 0, &b), TD_ENOMEM);
    assert_true(b.len <= 4);
    td_buf_release(&b);
}

/* Random bytes always come out as clean UTF-8 that jansson accepts. */
static void test_sanitize_random(void **state)
{
    (void)state;
    uint32_t x = 12345;
    char in[64];
    for (int round = 0; round < 20000; round++) {
        size_t n = 0;
        size_t len = (size_t)(round % 63);
        while (n < len) {
            x = x * 1664525u + 1013904223u;
            char c = (char)(x >> 24);
            /* Bias towards the interesting bytes. */
            if ((x >> 8) % 4 == 0)
                c = (char)(0x80 + (x >> 12) % 0x80);
            if (c == '\0')
                c = 'a';
            in[n++] = c;
        }
        in[n] = '\0';
        char *out = sanitize(in, round & 1);
        assert_true(valid_clean_utf8(out, strlen(out)));
        /* Sanitising is idempotent. */
        char *again = sanitize(out, round & 1);
        assert_string_equal(out, again);
        free(again);
        free(out);
    }
}

/* ---- SRT and WebVTT ------------------------------------------------- */

static void test_empty_documents(void **state)
{
    (void)state;
    td_cue_list l = {0};
    td_buf b;
    td_error err = {0};

    td_buf_init(&b, 0);
    assert_int_equal(td_render_srt(&l, &b, &err), TD_OK);
    assert_int_equal(b.len, 0);
    assert_non_null(b.data);
    assert_string_equal(b.data, "");
    td_buf_release(&b);

    char *vtt = render(td_render_vtt, &l);
    assert_string_equal(vtt, "WEBVTT\n\n");
    free(vtt);

    /* Empty transcript end to end. */
    td_transcript t;
    td_transcript_init(&t);
    td_cue_rules r = td_cue_rules_default();
    assert_int_equal(td_cues_build(&t, &r, &l, &err), TD_OK);
    char *srt = render(td_render_srt, &l);
    assert_string_equal(srt, "");
    free(srt);

    td_buf_init(&b, 0);
    assert_int_equal(td_render_json(&t, &l, NULL, &b, &err), TD_OK);
    json_error_t jerr;
    json_t *root = json_loads(b.data, 0, &jerr);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "version")), 1);
    assert_true(json_is_array(json_object_get(root, "segments")));
    assert_int_equal(json_array_size(json_object_get(root, "segments")), 0);
    assert_true(json_is_array(json_object_get(root, "cues")));
    assert_int_equal(json_array_size(json_object_get(root, "cues")), 0);
    assert_true(json_is_array(json_object_get(root, "unresolved")));
    assert_int_equal(json_array_size(json_object_get(root, "unresolved")), 0);
    assert_true(json_is_null(json_object_get(root, "language")));
    assert_true(json_is_null(json_object_get(root, "scene")));
    assert_true(json_is_null(json_object_get(root, "duration")));
    json_decref(root);
    td_buf_release(&b);
    td_cue_list_release(&l);
    td_transcript_release(&t);
}

static void test_srt_exact(void **state)
{
    (void)state;
    td_cue items[] = {
        {1.0, 2.5, "Hello\nworld"},
        {3.0, 4.0, "<i>x</i> -> y"},
        {3600.0004, 360000.001, "late"},
    };
    td_cue_list l;
    cue_list(&l, items, 3);
    char *srt = render(td_render_srt, &l);
    assert_string_equal(srt,
                        "1\n00:00:01,000 --> 00:00:02,500\nHello\nworld\n\n"
                        "2\n00:00:03,000 --> 00:00:04,000\n"
                        "\xE2\x80\xB9i\xE2\x80\xBAx\xE2\x80\xB9/i\xE2\x80\xBA -\xE2\x80\xBA y\n\n"
                        "3\n01:00:00,000 --> 100:00:00,001\nlate\n\n");
    assert_int_equal(check_subtitles(srt, 0), 3);
    free(srt);
    td_cue_list_release(&l);
}

static void test_srt_blank_lines_and_dropped_cues(void **state)
{
    (void)state;
    td_cue items[] = {
        {0.0, 1.0, "a"},
        {1.0, 2.0, "\n \n\x01\x7f"},     /* nothing visible: dropped */
        {2.0, 3.0, "  b \n\n\n c\r\n"},  /* blank lines inside removed */
        {3.0, 4.0, ""},
        {4.0, 5.0, "\xff\xfe"},          /* invalid bytes still show */
        {6.0, 5.0, "end before start"},
        {-2.0, -1.0, "negative"},
    };
    td_cue_list l;
    cue_list(&l, items, sizeof items / sizeof items[0]);
    char *srt = render(td_render_srt, &l);
    assert_string_equal(srt,
                        "1\n00:00:00,000 --> 00:00:01,000\na\n\n"
                        "2\n00:00:02,000 --> 00:00:03,000\nb\nc\n\n"
                        "3\n00:00:04,000 --> 00:00:05,000\n" R R "\n\n"
                        "4\n00:00:06,000 --> 00:00:06,000\nend before start\n\n"
                        "5\n00:00:00,000 --> 00:00:00,000\nnegative\n\n");
    free(srt);

    char *vtt = render(td_render_vtt, &l);
    assert_string_equal(vtt,
                        "WEBVTT\n\n"
                        "00:00:00.000 --> 00:00:01.000\na\n\n"
                        "00:00:02.000 --> 00:00:03.000\nb\nc\n\n"
                        "00:00:04.000 --> 00:00:05.000\n" R R "\n\n"
                        "00:00:06.000 --> 00:00:06.000\nend before start\n\n"
                        "00:00:00.000 --> 00:00:00.000\nnegative\n\n");
    free(vtt);
    td_cue_list_release(&l);
}

static void test_vtt_escaping(void **state)
{
    (void)state;
    td_cue items[] = {
        {0.0, 1.5, "Tom & Jerry <b>bold</b>"},
        {2.0, 3.0, "a --> b\n-->"},
        {4.0, 5.0, "&amp; stays literal"},
    };
    td_cue_list l;
    cue_list(&l, items, 3);
    char *vtt = render(td_render_vtt, &l);
    assert_string_equal(vtt,
                        "WEBVTT\n\n"
                        "00:00:00.000 --> 00:00:01.500\nTom &amp; Jerry &lt;b&gt;bold&lt;/b&gt;\n\n"
                        "00:00:02.000 --> 00:00:03.000\na --&gt; b\n--&gt;\n\n"
                        "00:00:04.000 --> 00:00:05.000\n&amp;amp; stays literal\n\n");
    /* "-->" only on timing lines: one per cue. */
    int arrows = 0;
    for (const char *p = vtt; (p = strstr(p, "-->")); p += 3)
        arrows++;
    assert_int_equal(arrows, 3);
    assert_int_equal(check_subtitles(vtt, 1), 3);
    free(vtt);
    td_cue_list_release(&l);
}

/* Renderers append, and on failure leave the buffer as it was. */
static void test_limits_and_append(void **state)
{
    (void)state;
    td_cue items[] = {{0.0, 1.0, "a cue long enough to pass the limit"}};
    td_cue_list l;
    cue_list(&l, items, 1);
    td_error err = {0};
    td_buf b;

    td_buf_init(&b, 20);
    assert_int_equal(td_buf_puts(&b, "abc"), TD_OK);
    assert_int_equal(td_render_srt(&l, &b, &err), TD_ENOMEM);
    assert_int_equal(err.code, TD_ENOMEM);
    assert_non_null(strstr(err.msg, "SRT"));
    assert_int_equal(b.len, 3);
    assert_string_equal(b.data, "abc");
    assert_int_equal(td_render_vtt(&l, &b, &err), TD_ENOMEM);
    assert_string_equal(b.data, "abc");
    td_transcript t;
    td_transcript_init(&t);
    assert_int_equal(td_render_json(&t, &l, NULL, &b, &err), TD_ENOMEM);
    assert_string_equal(b.data, "abc");
    td_buf_release(&b);

    /* Failing on the second cue: the first one is taken back too. */
    td_cue shorts[] = {{0.0, 1.0, "a"}, {1.0, 2.0, "b"}, {2.0, 3.0, "c"}};
    td_cue_list sl;
    cue_list(&sl, shorts, 3);
    td_buf_init(&b, 60);
    assert_int_equal(td_buf_puts(&b, "abc"), TD_OK);
    assert_int_equal(td_render_srt(&sl, &b, &err), TD_ENOMEM);
    assert_int_equal(b.len, 3);
    assert_string_equal(b.data, "abc");
    assert_int_equal(td_render_vtt(&sl, &b, &err), TD_ENOMEM);
    assert_int_equal(b.len, 3);
    assert_string_equal(b.data, "abc");
    td_buf_release(&b);
    td_cue_list_release(&sl);

    td_buf_init(&b, 0);
    assert_int_equal(td_buf_puts(&b, "X"), TD_OK);
    assert_int_equal(td_render_vtt(&l, &b, &err), TD_OK);
    assert_true(strncmp(b.data, "XWEBVTT\n\n", 9) == 0);
    td_buf_release(&b);
    td_cue_list_release(&l);
}

/* ---- JSON ----------------------------------------------------------- */

static double jnum(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_true(json_is_number(v));
    return json_number_value(v);
}

static const char *jtext(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static void test_json_roundtrip(void **state)
{
    (void)state;
    td_transcript t;
    td_transcript_init(&t);
    td_error err = {0};
    td_word w1[] = {
        {.start = 0.0, .end = 0.5, .text = "Hello", .prob = 0.9f},
        {.start = 0.5, .end = 1.23456, .text = "\"caf\xC3\xA9\"\\", .prob = -1},
        {.start = 1.3, .end = 1.4, .text = "bad\xff\x01", .prob = 1.5f},
    };
    assert_int_equal(td_transcript_add(&t, 0.0, 1.4, " Hello \"caf\xC3\xA9\"\\ bad", w1, 3, &err),
                     TD_OK);
    assert_int_equal(td_transcript_add(&t, 2.0, 3.0, "Only text.\nSecond line", NULL, 0, &err),
                     TD_OK);
    memcpy(t.language, "en", 3);
    assert_int_equal(td_transcript_add_issue(&t, 1.25, 2.5, "repeat", 1, &err), TD_OK);

    td_cue_rules r = td_cue_rules_default();
    td_cue_list l;
    assert_int_equal(td_cues_build(&t, &r, &l, &err), TD_OK);
    assert_true(l.count >= 2);

    td_json_meta meta = {.scene = "tape1/a\xff.mp4", .engine = "sphinx", .model = "en-us",
                         .duration = 3.25};
    td_buf b;
    td_buf_init(&b, 0);
    assert_int_equal(td_render_json(&t, &l, &meta, &b, &err), TD_OK);
    assert_true(b.len > 0 && b.data[b.len - 1] == '\n');
    /* UTF-8 written as such, not as \u escapes. */
    assert_non_null(strstr(b.data, "caf\xC3\xA9"));
    /* Indented by 2. */
    assert_non_null(strstr(b.data, "\n  \"version\": 1"));

    json_error_t jerr;
    json_t *root = json_loads(b.data, 0, &jerr);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "version")), 1);
    assert_string_equal(jtext(root, "scene"), "tape1/a" R ".mp4");
    assert_string_equal(jtext(root, "language"), "en");
    assert_string_equal(jtext(root, "engine"), "sphinx");
    assert_string_equal(jtext(root, "model"), "en-us");
    assert_true(fabs(jnum(root, "duration") - 3.25) < 1e-12);
    json_t *un = json_object_get(root, "unresolved");
    assert_int_equal(json_array_size(un), 1);
    assert_string_equal(jtext(json_array_get(un, 0), "reason"), "repeat");
    assert_true(fabs(jnum(json_array_get(un, 0), "start") - 1.25) < 1e-12);
    assert_true(fabs(jnum(json_array_get(un, 0), "end") - 2.5) < 1e-12);

    json_t *segs = json_object_get(root, "segments");
    assert_int_equal(json_array_size(segs), 2);
    json_t *s0 = json_array_get(segs, 0);
    assert_string_equal(jtext(s0, "text"), " Hello \"caf\xC3\xA9\"\\ bad");
    assert_true(jnum(s0, "start") == 0.0);
    assert_true(fabs(jnum(s0, "end") - 1.4) < 1e-12);
    json_t *words = json_object_get(s0, "words");
    assert_int_equal(json_array_size(words), 3);
    json_t *w = json_array_get(words, 0);
    assert_string_equal(jtext(w, "word"), "Hello");
    assert_true(jnum(w, "start") == 0.0);
    assert_true(fabs(jnum(w, "end") - 0.5) < 1e-12);
    assert_true(fabs(jnum(w, "prob") - 0.9) < 1e-12);
    w = json_array_get(words, 1);
    assert_string_equal(jtext(w, "word"), "\"caf\xC3\xA9\"\\");
    assert_true(fabs(jnum(w, "end") - 1.235) < 1e-12); /* rounded to the ms */
    assert_true(json_is_null(json_object_get(w, "prob")));
    w = json_array_get(words, 2);
    assert_string_equal(jtext(w, "word"), "bad" R);
    assert_true(jnum(w, "prob") == 1.0);
    json_t *s1 = json_array_get(segs, 1);
    assert_string_equal(jtext(s1, "text"), "Only text.\nSecond line");
    assert_true(json_is_array(json_object_get(s1, "words")));
    assert_int_equal(json_array_size(json_object_get(s1, "words")), 0);

    json_t *cues = json_object_get(root, "cues");
    assert_int_equal(json_array_size(cues), l.count);
    for (size_t i = 0; i < l.count; i++) {
        json_t *c = json_array_get(cues, i);
        assert_string_equal(jtext(c, "text"), l.items[i].text);
        assert_true(fabs(jnum(c, "start") - l.items[i].start) <= 0.0005 + 1e-12);
        assert_true(fabs(jnum(c, "end") - l.items[i].end) <= 0.0005 + 1e-12);
    }
    json_decref(root);
    td_buf_release(&b);
    td_cue_list_release(&l);
    td_transcript_release(&t);
}

/* ---- everything together, read back --------------------------------- */

static uint32_t rng = 2024;

static uint32_t next_rand(void)
{
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}

static void test_srt_structure_roundtrip(void **state)
{
    (void)state;
    static const char *vocab[] = {
        "the", "a", "camcorder", "birthday", "cake", "caf\xC3\xA9", "\xC3\xA9t\xC3\xA9",
        "\xE6\x97\xA5\xE6\x9C\xAC", "<laughs>", "Tom&Jerry", "-->", "ok,", "yes.", "line\nbreak",
        ("bad\xff" "byte"), "ctl\x01", "\xF0\x9F\x8E\x82", "supercalifragilisticexpialidocious",
        "pneumonoultramicroscopicsilicovolcanoconiosis-and-then-some-more", "",
    };
    const size_t n_vocab = sizeof vocab / sizeof vocab[0];
    td_transcript t;
    td_transcript_init(&t);
    td_error err = {0};
    double now = 0.5;
    for (int s = 0; s < 80; s++) {
        td_word words[40];
        size_t n = 1 + next_rand() % 40;
        double seg_start = now;
        char text[4096] = "";
        for (size_t i = 0; i < n; i++) {
            const char *v = vocab[next_rand() % n_vocab];
            double gap = (next_rand() % 10 == 0) ? 0.2 + (next_rand() % 100) / 100.0 : 0.0;
            double dur = 0.05 + (next_rand() % 60) / 100.0;
            words[i] = (td_word){.start = now + gap, .end = now + gap + dur, .text = (char *)v,
                                 .prob = (float)(next_rand() % 100) / 100.0f};
            now += gap + dur;
            if (strlen(text) + strlen(v) + 2 < sizeof text) {
                strcat(text, " ");
                strcat(text, v);
            }
        }
        /* Every fifth segment comes without word times. */
        size_t nw = s % 5 == 4 ? 0 : n;
        assert_int_equal(td_transcript_add(&t, seg_start, now, text, words, nw, &err), TD_OK);
        now += (next_rand() % 3) * 0.4;
    }

    td_cue_rules r = td_cue_rules_default();
    td_cue_list l;
    assert_int_equal(td_cues_build(&t, &r, &l, &err), TD_OK);
    assert_true(l.count > 100);
    for (size_t k = 0; k < l.count; k++) {
        assert_true(l.items[k].end > l.items[k].start);
        assert_true(l.items[k].end - l.items[k].start <= 7.0 + 1e-9);
        if (k + 1 < l.count)
            assert_true(l.items[k].end <= l.items[k + 1].start);
    }

    char *srt = render(td_render_srt, &l);
    assert_int_equal(check_subtitles(srt, 0), l.count);
    free(srt);
    char *vtt = render(td_render_vtt, &l);
    assert_int_equal(check_subtitles(vtt, 1), l.count);
    free(vtt);

    td_buf b;
    td_buf_init(&b, 0);
    td_json_meta meta = {.scene = "tape1/scene_0001.mp4", .engine = "sphinx", .model = "en-us",
                         .duration = now};
    assert_int_equal(td_render_json(&t, &l, &meta, &b, &err), TD_OK);
    json_error_t jerr;
    json_t *root = json_loads(b.data, 0, &jerr);
    assert_non_null(root);
    assert_int_equal(json_array_size(json_object_get(root, "segments")), 80);
    assert_int_equal(json_array_size(json_object_get(root, "cues")), l.count);
    json_decref(root);
    td_buf_release(&b);

    td_cue_list_release(&l);
    td_transcript_release(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_formats_parse),
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_sanitize_random),
        cmocka_unit_test(test_empty_documents),
        cmocka_unit_test(test_srt_exact),
        cmocka_unit_test(test_srt_blank_lines_and_dropped_cues),
        cmocka_unit_test(test_vtt_escaping),
        cmocka_unit_test(test_limits_and_append),
        cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_srt_structure_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
