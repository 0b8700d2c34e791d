/*
 * backend.h: the table a Whisper compute backend implements (API version 2).
 *
 * A backend runs the network and nothing else: the encoder over batches of
 * 30-s windows of log-mel frames, and the decoder over batches of token
 * sequences. Decoding rules (prompts, suppression, timestamp rules, beam
 * search, fallback) live above it (decode.h); a backend turns tokens into
 * logits and, optionally, does the heavy part of one sampling step. The CPU
 * backend (backend/cpu/) is always built and is the numerical reference;
 * GPU backends (backend/vulkan/) implement the same table and are tested
 * against it.
 *
 * Batching (version 2). A context holds two kinds of slots, both numbered
 * by the caller, who owns their allocation (decode.h's slot pool):
 *   window slots   0 .. max_windows-1: one encoded window each, with every
 *                  decoder layer's cross-attention K/V; encode() fills them,
 *                  a slot keeps its window until encoded over;
 *   KV slots       0 .. max_seq-1: one decoded sequence's self-attention
 *                  cache each (max_tokens positions).
 * A decode() call carries any set of sequences, each tied to one window
 * slot and one KV slot and each at its own position (ragged n_past), so a
 * finished window's slots can take a new window in the next step
 * (continuous batching). Beams fork with kv_copy(); a released slot needs
 * no call (its positions are overwritten when reused).
 *
 * Sampling on the backend (optional entry sample()): after a decode() that
 * kept its logits (logits == NULL), sample() masks each row (static
 * suppression list, per-row ranges, the timestamp rule), takes the
 * log-softmax and returns the top k tokens with their log-probabilities,
 * a temperature draw, the timestamp log-sum-exp, the best text token and
 * the no-speech probability: about 300 bytes per sequence instead of
 * n_vocab floats. Its results equal td_wsample_row() (decode.h) on the
 * same logits; the rules above use it when a backend has it.
 *
 * Memory: memory_need() returns the exact bytes open() will hold for a
 * configuration (weights, every window slot's cross K/V, every KV slot,
 * activations for max_rows tokens and max_windows encodes), so that the
 * planner can check it against a device's free memory before starting a
 * worker.
 *
 * Errors: every entry returns TD_OK or a td_rc with the reason in err
 * (TD_ENOMEM for host or device memory, TD_EUNAVAILABLE for a missing
 * driver or feature, TD_EENGINE for a lost device); none aborts.
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

#define TD_WBACKEND_API_VERSION 2

/* How the linear layers compute (the CPU backend; others use their own).
 * F32 is the numerical reference: F16 weights widened, F32 products. INT8
 * quantizes the weights once at open and the activations row by row
 * (whisper/backend/cpu/q8.h): about 2x faster, with results within the
 * quantization's error of F32's. AUTO is INT8 where the CPU has the fast
 * int8 instructions (AVX-512 VNNI), else F32. */
enum td_wcompute {
    TD_WCOMPUTE_AUTO = 0,
    TD_WCOMPUTE_F32 = 1,
    TD_WCOMPUTE_INT8 = 2,
};

/* A context's sizes. Zero fields take their defaults; fields are only
 * ever appended. */
typedef struct td_wconfig {
    int n_threads;         /* CPU threads; 0 = one per online core */
    int max_seq;           /* KV slots: sequences alive at once (windows x beams); >= 1 */
    int max_tokens;        /* KV cache length per slot; 0 = n_text_ctx */
    int max_batch_tokens;  /* most tokens one decode call appends to one sequence
                            * (a prompt); 0 = max_tokens */
    int compute;           /* enum td_wcompute */
    int max_windows;       /* window slots (encoded windows held at once); 0 = 1 */
    int max_rows;          /* most tokens one decode call carries in all;
                            * 0 = max_seq * max_batch_tokens */
    const char *device;    /* GPU backends: the card to open, by PCI address or
                            * UUID (never by index); NULL = the backend's choice */
} td_wconfig;

/* The compute type AUTO resolves to on this machine, and names. */
enum td_wcompute td_wcompute_resolve(enum td_wcompute c);
const char *td_wcompute_name(enum td_wcompute c); /* "auto", "f32", "int8" */
/* TD_WCOMPUTE_* for "auto", "f32", "int8"; -1 for anything else. */
int td_wcompute_parse(const char *s);

typedef struct td_wbackend td_wbackend; /* an open context, backend-private */

/* One sequence of a decode() call. */
typedef struct td_wseq {
    int32_t slot;          /* KV slot, 0 .. max_seq-1; distinct within a call */
    int32_t window;        /* window slot whose cross K/V it attends */
    int32_t n_past;        /* positions already cached in the slot */
    int32_t n_tokens;      /* tokens this call appends, 1 .. max_batch_tokens */
} td_wseq;

/* One fork of kv_copy(): positions [0, n_pos) of slot src into slot dst. */
typedef struct td_wkv_copy {
    int32_t src, dst, n_pos;
} td_wkv_copy;

/* Sampling (sample()): what stays the same over a run ... */
#define TD_WSAMPLE_MAX_K 65     /* beam + 1 for the largest beam (64) */
#define TD_WSAMPLE_MAX_RANGES 4
typedef struct td_wsampler {
    const int32_t *suppress; /* token ids masked in every row, ascending (borrowed) */
    int n_suppress;
    int32_t eot, blank;      /* masked by TD_WSAMPLE_BLANK; blank -1 = none */
    int32_t ts_begin;        /* first timestamp token; -1 = no timestamp rule */
    int32_t nospeech;        /* -1 = none */
    int k;                   /* top tokens returned per row, 1 .. TD_WSAMPLE_MAX_K */
} td_wsampler;

enum {
    TD_WSAMPLE_BLANK = 1,    /* mask blank and eot (the first sampled token) */
    TD_WSAMPLE_TS_RULE = 2,  /* if the timestamps' total probability beats every
                              * text token's, mask the text tokens */
    TD_WSAMPLE_NOSPEECH = 4, /* fill no_speech_prob (the SOT position's row) */
};

/* ... and per row. */
typedef struct td_wsample_in {
    int32_t row;             /* logits row of the last decode(): its sequence index
                              * (a decode with all_logits keeps none) */
    int32_t flags;           /* TD_WSAMPLE_* */
    float temperature;       /* > 0: also draw from softmax(masked / T) with u */
    double u;                /* uniform in [0, 1) for that draw */
    int32_t n_ranges;        /* masked token ranges [from, to) */
    int32_t ranges[TD_WSAMPLE_MAX_RANGES][2];
} td_wsample_in;

typedef struct td_wsample_out {
    double no_speech_prob;   /* softmax(raw logits)[nospeech] (TD_WSAMPLE_NOSPEECH);
                              * else NaN */
    double ts_lse;           /* log-sum-exp of the masked log-probs of the timestamp
                              * tokens (before the rule); -inf when all masked */
    double best_text_lp;     /* the best text token's masked log-prob (before the rule) */
    int32_t forced_ts;       /* the timestamp rule masked the text tokens */
    int32_t all_masked;      /* every token was masked */
    int32_t has_nan;         /* the row held a NaN (a broken backend): nothing else is set */
    int32_t sampled;         /* temperature draw (-1 when temperature is 0) */
    double sampled_lp;       /* its log-prob in the masked log-softmax (T = 1) */
    int32_t top[TD_WSAMPLE_MAX_K];   /* best first, ties to the lower id */
    double top_lp[TD_WSAMPLE_MAX_K]; /* log-probs in the masked log-softmax */
} td_wsample_out;

typedef struct td_wbackend_ops {
    int api_version;       /* TD_WBACKEND_API_VERSION */
    const char *name;      /* "cpu", "vulkan" */

    /* 0 if usable here, else TD_EUNAVAILABLE with the reason (driver
     * missing). Cheap; loads nothing. */
    int (*probe)(td_error *err);

    /* Exact bytes open() holds for a model of these hyper-parameters and
     * weight type under cfg: weights (mapped or uploaded), every window
     * slot's cross K/V, every KV slot, activations, logits. -1 for a
     * configuration open() would refuse. */
    int64_t (*memory_need)(const td_whparams *hp, enum td_wtype wtype, const td_wconfig *cfg);

    int (*open)(const td_wmodel *m, const td_wconfig *cfg, td_wbackend **out, td_error *err);

    /* Encode n_win windows: mels[i] ([n_mels][2 * n_audio_ctx] floats,
     * row-major by mel bin) into window slot windows[i] (distinct), with
     * every decoder layer's cross-attention K and V. */
    int (*encode)(td_wbackend *b, int n_win, const int *windows, const float *const *mels,
                  td_error *err);

    /* Append seqs[s].n_tokens tokens to each of n_seq sequences; tokens
     * holds them one sequence after another (sum of n_tokens <= max_rows).
     * Writes the logits of each sequence's last new token to
     * logits[s * n_vocab], or, when all_logits is set, of every new token,
     * rows in the order of tokens. logits NULL (without all_logits): keep
     * the last-token rows on the backend for sample(); a backend may then
     * run the step with the next call (the Vulkan one submits it with
     * sample()'s work), so a failure of the device may come back from
     * that call instead. */
    int (*decode)(td_wbackend *b, int n_seq, const td_wseq *seqs, const int32_t *tokens,
                  int all_logits, float *logits, td_error *err);

    /* Fork KV slots: for each of n pairs, positions [0, n_pos) of src into
     * dst. Destinations are distinct and none is a source in the call. */
    int (*kv_copy)(td_wbackend *b, int n, const td_wkv_copy *pairs, td_error *err);

    /* Optional (NULL: the rules take full logits). One sampling step on the
     * rows of the last decode() (which kept its logits): out[i] for in[i].
     * The rows may be sampled over several calls (decoders sharing a
     * backend each read their own), but each row once: rows are masked in
     * place, so a row sampled before is refused (TD_EINVAL). */
    int (*sample)(td_wbackend *b, const td_wsampler *sp, int n, const td_wsample_in *in,
                  td_wsample_out *out, td_error *err);

    /* Window slot w's encoder output after ln_post
     * ([n_audio_ctx][n_audio_state]), for tests against the reference. */
    int (*encoder_output)(td_wbackend *b, int window, float *out, td_error *err);

    void (*close)(td_wbackend *b);

    /* Optional (NULL: none). Word alignment (openai's timing.py): decode
     * tokens[0..n_tokens) from position 0 in KV slot `slot` against window
     * slot `window`, and write the cross-attention weights (after softmax)
     * of n_heads heads, heads[2h] = layer and heads[2h+1] = head, to
     * out[(h * n_tokens + t) * n_audio_ctx + frame]. The slot's cache is
     * overwritten. */
    int (*align_weights)(td_wbackend *b, int slot, int window, int n_tokens,
                         const int32_t *tokens, int n_heads, const int *heads, float *out,
                         td_error *err);

    /* Optional (NULL: computes on no card). The PCI address and UUID of
     * the card the runtime opened (empty strings where it cannot tell),
     * for the worker's [affinity-verify]. */
    void (*identity)(const td_wbackend *b, char *pci, size_t pci_len, char *uuid,
                     size_t uuid_len);
} td_wbackend_ops;

extern const td_wbackend_ops td_wbackend_cpu;

/* All backends built in, CPU first. */
const td_wbackend_ops *const *td_wbackend_list(size_t *count);
const td_wbackend_ops *td_wbackend_find(const char *name);

#endif
