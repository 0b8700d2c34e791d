/*
 * marker.h: per-scene checkpoint markers.
 *
 * Beside each scene, for each task:
 *   .{stem}.{task}.done    written last, after all outputs, atomically:
 *                          JSON with scene, task, time, pid, host, device,
 *                          engine, model, language, tapedeck version, the
 *                          input's size and mtime, audio seconds, and each
 *                          output's name, size and SHA-256.
 *   .{stem}.{task}.failed  JSON with the error, its kind, the attempts and
 *                          the last log lines of the worker.
 * A .done marker counts only while the input's size and mtime match and
 * every output listed is present with the same size and checksum.
 *
 * Ownership: strings returned by *_path functions are malloc'ed; the
 * caller frees them. td_failed_info_release frees what a read filled.
 */
#ifndef TD_ARCHIVE_MARKER_H
#define TD_ARCHIVE_MARKER_H

#include <stddef.h>
#include <stdint.h>

#include "archive/scan.h"
#include "util/error.h"

/* "{dir}/.{stem}.{task}.{kind}", kind "done" or "failed". */
char *td_marker_path(const td_scene *scene, const char *task, const char *kind);

/* "{dir}/{stem}{suffix}", e.g. suffix ".srt". */
char *td_output_path(const td_scene *scene, const char *suffix);

typedef struct td_done_info {
    const char *task;
    const char *engine;
    const char *model;       /* may be NULL */
    const char *device;      /* "cpu" or a PCI address */
    const char *language;    /* may be NULL */
    double audio_seconds;
    const char *const *outputs; /* full paths of the outputs written */
    size_t n_outputs;
    /* how the engine ran (each may be NULL / 0: not recorded) */
    const char *backend;     /* "cpu", "vulkan" */
    const char *compute;     /* "int8", "f32" */
    const char *decode;      /* "batched", "sequential" */
    int batch;               /* windows decoded together */
    const char *settings;    /* may be NULL: a task's settings fingerprint */
} td_done_info;

/* Checksums the outputs as they are on disk now and writes the marker
 * atomically. Removes a .failed marker of the same task if present. */
int td_marker_write_done(const td_scene *scene, const td_done_info *info, td_error *err);

enum td_marker_state {
    TD_MARKER_NONE = 0,   /* nothing recorded: pending */
    TD_MARKER_DONE,       /* valid .done */
    TD_MARKER_STALE,      /* .done present but input or outputs changed */
    TD_MARKER_FAILED,     /* .failed present (and no valid .done) */
};

/* Inspect a scene's markers for a task. why (may be NULL) gets the reason
 * for STALE (e.g. "output tape1.srt changed") or FAILED (the error). */
int td_marker_check(const td_scene *scene, const char *task, enum td_marker_state *state,
                    char *why, size_t why_len, td_error *err);

/* td_marker_check, where a .done also has to list each of the n_required
 * base names in required ("a.vtt"): a scene done before --formats asked
 * for VTT is STALE ("no a.vtt yet"), so the next run adds it. */
int td_marker_check_outputs(const td_scene *scene, const char *task, const char *const *required,
                            size_t n_required, enum td_marker_state *state, char *why,
                            size_t why_len, td_error *err);

/* td_marker_check_outputs, where a .done also has to record exactly these
 * settings (NULL: not checked): a scene done with other settings is STALE
 * ("settings changed"), so changing a preset redoes it. */
int td_marker_check_settings(const td_scene *scene, const char *task, const char *const *required,
                             size_t n_required, const char *settings, enum td_marker_state *state,
                             char *why, size_t why_len, td_error *err);

/* td_marker_check_settings where the task judges the recorded settings:
 * accept(user, had) non-zero (had may be NULL: none recorded) means they
 * stand for the settings asked for now. */
typedef int (*td_settings_accept_fn)(void *user, const char *had);
int td_marker_check_settings_fn(const td_scene *scene, const char *task, const char *const *required,
                                size_t n_required, td_settings_accept_fn accept, void *user,
                                enum td_marker_state *state, char *why, size_t why_len, td_error *err);

typedef struct td_failed_info {
    char *reason;      /* the error message */
    char *kind;        /* td_rc_name of the error, or "crash", "stall" */
    int attempts;
    char *time;        /* ISO 8601 */
} td_failed_info;

int td_marker_write_failed(const td_scene *scene, const char *task, const char *kind,
                           const char *reason, int attempts, const char *const *log_lines,
                           size_t n_lines, td_error *err);
/* Returns TD_OK and fills info, or TD_EIO/TD_EINPUT if absent or unreadable. */
int td_marker_read_failed(const td_scene *scene, const char *task, td_failed_info *info,
                          td_error *err);
void td_failed_info_release(td_failed_info *info);

/* Remove the task's markers (for --force). Missing files are fine. */
int td_marker_remove(const td_scene *scene, const char *task, td_error *err);

#endif
