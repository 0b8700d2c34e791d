/*
 * vad.c: the energy voice-activity detector (see vad.h for the interface).
 *
 * State machine, one 10-ms frame at a time:
 *
 *   IDLE  -- ONSET_FRAMES speech frames in a row -->  IN_UTT
 *   IN_UTT -- HANGOVER_FRAMES non-speech in a row,
 *             or past soft_samples at a non-speech frame,
 *             or max_samples reached                 -->  IDLE (utterance queued)
 *
 * While IDLE the latest ONSET_FRAMES + PREROLL_FRAMES frames are kept in a
 * ring, so that an onset can reach back; the ring is emptied when an
 * utterance starts, so an utterance never reaches back into the previous
 * one. Everything happens per frame, and frames are cut from the stream as
 * it comes, so chunk boundaries never change a decision.
 *
 * Storage: one sample store holds the utterances completed and not yet
 * taken, then the open one. td_vad_feed first drops what td_vad_next has
 * handed out (moving the rest to the front), so pointers handed out stay
 * valid until then.
 */
#include "asr/vad.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FRAME TD_VAD_FRAME

/* Voice activity. A frame is speech when its energy is REL_DB above the
 * noise floor and above ABS_DB (so that near-digital silence, where the
 * floor sinks to -100 dB, does not turn dither into speech). The floor
 * follows quieter frames fast and louder ones slowly: pauses between words
 * pull it down within a few frames, while a noise that starts and stays
 * (a fan, wind) is absorbed after a few seconds. It starts low (a quiet
 * room), because scenes are often cut in the middle of a sentence and a
 * high start would lose the first words. LibriVox recordings have their
 * floor at -48..-55 dBFS and speech at -30..-15 dBFS. */
#define REL_DB 12.0
#define ABS_DB (-60.0)
#define FLOOR_INIT_DB (-70.0)
#define FLOOR_MIN_DB (-100.0)
#define FLOOR_DOWN 0.2                /* per frame, towards a quieter frame */
#define FLOOR_UP (1.0 / 400)          /* per frame: a 4 s time constant */
#define ONSET_FRAMES 5                /* speech frames in a row start an utterance */
#define PREROLL_FRAMES 30             /* and 0.3 s before them is kept */
#define HANGOVER_FRAMES 50            /* 0.5 s without speech ends it */
#define RING_FRAMES (ONSET_FRAMES + PREROLL_FRAMES)

_Static_assert(TD_VAD_MIN_SAMPLES == (size_t)(RING_FRAMES + 1) * FRAME,
               "vad.h's minimum utterance is the onset, the pre-roll and one frame");

/* Utterances are kept short enough for the engine's per-utterance tables
 * or window (sphinx: its decoder; whisper: one 30-s encoder window). */
const td_vad_params td_vad_sphinx_defaults = {
    .soft_samples = (size_t)20 * TD_VAD_RATE,
    .max_samples = (size_t)30 * TD_VAD_RATE,
};
const td_vad_params td_vad_whisper_defaults = {
    .soft_samples = (size_t)25 * TD_VAD_RATE,
    .max_samples = (size_t)30 * TD_VAD_RATE,
};

/* A completed utterance in the store. */
typedef struct queued {
    uint64_t start;
    size_t at;                        /* offset in the store */
    size_t n;
    td_vad_end reason;
} queued;

struct td_vad {
    size_t soft, max;                 /* caps, in samples, whole frames */

    /* the stream */
    double floor_db;
    int in_utt;
    int speech_run;                   /* speech frames in a row, idle */
    int quiet_run;                    /* non-speech frames in a row, in an utterance */
    uint64_t frame_no;                /* frames seen so far */
    float ring[RING_FRAMES][FRAME];   /* the latest frames while idle */
    size_t ring_head;                 /* slot of the oldest frame */
    size_t ring_count;
    float frame[FRAME];               /* the frame being filled */
    size_t frame_fill;

    /* the store: queued utterances, then the open one at open_at */
    float *store;
    size_t store_len, store_cap;
    size_t open_at;
    uint64_t open_start;
    queued *q;
    size_t q_count, q_next, q_cap;    /* q[q_next..q_count) not yet taken */
};

/* ---- frames ------------------------------------------------------------- */

/* Energy is measured on the 16-bit value a sample rounds to
 * (td_pcm_to_s16), as a decoder fed s16 would see it: sub-LSB noise from a
 * float source then counts as the silence it is, and the decision is the
 * same whether the source was float or 16-bit. */

static double frame_db(const float *s)
{
    double sum = 0;
    for (int i = 0; i < FRAME; i++) {
        double x = td_pcm_to_s16(s[i]) / 32768.0;
        sum += x * x;
    }
    double db = 10.0 * log10(sum / FRAME + 1e-12);
    return db < FLOOR_MIN_DB ? FLOOR_MIN_DB : db;
}

/* Room for `more` samples at the end of the store. */
static int store_reserve(td_vad *v, size_t more)
{
    if (v->store_cap - v->store_len >= more)
        return TD_OK;
    size_t need = v->store_len + more;
    if (need < v->store_len || need > SIZE_MAX / 2 / sizeof *v->store)
        return TD_ENOMEM;
    size_t cap = v->store_cap ? v->store_cap : need;
    while (cap < need)
        cap *= 2;
    float *s = realloc(v->store, cap * sizeof *s);
    if (!s)
        return TD_ENOMEM;
    v->store = s;
    v->store_cap = cap;
    return TD_OK;
}

static void store_append(td_vad *v, const float *s, size_t n)
{
    memcpy(v->store + v->store_len, s, n * sizeof *s);
    v->store_len += n;
}

/* Queue the open utterance (it ends at the end of the store). */
static int close_utt(td_vad *v, td_vad_end reason)
{
    if (v->q_count == v->q_cap) {
        size_t cap = v->q_cap ? v->q_cap * 2 : 16;
        queued *q = realloc(v->q, cap * sizeof *q);
        if (!q)
            return TD_ENOMEM;
        v->q = q;
        v->q_cap = cap;
    }
    v->q[v->q_count++] = (queued){.start = v->open_start, .at = v->open_at,
                                  .n = v->store_len - v->open_at, .reason = reason};
    v->in_utt = 0;
    return TD_OK;
}

/* Classify the complete frame in v->frame and move it into the open
 * utterance or the pre-roll ring. */
static int process_frame(td_vad *v)
{
    /* The most one frame can add to the store is the whole ring; reserve
     * before any state changes. */
    if (store_reserve(v, (size_t)RING_FRAMES * FRAME))
        return TD_ENOMEM;

    double db = frame_db(v->frame);
    double thresh = v->floor_db + REL_DB;
    int speech = db > (thresh > ABS_DB ? thresh : ABS_DB);
    v->floor_db += (db - v->floor_db) * (db < v->floor_db ? FLOOR_DOWN : FLOOR_UP);
    uint64_t frame_no = v->frame_no++;

    if (!v->in_utt) {
        size_t slot;
        if (v->ring_count < RING_FRAMES) {
            slot = (v->ring_head + v->ring_count) % RING_FRAMES;
            v->ring_count++;
        } else {
            slot = v->ring_head;
            v->ring_head = (v->ring_head + 1) % RING_FRAMES;
        }
        memcpy(v->ring[slot], v->frame, sizeof v->ring[slot]);
        v->speech_run = speech ? v->speech_run + 1 : 0;
        if (v->speech_run < ONSET_FRAMES)
            return TD_OK;
        /* Onset: the utterance starts PREROLL_FRAMES before the run, or at
         * the oldest frame kept (never before the previous utterance's
         * end, since the ring is emptied then). */
        size_t keep = RING_FRAMES;
        if (keep > v->ring_count)
            keep = v->ring_count;
        size_t skip = v->ring_count - keep;
        v->open_at = v->store_len;
        for (size_t i = skip; i < v->ring_count; i++)
            store_append(v, v->ring[(v->ring_head + i) % RING_FRAMES], FRAME);
        v->open_start = (frame_no + 1 - keep) * FRAME;
        v->in_utt = 1;
        v->quiet_run = 0;
        v->ring_count = 0;
        v->ring_head = 0;
        v->speech_run = 0;
        return TD_OK;
    }

    store_append(v, v->frame, FRAME);
    size_t len = v->store_len - v->open_at;
    v->quiet_run = speech ? 0 : v->quiet_run + 1;
    if (v->quiet_run >= HANGOVER_FRAMES)
        return close_utt(v, TD_VAD_END_SILENCE);
    if (len >= v->max)
        return close_utt(v, TD_VAD_END_MAX);
    if (len >= v->soft && !speech)
        return close_utt(v, TD_VAD_END_SOFT);
    return TD_OK;
}

/* ---- the stream ---------------------------------------------------------- */

static void reset_stream(td_vad *v)
{
    v->floor_db = FLOOR_INIT_DB;
    v->in_utt = 0;
    v->speech_run = 0;
    v->quiet_run = 0;
    v->frame_no = 0;
    v->ring_head = 0;
    v->ring_count = 0;
    v->frame_fill = 0;
}

/* Drop what td_vad_next has handed out: the store keeps the utterances not
 * yet taken and the open one, moved to the front. */
static void compact(td_vad *v)
{
    size_t from = v->q_next < v->q_count ? v->q[v->q_next].at
                  : v->in_utt ? v->open_at : v->store_len;
    if (from) {
        memmove(v->store, v->store + from, (v->store_len - from) * sizeof *v->store);
        v->store_len -= from;
        if (v->in_utt)
            v->open_at -= from;
    }
    for (size_t i = v->q_next; i < v->q_count; i++) {
        v->q[i - v->q_next] = v->q[i];
        v->q[i - v->q_next].at -= from;
    }
    v->q_count -= v->q_next;
    v->q_next = 0;
}

int td_vad_feed(td_vad *v, const float *pcm, size_t n, int last)
{
    compact(v);
    for (size_t i = 0; i < n; i++) {
        v->frame[v->frame_fill++] = pcm[i];
        if (v->frame_fill == FRAME) {
            v->frame_fill = 0;
            if (process_frame(v))
                return TD_ENOMEM;
        }
    }
    if (last) {
        if (v->in_utt) {
            /* The stream ended inside an utterance: it ends with the last
             * partial frame. Whole frames never pass max, so this stays
             * below it. */
            if (store_reserve(v, v->frame_fill))
                return TD_ENOMEM;
            store_append(v, v->frame, v->frame_fill);
            if (close_utt(v, TD_VAD_END_STREAM))
                return TD_ENOMEM;
        }
        reset_stream(v);
    }
    return TD_OK;
}

int td_vad_next(td_vad *v, td_vad_utterance *u)
{
    if (v->q_next == v->q_count)
        return 0;
    const queued *q = &v->q[v->q_next++];
    u->start = q->start;
    u->samples = v->store + q->at;
    u->n_samples = q->n;
    u->reason = q->reason;
    return 1;
}

void td_vad_reset(td_vad *v)
{
    reset_stream(v);
    v->store_len = 0;
    v->open_at = 0;
    v->q_count = 0;
    v->q_next = 0;
}

int td_vad_new(const td_vad_params *params, td_vad **out, td_error *err)
{
    *out = NULL;
    if (!params)
        params = &td_vad_sphinx_defaults;
    size_t max = params->max_samples / FRAME * FRAME;
    size_t soft = params->soft_samples / FRAME * FRAME;
    if (max < TD_VAD_MIN_SAMPLES || max > TD_VAD_MAX_SAMPLES)
        return td_error_set(err, TD_EINVAL,
                            "voice activity detector: utterance cap of %zu samples is outside "
                            "[%zu, %zu]", params->max_samples, TD_VAD_MIN_SAMPLES,
                            TD_VAD_MAX_SAMPLES);
    if (params->soft_samples > params->max_samples)
        return td_error_set(err, TD_EINVAL,
                            "voice activity detector: soft cap (%zu samples) above the hard "
                            "cap (%zu)", params->soft_samples, params->max_samples);
    td_vad *v = calloc(1, sizeof *v);
    if (!v)
        return td_error_set(err, TD_ENOMEM, "voice activity detector: out of memory");
    v->soft = soft;
    v->max = max;
    /* One open utterance at its cap and the ring that may start the next
     * one: with small feeds the store never grows past this. */
    if (store_reserve(v, max + (size_t)RING_FRAMES * FRAME)) {
        free(v);
        return td_error_set(err, TD_ENOMEM, "voice activity detector: out of memory");
    }
    reset_stream(v);
    *out = v;
    return TD_OK;
}

void td_vad_free(td_vad *v)
{
    if (!v)
        return;
    free(v->store);
    free(v->q);
    free(v);
}
