/* test_marker.c: .done / .failed markers: round trips, staleness on input
 * and output changes, invalid UTF-8 names and text, corrupt markers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "archive/marker.h"
#include "archive/scan.h"
#include "util/hash.h"

/* ------------------------------------------------------------ helpers */




static void write_text(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text));
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* One scene with two outputs in a fresh directory. */
struct fixture {
    char *dir;
    char *scene_path;
    char *srt;
    char *vtt;
    td_scene scene;
};

static struct fixture *fixture_new(const char *scene_name)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    char tmpl[] = "/tmp/td-marker-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    fx->dir = strdup(tmpl);
    fx->scene_path = pathf("%s/%s", fx->dir, scene_name);
    write_text(fx->scene_path, "pretend this is video");
    td_error err;
    assert_int_equal(td_scene_from_path(fx->dir, fx->scene_path, &fx->scene, &err), TD_OK);
    fx->srt = td_output_path(&fx->scene, ".srt");
    fx->vtt = td_output_path(&fx->scene, ".vtt");
    write_text(fx->srt, "1\n00:00:00,000 --> 00:00:01,000\nhello\n");
    write_text(fx->vtt, "WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n");
    return fx;
}

static void fixture_free(struct fixture *fx)
{
    nftw(fx->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    td_scene_release(&fx->scene);
    free(fx->dir);
    free(fx->scene_path);
    free(fx->srt);
    free(fx->vtt);
    free(fx);
}

static int setup(void **state)
{
    *state = fixture_new("a.mp4");
    return 0;
}

static int teardown(void **state)
{
    fixture_free(*state);
    return 0;
}

static void write_done(struct fixture *fx)
{
    const char *outs[] = { fx->srt, fx->vtt };
    td_done_info info = {
        .task = "subtitles", .engine = "sphinx", .model = "en-us", .device = "cpu",
        .language = "en", .audio_seconds = 12.5, .outputs = outs, .n_outputs = 2,
    };
    td_error err;
    int rc = td_marker_write_done(&fx->scene, &info, &err);
    if (rc)
        fail_msg("write_done: %s", err.msg);
}

static enum td_marker_state check(struct fixture *fx, char *why, size_t why_len)
{
    enum td_marker_state st = (enum td_marker_state)-1;
    td_error err;
    assert_int_equal(td_marker_check(&fx->scene, "subtitles", &st, why, why_len, &err), TD_OK);
    return st;
}

static void expect_state(struct fixture *fx, enum td_marker_state want, const char *why_want)
{
    char why[512];
    enum td_marker_state st = check(fx, why, sizeof why);
    if (st != want)
        fail_msg("state %d, want %d (why: %s)", (int)st, (int)want, why);
    if (why_want && strcmp(why, why_want) != 0)
        fail_msg("why \"%s\", want \"%s\"", why, why_want);
}

static json_t *load_json(const char *path)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        fail_msg("%s: %s", path, je.text);
    return j;
}

/* --------------------------------------------------------------- tests */

static void test_paths(void **state)
{
    struct fixture *fx = *state;
    char *done = td_marker_path(&fx->scene, "subtitles", "done");
    char *want = pathf("%s/.a.subtitles.done", fx->dir);
    assert_string_equal(done, want);
    char *failed = td_marker_path(&fx->scene, "subtitles", "failed");
    char *want_f = pathf("%s/.a.subtitles.failed", fx->dir);
    assert_string_equal(failed, want_f);
    char *srt_want = pathf("%s/a.srt", fx->dir);
    assert_string_equal(fx->srt, srt_want);
    free(done);
    free(want);
    free(failed);
    free(want_f);
    free(srt_want);
}

static void test_required_outputs(void **state)
{
    struct fixture *fx = *state;
    write_done(fx); /* lists a.srt and a.vtt */
    enum td_marker_state st;
    char why[256];
    td_error err;
    const char *have[] = {"a.srt", "a.vtt"};
    assert_int_equal(td_marker_check_outputs(&fx->scene, "subtitles", have, 2, &st, why, sizeof why, &err),
                     TD_OK);
    assert_int_equal(st, TD_MARKER_DONE);
    /* --formats now also asks for JSON: done before, stale now */
    const char *more[] = {"a.srt", "a.json"};
    assert_int_equal(td_marker_check_outputs(&fx->scene, "subtitles", more, 2, &st, why, sizeof why, &err),
                     TD_OK);
    assert_int_equal(st, TD_MARKER_STALE);
    assert_string_equal(why, "no a.json yet");
    /* a file lying there is not enough: the marker must list it */
    char *json = pathf("%s/a.json", fx->dir);
    write_text(json, "{}");
    assert_int_equal(td_marker_check_outputs(&fx->scene, "subtitles", more, 2, &st, why, sizeof why, &err),
                     TD_OK);
    assert_int_equal(st, TD_MARKER_STALE);
    free(json);
}

static void test_none_when_nothing(void **state)
{
    struct fixture *fx = *state;
    char why[64] = "junk";
    assert_int_equal(check(fx, why, sizeof why), TD_MARKER_NONE);
    assert_string_equal(why, "");
    /* why may be NULL. */
    enum td_marker_state st;
    td_error err;
    assert_int_equal(td_marker_check(&fx->scene, "subtitles", &st, NULL, 0, &err), TD_OK);
    assert_int_equal(st, TD_MARKER_NONE);
    /* A task name that cannot be a file name part is refused. */
    assert_int_equal(td_marker_check(&fx->scene, "a/b", &st, NULL, 0, &err), TD_EINVAL);
}

static void test_done_round_trip(void **state)
{
    struct fixture *fx = *state;
    write_done(fx);
    expect_state(fx, TD_MARKER_DONE, "");

    char *done = td_marker_path(&fx->scene, "subtitles", "done");
    struct stat st;
    assert_int_equal(stat(done, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    json_t *j = load_json(done);
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 1);
    assert_string_equal(json_string_value(json_object_get(j, "scene")), "a.mp4");
    assert_null(json_object_get(j, "scene_hex"));
    assert_string_equal(json_string_value(json_object_get(j, "task")), "subtitles");
    assert_int_equal(json_integer_value(json_object_get(j, "pid")), getpid());
    assert_string_equal(json_string_value(json_object_get(j, "engine")), "sphinx");
    assert_string_equal(json_string_value(json_object_get(j, "model")), "en-us");
    assert_string_equal(json_string_value(json_object_get(j, "device")), "cpu");
    assert_string_equal(json_string_value(json_object_get(j, "language")), "en");
    assert_string_equal(json_string_value(json_object_get(j, "tapedeck_version")),
                        TAPEDECK_VERSION);
    assert_true(json_string_value(json_object_get(j, "host"))[0] != '\0');
    const char *tm = json_string_value(json_object_get(j, "time"));
    assert_non_null(tm);
    assert_int_equal(strlen(tm), 20); /* 2024-05-01T22:03:11Z */
    assert_int_equal(tm[10], 'T');
    assert_int_equal(tm[19], 'Z');
    assert_true(json_real_value(json_object_get(j, "audio_seconds")) == 12.5);
    json_t *input = json_object_get(j, "input");
    assert_int_equal(json_integer_value(json_object_get(input, "size")), fx->scene.size);
    assert_int_equal(json_integer_value(json_object_get(input, "mtime_ns")), fx->scene.mtime_ns);
    json_t *outs = json_object_get(j, "outputs");
    assert_int_equal(json_array_size(outs), 2);
    json_t *o0 = json_array_get(outs, 0);
    assert_string_equal(json_string_value(json_object_get(o0, "name")), "a.srt");
    const char *srt_text = "1\n00:00:00,000 --> 00:00:01,000\nhello\n";
    char hex[TD_SHA256_HEX_LEN + 1];
    assert_int_equal(td_sha256_buf(srt_text, strlen(srt_text), hex, NULL), TD_OK);
    assert_string_equal(json_string_value(json_object_get(o0, "sha256")), hex);
    assert_int_equal(json_integer_value(json_object_get(o0, "size")), strlen(srt_text));
    assert_string_equal(json_string_value(json_object_get(json_array_get(outs, 1), "name")),
                        "a.vtt");
    json_decref(j);

    /* Null model and language are written as null; still DONE. */
    const char *outs1[] = { fx->srt };
    td_done_info info = { .task = "subtitles", .engine = "sphinx", .device = "cpu",
                          .outputs = outs1, .n_outputs = 1 };
    td_error err;
    assert_int_equal(td_marker_write_done(&fx->scene, &info, &err), TD_OK);
    j = load_json(done);
    assert_true(json_is_null(json_object_get(j, "model")));
    assert_true(json_is_null(json_object_get(j, "language")));
    json_decref(j);
    expect_state(fx, TD_MARKER_DONE, "");

    /* An unknown duration (NaN) is written as null, not refused. */
    info.audio_seconds = NAN;
    assert_int_equal(td_marker_write_done(&fx->scene, &info, &err), TD_OK);
    j = load_json(done);
    assert_true(json_is_null(json_object_get(j, "audio_seconds")));
    json_decref(j);
    expect_state(fx, TD_MARKER_DONE, "");

    /* Another task has its own marker. */
    enum td_marker_state s2;
    assert_int_equal(td_marker_check(&fx->scene, "enhance", &s2, NULL, 0, &err), TD_OK);
    assert_int_equal(s2, TD_MARKER_NONE);

    /* Leaves no temporary file behind. */
    DIR *d = opendir(fx->dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        assert_true(strncmp(de->d_name, ".tdtmp.", 7) != 0);
    closedir(d);
    free(done);
}

static void test_stale_input_size(void **state)
{
    struct fixture *fx = *state;
    write_done(fx);
    FILE *f = fopen(fx->scene_path, "ab");
    assert_non_null(f);
    fputc('x', f);
    fclose(f);
    expect_state(fx, TD_MARKER_STALE, "input changed (size)");
}

static void test_stale_input_mtime(void **state)
{
    struct fixture *fx = *state;
    write_done(fx);
    struct timespec ts[2] = { { 0, UTIME_OMIT }, { 1000000000, 123 } };
    assert_int_equal(utimensat(AT_FDCWD, fx->scene_path, ts, 0), 0);
    expect_state(fx, TD_MARKER_STALE, "input changed (mtime)");
    /* Only the nanoseconds differ: still a change. */
    ts[1].tv_sec = (time_t)(fx->scene.mtime_ns / 1000000000);
    ts[1].tv_nsec = (long)(fx->scene.mtime_ns % 1000000000) ^ 1;
    assert_int_equal(utimensat(AT_FDCWD, fx->scene_path, ts, 0), 0);
    expect_state(fx, TD_MARKER_STALE, "input changed (mtime)");
    /* Put it back: DONE again. */
    ts[1].tv_nsec = (long)(fx->scene.mtime_ns % 1000000000);
    assert_int_equal(utimensat(AT_FDCWD, fx->scene_path, ts, 0), 0);
    expect_state(fx, TD_MARKER_DONE, "");
}

/* An mtime past 2262 (a camera with a broken clock, a restored backup) does
 * not fit int64 nanoseconds: scanning and checking such a scene must not
 * overflow (undefined behaviour; the sanitizer build aborts) and must still
 * tell one such mtime from another. */
static void test_far_future_mtime(void **state)
{
    struct fixture *fx = *state;
    struct timespec ts[2] = { { 0, UTIME_OMIT }, { (time_t)10413792000LL, 5 } }; /* 2300 */
    assert_int_equal(utimensat(AT_FDCWD, fx->scene_path, ts, 0), 0);
    td_scene_release(&fx->scene);
    td_error err;
    assert_int_equal(td_scene_from_path(fx->dir, fx->scene_path, &fx->scene, &err), TD_OK);
    write_done(fx);
    expect_state(fx, TD_MARKER_DONE, "");
    ts[1].tv_sec += 86400;
    assert_int_equal(utimensat(AT_FDCWD, fx->scene_path, ts, 0), 0);
    expect_state(fx, TD_MARKER_STALE, "input changed (mtime)");
    ts[1].tv_sec -= 86400;
    assert_int_equal(utimensat(AT_FDCWD, fx->scene_path, ts, 0), 0);
    expect_state(fx, TD_MARKER_DONE, "");
}

static void test_stale_output_removed(void **state)
{
    struct fixture *fx = *state;
    write_done(fx);
    assert_int_equal(unlink(fx->vtt), 0);
    expect_state(fx, TD_MARKER_STALE, "output a.vtt missing");
}

static void test_stale_output_edited_same_size(void **state)
{
    struct fixture *fx = *state;
    write_done(fx);
    /* Same length, one letter changed, same mtime: only the hash can tell. */
    struct stat before;
    assert_int_equal(stat(fx->srt, &before), 0);
    write_text(fx->srt, "1\n00:00:00,000 --> 00:00:01,000\nhellO\n");
    struct timespec ts[2] = { before.st_atim, before.st_mtim };
    assert_int_equal(utimensat(AT_FDCWD, fx->srt, ts, 0), 0);
    expect_state(fx, TD_MARKER_STALE, "output a.srt changed");
    /* Other size: changed as well. */
    write_text(fx->srt, "short");
    expect_state(fx, TD_MARKER_STALE, "output a.srt changed");
}

static void test_stale_other_scene(void **state)
{
    struct fixture *fx = *state;
    write_done(fx);
    /* a.mp4 renamed to a.mkv: same stem, same size and mtime, same marker
     * name; it must not count for the new file. */
    char *mkv = pathf("%s/a.mkv", fx->dir);
    assert_int_equal(rename(fx->scene_path, mkv), 0);
    td_scene other;
    td_error err;
    assert_int_equal(td_scene_from_path(fx->dir, mkv, &other, &err), TD_OK);
    enum td_marker_state st;
    char why[256];
    assert_int_equal(td_marker_check(&other, "subtitles", &st, why, sizeof why, &err), TD_OK);
    assert_int_equal(st, TD_MARKER_STALE);
    assert_string_equal(why, "marker is for another scene (a.mp4)");
    td_scene_release(&other);
    free(mkv);
}

/* a.mp4 and a.mkv share marker names. The supervisor refuses the second
 * of such a pair with a .failed marker; that must not make the first one
 * look failed. */
static void test_failed_of_clashing_scene(void **state)
{
    struct fixture *fx = *state; /* a.mp4 */
    char *mkv = pathf("%s/a.mkv", fx->dir);
    write_text(mkv, "the other one");
    td_scene other;
    td_error err;
    assert_int_equal(td_scene_from_path(fx->dir, mkv, &other, &err), TD_OK);
    assert_int_equal(td_marker_write_failed(&other, "subtitles", "input",
                                            "outputs would overwrite those of a.mp4", 0, NULL, 0,
                                            &err),
                     TD_OK);
    enum td_marker_state st;
    char why[256];
    assert_int_equal(td_marker_check(&other, "subtitles", &st, why, sizeof why, &err), TD_OK);
    assert_int_equal(st, TD_MARKER_FAILED);
    assert_string_equal(why, "outputs would overwrite those of a.mp4");
    expect_state(fx, TD_MARKER_NONE, "");
    td_failed_info info;
    assert_int_equal(td_marker_read_failed(&fx->scene, "subtitles", &info, &err), TD_EINPUT);
    assert_non_null(strstr(err.msg, "another scene"));
    /* a.mp4 completes: DONE, and the shared .failed is gone. */
    write_done(fx);
    expect_state(fx, TD_MARKER_DONE, "");
    assert_int_equal(td_marker_check(&other, "subtitles", &st, why, sizeof why, &err), TD_OK);
    assert_int_equal(st, TD_MARKER_STALE);
    assert_string_equal(why, "marker is for another scene (a.mp4)");
    td_scene_release(&other);
    free(mkv);
}

static void test_failed_round_trip(void **state)
{
    struct fixture *fx = *state;
    const char *lines[] = { "decoding \xff\xfe bytes", "line two\nwith newline", "",
                            "caf\xc3\xa9 ok" };
    td_error err;
    assert_int_equal(td_marker_write_failed(&fx->scene, "subtitles", "input",
                                            "tape1/a\xff.mp4: no audio stream", 3, lines, 4, &err),
                     TD_OK);
    char why[512];
    assert_int_equal(check(fx, why, sizeof why), TD_MARKER_FAILED);
    assert_string_equal(why, "tape1/a\xef\xbf\xbd.mp4: no audio stream");

    td_failed_info info;
    assert_int_equal(td_marker_read_failed(&fx->scene, "subtitles", &info, &err), TD_OK);
    assert_string_equal(info.reason, "tape1/a\xef\xbf\xbd.mp4: no audio stream");
    assert_string_equal(info.kind, "input");
    assert_int_equal(info.attempts, 3);
    assert_int_equal(strlen(info.time), 20);
    td_failed_info_release(&info);
    assert_null(info.reason);

    char *failed = td_marker_path(&fx->scene, "subtitles", "failed");
    json_t *j = load_json(failed);
    json_t *log = json_object_get(j, "log");
    assert_int_equal(json_array_size(log), 4);
    assert_string_equal(json_string_value(json_array_get(log, 0)),
                        "decoding \xef\xbf\xbd\xef\xbf\xbd bytes");
    assert_string_equal(json_string_value(json_array_get(log, 1)), "line two\nwith newline");
    assert_string_equal(json_string_value(json_array_get(log, 2)), "");
    assert_string_equal(json_string_value(json_array_get(log, 3)), "caf\xc3\xa9 ok");
    assert_string_equal(json_string_value(json_object_get(j, "task")), "subtitles");
    assert_string_equal(json_string_value(json_object_get(j, "scene")), "a.mp4");
    assert_int_equal(json_integer_value(json_object_get(j, "pid")), getpid());
    json_decref(j);

    /* Writing .done succeeds over a failure... */
    write_done(fx);
    expect_state(fx, TD_MARKER_DONE, "");
    /* ...and writing .done removed the .failed. */
    assert_false(exists(failed));
    assert_int_equal(td_marker_write_failed(&fx->scene, "subtitles", "crash", "killed", 1,
                                            NULL, 0, &err),
                     TD_OK);
    expect_state(fx, TD_MARKER_DONE, ""); /* a valid .done outranks it */
    /* ...and once the .done goes stale, the failure shows again. */
    assert_int_equal(unlink(fx->srt), 0);
    expect_state(fx, TD_MARKER_FAILED, "killed");

    /* Remove clears both; removing again is fine. */
    assert_int_equal(td_marker_remove(&fx->scene, "subtitles", &err), TD_OK);
    char *done = td_marker_path(&fx->scene, "subtitles", "done");
    assert_false(exists(done));
    assert_false(exists(failed));
    assert_int_equal(td_marker_remove(&fx->scene, "subtitles", &err), TD_OK);
    expect_state(fx, TD_MARKER_NONE, "");
    assert_int_equal(td_marker_read_failed(&fx->scene, "subtitles", &info, &err), TD_EIO);
    assert_non_null(strstr(err.msg, failed));
    free(done);
    free(failed);
}

static void test_failed_log_bounded(void **state)
{
    struct fixture *fx = *state;
    enum { N = 1000 };
    static char bufs[N][32];
    const char *lines[N];
    for (int i = 0; i < N; i++) {
        snprintf(bufs[i], sizeof bufs[i], "line %d", i);
        lines[i] = bufs[i];
    }
    char *huge = malloc(100000);
    assert_non_null(huge);
    memset(huge, 'e', 99999);
    huge[99999] = '\0';
    lines[N - 2] = huge;
    td_error err;
    assert_int_equal(td_marker_write_failed(&fx->scene, "subtitles", "stall", huge, 2, lines, N,
                                            &err),
                     TD_OK);
    char *failed = td_marker_path(&fx->scene, "subtitles", "failed");
    json_t *j = load_json(failed);
    json_t *log = json_object_get(j, "log");
    size_t n = json_array_size(log);
    assert_true(n > 0 && n < N);
    /* The last lines are kept. */
    assert_string_equal(json_string_value(json_array_get(log, n - 1)), "line 999");
    assert_true(strlen(json_string_value(json_array_get(log, n - 2))) < 99999);
    assert_true(strlen(json_string_value(json_object_get(j, "error"))) < 99999);
    json_decref(j);
    /* And it reads back (it is under the read bound). */
    assert_int_equal(check(fx, NULL, 0), TD_MARKER_FAILED);
    td_failed_info info;
    assert_int_equal(td_marker_read_failed(&fx->scene, "subtitles", &info, &err), TD_OK);
    td_failed_info_release(&info);
    free(failed);
    free(huge);
}

/* Overwrite the .done with bytes and expect STALE with "marker unreadable". */
static void expect_corrupt(struct fixture *fx, const void *data, size_t len)
{
    char *done = td_marker_path(&fx->scene, "subtitles", "done");
    write_bytes(done, data, len);
    char why[512];
    enum td_marker_state st = check(fx, why, sizeof why);
    if (st != TD_MARKER_STALE || strncmp(why, "marker unreadable", 17) != 0)
        fail_msg("state %d why \"%s\" for a %zu-byte corrupt marker", (int)st, why, len);
    free(done);
}

static void test_corrupt_markers(void **state)
{
    struct fixture *fx = *state;
    write_done(fx);
    char *done = td_marker_path(&fx->scene, "subtitles", "done");
    FILE *f = fopen(done, "rb");
    assert_non_null(f);
    char good[8192];
    size_t good_len = fread(good, 1, sizeof good, f);
    fclose(f);
    assert_true(good_len > 100);

    expect_corrupt(fx, "\x00\x01garbage\xff", 10);
    expect_corrupt(fx, good, good_len / 2);              /* truncated */
    expect_corrupt(fx, "", 0);                           /* empty */
    expect_corrupt(fx, "[1, 2, 3]", 9);                  /* not an object */
    expect_corrupt(fx, "{\"version\": 2}", 14);          /* future version */
    expect_corrupt(fx, "{\"version\": 1}", 14);          /* no fields */
    const char *bad_types = "{\"version\":1,\"task\":\"subtitles\",\"scene\":\"a.mp4\","
                            "\"input\":{\"size\":\"21\",\"mtime_ns\":1}}";
    expect_corrupt(fx, bad_types, strlen(bad_types));
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "{\"version\":1,\"task\":\"subtitles\",\"scene\":\"a.mp4\","
                     "\"input\":{\"size\":%lld,\"mtime_ns\":%lld},"
                     "\"outputs\":[{\"name\":\"../../etc/passwd\",\"size\":1,"
                     "\"sha256\":\"00\"}]}",
                     (long long)fx->scene.size, (long long)fx->scene.mtime_ns);
    expect_corrupt(fx, buf, (size_t)n);
    const char *bad_hex = "{\"version\":1,\"task\":\"subtitles\",\"scene\":\"a.mp4\","
                          "\"scene_hex\":\"6g\"}";
    expect_corrupt(fx, bad_hex, strlen(bad_hex));
    /* Deep nesting must not blow the stack. */
    size_t deep_n = 200000;
    char *deep = malloc(deep_n);
    assert_non_null(deep);
    memset(deep, '[', deep_n);
    expect_corrupt(fx, deep, deep_n);
    free(deep);
    /* 5 MiB of valid-looking JSON: over the bound, never parsed. */
    size_t big_n = 5u << 20;
    char *big = malloc(big_n);
    assert_non_null(big);
    memset(big, ' ', big_n);
    memcpy(big, good, good_len);
    expect_corrupt(fx, big, big_n);
    char why[256];
    check(fx, why, sizeof why);
    assert_non_null(strstr(why, "too large"));
    free(big);

    /* A directory or a FIFO in the marker's place. */
    assert_int_equal(unlink(done), 0);
    assert_int_equal(mkfifo(done, 0644), 0);
    assert_int_equal(check(fx, why, sizeof why), TD_MARKER_STALE);
    assert_non_null(strstr(why, "not a regular file"));
    assert_int_equal(unlink(done), 0);
    assert_int_equal(mkdir(done, 0755), 0);
    assert_int_equal(check(fx, why, sizeof why), TD_MARKER_STALE);
    assert_int_equal(rmdir(done), 0);

    /* The good one is still good. */
    write_bytes(done, good, good_len);
    expect_state(fx, TD_MARKER_DONE, "");

    /* A corrupt .failed: still FAILED (it records that something failed),
     * and read_failed says it is unreadable. */
    char *failed = td_marker_path(&fx->scene, "subtitles", "failed");
    write_text(failed, "{\"version\": 1, \"error\": ");
    assert_int_equal(unlink(fx->vtt), 0);
    assert_int_equal(check(fx, why, sizeof why), TD_MARKER_FAILED);
    assert_non_null(strstr(why, "marker unreadable"));
    td_failed_info info;
    td_error err;
    assert_int_equal(td_marker_read_failed(&fx->scene, "subtitles", &info, &err), TD_EINPUT);
    assert_non_null(strstr(err.msg, failed));
    free(failed);
    free(done);
}

static void test_invalid_utf8_names(void **state)
{
    (void)state;
    struct fixture *fx = fixture_new("bad\xff name\n.mp4");
    write_done(fx);
    expect_state(fx, TD_MARKER_DONE, "");

    char *done = td_marker_path(&fx->scene, "subtitles", "done");
    char *want_done = pathf("%s/.bad\xff name\n.subtitles.done", fx->dir);
    assert_string_equal(done, want_done);
    json_t *j = load_json(done);
    assert_string_equal(json_string_value(json_object_get(j, "scene")),
                        "bad\xef\xbf\xbd name\n.mp4");
    assert_string_equal(json_string_value(json_object_get(j, "scene_hex")),
                        "626164ff206e616d650a2e6d7034");
    json_t *o0 = json_array_get(json_object_get(j, "outputs"), 0);
    assert_string_equal(json_string_value(json_object_get(o0, "name_hex")),
                        "626164ff206e616d650a2e737274");
    json_decref(j);

    assert_int_equal(unlink(fx->srt), 0);
    expect_state(fx, TD_MARKER_STALE, "output bad\xff name\n.srt missing");
    free(done);
    free(want_done);
    fixture_free(fx);
}

static void test_write_done_errors(void **state)
{
    struct fixture *fx = *state;
    td_error err;
    /* An output that does not exist. */
    char *ghost = pathf("%s/a.json", fx->dir);
    const char *outs[] = { fx->srt, ghost };
    td_done_info info = { .task = "subtitles", .engine = "sphinx", .device = "cpu",
                          .outputs = outs, .n_outputs = 2 };
    assert_int_equal(td_marker_write_done(&fx->scene, &info, &err), TD_EIO);
    assert_non_null(strstr(err.msg, ghost));
    char *done = td_marker_path(&fx->scene, "subtitles", "done");
    assert_false(exists(done));

    /* An output that is not beside the scene. */
    char *sub = pathf("%s/sub", fx->dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    char *elsewhere = pathf("%s/sub/a.srt", fx->dir);
    write_text(elsewhere, "x");
    outs[1] = elsewhere;
    assert_int_equal(td_marker_write_done(&fx->scene, &info, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "not beside"));
    assert_false(exists(done));

    info.n_outputs = 1;
    info.task = ".hidden";
    assert_int_equal(td_marker_write_done(&fx->scene, &info, &err), TD_EINVAL);
    info.task = "subtitles";
    info.engine = NULL;
    assert_int_equal(td_marker_write_done(&fx->scene, &info, &err), TD_EINVAL);
    assert_false(exists(done));

    free(ghost);
    free(sub);
    free(elsewhere);
    free(done);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_none_when_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_required_outputs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_input_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_input_mtime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_far_future_mtime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_output_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_output_edited_same_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_other_scene, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_of_clashing_scene, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_log_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_markers, setup, teardown),
        cmocka_unit_test(test_invalid_utf8_names),
        cmocka_unit_test_setup_teardown(test_write_done_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
