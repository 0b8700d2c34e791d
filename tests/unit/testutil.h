/*
 * testutil.h: small helpers shared by the unit tests (header-only: each
 * test is its own program). Include after <cmocka.h>.
 */
#ifndef TD_TESTUTIL_H
#define TD_TESTUTIL_H

#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A formatted path (or any string); the caller frees it. */
static inline char *pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline char *pathf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    assert_true(vasprintf(&s, fmt, ap) >= 0);
    va_end(ap);
    return s;
}

static inline int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Remove a directory tree, never following symbolic links. */
static inline void rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory /tmp/<prefix>-XXXXXX; the caller frees the name. */
static inline char *make_tmpdir_named(const char *prefix)
{
    char *tmpl = pathf("/tmp/%s-XXXXXX", prefix);
    assert_non_null(mkdtemp(tmpl));
    return tmpl;
}

static inline void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* UTF-8 code points in s[0..len). */
static inline size_t cps(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

#endif
