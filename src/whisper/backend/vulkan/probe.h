/*
 * probe.h: what the Vulkan loader sees, as the text device discovery's
 * probe child prints (`tapedeck probe-vulkan`, device/devices.h). Kept
 * apart from vk.h so that callers need no Vulkan headers.
 *
 * One line per physical device:
 *   vk PCI UUID TOTAL FREE VENDOR TYPE USABLE NAME REASON MATRIX
 * PCI "0000:00:06.0" or "-" (no VK_EXT_pci_bus_info), UUID or "-", TOTAL
 * the device-local heaps in bytes, FREE the VK_EXT_memory_budget answer
 * (budget - usage) or -1, VENDOR the PCI vendor id in hex, TYPE
 * VkPhysicalDeviceType (1 integrated, 2 discrete, 3 virtual, 4 cpu),
 * USABLE 1 when the backend can run there, NAME and REASON hex-encoded
 * ("-" for none), MATRIX the matrix engines the backend would use there
 * (vk.h's td_vk_matrix_note, hex-encoded; "-" when not usable; a line
 * without it is read as from an older tapedeck); or one line
 * "note vulkan: WHY" when the loader or an instance is missing.
 */
#ifndef TD_WHISPER_BACKEND_VULKAN_PROBE_H
#define TD_WHISPER_BACKEND_VULKAN_PROBE_H

#include <stddef.h>

/* Writes at most cap bytes (NUL-terminated) to out; returns the length
 * the whole answer needs, as snprintf does. */
size_t td_vulkan_probe_text(char *out, size_t cap);

#endif
