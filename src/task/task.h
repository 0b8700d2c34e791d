/*
 * task.h: the table of tasks a run can do to each scene.
 *
 * A task is what it needs (a speech engine or not), whether a scene is
 * already done (its .done marker, outputs and settings fingerprint), and
 * run (outputs written atomically, the marker last). The planner, the
 * supervisor and the worker go through this table and do not care which
 * tasks run. Several tasks on one scene run in one worker visit, in
 * dependency order (subtitles before restore, which muxes them in).
 */
#ifndef TD_TASK_TASK_H
#define TD_TASK_TASK_H

#include <stddef.h>
#include <stdint.h>

#include "archive/marker.h"
#include "archive/scan.h"
#include "asr/engine.h"
#include "media/video_chain.h"
#include "util/error.h"

/* Everything the tasks of a run are configured with. */
typedef struct td_task_config {
    unsigned formats;               /* subtitles: TD_FORMAT_* mask */
    td_restore_settings restore;    /* restore */
    const char *device;             /* "cpu" or a PCI address, for markers */
    int threads;                    /* restore: codec and filter threads (0 auto) */
    const char *vendor;             /* the worker's GPU vendor ("nvidia", ...), NULL on a CPU */
} td_task_config;

/* What the worker holds for the tasks. */
typedef struct td_task_env {
    const td_engine_ops *ops;       /* NULL unless a task needs_engine */
    td_engine *eng;
    /* Video tasks report frames through this before each progress call
     * (may be NULL): frames done, the scene's total (estimate, 0 unknown),
     * frames per second. */
    void (*frames)(void *user, long long done, long long total, double fps);
    void *frames_user;
} td_task_env;

typedef struct td_task_result {
    double audio_seconds;           /* subtitles: audio transcribed */
    size_t n_cues;
    size_t n_unresolved;            /* subtitles: stretches kept although checks failed */
    char language[16];
    int64_t frames;                 /* restore: frames written */
    double media_seconds;           /* restore: the scene's duration */
    double fps;                     /* restore: frames written per wall second */
    char note[256];                 /* something the log should say (a fallback), or "" */
} td_task_result;

typedef struct td_task_ops {
    const char *name;
    int needs_engine;
    /* state gets the marker's verdict for this configuration; why (may be
     * NULL) the reason when not DONE. */
    int (*check)(const td_scene *scene, const td_task_config *cfg, enum td_marker_state *state,
                 char *why, size_t why_len, td_error *err);
    /* progress (may be NULL) gets seconds of the scene done. */
    int (*run)(const td_scene *scene, const td_task_config *cfg, const td_task_env *env,
               td_progress_fn progress, void *user, td_task_result *res, td_error *err);
} td_task_ops;

#define TD_MAX_TASKS 4

/* "subtitles", "restore" (alias "enhance"), or a comma-separated list of
 * them; into out[0..*n) in dependency order, each once. TD_EINVAL names
 * an unknown task. */
int td_task_list_parse(const char *spec, const td_task_ops **out, size_t *n, td_error *err);

/* Does the list need a speech engine? */
int td_task_list_needs_engine(const td_task_ops *const *tasks, size_t n);

/* The restore options' values (NULL: default), checked; TD_EINVAL names
 * the bad one. */
typedef struct td_restore_args {
    const char *preset, *quality, *format, *size, *codec;
    const char *opencl;   /* appended: --restore-opencl */
    const char *cuda;     /* appended: --restore-cuda */
    const char *vaapi;    /* appended: --restore-vaapi */
    const char *hwenc;    /* appended: --restore-hwenc */
} td_restore_args;
int td_restore_args_parse(const td_restore_args *a, td_restore_settings *s, td_error *err);

/* The configuration a task list runs with: formats ("srt,vtt"), restore
 * arguments; restore muxes subtitles in when the list has both. */
int td_task_config_build(const td_task_ops *const *tasks, size_t n, const char *formats,
                         const td_restore_args *ra, const char *device, int threads,
                         td_task_config *cfg, td_error *err);

extern const td_task_ops td_task_subtitles;
extern const td_task_ops td_task_restore;

#endif
