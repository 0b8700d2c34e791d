/*
 * align.h: word times from the model's cross-attention, as openai-whisper
 * computes them (whisper/timing.py, word_timestamps=True).
 *
 * A few decoder heads of each released Whisper model attend to the audio
 * frame being spoken ("alignment heads", published per model). Re-running
 * a window's text through the decoder, [sot sequence, notimestamps, text
 * tokens, eot], and reading those heads' attention over the frames gives a
 * token x frame matrix; dynamic time warping finds the monotone path
 * through it, and the frame where the path enters a token's row is when
 * that token is spoken. The pieces, in the order the caller uses them:
 *
 * td_align_run does it all for one decoded window (the decoder's one call):
 *
 *   td_align_heads_find   the model's heads, matched by dimensions and vocabulary
 *   td_align_sequence     [sot sequence, notimestamps, text tokens, eot]
 *   (backend)             align_weights(): softmax'd cross-attention of those
 *                         heads, [n_heads][n_rows][n_audio_ctx] (backend.h, v2)
 *   td_align_window       everything below, for one window's segments:
 *     td_align_matrix       renormalise the softmax over the window's content
 *                           frames, standardise each head over the tokens, median
 *                           filter (width 7) along the frames, mean over heads
 *     td_align_dtw          DTW over -matrix with openai's tie and trace-back rules
 *     td_align_split        tokens -> words (space-delimited, or at every complete
 *                           code point for zh ja th lo my yue)
 *                           word start/end = first frame of the row predicting the
 *                           word's first token / the next word's first token
 *                           over-long words at sentence ends clipped to twice the
 *                           median word duration (at most 1.4 s)
 *     td_align_merge_punct  leading punctuation joins the next word, trailing the
 *                           previous (openai's two sets)
 *                           words handed back to their segments; the first and last
 *                           word of a segment clipped after a pause and against the
 *                           segment's own timestamps; times on the scene clock,
 *                           rounded to 10 ms as openai rounds them
 *
 * Rows: row r of the matrix is the decoder position whose output is the
 * r-th token after notimestamps, so row 0 (the notimestamps input)
 * predicts the first text token. Only rows n_sot .. n_rows-2 (notimestamps
 * and the text tokens, not eot) take part in the DTW, but the per-head
 * standardisation runs over all rows, as openai's does.
 *
 * Differences from openai, all on inputs openai would turn into NaN or an
 * exception: a head whose weights are equal over every token at a frame
 * (standard deviation 0) contributes 0 there; a matrix with a non-finite
 * value is refused (TD_EINVAL) so the caller keeps character-count times.
 *
 * Ownership: words written into td_align_seg are owned by the segment
 * until td_align_seg_release; the heads table is static.
 */
#ifndef TD_WHISPER_ALIGN_H
#define TD_WHISPER_ALIGN_H

#include <stddef.h>
#include <stdint.h>

#include "asr/transcript.h"
#include "util/error.h"
#include "whisper/backend.h"
#include "whisper/model.h"

#define TD_ALIGN_FRAMES_PER_SECOND 50  /* encoder frames: 20 ms each */
#define TD_ALIGN_MEDFILT_WIDTH 7

/* ---- alignment heads ------------------------------------------------- */

typedef struct td_align_heads {
    const char *name;          /* "base.en", "large-v3-turbo", ... */
    int n_heads;
    const int16_t (*lh)[2];    /* n_heads (decoder layer, head) pairs, ascending */
} td_align_heads;

enum {
    TD_ALIGN_MATCH_NONE = 0,      /* no released model has these dimensions */
    TD_ALIGN_MATCH_EXACT = 1,     /* one model has them */
    TD_ALIGN_MATCH_BY_NAME = 2,   /* several have them (large-v1, large-v2); the
                                   * name hint chose */
    TD_ALIGN_MATCH_GUESS = 3,     /* several have them and the hint did not tell:
                                   * large-v2 taken for large-v1/large-v2 */
};

/* The heads of the released model whose dimensions (widths, layers,
 * heads, mels) and vocabulary size hp has. name_hint (may be NULL): the
 * model's name or file name; it only separates large-v1 from large-v2,
 * which have the same dimensions ("large-v1" anywhere in it picks v1).
 * Returns TD_ALIGN_MATCH_*; *out is NULL for NONE. */
int td_align_heads_find(const td_whparams *hp, const char *name_hint,
                        const td_align_heads **out);

/* Every table entry (for tests and `tapedeck models`). */
const td_align_heads *td_align_heads_all(size_t *count);

/* The heads as align_weights() takes them: out[2i] = layer, out[2i+1] =
 * head, for i < h->n_heads (out has room for 2 * n_heads ints). */
void td_align_heads_flat(const td_align_heads *h, int *out);

/* The token sequence to re-run for alignment, as openai builds it: the
 * sot sequence ([sot], or [sot, language, task] for multilingual models),
 * notimestamps, the text tokens (ids >= eot among them are left out),
 * eot. language: index as td_wlang_index gives (ignored by English-only
 * models); translate: the task token. Writes at most cap tokens to out;
 * returns the sequence's length (more than cap: nothing usable was
 * written) and its sot sequence's length in *n_sot. -1 when the model
 * lacks a token the sequence needs or language is out of range. */
int td_align_sequence(const td_wmodel *m, int language, int translate, const int32_t *text,
                      int n_text, int32_t *out, int cap, int *n_sot);

/* ---- the steps ----------------------------------------------------- */

/* weights: [n_heads][n_rows][n_ctx] cross-attention probabilities, each
 * row a softmax over all n_ctx frames (what align_weights() writes).
 * Writes out[n_rows][n_frames]: the weights renormalised over the first
 * n_frames frames (the window's content; openai's num_frames // 2),
 * standardised per head and frame over the rows (population standard
 * deviation), median-filtered along the frames with width medfilt_width
 * (odd; reflected edges; left alone when n_frames <= medfilt_width / 2),
 * and averaged over the heads. TD_EINVAL for sizes out of range
 * (n_frames > n_ctx, even width, ...) or weights that are not finite,
 * TD_ENOMEM. */
int td_align_matrix(const float *weights, int n_heads, int n_rows, int n_ctx, int n_frames,
                    int medfilt_width, float *out, td_error *err);

/* DTW over cost[n][m] (row-major) from (0,0) to (n-1,m-1), moves
 * diagonal, down (next row) and right (next frame). Ties: diagonal only
 * when strictly cheapest, then down only when strictly cheapest, else
 * right; costs summed in float32, as openai's dtw_cpu does. Writes the
 * path's rows and columns, start first, to rows[] and cols[] (each with
 * room for n + m - 1 entries) and its length to *len. TD_EINVAL for a
 * non-finite cost or n, m < 1; TD_ENOMEM. */
int td_align_dtw(const float *cost, int n, int m, int *rows, int *cols, int *len,
                 td_error *err);

/* DTW over -matrix[n_rows][n_frames] (td_align_matrix's output, or rows
 * of it) and the time each row is entered: jump[r] = first frame of row
 * r on the path / 50, in seconds (jump[0] is 0). TD_EINVAL, TD_ENOMEM as
 * td_align_dtw. */
int td_align_jumps(const float *matrix, int n_rows, int n_frames, double *jump, td_error *err);

/* The text of a token: its bytes (not NUL-terminated, may be partial
 * UTF-8), or NULL for an unknown id. Ids >= eot are never asked for. */
typedef struct td_align_vocab {
    const uint8_t *(*token)(void *user, int32_t id, size_t *len);
    void *user;
    int32_t eot;               /* first special token: ids >= eot are not text */
} td_align_vocab;

/* A vocab reading the model's tokens (td_wmodel_token). */
td_align_vocab td_align_vocab_of(const td_wmodel *m);

/* One word while aligning: its text as openai has it (leading space
 * kept; invalid UTF-8 replaced by U+FFFD), how many text tokens it
 * holds, and its times in seconds from the window's start. */
typedef struct td_align_word {
    char *text;                /* owned, NUL-terminated */
    int n_tokens;              /* 0 once merged into a neighbour */
    double start, end;
    float prob;                /* mean token probability, or -1 */
} td_align_word;

void td_align_words_free(td_align_word *w, size_t n);

/* Split text tokens into words as openai's tokenizer does:
 * by_unicode != 0 (languages without spaces, see
 * td_align_lang_splits_unicode): a word ends wherever the tokens so far
 * decode to whole code points; otherwise those pieces are joined into
 * words that start at a piece with a leading space or a piece of ASCII
 * punctuation. Bytes that are not UTF-8 in the whole text either (a bad
 * byte, a sequence cut by the end) become U+FFFD and close their piece,
 * so every token lands in a word. Times are left 0. On success *words
 * (caller frees with td_align_words_free) and *n_words. TD_EINVAL for a
 * token id >= eot or unknown, TD_ENOMEM. */
int td_align_split(const td_align_vocab *voc, const int32_t *tokens, int n_tokens,
                   int by_unicode, td_align_word **words, size_t *n_words, td_error *err);

/* 1 for the languages openai splits at code points: zh ja th lo my yue. */
int td_align_lang_splits_unicode(const char *lang);

/* openai's default punctuation sets (UTF-8). */
extern const char td_align_prepend_punct[]; /* "'“¿([{- */
extern const char td_align_append_punct[];  /* "'.。,，!！?？:：”)]}、 */

/* openai's merge_punctuations: a word made of a space and prepended
 * punctuation joins the word after it; a word of appended punctuation
 * joins the word before it unless that ends with a space. Merged words
 * keep their text's time (the absorbing word's times do not change) and
 * are left with text "" and n_tokens 0. TD_ENOMEM. */
int td_align_merge_punct(td_align_word *w, size_t n, const char *prepend, const char *append,
                         td_error *err);

/* ---- one window ---------------------------------------------------- */

/* A decoded segment of the window, as the decoder made it. */
typedef struct td_align_seg {
    const int32_t *tokens;     /* its tokens; ids >= eot (timestamps) are skipped */
    int n_tokens;
    double start, end;         /* in: its timestamps on the scene clock; out: adjusted
                                * to its words as openai does */
    td_word *words;            /* out: owned, texts without surrounding spaces */
    size_t n_words;
} td_align_seg;

void td_align_seg_release(td_align_seg *s);

typedef struct td_align_window_in {
    const float *weights;      /* align_weights()'s output, [n_heads][n_rows][n_ctx] */
    int n_heads, n_rows, n_ctx;
    int n_sot;                 /* tokens of the sot sequence (before notimestamps) */
    int n_frames;              /* encoder frames of content: mel frames / 2 (<= n_ctx) */
    const float *token_probs;  /* probability of each text token, in order, or NULL
                                * (words get prob -1) */
    double time_offset;        /* the window's start on the scene clock (seek / 100) */
    const char *language;      /* ISO code of the text (for the split rule); NULL = "en" */
    int medfilt_width;         /* 0 = 7 */
} td_align_window_in;

/* openai's add_word_timestamps over one window: segs[0..n_segs) are the
 * window's segments in order; their text tokens, concatenated, must be
 * the n_rows - n_sot - 2 tokens between notimestamps and eot that the
 * weights were computed on (TD_EINVAL otherwise). Fills each segment's
 * words (replacing none: words must be NULL on entry) and adjusts its
 * start and end. *last_speech is the end of the last speech before this
 * window on the scene clock (0 at the start); it is updated to the last
 * segment's end. On error no segment holds words. */
int td_align_window(const td_align_vocab *voc, const td_align_window_in *in, td_align_seg *segs,
                    size_t n_segs, double *last_speech, td_error *err);

/* ---- with a backend --------------------------------------------------- */

typedef struct td_align_run_in {
    const td_align_heads *heads;  /* td_align_heads_find's */
    int slot;                     /* a free KV slot (its cache is overwritten) */
    int window;                   /* the window slot holding the encoded window */
    int language;                 /* language index (td_wlang_index); multilingual models */
    int translate;                /* the task the window was decoded with */
    const char *language_code;    /* "en", "ja", ... (the split rule); NULL = "en" */
    int n_frames;                 /* encoder frames of content (mel frames / 2) */
    double time_offset;           /* the window's start on the scene clock */
    const float *token_probs;     /* per text token, or NULL */
} td_align_run_in;

/* One window's word times with a backend: builds the sequence from the
 * segments' text tokens (td_align_sequence), runs ops->align_weights and
 * td_align_window on its result. TD_EUNAVAILABLE when the backend has no
 * align_weights (the caller keeps character-count times); the backend's
 * errors; td_align_window's. */
int td_align_run(const td_wbackend_ops *ops, td_wbackend *b, const td_wmodel *m,
                 const td_align_run_in *in, td_align_seg *segs, size_t n_segs,
                 double *last_speech, td_error *err);

#endif
