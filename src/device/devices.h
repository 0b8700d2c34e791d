/*
 * devices.h: finding the machine's GPUs without creating a GPU context.
 *
 * The supervisor must never initialise CUDA, OpenCL or Level Zero's core
 * (a forked child of such a process is unusable), so discovery asks only
 * what needs no context, each source loaded with dlopen and skipped with a
 * note when it is missing (never linked, never fatal):
 *   NVIDIA  NVML (libnvidia-ml.so.1): name, UUID, PCI address, memory.
 *   Intel   Level Zero Sysman (libze_loader.so.1, zesInit): name, UUID,
 *           PCI address, device memory modules' size and free bytes (a
 *           loader without zesInit: the same asked by a probe child, see
 *           td_devices_set_probe_exe); else sysfs /sys/class/drm/cardN/device (vendor 0x8086) with
 *           memory from i915's lmem_{total,avail}_bytes or xe's
 *           tile0/physical_vram_size_bytes where present.
 *   AMD     amdgpu sysfs: mem_info_vram_{total,used}, product_name,
 *           unique_id.
 *   any     sysfs also lists NVIDIA cards (nvidia-drm), so a card whose
 *           NVML is missing is still seen (without UUID or memory).
 *   any     Vulkan, asked by a probe child (td_devices_probe_vulkan) only
 *           where the sources above left a card's memory or UUID unknown.
 * One card seen by two sources is one device: entries merge by PCI
 * address, the first source's answers kept and the gaps filled by the
 * next (NVML, then Level Zero, then sysfs). Every device gets its NUMA
 * node and local CPUs from /sys/bus/pci/devices/ADDR/{numa_node,
 * local_cpulist}. The list is in PCI order.
 *
 * Each device carries the affinity variables that pin a worker to it:
 *   NVIDIA  CUDA_VISIBLE_DEVICES=GPU-<uuid> (with CUDA_DEVICE_ORDER=PCI_BUS_ID)
 *   Intel   ZE_AFFINITY_MASK=<card index among Intel cards in PCI order>
 *           (with ZE_ENABLE_PCI_ID_DEVICE_ORDER=1, which makes Level Zero
 *           number cards in that same order; a whole card, never "0.N")
 *   AMD     ROCR_VISIBLE_DEVICES=<index among AMD cards in PCI order>
 *
 * TAPEDECK_DEVICES overrides discovery, for tests on machines without
 * GPUs and for users who want to name devices: a comma-separated list of
 * VENDOR/PCI/UUID/TOTAL_MIB[/NAME[/CPUS]] (CPUS: the local CPU list with
 * "+" for ","; e.g.
 * "nvidia/0000:01:00.0/GPU-1234/81920/H100"; UUID "-" for none), or
 * "none" for no GPUs.
 *
 * Ownership: td_devices_detect fills a caller-owned list (fixed array).
 */
#ifndef TD_DEVICE_DEVICES_H
#define TD_DEVICE_DEVICES_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

#define TD_MAX_DEVICES 64

typedef struct td_device {
    char vendor[16];        /* "nvidia", "intel", "amd" */
    char name[128];
    char pci[32];           /* "0000:01:00.0" (lowercase) */
    char uuid[96];          /* NVIDIA "GPU-..."; "" if unknown */
    int index;              /* among devices of its vendor, PCI order */
    int64_t mem_total;      /* bytes, -1 unknown */
    int64_t mem_free;       /* bytes, -1 unknown */
    char affinity_var[32];  /* e.g. "CUDA_VISIBLE_DEVICES" */
    char affinity_value[96];
    char order_var[40];     /* e.g. "CUDA_DEVICE_ORDER" */
    char order_value[16];   /* e.g. "PCI_BUS_ID" */
    char source[40];        /* "nvml", "level-zero", "sysfs", "env", or
                             * several joined by '+' after a merge */
    int numa_node;          /* -1 unknown or no NUMA */
    char local_cpus[256];   /* local_cpulist, e.g. "0-15,32-47"; "" unknown */
} td_device;

typedef struct td_device_list {
    td_device items[TD_MAX_DEVICES];
    size_t count;
    char notes[1024];      /* what was tried and not found, for `devices` */
} td_device_list;

int td_devices_detect(td_device_list *out, td_error *err);

/* td_devices_discover (discover.h) takes the sources as tables, for tests. */

/* Intel cards behind a Level Zero loader without zesInit (Debian 12's):
 * td_devices_detect runs a short-lived child, PATH probe-level-zero,
 * that asks the older way (zeInit with ZES_ENABLE_SYSMAN=1: a driver
 * context, in the child only) and prints its answer; the supervisor reads
 * it. The CLI sets PATH to its own executable; NULL (the default, e.g. in
 * tests) leaves that source out. path must outlive the detections. */
void td_devices_set_probe_exe(const char *path);

/* The child's side: Level Zero Sysman through zeInit, into out (notes
 * say what did not answer). Call only in a process that forks nothing. */
void td_devices_probe_level_zero(td_device_list *out);

/* The probe's answer as text, one line per device ("ze PCI UUID|- TOTAL
 * FREE HEXNAME", bytes, -1 unknown) and per note ("note TEXT"); and back.
 * format returns the length it needed (truncated to cap, like snprintf);
 * parse adds the devices (source "level-zero") and notes it understands to
 * out and ignores other lines. */
size_t td_devices_format_probe(const td_device_list *l, char *out, size_t cap);

/* What Vulkan sees, asked by a probe child too (`PATH probe-vulkan`, the
 * answer's lines in whisper/backend/vulkan/probe.h): the supervisor loads
 * no GPU runtime itself. Every physical device, GPUs and others (Mesa's
 * lavapipe is a CPU device), with whether the backend can run there. */
#define TD_MAX_VULKAN 16
typedef struct td_vulkan_seen {
    char name[128];
    char vendor[16];        /* "nvidia", "intel", "amd", or the PCI vendor id */
    char pci[32];           /* "" without VK_EXT_pci_bus_info */
    char uuid[96];
    int type;               /* VkPhysicalDeviceType: 1 integrated, 2 discrete,
                             * 3 virtual, 4 cpu, 0 other */
    int usable;
    char reason[128];       /* why not, when not usable */
    int64_t mem_total, mem_free; /* bytes; -1 unknown */
    char matrix[96];        /* the matrix engines the backend would use ("NV 16x16x16",
                             * "KHR 8x8x16, subgroups of 8", "none"); "" unknown */
} td_vulkan_seen;
typedef struct td_vulkan_list {
    td_vulkan_seen items[TD_MAX_VULKAN];
    size_t count;
    char note[320];         /* why Vulkan answered nothing, or "" */
} td_vulkan_list;

/* Parse a probe child's answer (bad lines skipped, counts bounded). */
void td_devices_parse_vulkan(const char *text, td_vulkan_list *out);
/* Run the probe child (td_devices_set_probe_exe) with a time limit; 0 when
 * it answered, else -1 with out->note saying why. */
int td_devices_probe_vulkan(td_vulkan_list *out);
/* Vulkan's GPUs that have a PCI address into list: a card another source
 * found gets the gaps filled (UUID, memory), one no source found is added
 * (source "vulkan"); then the list is put back in PCI order with its
 * affinity variables. CPU devices are not GPUs and are left out. */
void td_devices_merge_vulkan(td_device_list *list, const td_vulkan_list *vk, const char *sysfs);
void td_devices_parse_probe(const char *text, td_device_list *out);

/* Parse a TAPEDECK_DEVICES-style specification (exposed for tests). */
int td_devices_parse_spec(const char *spec, td_device_list *out, td_error *err);

#endif
