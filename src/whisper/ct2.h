/*
 * ct2.h: import a CTranslate2 Whisper model (faster-whisper's format) into
 * a legacy ggml file that the rest of tapedeck loads (model.h).
 *
 * A CTranslate2 model is a folder: model.bin (binary format versions 4-6,
 * spec "WhisperSpec"), vocabulary.json (a JSON array of tokens) or
 * vocabulary.txt (one token a line), config.json (not needed here). Tokens
 * are spelled in GPT-2's byte-level alphabet ("Ġthe"); they are turned
 * back into their raw bytes, which is what the ggml vocabulary holds.
 *
 * What changes on the way:
 *  - CTranslate2 fuses projections: self-attention Q/K/V into one
 *    [3n][n] linear, cross-attention K/V into one [2n][n]. They are split
 *    back by rows. Whisper's key projection has no bias; the fused bias
 *    carries zeros there, which is checked, then dropped.
 *  - It carries no mel filterbank: Whisper's (Slaney mel scale, 16 kHz,
 *    n_fft 400) is computed (td_wmk_mel_filters).
 *  - Weights may be float32, float16, bfloat16 or int8 with a per-row
 *    scale (w = q / scale); they are written as F16 (as whisper.cpp's
 *    files are) or F32. 1-D tensors, conv biases and the positional
 *    embeddings are always F32, as the ggml format requires.
 *  - The model's structure flags (GELU, pre-norm, no ALiBi, unscaled
 *    embeddings) are checked: a model built otherwise is refused, not
 *    converted into something that computes wrong.
 *
 * Every size read from model.bin is bounded by the file's size and the
 * loader's limits (model.h) before anything is allocated from it.
 *
 * Ownership: td_ct2_open returns a model that owns its mapping, its tables
 * and its decoded vocabulary; td_ct2_close frees it all.
 */
#ifndef TD_WHISPER_CT2_H
#define TD_WHISPER_CT2_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"
#include "whisper/model.h"

/* CTranslate2's storage types, as model.bin numbers them. */
enum td_ct2_dtype {
    TD_CT2_F32 = 0,
    TD_CT2_I8 = 1,
    TD_CT2_I16 = 2,
    TD_CT2_I32 = 3,
    TD_CT2_F16 = 4,
    TD_CT2_BF16 = 5,
};

#define TD_CT2_MAX_RANK 4
#define TD_CT2_MAX_VARS 100000
#define TD_CT2_MAX_NAME 512
#define TD_CT2_MAX_VOCAB_FILE (64u << 20) /* the real ones are about 1 MB */

typedef struct td_ct2_var {
    const char *name;         /* into the mapping, NUL-terminated */
    int rank;
    int64_t dims[TD_CT2_MAX_RANK]; /* outermost first, as CTranslate2 writes them */
    int64_t n_elem;
    enum td_ct2_dtype dtype;
    const uint8_t *data;      /* into the mapping; not aligned in general */
    size_t nbytes;
    int used;                 /* consumed by the conversion */
} td_ct2_var;

typedef struct td_ct2_model {
    char *dir;                /* as given */
    uint32_t version;         /* model.bin binary version */
    uint32_t revision;        /* the spec's revision */
    td_ct2_var *vars;
    size_t n_vars;
    td_whparams hp;           /* derived from the shapes; ftype 1 (F16) */
    enum td_ct2_dtype wdtype; /* storage type of the 2-D weights */
    /* Vocabulary as raw bytes, n_vocab tokens (special ones included). */
    uint8_t **tok;
    uint32_t *tok_len;
    int32_t n_tok;
    /* private */
    void *map;
    size_t map_size;
} td_ct2_model;

/* Parse a model.bin image (the caller's buffer, which must outlive the
 * model) without a vocabulary: the variable table and the hparams. name is
 * used in messages. TD_EINPUT with "NAME: reason" for anything malformed,
 * truncated or not a Whisper model this importer converts. For the fuzzer
 * and tests; td_ct2_open is the whole thing. */
td_rc td_ct2_parse(const void *data, size_t size, const char *name, td_ct2_model **out,
                   td_error *err);

/* Open the folder dir: map dir/model.bin, parse it, read the vocabulary.
 * TD_EINPUT for a folder that is not a CTranslate2 Whisper model (the
 * message names the file and what is wrong), TD_EIO for I/O errors. */
td_rc td_ct2_open(const char *dir, td_ct2_model **out, td_error *err);

void td_ct2_close(td_ct2_model *m);

/* Write m as a ggml file at out_path (atomically, see ggml_writer.h), with
 * its 2-D weights as wtype (TD_WT_F16 or TD_WT_F32). A model opened with
 * td_ct2_parse has no vocabulary: it gets none written (count 0). */
td_rc td_ct2_write_ggml(td_ct2_model *m, const char *out_path, enum td_wtype wtype,
                        td_error *err);

/* The standard size whose dims m has ("tiny.en", "base", "large-v3", ...),
 * or NULL when it is none of them (a fine-tuned or distilled model). */
const char *td_ct2_size_name(const td_ct2_model *m);

/* "float16", "int8", ... */
const char *td_ct2_dtype_name(enum td_ct2_dtype t);

#endif
