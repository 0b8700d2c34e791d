/* affinity.c: asking the vendor runtime what a pinned worker sees (see affinity.h). */
#include "device/affinity.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*cu_init_fn)(unsigned);
typedef int (*cu_count_fn)(int *);
typedef int (*cu_get_fn)(int *, int);
typedef int (*cu_busid_fn)(char *, int, int);
typedef int (*cu_uuid_fn)(unsigned char *, int); /* CUuuid is 16 bytes */

int td_affinity_same_pci(const char *a, const char *b)
{
    unsigned d1, b1, v1, f1, d2, b2, v2, f2;
    if (sscanf(a, "%x:%x:%x.%x", &d1, &b1, &v1, &f1) != 4 ||
        sscanf(b, "%x:%x:%x.%x", &d2, &b2, &v2, &f2) != 4)
        return 0;
    return (d1 & 0xffff) == (d2 & 0xffff) && b1 == b2 && v1 == v2 && f1 == f2;
}

static enum td_affinity_result verify_cuda(const char *expected_pci, td_device_identity *seen, char *detail,
                                           size_t len)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(detail, len, "CUDA driver library not found");
        return TD_AFFINITY_UNVERIFIED;
    }
    cu_init_fn cu_init = (cu_init_fn)dlsym(lib, "cuInit");
    cu_count_fn cu_count = (cu_count_fn)dlsym(lib, "cuDeviceGetCount");
    cu_get_fn cu_get = (cu_get_fn)dlsym(lib, "cuDeviceGet");
    cu_busid_fn cu_busid = (cu_busid_fn)dlsym(lib, "cuDeviceGetPCIBusId");
    cu_uuid_fn cu_uuid = (cu_uuid_fn)dlsym(lib, "cuDeviceGetUuid");
    enum td_affinity_result res = TD_AFFINITY_UNVERIFIED;
    int count = 0;
    if (!cu_init || !cu_count || !cu_get || !cu_busid) {
        snprintf(detail, len, "CUDA driver library lacks the needed functions");
    } else if (cu_init(0) != 0) {
        snprintf(detail, len, "cuInit failed");
    } else if (cu_count(&count) != 0) {
        snprintf(detail, len, "cuDeviceGetCount failed");
    } else if (count != 1) {
        snprintf(detail, len, "visible=%d device(s), expected exactly 1", count);
        res = TD_AFFINITY_MISMATCH;
    } else {
        int dev = 0;
        char bus[64] = "";
        if (cu_get(&dev, 0) != 0 || cu_busid(bus, (int)sizeof bus, dev) != 0) {
            snprintf(detail, len, "cannot read the visible device's PCI address");
        } else {
            unsigned dom, b, d, f;
            if (sscanf(bus, "%x:%x:%x.%x", &dom, &b, &d, &f) == 4)
                snprintf(seen->pci, sizeof seen->pci, "%04x:%02x:%02x.%x", dom & 0xffff, b & 0xff, d & 0x1f,
                         f & 0x7);
            unsigned char u[16];
            if (cu_uuid && cu_uuid(u, dev) == 0)
                snprintf(seen->uuid, sizeof seen->uuid,
                         "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                         u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                         u[15]);
        }
        if (!seen->pci[0]) {
            snprintf(detail, len, "unreadable PCI address '%s'", bus);
        } else if (td_affinity_same_pci(bus, expected_pci)) {
            snprintf(detail, len, "visible=1 PCI=%s", bus);
            res = TD_AFFINITY_OK;
        } else {
            snprintf(detail, len, "visible=1 PCI=%s, expected %s", bus, expected_pci);
            res = TD_AFFINITY_MISMATCH;
        }
    }
    /* The library stays loaded: unloading a CUDA driver that was
     * initialised is not supported. */
    return res;
}

enum td_affinity_result td_affinity_verify(const char *vendor, const char *expected_pci,
                                           td_device_identity *seen, char *detail, size_t detail_len)
{
    memset(seen, 0, sizeof *seen);
    if (strcmp(vendor, "nvidia") == 0)
        return verify_cuda(expected_pci, seen, detail, detail_len);
    snprintf(detail, detail_len, "no %s runtime check built in yet", vendor);
    return TD_AFFINITY_UNVERIFIED;
}

/* The hex digits of a UUID, lowercase, "GPU-" and dashes dropped. */
static void uuid_digits(const char *in, char *out, size_t cap)
{
    if (strncasecmp(in, "GPU-", 4) == 0)
        in += 4;
    size_t n = 0;
    for (; *in && n + 1 < cap; in++)
        if (isxdigit((unsigned char)*in))
            out[n++] = (char)tolower((unsigned char)*in);
    out[n] = '\0';
}

static int same_uuid(const char *a, const char *b)
{
    char x[96], y[96];
    uuid_digits(a, x, sizeof x);
    uuid_digits(b, y, sizeof y);
    return x[0] && strcmp(x, y) == 0;
}

long td_affinity_same_card(const td_device_identity *mine, const td_device_identity *others, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const td_device_identity *o = &others[i];
        if ((mine->pci[0] && o->pci[0] && td_affinity_same_pci(mine->pci, o->pci)) ||
            (mine->uuid[0] && o->uuid[0] && same_uuid(mine->uuid, o->uuid)))
            return (long)i;
    }
    return -1;
}

enum td_affinity_result td_affinity_check_report(const td_device *planned, const td_device_identity *seen,
                                                 char *detail, size_t detail_len)
{
    if (!seen->pci[0] && !seen->uuid[0]) {
        snprintf(detail, detail_len, "the worker's runtime reported no device");
        return TD_AFFINITY_UNVERIFIED;
    }
    if (!planned) {
        snprintf(detail, detail_len, "a CPU worker reports GPU %s%s%s", seen->pci, seen->uuid[0] ? " " : "",
                 seen->uuid);
        return TD_AFFINITY_MISMATCH;
    }
    if (seen->pci[0] && !td_affinity_same_pci(seen->pci, planned->pci)) {
        snprintf(detail, detail_len, "runtime opened PCI %s, plan says %s", seen->pci, planned->pci);
        return TD_AFFINITY_MISMATCH;
    }
    if (seen->uuid[0] && planned->uuid[0]) {
        if (!same_uuid(seen->uuid, planned->uuid)) {
            snprintf(detail, detail_len, "runtime opened UUID %s, plan says %s", seen->uuid, planned->uuid);
            return TD_AFFINITY_MISMATCH;
        }
    }
    snprintf(detail, detail_len, "PCI %s%s%s matches the plan", seen->pci[0] ? seen->pci : planned->pci,
             seen->uuid[0] ? " UUID " : "", seen->uuid);
    return TD_AFFINITY_OK;
}

size_t td_affinity_env(const td_device *d, const char *pairs[2][2])
{
    size_t n = 0;
    if (d->affinity_var[0]) {
        pairs[n][0] = d->affinity_var;
        pairs[n++][1] = d->affinity_value;
    }
    if (d->order_var[0]) {
        pairs[n][0] = d->order_var;
        pairs[n++][1] = d->order_value;
    }
    return n;
}

int td_cpulist_parse(const char *list, cpu_set_t *set)
{
    CPU_ZERO(set);
    const char *p = list;
    int count = 0;
    while (*p) {
        char *end;
        if (!isdigit((unsigned char)*p))
            return -1;
        errno = 0;
        unsigned long lo = strtoul(p, &end, 10), hi = lo;
        if (errno)
            return -1;
        p = end;
        if (*p == '-') {
            p++;
            if (!isdigit((unsigned char)*p))
                return -1;
            hi = strtoul(p, &end, 10);
            if (errno)
                return -1;
            p = end;
        }
        if (hi < lo || hi >= CPU_SETSIZE)
            return -1;
        for (unsigned long c = lo; c <= hi; c++) {
            if (!CPU_ISSET(c, set))
                count++;
            CPU_SET(c, set);
        }
        if (*p == ',')
            p++;
        else if (*p && *p != '\n')
            return -1;
        else if (*p == '\n')
            break;
    }
    return count;
}

void td_cpulist_format(const cpu_set_t *set, char *out, size_t cap)
{
    if (cap == 0)
        return;
    out[0] = '\0';
    size_t used = 0;
    for (int c = 0; c < CPU_SETSIZE && used < cap; c++) {
        if (!CPU_ISSET(c, set))
            continue;
        int end = c;
        while (end + 1 < CPU_SETSIZE && CPU_ISSET(end + 1, set))
            end++;
        int n = end > c ? snprintf(out + used, cap - used, "%s%d-%d", used ? "," : "", c, end)
                        : snprintf(out + used, cap - used, "%s%d", used ? "," : "", c);
        if (n < 0)
            break;
        used += (size_t)n;
        c = end;
    }
}
