/*
 * golden.c: the golden-fixture reading shared by the tests that compare
 * against tests/fixtures/whisper (golden.h says what each part does).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "golden.h"
#include "testutil.h"
#include "util/error.h"
#include "util/hash.h"
#include "whisper/ct2.h"
#include "whisper/mkmodel.h"

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

char *golden_fixtures_dir(void)
{
    const char *env = getenv("TAPEDECK_FIXTURES");
    if (env && *env)
        return pathf("%s/whisper", env);
    if (is_dir("tests/fixtures/whisper"))
        return realpath("tests/fixtures/whisper", NULL);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = 0;
        char *p = pathf("%s/../../tests/fixtures/whisper", exe);
        char *r = realpath(p, NULL);
        free(p);
        if (r && is_dir(r))
            return r;
        free(r);
    }
    return NULL;
}

void *golden_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    void *buf = NULL;
    long sz;
    if (fseek(f, 0, SEEK_END) != 0 || (sz = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto out_close;
    buf = malloc(sz > 0 ? (size_t)sz : 1);
    if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
    }
    *len = (size_t)sz;
out_close:
    fclose(f);
    return buf;
}

float *golden_read_f32(const char *dir, const char *name, size_t count)
{
    char *p = pathf("%s/%s", dir, name);
    size_t len = 0;
    float *v = golden_read_file(p, &len);
    if (!v)
        fail_msg("%s: cannot read", p);
    if (len != count * sizeof(float))
        fail_msg("%s: %zu bytes, expected %zu", p, len, count * sizeof(float));
    free(p);
    return v;
}

json_t *golden_load_json(const char *dir, const char *file, int absent_ok)
{
    char *p = pathf("%s/%s", dir, file);
    if (absent_ok && access(p, F_OK) != 0) {
        free(p);
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_load_file(p, 0, &jerr);
    if (!j)
        fail_msg("%s: %s (line %d)", p, jerr.text, jerr.line);
    free(p);
    return j;
}

json_t *gj_get(json_t *o, const char *path)
{
    char buf[128];
    if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf)
        fail_msg("gj_get: path too long: %s", path);
    json_t *cur = o;
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k; k = strtok_r(NULL, ".", &save)) {
        cur = json_object_get(cur, k);
        if (!cur)
            fail_msg("meta: no '%s'", path);
    }
    return cur;
}

long long gj_int(json_t *o, const char *path)
{
    json_t *v = gj_get(o, path);
    if (!json_is_integer(v))
        fail_msg("meta: '%s' is not an integer", path);
    return json_integer_value(v);
}

double gj_num(json_t *o, const char *path)
{
    json_t *v = gj_get(o, path);
    if (!json_is_number(v))
        fail_msg("meta: '%s' is not a number", path);
    return json_number_value(v);
}

const char *gj_str(json_t *o, const char *path)
{
    json_t *v = gj_get(o, path);
    if (!json_is_string(v))
        fail_msg("meta: '%s' is not a string", path);
    return json_string_value(v);
}

char *golden_weights_dir(const char *name)
{
    const char *cache = getenv("TAPEDECK_WEIGHTS_CACHE");
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    char *dir;
    if (cache && *cache)
        dir = pathf("%s/ct2/%s", cache, name);
    else if (xdg && *xdg)
        dir = pathf("%s/tapedeck/weights/ct2/%s", xdg, name);
    else if (home && *home)
        dir = pathf("%s/.cache/tapedeck/weights/ct2/%s", home, name);
    else
        return NULL;
    char *bin = pathf("%s/model.bin", dir), *done = pathf("%s/.complete", dir);
    int ok = access(bin, R_OK) == 0 && access(done, F_OK) == 0;
    free(bin);
    free(done);
    if (ok)
        return dir;
    free(dir);
    return NULL;
}

char *golden_shared_file(const char *fix_dir, const char *name)
{
    char *h = pathf("%s/../../../../shared/whisper/%s", fix_dir, name);
    if (access(h, R_OK) == 0)
        return h;
    free(h);
    return NULL;
}

/* The real set: the cached tiny.en imported as F16 (the importer is
 * deterministic, so it must hash to what the reference read). */
static int import_real(const char *path, char **src)
{
    char *dir = golden_weights_dir("tiny.en");
    if (!dir)
        return 0;
    td_error err = {0};
    td_ct2_model *cm = NULL;
    if (td_ct2_open(dir, &cm, &err) != TD_OK)
        fail_msg("%s: td_ct2_open: %s", dir, err.msg);
    if (td_ct2_write_ggml(cm, path, TD_WT_F16, &err) != TD_OK)
        fail_msg("%s: td_ct2_write_ggml: %s", dir, err.msg);
    td_ct2_close(cm);
    *src = dir;
    return 1;
}

/* A random set: regenerated from the recipe the meta records. */
static void regenerate(json_t *meta, const char *set_name, const char *path)
{
    td_wmk_spec spec;
    memset(&spec, 0, sizeof spec);
    json_t *hp = gj_get(meta, "mkmodel.hparams");
    spec.hp.n_vocab = (int32_t)gj_int(hp, "n_vocab");
    spec.hp.n_audio_ctx = (int32_t)gj_int(hp, "n_audio_ctx");
    spec.hp.n_audio_state = (int32_t)gj_int(hp, "n_audio_state");
    spec.hp.n_audio_head = (int32_t)gj_int(hp, "n_audio_head");
    spec.hp.n_audio_layer = (int32_t)gj_int(hp, "n_audio_layer");
    spec.hp.n_text_ctx = (int32_t)gj_int(hp, "n_text_ctx");
    spec.hp.n_text_state = (int32_t)gj_int(hp, "n_text_state");
    spec.hp.n_text_head = (int32_t)gj_int(hp, "n_text_head");
    spec.hp.n_text_layer = (int32_t)gj_int(hp, "n_text_layer");
    spec.hp.n_mels = (int32_t)gj_int(hp, "n_mels");
    spec.hp.ftype = (int32_t)gj_int(hp, "ftype");
    const char *wt = gj_str(meta, "mkmodel.wtype");
    if (strcmp(wt, "f16") != 0 && strcmp(wt, "f32") != 0)
        fail_msg("%s: mkmodel.wtype '%s' is neither f16 nor f32", set_name, wt);
    spec.wtype = strcmp(wt, "f16") == 0 ? TD_WT_F16 : TD_WT_F32;
    spec.seed = (uint64_t)gj_int(meta, "mkmodel.seed");
    spec.header_path = NULL;
    if (strcmp(gj_str(meta, "mkmodel.vocab"), "synthetic") != 0)
        fail_msg("%s: mkmodel.vocab is not 'synthetic'", set_name);
    td_error err = {0};
    if (td_wmk_write(&spec, path, &err) != TD_OK)
        fail_msg("%s: td_wmk_write: %s", set_name, err.msg);
}

int golden_write_model(json_t *meta, const char *set_name, const char *path)
{
    char *src = NULL;
    if (json_object_get(meta, "real")) {
        if (!import_real(path, &src))
            return 0;
    } else {
        regenerate(meta, set_name, path);
    }
    td_error err = {0};
    char hex[TD_SHA256_HEX_LEN + 1];
    int64_t size = 0;
    if (td_sha256_file(path, hex, &size, &err) != TD_OK)
        fail_msg("%s: %s", path, err.msg);
    const char *want = gj_str(meta, "model_sha256");
    if (strcmp(hex, want) != 0) {
        if (!src)
            fail_msg("%s: regenerated model (tapedeck-mkmodel %s) hashes to %s, the fixtures "
                     "were made from %s: mkmodel's output changed; rerun "
                     "scripts/whisper-oracle-device.sh to remake them",
                     set_name, gj_str(meta, "mkmodel.argv"), hex, want);
        /* the weights or the importer: the source names model.bin's hash */
        char *bin = pathf("%s/model.bin", src);
        char bhex[TD_SHA256_HEX_LEN + 1];
        if (td_sha256_file(bin, bhex, NULL, &err) != TD_OK)
            fail_msg("%s: %s", bin, err.msg);
        int same_src = strstr(gj_str(meta, "real.source"), bhex) != NULL;
        fail_msg("%s: the imported model hashes to %s, the fixtures were made from %s: %s",
                 set_name, hex, want,
                 same_src ? "same model.bin, so the importer's output changed; rerun the "
                            "oracle (tests/fixtures/whisper/README.md)"
                          : "model.bin is not the one the fixtures were made from");
    }
    if (size != gj_int(meta, "model_bytes"))
        fail_msg("%s: the model is %lld bytes, the fixtures' %lld", set_name, (long long)size,
                 gj_int(meta, "model_bytes"));
    free(src);
    return 1;
}

void golden_acc(double *num, double *den, double *mx, double a, double ref)
{
    double d = a - ref;
    *num += d * d;
    *den += ref * ref;
    if (fabs(d) > *mx || d != d)
        *mx = d != d ? INFINITY : fabs(d);
}

golden_stats golden_finish(double num, double den, double mx)
{
    golden_stats s = {den > 0 ? sqrt(num / den) : sqrt(num), mx};
    return s;
}
