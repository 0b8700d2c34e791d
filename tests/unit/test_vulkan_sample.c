/*
 * test_vulkan_sample.c: the Vulkan backend's sampling step on the device
 * (backend/vulkan/vk_sample.h, shaders/sample.comp) against
 * td_wsample_row() (whisper/sample.h, what the CPU backend's sample()
 * runs) on the same rows of logits, on whatever Vulkan device is here
 * (lavapipe in CI). Rows are built to reach every branch: the suppress
 * list (with ids out of range), blank/eot, ranges (clamped ends), the
 * timestamp rule won by the timestamps, by the text, and at an exact tie,
 * rows all masked, NaN where it counts and where it is masked, -inf
 * logits, -0 against +0, logits on a coarse grid so that many are exactly
 * equal (ties go to the lower id), and temperature draws at several u,
 * among them u on an exact boundary of the cumulative sum. Each set runs
 * at k = 1, 6 and 65, with a second sampler that has no list and no
 * timestamps (the language detection's), on the real vocabulary's size
 * and on vocabularies smaller than a workgroup and than k; and again
 * with workgroups of 128 invocations (two radix bins a thread) and of
 * 256 forced, the variants for small devices.
 *
 * Token ids (top k, forced timestamps, all-masked, NaN, the draw) must be
 * equal; log-probabilities and the no-speech probability within
 * LP_TOL (the device sums exp in float; the CPU in double). Near-ties
 * that float cannot decide go to the host (the row read back): the test
 * checks that the exact ties did, and that other rows mostly did not.
 *
 * Rows are sampled over several calls of disjoint rows, in an order that
 * is not the rows' own; a row sampled before, a row twice in a call, and
 * rows out of range are refused with TD_EINVAL. The suppress list goes
 * to the device once per sampler.
 *
 * Without a usable Vulkan device the tests skip, saying why.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef TD_HAVE_VULKAN

#include "whisper/backend.h"
#include "whisper/backend/vulkan/vk.h"
#include "whisper/backend/vulkan/vk_sample.h"
#include "whisper/sample.h"

/* |device - CPU| for log-probabilities (absolute, plus relative to the
 * value): the device's sums of exp are float (relative error of a few
 * 1e-7 over 51865 terms), its logs the host's double */
#define LP_TOL(v) (2e-5 * (1.0 + fabs(v)))

static td_vk *vk;
static char skip_reason[TD_ERROR_MSG_MAX];

#define NEED_DEVICE()                                          \
    do {                                                       \
        if (!vk) {                                             \
            printf("# skipped: %s\n", skip_reason);            \
            skip();                                            \
        }                                                      \
    } while (0)

static int setup(void **state)
{
    (void)state;
    td_error err = {0};
    if (td_vk_open(NULL, &vk, &err)) {
        snprintf(skip_reason, sizeof skip_reason, "%s", err.msg);
        vk = NULL;
        return 0;
    }
    const td_vk_info *in = td_vk_device_info(vk);
    printf("# device: %s, driver %s, subgroup %d\n", in->name, in->driver, in->subgroup_size);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    td_vk_close(vk);
    assert_int_equal(td_vk_live(), 0);
    return 0;
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}
static double urand(void)
{
    return (rnd() >> 8) * (1.0 / 16777216.0);
}

/* A set of rows with their inputs. */
#define MAX_ROWS 48
typedef struct rowset {
    int nv, n;
    float *x;                 /* [n][nv] */
    td_wsample_in in[MAX_ROWS];
    int host_expected[MAX_ROWS]; /* an exact tie the host must decide: 1 always,
                                  * 2 under a sampler with timestamps */
    const char *what[MAX_ROWS];
} rowset;

static float *row_new(rowset *s, const char *what)
{
    assert_true(s->n < MAX_ROWS);
    int i = s->n++;
    memset(&s->in[i], 0, sizeof s->in[i]);
    s->in[i].row = i;
    s->what[i] = what;
    s->host_expected[i] = 0;
    return s->x + (size_t)i * s->nv;
}

/* logits on a grid of 1/64 in [-20, 5): each value about nv/1600 times */
static void fill_grid(float *x, int nv)
{
    for (int i = 0; i < nv; i++)
        x[i] = (float)(rnd() % 1600) / 64.0f - 20.0f;
}

static void fill_cont(float *x, int nv, float lo, float hi)
{
    for (int i = 0; i < nv; i++)
        x[i] = lo + (hi - lo) * (float)urand();
}

static void mask_all_but(td_wsample_in *in, int nv, int keep_a, int keep_b)
{
    /* ranges around two kept ids (keep_a < keep_b) */
    in->n_ranges = 3;
    in->ranges[0][0] = 0;
    in->ranges[0][1] = keep_a;
    in->ranges[1][0] = keep_a + 1;
    in->ranges[1][1] = keep_b;
    in->ranges[2][0] = keep_b + 1;
    in->ranges[2][1] = nv;
}

/* The first id from `from` on that the list does not hold, below `to`;
 * -1 if none. */
static int free_id(const int32_t *sup, int ns, int from, int to)
{
    for (int id = from; id < to; id++) {
        int held = 0;
        for (int j = 0; j < ns; j++)
            held |= sup[j] == id;
        if (!held)
            return id;
    }
    return -1;
}

/* The rows for a vocabulary of nv with timestamps from tsb (0 = none),
 * the sampler's suppress list sup. */
static void build_rows(rowset *s, int nv, int tsb, int eot, int nospeech, const int32_t *sup,
                       int ns)
{
    int sup_id = ns > 2 ? sup[2] : -1;
    s->nv = nv;
    s->n = 0;
    s->x = malloc((size_t)MAX_ROWS * nv * sizeof *s->x);
    assert_non_null(s->x);
    int all = TD_WSAMPLE_BLANK | TD_WSAMPLE_TS_RULE | TD_WSAMPLE_NOSPEECH;
    float *x;
    td_wsample_in *in;

    for (int r = 0; r < 3; r++) {
        x = row_new(s, "grid, every flag");
        fill_grid(x, nv);
        in = &s->in[s->n - 1];
        in->flags = r == 2 ? 0 : all;
        if (r == 1) { /* ranges, one past both ends */
            in->n_ranges = 2;
            in->ranges[0][0] = -7;
            in->ranges[0][1] = nv / 10;
            in->ranges[1][0] = nv - nv / 7;
            in->ranges[1][1] = nv + 50;
        }
    }
    x = row_new(s, "grid, 4 ranges");
    fill_grid(x, nv);
    in = &s->in[s->n - 1];
    in->flags = all;
    in->n_ranges = 4;
    for (int j = 0; j < 4; j++) {
        in->ranges[j][0] = nv / 5 * j + 3;
        in->ranges[j][1] = nv / 5 * j + 3 + nv / 11;
    }
    if (tsb > 0) {
        x = row_new(s, "timestamps win the rule");
        fill_cont(x, nv, -10.0f, 0.0f);
        for (int i = tsb; i < nv; i++)
            x[i] = 2.0f + (float)(i % 3);
        s->in[s->n - 1].flags = all;
        x = row_new(s, "text wins the rule");
        fill_cont(x, nv, -4.0f, 1.0f);
        for (int i = tsb; i < nv; i++)
            x[i] = -9.0f;
        s->in[s->n - 1].flags = TD_WSAMPLE_TS_RULE;
        int a = free_id(sup, ns, 5, tsb), b = free_id(sup, ns, tsb + 1, nv);
        if (a >= 0 && b >= 0) {
            x = row_new(s, "the rule at an exact tie");
            fill_grid(x, nv);
            x[a] = 0.0f;
            x[b] = 0.0f;
            in = &s->in[s->n - 1];
            in->flags = TD_WSAMPLE_TS_RULE;
            in->n_ranges = 4; /* all but a and b: lse_ts = 0 = the best text logit */
            in->ranges[0][0] = 0;
            in->ranges[0][1] = a;
            in->ranges[1][0] = a + 1;
            in->ranges[1][1] = b;
            in->ranges[2][0] = b + 1;
            in->ranges[2][1] = nv;
            in->ranges[3][0] = tsb;
            in->ranges[3][1] = tsb; /* empty */
            s->host_expected[s->n - 1] = 2;
        }
        x = row_new(s, "timestamps only, text masked");
        fill_grid(x, nv);
        in = &s->in[s->n - 1];
        in->flags = all;
        in->n_ranges = 1;
        in->ranges[0][1] = tsb;
    }
    x = row_new(s, "all masked");
    fill_grid(x, nv);
    in = &s->in[s->n - 1];
    in->flags = all;
    in->temperature = 1.0f;
    in->u = 0.5;
    in->n_ranges = 1;
    in->ranges[0][1] = nv;
    x = row_new(s, "NaN");
    fill_grid(x, nv);
    x[nv / 3] = NAN;
    x = row_new(s, "NaN masked");
    fill_grid(x, nv);
    x[nv - 1] = NAN;
    in = &s->in[s->n - 1];
    in->n_ranges = 1;
    in->ranges[0][0] = nv - 2;
    in->ranges[0][1] = nv;
    if (sup_id >= 0) {
        x = row_new(s, "NaN suppressed, no-speech asked");
        fill_grid(x, nv);
        x[sup_id] = NAN;
        s->in[s->n - 1].flags = nospeech >= 0 ? TD_WSAMPLE_NOSPEECH : 0;
    }
    x = row_new(s, "-inf logits");
    fill_grid(x, nv);
    for (int i = 0; i < nv; i += 3)
        x[i] = -INFINITY;
    x[1] = 30.0f;
    x[4] = -INFINITY;
    s->in[s->n - 1].flags = all;
    x = row_new(s, "-0 and +0 tied on top");
    fill_cont(x, nv, -5.0f, -1.0f);
    x[nv - 3] = -0.0f;
    x[nv / 2] = 0.0f;
    x[7] = -0.0f;
    x = row_new(s, "few finite, k beyond them");
    fill_grid(x, nv);
    mask_all_but(&s->in[s->n - 1], nv, 2, nv - 2);
    (void)eot;

    /* temperature draws */
    static const double us[] = {0.0, 0.3, 0.7, 0.999999};
    for (int j = 0; j < 4; j++) {
        x = row_new(s, "draw at T = 1");
        fill_cont(x, nv, -3.0f, 3.0f);
        in = &s->in[s->n - 1];
        in->flags = all;
        in->temperature = 1.0f;
        in->u = us[j];
        if (us[j] == 0.0)
            s->host_expected[s->n - 1] = 1; /* the first boundary is 0 itself */
    }
    for (int j = 0; j < 8; j++) {
        x = row_new(s, "draw at T = 0.5, random u");
        fill_grid(x, nv);
        in = &s->in[s->n - 1];
        in->flags = j % 2 ? all : 0;
        in->temperature = 0.5f;
        in->u = urand();
    }
    /* two tokens left, equal: u = 0.5 is their boundary exactly */
    static const double tie_u[] = {0.25, 0.5, 0.75};
    int a = free_id(sup, ns, 10, nv), b = free_id(sup, ns, nv - 20, nv);
    assert_true(a >= 0 && b > a);
    for (int j = 0; j < 3; j++) {
        x = row_new(s, "draw between two equal tokens");
        fill_grid(x, nv);
        x[a] = x[b] = 1.5f;
        in = &s->in[s->n - 1];
        mask_all_but(in, nv, a, b);
        in->temperature = 0.8f;
        in->u = tie_u[j];
        s->host_expected[s->n - 1] = tie_u[j] == 0.5;
    }
}

static int lp_close(double got, double want)
{
    if (isnan(want) || isnan(got))
        return isnan(want) && isnan(got);
    if (isinf(want) || isinf(got))
        return got == want;
    return fabs(got - want) <= LP_TOL(want);
}

static double worst_lp;

static void compare(const char *what, int k, const td_wsample_out *g, const td_wsample_out *c)
{
    if (g->has_nan != c->has_nan)
        fail_msg("%s: has_nan %d, CPU %d", what, g->has_nan, c->has_nan);
    if (c->has_nan)
        return;
    if (g->forced_ts != c->forced_ts || g->all_masked != c->all_masked || g->sampled != c->sampled)
        fail_msg("%s: forced %d/%d all_masked %d/%d sampled %d/%d (device/CPU)", what,
                 g->forced_ts, c->forced_ts, g->all_masked, c->all_masked, g->sampled, c->sampled);
    for (int i = 0; i < k; i++) {
        if (g->top[i] != c->top[i])
            fail_msg("%s: top[%d] %d, CPU %d (logits %g, %g)", what, i, g->top[i], c->top[i],
                     g->top_lp[i], c->top_lp[i]);
        if (!lp_close(g->top_lp[i], c->top_lp[i]))
            fail_msg("%s: top_lp[%d] %.9g, CPU %.9g", what, i, g->top_lp[i], c->top_lp[i]);
        if (isfinite(c->top_lp[i]))
            worst_lp = fmax(worst_lp, fabs(g->top_lp[i] - c->top_lp[i]));
    }
    const double gv[4] = {g->ts_lse, g->best_text_lp, g->sampled_lp, g->no_speech_prob};
    const double cv[4] = {c->ts_lse, c->best_text_lp, c->sampled_lp, c->no_speech_prob};
    static const char *names[4] = {"ts_lse", "best_text_lp", "sampled_lp", "no_speech_prob"};
    for (int j = 0; j < 4; j++) {
        if (!lp_close(gv[j], cv[j]))
            fail_msg("%s: %s %.9g, CPU %.9g", what, names[j], gv[j], cv[j]);
        if (isfinite(cv[j]))
            worst_lp = fmax(worst_lp, fabs(gv[j] - cv[j]));
    }
}

/* Sample every row of s under sp on the device in `calls` calls (row
 * order scrambled) and against td_wsample_row; then the refusals. */
typedef struct host_count {
    long rule, rule_ties;  /* rows without a draw: decided by the host, exact ties */
    long draw, draw_ties;  /* rows with a draw */
} host_count;

static void run_set(const rowset *s, const td_wsampler *sp, int calls, td_vks *smp,
                    const td_vk_buf *lg, host_count *hc)
{
    td_error err = {0};
    int nv = s->nv, n = s->n;
    td_vks_kept(smp, n);
    /* refused before anything is sampled: a row twice, out of range */
    td_wsample_in bad[2] = {s->in[0], s->in[0]};
    td_wsample_out o2[2];
    assert_int_equal(td_vks_run(smp, lg, sp, 2, bad, o2, &err), TD_EINVAL);
    bad[0].row = n;
    assert_int_equal(td_vks_run(smp, lg, sp, 1, bad, o2, &err), TD_EINVAL);
    bad[0].row = -1;
    assert_int_equal(td_vks_run(smp, lg, sp, 1, bad, o2, &err), TD_EINVAL);

    float *copy = malloc((size_t)nv * sizeof *copy);
    td_wsample_in *in = malloc((size_t)n * sizeof *in);
    td_wsample_out *out = malloc((size_t)n * sizeof *out);
    int *idx = malloc((size_t)n * sizeof *idx);
    assert_true(copy && in && out && idx);
    int k = sp->k < 1 ? 1 : sp->k > TD_WSAMPLE_MAX_K ? TD_WSAMPLE_MAX_K : sp->k;
    if (k > nv)
        k = nv;
    /* calls over disjoint rows: every calls-th row, last first, those
     * without a draw and those with one apart (to count the host's) */
    for (int c = 0; c < 2 * calls; c++) {
        int m = 0, draws = c % 2;
        for (int i = n - 1; i >= 0; i--)
            if (i % calls == c / 2 && (s->in[i].temperature > 0) == draws) {
                idx[m] = i;
                in[m++] = s->in[i];
            }
        td_vks_stats before, after;
        td_vks_get_stats(smp, &before);
        if (td_vks_run(smp, lg, sp, m, in, out, &err) != TD_OK)
            fail_msg("td_vks_run: %s", err.msg);
        td_vks_get_stats(smp, &after);
        *(draws ? &hc->draw : &hc->rule) += after.host_rows - before.host_rows;
        for (int j = 0; j < m; j++) {
            int i = idx[j];
            memcpy(copy, s->x + (size_t)i * nv, (size_t)nv * sizeof *copy);
            td_wsample_out ref;
            td_wsample_row(sp, nv, copy, &s->in[i], &ref);
            char what[160];
            snprintf(what, sizeof what, "row %d (%s), k %d, nv %d", i, s->what[i], k, nv);
            compare(what, k, &out[j], &ref);
            *(draws ? &hc->draw_ties : &hc->rule_ties) +=
                s->host_expected[i] == 1 || (s->host_expected[i] == 2 && sp->ts_begin > 0);
        }
    }
    /* each row once */
    assert_int_equal(td_vks_run(smp, lg, sp, 1, &s->in[n / 2], out, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "sampled already"));
    free(copy);
    free(in);
    free(out);
    free(idx);
}

/* wg: the shader's workgroup size (0: the device's choice) */
static void test_sets(int nv, int tsb, int eot, int blank, int nospeech, int wg)
{
    /* the suppress list: ascending, some ids past either end */
    int32_t sup[96];
    int ns = 0;
    int stride = nv / 97 + 1 > 7 ? nv / 97 + 1 : 7;
    sup[ns++] = -5;
    for (int i = 0; i < 90 && 13 + i * stride < nv; i++)
        sup[ns++] = 13 + i * stride;
    sup[ns++] = nv + 3;

    rowset s;
    build_rows(&s, nv, tsb, eot, nospeech, sup, ns);
    td_error err = {0};
    td_vk_buf lg;
    if (td_vk_buf_create(vk, (uint64_t)s.n * nv * 4, TD_VK_MEM_DEVICE, &lg, &err) ||
        td_vk_upload(vk, &lg, 0, s.x, (uint64_t)s.n * nv * 4, &err))
        fail_msg("%s", err.msg);
    td_vks *smp = NULL;
    if (td_vks_create_wg(vk, MAX_ROWS, nv, wg, &smp, &err))
        fail_msg("td_vks_create_wg: %s", err.msg);

    static const int ks[] = {1, 6, 65};
    host_count hc = {0};
    for (int j = 0; j < 3; j++) {
        td_wsampler sp = {.suppress = sup, .n_suppress = ns, .eot = eot, .blank = blank,
                          .ts_begin = tsb > 0 ? tsb : -1, .nospeech = nospeech, .k = ks[j]};
        run_set(&s, &sp, j + 1, smp, &lg, &hc);
        /* the language detection's: nothing fixed, top 1 */
        td_wsampler bare = {.eot = -1, .blank = -1, .ts_begin = -1, .nospeech = -1, .k = ks[j]};
        run_set(&s, &bare, 2, smp, &lg, &hc);
    }
    td_vks_stats st;
    td_vks_get_stats(smp, &st);
    printf("# nv %d, workgroup %d: %ld rows in %ld calls; decided on the host: %ld of the timestamp rules "
           "(%ld exact ties), %ld draws (%ld exact ties); suppress list uploaded %ld times; "
           "worst log-prob difference %.3g\n",
           nv, td_vks_wg(smp), st.rows, st.calls, hc.rule, hc.rule_ties, hc.draw, hc.draw_ties, st.mask_uploads,
           worst_lp);
    /* the exact ties went to the host, and no other rule (none is near) */
    assert_int_equal(hc.rule, hc.rule_ties);
    assert_true(hc.draw >= hc.draw_ties);
    assert_int_equal(st.mask_uploads, 1);
    td_vks_free(smp);
    td_vk_buf_destroy(vk, &lg);
    free(s.x);
}

static void test_real_vocab(void **state)
{
    (void)state;
    NEED_DEVICE();
    /* multilingual Whisper's layout: eot 50257, timestamps from 50364 */
    test_sets(51865, 50364, 50257, 220, 50362, 0);
}

static void test_small_vocab(void **state)
{
    (void)state;
    NEED_DEVICE();
    test_sets(200, 150, 100, 3, 149, 0); /* fewer ids than a workgroup's threads */
    test_sets(40, 30, 20, 1, 29, 0);     /* fewer than k = 65 */
    test_sets(257, 0, 256, -1, -1, 0);   /* no timestamps, no no-speech token */
}

/* The variant for devices at Vulkan's guaranteed minimums (128
 * invocations, 16 KB of shared memory), forced here: fewer threads than
 * a radix pass's 256 bins (two bins a thread); 256 (one bin a thread).
 * Vocabularies of 1000 give each thread several ids per pass, as the real
 * one does (whose rows would double this file's time on lavapipe). */
static void test_small_workgroup(void **state)
{
    (void)state;
    NEED_DEVICE();
    test_sets(1000, 900, 800, 3, 899, 128);
    test_sets(40, 30, 20, 1, 29, 128);
    test_sets(257, 0, 256, -1, -1, 128);
    test_sets(1000, 900, 800, 3, 899, 256);
    test_sets(257, 0, 256, -1, -1, 256);
}

/* The choice from the device's limits, and sizes refused. */
static void test_workgroup_choice(void **state)
{
    (void)state;
    NEED_DEVICE();
    const td_vk_info *in = td_vk_device_info(vk);
    td_error err = {0};
    td_vks *s = NULL;
    assert_int_equal(td_vks_create_wg(vk, 2, 300, 0, &s, &err), TD_OK);
    int want = 1024;
    while (want > 128 && (uint32_t)want > in->max_invocations)
        want /= 2;
    while (want > 128 && 2104u + 20u * (uint32_t)want > in->max_shared)
        want /= 2;
    assert_int_equal(td_vks_wg(s), want);
    printf("# %s: %u invocations, %u bytes of shared memory: workgroup %d\n", in->name,
           in->max_invocations, in->max_shared, td_vks_wg(s));
    td_vks_free(s);
    static const int bad[] = {64, 100, 2048, -1};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(td_vks_create_wg(vk, 2, 300, bad[i], &s, &err), TD_EUNAVAILABLE);
        assert_null(s);
    }
}

/* An allocation failure at each allocation of td_vks_create comes back
 * as TD_ENOMEM with nothing left alive. */
static void test_alloc_failures(void **state)
{
    (void)state;
    NEED_DEVICE();
    long base = td_vk_live();
    int seen = 0;
    for (long n = 1; n < 64; n++) {
        td_error err = {0};
        td_vks *s = NULL;
        td_vk_fail_alloc(n);
        int rc = td_vks_create(vk, 8, 51865, &s, &err);
        td_vk_fail_alloc(0);
        if (rc == TD_OK) {
            td_vks_free(s);
            break;
        }
        assert_int_equal(rc, TD_ENOMEM);
        assert_int_equal(td_vk_live(), base);
        seen++;
    }
    assert_true(seen >= 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_vocab),
        cmocka_unit_test(test_small_vocab),
        cmocka_unit_test(test_small_workgroup),
        cmocka_unit_test(test_workgroup_choice),
        cmocka_unit_test(test_alloc_failures),
    };
    const char *filter = getenv("TEST_FILTER"); /* e.g. TEST_FILTER='test_small*' */
    if (filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, setup, teardown);
}

#else

static void test_not_built(void **state)
{
    (void)state;
    printf("# skipped: built without Vulkan\n");
    skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_not_built)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
