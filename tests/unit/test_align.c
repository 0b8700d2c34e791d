/*
 * test_align.c: word times by cross-attention DTW (src/whisper/align.c).
 *
 * Every expected value is worked out by hand in the comments, from the
 * rules openai-whisper's timing.py and tokenizer.py follow: the alignment
 * heads (decoded here again from openai's published base85 strings), the
 * matrix normalisation, DTW's tie-breaking and trace-back, the word split
 * (Python's substring test against string.punctuation, code-point
 * completion), the punctuation merge, and add_word_timestamps' clipping.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "whisper/align.h"

/* ---- alignment heads against openai's published table ------------------ */

/* whisper/__init__.py _ALIGNMENT_HEADS (base85 of gzip of a boolean
 * [n_text_layer][n_text_head] array) and the text dimensions of each
 * model (whisper's ModelDimensions). */
static const struct {
    const char *name, *b85;
    int layers, heads;
} published[] = {
    {"tiny.en", "ABzY8J1N>@0{>%R00Bk>$p{7v037`oCl~+#00", 4, 6},
    {"tiny", "ABzY8bu8Lr0{>%RKn9Fp%m@SkK7Kt=7ytkO", 4, 6},
    {"base.en", "ABzY8;40c<0{>%RzzG;p*o+Vo09|#PsxSZm00", 6, 8},
    {"base", "ABzY8KQ!870{>%RzyTQH3`Q^yNP!>##QT-<FaQ7m", 6, 8},
    {"small.en", "ABzY8>?_)10{>%RpeA61k&I|OI3I$65C{;;pbCHh0B{qLQ;+}v00", 12, 12},
    {"small", "ABzY8DmU6=0{>%Rpa?J`kvJ6qF(V^F86#Xh7JUGMK}P<N0000", 12, 12},
    {"medium.en", "ABzY8usPae0{>%R7<zz_OvQ{)4kMa0BMw6u5rT}kRKX;$NfYBv00*Hl@qhsU00", 24, 16},
    {"medium", "ABzY8B0Jh+0{>%R7}kK1fFL7w6%<-Pf*t^=N)Qr&0RR9", 24, 16},
    {"large-v1", "ABzY8r9j$a0{>%R7#4sLmoOs{s)o3~84-RPdcFk!JR<kSfC2yj", 32, 20},
    {"large-v2", "ABzY8zd+h!0{>%R7=D0pU<_bnWW*tkYAhobTNnu$jnkEkXqp)j;w1Tzk)UH3X%SZd&fFZ2fC2yj", 32,
     20},
    {"large-v3", "ABzY8gWO1E0{>%R7(9S+Kn!D~%ngiGaR?*L!iJG9p-nab0JQ=-{D1-g00", 32, 20},
    {"large-v3-turbo", "ABzY8j^C+e0{>%RARaKHP%t(lGR*)0g!tONPyhe`", 4, 20},
};

/* RFC 1924 base85 (Python's b85decode): 5 characters -> 4 bytes big-endian;
 * a last group of k characters is padded with '~' and gives k - 1 bytes. */
static size_t b85decode(const char *s, uint8_t *out)
{
    static const char alpha[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";
    size_t n = strlen(s), o = 0;
    for (size_t i = 0; i < n; i += 5) {
        uint64_t v = 0;
        size_t k = n - i < 5 ? n - i : 5;
        for (size_t j = 0; j < 5; j++) {
            int d = 84;
            if (j < k) {
                const char *p = strchr(alpha, s[i + j]);
                assert_non_null(p);
                d = (int)(p - alpha);
            }
            v = v * 85 + (uint64_t)d;
        }
        for (size_t j = 0; j < k - 1; j++)
            out[o++] = (uint8_t)(v >> (24 - 8 * j));
    }
    return o;
}

static size_t gunzip(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(inflateInit2(&z, 16 + MAX_WBITS), Z_OK);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
    size_t got = z.total_out;
    inflateEnd(&z);
    return got;
}

static void test_heads_match_published(void **state)
{
    (void)state;
    size_t n_table;
    const td_align_heads *all = td_align_heads_all(&n_table);
    assert_int_equal(n_table, sizeof published / sizeof published[0]);
    for (size_t m = 0; m < n_table; m++) {
        uint8_t gz[256], mask[1024];
        size_t ng = b85decode(published[m].b85, gz);
        size_t nm = gunzip(gz, ng, mask, sizeof mask);
        assert_int_equal(nm, (size_t)(published[m].layers * published[m].heads));
        const td_align_heads *h = NULL;
        for (size_t k = 0; k < n_table; k++)
            if (strcmp(all[k].name, published[m].name) == 0)
                h = &all[k];
        assert_non_null(h);
        int k = 0;
        for (size_t i = 0; i < nm; i++) {
            if (!mask[i])
                continue;
            assert_true(k < h->n_heads);
            assert_int_equal(h->lh[k][0], (int)i / published[m].heads);
            assert_int_equal(h->lh[k][1], (int)i % published[m].heads);
            k++;
        }
        assert_int_equal(k, h->n_heads);
    }
}

static td_whparams dims(int32_t vocab, int32_t state, int32_t heads, int32_t alayers,
                        int32_t tlayers, int32_t mels)
{
    td_whparams hp = {vocab, 1500, state, heads, alayers, 448, state, heads, tlayers, mels, 1};
    return hp;
}

static void test_heads_find(void **state)
{
    (void)state;
    const td_align_heads *h;
    td_whparams hp = dims(51864, 384, 6, 4, 4, 80);
    assert_int_equal(td_align_heads_find(&hp, NULL, &h), TD_ALIGN_MATCH_EXACT);
    assert_string_equal(h->name, "tiny.en");
    hp = dims(51865, 512, 8, 6, 6, 80);
    assert_int_equal(td_align_heads_find(&hp, "whatever", &h), TD_ALIGN_MATCH_EXACT);
    assert_string_equal(h->name, "base");
    assert_int_equal(h->n_heads, 8);
    hp = dims(51866, 1280, 20, 32, 4, 128);
    assert_int_equal(td_align_heads_find(&hp, NULL, &h), TD_ALIGN_MATCH_EXACT);
    assert_string_equal(h->name, "large-v3-turbo");
    hp = dims(51866, 1280, 20, 32, 32, 128);
    assert_int_equal(td_align_heads_find(&hp, NULL, &h), TD_ALIGN_MATCH_EXACT);
    assert_string_equal(h->name, "large-v3");
    /* large-v1 and large-v2 look alike: the name decides, v2 without one */
    hp = dims(51865, 1280, 20, 32, 32, 80);
    assert_int_equal(td_align_heads_find(&hp, "/m/ggml-large-v1.bin", &h), TD_ALIGN_MATCH_BY_NAME);
    assert_string_equal(h->name, "large-v1");
    assert_int_equal(td_align_heads_find(&hp, "large-v2", &h), TD_ALIGN_MATCH_BY_NAME);
    assert_string_equal(h->name, "large-v2");
    assert_int_equal(td_align_heads_find(&hp, "ggml-large.bin", &h), TD_ALIGN_MATCH_GUESS);
    assert_string_equal(h->name, "large-v2");
    /* a test model of custom width, and tiny's widths with base's layers */
    hp = dims(51864, 64, 4, 2, 2, 80);
    assert_int_equal(td_align_heads_find(&hp, NULL, &h), TD_ALIGN_MATCH_NONE);
    assert_null(h);
    hp = dims(51864, 384, 6, 6, 6, 80);
    assert_int_equal(td_align_heads_find(&hp, "tiny.en", &h), TD_ALIGN_MATCH_NONE);
}

static void test_heads_flat_and_sequence(void **state)
{
    (void)state;
    td_whparams hp = dims(51864, 384, 6, 4, 4, 80);
    const td_align_heads *h;
    assert_int_equal(td_align_heads_find(&hp, NULL, &h), TD_ALIGN_MATCH_EXACT);
    int flat[16];
    td_align_heads_flat(h, flat);
    assert_int_equal(flat[0], 1); /* tiny.en: (1,0) (2,0) (2,5) ... */
    assert_int_equal(flat[1], 0);
    assert_int_equal(flat[4], 2);
    assert_int_equal(flat[5], 5);

    /* Multilingual: [sot, language, task, notimestamps, text, eot];
     * timestamps among the text are left out. */
    td_wmodel m;
    memset(&m, 0, sizeof m);
    m.multilingual = 1;
    m.sp.eot = 50257, m.sp.sot = 50258, m.sp.lang_begin = 50259, m.sp.n_langs = 99;
    m.sp.translate = 50358, m.sp.transcribe = 50359, m.sp.notimestamps = 50363;
    const int32_t text[] = {50364, 400, 401, 50400, 402};
    int32_t seq[16];
    int n_sot = 0;
    assert_int_equal(td_align_sequence(&m, 2, 0, text, 5, seq, 16, &n_sot), 8);
    assert_int_equal(n_sot, 3);
    const int32_t want[] = {50258, 50261, 50359, 50363, 400, 401, 402, 50257};
    for (int i = 0; i < 8; i++)
        assert_int_equal(seq[i], want[i]);
    assert_int_equal(td_align_sequence(&m, 1, 1, text, 5, seq, 16, &n_sot), 8);
    assert_int_equal(seq[2], 50358);
    /* too small a buffer: the length still comes back */
    assert_int_equal(td_align_sequence(&m, 2, 0, text, 5, seq, 4, &n_sot), 8);
    assert_int_equal(td_align_sequence(&m, 99, 0, text, 5, seq, 16, &n_sot), -1);
    /* English-only: [sot, notimestamps, text, eot], the language ignored */
    m.multilingual = 0;
    m.sp.eot = 50256, m.sp.sot = 50257, m.sp.notimestamps = 50362, m.sp.n_langs = 0;
    assert_int_equal(td_align_sequence(&m, -1, 0, text, 3, seq, 16, &n_sot), 5);
    assert_int_equal(n_sot, 1);
    assert_int_equal(seq[0], 50257);
    assert_int_equal(seq[1], 50362);
    assert_int_equal(seq[2], 400);
    assert_int_equal(seq[4], 50256);
}

/* ---- DTW ---------------------------------------------------------------- */

static void test_dtw_hand_worked(void **state)
{
    (void)state;
    td_error err;
    int rows[8], cols[8], len;
    /* x = [[0 0 5] [5 5 0]]; cost table C (C[0][0] = 0, others inf):
     *   C11 = 0 (diag)  C21 = 5 (down from C11)
     *   C12 = 0 (right) C22: c0 = C11 = 0, c1 = C12 = 0, c2 = C21 = 5: no strict
     *                   winner between c0 and c1 -> right, 5 + 5 = 10
     *   C13 = 5 (right) C23: c0 = C12 = 0 strictly cheapest -> diag, 0
     * back from (2,3): diag to (1,2), right to (1,1), diag to (0,0):
     * path (0,0) (0,1) (1,2). */
    const float x[] = {0, 0, 5, 5, 5, 0};
    assert_int_equal(td_align_dtw(x, 2, 3, rows, cols, &len, &err), TD_OK);
    assert_int_equal(len, 3);
    int er[] = {0, 0, 1}, ec[] = {0, 1, 2};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(rows[i], er[i]);
        assert_int_equal(cols[i], ec[i]);
    }
    /* All zeros 2 x 2: C22 has c0 = c1 = c2 = 0, and a three-way tie goes
     * right, to (2,1), which came down from (1,1): path (0,0) (1,0) (1,1),
     * not the diagonal a "diagonal first" rule would take. */
    const float z[] = {0, 0, 0, 0};
    assert_int_equal(td_align_dtw(z, 2, 2, rows, cols, &len, &err), TD_OK);
    assert_int_equal(len, 3);
    assert_int_equal(rows[0], 0);
    assert_int_equal(cols[0], 0);
    assert_int_equal(rows[1], 1);
    assert_int_equal(cols[1], 0);
    assert_int_equal(rows[2], 1);
    assert_int_equal(cols[2], 1);
    /* One row: straight right; one column: straight down. */
    const float r1[] = {3, 1, 2, 7};
    assert_int_equal(td_align_dtw(r1, 1, 4, rows, cols, &len, &err), TD_OK);
    assert_int_equal(len, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(rows[i], 0);
        assert_int_equal(cols[i], i);
    }
    assert_int_equal(td_align_dtw(r1, 4, 1, rows, cols, &len, &err), TD_OK);
    assert_int_equal(len, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(rows[i], i);
        assert_int_equal(cols[i], 0);
    }
    /* A cheap detour: x = [[0 9 9] [9 0 0] [9 9 0]] -> the diagonal (0,0)
     * (1,1) then right to (1,2)? C33: c0 = C22 = 0, c1 = C23 = 0, c2 = C32 =
     * 9: c0 and c1 tie -> right from C32 -> costlier. Work it out:
     *   col 1: C11 = 0, C21 = 9, C31 = 18
     *   col 2: C12 = 9, C22 = 0 (diag from C11), C32 = 9 (down from C22)
     *   col 3: C13 = 18, C23 = 0 (c0 = C12 = 9, c1 = C13 = 18, c2 = C22 = 0:
     *          right), C33: c0 = C22 = 0, c1 = C23 = 0, c2 = C32 = 9 ->
     *          no strict winner -> right: C33 = 0 + 9 = 9
     * back from (3,3): right to (3,2), down to (2,2), diag to (1,1), diag
     * to (0,0): path (0,0) (1,1) (2,1) (2,2). */
    const float d[] = {0, 9, 9, 9, 0, 0, 9, 9, 0};
    assert_int_equal(td_align_dtw(d, 3, 3, rows, cols, &len, &err), TD_OK);
    assert_int_equal(len, 4);
    int dr[] = {0, 1, 2, 2}, dc[] = {0, 1, 1, 2};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(rows[i], dr[i]);
        assert_int_equal(cols[i], dc[i]);
    }
    const float bad[] = {0, NAN};
    assert_int_equal(td_align_dtw(bad, 1, 2, rows, cols, &len, &err), TD_EINVAL);
}

/* ---- the matrix --------------------------------------------------------- */

static void test_matrix_standardise(void **state)
{
    (void)state;
    td_error err;
    /* 2 heads (identical), 3 rows, 2 frames, rows summing to 1, no filter.
     * Frame 0 holds .1 .2 .3: mean .2, population deviation sqrt(.02 / 3),
     * so z = -sqrt(1.5), 0, +sqrt(1.5) (the sample deviation would give
     * -1, 0, 1); frame 1 (.9 .8 .7) the opposite. */
    const float w[] = {.1f, .9f, .2f, .8f, .3f, .7f, .1f, .9f, .2f, .8f, .3f, .7f};
    float out[6];
    assert_int_equal(td_align_matrix(w, 2, 3, 2, 2, 1, out, &err), TD_OK);
    double s = sqrt(1.5);
    double e[] = {-s, s, 0, 0, s, -s};
    for (int i = 0; i < 6; i++)
        assert_true(fabs(out[i] - e[i]) < 1e-5);
    /* Even or zero widths are refused; so are more frames than the context. */
    assert_int_equal(td_align_matrix(w, 2, 3, 2, 2, 4, out, &err), TD_EINVAL);
    assert_int_equal(td_align_matrix(w, 2, 3, 2, 3, 1, out, &err), TD_EINVAL);
}

static void test_matrix_renormalise_and_filter(void **state)
{
    (void)state;
    td_error err;
    /* Two rows standardise to +-1 at every frame (the sign of row 0 minus
     * row 1), 0 where they are equal, so the filter's work is visible.
     * n_ctx 6, content 5 frames. Row 0 puts half its mass in frame 5,
     * outside the content; renormalised over frames 0..4 both rows are
     * flat (.2 each), so everything standardises to 0 - without the
     * renormalisation row 1 would win every frame. */
    const float flat[] = {.1f, .1f, .1f, .1f, .1f, .5f, .15f, .15f, .15f, .15f, .15f, .25f};
    float out[10];
    assert_int_equal(td_align_matrix(flat, 1, 2, 6, 5, 1, out, &err), TD_OK);
    for (int i = 0; i < 10; i++)
        assert_true(fabs(out[i]) < 1e-6);
    /* Row 0 wins at frames 0, 2, 3 and loses at 1, 4: +1 -1 +1 +1 -1.
     * Width 3, reflected edges: padded -1 | +1 -1 +1 +1 -1 | +1, medians
     * -1 +1 +1 +1 +1 (an edge-repeating pad would give +1 at frame 0). */
    const float sg[] = {.3f, .1f, .3f, .2f, .1f, 0, .1f, .3f, .1f, .1f, .3f, .1f};
    assert_int_equal(td_align_matrix(sg, 1, 2, 6, 5, 3, out, &err), TD_OK);
    float e0[] = {-1, 1, 1, 1, 1};
    for (int f = 0; f < 5; f++) {
        assert_true(fabs(out[f] - e0[f]) < 1e-6);
        assert_true(fabs(out[5 + f] + e0[f]) < 1e-6);
    }
    /* Width 7 over 3 frames: too short to pad (openai leaves it), so the
     * standardised signs come through: frames +1 -1 +1. */
    assert_int_equal(td_align_matrix(sg, 1, 2, 6, 3, 7, out, &err), TD_OK);
    assert_true(fabs(out[0] - 1) < 1e-6);
    assert_true(fabs(out[1] + 1) < 1e-6);
    assert_true(fabs(out[2] - 1) < 1e-6);
    const float nan[] = {NAN, .5f, .5f, .5f};
    assert_int_equal(td_align_matrix(nan, 1, 2, 2, 2, 1, out, &err), TD_EINVAL);
}

/* ---- words -------------------------------------------------------------- */

static const char *const vocab_text[] = {
    " Hello", ",", " wor", "ld", "!", " It", "'s", " Wait", "...", " a", "-.", /* 0..10 */
    "\xe4\xbd", "\xa0\xe5\xa5", "\xbd", "\xe4\xb8\x96", "\xff", "\xe4",          /* 11..16 */
    " caf", "\xc3", "\xa9", " \"", "\"", " (", "yes", ")", ".", " there", " Hi", /* 17..27 */
    " Bye", " now",                                                             /* 28..29 */
};
#define EOT 100

static const uint8_t *vtok(void *user, int32_t id, size_t *len)
{
    (void)user;
    if (id < 0 || id >= (int32_t)(sizeof vocab_text / sizeof vocab_text[0]))
        return NULL;
    *len = strlen(vocab_text[id]);
    return (const uint8_t *)vocab_text[id];
}

static const td_align_vocab voc = {vtok, NULL, EOT};

static void expect_words(const td_align_word *w, size_t n, const char *const *text,
                         const int *ntok, size_t want)
{
    assert_int_equal(n, want);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(w[i].text, text[i]);
        assert_int_equal(w[i].n_tokens, ntok[i]);
    }
}

static void test_split_spaces(void **state)
{
    (void)state;
    td_error err;
    td_align_word *w;
    size_t n;
    /* "'s" is not a substring of string.punctuation (so it joins " It"),
     * "..." is not either (one '.' there), "-." is (",-./"). */
    const int32_t t[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    assert_int_equal(td_align_split(&voc, t, 11, 0, &w, &n, &err), TD_OK);
    const char *e[] = {" Hello", ",", " world", "!", " It's", " Wait...", " a", "-."};
    const int k[] = {1, 1, 2, 1, 2, 2, 1, 1};
    expect_words(w, n, e, k, 8);
    td_align_words_free(w, n);
    /* A code point split over tokens joins its word: " caf" + C3 + A9. */
    const int32_t c[] = {17, 18, 19, 0};
    assert_int_equal(td_align_split(&voc, c, 4, 0, &w, &n, &err), TD_OK);
    const char *ec[] = {" caf\xc3\xa9", " Hello"};
    const int kc[] = {3, 1};
    expect_words(w, n, ec, kc, 2);
    td_align_words_free(w, n);
    /* Special tokens are not text. */
    const int32_t s[] = {0, EOT};
    assert_int_equal(td_align_split(&voc, s, 2, 0, &w, &n, &err), TD_EINVAL);
    assert_null(w);
}

static void test_split_unicode(void **state)
{
    (void)state;
    td_error err;
    td_align_word *w;
    size_t n;
    /* E4 BD | A0 E5 A5 | BD | E4 B8 96 | FF | E4:
     * 你 needs tokens 11+12, which leave 好 open until 13; 世 is whole; FF
     * is bad in the whole text too, so it is a word (U+FFFD); so is the
     * lone E4 at the end, which the whole text cannot complete either. */
    const int32_t t[] = {11, 12, 13, 14, 15, 16};
    assert_int_equal(td_align_split(&voc, t, 6, 1, &w, &n, &err), TD_OK);
    const char *e[] = {"\xe4\xbd\xa0\xe5\xa5\xbd", "\xe4\xb8\x96", "\xef\xbf\xbd",
                       "\xef\xbf\xbd"};
    const int k[] = {3, 1, 1, 1};
    expect_words(w, n, e, k, 4);
    td_align_words_free(w, n);
    assert_true(td_align_lang_splits_unicode("ja"));
    assert_true(td_align_lang_splits_unicode("yue"));
    assert_false(td_align_lang_splits_unicode("en"));
    assert_false(td_align_lang_splits_unicode("ko"));
}

static td_align_word *mkwords(const char *const *text, size_t n)
{
    td_align_word *w = calloc(n, sizeof *w);
    assert_non_null(w);
    for (size_t i = 0; i < n; i++) {
        w[i].text = strdup(text[i]);
        assert_non_null(w[i].text);
        w[i].n_tokens = 1;
        w[i].start = (double)i;
        w[i].end = (double)i + 0.5;
    }
    return w;
}

static void test_merge_punct(void **state)
{
    (void)state;
    td_error err;
    const char *in[] = {" Hello", ",", " \"", "world", "\"", " (", "yes", ")", "."};
    td_align_word *w = mkwords(in, 9);
    assert_int_equal(td_align_merge_punct(w, 9, td_align_prepend_punct, td_align_append_punct, &err),
                     TD_OK);
    /* " \"" and " (" go forward; ",", "\"", ")" and "." go back, "." to the
     * word that took ")" (the absorbing word stays while empties pass). */
    const char *e[] = {" Hello,", "", "", " \"world\"", "", "", " (yes).", "", ""};
    const int k[] = {2, 0, 0, 3, 0, 0, 4, 0, 0};
    expect_words(w, 9, e, k, 9);
    /* absorbing words keep their own times */
    assert_true(w[3].start == 3.0 && w[3].end == 3.5);
    assert_true(w[6].start == 6.0 && w[6].end == 6.5);
    td_align_words_free(w, 9);

    /* Right to left, a chain of openers all reach the same word. */
    const char *in2[] = {" (", " \"", "x", " -"};
    w = mkwords(in2, 4);
    assert_int_equal(td_align_merge_punct(w, 4, td_align_prepend_punct, td_align_append_punct, &err),
                     TD_OK);
    const char *e2[] = {"", "", " ( \"x", " -"};
    const int k2[] = {0, 0, 3, 1};
    expect_words(w, 4, e2, k2, 4);
    td_align_words_free(w, 4);

    /* A word ending in a space keeps the punctuation after it apart. */
    const char *in3[] = {"a ", ",", "b"};
    w = mkwords(in3, 3);
    assert_int_equal(td_align_merge_punct(w, 3, td_align_prepend_punct, td_align_append_punct, &err),
                     TD_OK);
    const char *e3[] = {"a ", ",", "b"};
    const int k3[] = {1, 1, 1};
    expect_words(w, 3, e3, k3, 3);
    td_align_words_free(w, 3);
}

/* ---- a whole window ----------------------------------------------------- */

#define NCTX 150
#define NFR 100

/* Weights for one head: the sot row flat, row r = 1 .. (the notimestamps
 * row and the text rows) strong over frames [from[r-1], to[r-1]), the eot
 * row flat; rows also put mass past the content (frames >= NFR), which the
 * renormalisation must discount. */
static float *block_weights(int n_rows, const int *from, const int *to)
{
    float *w = calloc((size_t)n_rows * NCTX, sizeof *w);
    assert_non_null(w);
    for (int r = 0; r < n_rows; r++) {
        float *row = w + (size_t)r * NCTX;
        double s = 0;
        for (int f = 0; f < NCTX; f++) {
            int strong = r >= 1 && r < n_rows - 1 && f >= from[r - 1] && f < to[r - 1];
            row[f] = strong ? 20.0f : (f >= NFR ? 5.0f * (float)(r + 1) : 1.0f);
            s += row[f];
        }
        for (int f = 0; f < NCTX; f++)
            row[f] = (float)(row[f] / s);
    }
    return w;
}

static td_align_window_in window_in(const float *w, int n_text, double offset)
{
    td_align_window_in in = {0};
    in.weights = w;
    in.n_heads = 1;
    in.n_rows = 1 + 1 + n_text + 1;
    in.n_ctx = NCTX;
    in.n_sot = 1;
    in.n_frames = NFR;
    in.time_offset = offset;
    return in;
}

static void expect_word(const td_word *w, const char *text, double start, double end)
{
    assert_string_equal(w->text, text);
    if (fabs(w->start - start) > 1e-9 || fabs(w->end - end) > 1e-9)
        fail_msg("%s: %.4f-%.4f, expected %.4f-%.4f", text, w->start, w->end, start, end);
}

#define TS(x) (EOT + 10 + (x)) /* a timestamp token: any id >= eot */

static void test_window_two_segments(void **state)
{
    (void)state;
    td_error err;
    /* Text " Hi" " there" "."; DTW rows: notimestamps (predicts " Hi")
     * frames 0-29, " Hi" 30-59, " there" 60-79, "." (predicts eot) 80-99.
     * The path enters the rows at 0, .6, 1.2, 1.6 s: " Hi" 0-.6, " there"
     * .6-1.2, "." 1.2-1.6. Median duration .6 (max 1.2): no clipping. "."
     * joins " there" and keeps its times. Offset 10: segment A [ts, Hi,
     * ts] 10.0-10.6 holds "Hi" 10.0-10.6; segment B [ts, there, ., ts]
     * 10.6-11.6 holds "there." 10.6-11.2, and B's end follows its last
     * word (11.6 + .5 is not below 11.2). */
    const int from[] = {0, 30, 60, 80}, to[] = {30, 60, 80, 100};
    float *w = block_weights(6, from, to);
    const int32_t a[] = {TS(0), 27, TS(30)}, b[] = {TS(30), 26, 25, TS(80)};
    td_align_seg segs[2] = {{a, 3, 10.0, 10.6, NULL, 0}, {b, 4, 10.6, 11.6, NULL, 0}};
    td_align_window_in in = window_in(w, 3, 10.0);
    const float probs[] = {.5f, .25f, .75f};
    in.token_probs = probs;
    double last = 0;
    assert_int_equal(td_align_window(&voc, &in, segs, 2, &last, &err), TD_OK);
    assert_int_equal(segs[0].n_words, 1);
    expect_word(&segs[0].words[0], "Hi", 10.0, 10.6);
    assert_true(fabs(segs[0].words[0].prob - .5f) < 1e-6);
    assert_int_equal(segs[1].n_words, 1);
    expect_word(&segs[1].words[0], "there.", 10.6, 11.2);
    assert_true(fabs(segs[1].words[0].prob - .25f) < 1e-6); /* its own token only */
    assert_true(fabs(segs[0].start - 10.0) < 1e-9 && fabs(segs[0].end - 10.6) < 1e-9);
    assert_true(fabs(segs[1].start - 10.6) < 1e-9 && fabs(segs[1].end - 11.2) < 1e-9);
    assert_true(fabs(last - 11.2) < 1e-9);
    td_align_seg_release(&segs[0]);
    td_align_seg_release(&segs[1]);

    /* The segments must hold the tokens the weights were computed on. */
    td_align_seg one[1] = {{a, 3, 10.0, 10.6, NULL, 0}};
    assert_int_equal(td_align_window(&voc, &in, one, 1, &last, &err), TD_EINVAL);
    assert_null(one[0].words);
    free(w);
}

static void test_window_long_first_word_after_pause(void **state)
{
    (void)state;
    td_error err;
    /* Rows at 0-69, 70-79, 80-89, 90-99: " Hi" 0-1.4, " there" 1.4-1.6,
     * "." 1.6-1.8; median .2, max .4. Offset 10, last speech 0: "Hi" ends
     * 11.4, more than 4 x .2 after the last speech, and lasts 1.4 > .4;
     * "there." (.2) is not over-long, so "Hi" becomes 11.0-11.4. The
     * segment (10.0-12.0) then starts with "Hi" at 11.0 (10.0 - .5 is not
     * after 11.0) and ends with "there." at 11.6. */
    const int from[] = {0, 70, 80, 90}, to[] = {70, 80, 90, 100};
    float *w = block_weights(6, from, to);
    const int32_t a[] = {TS(0), 27, 26, 25, TS(100)};
    td_align_seg seg = {a, 5, 10.0, 12.0, NULL, 0};
    td_align_window_in in = window_in(w, 3, 10.0);
    double last = 0;
    assert_int_equal(td_align_window(&voc, &in, &seg, 1, &last, &err), TD_OK);
    assert_int_equal(seg.n_words, 2);
    expect_word(&seg.words[0], "Hi", 11.0, 11.4);
    expect_word(&seg.words[1], "there.", 11.4, 11.6);
    assert_true(fabs(seg.start - 11.0) < 1e-9 && fabs(seg.end - 11.6) < 1e-9);
    assert_true(seg.words[0].prob == -1.0f);
    td_align_seg_release(&seg);

    /* Same words, speech just before (last 11.0: "Hi" ends .4 later, not a
     * pause) and the segment's own start 10.8: "Hi" starts 10.0, more than
     * .5 before it, so it starts at min(11.4 - .2, 10.8) = 10.8. */
    td_align_seg seg2 = {a, 5, 10.8, 12.0, NULL, 0};
    last = 11.0;
    assert_int_equal(td_align_window(&voc, &in, &seg2, 1, &last, &err), TD_OK);
    expect_word(&seg2.words[0], "Hi", 10.8, 11.4);
    assert_true(fabs(seg2.start - 10.8) < 1e-9);
    td_align_seg_release(&seg2);
    free(w);
}

static void test_window_sentence_and_last_word(void **state)
{
    (void)state;
    td_error err;
    /* " Hi" "." " Bye": rows 0-9, 10-19, 20-89, 90-99 -> " Hi" 0-.2, "."
     * .2-.4, " Bye" .4-1.8; median .2, max .4. " Bye" is over-long after a
     * sentence mark: it keeps its end, start 1.8 - .4 = 1.4. "." joins
     * " Hi". Offset 5, last speech 4.9: no pause rule. Segment 5.0-6.8. */
    const int from[] = {0, 10, 20, 90}, to[] = {10, 20, 90, 100};
    float *w = block_weights(6, from, to);
    const int32_t a[] = {TS(0), 27, 25, 28, TS(90)};
    td_align_seg seg = {a, 5, 5.0, 6.8, NULL, 0};
    td_align_window_in in = window_in(w, 3, 5.0);
    double last = 4.9;
    assert_int_equal(td_align_window(&voc, &in, &seg, 1, &last, &err), TD_OK);
    assert_int_equal(seg.n_words, 2);
    expect_word(&seg.words[0], "Hi.", 5.0, 5.2);
    expect_word(&seg.words[1], "Bye", 6.4, 6.8);
    assert_true(fabs(seg.start - 5.0) < 1e-9 && fabs(seg.end - 6.8) < 1e-9);
    td_align_seg_release(&seg);
    free(w);

    /* " Hi" " there" " now": rows 0-9, 10-19, 20-79, 80-99 -> " now"
     * .4-1.6, median .2. The segment's timestamps end at 1.0, and 1.0 + .5
     * is before 1.6: " now" ends at max(.4 + .2, 1.0) = 1.0. */
    const int from2[] = {0, 10, 20, 80}, to2[] = {10, 20, 80, 100};
    w = block_weights(6, from2, to2);
    const int32_t b[] = {TS(0), 27, 26, 29, TS(50)};
    td_align_seg seg2 = {b, 5, 0.0, 1.0, NULL, 0};
    in = window_in(w, 3, 0.0);
    last = 0;
    assert_int_equal(td_align_window(&voc, &in, &seg2, 1, &last, &err), TD_OK);
    assert_int_equal(seg2.n_words, 3);
    expect_word(&seg2.words[0], "Hi", 0.0, 0.2);
    expect_word(&seg2.words[1], "there", 0.2, 0.4);
    expect_word(&seg2.words[2], "now", 0.4, 1.0);
    assert_true(fabs(seg2.end - 1.0) < 1e-9);
    assert_true(fabs(last - 1.0) < 1e-9);
    td_align_seg_release(&seg2);
    free(w);
}

static void test_window_no_text(void **state)
{
    (void)state;
    td_error err;
    /* A segment of timestamps only: no words, times untouched; the last
     * speech becomes its end, as transcribe's get_end falls back to it. */
    float w[3 * NCTX];
    for (int i = 0; i < 3 * NCTX; i++)
        w[i] = 1.0f / NCTX;
    const int32_t a[] = {TS(0), TS(10)};
    td_align_seg seg = {a, 2, 3.0, 3.2, NULL, 0};
    td_align_window_in in = window_in(w, 0, 3.0);
    double last = 1.0;
    assert_int_equal(td_align_window(&voc, &in, &seg, 1, &last, &err), TD_OK);
    assert_int_equal(seg.n_words, 0);
    assert_true(seg.start == 3.0 && seg.end == 3.2);
    assert_true(last == 3.2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heads_match_published),
        cmocka_unit_test(test_heads_find),
        cmocka_unit_test(test_heads_flat_and_sequence),
        cmocka_unit_test(test_dtw_hand_worked),
        cmocka_unit_test(test_matrix_standardise),
        cmocka_unit_test(test_matrix_renormalise_and_filter),
        cmocka_unit_test(test_split_spaces),
        cmocka_unit_test(test_split_unicode),
        cmocka_unit_test(test_merge_punct),
        cmocka_unit_test(test_window_two_segments),
        cmocka_unit_test(test_window_long_first_word_after_pause),
        cmocka_unit_test(test_window_sentence_and_last_word),
        cmocka_unit_test(test_window_no_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
