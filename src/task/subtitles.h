/*
 * subtitles.h: the subtitle task for one scene.
 *
 *   audio (libav*, 16 kHz mono, streamed) -> engine -> transcript
 *     -> cues -> SRT / VTT / JSON, each written atomically
 *     -> .{stem}.subtitles.done marker, written last
 *
 * If anything fails, no marker is written and the error (TD_EINPUT for a
 * bad file) says why; outputs already renamed into place stay, but without
 * a marker they do not count and a rerun replaces them.
 */
#ifndef TD_TASK_SUBTITLES_H
#define TD_TASK_SUBTITLES_H

#include "archive/marker.h"
#include "archive/scan.h"
#include "asr/engine.h"
#include "util/error.h"

#define TD_TASK_SUBTITLES "subtitles"

typedef struct td_subtitle_opts {
    unsigned formats;           /* TD_FORMAT_* mask; SRT is always written */
    const char *device;         /* for the marker: "cpu" or a PCI address */
} td_subtitle_opts;

typedef struct td_subtitle_result {
    double audio_seconds;
    size_t n_segments;
    size_t n_unresolved;      /* stretches the engine kept although its checks failed */
    size_t n_cues;
    char language[16];
} td_subtitle_result;

/* Base names of the outputs a scene gets with these formats (SRT always),
 * into names[0..count); returns the count, or 0 when out of memory. The
 * caller frees each name. */
#define TD_SUBTITLE_MAX_OUTPUTS 3
size_t td_subtitles_output_names(const td_scene *scene, unsigned formats,
                                 char *names[TD_SUBTITLE_MAX_OUTPUTS]);

/* Check a scene's marker as td_marker_check does, also requiring the
 * outputs these formats produce (so newly asked formats get made). */
int td_subtitles_check(const td_scene *scene, unsigned formats, enum td_marker_state *state,
                       char *why, size_t why_len, td_error *err);

/* eng must be open (ops->open). progress may be NULL. */
int td_subtitles_run(const td_scene *scene, const td_engine_ops *ops, td_engine *eng,
                     const td_subtitle_opts *opts, td_progress_fn progress, void *user,
                     td_subtitle_result *res, td_error *err);

#endif
