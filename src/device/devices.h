/*
 * devices.h: finding the machine's GPUs without creating a GPU context.
 *
 * The supervisor must never initialise CUDA, OpenCL or Level Zero (a
 * forked child of such a process is unusable), so discovery uses what needs
 * no context:
 *   NVIDIA  NVML, loaded with dlopen (libnvidia-ml.so.1): name, UUID, PCI
 *           bus id, total and free memory.
 *   Intel   sysfs /sys/class/drm/cardN/device (vendor 0x8086, display
 *           class), in PCI order; memory is not known without Sysman.
 *   AMD     sysfs, vendor 0x1002, mem_info_vram_{total,used}.
 * Each device carries the affinity variable that pins a worker to it:
 *   NVIDIA  CUDA_VISIBLE_DEVICES=GPU-<uuid> (with CUDA_DEVICE_ORDER=PCI_BUS_ID)
 *   Intel   ZE_AFFINITY_MASK=<card index> (with ZE_ENABLE_PCI_ID_DEVICE_ORDER=1)
 *   AMD     ROCR_VISIBLE_DEVICES=<index>
 *
 * TAPEDECK_DEVICES overrides discovery, for tests on machines without
 * GPUs and for users who want to name devices: a comma-separated list of
 * VENDOR:PCI:UUID:TOTAL_MIB:NAME (e.g. "nvidia:0000:01:00.0:GPU-1234:81920:H100"
 * with the PCI address's colons kept; see devices.c for the exact grammar),
 * or "none" for no GPUs.
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
    char source[16];        /* "nvml", "sysfs", "env" */
} td_device;

typedef struct td_device_list {
    td_device items[TD_MAX_DEVICES];
    size_t count;
    char notes[512];        /* what was tried and not found, for `devices` */
} td_device_list;

int td_devices_detect(td_device_list *out, td_error *err);

/* Add the Intel and AMD GPUs found under a sysfs DRM directory
 * ("/sys/class/drm"; exposed so tests can point it at a made-up tree). */
void td_devices_detect_sysfs(td_device_list *list, const char *drm_root);

/* Parse a TAPEDECK_DEVICES-style specification (exposed for tests). */
int td_devices_parse_spec(const char *spec, td_device_list *out, td_error *err);

#endif
