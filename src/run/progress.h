/*
 * progress.h: what a person watching the run sees.
 *
 * On a terminal: a bar with scenes, audio hours, speed and ETA, and one
 * line per worker with its current scene, redrawn in place a few times a
 * second; log lines are printed above it (the log hook clears and redraws).
 * Elsewhere (a pipe, a log file, cron): a plain "[progress]" log line each
 * time a scene finishes and at most once a minute otherwise.
 */
#ifndef TD_RUN_PROGRESS_H
#define TD_RUN_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

#define TD_PROGRESS_MAX_WORKERS 64

typedef struct td_progress_worker {
    int pid;
    char device[32];         /* "cpu" or PCI address */
    char scene[96];          /* current scene (display-safe), "" when idle */
    double scene_seconds;    /* audio seconds done in the current scene */
    const char *state;       /* "starting", "idle", "busy", "stopped" */
    long long frames_done;   /* video tasks: frames of the scene done, 0 otherwise */
    long long frames_total;  /* the scene's frames (estimate), 0 unknown */
    double fps;              /* frames per second on this scene */
} td_progress_worker;

typedef struct td_progress_state {
    size_t scenes_total;     /* planned for this run */
    size_t scenes_finished;  /* done + failed + skipped */
    size_t failed;
    double audio_seconds;    /* finished scenes' audio */
    long long frames;        /* video frames written by finished scenes */
    int64_t bytes_total;
    int64_t bytes_finished;
    double elapsed;          /* wall seconds since start */
    int stopping;
    size_t n_workers;
    td_progress_worker workers[TD_PROGRESS_MAX_WORKERS];
} td_progress_state;

typedef struct td_progress td_progress;

/* tty: draw in place on stderr; otherwise log lines. Caller frees with
 * td_progress_free (which also removes the bar from the screen). */
td_progress *td_progress_create(int tty);
void td_progress_update(td_progress *p, const td_progress_state *st, int scene_finished);
void td_progress_free(td_progress **p);

/* "1:02:03" or "4:05" into out[32]. */
void td_format_hms(double seconds, char *out, size_t len);

#endif
