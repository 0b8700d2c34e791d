/* subtitles.c: one scene through audio, engine, cues, writers, marker. */
#include "task/subtitles.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive/marker.h"
#include "media/audio.h"
#include "out/cues.h"
#include "out/formats.h"
#include "util/atomic.h"
#include "util/buf.h"

static long read_audio(void *ctx, float *out, size_t max, td_error *err)
{
    return td_audio_read(ctx, out, max, err);
}

typedef struct output_spec {
    unsigned format;
    const char *suffix;
} output_spec;

static const output_spec output_specs[] = {
    {TD_FORMAT_SRT, ".srt"},
    {TD_FORMAT_VTT, ".vtt"},
    {TD_FORMAT_JSON, ".json"},
};
#define N_OUTPUTS (sizeof output_specs / sizeof output_specs[0])

size_t td_subtitles_output_names(const td_scene *scene, unsigned formats,
                                 char *names[TD_SUBTITLE_MAX_OUTPUTS])
{
    size_t n = 0;
    formats |= TD_FORMAT_SRT;
    for (size_t i = 0; i < N_OUTPUTS; i++) {
        if (!(formats & output_specs[i].format))
            continue;
        size_t len = strlen(scene->stem) + strlen(output_specs[i].suffix) + 1;
        names[n] = malloc(len);
        if (!names[n]) {
            while (n > 0)
                free(names[--n]);
            return 0;
        }
        snprintf(names[n], len, "%s%s", scene->stem, output_specs[i].suffix);
        n++;
    }
    return n;
}

int td_subtitles_check(const td_scene *scene, unsigned formats, enum td_marker_state *state,
                       char *why, size_t why_len, td_error *err)
{
    char *names[TD_SUBTITLE_MAX_OUTPUTS];
    size_t n = td_subtitles_output_names(scene, formats, names);
    if (n == 0)
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", scene->path);
    int rc = td_marker_check_outputs(scene, TD_TASK_SUBTITLES, (const char *const *)names, n, state,
                                     why, why_len, err);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    return rc;
}

static int render(unsigned format, const td_transcript *t, const td_cue_list *cues,
                  const td_json_meta *meta, td_buf *out, td_error *err)
{
    switch (format) {
    case TD_FORMAT_SRT: return td_render_srt(cues, out, err);
    case TD_FORMAT_VTT: return td_render_vtt(cues, out, err);
    default: return td_render_json(t, cues, meta, out, err);
    }
}

int td_subtitles_run(const td_scene *scene, const td_engine_ops *ops, td_engine *eng,
                     const td_subtitle_opts *opts, td_progress_fn progress, void *user,
                     td_subtitle_result *res, td_error *err)
{
    memset(res, 0, sizeof *res);
    td_audio_reader *audio = NULL;
    td_transcript transcript;
    td_cue_list cues = {0};
    td_buf doc;
    char *paths[N_OUTPUTS] = {0};
    const char *written[N_OUTPUTS];
    size_t n_written = 0;
    td_transcript_init(&transcript);
    td_buf_init(&doc, 0);

    int rc = td_audio_open(scene->path, &audio, err);
    if (rc)
        goto out;
    td_pcm_source src = {.read = read_audio, .ctx = audio, .duration = td_audio_duration(audio)};
    rc = ops->transcribe(eng, &src, &transcript, progress, user, err);
    if (rc)
        goto out;
    res->audio_seconds = (double)td_audio_position(audio) / TD_AUDIO_RATE;
    res->n_segments = transcript.n_segs;
    res->n_unresolved = transcript.n_issues;
    snprintf(res->language, sizeof res->language, "%s", transcript.language);
    td_audio_close(&audio);

    td_cue_rules rules = td_cue_rules_default();
    rc = td_cues_build(&transcript, &rules, &cues, err);
    if (rc)
        goto out;
    res->n_cues = cues.count;

    td_json_meta meta = {
        .scene = scene->rel,
        .engine = ops->name,
        .model = ops->model_name(eng),
        .duration = res->audio_seconds,
    };
    unsigned formats = opts->formats | TD_FORMAT_SRT;
    for (size_t i = 0; i < N_OUTPUTS; i++) {
        if (!(formats & output_specs[i].format))
            continue;
        paths[i] = td_output_path(scene, output_specs[i].suffix);
        if (!paths[i]) {
            rc = td_error_set(err, TD_ENOMEM, "out of memory");
            goto out;
        }
        td_buf_reset(&doc);
        rc = render(output_specs[i].format, &transcript, &cues, &meta, &doc, err);
        if (rc)
            goto out;
        rc = td_atomic_write(paths[i], doc.data ? doc.data : "", doc.len, err);
        if (rc)
            goto out;
        written[n_written++] = paths[i];
    }

    td_engine_settings es = {0};
    if (ops->settings)
        ops->settings(eng, &es);
    td_done_info info = {
        .task = TD_TASK_SUBTITLES,
        .backend = es.backend,
        .compute = es.compute,
        .decode = es.decode,
        .batch = es.batch,
        .engine = ops->name,
        .model = ops->model_name(eng),
        .device = opts->device ? opts->device : "cpu",
        .language = res->language[0] ? res->language : NULL,
        .audio_seconds = res->audio_seconds,
        .outputs = written,
        .n_outputs = n_written,
    };
    rc = td_marker_write_done(scene, &info, err);

out:
    if (rc && err && strstr(err->msg, scene->rel) == NULL && strstr(err->msg, scene->path) == NULL)
        td_error_prefix(err, "%s", scene->rel);
    td_audio_close(&audio);
    td_transcript_release(&transcript);
    td_cue_list_release(&cues);
    td_buf_release(&doc);
    for (size_t i = 0; i < N_OUTPUTS; i++)
        free(paths[i]);
    return rc;
}
