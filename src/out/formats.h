/*
 * formats.h: writing subtitles as SRT, WebVTT and JSON.
 *
 * Each renderer appends a complete document to a td_buf; the subtitle task
 * then writes it atomically. Text is sanitised on the way out: invalid
 * UTF-8 is replaced by U+FFFD, control characters dropped, each line
 * trimmed of spaces, blank lines inside a cue removed (they would end the
 * cue in SRT and VTT), an end before the start printed as the start, and
 * in VTT '&', '<' and '>' are escaped and "-->" cannot appear in a cue.
 * SRT has no escapes and players read '<' '>' as tags, so there they
 * become the single angle quotes U+2039 and U+203A.
 *
 * A cue whose text is empty once cleaned is left out (SRT numbering stays
 * consecutive). An empty cue list gives an empty SRT (zero bytes) and a
 * VTT of just "WEBVTT\n\n".
 *
 * JSON (jansson, UTF-8, indented by 2): {"version":1,"scene":...,
 * "language":...,"engine":...,"model":...,"duration":...,"segments":
 * [{"start","end","text","words":[{"start","end","word","prob"}]}],
 * "cues":[{"start","end","text"}],"unresolved":[{"start","end","reason"}]}
 * ("unresolved": the stretches the engine kept although its checks of
 * them failed, reason "gap", "sparse", "repeat" or "loop"; see
 * whisper/guard.h). Times are seconds rounded to the
 * millisecond; a missing string, an unknown language, a negative duration
 * and a negative prob (no confidence) are null; prob is rounded to 4
 * decimals. Every word of the transcript is listed, as the engine gave it.
 *
 * Each renderer appends a whole document or, on error (TD_ENOMEM: out of
 * memory or past the buffer's limit), leaves the buffer as it was.
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

/* Parse "srt,vtt,json" into a bitmask: case-insensitive, spaces around
 * names, empty entries ("srt,,vtt,") and duplicates allowed, "webvtt"
 * means vtt. No name at all, or an unknown one, is TD_EINVAL and err
 * names the bad entry. */
int td_formats_parse(const char *list, unsigned *mask, td_error *err);

/* "HH:MM:SS,mmm" (SRT) or "HH:MM:SS.mmm" (VTT) into out[16]: rounded to
 * the nearest millisecond, negative or NaN as 0, hours growing past 99
 * ("100:00:00,000"), clamped at 99999:59:59.999. */
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

/* Append s (NULL reads as "") to out with each ill-formed UTF-8 sequence
 * (overlong, surrogate, above U+10FFFF, truncated, stray byte) replaced by
 * U+FFFD, C0 and C1 controls and DEL dropped, tabs turned into spaces, and
 * line breaks ("\n", "\r\n", "\r") kept as '\n' if keep_newlines, else
 * turned into spaces (so words do not run together). out->data is a string
 * afterwards even if nothing was appended. TD_OK or TD_ENOMEM. */
int td_utf8_sanitize(const char *s, int keep_newlines, td_buf *out);

#endif
