/*
 * vulkan.h: the Whisper Vulkan backend's table (backend.h, API version 2)
 * and what it tells beyond the table: the device it opened (for the
 * worker's affinity check) and per-dispatch timings (for benchmarks).
 *
 * Device: TD_VULKAN_DEVICE in the environment names it by PCI address or
 * UUID (vk.h's td_vk_open); unset, the first usable device (discrete
 * first). The worker sets it from its plan, so a card is never chosen by
 * index. TD_VULKAN_PROFILE=1 times every dispatch (timestamp queries).
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

/* Turn per-dispatch timing on or off, and read the totals per shader
 * (largest first; reset clears them). */
void td_wvk_profile(td_wbackend *b, int on);
int td_wvk_profile_read(td_wbackend *b, td_vk_prof *out, int max, int reset);

#endif
