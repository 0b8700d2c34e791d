/*
 * test_guard.c: the drop and repeat checks (src/whisper/guard.c) on
 * scripted decodes: a dropped stretch, the long sparse segment that
 * repeats the one before it (issue 13's defect), loops in words and in
 * text without spaces, and clean windows (pauses, slow speech, short
 * natural repeats, shared phrases) that must not trigger.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "whisper/guard.h"

/* A segment with its text's words spread evenly over [start, end) (as
 * character-count times do, roughly) or, with tight != 0, each word 0.3 s
 * long from start, 0.4 s apart. Words point into a static pool. */
#define MAXW 64
static td_word pool[8][MAXW];
static char wtext[8][MAXW][32];

static td_segment mkseg(int slot, double start, double end, const char *text, int tight)
{
    td_segment s = {start, end, (char *)text, pool[slot], 0};
    const char *c = text;
    while (*c) {
        while (*c == ' ')
            c++;
        if (!*c)
            break;
        size_t l = strcspn(c, " ");
        assert_true(s.n_words < MAXW && l < 32);
        memcpy(wtext[slot][s.n_words], c, l);
        wtext[slot][s.n_words][l] = 0;
        pool[slot][s.n_words].text = wtext[slot][s.n_words];
        pool[slot][s.n_words].prob = -1;
        s.n_words++;
        c += l;
    }
    for (size_t i = 0; i < s.n_words; i++) {
        if (tight) {
            pool[slot][i].start = start + 0.4 * (double)i;
            pool[slot][i].end = pool[slot][i].start + 0.3;
        } else {
            double d = (end - start) / (double)s.n_words;
            pool[slot][i].start = start + d * (double)i;
            pool[slot][i].end = start + d * (double)(i + 1);
        }
    }
    return s;
}

static td_guard_params defaults(void)
{
    td_guard_params p;
    td_guard_params_default(&p);
    return p;
}

static void test_gap_dropped_stretch(void **state)
{
    (void)state;
    td_guard_params p = defaults();
    /* Speech 0-5, 6-12, 13-20, 21-30; the decode kept the first and the
     * last utterance only. Uncovered: 6-12 and 13-20, 13 s of speech
     * between the two covered stretches (the pauses do not count). */
    const td_guard_span sp[] = {{0, 5}, {6, 12}, {13, 20}, {21, 30}};
    td_segment segs[2] = {
        mkseg(0, 0.3, 4.8, "one two three four five six seven eight nine ten eleven", 0),
        mkseg(1, 21.2, 29.6, "the last part of what was said here at the end of it all", 0),
    };
    td_guard_issue is[4];
    size_t n = td_guard_gaps(&p, sp, 4, 0, 30, segs, 2, is, 4);
    assert_int_equal(n, 1);
    assert_int_equal(is[0].reason, TD_GUARD_GAP);
    assert_int_equal(is[0].seg, -1);
    assert_true(fabs(is[0].start - 6) < 1e-9 && fabs(is[0].end - 20) < 1e-9);
    assert_true(fabs(is[0].measure - 13) < 1e-9);
    assert_string_equal(td_guard_reason_name(is[0].reason), "gap");
    /* The window check finds the same and nothing else. */
    n = td_guard_window(&p, sp, 4, 0, 30, NULL, segs, 2, is, 4);
    assert_int_equal(n, 1);
    assert_int_equal(is[0].reason, TD_GUARD_GAP);
    /* Only [t0, t1) counts: a window that ends at 8 (the rest is the next
     * window's) has 2 s uncovered (6-8): no gap. */
    assert_int_equal(td_guard_gaps(&p, sp, 4, 0, 8, segs, 1, is, 4), 0);
    /* cap 0 still counts */
    assert_int_equal(td_guard_gaps(&p, sp, 4, 0, 30, segs, 2, NULL, 0), 1);
}

static void test_gap_pauses_and_padding(void **state)
{
    (void)state;
    td_guard_params p = defaults();
    /* Three short bursts 10-11.5, 12-13.5, 14-15 with no words: 4 s of
     * speech uncovered within 5 s -> a gap 10-15 measuring 4. */
    const td_guard_span sp[] = {{0, 9}, {10, 11.5}, {12, 13.5}, {14, 15}};
    td_segment a = mkseg(0, 0.2, 8.8, "a b c d e f g h i j k l m n o p q r s t", 0);
    td_guard_issue is[2];
    assert_int_equal(td_guard_gaps(&p, sp, 4, 0, 15, &a, 1, is, 2), 1);
    assert_true(fabs(is[0].start - 10) < 1e-9 && fabs(is[0].end - 15) < 1e-9);
    assert_true(fabs(is[0].measure - 4) < 1e-9);
    /* 2.5 s of bursts (drop the last) is below 3 s: nothing. */
    assert_int_equal(td_guard_gaps(&p, sp, 3, 0, 15, &a, 1, is, 2), 0);
    /* Word times that fall short of the VAD region by its pre-roll and
     * hangover (0.3 s before, 0.5 s after each utterance) are covered by
     * the padding: utterances 0-4 and 4.5-9, tight words 0.3-3.5 and
     * 4.8-8.5. */
    const td_guard_span sp2[] = {{0, 4}, {4.5, 9}};
    td_segment b[2] = {mkseg(0, 0.3, 3.5, "w w w w w w w w w", 1),
                       mkseg(1, 4.8, 8.5, "x x x x x x x x x x", 1)};
    assert_int_equal(td_guard_gaps(&p, sp2, 2, 0, 9, b, 2, is, 2), 0);
    /* A segment without word times covers its span. */
    td_segment c = {0, 9, "no word times here", NULL, 0};
    assert_int_equal(td_guard_gaps(&p, sp2, 2, 0, 9, &c, 1, is, 2), 0);
    /* No speech at all: nothing to miss. */
    assert_int_equal(td_guard_gaps(&p, NULL, 0, 0, 30, NULL, 0, is, 2), 0);
}

static void test_issue13_sparse_repeat(void **state)
{
    (void)state;
    td_guard_params p = defaults();
    /* The defect seen on the 300-s file: a segment spanning 35.4-63.5 that
     * repeats the sentence before it, 16 words spread over 28 s of speech
     * (character-count times, so no word-less gap): SPARSE (16 / 26.6 s =
     * .60 words per second) and REPEAT (all 16 words). */
    const td_guard_span sp[] = {{20, 35}, {35.3, 48}, {49.2, 63.6}};
    const char *prev_text = "Had he married a more amiable woman, he might have been made still "
                            "more respectable than he was.";
    const char *bad_text = "Had he married a more amiable woman, he might have been made still "
                           "more respectable than";
    td_segment segs[2] = {mkseg(0, 29.0, 35.2, prev_text, 0), mkseg(1, 35.4, 63.5, bad_text, 0)};
    td_guard_issue is[8];
    size_t n = td_guard_window(&p, sp, 3, 29.0, 63.5, NULL, segs, 2, is, 8);
    assert_int_equal(n, 2);
    assert_int_equal(is[0].reason, TD_GUARD_SPARSE);
    assert_int_equal(is[0].seg, 1);
    assert_int_equal(is[0].detail, 16);
    /* speech inside 35.4-63.5: 12.6 + 14.3 = 26.9 s */
    assert_true(fabs(is[0].measure - 16 / 26.9) < 1e-9);
    assert_true(is[0].start == 35.4 && is[0].end == 63.5);
    assert_int_equal(is[1].reason, TD_GUARD_REPEAT);
    assert_int_equal(is[1].seg, 1);
    assert_true(is[1].measure == 16 && is[1].detail == 16);
    /* The same sentence at normal speed, not repeated: nothing. */
    td_segment ok[2] = {mkseg(0, 29.0, 35.2, prev_text, 0),
                        mkseg(1, 35.4, 41.5, "Nobody had thought of it before, and nobody "
                                             "said a word about it at dinner.",
                              0)};
    assert_int_equal(td_guard_window(&p, sp, 3, 29.0, 41.5, NULL, ok, 2, is, 8), 0);
}

static void test_repeat_rules(void **state)
{
    (void)state;
    td_guard_params p = defaults();
    td_guard_issue is;
    /* Against the window's predecessor, case and punctuation aside. */
    td_segment a = mkseg(0, 0, 3, "And so, my fellow Americans:", 0);
    td_segment b = mkseg(1, 3, 6, "and so my fellow americans", 0);
    assert_int_equal(td_guard_repeat(&p, &a, &b, 0, &is), 1);
    assert_true(is.measure == 5 && is.detail == 5);
    assert_int_equal(td_guard_repeat(&p, NULL, &b, 0, &is), 0);
    /* A short natural repeat ("Yes. Yes, yes.") is under 4 words. */
    td_segment y1 = mkseg(0, 0, 1, "Yes. Yes.", 0), y2 = mkseg(1, 1, 2, "Yes, yes.", 0);
    assert_int_equal(td_guard_repeat(&p, &y1, &y2, 1, &is), 0);
    /* A shared phrase that is a small part of the segment: "i went to the
     * store" is 5 of 12 words. */
    td_segment c = mkseg(0, 0, 3, "I went to the store and bought some milk.", 0);
    td_segment d =
        mkseg(1, 3, 7, "Then I went to the store again with my brother and sister.", 0);
    assert_int_equal(td_guard_repeat(&p, &c, &d, 1, &is), 0);
    /* Most of it repeated: 9 of 10 words. */
    td_segment e = mkseg(1, 3, 7, "Well I went to the store and bought some milk", 0);
    assert_int_equal(td_guard_repeat(&p, &c, &e, 1, &is), 1);
    assert_true(is.measure == 9 && is.detail == 10);
}

static void test_loop(void **state)
{
    (void)state;
    td_guard_params p = defaults();
    td_guard_issue is;
    /* A phrase of 6 words ("i m going to the store": the apostrophe splits)
     * said 4 times. */
    td_segment a = mkseg(0, 0, 9,
                         "I'm going to the store, I'm going to the store, I'm going to the "
                         "store, I'm going to the store.",
                         0);
    assert_int_equal(td_guard_loop(&p, &a, 2, &is), 1);
    assert_int_equal(is.reason, TD_GUARD_LOOP);
    assert_int_equal(is.seg, 2);
    assert_true(is.measure == 4 && is.detail == 6);
    /* One word eight times after a normal start. */
    td_segment b = mkseg(0, 0, 5, "He said the the the the the the the the", 0);
    assert_int_equal(td_guard_loop(&p, &b, 0, &is), 1);
    assert_true(is.measure == 8 && is.detail == 1);
    /* Text without spaces: 我们走吧 four times (16 characters). */
    td_segment c = {0, 4, "\xe6\x88\x91\xe4\xbb\xac\xe8\xb5\xb0\xe5\x90\xa7\xe6\x88\x91\xe4\xbb\xac"
                          "\xe8\xb5\xb0\xe5\x90\xa7\xe6\x88\x91\xe4\xbb\xac\xe8\xb5\xb0\xe5\x90"
                          "\xa7\xe6\x88\x91\xe4\xbb\xac\xe8\xb5\xb0\xe5\x90\xa7",
                    NULL, 0};
    assert_int_equal(td_guard_loop(&p, &c, 0, &is), 1);
    assert_true(is.measure == 4 && is.detail == 4);
    /* Clean: "no, no, no" (3 words), a chorus line said twice, ordinary
     * speech with common words. */
    td_segment d = mkseg(0, 0, 2, "No, no, no, I did not say that.", 0);
    assert_int_equal(td_guard_loop(&p, &d, 0, &is), 0);
    td_segment e = mkseg(0, 0, 4, "Row row row your boat, gently down the stream.", 0);
    assert_int_equal(td_guard_loop(&p, &e, 0, &is), 0);
    td_segment f = mkseg(0, 0, 8,
                         "We went to the lake and then we went to the park and then we had "
                         "lunch at the house.",
                         0);
    assert_int_equal(td_guard_loop(&p, &f, 0, &is), 0);
}

static void test_sparse_rules(void **state)
{
    (void)state;
    td_guard_params p = defaults();
    td_guard_issue is;
    /* Slow but real speech: 11 words over 10 s of speech (1.1 per s). */
    const td_guard_span sp[] = {{0, 10}};
    td_segment a = mkseg(0, 0, 10, "well I think that we should all go home now then", 0);
    assert_int_equal(td_guard_sparse(&p, sp, 1, &a, 0, &is), 0);
    /* Three words in a 10-s segment that is mostly silence (2 s of
     * speech): too little speech to judge. */
    const td_guard_span sp2[] = {{4, 6}};
    td_segment b = mkseg(0, 0, 10, "okay see you", 0);
    assert_int_equal(td_guard_sparse(&p, sp2, 1, &b, 0, &is), 0);
    /* The same three words over 10 s of speech: sparse. */
    assert_int_equal(td_guard_sparse(&p, sp, 1, &b, 4, &is), 1);
    assert_true(is.seg == 4 && is.detail == 3 && fabs(is.measure - .3) < 1e-9);
    /* Without word times the text's words count. */
    td_segment c = {0, 10, "okay see you", NULL, 0};
    assert_int_equal(td_guard_sparse(&p, sp, 1, &c, 0, &is), 1);
    assert_int_equal(is.detail, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gap_dropped_stretch),
        cmocka_unit_test(test_gap_pauses_and_padding),
        cmocka_unit_test(test_issue13_sparse_repeat),
        cmocka_unit_test(test_repeat_rules),
        cmocka_unit_test(test_loop),
        cmocka_unit_test(test_sparse_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
