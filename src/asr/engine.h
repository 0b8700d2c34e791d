/*
 * engine.h: the speech-engine table.
 *
 * An engine turns 16 kHz mono PCM into a transcript with word times. Each
 * engine is a versioned table of functions (as SQLite's VFS or FFmpeg's
 * codecs): the run asks each one whether it can work here (probe), how
 * much memory a configuration needs, then opens an instance per worker and
 * transcribes scene after scene with it. The subtitle task does not care
 * which engine it talks to.
 *
 * Engines, in the order "auto" tries them: "whisper" (tapedeck's own
 * Whisper implementation; needs a ggml model file installed) and "sphinx"
 * (PocketSphinx, Debian's en-us model; CPU, English; always there).
 *
 * Ownership: open allocates the instance; close frees it. The transcript
 * passed to transcribe is initialised by the caller and filled by the
 * engine; the caller releases it.
 */
#ifndef TD_ASR_ENGINE_H
#define TD_ASR_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "asr/transcript.h"
#include "util/error.h"

#define TD_ENGINE_API_VERSION 1

/* Where samples come from: read up to max samples (16 kHz mono float),
 * return the count, 0 at the end, or a negative td_rc with err filled. */
typedef struct td_pcm_source {
    long (*read)(void *ctx, float *out, size_t max, td_error *err);
    void *ctx;
    double duration; /* seconds if known, else -1 */
} td_pcm_source;

/* Called as audio is consumed, with the seconds processed so far. Return
 * nonzero to stop (transcribe then returns TD_EABORT). */
typedef int (*td_progress_fn)(void *user, double seconds_done);

typedef struct td_engine_config {
    const char *language;  /* ISO 639-1, "auto", or NULL for the default */
    const char *model;     /* engine-specific model name or path, or NULL */
    const char *device;    /* "cpu" or a device id from the planner */
    int threads;           /* 0: engine's choice */
    const char *models_dir; /* where to look for models first, or NULL */
    int beam_size;         /* 0: engine's default; 1: greedy */
    int compute;           /* whisper on the CPU: enum td_wcompute (0 = auto) */
    int translate;         /* translate into English (engines that can) */
    int decode;            /* whisper: enum td_wdecode_mode (0 = the default) */
    int batch;             /* whisper, batched decoding: windows at once; 0 = default */
    const char *backend;   /* whisper: "auto" (NULL), "cpu" or "vulkan" */
    int streams;           /* whisper, batched: scenes decoded at once by this
                            * instance and its clones (ops->clone), their
                            * windows batched together; 0 or 1 = one */
} td_engine_config;

/* How the whisper engine walks a scene's speech. SEQUENTIAL is
 * openai-whisper's transcribe loop (one window at a time, each conditioned
 * on the text before it); BATCHED cuts the speech into chunks of at most
 * 30 s at pauses and decodes many at once. */
enum td_wdecode_mode {
    TD_WDECODE_DEFAULT = 0,
    TD_WDECODE_BATCHED = 1,
    TD_WDECODE_SEQUENTIAL = 2,
};
const char *td_wdecode_mode_name(int mode);  /* "batched", "sequential" (the default's) */
int td_wdecode_mode_parse(const char *s);   /* TD_WDECODE_*, -1 for anything else */

typedef struct td_engine td_engine; /* an open instance, engine-private */

/* How an open whisper instance computes (strings are static). */
typedef struct td_engine_settings {
    const char *backend;   /* "cpu" */
    const char *compute;   /* "int8", "f32" */
    const char *decode;    /* "batched", "sequential" */
    int batch;             /* windows decoded together */
    const char *pci, *uuid; /* the card the backend's runtime opened; "" = none
                             * (owned by the instance) */
    int streams;           /* scenes decoded at once (instance and clones) */
} td_engine_settings;

typedef struct td_engine_ops {
    int api_version;       /* TD_ENGINE_API_VERSION */
    const char *name;      /* "sphinx" */
    const char *description;

    /* 0 if the engine can run with this configuration here; otherwise a
     * td_rc (TD_EUNAVAILABLE, TD_EINVAL) with the reason in err. Must be
     * cheap and must not initialise a GPU runtime. */
    int (*probe)(const td_engine_config *cfg, td_error *err);

    /* Bytes of memory an instance needs with this configuration. */
    int64_t (*memory_need)(const td_engine_config *cfg);

    int (*open)(const td_engine_config *cfg, td_engine **out, td_error *err);

    /* Transcribe everything src delivers into out (times in seconds from
     * the start of the source). Silence gives an empty transcript, not an
     * error. */
    int (*transcribe)(td_engine *eng, const td_pcm_source *src, td_transcript *out,
                      td_progress_fn progress, void *user, td_error *err);

    /* Model name actually used, for markers ("en-us"). */
    const char *(*model_name)(const td_engine *eng);

    void (*close)(td_engine *eng);

    /* Optional: how an open instance computes, for logs and markers. */
    void (*settings)(const td_engine *eng, td_engine_settings *out);

    /* Optional (NULL: one scene at a time). Another instance for a scene
     * transcribed at the same time in another thread, sharing eng's model
     * and backend: their network calls are batched together. At most
     * cfg->streams - 1 clones of an instance; TD_EUNAVAILABLE when it has
     * no room for another. Each instance is used by one thread at a time;
     * clones are closed (ops->close) before eng. */
    int (*clone)(td_engine *eng, td_engine **out, td_error *err);
} td_engine_ops;

/* All engines built in, in preference order for "auto". */
const td_engine_ops *const *td_engine_list(size_t *count);
const td_engine_ops *td_engine_find(const char *name);

/* Pick an engine: name "auto" takes the first whose probe succeeds. On
 * failure err holds each engine's reason. */
int td_engine_select(const char *name, const td_engine_config *cfg,
                     const td_engine_ops **out, td_error *err);

extern const td_engine_ops td_engine_whisper;
/* Whisper's batched decoding: scenes a worker decodes at once by default
 * (td_engine_config.streams), and the most. */
#define TD_WHISPER_DEFAULT_STREAMS 2
#define TD_WHISPER_MAX_STREAMS 8
/* Whisper's batched decoding: the largest batch of windows, at most cap
 * (and a CPU's useful most), whose memory_need fits budget bytes; 1 if
 * none larger does. */
int td_whisper_pick_batch(const td_engine_config *cfg, int64_t budget, int cap);
/* The most windows one of the engine's speech batches can bring (a batch
 * larger than this holds memory no scene uses). */
int td_whisper_max_batch(void);
/* Batched decoding: where to cut total samples of joined speech into
 * chunks, each walked window by window as the sequential loop walks its
 * audio, only at utterance starts (cuts, ascending): about one chunk per
 * TD_WHISPER_CHUNK_TARGET_S of speech, at least
 * min(TD_WHISPER_CHUNK_MIN_PARALLEL, the 30-s windows the speech needs),
 * at most batch and cap, as evenly as the cuts allow. Writes the chunks'
 * starts, ascending, 0 first, into bounds[0 .. n) and returns n (>= 1). */
#define TD_WHISPER_CHUNK_TARGET_S 90
#define TD_WHISPER_CHUNK_MIN_PARALLEL 4
size_t td_whisper_chunk_starts(const size_t *cuts, size_t n_cuts, size_t total, int batch,
                               size_t *bounds, size_t cap);
/* The bytes a GPU backend b holds for a model of these hyper-parameters
 * and weight type (enum td_wtype) opened as this configuration asks (beam,
 * decode mode, batch): b's memory_need() of the engine's own backend
 * configuration. -1 for one it refuses. */
struct td_wbackend_ops;
struct td_whparams;
int64_t td_whisper_device_need(const td_engine_config *cfg, const struct td_wbackend_ops *b,
                               const struct td_whparams *hp, int wtype);
extern const td_engine_ops td_engine_sphinx;

#endif
