/*
 * guard.h: checks of a decoded window against the audio it covers, for
 * the two ways Whisper fails on long home-video scenes without saying
 * so: it drops speech (a stretch the VAD heard that no word covers, or a
 * long segment with a handful of words), and it repeats itself (a
 * segment that says the previous one again, or one phrase over and over).
 *
 * Each check is a pure function of a window's segments (td_segment, with
 * words when it has them) and the VAD's speech regions, all on one clock
 * (seconds); each finding is a td_guard_issue: what to decode again (a
 * time range) and why. What to do about it is the caller's: decode the
 * window again at the next temperature, or for a gap start a window at
 * issue.start; log and count what still fails.
 *
 *   GAP     speech inside [t0, t1) that no word (padded by word_pad_s) or
 *           word-less segment covers: the uncovered speech between two
 *           covered stretches, summed, is more than gap_speech_s. The range
 *           is its first to its last uncovered speech instant.
 *   SPARSE  a segment over at least sparse_min_speech_s of speech with
 *           fewer than sparse_min_wps words per second of that speech (the
 *           defect of issue 13: 16 words spread over 28 s, the speech in
 *           between lost; character-count word times cover the whole span,
 *           so GAP alone would not see it).
 *   REPEAT  a segment whose words (lower-cased, punctuation dropped) share
 *           a run of at least repeat_min_words consecutive words with the
 *           previous segment's, the run being at least repeat_min_frac of
 *           the segment.
 *   LOOP    a unit of 1 .. loop_max_period words (code points in text
 *           without spaces) said at least loop_min_repeats times in a row,
 *           covering at least loop_min_units units.
 *
 * The thresholds are the defaults' reasons: normal speech runs 2-3 words
 * per second and the VAD pads each utterance by 0.3 s before and 0.5 s
 * after, so 3 s of uncovered speech or 1 word per second are far outside
 * it; people say "no, no, no" but not the same 8 words twice in a row.
 *
 * Functions write at most cap issues to out and return how many they
 * found (more than cap means some were left out), as snprintf does.
 * Each call allocates its scratch (tens of KB) and frees it; when that
 * fails the check finds nothing rather than guess. Text is looked at up to
 * 16 KB and 2048 words per segment (a window holds at most 224 tokens).
 */
#ifndef TD_WHISPER_GUARD_H
#define TD_WHISPER_GUARD_H

#include <stddef.h>

#include "asr/transcript.h"

typedef struct td_guard_span {
    double start, end;         /* seconds; end > start */
} td_guard_span;

typedef enum td_guard_reason {
    TD_GUARD_GAP = 1,
    TD_GUARD_SPARSE = 2,
    TD_GUARD_REPEAT = 3,
    TD_GUARD_LOOP = 4,
} td_guard_reason;

typedef struct td_guard_issue {
    td_guard_reason reason;
    double start, end;         /* the range to decode again */
    int seg;                   /* index of the segment in the window, -1 for a gap */
    double measure;            /* GAP: uncovered speech (s); SPARSE: words per second
                                * of speech; REPEAT: repeated words; LOOP: repeats */
    int detail;                /* SPARSE: words; REPEAT: the segment's words;
                                * LOOP: the unit's length; GAP: 0 */
} td_guard_issue;

typedef struct td_guard_params {
    double gap_speech_s;       /* 3.0 */
    double word_pad_s;         /* 0.5: speech this close to a word counts as covered */
    double sparse_min_speech_s; /* 5.0 */
    double sparse_min_wps;     /* 1.0 */
    int repeat_min_words;      /* 4 */
    double repeat_min_frac;    /* 0.8 */
    int loop_max_period;       /* 16 */
    int loop_min_repeats;      /* 3 */
    int loop_min_units;        /* 8 */
} td_guard_params;

void td_guard_params_default(td_guard_params *p);

/* "gap", "sparse", "repeat", "loop" (for logs and the JSON output). */
const char *td_guard_reason_name(td_guard_reason r);

/* Speech regions in [t0, t1) that segs[0..n_segs) leave uncovered.
 * speech: the VAD's regions, in time order, not overlapping. */
size_t td_guard_gaps(const td_guard_params *p, const td_guard_span *speech, size_t n_speech,
                     double t0, double t1, const td_segment *segs, size_t n_segs,
                     td_guard_issue *out, size_t cap);

/* 1 and *out when segment seg (index idx) is too sparse for its speech. */
int td_guard_sparse(const td_guard_params *p, const td_guard_span *speech, size_t n_speech,
                    const td_segment *seg, int idx, td_guard_issue *out);

/* 1 and *out when seg (index idx) repeats prev (which may be NULL: 0). */
int td_guard_repeat(const td_guard_params *p, const td_segment *prev, const td_segment *seg,
                    int idx, td_guard_issue *out);

/* 1 and *out when seg (index idx) holds a repetition loop. */
int td_guard_loop(const td_guard_params *p, const td_segment *seg, int idx, td_guard_issue *out);

/* All four over one window: the gaps of [t0, t1), then per segment
 * sparse, repeat (against the segment before it; prev, which may be
 * NULL, is the one before the window's first) and loop. */
size_t td_guard_window(const td_guard_params *p, const td_guard_span *speech, size_t n_speech,
                       double t0, double t1, const td_segment *prev, const td_segment *segs,
                       size_t n_segs, td_guard_issue *out, size_t cap);

#endif
