/*
 * decode.h: openai-whisper's transcribe loop over a backend.
 *
 * Given the normalized log-mel of a stretch of audio (padded with 30 s of
 * silence as openai-whisper pads it), this walks it window by window as
 * whisper/transcribe.py does: SOT sequence and optional language
 * detection, suppress-blank and the suppressed tokens, the timestamp
 * rules, greedy / beam search (beam_size) at T = 0 and best-of sampling at
 * T > 0, temperature fallback on compression ratio and average
 * log-probability, the no-speech skip, conditioning on the previous text
 * (last 223 tokens), and the seek advance. It yields segments with start
 * and end times and word times.
 *
 * Word times (word_align, on by default) come from the model's alignment
 * heads as openai-whisper's word_timestamps=True computes them
 * (whisper/align.h): each window's text is run through the decoder once
 * more and its cross-attention aligned to the audio frames; segment ends
 * follow their words, and words stay in time order across windows. Unlike
 * openai's, a window that ends inside a segment goes on from its last
 * timestamp, not from its last word's end (that lost utterances on the
 * long benchmark scene). Where the model's heads are not known
 * (td_align_heads_find matches released models by dimensions and
 * vocabulary) or the backend has no align_weights, a segment's duration is
 * shared among its words by their length in characters
 * (td_wdecoder_word_times says which, and why).
 *
 * Guards (guard, on by default; whisper/guard.h): after each window (or
 * batch chunk window), its segments are checked against the speech the
 * caller's VAD found there (td_wdecoder_set_speech; without it, only the
 * checks that need no speech run: repeats and loops). A window with a
 * sparse segment, a repeat or a loop is decoded again at the next
 * temperature, without a prompt (a prompt is what most often makes a
 * window say the previous one again). Gaps: much of what a VAD takes for
 * speech is hiss or music, which no decode turns into words, and decoding
 * it again only invites invented text; so a gap of less than 8 s of
 * uncovered speech is only reported. A longer one that starts well inside
 * the window gets a window of its own that holds just the gap (with the
 * speech after it in view, Whisper tends to skip to that): if it finds
 * words there, they are kept and the rest of the first window is decoded
 * again after the gap; if not, the first window stands and the gap is
 * reported. A long gap at a window's start gets one more temperature.
 * What still fails is kept (the attempt with the fewest issues, the
 * lowest temperature among equals) and each issue is added to the
 * transcript (td_transcript_add_issue) with its time range. Windows the
 * no-speech rule skipped are not checked: the model heard no speech there.
 */
#ifndef TD_WHISPER_DECODE_H
#define TD_WHISPER_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "asr/transcript.h"
#include "util/error.h"
#include "whisper/backend.h"
#include "whisper/guard.h"
#include "whisper/model.h"

#define TD_WDEC_MAX_TEMPS 8
#define TD_WDEC_MAX_BATCH 64  /* windows decoded together */
#define TD_WDEC_MAX_SEQS 256  /* sequences alive at once: batch x max(beam, best of) */

typedef struct td_wdecode_opts {
    int language;                 /* language index (td_wlang_index), -1 = detect */
    int translate;                /* task: translate to English */
    int timestamps;               /* 1 (default): timestamp tokens, segments */
    int beam_size;                /* at T = 0; 1 = greedy (default 5) */
    int best_of;                  /* samples at T > 0 (default 5) */
    float temperatures[TD_WDEC_MAX_TEMPS]; /* default 0, .2, .4, .6, .8, 1 */
    int n_temperatures;
    float compression_ratio_threshold; /* 2.4; <= 0 disables */
    float logprob_threshold;      /* -1.0; NaN disables */
    float no_speech_threshold;    /* 0.6; NaN disables */
    int condition_on_previous;    /* 1 */
    int condition_after_fallback; /* 0: home-video default (see above) */
    float prompt_reset_on_temperature; /* 0.5 */
    int max_tokens;               /* sampled tokens per window; 0 = n_text_ctx / 2 (224) */
    uint64_t seed;                /* sampling at T > 0 */
    int batch;                    /* windows decoded together (transcribe_chunks);
                                   * 0 = 1 */
    int word_align;               /* 1 (default): word times from the alignment heads */
    int guard;                    /* 1 (default): the checks above, and re-decoding */
} td_wdecode_opts;

void td_wdecode_opts_default(td_wdecode_opts *o);

/* The backend sizes a decoder with these options needs: fills max_seq,
 * max_windows, max_tokens, max_batch_tokens and max_rows of cfg (the
 * caller sets threads and compute). TD_OK, or TD_EINVAL for options
 * td_wdecoder_new would refuse. */
int td_wdecode_backend_config(const td_whparams *hp, const td_wdecode_opts *o, td_wconfig *cfg);

/* Result of one window's decode, exposed for tests. */
typedef struct td_wwindow_result {
    int32_t *tokens;              /* sampled tokens (no prompt), owned */
    int n_tokens;
    double avg_logprob;
    double no_speech_prob;
    double compression_ratio;
    float temperature;
} td_wwindow_result;

/* Progress: seconds of mel consumed so far. Nonzero return stops the
 * transcription (TD_EABORT). */
typedef int (*td_wdecode_progress)(void *user, double seconds_done);

typedef struct td_wdecoder td_wdecoder;

/* opts is copied. The backend context must have been opened with at
 * least the sizes td_wdecode_backend_config gives for opts. */
int td_wdecoder_new(const td_wmodel *m, const td_wbackend_ops *ops, td_wbackend *b,
                    const td_wdecode_opts *opts, td_wdecoder **out, td_error *err);
void td_wdecoder_free(td_wdecoder *d);

/* 1 when word times come from the alignment heads, else 0 and *why (may
 * be NULL) says why not: the option is off, no released model has these
 * dimensions and vocabulary, or the backend has no align_weights. */
int td_wdecoder_word_times(const td_wdecoder *d, const char **why);

/* Speech regions (seconds, on the clock of the segments the next
 * transcribe call makes: time_offset and chunk offsets included), in
 * time order, not overlapping; borrowed until the decoder is freed or
 * this is called again (n = 0: none, so the gap and sparse checks do
 * not run). At most 1 << 20 regions are looked at. */
void td_wdecoder_set_speech(td_wdecoder *d, const td_guard_span *speech, size_t n);

/* Detect the language of one 30-s window (mel [n_mels][3000]): runs the
 * encoder and one decoder step on [sot]. Returns the language index, and
 * its probability in *prob if prob is not NULL. English-only models give
 * "en" at once. */
int td_wdecoder_detect_language(td_wdecoder *d, const float *mel_window, float *prob,
                                td_error *err);

/* Decode one window (mel [n_mels][3000]) with the given prompt tokens
 * (previous text, may be empty), at one temperature, without fallback. */
int td_wdecoder_decode_window(td_wdecoder *d, const float *mel_window, const int32_t *prompt,
                              int n_prompt, float temperature, td_wwindow_result *res,
                              td_error *err);
void td_wwindow_result_free(td_wwindow_result *res);

/* The whole loop over mel ([n_mels][n_frames], normalized, with at least
 * 3000 frames of padding after the content_frames of real audio).
 * Segments are appended to out with times offset by time_offset seconds.
 * The detected (or given) language index is stored in *language. */
int td_wdecoder_transcribe(td_wdecoder *d, const float *mel, size_t n_frames,
                           size_t content_frames, double time_offset, td_transcript *out,
                           int *language, td_wdecode_progress progress, void *user,
                           td_error *err);

/* One chunk of speech for td_wdecoder_transcribe_chunks: normalized
 * log-mel, [n_mels][stride], of which frames [0, content_frames) are its
 * audio. stride 0 means one window (2 * n_audio_ctx, 3000 frames). A
 * chunk may hold several windows of audio: it is walked as the transcribe
 * loop walks its mel, each window being the frames from the seek on, at
 * most 3000, padded with 0 (openai's pad_or_trim); nothing past
 * content_frames is read. */
typedef struct td_wchunk {
    const float *mel;            /* borrowed */
    size_t stride;               /* frames per mel row; 0 = 3000 */
    size_t content_frames;       /* frames of audio in it, <= stride (or 3000) */
    double offset;               /* seconds added to its segments' times */
} td_wchunk;

/* Batched mode: decode n chunks independently, opts.batch windows at a
 * time with every decoder step shared among them (continuous batching: a
 * finished window's slots take the next window at once). Within a chunk
 * every rule of the transcribe loop holds (SOT sequence, suppressions,
 * timestamp rules, beam search or sampling, the no-speech skip, the
 * temperature fallback, for which a window is decoded again in later
 * steps at the next temperature, the seek to the last timestamp and the
 * window that goes on from there, conditioned on the chunk's text so far);
 * nothing crosses chunks: no text prompt, no seek. Segments are appended
 * to out in chunk order. The language is the options' or is detected on
 * the first chunk; *language gets it. progress gets the end of the last
 * chunk finished in order. */
int td_wdecoder_transcribe_chunks(td_wdecoder *d, const td_wchunk *chunks, int n,
                                  td_transcript *out, int *language,
                                  td_wdecode_progress progress, void *user, td_error *err);

/* Where a decoder's time went, summed over its life (callers take
 * differences). For -vv logs and benchmarks. */
typedef struct td_wdecode_stats {
    long windows;          /* 30-s windows decoded (language detection not counted) */
    long fallbacks;        /* windows decoded again at a higher temperature */
    long silent;           /* windows skipped as no speech */
    long tokens;           /* tokens kept from the windows' final decodes */
    long aligned;          /* windows whose word times came from the alignment heads */
    long align_failed;     /* windows whose alignment failed (character-count times) */
    long guard_redecodes;  /* windows decoded again because a guard failed */
    long guard_gap_seeks;  /* windows restarted at a gap */
    long guard_unresolved; /* issues kept after the last attempt */
    long encoder_runs, decoder_calls;
    double encoder_s, decoder_s; /* wall time inside the backend */
} td_wdecode_stats;

void td_wdecoder_stats(const td_wdecoder *d, td_wdecode_stats *out);

/* Tokens suppressed at every step (openai's "-1": non-speech symbols,
 * plus the task and special tokens), computed from the vocabulary. Fills
 * ids (sorted ascending), returns the count. The array holds at most
 * n_vocab entries. */
int td_wsuppress_tokens(const td_wmodel *m, int32_t *ids, int cap);

/* len(text) / len(zlib(text)) as openai-whisper computes it. */
double td_wcompression_ratio(const uint8_t *text, size_t len);

#endif
