/*
 * formats.h: writing subtitles as SRT, WebVTT and JSON.
 *
 * Each renderer appends a complete document to a td_buf; the subtitle task
 * then writes it atomically. Text is sanitised on the way out: invalid
 * UTF-8 is replaced by U+FFFD, control characters dropped, blank lines
 * inside a cue removed (they would end the cue in SRT and VTT), and in VTT
 * '&', '<' and '>' are escaped and "-->" cannot appear in a cue. SRT has no
 * escapes and players read '<' '>' as tags, so there they become the
 * single angle quotes U+2039 and U+203A.
 *
 * JSON (jansson): {"version":1,"scene":...,"language":...,"engine":...,
 * "duration":...,"segments":[{"start","end","text","words":[{"start",
 * "end","word","prob"}]}],"cues":[{"start","end","text"}]}
 */
#ifndef TD_OUT_FORMATS_H
#define TD_OUT_FORMATS_H

#include "asr/transcript.h"
#include "out/cues.h"
#include "util/buf.h"
#include "util/error.h"

enum td_format {
    TD_FORMAT_SRT = 1 << 0,
    TD_FORMAT_VTT = 1 << 1,
    TD_FORMAT_JSON = 1 << 2,
};

/* Parse "srt,vtt,json" into a bitmask; err names a bad entry. */
int td_formats_parse(const char *list, unsigned *mask, td_error *err);

/* "HH:MM:SS,mmm" (SRT) or "HH:MM:SS.mmm" (VTT) into out[16]. */
void td_format_timestamp(double seconds, char sep, char *out);

int td_render_srt(const td_cue_list *cues, td_buf *out, td_error *err);
int td_render_vtt(const td_cue_list *cues, td_buf *out, td_error *err);

typedef struct td_json_meta {
    const char *scene;     /* relative path, may be invalid UTF-8 (sanitised) */
    const char *engine;
    const char *model;
    double duration;       /* seconds of audio */
} td_json_meta;

int td_render_json(const td_transcript *t, const td_cue_list *cues, const td_json_meta *meta,
                   td_buf *out, td_error *err);

/* Copy s into out with invalid UTF-8 replaced by U+FFFD and C0 controls
 * (except '\n' when keep_newlines) dropped. */
int td_utf8_sanitize(const char *s, int keep_newlines, td_buf *out);

#endif
