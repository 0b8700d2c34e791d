/* task.c: the task table and task lists (see task.h); the subtitles
 * task's entry adapts task/subtitles.c. */
#include "task/task.h"

#include <stdio.h>
#include <string.h>

#include "out/formats.h"
#include "task/subtitles.h"

static int subtitles_check(const td_scene *scene, const td_task_config *cfg, enum td_marker_state *state,
                           char *why, size_t why_len, td_error *err)
{
    return td_subtitles_check(scene, cfg->formats, state, why, why_len, err);
}

static int subtitles_run(const td_scene *scene, const td_task_config *cfg, const td_task_env *env,
                         td_progress_fn progress, void *user, td_task_result *res, td_error *err)
{
    td_subtitle_opts o = {.formats = cfg->formats, .device = cfg->device};
    td_subtitle_result r;
    int rc = td_subtitles_run(scene, env->ops, env->eng, &o, progress, user, &r, err);
    if (rc == TD_OK) {
        res->audio_seconds = r.audio_seconds;
        res->n_cues = r.n_cues;
        res->n_unresolved = r.n_unresolved;
        snprintf(res->language, sizeof res->language, "%s", r.language);
    }
    return rc;
}

const td_task_ops td_task_subtitles = {
    .name = TD_TASK_SUBTITLES,
    .needs_engine = 1,
    .check = subtitles_check,
    .run = subtitles_run,
};

/* In dependency order: a list is sorted by position here. */
static const td_task_ops *const all_tasks[] = {&td_task_subtitles, &td_task_restore};
#define N_TASKS (sizeof all_tasks / sizeof all_tasks[0])

int td_task_list_parse(const char *spec, const td_task_ops **out, size_t *n, td_error *err)
{
    *n = 0;
    int want[N_TASKS] = {0};
    char copy[256];
    if (!spec || !*spec || strlen(spec) >= sizeof copy)
        return td_error_set(err, TD_EINVAL, "--task needs subtitles, restore or both (subtitles,restore)");
    snprintf(copy, sizeof copy, "%s", spec);
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        const char *name = strcmp(tok, "enhance") == 0 ? "restore" : tok;
        size_t i = 0;
        while (i < N_TASKS && strcmp(all_tasks[i]->name, name) != 0)
            i++;
        if (i == N_TASKS)
            return td_error_set(err, TD_EINVAL, "unknown task '%s' (available: subtitles, restore or enhance)",
                                tok);
        want[i] = 1;
    }
    for (size_t i = 0; i < N_TASKS; i++)
        if (want[i])
            out[(*n)++] = all_tasks[i];
    if (*n == 0)
        return td_error_set(err, TD_EINVAL, "--task needs subtitles, restore or both (subtitles,restore)");
    return TD_OK;
}

int td_task_list_needs_engine(const td_task_ops *const *tasks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tasks[i]->needs_engine)
            return 1;
    return 0;
}

int td_restore_args_parse(const td_restore_args *a, td_restore_settings *s, td_error *err)
{
    td_restore_settings_default(s);
    if (a->preset && td_restore_parse_preset(a->preset, &s->preset))
        return td_error_set(err, TD_EINVAL, "--restore-preset needs auto, vhs, hi8 or dv, not '%s'", a->preset);
    if (a->quality && td_restore_parse_quality(a->quality, &s->quality))
        return td_error_set(err, TD_EINVAL, "--restore-quality needs fast or high, not '%s'", a->quality);
    if (a->format && td_restore_parse_format(a->format, &s->format))
        return td_error_set(err, TD_EINVAL, "--restore-format needs view, archive or edit, not '%s'", a->format);
    if (a->size && td_restore_parse_size(a->size, &s->size))
        return td_error_set(err, TD_EINVAL, "--restore-size needs sd or hd, not '%s'", a->size);
    if (a->codec && td_restore_parse_codec(a->codec, &s->codec))
        return td_error_set(err, TD_EINVAL, "--restore-codec needs h264 or hevc, not '%s'", a->codec);
    if (a->opencl && td_restore_parse_opencl(a->opencl, &s->opencl))
        return td_error_set(err, TD_EINVAL, "--restore-opencl needs auto, on or off, not '%s'", a->opencl);
    if (a->cuda && td_restore_parse_opencl(a->cuda, &s->cuda))
        return td_error_set(err, TD_EINVAL, "--restore-cuda needs auto, on or off, not '%s'", a->cuda);
    if (a->vaapi && td_restore_parse_opencl(a->vaapi, &s->vaapi))
        return td_error_set(err, TD_EINVAL, "--restore-vaapi needs auto, on or off, not '%s'", a->vaapi);
    if (a->hwenc && td_restore_parse_opencl(a->hwenc, &s->hwenc))
        return td_error_set(err, TD_EINVAL, "--restore-hwenc needs auto, on or off, not '%s'", a->hwenc);
    return TD_OK;
}

int td_task_config_build(const td_task_ops *const *tasks, size_t n, const char *formats,
                         const td_restore_args *ra, const char *device, int threads,
                         td_task_config *cfg, td_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    int rc = td_formats_parse(formats ? formats : "srt", &cfg->formats, err);
    if (!rc)
        rc = td_restore_args_parse(ra, &cfg->restore, err);
    if (rc)
        return rc;
    int subs = 0, restore = 0;
    for (size_t i = 0; i < n; i++) {
        subs |= tasks[i] == &td_task_subtitles;
        restore |= tasks[i] == &td_task_restore;
    }
    cfg->restore.subtitles = subs && restore;
    cfg->device = device;
    cfg->threads = threads;
    return TD_OK;
}
