/*
 * models.h: where Whisper models are installed, and how a name finds one.
 *
 * Models are whisper.cpp's files, named ggml-NAME.bin (ggml-base.en.bin,
 * ggml-large-v3.bin, ...). They are looked for in, in order:
 *   1. the folder given with --models-dir;
 *   2. each folder of $TAPEDECK_MODELS_DIR (colon-separated), when it is
 *      set, and then nothing else (so a setup can be made hermetic);
 *      otherwise:
 *   3. $XDG_DATA_HOME/tapedeck/models (default ~/.local/share/tapedeck/models);
 *   4. /usr/local/share/tapedeck/models;
 *   5. /usr/share/tapedeck/models.
 * A --model value that names an existing file (or contains a '/') is used
 * as a path. Without --model, the best installed model is taken: the
 * largest, preferring an English-only one of the same size when the
 * language is English.
 *
 * Nothing here opens a model beyond stat(); callers validate with
 * td_wmodel_open.
 */
#ifndef TD_WHISPER_MODELS_H
#define TD_WHISPER_MODELS_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

#define TD_WMODELS_MAX_DIRS 16

typedef struct td_wmodels_path {
    char dirs[TD_WMODELS_MAX_DIRS][PATH_MAX];
    int n;
} td_wmodels_path;

/* The search path for models_dir (may be NULL), from the environment. */
void td_wmodels_search_path(const char *models_dir, td_wmodels_path *p);

typedef struct td_wmodel_entry {
    char name[NAME_MAX + 1];   /* "base.en" */
    char path[PATH_MAX];
    int64_t size;              /* bytes */
    int rank;                  /* preference: larger is better; 0 for unknown names */
    int shadowed;              /* the same name was found earlier in the path */
} td_wmodel_entry;

/* Every ggml-*.bin in the search path, in path order then by name.
 * *out is malloc'd (caller frees); *n may be 0. Unreadable folders are
 * skipped. */
int td_wmodels_list(const td_wmodels_path *p, td_wmodel_entry **out, size_t *n, td_error *err);

/* Resolve --model (NULL: the best installed; language may be NULL) into a
 * file path. TD_EUNAVAILABLE with a message naming the folders searched
 * when nothing is found. */
int td_wmodels_resolve(const td_wmodels_path *p, const char *model, const char *language,
                       char *path, size_t cap, td_error *err);

/* "base.en" for ".../ggml-base.en.bin"; other file names lose only their
 * folder and a ".bin" suffix. */
void td_wmodels_name_of(const char *path, char *name, size_t cap);

/* Where an installed model came from: a small JSON file beside it,
 * PATH.origin.json (ggml-tiny.en.bin.origin.json), written by
 * `tapedeck models import`. Fields: "source" (the folder imported),
 * "format" ("CTranslate2 float16"), "sha256" (of the source model.bin),
 * "note" (free text, e.g. the package it came in), "imported" (UTC time),
 * "tapedeck" (version). A model without one was put there by hand. */
typedef struct td_wmodel_origin {
    const char *source, *format, *sha256, *note;
} td_wmodel_origin;

/* Write model_path's origin record (atomically), adding the time and
 * tapedeck's version. */
int td_wmodels_write_origin(const char *model_path, const td_wmodel_origin *o, td_error *err);

/* One line saying where model_path came from, into out ("" when it has no
 * origin record; a damaged record says so). */
void td_wmodels_describe_origin(const char *model_path, char *out, size_t cap);

#endif
