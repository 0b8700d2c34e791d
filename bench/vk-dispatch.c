/*
 * vk-dispatch.c: what one dependent dispatch costs on a Vulkan device, to
 * tell the decoder step's fixed cost per dispatch from its shaders' work
 * (bench/RESULTS.md, "what limits speed now"):
 *
 *   vk-dispatch [--n N] [--k K] [--groups G] [--warm MS]
 *
 * First it keeps the card busy for MS milliseconds (default 1500) with
 * independent products, so that its clocks are up: a card idle before
 * the call measured dependent dispatches 3 to 4 times slower.
 * Records N dispatches in one command buffer and times its submission
 * (wall clock, host wait included, best of 5 after a warm-up), for:
 *   - ln chain:      LayerNorm of one row of K floats, each reading the
 *                    last one's output (a barrier before each);
 *   - ln free:       the same N LayerNorms into N outputs with no barrier
 *                    between them (the dispatch's own cost);
 *   - matvec chain:  one row times a K x K F16 matrix, each its own
 *                    matrix (so none is read from cache), each reading
 *                    the last one's output;
 *   - matvec cached: the matvec chain with one matrix for all (2 MB at K
 *                    1024: from the L2 cache after the first), what a
 *                    product would cost with its weights already on chip;
 *   - matvec free:   the same N products of one input into N outputs with
 *                    no barrier between them (they may overlap);
 *   - mlp chain:     one row times a 4K x K, then a K x 4K matrix, in turn.
 * Per dispatch: ms / N; and for products the bandwidth that makes
 * (weight bytes / time). Then, with --groups G (default 132, an H100's
 * multiprocessors; also G / 2 and 2 G), one persistent dispatch of G
 * workgroups (shaders/grid_sync.comp) doing the matvec chain's N
 * products as phases separated by a barrier across the grid, and the
 * same with no products (the barrier alone): what a decoder step as one
 * dispatch would cost per stage (a one-phase dispatch's time taken off, so
 * that the submission is not counted). A wait that passed its limit (a grid
 * not resident at once) is reported, not hung on. Uses the first usable
 * device, or TD_VULKAN_DEVICE.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/error.h"

#if defined(TD_HAVE_VULKAN)

#include "whisper/backend/vulkan/ops.h"
#include "whisper/backend/vulkan/shaders.h"
#include "whisper/backend/vulkan/vk.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static void die(const char *what, const td_error *err)
{
    fprintf(stderr, "vk-dispatch: %s: %s\n", what, err->msg);
    exit(1);
}

typedef void (*rec_fn)(td_vko *o, int i, void *ctx);

/* Best of 5 submissions of n recorded calls of rec, after one warm-up. */
static double time_it(td_vk *vk, td_vko *o, int n, rec_fn rec, void *ctx)
{
    td_error err = {0};
    double best = 1e30;
    for (int t = 0; t < 6; t++) {
        if (td_vk_begin(vk, &err) != TD_OK)
            die("begin", &err);
        for (int i = 0; i < n; i++)
            rec(o, i, ctx);
        double s = now_ms();
        if (td_vk_submit(vk, &err) != TD_OK)
            die("submit", &err);
        double dt = now_ms() - s;
        if (t > 0 && dt < best)
            best = dt;
    }
    return best;
}

typedef struct ctx {
    td_vk *vk;
    int k;
    uint64_t x[2], w, w2, lnw, lnb, outs;
    uint64_t wbytes;          /* one K x K matrix of halves */
} ctx;

static void rec_ln(td_vko *o, int i, void *p)
{
    ctx *c = p;
    td_vko_layernorm(o, 1, c->k, c->x[i % 2], c->k, c->lnw, c->lnb, c->x[(i + 1) % 2], c->k, 0);
}

static void rec_mv_chain(td_vko *o, int i, void *p)
{
    ctx *c = p;
    td_vko_linear(o, 1, c->k, c->k, c->x[i % 2], c->k, c->w + (uint64_t)i * c->wbytes, 1, c->k, 0,
                  0, 0, c->x[(i + 1) % 2], c->k, 0);
}

static void rec_ln_free(td_vko *o, int i, void *p)
{
    ctx *c = p;
    if (i == 0)
        td_vk_concurrent(c->vk, 1);
    td_vko_layernorm(o, 1, c->k, c->x[0], c->k, c->lnw, c->lnb, c->outs + (uint64_t)i * c->k * 4,
                     c->k, 0);
}

static void rec_mv_cached(td_vko *o, int i, void *p)
{
    ctx *c = p;
    td_vko_linear(o, 1, c->k, c->k, c->x[i % 2], c->k, c->w, 1, c->k, 0, 0, 0, c->x[(i + 1) % 2],
                  c->k, 0);
}

static void rec_mv_free(td_vko *o, int i, void *p)
{
    ctx *c = p;
    if (i == 0)
        td_vk_concurrent(c->vk, 1);
    td_vko_linear(o, 1, c->k, c->k, c->x[0], c->k, c->w + (uint64_t)i * c->wbytes, 1, c->k, 0, 0,
                  0, c->outs + (uint64_t)i * c->k * 4, c->k, 0);
}

static void rec_mlp(td_vko *o, int i, void *p)
{
    ctx *c = p;
    int k = c->k;
    uint64_t w = c->w2 + (uint64_t)(i / 2) * 8 * c->wbytes;
    if (i % 2 == 0)
        td_vko_linear(o, 1, 4 * k, k, c->x[0], k, w, 1, k, 0, 0, 0, c->outs, 4 * k, 0);
    else
        td_vko_linear(o, 1, k, 4 * k, c->outs, 4 * k, w + 4 * c->wbytes, 1, 4 * k, 0, 0, 0,
                      c->x[0], k, 0);
}

typedef struct grid_push {
    uint64_t sync, w, x;
    uint32_t phases, k;
} grid_push;

/* Best of 5 (after a warm-up) of one persistent dispatch of groups
 * workgroups running phases phases of k-wide products (k 0: none);
 * *stuck set where a grid barrier's wait passed its limit. */
static double time_grid(td_vk *vk, td_vk_pipe *pipe, const td_vk_buf *sync, const grid_push *gp,
                        int groups, int *stuck)
{
    td_error err = {0};
    double best = 1e30;
    *stuck = 0;
    for (int t = 0; t < 6; t++) {
        if (td_vk_fill0(vk, sync, 0, 8, &err) != TD_OK || td_vk_begin(vk, &err) != TD_OK)
            die("grid begin", &err);
        td_vk_dispatch(vk, pipe, gp, (uint32_t)groups, 1, 1);
        double s = now_ms();
        if (td_vk_submit(vk, &err) != TD_OK)
            die("grid submit", &err);
        double dt = now_ms() - s;
        uint32_t flag[2];
        if (td_vk_download(vk, sync, 0, flag, sizeof flag, &err) != TD_OK)
            die("grid download", &err);
        *stuck |= flag[1] != 0 || flag[0] != (uint32_t)groups * gp->phases;
        if (t > 0 && dt < best)
            best = dt;
    }
    return best;
}

int main(int argc, char **argv)
{
    int n = 200, k = 1024, groups = 132, warm_ms = 1500;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--n") == 0)
            n = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--k") == 0)
            k = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--groups") == 0)
            groups = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--warm") == 0)
            warm_ms = atoi(argv[i + 1]);
    }
    if (n < 2 || n > 1000 || k < 64 || k > 4096 || k % 8 || groups < 2 || groups > 1024 ||
        warm_ms < 0 || warm_ms > 60000) {
        fprintf(stderr, "usage: vk-dispatch [--n 2..1000] [--k 64..4096, a multiple of 8] "
                        "[--groups 2..1024] [--warm 0..60000 ms]\n");
        return 2;
    }
    td_error err = {0};
    td_vk *vk = NULL;
    td_vko *o = NULL;
    if (td_vk_open(getenv("TD_VULKAN_DEVICE"), &vk, &err) != TD_OK)
        die("open", &err);
    if (td_vko_create(vk, 64, 64, &o, &err) != TD_OK)
        die("ops", &err);
    ctx c = {.vk = vk, .k = k, .wbytes = (uint64_t)k * k * 2};
    /* weights: n K x K matrices, and n / 2 MLP pairs (8 K x K each) */
    uint64_t wb = c.wbytes * (uint64_t)n, w2b = c.wbytes * 8 * (uint64_t)(n / 2);
    td_vk_buf bx, bw, bw2, bl, bo;
    if (td_vk_buf_create(vk, (uint64_t)k * 8 * 2, TD_VK_MEM_DEVICE, &bx, &err) ||
        td_vk_buf_create(vk, wb, TD_VK_MEM_DEVICE, &bw, &err) ||
        td_vk_buf_create(vk, w2b, TD_VK_MEM_DEVICE, &bw2, &err) ||
        td_vk_buf_create(vk, (uint64_t)k * 8, TD_VK_MEM_DEVICE, &bl, &err) ||
        td_vk_buf_create(vk, (uint64_t)n * k * 4 + (uint64_t)k * 16, TD_VK_MEM_DEVICE, &bo, &err))
        die("buffers", &err);
    /* small random values (halves 0x2c00..0x2fff and their negatives);
     * zeros would let the device skip nothing, but make the test blind */
    size_t chunk = 8u << 20;
    uint16_t *h = malloc(chunk);
    float *xf = malloc((size_t)k * 8 * 2);
    if (!h || !xf)
        return 1;
    uint32_t s = 12345;
    for (size_t i = 0; i < chunk / 2; i++) {
        s = s * 1664525u + 1013904223u;
        h[i] = (uint16_t)(0x2c00 | (s >> 22) | ((s & 1) << 15));
    }
    for (uint64_t off = 0; off < wb; off += chunk)
        if (td_vk_upload(vk, &bw, off, h, wb - off < chunk ? wb - off : chunk, &err))
            die("upload", &err);
    for (uint64_t off = 0; off < w2b; off += chunk)
        if (td_vk_upload(vk, &bw2, off, h, w2b - off < chunk ? w2b - off : chunk, &err))
            die("upload", &err);
    for (int i = 0; i < k * 4; i++)
        xf[i] = (float)((i * 37) % 19) / 19.0f - 0.5f;
    if (td_vk_upload(vk, &bx, 0, xf, (uint64_t)k * 8 * 2, &err) ||
        td_vk_upload(vk, &bl, 0, xf, (uint64_t)k * 8, &err))
        die("upload", &err);
    c.x[0] = bx.addr;
    c.x[1] = bx.addr + (uint64_t)k * 8;
    c.w = bw.addr;
    c.w2 = bw2.addr;
    c.lnw = bl.addr;
    c.lnb = bl.addr + (uint64_t)k * 4;
    c.outs = bo.addr;
    const td_vk_info *in = td_vk_device_info(vk);
    printf("vk-dispatch: %s (%s), %d dispatches, K %d\n", in->name, in->driver, n, k);
    for (double w0 = now_ms(); now_ms() - w0 < warm_ms;)
        time_it(vk, o, n, rec_mv_free, &c);
    double ms = time_it(vk, o, n, rec_ln, &c);
    printf("  ln chain       %8.2f us per dispatch\n", ms * 1e3 / n);
    ms = time_it(vk, o, n, rec_ln_free, &c); /* td_vk_begin ends concurrency */
    printf("  ln free        %8.2f us per dispatch\n", ms * 1e3 / n);
    ms = time_it(vk, o, n, rec_mv_chain, &c);
    printf("  matvec chain   %8.2f us per dispatch  (%.0f GB/s of weights)\n", ms * 1e3 / n,
           (double)c.wbytes * n / (ms * 1e6));
    ms = time_it(vk, o, n, rec_mv_cached, &c);
    printf("  matvec cached  %8.2f us per dispatch  (one matrix for all)\n", ms * 1e3 / n);
    ms = time_it(vk, o, n, rec_mv_free, &c);
    printf("  matvec free    %8.2f us per dispatch  (%.0f GB/s of weights)\n", ms * 1e3 / n,
           (double)c.wbytes * n / (ms * 1e6));
    int nm = n / 2 * 2;
    ms = time_it(vk, o, nm, rec_mlp, &c);
    printf("  mlp chain      %8.2f us per dispatch  (%.0f GB/s of weights)\n", ms * 1e3 / nm,
           (double)c.wbytes * 4 * nm / (ms * 1e6));
    td_vk_pipe *gpipe = NULL;
    td_vk_buf bs;
    if (td_vk_pipe_create(vk, "grid_sync", td_vks_grid_sync, td_vks_grid_sync_words,
                          sizeof(grid_push), NULL, 0, &gpipe, &err) ||
        td_vk_buf_create(vk, 8, TD_VK_MEM_DEVICE, &bs, &err))
        die("grid pipeline", &err);
    int gs[3] = {groups / 2, groups, 2 * groups};
    for (int gi = 0; gi < 3; gi++) {
        /* per phase: (n phases - 1 phase) / (n - 1), so that the
         * submission and the wait for it are not spread over the phases */
        int stuck0, stuck1, st;
        grid_push gp = {bs.addr, c.w, c.x[0], 1, 0};
        double one0 = time_grid(vk, gpipe, &bs, &gp, gs[gi], &st);
        gp.phases = (uint32_t)n;
        double ms0 = time_grid(vk, gpipe, &bs, &gp, gs[gi], &stuck0) - one0;
        gp.k = (uint32_t)k;
        gp.phases = 1;
        double one1 = time_grid(vk, gpipe, &bs, &gp, gs[gi], &st);
        gp.phases = (uint32_t)n;
        double ms1 = time_grid(vk, gpipe, &bs, &gp, gs[gi], &stuck1) - one1;
        printf("  grid %4d wgs: barrier alone %6.2f us per phase%s; product + barrier %6.2f us "
               "per phase (%.0f GB/s of weights)%s\n",
               gs[gi], ms0 * 1e3 / (n - 1), stuck0 ? " (a wait passed its limit)" : "",
               ms1 * 1e3 / (n - 1), (double)c.wbytes * (n - 1) / (ms1 * 1e6),
               stuck1 ? " (a wait passed its limit)" : "");
    }
    td_vk_buf_destroy(vk, &bs);
    td_vk_pipe_destroy(vk, gpipe);
    free(h);
    free(xf);
    td_vk_buf_destroy(vk, &bx);
    td_vk_buf_destroy(vk, &bw);
    td_vk_buf_destroy(vk, &bw2);
    td_vk_buf_destroy(vk, &bl);
    td_vk_buf_destroy(vk, &bo);
    td_vko_free(o);
    td_vk_close(vk);
    return 0;
}

#else

int main(void)
{
    printf("vk-dispatch: built without the Vulkan backend\n");
    return 0;
}

#endif
