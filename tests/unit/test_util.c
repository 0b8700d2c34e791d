/* test_util.c: the util helpers: capped buffers, atomic writes and orphan
 * sweeping, SHA-256, error formatting, fault injection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/atomic.h"
#include "util/buf.h"
#include "util/error.h"
#include "util/fault.h"
#include "util/hash.h"

/* ------------------------------------------------------------ helpers */


static int setup_dir(void **state)
{
    char tmpl[] = "/tmp/td-util-XXXXXX";
    if (!mkdtemp(tmpl))
        return -1;
    *state = strdup(tmpl);
    return 0;
}

static int teardown_dir(void **state)
{
    nftw(*state, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(*state);
    return 0;
}


static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(1 << 20);
    assert_non_null(buf);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static size_t count_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, TD_TEMP_PREFIX, strlen(TD_TEMP_PREFIX)) == 0)
            n++;
    closedir(d);
    return n;
}

static void touch(const char *path)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fclose(f), 0);
}

/* ---------------------------------------------------------------- buf */

static void test_buf_cap(void **state)
{
    (void)state;
    td_buf b;
    td_buf_init(&b, 10);
    assert_null(b.data);
    assert_int_equal(td_buf_append(&b, "12345678", 8), TD_OK);
    assert_int_equal(td_buf_append(&b, "abc", 3), TD_ENOMEM); /* 11 > 10 */
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "12345678");
    assert_int_equal(td_buf_printf(&b, "%s", "xyz"), TD_ENOMEM);
    assert_int_equal(td_buf_puts(&b, "xyz"), TD_ENOMEM);
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "12345678");
    assert_int_equal(td_buf_append(&b, "9", 1), TD_OK);
    assert_int_equal(td_buf_putc(&b, '0'), TD_OK); /* exactly at the limit */
    assert_int_equal(td_buf_putc(&b, '!'), TD_ENOMEM);
    assert_string_equal(b.data, "1234567890");
    assert_int_equal(b.len, 10);
    /* A huge length must not wrap around the limit test. */
    assert_int_equal(td_buf_append(&b, "x", SIZE_MAX), TD_ENOMEM);
    assert_int_equal(td_buf_append(&b, "x", SIZE_MAX - 5), TD_ENOMEM);
    assert_string_equal(b.data, "1234567890");
    td_buf_release(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);

    /* No limit given: the default one. */
    td_buf_init(&b, 0);
    assert_int_equal(b.limit, TD_BUF_DEFAULT_LIMIT);
    /* Limit SIZE_MAX: the NUL's +1 must not wrap. */
    td_buf_init(&b, SIZE_MAX);
    assert_int_equal(td_buf_append(&b, "a", 1), TD_OK);
    assert_int_equal(td_buf_append(&b, "x", SIZE_MAX - 1), TD_ENOMEM);
    assert_string_equal(b.data, "a");
    td_buf_release(&b);
}

static void test_buf_printf_growth(void **state)
{
    (void)state;
    td_buf b;
    td_buf_init(&b, 0);
    char want[20000] = "";
    size_t wl = 0;
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(td_buf_printf(&b, "%d,%s;", i, i % 7 ? "ab" : ""), TD_OK);
        wl += (size_t)snprintf(want + wl, sizeof want - wl, "%d,%s;", i, i % 7 ? "ab" : "");
    }
    assert_int_equal(b.len, wl);
    assert_int_equal(strlen(b.data), wl);
    assert_memory_equal(b.data, want, wl + 1);
    assert_true(b.cap > b.len);

    /* One print larger than the current capacity. */
    char big[5000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    size_t before = b.len;
    assert_int_equal(td_buf_printf(&b, "<%s>", big), TD_OK);
    assert_int_equal(b.len, before + sizeof big + 1);
    assert_int_equal(b.data[b.len], '\0');
    assert_int_equal(b.data[b.len - 1], '>');

    /* reset keeps memory; detach hands it over. */
    size_t cap = b.cap;
    td_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(b.cap, cap);
    assert_int_equal(td_buf_puts(&b, "kept"), TD_OK);
    size_t len = 99;
    char *d = td_buf_detach(&b, &len);
    assert_string_equal(d, "kept");
    assert_int_equal(len, 4);
    assert_null(b.data);
    free(d);
    d = td_buf_detach(&b, &len); /* empty: "" not NULL */
    assert_non_null(d);
    assert_string_equal(d, "");
    assert_int_equal(len, 0);
    free(d);

    /* printf of nothing still gives a terminated string. */
    assert_int_equal(td_buf_printf(&b, "%s", ""), TD_OK);
    assert_non_null(b.data);
    assert_string_equal(b.data, "");
    td_buf_release(&b);
}

/* ------------------------------------------------------------- atomic */

static void test_atomic_write(void **state)
{
    const char *dir = *state;
    char *path = pathf("%s/out.srt", dir);
    const char data[] = "line one\n\0binary\xff\n";
    td_error err;
    assert_int_equal(td_atomic_write(path, data, sizeof data, &err), TD_OK);
    size_t len;
    char *got = slurp(path, &len);
    assert_non_null(got);
    assert_int_equal(len, sizeof data);
    assert_memory_equal(got, data, sizeof data);
    free(got);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(count_temp_files(dir), 0);

    /* Overwrite with shorter content: exactly the new bytes. */
    assert_int_equal(td_atomic_write(path, "new", 3, &err), TD_OK);
    got = slurp(path, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(got, "new", 3);
    free(got);
    assert_int_equal(count_temp_files(dir), 0);

    /* Mode 0644 whatever the umask, even over a 0600 file. */
    assert_int_equal(chmod(path, 0600), 0);
    mode_t old = umask(077);
    assert_int_equal(td_atomic_write(path, "", 0, &err), TD_OK);
    umask(old);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_int_equal(st.st_size, 0);

    /* Errors name the path; nothing is left behind. */
    char *missing = pathf("%s/no/such/dir/x.srt", dir);
    assert_int_equal(td_atomic_write(missing, "x", 1, &err), TD_EIO);
    assert_non_null(strstr(err.msg, missing));
    assert_non_null(strstr(err.msg, "No such file"));
    char *trailing = pathf("%s/", dir);
    assert_int_equal(td_atomic_write(trailing, "x", 1, &err), TD_EINVAL);
    assert_int_equal(count_temp_files(dir), 0);

    /* A relative path (no directory part) works too. */
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    assert_int_equal(td_atomic_write("rel.txt", "r", 1, &err), TD_OK);
    assert_int_equal(chdir(cwd), 0);
    char *rel = pathf("%s/rel.txt", dir);
    got = slurp(rel, &len);
    assert_int_equal(len, 1);
    free(got);

    free(rel);
    free(trailing);
    free(missing);
    free(path);
}

/* A final name that fits the file system must be writable even though the
 * temporary name adds a prefix, the pid and a suffix to it: a scene named
 * with ~80 CJK characters has outputs and markers of 230+ bytes. */
static void test_atomic_write_long_name(void **state)
{
    const char *dir = *state;
    char base[NAME_MAX + 1];
    memset(base, 'x', NAME_MAX - 4);
    memcpy(base + NAME_MAX - 4, ".srt", 5); /* exactly NAME_MAX bytes */
    char *path = pathf("%s/%s", dir, base);
    td_error err = {0};
    assert_int_equal(td_atomic_write(path, "long", 4, &err), TD_OK);
    size_t len;
    char *got = slurp(path, &len);
    assert_non_null(got);
    assert_int_equal(len, 4);
    assert_memory_equal(got, "long", 4);
    free(got);
    assert_int_equal(count_temp_files(dir), 0);

    /* A name the file system refuses still fails, naming the path, and
     * leaves no temporary file behind. */
    char *too_long = pathf("%sx", path);
    assert_int_equal(td_atomic_write(too_long, "x", 1, &err), TD_EIO);
    assert_non_null(strstr(err.msg, "too long"));
    assert_int_equal(count_temp_files(dir), 0);
    free(too_long);
    free(path);
}

static void test_atomic_temp_names(void **state)
{
    (void)state;
    pid_t pid = 0;
    assert_true(td_atomic_is_temp_name(".tdtmp.123.a.srt.XyZ123", &pid));
    assert_int_equal(pid, 123);
    assert_true(td_atomic_is_temp_name(".tdtmp.4194304.x", &pid));
    assert_int_equal(pid, 4194304);
    assert_true(td_atomic_is_temp_name(".tdtmp.7.", NULL));
    assert_false(td_atomic_is_temp_name(".tdtmp.abc.x", &pid));
    assert_false(td_atomic_is_temp_name(".tdtmp.0.x", &pid));
    assert_false(td_atomic_is_temp_name(".tdtmp.-5.x", &pid));
    assert_false(td_atomic_is_temp_name(".tdtmp.+5.x", &pid));
    assert_false(td_atomic_is_temp_name(".tdtmp. 5.x", &pid));
    assert_false(td_atomic_is_temp_name(".tdtmp.12", &pid));
    assert_false(td_atomic_is_temp_name(".tdtmp.12x.a", &pid));
    assert_false(td_atomic_is_temp_name(".tdtmp.", &pid));
    assert_false(td_atomic_is_temp_name(".tdtmp.4294967296.x", &pid)); /* would wrap to 0 */
    assert_false(td_atomic_is_temp_name(".tdtmp.99999999999999999999999.x", &pid));
    assert_false(td_atomic_is_temp_name("x.tdtmp.1.a", &pid));
    assert_false(td_atomic_is_temp_name(".tdtmp1.a", &pid));
    assert_false(td_atomic_is_temp_name("a.srt", &pid));
    assert_false(td_atomic_is_temp_name("", &pid));
}

static void test_atomic_sweep(void **state)
{
    const char *dir = *state;
    /* A pid that is surely dead: a child that exited and was reaped. */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0)
        _exit(0);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);

    char *dead = pathf("%s/" TD_TEMP_PREFIX "%ld.a.srt.Ab12Cd", dir, (long)child);
    char *alive = pathf("%s/" TD_TEMP_PREFIX "%ld.b.srt.Ab12Cd", dir, (long)getpid());
    char *normal = pathf("%s/a.srt", dir);
    char *other = pathf("%s/.a.subtitles.done", dir);
    touch(dead);
    touch(alive);
    touch(normal);
    touch(other);

    td_error err;
    assert_int_equal(td_atomic_sweep_orphans(dir, &err), 1);
    assert_int_equal(access(dead, F_OK), -1);
    assert_int_equal(access(alive, F_OK), 0);
    assert_int_equal(access(normal, F_OK), 0);
    assert_int_equal(access(other, F_OK), 0);
    assert_int_equal(td_atomic_sweep_orphans(dir, &err), 0);

    char *missing = pathf("%s/nope", dir);
    assert_int_equal(td_atomic_sweep_orphans(missing, &err), TD_EIO);
    assert_non_null(strstr(err.msg, missing));

    free(missing);
    free(dead);
    free(alive);
    free(normal);
    free(other);
}

/* A writer killed between write and rename leaves only a temporary file,
 * which td_atomic_is_temp_name recognises with the writer's pid and the
 * sweep then removes; the final name never appears half-written. */
static void test_atomic_killed_writer(void **state)
{
    const char *dir = *state;
    char *path = pathf("%s/victim.srt", dir);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        setenv("TAPEDECK_FAULT", "kill:write:victim", 1);
        td_atomic_write(path, "partial", 7, NULL);
        _exit(0); /* not reached */
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    assert_int_equal(access(path, F_OK), -1);

    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int found = 0;
    while ((de = readdir(d)) != NULL) {
        pid_t pid;
        if (td_atomic_is_temp_name(de->d_name, &pid)) {
            assert_int_equal(pid, child);
            assert_non_null(strstr(de->d_name, "victim.srt"));
            found++;
        }
    }
    closedir(d);
    assert_int_equal(found, 1);
    td_error err;
    assert_int_equal(td_atomic_sweep_orphans(dir, &err), 1);
    assert_int_equal(count_temp_files(dir), 0);
    free(path);
}

/* --------------------------------------------------------------- hash */

static void test_sha256(void **state)
{
    const char *dir = *state;
    char hex[TD_SHA256_HEX_LEN + 1];
    td_error err;
    assert_int_equal(td_sha256_buf("abc", 3, hex, &err), TD_OK);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(td_sha256_buf("", 0, hex, &err), TD_OK);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_int_equal(td_sha256_buf(two, strlen(two), hex, &err), TD_OK);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

    /* A file larger than the read block hashes like the same buffer. */
    size_t n = 200000;
    char *data = malloc(n);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (char)(i * 31 + 7);
    char *path = pathf("%s/data.bin", dir);
    assert_int_equal(td_atomic_write(path, data, n, &err), TD_OK);
    char hex_file[TD_SHA256_HEX_LEN + 1];
    int64_t size = -1;
    assert_int_equal(td_sha256_file(path, hex_file, &size, &err), TD_OK);
    assert_int_equal(size, (int64_t)n);
    assert_int_equal(td_sha256_buf(data, n, hex, &err), TD_OK);
    assert_string_equal(hex_file, hex);
    assert_int_equal(td_sha256_file(path, hex_file, NULL, &err), TD_OK);

    char *missing = pathf("%s/missing.bin", dir);
    assert_int_equal(td_sha256_file(missing, hex_file, &size, &err), TD_EIO);
    assert_non_null(strstr(err.msg, missing));
    assert_int_equal(td_sha256_file(dir, hex_file, &size, &err), TD_EIO); /* a directory */

    free(missing);
    free(path);
    free(data);
}

/* -------------------------------------------------------------- error */

static void test_error_format(void **state)
{
    (void)state;
    td_error err;
    td_error_clear(&err);
    assert_int_equal(err.code, TD_OK);
    assert_string_equal(err.msg, "");

    assert_int_equal(td_error_set(&err, TD_EINPUT, "%s: no audio stream", "tape1/a.mp4"),
                     TD_EINPUT);
    assert_int_equal(err.code, TD_EINPUT);
    assert_string_equal(err.msg, "tape1/a.mp4: no audio stream");

    td_error_prefix(&err, "scene %d", 3);
    assert_string_equal(err.msg, "scene 3: tape1/a.mp4: no audio stream");
    assert_int_equal(err.code, TD_EINPUT); /* keeps the code */

    assert_int_equal(td_error_errno(&err, TD_EIO, ENOENT, "%s: cannot open", "x.srt"), TD_EIO);
    assert_int_equal(err.code, TD_EIO);
    char want[256];
    snprintf(want, sizeof want, "x.srt: cannot open: %s", strerror(ENOENT));
    assert_string_equal(err.msg, want);

    /* NULL is allowed everywhere and still returns the code. */
    assert_int_equal(td_error_set(NULL, TD_ENOMEM, "x"), TD_ENOMEM);
    assert_int_equal(td_error_errno(NULL, TD_EIO, EIO, "x"), TD_EIO);
    td_error_prefix(NULL, "p");
    td_error_clear(NULL);

    /* Long messages are cut, terminated, and prefixing keeps them so. */
    char longs[3000];
    memset(longs, 'L', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    td_error_set(&err, TD_EIO, "%s", longs);
    assert_int_equal(strlen(err.msg), TD_ERROR_MSG_MAX - 1);
    td_error_errno(&err, TD_EIO, ENOENT, "%s", longs);
    assert_int_equal(strlen(err.msg), TD_ERROR_MSG_MAX - 1);
    td_error_prefix(&err, "%s", "pre");
    assert_int_equal(strlen(err.msg), TD_ERROR_MSG_MAX - 1);
    assert_memory_equal(err.msg, "pre: LLL", 8);

    assert_string_equal(td_rc_name(TD_OK), "ok");
    assert_string_equal(td_rc_name(TD_EIO), "io");
    assert_string_equal(td_rc_name(TD_EINPUT), "input");
    assert_string_equal(td_rc_name(TD_ENOMEM), "memory");
    assert_string_equal(td_rc_name(TD_EENGINE), "engine");
    assert_string_equal(td_rc_name(TD_EABORT), "aborted");
    assert_string_equal(td_rc_name(TD_EINVAL), "invalid");
    assert_string_equal(td_rc_name(TD_EUNAVAILABLE), "unavailable");
    assert_string_equal(td_rc_name(-99), "unknown");
}

/* -------------------------------------------------------------- fault */

/* Run td_fault_point in a child with TAPEDECK_FAULT set; return its wait
 * status. */
static int fault_in_child(const char *spec, const char *point, const char *subject)
{
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        if (spec)
            setenv("TAPEDECK_FAULT", spec, 1);
        else
            unsetenv("TAPEDECK_FAULT");
        td_fault_point(point, subject);
        _exit(42);
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    return status;
}

static void expect_killed(int status)
{
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
}

static void expect_survived(int status)
{
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 42);
}

static void test_fault_kill(void **state)
{
    (void)state;
    expect_killed(fault_in_child("kill:scene:tape1", "scene", "/arch/tape1/a.mp4"));
    /* Several rules: any match fires. */
    expect_killed(fault_in_child("kill:decode:x,kill:scene:b.mp4", "scene", "/arch/b.mp4"));
    /* Non-matching subject, point, or no spec: nothing happens. */
    expect_survived(fault_in_child("kill:scene:tape2", "scene", "/arch/tape1/a.mp4"));
    expect_survived(fault_in_child("kill:write:tape1", "scene", "/arch/tape1/a.mp4"));
    expect_survived(fault_in_child(NULL, "scene", "/arch/tape1/a.mp4"));
    expect_survived(fault_in_child("", "scene", "/arch/tape1/a.mp4"));
    expect_survived(fault_in_child("kill:scene:tape1", "scene", NULL));
    expect_survived(fault_in_child("garbage", "scene", "tape1"));
    expect_survived(fault_in_child("explode:scene:tape1", "scene", "tape1"));
    /* abort raises SIGABRT. */
    int st = fault_in_child("abort:scene:tape1", "scene", "tape1");
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGABRT);
    /* And in this process, unset, it returns. */
    unsetenv("TAPEDECK_FAULT");
    td_fault_point("scene", "tape1");
}

static void test_fault_once_kill(void **state)
{
    const char *dir = *state;
    setenv("TAPEDECK_FAULT_DIR", dir, 1);
    expect_killed(fault_in_child("once-kill:scene:x", "scene", "x.mp4"));
    expect_survived(fault_in_child("once-kill:scene:x", "scene", "x.mp4"));
    expect_killed(fault_in_child("once-kill:scene:x", "scene", "xy.mp4")); /* other subject */
    unsetenv("TAPEDECK_FAULT_DIR");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_cap),
        cmocka_unit_test(test_buf_printf_growth),
        cmocka_unit_test_setup_teardown(test_atomic_write, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_atomic_write_long_name, setup_dir, teardown_dir),
        cmocka_unit_test(test_atomic_temp_names),
        cmocka_unit_test_setup_teardown(test_atomic_sweep, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_atomic_killed_writer, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_sha256, setup_dir, teardown_dir),
        cmocka_unit_test(test_error_format),
        cmocka_unit_test(test_fault_kill),
        cmocka_unit_test_setup_teardown(test_fault_once_kill, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
