/*
 * backend.h: the table a Whisper compute backend implements.
 *
 * A backend runs the network: the encoder over one 30-s window of log-mel
 * frames (keeping the cross-attention keys and values it yields), and the
 * decoder over new tokens of up to max_seq sequences that share that
 * window (beams, or best-of samples), each with its own self-attention KV
 * cache. Decoding rules live above this table (decode.h); a backend only
 * turns tokens into logits. The CPU backend is always built and is the
 * numerical reference; GPU backends implement the same table and are
 * tested against it.
 *
 * Memory: memory_need() returns the exact bytes open() will hold for a
 * configuration (weights included), so that the planner can check it
 * against a device's free memory before starting a worker.
 *
 * Ownership: open() returns a context that borrows the model (which must
 * outlive it); close() frees everything open() allocated. A context is
 * used by one thread at a time (it runs its own worker threads inside).
 */
#ifndef TD_WHISPER_BACKEND_H
#define TD_WHISPER_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"
#include "whisper/model.h"

#define TD_WBACKEND_API_VERSION 1

/* How the linear layers compute (the CPU backend; others use their own).
 * F32 is the numerical reference: F16 weights widened, F32 products. INT8
 * quantizes the weights once at open and the activations row by row
 * (whisper/backend/cpu/q8.h): about 2x faster, with results within the quantization's
 * error of F32's. AUTO is INT8 where the CPU has the fast int8
 * instructions (AVX-512 VNNI), else F32. */
enum td_wcompute {
    TD_WCOMPUTE_AUTO = 0,
    TD_WCOMPUTE_F32 = 1,
    TD_WCOMPUTE_INT8 = 2,
};

typedef struct td_wconfig {
    int n_threads;         /* CPU threads; 0 = one per online core */
    int max_seq;           /* sequences decoded together (beam size, best-of); >= 1 */
    int max_tokens;        /* KV cache length per sequence; 0 = n_text_ctx */
    int max_batch_tokens;  /* most tokens one decode call may carry per sequence
                            * (the prompt); 0 = max_tokens */
    int compute;           /* enum td_wcompute */
} td_wconfig;

/* The compute type AUTO resolves to on this machine, and names. */
enum td_wcompute td_wcompute_resolve(enum td_wcompute c);
const char *td_wcompute_name(enum td_wcompute c); /* "auto", "f32", "int8" */
/* TD_WCOMPUTE_* for "auto", "f32", "int8"; -1 for anything else. */
int td_wcompute_parse(const char *s);

typedef struct td_wbackend td_wbackend; /* an open context, backend-private */

typedef struct td_wbackend_ops {
    int api_version;       /* TD_WBACKEND_API_VERSION */
    const char *name;      /* "cpu" */

    /* 0 if usable here, else TD_EUNAVAILABLE with the reason (driver
     * missing). Cheap; loads nothing. */
    int (*probe)(td_error *err);

    /* Exact bytes open() holds for a model of these hyper-parameters and
     * weight type under cfg: weights (mapped or uploaded), KV caches,
     * cross K/V, activations, logits. */
    int64_t (*memory_need)(const td_whparams *hp, enum td_wtype wtype, const td_wconfig *cfg);

    int (*open)(const td_wmodel *m, const td_wconfig *cfg, td_wbackend **out, td_error *err);

    /* Run the encoder on mel ([n_mels][2 * n_audio_ctx] floats, row-major
     * by mel bin), compute every decoder layer's cross-attention K and V,
     * and empty all sequences' KV caches. */
    int (*encode)(td_wbackend *b, const float *mel, td_error *err);

    /* Append n_tokens tokens to each of n_seq sequences (tokens[s * n_tokens
     * + t]); every sequence has n_past tokens cached already. Writes the
     * logits of the last new token of each sequence to logits[s * n_vocab],
     * or, when all_logits is set, of every new token to
     * logits[(s * n_tokens + t) * n_vocab]. */
    int (*decode)(td_wbackend *b, int n_seq, int n_tokens, const int32_t *tokens, int n_past,
                  int all_logits, float *logits, td_error *err);

    /* Rearrange KV caches: sequence d takes what sequence src[d] holds
     * (first n_past positions), for d < n_seq. Used to fork the prompt into
     * beams and to follow beam selection. */
    int (*kv_copy)(td_wbackend *b, const int *src, int n_seq, int n_past, td_error *err);

    /* The last encode's output after ln_post ([n_audio_ctx][n_audio_state]),
     * for tests against the reference. */
    int (*encoder_output)(td_wbackend *b, float *out, td_error *err);

    void (*close)(td_wbackend *b);
} td_wbackend_ops;

extern const td_wbackend_ops td_wbackend_cpu;

/* All backends built in, CPU first. */
const td_wbackend_ops *const *td_wbackend_list(size_t *count);
const td_wbackend_ops *td_wbackend_find(const char *name);

#endif
