/* test_devices.c: device discovery (sysfs trees under
 * tests/fixtures/devices/, NVML and Level Zero Sysman answers replayed
 * through the function tables of device/discover.h, because CI has no
 * GPU), Vulkan probe answers (recorded on the H100 and on lavapipe, and
 * filling a sysfs tree's gaps), the merge by PCI address, TAPEDECK_DEVICES, the affinity
 * environment and CPU lists per vendor, the supervisor's check of a
 * worker's [affinity-verify] report, and the worker plan. The real dlopen
 * path runs here too, finding no driver. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "device/affinity.h"
#include "device/devices.h"
#include "device/discover.h"
#include "run/run.h"

static void test_spec_nvidia_uses_uuid_and_pci_order(void **state)
{
    (void)state;
    td_device_list l;
    td_error err = {0};
    assert_int_equal(td_devices_parse_spec("nvidia/00000000:17:00.0/GPU-aaa/81559/H100,"
                                           "nvidia/0000:65:00.0/GPU-bbb/1024",
                                           &l, &err),
                     TD_OK);
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[0].pci, "0000:17:00.0"); /* 8-digit domain normalised */
    assert_string_equal(l.items[0].affinity_var, "CUDA_VISIBLE_DEVICES");
    assert_string_equal(l.items[0].affinity_value, "GPU-aaa");
    assert_string_equal(l.items[0].order_var, "CUDA_DEVICE_ORDER");
    assert_string_equal(l.items[0].order_value, "PCI_BUS_ID");
    assert_string_equal(l.items[1].affinity_value, "GPU-bbb");
    assert_int_equal(l.items[1].mem_total, 1024LL * 1024 * 1024);
    assert_string_equal(l.items[1].name, "GPU");
}

static void test_spec_intel_pins_whole_cards(void **state)
{
    (void)state;
    td_device_list l;
    td_error err = {0};
    assert_int_equal(td_devices_parse_spec("intel/0000:03:00.0/-/16384/A770,intel/0000:04:00.0/-/16384/A770",
                                           &l, &err),
                     TD_OK);
    /* The seed pipeline's bug: "0.1" is tile 1 of card 0. A card is "N". */
    assert_string_equal(l.items[0].affinity_var, "ZE_AFFINITY_MASK");
    assert_string_equal(l.items[0].affinity_value, "0");
    assert_string_equal(l.items[1].affinity_value, "1");
    assert_string_equal(l.items[1].order_var, "ZE_ENABLE_PCI_ID_DEVICE_ORDER");
    assert_string_equal(l.items[0].uuid, "");
}

static void test_spec_errors(void **state)
{
    (void)state;
    td_device_list l;
    td_error err = {0};
    assert_int_equal(td_devices_parse_spec("none", &l, &err), TD_OK);
    assert_int_equal(l.count, 0);
    assert_int_equal(td_devices_parse_spec("matrox/0000:01:00.0/-/1", &l, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "matrox"));
    assert_int_equal(td_devices_parse_spec("nvidia/bogus/-/1", &l, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "bogus"));
    assert_int_equal(td_devices_parse_spec("nvidia/0000:01:00.0/-/lots", &l, &err), TD_EINVAL);
    assert_int_equal(td_devices_parse_spec("nvidia/0000:01:00.0", &l, &err), TD_EINVAL);
}

/* Make ROOT/class/drm/NAME/device -> ROOT/bus/pci/devices/PCI with
 * vendor, class and memory files. */
static void fake_card(const char *root, const char *name, const char *pci, const char *vendor,
                      const char *class_id, const char *vram_total, const char *vram_used)
{
    char path[1024], target[1024];
    snprintf(target, sizeof target, "%s/bus/pci/devices/%s", root, pci);
    assert_int_equal(mkdir(target, 0755), 0);
    const char *files[][2] = {{"vendor", vendor}, {"class", class_id}, {"device", "0x1234"},
                              {"mem_info_vram_total", vram_total}, {"mem_info_vram_used", vram_used}};
    for (size_t i = 0; i < 5; i++) {
        if (!files[i][1])
            continue;
        snprintf(path, sizeof path, "%s/%s", target, files[i][0]);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "%s\n", files[i][1]);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/class/drm/%s", root, name);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/class/drm/%s/device", root, name);
    assert_int_equal(symlink(target, path), 0);
}

static void sysfs_only(const char *root, td_device_list *l)
{
    td_discovery src = {.sysfs = root};
    td_devices_discover(&src, l);
}

static void test_sysfs_finds_cards_in_pci_order(void **state)
{
    (void)state;
    char root[] = "/tmp/td-sysfs-XXXXXX";
    assert_non_null(mkdtemp(root));
    const char *dirs[] = {"bus", "bus/pci", "bus/pci/devices", "class", "class/drm"};
    char path[1024];
    for (size_t i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%s/%s", root, dirs[i]);
        assert_int_equal(mkdir(path, 0755), 0);
    }
    /* card1 is on a lower PCI address than card0: PCI order wins */
    fake_card(root, "card0", "0000:0b:00.0", "0x8086", "0x030000", NULL, NULL);
    fake_card(root, "card1", "0000:03:00.0", "0x8086", "0x038000", NULL, NULL);
    fake_card(root, "card2", "0000:21:00.0", "0x1002", "0x030000", "17163091968", "1073741824");
    fake_card(root, "card3", "0000:30:00.0", "0x10de", "0x030200", NULL, NULL); /* NVIDIA without NVML */
    fake_card(root, "card4", "0000:40:00.0", "0x8086", "0x040300", NULL, NULL); /* audio: not a GPU */
    fake_card(root, "card5", "0000:50:00.0", "0x1af4", "0x030000", NULL, NULL); /* virtio: unknown vendor */
    fake_card(root, "card6", "0000:60:00.0", "0x1002", "0x030000", "1000", "2000"); /* used > total */
    snprintf(path, sizeof path, "%s/class/drm/card0-DP-1", root); /* a connector, not a card */
    assert_int_equal(mkdir(path, 0755), 0);

    td_device_list l;
    sysfs_only(root, &l);
    assert_int_equal(l.count, 5);
    assert_string_equal(l.items[0].pci, "0000:03:00.0");
    assert_string_equal(l.items[0].vendor, "intel");
    assert_string_equal(l.items[0].affinity_value, "0");
    assert_string_equal(l.items[1].pci, "0000:0b:00.0");
    assert_string_equal(l.items[1].affinity_value, "1");
    assert_string_equal(l.items[2].vendor, "amd");
    assert_string_equal(l.items[2].affinity_var, "ROCR_VISIBLE_DEVICES");
    assert_string_equal(l.items[2].affinity_value, "0");
    assert_int_equal(l.items[2].mem_total, 17163091968LL);
    assert_int_equal(l.items[2].mem_free, 17163091968LL - 1073741824LL);
    assert_int_equal(l.items[0].mem_total, -1);
    /* NVIDIA from sysfs alone: no UUID, so pinned by index in PCI order */
    assert_string_equal(l.items[3].vendor, "nvidia");
    assert_string_equal(l.items[3].affinity_value, "0");
    assert_string_equal(l.items[3].uuid, "");
    assert_string_equal(l.items[4].pci, "0000:60:00.0");
    assert_int_equal(l.items[4].mem_free, -1); /* inconsistent counters: unknown, not negative */
    assert_int_equal(l.items[0].numa_node, -1); /* no numa_node file */

    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

#define GIB (1024LL * 1024 * 1024)
#define FIX "tests/fixtures/devices/"

static void test_fixture_two_a770_sysfs(void **state)
{
    (void)state;
    td_device_list l;
    sysfs_only(FIX "two-a770/sys", &l);
    assert_int_equal(l.count, 2); /* card0-DP-1, renderD128 are not cards */
    assert_string_equal(l.items[0].pci, "0000:03:00.0");
    assert_string_equal(l.items[1].pci, "0000:83:00.0");
    for (int i = 0; i < 2; i++) {
        assert_string_equal(l.items[i].vendor, "intel");
        assert_int_equal(l.items[i].mem_total, 16 * GIB);
        assert_int_equal(l.items[i].numa_node, i);
        assert_string_equal(l.items[i].source, "sysfs");
        assert_string_equal(l.items[i].name, "Intel GPU 0x56a0");
    }
    assert_int_equal(l.items[0].mem_free, 16909336576LL);
    assert_int_equal(l.items[1].mem_free, 17045651456LL);
    assert_string_equal(l.items[0].local_cpus, "0-7,16-23");
    assert_string_equal(l.items[1].local_cpus, "8-15,24-31");
    /* whole cards, PCI order: "0" and "1", never "0.1" */
    assert_string_equal(l.items[0].affinity_var, "ZE_AFFINITY_MASK");
    assert_string_equal(l.items[0].affinity_value, "0");
    assert_string_equal(l.items[1].affinity_value, "1");
    assert_string_equal(l.items[1].order_var, "ZE_ENABLE_PCI_ID_DEVICE_ORDER");
    assert_string_equal(l.items[1].order_value, "1");
}

static void test_fixture_one_card_2gb_free(void **state)
{
    (void)state;
    td_device_list l;
    sysfs_only(FIX "one-2gb-free/sys", &l);
    assert_int_equal(l.count, 2);
    /* the integrated GPU first (00:02.0): it is Level Zero's card 0 too */
    assert_string_equal(l.items[0].pci, "0000:00:02.0");
    assert_int_equal(l.items[0].mem_total, -1);
    assert_string_equal(l.items[1].pci, "0000:03:00.0");
    assert_string_equal(l.items[1].affinity_value, "1");
    assert_int_equal(l.items[1].mem_total, 16 * GIB);
    assert_int_equal(l.items[1].mem_free, 2 * GIB);
    assert_int_equal(l.items[1].numa_node, -1); /* "-1": a machine without NUMA */
    assert_string_equal(l.items[1].local_cpus, "0-11");
}

/* ---- Vulkan's answer, from the probe child (recorded) ------------------ */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void hexs(const char *s, char *out)
{
    for (; *s; s++, out += 2)
        sprintf(out, "%02x", (unsigned char)*s);
    *out = '\0';
}

/* The H100's answer (device machine) and lavapipe's (this VM): the card
 * becomes a device with CUDA's UUID pinning; lavapipe, a CPU device
 * without a PCI address, is listed but is no GPU. */
static void test_vulkan_probe_recorded(void **state)
{
    (void)state;
    static td_vulkan_list vk;
    td_devices_parse_vulkan(slurp(FIX "h100/vulkan-probe.txt"), &vk);
    assert_int_equal(vk.count, 1);
    const td_vulkan_seen *v = &vk.items[0];
    assert_string_equal(v->name, "NVIDIA H100 80GB HBM3");
    assert_string_equal(v->vendor, "nvidia");
    assert_string_equal(v->pci, "0000:00:06.0");
    assert_string_equal(v->uuid, "GPU-731ae534-fd47-e7b0-9961-bfba524f82a3");
    assert_int_equal(v->type, 2);
    assert_int_equal(v->usable, 1);
    assert_int_equal(v->mem_total, 85520809984LL);
    assert_int_equal(v->mem_free, 85000323072LL);
    static td_device_list l;
    memset(&l, 0, sizeof l);
    td_devices_merge_vulkan(&l, &vk, FIX "no-gpu/sys");
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].source, "vulkan");
    assert_string_equal(l.items[0].affinity_var, "CUDA_VISIBLE_DEVICES");
    assert_string_equal(l.items[0].affinity_value, "GPU-731ae534-fd47-e7b0-9961-bfba524f82a3");

    td_devices_parse_vulkan(slurp(FIX "lavapipe/vulkan-probe.txt"), &vk);
    assert_int_equal(vk.count, 1);
    assert_int_equal(vk.items[0].type, 4);
    assert_string_equal(vk.items[0].pci, "");
    assert_non_null(strstr(vk.items[0].name, "llvmpipe"));
    memset(&l, 0, sizeof l);
    td_devices_merge_vulkan(&l, &vk, FIX "no-gpu/sys");
    assert_int_equal(l.count, 0);
}

/* A machine sysfs knows only in part (an integrated GPU without memory
 * figures, no UUIDs): Vulkan fills the gaps of the same cards by PCI
 * address and keeps sysfs's own answers; it adds no card twice. */
static void test_vulkan_fills_sysfs_gaps(void **state)
{
    (void)state;
    static td_device_list l;
    sysfs_only(FIX "one-2gb-free/sys", &l);
    assert_int_equal(l.count, 2);
    assert_int_equal(l.items[0].mem_total, -1);
    char igpu[128], a770[128], a770_cm[128], text[1024];
    hexs("Intel(R) UHD Graphics 770 (ADL-S GT1)", igpu);
    hexs("Intel(R) Arc(tm) A770 Graphics (DG2)", a770);
    hexs("KHR 8x8x16, subgroups of 8", a770_cm);
    /* the first line as an older tapedeck wrote it (no matrix field),
     * the others with it ("-": none said) */
    snprintf(text, sizeof text,
             "vk 0000:00:02.0 GPU-00000000-0000-0000-0000-00000000aaaa 1073741824 805306368 8086 1 1 %s -\n"
             "vk 0000:03:00.0 GPU-00000000-0000-0000-0000-00000000bbbb 17179869184 4294967296 8086 2 1 %s - %s\n"
             "vk - GPU-cpu 2147483648 -1 10005 4 1 6c6c766d7069706520 - -\n",
             igpu, a770, a770_cm);
    static td_vulkan_list vk;
    td_devices_parse_vulkan(text, &vk);
    assert_int_equal(vk.count, 3);
    assert_string_equal(vk.items[0].matrix, "");
    assert_string_equal(vk.items[1].matrix, "KHR 8x8x16, subgroups of 8");
    assert_string_equal(vk.items[2].matrix, "");
    td_devices_merge_vulkan(&l, &vk, FIX "one-2gb-free/sys");
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[0].pci, "0000:00:02.0");
    assert_int_equal(l.items[0].mem_total, 1073741824LL);
    assert_int_equal(l.items[0].mem_free, 805306368LL);
    assert_string_equal(l.items[0].uuid, "GPU-00000000-0000-0000-0000-00000000aaaa");
    assert_string_equal(l.items[0].source, "sysfs+vulkan");
    assert_string_equal(l.items[0].name, "Intel(R) UHD Graphics 770 (ADL-S GT1)"); /* sysfs's was generic */
    /* the A770: sysfs told its memory, Vulkan only the UUID */
    assert_int_equal(l.items[1].mem_total, 16 * GIB);
    assert_int_equal(l.items[1].mem_free, 2 * GIB);
    assert_string_equal(l.items[1].uuid, "GPU-00000000-0000-0000-0000-00000000bbbb");
    assert_string_equal(l.items[1].affinity_value, "1"); /* still Level Zero's card 1 */
}

/* Lines that do not parse are skipped; notes kept; the count bounded. */
static void test_vulkan_probe_bad_lines(void **state)
{
    (void)state;
    static td_vulkan_list vk;
    static char text[8192];
    size_t n = 0;
    n += (size_t)snprintf(text + n, sizeof text - n, "note vulkan: no ICD\n");
    n += (size_t)snprintf(text + n, sizeof text - n, "vk zz:00 - 1 1 10de 2 1 41 -\n");  /* PCI */
    n += (size_t)snprintf(text + n, sizeof text - n, "vk - - -5 1 10de 2 1 41 -\n");     /* size */
    n += (size_t)snprintf(text + n, sizeof text - n, "vk - - 1 1 10de 2 1 4\n");         /* fields */
    n += (size_t)snprintf(text + n, sizeof text - n, "vk - - 1 1 10de 2 0 41 7a7a\n");   /* ok */
    for (int i = 0; i < 20; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "vk 0000:%02x:00.0 - -1 -1 1002 2 1 - -\n", i + 1);
    td_devices_parse_vulkan(text, &vk);
    assert_string_equal(vk.note, "vulkan: no ICD");
    assert_int_equal(vk.count, TD_MAX_VULKAN);
    assert_string_equal(vk.items[0].name, "A");
    assert_int_equal(vk.items[0].usable, 0);
    assert_string_equal(vk.items[0].reason, "zz");
    assert_string_equal(vk.items[1].vendor, "amd");
    assert_string_equal(vk.items[1].name, "Vulkan device");
}

static void test_fixture_no_gpu(void **state)
{
    (void)state;
    td_device_list l;
    sysfs_only(FIX "no-gpu/sys", &l);
    assert_int_equal(l.count, 0); /* the BMC's VGA is not a compute device */
    sysfs_only("/nonexistent-td-sysfs", &l);
    assert_int_equal(l.count, 0);
    assert_non_null(strstr(l.notes, "sysfs"));
}

/* ---- NVML answers (an RTX 4090 beside the AMD card of nvidia-amd) ---- */

static int nv_fail_init;
static int nv_init(void) { return nv_fail_init ? 9 /* NVML_ERROR_DRIVER_NOT_LOADED */ : 0; }
static int nv_shutdown(void) { return 0; }
static int nv_count(unsigned *n) { *n = 1; return 0; }
static int nv_handle(unsigned i, void **h) { *h = (void *)(uintptr_t)(i + 1); return 0; }
static int nv_name(void *h, char *out, unsigned len)
{
    (void)h;
    snprintf(out, len, "NVIDIA GeForce RTX 4090");
    return 0;
}
static int nv_uuid(void *h, char *out, unsigned len)
{
    (void)h;
    snprintf(out, len, "GPU-3f1c6a2e-8d4b-11ee-9c2a-0242ac120002");
    return 0;
}
static int nv_pci(void *h, td_nvml_pci_info *p)
{
    (void)h;
    snprintf(p->bus_id, sizeof p->bus_id, "00000000:01:00.0"); /* NVML's 8-digit domain */
    p->bus = 1;
    return 0;
}
static int nv_mem(void *h, td_nvml_memory *m)
{
    (void)h;
    m->total = 25757220864ULL;
    m->used = 470810624ULL;
    m->free = m->total - m->used;
    return 0;
}
static const td_nvml_api nvml_4090 = {nv_init, nv_shutdown, nv_count, nv_handle, nv_name, nv_uuid, nv_pci, nv_mem};

static void test_nvml_merges_with_sysfs_and_amd(void **state)
{
    (void)state;
    td_device_list l;
    td_discovery src = {.nvml = &nvml_4090, .sysfs = FIX "nvidia-amd/sys"};
    td_devices_discover(&src, &l);
    assert_int_equal(l.count, 2); /* the 4090 seen by NVML and sysfs is one device */
    const td_device *nv = &l.items[0], *amd = &l.items[1];
    assert_string_equal(nv->pci, "0000:01:00.0");
    assert_string_equal(nv->vendor, "nvidia");
    assert_string_equal(nv->name, "NVIDIA GeForce RTX 4090");
    assert_string_equal(nv->source, "nvml+sysfs");
    assert_int_equal(nv->mem_total, 25757220864LL);
    assert_int_equal(nv->mem_free, 25757220864LL - 470810624LL);
    assert_string_equal(nv->affinity_var, "CUDA_VISIBLE_DEVICES");
    assert_string_equal(nv->affinity_value, "GPU-3f1c6a2e-8d4b-11ee-9c2a-0242ac120002");
    assert_string_equal(nv->order_var, "CUDA_DEVICE_ORDER");
    assert_string_equal(nv->order_value, "PCI_BUS_ID");
    assert_int_equal(nv->numa_node, 0);
    assert_string_equal(nv->local_cpus, "0-15");
    assert_string_equal(amd->vendor, "amd");
    assert_string_equal(amd->name, "AMD Radeon RX 7900 XTX");
    assert_string_equal(amd->uuid, "GPU-5a7b1c2d3e4f6071");
    assert_int_equal(amd->mem_total, 25753026560LL);
    assert_int_equal(amd->mem_free, 25753026560LL - 1210056704LL);
    assert_string_equal(amd->affinity_var, "ROCR_VISIBLE_DEVICES");
    assert_string_equal(amd->affinity_value, "0");
    assert_string_equal(amd->order_var, "");

    /* NVML present but its driver down: the sysfs entry stays, with a note */
    nv_fail_init = 1;
    td_devices_discover(&src, &l);
    nv_fail_init = 0;
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[0].source, "sysfs");
    assert_string_equal(l.items[0].uuid, "");
    assert_non_null(strstr(l.notes, "nvmlInit failed"));
}

/* ---- Level Zero Sysman answers: two Arc A770s, 16 GiB each ---- */

static int ze_init_result = ZE_RESULT_SUCCESS;
static ze_result_t ze_init(uint32_t flags)
{
    (void)flags;
    return (ze_result_t)ze_init_result;
}
static ze_result_t ze_drivers(uint32_t *n, zes_driver_handle_t *d)
{
    if (d && *n >= 1)
        d[0] = (zes_driver_handle_t)(uintptr_t)0x100;
    *n = 1;
    return ZE_RESULT_SUCCESS;
}
/* Level Zero's own order is not PCI order: card 0x83 comes first. */
static ze_result_t ze_devices(zes_driver_handle_t drv, uint32_t *n, zes_device_handle_t *d)
{
    (void)drv;
    if (d && *n >= 2) {
        d[0] = (zes_device_handle_t)(uintptr_t)0x83;
        d[1] = (zes_device_handle_t)(uintptr_t)0x03;
    }
    *n = 2;
    return ZE_RESULT_SUCCESS;
}
static ze_result_t ze_props(zes_device_handle_t d, zes_device_properties_t *p)
{
    assert_int_equal(p->stype, ZES_STRUCTURE_TYPE_DEVICE_PROPERTIES);
    snprintf(p->core.name, sizeof p->core.name, "Intel(R) Arc(TM) A770 Graphics");
    for (int i = 0; i < 16; i++)
        p->core.uuid.id[i] = (uint8_t)(i == 15 ? (uintptr_t)d : 0x86);
    return ZE_RESULT_SUCCESS;
}
static ze_result_t ze_pci(zes_device_handle_t d, zes_pci_properties_t *p)
{
    p->address.domain = 0;
    p->address.bus = (uint32_t)(uintptr_t)d;
    p->address.device = 0;
    p->address.function = 0;
    return ZE_RESULT_SUCCESS;
}
/* Two modules per card: its VRAM, and a system-memory module that must
 * not count. */
static ze_result_t ze_mems(zes_device_handle_t d, uint32_t *n, zes_mem_handle_t *m)
{
    if (m && *n >= 2) {
        m[0] = (zes_mem_handle_t)((uintptr_t)d << 4 | 1);
        m[1] = (zes_mem_handle_t)((uintptr_t)d << 4 | 2);
    }
    *n = 2;
    return ZE_RESULT_SUCCESS;
}
static ze_result_t ze_mem_props(zes_mem_handle_t m, zes_mem_properties_t *p)
{
    p->location = ((uintptr_t)m & 0xf) == 1 ? ZES_MEM_LOC_DEVICE : ZES_MEM_LOC_SYSTEM;
    return ZE_RESULT_SUCCESS;
}
static ze_result_t ze_mem_state(zes_mem_handle_t m, zes_mem_state_t *s)
{
    assert_int_equal(s->stype, ZES_STRUCTURE_TYPE_MEM_STATE);
    s->size = ((uintptr_t)m & 0xf) == 1 ? 16 * GIB : 64 * GIB;
    s->free = ((uintptr_t)m >> 4) == 0x03 ? 2 * GIB : 15 * GIB; /* card 03: 2 GiB free */
    return ZE_RESULT_SUCCESS;
}
static const td_ze_api ze_two_a770 = {ze_init, ze_drivers, ze_devices, ze_props, ze_pci, ze_mems, ze_mem_props,
                                      ze_mem_state};

static void test_level_zero_merges_with_sysfs(void **state)
{
    (void)state;
    td_device_list l;
    td_discovery src = {.ze = &ze_two_a770, .sysfs = FIX "two-a770/sys"};
    td_devices_discover(&src, &l);
    assert_int_equal(l.count, 2);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(l.items[i].name, "Intel(R) Arc(TM) A770 Graphics");
        assert_string_equal(l.items[i].source, "level-zero+sysfs");
        assert_int_equal(l.items[i].mem_total, 16 * GIB); /* the system module left out */
        assert_int_equal(l.items[i].numa_node, i);
        assert_string_equal(l.items[i].affinity_value, i == 0 ? "0" : "1"); /* PCI order, not Sysman's */
    }
    /* Sysman's free memory wins over sysfs's (first source kept) */
    assert_string_equal(l.items[0].pci, "0000:03:00.0");
    assert_int_equal(l.items[0].mem_free, 2 * GIB);
    assert_int_equal(l.items[1].mem_free, 15 * GIB);
    assert_string_equal(l.items[0].uuid, "86868686-8686-8686-8686-868686868603");

    /* zesInit failing (no Intel driver): sysfs still answers */
    ze_init_result = ZE_RESULT_ERROR_UNINITIALIZED;
    td_devices_discover(&src, &l);
    ze_init_result = ZE_RESULT_SUCCESS;
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[0].source, "sysfs");
    assert_non_null(strstr(l.notes, "level-zero: init failed"));
}

/* The probe child's answer (Level Zero through zeInit, for loaders
 * without zesInit) travels as text: what Sysman said must come back. */
static void test_level_zero_probe_round_trip(void **state)
{
    (void)state;
    td_device_list sysman;
    td_discovery src = {.ze = &ze_two_a770};
    td_devices_discover(&src, &sysman);
    assert_int_equal(sysman.count, 2);
    char text[4096];
    size_t need = td_devices_format_probe(&sysman, text, sizeof text);
    assert_true(need > 0 && need < sizeof text);
    assert_int_equal(td_devices_format_probe(&sysman, NULL, 0), need);
    char small[20];
    assert_int_equal(td_devices_format_probe(&sysman, small, sizeof small), need); /* truncated, NUL-ended */
    assert_int_equal(strlen(small), sizeof small - 1);

    td_device_list back;
    memset(&back, 0, sizeof back);
    td_devices_parse_probe(text, &back);
    assert_int_equal(back.count, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(back.items[i].pci, sysman.items[i].pci);
        assert_string_equal(back.items[i].uuid, sysman.items[i].uuid);
        assert_string_equal(back.items[i].name, "Intel(R) Arc(TM) A770 Graphics"); /* spaces survive */
        assert_int_equal(back.items[i].mem_total, sysman.items[i].mem_total);
        assert_int_equal(back.items[i].mem_free, sysman.items[i].mem_free);
        assert_string_equal(back.items[i].source, "level-zero");
    }
    /* merged with the sysfs tree like a direct Sysman answer */
    td_device_list merged;
    td_discovery with_probe = {.ze_probe = &back, .sysfs = FIX "two-a770/sys"};
    td_devices_discover(&with_probe, &merged);
    assert_int_equal(merged.count, 2);
    assert_string_equal(merged.items[0].source, "level-zero+sysfs");
    assert_int_equal(merged.items[0].mem_free, 2 * GIB);
    assert_int_equal(merged.items[1].numa_node, 1);

    /* junk and broken lines are ignored, notes kept */
    memset(&back, 0, sizeof back);
    td_devices_parse_probe("garbage\nze 0000:03:00.0 - 100 200 41\nze bogus - 1 1 41\n"
                           "ze 0000:04:00.0 - 100 50 4g\nze 0000:05:00.0 - -1 -1 -\nnote init failed\n",
                           &back);
    assert_int_equal(back.count, 2); /* free > total rejected; bad address rejected */
    assert_string_equal(back.items[0].pci, "0000:04:00.0");
    assert_string_equal(back.items[0].name, "Intel GPU"); /* bad hex name */
    assert_int_equal(back.items[1].mem_total, -1);
    assert_string_equal(back.notes, "init failed");
}

static void test_real_discovery_without_gpu_does_not_fail(void **state)
{
    (void)state;
    unsetenv("TAPEDECK_DEVICES");
    td_device_list l;
    td_error err = {0};
    /* whatever this machine has; each missing library or driver is a note */
    assert_int_equal(td_devices_detect(&l, &err), TD_OK);
    if (l.count == 0)
        assert_true(strlen(l.notes) > 0);
}

static void test_detect_honours_override(void **state)
{
    (void)state;
    setenv("TAPEDECK_DEVICES", "amd/0000:05:00.0/-/8192/RX", 1);
    td_device_list l;
    td_error err = {0};
    assert_int_equal(td_devices_detect(&l, &err), TD_OK);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].source, "env");
    unsetenv("TAPEDECK_DEVICES");
}

static void test_affinity_other_vendors_unverified(void **state)
{
    (void)state;
    char detail[128];
    td_device_identity seen;
    assert_int_equal(td_affinity_verify("intel", "0000:03:00.0", &seen, detail, sizeof detail),
                     TD_AFFINITY_UNVERIFIED);
    assert_true(strlen(detail) > 0);
    assert_string_equal(seen.pci, "");
}

static void test_affinity_env_per_vendor(void **state)
{
    (void)state;
    td_device_list l;
    td_error err = {0};
    assert_int_equal(td_devices_parse_spec("nvidia/0000:17:00.0/GPU-aaa/80000/H100,intel/0000:03:00.0/-/16384,"
                                           "intel/0000:04:00.0/-/16384,amd/0000:21:00.0/-/24000",
                                           &l, &err),
                     TD_OK);
    const char *pairs[2][2];
    assert_int_equal(td_affinity_env(&l.items[0], pairs), 2);
    assert_string_equal(pairs[0][0], "CUDA_VISIBLE_DEVICES");
    assert_string_equal(pairs[0][1], "GPU-aaa");
    assert_string_equal(pairs[1][0], "CUDA_DEVICE_ORDER");
    assert_string_equal(pairs[1][1], "PCI_BUS_ID");
    assert_int_equal(td_affinity_env(&l.items[2], pairs), 2);
    assert_string_equal(pairs[0][0], "ZE_AFFINITY_MASK");
    assert_string_equal(pairs[0][1], "1");
    assert_null(strchr(pairs[0][1], '.')); /* a card, not a tile */
    assert_string_equal(pairs[1][0], "ZE_ENABLE_PCI_ID_DEVICE_ORDER");
    assert_int_equal(td_affinity_env(&l.items[3], pairs), 1);
    assert_string_equal(pairs[0][0], "ROCR_VISIBLE_DEVICES");
    assert_string_equal(pairs[0][1], "0");
}

static void test_cpulist_parse(void **state)
{
    (void)state;
    cpu_set_t set;
    assert_int_equal(td_cpulist_parse("0-7,16-23\n", &set), 16);
    assert_true(CPU_ISSET(0, &set) && CPU_ISSET(7, &set) && CPU_ISSET(16, &set) && CPU_ISSET(23, &set));
    assert_false(CPU_ISSET(8, &set) || CPU_ISSET(15, &set) || CPU_ISSET(24, &set));
    assert_int_equal(td_cpulist_parse("3", &set), 1);
    assert_true(CPU_ISSET(3, &set));
    assert_int_equal(td_cpulist_parse("1,1,0-1", &set), 2); /* overlaps count once */
    assert_int_equal(td_cpulist_parse("", &set), 0);
    assert_int_equal(td_cpulist_parse("7-3", &set), -1);
    assert_int_equal(td_cpulist_parse("0-", &set), -1);
    assert_int_equal(td_cpulist_parse("a", &set), -1);
    assert_int_equal(td_cpulist_parse("0;1", &set), -1);
    assert_int_equal(td_cpulist_parse("99999999", &set), -1); /* beyond CPU_SETSIZE */
    char out[64];
    assert_int_equal(td_cpulist_parse("0-7,16-23,30", &set), 17);
    td_cpulist_format(&set, out, sizeof out);
    assert_string_equal(out, "0-7,16-23,30");
    CPU_ZERO(&set);
    td_cpulist_format(&set, out, sizeof out);
    assert_string_equal(out, "");

    /* TAPEDECK_DEVICES's CPU list field ('+' for ',') */
    td_device_list l;
    td_error err = {0};
    assert_int_equal(td_devices_parse_spec("intel/0000:03:00.0/-/16384/A770/0-3+8", &l, &err), TD_OK);
    assert_string_equal(l.items[0].local_cpus, "0-3,8");
    assert_string_equal(l.items[0].name, "A770");
}

static void test_affinity_report_checks(void **state)
{
    (void)state;
    td_device_list l;
    td_error err = {0};
    assert_int_equal(td_devices_parse_spec("nvidia/0000:17:00.0/GPU-3f1c6a2e-8d4b-11ee-9c2a-0242ac120002/80000",
                                           &l, &err),
                     TD_OK);
    const td_device *d = &l.items[0];
    char detail[256];
    td_device_identity seen = {"", ""};
    assert_int_equal(td_affinity_check_report(d, &seen, detail, sizeof detail), TD_AFFINITY_UNVERIFIED);
    /* CUDA's 8-digit domain and Vulkan's bare UUID bytes still match */
    snprintf(seen.pci, sizeof seen.pci, "00000000:17:00.0");
    snprintf(seen.uuid, sizeof seen.uuid, "3F1C6A2E8D4B11EE9C2A0242AC120002");
    assert_int_equal(td_affinity_check_report(d, &seen, detail, sizeof detail), TD_AFFINITY_OK);
    /* the wrong card: the seed's "every worker sees device 0" */
    snprintf(seen.pci, sizeof seen.pci, "0000:65:00.0");
    assert_int_equal(td_affinity_check_report(d, &seen, detail, sizeof detail), TD_AFFINITY_MISMATCH);
    assert_non_null(strstr(detail, "0000:65:00.0"));
    /* right address, other UUID */
    snprintf(seen.pci, sizeof seen.pci, "0000:17:00.0");
    snprintf(seen.uuid, sizeof seen.uuid, "GPU-00000000-0000-0000-0000-000000000000");
    assert_int_equal(td_affinity_check_report(d, &seen, detail, sizeof detail), TD_AFFINITY_MISMATCH);
    assert_non_null(strstr(detail, "UUID"));
    /* a CPU worker must not report a GPU */
    assert_int_equal(td_affinity_check_report(NULL, &seen, detail, sizeof detail), TD_AFFINITY_MISMATCH);
    /* two workers on one card: by address, or by UUID alone */
    td_device_identity others[3] = {{"0000:17:00.0", ""}, {"", "GPU-3f1c6a2e-8d4b-11ee-9c2a-0242ac120002"}, {"", ""}};
    td_device_identity mine = {"00000000:17:00.0", ""};
    assert_int_equal(td_affinity_same_card(&mine, others, 3), 0);
    mine = (td_device_identity){"", "3f1c6a2e8d4b11ee9c2a0242ac120002"};
    assert_int_equal(td_affinity_same_card(&mine, others, 3), 1);
    mine = (td_device_identity){"0000:65:00.0", "GPU-ffff"};
    assert_int_equal(td_affinity_same_card(&mine, others, 3), -1);
    mine = (td_device_identity){"", ""};
    assert_int_equal(td_affinity_same_card(&mine, others, 3), -1); /* empty matches nothing */
    assert_true(td_affinity_same_pci("0000:0A:00.0", "00000000:0a:00.0"));
    assert_false(td_affinity_same_pci("0000:0a:00.0", "0000:0a:00.1"));
    assert_false(td_affinity_same_pci("bogus", "bogus"));
}

static void test_default_cpu_workers(void **state)
{
    (void)state;
    /* GPU workers computing on the CPU: no CPU workers by default */
    assert_int_equal(td_plan_default_cpu_workers(64, 2, 0), 0);
    /* cards computing: 64 cores - 2 x 2 feeding threads = 60 -> 7 workers of 8 */
    assert_int_equal(td_plan_default_cpu_workers(64, 2, 1), 7);
    assert_int_equal(td_plan_default_cpu_workers(8, 2, 1), 0); /* 4 left: not a whole worker */
    assert_int_equal(td_plan_default_cpu_workers(4, 4, 1), 0);
    assert_int_equal(td_plan_default_cpu_workers(4096, 1, 1), TD_MAX_DEVICES);
}

static td_plan g_plan; /* large */

static void test_plan_devices_selection_and_lines(void **state)
{
    (void)state;
    setenv("TAPEDECK_DEVICES", "intel/0000:03:00.0/-/16384/A770,intel/0000:83:00.0/-/16384/A770", 1);
    td_run_opts o;
    td_run_opts_default(&o);
    memset(&g_plan, 0, sizeof g_plan);
    g_plan.engine = "whisper";
    snprintf(g_plan.backend, sizeof g_plan.backend, "cpu");
    td_error err = {0};
    assert_int_equal(td_plan_devices(&o, &g_plan, &err), TD_OK);
    assert_int_equal(g_plan.n_workers, 2); /* one per card, no CPU worker beside CPU-computing GPU workers */
    char line[1024];
    td_plan_describe_hardware(&g_plan, 32, line, sizeof line);
    assert_string_equal(line, "CPU 32 | GPUs [intel 0000:03:00.0 A770 16.0 GiB, intel 0000:83:00.0 A770 16.0 GiB]"
                              " | backend=cpu");
    td_plan_describe_workers(&g_plan, line, sizeof line);
    assert_string_equal(line, "[gpu0 0000:03:00.0, gpu1 0000:83:00.0]");

    o.devices = "pci:0000:83:00.0";
    o.cpu_workers = 2;
    assert_int_equal(td_plan_devices(&o, &g_plan, &err), TD_OK);
    assert_int_equal(g_plan.n_workers, 3);
    assert_string_equal(g_plan.workers[0].device->pci, "0000:83:00.0");
    assert_null(g_plan.workers[1].device);
    assert_int_equal(g_plan.workers[2].slot, 2);
    td_plan_describe_workers(&g_plan, line, sizeof line);
    assert_string_equal(line, "[gpu0 0000:83:00.0, cpu1, cpu2]");

    /* a card computing: GPU workers keep their feeding threads */
    snprintf(g_plan.backend, sizeof g_plan.backend, "vulkan");
    o.devices = "1,0";
    o.cpu_workers = -1;
    assert_int_equal(td_plan_devices(&o, &g_plan, &err), TD_OK);
    assert_string_equal(g_plan.workers[0].device->pci, "0000:83:00.0");
    assert_int_equal(g_plan.workers[0].threads, TD_GPU_FEED_THREADS);

    o.devices = "cpu";
    assert_int_equal(td_plan_devices(&o, &g_plan, &err), TD_OK);
    for (size_t i = 0; i < g_plan.n_workers; i++)
        assert_null(g_plan.workers[i].device);
    o.devices = "pci:0000:99:00.0";
    assert_int_equal(td_plan_devices(&o, &g_plan, &err), TD_EINVAL);
    o.devices = "2";
    assert_int_equal(td_plan_devices(&o, &g_plan, &err), TD_EINVAL);
    o.devices = "0,pci:0000:03:00.0";
    assert_int_equal(td_plan_devices(&o, &g_plan, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "twice"));
    unsetenv("TAPEDECK_DEVICES");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_nvidia_uses_uuid_and_pci_order),
        cmocka_unit_test(test_spec_intel_pins_whole_cards),
        cmocka_unit_test(test_spec_errors),
        cmocka_unit_test(test_sysfs_finds_cards_in_pci_order),
        cmocka_unit_test(test_fixture_two_a770_sysfs),
        cmocka_unit_test(test_fixture_one_card_2gb_free),
        cmocka_unit_test(test_fixture_no_gpu),
        cmocka_unit_test(test_vulkan_probe_recorded),
        cmocka_unit_test(test_vulkan_fills_sysfs_gaps),
        cmocka_unit_test(test_vulkan_probe_bad_lines),
        cmocka_unit_test(test_nvml_merges_with_sysfs_and_amd),
        cmocka_unit_test(test_level_zero_merges_with_sysfs),
        cmocka_unit_test(test_level_zero_probe_round_trip),
        cmocka_unit_test(test_real_discovery_without_gpu_does_not_fail),
        cmocka_unit_test(test_detect_honours_override),
        cmocka_unit_test(test_affinity_other_vendors_unverified),
        cmocka_unit_test(test_affinity_env_per_vendor),
        cmocka_unit_test(test_cpulist_parse),
        cmocka_unit_test(test_affinity_report_checks),
        cmocka_unit_test(test_default_cpu_workers),
        cmocka_unit_test(test_plan_devices_selection_and_lines),
    };
    return cmocka_run_group_tests_name("devices", tests, NULL, NULL);
}
