/*
 * transcript.h: what a speech engine produces for one scene.
 *
 * Segments in time order, each with its words and their times (seconds
 * from the start of the scene). Text is UTF-8 as the engine gave it.
 * Beside them, the stretches the engine could not transcribe to its own
 * satisfaction (speech it found no words for, text it repeated: see
 * whisper/guard.h), kept so that the outputs can say where they are.
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

/* A stretch the engine kept although a check of it failed. */
typedef struct td_transcript_issue {
    double start, end;   /* seconds */
    const char *reason;  /* a static string: "gap", "sparse", "repeat", "loop" */
    int decoded_again;   /* 1: its audio was decoded more than once (a later
                          * temperature, or a gap's own window); 0: kept as
                          * first decoded (a gap under 8 s in a window decoded
                          * once: decoding it again would mostly turn hiss or
                          * music into invented text) */
} td_transcript_issue;

typedef struct td_transcript {
    td_segment *segs;
    size_t n_segs;
    size_t cap_segs;
    td_transcript_issue *issues;
    size_t n_issues;
    size_t cap_issues;
    char language[16]; /* ISO 639-1 code, "" if unknown */
} td_transcript;

void td_transcript_init(td_transcript *t);
void td_transcript_release(td_transcript *t);

/* Append a segment; copies text and words (word texts are copied too). */
int td_transcript_add(td_transcript *t, double start, double end, const char *text,
                      const td_word *words, size_t n_words, td_error *err);

/* Append an issue (reason is not copied: it must be static). */
int td_transcript_add_issue(td_transcript *t, double start, double end, const char *reason,
                            int decoded_again, td_error *err);

#endif
