/*
 * model.h: the legacy ggml Whisper model file (whisper.cpp's ggml-*.bin).
 *
 * The file is mapped read-only and validated field by field before any
 * pointer into it is handed out: magic, hyper-parameters, the mel
 * filterbank, the vocabulary (with the special tokens the file leaves
 * implied), and every tensor record (type, dims, name, size, truncation).
 * All tensors the model needs are resolved by name into td_wenc/td_wdec
 * with their shapes checked, so the compute code never looks anything up
 * or checks a shape again. Layout: ../shared/DESIGN.md, "The ggml model file".
 *
 * Supported tensor types: F32 and F16. Quantized files (Q4_0 ... Q8_0) are
 * refused with a message saying so.
 *
 * Ownership: td_wmodel_open returns a model that owns its mapping and
 * tables; every pointer inside it (tensor data, filters, token bytes) lives
 * until td_wmodel_close. A model is read-only after open and may be shared
 * by threads.
 */
#ifndef TD_WHISPER_MODEL_H
#define TD_WHISPER_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

#define TD_GGML_MAGIC 0x67676d6cu

/* Upper bounds on what a file may claim, so that sizes taken from it stay
 * sane (large-v3 is 1280 wide, 32 layers, 51866 tokens, 128 mels). */
#define TD_WMAX_STATE 4096
#define TD_WMAX_LAYERS 64
#define TD_WMAX_HEADS 64
#define TD_WMAX_VOCAB 65536
#define TD_WMAX_AUDIO_CTX 1500     /* 30 s of mel frames after the stride-2 conv */
#define TD_WMAX_TEXT_CTX 448
#define TD_WMAX_MELS 128
#define TD_WMAX_TOKEN_BYTES 256

/* Tensor element types as ggml numbers them. */
enum td_wtype {
    TD_WT_F32 = 0,
    TD_WT_F16 = 1,
};

typedef struct td_whparams {
    int32_t n_vocab;
    int32_t n_audio_ctx;
    int32_t n_audio_state;
    int32_t n_audio_head;
    int32_t n_audio_layer;
    int32_t n_text_ctx;
    int32_t n_text_state;
    int32_t n_text_head;
    int32_t n_text_layer;
    int32_t n_mels;
    int32_t ftype;         /* as stored: ggml_ftype + 1000 * quant_version */
} td_whparams;

/* One tensor record. ne[0] is the fastest-varying dimension (ggml order):
 * a linear layer's weight [n_out][n_in] has ne[0] = n_in, ne[1] = n_out,
 * row r of it starts at data + r * ne[0] elements. Unused ne[] are 1. */
typedef struct td_wtensor {
    const char *name;      /* NUL-terminated copy owned by the model */
    enum td_wtype type;
    int n_dims;
    int64_t ne[4];
    const void *data;      /* into the mapping; F16 data is IEEE half. Not aligned in
                            * general (the format has no padding): use memcpy */
    size_t nbytes;
} td_wtensor;

typedef struct td_wlinear {
    const td_wtensor *w;   /* [n_out][n_in], F16 or F32 */
    const td_wtensor *b;   /* [n_out] F32, or NULL (attn.key has none) */
} td_wlinear;

typedef struct td_wnorm {
    const td_wtensor *w, *b; /* [n_state] F32 each */
} td_wnorm;

typedef struct td_wattn {
    td_wlinear q, k, v, o;
} td_wattn;

typedef struct td_wenc_layer {
    td_wnorm attn_ln;
    td_wattn attn;
    td_wnorm mlp_ln;
    td_wlinear mlp0;       /* n_state -> 4 n_state */
    td_wlinear mlp2;       /* 4 n_state -> n_state */
} td_wenc_layer;

typedef struct td_wdec_layer {
    td_wnorm attn_ln;
    td_wattn attn;
    td_wnorm cross_ln;
    td_wattn cross;
    td_wnorm mlp_ln;
    td_wlinear mlp0, mlp2;
} td_wdec_layer;

typedef struct td_wenc {
    const td_wtensor *pos;        /* [n_audio_ctx][n_state] F32 */
    const td_wtensor *conv1_w;    /* ne = {3, n_mels, n_state}, F16 or F32 */
    const td_wtensor *conv1_b;    /* ne = {1, n_state} F32 (stored [n,1]) */
    const td_wtensor *conv2_w;    /* ne = {3, n_state, n_state} */
    const td_wtensor *conv2_b;
    td_wnorm ln_post;
    td_wenc_layer *layers;        /* n_audio_layer */
} td_wenc;

typedef struct td_wdec {
    const td_wtensor *pos;        /* [n_text_ctx][n_state] F32 */
    const td_wtensor *tok;        /* [n_vocab][n_state]: embedding and output projection */
    td_wnorm ln;
    td_wdec_layer *layers;        /* n_text_layer */
} td_wdec;

/* Special tokens. Ids follow from n_vocab (DESIGN.md, item 7); -1 = none. */
typedef struct td_wspecial {
    int32_t eot, sot, translate, transcribe, solm, prev, nospeech, notimestamps, ts_begin;
    int32_t lang_begin;           /* sot + 1 */
    int32_t n_langs;              /* 0 for English-only models */
    int32_t blank;                /* the token whose bytes are " " (220), or -1 */
} td_wspecial;

typedef struct td_wmodel {
    char *path;                   /* as given to open */
    td_whparams hp;
    int multilingual;
    enum td_wtype wtype;          /* type of the 2-D weights (F16 or F32) */
    int32_t n_mel_filters, n_fft; /* n_fft is 201: bins of a 400-point rFFT */
    const float *mel_filters;     /* [n_mels][n_fft], into the mapping */
    int32_t n_file_tokens;        /* tokens the file spells out */
    td_wspecial sp;
    td_wenc enc;
    td_wdec dec;
    size_t weight_bytes;          /* sum of all tensor data */
    /* private to model.c */
    const uint8_t **tok_bytes;    /* [n_vocab]; generated names for implied ones */
    uint32_t *tok_len;
    char *tok_store;
    td_wtensor *tensors;
    size_t n_tensors;
    void *map;
    size_t map_size;
} td_wmodel;

/* TD_OK when the hyper-parameters are within the loader's bounds (those
 * above), the heads divide the widths and n_vocab is one of Whisper's
 * three vocabularies (the special tokens' ids follow from it); else
 * TD_EINVAL with what is wrong. Inline so that the model generator, which
 * must build without the loader, applies the very same rules. */
static inline int td_whparams_check(const td_whparams *hp, td_error *err)
{
    const struct {
        const char *name;
        int32_t v, hi;
    } b[] = {
        {"n_audio_ctx", hp->n_audio_ctx, TD_WMAX_AUDIO_CTX},
        {"n_audio_state", hp->n_audio_state, TD_WMAX_STATE},
        {"n_audio_head", hp->n_audio_head, TD_WMAX_HEADS},
        {"n_audio_layer", hp->n_audio_layer, TD_WMAX_LAYERS},
        {"n_text_ctx", hp->n_text_ctx, TD_WMAX_TEXT_CTX},
        {"n_text_state", hp->n_text_state, TD_WMAX_STATE},
        {"n_text_head", hp->n_text_head, TD_WMAX_HEADS},
        {"n_text_layer", hp->n_text_layer, TD_WMAX_LAYERS},
        {"n_mels", hp->n_mels, TD_WMAX_MELS},
    };
    if (hp->n_vocab != 51864 && hp->n_vocab != 51865 && hp->n_vocab != 51866)
        return td_error_set(err, TD_EINVAL,
                            "n_vocab %d is not a Whisper vocabulary (51864 English-only, 51865 "
                            "multilingual, 51866 large-v3)",
                            (int)hp->n_vocab);
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        if (b[i].v < 1 || b[i].v > b[i].hi)
            return td_error_set(err, TD_EINVAL, "%s %d is out of range (1..%d)", b[i].name,
                                (int)b[i].v, (int)b[i].hi);
    if (hp->n_audio_state % hp->n_audio_head != 0)
        return td_error_set(err, TD_EINVAL, "n_audio_head %d does not divide n_audio_state %d",
                            (int)hp->n_audio_head, (int)hp->n_audio_state);
    if (hp->n_text_state % hp->n_text_head != 0)
        return td_error_set(err, TD_EINVAL, "n_text_head %d does not divide n_text_state %d",
                            (int)hp->n_text_head, (int)hp->n_text_state);
    return TD_OK;
}

/* Open, map and validate path. TD_EINPUT for a malformed or unsupported
 * file ("ggml-x.bin: tensor 'encoder.conv1.weight': 12 bytes left, needs
 * 92160"), TD_EIO for I/O errors. */
td_rc td_wmodel_open(const char *path, td_wmodel **out, td_error *err);

/* The same over a caller's buffer (which must outlive the model); name is
 * used in messages. For the fuzzer and tests. */
td_rc td_wmodel_open_memory(const void *data, size_t size, const char *name, td_wmodel **out,
                            td_error *err);

void td_wmodel_close(td_wmodel *m);

/* Hint that the mapped file's pages holding [data, data + nbytes) (a
 * tensor's data) need not stay resident: a backend that made its own copy
 * of a tensor (int8) calls it so that the pages it read do not count
 * twice in the process's memory. Only whole pages inside the range are
 * released; pages read later come back from the page cache. A range
 * outside the mapping (or a model opened from memory) is left alone. 0,
 * or -1 with errno (the hint is optional: callers may ignore a failure). */
int td_wmodel_release_pages(const td_wmodel *m, const void *data, size_t nbytes);

/* The tensor called name, or NULL. */
const td_wtensor *td_wmodel_tensor(const td_wmodel *m, const char *name);

/* Bytes of token id (not NUL-terminated; may be empty or invalid UTF-8).
 * Special and timestamp tokens give their display names ("<|endoftext|>",
 * "<|1.00|>"). NULL for an id out of range. */
const uint8_t *td_wmodel_token(const td_wmodel *m, int32_t id, size_t *len);

/* Language code of language index i ("en", "zh", ...), or NULL; and the
 * index of a code, or -1. Index i is token sp.lang_begin + i. */
const char *td_wlang_code(int i);
int td_wlang_index(const char *code);
int td_wlang_count(void);  /* 100: the codes large-v3 knows, in Whisper's order */

#endif
