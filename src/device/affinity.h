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
 * cuDeviceGetPCIBusId, cuDeviceGetUuid). Other vendors: reported as not
 * verifiable yet.
 *
 * [affinity-verify] has two halves: the worker reports the PCI address
 * and UUID its runtime gave it (READY line, run/protocol.h), and the
 * supervisor checks the report against the plan (td_affinity_check_report)
 * and against the other workers' reports (two workers on one card). A
 * worker that reports nothing (the CPU backend) is not checked.
 *
 * Also here: what the supervisor sets before exec (td_affinity_env) and
 * the CPU list a worker is pinned to (td_cpulist_parse).
 */
#ifndef TD_DEVICE_AFFINITY_H
#define TD_DEVICE_AFFINITY_H

#include <sched.h>
#include <stddef.h>

#include "device/devices.h"

enum td_affinity_result {
    TD_AFFINITY_OK = 0,       /* one device visible, PCI address matches */
    TD_AFFINITY_MISMATCH,     /* wrong or several devices visible */
    TD_AFFINITY_UNVERIFIED,   /* no runtime to ask (driver missing, vendor) */
};

/* What a runtime says it opened: "" when it says nothing. */
typedef struct td_device_identity {
    char pci[32];   /* "0000:01:00.0" */
    char uuid[96];  /* NVIDIA "GPU-xxxxxxxx-xxxx-...", or hex digits */
} td_device_identity;

/* In the worker: ask the vendor runtime. detail gets a one-line
 * description ("visible=1 PCI=0000:01:00.0"); seen gets the address and
 * UUID the runtime gave (left "" when it could not tell). */
enum td_affinity_result td_affinity_verify(const char *vendor, const char *expected_pci,
                                           td_device_identity *seen, char *detail, size_t detail_len);

/* In the supervisor: a worker's report against its plan. planned is NULL
 * for a CPU worker (which must report no GPU). UUIDs compare by their hex
 * digits ("GPU-" and dashes aside: NVML and Vulkan format the same 16
 * bytes differently). OK when they match, MISMATCH with the reason in
 * detail, UNVERIFIED when the report is empty. */
enum td_affinity_result td_affinity_check_report(const td_device *planned, const td_device_identity *seen,
                                                 char *detail, size_t detail_len);

/* In the supervisor: the index among others[0..n) of a report naming the
 * same card as mine (same PCI address, or same UUID by its hex digits), or
 * -1. Empty reports match nothing. */
long td_affinity_same_card(const td_device_identity *mine, const td_device_identity *others, size_t n);

/* Same PCI address, whatever the domain's width or the case. */
int td_affinity_same_pci(const char *a, const char *b);

/* The variables a worker on d gets before exec, as (name, value) pairs
 * pointing into d; returns how many (at most 2). */
size_t td_affinity_env(const td_device *d, const char *pairs[2][2]);

/* A Linux CPU list ("0-3,8,10-11", as in local_cpulist) into set.
 * Returns the number of CPUs in it, or -1 on bad syntax or a CPU beyond
 * CPU_SETSIZE. */
int td_cpulist_parse(const char *list, cpu_set_t *set);

/* The reverse: set as "0-3,8" into out (truncated to cap). */
void td_cpulist_format(const cpu_set_t *set, char *out, size_t cap);

#endif
