/*
 * cues.h: building subtitle cues from timed words.
 *
 * A cue is what a player shows at once: at most max_lines lines of at most
 * max_line_chars characters (counted in UTF-8 code points), shown for at
 * most max_duration seconds. Words are grouped greedily in time order; a
 * new cue starts at a pause of at least pause_split seconds, at a segment
 * boundary followed by a pause of at least pause_split / 2, or when adding
 * the next word would break a limit. Lines are broken at spaces: the fewest
 * lines that fit, then the break that makes the longest line shortest, with
 * the spare room on the top line. A single word longer than a line is kept
 * whole on its own line; one lasting longer than max_duration is shown for
 * max_duration.
 *
 * Cue times follow the words: a cue starts when its first word starts and
 * ends when its last word ends (then short cues are extended, below), so
 * it never shows text before it is spoken nor after the pause that
 * follows. A word timed longer than it can take to say (0.4 s + 0.12 s a
 * code point: the silence before or after it went into its time) counts
 * as said at the end of its time when it opens a cue, at the start when it
 * closes one.
 *
 * Input clean-up: word text is sanitised (td_utf8_sanitize) and split at
 * whitespace (a "word" holding a newline or several words becomes several,
 * their time shared evenly); empty words are skipped; a word made only of
 * closing punctuation (",", "?", ...) is attached to the word before it. A
 * segment with no usable words has its text spread evenly over its span.
 * Times that are NaN, negative or go backwards are clamped so that they
 * never decrease.
 *
 * Guarantees: start < end <= next start for every cue (cues strictly
 * ordered, never overlapping). A cue shorter than min_duration is extended
 * up to min_duration, never past the next cue's start.
 *
 * Rules: max_line_chars and max_lines in 1..10000, max_duration and
 * pause_split positive and finite, min_duration in 0..max_duration (0
 * turns the extension off); otherwise TD_EINVAL.
 *
 * Ownership: td_cues_build overwrites *out (it does not free what was
 * there) and leaves it empty on error; td_cue_list_release frees it.
 */
#ifndef TD_OUT_CUES_H
#define TD_OUT_CUES_H

#include <stddef.h>

#include "asr/transcript.h"
#include "util/error.h"

typedef struct td_cue_rules {
    int max_line_chars;   /* 42 */
    int max_lines;        /* 2 */
    double max_duration;  /* 7.0 s */
    double pause_split;   /* 0.6 s */
    double min_duration;  /* 0.5 s: very short cues are extended if room */
} td_cue_rules;

td_cue_rules td_cue_rules_default(void);

typedef struct td_cue {
    double start, end;
    char *text;            /* UTF-8, lines separated by '\n' */
} td_cue;

typedef struct td_cue_list {
    td_cue *items;
    size_t count;
} td_cue_list;

int td_cues_build(const td_transcript *t, const td_cue_rules *rules, td_cue_list *out,
                  td_error *err);
void td_cue_list_release(td_cue_list *list);

#endif
