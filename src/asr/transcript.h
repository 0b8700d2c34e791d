/*
 * transcript.h: what a speech engine produces for one scene.
 *
 * Segments in time order, each with its words and their times (seconds
 * from the start of the scene). Text is UTF-8 as the engine gave it.
 *
 * Ownership: the transcript owns all its strings and arrays;
 * td_transcript_release frees them and leaves an empty transcript.
 */
#ifndef TD_ASR_TRANSCRIPT_H
#define TD_ASR_TRANSCRIPT_H

#include <stddef.h>

#include "util/error.h"

typedef struct td_word {
    double start, end; /* seconds */
    char *text;        /* the word, no surrounding spaces */
    float prob;        /* confidence in [0,1], or -1 if the engine has none */
} td_word;

typedef struct td_segment {
    double start, end;
    char *text;        /* the segment's text as one string */
    td_word *words;
    size_t n_words;
} td_segment;

typedef struct td_transcript {
    td_segment *segs;
    size_t n_segs;
    size_t cap_segs;
    char language[16]; /* ISO 639-1 code, "" if unknown */
} td_transcript;

void td_transcript_init(td_transcript *t);
void td_transcript_release(td_transcript *t);

/* Append a segment; copies text and words (word texts are copied too). */
int td_transcript_add(td_transcript *t, double start, double end, const char *text,
                      const td_word *words, size_t n_words, td_error *err);

#endif
