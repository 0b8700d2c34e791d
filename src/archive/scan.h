/*
 * scan.h: finding the scenes of an archive.
 *
 * An archive is a directory tree of media files (the scenes). The scan is
 * recursive and returns scenes in natural order of their relative paths
 * ("scene_2" before "scene_10", compared per path component). It skips
 * hidden files and directories (names starting with '.': markers and
 * temporary files are hidden), tapedeck's own outputs, and anything that
 * is not a media file by extension. Symbolic links are followed only when
 * their target resolves inside the archive root; a link pointing outside it
 * is never followed (and a directory reached twice is scanned once).
 *
 * Ownership: td_scan_archive fills *out; td_scene_list_release frees it.
 */
#ifndef TD_ARCHIVE_SCAN_H
#define TD_ARCHIVE_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

typedef struct td_scene {
    char *path;      /* root-joined path, as opened ("ARCHIVE/tape1/a.mp4") */
    char *rel;       /* relative to the archive root ("tape1/a.mp4") */
    char *dir;       /* directory holding it ("ARCHIVE/tape1") */
    char *name;      /* base name ("a.mp4") */
    char *stem;      /* base name without the extension ("a") */
    int64_t size;    /* bytes, at scan time */
    int64_t mtime_ns;/* modification time, ns since the epoch, at scan time */
    /* Index of an earlier scene in the same directory with the same stem
     * (its outputs would collide), or -1. Such a scene is refused. */
    long clash_with;
} td_scene;

typedef struct td_scene_list {
    td_scene *items;
    size_t count;
} td_scene_list;

/* Upper bound on scenes in one archive, so a runaway tree cannot exhaust
 * memory (an error names it when exceeded). */
#define TD_SCAN_MAX_SCENES 1000000

/* Fails (naming it) if root is not a readable directory, or on a limit;
 * an unreadable subdirectory is skipped. See scan.c for the exact rules. */
int td_scan_archive(const char *root, td_scene_list *out, td_error *err);
void td_scene_list_release(td_scene_list *list);

/* Natural-order comparison ("a2" < "a10"; otherwise bytewise). */
int td_natural_cmp(const char *a, const char *b);

/* True for extensions of media files we take as scenes (case-insensitive):
 * mp4 m4v mov mkv avi mpg mpeg ts mts m2ts vob dv wmv flv webm 3gp ogv
 * wav mp3 m4a flac ogg opus aac. */
bool td_is_media_name(const char *name);

/* True for names tapedeck writes beside scenes (e.g. "x.restored.mp4"),
 * which must never be taken as scenes: any name containing ".restored." or
 * ".tapedeck." (case-sensitive). Media outputs must use one of them. */
bool td_is_own_output_name(const char *name);

/* Fill one scene from a path (used by the worker, which receives paths).
 * root may be NULL, then rel = path. Ownership: release with
 * td_scene_release. */
int td_scene_from_path(const char *root, const char *path, td_scene *out, td_error *err);
void td_scene_release(td_scene *scene);

#endif
