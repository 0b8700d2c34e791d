/*
 * discover.h: the sources device discovery reads, as tables of functions,
 * so that tests can replay answers recorded from real drivers.
 *
 * td_devices_detect (devices.h) fills these tables with dlopen/dlsym from
 * the real libraries (libnvidia-ml.so.1, libze_loader.so.1) and reads the
 * real /sys; that is the path users run. Tests hand td_devices_discover
 * tables of their own and a sysfs root under tests/fixtures/devices/,
 * because CI has no GPU. Nothing here links against a vendor library:
 * the Level Zero header only gives the structures' layout.
 *
 * Level Zero: only zesInit is used, the Sysman entry point that needs no
 * core driver context (the supervisor must never hold one: DESIGN.md,
 * Process model). A loader older than the 1.5 spec has no zesInit; that
 * source is then skipped with a note and sysfs answers for Intel cards.
 */
#ifndef TD_DEVICE_DISCOVER_H
#define TD_DEVICE_DISCOVER_H

#include <stdint.h>

#include <level_zero/zes_api.h>

#include "device/devices.h"

/* nvmlPciInfo_t and nvmlMemory_t as of NVML v3 (nvml.h is not packaged
 * in Debian; these layouts are part of NVML's stable ABI). */
typedef struct td_nvml_pci_info {
    char bus_id_legacy[16];
    unsigned domain, bus, device, pci_device_id, pci_subsystem_id;
    char bus_id[32];
} td_nvml_pci_info;

typedef struct td_nvml_memory { unsigned long long total, free, used; } td_nvml_memory;

/* NVML's functions that discovery calls; each returns 0 (NVML_SUCCESS)
 * or an NVML error code. */
typedef struct td_nvml_api {
    int (*init)(void);                               /* nvmlInit_v2 */
    int (*shutdown)(void);                           /* nvmlShutdown */
    int (*count)(unsigned *n);                       /* nvmlDeviceGetCount_v2 */
    int (*handle)(unsigned i, void **h);             /* nvmlDeviceGetHandleByIndex_v2 */
    int (*name)(void *h, char *out, unsigned len);   /* nvmlDeviceGetName */
    int (*uuid)(void *h, char *out, unsigned len);   /* nvmlDeviceGetUUID */
    int (*pci)(void *h, td_nvml_pci_info *out);      /* nvmlDeviceGetPciInfo_v3 */
    int (*memory)(void *h, td_nvml_memory *out);     /* nvmlDeviceGetMemoryInfo */
} td_nvml_api;

/* Level Zero Sysman's functions that discovery calls (spec 1.5 names). */
typedef struct td_ze_api {
    ze_result_t (*init)(uint32_t flags);                                          /* zesInit */
    ze_result_t (*driver_get)(uint32_t *count, zes_driver_handle_t *drivers);     /* zesDriverGet */
    ze_result_t (*device_get)(zes_driver_handle_t d, uint32_t *count,
                              zes_device_handle_t *devices);                      /* zesDeviceGet */
    ze_result_t (*properties)(zes_device_handle_t d, zes_device_properties_t *p); /* zesDeviceGetProperties */
    ze_result_t (*pci)(zes_device_handle_t d, zes_pci_properties_t *p);          /* zesDevicePciGetProperties */
    ze_result_t (*memory_modules)(zes_device_handle_t d, uint32_t *count,
                                  zes_mem_handle_t *mems);                        /* zesDeviceEnumMemoryModules */
    ze_result_t (*memory_properties)(zes_mem_handle_t m, zes_mem_properties_t *p); /* zesMemoryGetProperties */
    ze_result_t (*memory_state)(zes_mem_handle_t m, zes_mem_state_t *s);          /* zesMemoryGetState */
} td_ze_api;

typedef struct td_discovery {
    const td_nvml_api *nvml;  /* NULL: no NVML (note says why) */
    const td_ze_api *ze;      /* NULL: no Level Zero Sysman */
    const char *sysfs;        /* root holding class/drm and bus/pci/devices: "/sys" */
    const char *nvml_note;    /* why nvml is NULL, for the notes */
    const char *ze_note;      /* why ze is NULL */
    const td_device_list *ze_probe; /* the probe child's answer, or NULL */
} td_discovery;

/* Ask every source, merge cards seen twice (same PCI address), order by
 * PCI address, fill NUMA node and local CPUs, set the affinity variables.
 * Never fails: a source that does not answer adds a note. out is reset. */
void td_devices_discover(const td_discovery *src, td_device_list *out);

#endif
