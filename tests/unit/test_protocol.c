/* test_protocol.c: hex fields and line framing of the supervisor/worker pipes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run/protocol.h"

static void test_hex_round_trip_any_bytes(void **state)
{
    (void)state;
    /* a path with a newline, a space, a quote and an invalid UTF-8 byte */
    const char raw[] = "dir/new\nline 'q' \xff\x01.mp4";
    td_buf b;
    td_buf_init(&b, 0);
    assert_int_equal(td_hex_encode(raw, strlen(raw), &b), 0);
    assert_null(memchr(b.data, '\n', b.len));
    assert_null(memchr(b.data, ' ', b.len));
    size_t len = 0;
    char *back = td_hex_decode(b.data, &len);
    assert_non_null(back);
    assert_int_equal(len, strlen(raw));
    assert_memory_equal(back, raw, len);
    free(back);
    td_buf_release(&b);
}

static void test_hex_empty_and_bad(void **state)
{
    (void)state;
    td_buf b;
    td_buf_init(&b, 0);
    assert_int_equal(td_hex_encode("", 0, &b), 0);
    assert_string_equal(b.data, "-"); /* an empty field still takes a place */
    size_t len = 99;
    char *e = td_hex_decode("-", &len);
    assert_non_null(e);
    assert_int_equal(len, 0);
    assert_string_equal(e, "");
    free(e);
    assert_null(td_hex_decode("abc", NULL));  /* odd length */
    assert_null(td_hex_decode("zz", NULL));   /* not hex */
    char *upper = td_hex_decode("4A4b", NULL); /* either case */
    assert_string_equal(upper, "JK");
    free(upper);
    td_buf_release(&b);
}

static int pipe_with(const char *data, size_t len)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], data, len), (ssize_t)len);
    close(fds[1]);
    return fds[0];
}

static void test_linebuf_splits_lines_across_reads(void **state)
{
    (void)state;
    const char *msg = "READY a b c\nBEAT 1 2.5\npartial";
    int fd = pipe_with(msg, strlen(msg));
    td_linebuf lb;
    td_linebuf_init(&lb, 0);
    assert_true(td_linebuf_fill(&lb, fd) > 0);
    char *line;
    assert_int_equal(td_linebuf_next(&lb, &line, 0), 1);
    assert_string_equal(line, "READY a b c");
    assert_int_equal(td_linebuf_next(&lb, &line, 0), 1);
    assert_string_equal(line, "BEAT 1 2.5");
    /* the incomplete tail waits for more, unless flushed at EOF */
    assert_int_equal(td_linebuf_next(&lb, &line, 0), 0);
    assert_int_equal(td_linebuf_fill(&lb, fd), 0); /* EOF */
    assert_int_equal(td_linebuf_next(&lb, &line, 1), 1);
    assert_string_equal(line, "partial");
    assert_int_equal(td_linebuf_next(&lb, &line, 1), 0);
    td_linebuf_release(&lb);
    close(fd);
}

static void test_linebuf_overlong_line_is_cut_and_resyncs(void **state)
{
    (void)state;
    size_t n = 3000;
    char *data = malloc(n + 16);
    memset(data, 'x', n);
    memcpy(data + n, "\nNEXT\n", 6);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], data, n + 6), (ssize_t)(n + 6));
    close(fds[1]);
    td_linebuf lb;
    td_linebuf_init(&lb, 1024);
    long got;
    while ((got = td_linebuf_fill(&lb, fds[0])) > 0)
        ;
    assert_true(lb.overflow);
    assert_true(lb.buf.len <= 1024);
    char *line;
    assert_int_equal(td_linebuf_next(&lb, &line, 1), 1);
    assert_true(strlen(line) < 1024);
    td_linebuf_release(&lb);
    close(fds[0]);
    free(data);
}

static void test_linebuf_nonblocking_empty_is_eagain(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe2(fds, O_NONBLOCK), 0);
    td_linebuf lb;
    td_linebuf_init(&lb, 0);
    assert_int_equal(td_linebuf_fill(&lb, fds[0]), -2);
    char *line;
    assert_int_equal(td_linebuf_next(&lb, &line, 0), 0);
    td_linebuf_release(&lb);
    close(fds[0]);
    close(fds[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_round_trip_any_bytes),
        cmocka_unit_test(test_hex_empty_and_bad),
        cmocka_unit_test(test_linebuf_splits_lines_across_reads),
        cmocka_unit_test(test_linebuf_overlong_line_is_cut_and_resyncs),
        cmocka_unit_test(test_linebuf_nonblocking_empty_is_eagain),
    };
    return cmocka_run_group_tests_name("protocol", tests, NULL, NULL);
}
