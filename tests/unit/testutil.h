/*
 * testutil.h: small helpers shared by the unit tests (header-only: each
 * test is its own program). Include after <cmocka.h>.
 */
#ifndef TD_TESTUTIL_H
#define TD_TESTUTIL_H

#include <fnmatch.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
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

static inline uint32_t tu_rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint16_t tu_rd16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

/* Read a 16 kHz mono s16 WAV file into floats in [-1, 1), walking the RIFF
 * chunks (others skipped; a truncated last chunk gives what is there).
 * Returns the sample count, or 0 with *out NULL when the file cannot be
 * opened (tests of optional data skip then); fails the test on a file that
 * is not such a WAV. The caller frees *out. */
static inline size_t read_wav_16k(const char *path, float **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    assert_true(size > 12 && size < (64L << 20));
    rewind(f);
    unsigned char *d = malloc((size_t)size);
    assert_non_null(d);
    assert_int_equal(fread(d, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    assert_memory_equal(d, "RIFF", 4);
    assert_memory_equal(d + 8, "WAVE", 4);
    int have_fmt = 0;
    size_t n = 0;
    for (size_t pos = 12; pos + 8 <= (size_t)size;) {
        uint32_t len = tu_rd32(d + pos + 4);
        const unsigned char *body = d + pos + 8;
        size_t avail = (size_t)size - pos - 8;
        if (len > avail)
            len = (uint32_t)avail;
        if (memcmp(d + pos, "fmt ", 4) == 0) {
            assert_true(len >= 16);
            assert_int_equal(tu_rd16(body), 1);       /* PCM */
            assert_int_equal(tu_rd16(body + 2), 1);   /* mono */
            assert_int_equal(tu_rd32(body + 4), 16000);
            assert_int_equal(tu_rd16(body + 14), 16); /* bits */
            have_fmt = 1;
        } else if (memcmp(d + pos, "data", 4) == 0) {
            assert_true(have_fmt);
            n = len / 2;
            *out = malloc((n ? n : 1) * sizeof **out);
            assert_non_null(*out);
            for (size_t i = 0; i < n; i++)
                (*out)[i] = (int16_t)tu_rd16(body + 2 * i) / 32768.0f;
            break;
        }
        pos += 8 + (size_t)len + (len & 1); /* chunks are padded to even */
    }
    free(d);
    assert_non_null(*out);
    return n;
}

/* The tests of tests[0..n) to run, into run (room for n), their count:
 * all but those whose names match one of TEST_SKIP's comma-separated
 * globs, as tests/run-unit.sh's BIN:!PATTERN[,PATTERN...] asks, so that a
 * long binary's long tests can run in processes of their own (cmocka's
 * TEST_FILTER, cmocka_set_test_filter, picks the other way). */
static inline size_t tu_tests_to_run(const struct CMUnitTest *tests, size_t n,
                                     struct CMUnitTest *run)
{
    size_t n_run = 0;
    const char *skip_list = getenv("TEST_SKIP");
    for (size_t i = 0; i < n; i++) {
        int skip_it = 0;
        for (const char *p = skip_list; p && *p && !skip_it;) {
            size_t len = strcspn(p, ",");
            char pat[128];
            snprintf(pat, sizeof pat, "%.*s", (int)len, p);
            skip_it = fnmatch(pat, tests[i].name, 0) == 0;
            p += len + (p[len] == ',');
        }
        if (!skip_it)
            run[n_run++] = tests[i];
    }
    return n_run;
}

#endif
