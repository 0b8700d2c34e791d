/* test_options.c: `tapedeck run` argument parsing: defaults, ranges, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "run/options.h"
#include "util/log.h"
#include "whisper/backend.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])) - 1)

static void test_defaults(void **state)
{
    (void)state;
    char *argv[] = {"run", "/arch", NULL};
    td_run_opts o;
    td_error err = {0};
    assert_int_equal(td_run_opts_parse(ARGC(argv), argv, &o, &err), TD_OK);
    assert_string_equal(o.archive, "/arch");
    assert_string_equal(o.task, "subtitles");
    assert_int_equal(o.limit, -1);
    assert_int_equal(o.retries, 2);
    assert_string_equal(o.devices, "auto");
    assert_string_equal(o.engine, "auto");
    assert_string_equal(o.formats, "srt");
    assert_true(o.stall_timeout == 300.0);
    assert_int_equal(o.dry_run, 0);
    assert_int_equal(o.force, 0);
    assert_int_equal(o.verbosity, TD_LOG_INFO);
    assert_int_equal(o.progress, 1);
    assert_int_equal(o.beam_size, 0);
    assert_int_equal(o.compute, 0); /* TD_WCOMPUTE_AUTO */
    assert_int_equal(TD_WCOMPUTE_AUTO, 0);
}

static void test_all_options(void **state)
{
    (void)state;
    char *argv[] = {"run", "--limit", "5", "--dry-run", "--force", "--devices", "0,1", "--workers", "3",
                    "--engine", "sphinx", "--language", "en", "--formats", "srt,vtt", "--retries", "0",
                    "--stall-timeout", "30", "--threads", "4", "--model", "m", "--task", "subtitles",
                    "-vv", "--no-progress", "--beam-size", "3", "--compute", "int8", "arch", NULL};
    td_run_opts o;
    td_error err = {0};
    assert_int_equal(td_run_opts_parse(ARGC(argv), argv, &o, &err), TD_OK);
    assert_int_equal(o.limit, 5);
    assert_int_equal(o.dry_run, 1);
    assert_int_equal(o.force, 1);
    assert_string_equal(o.devices, "0,1");
    assert_int_equal(o.workers, 3);
    assert_string_equal(o.engine, "sphinx");
    assert_string_equal(o.language, "en");
    assert_string_equal(o.formats, "srt,vtt");
    assert_int_equal(o.retries, 0);
    assert_true(o.stall_timeout == 30.0);
    assert_int_equal(o.threads, 4);
    assert_string_equal(o.model, "m");
    assert_int_equal(o.verbosity, TD_LOG_DEBUG);
    assert_int_equal(o.progress, 0);
    assert_int_equal(o.beam_size, 3);
    assert_int_equal(o.compute, TD_WCOMPUTE_INT8);
    assert_string_equal(o.archive, "arch");
}

static void test_compute(void **state)
{
    (void)state;
    static const struct {
        const char *arg;
        int want;
    } cases[] = {
        {"auto", TD_WCOMPUTE_AUTO},
        {"f32", TD_WCOMPUTE_F32},
        {"int8", TD_WCOMPUTE_INT8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *argv[] = {"run", "--compute", (char *)cases[i].arg, "arch", NULL};
        td_run_opts o;
        td_error err = {0};
        assert_int_equal(td_run_opts_parse(ARGC(argv), argv, &o, &err), TD_OK);
        assert_int_equal(o.compute, cases[i].want);
    }
    char *eq[] = {"run", "arch", "--compute=f32", NULL};
    td_run_opts o;
    td_error err = {0};
    assert_int_equal(td_run_opts_parse(ARGC(eq), eq, &o, &err), TD_OK);
    assert_int_equal(o.compute, TD_WCOMPUTE_F32);
}

static void test_options_after_archive_and_quiet(void **state)
{
    (void)state;
    char *argv[] = {"run", "arch", "-q", "--limit=0", NULL};
    td_run_opts o;
    td_error err = {0};
    assert_int_equal(td_run_opts_parse(ARGC(argv), argv, &o, &err), TD_OK);
    assert_string_equal(o.archive, "arch");
    assert_int_equal(o.limit, 0);
    assert_int_equal(o.verbosity, TD_LOG_WARN);
    assert_int_equal(o.progress, 0); /* -q: no bar either */
}

static void expect_error(char **argv, int argc, const char *needle)
{
    td_run_opts o;
    td_error err = {0};
    assert_int_equal(td_run_opts_parse(argc, argv, &o, &err), TD_EINVAL);
    if (!strstr(err.msg, needle))
        fail_msg("message '%s' lacks '%s'", err.msg, needle);
}

static void test_errors_name_the_problem(void **state)
{
    (void)state;
    char *a1[] = {"run", "--limit", "-1", "arch", NULL};
    expect_error(a1, ARGC(a1), "'-1'");
    char *a2[] = {"run", "--limit", "12x", "arch", NULL};
    expect_error(a2, ARGC(a2), "'12x'");
    char *a3[] = {"run", "--workers", "0", "arch", NULL};
    expect_error(a3, ARGC(a3), "--workers");
    char *a4[] = {"run", "--workers", "65", "arch", NULL};
    expect_error(a4, ARGC(a4), "--workers");
    char *a5[] = {"run", "--retries", "101", "arch", NULL};
    expect_error(a5, ARGC(a5), "--retries");
    char *a6[] = {"run", "--stall-timeout", "0", "arch", NULL};
    expect_error(a6, ARGC(a6), "--stall-timeout");
    char *a7[] = {"run", "--bogus", "arch", NULL};
    expect_error(a7, ARGC(a7), "--bogus");
    char *a8[] = {"run", NULL};
    expect_error(a8, ARGC(a8), "ARCHIVE");
    char *a9[] = {"run", "a", "b", NULL};
    expect_error(a9, ARGC(a9), "'b'");
    char *a10[] = {"run", "arch", "--limit", NULL};
    expect_error(a10, ARGC(a10), "needs a value");
    char *a11[] = {"run", "--limit", "99999999999999999999999", "arch", NULL};
    expect_error(a11, ARGC(a11), "--limit");
    char *a12[] = {"run", "--compute", "fp16", "arch", NULL};
    expect_error(a12, ARGC(a12), "--compute needs auto, f32 or int8, not 'fp16'");
    char *a13[] = {"run", "--compute", "", "arch", NULL};
    expect_error(a13, ARGC(a13), "not ''");
    char *a14[] = {"run", "--compute", "INT8", "arch", NULL}; /* names are lower case */
    expect_error(a14, ARGC(a14), "'INT8'");
    char *a15[] = {"run", "arch", "--compute", NULL};
    expect_error(a15, ARGC(a15), "needs a value");
}

/* --streams: scenes a worker decodes at once, 1..8; 0 (unset) = the default */
static void test_streams(void **state)
{
    (void)state;
    td_run_opts o;
    td_error err = {0};
    char *none[] = {"run", "arch", NULL};
    assert_int_equal(td_run_opts_parse(ARGC(none), none, &o, &err), TD_OK);
    assert_int_equal(o.streams, 0);
    char *three[] = {"run", "--streams", "3", "arch", NULL};
    assert_int_equal(td_run_opts_parse(ARGC(three), three, &o, &err), TD_OK);
    assert_int_equal(o.streams, 3);
    const char *bad[] = {"0", "9", "two", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[] = {"run", "--streams", (char *)bad[i], "arch", NULL};
        assert_int_equal(td_run_opts_parse(ARGC(argv), argv, &o, &err), TD_EINVAL);
        assert_non_null(strstr(err.msg, "--streams needs a number from 1 to 8"));
    }
}

static void test_help(void **state)
{
    (void)state;
    char *argv[] = {"run", "--help", NULL};
    td_run_opts o;
    td_error err = {0};
    assert_int_equal(td_run_opts_parse(ARGC(argv), argv, &o, &err), TD_OPTS_HELP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_options),
        cmocka_unit_test(test_compute),
        cmocka_unit_test(test_options_after_archive_and_quiet),
        cmocka_unit_test(test_errors_name_the_problem),
        cmocka_unit_test(test_streams),
        cmocka_unit_test(test_help),
    };
    return cmocka_run_group_tests_name("options", tests, NULL, NULL);
}
