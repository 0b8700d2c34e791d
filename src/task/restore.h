/*
 * restore.h: the restore task for one scene (alias "enhance").
 *
 *   analysis (media/video_analyze) -> decisions and filter chain
 *   (media/video_chain) -> decode, filter, encode, mux into a temporary
 *   file (media/video_restore) -> self-check against the source -> fsync,
 *   rename into place -> {stem}.restore.json (every decision and the
 *   measurement behind it) -> .{stem}.restore.done with the settings
 *   fingerprint, written last.
 *
 * Outputs beside the scene: {stem}.restored.mp4 (view: H.264 or HEVC),
 * {stem}.restored.mkv (archive: FFV1) or {stem}.restored.mov (edit:
 * ProRes), and {stem}.restore.json. The capture is never modified. A
 * failed self-check fails the scene (TD_EINPUT, the reason in the
 * message) and leaves no output behind.
 */
#ifndef TD_TASK_RESTORE_H
#define TD_TASK_RESTORE_H

#include <stddef.h>

#include "archive/scan.h"
#include "media/video_chain.h"

#define TD_TASK_RESTORE "restore"

/* Base names of the outputs for these settings into names[0..2) (the
 * media file, the JSON report); 2, or 0 when out of memory. The caller
 * frees each. */
size_t td_restore_output_names(const td_scene *scene, const td_restore_settings *s, char *names[2]);

#endif
