/* test_models.c: the Whisper model search path, listing and resolution. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "whisper/models.h"

static void touch_model(const char *dir, const char *file, size_t size)
{
    char *p = pathf("%s/%s", dir, file);
    char *data = calloc(1, size + 1);
    assert_non_null(data);
    write_bytes(p, data, size);
    free(data);
    free(p);
}

static void test_search_path_defaults(void **state)
{
    (void)state;
    unsetenv("TAPEDECK_MODELS_DIR");
    setenv("HOME", "/home/someone", 1);
    unsetenv("XDG_DATA_HOME");
    td_wmodels_path p;
    td_wmodels_search_path("/opt/m", &p);
    assert_int_equal(p.n, 4);
    assert_string_equal(p.dirs[0], "/opt/m");
    assert_string_equal(p.dirs[1], "/home/someone/.local/share/tapedeck/models");
    assert_string_equal(p.dirs[2], "/usr/local/share/tapedeck/models");
    assert_string_equal(p.dirs[3], "/usr/share/tapedeck/models");

    setenv("XDG_DATA_HOME", "/xdg", 1);
    td_wmodels_search_path(NULL, &p);
    assert_int_equal(p.n, 3);
    assert_string_equal(p.dirs[0], "/xdg/tapedeck/models");
    /* a relative XDG_DATA_HOME is invalid by the spec and ignored */
    setenv("XDG_DATA_HOME", "rel", 1);
    td_wmodels_search_path(NULL, &p);
    assert_string_equal(p.dirs[0], "/home/someone/.local/share/tapedeck/models");
    unsetenv("XDG_DATA_HOME");
}

static void test_search_path_env_replaces(void **state)
{
    (void)state;
    setenv("TAPEDECK_MODELS_DIR", "/a::/b:/a:", 1);
    td_wmodels_path p;
    td_wmodels_search_path("/first", &p);
    assert_int_equal(p.n, 3); /* empty entries and duplicates dropped */
    assert_string_equal(p.dirs[0], "/first");
    assert_string_equal(p.dirs[1], "/a");
    assert_string_equal(p.dirs[2], "/b");
    unsetenv("TAPEDECK_MODELS_DIR");
}

static void test_name_of(void **state)
{
    (void)state;
    char n[64];
    td_wmodels_name_of("/x/ggml-base.en.bin", n, sizeof n);
    assert_string_equal(n, "base.en");
    td_wmodels_name_of("ggml-large-v3-turbo.bin", n, sizeof n);
    assert_string_equal(n, "large-v3-turbo");
    td_wmodels_name_of("/x/my-model.bin", n, sizeof n);
    assert_string_equal(n, "my-model");
    td_wmodels_name_of("/x/odd", n, sizeof n);
    assert_string_equal(n, "odd");
    td_wmodels_name_of("/x/ggml-small.bin", n, 4);
    assert_string_equal(n, "sma");
}

typedef struct dirs {
    char *a, *b;
} dirs;

static int setup_dirs(void **state)
{
    dirs *d = calloc(1, sizeof *d);
    d->a = make_tmpdir_named("td-models-a");
    d->b = make_tmpdir_named("td-models-b");
    setenv("TAPEDECK_MODELS_DIR", d->b, 1);
    *state = d;
    return 0;
}

static int teardown_dirs(void **state)
{
    dirs *d = *state;
    rm_tree(d->a);
    rm_tree(d->b);
    free(d->a);
    free(d->b);
    free(d);
    unsetenv("TAPEDECK_MODELS_DIR");
    return 0;
}

static void test_list(void **state)
{
    dirs *d = *state;
    touch_model(d->a, "ggml-small.bin", 30);
    touch_model(d->a, "ggml-base.en.bin", 20);
    touch_model(d->a, "notes.txt", 1);
    touch_model(d->a, "ggml-.bin", 1);       /* no name */
    touch_model(d->b, "ggml-small.bin", 31); /* shadowed by a's */
    touch_model(d->b, "ggml-custom.bin", 5);
    char *sub = pathf("%s/ggml-dir.bin", d->a);
    assert_int_equal(mkdir(sub, 0700), 0);
    free(sub);

    td_wmodels_path p;
    td_wmodels_search_path(d->a, &p);
    assert_int_equal(p.n, 2);
    td_wmodel_entry *v;
    size_t n;
    td_error err = {0};
    assert_int_equal(td_wmodels_list(&p, &v, &n, &err), TD_OK);
    assert_int_equal(n, 4);
    assert_string_equal(v[0].name, "base.en");
    assert_int_equal(v[0].size, 20);
    assert_string_equal(v[1].name, "small");
    assert_false(v[1].shadowed);
    assert_string_equal(v[2].name, "custom");
    assert_int_equal(v[2].rank, 0);
    assert_string_equal(v[3].name, "small");
    assert_true(v[3].shadowed);
    free(v);
}

static void resolve_ok(const td_wmodels_path *p, const char *model, const char *lang,
                       const char *want_suffix)
{
    char path[PATH_MAX];
    td_error err = {0};
    int rc = td_wmodels_resolve(p, model, lang, path, sizeof path, &err);
    if (rc != TD_OK)
        fail_msg("resolve(%s, %s): %s", model ? model : "NULL", lang ? lang : "NULL", err.msg);
    size_t lp = strlen(path), ls = strlen(want_suffix);
    if (lp < ls || strcmp(path + lp - ls, want_suffix) != 0)
        fail_msg("resolve(%s, %s) gave %s, want ...%s", model ? model : "NULL",
                 lang ? lang : "NULL", path, want_suffix);
}

static void test_resolve(void **state)
{
    dirs *d = *state;
    td_wmodels_path p;
    td_wmodels_search_path(d->a, &p);
    char path[PATH_MAX];
    td_error err = {0};

    /* nothing installed */
    assert_int_equal(td_wmodels_resolve(&p, NULL, NULL, path, sizeof path, &err), TD_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "no Whisper model installed"));
    assert_non_null(strstr(err.msg, d->a));

    /* an English-only model alone is still the default */
    touch_model(d->b, "ggml-tiny.en.bin", 10);
    resolve_ok(&p, NULL, NULL, "/ggml-tiny.en.bin");
    touch_model(d->b, "ggml-custom.bin", 10);
    resolve_ok(&p, NULL, NULL, "/ggml-tiny.en.bin"); /* known beats unknown */
    touch_model(d->b, "ggml-tiny.bin", 10);
    resolve_ok(&p, NULL, NULL, "/ggml-tiny.bin");      /* multilingual for auto */
    resolve_ok(&p, NULL, "de", "/ggml-tiny.bin");
    resolve_ok(&p, NULL, "en", "/ggml-tiny.en.bin");   /* .en for English */
    touch_model(d->b, "ggml-base.bin", 10);
    resolve_ok(&p, NULL, "en", "/ggml-base.bin");      /* bigger wins over .en */
    touch_model(d->a, "ggml-large-v2.bin", 10);
    touch_model(d->a, "ggml-large-v3.bin", 10);
    touch_model(d->a, "ggml-large-v3-turbo.bin", 10);
    resolve_ok(&p, NULL, NULL, "/ggml-large-v3.bin");

    /* by name: first folder that has it; by path */
    touch_model(d->a, "ggml-tiny.bin", 11);
    char *want = pathf("%s/ggml-tiny.bin", d->a);
    assert_int_equal(td_wmodels_resolve(&p, "tiny", NULL, path, sizeof path, &err), TD_OK);
    assert_string_equal(path, want);
    free(want);
    want = pathf("%s/ggml-custom.bin", d->b);
    assert_int_equal(td_wmodels_resolve(&p, want, NULL, path, sizeof path, &err), TD_OK);
    assert_string_equal(path, want);
    free(want);

    assert_int_equal(td_wmodels_resolve(&p, "medium", NULL, path, sizeof path, &err),
                     TD_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "ggml-medium.bin"));
    assert_int_equal(td_wmodels_resolve(&p, "/no/such/model.bin", NULL, path, sizeof path, &err),
                     TD_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "/no/such/model.bin"));
    assert_int_equal(td_wmodels_resolve(&p, d->a, NULL, path, sizeof path, &err), TD_EUNAVAILABLE);
    assert_non_null(strstr(err.msg, "not a file"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_search_path_defaults),
        cmocka_unit_test(test_search_path_env_replaces),
        cmocka_unit_test(test_name_of),
        cmocka_unit_test_setup_teardown(test_list, setup_dirs, teardown_dirs),
        cmocka_unit_test_setup_teardown(test_resolve, setup_dirs, teardown_dirs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
