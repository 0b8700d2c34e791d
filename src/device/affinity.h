/*
 * affinity.h: checking, inside a worker, that its GPU pinning took effect.
 *
 * After exec with the affinity variable set, the worker asks the vendor
 * runtime which devices it can see. Pinning is verified when exactly one
 * device is visible and its PCI address is the planned one (indices are
 * meaningless here: after masking every worker sees its card as device 0,
 * which is why the seed pipeline's check proved nothing).
 *
 * NVIDIA: libcuda.so.1 through dlopen (cuInit, cuDeviceGetCount,
 * cuDeviceGetPCIBusId). Other vendors: reported as not verifiable yet.
 */
#ifndef TD_DEVICE_AFFINITY_H
#define TD_DEVICE_AFFINITY_H

#include <stddef.h>

enum td_affinity_result {
    TD_AFFINITY_OK = 0,       /* one device visible, PCI address matches */
    TD_AFFINITY_MISMATCH,     /* wrong or several devices visible */
    TD_AFFINITY_UNVERIFIED,   /* no runtime to ask (driver missing, vendor) */
};

/* detail gets a one-line description ("visible=1 PCI=0000:01:00.0"). */
enum td_affinity_result td_affinity_verify(const char *vendor, const char *expected_pci,
                                           char *detail, size_t detail_len);

#endif
