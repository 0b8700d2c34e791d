/* transcript.c: building and freeing transcripts (see transcript.h). */
#include "asr/transcript.h"

#include <stdlib.h>
#include <string.h>

void td_transcript_init(td_transcript *t)
{
    memset(t, 0, sizeof *t);
}

void td_transcript_release(td_transcript *t)
{
    for (size_t i = 0; i < t->n_segs; i++) {
        td_segment *s = &t->segs[i];
        for (size_t w = 0; w < s->n_words; w++)
            free(s->words[w].text);
        free(s->words);
        free(s->text);
    }
    free(t->segs);
    free(t->issues);
    td_transcript_init(t);
}

int td_transcript_add(td_transcript *t, double start, double end, const char *text,
                      const td_word *words, size_t n_words, td_error *err)
{
    if (t->n_segs == t->cap_segs) {
        size_t cap = t->cap_segs ? t->cap_segs * 2 : 16;
        td_segment *segs = realloc(t->segs, cap * sizeof *segs);
        if (!segs)
            return td_error_set(err, TD_ENOMEM, "out of memory for transcript");
        t->segs = segs;
        t->cap_segs = cap;
    }
    td_segment seg = {.start = start, .end = end};
    seg.text = strdup(text ? text : "");
    if (!seg.text)
        return td_error_set(err, TD_ENOMEM, "out of memory for transcript");
    if (n_words) {
        seg.words = calloc(n_words, sizeof *seg.words);
        if (!seg.words) {
            free(seg.text);
            return td_error_set(err, TD_ENOMEM, "out of memory for transcript");
        }
        for (size_t i = 0; i < n_words; i++) {
            seg.words[i] = words[i];
            seg.words[i].text = strdup(words[i].text ? words[i].text : "");
            if (!seg.words[i].text) {
                for (size_t j = 0; j < i; j++)
                    free(seg.words[j].text);
                free(seg.words);
                free(seg.text);
                return td_error_set(err, TD_ENOMEM, "out of memory for transcript");
            }
        }
        seg.n_words = n_words;
    }
    t->segs[t->n_segs++] = seg;
    return TD_OK;
}

int td_transcript_add_issue(td_transcript *t, double start, double end, const char *reason,
                            int decoded_again, td_error *err)
{
    if (t->n_issues == t->cap_issues) {
        size_t cap = t->cap_issues ? t->cap_issues * 2 : 8;
        td_transcript_issue *is = realloc(t->issues, cap * sizeof *is);
        if (!is)
            return td_error_set(err, TD_ENOMEM, "out of memory for transcript");
        t->issues = is;
        t->cap_issues = cap;
    }
    t->issues[t->n_issues++] = (td_transcript_issue){
        .start = start, .end = end, .reason = reason ? reason : "", .decoded_again = !!decoded_again};
    return TD_OK;
}
