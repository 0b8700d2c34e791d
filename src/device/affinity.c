/* affinity.c: asking the vendor runtime what a pinned worker sees (see affinity.h). */
#include "device/affinity.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

typedef int (*cu_init_fn)(unsigned);
typedef int (*cu_count_fn)(int *);
typedef int (*cu_get_fn)(int *, int);
typedef int (*cu_busid_fn)(char *, int, int);

static int same_pci(const char *a, const char *b)
{
    unsigned d1, b1, v1, f1, d2, b2, v2, f2;
    if (sscanf(a, "%x:%x:%x.%x", &d1, &b1, &v1, &f1) != 4 ||
        sscanf(b, "%x:%x:%x.%x", &d2, &b2, &v2, &f2) != 4)
        return 0;
    return (d1 & 0xffff) == (d2 & 0xffff) && b1 == b2 && v1 == v2 && f1 == f2;
}

static enum td_affinity_result verify_cuda(const char *expected_pci, char *detail, size_t len)
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
        } else if (same_pci(bus, expected_pci)) {
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
                                           char *detail, size_t detail_len)
{
    if (strcmp(vendor, "nvidia") == 0)
        return verify_cuda(expected_pci, detail, detail_len);
    snprintf(detail, detail_len, "no %s runtime check built in yet", vendor);
    return TD_AFFINITY_UNVERIFIED;
}
