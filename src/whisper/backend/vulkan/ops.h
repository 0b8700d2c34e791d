/*
 * ops.h: the Vulkan backend's operations, recorded into the device's
 * current command buffer (vk.h): the linear-layer product with its fused
 * epilogue (bias, GELU, an added matrix, the residual), LayerNorm, the
 * encoder's and the decoder's attention, the decoder's embedding and KV
 * stores. Arguments are device addresses (td_vk_buf.addr + byte offset)
 * and sizes in elements; nothing is checked here that the caller (the
 * backend, or a test) has not already bounded.
 *
 * Products: W is [n][k] (ldw) as halves (ldw even) or floats; A and C are
 * floats. Few rows (at most TD_VKO_MATVEC_ROWS) take the matrix-vector
 * shader, which reads each weight once per 8 rows; more take the tiled
 * one (64 x 64 tiles; a 128 x 128 variant with 8 x 8 outputs per thread
 * ran 7x slower on the H100, its accumulators in local memory). td_vko_set_matvec_rows moves the switch (tests reach both).
 *
 * Ownership: td_vko_create makes the pipelines on vk; td_vko_free
 * destroys them (before td_vk_close).
 */
#ifndef TD_WHISPER_VK_OPS_H
#define TD_WHISPER_VK_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "whisper/backend/vulkan/vk.h"

#define TD_VKO_MATVEC_ROWS 8

enum {
    TD_VKO_BIAS = 1, /* + bias[n] */
    TD_VKO_GELU = 2, /* then exact GELU */
    TD_VKO_ADD = 4,  /* then + add[m][n] (ldadd) */
    TD_VKO_ACC = 8,  /* then + C[m][n]: accumulate into C */
};

typedef struct td_vko td_vko;

/* Pipelines for heads of d_audio (16, 32, 64 or 128: Whisper has 64) and
 * d_text (up to 128) floats. */
int td_vko_create(td_vk *vk, int d_audio, int d_text, td_vko **out, td_error *err);
void td_vko_free(td_vko *o);
void td_vko_set_matvec_rows(td_vko *o, int rows);

/* C (ldc) = epilogue(A (m x k, lda) . W^T) with flags TD_VKO_*. */
void td_vko_linear(td_vko *o, int m, int n, int k, uint64_t a, int lda, uint64_t w, int w_f16,
                   int ldw, uint64_t bias, uint64_t add, int ldadd, uint64_t c, int ldc,
                   unsigned flags);

/* y[r] (ldy) = LayerNorm(x[i]) (ldx, eps 1e-5) for r < rows, where i =
 * idx[r] (ints) when idx is not 0, else r. */
void td_vko_layernorm(td_vko *o, int rows, int n, uint64_t x, int ldx, uint64_t w, uint64_t b,
                      uint64_t y, int ldy, uint64_t idx);

/* Encoder self-attention over n rows (ld floats apart), n_head heads of
 * d_audio: out = softmax(q k^T / sqrt(d)) v per head. */
void td_vko_enc_attn(td_vko *o, int n, int n_head, int ld, uint64_t q, uint64_t k, uint64_t v,
                     uint64_t out);

/* Decoder attention of rows q (ld) against keys and values at k and v:
 * row r's keys are info[2r+1] rows (ld apart) from float offset info[2r]
 * (info: ints), at most max_keys of them. Heads of d_text. Split over the
 * keys in blocks of TD_VKO_ATT_SPLIT (dec_attn.comp), whose parts go to
 * part: td_vko_dec_part_floats(rows, n_head, max_keys) floats. */
#define TD_VKO_ATT_SPLIT 128
size_t td_vko_dec_part_floats(int rows, int n_head, int d, int max_keys);
void td_vko_dec_attn(td_vko *o, int rows, int n_head, int ld, uint64_t q, uint64_t out,
                     uint64_t k, uint64_t v, uint64_t info, int max_keys, uint64_t part);

/* x[r] = tok[tp[2r]] + pos[tp[2r+1]], rows of n (tok halves or floats). */
void td_vko_embed(td_vko *o, int rows, int n, uint64_t tok, int tok_f16, uint64_t pos,
                  uint64_t tp, uint64_t x);

/* kc[dst[r] + i] = k[r][i], vc[dst[r] + i] = v[r][i], rows of n. */
void td_vko_kv_put(td_vko *o, int rows, int n, uint64_t k, uint64_t v, uint64_t kc, uint64_t vc,
                   uint64_t dst);

#endif
