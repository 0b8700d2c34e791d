/* models.c: the Whisper model search path and name resolution (models.h). */
#include "whisper/models.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "util/atomic.h"

/* Preference among the released models: bigger is better. An English-only
 * model ranks just above the multilingual one of its size, which matters
 * only when the language is English (see resolve). */
static const struct {
    const char *name;
    int rank;
} known[] = {
    {"tiny", 10},       {"tiny.en", 11},       {"base", 20},     {"base.en", 21},
    {"small", 30},      {"small.en", 31},      {"medium", 40},   {"medium.en", 41},
    {"large-v1", 50},   {"large", 51},         {"large-v2", 52}, {"large-v3-turbo", 53},
    {"large-v3", 54},
};

/* Ranks are size class * 10 (+1 for English-only); see resolve. */
static int rank_of(const char *name)
{
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(known[i].name, name) == 0)
            return known[i].rank;
    return 0;
}

static int is_english_only(const char *name)
{
    size_t n = strlen(name);
    return n > 3 && strcmp(name + n - 3, ".en") == 0;
}

static void add_dir(td_wmodels_path *p, const char *dir)
{
    if (!dir || !*dir || p->n >= TD_WMODELS_MAX_DIRS)
        return;
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->dirs[i], dir) == 0)
            return;
    size_t len = strlen(dir);
    if (len >= PATH_MAX)
        return;
    memcpy(p->dirs[p->n++], dir, len + 1);
}

void td_wmodels_search_path(const char *models_dir, td_wmodels_path *p)
{
    char buf[PATH_MAX];
    p->n = 0;
    add_dir(p, models_dir);
    const char *env = getenv("TAPEDECK_MODELS_DIR");
    if (env) {
        const char *s = env;
        while (*s) {
            const char *colon = strchr(s, ':');
            size_t len = colon ? (size_t)(colon - s) : strlen(s);
            if (len > 0 && len < sizeof buf) {
                memcpy(buf, s, len);
                buf[len] = '\0';
                add_dir(p, buf);
            }
            s += len;
            if (*s == ':')
                s++;
        }
        return; /* the variable replaces the default folders */
    }
    const char *xdg = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    int n = -1;
    if (xdg && *xdg == '/')
        n = snprintf(buf, sizeof buf, "%s/tapedeck/models", xdg);
    else if (home && *home)
        n = snprintf(buf, sizeof buf, "%s/.local/share/tapedeck/models", home);
    if (n > 0 && (size_t)n < sizeof buf)
        add_dir(p, buf);
    add_dir(p, "/usr/local/share/tapedeck/models");
    add_dir(p, "/usr/share/tapedeck/models");
}

void td_wmodels_name_of(const char *path, char *name, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strlen(base);
    if (len > 5 && strncmp(base, "ggml-", 5) == 0) {
        base += 5;
        len -= 5;
    }
    if (len > 4 && strcmp(base + len - 4, ".bin") == 0)
        len -= 4;
    if (cap == 0)
        return;
    if (len >= cap)
        len = cap - 1;
    memcpy(name, base, len);
    name[len] = '\0';
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp(((const td_wmodel_entry *)a)->name, ((const td_wmodel_entry *)b)->name);
}

int td_wmodels_list(const td_wmodels_path *p, td_wmodel_entry **out, size_t *n, td_error *err)
{
    td_wmodel_entry *v = NULL;
    size_t count = 0, cap = 0;
    *out = NULL;
    *n = 0;
    for (int d = 0; d < p->n; d++) {
        DIR *dir = opendir(p->dirs[d]);
        if (!dir)
            continue; /* a folder that does not exist is normal */
        size_t first = count;
        struct dirent *de;
        while ((de = readdir(dir)) != NULL) {
            size_t len = strlen(de->d_name);
            if (len <= 9 || strncmp(de->d_name, "ggml-", 5) != 0 ||
                strcmp(de->d_name + len - 4, ".bin") != 0)
                continue;
            td_wmodel_entry e = {0};
            int k = snprintf(e.path, sizeof e.path, "%s/%s", p->dirs[d], de->d_name);
            if (k < 0 || (size_t)k >= sizeof e.path)
                continue;
            struct stat st;
            if (stat(e.path, &st) != 0 || !S_ISREG(st.st_mode))
                continue;
            e.size = (int64_t)st.st_size;
            td_wmodels_name_of(e.path, e.name, sizeof e.name);
            e.rank = rank_of(e.name);
            for (size_t i = 0; i < first; i++)
                if (strcmp(v[i].name, e.name) == 0)
                    e.shadowed = 1;
            if (count == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                td_wmodel_entry *nv = realloc(v, ncap * sizeof *nv);
                if (!nv) {
                    closedir(dir);
                    free(v);
                    return td_error_set(err, TD_ENOMEM, "out of memory listing models");
                }
                v = nv;
                cap = ncap;
            }
            v[count++] = e;
        }
        if (closedir(dir) != 0) {
            free(v);
            return td_error_errno(err, TD_EIO, errno, "%s", p->dirs[d]);
        }
        if (count > first)
            qsort(v + first, count - first, sizeof *v, cmp_entry_name);
    }
    *out = v;
    *n = count;
    return TD_OK;
}

static void searched_dirs(const td_wmodels_path *p, char *buf, size_t cap)
{
    size_t used = 0;
    snprintf(buf, cap, "%s", p->n ? "" : "no folder");
    for (int i = 0; i < p->n; i++) {
        int k = snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", p->dirs[i]);
        if (k < 0 || (size_t)k >= cap - used)
            return;
        used += (size_t)k;
    }
}

int td_wmodels_resolve(const td_wmodels_path *p, const char *model, const char *language,
                       char *path, size_t cap, td_error *err)
{
    struct stat st;
    char dirs[2048];
    if (model && *model) {
        /* a folder of the same name in the working directory is no model */
        if (strchr(model, '/') || (stat(model, &st) == 0 && S_ISREG(st.st_mode))) {
            if (stat(model, &st) != 0)
                return td_error_errno(err, TD_EUNAVAILABLE, errno, "whisper model %s", model);
            if (!S_ISREG(st.st_mode))
                return td_error_set(err, TD_EUNAVAILABLE, "whisper model %s: not a file", model);
            if (strlen(model) >= cap)
                return td_error_set(err, TD_EINVAL, "whisper model path too long");
            memcpy(path, model, strlen(model) + 1);
            return TD_OK;
        }
        /* "ggml-base.en.bin" names the same file as "base.en" */
        char name[NAME_MAX + 1];
        size_t mlen = strlen(model);
        if (mlen > 9 && mlen <= NAME_MAX && strncmp(model, "ggml-", 5) == 0 &&
            strcmp(model + mlen - 4, ".bin") == 0) {
            td_wmodels_name_of(model, name, sizeof name);
            model = name;
        }
        for (int i = 0; i < p->n; i++) {
            int k = snprintf(path, cap, "%s/ggml-%s.bin", p->dirs[i], model);
            if (k < 0 || (size_t)k >= cap)
                continue;
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
                return TD_OK;
        }
        searched_dirs(p, dirs, sizeof dirs);
        return td_error_set(err, TD_EUNAVAILABLE,
                            "no Whisper model '%s' (looked for ggml-%s.bin in %s)", model, model,
                            dirs);
    }

    td_wmodel_entry *v = NULL;
    size_t n = 0;
    int rc = td_wmodels_list(p, &v, &n, err);
    if (rc)
        return rc;
    int english = language && strcmp(language, "en") == 0;
    const td_wmodel_entry *best = NULL;
    int best_score = -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i].shadowed)
            continue;
        /* Bigger first; at the same size, an English-only model when the
         * language is English, a multilingual one otherwise (an
         * English-only model is still taken when it is all there is). */
        int en = is_english_only(v[i].name);
        int score = (v[i].rank / 10) * 100 + ((english ? en : !en) ? 20 : 10) + v[i].rank % 10;
        if (score > best_score) {
            best = &v[i];
            best_score = score;
        }
    }
    if (!best) {
        free(v);
        searched_dirs(p, dirs, sizeof dirs);
        return td_error_set(err, TD_EUNAVAILABLE, "no Whisper model installed (no ggml-*.bin in %s)",
                            dirs);
    }
    size_t len = strlen(best->path);
    if (len >= cap) {
        free(v);
        return td_error_set(err, TD_EINVAL, "whisper model path too long");
    }
    memcpy(path, best->path, len + 1);
    free(v);
    return TD_OK;
}

/* ------------------------------------------------------------------ */
/* Origin records                                                       */

#define ORIGIN_SUFFIX ".origin.json"
#define ORIGIN_MAX_BYTES 65536

static int origin_path(const char *model_path, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s" ORIGIN_SUFFIX, model_path);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

int td_wmodels_write_origin(const char *model_path, const td_wmodel_origin *o, td_error *err)
{
    char path[PATH_MAX];
    if (origin_path(model_path, path, sizeof path) != 0)
        return td_error_set(err, TD_EINVAL, "%s: path too long", model_path);
    char when[32] = "";
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm))
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *j = json_object();
    int bad = !j;
    const struct {
        const char *key, *val;
    } f[] = {{"source", o->source},   {"format", o->format},   {"sha256", o->sha256},
             {"note", o->note},       {"imported", when},      {"tapedeck", TAPEDECK_VERSION}};
    for (size_t i = 0; !bad && i < sizeof f / sizeof f[0]; i++)
        if (f[i].val && *f[i].val)
            bad = json_object_set_new(j, f[i].key, json_string(f[i].val)) != 0;
    int rc = bad ? td_error_set(err, TD_ENOMEM, "%s: cannot build the origin record", path)
                 : td_atomic_write_json(path, j, JSON_INDENT(2) | JSON_SORT_KEYS, err);
    json_decref(j);
    return rc;
}

void td_wmodels_describe_origin(const char *model_path, char *out, size_t cap)
{
    char path[PATH_MAX];
    out[0] = '\0';
    struct stat st;
    if (origin_path(model_path, path, sizeof path) != 0 || stat(path, &st) != 0)
        return;
    json_error_t je;
    json_t *j = st.st_size <= ORIGIN_MAX_BYTES ? json_load_file(path, 0, &je) : NULL;
    if (!j || !json_is_object(j)) {
        snprintf(out, cap, "origin record %s is damaged", path);
        json_decref(j);
        return;
    }
    const char *source = json_string_value(json_object_get(j, "source"));
    const char *format = json_string_value(json_object_get(j, "format"));
    const char *note = json_string_value(json_object_get(j, "note"));
    const char *when = json_string_value(json_object_get(j, "imported"));
    snprintf(out, cap, "imported from %s%s%s%s%s%s%s", format ? "a " : "", format ? format : "",
             format ? " model in " : "", source ? source : "an unknown folder", note ? " (" : "",
             note ? note : "", note ? ")" : "");
    if (when) {
        size_t n = strlen(out);
        snprintf(out + n, cap - n, " on %.10s", when);
    }
    json_decref(j);
}
