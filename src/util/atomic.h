/*
 * atomic.h: crash-safe file writes.
 *
 * A file written here is either absent, its old version, or complete: the
 * data goes to a temporary file in the same directory (so rename cannot
 * cross file systems), is fsynced, renamed over the final name, and the
 * directory is fsynced so the rename itself survives a power cut.
 *
 * Temporary files are named ".tdtmp.<pid>.<final name>.<random>" (the final
 * name cut short if the whole would pass NAME_MAX). The name
 * starts with a dot (scans skip it) and carries the writer's pid, so a
 * later run can tell an orphan (its writer is dead) from a live write and
 * remove it: td_atomic_sweep_orphans.
 */
#ifndef TD_UTIL_ATOMIC_H
#define TD_UTIL_ATOMIC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "util/error.h"

#define TD_TEMP_PREFIX ".tdtmp."

/* Write len bytes to path atomically (mode 0644). */
int td_atomic_write(const char *path, const void *data, size_t len, td_error *err);

/* Serialise a JSON value (jansson's json_dumps flags) with a final newline
 * and write it to path atomically. Declared with an opaque type so that
 * callers without JSON need not include jansson. */
struct json_t;
int td_atomic_write_json(const char *path, const struct json_t *value, size_t flags,
                         td_error *err);

/* True if a base name is one of our temporary files; *pid gets its writer. */
bool td_atomic_is_temp_name(const char *name, pid_t *pid);

/* Remove temporary files in dir whose writer pid is no longer alive.
 * Returns the number removed (>= 0) or a td_rc. */
int td_atomic_sweep_orphans(const char *dir, td_error *err);

/* Create dir and any missing parents (mode 0755); an existing folder is fine. */
int td_mkdir_p(const char *dir, td_error *err);

/* fsync a directory by path. */
int td_fsync_dir(const char *dir, td_error *err);

#endif
