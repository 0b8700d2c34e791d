/*
 * vk.h: the Vulkan device layer under the Whisper Vulkan backend: loading
 * the loader, choosing and opening one device, memory and buffers,
 * compute pipelines, and recording, submitting and timing one command
 * buffer at a time. Internal to backend/vulkan/ and its tests.
 *
 * Why this shape:
 *   - The loader is opened with dlopen (libvulkan.so.1), so a machine
 *     without it gets TD_EUNAVAILABLE with the reason, never a failed
 *     start of the whole program; the supervisor never calls in here.
 *   - Shaders reach their data through buffer device addresses (Vulkan
 *     1.2's bufferDeviceAddress, in every driver the backend targets:
 *     NVIDIA, RADV, ANV, lavapipe) passed in push constants, so no
 *     descriptor sets exist: a dispatch is a pipeline, a few pointers and
 *     sizes. A pointer is td_vk_buf.addr plus a byte offset.
 *   - F16 data are read as pairs of halves from 32-bit words
 *     (unpackHalf2x16), so the backend needs no 16-bit storage feature.
 *   - A device is chosen by PCI address (VK_EXT_pci_bus_info), else by
 *     UUID, never by index, and reports what it opened (the worker checks
 *     it against the plan).
 *
 * Errors: every function that can fail returns TD_OK or a td_rc with the
 * reason in err: TD_ENOMEM for host or device memory, TD_EUNAVAILABLE for
 * a missing loader, driver or feature, TD_EENGINE for a lost device or any
 * other driver failure. Nothing aborts.
 *
 * Fault injection (tests): td_vk_fail_alloc(n) makes the n-th allocation
 * from now (host memory through td_vk_malloc, device memory, buffers,
 * pipelines) fail as out of memory; td_vk_live() counts what is alive, so
 * a test can prove that a failed open left nothing behind.
 *
 * Ownership: td_vk_open returns a device the caller frees with
 * td_vk_close after destroying every buffer and pipeline made on it.
 * One thread uses a device at a time; devices may be opened and closed
 * from several threads at once. All devices share the process's one
 * VkInstance, made at the first td_vk_open or td_vk_list and kept until
 * exit (an exit handler destroys it once no device uses it) or
 * td_vk_release: opening again never reloads the driver.
 */
#ifndef TD_WHISPER_VK_H
#define TD_WHISPER_VK_H

#include <stddef.h>
#include <stdint.h>

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include "util/error.h"

typedef struct td_vk td_vk;

/* What a device is; filled by td_vk_list and td_vk_open. */
typedef struct td_vk_info {
    char name[VK_MAX_PHYSICAL_DEVICE_NAME_SIZE];
    char pci[16];          /* "0000:00:06.0"; "" without VK_EXT_pci_bus_info */
    char uuid[48];         /* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (NVIDIA's form) */
    char driver[VK_MAX_DRIVER_NAME_SIZE + VK_MAX_DRIVER_INFO_SIZE + 2];
    uint32_t api_version, driver_version, vendor_id, device_id;
    int device_type;       /* VkPhysicalDeviceType */
    int subgroup_size;
    int sm_count;          /* multiprocessors (NVIDIA) or compute units (AMD); 0 unknown */
    uint32_t max_shared;   /* bytes of shared memory per workgroup */
    uint32_t max_invocations; /* of a workgroup in x (the invocation and x-size limits) */
    int64_t local_bytes;   /* size of the device-local heaps */
    int64_t free_bytes;    /* VK_EXT_memory_budget: budget - usage; -1 unknown */
    int has_coopmat;       /* VK_KHR_cooperative_matrix advertised */
    int has_coopmat_nv;    /* VK_NV_cooperative_matrix usable (16x16x16 f16, subgroups of 32): enabled */
    int coopmat_family;    /* VK_KHR_cooperative_matrix usable: shaders/coopmat.glsl's family
                            * (fragment shape and subgroup size) whose compilations run
                            * here, 1 to 4; 0 none. After td_vk_open, the path it enabled:
                            * NV's where both are usable (has_coopmat_nv), unless
                            * TD_VULKAN_COOPMAT=khr (or nv: that one alone) */
    int input_device_local; /* the device has memory for TD_VK_MEM_INPUT buffers in its own
                             * (mapped for the host) and TD_VULKAN_INPUT_MEM is not host
                             * (set by td_vk_open; a buffer's device_local says where it
                             * landed) */
    int usable;            /* has what the backend needs (else reason says why) */
    char reason[128];
} td_vk_info;

/* The matrix engines td_vk_open would use on the device info describes,
 * in words ("NV 16x16x16", "KHR 8x8x16, subgroups of 8", with "(its
 * shaders not built)" where the build had no compiler for them, or
 * "none"), into out (cap bytes, truncated). TD_VULKAN_COOPMAT counts. */
void td_vk_matrix_note(const td_vk_info *info, char *out, size_t cap);

/* TD_OK when the loader loads and at least one device is usable. */
int td_vk_probe(td_error *err);

/* Devices the loader sees, at most max of them into out; *n gets the count. */
int td_vk_list(td_vk_info *out, int max, int *n, td_error *err);

/* Open the device named by want: a PCI address ("0000:00:06.0", or
 * "00:06.0" within domain 0), a UUID (with or without "GPU-", dashes
 * optional), or NULL / "" for the first usable device (discrete first). */
int td_vk_open(const char *want, td_vk **out, td_error *err);
const td_vk_info *td_vk_device_info(const td_vk *vk);
void td_vk_close(td_vk *vk);

/* ------------------------------------------------------------ memory */

enum td_vk_mem {
    TD_VK_MEM_DEVICE = 0,  /* device-local; reached by copies and shaders */
    TD_VK_MEM_HOST = 1,    /* host-visible, coherent, mapped, in host memory: what copies
                            * take to the device (the staging buffer) */
    TD_VK_MEM_READBACK = 2, /* host-visible, cached if the device has it: outputs */
    TD_VK_MEM_INPUT = 3    /* host-visible, coherent, mapped, written by the host and read
                            * by shaders each call (tokens, offsets, group tables, and
                            * indirect dispatches' sizes): device-local as well where the
                            * device maps some of its memory for the host (a BAR), so that
                            * a shader's read is not a round trip over PCIe; else (or
                            * where that memory is full) as HOST, the buffer's
                            * device_local says which. Write only from the host: reads
                            * of it can be slow.
                            * TD_VULKAN_INPUT_MEM=host keeps it in host memory. */
};

typedef struct td_vk_buf {
    VkBuffer buf;
    VkDeviceMemory mem;
    uint64_t size;
    uint64_t addr;         /* device address of byte 0 */
    void *map;             /* host pointer for HOST, INPUT and READBACK, else NULL */
    int device_local;      /* in the card's memory (an INPUT buffer: where it landed) */
} td_vk_buf;

int td_vk_buf_create(td_vk *vk, uint64_t size, enum td_vk_mem kind, td_vk_buf *b, td_error *err);
/* Safe on a zeroed or already destroyed td_vk_buf. */
void td_vk_buf_destroy(td_vk *vk, td_vk_buf *b);

/* Host <-> device copies through the device's staging buffer; each waits. */
int td_vk_upload(td_vk *vk, const td_vk_buf *dst, uint64_t off, const void *src, uint64_t n,
                 td_error *err);
int td_vk_download(td_vk *vk, const td_vk_buf *src, uint64_t off, void *dst, uint64_t n,
                   td_error *err);
/* dst[off .. off+n) = 0 (n a multiple of 4); waits. */
int td_vk_fill0(td_vk *vk, const td_vk_buf *dst, uint64_t off, uint64_t n, td_error *err);

/* Host memory counted by the fault injection and td_vk_live. */
void *td_vk_malloc(size_t n);
void *td_vk_calloc(size_t n, size_t size);
void td_vk_free(void *p);

/* --------------------------------------------------------- pipelines */

typedef struct td_vk_pipe td_vk_pipe;

/* A compute pipeline from SPIR-V words, taking push_bytes of push
 * constants, with n_spec 32-bit specialization constants (ids 0..). */
int td_vk_pipe_create(td_vk *vk, const char *name, const uint32_t *spv, size_t n_words,
                      uint32_t push_bytes, const uint32_t *spec, int n_spec, td_vk_pipe **out,
                      td_error *err);
/* The same for a compilation of shaders/coopmat.glsl's KHR family that
 * the device enabled (td_vk_info.coopmat_family): with that family's
 * subgroup size required where it is not the device's default.
 * TD_EUNAVAILABLE without a family, or for an empty compilation (0
 * words: the build had no compiler for it). */
int td_vk_pipe_create_khr_cm(td_vk *vk, const char *name, const uint32_t *spv, size_t n_words,
                             uint32_t push_bytes, td_vk_pipe **out, td_error *err);
void td_vk_pipe_destroy(td_vk *vk, td_vk_pipe *p);

/* --------------------------------------------------------- recording */

/* Start recording (one command buffer per device). */
int td_vk_begin(td_vk *vk, td_error *err);
/* A dispatch. Unless td_vk_concurrent(vk, 1) is in effect, a barrier
 * orders it after everything recorded before (shaders and copies). */
void td_vk_dispatch(td_vk *vk, td_vk_pipe *p, const void *push, uint32_t gx, uint32_t gy,
                    uint32_t gz);
/* The same with the grid's size (3 uint32s: x, y, z, as
 * VkDispatchIndirectCommand) read from args + off (a multiple of 4) when
 * the command buffer runs, not when it is recorded: args a TD_VK_MEM_INPUT
 * or TD_VK_MEM_HOST buffer (the kinds made for it), written by the host before the submit
 * (which makes the host's writes visible to the device), so that a kept
 * recording (td_vk_begin_cached) replays with each call's size. A size
 * of 0 in any dimension runs nothing. */
void td_vk_dispatch_indirect(td_vk *vk, td_vk_pipe *p, const void *push, const td_vk_buf *args,
                             uint64_t off);
/* on: dispatches recorded from now on may run together (independent
 * products of one input); off: the next one waits for all of them. */
void td_vk_concurrent(td_vk *vk, int on);
/* Whether td_vk_concurrent(vk, 1) is in effect. */
int td_vk_concurrent_get(const td_vk *vk);
/* Record a write of n bytes of data (copied into the command buffer now:
 * the caller keeps nothing) to dst + off: n at most 65536, n and off
 * multiples of 4. Ordered like td_vk_copy. */
void td_vk_update(td_vk *vk, const td_vk_buf *dst, uint64_t off, const void *data, uint64_t n);
void td_vk_copy(td_vk *vk, const td_vk_buf *src, uint64_t src_off, const td_vk_buf *dst,
                uint64_t dst_off, uint64_t n);
/* dst[off .. off+n) = 0 (off and n multiples of 4), recorded like a
 * dispatch (td_vk_fill0 is the same in a submission of its own). */
void td_vk_zero(td_vk *vk, const td_vk_buf *dst, uint64_t off, uint64_t n);
/* Submit and wait (with the recording td_vk_submit_later kept, first, in
 * the same submission). */
int td_vk_submit(td_vk *vk, td_error *err);
/* End the recording and keep it to run first in the next td_vk_submit's
 * submission (one host wait for both), where nothing is kept already and
 * no timestamps are taken (else: td_vk_submit now). The caller must not
 * write what the kept recording reads before it runs: host-visible
 * inputs, and anything a td_vk_upload or td_vk_download stages, run it
 * first with td_vk_flush. td_vk_begin and td_vk_begin_cached flush it
 * where they would reuse its command buffer; td_vk_close drops it. */
int td_vk_submit_later(td_vk *vk, td_error *err);
/* Run what td_vk_submit_later kept, and wait (TD_OK when nothing is). */
int td_vk_flush(td_vk *vk, td_error *err);
/* Submissions that failed with a kept recording in them (its work never
 * ran), and in *last (unless NULL) the last one's error. */
unsigned long td_vk_later_lost(const td_vk *vk, td_error *last);

/* Record once, replay after: like td_vk_begin, but the command buffer is
 * kept under key (16 are kept, the least recently used dropped). When one
 * recorded under key has run through, *replay is 1, dispatches and copies
 * are ignored until td_vk_submit, which submits the kept one as it was:
 * the caller may skip recording it. The key must name everything the
 * recording depends on besides memory contents; td_vk_forget drops them
 * all (after a change that the keys do not name). While profiling,
 * nothing is kept. */
int td_vk_begin_cached(td_vk *vk, uint64_t key, int *replay, td_error *err);
void td_vk_forget(td_vk *vk);

/* Per-dispatch timestamps (profiling). While on, each dispatch is timed
 * and td_vk_submit adds its time to its pipeline's total. */
void td_vk_profile(td_vk *vk, int on);
typedef struct td_vk_prof {
    const char *name;
    double ms;
    long count;
    const char *stats;     /* the pipeline's statistics (td_vk_capture_stats), "" none */
} td_vk_prof;
/* The totals per pipeline since the last reset, largest first; returns
 * the count written (at most max). */
int td_vk_profile_read(td_vk *vk, td_vk_prof *out, int max, int reset);
typedef struct td_vk_disp {
    const char *name;      /* as td_vk_prof's (valid while the pipeline lives) */
    double us;
    uint32_t groups;       /* workgroups; 0 for an indirect dispatch */
} td_vk_disp;
/* The latest timed dispatches kept, over submissions */
#define TD_VK_PROFILE_LAST 4096
/* The latest max (at most TD_VK_PROFILE_LAST) timed dispatches in the
 * order they ran: which product of a layer costs what (the totals above
 * merge them); returns the count written. td_vk_profile_count: how many
 * dispatches have been timed since open (the difference of two readings
 * is what a piece of work ran). */
int td_vk_profile_last(const td_vk *vk, td_vk_disp *out, int max);
uint64_t td_vk_profile_count(const td_vk *vk);

/* Devices opened from now on (on: 1) capture their pipelines' statistics
 * where they have VK_KHR_pipeline_executable_properties: the driver's
 * own figures (on NVIDIA registers, shared memory, spills), shown by
 * vulkan-bench --stats beside the profile. Off by default: capturing may
 * cost compile time. */
void td_vk_capture_stats(int on);

/* ------------------------------------------------------------- tests */

/* The n-th allocation from now fails (1 = the next one); 0 = none. */
void td_vk_fail_alloc(long n);
/* The n-th queue submission from now fails as out of device memory (a
 * scene's run-time failure, after open); 0 = none. */
void td_vk_fail_submit(long n);
/* The n-th host wait for a submission from now reports a time-out (as a
 * hung one would; the work itself ran): the device then refuses more
 * work, TD_EENGINE, until closed; 0 = none. */
void td_vk_fail_wait(long n);
/* Allocations and Vulkan objects alive, over every device (the shared
 * instance, which outlives them, is not counted). */
long td_vk_live(void);
/* Destroy the shared instance now if no device or listing uses it (the
 * next open makes a new one); the exit handler does the same. For leak
 * checks and tests: NVIDIA's driver (580) does not survive being
 * unloaded and loaded again in one process (a SIGSEGV at exit). */
void td_vk_release(void);
/* Devices and listings using the shared instance; -1 when there is none. */
int td_vk_instance_refs(void);

#endif
