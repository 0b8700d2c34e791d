/* test_vram.c: the VRAM planner (run/vram.h) against the recorded device
 * tables of tests/fixtures/devices/ (two Arc A770s of 16 GB, an NVIDIA and
 * an AMD card, one card with 2 GB free, no GPU) with the released models'
 * real dimensions (td_wmk_dims; no model file is needed to size them):
 * the chain's order per language, the pick per card (the largest model,
 * then the largest batch, that fit free memory less the margin), a pinned
 * model, cards that report no memory, the run-time step-down, and NVML's
 * answers recorded on an H100 with the picks made there. The
 * chain read from installed files is checked on small files made here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "device/discover.h"
#include "asr/engine.h"
#include "run/vram.h"
#include "whisper/decode.h"
#include "whisper/mkmodel.h"

#define FIX "tests/fixtures/devices/"
#define GIB (1024LL * 1024 * 1024)

/* The backend a GPU worker sizes for: Vulkan where built, else the CPU's
 * table (the arithmetic under test is the planner's, not the backend's). */
static const td_wbackend_ops *gpu_backend(void)
{
    const td_wbackend_ops *b = td_wbackend_find("vulkan");
    return b ? b : &td_wbackend_cpu;
}

/* The full release chain by dimensions, best first. */
static void real_chain(td_vram_chain *c, const char *const *names, int n)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < n; i++) {
        td_error err = {0};
        td_vram_model *m = &c->items[c->n++];
        assert_int_equal(td_wmk_dims(names[i], &m->hp, &err), TD_OK);
        snprintf(m->name, sizeof m->name, "%s", names[i]);
        m->wtype = TD_WT_F16;
    }
}

static const char *const full[] = {"large-v3", "large-v3-turbo", "medium", "small", "base", "tiny"};

static void sysfs_only(const char *root, td_device_list *l)
{
    td_discovery src = {.sysfs = root};
    td_devices_discover(&src, l);
}

/* The pick's invariants: its need is what td_vram_need says, fits the
 * available memory, every larger model of the chain did not fit at batch
 * 1, and (batched, no --batch) the next batch up does not fit. */
static void check_pick(const td_device *d, const td_vram_chain *c, const td_vram_ask *a,
                       const td_vram_pick *p)
{
    assert_true(p->fits);
    int64_t avail = (d->mem_free >= 0 ? d->mem_free : d->mem_total) - td_vram_margin(d);
    assert_int_equal(p->avail, avail);
    assert_int_equal(p->need, td_vram_need(a, &c->items[p->model], p->batch));
    assert_true(p->need <= avail);
    for (int i = 0; i < p->model; i++)
        assert_true(td_vram_need(a, &c->items[i], a->batch > 0 ? a->batch : 1) > avail);
    assert_true(p->batch <= td_whisper_max_batch());
    if (a->batched && a->batch == 0 && p->batch < td_whisper_max_batch()) {
        /* the next batch up does not fit, or the CPU backend (a GPU
         * worker's fallback) would refuse it */
        int64_t next = td_vram_need(a, &c->items[p->model], p->batch + 1);
        td_vram_ask cpu = *a;
        cpu.backend = &td_wbackend_cpu;
        assert_true(next < 0 || next > avail || td_vram_need(&cpu, &c->items[p->model], p->batch + 1) < 0);
    }
    assert_non_null(strstr(p->why, c->items[p->model].name));
}

static void test_two_a770_large_v3_largest_batch(void **state)
{
    (void)state;
    td_device_list l;
    sysfs_only(FIX "two-a770/sys", &l);
    assert_int_equal(l.count, 2);
    td_vram_chain c;
    real_chain(&c, full, 6);
    td_vram_ask a = {.backend = gpu_backend(), .batched = 1};
    td_vram_pick p[2];
    for (int i = 0; i < 2; i++) {
        td_vram_pick_device(&l.items[i], &c, &a, &p[i]);
        check_pick(&l.items[i], &c, &a, &p[i]);
        assert_int_equal(p[i].model, 0); /* 16 GB holds large-v3 ... */
        assert_true(p[i].batch > 1);     /* ... with room for a batch */
        /* 4% of 16 GiB */
        assert_int_equal(p[i].margin, 16 * GIB / 25);
        assert_non_null(strstr(p[i].why, "free"));
    }
    /* two scenes at once share the backend: smaller batches, within what
     * the CPU backend (the fallback) takes: 5 sequences per window */
    td_vram_ask two = {.backend = gpu_backend(), .batched = 1, .streams = 2};
    td_vram_pick p2;
    td_vram_pick_device(&l.items[0], &c, &two, &p2);
    check_pick(&l.items[0], &c, &two, &p2);
    assert_true(p2.batch < p[0].batch);
    assert_true(p2.batch * 2 * 5 <= 256);
    /* sequential decoding: batch 1, the same model */
    td_vram_ask seq = {.backend = gpu_backend(), .batched = 0};
    td_vram_pick s;
    td_vram_pick_device(&l.items[0], &c, &seq, &s);
    check_pick(&l.items[0], &c, &seq, &s);
    assert_int_equal(s.model, 0);
    assert_int_equal(s.batch, 1);
    /* --batch 32 asked: the model steps down until one fits it */
    td_vram_ask big = {.backend = gpu_backend(), .batched = 1, .batch = 32};
    td_vram_pick_device(&l.items[0], &c, &big, &s);
    check_pick(&l.items[0], &c, &big, &s);
    assert_int_equal(s.batch, 32);
    assert_true(s.model > 0);
    assert_non_null(strstr(s.why, "large-v3 needs")); /* says what the best would take */
}

static void test_one_card_2gb_free_takes_a_smaller_model(void **state)
{
    (void)state;
    td_device_list l;
    sysfs_only(FIX "one-2gb-free/sys", &l);
    assert_int_equal(l.count, 2);
    td_vram_chain c;
    real_chain(&c, full, 6);
    td_vram_ask a = {.backend = gpu_backend(), .batched = 0, .beam_size = 5};
    td_vram_pick p;
    /* the integrated GPU reports no memory: nothing to check against */
    td_vram_pick_device(&l.items[0], &c, &a, &p);
    assert_true(p.fits);
    assert_false(p.checked);
    assert_int_equal(p.model, 0);
    assert_int_equal(p.batch, 1);
    assert_non_null(strstr(p.why, "not checked"));
    /* the A770 with 2 GiB free: medium and larger do not fit, small does */
    td_vram_pick_device(&l.items[1], &c, &a, &p);
    check_pick(&l.items[1], &c, &a, &p);
    assert_true(p.checked);
    assert_string_equal(c.items[p.model].name, "small");
    assert_non_null(strstr(p.why, "; large-v3 needs"));
    /* pinned large-v3 alone: nothing fits, and the reason gives the sizes */
    td_vram_chain pin;
    real_chain(&pin, full, 1);
    pin.pinned = 1;
    td_vram_pick_device(&l.items[1], &pin, &a, &p);
    assert_false(p.fits);
    assert_int_equal(p.model, -1);
    assert_non_null(strstr(p.why, "no model fits"));
    assert_non_null(strstr(p.why, "large-v3"));
    assert_true(p.need > p.avail);
    /* a card with less free than the margin: nothing fits */
    td_device tight = l.items[1];
    tight.mem_free = 200LL << 20;
    td_vram_pick_device(&tight, &c, &a, &p);
    assert_false(p.fits);
    assert_non_null(strstr(p.why, "even the smallest, tiny"));
}

/* NVML's answer for the RTX 4090 beside the AMD card (as test_devices
 * replays it), with the used memory of a desktop session. */
static int nv_init(void) { return 0; }
static int nv_shutdown(void) { return 0; }
static int nv_count(unsigned *n) { *n = 1; return 0; }
static int nv_handle(unsigned i, void **h) { *h = (void *)(uintptr_t)(i + 1); return 0; }
static int nv_name(void *h, char *out, unsigned len) { (void)h; snprintf(out, len, "NVIDIA GeForce RTX 4090"); return 0; }
static int nv_uuid(void *h, char *out, unsigned len)
{
    (void)h;
    snprintf(out, len, "GPU-3f1c6a2e-8d4b-11ee-9c2a-0242ac120002");
    return 0;
}
static int nv_pci(void *h, td_nvml_pci_info *p)
{
    (void)h;
    snprintf(p->bus_id, sizeof p->bus_id, "00000000:01:00.0");
    p->bus = 1;
    return 0;
}
static unsigned long long nv_used = 470810624ULL;
static int nv_mem(void *h, td_nvml_memory *m)
{
    (void)h;
    m->total = 25757220864ULL;
    m->used = nv_used;
    m->free = m->total - m->used;
    return 0;
}
static const td_nvml_api nvml_4090 = {nv_init, nv_shutdown, nv_count, nv_handle, nv_name, nv_uuid, nv_pci, nv_mem};

static void test_mixed_pair_per_card_choices(void **state)
{
    (void)state;
    td_vram_chain c;
    real_chain(&c, full, 6);
    td_vram_ask a = {.backend = gpu_backend(), .batched = 1};
    td_device_list l;
    /* NVML answers for the NVIDIA card; sysfs for the AMD one */
    nv_used = 470810624ULL;
    td_discovery src = {.nvml = &nvml_4090, .sysfs = FIX "nvidia-amd/sys"};
    td_devices_discover(&src, &l);
    assert_int_equal(l.count, 2);
    td_vram_pick nv, amd;
    td_vram_pick_device(&l.items[0], &c, &a, &nv);
    td_vram_pick_device(&l.items[1], &c, &a, &amd);
    check_pick(&l.items[0], &c, &a, &nv);
    check_pick(&l.items[1], &c, &a, &amd);
    assert_int_equal(nv.model, 0);
    assert_int_equal(amd.model, 0);
    /* the AMD card has 700 MB less free: each card is sized on its own */
    assert_true(l.items[1].mem_free < l.items[0].mem_free);
    assert_true(amd.batch <= nv.batch);
    /* another program holds 20 GB of the NVIDIA card: it steps down,
     * the AMD card keeps large-v3 */
    nv_used = 20ULL << 30;
    td_devices_discover(&src, &l);
    td_vram_pick_device(&l.items[0], &c, &a, &nv);
    check_pick(&l.items[0], &c, &a, &nv);
    assert_true(nv.model > 0);
    assert_int_equal(amd.model, 0);
    /* without NVML the NVIDIA card has no memory figures: not checked */
    sysfs_only(FIX "nvidia-amd/sys", &l);
    td_vram_pick_device(&l.items[0], &c, &a, &nv);
    assert_true(nv.fits);
    assert_false(nv.checked);
    assert_int_equal(nv.batch, 1);
}

/* NVML's answers on the device machine (one H100, recorded in
 * tests/fixtures/devices/h100/nvidia-smi.csv, its sysfs beside), and the
 * picks tapedeck made there (bench/RESULTS.md, "GPU memory"). */
static unsigned long long h100_free = 81079ULL << 20;
static int h_count(unsigned *n) { *n = 1; return 0; }
static int h_name(void *h, char *out, unsigned len) { (void)h; snprintf(out, len, "NVIDIA H100 80GB HBM3"); return 0; }
static int h_uuid(void *h, char *out, unsigned len)
{
    (void)h;
    snprintf(out, len, "GPU-d0d30d60-c6c9-b740-6c4c-8e85e27c9ad8");
    return 0;
}
static int h_pci(void *h, td_nvml_pci_info *p)
{
    (void)h;
    snprintf(p->bus_id, sizeof p->bus_id, "00000000:00:06.0");
    p->device = 6;
    return 0;
}
static int h_mem(void *h, td_nvml_memory *m)
{
    (void)h;
    m->total = 81559ULL << 20;
    m->free = h100_free;
    m->used = m->total - m->free;
    return 0;
}
static const td_nvml_api nvml_h100 = {nv_init, nv_shutdown, h_count, nv_handle, h_name, h_uuid, h_pci, h_mem};

static void test_recorded_h100(void **state)
{
    (void)state;
    static const char *const en[] = {"large-v3", "medium.en", "small.en", "base.en", "tiny.en"};
    td_vram_chain c;
    real_chain(&c, en, 5);
    td_vram_ask a = {.backend = gpu_backend(), .batched = 1, .streams = 2};
    td_discovery src = {.nvml = &nvml_h100, .sysfs = FIX "h100/sys"};
    td_device_list l;
    h100_free = 81079ULL << 20;
    td_devices_discover(&src, &l);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].pci, "0000:00:06.0");
    assert_string_equal(l.items[0].local_cpus, "0-15");
    td_vram_pick p;
    td_vram_pick_device(&l.items[0], &c, &a, &p);
    check_pick(&l.items[0], &c, &a, &p);
    print_message("  %s\n", p.why);
    if (a.backend != &td_wbackend_cpu) {
        /* on the card: "model large-v3, batch 25: needs 60.68 GiB of 79.18 GiB
         * free"; the same pick now needs 60.98 GiB: the plan has since
         * reserved the scratch of products split along K, the room of
         * the encoder's group of 4 windows and the one-dispatch step's
         * phase tables (vulkan.c's plan) */
        assert_string_equal(c.items[p.model].name, "large-v3");
        assert_int_equal(p.batch, 25);
        assert_non_null(strstr(p.why, "needs 60.98 GiB of 79.18 GiB free (margin 3.19 GiB)"));
    }
    /* another program held all but 6143 MiB: "small.en batch 4: needs
     * 2.80 GiB of 6.00 GiB free (margin 3.19 GiB); large-v3 needs 5.46 GiB"
     * on the card; batch 4 now needs more than the 2.81 GiB left (the
     * split scratch, 18 MiB for small, and the encoder's group of 4
     * windows), so batch 3 */
    h100_free = 6143ULL << 20;
    td_devices_discover(&src, &l);
    td_vram_pick_device(&l.items[0], &c, &a, &p);
    check_pick(&l.items[0], &c, &a, &p);
    print_message("  %s\n", p.why);
    if (a.backend != &td_wbackend_cpu) {
        assert_string_equal(c.items[p.model].name, "small.en");
        assert_int_equal(p.batch, 3);
        assert_non_null(strstr(p.why, "needs 2.45 GiB of 6.00 GiB free (margin 3.19 GiB)"));
        assert_non_null(strstr(p.why, "; large-v3 needs 5.58 GiB"));
    }
}

static void test_no_gpu_nothing_to_plan(void **state)
{
    (void)state;
    td_device_list l;
    sysfs_only(FIX "no-gpu/sys", &l);
    assert_int_equal(l.count, 0);
    /* an empty chain places nothing */
    td_vram_chain c = {0};
    td_device d = {.mem_total = 16 * GIB, .mem_free = 16 * GIB};
    td_vram_ask a = {.backend = gpu_backend()};
    td_vram_pick p;
    td_vram_pick_device(&d, &c, &a, &p);
    assert_false(p.fits);
}

/* The figures, for bench/RESULTS.md and for a reader (not asserted). */
static void test_print_needs(void **state)
{
    (void)state;
    td_vram_chain c;
    real_chain(&c, full, 6);
    td_vram_ask a = {.backend = gpu_backend(), .batched = 1};
    for (int m = 0; m < c.n; m++)
        print_message("need %-15s batch 1 %6.0f MiB, 8 %6.0f MiB, 16 %6.0f MiB (%s, beam 5)\n", c.items[m].name,
                      td_vram_need(&a, &c.items[m], 1) / 1048576.0, td_vram_need(&a, &c.items[m], 8) / 1048576.0,
                      td_vram_need(&a, &c.items[m], 16) / 1048576.0, a.backend->name);
}

static void test_margin(void **state)
{
    (void)state;
    td_device d = {.mem_total = -1};
    assert_int_equal(td_vram_margin(&d), 256LL << 20);
    d.mem_total = 2 * GIB; /* 4% is less than the floor */
    assert_int_equal(td_vram_margin(&d), 256LL << 20);
    d.mem_total = 80 * GIB;
    assert_int_equal(td_vram_margin(&d), 80 * GIB / 25);
}

static void test_need_grows_and_refuses(void **state)
{
    (void)state;
    td_vram_chain c;
    real_chain(&c, full, 6);
    td_vram_ask a = {.backend = gpu_backend(), .batched = 1, .beam_size = 5};
    for (int m = 0; m < c.n; m++) {
        int64_t prev = 0;
        for (int b = 1; b <= 8; b++) {
            int64_t need = td_vram_need(&a, &c.items[m], b);
            assert_true(need > prev);
            prev = need;
        }
        /* smaller models need less (turbo's 4 decoder layers aside: it
         * needs less than medium) */
        if (m > 2)
            assert_true(td_vram_need(&a, &c.items[m], 1) < td_vram_need(&a, &c.items[m - 1], 1));
        assert_true(td_vram_need(&a, &c.items[m], 1) <= td_vram_need(&a, &c.items[0], 1));
    }
    /* 64 windows x beam 5 is more sequences than the decoder holds */
    assert_int_equal(td_vram_need(&a, &c.items[0], 64), -1);
}

static void test_step_down(void **state)
{
    (void)state;
    td_vram_chain c;
    real_chain(&c, full + 3, 3); /* small, base, tiny */
    int m = 0, b = 8;
    int seen[16][2], n = 0;
    while (td_vram_step_down(&c, &m, &b)) {
        seen[n][0] = m;
        seen[n++][1] = b;
    }
    /* 8 -> 4 -> 2 -> 1, then base, then tiny, then nothing */
    int want[][2] = {{0, 4}, {0, 2}, {0, 1}, {1, 1}, {2, 1}};
    assert_int_equal(n, 5);
    for (int i = 0; i < n; i++) {
        assert_int_equal(seen[i][0], want[i][0]);
        assert_int_equal(seen[i][1], want[i][1]);
    }
    assert_int_equal(m, 2);
    assert_int_equal(b, 1);
}

static void entry(td_wmodel_entry *e, const char *name, int rank)
{
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->rank = rank;
}

static void test_chain_select_per_language(void **state)
{
    (void)state;
    td_wmodel_entry v[8];
    entry(&v[0], "base", 20);
    entry(&v[1], "base.en", 21);
    entry(&v[2], "large-v3", 54);
    entry(&v[3], "tiny.en", 11);
    entry(&v[4], "large-v3-turbo", 53);
    entry(&v[5], "mine", 0);     /* unknown: only by --model */
    entry(&v[6], "small", 30);
    entry(&v[7], "small", 30);
    v[7].shadowed = 1;
    int idx[TD_VRAM_MAX_MODELS];
    /* English: .en for its size */
    int n = td_vram_chain_select(v, 8, "en", 0, idx);
    assert_int_equal(n, 5);
    const char *en[] = {"large-v3", "large-v3-turbo", "small", "base.en", "tiny.en"};
    for (int i = 0; i < n; i++)
        assert_string_equal(v[idx[i]].name, en[i]);
    /* automatic: multilingual first, .en only where it is all there is */
    n = td_vram_chain_select(v, 8, NULL, 0, idx);
    const char *aut[] = {"large-v3", "large-v3-turbo", "small", "base", "tiny.en"};
    assert_int_equal(n, 5);
    for (int i = 0; i < n; i++)
        assert_string_equal(v[idx[i]].name, aut[i]);
    /* German, or translating: never .en */
    n = td_vram_chain_select(v, 8, "de", 0, idx);
    assert_int_equal(n, 4);
    assert_string_equal(v[idx[3]].name, "base");
    n = td_vram_chain_select(v, 8, "en", 1, idx);
    assert_int_equal(n, 4);
    assert_string_equal(v[idx[3]].name, "base");
}

/* Installed files: small custom dimensions under release names (the
 * planner reads their headers), a pinned one, and the downgrade below it. */
static void write_model(const char *dir, const char *name, int layers)
{
    td_wmk_spec spec = {.wtype = TD_WT_F16, .seed = 7, .vocab_count = 600};
    td_error err = {0};
    assert_int_equal(td_wmk_dims("tiny.en", &spec.hp, &err), TD_OK);
    spec.hp.n_audio_state = spec.hp.n_text_state = 64;
    spec.hp.n_audio_head = spec.hp.n_text_head = 2;
    spec.hp.n_audio_layer = spec.hp.n_text_layer = layers;
    char path[512];
    snprintf(path, sizeof path, "%s/ggml-%s.bin", dir, name);
    assert_int_equal(td_wmk_write(&spec, path, &err), TD_OK);
}

static void test_chain_installed(void **state)
{
    (void)state;
    char dir[] = "/tmp/td-vram-XXXXXX";
    assert_non_null(mkdtemp(dir));
    write_model(dir, "small.en", 3);
    write_model(dir, "base.en", 2);
    write_model(dir, "tiny.en", 1);
    td_vram_chain c;
    td_error err = {0};
    assert_int_equal(td_vram_chain_installed(dir, NULL, "en", 0, 0, &c, &err), TD_OK);
    assert_int_equal(c.n, 3);
    assert_false(c.pinned);
    assert_string_equal(c.items[0].name, "small.en");
    assert_int_equal(c.items[0].hp.n_text_layer, 3);
    assert_string_equal(c.items[2].name, "tiny.en");
    /* --model base.en: that model alone ... */
    assert_int_equal(td_vram_chain_installed(dir, "base.en", "en", 0, 0, &c, &err), TD_OK);
    assert_int_equal(c.n, 1);
    assert_true(c.pinned);
    assert_string_equal(c.items[0].name, "base.en");
    /* ... and with --allow-downgrade, what is smaller */
    assert_int_equal(td_vram_chain_installed(dir, "base.en", "en", 0, 1, &c, &err), TD_OK);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.items[1].name, "tiny.en");
    /* a pinned model that is not installed */
    assert_int_equal(td_vram_chain_installed(dir, "medium", "en", 0, 0, &c, &err), TD_EUNAVAILABLE);
    /* German: the .en files are no use */
    assert_int_equal(td_vram_chain_installed(dir, NULL, "de", 0, 0, &c, &err), TD_EUNAVAILABLE);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_a770_large_v3_largest_batch),
        cmocka_unit_test(test_one_card_2gb_free_takes_a_smaller_model),
        cmocka_unit_test(test_mixed_pair_per_card_choices),
        cmocka_unit_test(test_recorded_h100),
        cmocka_unit_test(test_no_gpu_nothing_to_plan),
        cmocka_unit_test(test_margin),
        cmocka_unit_test(test_print_needs),
        cmocka_unit_test(test_need_grows_and_refuses),
        cmocka_unit_test(test_step_down),
        cmocka_unit_test(test_chain_select_per_language),
        cmocka_unit_test(test_chain_installed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
