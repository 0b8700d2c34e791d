/*
 * vulkan.h: the Whisper Vulkan backend's table (backend.h, API version 2)
 * and what it tells beyond the table: the device it opened (for the
 * worker's affinity check) and per-dispatch timings (for benchmarks).
 *
 * Device: TD_VULKAN_DEVICE in the environment names it by PCI address or
 * UUID (vk.h's td_vk_open); unset, the first usable device (discrete
 * first). The worker sets it from its plan, so a card is never chosen by
 * index. TD_VULKAN_PROFILE=1 times every dispatch (timestamp queries).
 * TD_VULKAN_MATMUL=tiled|coopmat|... (ops.h's td_vko_path_name) forces the products' path
 * (else a timed trial at the first open on a device and driver, cached in
 * $XDG_CACHE_HOME/tapedeck/vulkan-paths); TD_VULKAN_FUSE_LN=0 takes the
 * decoder's LayerNorm out of its few-row products (a dispatch of its own
 * instead, as for many rows), TD_VULKAN_QKV=0 makes its few-row q, k
 * and v three products instead of one.
 *
 * Configuration: one decode call carries at most 65535 rows (max_rows
 * 0 means max_seq x max_batch_tokens capped there; more is refused).
 *
 * Only built with the Vulkan build (the Makefile's optional part,
 * TD_HAVE_VULKAN).
 */
#ifndef TD_WHISPER_BACKEND_VULKAN_H
#define TD_WHISPER_BACKEND_VULKAN_H

#include "whisper/backend.h"
#include "whisper/backend/vulkan/vk.h"

extern const td_wbackend_ops td_wbackend_vulkan;

/* The device an open context runs on (name, PCI address, UUID, memory). */
const td_vk_info *td_wvk_device(const td_wbackend *b);

/* Which product path open() chose (tiled or cooperative-matrix) and why;
 * and forcing one (tests, benchmarks): TD_EUNAVAILABLE where the device
 * has no cooperative-matrix path. */
const char *td_wvk_path_note(const td_wbackend *b);
int td_wvk_set_path(td_wbackend *b, int coopmat, td_error *err);

/* One product's time with probes (ops.h's td_vko_cm_probe; path an enum
 * td_vko_path), ms. */
int td_wvk_cm_probe(td_wbackend *b, int path, int m, int n, int k, unsigned probes, double *ms,
                    td_error *err);
/* The windows the encoder runs at once in this plan (tests, benchmarks). */
int td_wvk_enc_batch(const td_wbackend *b);
/* ops.h's td_vko_set_split_parts (benchmarks): returns the setting before. */
int td_wvk_set_split_parts(td_wbackend *b, int parts);
/* The matrix engines' rate (ops.h's td_vko_cm_peak), TFLOP/s. */
int td_wvk_cm_peak(td_wbackend *b, int mode, int groups, double *tflops, td_error *err);

/* Whether the default (TD_VULKAN_XCM=auto) runs a decode call's
 * cross-attention on the matrix engines: rows rows of heads heads, in
 * workgroups workgroups there (groups of up to 64 of a window's rows,
 * times heads), on a card of sms multiprocessors (0: unknown); a cost
 * model of both kernels (vulkan.c). */
int td_wvk_xcm_pays(int rows, int heads, int workgroups, int sms);

/* Turn per-dispatch timing on or off, and read the totals per shader
 * (largest first; reset clears them), or the latest timed dispatches in
 * order (vk.h's td_vk_profile_last). */
void td_wvk_profile(td_wbackend *b, int on);
int td_wvk_profile_read(td_wbackend *b, td_vk_prof *out, int max, int reset);
int td_wvk_profile_last(const td_wbackend *b, td_vk_disp *out, int max);
uint64_t td_wvk_profile_count(const td_wbackend *b);

/* sample() on the device since open: calls, rows, and rows whose float
 * sums left a near-tie that the host decided on the row read back
 * (vk_sample.h). */
void td_wvk_sample_stats(const td_wbackend *b, long *calls, long *rows, long *host_rows);

#endif
