/*
 * path.h: splitting a file path into its folder and base name.
 *
 * Inline, so that code that must build on its own (the model generator and
 * its file writer, see whisper/ggml_writer.h) shares it with util/atomic.c
 * without linking anything.
 */
#ifndef TD_UTIL_PATH_H
#define TD_UTIL_PATH_H

#include <stdio.h>
#include <string.h>

/* Split path into its directory ("." when none; "/" for "/file") and base
 * name (a pointer into path). -1 when the directory does not fit dir_len. */
static inline int td_split_path(const char *path, char *dir, size_t dir_len, const char **base)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, dir_len, ".");
        *base = path;
        return 0;
    }
    size_t n = (size_t)(slash - path);
    if (n == 0)
        n = 1; /* "/file" lives in "/" */
    if (n >= dir_len)
        return -1;
    memcpy(dir, path, n);
    dir[n] = '\0';
    *base = slash + 1;
    return 0;
}

#endif
