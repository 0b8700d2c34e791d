/* test_scan.c: archive scan (natural order, filtering, symlinks, odd names,
 * clashes, limits) on trees built in a mkdtemp directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "archive/scan.h"

/* ------------------------------------------------------------ helpers */



static char *make_tmpdir(void)
{
    return make_tmpdir_named("td-scan");
}


/* Create root/rel with content, making parent directories. */
static void put_file(const char *root, const char *rel, const char *content)
{
    char *p = pathf("%s/%s", root, rel);
    for (char *s = p + strlen(root) + 1; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        if (mkdir(p, 0755) != 0)
            assert_int_equal(errno, EEXIST);
        *s = '/';
    }
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(content, f);
    assert_int_equal(fclose(f), 0);
    free(p);
}

static void put_dir(const char *root, const char *rel)
{
    char *p = pathf("%s/%s", root, rel);
    assert_int_equal(mkdir(p, 0755), 0);
    free(p);
}

static void put_link(const char *root, const char *rel, const char *target)
{
    char *p = pathf("%s/%s", root, rel);
    assert_int_equal(symlink(target, p), 0);
    free(p);
}

/* Assert that the scan found exactly these relative paths, in this order. */
static void expect_rels(const td_scene_list *l, const char *const *want, size_t n)
{
    for (size_t i = 0; i < l->count && i < n; i++) {
        if (strcmp(l->items[i].rel, want[i]) != 0)
            fail_msg("scene %zu: got \"%s\", want \"%s\"", i, l->items[i].rel, want[i]);
    }
    if (l->count != n) {
        for (size_t i = 0; i < l->count; i++)
            print_message("  got [%zu] %s\n", i, l->items[i].rel);
        fail_msg("got %zu scenes, want %zu", l->count, n);
    }
}

#define EXPECT_RELS(list, ...)                                                                  \
    do {                                                                                        \
        static const char *const want_[] = { __VA_ARGS__ };                                     \
        expect_rels((list), want_, sizeof want_ / sizeof want_[0]);                             \
    } while (0)

static int sign(int v)
{
    return (v > 0) - (v < 0);
}

/* ------------------------------------------------------ natural order */

static void test_natural_basic(void **state)
{
    (void)state;
    assert_true(td_natural_cmp("scene_2", "scene_10") < 0);
    assert_true(td_natural_cmp("scene_10", "scene_2") > 0);
    assert_true(td_natural_cmp("a", "a1") < 0);
    assert_true(td_natural_cmp("abc", "abcd") < 0);
    assert_true(td_natural_cmp("", "a") < 0);
    assert_int_equal(td_natural_cmp("same", "same"), 0);
    assert_int_equal(td_natural_cmp("", ""), 0);
    /* Leading zeros: same value, tie broken bytewise so they differ. */
    assert_true(td_natural_cmp("a01", "a1") < 0);
    assert_true(td_natural_cmp("a1", "a01") > 0);
    assert_true(td_natural_cmp("a001", "a01") < 0);
    assert_true(td_natural_cmp("a010", "a9") > 0);
    assert_true(td_natural_cmp("a0", "a00") < 0);
    /* The value decides before what follows the number. */
    assert_true(td_natural_cmp("a01b", "a1a") > 0);
    assert_true(td_natural_cmp("a2b", "a10a") < 0);
    /* Mixed digits and letters, several numbers. */
    assert_true(td_natural_cmp("x9y9", "x9y10") < 0);
    assert_true(td_natural_cmp("x10y1", "x9y99") > 0);
    assert_true(td_natural_cmp("tape1_scene_0002", "tape1_scene_0010") < 0);
    assert_true(td_natural_cmp("tape2_scene_0001", "tape10_scene_0001") < 0);
    /* Numbers longer than any integer type. */
    assert_true(td_natural_cmp("a99999999999999999999999999", "a99999999999999999999999998") > 0);
    assert_true(td_natural_cmp("a100000000000000000000000000", "a99999999999999999999999999") > 0);
    assert_true(td_natural_cmp("a0000000000000000000000000009", "a10") < 0);
    /* Digit against non-digit is bytewise: '.' < '1' < '_'. */
    assert_true(td_natural_cmp("a.mp4", "a1.mp4") < 0);
    assert_true(td_natural_cmp("a1", "a_") < 0);
    /* Bytewise, so upper case sorts first, and bytes >= 0x80 last. */
    assert_true(td_natural_cmp("B", "a") < 0);
    assert_true(td_natural_cmp("z", "\xff") < 0);
    assert_true(td_natural_cmp("\xc3\xa9", "\xff") < 0);
}

/* Sorting a shuffled list gives the expected order, and the comparison is
 * a total order: antisymmetric, transitive, equal only for equal strings. */
static void test_natural_total_order(void **state)
{
    (void)state;
    static const char *const sorted[] = {
        "", "0", "00", "001", "01", "1", "1a", "02", "2", "010", "10", "A", "B9a", "B10",
        "a", "a.mp4", "a0", "a01", "a1", "a1.mp4", "a1b", "a2", "a10", "a10.mkv", "a_",
        "scene 2", "scene 10", "scene_2", "scene_010", "scene_10", "scene_11", "z", "\xff",
    };
    size_t n = sizeof sorted / sizeof sorted[0];
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            int c = td_natural_cmp(sorted[i], sorted[j]);
            int want = i < j ? -1 : i > j ? 1 : 0;
            if (sign(c) != want)
                fail_msg("cmp(\"%s\", \"%s\") = %d, want sign %d", sorted[i], sorted[j], c, want);
            assert_int_equal(sign(c), -sign(td_natural_cmp(sorted[j], sorted[i])));
        }
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            for (size_t k = 0; k < n; k++)
                if (td_natural_cmp(sorted[i], sorted[j]) < 0 &&
                    td_natural_cmp(sorted[j], sorted[k]) < 0)
                    assert_true(td_natural_cmp(sorted[i], sorted[k]) < 0);
}

static void test_media_and_output_names(void **state)
{
    (void)state;
    assert_true(td_is_media_name("a.mp4"));
    assert_true(td_is_media_name("A.MP4"));
    assert_true(td_is_media_name("a.Mkv"));
    assert_true(td_is_media_name("x.y.M2TS"));
    assert_true(td_is_media_name("voice.opus"));
    assert_true(td_is_media_name("old.3gp"));
    assert_false(td_is_media_name("a.srt"));
    assert_false(td_is_media_name("a.mp4.txt"));
    assert_false(td_is_media_name("mp4"));
    assert_false(td_is_media_name("a."));
    assert_false(td_is_media_name(".mp4"));
    assert_false(td_is_media_name("a.mp44"));
    assert_false(td_is_media_name(""));

    assert_true(td_is_own_output_name("a.restored.mp4"));
    assert_true(td_is_own_output_name("a.tapedeck.part1.mkv"));
    assert_true(td_is_own_output_name("x.y.restored.MOV"));
    assert_false(td_is_own_output_name("a.mp4"));
    assert_false(td_is_own_output_name("restored.mp4"));
    assert_false(td_is_own_output_name("a_restored.mp4"));
    assert_false(td_is_own_output_name("a.restoredmp4"));
    assert_false(td_is_own_output_name("Holiday.Restored.mp4"));
}

/* ------------------------------------------------------------- scans */

static void test_scan_filters(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    put_file(root, "b.mp4", "b");
    put_file(root, "c.MKV", "c");
    put_file(root, ".hidden.mp4", "h");
    put_file(root, ".b.subtitles.done", "{}");
    put_file(root, ".b.subtitles.failed", "{}");
    put_file(root, ".tdtmp.123.b.srt.AbCdEf", "tmp");
    put_file(root, "b.srt", "srt");
    put_file(root, "b.vtt", "vtt");
    put_file(root, "notes.txt", "n");
    put_file(root, "README", "r");
    put_file(root, "b.restored.mp4", "r");
    put_file(root, "c.tapedeck.part1.mkv", "r");
    put_file(root, ".hiddendir/z.mp4", "z");
    put_file(root, "dir.mp4/x.wav", "x"); /* a directory named like media */
    put_file(root, "empty/.keep", "");
    char *fifo = pathf("%s/pipe.mp4", root);
    assert_int_equal(mkfifo(fifo, 0644), 0);

    td_scene_list l;
    td_error err;
    assert_int_equal(td_scan_archive(root, &l, &err), TD_OK);
    EXPECT_RELS(&l, "b.mp4", "c.MKV", "dir.mp4/x.wav");
    td_scene_list_release(&l);
    assert_null(l.items);
    assert_int_equal(l.count, 0);

    free(fifo);
    rm_tree(root);
    free(root);
}

static void test_scan_nested_order_and_fields(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    put_file(root, "tape10/scene_2.mp4", "1");
    put_file(root, "tape2/scene_10.mp4", "22");
    put_file(root, "tape2/scene_9.mp4", "333");
    put_file(root, "tape2/scene_09.mp4", "4444");
    put_file(root, "tape2 b/scene_1.mp4", "5");
    put_file(root, "tape2/sub/deep/x1.wav", "6");
    put_file(root, "tape2/sub.mp4", "7");
    put_file(root, "tape1.mp4", "8");
    put_file(root, "Tape3/a.mp4", "9");

    /* A trailing slash on the root must not change the paths. */
    char *root_slash = pathf("%s/", root);
    td_scene_list l;
    td_error err;
    assert_int_equal(td_scan_archive(root_slash, &l, &err), TD_OK);
    EXPECT_RELS(&l, "Tape3/a.mp4", "tape1.mp4", "tape2/scene_09.mp4", "tape2/scene_9.mp4",
                "tape2/scene_10.mp4", "tape2/sub/deep/x1.wav", "tape2/sub.mp4",
                "tape2 b/scene_1.mp4", "tape10/scene_2.mp4");

    const td_scene *s = &l.items[4]; /* tape2/scene_10.mp4 */
    char *want_path = pathf("%s/tape2/scene_10.mp4", root);
    char *want_dir = pathf("%s/tape2", root);
    assert_string_equal(s->path, want_path);
    assert_string_equal(s->dir, want_dir);
    assert_string_equal(s->name, "scene_10.mp4");
    assert_string_equal(s->stem, "scene_10");
    assert_int_equal(s->size, 2);
    assert_int_equal(s->clash_with, -1);
    struct stat st;
    assert_int_equal(stat(want_path, &st), 0);
    assert_int_equal(s->mtime_ns, (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
    assert_string_equal(l.items[1].dir, root); /* top level: the root as given, no slash */
    td_scene_list_release(&l);

    free(want_path);
    free(want_dir);
    free(root_slash);
    rm_tree(root);
    free(root);
}

static void test_scan_symlinks(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    char *outside = make_tmpdir();
    /* A sibling whose name extends the root's: inside by a naive prefix test. */
    char *sibling = pathf("%s2", root);
    assert_int_equal(mkdir(sibling, 0755), 0);
    put_file(sibling, "s.mp4", "sib");

    put_file(root, "real/a.mp4", "aaaa");
    put_file(root, "real/b.mp4", "bb");
    put_file(outside, "o.mp4", "out");
    put_file(outside, "dir/p.mp4", "out");

    put_link(root, "inlink.mp4", "real/a.mp4");              /* file inside: followed */
    char *abs_target = pathf("%s/real/b.mp4", root);
    put_link(root, "inabs.mkv", abs_target);                  /* absolute, inside */
    char *o = pathf("%s/o.mp4", outside);
    put_link(root, "outlink.mp4", o);                         /* file outside */
    char *od = pathf("%s/dir", outside);
    put_link(root, "outdir", od);                             /* dir outside */
    char *sib = pathf("%s/s.mp4", sibling);
    put_link(root, "sibling.mp4", sib);                       /* /arch2 is not /arch */
    put_link(root, "sibdir", sibling);
    put_link(root, "broken.mp4", "nowhere/x.mp4");            /* broken */
    put_link(root, "self.mp4", "self.mp4");                   /* ELOOP */
    put_link(root, "real/loop", "..");                        /* loop to the root */
    put_link(root, "real/loop2", ".");                        /* loop to itself */
    put_link(root, "alias", "real");                          /* dir inside, walked once */
    put_link(root, "up", "../");                              /* parent of the root */

    td_scene_list l;
    td_error err;
    assert_int_equal(td_scan_archive(root, &l, &err), TD_OK);
    /* "alias" sorts before "real" but the real path wins. */
    EXPECT_RELS(&l, "inabs.mkv", "inlink.mp4", "real/a.mp4", "real/b.mp4");
    assert_int_equal(l.items[1].size, 4); /* stat of the target */
    assert_int_equal(l.items[0].size, 2);
    char *want = pathf("%s/inlink.mp4", root);
    assert_string_equal(l.items[1].path, want); /* named by the link */
    td_scene_list_release(&l);

    /* A root that is itself a link: the tree is scanned through it. */
    char *root_link = pathf("%s/rootlink", outside);
    assert_int_equal(symlink(root, root_link), 0);
    assert_int_equal(td_scan_archive(root_link, &l, &err), TD_OK);
    EXPECT_RELS(&l, "inabs.mkv", "inlink.mp4", "real/a.mp4", "real/b.mp4");
    td_scene_list_release(&l);

    free(want);
    free(root_link);
    free(abs_target);
    free(o);
    free(od);
    free(sib);
    rm_tree(root);
    rm_tree(outside);
    rm_tree(sibling);
    free(root);
    free(outside);
    free(sibling);
}

/* A directory reached only through a link inside the archive is walked,
 * once, under the first link's name. */
static void test_scan_dir_link_only_path(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    put_file(root, ".store/x.mp4", "x"); /* hidden: reachable only by links */
    put_link(root, "b_view", ".store");
    put_link(root, "a_view", ".store");
    put_link(root, "a_view2", "a_view");
    td_scene_list l;
    td_error err;
    assert_int_equal(td_scan_archive(root, &l, &err), TD_OK);
    EXPECT_RELS(&l, "a_view/x.mp4");
    td_scene_list_release(&l);
    rm_tree(root);
    free(root);
}

static void test_scan_odd_names(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    static const char *const names[] = {
        "with space.mp4", "quote\"s'.mp4", "new\nline.mp4", "bad\xff\xfe.mp4",
        "back\\slash.mp4", "tab\there.mp4", "\xc3\xa9t\xc3\xa9.mp4",
    };
    size_t n = sizeof names / sizeof names[0];
    for (size_t i = 0; i < n; i++)
        put_file(root, names[i], "x");
    put_file(root, "dir \xff\n/inner.mp4", "y");

    td_scene_list l;
    td_error err;
    assert_int_equal(td_scan_archive(root, &l, &err), TD_OK);
    assert_int_equal(l.count, n + 1);
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t j = 0; j < l.count; j++)
            if (strcmp(l.items[j].rel, names[i]) == 0)
                found = true;
        if (!found)
            fail_msg("scene \"%s\" not found", names[i]);
    }
    bool found_dir = false;
    for (size_t j = 0; j < l.count; j++) {
        if (strcmp(l.items[j].rel, "dir \xff\n/inner.mp4") == 0) {
            found_dir = true;
            char *want = pathf("%s/dir \xff\n", root);
            assert_string_equal(l.items[j].dir, want);
            free(want);
        }
    }
    assert_true(found_dir);
    for (size_t j = 1; j < l.count; j++)
        assert_true(td_natural_cmp(l.items[j - 1].name, l.items[j].name) < 0 ||
                    strchr(l.items[j - 1].rel, '/') || strchr(l.items[j].rel, '/'));
    /* The paths open. */
    for (size_t j = 0; j < l.count; j++) {
        int fd = open(l.items[j].path, O_RDONLY);
        assert_true(fd >= 0);
        close(fd);
    }
    td_scene_list_release(&l);
    rm_tree(root);
    free(root);
}

static void test_scan_clashes(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    put_file(root, "a.mp4", "1");
    put_file(root, "a.mkv", "2");
    put_file(root, "a.MOV", "3");
    put_file(root, "b.mp4", "4");
    put_file(root, "a.b.mp4", "5");
    put_file(root, "sub/a.mp4", "6");
    put_file(root, "a/x.mp4", "7");
    td_scene_list l;
    td_error err;
    assert_int_equal(td_scan_archive(root, &l, &err), TD_OK);
    EXPECT_RELS(&l, "a/x.mp4", "a.MOV", "a.b.mp4", "a.mkv", "a.mp4", "b.mp4", "sub/a.mp4");
    assert_int_equal(l.items[0].clash_with, -1);
    assert_int_equal(l.items[1].clash_with, -1); /* first "a" stem */
    assert_int_equal(l.items[2].clash_with, -1); /* stem "a.b" */
    assert_int_equal(l.items[3].clash_with, 1);
    assert_int_equal(l.items[4].clash_with, 1);
    assert_int_equal(l.items[5].clash_with, -1);
    assert_int_equal(l.items[6].clash_with, -1); /* other directory */
    td_scene_list_release(&l);
    rm_tree(root);
    free(root);
}

static void test_scan_bad_roots(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    put_file(root, "file.mp4", "x");
    char *file = pathf("%s/file.mp4", root);
    char *missing = pathf("%s/missing", root);
    td_scene_list l = { (td_scene *)1, 99 };
    td_error err;

    assert_int_equal(td_scan_archive(file, &l, &err), TD_EINPUT);
    assert_non_null(strstr(err.msg, file));
    assert_non_null(strstr(err.msg, "not a directory"));
    assert_null(l.items);
    assert_int_equal(l.count, 0);

    assert_int_equal(td_scan_archive(missing, &l, &err), TD_EINPUT);
    assert_non_null(strstr(err.msg, missing));
    assert_non_null(strstr(err.msg, "No such file"));

    /* An empty archive is fine. */
    char *empty = pathf("%s/empty", root);
    assert_int_equal(mkdir(empty, 0755), 0);
    assert_int_equal(td_scan_archive(empty, &l, &err), TD_OK);
    assert_int_equal(l.count, 0);
    td_scene_list_release(&l);

    free(empty);
    free(file);
    free(missing);
    rm_tree(root);
    free(root);
}

/* Permissions do not stop root, so the scan runs in a child that drops
 * the capabilities that bypass them (a no-op for an unprivileged user).
 * The child reports "rc count message" through a pipe. */
static int drop_dac_caps(void)
{
    struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) != 0)
        return -1;
    uint32_t drop = (1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH);
    data[0].effective &= ~drop;
    data[0].permitted &= ~drop;
    data[0].inheritable &= ~drop;
    return (int)syscall(SYS_capset, &hdr, data);
}

static int scan_without_dac(const char *root, int *want_rc_out, size_t *count_out, char *msg,
                            size_t msg_len)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(fds[0]);
        if (drop_dac_caps() != 0)
            _exit(2);
        td_scene_list l;
        td_error err = { 0, "" };
        int rc = td_scan_archive(root, &l, &err);
        char line[TD_ERROR_MSG_MAX + 64];
        int n = snprintf(line, sizeof line, "%d %zu %s", rc, rc == TD_OK ? l.count : 0, err.msg);
        if (rc == TD_OK)
            td_scene_list_release(&l);
        if (write(fds[1], line, (size_t)n) != n)
            _exit(3);
        _exit(0);
    }
    close(fds[1]);
    char line[TD_ERROR_MSG_MAX + 64] = "";
    ssize_t got = read(fds[0], line, sizeof line - 1);
    close(fds[0]);
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    if (got <= 0)
        return -1;
    line[got] = '\0';
    int off = 0;
    if (sscanf(line, "%d %zu %n", want_rc_out, count_out, &off) != 2)
        return -1;
    snprintf(msg, msg_len, "%s", line + off);
    return 0;
}

static void test_scan_unreadable(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    put_file(root, "ok/a.mp4", "a");
    put_file(root, "locked/b.mp4", "b");
    put_file(root, "z.mp4", "z");
    char *locked = pathf("%s/locked", root);
    assert_int_equal(chmod(locked, 0000), 0);

    int rc = 0;
    size_t count = 0;
    char msg[TD_ERROR_MSG_MAX];
    /* An unreadable subdirectory is skipped; the rest is found. */
    assert_int_equal(scan_without_dac(root, &rc, &count, msg, sizeof msg), 0);
    assert_int_equal(rc, TD_OK);
    assert_int_equal(count, 2);

    /* An unreadable root fails, naming it. */
    assert_int_equal(scan_without_dac(locked, &rc, &count, msg, sizeof msg), 0);
    assert_int_equal(rc, TD_EINPUT);
    assert_non_null(strstr(msg, locked));
    assert_non_null(strstr(msg, "Permission denied"));

    free(locked);
    rm_tree(root);
    free(root);
}

/* Out of descriptors deep in the tree: the scan fails rather than return
 * a list silently missing the deep scenes. */
static void test_scan_out_of_fds(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    put_file(root, "a.mp4", "x");
    put_file(root, "d/d/d/d/d/d/d/d/d/d/d/d/deep.mp4", "x");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        for (int fd = 3; fd < 64; fd++)
            close(fd);
        struct rlimit rl = { 8, 8 };
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(2);
        td_scene_list l;
        td_error err;
        int rc = td_scan_archive(root, &l, &err);
        _exit(rc == TD_ENOMEM && strstr(err.msg, "Too many open files") ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    rm_tree(root);
    free(root);
}

static void test_scan_depth_limit(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    /* 64 levels below the root are fine. */
    char rel[4096] = "";
    for (int i = 0; i < 64; i++)
        strcat(rel, i ? "/d" : "d");
    char *file = pathf("%s/deep.mp4", rel);
    put_file(root, file, "x");
    td_scene_list l;
    td_error err;
    assert_int_equal(td_scan_archive(root, &l, &err), TD_OK);
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].rel, file);
    td_scene_list_release(&l);

    /* The 65th fails with an error that says so. */
    strcat(rel, "/e");
    put_dir(root, rel);
    assert_int_equal(td_scan_archive(root, &l, &err), TD_EINPUT);
    assert_non_null(strstr(err.msg, "deeper than 64"));
    assert_non_null(strstr(err.msg, "/e"));
    assert_null(l.items);
    assert_int_equal(l.count, 0);

    free(file);
    rm_tree(root);
    free(root);
}

static void test_scene_from_path(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    put_file(root, "tape1/clip.x.mp4", "12345");
    char *path = pathf("%s/tape1/clip.x.mp4", root);
    td_scene s;
    td_error err;

    assert_int_equal(td_scene_from_path(root, path, &s, &err), TD_OK);
    assert_string_equal(s.path, path);
    assert_string_equal(s.rel, "tape1/clip.x.mp4");
    char *dir = pathf("%s/tape1", root);
    assert_string_equal(s.dir, dir);
    assert_string_equal(s.name, "clip.x.mp4");
    assert_string_equal(s.stem, "clip.x");
    assert_int_equal(s.size, 5);
    assert_true(s.mtime_ns > 0);
    assert_int_equal(s.clash_with, -1);
    td_scene_release(&s);
    assert_null(s.path);

    char *root_slash = pathf("%s/", root);
    assert_int_equal(td_scene_from_path(root_slash, path, &s, &err), TD_OK);
    assert_string_equal(s.rel, "tape1/clip.x.mp4");
    td_scene_release(&s);

    assert_int_equal(td_scene_from_path(NULL, path, &s, &err), TD_OK);
    assert_string_equal(s.rel, path);
    td_scene_release(&s);

    /* Agrees with the scan. */
    td_scene_list l;
    assert_int_equal(td_scan_archive(root, &l, &err), TD_OK);
    assert_int_equal(l.count, 1);
    assert_int_equal(td_scene_from_path(root, l.items[0].path, &s, &err), TD_OK);
    assert_string_equal(s.rel, l.items[0].rel);
    assert_string_equal(s.dir, l.items[0].dir);
    assert_int_equal(s.mtime_ns, l.items[0].mtime_ns);
    td_scene_release(&s);
    td_scene_list_release(&l);

    assert_int_equal(td_scene_from_path(root, dir, &s, &err), TD_EINPUT);
    assert_non_null(strstr(err.msg, "not a regular file"));
    char *missing = pathf("%s/nope.mp4", root);
    assert_int_equal(td_scene_from_path(root, missing, &s, &err), TD_EINPUT);
    assert_non_null(strstr(err.msg, missing));
    assert_int_equal(td_scene_from_path("/elsewhere", path, &s, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "not inside"));

    free(missing);
    free(root_slash);
    free(dir);
    free(path);
    rm_tree(root);
    free(root);
}

/* Scenes are sorted the same however the files were created. */
static void test_scan_many_sorted(void **state)
{
    (void)state;
    char *root = make_tmpdir();
    for (int i = 300; i >= 1; i--) {
        char name[64];
        snprintf(name, sizeof name, "t%d/scene_%d.mp4", i % 3, i);
        put_file(root, name, "x");
    }
    td_scene_list l;
    td_error err;
    assert_int_equal(td_scan_archive(root, &l, &err), TD_OK);
    assert_int_equal(l.count, 300);
    size_t k = 0;
    for (int t = 0; t < 3; t++) {
        for (int i = 1; i <= 300; i++) {
            if (i % 3 != t)
                continue;
            char want[64];
            snprintf(want, sizeof want, "t%d/scene_%d.mp4", t, i);
            assert_string_equal(l.items[k].rel, want);
            k++;
        }
    }
    td_scene_list_release(&l);
    rm_tree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_natural_basic),
        cmocka_unit_test(test_natural_total_order),
        cmocka_unit_test(test_media_and_output_names),
        cmocka_unit_test(test_scan_filters),
        cmocka_unit_test(test_scan_nested_order_and_fields),
        cmocka_unit_test(test_scan_symlinks),
        cmocka_unit_test(test_scan_dir_link_only_path),
        cmocka_unit_test(test_scan_odd_names),
        cmocka_unit_test(test_scan_clashes),
        cmocka_unit_test(test_scan_bad_roots),
        cmocka_unit_test(test_scan_unreadable),
        cmocka_unit_test(test_scan_out_of_fds),
        cmocka_unit_test(test_scan_depth_limit),
        cmocka_unit_test(test_scene_from_path),
        cmocka_unit_test(test_scan_many_sorted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
