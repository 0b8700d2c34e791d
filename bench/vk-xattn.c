/*
 * vk-xattn.c: where the decoder's cross-attention spends its time on a
 * Vulkan device, one kernel at a time, outside the backend:
 *
 *   vk-xattn [--cases WxR,...] [--keys N] [--layers L]
 *
 * For each case (default 4x64): W windows of N keys (1500) each, R decoder
 * rows a window, heads of 64 in 16 heads (medium). For L layers (8), each
 * with its own cross K and V (as a decode step reads them: from device
 * memory, not the cache), records L dispatches in one command buffer, a
 * barrier before each, and times its submission (wall clock, the host
 * wait included, best of 5 after a warm-up). Per dispatch, for (the
 * variants after the first of each kind in the first case only):
 *   - xattn_cm:    td_vko_dec_xattn_cm, groups of up to 64 of a window's
 *                  rows (K and V as halves, then floats), its table and
 *                  the rows' info in TD_VK_MEM_INPUT memory; then with
 *                  both in TD_VK_MEM_HOST memory (host memory, read over
 *                  PCIe); then with one layer's K and V for all L (from the
 *                  L2 cache after the first);
 *   - per row:     td_vko_dec_attn_x (halves), one workgroup a row, head
 *                  and block of TD_VKO_ATT_SPLIT keys, as the default runs
 *                  where the matrix engines do not pay (vulkan.c's
 *                  td_wvk_xcm_pays);
 *   - encoder:     td_vko_enc_attn_half over one window's N rows and keys
 *                  (the same kernel's loop with 64 query rows a workgroup),
 *                  for the cost of a block of keys a workgroup where
 *                  workgroups share the multiprocessors.
 * The matrix engines' lines also give the dispatch's time over its blocks
 * of 64 keys: a workgroup's time a block where its workgroups all run at
 * once. Uses the first usable device, or TD_VULKAN_DEVICE.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/error.h"

#if defined(TD_HAVE_VULKAN)

#include "whisper/backend/vulkan/ops.h"
#include "whisper/backend/vulkan/vk.h"

enum { HEADS = 16, D = 64, LD = HEADS * D };

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static void die(const char *what, const td_error *err)
{
    fprintf(stderr, "vk-xattn: %s: %s\n", what, err->msg);
    exit(1);
}

typedef struct probe {
    td_vk *vk;
    td_vko *o;
    int w, r, n, layers;
    uint64_t kv_layer;        /* bytes of one layer's K (or V), all windows, as floats */
    td_vk_buf k, v, q, out, part, cnt;
    td_vk_buf info[2], tab[2]; /* [0] TD_VK_MEM_INPUT, [1] TD_VK_MEM_HOST */
} probe;

enum kind { XCM, PER_ROW, ENCODER };

/* L dispatches of one kind: mem 0 input, 1 host; same: one layer's K/V */
static void record(probe *p, enum kind kind, int kv16, int mem, int same)
{
    int rows = p->w * p->r;
    for (int l = 0; l < p->layers; l++) {
        uint64_t off = same ? 0 : (uint64_t)l * p->kv_layer;
        uint64_t k = p->k.addr + off, v = p->v.addr + off;
        switch (kind) {
        case XCM:
            td_vko_dec_xattn_cm(p->o, LD, p->q.addr, p->out.addr, k, v, p->info[mem].addr,
                                &p->tab[mem], 0, kv16);
            break;
        case PER_ROW:
            td_vko_dec_attn_x(p->o, rows, HEADS, LD, p->q.addr, p->out.addr, k, v,
                              p->info[mem].addr, p->n, p->part.addr, p->cnt.addr, kv16);
            break;
        case ENCODER:
            td_vko_enc_attn_half(p->o, p->n, HEADS, LD, p->q.addr, k, v, p->out.addr);
            break;
        }
    }
}

static double time_kind(probe *p, enum kind kind, int kv16, int mem, int same)
{
    td_error err = {0};
    double best = 1e30;
    for (int t = 0; t < 6; t++) {
        if (td_vk_begin(p->vk, &err) != TD_OK)
            die("begin", &err);
        record(p, kind, kv16, mem, same);
        double s = now_ms();
        if (td_vk_submit(p->vk, &err) != TD_OK)
            die("submit", &err);
        double dt = now_ms() - s;
        if (t > 0 && dt < best)
            best = dt;
    }
    return best * 1e3 / p->layers;
}

/* blocks: 1 for the matrix engines' lines (a block of 64 keys is then
 * the dispatch's time over them), 0 for the others */
static void line(const probe *p, const char *what, double us, int workgroups, int blocks)
{
    printf("  %-44s %8.1f us a dispatch, %6d workgroups", what, us, workgroups);
    if (blocks)
        printf(", %6.2f us a block of 64 keys", us / ((p->n + 63) / 64));
    printf("\n");
}

/* the inputs of one case: each row's info (its window's first key
 * element, as floats; the halves' kernels take it in halves, the same
 * count) and the groups' table, in both kinds of memory */
static void case_inputs(probe *p, int *n_groups)
{
    int rows = p->w * p->r;
    *n_groups = p->w * ((p->r + TD_VKO_XCM_GROUP - 1) / TD_VKO_XCM_GROUP);
    size_t ti = td_vko_dec_group_ints(*n_groups, TD_VKO_XCM_GROUP);
    td_error err = {0};
    for (int m = 0; m < 2; m++) {
        enum td_vk_mem kind = m == 0 ? TD_VK_MEM_INPUT : TD_VK_MEM_HOST;
        td_vk_buf_destroy(p->vk, &p->info[m]);
        td_vk_buf_destroy(p->vk, &p->tab[m]);
        if (td_vk_buf_create(p->vk, (uint64_t)rows * 8, kind, &p->info[m], &err) ||
            td_vk_buf_create(p->vk, ti * 4, kind, &p->tab[m], &err))
            die("inputs", &err);
        int32_t *info = p->info[m].map, *t = p->tab[m].map;
        for (int r = 0; r < rows; r++) {
            info[2 * r] = (r / p->r) * p->n * LD;
            info[2 * r + 1] = p->n;
        }
        int32_t *e = t + TD_VKO_GROUP_HEAD;
        for (int wi = 0; wi < p->w; wi++)
            for (int r0 = 0; r0 < p->r; r0 += TD_VKO_XCM_GROUP, e += TD_VKO_XCM_GROUP + 1) {
                int nr = p->r - r0 < TD_VKO_XCM_GROUP ? p->r - r0 : TD_VKO_XCM_GROUP;
                e[0] = nr;
                for (int j = 0; j < nr; j++)
                    e[1 + j] = wi * p->r + r0 + j;
            }
        td_vko_dec_xcm_head(t, *n_groups, HEADS);
    }
}

enum { MAX_CASES = 16 };

int main(int argc, char **argv)
{
    probe p = {.n = 1500, .layers = 8};
    int cw[MAX_CASES] = {4}, cr[MAX_CASES] = {64}, nc = 1;
    int ok = 1;
    for (int i = 1; i < argc && ok; i += 2) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *e = NULL;
        if (!v) {
            ok = 0;
        } else if (strcmp(argv[i], "--cases") == 0) {
            /* W x R, comma-separated, nothing else */
            nc = 0;
            for (const char *c = v; ok;) {
                if (nc == MAX_CASES) {
                    ok = 0;
                    break;
                }
                cw[nc] = (int)strtol(c, &e, 10);
                ok = e != c && *e == 'x';
                if (!ok)
                    break;
                c = e + 1;
                cr[nc] = (int)strtol(c, &e, 10);
                ok = e != c && (*e == ',' || *e == '\0');
                nc++;
                if (!ok || *e == '\0')
                    break;
                c = e + 1;
            }
        } else if (strcmp(argv[i], "--keys") == 0) {
            p.n = (int)strtol(v, &e, 10);
            ok = e != v && *e == '\0';
        } else if (strcmp(argv[i], "--layers") == 0) {
            p.layers = (int)strtol(v, &e, 10);
            ok = e != v && *e == '\0';
        } else {
            ok = 0;
        }
    }
    int max_w = 0, max_rows = 0;
    ok = ok && nc > 0 && p.n >= 1 && p.n <= 1500 && p.layers >= 1 && p.layers <= 64;
    for (int c = 0; c < nc; c++) {
        ok = ok && cw[c] >= 1 && cw[c] <= 64 && cr[c] >= 1 && cr[c] <= 256;
        max_w = cw[c] > max_w ? cw[c] : max_w;
        max_rows = cw[c] * cr[c] > max_rows ? cw[c] * cr[c] : max_rows;
    }
    if (!ok) {
        fprintf(stderr, "usage: vk-xattn [--cases WxR,... (up to %d cases; W windows 1..64, R "
                        "rows a window 1..256)] [--keys 1..1500] [--layers 1..64]\n",
                (int)MAX_CASES);
        return 2;
    }
    td_error err = {0};
    if (td_vk_open(getenv("TD_VULKAN_DEVICE"), &p.vk, &err) != TD_OK)
        die("open", &err);
    if (td_vko_create(p.vk, D, D, &p.o, &err) != TD_OK)
        die("ops", &err);
    /* the matrix engines' path, as the backend's trial picks it on such a
     * device (the encoder's attention on them needs it) */
    if (td_vko_set_path(p.o, TD_VKO_COOPMAT, &err) != TD_OK)
        printf("  no coopmat path: %s\n", err.msg);
    const td_vk_info *in = td_vk_device_info(p.vk);
    printf("vk-xattn: %s (%s), %d keys a window, %d heads of %d, %d layers; per-call inputs "
           "%s\n",
           in->name, in->driver, p.n, HEADS, D, p.layers,
           in->input_device_local ? "in device memory mapped for the host" : "in host memory");
    if (!td_vko_has_dec_xcm(p.o)) {
        printf("  no matrix-engine cross-attention here (%s)\n", td_vko_attn_note(p.o));
        td_vko_free(p.o);
        td_vk_close(p.vk);
        return 0;
    }
    /* a window's K: n rows of LD, windows one after the other */
    p.kv_layer = (uint64_t)max_w * p.n * LD * 4;
    uint64_t kvb = p.kv_layer * (uint64_t)p.layers;
    size_t qn = (size_t)(max_rows > p.n ? max_rows : p.n) * LD;
    size_t pf = td_vko_dec_part_floats(max_rows, HEADS, D, p.n);
    if (td_vk_buf_create(p.vk, kvb, TD_VK_MEM_DEVICE, &p.k, &err) ||
        td_vk_buf_create(p.vk, kvb, TD_VK_MEM_DEVICE, &p.v, &err) ||
        td_vk_buf_create(p.vk, qn * 4, TD_VK_MEM_DEVICE, &p.q, &err) ||
        td_vk_buf_create(p.vk, qn * 4, TD_VK_MEM_DEVICE, &p.out, &err) ||
        td_vk_buf_create(p.vk, pf * 4, TD_VK_MEM_DEVICE, &p.part, &err) ||
        td_vk_buf_create(p.vk, (uint64_t)max_rows * HEADS * 4, TD_VK_MEM_DEVICE, &p.cnt, &err))
        die("buffers", &err);
    /* small random halves (0x2c00..0x2fff and their negatives), two a
     * word: read as floats each word is a small normal float, so the
     * kernels of either type see finite values */
    size_t chunk = 8u << 20;
    uint16_t *f = malloc(chunk);
    if (!f) {
        fprintf(stderr, "vk-xattn: out of memory\n");
        return 1;
    }
    uint32_t s = 12345;
    for (size_t i = 0; i < chunk / 2; i++) {
        s = s * 1664525u + 1013904223u;
        f[i] = (uint16_t)(0x2c00 | (s >> 22) | ((s & 1) << 15));
    }
    for (uint64_t off = 0; off < kvb; off += chunk) {
        uint64_t nb = kvb - off < chunk ? kvb - off : chunk;
        if (td_vk_upload(p.vk, &p.k, off, f, nb, &err) ||
            td_vk_upload(p.vk, &p.v, off, f, nb, &err))
            die("upload", &err);
    }
    for (uint64_t off = 0; off < qn * 4; off += chunk)
        if (td_vk_upload(p.vk, &p.q, off, f, qn * 4 - off < chunk ? qn * 4 - off : chunk, &err))
            die("upload", &err);
    if (td_vk_fill0(p.vk, &p.cnt, 0, p.cnt.size / 4 * 4, &err))
        die("fill", &err);
    for (int c = 0; c < nc; c++) {
        p.w = cw[c];
        p.r = cr[c];
        int n_groups, rows = p.w * p.r;
        case_inputs(&p, &n_groups);
        printf(" %d windows x %d rows:\n", p.w, p.r);
        int xwg = n_groups * HEADS;
        double xcm = time_kind(&p, XCM, 1, 0, 0), row = time_kind(&p, PER_ROW, 1, 0, 0);
        int rwg = rows * HEADS * ((p.n + TD_VKO_ATT_SPLIT - 1) / TD_VKO_ATT_SPLIT);
        line(&p, "xattn_cm halves", xcm, xwg, 1);
        line(&p, "per row halves", row, rwg, 0);
        printf("  %d x %d: per row / xattn_cm %.2f\n", p.w, p.r, row / xcm);
        if (c > 0)
            continue;
        line(&p, "xattn_cm halves, inputs in host memory", time_kind(&p, XCM, 1, 1, 0), xwg, 1);
        line(&p, "xattn_cm halves, one layer's K and V (cached)", time_kind(&p, XCM, 1, 0, 1),
             xwg, 1);
        line(&p, "xattn_cm floats", time_kind(&p, XCM, 0, 0, 0), xwg, 1);
        line(&p, "per row halves, inputs in host memory", time_kind(&p, PER_ROW, 1, 1, 0), rwg,
             0);
    }
    if (td_vko_enc_attn_half_ok(p.o, LD, p.q.addr, p.k.addr, p.v.addr)) {
        line(&p, "encoder (one window's rows as queries)", time_kind(&p, ENCODER, 1, 0, 0),
             (p.n + 63) / 64 * HEADS, 1);
        line(&p, "encoder, one layer's K and V (cached)", time_kind(&p, ENCODER, 1, 0, 1),
             (p.n + 63) / 64 * HEADS, 1);
    } else {
        printf("  encoder: no attention for halves here (%s)\n", td_vko_attn_note(p.o));
    }
    free(f);
    td_vk_buf *all[] = {&p.k, &p.v, &p.q, &p.out, &p.part, &p.cnt,
                        &p.info[0], &p.info[1], &p.tab[0], &p.tab[1]};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        td_vk_buf_destroy(p.vk, all[i]);
    td_vko_free(p.o);
    td_vk_close(p.vk);
    return 0;
}

#else

int main(void)
{
    printf("vk-xattn: built without the Vulkan backend\n");
    return 0;
}

#endif
