/*
 * vk_sample.h: the Vulkan backend's sampling step (backend.h's optional
 * sample()) on the device: shaders/sample.comp runs one workgroup per
 * row of the last decode's logits and returns about 600 bytes per row
 * instead of n_vocab floats; the host finishes each row in double as
 * whisper/sample.c does. Internal to backend/vulkan/.
 *
 * Exactness: token ids (the top k, the timestamp rule, the temperature
 * draw) equal td_wsample_row()'s on the same logits; log-probabilities
 * and the no-speech probability differ by float rounding (sums of
 * exp in float, logs in double: about 1e-6). The two decisions that
 * depend on sums of exp (the timestamp rule, and which token a draw with
 * a given u lands on) are taken on the device only when they are farther
 * from a tie than the float sums' error bound; within it (a few in 10^4
 * draws, and exact ties such as u = 0), the row is read back (n_vocab
 * floats) and td_wsample_row() decides, so the answer is the CPU's in
 * every case. The shader never writes the logits: a row could be sampled
 * again, but the table's rule (each row once) is kept, as on the CPU.
 *
 * The suppression list is uploaded as a bitmask when it differs from the
 * one on the device (once per sampler in practice), by a copy recorded
 * before the dispatch: one submission and one host wait per call.
 *
 * Ownership: td_vks_create makes the pipeline and buffers on vk;
 * td_vks_free destroys them (before td_vk_close).
 */
#ifndef TD_WHISPER_VK_SAMPLE_H
#define TD_WHISPER_VK_SAMPLE_H

#include <stdint.h>

#include "whisper/backend.h"
#include "whisper/backend/vulkan/vk.h"

typedef struct td_vks td_vks;

/* Device and host-visible bytes a sampler for max_rows rows of n_vocab
 * holds (for the backend's memory_need). */
uint64_t td_vks_bytes(int max_rows, int n_vocab);

/* The shader's workgroup (one per row) is the largest of 1024, 512, 256
 * and 128 invocations that the device's limits take with its shared
 * memory (2 KB + 20 bytes per invocation): 1024 on every desktop driver
 * and lavapipe, down to Vulkan's guaranteed minimums (128 invocations,
 * 16 KB). TD_VULKAN_SAMPLE_WG=N asks for N (within those limits). */
int td_vks_create(td_vk *vk, int max_rows, int n_vocab, td_vks **out, td_error *err);
/* The same with the workgroup size given (0: chosen as above); a size the
 * device cannot take, or not one of the four, is TD_EUNAVAILABLE. */
int td_vks_create_wg(td_vk *vk, int max_rows, int n_vocab, int wg, td_vks **out, td_error *err);
/* The workgroup size a sampler runs with. */
int td_vks_wg(const td_vks *s);
void td_vks_free(td_vks *s);

/* The last decode kept rows rows of logits for sampling (0: none, e.g.
 * after a decode that returned its logits); every row is unsampled. */
void td_vks_kept(td_vks *s, int rows);

/* sample() on the kept rows of logits (rows of n_vocab floats from byte
 * 0 of the buffer). */
int td_vks_run(td_vks *s, const td_vk_buf *logits, const td_wsampler *sp, int n,
               const td_wsample_in *in, td_wsample_out *out, td_error *err);

/* Calls, rows sampled, and rows the host finished on the read-back row
 * (near-ties), since create. */
typedef struct td_vks_stats {
    long calls, rows, host_rows, mask_uploads;
} td_vks_stats;
void td_vks_get_stats(const td_vks *s, td_vks_stats *st);

#endif
