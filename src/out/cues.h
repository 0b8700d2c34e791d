/*
 * cues.h: building subtitle cues from timed words.
 *
 * A cue is what a player shows at once: at most max_lines lines of at most
 * max_line_chars characters (counted in UTF-8 code points), shown for at
 * most max_duration seconds. Words are grouped greedily in time order; a
 * new cue starts at a pause of at least pause_split seconds, at a segment
 * boundary followed by a pause, or when adding the next word would break a
 * limit. Lines are broken at spaces, balanced when two lines are needed. A
 * single word longer than a line is kept whole on its own line.
 *
 * Ownership: td_cues_build fills *out; td_cue_list_release frees it.
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
