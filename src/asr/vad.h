/*
 * vad.h: an energy voice-activity detector that cuts a 16 kHz mono stream
 * into utterances, for every engine that wants to skip silence (sphinx
 * decodes utterance by utterance; whisper joins the speech and skips the
 * rest, which is where it would otherwise invent lines).
 *
 * The stream is judged in 10 ms frames against an adaptive noise floor; a
 * run of speech frames starts an utterance (with a pre-roll of the frames
 * before it), a stretch of non-speech ends it (the hangover is kept), and
 * two caps keep utterances short enough for the engine: past soft_samples
 * the first non-speech frame ends one, at max_samples it ends whatever is
 * going on. The constants and why they are what they are: vad.c.
 *
 * Streaming, polled: feed samples in chunks of any size (the result does
 * not depend on how the stream is cut), then take the utterances that are
 * complete with td_vad_next until it says none is left:
 *
 *     td_vad *v;  td_vad_new(&td_vad_sphinx_defaults, &v, err);
 *     while (more) {
 *         rc = td_vad_feed(v, pcm, n, last);      // TD_OK or TD_ENOMEM
 *         td_vad_utterance u;
 *         while (td_vad_next(v, &u))
 *             decode(u.start, u.samples, u.n_samples);
 *     }
 *     td_vad_free(v);
 *
 * Memory: one open utterance (at most max_samples) plus the utterances
 * completed and not yet taken, which come out of the samples fed since the
 * last drain; feed modest chunks and drain after each. After TD_ENOMEM the
 * stream is lost: td_vad_reset before reusing the detector.
 */
#ifndef TD_ASR_VAD_H
#define TD_ASR_VAD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

#define TD_VAD_RATE 16000
#define TD_VAD_FRAME 160                 /* samples in a frame: 10 ms */

/* Bounds on max_samples: an utterance must hold at least its onset, its
 * pre-roll and one frame more (0.36 s); 10 minutes is far beyond any
 * engine's window and keeps a bad value from asking for gigabytes. */
#define TD_VAD_MIN_SAMPLES ((size_t)36 * TD_VAD_FRAME)
#define TD_VAD_MAX_SAMPLES ((size_t)600 * TD_VAD_RATE)

typedef struct td_vad_params {
    size_t soft_samples;  /* past this, the first non-speech frame ends an utterance */
    size_t max_samples;   /* an utterance never holds more than this */
} td_vad_params;          /* both are rounded down to whole frames */

/* sphinx: 20 s soft, 30 s max (its decoder's per-utterance tables).
 * whisper: 25 s soft, 30 s max (one encoder window). */
extern const td_vad_params td_vad_sphinx_defaults;
extern const td_vad_params td_vad_whisper_defaults;

/* Why an utterance ended. */
typedef enum td_vad_end {
    TD_VAD_END_SILENCE = 0, /* the hangover of non-speech frames ran out */
    TD_VAD_END_SOFT,        /* past soft_samples, at a non-speech frame */
    TD_VAD_END_MAX,         /* max_samples reached, maybe mid-word */
    TD_VAD_END_STREAM,      /* the stream ended inside it */
} td_vad_end;

typedef struct td_vad_utterance {
    uint64_t start;         /* stream index of samples[0] (0 = first sample fed) */
    const float *samples;   /* the samples as fed, pre-roll and hangover included;
                             * owned by the detector, valid until the next
                             * td_vad_feed, td_vad_reset or td_vad_free */
    size_t n_samples;       /* it ends at start + n_samples (exclusive) */
    td_vad_end reason;
} td_vad_utterance;

/* The 16-bit value a float sample rounds to (clipped; NaN as 0): what the
 * detector measures energy on, and what PocketSphinx is fed. */
static inline int16_t td_pcm_to_s16(float x)
{
    if (!(x == x))
        return 0; /* NaN */
    float v = x * 32768.0f;
    if (v >= 32767.0f)
        return 32767;
    if (v <= -32768.0f)
        return -32768;
    return (int16_t)lrintf(v);
}

typedef struct td_vad td_vad;

/* A detector with these caps (NULL: td_vad_sphinx_defaults). TD_EINVAL
 * when max_samples is outside [TD_VAD_MIN_SAMPLES, TD_VAD_MAX_SAMPLES] or
 * soft_samples > max_samples; TD_ENOMEM. Free with td_vad_free. */
int td_vad_new(const td_vad_params *params, td_vad **out, td_error *err);

/* Judge pcm[0..n) (n may be 0). last != 0 says the stream ends after
 * these samples: an utterance still open is completed (with the partial
 * last frame) and the detector starts a new stream at index 0 with its
 * next feed. Samples should be finite and in [-1, 1]; energy is measured
 * on the 16-bit value each would round to (NaN as 0), and the utterances
 * carry the samples as given. TD_OK, or TD_ENOMEM (the stream is lost). */
int td_vad_feed(td_vad *v, const float *pcm, size_t n, int last);

/* 1 and the oldest completed utterance not yet taken in *u, or 0 when
 * there is none. */
int td_vad_next(td_vad *v, td_vad_utterance *u);

/* Forget the stream and any utterance not taken; keep the caps. */
void td_vad_reset(td_vad *v);

/* NULL is fine. */
void td_vad_free(td_vad *v);

#endif
