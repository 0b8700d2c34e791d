/* devices.c: GPU discovery through NVML, Level Zero Sysman and sysfs, no GPU context (see devices.h). */
#include "device/devices.h"

#include <errno.h>

#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "device/discover.h"

extern char **environ;

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

/* ---- merging ------------------------------------------------------- */

static void init_device(td_device *d, const char *vendor, const char *source)
{
    memset(d, 0, sizeof *d);
    snprintf(d->vendor, sizeof d->vendor, "%s", vendor);
    snprintf(d->source, sizeof d->source, "%s", source);
    d->mem_total = d->mem_free = -1;
    d->numa_node = -1;
}

/* A generic name a later source may replace with a real one. */
static int generic_name(const char *name)
{
    return name[0] == '\0' || strstr(name, " GPU 0x") != NULL;
}

/* Add d, or fill the gaps of the entry with the same PCI address (one
 * card seen by two sources). Entries without a PCI address cannot be
 * matched and are added as they are. */
static void add_or_merge(td_device_list *list, const td_device *d)
{
    for (size_t i = 0; d->pci[0] && i < list->count; i++) {
        td_device *e = &list->items[i];
        if (strcmp(e->pci, d->pci) != 0)
            continue;
        if (generic_name(e->name) && !generic_name(d->name))
            snprintf(e->name, sizeof e->name, "%s", d->name);
        if (!e->uuid[0])
            snprintf(e->uuid, sizeof e->uuid, "%s", d->uuid);
        if (e->mem_total < 0 && d->mem_total >= 0)
            e->mem_total = d->mem_total;
        if (e->mem_free < 0 && d->mem_free >= 0)
            e->mem_free = d->mem_free;
        if (!strstr(e->source, d->source)) {
            size_t used = strlen(e->source);
            snprintf(e->source + used, sizeof e->source - used, "+%s", d->source);
        }
        return;
    }
    if (list->count < TD_MAX_DEVICES)
        list->items[list->count++] = *d;
}

/* ---- NVIDIA: NVML ------------------------------------------------------ */

static void discover_nvml(const td_nvml_api *api, td_device_list *list)
{
    if (api->init() != 0) {
        add_note(list, "nvidia: nvmlInit failed (driver not loaded?)");
        return;
    }
    unsigned n = 0;
    if (api->count(&n) != 0) {
        add_note(list, "nvidia: nvmlDeviceGetCount failed");
        n = 0;
    } else if (n == 0) {
        add_note(list, "nvidia: NVML reports no devices");
    }
    for (unsigned i = 0; i < n && i < TD_MAX_DEVICES; i++) {
        void *h = NULL;
        if (api->handle(i, &h) != 0)
            continue;
        td_device d;
        init_device(&d, "nvidia", "nvml");
        if (api->name(h, d.name, sizeof d.name) != 0)
            snprintf(d.name, sizeof d.name, "NVIDIA GPU");
        d.name[sizeof d.name - 1] = '\0';
        if (api->uuid(h, d.uuid, sizeof d.uuid) != 0)
            d.uuid[0] = '\0';
        d.uuid[sizeof d.uuid - 1] = '\0';
        td_nvml_pci_info pci;
        memset(&pci, 0, sizeof pci);
        pci.bus_id[sizeof pci.bus_id - 1] = '\0';
        if (api->pci(h, &pci) != 0 || normalise_pci(pci.bus_id, d.pci, sizeof d.pci) != 0)
            d.pci[0] = '\0';
        td_nvml_memory mem;
        if (api->memory(h, &mem) == 0 && mem.total <= INT64_MAX && mem.free <= mem.total) {
            d.mem_total = (int64_t)mem.total;
            d.mem_free = (int64_t)mem.free;
        }
        add_or_merge(list, &d);
    }
    api->shutdown();
}

/* ---- Intel: Level Zero Sysman ------------------------------------------ */

#define ZE_MAX_HANDLES 64

static void discover_ze(const td_ze_api *api, td_device_list *list)
{
    ze_result_t r = api->init(0);
    if (r != ZE_RESULT_SUCCESS) {
        char note[96];
        snprintf(note, sizeof note, "level-zero: init failed (0x%x; no Intel GPU driver?)", (unsigned)r);
        add_note(list, note);
        return;
    }
    uint32_t n_drv = 0;
    if (api->driver_get(&n_drv, NULL) != ZE_RESULT_SUCCESS || n_drv == 0) {
        add_note(list, "level-zero: no Sysman driver");
        return;
    }
    zes_driver_handle_t drivers[ZE_MAX_HANDLES];
    if (n_drv > ZE_MAX_HANDLES)
        n_drv = ZE_MAX_HANDLES;
    if (api->driver_get(&n_drv, drivers) != ZE_RESULT_SUCCESS)
        return;
    size_t found = 0;
    for (uint32_t di = 0; di < n_drv; di++) {
        uint32_t n_dev = 0;
        if (api->device_get(drivers[di], &n_dev, NULL) != ZE_RESULT_SUCCESS || n_dev == 0)
            continue;
        zes_device_handle_t devs[ZE_MAX_HANDLES];
        if (n_dev > ZE_MAX_HANDLES)
            n_dev = ZE_MAX_HANDLES;
        if (api->device_get(drivers[di], &n_dev, devs) != ZE_RESULT_SUCCESS)
            continue;
        for (uint32_t i = 0; i < n_dev; i++) {
            zes_pci_properties_t pp;
            memset(&pp, 0, sizeof pp);
            pp.stype = ZES_STRUCTURE_TYPE_PCI_PROPERTIES;
            if (api->pci(devs[i], &pp) != ZE_RESULT_SUCCESS)
                continue; /* no address: could not be matched or pinned */
            td_device d;
            init_device(&d, "intel", "level-zero");
            snprintf(d.pci, sizeof d.pci, "%04x:%02x:%02x.%x", pp.address.domain & 0xffff,
                     pp.address.bus & 0xff, pp.address.device & 0x1f, pp.address.function & 0x7);
            zes_device_properties_t props;
            memset(&props, 0, sizeof props);
            props.stype = ZES_STRUCTURE_TYPE_DEVICE_PROPERTIES;
            if (api->properties(devs[i], &props) == ZE_RESULT_SUCCESS) {
                props.core.name[sizeof props.core.name - 1] = '\0';
                snprintf(d.name, sizeof d.name, "%s", props.core.name);
                const uint8_t *u = props.core.uuid.id;
                snprintf(d.uuid, sizeof d.uuid,
                         "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                         u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                         u[15]);
            }
            /* Device-local memory: the sum over its modules (one per
             * tile on multi-tile cards). */
            uint32_t n_mem = 0;
            zes_mem_handle_t mems[ZE_MAX_HANDLES];
            if (api->memory_modules(devs[i], &n_mem, NULL) == ZE_RESULT_SUCCESS && n_mem > 0) {
                if (n_mem > ZE_MAX_HANDLES)
                    n_mem = ZE_MAX_HANDLES;
                if (api->memory_modules(devs[i], &n_mem, mems) != ZE_RESULT_SUCCESS)
                    n_mem = 0;
                uint64_t total = 0, free_b = 0;
                int any = 0;
                for (uint32_t m = 0; m < n_mem; m++) {
                    zes_mem_properties_t mp;
                    memset(&mp, 0, sizeof mp);
                    mp.stype = ZES_STRUCTURE_TYPE_MEM_PROPERTIES;
                    if (api->memory_properties(mems[m], &mp) != ZE_RESULT_SUCCESS ||
                        mp.location != ZES_MEM_LOC_DEVICE)
                        continue;
                    zes_mem_state_t ms;
                    memset(&ms, 0, sizeof ms);
                    ms.stype = ZES_STRUCTURE_TYPE_MEM_STATE;
                    if (api->memory_state(mems[m], &ms) != ZE_RESULT_SUCCESS || ms.free > ms.size ||
                        ms.size > (uint64_t)INT64_MAX - total)
                        continue;
                    total += ms.size;
                    free_b += ms.free;
                    any = 1;
                }
                if (any) {
                    d.mem_total = (int64_t)total;
                    d.mem_free = (int64_t)free_b;
                }
            }
            add_or_merge(list, &d);
            found++;
        }
    }
    if (found == 0)
        add_note(list, "level-zero: Sysman reports no devices");
}

/* ---- sysfs: DRM cards (Intel, AMD, NVIDIA without NVML) ----------------- */

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

/* A non-negative integer file (decimal or 0x hex); -1 when absent or bad. */
static int64_t read_sysfs_int(const char *path)
{
    char line[64];
    if (read_sysfs_line(path, line, sizeof line) != 0)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(line, &end, 0);
    if (errno || end == line || v < 0)
        return -1;
    return v;
}

static void discover_sysfs(const char *sysfs, td_device_list *list)
{
    char drm[512];
    snprintf(drm, sizeof drm, "%s/class/drm", sysfs);
    DIR *dir = opendir(drm);
    if (!dir) {
        add_note(list, "sysfs: no class/drm (no GPU driver loaded)");
        return;
    }
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        /* cardN only (not cardN-DP-1 connectors, not renderD*) */
        if (strncmp(de->d_name, "card", 4) != 0 || !isdigit((unsigned char)de->d_name[4]) ||
            strchr(de->d_name, '-') || strlen(de->d_name) > 32)
            continue;
        char card[600], path[700], vendor[32], class_id[32], link[512];
        snprintf(card, sizeof card, "%s/%s", drm, de->d_name);
        snprintf(path, sizeof path, "%s/device/vendor", card);
        if (read_sysfs_line(path, vendor, sizeof vendor) != 0)
            continue;
        snprintf(path, sizeof path, "%s/device/class", card);
        if (read_sysfs_line(path, class_id, sizeof class_id) != 0 || strncmp(class_id, "0x03", 4) != 0)
            continue; /* display controllers only */
        const char *v = strcmp(vendor, "0x8086") == 0   ? "intel"
                        : strcmp(vendor, "0x1002") == 0 ? "amd"
                        : strcmp(vendor, "0x10de") == 0 ? "nvidia"
                                                        : NULL;
        if (!v)
            continue;
        td_device d;
        init_device(&d, v, "sysfs");
        snprintf(path, sizeof path, "%s/device", card);
        ssize_t ln = readlink(path, link, sizeof link - 1);
        if (ln <= 0)
            continue; /* no PCI address: cannot be pinned or merged */
        link[ln] = '\0';
        const char *base = strrchr(link, '/');
        if (normalise_pci(base ? base + 1 : link, d.pci, sizeof d.pci) != 0)
            continue;
        char device_id[32] = "";
        snprintf(path, sizeof path, "%s/device/device", card);
        if (read_sysfs_line(path, device_id, sizeof device_id) != 0)
            snprintf(device_id, sizeof device_id, "?");
        snprintf(path, sizeof path, "%s/device/product_name", card); /* amdgpu, some boards */
        if (read_sysfs_line(path, d.name, sizeof d.name) != 0 || d.name[0] == '\0')
            snprintf(d.name, sizeof d.name, "%s GPU %s",
                     v[0] == 'i' ? "Intel" : v[0] == 'a' ? "AMD" : "NVIDIA", device_id);
        if (strcmp(v, "amd") == 0) {
            snprintf(path, sizeof path, "%s/device/mem_info_vram_total", card);
            d.mem_total = read_sysfs_int(path);
            snprintf(path, sizeof path, "%s/device/mem_info_vram_used", card);
            int64_t used = read_sysfs_int(path);
            if (d.mem_total > 0 && used >= 0 && used <= d.mem_total)
                d.mem_free = d.mem_total - used;
            /* the 64-bit ID ROCm shows as the UUID's digits */
            char uid[32];
            snprintf(path, sizeof path, "%s/device/unique_id", card);
            if (read_sysfs_line(path, uid, sizeof uid) == 0 && uid[0])
                snprintf(d.uuid, sizeof d.uuid, "GPU-%s", uid);
        } else if (strcmp(v, "intel") == 0) {
            /* i915 with local memory (DG2/Arc, out-of-tree and recent
             * kernels): lmem_total_bytes, lmem_avail_bytes. xe: the size
             * only, per tile. */
            snprintf(path, sizeof path, "%s/lmem_total_bytes", card);
            d.mem_total = read_sysfs_int(path);
            if (d.mem_total > 0) {
                snprintf(path, sizeof path, "%s/lmem_avail_bytes", card);
                int64_t avail = read_sysfs_int(path);
                if (avail >= 0 && avail <= d.mem_total)
                    d.mem_free = avail;
            } else {
                snprintf(path, sizeof path, "%s/device/tile0/physical_vram_size_bytes", card);
                d.mem_total = read_sysfs_int(path);
            }
        }
        add_or_merge(list, &d);
    }
    closedir(dir);
}

/* NUMA node and local CPUs of a PCI device. */
static void fill_locality(const char *sysfs, td_device *d)
{
    if (!d->pci[0])
        return;
    char path[600];
    snprintf(path, sizeof path, "%s/bus/pci/devices/%s/numa_node", sysfs, d->pci);
    char line[sizeof d->local_cpus];
    if (read_sysfs_line(path, line, sizeof line) == 0) {
        char *end;
        long node = strtol(line, &end, 10);
        d->numa_node = end != line && node >= 0 && node < 4096 ? (int)node : -1;
    }
    snprintf(path, sizeof path, "%s/bus/pci/devices/%s/local_cpulist", sysfs, d->pci);
    if (read_sysfs_line(path, line, sizeof line) == 0)
        snprintf(d->local_cpus, sizeof d->local_cpus, "%s", line);
}

static int cmp_pci(const void *a, const void *b)
{
    return strcmp(((const td_device *)a)->pci, ((const td_device *)b)->pci);
}

/* PCI order, indices per vendor, affinity variables. */
static void finish_list(td_device_list *list)
{
    qsort(list->items, list->count, sizeof list->items[0], cmp_pci);
    int index_of[3] = {0, 0, 0};
    for (size_t i = 0; i < list->count; i++) {
        td_device *d = &list->items[i];
        int vi = strcmp(d->vendor, "nvidia") == 0 ? 0 : strcmp(d->vendor, "intel") == 0 ? 1 : 2;
        d->index = index_of[vi]++;
        set_affinity(d);
    }
}

void td_devices_discover(const td_discovery *src, td_device_list *out)
{
    memset(out, 0, sizeof *out);
    if (src->nvml)
        discover_nvml(src->nvml, out);
    else if (src->nvml_note)
        add_note(out, src->nvml_note);
    if (src->ze)
        discover_ze(src->ze, out);
    else if (src->ze_note)
        add_note(out, src->ze_note);
    if (src->ze_probe) {
        for (size_t i = 0; i < src->ze_probe->count; i++)
            add_or_merge(out, &src->ze_probe->items[i]);
        if (src->ze_probe->notes[0]) {
            char note[sizeof src->ze_probe->notes + 32];
            snprintf(note, sizeof note, "(probe child, zeInit) %s", src->ze_probe->notes);
            add_note(out, note);
        }
    }
    if (src->sysfs)
        discover_sysfs(src->sysfs, out);
    for (size_t i = 0; i < out->count; i++)
        fill_locality(src->sysfs ? src->sysfs : "/sys", &out->items[i]);
    finish_list(out);
}

/* ---- the real libraries, through dlopen ---------------------------------- */

#define LOAD(lib, field, symbol) (*(void **)(&(field)) = dlsym((lib), (symbol)))

static void *load_nvml(td_nvml_api *api, const char **note)
{
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        *note = "nvidia: NVML not found (no NVIDIA driver)";
        return NULL;
    }
    if (!LOAD(lib, api->init, "nvmlInit_v2") || !LOAD(lib, api->shutdown, "nvmlShutdown") ||
        !LOAD(lib, api->count, "nvmlDeviceGetCount_v2") ||
        !LOAD(lib, api->handle, "nvmlDeviceGetHandleByIndex_v2") ||
        !LOAD(lib, api->name, "nvmlDeviceGetName") || !LOAD(lib, api->uuid, "nvmlDeviceGetUUID") ||
        !LOAD(lib, api->pci, "nvmlDeviceGetPciInfo_v3") ||
        !LOAD(lib, api->memory, "nvmlDeviceGetMemoryInfo")) {
        *note = "nvidia: NVML too old (missing functions)";
        dlclose(lib);
        return NULL;
    }
    return lib;
}

static void *load_ze(td_ze_api *api, const char **note)
{
    void *lib = dlopen("libze_loader.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        *note = "level-zero: libze_loader.so.1 not found";
        return NULL;
    }
    if (!LOAD(lib, api->init, "zesInit") || !LOAD(lib, api->driver_get, "zesDriverGet") ||
        !LOAD(lib, api->device_get, "zesDeviceGet")) {
        /* zeInit with ZES_ENABLE_SYSMAN would work on such a loader but
         * creates a core context in the supervisor: not allowed. */
        *note = "level-zero: loader predates zesInit (spec 1.5)";
        dlclose(lib);
        return NULL;
    }
    if (!LOAD(lib, api->properties, "zesDeviceGetProperties") ||
        !LOAD(lib, api->pci, "zesDevicePciGetProperties") ||
        !LOAD(lib, api->memory_modules, "zesDeviceEnumMemoryModules") ||
        !LOAD(lib, api->memory_properties, "zesMemoryGetProperties") ||
        !LOAD(lib, api->memory_state, "zesMemoryGetState")) {
        *note = "level-zero: loader lacks Sysman functions";
        dlclose(lib);
        return NULL;
    }
    return lib;
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
        /* VENDOR/PCI/UUID/TOTAL_MIB/NAME/CPUS (CPUS: a CPU list with '+'
         * for ',', since ',' separates entries) */
        char *fields[6] = {0};
        int nf = 0;
        char *save2 = NULL;
        for (char *f = strtok_r(entry, "/", &save2); f && nf < 6; f = strtok_r(NULL, "/", &save2))
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
        d->numa_node = -1;
        if (nf > 5) {
            if (strlen(fields[5]) >= sizeof d->local_cpus)
                return td_error_set(err, TD_EINVAL, "TAPEDECK_DEVICES: CPU list too long");
            snprintf(d->local_cpus, sizeof d->local_cpus, "%s", fields[5]);
            for (char *c = d->local_cpus; *c; c++)
                if (*c == '+')
                    *c = ',';
        }
        d->index = index_of[vi]++;
        set_affinity(d);
        out->count++;
    }
    return TD_OK;
}

/* ---- Level Zero through a probe child ------------------------------------ */

static const char *g_probe_exe;

void td_devices_set_probe_exe(const char *path)
{
    g_probe_exe = path;
}

void td_devices_probe_level_zero(td_device_list *out)
{
    memset(out, 0, sizeof *out);
    /* Sysman through the core API: this variable must be set before zeInit. */
    if (setenv("ZES_ENABLE_SYSMAN", "1", 1) != 0) {
        add_note(out, "cannot set ZES_ENABLE_SYSMAN");
        return;
    }
    void *lib = dlopen("libze_loader.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        add_note(out, "libze_loader.so.1 not found");
        return;
    }
    td_ze_api api;
    /* zeInit, zeDriverGet and zeDeviceGet have the signatures of their
     * zes* successors, and with ZES_ENABLE_SYSMAN=1 a core device handle
     * is a Sysman handle. */
    if (!LOAD(lib, api.init, "zeInit") || !LOAD(lib, api.driver_get, "zeDriverGet") ||
        !LOAD(lib, api.device_get, "zeDeviceGet") || !LOAD(lib, api.properties, "zesDeviceGetProperties") ||
        !LOAD(lib, api.pci, "zesDevicePciGetProperties") ||
        !LOAD(lib, api.memory_modules, "zesDeviceEnumMemoryModules") ||
        !LOAD(lib, api.memory_properties, "zesMemoryGetProperties") ||
        !LOAD(lib, api.memory_state, "zesMemoryGetState")) {
        add_note(out, "loader lacks the Level Zero functions");
        dlclose(lib);
        return;
    }
    discover_ze(&api, out);
    /* the process exits next: the loader stays loaded */
}

size_t td_devices_format_probe(const td_device_list *l, char *out, size_t cap)
{
    size_t need = 0;
    char line[1024];
    for (size_t i = 0; i < l->count; i++) {
        const td_device *d = &l->items[i];
        char hex[2 * sizeof d->name + 1];
        size_t n = 0;
        for (const unsigned char *c = (const unsigned char *)d->name; *c && n + 2 < sizeof hex; c++, n += 2)
            snprintf(hex + n, 3, "%02x", *c);
        hex[n] = '\0';
        int len = snprintf(line, sizeof line, "ze %s %s %lld %lld %s\n", d->pci[0] ? d->pci : "-",
                           d->uuid[0] ? d->uuid : "-", (long long)d->mem_total, (long long)d->mem_free,
                           n ? hex : "-");
        if (len > 0) {
            if (need < cap)
                snprintf(out + need, cap - need, "%s", line);
            need += (size_t)len;
        }
    }
    if (l->notes[0]) {
        int len = snprintf(line, sizeof line, "note %s\n", l->notes);
        if (len > 0) {
            if (need < cap)
                snprintf(out + need, cap - need, "%s", line);
            need += (size_t)len;
        }
    }
    if (cap && need >= cap)
        out[cap - 1] = '\0';
    return need;
}

static int unhex(const char *in, char *out, size_t cap)
{
    size_t n = 0, len = strlen(in);
    if (len % 2 || len / 2 >= cap)
        return -1;
    for (size_t i = 0; i < len; i += 2) {
        unsigned v;
        if (!isxdigit((unsigned char)in[i]) || !isxdigit((unsigned char)in[i + 1]) ||
            sscanf(in + i, "%2x", &v) != 1 || v == 0)
            return -1;
        out[n++] = (char)v;
    }
    out[n] = '\0';
    return 0;
}

void td_devices_parse_probe(const char *text, td_device_list *out)
{
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[1024];
        if (len < sizeof line) {
            memcpy(line, p, len);
            line[len] = '\0';
            char pci[64], uuid[128], name[300];
            long long total, free_b;
            td_device d;
            if (strncmp(line, "note ", 5) == 0) {
                add_note(out, line + 5);
            } else if (sscanf(line, "ze %63s %127s %lld %lld %299s", pci, uuid, &total, &free_b, name) == 5) {
                init_device(&d, "intel", "level-zero");
                if (normalise_pci(pci, d.pci, sizeof d.pci) == 0 && strlen(uuid) < sizeof d.uuid &&
                    total >= -1 && free_b >= -1 && (total < 0 || free_b <= total)) {
                    if (strcmp(uuid, "-") != 0)
                        snprintf(d.uuid, sizeof d.uuid, "%s", uuid);
                    d.mem_total = total;
                    d.mem_free = total < 0 ? -1 : free_b;
                    if (strcmp(name, "-") == 0 || unhex(name, d.name, sizeof d.name) != 0)
                        snprintf(d.name, sizeof d.name, "Intel GPU");
                    if (out->count < TD_MAX_DEVICES)
                        out->items[out->count++] = d;
                }
            }
        }
        p += len;
        if (*p == '\n')
            p++;
    }
}

/* Run `exe cmd` with a time limit and read its answer (NUL-terminated)
 * into buf; 0 when it answered. */
static int run_probe_child(const char *exe, const char *cmd, char *buf, size_t cap, char *why,
                           size_t why_len)
{
    buf[0] = '\0';
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        snprintf(why, why_len, "pipe: %s", strerror(errno));
        return -1;
    }
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0) {
        close(fds[0]);
        close(fds[1]);
        snprintf(why, why_len, "posix_spawn_file_actions_init failed");
        return -1;
    }
    int rc = posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    if (rc == 0)
        rc = posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid = -1;
    char *const argv[] = {(char *)exe, (char *)cmd, NULL};
    if (rc == 0)
        rc = posix_spawn(&pid, exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        snprintf(why, why_len, "cannot start %s: %s", exe, strerror(rc));
        return -1;
    }
    /* A driver that hangs must not hang the run: 10 s, then kill. */
    size_t used = 0;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int timed_out = 0;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left_ms = 10000 - ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
        if (left_ms <= 0) {
            timed_out = 1;
            break;
        }
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int pr = poll(&pfd, 1, (int)left_ms);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            timed_out = pr == 0;
            break;
        }
        if (used + 1 >= cap)
            break; /* more than any answer: keep what came */
        ssize_t n = read(fds[0], buf + used, cap - 1 - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        used += (size_t)n;
    }
    close(fds[0]);
    buf[used] = '\0';
    if (timed_out)
        kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (timed_out) {
        snprintf(why, why_len, "no answer in 10 s (killed)");
        return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(why, why_len, "probe failed (%s %d)", WIFEXITED(status) ? "exit" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        return -1;
    }
    return 0;
}

static int run_ze_probe(const char *exe, td_device_list *probe, char *why, size_t why_len)
{
    static char buf[16384];
    memset(probe, 0, sizeof *probe);
    if (run_probe_child(exe, "probe-level-zero", buf, sizeof buf, why, why_len) != 0)
        return -1;
    td_devices_parse_probe(buf, probe);
    return 0;
}

/* ---- Vulkan, through the probe child ------------------------------------ */

void td_devices_parse_vulkan(const char *text, td_vulkan_list *out)
{
    memset(out, 0, sizeof *out);
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[1024];
        if (len < sizeof line) {
            memcpy(line, p, len);
            line[len] = '\0';
            char pci[64], uuid[128], name[300], why[300], matrix[300];
            long long total, free_b;
            unsigned vendor;
            int type, usable, fields;
            if (strncmp(line, "note ", 5) == 0) {
                size_t used = strlen(out->note);
                snprintf(out->note + used, sizeof out->note - used, "%s%s", used ? "; " : "", line + 5);
            } else if ((fields = sscanf(line, "vk %63s %127s %lld %lld %x %d %d %299s %299s %299s", pci,
                                        uuid, &total, &free_b, &vendor, &type, &usable, name, why,
                                        matrix)) >= 9 &&
                       out->count < TD_MAX_VULKAN && total >= -1 && free_b >= -1 &&
                       strlen(uuid) < sizeof out->items[0].uuid) {
                td_vulkan_seen *v = &out->items[out->count];
                memset(v, 0, sizeof *v);
                if (strcmp(pci, "-") != 0 && normalise_pci(pci, v->pci, sizeof v->pci) != 0)
                    goto next;
                if (strcmp(uuid, "-") != 0)
                    snprintf(v->uuid, sizeof v->uuid, "%s", uuid);
                snprintf(v->vendor, sizeof v->vendor, "%s",
                         vendor == 0x10de ? "nvidia" : vendor == 0x8086 ? "intel"
                         : vendor == 0x1002 ? "amd" : "other");
                v->type = type >= 0 && type <= 4 ? type : 0;
                v->usable = usable != 0;
                v->mem_total = total;
                v->mem_free = free_b;
                if (strcmp(name, "-") == 0 || unhex(name, v->name, sizeof v->name) != 0)
                    snprintf(v->name, sizeof v->name, "Vulkan device");
                if (strcmp(why, "-") != 0 && unhex(why, v->reason, sizeof v->reason) != 0)
                    snprintf(v->reason, sizeof v->reason, "(unreadable reason)");
                if (fields == 10 && strcmp(matrix, "-") != 0 &&
                    unhex(matrix, v->matrix, sizeof v->matrix) != 0)
                    v->matrix[0] = '\0';
                out->count++;
            }
        }
    next:
        p += len;
        if (*p == '\n')
            p++;
    }
}

int td_devices_probe_vulkan(td_vulkan_list *out)
{
    static char buf[16384];
    char why[256];
    memset(out, 0, sizeof *out);
    if (!g_probe_exe) {
        snprintf(out->note, sizeof out->note, "vulkan: no probe child to ask");
        return -1;
    }
    if (run_probe_child(g_probe_exe, "probe-vulkan", buf, sizeof buf, why, sizeof why) != 0) {
        snprintf(out->note, sizeof out->note, "vulkan: probe child: %s", why);
        return -1;
    }
    td_devices_parse_vulkan(buf, out);
    return 0;
}

void td_devices_merge_vulkan(td_device_list *list, const td_vulkan_list *vk, const char *sysfs)
{
    for (size_t i = 0; i < vk->count; i++) {
        const td_vulkan_seen *v = &vk->items[i];
        /* GPUs the backend could be pinned to: a PCI address, not the CPU */
        if (!v->pci[0] || v->type < 1 || v->type > 3 || strcmp(v->vendor, "other") == 0)
            continue;
        td_device d;
        init_device(&d, v->vendor, "vulkan");
        snprintf(d.name, sizeof d.name, "%s", v->name);
        snprintf(d.pci, sizeof d.pci, "%s", v->pci);
        snprintf(d.uuid, sizeof d.uuid, "%s", v->uuid);
        d.mem_total = v->mem_total;
        d.mem_free = v->mem_total >= 0 ? v->mem_free : -1;
        size_t before = list->count;
        add_or_merge(list, &d);
        if (list->count > before)
            fill_locality(sysfs ? sysfs : "/sys", &list->items[list->count - 1]);
    }
    if (vk->note[0])
        add_note(list, vk->note);
    finish_list(list);
}

int td_devices_detect(td_device_list *out, td_error *err)
{
    const char *spec = getenv("TAPEDECK_DEVICES");
    if (spec)
        return td_devices_parse_spec(spec, out, err);
    td_nvml_api nvml;
    td_ze_api ze;
    /* TAPEDECK_SYSFS: another sysfs root, for replaying a recorded tree
     * (scripts/record-devices.sh) through the real program */
    const char *sysfs = getenv("TAPEDECK_SYSFS");
    td_discovery src = {.sysfs = sysfs && sysfs[0] ? sysfs : "/sys"};
    void *nvml_lib = load_nvml(&nvml, &src.nvml_note);
    void *ze_lib = load_ze(&ze, &src.ze_note);
    src.nvml = nvml_lib ? &nvml : NULL;
    src.ze = ze_lib ? &ze : NULL;
    static td_device_list probe; /* large; detection is not reentrant anyway */
    char probe_note[320];
    if (!ze_lib && g_probe_exe && src.ze_note && strstr(src.ze_note, "predates zesInit")) {
        char why[256];
        if (run_ze_probe(g_probe_exe, &probe, why, sizeof why) == 0) {
            src.ze_probe = &probe;
            src.ze_note = NULL; /* the probe answered instead */
        } else {
            snprintf(probe_note, sizeof probe_note, "%s; probe child: %s", src.ze_note, why);
            src.ze_note = probe_note;
        }
    }
    td_devices_discover(&src, out);
    if (nvml_lib)
        dlclose(nvml_lib); /* NVML was shut down; it holds no context */
    /* Where no source told a card's memory or UUID (sysfs alone knows
     * little), a worker-side Vulkan probe may (VK_EXT_pci_bus_info,
     * VK_EXT_memory_budget): asked in a child, as Level Zero is. */
    int gaps = 0;
    for (size_t i = 0; i < out->count; i++)
        gaps |= out->items[i].mem_total < 0 || !out->items[i].uuid[0];
    if (gaps && g_probe_exe) {
        static td_vulkan_list vk; /* large */
        td_devices_probe_vulkan(&vk);
        td_devices_merge_vulkan(out, &vk, src.sysfs);
    }
    /* The Level Zero loader stays loaded: Sysman has no shutdown call in
     * the 1.x API and unloading it under its own handles is not safe. */
    return TD_OK;
}
