/*
 * ggml_writer.h: stream a legacy ggml Whisper model file to disk, crash-safe.
 *
 * The two writers of model files (the random-weight generator, mkmodel.c,
 * and the CTranslate2 importer, ct2.c) share this: the file goes to a
 * temporary file beside the target (named as util/atomic.h names its own,
 * ".tdtmp.<pid>.<name>.XXXXXX", so orphan sweeps recognise it), is
 * fsynced, renamed into place and the directory fsynced. A model is
 * either absent, its old version, or complete: an interrupted import
 * never leaves a truncated ggml-*.bin for the model search to find.
 *
 * Write errors are sticky: the write calls return nothing, and the first
 * failure is reported by td_ggml_writer_commit, which then removes the
 * temporary file. Layout of what is written: ../shared/DESIGN.md, "The
 * ggml model file", and model.h.
 *
 * Builds with src/util/error.c alone (the generator must build without
 * the rest of tapedeck).
 */
#ifndef TD_WHISPER_GGML_WRITER_H
#define TD_WHISPER_GGML_WRITER_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/error.h"
#include "whisper/model.h"

typedef struct td_ggml_writer {
    const char *path;     /* final name (borrowed; must outlive the writer) */
    char dir[PATH_MAX];
    char tmp[PATH_MAX];
    FILE *f;
    char *iobuf;
    int failed_errno;     /* first write error, or 0 */
    uint64_t bytes;       /* written so far */
} td_ggml_writer;

/* Create the temporary file beside path. On failure nothing is left. */
int td_ggml_writer_open(td_ggml_writer *w, const char *path, td_error *err);

void td_ggml_write_bytes(td_ggml_writer *w, const void *p, size_t n);
void td_ggml_write_i32(td_ggml_writer *w, int32_t v);   /* little-endian */
void td_ggml_write_f32(td_ggml_writer *w, float v);     /* little-endian bits */

/* The magic and the 11 hyper-parameters, as given (ftype included). */
void td_ggml_write_hparams(td_ggml_writer *w, const td_whparams *hp);

/* A tensor record's head: n_dims, name length, type, ne[0..n_dims), name.
 * The caller writes the data right after (F32: 4 bytes, F16: 2 bytes per
 * element, ne[0] fastest). */
void td_ggml_write_tensor_head(td_ggml_writer *w, const char *name, int n_dims,
                               const int64_t *ne, enum td_wtype type);

/* Flush, fsync, close, rename over path, fsync the directory. On any
 * error (this one or an earlier write's) the temporary file is removed
 * and the error returned. The writer is finished either way. */
int td_ggml_writer_commit(td_ggml_writer *w, td_error *err);

/* Give up: close and remove the temporary file. Safe after commit. */
void td_ggml_writer_abort(td_ggml_writer *w);

#endif
