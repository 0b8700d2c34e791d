/* devices.c: GPU discovery through NVML and sysfs, no GPU context (see devices.h). */
#include "device/devices.h"

#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- PCI address normalisation ------------------------------------- */

/* "00000000:01:00.0" or "0000:01:00.0" -> "0000:01:00.0"; 0 on success. */
static int normalise_pci(const char *in, char *out, size_t out_len)
{
    unsigned domain, bus, dev, fn;
    if (sscanf(in, "%x:%x:%x.%x", &domain, &bus, &dev, &fn) != 4)
        return -1;
    snprintf(out, out_len, "%04x:%02x:%02x.%x", domain & 0xffff, bus, dev, fn);
    return 0;
}

static void add_note(td_device_list *list, const char *note)
{
    size_t used = strlen(list->notes);
    snprintf(list->notes + used, sizeof list->notes - used, "%s%s", used ? "; " : "", note);
}

static void set_affinity(td_device *d)
{
    if (strcmp(d->vendor, "nvidia") == 0) {
        snprintf(d->affinity_var, sizeof d->affinity_var, "CUDA_VISIBLE_DEVICES");
        if (d->uuid[0])
            snprintf(d->affinity_value, sizeof d->affinity_value, "%s", d->uuid);
        else
            snprintf(d->affinity_value, sizeof d->affinity_value, "%d", d->index);
        snprintf(d->order_var, sizeof d->order_var, "CUDA_DEVICE_ORDER");
        snprintf(d->order_value, sizeof d->order_value, "PCI_BUS_ID");
    } else if (strcmp(d->vendor, "intel") == 0) {
        /* A whole card: "N", never "0.N" (that is tile N of card 0). */
        snprintf(d->affinity_var, sizeof d->affinity_var, "ZE_AFFINITY_MASK");
        snprintf(d->affinity_value, sizeof d->affinity_value, "%d", d->index);
        snprintf(d->order_var, sizeof d->order_var, "ZE_ENABLE_PCI_ID_DEVICE_ORDER");
        snprintf(d->order_value, sizeof d->order_value, "1");
    } else {
        snprintf(d->affinity_var, sizeof d->affinity_var, "ROCR_VISIBLE_DEVICES");
        snprintf(d->affinity_value, sizeof d->affinity_value, "%d", d->index);
    }
}

/* ---- NVIDIA: NVML through dlopen ------------------------------------ */

typedef struct nvml_pci_info { /* nvmlPciInfo_t as of NVML v3 */
    char bus_id_legacy[16];
    unsigned domain, bus, device, pci_device_id, pci_subsystem_id;
    char bus_id[32];
} nvml_pci_info;

typedef struct nvml_memory { unsigned long long total, free, used; } nvml_memory;

typedef int (*nvml_void_fn)(void);
typedef int (*nvml_count_fn)(unsigned *);
typedef int (*nvml_handle_fn)(unsigned, void **);
typedef int (*nvml_str_fn)(void *, char *, unsigned);
typedef int (*nvml_pci_fn)(void *, nvml_pci_info *);
typedef int (*nvml_mem_fn)(void *, nvml_memory *);

static void detect_nvidia(td_device_list *list)
{
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        add_note(list, "nvidia: NVML not found (no NVIDIA driver)");
        return;
    }
    nvml_void_fn init = (nvml_void_fn)dlsym(lib, "nvmlInit_v2");
    nvml_void_fn shutdown = (nvml_void_fn)dlsym(lib, "nvmlShutdown");
    nvml_count_fn count = (nvml_count_fn)dlsym(lib, "nvmlDeviceGetCount_v2");
    nvml_handle_fn handle = (nvml_handle_fn)dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    nvml_str_fn get_name = (nvml_str_fn)dlsym(lib, "nvmlDeviceGetName");
    nvml_str_fn get_uuid = (nvml_str_fn)dlsym(lib, "nvmlDeviceGetUUID");
    nvml_pci_fn get_pci = (nvml_pci_fn)dlsym(lib, "nvmlDeviceGetPciInfo_v3");
    nvml_mem_fn get_mem = (nvml_mem_fn)dlsym(lib, "nvmlDeviceGetMemoryInfo");
    if (!init || !shutdown || !count || !handle || !get_name || !get_uuid || !get_pci || !get_mem) {
        add_note(list, "nvidia: NVML too old (missing functions)");
        dlclose(lib);
        return;
    }
    if (init() != 0) {
        add_note(list, "nvidia: nvmlInit failed (driver not loaded?)");
        dlclose(lib);
        return;
    }
    unsigned n = 0;
    if (count(&n) != 0)
        n = 0;
    int vendor_index = 0;
    for (unsigned i = 0; i < n && list->count < TD_MAX_DEVICES; i++) {
        void *h = NULL;
        if (handle(i, &h) != 0)
            continue;
        td_device *d = &list->items[list->count];
        memset(d, 0, sizeof *d);
        snprintf(d->vendor, sizeof d->vendor, "nvidia");
        snprintf(d->source, sizeof d->source, "nvml");
        if (get_name(h, d->name, sizeof d->name) != 0)
            snprintf(d->name, sizeof d->name, "NVIDIA GPU");
        if (get_uuid(h, d->uuid, sizeof d->uuid) != 0)
            d->uuid[0] = '\0';
        nvml_pci_info pci;
        memset(&pci, 0, sizeof pci);
        if (get_pci(h, &pci) != 0 || normalise_pci(pci.bus_id, d->pci, sizeof d->pci) != 0)
            d->pci[0] = '\0';
        nvml_memory mem;
        if (get_mem(h, &mem) == 0) {
            d->mem_total = (int64_t)mem.total;
            d->mem_free = (int64_t)mem.free;
        } else {
            d->mem_total = d->mem_free = -1;
        }
        d->index = vendor_index++;
        set_affinity(d);
        list->count++;
    }
    shutdown();
    dlclose(lib);
    if (n == 0)
        add_note(list, "nvidia: NVML reports no devices");
}

/* ---- Intel and AMD: sysfs ------------------------------------------- */

static int read_sysfs_line(const char *path, char *out, size_t len)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    int ok = fgets(out, (int)len, f) != NULL;
    fclose(f);
    if (!ok)
        return -1;
    out[strcspn(out, "\n")] = '\0';
    return 0;
}

static int64_t read_sysfs_int(const char *path)
{
    char line[64];
    if (read_sysfs_line(path, line, sizeof line) != 0)
        return -1;
    return strtoll(line, NULL, 0);
}

static int cmp_pci(const void *a, const void *b)
{
    return strcmp(((const td_device *)a)->pci, ((const td_device *)b)->pci);
}

void td_devices_detect_sysfs(td_device_list *list, const char *drm_root)
{
    DIR *d = opendir(drm_root);
    if (!d)
        return;
    td_device found[TD_MAX_DEVICES];
    size_t n_found = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n_found < TD_MAX_DEVICES) {
        /* cardN only (not cardN-DP-1 connectors, not renderD*) */
        if (strncmp(de->d_name, "card", 4) != 0 || !isdigit((unsigned char)de->d_name[4]) ||
            strchr(de->d_name, '-'))
            continue;
        char path[512], vendor[32], class_id[32], link[512];
        snprintf(path, sizeof path, "%s/%s/device/vendor", drm_root, de->d_name);
        if (read_sysfs_line(path, vendor, sizeof vendor) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s/device/class", drm_root, de->d_name);
        if (read_sysfs_line(path, class_id, sizeof class_id) != 0 || strncmp(class_id, "0x03", 4) != 0)
            continue; /* display controllers only */
        const char *v = strcmp(vendor, "0x8086") == 0 ? "intel" : strcmp(vendor, "0x1002") == 0 ? "amd" : NULL;
        if (!v)
            continue; /* NVIDIA comes from NVML */
        td_device *dev = &found[n_found];
        memset(dev, 0, sizeof *dev);
        snprintf(dev->vendor, sizeof dev->vendor, "%s", v);
        snprintf(dev->source, sizeof dev->source, "sysfs");
        snprintf(path, sizeof path, "%s/%s/device", drm_root, de->d_name);
        ssize_t ln = readlink(path, link, sizeof link - 1);
        if (ln > 0) {
            link[ln] = '\0';
            const char *base = strrchr(link, '/');
            normalise_pci(base ? base + 1 : link, dev->pci, sizeof dev->pci);
        }
        char device_id[32] = "";
        snprintf(path, sizeof path, "%s/%s/device/device", drm_root, de->d_name);
        read_sysfs_line(path, device_id, sizeof device_id);
        snprintf(dev->name, sizeof dev->name, "%s GPU %s (%s)", strcmp(v, "intel") == 0 ? "Intel" : "AMD",
                 device_id, de->d_name);
        dev->mem_total = dev->mem_free = -1;
        if (strcmp(v, "amd") == 0) {
            snprintf(path, sizeof path, "%s/%s/device/mem_info_vram_total", drm_root, de->d_name);
            dev->mem_total = read_sysfs_int(path);
            snprintf(path, sizeof path, "%s/%s/device/mem_info_vram_used", drm_root, de->d_name);
            int64_t used = read_sysfs_int(path);
            if (dev->mem_total > 0 && used >= 0)
                dev->mem_free = dev->mem_total - used;
        }
        n_found++;
    }
    closedir(d);
    qsort(found, n_found, sizeof found[0], cmp_pci);
    int intel_index = 0, amd_index = 0;
    for (size_t i = 0; i < n_found && list->count < TD_MAX_DEVICES; i++) {
        found[i].index = strcmp(found[i].vendor, "intel") == 0 ? intel_index++ : amd_index++;
        set_affinity(&found[i]);
        list->items[list->count++] = found[i];
    }
}

/* ---- TAPEDECK_DEVICES ------------------------------------------------ */

int td_devices_parse_spec(const char *spec, td_device_list *out, td_error *err)
{
    memset(out, 0, sizeof *out);
    if (strcmp(spec, "none") == 0 || spec[0] == '\0')
        return TD_OK;
    char copy[4096];
    if (strlen(spec) >= sizeof copy)
        return td_error_set(err, TD_EINVAL, "TAPEDECK_DEVICES: too long");
    snprintf(copy, sizeof copy, "%s", spec);
    int index_of[3] = {0, 0, 0};
    char *save = NULL;
    for (char *entry = strtok_r(copy, ",", &save); entry; entry = strtok_r(NULL, ",", &save)) {
        if (out->count >= TD_MAX_DEVICES)
            return td_error_set(err, TD_EINVAL, "TAPEDECK_DEVICES: more than %d devices", TD_MAX_DEVICES);
        /* VENDOR/PCI/UUID/TOTAL_MIB/NAME */
        char *fields[5] = {0};
        int nf = 0;
        char *save2 = NULL;
        for (char *f = strtok_r(entry, "/", &save2); f && nf < 5; f = strtok_r(NULL, "/", &save2))
            fields[nf++] = f;
        if (nf < 4)
            return td_error_set(err, TD_EINVAL,
                                "TAPEDECK_DEVICES: entry needs VENDOR/PCI/UUID/TOTAL_MIB[/NAME]");
        td_device *d = &out->items[out->count];
        int vi;
        if (strcmp(fields[0], "nvidia") == 0)
            vi = 0;
        else if (strcmp(fields[0], "intel") == 0)
            vi = 1;
        else if (strcmp(fields[0], "amd") == 0)
            vi = 2;
        else
            return td_error_set(err, TD_EINVAL, "TAPEDECK_DEVICES: unknown vendor '%s'", fields[0]);
        snprintf(d->vendor, sizeof d->vendor, "%s", fields[0]);
        if (normalise_pci(fields[1], d->pci, sizeof d->pci) != 0)
            return td_error_set(err, TD_EINVAL, "TAPEDECK_DEVICES: bad PCI address '%s'", fields[1]);
        snprintf(d->uuid, sizeof d->uuid, "%s", strcmp(fields[2], "-") == 0 ? "" : fields[2]);
        char *end;
        long long mib = strtoll(fields[3], &end, 10);
        if (*end || mib < 0 || mib > INT64_MAX / (1024 * 1024))
            return td_error_set(err, TD_EINVAL, "TAPEDECK_DEVICES: bad memory '%s'", fields[3]);
        d->mem_total = d->mem_free = mib * 1024 * 1024;
        snprintf(d->name, sizeof d->name, "%s", nf > 4 ? fields[4] : "GPU");
        snprintf(d->source, sizeof d->source, "env");
        d->index = index_of[vi]++;
        set_affinity(d);
        out->count++;
    }
    return TD_OK;
}

int td_devices_detect(td_device_list *out, td_error *err)
{
    const char *spec = getenv("TAPEDECK_DEVICES");
    if (spec)
        return td_devices_parse_spec(spec, out, err);
    memset(out, 0, sizeof *out);
    detect_nvidia(out);
    td_devices_detect_sysfs(out, "/sys/class/drm");
    return TD_OK;
}
