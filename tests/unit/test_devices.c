/* test_devices.c: device discovery from sysfs and TAPEDECK_DEVICES, and
 * the affinity variables each device gets. NVML needs a real driver; its
 * path is proven on the GPU machine (README, GPU setup). */
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

/* Make DRM_ROOT/NAME/device -> DEVS/PCI with vendor, class and memory files. */
static void fake_card(const char *root, const char *name, const char *pci, const char *vendor,
                      const char *class_id, const char *vram_total, const char *vram_used)
{
    char path[1024], target[1024];
    snprintf(target, sizeof target, "%s/devices/%s", root, pci);
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
    snprintf(path, sizeof path, "%s/drm/%s", root, name);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/drm/%s/device", root, name);
    assert_int_equal(symlink(target, path), 0);
}

static void test_sysfs_finds_intel_and_amd_in_pci_order(void **state)
{
    (void)state;
    char root[] = "/tmp/td-sysfs-XXXXXX";
    assert_non_null(mkdtemp(root));
    char path[1024];
    snprintf(path, sizeof path, "%s/devices", root);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/drm", root);
    assert_int_equal(mkdir(path, 0755), 0);
    /* card1 is on a lower PCI address than card0: PCI order wins */
    fake_card(root, "card0", "0000:0b:00.0", "0x8086", "0x030000", NULL, NULL);
    fake_card(root, "card1", "0000:03:00.0", "0x8086", "0x038000", NULL, NULL);
    fake_card(root, "card2", "0000:21:00.0", "0x1002", "0x030000", "17163091968", "1073741824");
    fake_card(root, "card3", "0000:30:00.0", "0x10de", "0x030000", NULL, NULL); /* NVIDIA: NVML's */
    fake_card(root, "card4", "0000:40:00.0", "0x8086", "0x040300", NULL, NULL); /* audio: not a GPU */
    snprintf(path, sizeof path, "%s/drm/card0-DP-1", root); /* a connector, not a card */
    assert_int_equal(mkdir(path, 0755), 0);

    snprintf(path, sizeof path, "%s/drm", root);
    td_device_list l;
    memset(&l, 0, sizeof l);
    td_devices_detect_sysfs(&l, path);
    assert_int_equal(l.count, 3);
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

    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
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
    assert_int_equal(td_affinity_verify("intel", "0000:03:00.0", detail, sizeof detail),
                     TD_AFFINITY_UNVERIFIED);
    assert_true(strlen(detail) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_nvidia_uses_uuid_and_pci_order),
        cmocka_unit_test(test_spec_intel_pins_whole_cards),
        cmocka_unit_test(test_spec_errors),
        cmocka_unit_test(test_sysfs_finds_intel_and_amd_in_pci_order),
        cmocka_unit_test(test_detect_honours_override),
        cmocka_unit_test(test_affinity_other_vendors_unverified),
    };
    return cmocka_run_group_tests_name("devices", tests, NULL, NULL);
}
