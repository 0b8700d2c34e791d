/*
 * test_vulkan_ops.c: the Vulkan backend's device layer (vk.h) and each of
 * its operations (ops.h) on whatever Vulkan device is here (Mesa's
 * lavapipe in CI), against plain double-precision references in this
 * file, on awkward shapes: sizes that are no multiple of any tile, K
 * tails, single rows, odd head counts. Every output buffer is surrounded
 * by guard values (before, after, and in the unused columns of each row)
 * that must come back untouched. Bounds are on the normalized error
 * (||got - ref|| / ||ref||) and the largest absolute error.
 *
 * The few-row product has a 16-byte path (K and ldw multiples of 8) and a
 * pair path; the shapes reach both.
 *
 * Products split along K (ops.h's td_vko_set_split) are held to the same
 * references, with guards around their scratch, proof that the scratch
 * was written (the split ran), and the same bits on a second run.
 *
 * Also: the batched step's kernel trial and its cache; a loader without a driver gives "unavailable" with the reason; the
 * device is found again by its UUID (and PCI address where the
 * driver reports one), a device that is not there is "unavailable", and
 * an allocation failure injected at each allocation of opening the device
 * and its pipelines comes back as TD_ENOMEM with nothing left alive.
 *
 * Without a usable Vulkan device (no loader, no ICD) the tests skip,
 * saying why; without the Vulkan build the file is one skipped test.
 * TEST_PATHS=NAME[,NAME...] (product path names, ops.h) has the tests
 * that go over every product path take only those (on a card with
 * every path, test_linear_coopmat alone takes minutes).
 * TEST_SKIP=PATTERN[,PATTERN...] leaves out the tests whose names match
 * (make check runs the allocation-failure sweep under the sanitizer only).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef TD_HAVE_VULKAN
#include "whisper/backend/vulkan/shaders.h"

#include "whisper/backend/cpu/kernels.h"
#include "whisper/backend/vulkan/ops.h"
#include "whisper/backend/vulkan/vk.h"

#define GUARD 64               /* guard floats before and after each output */
#define GUARD_VAL 12345.678f

static td_vk *vk;
static td_vko *ops;
static char skip_reason[TD_ERROR_MSG_MAX];

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static int setup(void **state)
{
    (void)state;
    td_error err = {0};
    int rc = td_vk_open(NULL, &vk, &err);
    if (rc) {
        snprintf(skip_reason, sizeof skip_reason, "%s", err.msg);
        vk = NULL;
        return 0;
    }
    const td_vk_info *in = td_vk_device_info(vk);
    printf("# device: %s, driver %s, PCI %s, %s, subgroup %d, free %lld MiB\n", in->name,
           in->driver, in->pci[0] ? in->pci : "(none)", in->uuid, in->subgroup_size,
           in->free_bytes < 0 ? -1LL : (long long)(in->free_bytes >> 20));
    rc = td_vko_create(vk, 16, 64, &ops, &err);
    if (rc)
        fail_msg("td_vko_create: %s", err.msg);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    td_vko_free(ops);
    td_vk_close(vk);
    assert_int_equal(td_vk_live(), 0);
    return 0;
}

#define NEED_DEVICE()                                          \
    do {                                                       \
        if (!vk) {                                             \
            printf("# skipped: %s\n", skip_reason);            \
            skip();                                            \
        }                                                      \
    } while (0)

/* Whether TEST_PATHS (a comma list of path names) is unset or names
 * path; a path it leaves out is said so. */
static int path_wanted(int path)
{
    const char *list = getenv("TEST_PATHS"), *name = td_vko_path_name((enum td_vko_path)path);
    if (!list)
        return 1;
    size_t len = strlen(name);
    for (const char *s = list; *s;) {
        const char *end = strchr(s, ',');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        if (n == len && strncmp(s, name, len) == 0)
            return 1;
        s += n + (end ? 1 : 0);
    }
    printf("# %s left out (TEST_PATHS=%s)\n", name, list);
    return 0;
}

/* A device buffer holding n bytes of host data (or zeros). */
static td_vk_buf dbuf(const void *data, size_t n)
{
    td_vk_buf b;
    td_error err = {0};
    if (td_vk_buf_create(vk, n, TD_VK_MEM_DEVICE, &b, &err))
        fail_msg("%s", err.msg);
    if (data && td_vk_upload(vk, &b, 0, data, n, &err))
        fail_msg("%s", err.msg);
    return b;
}

/* An output buffer of rows x ld floats with GUARD floats each side, all
 * set to the guard value (or to init where given, for accumulation). */
typedef struct outbuf {
    td_vk_buf b;
    size_t n;              /* floats inside the guards */
} outbuf;

static outbuf obuf(size_t n, const float *init)
{
    float *h = malloc((n + 2 * GUARD) * sizeof *h);
    assert_non_null(h);
    for (size_t i = 0; i < n + 2 * GUARD; i++)
        h[i] = GUARD_VAL;
    if (init)
        memcpy(h + GUARD, init, n * sizeof *h);
    outbuf o = {dbuf(h, (n + 2 * GUARD) * sizeof *h), n};
    free(h);
    return o;
}

static uint64_t oaddr(const outbuf *o)
{
    return o->b.addr + GUARD * sizeof(float);
}

/* Read o back; the guards, and columns [cols, ld) of each row, must hold
 * the guard value. Returns the inside (caller frees). */
static float *oread(outbuf *o, int rows, int cols, int ld)
{
    float *h = malloc((o->n + 2 * GUARD) * sizeof *h);
    assert_non_null(h);
    td_error err = {0};
    if (td_vk_download(vk, &o->b, 0, h, (o->n + 2 * GUARD) * sizeof *h, &err))
        fail_msg("%s", err.msg);
    for (int i = 0; i < GUARD; i++) {
        if (h[i] != GUARD_VAL || h[GUARD + o->n + (size_t)i] != GUARD_VAL)
            fail_msg("guard %d around the output overwritten", i);
    }
    for (int r = 0; r < rows; r++)
        for (int c = cols; c < ld; c++)
            if (h[GUARD + (size_t)r * ld + c] != GUARD_VAL)
                fail_msg("row %d column %d (past %d) overwritten", r, c, cols);
    float *in = malloc(o->n * sizeof *in + 1);
    assert_non_null(in);
    memcpy(in, h + GUARD, o->n * sizeof *in);
    free(h);
    td_vk_buf_destroy(vk, &o->b);
    return in;
}

/* Normalized L2 error and max abs error of got against ref, over rows x
 * cols (ld apart), checked against bounds. */
static void compare(const char *what, const float *got, const double *ref, int rows, int cols,
                    int ld, double rel_bound, double abs_bound)
{
    double num = 0, den = 0, mx = 0;
    int mr = 0, mc = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            double g = got[(size_t)r * ld + c], e = ref[(size_t)r * cols + c];
            if (isnan(g))
                fail_msg("%s: NaN at [%d][%d]", what, r, c);
            num += (g - e) * (g - e);
            den += e * e;
            if (fabs(g - e) > mx) {
                mx = fabs(g - e);
                mr = r;
                mc = c;
            }
        }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    printf("# %-40s rel L2 %.2e  max abs %.2e\n", what, rel, mx);
    if (!(rel <= rel_bound) || !(mx <= abs_bound)) {
        int bad = 0, first = -1, last = -1;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                if (fabs(got[(size_t)r * ld + c] - ref[(size_t)r * cols + c]) > abs_bound) {
                    bad++;
                    if (first < 0)
                        first = r * cols + c;
                    last = r * cols + c;
                }
        printf("# %d elements off, first [%d][%d], last [%d][%d]\n", bad, first / cols,
               first % cols, last / cols, last % cols);
    }
    if (!(rel <= rel_bound) || !(mx <= abs_bound))
        printf("# worst at [%d][%d]: %g, expected %g\n", mr, mc, (double)got[(size_t)mr * ld + mc],
               ref[(size_t)mr * cols + mc]);
    if ((!(rel <= rel_bound) || !(mx <= abs_bound)))
        fail_msg("%s: rel L2 %.3e (bound %.1e), max abs %.3e (bound %.1e)", what, rel, rel_bound,
                 mx, abs_bound);
}

static int submit_ok(void)
{
    td_error err = {0};
    int rc = td_vk_submit(vk, &err);
    if (rc)
        fail_msg("submit: %s", err.msg);
    return rc;
}

static void begin_ok(void)
{
    td_error err = {0};
    if (td_vk_begin(vk, &err))
        fail_msg("begin: %s", err.msg);
}

/* ---------------------------------------------------------- device */

static void test_device_choice(void **state)
{
    (void)state;
    NEED_DEVICE();
    const td_vk_info *in = td_vk_device_info(vk);
    td_error err = {0};
    td_vk *again = NULL;
    /* by UUID, with and without the GPU- prefix and dashes */
    assert_int_equal(td_vk_open(in->uuid, &again, &err), TD_OK);
    assert_string_equal(td_vk_device_info(again)->uuid, in->uuid);
    td_vk_close(again);
    char bare[48];
    size_t o = 0;
    for (const char *p = in->uuid + 4; *p; p++)
        if (*p != '-')
            bare[o++] = *p;
    bare[o] = 0;
    assert_int_equal(td_vk_open(bare, &again, &err), TD_OK);
    td_vk_close(again);
    if (in->pci[0]) {
        assert_int_equal(td_vk_open(in->pci, &again, &err), TD_OK);
        assert_string_equal(td_vk_device_info(again)->pci, in->pci);
        td_vk_close(again);
    } else {
        printf("# no VK_EXT_pci_bus_info here: PCI choice not exercised\n");
    }
    /* a device that is not there */
    assert_int_equal(td_vk_open("0000:ff:1f.7", &again, &err), TD_EUNAVAILABLE);
    assert_null(again);
    assert_non_null(strstr(err.msg, "no device 0000:ff:1f.7"));
    assert_int_equal(td_vk_open("GPU-00000000-0000-0000-0000-000000000001", &again, &err),
                     TD_EUNAVAILABLE);
    /* the list agrees */
    td_vk_info list[8];
    int n = 0;
    assert_int_equal(td_vk_list(list, 8, &n, &err), TD_OK);
    assert_true(n >= 1);
    int found = 0;
    for (int i = 0; i < n; i++)
        found += strcmp(list[i].uuid, in->uuid) == 0;
    assert_int_equal(found, 1);
    assert_int_equal(td_vk_probe(&err), TD_OK);
}

/* Every allocation of opening a device and its pipelines, failed in turn:
 * TD_ENOMEM each time, nothing alive afterwards. */
static void test_alloc_failures(void **state)
{
    (void)state;
    NEED_DEVICE();
    long base = td_vk_live();
    int n;
    for (n = 1; n < 200; n++) {
        td_error err = {0};
        td_vk *v = NULL;
        td_vko *o = NULL;
        td_vk_fail_alloc(n);
        int rc = td_vk_open(NULL, &v, &err);
        if (rc == TD_OK) {
            rc = td_vko_create(v, 64, 64, &o, &err);
            if (rc == TD_OK) {
                td_vk_buf b;
                rc = td_vk_buf_create(v, 4096, TD_VK_MEM_READBACK, &b, &err);
                if (rc == TD_OK)
                    td_vk_buf_destroy(v, &b);
            }
            td_vko_free(o);
            td_vk_close(v);
        }
        td_vk_fail_alloc(0);
        assert_int_equal(td_vk_live(), base);
        if (rc == TD_OK)
            break;
        if (rc != TD_ENOMEM)
            fail_msg("allocation %d: code %d (%s), expected TD_ENOMEM", n, rc, err.msg);
    }
    printf("# %d allocations failed in turn, each TD_ENOMEM, nothing leaked\n", n - 1);
    assert_true(n > 10 && n < 200);
}

/* A worker may open and close its device many times (a test does): each
 * cycle must leave the driver as it found it. */
static void test_reopen(void **state)
{
    (void)state;
    NEED_DEVICE();
    for (int i = 0; i < 64; i++) {
        td_error err = {0};
        td_vk *v = NULL;
        if (td_vk_open(NULL, &v, &err) != TD_OK)
            fail_msg("open number %d: %s", i + 1, err.msg);
        td_vk_close(v);
    }
}

/* ---------------------------------------------------------- products */

/* LayerNorm of x's n values (eps 1e-5) in doubles, the CPU backend's
 * two passes: the reference of every LayerNorm here (the
 * fused products', test_layernorm's and test_layernorm_half's) */
static void ln_ref(const float *x, int n, const float *w, const float *b, double *out)
{
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++)
        mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++)
        var += (x[i] - mean) * (x[i] - mean);
    var /= n;
    for (int i = 0; i < n; i++)
        out[i] = (x[i] - mean) / sqrt(var + 1e-5) * w[i] + b[i];
}

/* One product through td_vko_linear_x: force >= 0 moves the matvec switch
 * (0: never, 1 << 20: always); coop (an enum td_vko_path) takes a
 * cooperative-matrix path for more rows (A rounded to halves: looser bounds). TD_VKO_LN normalizes A's
 * rows first; TD_VKO_ROWIDX scatters the output rows in reverse order. */
/* Set: A's and W's row strides multiples of 4 floats and 8 halves, as
 * the encoder's are (the cooperative-matrix product's 16-byte loads);
 * else odd strides. */
static int lin_aligned;
static int lin_packed; /* A and W rows packed (lda = ldw = k): matvec's 16-byte loads */
static enum td_vko_rows lin_rows; /* the kernel of 9..256 rows (td_vko_set_rows) */
static int lin_split; /* parts along K (td_vko_set_split_parts), with a scratch of its own */
/* A handed over as halves (TD_VKO_AHALF: lda in halves), the reference
 * taking A so rounded; matrix-engine paths with F16 weights only */
static int lin_ahalf;

static void linear_case(int m, int n, int k, int w_f16, unsigned flags, int force, int coop)
{
    int ldw = w_f16 && (k % 2) ? k + 1 : k + (k % 3 == 0 ? 2 : 0);
    int lda = k + 3, ldc = n + 5, ldadd = n + 1;
    if (lin_aligned) {
        ldw = (k + 7) / 8 * 8 + (k % 3 == 0 ? 8 : 0);
        lda = (k + 3) / 4 * 4;
    }
    if (lin_packed)
        ldw = lda = k;
    float *a = malloc((size_t)m * lda * sizeof *a), *bias = malloc((size_t)n * sizeof *bias);
    float *add = malloc((size_t)m * ldadd * sizeof *add), *c0 = malloc((size_t)m * ldc * sizeof *c0);
    float *wf = malloc((size_t)n * ldw * sizeof *wf);
    float *lnw = malloc((size_t)k * sizeof *lnw), *lnb = malloc((size_t)k * sizeof *lnb);
    double *an = malloc((size_t)k * sizeof *an);
    int *rowidx = malloc((size_t)m * sizeof *rowidx);
    uint16_t *wh = malloc((size_t)n * ldw * sizeof *wh);
    double *ref = malloc((size_t)m * n * sizeof *ref);
    assert_true(a && bias && add && c0 && wf && wh && ref && lnw && lnb && an && rowidx);
    uint16_t *ah = malloc((size_t)m * lda * sizeof *ah + 4);
    assert_true(ah);
    for (size_t i = 0; i < (size_t)m * lda; i++) {
        a[i] = frand() + ((flags & TD_VKO_LN) ? 2.0f : 0.0f); /* an offset LN must remove */
        if (lin_ahalf) {
            ah[i] = td_wk_f32_to_f16(a[i]);
            a[i] = td_wk_f16_to_f32(ah[i]);
        }
    }
    if (lin_ahalf)
        flags |= TD_VKO_AHALF;
    for (int i = 0; i < n; i++)
        bias[i] = frand();
    for (int i = 0; i < k; i++) {
        lnw[i] = frand();
        lnb[i] = frand();
    }
    for (size_t i = 0; i < (size_t)m * ldadd; i++)
        add[i] = frand();
    for (int r = 0; r < m; r++) {
        rowidx[r] = (m - 1 - r) * ldc;
        for (int c = 0; c < ldc; c++)
            c0[(size_t)r * ldc + c] = c < n ? frand() : GUARD_VAL;
    }
    for (size_t i = 0; i < (size_t)n * ldw; i++) {
        float v = frand() * 0.5f;
        wh[i] = td_wk_f32_to_f16(v);
        wf[i] = w_f16 ? td_wk_f16_to_f32(wh[i]) : v;
    }
    for (int r = 0; r < m; r++) {
        const float *ar = a + (size_t)r * lda;
        if (flags & TD_VKO_LN)
            ln_ref(ar, k, lnw, lnb, an);
        else
            for (int i = 0; i < k; i++)
                an[i] = ar[i];
        int ro = (flags & TD_VKO_ROWIDX) ? m - 1 - r : r; /* the output row this lands in */
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int i = 0; i < k; i++)
                s += an[i] * wf[(size_t)j * ldw + i];
            if (flags & TD_VKO_BIAS)
                s += bias[j];
            if (flags & TD_VKO_GELU)
                s = 0.5 * s * (1 + erf(s / sqrt(2.0)));
            if (flags & TD_VKO_ADD)
                s += add[(size_t)r * ldadd + j];
            if (flags & TD_VKO_ACC)
                s += c0[(size_t)ro * ldc + j];
            ref[(size_t)ro * n + j] = s;
        }
    }
    td_vk_buf ba = lin_ahalf ? dbuf(ah, ((size_t)m * lda * 2 + 3) & ~(size_t)3)
                             : dbuf(a, (size_t)m * lda * 4),
              bb = dbuf(bias, (size_t)n * 4);
    td_vk_buf bd = dbuf(add, (size_t)m * ldadd * 4), blw = dbuf(lnw, (size_t)k * 4),
              blb = dbuf(lnb, (size_t)k * 4), bri = dbuf(rowidx, (size_t)m * 4);
    td_vk_buf bw = w_f16 ? dbuf(wh, (size_t)n * ldw * 2) : dbuf(wf, (size_t)n * ldw * 4);
    outbuf oc = obuf((size_t)m * ldc, c0);
    if (force >= 0)
        td_vko_set_matvec_rows(ops, force);
    td_vko_set_rows(ops, lin_rows);
    td_error err = {0};
    if (coop && td_vko_set_path(ops, (enum td_vko_path)coop, &err))
        fail_msg("%s", err.msg);
    /* the split's scratch: exactly its parts, guards around, all guard
     * values (a part left unwritten shows) */
    outbuf os = {0};
    int sp_was = 0;
    size_t sfl = (size_t)lin_split * m * ((n + 3) & ~3);
    if (lin_split) {
        os = obuf(sfl, NULL);
        td_vko_set_split(ops, oaddr(&os), sfl);
        sp_was = td_vko_set_split_parts(ops, lin_split);
    }
    begin_ok();
    td_vko_lin l = {.m = m, .n = n, .k = k, .a = ba.addr, .lda = lda, .w = bw.addr,
                    .w_f16 = w_f16, .ldw = ldw, .bias = bb.addr, .add = bd.addr, .ldadd = ldadd,
                    .c = oaddr(&oc), .ldc = ldc, .flags = flags, .ln_w = blw.addr,
                    .ln_b = blb.addr, .rowidx = bri.addr};
    td_vko_linear_x(ops, &l);
    submit_ok();
    float *again = NULL;
    if (lin_split) {
        /* the same bits again (no accumulation: C is overwritten) */
        if (!(flags & TD_VKO_ACC)) {
            outbuf o2 = obuf((size_t)m * ldc, c0);
            l.c = oaddr(&o2);
            begin_ok();
            td_vko_linear_x(ops, &l);
            submit_ok();
            again = oread(&o2, m, n, ldc);
        }
        td_vko_set_split(ops, 0, 0);
        td_vko_set_split_parts(ops, sp_was);
        float *sc = oread(&os, 0, 0, 0);
        /* part 0's and the last part's first row: written where K was split */
        int last = k > 64 ? (int)((k - 1) / ((((k + lin_split - 1) / lin_split + 63) / 64) * 64))
                          : -1;
        if (last > 0 && (sc[0] == GUARD_VAL ||
                         sc[(size_t)last * m * ((n + 3) & ~3) + (size_t)n - 1] == GUARD_VAL))
            fail_msg("linear %dx%dx%d split %d: the scratch's parts 0 and %d not written", m, n,
                     k, lin_split, last);
        if (last <= 0 && sc[0] != GUARD_VAL)
            fail_msg("linear %dx%dx%d split %d: K of one step split", m, n, k, lin_split);
        free(sc);
    }
    td_vko_set_matvec_rows(ops, TD_VKO_MATVEC_ROWS);
    td_vko_set_rows(ops, TD_VKO_ROWS_PATH);
    if (td_vko_set_path(ops, TD_VKO_TILED, &err))
        fail_msg("%s", err.msg);
    float *got = oread(&oc, m, n, ldc);
    if (again) {
        for (int r = 0; r < m; r++)
            for (int c = 0; c < n; c++)
                if (memcmp(&got[(size_t)r * ldc + c], &again[(size_t)r * ldc + c], 4) != 0)
                    fail_msg("linear %dx%dx%d split %d: [%d][%d] %.9g then %.9g", m, n, k,
                             lin_split, r, c, (double)got[(size_t)r * ldc + c],
                             (double)again[(size_t)r * ldc + c]);
        free(again);
    }
    char what[112];
    snprintf(what, sizeof what, "linear %dx%dx%d %s flags %u %s%s%s%s%s", m, n, k,
             w_f16 ? "f16" : "f32", flags,
             force == 0 ? td_vko_path_name((enum td_vko_path)coop) : force > 0 ? "matvec" : "auto",
             lin_rows ? " rows " : "", lin_rows ? td_vko_rows_name(lin_rows) : "",
             lin_split ? " split" : "", lin_ahalf ? " A halves" : "");
    /* halves for A: each product term off by up to 2^-11 relative */
    if (coop && w_f16 && m > (force >= 0 ? force : TD_VKO_MATVEC_ROWS))
        compare(what, got, ref, m, n, ldc, 2e-3, 2e-3 * sqrt((double)k));
    else
        compare(what, got, ref, m, n, ldc, 2e-6, 2e-5 * sqrt((double)k));
    free(got);
    td_vk_buf_destroy(vk, &ba);
    td_vk_buf_destroy(vk, &bb);
    td_vk_buf_destroy(vk, &bd);
    td_vk_buf_destroy(vk, &bw);
    td_vk_buf_destroy(vk, &blw);
    td_vk_buf_destroy(vk, &blb);
    td_vk_buf_destroy(vk, &bri);
    free(a);
    free(bias);
    free(add);
    free(c0);
    free(wf);
    free(wh);
    free(ref);
    free(lnw);
    free(lnb);
    free(an);
    free(rowidx);
    free(ah);
}

static const int lin_shapes[][3] = {{1, 7, 10},   {3, 33, 66},  {8, 65, 130}, {9, 64, 64},
                                    {70, 129, 47}, {65, 3, 200}, {1, 200, 1},  {130, 70, 17},
                                    {2, 37, 512}, {300, 130, 70}, {257, 257, 33}};

static void test_linear(void **state)
{
    (void)state;
    NEED_DEVICE();
    const unsigned B = TD_VKO_BIAS, G = TD_VKO_GELU, A = TD_VKO_ADD, C = TD_VKO_ACC;
    for (size_t s = 0; s < sizeof lin_shapes / sizeof lin_shapes[0]; s++) {
        int m = lin_shapes[s][0], n = lin_shapes[s][1], k = lin_shapes[s][2];
        for (int f16 = 0; f16 <= 1; f16++) {
            linear_case(m, n, k, f16, 0, -1, 0);
            linear_case(m, n, k, f16, B | G | A, 0, 0);     /* tiled */
            linear_case(m, n, k, f16, B | C, 1 << 20, 0);   /* matvec, however many rows */
        }
    }
}

/* Products split along K (tiled here; test_linear_coopmat's paths on a
 * card): K tails inside a part and parts of one step, every epilogue
 * flag, aligned and odd strides, F16 and F32 weights, 2, 3, 8 and 16
 * parts (TD_VKO_SPLIT_MAX); a decoder batch's rows (64: the 64-row tiles
 * that splits of so few rows take). */
static const int split_shapes[][3] = {{70, 129, 200}, {65, 3, 2085},   {9, 64, 130},
                                      {300, 130, 1000}, {33, 257, 65}, {130, 70, 4100},
                                      {64, 264, 1024}};

static void split_cases(int coop)
{
    const unsigned B = TD_VKO_BIAS, G = TD_VKO_GELU, A = TD_VKO_ADD, C = TD_VKO_ACC;
    static const int parts[] = {2, 3, 8, 16};
    for (size_t s = 0; s < sizeof split_shapes / sizeof split_shapes[0]; s++) {
        int m = split_shapes[s][0], n = split_shapes[s][1], k = split_shapes[s][2];
        lin_split = parts[s % 4];
        lin_aligned = (int)(s % 2);
        for (int f16 = coop ? 1 : 0; f16 <= 1; f16++) {
            linear_case(m, n, k, f16, B | G | A, 0, coop);
            linear_case(m, n, k, f16, C | TD_VKO_ROWIDX, 0, coop);
        }
    }
    lin_split = 0;
    lin_aligned = 0;
}

static void test_linear_split(void **state)
{
    (void)state;
    NEED_DEVICE();
    split_cases(0);
}

/* The decoder's fused forms: LayerNorm in the few-row product's prologue,
 * output rows scattered (K and V into their slots) on every path. */
static void test_linear_ln_rowidx(void **state)
{
    (void)state;
    NEED_DEVICE();
    const unsigned B = TD_VKO_BIAS, C = TD_VKO_ACC, L = TD_VKO_LN, R = TD_VKO_ROWIDX;
    static const int shapes[][3] = {{1, 64, 64}, {3, 33, 66}, {8, 65, 130}, {5, 40, 1280},
                                    {2, 17, 7}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int f16 = 0; f16 <= 1; f16++) {
            linear_case(shapes[s][0], shapes[s][1], shapes[s][2], f16, B | L, -1, 0);
            linear_case(shapes[s][0], shapes[s][1], shapes[s][2], f16, L | R | C, -1, 0);
        }
    linear_case(70, 129, 47, 1, B | R, 0, 0);
    linear_case(70, 129, 47, 0, R | C, 0, 0);
}

/* The few-row product's fast path (matvec.comp: weights and A read 16
 * bytes a load, several loads in flight, team sums by subgroups): K a
 * multiple of 8 with tails of every length against the 32 threads x 8
 * loads x 8 halves of a team's pass (2048), one row and a few, more than
 * 8 rows (several workgroup rows), columns not a multiple of 4, and the
 * LayerNorm prologue and scattered rows on it. */
static void test_linear_matvec_packed(void **state)
{
    (void)state;
    NEED_DEVICE();
    const unsigned B = TD_VKO_BIAS, G = TD_VKO_GELU, A = TD_VKO_ADD, C = TD_VKO_ACC,
                   L = TD_VKO_LN, R = TD_VKO_ROWIDX;
    static const int shapes[][3] = {{1, 1029, 1024}, {1, 6, 4104}, {1, 37, 8},  {3, 130, 2056},
                                    {8, 67, 1280},   {5, 33, 264}, {1, 5, 2048}, {2, 3, 16}, {1, 3, 8200}};
    lin_packed = 1;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int f16 = 0; f16 <= 1; f16++) {
            int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
            linear_case(m, n, k, f16, B | G | A, -1, 0);
            linear_case(m, n, k, f16, B | L, -1, 0);
            linear_case(m, n, k, f16, L | R | C, -1, 0);
        }
    linear_case(13, 9, 520, 1, B | C, 1 << 20, 0); /* two groups of 8 rows */
    linear_case(17, 70, 1032, 1, L | B, 1 << 20, 0);
    lin_packed = 0;
}

/* q, k and v as one few-row product (TD_VKO_QKV): columns [0, split) to
 * C's rows, [split, 2 split) and [2 split, 3 split) to the rows of two
 * pools at rowidx (here in reverse order), with the bias and LayerNorm
 * as the decoder passes them. */
static void qkv_case(int m, int split, int k, int w_f16, unsigned flags)
{
    int n = 3 * split, ld = split + 3;
    float *a = malloc((size_t)m * k * sizeof *a), *bias = malloc((size_t)n * sizeof *bias);
    float *wf = malloc((size_t)n * k * sizeof *wf), *lnw = malloc((size_t)k * sizeof *lnw),
          *lnb = malloc((size_t)k * sizeof *lnb);
    uint16_t *wh = malloc((size_t)n * k * sizeof *wh);
    int *rowidx = malloc((size_t)m * sizeof *rowidx);
    double *ref[3], *an = malloc((size_t)k * sizeof *an);
    assert_true(a && bias && wf && lnw && lnb && wh && rowidx && an);
    for (int p = 0; p < 3; p++)
        assert_non_null(ref[p] = malloc((size_t)m * split * sizeof *ref[p]));
    for (size_t i = 0; i < (size_t)m * k; i++)
        a[i] = frand() + 1.5f;
    for (int i = 0; i < n; i++)
        bias[i] = frand();
    for (int i = 0; i < k; i++) {
        lnw[i] = frand();
        lnb[i] = frand();
    }
    for (size_t i = 0; i < (size_t)n * k; i++) {
        float v = frand() * 0.5f;
        wh[i] = td_wk_f32_to_f16(v);
        wf[i] = w_f16 ? td_wk_f16_to_f32(wh[i]) : v;
    }
    for (int r = 0; r < m; r++) {
        rowidx[r] = (m - 1 - r) * ld;
        const float *ar = a + (size_t)r * k;
        if (flags & TD_VKO_LN)
            ln_ref(ar, k, lnw, lnb, an);
        else
            for (int i = 0; i < k; i++)
                an[i] = ar[i];
        for (int j = 0; j < n; j++) {
            double s = bias[j];
            for (int i = 0; i < k; i++)
                s += an[i] * wf[(size_t)j * k + i];
            int p = j / split, ro = p == 0 ? r : m - 1 - r;
            ref[p][(size_t)ro * split + j % split] = s;
        }
    }
    td_vk_buf ba = dbuf(a, (size_t)m * k * 4), bb = dbuf(bias, (size_t)n * 4),
              blw = dbuf(lnw, (size_t)k * 4), blb = dbuf(lnb, (size_t)k * 4),
              bri = dbuf(rowidx, (size_t)m * 4);
    td_vk_buf bw = w_f16 ? dbuf(wh, (size_t)n * k * 2) : dbuf(wf, (size_t)n * k * 4);
    outbuf oc[3] = {obuf((size_t)m * ld, NULL), obuf((size_t)m * ld, NULL),
                    obuf((size_t)m * ld, NULL)};
    begin_ok();
    td_vko_lin l = {.m = m, .n = n, .k = k, .a = ba.addr, .lda = k, .w = bw.addr,
                    .w_f16 = w_f16, .ldw = k, .bias = bb.addr, .c = oaddr(&oc[0]), .ldc = ld,
                    .flags = flags | TD_VKO_BIAS | TD_VKO_QKV, .ln_w = blw.addr,
                    .ln_b = blb.addr, .rowidx = bri.addr, .c2 = oaddr(&oc[1]),
                    .c3 = oaddr(&oc[2]), .split = split};
    td_vko_set_rows(ops, lin_rows);
    td_vko_linear_x(ops, &l);
    submit_ok();
    td_vko_set_rows(ops, TD_VKO_ROWS_PATH);
    for (int p = 0; p < 3; p++) {
        float *got = oread(&oc[p], m, split, ld);
        char what[96];
        snprintf(what, sizeof what, "qkv %dx3*%dx%d %s flags %u, part %d%s%s", m, split, k,
                 w_f16 ? "f16" : "f32", flags, p, lin_rows ? " rows " : "",
                 lin_rows ? td_vko_rows_name(lin_rows) : "");
        compare(what, got, ref[p], m, split, ld, 2e-6, 2e-5 * sqrt((double)k));
        free(got);
        free(ref[p]);
    }
    td_vk_buf_destroy(vk, &ba);
    td_vk_buf_destroy(vk, &bb);
    td_vk_buf_destroy(vk, &blw);
    td_vk_buf_destroy(vk, &blb);
    td_vk_buf_destroy(vk, &bri);
    td_vk_buf_destroy(vk, &bw);
    free(a);
    free(bias);
    free(wf);
    free(lnw);
    free(lnb);
    free(wh);
    free(rowidx);
    free(an);
}

static void test_linear_qkv(void **state)
{
    (void)state;
    NEED_DEVICE();
    static const int shapes[][3] = {{1, 64, 64}, {3, 37, 40}, {8, 33, 1024}, {1, 5, 26}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int f16 = 0; f16 <= 1; f16++) {
            qkv_case(shapes[s][0], shapes[s][1], shapes[s][2], f16, 0);
            qkv_case(shapes[s][0], shapes[s][1], shapes[s][2], f16, TD_VKO_LN);
        }
}

/* TD_VKO_COLS (and TD_VKO_HALF): one product of nb blocks of split
 * columns, block j written to a buffer of its own (table entry j) at
 * element cofs + row * ldc (or cofs + rowidx[row]: rows reversed), as
 * floats or halves. Each block's buffer has guards before and after it,
 * before cofs, and in the columns past split of each row; with halves
 * the guards are a half's bit pattern that no result takes. */
#define HGUARD 0x7bffu /* 65504, the largest half: far outside these results */
static void cols_case(int m, int nb, int split, int k, int w_f16, int half, int rowidx, int coop)
{
    int n = nb * split, ldc = split + 6, ldw = k + (k & 1), cofs = 2 * (m % 3) + 4;
    size_t blk = (size_t)cofs + (size_t)m * ldc; /* elements of a block, guards aside */
    float *a = malloc((size_t)m * k * sizeof *a), *bias = malloc((size_t)n * sizeof *bias);
    float *wf = malloc((size_t)n * ldw * sizeof *wf);
    uint16_t *wh = malloc((size_t)n * ldw * sizeof *wh);
    double *ref = malloc((size_t)m * n * sizeof *ref);
    int *ri = malloc((size_t)m * sizeof *ri);
    uint64_t *tab = malloc((size_t)nb * sizeof *tab);
    td_vk_buf *ob = malloc((size_t)nb * sizeof *ob);
    size_t hn = blk + 2 * GUARD; /* a block's buffer in elements */
    float *hf = malloc(hn * sizeof *hf);
    uint16_t *hh = malloc(hn * sizeof *hh);
    float *got = malloc((size_t)m * n * sizeof *got);
    assert_true(a && bias && wf && wh && ref && ri && tab && ob && hf && hh && got);
    for (size_t i = 0; i < (size_t)m * k; i++)
        a[i] = frand();
    for (int i = 0; i < n; i++)
        bias[i] = frand();
    for (size_t i = 0; i < (size_t)n * ldw; i++) {
        float v = frand() * 0.5f;
        wh[i] = td_wk_f32_to_f16(v);
        wf[i] = w_f16 ? td_wk_f16_to_f32(wh[i]) : v;
    }
    for (int r = 0; r < m; r++) {
        ri[r] = (m - 1 - r) * ldc;
        for (int j = 0; j < n; j++) {
            double acc = bias[j];
            for (int i = 0; i < k; i++)
                acc += (double)a[(size_t)r * k + i] * wf[(size_t)j * ldw + i];
            ref[(size_t)r * n + j] = acc;
        }
    }
    for (size_t i = 0; i < hn; i++) {
        hf[i] = GUARD_VAL;
        hh[i] = HGUARD;
    }
    for (int j = 0; j < nb; j++) {
        ob[j] = half ? dbuf(hh, hn * 2) : dbuf(hf, hn * 4);
        tab[j] = ob[j].addr + (uint64_t)GUARD * (half ? 2 : 4);
    }
    td_vk_buf ba = dbuf(a, (size_t)m * k * 4), bb = dbuf(bias, (size_t)n * 4);
    td_vk_buf bt = dbuf(tab, (size_t)nb * 8), bri = dbuf(ri, (size_t)m * 4);
    td_vk_buf bw = w_f16 ? dbuf(wh, (size_t)n * ldw * 2) : dbuf(wf, (size_t)n * ldw * 4);
    td_error err = {0};
    if (coop && td_vko_set_path(ops, (enum td_vko_path)coop, &err))
        fail_msg("%s", err.msg);
    td_vk_buf bs = {0}; /* split along K (lin_split): the parts' scratch */
    int sp_was = 0;
    if (lin_split) {
        size_t sfl = (size_t)lin_split * m * ((n + 3) & ~3);
        bs = dbuf(NULL, sfl * 4);
        td_vko_set_split(ops, bs.addr, sfl);
        sp_was = td_vko_set_split_parts(ops, lin_split);
    }
    begin_ok();
    td_vko_linear_x(ops, &(td_vko_lin){.m = m, .n = n, .k = k, .a = ba.addr, .lda = k,
                                       .w = bw.addr, .w_f16 = w_f16, .ldw = ldw,
                                       .bias = bb.addr, .c = ba.addr, .ldc = ldc,
                                       .flags = TD_VKO_BIAS | TD_VKO_COLS |
                                                (half ? TD_VKO_HALF : 0) |
                                                (rowidx ? TD_VKO_ROWIDX : 0),
                                       .rowidx = bri.addr, .split = split, .tab = bt.addr,
                                       .cofs = (uint32_t)cofs});
    submit_ok();
    if (lin_split) {
        td_vko_set_split(ops, 0, 0);
        td_vko_set_split_parts(ops, sp_was);
        td_vk_buf_destroy(vk, &bs);
    }
    if (td_vko_set_path(ops, TD_VKO_TILED, &err))
        fail_msg("%s", err.msg);
    for (int j = 0; j < nb; j++) {
        if (td_vk_download(vk, &ob[j], 0, half ? (void *)hh : (void *)hf, hn * (half ? 2 : 4),
                           &err))
            fail_msg("%s", err.msg);
        for (size_t i = 0; i < hn; i++) {
            size_t e = i - GUARD; /* the element (wraps below the block: a guard) */
            int inside = i >= GUARD && e >= (size_t)cofs && e < blk &&
                         (int)((e - (size_t)cofs) % (size_t)ldc) < split;
            int untouched = half ? hh[i] == HGUARD : hf[i] == GUARD_VAL;
            if (!inside && !untouched)
                fail_msg("cols %dx%dx%d block %d: guard at %zd overwritten", m, n, k, j,
                         (ptrdiff_t)i - GUARD);
            if (!inside)
                continue;
            size_t row = (e - (size_t)cofs) / (size_t)ldc, col = (e - (size_t)cofs) % (size_t)ldc;
            if (rowidx)
                row = (size_t)m - 1 - row;
            got[row * (size_t)n + (size_t)j * split + col] =
                half ? td_wk_f16_to_f32(hh[i]) : hf[i];
        }
    }
    char what[96];
    snprintf(what, sizeof what, "cols %dx%d(%dx%d)x%d %s%s%s %s%s", m, n, nb, split, k,
             w_f16 ? "f16" : "f32", half ? " halves" : "", rowidx ? " rowidx" : "",
             td_vko_path_name((enum td_vko_path)coop), lin_split ? " split" : "");
    /* halves out: each off by up to 2^-11 relative; halves for A on the
     * matrix engines as in linear_case */
    double rel = coop && w_f16 ? 2e-3 : half ? 6e-4 : 2e-6;
    double abs_b = coop && w_f16 ? 2e-3 * sqrt((double)k) : half ? 2e-3 * sqrt((double)k)
                                                                 : 2e-5 * sqrt((double)k);
    compare(what, got, ref, m, n, n, rel, abs_b);
    for (int j = 0; j < nb; j++)
        td_vk_buf_destroy(vk, &ob[j]);
    td_vk_buf_destroy(vk, &ba);
    td_vk_buf_destroy(vk, &bb);
    td_vk_buf_destroy(vk, &bt);
    td_vk_buf_destroy(vk, &bri);
    td_vk_buf_destroy(vk, &bw);
    free(a);
    free(bias);
    free(wf);
    free(wh);
    free(ref);
    free(ri);
    free(tab);
    free(ob);
    free(hf);
    free(hh);
    free(got);
}

/* TD_VKO_AHALF's promise: on path (one of matmul_cm.comp's), the product
 * with A handed over as halves is bitwise the product of the same values
 * as floats (the kernel rounds float A to halves as it stages it), split
 * along K too. aligned: lda a multiple of 4, so that the 16-byte loads
 * (and the compilations for A as halves: by 16 subgroups, or by 8 with
 * TD_VULKAN_CM_AH=1) are taken; else lda = k + 2. The float side runs by
 * 16 subgroups too (TD_VULKAN_CM_F16, default 1) where the card builds it. */
static void ahalf_same_bits(int m, int n, int k, unsigned flags, int path, int split, int aligned)
{
    int lda = aligned ? (k + 3) / 4 * 4 + 4 : k + 2, ldw = (k + 7) / 8 * 8, ldc = n + 3;
    uint16_t *ah = malloc((size_t)m * lda * sizeof *ah), *wh = malloc((size_t)n * ldw * 2);
    float *af = malloc((size_t)m * lda * sizeof *af), *bias = malloc((size_t)n * 4);
    float *c0 = malloc((size_t)m * ldc * sizeof *c0);
    assert_true(ah && wh && af && bias && c0);
    for (size_t i = 0; i < (size_t)m * lda; i++) {
        ah[i] = td_wk_f32_to_f16(frand() * 3);
        af[i] = td_wk_f16_to_f32(ah[i]);
    }
    for (size_t i = 0; i < (size_t)n * ldw; i++)
        wh[i] = td_wk_f32_to_f16(frand() * 0.5f);
    for (int i = 0; i < n; i++)
        bias[i] = frand();
    for (size_t i = 0; i < (size_t)m * ldc; i++) /* past column n the guard value (oread) */
        c0[i] = i % (size_t)ldc < (size_t)n ? frand() : GUARD_VAL;
    td_vk_buf bah = dbuf(ah, (size_t)m * lda * 2), baf = dbuf(af, (size_t)m * lda * 4),
              bw = dbuf(wh, (size_t)n * ldw * 2), bb = dbuf(bias, (size_t)n * 4);
    outbuf o1 = obuf((size_t)m * ldc, c0), o2 = obuf((size_t)m * ldc, c0), os = {0};
    td_error err = {0};
    if (td_vko_set_path(ops, (enum td_vko_path)path, &err))
        fail_msg("%s", err.msg);
    int sp_was = 0;
    if (split) {
        size_t sfl = (size_t)split * m * ((n + 3) & ~3);
        os = obuf(sfl, NULL);
        td_vko_set_split(ops, oaddr(&os), sfl);
        sp_was = td_vko_set_split_parts(ops, split);
    }
    td_vko_lin l = {.m = m, .n = n, .k = k, .a = bah.addr, .lda = lda, .w = bw.addr,
                    .w_f16 = 1, .ldw = ldw, .bias = bb.addr, .c = oaddr(&o1), .ldc = ldc,
                    .flags = flags | TD_VKO_AHALF};
    begin_ok();
    td_vko_linear_x(ops, &l);
    submit_ok();
    l.a = baf.addr;
    l.c = oaddr(&o2);
    l.flags = flags;
    begin_ok();
    td_vko_linear_x(ops, &l);
    submit_ok();
    if (split) {
        td_vko_set_split(ops, 0, 0);
        td_vko_set_split_parts(ops, sp_was);
        td_vk_buf_destroy(vk, &os.b);
    }
    if (td_vko_set_path(ops, TD_VKO_TILED, &err))
        fail_msg("%s", err.msg);
    float *g1 = oread(&o1, m, n, ldc), *g2 = oread(&o2, m, n, ldc);
    for (int r = 0; r < m; r++)
        for (int c = 0; c < n; c++)
            if (memcmp(&g1[(size_t)r * ldc + c], &g2[(size_t)r * ldc + c], 4) != 0)
                fail_msg("%s %dx%dx%d flags %u split %d: A as halves [%d][%d] %.9g, as floats "
                         "%.9g", td_vko_path_name((enum td_vko_path)path), m, n, k, flags, split,
                         r, c, (double)g1[(size_t)r * ldc + c], (double)g2[(size_t)r * ldc + c]);
    free(g1);
    free(g2);
    td_vk_buf_destroy(vk, &o1.b);
    td_vk_buf_destroy(vk, &o2.b);
    td_vk_buf_destroy(vk, &bah);
    td_vk_buf_destroy(vk, &baf);
    td_vk_buf_destroy(vk, &bw);
    td_vk_buf_destroy(vk, &bb);
    free(ah);
    free(wh);
    free(af);
    free(bias);
    free(c0);
}

/* Column blocks to outputs of their own, as floats and as halves, on the
 * tiled path and every cooperative-matrix path the device has: block
 * widths that are no multiple of a tile (10, 34, 66) and one that is
 * (64: K and N multiples of 16 for the direct loads), tiles that span
 * blocks, odd row counts, K tails, odd K (ldw padded even), few rows
 * (which still take these kernels), rows scattered. */
static void test_linear_cols(void **state)
{
    (void)state;
    NEED_DEVICE();
    static const int shapes[][4] = {{70, 3, 34, 47}, {1, 5, 10, 33}, {130, 4, 66, 64},
                                    {9, 2, 64, 64},  {257, 3, 64, 128}, {3, 7, 18, 17}};
    static const int paths[] = {TD_VKO_TILED,      TD_VKO_COOPMAT,  TD_VKO_COOPMAT64,
                                TD_VKO_CMDIRECT,   TD_VKO_CMDIRECT64, TD_VKO_CM64X64,
                                TD_VKO_CM64X64K64, TD_VKO_CM64X64S2, TD_VKO_CMAHEAD,
                                TD_VKO_CM128W};
    for (size_t t = 0; t < sizeof paths / sizeof paths[0]; t++) {
        td_error perr = {0};
        if (!path_wanted(paths[t]))
            continue;
        if (td_vko_set_path(ops, (enum td_vko_path)paths[t], &perr)) {
            assert_int_equal(perr.code, TD_EUNAVAILABLE);
            printf("# cols on %s skipped: %s\n", td_vko_path_name((enum td_vko_path)paths[t]),
                   perr.msg);
            continue;
        }
        if (paths[t] != TD_VKO_TILED)
            td_vko_set_cm_big_min(ops, paths[t] == TD_VKO_COOPMAT || paths[t] == TD_VKO_CM128W
                                           ? 0
                                           : TD_VKO_CM_BIG_MIN);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int half = 0; half <= 1; half++) {
                const int *sh = shapes[s];
                cols_case(sh[0], sh[1], sh[2], sh[3], 1, half, 0, paths[t]);
                if (paths[t] == TD_VKO_TILED)
                    cols_case(sh[0], sh[1], sh[2], sh[3], 0, half, 0, 0);
            }
        cols_case(70, 3, 34, 47, 1, 1, 1, paths[t]);
        cols_case(130, 4, 66, 64, 1, 0, 1, paths[t]);
        /* split along K: the blocks and halves from matmul_sum.comp */
        lin_split = 3;
        for (int half = 0; half <= 1; half++)
            cols_case(257, 3, 64, 130, 1, half, 0, paths[t]);
        cols_case(70, 3, 34, 147, 1, 1, 1, paths[t]);
        lin_split = 0;
    }
    td_vko_set_cm_big_min(ops, TD_VKO_CM_BIG_MIN);
    td_error err = {0};
    if (td_vko_set_path(ops, TD_VKO_TILED, &err))
        fail_msg("%s", err.msg);
}

/* The batched decoder step's products (9 to 256 rows) on the
 * matrix-vector kernels (td_vko_set_rows): one column per team, and four
 * (matvec4, its grid by row groups first), and on matrows.comp (tiles of
 * 64 rows x 8 columns; what it cannot take, LayerNorm, F32 weights, odd
 * strides, goes to matvec, which these cases check too); odd row counts across the
 * groups of 8, column counts not a multiple of a workgroup's 4 or 16,
 * K tails against the 16-byte loads, F16 and F32 weights, packed rows
 * (16-byte loads) and odd strides, LayerNorm fused, rows scattered, and
 * q, k, v as one product. */
/* gcc's macro, clang's feature test */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_UNDER_ASAN 1
#endif
#endif
#ifndef TEST_UNDER_ASAN
#define TEST_UNDER_ASAN 0
#endif

static void test_linear_rows(void **state)
{
    (void)state;
    NEED_DEVICE();
    const unsigned B = TD_VKO_BIAS, G = TD_VKO_GELU, A = TD_VKO_ADD, C = TD_VKO_ACC,
                   L = TD_VKO_LN, R = TD_VKO_ROWIDX;
    static const int shapes[][3] = {{9, 64, 64},    {13, 33, 72},  {17, 70, 1032}, {31, 5, 8},
                                    {64, 131, 520}, {100, 67, 264}, {129, 18, 2056},
                                    {255, 17, 40},  {256, 29, 16}, {57, 1029, 128}};
    for (int kind = TD_VKO_ROWS_MATVEC; kind < TD_VKO_ROWS_N; kind++) {
        lin_rows = (enum td_vko_rows)kind;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
#if TEST_UNDER_ASAN
            /* under the sanitizer (make check's second run of the unit
             * tests) every third shape, from the second: the host's side
             * is the same for each, and lavapipe's minutes go to numerics
             * that the plain build checks on all of them (57 x 1029 x 128
             * alone takes over half of them: a workgroup per 4 of its
             * 1029 weight rows, each slow on lavapipe) */
            if (s % 3 != 1)
                continue;
#endif
            int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
            for (int packed = 0; packed <= 1; packed++) {
                lin_packed = packed;
                for (int f16 = 0; f16 <= 1; f16++) {
                    if (packed && !f16)
                        continue; /* the 16-byte loads are the halves' */
                    linear_case(m, n, k, f16, B | G | A, -1, 0);
                    linear_case(m, n, k, f16, B | L, -1, 0);
                    linear_case(m, n, k, f16, L | R | C, -1, 0);
                    linear_case(m, n, k, f16, B | R | C, -1, 0);
                }
            }
        }
        lin_packed = 0;
        linear_case(47, 9, 7, 1, B | C, -1, 0);  /* odd K: pairs of halves, a tail */
        linear_case(11, 10, 13, 0, L | B, -1, 0);
        qkv_case(9, 37, 40, 1, TD_VKO_LN);
        qkv_case(70, 33, 1024, 1, TD_VKO_LN);
        qkv_case(130, 5, 26, 0, 0);
        qkv_case(256, 64, 64, 1, TD_VKO_LN);
        qkv_case(70, 33, 1024, 1, 0);
        qkv_case(193, 64, 136, 1, 0);
    }
    lin_rows = TD_VKO_ROWS_PATH;
    /* above 256 rows the path's product, whatever the kernel chosen */
    td_vko_set_rows(ops, TD_VKO_ROWS_MATVEC4);
    assert_false(td_vko_fuses_ln(ops, 257));
    assert_true(td_vko_fuses_ln(ops, 256));
    td_vko_set_rows(ops, TD_VKO_ROWS_MATROWS);
    assert_false(td_vko_fuses_ln(ops, 64));
    assert_true(td_vko_takes_qkv(ops, 64));
    td_vko_set_rows(ops, TD_VKO_ROWS_PATH);
    assert_false(td_vko_fuses_ln(ops, 9));
    assert_false(td_vko_takes_qkv(ops, 9));
    assert_true(td_vko_fuses_ln(ops, 8));
}

/* The cooperative-matrix path, where the device has one (not lavapipe). */
static void test_linear_coopmat(void **state)
{
    (void)state;
    NEED_DEVICE();
    if (!td_vko_has_coopmat(ops)) {
        td_error err = {0};
        assert_int_equal(td_vko_set_path(ops, TD_VKO_COOPMAT, &err), TD_EUNAVAILABLE);
        printf("# skipped: %s\n", err.msg);
        skip();
    }
    const unsigned B = TD_VKO_BIAS, G = TD_VKO_GELU, A = TD_VKO_ADD, C = TD_VKO_ACC;
    /* coopmat with 128-row tiles on every grid, then as the trial uses
     * it, then 64-row tiles only, then the direct-load paths (which take
     * K and N multiples of 16 with aligned strides, matmul_cm.comp the
     * rest: dir_shapes reach the first, lin_shapes mostly the second),
     * then the three 64 x 64 tile shapes on every grid (no 128 x 128),
     * then the loads two steps ahead in 128 x 128 and in 64 x 128 tiles,
     * then 128 x 128 tiles of four 64 x 64 subgroup blocks on every grid;
     * each path's products split along K too (split_cases) */
    static const int big_min[] = {0, TD_VKO_CM_BIG_MIN, TD_VKO_CM_BIG_MIN, TD_VKO_CM_BIG_MIN,
                                  TD_VKO_CM_BIG_MIN, 1 << 20, 1 << 20, 1 << 20, 0, 1 << 20, 0};
    static const int paths[] = {TD_VKO_COOPMAT, TD_VKO_COOPMAT, TD_VKO_COOPMAT64,
                                TD_VKO_CMDIRECT, TD_VKO_CMDIRECT64, TD_VKO_CM64X64,
                                TD_VKO_CM64X64K64, TD_VKO_CM64X64S2, TD_VKO_CMAHEAD,
                                TD_VKO_CMAHEAD, TD_VKO_CM128W};
    /* M tails inside a fragment and past whole fragments, N past a
     * workgroup's columns, K of one, three and many steps of 16 */
    static const int dir_shapes[][3] = {{17, 16, 16},  {70, 128, 48},  {65, 48, 208},
                                        {300, 144, 80}, {257, 272, 32}, {130, 80, 16},
                                        {100, 64, 48},  {33, 400, 512}, {64, 64, 64}};
    for (int t = 0; t < (int)(sizeof paths / sizeof paths[0]); t++) {
        int p = paths[t];
        td_error perr = {0};
        if (!path_wanted(p))
            continue;
        if (td_vko_set_path(ops, (enum td_vko_path)p, &perr)) {
            assert_int_equal(perr.code, TD_EUNAVAILABLE);
            printf("# %s skipped: %s\n", td_vko_path_name((enum td_vko_path)p), perr.msg);
            continue;
        }
        td_vko_set_cm_big_min(ops, big_min[t]);
        int ahalf_ok = td_vko_a_half_ok(ops); /* matmul_cm.comp's paths */
        /* dir_shapes: 16-byte loads with K tails, for the 64 x 64 tiles too */
        int direct = p == TD_VKO_CMDIRECT || p == TD_VKO_CMDIRECT64 || p >= TD_VKO_CM64X64;
        for (lin_aligned = 0; lin_aligned <= 1 && direct; lin_aligned++)
            for (size_t s = 0; s < sizeof dir_shapes / sizeof dir_shapes[0]; s++) {
                int m = dir_shapes[s][0], n = dir_shapes[s][1], k = dir_shapes[s][2];
                linear_case(m, n, k, 1, B | G | A, 0, p);
                linear_case(m, n, k, 1, C | TD_VKO_ROWIDX, 0, p);
            }
        for (lin_aligned = 0; lin_aligned <= 1; lin_aligned++)
            for (size_t s = 0; s < sizeof lin_shapes / sizeof lin_shapes[0]; s++) {
                int m = lin_shapes[s][0], n = lin_shapes[s][1], k = lin_shapes[s][2];
                linear_case(m, n, k, 1, B | G | A, 0, p);
                linear_case(m, n, k, 1, C | TD_VKO_ROWIDX, 0, p);
            }
        lin_aligned = 1;
        linear_case(1500, 1024, 1024, 1, B | C, 0, p); /* a medium encoder product */
        linear_case(300, 4096, 100, 1, B | G, 0, p);   /* 16-byte loads, a K tail of 4 */
        linear_case(64, 4096, 1024, 1, B | G, 0, p);
        lin_aligned = 0;
        linear_case(1500, 1024, 1024, 1, B | C, 0, p); /* the same with odd strides */
        linear_case(100, 100, 100, 0, B, 0, p);        /* F32 weights stay tiled */
        split_cases(p);
        /* A as halves (the encoder's LayerNorm and GELU outputs): odd and
         * aligned strides, K tails, the medium encoder's MLP shapes, split;
         * and bitwise the product of the same values as floats */
        if (!ahalf_ok)
            continue;
        lin_ahalf = 1;
        for (lin_aligned = 0; lin_aligned <= 1; lin_aligned++)
            for (size_t s = 0; s < sizeof lin_shapes / sizeof lin_shapes[0]; s++) {
                int m = lin_shapes[s][0], n = lin_shapes[s][1], k = lin_shapes[s][2];
                linear_case(m, n, k, 1, B | G, 0, p);
                linear_case(m, n, k, 1, C | TD_VKO_ROWIDX, 0, p);
            }
        lin_aligned = 1;
        linear_case(1500, 4096, 1024, 1, B | G, 0, p);
        linear_case(1500, 1024, 4096, 1, B | C, 0, p);
        lin_split = 3;
        linear_case(300, 130, 1000, 1, B | C, 0, p);
        lin_aligned = 0;
        linear_case(130, 70, 4100, 1, B | G | A, 0, p);
        lin_split = 0;
        lin_ahalf = 0;
        for (int aligned = 0; aligned <= 1; aligned++) {
            ahalf_same_bits(1500, 1024, 1024, B | C, p, 0, aligned);
            ahalf_same_bits(300, 4096, 100, B | G, p, 0, aligned);
            ahalf_same_bits(130, 70, 4100, B | C, p, 3, aligned);
        }
        ahalf_same_bits(17, 33, 66, B, p, 0, 0);
    }
    td_vko_set_cm_big_min(ops, TD_VKO_CM_BIG_MIN);
}

/* The matrix engines' rate: a figure where the path exists, else
 * "unavailable". */
static void test_cm_peak(void **state)
{
    (void)state;
    NEED_DEVICE();
    td_error err = {0};
    double tf = -1;
    if (!td_vko_has_coopmat(ops) || !td_vk_device_info(vk)->has_coopmat_nv) { /* NV's shader */
        assert_int_equal(td_vko_cm_peak(ops, 0, 0, &tf, &err), TD_EUNAVAILABLE);
        assert_true(tf == 0);
        printf("# skipped: %s\n", err.msg);
        skip();
    }
    for (int mode = 0; mode < TD_VKO_CM_PEAK_MODES; mode++) {
        if (td_vko_cm_peak(ops, mode, 0, &tf, &err))
            fail_msg("%s", err.msg);
        printf("# matrix engines, mode %d: %.1f TFLOP/s\n", mode, tf);
        assert_true(tf > 0);
    }
    if (td_vko_cm_peak(ops, 0, 132, &tf, &err))
        fail_msg("%s", err.msg);
    assert_true(tf > 0);
    assert_int_equal(td_vko_cm_peak(ops, TD_VKO_CM_PEAK_MODES, 0, &tf, &err), TD_EUNAVAILABLE);
    assert_int_equal(td_vko_cm_peak(ops, 0, -1, &tf, &err), TD_EINVAL);
}

/* A kept command buffer replays with what memory holds then, until forgotten. */
static void test_replay(void **state)
{
    (void)state;
    NEED_DEVICE();
    float a[4 * 8], w[8 * 8], got[4 * 8];
    for (int i = 0; i < 8 * 8; i++)
        w[i] = i % 9 == 0 ? 1.0f : 0.0f; /* identity */
    td_vk_buf ba = dbuf(NULL, sizeof a), bw = dbuf(w, sizeof w), bc = dbuf(NULL, sizeof got);
    td_error err = {0};
    for (int t = 0; t < 4; t++) {
        for (int i = 0; i < 4 * 8; i++)
            a[i] = (float)(i + 100 * t);
        if (td_vk_upload(vk, &ba, 0, a, sizeof a, &err))
            fail_msg("%s", err.msg);
        if (t == 3)
            td_vk_forget(vk);
        int replay = -1;
        if (td_vk_begin_cached(vk, 42, &replay, &err))
            fail_msg("%s", err.msg);
        assert_int_equal(replay, t == 1 || t == 2);
        if (!replay)
            td_vko_linear(ops, 4, 8, 8, ba.addr, 8, bw.addr, 0, 8, 0, 0, 0, bc.addr, 8, 0);
        submit_ok();
        if (td_vk_download(vk, &bc, 0, got, sizeof got, &err))
            fail_msg("%s", err.msg);
        for (int i = 0; i < 4 * 8; i++)
            assert_true(got[i] == a[i]);
    }
    td_vk_buf_destroy(vk, &ba);
    td_vk_buf_destroy(vk, &bw);
    td_vk_buf_destroy(vk, &bc);
}

/* ---------------------------------------------------------- layernorm */

static void test_layernorm(void **state)
{
    (void)state;
    NEED_DEVICE();
    static const int ns[] = {1, 7, 64, 257, 1280};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        int n = ns[t], rows = 5, ldx = n + 2, ldy = n + 3;
        float *x = malloc((size_t)rows * ldx * sizeof *x), *w = malloc((size_t)n * 4),
              *b = malloc((size_t)n * 4);
        double *ref = malloc((size_t)3 * n * sizeof *ref);
        assert_true(x && w && b && ref);
        for (size_t i = 0; i < (size_t)rows * ldx; i++)
            x[i] = frand() * 3 + 1.5f; /* an offset the mean must remove */
        for (int i = 0; i < n; i++) {
            w[i] = frand();
            b[i] = frand();
        }
        int idx[3] = {4, 0, 2}; /* gathered rows */
        for (int r = 0; r < 3; r++)
            ln_ref(x + (size_t)idx[r] * ldx, n, w, b, ref + (size_t)r * n);
        td_vk_buf bx = dbuf(x, (size_t)rows * ldx * 4), bw = dbuf(w, (size_t)n * 4),
                  bb = dbuf(b, (size_t)n * 4), bi = dbuf(idx, sizeof idx);
        outbuf oy = obuf((size_t)3 * ldy, NULL);
        begin_ok();
        td_vko_layernorm(ops, 3, n, bx.addr, ldx, bw.addr, bb.addr, oaddr(&oy), ldy, bi.addr);
        submit_ok();
        float *got = oread(&oy, 3, n, ldy);
        char what[64];
        snprintf(what, sizeof what, "layernorm n %d (gathered rows)", n);
        compare(what, got, ref, 3, n, ldy, 1e-6, 1e-5);
        free(got);
        td_vk_buf_destroy(vk, &bx);
        td_vk_buf_destroy(vk, &bw);
        td_vk_buf_destroy(vk, &bb);
        td_vk_buf_destroy(vk, &bi);
        free(x);
        free(w);
        free(b);
        free(ref);
    }
}

/* LayerNorm into halves (the encoder's A for products with TD_VKO_AHALF):
 * even widths, rows ldy halves apart, the halves between rows and after
 * the last a guard that must stay; each value within a half's rounding
 * of the reference. */
static void test_layernorm_half(void **state)
{
    (void)state;
    NEED_DEVICE();
    static const int ns[] = {2, 64, 258, 1024, 1280};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        int n = ns[t], rows = 3, ldx = n + 1, ldy = n + 4;
        size_t ny = (size_t)rows * ldy + 2 * GUARD; /* halves, guards before and after */
        float *x = malloc((size_t)rows * ldx * sizeof *x), *w = malloc((size_t)n * 4),
              *b = malloc((size_t)n * 4);
        uint16_t *y = malloc(ny * sizeof *y);
        assert_true(x && w && b && y);
        for (size_t i = 0; i < (size_t)rows * ldx; i++)
            x[i] = frand() * 3 + 1.5f;
        for (int i = 0; i < n; i++) {
            w[i] = frand();
            b[i] = frand();
        }
        for (size_t i = 0; i < ny; i++)
            y[i] = HGUARD;
        td_vk_buf bx = dbuf(x, (size_t)rows * ldx * 4), bw = dbuf(w, (size_t)n * 4),
                  bb = dbuf(b, (size_t)n * 4), by = dbuf(y, ny * 2);
        begin_ok();
        td_vko_layernorm_half(ops, rows, n, bx.addr, ldx, bw.addr, bb.addr,
                              by.addr + (uint64_t)GUARD * 2, ldy);
        submit_ok();
        td_error err = {0};
        if (td_vk_download(vk, &by, 0, y, ny * 2, &err))
            fail_msg("%s", err.msg);
        double *ref = malloc((size_t)n * sizeof *ref);
        assert_non_null(ref);
        for (int r = 0; r < rows; r++) {
            ln_ref(x + (size_t)r * ldx, n, w, b, ref);
            for (int i = 0; i < n; i++) {
                double got = td_wk_f16_to_f32(y[GUARD + (size_t)r * ldy + i]);
                /* a half's rounding: 2^-11 relative, 2^-25 near zero */
                if (fabs(got - ref[i]) > fabs(ref[i]) * 4.9e-4 + 3e-8 + 1e-6 * fabs(ref[i]))
                    fail_msg("layernorm half n %d [%d][%d]: %.7g, want %.7g", n, r, i, got,
                             ref[i]);
            }
        }
        free(ref);
        /* the float LayerNorm's values rounded to halves (round to
         * nearest even, as packHalf2x16 on the cards here): the same */
        outbuf of = obuf((size_t)rows * ldy, NULL);
        begin_ok();
        td_vko_layernorm(ops, rows, n, bx.addr, ldx, bw.addr, bb.addr, oaddr(&of), ldy, 0);
        submit_ok();
        float *yf = oread(&of, rows, n, ldy);
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < n; i++) {
                uint16_t want = td_wk_f32_to_f16(yf[(size_t)r * ldy + i]);
                if (y[GUARD + (size_t)r * ldy + i] != want)
                    fail_msg("layernorm half n %d [%d][%d]: 0x%04x, the float's half 0x%04x", n,
                             r, i, y[GUARD + (size_t)r * ldy + i], want);
            }
        free(yf);
        td_vk_buf_destroy(vk, &of.b);
        for (size_t i = 0; i < ny; i++) {
            size_t e = i - GUARD;
            int inside = i >= GUARD && e < (size_t)rows * ldy && (int)(e % (size_t)ldy) < n;
            if (!inside && y[i] != HGUARD)
                fail_msg("layernorm half n %d: guard at %zd overwritten", n, (ptrdiff_t)i - GUARD);
        }
        td_vk_buf_destroy(vk, &bx);
        td_vk_buf_destroy(vk, &bw);
        td_vk_buf_destroy(vk, &bb);
        td_vk_buf_destroy(vk, &by);
        free(x);
        free(w);
        free(b);
        free(y);
    }
}

/* ---------------------------------------------------------- attention */

/* out[r] = softmax(q[r] . k[j]^T / sqrt(d), j < nk) v over one head. */
static void attn_ref(int d, int nk, const float *q, const float *k, const float *v, int ld,
                     double *out)
{
    double *s = malloc((size_t)nk * sizeof *s), mx = -INFINITY, sum = 0;
    assert_non_null(s);
    for (int j = 0; j < nk; j++) {
        double t = 0;
        for (int i = 0; i < d; i++)
            t += (double)q[i] * k[(size_t)j * ld + i];
        s[j] = t / sqrt((double)d);
        if (s[j] > mx)
            mx = s[j];
    }
    for (int j = 0; j < nk; j++)
        sum += s[j] = exp(s[j] - mx);
    for (int i = 0; i < d; i++) {
        double a = 0;
        for (int j = 0; j < nk; j++)
            a += s[j] * v[(size_t)j * ld + i];
        out[i] = a / sum;
    }
    free(s);
}

/* coop: on the cooperative-matrix path (enc_attn_cm.comp where the head
 * width has it: q, k, v rounded to halves), and there also with q, k, v
 * given as halves (td_vko_enc_attn_half, the halves made on the device).
 * ramp: key j scaled by 1 + 4 j / n, so that the scores' maxima keep
 * growing block after block and enc_attn_cm.comp (and enc_attn_cmr.comp)
 * rescale their sums and outputs so far in blocks after the first (and a
 * lazy rescaling, as once tried, must move its reference there). */
static void enc_attn_case_r(int n, int n_head, int d, int coop, int ramp)
{
    int ld = n_head * d;
    size_t sz = (size_t)n * ld;
    float *q = malloc(sz * 4), *k = malloc(sz * 4), *v = malloc(sz * 4);
    double *ref = malloc(sz * sizeof *ref);
    assert_true(q && k && v && ref);
    for (size_t i = 0; i < sz; i++) {
        q[i] = frand() * 2;
        k[i] = frand() * 2;
        v[i] = frand();
        if (ramp)
            k[i] *= 1.0f + 4.0f * (float)(i / (size_t)ld) / (float)n;
    }
    for (int r = 0; r < n; r++)
        for (int h = 0; h < n_head; h++)
            attn_ref(d, n, q + (size_t)r * ld + h * d, k + h * d, v + h * d, ld,
                     ref + (size_t)r * ld + h * d);
    td_vk_buf bq = dbuf(q, sz * 4), bk = dbuf(k, sz * 4), bv = dbuf(v, sz * 4);
    outbuf oo = obuf(sz, NULL);
    td_vko *o = ops;
    td_vko *o64 = NULL;
    if (d != 16) {
        td_error err = {0};
        if (td_vko_create(vk, d, d, &o64, &err))
            fail_msg("%s", err.msg);
        o = o64;
    }
    if (coop) {
        td_error err = {0};
        if (td_vko_set_path(o, TD_VKO_COOPMAT, &err))
            fail_msg("%s", err.msg);
        const char *note = td_vko_attn_note(o);
        printf("# n %d heads %d d %d: %s\n", n, n_head, d, note);
        /* TD_TEST_EXPECT_ATTN_REG=1 (the device runs on NVIDIA): with
         * the switch on, the register shader must have passed its check */
        const char *want = getenv("TD_TEST_EXPECT_ATTN_REG");
        const char *sw = getenv("TD_VULKAN_ATTN_REG");
        if (want && strcmp(want, "1") == 0 && !(sw && strcmp(sw, "0") == 0) &&
            (d == 32 || d == 64) && !strstr(note, "registers (checked"))
            fail_msg("n %d d %d: the register attention was not taken: %s", n, d, note);
    }
    begin_ok();
    td_vko_enc_attn(o, n, n_head, ld, bq.addr, bk.addr, bv.addr, oaddr(&oo));
    submit_ok();
    float *got_half = NULL;
    td_vk_buf hq = {0}, hk = {0}, hv = {0};
    if (coop && ld % 4 == 0) { /* sz is even where the kernel takes halves */
        hq = dbuf(NULL, sz * 2);
        hk = dbuf(NULL, sz * 2);
        hv = dbuf(NULL, sz * 2);
    }
    if (coop && hq.buf && td_vko_enc_attn_half_ok(o, ld, hq.addr, hk.addr, hv.addr)) {
        outbuf oh = obuf(sz, NULL);
        begin_ok();
        td_vko_to_half(o, sz, bq.addr, hq.addr);
        td_vko_to_half(o, sz, bk.addr, hk.addr);
        td_vko_to_half(o, sz, bv.addr, hv.addr);
        td_vko_enc_attn_half(o, n, n_head, ld, hq.addr, hk.addr, hv.addr, oaddr(&oh));
        submit_ok();
        got_half = oread(&oh, n, ld, ld);
    }
    td_vk_buf_destroy(vk, &hq);
    td_vk_buf_destroy(vk, &hk);
    td_vk_buf_destroy(vk, &hv);
    if (coop) {
        td_error err = {0};
        if (td_vko_set_path(o, TD_VKO_TILED, &err))
            fail_msg("%s", err.msg);
    }
    td_vko_free(o64);
    float *got = oread(&oo, n, ld, ld);
    char what[64];
    snprintf(what, sizeof what, "enc_attn n %d heads %d d %d%s%s", n, n_head, d,
             coop ? " coopmat" : "", ramp ? " ramp" : "");
    /* halves for q, k, v: scores off by about 2^-11 of |q||k|, up to 8
     * here (40 with the ramp; a model of the kernel's roundings put the
     * ramp cases at 8e-4 and 2.8e-3, inside the same bounds) */
    if (coop && (d == 32 || d == 64))
        compare(what, got, ref, n, ld, ld, 5e-3, 2e-2);
    else
        compare(what, got, ref, n, ld, ld, 2e-6, 1e-5);
    if (got_half) {
        snprintf(what, sizeof what, "enc_attn n %d heads %d d %d coopmat, halves in%s", n,
                 n_head, d, ramp ? " ramp" : "");
        compare(what, got_half, ref, n, ld, ld, 5e-3, 2e-2);
    }
    free(got);
    free(got_half);
    td_vk_buf_destroy(vk, &bq);
    td_vk_buf_destroy(vk, &bk);
    td_vk_buf_destroy(vk, &bv);
    free(q);
    free(k);
    free(v);
    free(ref);
}

static void enc_attn_case(int n, int n_head, int d, int coop)
{
    enc_attn_case_r(n, n_head, d, coop, 0);
}

static void test_enc_attn(void **state)
{
    (void)state;
    NEED_DEVICE();
    enc_attn_case(1, 1, 16, 0);
    enc_attn_case(37, 3, 16, 0);
    enc_attn_case(130, 2, 64, 0);
    enc_attn_case(300, 4, 32, 0);
    enc_attn_case(70, 1, 128, 0);
    /* Whisper's 1500 frames: past lavapipe's loop limit (enc_attn.comp).
     * Not under the sanitizer (make check's second run of the unit
     * tests): the host's side (td_vko_enc_attn's grid and constants, a
     * head width of 64 as for 130 frames above) is the same as for the
     * smaller cases, and test_vulkan_backend's encoders run it at 1500
     * frames under the sanitizer too; what this case adds, the shader past
     * the loop limit, is the plain build's to check (under the sanitizer
     * it took 13 of the test's 17 s, a third of them its reference). */
#if !TEST_UNDER_ASAN
    enc_attn_case(1500, 6, 64, 0);
#else
    printf("# enc_attn 1500 x 6 heads of 64: the plain build's (the shader past lavapipe's loop "
           "limit; the host's side is that of 130 x 2 above)\n");
#endif
}

/* Environment variables a test changes, as the process had them before:
 * env_keep(name) before the change, and the test's teardown env_restore
 * puts them back (a teardown runs even where an assertion ended the test,
 * so the tests after it see the variables as they would alone). */
static struct {
    const char *name;
    char *value; /* NULL: unset */
} env_kept[4];
static int n_env_kept;

static void env_keep(const char *name)
{
    assert_true(n_env_kept < (int)(sizeof env_kept / sizeof env_kept[0]));
    const char *v = getenv(name);
    char *copy = v ? strdup(v) : NULL;
    assert_true(!v || copy);
    env_kept[n_env_kept].name = name;
    env_kept[n_env_kept++].value = copy;
}

static int env_restore(void **state)
{
    (void)state;
    int rc = 0;
    while (n_env_kept > 0) { /* the latest first: a name kept twice ends as it began */
        n_env_kept--;
        const char *name = env_kept[n_env_kept].name;
        char *v = env_kept[n_env_kept].value;
        if ((v ? setenv(name, v, 1) : unsetenv(name)) != 0)
            rc = -1;
        free(v);
    }
    return rc;
}

/* The encoder attention on the matrix engines, where the device has them:
 * with the scores in registers (enc_attn_cmr.comp, where it passed its
 * check at open: each case prints which ran), then in shared memory
 * (enc_attn_cm.comp, TD_VULKAN_ATTN_REG=0; the switch is read when each
 * case's td_vko is made). */
static void test_enc_attn_coopmat(void **state)
{
    (void)state;
    NEED_DEVICE();
    if (!td_vko_has_coopmat(ops)) {
        printf("# skipped: no cooperative-matrix path\n");
        skip();
    }
    env_keep("TD_VULKAN_ATTN_REG");
    for (int reg = 1; reg >= 0; reg--) {
        assert_int_equal(setenv("TD_VULKAN_ATTN_REG", reg ? "1" : "0", 1), 0);
        enc_attn_case(1, 1, 64, 1);
        enc_attn_case(37, 3, 64, 1);   /* one block of keys, a query tail */
        enc_attn_case(130, 2, 32, 1);  /* a key block of 2 */
        enc_attn_case(300, 4, 64, 1);
        enc_attn_case(70, 1, 128, 1);  /* no such width: enc_attn.comp */
        enc_attn_case(1500, 6, 64, 1); /* Whisper's */
        enc_attn_case_r(1500, 2, 64, 1, 1);
        enc_attn_case_r(300, 3, 32, 1, 1);
    }
}

/* Decoder attention: rows with their own key offsets and counts, keys
 * from one pool (a KV cache or cross K/V); with max_keys at most one
 * split, the output comes from dec_attn alone (no merge). */
static int dec_ld_pad; /* rows of q, k and v this many floats wider: 1 takes the scalar loads */
static int dec_kv16;   /* keys and values as halves (the cross K/V), made by td_vko_to_half */
static int dec_d = 64; /* the head width: 64 runs dec_attn.comp compiled for it, others the
                        * specialized build (dec_ops, made for that width) */
static td_vko *dec_ops;
static int dec_cm;     /* dec_group_case: td_vko_dec_xattn_cm's groups, not dec_attn_group's */

/* Random keys and values (psz floats each) and queries (qsz), the
 * decoder-attention tests' inputs. */
static void dec_fill(float *k, float *v, size_t psz, float *q, size_t qsz)
{
    for (size_t i = 0; i < psz; i++) {
        k[i] = frand() * 2;
        v[i] = frand();
    }
    for (size_t i = 0; i < qsz; i++)
        q[i] = frand() * 2;
}

/* The keys and values k and v (psz floats each) on the device: as floats,
 * or (dec_kv16) as halves made there by td_vko_to_half, with guards after
 * them, k and v then rounded on the host as they were on the device (the
 * references' inputs). */
static void dec_pool(float *k, float *v, size_t psz, td_vk_buf *bk, td_vk_buf *bv)
{
    if (dec_kv16) {
        /* the floats to halves on the device (td_vko_to_half), guards
         * after them; the reference with the same halves */
        const uint16_t gh = 0xabcd;
        uint16_t *h = malloc((psz + 8) * 2);
        assert_non_null(h);
        for (size_t i = 0; i < psz + 8; i++)
            h[i] = gh;
        *bk = dbuf(h, (psz + 8) * 2);
        *bv = dbuf(h, (psz + 8) * 2);
        td_vk_buf fk = dbuf(k, psz * 4), fv = dbuf(v, psz * 4);
        begin_ok();
        td_vko_to_half(ops, psz, fk.addr, bk->addr);
        td_vko_to_half(ops, psz, fv.addr, bv->addr);
        submit_ok();
        td_vk_buf_destroy(vk, &fk);
        td_vk_buf_destroy(vk, &fv);
        for (int which = 0; which < 2; which++) {
            float *src = which ? v : k;
            td_error e2 = {0};
            if (td_vk_download(vk, which ? bv : bk, 0, h, (psz + 8) * 2, &e2))
                fail_msg("%s", e2.msg);
            size_t off = 0;
            for (size_t i = 0; i < psz; i++) {
                uint16_t want = td_wk_f32_to_f16(src[i]);
                int du = (int)h[i] - (int)want;
                if (du != 0)
                    off++;
                if (du < -1 || du > 1) /* the rounding may differ by one unit in the last place */
                    fail_msg("to_half: element %zu: 0x%04x, want 0x%04x", i, h[i], want);
                src[i] = td_wk_f16_to_f32(h[i]);
            }
            for (size_t i = psz; i < psz + 8; i++)
                if (h[i] != gh)
                    fail_msg("to_half: guard %zu overwritten", i - psz);
            printf("# to_half: %zu elements, %zu a unit off the host's rounding\n", psz, off);
        }
        free(h);
    } else {
        *bk = dbuf(k, psz * 4);
        *bv = dbuf(v, psz * 4);
    }
}

/* The decoder-attention rows' key table (info: row r's keys start at
 * rows_info[r][0] rows of ld floats, rows_info[r][1] of them) and their
 * reference outputs (head h of row r at out + r out_ld + h d). */
static void dec_rows_ref(const int (*rows_info)[2], int rows, int n_head, int d, int ld,
                         const float *q, const float *k, const float *v, int *info, double *out,
                         int out_ld)
{
    for (int r = 0; r < rows; r++) {
        info[2 * r] = rows_info[r][0] * ld;
        info[2 * r + 1] = rows_info[r][1];
        for (int h = 0; h < n_head; h++)
            attn_ref(d, rows_info[r][1], q + (size_t)r * ld + h * d,
                     k + (size_t)rows_info[r][0] * ld + h * d,
                     v + (size_t)rows_info[r][0] * ld + h * d, ld,
                     out + (size_t)r * out_ld + h * d);
    }
}

static void dec_attn_case(const int (*rows_info)[2], int rows, int max_keys, const char *what)
{
    const int n_head = 3, d = dec_d, ld = n_head * d + dec_ld_pad, pool_rows = 1500 + 40;
    td_vko *dops = dec_ops ? dec_ops : ops;
    size_t psz = (size_t)pool_rows * ld, qsz = (size_t)rows * ld;
    float *k = malloc(psz * 4), *v = malloc(psz * 4), *q = malloc(qsz * 4);
    double *ref = malloc(qsz * sizeof *ref);
    int *info = malloc((size_t)rows * 2 * sizeof *info);
    assert_true(k && v && q && ref && info);
    dec_fill(k, v, psz, q, qsz);
    td_vk_buf bk, bv;
    dec_pool(k, v, psz, &bk, &bv);
    dec_rows_ref(rows_info, rows, n_head, d, ld, q, k, v, info, ref,
                 n_head * d); /* dense, as compare reads it */
    td_vk_buf bq = dbuf(q, qsz * 4), bi = dbuf(info, (size_t)rows * 2 * sizeof *info),
              bp = dbuf(NULL, td_vko_dec_part_floats(rows, n_head, d, max_keys) * 4),
              bc = dbuf(NULL, (size_t)rows * n_head * 4);
    td_error err = {0};
    if (td_vk_fill0(vk, &bc, 0, bc.size / 4 * 4, &err))
        fail_msg("%s", err.msg);
    /* twice, into two outputs: the merge counters must be back at 0 after
     * the first (else the second merges nothing and leaves its guards) */
    outbuf oo = obuf(qsz, NULL), oo2 = obuf(qsz, NULL);
    begin_ok();
    td_vko_dec_attn_x(dops, rows, n_head, ld, bq.addr, oaddr(&oo), bk.addr, bv.addr, bi.addr,
                      max_keys, bp.addr, bc.addr, dec_kv16);
    submit_ok();
    begin_ok();
    td_vko_dec_attn_x(dops, rows, n_head, ld, bq.addr, oaddr(&oo2), bk.addr, bv.addr, bi.addr,
                      max_keys, bp.addr, bc.addr, dec_kv16);
    submit_ok();
    float *got = oread(&oo, rows, n_head * d, ld);
    compare(what, got, ref, rows, n_head * d, ld, 2e-6, 1e-5);
    free(got);
    got = oread(&oo2, rows, n_head * d, ld);
    compare(what, got, ref, rows, n_head * d, ld, 2e-6, 1e-5);
    free(got);
    td_vk_buf_destroy(vk, &bc);
    td_vk_buf_destroy(vk, &bq);
    td_vk_buf_destroy(vk, &bk);
    td_vk_buf_destroy(vk, &bv);
    td_vk_buf_destroy(vk, &bi);
    td_vk_buf_destroy(vk, &bp);
    free(q);
    free(k);
    free(v);
    free(ref);
    free(info);
}

static void test_dec_attn(void **state)
{
    (void)state;
    NEED_DEVICE();
    static const int many[][2] = {{0, 1}, {5, 4}, {40, 1500}, {7, 37}, {100, 448}, {3, 129}};
    dec_attn_case(many, 6, 1500, "dec_attn ragged rows, 1..1500 keys");
    static const int cross[][2] = {{40, 1500}};
    dec_attn_case(cross, 1, 1500, "dec_attn one row, 1500 keys (cross)");
    static const int one[][2] = {{0, 1}, {5, 4}, {7, 37}, {3, TD_VKO_ATT_SPLIT}};
    dec_attn_case(one, 4, TD_VKO_ATT_SPLIT, "dec_attn one split, no merge");
    dec_ld_pad = 1;
    dec_attn_case(one, 4, TD_VKO_ATT_SPLIT, "dec_attn rows of 193, one split");
    dec_attn_case(many, 6, 1500, "dec_attn rows of 193 floats (scalar)");
    dec_ld_pad = 0;
    /* keys and values as halves: the same within float rounding of the
     * halves' products */
    dec_kv16 = 1;
    dec_attn_case(many, 6, 1500, "dec_attn halves, ragged rows");
    dec_attn_case(cross, 1, 1500, "dec_attn halves, one row (cross)");
    dec_attn_case(one, 4, TD_VKO_ATT_SPLIT, "dec_attn halves, one split");
    dec_ld_pad = 2; /* rows of 194 halves: 4-byte but not 8-byte aligned: the scalar loads */
    dec_attn_case(many, 6, 1500, "dec_attn halves, rows of 194");
    dec_ld_pad = 0;
    dec_kv16 = 0;
    /* heads of 32 and 48: the build specialized at pipeline creation (64
     * has its own, compiled for it) */
    for (int d = 32; d <= 48; d += 16) {
        td_error err = {0};
        if (td_vko_create(vk, 16, d, &dec_ops, &err))
            fail_msg("%s", err.msg);
        dec_d = d;
        dec_attn_case(many, 6, 1500, d == 32 ? "dec_attn heads of 32, ragged rows"
                                             : "dec_attn heads of 48, ragged rows");
        dec_kv16 = 1;
        dec_attn_case(cross, 1, 1500, d == 32 ? "dec_attn heads of 32, halves (cross)"
                                              : "dec_attn heads of 48, halves (cross)");
        dec_kv16 = 0;
        td_vko_free(dec_ops);
        dec_ops = NULL;
        dec_d = 64;
    }
}

/* Grouped decoder attention (td_vko_dec_attn_groups) against the per-row
 * one (td_vko_dec_attn_x) on the same inputs: each grouped row's output
 * must be the per-row one's bit for bit. Rows take one of five key sets
 * ({first key row, count}, in ks): 1, 2, TD_VKO_ATT_GROUP, one more than
 * that, and 5 rows of them, shuffled so that a set's rows are not
 * contiguous, plus two rows in no group, whose outputs the grouped call
 * must leave as guard values. A set's rows go into groups in descending
 * row order, TD_VKO_ATT_GROUP at a time (9 rows: groups of 8 and 1), the
 * sets in reverse order: groups of 1, 2, 5, 8 and 8 + 1 in one table.
 * The grouped call runs twice (its merge counters must be back at zero
 * after each: checked, and the second would merge nothing otherwise). */
static void dec_group_case(const int (*ks)[2], int max_keys, const char *what)
{
    enum { NSET = 5, SKIP = 2 };
    const int G = dec_cm ? TD_VKO_XCM_GROUP : TD_VKO_ATT_GROUP;
    const int set_rows[NSET] = {1, 2, G, G + 1, 5};
    int rows = SKIP;
    for (int i = 0; i < NSET; i++)
        rows += set_rows[i];
    const int n_head = 3, d = dec_d, ld = n_head * d + dec_ld_pad, pool_rows = 1500 + 40;
    td_vko *dops = dec_ops ? dec_ops : ops;
    if (!dec_cm && !td_vko_has_dec_groups(dops)) {
        printf("# %s: no grouped pipeline (%u bytes of shared memory a workgroup)\n", what,
               td_vk_device_info(vk)->max_shared);
        return;
    }
    size_t psz = (size_t)pool_rows * ld, qsz = (size_t)rows * ld;
    float *k = malloc(psz * 4), *v = malloc(psz * 4), *q = malloc(qsz * 4);
    int *info = malloc((size_t)rows * 2 * sizeof *info), *set = malloc((size_t)rows * sizeof *set);
    assert_true(k && v && q && info && set);
    dec_fill(k, v, psz, q, qsz);
    /* each row's set (-1: none, keys of set 0), shuffled */
    int r = 0;
    for (int i = 0; i < NSET; i++)
        for (int j = 0; j < set_rows[i]; j++)
            set[r++] = i;
    while (r < rows)
        set[r++] = -1;
    uint32_t lcg = 12345;
    for (int i = rows - 1; i > 0; i--) {
        lcg = lcg * 1664525u + 1013904223u;
        int j = (int)((lcg >> 8) % (uint32_t)(i + 1)), tmp = set[i];
        set[i] = set[j];
        set[j] = tmp;
    }
    for (r = 0; r < rows; r++) {
        int si = set[r] < 0 ? 0 : set[r];
        info[2 * r] = ks[si][0] * ld;
        info[2 * r + 1] = ks[si][1];
    }
    td_vk_buf bk, bv;
    dec_pool(k, v, psz, &bk, &bv);
    /* the table, in host-visible memory as the backend's io (which takes
     * indirect dispatches) */
    td_vk_buf tab;
    td_error err = {0};
    if (td_vk_buf_create(vk, td_vko_dec_group_ints(rows, G) * 4 + 256, TD_VK_MEM_INPUT, &tab, &err))
        fail_msg("%s", err.msg);
    const uint64_t toff = 256; /* not at the buffer's start, as the io region */
    int32_t *t = (int32_t *)((char *)tab.map + toff);
    int32_t *e = t + TD_VKO_GROUP_HEAD;
    int n_groups = 0;
    char sizes[128] = "";
    for (int si = NSET - 1; si >= 0; si--) {
        int in = 0;
        for (r = rows - 1; r >= 0; r--) {
            if (set[r] != si)
                continue;
            if (in == 0) {
                n_groups++;
                e[0] = 0;
            }
            e[1 + e[0]++] = r;
            if (++in == G) {
                in = 0;
                snprintf(sizes + strlen(sizes), sizeof sizes - strlen(sizes), " %d", e[0]);
                e += G + 1;
            }
        }
        if (in) {
            snprintf(sizes + strlen(sizes), sizeof sizes - strlen(sizes), " %d", e[0]);
            e += G + 1;
        }
    }
    if (dec_cm)
        td_vko_dec_xcm_head(t, n_groups, n_head);
    else
        td_vko_dec_group_head(t, n_groups, n_head, max_keys);
    td_vk_buf bq = dbuf(q, qsz * 4), bi = dbuf(info, (size_t)rows * 2 * sizeof *info);
    size_t pf = td_vko_dec_part_floats(rows, n_head, d, max_keys);
    td_vk_buf bp = dbuf(NULL, pf * 4), bp2 = dbuf(NULL, pf * 4),
              bc = dbuf(NULL, (size_t)rows * n_head * 4), bc2 = dbuf(NULL, (size_t)rows * n_head * 4);
    if (td_vk_fill0(vk, &bc, 0, bc.size / 4 * 4, &err) ||
        td_vk_fill0(vk, &bc2, 0, bc2.size / 4 * 4, &err))
        fail_msg("%s", err.msg);
    outbuf oref = obuf(qsz, NULL), og[2] = {obuf(qsz, NULL), obuf(qsz, NULL)};
    begin_ok();
    td_vko_dec_attn_x(dops, rows, n_head, ld, bq.addr, oaddr(&oref), bk.addr, bv.addr, bi.addr,
                      max_keys, bp.addr, bc.addr, dec_kv16);
    submit_ok();
    for (int run = 0; run < 2; run++) {
        begin_ok();
        if (dec_cm)
            td_vko_dec_xattn_cm(dops, ld, bq.addr, oaddr(&og[run]), bk.addr, bv.addr, bi.addr,
                                &tab, toff, dec_kv16);
        else
            td_vko_dec_attn_groups(dops, ld, bq.addr, oaddr(&og[run]), bk.addr, bv.addr,
                                   bi.addr, &tab, toff, max_keys, bp2.addr, bc2.addr, dec_kv16);
        submit_ok();
        if (dec_cm)
            continue; /* no parts, no counters */
        int32_t *c = malloc(bc2.size);
        assert_non_null(c);
        if (td_vk_download(vk, &bc2, 0, c, bc2.size, &err))
            fail_msg("%s", err.msg);
        for (int i = 0; i < rows * n_head; i++)
            if (c[i] != 0)
                fail_msg("%s: merge counter %d is %d after run %d", what, i, c[i], run + 1);
        free(c);
    }
    const int cols = n_head * d;
    float *want = oread(&oref, rows, cols, ld);
    for (int run = 0; run < 2; run++) {
        float *got = oread(&og[run], rows, cols, ld);
        int same = 0;
        double num = 0, den = 0, worst = 0; /* dec_cm: the error, all rows and the worst */
        for (r = 0; r < rows; r++) {
            const float *gr = got + (size_t)r * ld, *wr = want + (size_t)r * ld;
            if (set[r] < 0) { /* in no group: untouched */
                for (int c = 0; c < cols; c++)
                    if (gr[c] != GUARD_VAL)
                        fail_msg("%s: row %d (in no group) column %d written", what, r, c);
                continue;
            }
            if (dec_cm) {
                /* halves on the matrix engines: near the per-row floats */
                double rn = 0, rd = 0;
                for (int c = 0; c < cols; c++) {
                    double dv = (double)gr[c] - wr[c];
                    rn += dv * dv;
                    rd += (double)wr[c] * wr[c];
                }
                double rel = rd > 0 ? sqrt(rn / rd) : sqrt(rn);
                if (!(rel <= 2e-3)) { /* NaN too: say which side, and where */
                    int c = 0;
                    while (c < cols - 1 && isfinite(gr[c]) && isfinite(wr[c]))
                        c++;
                    fail_msg("%s: run %d, row %d (set %d): relative L2 %.3g against per row "
                             "(bound 2e-3); column %d: %.9g, per row %.9g",
                             what, run + 1, r, set[r], rel, c, (double)gr[c], (double)wr[c]);
                }
                worst = rel > worst ? rel : worst;
                num += rn;
                den += rd;
                same++;
                continue;
            }
            if (memcmp(gr, wr, (size_t)cols * sizeof *gr) != 0) {
                int c = 0;
                while (memcmp(&gr[c], &wr[c], sizeof *gr) == 0)
                    c++;
                fail_msg("%s: run %d, row %d (set %d) column %d: %.9g, per row %.9g", what,
                         run + 1, r, set[r], c, (double)gr[c], (double)wr[c]);
            }
            same++;
        }
        if (dec_cm) {
            double rel = den > 0 ? sqrt(num / den) : 1;
            if (!(rel <= 1e-3))
                fail_msg("%s: run %d: relative L2 %.3g against per row (bound 1e-3)", what,
                         run + 1, rel);
            if (run == 1)
                printf("# %-40s %d rows in %d groups (sizes%s), 2 runs: relative L2 %.2e, "
                       "worst row %.2e against dec_attn\n",
                       what, same, n_groups, sizes, rel, worst);
        } else if (run == 1)
            printf("# %-40s %d rows in %d groups (sizes%s), 2 runs: bitwise equal to "
                   "dec_attn\n",
                   what, same, n_groups, sizes);
        free(got);
    }
    free(want);
    td_vk_buf *all[] = {&bk, &bv, &tab, &bq, &bi, &bp, &bp2, &bc, &bc2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        td_vk_buf_destroy(vk, all[i]);
    free(k);
    free(v);
    free(q);
    free(info);
    free(set);
}

static void test_dec_attn_group(void **state)
{
    (void)state;
    NEED_DEVICE();
    printf("# device: %u bytes of shared memory a workgroup, subgroups of %d\n",
           td_vk_device_info(vk)->max_shared, td_vk_device_info(vk)->subgroup_size);
    /* key sets: many blocks of keys (the cross-attention's 1500 and
     * others), and one block only (no merge) */
    static const int many[5][2] = {{5, 1}, {7, 37}, {40, 1500}, {100, 1440}, {3, 129}};
    static const int one[5][2] = {{5, 1}, {7, 37}, {40, 128}, {100, 100}, {3, 127}};
    dec_group_case(many, 1500, "dec_attn_group floats, 1500 keys");
    dec_group_case(one, TD_VKO_ATT_SPLIT, "dec_attn_group floats, one block");
    dec_kv16 = 1;
    dec_group_case(many, 1500, "dec_attn_group halves, 1500 keys");
    dec_group_case(one, TD_VKO_ATT_SPLIT, "dec_attn_group halves, one block");
    dec_ld_pad = 2; /* rows of 194 halves: the scalar loads */
    dec_group_case(many, 1500, "dec_attn_group halves, rows of 194");
    dec_kv16 = 0;
    dec_ld_pad = 1; /* rows of 193 floats: the scalar loads */
    dec_group_case(many, 1500, "dec_attn_group floats, rows of 193");
    dec_ld_pad = 0;
    /* heads of 32 and 48: the specialized build */
    for (int d = 32; d <= 48; d += 16) {
        td_error err = {0};
        if (td_vko_create(vk, 16, d, &dec_ops, &err))
            fail_msg("%s", err.msg);
        dec_d = d;
        dec_group_case(many, 1500, d == 32 ? "dec_attn_group heads of 32, floats"
                                           : "dec_attn_group heads of 48, floats");
        dec_kv16 = 1;
        dec_group_case(many, 1500, d == 32 ? "dec_attn_group heads of 32, halves"
                                           : "dec_attn_group heads of 48, halves");
        dec_group_case(one, TD_VKO_ATT_SPLIT, d == 32 ? "dec_attn_group heads of 32, one block"
                                                      : "dec_attn_group heads of 48, one block");
        dec_kv16 = 0;
        td_vko_free(dec_ops);
        dec_ops = NULL;
        dec_d = 64;
    }
}

/* The cross-attention on the matrix engines (td_vko_dec_xattn_cm) against
 * the per-row one, dec_group_case's sets with groups of TD_VKO_XCM_GROUP:
 * groups of 1, 2, 5, 64 and 64 + 1 rows, keys and values as floats and as
 * halves, many blocks of keys and a partial one. Only on a device with the
 * shader (NVIDIA's cooperative matrices): lavapipe has none. */
static void test_dec_xattn_cm(void **state)
{
    (void)state;
    NEED_DEVICE();
    /* heads of 64 in the encoder and the decoder: Whisper's (the shader
     * is built only where the encoder's register attention passed) */
    td_error err = {0};
    if (td_vko_create(vk, 64, 64, &dec_ops, &err))
        fail_msg("%s", err.msg);
    if (!td_vko_has_dec_xcm(dec_ops)) {
        printf("# no matrix-engine cross-attention on this device (%s)\n",
               td_vko_attn_note(dec_ops));
        td_vko_free(dec_ops);
        dec_ops = NULL;
        skip();
    }
    static const int many[5][2] = {{5, 1}, {7, 37}, {40, 1500}, {100, 1440}, {3, 129}};
    static const int one[5][2] = {{5, 1}, {7, 37}, {40, 64}, {100, 63}, {3, 17}};
    dec_cm = 1;
    dec_group_case(many, 1500, "xattn_cm floats, 1500 keys");
    dec_group_case(one, 64, "xattn_cm floats, one block");
    dec_kv16 = 1;
    dec_group_case(many, 1500, "xattn_cm halves, 1500 keys");
    dec_group_case(one, 64, "xattn_cm halves, one block");
    dec_kv16 = 0;
    dec_cm = 0;
    td_vko_free(dec_ops);
    dec_ops = NULL;
}

/* ---------------------------------------------------------- embed, kv */

static void test_embed_kv(void **state)
{
    (void)state;
    NEED_DEVICE();
    const int n = 66, vocab = 1000, ctx = 20, rows = 5;
    uint16_t *tokh = malloc((size_t)vocab * n * 2);
    float *tokf = malloc((size_t)vocab * n * 4), *pos = malloc((size_t)ctx * n * 4);
    assert_true(tokh && tokf && pos);
    for (size_t i = 0; i < (size_t)vocab * n; i++) {
        tokh[i] = td_wk_f32_to_f16(frand());
        tokf[i] = td_wk_f16_to_f32(tokh[i]);
    }
    for (size_t i = 0; i < (size_t)ctx * n; i++)
        pos[i] = frand();
    int tp[2 * 5] = {999, 0, 0, 19, 517, 3, 1, 1, 998, 7};
    double ref[5 * 66];
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < n; i++)
            ref[r * n + i] = (double)(tokf[(size_t)tp[2 * r] * n + i] + pos[(size_t)tp[2 * r + 1] * n + i]);
    td_vk_buf bh = dbuf(tokh, (size_t)vocab * n * 2), bf = dbuf(tokf, (size_t)vocab * n * 4),
              bp = dbuf(pos, (size_t)ctx * n * 4), bt = dbuf(tp, sizeof tp);
    for (int f16 = 0; f16 <= 1; f16++) {
        outbuf ox = obuf((size_t)rows * n, NULL);
        begin_ok();
        td_vko_embed(ops, rows, n, f16 ? bh.addr : bf.addr, f16, bp.addr, bt.addr, oaddr(&ox));
        submit_ok();
        float *got = oread(&ox, rows, n, n);
        compare(f16 ? "embed f16" : "embed f32", got, ref, rows, n, n, 0, 0);
        free(got);
    }
    /* kv_put: rows to scattered positions of a cache of 12 rows */
    float src_k[5 * 66], src_v[5 * 66];
    for (int i = 0; i < rows * n; i++) {
        src_k[i] = frand();
        src_v[i] = frand();
    }
    int dst[5] = {11 * n, 0, 4 * n, 5 * n, 9 * n};
    td_vk_buf bk = dbuf(src_k, sizeof src_k), bv = dbuf(src_v, sizeof src_v),
              bd = dbuf(dst, sizeof dst);
    outbuf kc = obuf((size_t)12 * n, NULL), vc = obuf((size_t)12 * n, NULL);
    begin_ok();
    td_vko_kv_put(ops, rows, n, bk.addr, bv.addr, oaddr(&kc), oaddr(&vc), bd.addr);
    submit_ok();
    float *gk = oread(&kc, 0, 0, 0), *gv = oread(&vc, 0, 0, 0);
    for (int r = 0; r < 12; r++) {
        int from = -1;
        for (int s = 0; s < rows; s++)
            if (dst[s] == r * n)
                from = s;
        for (int i = 0; i < n; i++) {
            float ek = from < 0 ? GUARD_VAL : src_k[from * n + i];
            float ev = from < 0 ? GUARD_VAL : src_v[from * n + i];
            if (gk[r * n + i] != ek || gv[r * n + i] != ev)
                fail_msg("kv_put: cache row %d element %d", r, i);
        }
    }
    free(gk);
    free(gv);
    td_vk_buf_destroy(vk, &bh);
    td_vk_buf_destroy(vk, &bf);
    td_vk_buf_destroy(vk, &bp);
    td_vk_buf_destroy(vk, &bt);
    td_vk_buf_destroy(vk, &bk);
    td_vk_buf_destroy(vk, &bv);
    td_vk_buf_destroy(vk, &bd);
    free(tokh);
    free(tokf);
    free(pos);
}

/* ---------------------------------------------------------- timing */

static void test_profile(void **state)
{
    (void)state;
    NEED_DEVICE();
    uint64_t before = td_vk_profile_count(vk);
    td_vk_profile(vk, 1);
    float x[64 * 64];
    for (int i = 0; i < 64 * 64; i++)
        x[i] = frand();
    td_vk_buf b = dbuf(x, sizeof x), w = dbuf(x, sizeof x);
    outbuf y = obuf(64 * 64, NULL);
    begin_ok();
    for (int i = 0; i < 3; i++)
        td_vko_linear(ops, 64, 64, 64, b.addr, 64, w.addr, 0, 64, 0, 0, 0, oaddr(&y), 64, 0);
    submit_ok();
    td_vk_profile(vk, 0);
    td_vk_prof pr[8];
    int n = td_vk_profile_read(vk, pr, 8, 1);
    if (!td_vk_device_info(vk)->name[0] || n == 0) {
        printf("# no timestamps on this queue\n");
    } else {
        assert_string_equal(pr[0].name, "matmul_f32");
        assert_int_equal(pr[0].count, 3);
        assert_true(pr[0].ms > 0);
        printf("# 3 matmuls 64^3: %.3f ms by timestamps\n", pr[0].ms);
        /* the same three in order: the latest first asked for two */
        assert_true(td_vk_profile_count(vk) - before == 3);
        td_vk_disp d[8];
        assert_int_equal(td_vk_profile_last(vk, d, 8) >= 3, 1);
        assert_int_equal(td_vk_profile_last(vk, d, -1), 0);
        assert_int_equal(td_vk_profile_last(vk, d, 2), 2);
        for (int i = 0; i < 2; i++) {
            assert_string_equal(d[i].name, "matmul_f32");
            assert_true(d[i].us > 0 && d[i].groups > 0);
        }
    }
    free(oread(&y, 0, 0, 0));
    td_vk_buf_destroy(vk, &b);
    td_vk_buf_destroy(vk, &w);
}

/* The batched step's trial (td_vko_trial_rows) on this device, with its
 * cache in a directory of its own: every row class picks a kernel that
 * was timed and checked (path, matvec, matvec4, matrows or matrows2), the
 * answer is written,
 * and a second call reads it back instead of timing again; widths the
 * matrix-vector kernels do not take keep the path untimed. Small widths:
 * lavapipe times matvec's 256 rows of 64 x 64 at half a second a product. */
static void test_rows_trial(void **state)
{
    (void)state;
    NEED_DEVICE();
    char dir[] = "/tmp/td-rows-trial-XXXXXX";
    assert_non_null(mkdtemp(dir));
    env_keep("XDG_CACHE_HOME");
    assert_int_equal(setenv("XDG_CACHE_HOME", dir, 1), 0);
    char why[1024];
    td_error err = {0};
    assert_int_equal(td_vko_trial_rows(ops, 8, 16, why, sizeof why, &err), TD_OK);
    print_message("  %s\n", why);
    assert_non_null(strstr(why, "batched steps (trial 8x16"));
    for (int c = 0; c < TD_VKO_ROWS_CLASSES; c++) {
        char cls[16];
        snprintf(cls, sizeof cls, " %d ", 16 << c);
        const char *at = strstr(why, cls);
        assert_non_null(at);
        at += strlen(cls);
        assert_true(strncmp(at, "path ", 5) == 0 || strncmp(at, "matvec ", 7) == 0 ||
                    strncmp(at, "matvec4 ", 8) == 0 || strncmp(at, "matrows ", 8) == 0 ||
                    strncmp(at, "matrows2 ", 9) == 0);
        /* every kernel timed, and checked right (a wrong one shows 0) */
        double t[TD_VKO_ROWS_N];
        at = strchr(at, '(');
        assert_non_null(at);
        assert_int_equal(sscanf(at, "(%lf %lf %lf %lf %lf)", &t[0], &t[1], &t[2], &t[3], &t[4]),
                         TD_VKO_ROWS_N);
        for (int kn = 0; kn < TD_VKO_ROWS_N; kn++)
            assert_true(t[kn] > 0);
    }
    char path[1200];
    snprintf(path, sizeof path, "%s/tapedeck/vulkan-paths", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024];
    int rows_lines = 0;
    while (fgets(line, sizeof line, f))
        rows_lines += strncmp(line, "rows", 4) == 0;
    fclose(f);
    assert_int_equal(rows_lines, 1);
    assert_int_equal(td_vko_trial_rows(ops, 8, 16, why, sizeof why, &err), TD_OK);
    assert_non_null(strstr(why, "(cached trial)"));
    assert_int_equal(td_vko_trial_rows(ops, 12, 12, why, sizeof why, &err), TD_OK);
    assert_non_null(strstr(why, "no trial"));
    td_vko_set_rows(ops, TD_VKO_ROWS_PATH);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof path, "%s/tapedeck", dir);
    assert_int_equal(rmdir(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* The products' trial (td_vko_choose_path) with its cache in a directory
 * of its own: the answer is written and read back; a cached path this
 * open did not build (a line written by another build, or by NVIDIA
 * under the other extension: cmdirect is NV's alone) is timed again
 * instead of failing the open, and the new answer replaces it. */
static void test_path_cache_stale(void **state)
{
    (void)state;
    NEED_DEVICE();
    char dir[] = "/tmp/td-path-cache-XXXXXX";
    assert_non_null(mkdtemp(dir));
    env_keep("XDG_CACHE_HOME");
    env_keep("TD_VULKAN_MATMUL");
    assert_int_equal(setenv("XDG_CACHE_HOME", dir, 1), 0);
    assert_int_equal(unsetenv("TD_VULKAN_MATMUL"), 0);
    char why[1024];
    td_error err = {0};
    enum td_vko_path was = td_vko_path_get(ops);
    if (td_vko_choose_path(ops, 64, 64, 64, why, sizeof why, &err))
        fail_msg("%s", err.msg);
    print_message("  %s\n", why);
    if (!td_vko_has_coopmat(ops)) { /* nothing to time: nothing written */
        assert_non_null(strstr(why, "no cooperative-matrix path"));
        assert_int_equal(td_vko_set_path(ops, was, &err), TD_OK);
        assert_int_equal(rmdir(dir), 0);
        printf("# skipped: no cooperative-matrix path\n");
        skip();
    }
    assert_null(strstr(why, "(cached trial)"));
    if (td_vko_choose_path(ops, 64, 64, 64, why, sizeof why, &err))
        fail_msg("%s", err.msg);
    assert_non_null(strstr(why, "(cached trial)"));
    /* the line's path made cmdirect */
    char path[1200], line[1024], text[4096] = "";
    snprintf(path, sizeof path, "%s/tapedeck/vulkan-paths", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int lines = 0;
    while (fgets(line, sizeof line, f)) {
        char *sp = strchr(line, ' ');
        assert_non_null(sp);
        snprintf(sp + 1, sizeof line - (size_t)(sp + 1 - line), "cmdirect\n");
        strncat(text, line, sizeof text - strlen(text) - 1);
        lines++;
    }
    fclose(f);
    assert_int_equal(lines, 1);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    td_error perr = {0};
    int built = td_vko_set_path(ops, TD_VKO_CMDIRECT, &perr) == TD_OK;
    if (td_vko_choose_path(ops, 64, 64, 64, why, sizeof why, &err))
        fail_msg("%s", err.msg);
    print_message("  cmdirect %s: %s\n", built ? "built" : "not built", why);
    if (built) {
        assert_non_null(strstr(why, "cmdirect (cached trial)"));
    } else {
        assert_null(strstr(why, "(cached trial)"));
        if (td_vko_choose_path(ops, 64, 64, 64, why, sizeof why, &err))
            fail_msg("%s", err.msg);
        assert_non_null(strstr(why, "(cached trial)"));
        assert_null(strstr(why, "cmdirect"));
    }
    assert_int_equal(td_vko_set_path(ops, was, &err), TD_OK);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof path, "%s/tapedeck", dir);
    assert_int_equal(rmdir(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* A loader without a driver: "unavailable", with the reason, no crash.
 * (The loader reads its driver list at each vkCreateInstance; the
 * process's instance is made once and shared, vk.h: this file's device
 * is closed and the instance released first, and opened again after.) */
static void test_no_driver(void **state)
{
    (void)state;
    NEED_DEVICE();
    td_vko_free(ops);
    ops = NULL;
    td_vk_close(vk);
    vk = NULL;
    td_vk_release();
    assert_int_equal(td_vk_instance_refs(), -1);
    const char *vars[] = {"VK_DRIVER_FILES", "VK_ICD_FILENAMES"};
    char *saved[2];
    for (int i = 0; i < 2; i++) {
        const char *v = getenv(vars[i]);
        saved[i] = v ? strdup(v) : NULL;
        assert_int_equal(setenv(vars[i], "/nonexistent/tapedeck_icd.json", 1), 0);
    }
    td_error err = {0};
    td_vk *v = NULL;
    long live = td_vk_live();
    int rc = td_vk_open(NULL, &v, &err);
    int rc_probe = td_vk_probe(&err);
    for (int i = 0; i < 2; i++) {
        if (saved[i])
            assert_int_equal(setenv(vars[i], saved[i], 1), 0);
        else
            assert_int_equal(unsetenv(vars[i]), 0);
        free(saved[i]);
    }
    printf("# without a driver: %s\n", err.msg);
    assert_int_equal(rc, TD_EUNAVAILABLE);
    assert_null(v);
    assert_int_equal(rc_probe, TD_EUNAVAILABLE);
    assert_int_equal(td_vk_live(), live);
    assert_int_equal(td_vk_instance_refs(), -1);
    /* with the driver again, for any test after this one */
    assert_int_equal(td_vk_open(NULL, &vk, &err), TD_OK);
    assert_int_equal(td_vko_create(vk, 16, 64, &ops, &err), TD_OK);
}

/* The products' switches (TD_VULKAN_CM_AH, TD_VULKAN_CM_F16) take the
 * values ops.c documents; anything else refuses the open, naming both,
 * with nothing left behind. */
static void test_switch_refusals(void **state)
{
    (void)state;
    NEED_DEVICE();
    static const struct {
        const char *var, *value;
        int rc;
    } cases[] = {
        {"TD_VULKAN_CM_AH", "8", TD_EINVAL},  {"TD_VULKAN_CM_AH", "16x", TD_EINVAL},
        {"TD_VULKAN_CM_F16", "2", TD_EINVAL}, {"TD_VULKAN_CM_AH", "0", TD_OK},
        {"TD_VULKAN_CM_AH", "1", TD_OK},      {"TD_VULKAN_CM_AH", "16", TD_OK},
        {"TD_VULKAN_CM_F16", "1", TD_OK},     {"TD_VULKAN_CM_F16", "", TD_OK},
        {"TD_VULKAN_CM_F16", "0", TD_OK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *old = getenv(cases[i].var);
        char *saved = old ? strdup(old) : NULL;
        assert_int_equal(setenv(cases[i].var, cases[i].value, 1), 0);
        td_error err = {0};
        td_vko *o = NULL;
        long live = td_vk_live();
        int rc = td_vko_create(vk, 16, 64, &o, &err);
        if (saved)
            assert_int_equal(setenv(cases[i].var, saved, 1), 0);
        else
            assert_int_equal(unsetenv(cases[i].var), 0);
        free(saved);
        printf("# %s=%s: rc %d%s%s\n", cases[i].var, cases[i].value, rc, rc ? ", " : "",
               rc ? err.msg : "");
        assert_int_equal(rc, cases[i].rc);
        if (rc) {
            assert_null(o);
            assert_non_null(strstr(err.msg, cases[i].var));
            assert_int_equal(td_vk_live(), live);
        } else {
            assert_non_null(o);
            td_vko_free(o);
        }
    }
}

/* TD_VULKAN_BARRIER takes narrow (the default) or wide; anything else
 * refuses the open, naming it, with nothing left alive. (Every other test
 * here runs its dispatches with the default's compute-only barriers.) */
static void test_barrier_switch(void **state)
{
    (void)state;
    NEED_DEVICE();
    static const struct {
        const char *value;
        int rc;
    } cases[] = {{"sideways", TD_EINVAL}, {"wide", TD_OK}, {"narrow", TD_OK}, {"", TD_OK}};
    env_keep("TD_VULKAN_BARRIER");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(setenv("TD_VULKAN_BARRIER", cases[i].value, 1), 0);
        td_error err = {0};
        td_vk *v = NULL;
        long live = td_vk_live();
        int rc = td_vk_open(NULL, &v, &err);
        printf("# TD_VULKAN_BARRIER=%s: rc %d%s%s\n", cases[i].value, rc, rc ? ", " : "",
               rc ? err.msg : "");
        assert_int_equal(rc, cases[i].rc);
        if (rc) {
            assert_null(v);
            assert_non_null(strstr(err.msg, "TD_VULKAN_BARRIER"));
            assert_int_equal(td_vk_live(), live);
        } else {
            td_vk_close(v);
        }
    }
}

/* TD_VULKAN_INPUT_MEM: anything but auto or host refused at open,
 * naming the variable, nothing left behind; with either, a
 * TD_VK_MEM_INPUT buffer is mapped, lands in the card's memory where the
 * device has memory for it (and host not asked), takes the host's writes
 * and gives them back through a copy. */
static void test_input_mem(void **state)
{
    (void)state;
    NEED_DEVICE();
    static const struct {
        const char *value;
        int rc;
    } cases[] = {{"device", TD_EINVAL}, {"host", TD_OK}, {"auto", TD_OK}, {"", TD_OK}};
    env_keep("TD_VULKAN_INPUT_MEM");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(setenv("TD_VULKAN_INPUT_MEM", cases[i].value, 1), 0);
        td_error err = {0};
        td_vk *v = NULL;
        long live = td_vk_live();
        int rc = td_vk_open(NULL, &v, &err);
        assert_int_equal(rc, cases[i].rc);
        if (rc) {
            assert_null(v);
            assert_non_null(strstr(err.msg, "TD_VULKAN_INPUT_MEM"));
            assert_int_equal(td_vk_live(), live);
            printf("# TD_VULKAN_INPUT_MEM=%s: %s\n", cases[i].value, err.msg);
            continue;
        }
        int near = td_vk_device_info(v)->input_device_local;
        printf("# TD_VULKAN_INPUT_MEM=%s: inputs %s\n", cases[i].value,
               near ? "device-local" : "in host memory");
        if (strcmp(cases[i].value, "host") == 0)
            assert_int_equal(near, 0);
        td_vk_buf b;
        if (td_vk_buf_create(v, 4096, TD_VK_MEM_INPUT, &b, &err))
            fail_msg("%s", err.msg);
        assert_non_null(b.map);
        /* a small buffer lands in the card's memory where the device has
         * memory for it (with host, wherever its first host-visible type
         * is: lavapipe's are all device-local) */
        if (near)
            assert_int_equal(b.device_local, 1);
        int32_t want[1024], got[1024];
        for (int j = 0; j < 1024; j++)
            want[j] = j * 7919 - 3;
        memcpy(b.map, want, sizeof want);
        if (td_vk_download(v, &b, 0, got, sizeof got, &err))
            fail_msg("%s", err.msg);
        assert_memory_equal(got, want, sizeof want);
        td_vk_buf_destroy(v, &b);
        td_vk_close(v);
        assert_int_equal(td_vk_live(), live);
    }
}

/* Which extension's matrix path the device opened with: the KHR one
 * (matmul_cmk.comp) wherever the device has a family of coopmat.glsl and
 * no NV path, if the build compiled it (lavapipe of Mesa 25.1 and later,
 * Intel Arc, AMD; not Debian 12's lavapipe, which has neither), NV's on
 * NVIDIA; TD_VULKAN_COOPMAT=nv or khr takes that one alone, another value
 * fails the open. */
static void test_coopmat_family(void **state)
{
    (void)state;
    NEED_DEVICE();
    const td_vk_info *in = td_vk_device_info(vk);
    char note[96];
    td_vk_matrix_note(in, note, sizeof note);
    int built = td_vks_matmul_cmk_CMK100_words > 0;
    printf("# matrix engines: %s (KHR family %d, NV %d; KHR shaders %s); the products' path %s\n",
           note, in->coopmat_family, in->has_coopmat_nv, built ? "built" : "not built",
           td_vko_has_coopmat(ops) ? "has them" : "is tiled");
    assert_false(in->has_coopmat_nv && in->coopmat_family); /* one of the two enabled */
    if (in->has_coopmat_nv || (in->coopmat_family && built))
        assert_true(td_vko_has_coopmat(ops));
    else
        assert_false(td_vko_has_coopmat(ops));
    if (in->coopmat_family)
        assert_non_null(strstr(note, "KHR"));

    env_keep("TD_VULKAN_COOPMAT");
    td_error err = {0};
    td_vk *v = NULL;
    long live = td_vk_live();
    assert_int_equal(setenv("TD_VULKAN_COOPMAT", "yes", 1), 0);
    assert_int_equal(td_vk_open(NULL, &v, &err), TD_EINVAL);
    assert_null(v);
    assert_non_null(strstr(err.msg, "TD_VULKAN_COOPMAT"));
    assert_int_equal(td_vk_live(), live);
    /* the other extension alone, where the device has a KHR family: nv
     * leaves a KHR-only device tiled; khr takes KHR on NVIDIA too */
    if (!in->coopmat_family && !in->has_coopmat_nv)
        return;
    const char *other = in->has_coopmat_nv ? "khr" : "nv";
    assert_int_equal(setenv("TD_VULKAN_COOPMAT", other, 1), 0);
    if (td_vk_open(NULL, &v, &err))
        fail_msg("%s", err.msg);
    const td_vk_info *vi = td_vk_device_info(v);
    assert_false(vi->has_coopmat_nv && vi->coopmat_family);
    td_vko *o = NULL;
    if (td_vko_create(v, 16, 64, &o, &err))
        fail_msg("%s", err.msg);
    printf("# TD_VULKAN_COOPMAT=%s: KHR family %d, NV %d, products %s\n", other,
           vi->coopmat_family, vi->has_coopmat_nv, td_vko_has_coopmat(o) ? "on the engines" : "tiled");
    if (strcmp(other, "nv") == 0) { /* a KHR-only device goes tiled (NVIDIA under khr: NV's) */
        assert_int_equal(vi->coopmat_family, 0);
        assert_int_equal(td_vko_has_coopmat(o), vi->has_coopmat_nv);
    } else {
        assert_int_equal(vi->has_coopmat_nv, 0);
        assert_int_equal(td_vko_has_coopmat(o), vi->coopmat_family && built);
    }
    td_vko_free(o);
    td_vk_close(v);
    assert_int_equal(td_vk_live(), live);
}

/* ---------------------------------------------------- one-dispatch step */

/* Two decoder layers of rows R (heads of 64, width ds_nt) recorded
 * between td_vko_step_begin and _end: q, k and v as one product with
 * LayerNorm into a KV cache, the self-attention over the cache (two
 * splits, merged by the last workgroup of each row and head), the output
 * product accumulated, the cross query, the cross-attention over 1500
 * keys (12 splits), a LayerNorm into a buffer of its own in the first
 * layer (a dispatch that is not a phase: the phases held go before it,
 * so that a recording holds two tables), its output product, the MLP
 * with GELU. Run with the
 * step set up for a grid of groups (0: every product its own dispatch).
 * ds_nt is 128 (2 heads) unless TD_TEST_STEP_NT says otherwise (384 is
 * tiny's). On lavapipe the grid is one workgroup, which then runs every
 * loop of the step, and Mesa's shader compiler ends a shader's loops
 * after 65,535 iterations in all (gallivm's LP_MAX_TGSI_LOOP_ITERATIONS,
 * one count for every loop of a shader): two layers at 128 stay under
 * it, at 384 they do not (the products' last columns are then left
 * unwritten). GPUs have no such limit, and a grid of hundreds of
 * workgroups divides the loops among them. */
enum { DS_SELF = 200, DS_CROSS = 1500, DS_LAYERS = 2 };
static int ds_nt = 128;
#define DS_NT ds_nt
#define DS_HEADS (ds_nt / 64)
typedef struct ds_bufs {
    td_vk_buf w[DS_LAYERS][6], bias, lnw, lnb, x, h, q, a, ff, kvk, kvv, ck, cv, rowidx, self_info,
        cross_info, part, cnt;
} ds_bufs;

static int ds_kv16; /* the cross keys and values as halves */

static void ds_upload(ds_bufs *b, int R)
{
    const int nt = DS_NT, slots = DS_SELF + 8;
    const int wn[6] = {3 * DS_NT, DS_NT, DS_NT, DS_NT, 4 * DS_NT, DS_NT};
    const int wk[6] = {DS_NT, DS_NT, DS_NT, DS_NT, DS_NT, 4 * DS_NT};
    size_t big = (size_t)4 * nt * nt, cn = (size_t)DS_CROSS * nt;
    uint16_t *wh = malloc((big > cn ? big : cn) * 2);
    float *f = malloc(((size_t)slots * nt * DS_LAYERS + big + cn) * 4);
    int32_t info[2 * 8], rowidx[8];
    assert_true(wh && f);
    for (int l = 0; l < DS_LAYERS; l++)
        for (int j = 0; j < 6; j++) {
            size_t n = (size_t)wn[j] * wk[j];
            for (size_t i = 0; i < n; i++)
                wh[i] = td_wk_f32_to_f16(frand() * 0.2f);
            b->w[l][j] = dbuf(wh, n * 2);
        }
    for (int i = 0; i < 4 * nt; i++)
        f[i] = frand() * 0.5f;
    b->bias = dbuf(f, (size_t)4 * nt * 4);
    for (int i = 0; i < nt; i++)
        f[i] = 1.0f + frand() * 0.2f;
    b->lnw = dbuf(f, (size_t)nt * 4);
    for (int i = 0; i < nt; i++)
        f[i] = frand() * 0.2f;
    b->lnb = dbuf(f, (size_t)nt * 4);
    for (int i = 0; i < R * nt; i++)
        f[i] = frand() * 2.0f;
    b->x = dbuf(f, (size_t)R * nt * 4);
    b->h = dbuf(NULL, (size_t)R * nt * 4);
    b->q = dbuf(NULL, (size_t)R * nt * 4);
    b->a = dbuf(NULL, (size_t)R * nt * 4);
    b->ff = dbuf(NULL, (size_t)R * 4 * nt * 4);
    /* the caches: earlier positions filled, row r's new key at slot
     * DS_SELF - 1 - r, and it attends to the slots before and its own */
    for (int i = 0; i < slots * nt * DS_LAYERS; i++)
        f[i] = frand();
    b->kvk = dbuf(f, (size_t)slots * nt * 4 * DS_LAYERS);
    b->kvv = dbuf(f, (size_t)slots * nt * 4 * DS_LAYERS);
    for (int kv = 0; kv < 2; kv++) {
        for (size_t i = 0; i < cn; i++) {
            f[i] = frand();
            wh[i] = td_wk_f32_to_f16(f[i]);
        }
        td_vk_buf c = ds_kv16 ? dbuf(wh, cn * 2) : dbuf(f, cn * 4);
        *(kv ? &b->cv : &b->ck) = c;
    }
    for (int r = 0; r < R; r++) {
        rowidx[r] = (DS_SELF - 1 - r) * nt;
        info[2 * r] = 0;
        info[2 * r + 1] = DS_SELF - r;
    }
    b->rowidx = dbuf(rowidx, (size_t)R * 4);
    b->self_info = dbuf(info, (size_t)R * 8);
    for (int r = 0; r < R; r++) {
        info[2 * r] = 0;
        info[2 * r + 1] = DS_CROSS - 7 * r;
    }
    b->cross_info = dbuf(info, (size_t)R * 8);
    b->part = dbuf(NULL, td_vko_dec_part_floats(R, DS_HEADS, 64, DS_CROSS) * 4);
    b->cnt = dbuf(NULL, (size_t)R * DS_HEADS * 4);
    td_error err = {0};
    td_vk_buf *zero[] = {&b->cnt, &b->h, &b->q, &b->a, &b->ff, &b->part};
    for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++)
        if (td_vk_fill0(vk, zero[i], 0, zero[i]->size / 4 * 4, &err))
            fail_msg("%s", err.msg);
    free(wh);
    free(f);
}

static void ds_free(ds_bufs *b)
{
    td_vk_buf *all[] = {&b->bias, &b->lnw, &b->lnb, &b->x, &b->h, &b->q, &b->a, &b->ff,
                        &b->kvk, &b->kvv, &b->ck, &b->cv, &b->rowidx, &b->self_info,
                        &b->cross_info, &b->part, &b->cnt};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        td_vk_buf_destroy(vk, all[i]);
    for (int l = 0; l < DS_LAYERS; l++)
        for (int j = 0; j < 6; j++)
            td_vk_buf_destroy(vk, &b->w[l][j]);
}

static void ds_record(ds_bufs *b, int R)
{
    const int nt = DS_NT;
    uint64_t slot_bytes = (uint64_t)(DS_SELF + 8) * nt * 4;
#define DS_LIN(w_, a_, c_, n_, k_, fl_)                                                         \
    td_vko_linear_x(ops, &(td_vko_lin){.m = R, .n = (n_), .k = (k_), .a = (a_), .lda = (k_),    \
                                       .w = (w_).addr, .w_f16 = 1, .ldw = (k_),                 \
                                       .bias = b->bias.addr, .c = (c_), .ldc = (n_),            \
                                       .flags = (fl_) | TD_VKO_BIAS, .ln_w = b->lnw.addr,       \
                                       .ln_b = b->lnb.addr})
    td_vko_step_begin(ops);
    for (int l = 0; l < DS_LAYERS; l++) {
        uint64_t kc = b->kvk.addr + l * slot_bytes, vc = b->kvv.addr + l * slot_bytes;
        td_vko_linear_x(ops, &(td_vko_lin){.m = R, .n = 3 * nt, .k = nt, .a = b->x.addr,
                                           .lda = nt, .w = b->w[l][0].addr, .w_f16 = 1,
                                           .ldw = nt, .bias = b->bias.addr, .c = b->q.addr,
                                           .ldc = nt,
                                           .flags = TD_VKO_BIAS | TD_VKO_QKV | TD_VKO_LN,
                                           .ln_w = b->lnw.addr, .ln_b = b->lnb.addr,
                                           .rowidx = b->rowidx.addr, .c2 = kc, .c3 = vc,
                                           .split = nt});
        td_vko_dec_attn_x(ops, R, DS_HEADS, nt, b->q.addr, b->a.addr, kc, vc, b->self_info.addr,
                          DS_SELF, b->part.addr, b->cnt.addr, 0);
        DS_LIN(b->w[l][1], b->a.addr, b->x.addr, nt, nt, TD_VKO_ACC);
        DS_LIN(b->w[l][2], b->x.addr, b->q.addr, nt, nt, TD_VKO_LN);
        td_vko_dec_attn_x(ops, R, DS_HEADS, nt, b->q.addr, b->a.addr, b->ck.addr, b->cv.addr,
                          b->cross_info.addr, DS_CROSS, b->part.addr, b->cnt.addr, ds_kv16);
        if (l == 0)
            td_vko_layernorm(ops, R, nt, b->x.addr, nt, b->lnw.addr, b->lnb.addr, b->h.addr, nt,
                             0);
        DS_LIN(b->w[l][3], b->a.addr, b->x.addr, nt, nt, TD_VKO_ACC);
        DS_LIN(b->w[l][4], b->x.addr, b->ff.addr, 4 * nt, nt, TD_VKO_LN | TD_VKO_GELU);
        DS_LIN(b->w[l][5], b->ff.addr, b->x.addr, nt, 4 * nt, TD_VKO_ACC);
    }
    td_vko_step_end(ops);
#undef DS_LIN
}

/* The layers run (groups: the step's grid, 0 none; then a grid of force
 * past the check, where not 0) for two steps; x, the caches, and the
 * last layer's q, attention and MLP back (caller frees). *taken: the
 * grid taken at setup. *failed: what td_vko_step_failed said after the
 * first step. */
static float *ds_run(int R, int groups, int force, int *taken, int *failed)
{
    rng = 0x1234567ull; /* the same data each run */
    ds_bufs b;
    ds_upload(&b, R);
    td_error err = {0};
    char why[160];
    if (td_vko_step_setup(ops, groups, why, sizeof why, &err))
        fail_msg("step setup: %s", err.msg);
    *taken = td_vko_step_groups(ops);
    if (groups)
        printf("# %s\n", why);
    if (force)
        td_vko_step_groups_unchecked(ops, force);
    begin_ok();
    ds_record(&b, R);
    submit_ok();
    *failed = td_vko_step_failed(ops, &err);
    if (*failed < 0)
        fail_msg("%s", err.msg);
    /* a second step over the first's results: the tables and the
     * barrier's words are reused */
    begin_ok();
    ds_record(&b, R);
    submit_ok();
    size_t nx = (size_t)R * DS_NT, nkv = (size_t)(DS_SELF + 8) * DS_NT * DS_LAYERS;
    float *out = malloc((nx * 8 + 2 * nkv) * 4);
    assert_non_null(out);
    /* x, the caches, the last layer's q, attention and MLP, the LayerNorm */
    if (td_vk_download(vk, &b.x, 0, out, nx * 4, &err) ||
        td_vk_download(vk, &b.kvk, 0, out + nx, nkv * 4, &err) ||
        td_vk_download(vk, &b.kvv, 0, out + nx + nkv, nkv * 4, &err) ||
        td_vk_download(vk, &b.q, 0, out + nx + 2 * nkv, nx * 4, &err) ||
        td_vk_download(vk, &b.a, 0, out + 2 * nx + 2 * nkv, nx * 4, &err) ||
        td_vk_download(vk, &b.ff, 0, out + 3 * nx + 2 * nkv, 4 * nx * 4, &err) ||
        td_vk_download(vk, &b.h, 0, out + 7 * nx + 2 * nkv, nx * 4, &err))
        fail_msg("%s", err.msg);
    ds_free(&b);
    td_vko_step_setup(ops, 0, why, sizeof why, &err);
    return out;
}

static void test_dec_step(void **state)
{
    (void)state;
    NEED_DEVICE();
    static const int rows[] = {1, 3, 8};
    const char *nt = getenv("TD_TEST_STEP_NT");
    if (nt && *nt) {
        ds_nt = atoi(nt);
        assert_true(ds_nt >= 64 && ds_nt <= 1280 && ds_nt % 64 == 0);
    }
    printf("# width %d (%d heads of 64)\n", ds_nt, DS_HEADS);
    /* a grid of 1 (always resident, the whole step in one workgroup), and
     * on a GPU a few and two a multiprocessor; not more on a CPU device
     * (lavapipe): its waits would spend Mesa's loop budget (ops.h) */
    int sms = td_vk_device_info(vk)->sm_count;
    int cpu = td_vk_device_info(vk)->device_type == VK_PHYSICAL_DEVICE_TYPE_CPU;
    int grids[] = {1, cpu ? 0 : 3, !cpu && sms > 0 ? 2 * sms : 0};
    for (size_t ri = 0; ri < 2 * sizeof rows / sizeof rows[0]; ri++) {
        int R = rows[ri / 2], t0;
        ds_kv16 = ri % 2;
        /* on a CPU device (CI's lavapipe) 1 row with floats and 8 with
         * halves only: each case there takes seconds */
        if (cpu && !((R == 1 && !ds_kv16) || (R == 8 && ds_kv16)))
            continue;
        size_t n = (size_t)R * DS_NT * 8 + 2 * (size_t)(DS_SELF + 8) * DS_NT * DS_LAYERS;
        int f;
        float *want = ds_run(R, 0, 0, &t0, &f);
        assert_int_equal(t0, 0);
        for (size_t gi = 0; gi < sizeof grids / sizeof grids[0]; gi++) {
            if (grids[gi] == 0)
                continue;
            int taken;
            float *got = ds_run(R, grids[gi], 0, &taken, &f);
            assert_int_equal(f, 0);
            if (!taken) {
                printf("# rows %d, grid %d: not resident here, one dispatch a product\n", R,
                       grids[gi]);
                assert_true(grids[gi] > 1);
            }
            size_t bad = 0, first = 0;
            for (size_t i = 0; i < n; i++)
                if (memcmp(&got[i], &want[i], 4) != 0 && bad++ == 0)
                    first = i;
            printf("# rows %d, grid %d, cross K/V as %s: %zu of %zu floats differ from one "
                   "dispatch a product\n",
                   R, grids[gi], ds_kv16 ? "halves" : "floats", bad, n);
            if (bad)
                fail_msg("rows %d grid %d: float %zu is %g, expected %g", R, grids[gi], first,
                         (double)got[first], (double)want[first]);
            free(got);
        }
        free(want);
    }
}

/* A grid that is not resident at once, forced past the check at setup
 * (lavapipe runs a few workgroups at a time, on its threads; a GPU holds
 * fewer than 64 workgroups of 128 a multiprocessor): a barrier's wait
 * passes its limit,
 * and td_vko_step_failed says so after the first step and turns the step
 * off (the second step then runs a dispatch a product). */
static void test_dec_step_unresident(void **state)
{
    (void)state;
    NEED_DEVICE();
    int sms = td_vk_device_info(vk)->sm_count, taken, failed;
    /* a GPU: 64 a multiprocessor; lavapipe: 8 a thread of its pool (one
     * a CPU), that is, not resident: more than run at once */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int big = sms > 0 ? 64 * sms : 8 * (int)(cpus > 0 && cpus < 512 ? cpus : 512);
    td_error err = {0};
    char why[160];
    /* the check at setup refuses it */
    if (td_vko_step_setup(ops, big, why, sizeof why, &err))
        fail_msg("step setup: %s", err.msg);
    printf("# %s\n", why);
    assert_int_equal(td_vko_step_groups(ops), 0);
    assert_non_null(strstr(why, "not resident"));
    /* forced past it, the step fails and says so once */
    ds_kv16 = 0;
    float *got = ds_run(1, 1, big, &taken, &failed);
    printf("# a grid of %d forced: the step %s\n", big,
           failed ? "failed, and was turned off" : "did not fail");
    assert_int_equal(taken, 1);
    assert_int_equal(failed, 1);
    assert_int_equal(td_vko_step_groups(ops), 0);
    assert_int_equal(td_vko_step_failed(ops, &err), 0);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_choice), cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_dec_step), cmocka_unit_test(test_dec_step_unresident),
        cmocka_unit_test(test_switch_refusals),
        cmocka_unit_test_teardown(test_barrier_switch, env_restore),
        cmocka_unit_test_teardown(test_input_mem, env_restore),
        cmocka_unit_test_teardown(test_coopmat_family, env_restore),
        cmocka_unit_test_teardown(test_path_cache_stale, env_restore),
        cmocka_unit_test(test_reopen),
        cmocka_unit_test(test_linear),        cmocka_unit_test(test_linear_ln_rowidx),
        cmocka_unit_test(test_linear_matvec_packed), cmocka_unit_test(test_linear_qkv),
        cmocka_unit_test(test_linear_cols),   cmocka_unit_test(test_linear_rows),
        cmocka_unit_test(test_linear_split),
        cmocka_unit_test(test_linear_coopmat), cmocka_unit_test(test_cm_peak),
        cmocka_unit_test(test_replay),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_layernorm_half),
        cmocka_unit_test(test_enc_attn),
        cmocka_unit_test_teardown(test_enc_attn_coopmat, env_restore),
        cmocka_unit_test(test_dec_attn),      cmocka_unit_test(test_dec_attn_group),
        cmocka_unit_test(test_dec_xattn_cm),
        cmocka_unit_test(test_embed_kv),      cmocka_unit_test(test_profile),
        cmocka_unit_test_teardown(test_rows_trial, env_restore),
        cmocka_unit_test(test_no_driver),
    };
    const char *filter = getenv("TEST_FILTER"); /* e.g. TEST_FILTER='test_linear_coopmat' */
    if (filter)
        cmocka_set_test_filter(filter);
    /* TEST_SKIP=PATTERN[,PATTERN...]: the others (tests/run-unit.sh's
     * BIN:!PATTERN; the Makefile's UNIT_SPLIT) */
    struct CMUnitTest run[sizeof tests / sizeof tests[0]];
    size_t n_run = tu_tests_to_run(tests, sizeof tests / sizeof tests[0], run);
    return _cmocka_run_group_tests("tests", run, n_run, setup, teardown);
}

#else /* !TD_HAVE_VULKAN */

static void test_not_built(void **state)
{
    (void)state;
    printf("# skipped: tapedeck was built without the Vulkan backend\n");
    skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_not_built)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
