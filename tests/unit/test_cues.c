/* test_cues.c: unit tests for grouping timed words into cues (out/cues.c). */
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

typedef struct tw {
    double s, e;
    const char *w;
} tw;

/* One segment spanning its words (or [s, e] when there are none). */
static void add_seg(td_transcript *t, const tw *ws, size_t n, const char *text, double s,
                    double e)
{
    td_word words[256];
    assert_true(n <= 256);
    for (size_t i = 0; i < n; i++)
        words[i] = (td_word){.start = ws[i].s, .end = ws[i].e, .text = (char *)ws[i].w,
                             .prob = 0.5f};
    if (n) {
        s = ws[0].s;
        e = ws[n - 1].e;
    }
    td_error err = {0};
    assert_int_equal(td_transcript_add(t, s, e, text ? text : "", words, n, &err), TD_OK);
}


static int count_char(const char *s, char c)
{
    int n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

/* Every cue obeys the rules and the time invariants. */
static void check_cues(const td_cue_list *l, const td_cue_rules *r)
{
    for (size_t k = 0; k < l->count; k++) {
        const td_cue *c = &l->items[k];
        assert_true(c->start >= 0);
        assert_true(c->end > c->start);
        assert_true(c->end - c->start <= r->max_duration + 1e-9);
        if (k + 1 < l->count)
            assert_true(c->end <= l->items[k + 1].start);
        assert_non_null(c->text);
        assert_true(c->text[0] != '\0');
        assert_true(count_char(c->text, '\n') + 1 <= r->max_lines);
        const char *p = c->text;
        for (;;) {
            const char *e = strchr(p, '\n');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            assert_true(len > 0);             /* no empty line */
            assert_true(p[0] != ' ' && p[len - 1] != ' ');
            if (cps(p, len) > (size_t)r->max_line_chars)
                assert_null(memchr(p, ' ', len)); /* only a lone over-long word */
            if (!e)
                break;
            p = e + 1;
        }
    }
}

/* All cue texts joined with spaces (line breaks read as spaces). */
static char *joined(const td_cue_list *l)
{
    size_t n = 1;
    for (size_t k = 0; k < l->count; k++)
        n += strlen(l->items[k].text) + 1;
    char *s = calloc(1, n);
    assert_non_null(s);
    for (size_t k = 0; k < l->count; k++) {
        if (k)
            strcat(s, " ");
        strcat(s, l->items[k].text);
    }
    for (char *p = s; *p; p++)
        if (*p == '\n')
            *p = ' ';
    return s;
}

static int build(const td_transcript *t, const td_cue_rules *r, td_cue_list *l)
{
    td_error err = {0};
    int rc = td_cues_build(t, r, l, &err);
    if (rc == TD_OK)
        check_cues(l, r);
    return rc;
}

static void test_defaults(void **state)
{
    (void)state;
    td_cue_rules r = td_cue_rules_default();
    assert_int_equal(r.max_line_chars, 42);
    assert_int_equal(r.max_lines, 2);
    assert_true(r.max_duration == 7.0);
    assert_true(r.pause_split == 0.6);
    assert_true(r.min_duration == 0.5);
}

static void test_invalid_rules(void **state)
{
    (void)state;
    td_transcript t;
    td_transcript_init(&t);
    td_cue_list l;
    td_error err = {0};
    td_cue_rules r;

    assert_int_equal(td_cues_build(&t, NULL, &l, &err), TD_EINVAL);
    r = td_cue_rules_default(); r.max_line_chars = 0;
    assert_int_equal(td_cues_build(&t, &r, &l, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "max_line_chars"));
    r = td_cue_rules_default(); r.max_lines = -1;
    assert_int_equal(td_cues_build(&t, &r, &l, &err), TD_EINVAL);
    r = td_cue_rules_default(); r.max_duration = 0;
    assert_int_equal(td_cues_build(&t, &r, &l, &err), TD_EINVAL);
    r = td_cue_rules_default(); r.max_duration = NAN;
    assert_int_equal(td_cues_build(&t, &r, &l, &err), TD_EINVAL);
    r = td_cue_rules_default(); r.pause_split = -0.1;
    assert_int_equal(td_cues_build(&t, &r, &l, &err), TD_EINVAL);
    r = td_cue_rules_default(); r.min_duration = -1;
    assert_int_equal(td_cues_build(&t, &r, &l, &err), TD_EINVAL);
    r = td_cue_rules_default(); r.min_duration = 8; /* above max_duration */
    assert_int_equal(td_cues_build(&t, &r, &l, &err), TD_EINVAL);
    r = td_cue_rules_default(); r.min_duration = 0; /* allowed: no extension */
    assert_int_equal(td_cues_build(&t, &r, &l, &err), TD_OK);
    td_cue_list_release(&l);
}

static void test_empty(void **state)
{
    (void)state;
    td_cue_rules r = td_cue_rules_default();
    td_transcript t;
    td_transcript_init(&t);
    td_cue_list l = {(td_cue *)&l, 99}; /* garbage: build must overwrite it */
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 0);
    td_cue_list_release(&l);

    /* Segments whose words and text are all blank give nothing either. */
    tw ws[] = {{0, 1, ""}, {1, 2, "  "}, {2, 3, "\n\t"}, {3, 4, "\x01\x7f"}};
    add_seg(&t, ws, 4, "", 0, 0);
    add_seg(&t, NULL, 0, " \n ", 5, 6);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 0);
    td_cue_list_release(&l);
    td_transcript_release(&t);
}

static void test_simple(void **state)
{
    (void)state;
    td_cue_rules r = td_cue_rules_default();
    td_transcript t;
    td_transcript_init(&t);
    tw ws[] = {{1.25, 1.5, "Hello,"}, {1.5, 2.0, "world"}, {2.1, 2.75, "again."}};
    add_seg(&t, ws, 3, "Hello, world again.", 0, 0);
    td_cue_list l;
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].text, "Hello, world again.");
    assert_true(l.items[0].start == 1.25);
    assert_true(l.items[0].end == 2.75);
    td_cue_list_release(&l);
    assert_null(l.items);
    assert_int_equal(l.count, 0);
    td_transcript_release(&t);
}

/* Widths are code points: 7 x "ééééé" is 41 code points (76 bytes). */
static void test_multibyte_width(void **state)
{
    (void)state;
    td_cue_rules r = td_cue_rules_default();
    tw ws[12];
    const char *e5 = "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9";
    for (int i = 0; i < 12; i++)
        ws[i] = (tw){i * 0.25, i * 0.25 + 0.25, e5};
    td_cue_list l;
    td_transcript t;

    td_transcript_init(&t);
    add_seg(&t, ws, 7, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    assert_null(strchr(l.items[0].text, '\n'));
    assert_int_equal(cps(l.items[0].text, strlen(l.items[0].text)), 41);
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* 8 words: 47 code points, two balanced lines of 4 words. */
    td_transcript_init(&t);
    add_seg(&t, ws, 8, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    char want[256];
    snprintf(want, sizeof want, "%s %s %s %s\n%s %s %s %s", e5, e5, e5, e5, e5, e5, e5, e5);
    assert_string_equal(l.items[0].text, want);
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* "日本語" is 3 code points, 9 bytes: 10 words fit one line (39). */
    const char *jp = "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E";
    for (int i = 0; i < 12; i++)
        ws[i].w = jp;
    td_transcript_init(&t);
    add_seg(&t, ws, 10, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    assert_null(strchr(l.items[0].text, '\n'));
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* 11 words (43): two lines, the shorter on top (5 words over 6). */
    td_transcript_init(&t);
    add_seg(&t, ws, 11, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    const char *nl = strchr(l.items[0].text, '\n');
    assert_non_null(nl);
    assert_int_equal(cps(l.items[0].text, (size_t)(nl - l.items[0].text)), 19);
    assert_int_equal(cps(nl + 1, strlen(nl + 1)), 23);
    td_cue_list_release(&l);
    td_transcript_release(&t);
}

static void test_max_duration_continuous(void **state)
{
    (void)state;
    td_cue_rules r = td_cue_rules_default();
    tw ws[100];
    for (int i = 0; i < 100; i++)
        ws[i] = (tw){i * 0.25, (i + 1) * 0.25, "a"};
    td_transcript t;
    td_transcript_init(&t);
    add_seg(&t, ws, 100, NULL, 0, 0);
    td_cue_list l;
    assert_int_equal(build(&t, &r, &l), TD_OK);
    /* Lines would hold 42 words; 7 s holds 28 words of 0.25 s. */
    assert_int_equal(l.count, 4);
    assert_true(fabs(l.items[0].end - l.items[0].start - 7.0) < 1e-9);
    assert_int_equal(count_char(l.items[0].text, 'a'), 28);
    assert_int_equal(count_char(l.items[3].text, 'a'), 16);
    char *all = joined(&l);
    assert_int_equal(strlen(all), 199);
    free(all);
    td_cue_list_release(&l);
    td_transcript_release(&t);
}

static void test_pause_split(void **state)
{
    (void)state;
    td_cue_rules r = td_cue_rules_default();
    td_cue_list l;
    td_transcript t;

    /* Gap of 0.6 s (computed as 1.6 - 1.0, a hair above) splits. */
    td_transcript_init(&t);
    tw a[] = {{0.5, 1.0, "one"}, {1.6, 2.0, "two"}};
    add_seg(&t, a, 2, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[0].text, "one");
    assert_string_equal(l.items[1].text, "two");
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* 2.3 - 1.7 is a hair below 0.6 in binary: still a pause of 0.6. */
    td_transcript_init(&t);
    tw b[] = {{1.2, 1.7, "one"}, {2.3, 2.8, "two"}};
    add_seg(&t, b, 2, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 2);
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* 0.59 s does not split. */
    td_transcript_init(&t);
    tw c[] = {{0.5, 1.0, "one"}, {1.59, 2.0, "two"}};
    add_seg(&t, c, 2, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].text, "one two");
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* At a segment boundary half the pause is enough; inside, it is not. */
    td_transcript_init(&t);
    tw d1[] = {{0.0, 0.5, "first"}, {0.85, 1.0, "same"}};
    tw d2[] = {{1.35, 1.8, "second"}};
    add_seg(&t, d1, 2, NULL, 0, 0);
    add_seg(&t, d2, 1, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[0].text, "first same");
    assert_string_equal(l.items[1].text, "second");
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* Segments without a pause between them share a cue. */
    td_transcript_init(&t);
    tw e1[] = {{0.0, 0.5, "first"}};
    tw e2[] = {{0.5, 1.0, "second"}};
    add_seg(&t, e1, 1, NULL, 0, 0);
    add_seg(&t, e2, 1, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].text, "first second");
    td_cue_list_release(&l);
    td_transcript_release(&t);
}

/* Shortest possible longer line over all single breaks; *top gets the
 * shortest top line among the breaks that achieve it. */
static size_t best_two_line_max(const char **w, size_t n, size_t *top)
{
    size_t best = SIZE_MAX;
    *top = SIZE_MAX;
    for (size_t b = 1; b < n; b++) {
        size_t l1 = 0, l2 = 0;
        for (size_t i = 0; i < b; i++)
            l1 += cps(w[i], strlen(w[i])) + (i > 0);
        for (size_t i = b; i < n; i++)
            l2 += cps(w[i], strlen(w[i])) + (i > b);
        size_t m = l1 > l2 ? l1 : l2;
        if (m < best || (m == best && l1 < *top)) {
            best = m;
            *top = l1;
        }
    }
    return best;
}

static void test_balanced_breaks(void **state)
{
    (void)state;
    td_cue_rules r = td_cue_rules_default();
    td_cue_list l;
    td_transcript t;

    /* 49 code points: greedy filling would give 39 + 9. */
    td_transcript_init(&t);
    tw a[10];
    const char *names[] = {"aaaa", "bbbb", "cccc", "dddd", "eeee",
                           "ffff", "gggg", "hhhh", "iiii", "jjjj"};
    for (int i = 0; i < 10; i++)
        a[i] = (tw){i * 0.3, i * 0.3 + 0.3, names[i]};
    add_seg(&t, a, 10, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].text, "aaaa bbbb cccc dddd eeee\nffff gggg hhhh iiii jjjj");
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* Uneven words: the longer line is as short as any break allows, and
     * the spare room is on top. */
    const char *w[] = {"Nevertheless,", "the", "extraordinarily", "long", "afternoon",
                       "went", "on", "and", "on"};
    size_t n = sizeof w / sizeof w[0];
    td_transcript_init(&t);
    tw b[9];
    for (size_t i = 0; i < n; i++)
        b[i] = (tw){i * 0.4, i * 0.4 + 0.4, w[i]};
    add_seg(&t, b, n, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    const char *text = l.items[0].text;
    const char *nl = strchr(text, '\n');
    assert_non_null(nl);
    size_t l1 = (size_t)(nl - text), l2 = strlen(nl + 1), top;
    assert_int_equal(l1 > l2 ? l1 : l2, best_two_line_max(w, n, &top));
    assert_int_equal(l1, top);
    assert_string_equal(text, "Nevertheless, the extraordinarily\nlong afternoon went on and on");
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* When two breaks are as good, the shorter line goes on top. */
    td_transcript_init(&t);
    add_seg(&t, a, 9, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_string_equal(l.items[0].text, "aaaa bbbb cccc dddd\neeee ffff gggg hhhh iiii");
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* A line that fits is not broken. */
    td_transcript_init(&t);
    tw c[] = {{0, 1, "Short"}, {1, 2, "and"}, {2, 3, "sweet."}};
    add_seg(&t, c, 3, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_string_equal(l.items[0].text, "Short and sweet.");
    td_cue_list_release(&l);
    td_transcript_release(&t);
}

static void test_long_word(void **state)
{
    (void)state;
    td_cue_rules r = td_cue_rules_default();
    char big[61];
    memset(big, 'x', 60);
    big[60] = '\0';
    td_cue_list l;
    td_transcript t;

    td_transcript_init(&t);
    tw a[] = {{0, 1, big}};
    add_seg(&t, a, 1, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].text, big);
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* In a sentence it sits whole on a line of its own. */
    td_transcript_init(&t);
    tw b[] = {{0, 0.3, "a"}, {0.3, 0.6, "b"}, {0.6, 1.0, big}, {1.0, 1.3, "c"}, {1.3, 1.6, "d"}};
    add_seg(&t, b, 5, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    char *all = joined(&l);
    char want[128];
    snprintf(want, sizeof want, "a b %s c d", big);
    assert_string_equal(all, want);
    free(all);
    int found = 0;
    for (size_t k = 0; k < l.count; k++) {
        const char *p = l.items[k].text;
        for (;;) {
            const char *e = strchr(p, '\n');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            if (len == 60 && memcmp(p, big, 60) == 0)
                found = 1;
            if (!e)
                break;
            p = e + 1;
        }
    }
    assert_true(found);
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* A word stretched over 20 s that opens its segment is said at the
     * end of that time: shown for as long as it takes to say. */
    td_transcript_init(&t);
    tw c[] = {{3, 23, "hmm"}};
    add_seg(&t, c, 1, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    assert_true(fabs(l.items[0].start - (23 - 0.76)) < 1e-9);
    assert_true(fabs(l.items[0].end - 23.0) < 1e-9);
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* A segment of one word stretched past max_duration whose words are
     * not the problem (a long word) is still cut at max_duration. */
    td_transcript_init(&t);
    char longw[81];
    memset(longw, 'y', 80);
    longw[80] = '\0';
    tw d2[] = {{1, 0.5 + 11.0, longw}}; /* plausible: 0.4 + 9.6 s */
    add_seg(&t, d2, 1, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    assert_true(fabs(l.items[0].end - l.items[0].start - 7.0) < 1e-9);
    td_cue_list_release(&l);
    td_transcript_release(&t);
}

/* Cues follow the words' own times: a first word timed over the silence
 * before it does not start its cue early, a last word timed over the
 * silence after it does not keep its cue up, and a lone stretched word
 * inside a segment is said at the start of its time. */
static void test_cue_follows_words(void **state)
{
    (void)state;
    td_cue_rules r = td_cue_rules_default();
    td_cue_list l;
    td_transcript t;
    td_transcript_init(&t);
    tw a[] = {{0, 5.0, "So"}, {5.0, 5.3, "we"}, {5.3, 5.6, "went"}, {5.6, 12.0, "home."}};
    add_seg(&t, a, 4, NULL, 0, 0);
    tw b[] = {{14.0, 14.3, "Then"}, {14.3, 14.6, "we"}, {14.6, 15.0, "ate."}, {16.0, 22.0, "Hmm"}};
    add_seg(&t, b, 4, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 3);
    assert_string_equal(l.items[0].text, "So we went home.");
    assert_true(fabs(l.items[0].start - (5.0 - 0.64)) < 1e-9); /* "So": 0.4 + 2 x 0.12 */
    assert_true(fabs(l.items[0].end - (5.6 + 1.0)) < 1e-9);    /* "home.": 0.4 + 5 x 0.12 */
    assert_true(fabs(l.items[1].start - 14.0) < 1e-9 && fabs(l.items[1].end - 15.0) < 1e-9);
    assert_string_equal(l.items[2].text, "Hmm");
    assert_true(fabs(l.items[2].start - 16.0) < 1e-9);
    assert_true(fabs(l.items[2].end - 16.76) < 1e-9);
    td_cue_list_release(&l);
    td_transcript_release(&t);
}

static void test_segments_without_words(void **state)
{
    (void)state;
    td_cue_rules r = td_cue_rules_default();
    td_cue_list l;
    td_transcript t;

    td_transcript_init(&t);
    add_seg(&t, NULL, 0, " Hello there, general Kenobi. ", 2.0, 4.0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].text, "Hello there, general Kenobi.");
    assert_true(l.items[0].start == 2.0);
    assert_true(l.items[0].end == 4.0);
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* 60 words over 30 s: split by length and time, nothing lost. */
    char text[60 * 6 + 1] = "";
    for (int i = 0; i < 60; i++)
        strcat(text, i ? " lorem" : "lorem");
    td_transcript_init(&t);
    add_seg(&t, NULL, 0, text, 0.0, 30.0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_true(l.count >= 5);
    assert_true(l.items[0].start == 0.0);
    assert_true(fabs(l.items[l.count - 1].end - 30.0) < 1e-9);
    char *all = joined(&l);
    assert_string_equal(all, text);
    free(all);
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* Words that are all blank: the segment text stands in. */
    td_transcript_init(&t);
    tw b[] = {{1, 2, ""}, {2, 3, " "}};
    add_seg(&t, b, 2, "Fallback text", 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].text, "Fallback text");
    td_cue_list_release(&l);
    td_transcript_release(&t);
}

static void test_min_duration(void **state)
{
    (void)state;
    td_cue_rules r = td_cue_rules_default();
    r.pause_split = 0.1;
    td_cue_list l;
    td_transcript t;

    td_transcript_init(&t);
    tw a[] = {{1.0, 1.1, "Hi"}, {1.3, 2.0, "there"}, {5.0, 5.2, "end"}};
    add_seg(&t, a, 3, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 3);
    assert_true(l.items[0].end == 1.3);                /* up to the next start */
    assert_true(l.items[1].end == 2.0);                /* long enough already */
    assert_true(fabs(l.items[2].end - 5.5) < 1e-9);    /* room: full extension */
    td_cue_list_release(&l);
    td_transcript_release(&t);
}

static void test_bad_times(void **state)
{
    (void)state;
    td_cue_rules r = td_cue_rules_default();
    r.pause_split = 0.1;
    r.min_duration = 0;
    td_cue_list l;
    td_transcript t;

    td_transcript_init(&t);
    tw a[] = {{5, 4, "b"}, {NAN, NAN, "c"}, {-3, -1, "a"}, {2, 2, "d"}, {INFINITY, 1e300, "e"},
              {7, 8, "f"}};
    add_seg(&t, a, 6, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK); /* check_cues asserts order */
    char *all = joined(&l);
    assert_string_equal(all, "b c a d e f");
    free(all);
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* Time going backwards right where a cue is full: the next cue must
     * still start after this one ends. */
    char x40[42], y40[42]; /* 41 characters: no room for " z" */
    memset(x40, 'x', 41);
    memset(y40, 'y', 41);
    x40[41] = y40[41] = '\0';
    td_transcript_init(&t);
    tw back[] = {{10, 11, x40}, {11, 12, y40}, {3, 4, "z"}};
    add_seg(&t, back, 3, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[1].text, "z");
    assert_true(l.items[1].start >= 12.0);
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* Thirty words at one instant: cues still strictly ordered. */
    tw z[30];
    for (int i = 0; i < 30; i++)
        z[i] = (tw){5.0, 5.0, "abcdefghij"};
    td_transcript_init(&t);
    add_seg(&t, z, 30, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 5);
    for (size_t k = 0; k + 1 < l.count; k++)
        assert_true(l.items[k].start < l.items[k + 1].start);
    td_cue_list_release(&l);
    td_transcript_release(&t);
}

static void test_word_text_cleanup(void **state)
{
    (void)state;
    td_cue_rules r = td_cue_rules_default();
    td_cue_list l;
    td_transcript t;

    td_transcript_init(&t);
    tw a[] = {{0.0, 0.2, " Hello"}, {0.2, 0.3, ""},     {0.3, 0.4, ","},
              {0.4, 0.8, "wor\nld"}, {0.8, 0.9, "\t"},  {0.9, 1.0, "a\x01" "b"},
              {1.0, 1.1, "\xff"},    {1.1, 1.2, "ok"},  {1.2, 1.3, "?!"}};
    add_seg(&t, a, 9, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].text, "Hello, wor ld ab \xEF\xBF\xBD ok?!");
    td_cue_list_release(&l);
    td_transcript_release(&t);

    /* Punctuation does not glue across segments. */
    td_transcript_init(&t);
    tw b1[] = {{0.0, 0.2, "Yes"}};
    tw b2[] = {{0.2, 0.4, "..."}};
    add_seg(&t, b1, 1, NULL, 0, 0);
    add_seg(&t, b2, 1, NULL, 0, 0);
    assert_int_equal(build(&t, &r, &l), TD_OK);
    assert_string_equal(l.items[0].text, "Yes ...");
    td_cue_list_release(&l);
    td_transcript_release(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_invalid_rules),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_simple),
        cmocka_unit_test(test_multibyte_width),
        cmocka_unit_test(test_max_duration_continuous),
        cmocka_unit_test(test_pause_split),
        cmocka_unit_test(test_balanced_breaks),
        cmocka_unit_test(test_long_word),
        cmocka_unit_test(test_cue_follows_words),
        cmocka_unit_test(test_segments_without_words),
        cmocka_unit_test(test_min_duration),
        cmocka_unit_test(test_bad_times),
        cmocka_unit_test(test_word_text_cleanup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
