/*
 * vram.h: which Whisper model, and which batch, each GPU worker runs
 * ([vram-check]), and what a worker steps down to when its card runs out
 * of memory at run time ([vram-safety]).
 *
 * The fallback chain is the installed models, largest first, one per size
 * (large-v3, large-v3-turbo, large-v2, large, large-v1, medium, small,
 * base, tiny): an English-only ".en" model is taken for its size when the
 * language is English, a multilingual one otherwise (translation, or a
 * fixed language other than English, never takes ".en"; automatic
 * detection takes ".en" only where it is all there is of that size).
 * `--model X` pins X: the chain is X alone, or X and the installed models
 * below it with --allow-downgrade.
 *
 * Per card: the first model of the chain whose exact need (the GPU
 * backend's memory_need() for the configuration the engine will open:
 * beam, batch, decode mode) fits the card's free memory less a margin
 * (td_vram_margin), at batch 1 or the batch asked for; then, in batched
 * decoding without --batch, the largest batch that still fits, up to the
 * most windows one speech batch of the engine brings (td_whisper_max_batch)
 * and to what the CPU backend also opens (a GPU worker falls back to it
 * where the card cannot run the GPU backend). Free
 * memory comes from device discovery (NVML, Level Zero, sysfs); where the
 * card reports only its total, the total is used and the reason says so;
 * where it reports neither, nothing can be checked and the chain's first
 * model is taken at batch 1 (or --batch).
 *
 * Nothing here opens a GPU runtime: memory_need() is arithmetic on the
 * model's hyper-parameters, so the supervisor may call it.
 *
 * Ownership: chains are caller-owned values (fixed arrays); picks are
 * plain values.
 */
#ifndef TD_RUN_VRAM_H
#define TD_RUN_VRAM_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "device/devices.h"
#include "util/error.h"
#include "whisper/backend.h"
#include "whisper/model.h"
#include "whisper/models.h"

#define TD_VRAM_MAX_MODELS 16

typedef struct td_vram_model {
    char name[64];           /* "large-v3", "base.en", or a pinned file's name */
    char path[PATH_MAX];     /* "" for a model known by its dimensions only (tests) */
    td_whparams hp;
    enum td_wtype wtype;
    int rank;                /* models.c's preference (0: unknown name) */
} td_vram_model;

typedef struct td_vram_chain {
    td_vram_model items[TD_VRAM_MAX_MODELS]; /* best first */
    int n;
    int pinned;              /* items[0] was named with --model */
} td_vram_chain;

/* The chain's members among installed entries (models.h's list), best
 * first: writes indices into v to idx (at most TD_VRAM_MAX_MODELS) and
 * returns their count. Unknown names and shadowed entries are left out.
 * language may be NULL ("auto"). */
int td_vram_chain_select(const td_wmodel_entry *v, size_t n, const char *language, int translate,
                         int *idx);

/* The chain of installed models for these settings, each model's header
 * read (td_wmodel_open; its tensors are not touched). model: --model, or
 * NULL; with it, the chain is that model, followed by the chain's models
 * ranked below it when allow_downgrade is set. TD_EUNAVAILABLE when no
 * model is installed or the pinned one cannot be read. */
int td_vram_chain_installed(const char *models_dir, const char *model, const char *language,
                            int translate, int allow_downgrade, td_vram_chain *out,
                            td_error *err);

/* What a worker will open, for td_vram_need. */
typedef struct td_vram_ask {
    const td_wbackend_ops *backend; /* the GPU backend (memory_need) */
    int batched;             /* decode mode batched (else batch is 1) */
    int batch;               /* --batch; 0 = the largest that fits */
    int beam_size;           /* --beam-size; 0 = the engine's default */
    int streams;             /* scenes a worker decodes at once (batched); 0 = 1:
                              * the backend holds batch windows for each */
} td_vram_ask;

/* Bytes the backend holds for model m at batch b, exactly as the engine
 * configures it (td_whisper_device_need); -1 for a configuration it
 * refuses (too many sequences). */
int64_t td_vram_need(const td_vram_ask *a, const td_vram_model *m, int batch);

/* Memory kept free on a card: 4% of its total, at least 256 MiB (driver
 * and other contexts, fragmentation); 256 MiB when the total is unknown. */
int64_t td_vram_margin(const td_device *d);

typedef struct td_vram_pick {
    int fits;                /* 0: no model of the chain fits this card */
    int model;               /* index in the chain; -1 when none fits */
    int batch;
    int checked;             /* 0: the card reports no memory; nothing checked */
    int64_t need;            /* bytes, the chosen configuration's; else the
                              * smallest model's at batch 1 */
    int64_t avail;           /* free (or total) less the margin; -1 unknown */
    int64_t margin;
    char why[384];           /* "large-v3 batch 8: needs 9.1 GiB of 76.2 GiB free
                              * (margin 3.2 GiB); ..." */
} td_vram_pick;

/* The pick for one card (see the head of this file). */
void td_vram_pick_device(const td_device *d, const td_vram_chain *c, const td_vram_ask *a,
                         td_vram_pick *out);

/* Run time ([vram-safety]): the configuration after an out-of-memory at
 * (model index *model, *batch) of chain c: half the batch while it is
 * above 1, else the next model of the chain at batch 1. Returns 1 with
 * *model and *batch updated, 0 when the chain's smallest model at batch 1
 * was the one that failed (the scene belongs on a CPU worker). */
int td_vram_step_down(const td_vram_chain *c, int *model, int *batch);

#endif
