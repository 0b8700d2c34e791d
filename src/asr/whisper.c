/*
 * whisper.c: the "whisper" speech engine: tapedeck's own Whisper
 * implementation (src/whisper/) behind the engine table.
 *
 * A scene's audio streams through a voice-activity detector; only the
 * stretches with speech are kept, joined end to end into a batch, and
 * decoded as openai-whisper's transcribe does (decode.h). Segment and word
 * times are then mapped back from the joined speech to the scene's own
 * clock. Skipping silence, music and wind before the model sees them is
 * what keeps Whisper from inventing lines there ("Thank you for
 * watching"), and it saves the time those windows would take.
 *
 * A batch holds at most BATCH_MAX_SECONDS of speech, so memory stays
 * bounded whatever the scene's length; a longer scene is decoded batch by
 * batch, each cut at an utterance boundary.
 *
 * Two ways to decode a batch (enum td_wdecode_mode):
 *   sequential  openai-whisper's transcribe loop over the joined speech:
 *               one 30-s window at a time, seeking to the last timestamp,
 *               each window conditioned on the text before it;
 *   batched     the speech is cut into chunks (about 90 s, at least 4
 *               where there is that much speech, at most `batch`), only
 *               between utterances (at pauses); each chunk is walked as
 *               the sequential loop walks the batch, independently of the
 *               others, and the windows of all chunks go through the
 *               network together (decode.h, transcribe_chunks): the
 *               decoder's weights are read once per step for all of them.
 *
 * Progress never goes backwards: the seconds reported are a high-water
 * mark over what was read (silence) and what was decoded (speech, mapped
 * back to the scene's clock), so a batch decoded after the reader has
 * moved on does not make the heartbeat step back.
 */
#include "asr/engine.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "asr/vad.h"
#include "util/log.h"
#include "whisper/align.h"
#include "whisper/backend.h"
#include "whisper/batcher.h"
#include "whisper/decode.h"
#include "whisper/mel.h"
#include "whisper/model.h"
#include "whisper/models.h"

#define RATE TD_WMEL_RATE
#define READ_SAMPLES (RATE / 2)              /* pulled from the source per read */
#define BATCH_MAX_SECONDS 600                /* speech decoded per batch */
#define BATCH_MAX_SAMPLES ((size_t)BATCH_MAX_SECONDS * RATE)
#define PAD_SAMPLES ((size_t)TD_WMEL_WINDOW_SAMPLES) /* openai pads 30 s of silence */
#define DEFAULT_BEAM 5
#define DEFAULT_BEST_OF 5
#define CHUNK_SAMPLES ((size_t)TD_WMEL_WINDOW_SAMPLES) /* one window: 30 s */
/* Chunks a batch is cut into, at most (make_chunks makes no more than
 * the decoder's batch), and the largest batch (td_whisper_max_batch). */
#define MAX_CHUNKS ((int)(2 * (BATCH_MAX_SAMPLES / CHUNK_SAMPLES) + 2))
#define CPU_MAX_BATCH 16   /* windows: past this a CPU gains nothing (bench/RESULTS.md) */

/* A stretch of the batch: speech samples [at, at + n) came from source
 * samples [src, src + n). */
typedef struct span {
    size_t at;
    uint64_t src;
    size_t n;
} span;

/* The backend as the decoder sees it: every call goes through to the real
 * backend, then reports progress, so that the worker keeps sending its
 * heartbeat (and notices a stop request) inside a long window: a large
 * model on a slow CPU can spend minutes on one window's fallbacks. */
typedef struct beat_proxy {
    const td_wbackend_ops *real;
    td_wbackend *ctx;
    td_progress_fn fn;
    void *user;
    double *reported;             /* the engine's high-water mark (see report) */
} beat_proxy;

struct td_engine {
    beat_proxy proxy;
    td_wbackend_ops proxy_ops;    /* the table the decoder calls: proxy_* below */
    td_wmodel *model;             /* owned by the original, borrowed by clones */
    const td_wbackend_ops *bops;
    td_wbackend *backend;         /* the same */
    /* Several scenes at once (cfg->streams > 1, batched): the original owns
     * a batcher over the backend; it and each clone decode through their
     * own client of it (cops, cctx). Otherwise cops, cctx = bops, backend. */
    td_wbatcher *bt;
    int client;                   /* this instance's client of bt */
    int streams, n_clones;        /* the original: clients in all, clones made */
    int is_clone;
    const td_wbackend_ops *cops;
    td_wbackend *cctx;
    td_wdecode_opts opts;
    int threads;
    char model_name[NAME_MAX + 1];
    float *audio;                 /* the batch: speech, then PAD_SAMPLES of zeros */
    size_t batch_len;
    span *spans;
    size_t n_spans, cap_spans;
    float *mel;                   /* [n_mels][frames] for one batch */
    size_t *cuts;                 /* batched: utterance starts in the batch (samples) */
    size_t n_cuts, cap_cuts;
    int mode;                     /* enum td_wdecode_mode, resolved */
    int compute;                  /* enum td_wcompute, as asked */
    char pci[32], uuid[64];       /* the card the backend opened; "" = none */
    int batch;                    /* batched: windows decoded together */
    float *chunk;                 /* READ_SAMPLES from the source */
    int language;                 /* fixed, or -1: detect per scene */
    int scene_language;           /* detected for the scene being decoded */
    double reported;              /* progress reported so far in this scene (seconds) */
};

/* Report progress, never less than already reported. Nonzero: stop. */
static int report(double *reported, td_progress_fn fn, void *user, double seconds)
{
    if (seconds > *reported)
        *reported = seconds;
    return fn ? fn(user, *reported) : 0;
}

/* ---- configuration ------------------------------------------------------ */

static int resolve_model(const td_engine_config *cfg, char *path, size_t cap, td_error *err)
{
    td_wmodels_path sp;
    td_wmodels_search_path(cfg->models_dir, &sp);
    return td_wmodels_resolve(&sp, cfg->model, cfg->language, path, cap, err);
}

/* The language index asked for (-1: detect), checked against the model. */
static int language_of(const td_engine_config *cfg, const td_wmodel *m, const char *name,
                       int *out, td_error *err)
{
    const char *lang = cfg->language;
    *out = -1;
    if (m && cfg->translate && !m->multilingual)
        return td_error_set(err, TD_EINVAL, "whisper model %s is English-only: it cannot translate",
                            name);
    if (!lang || !*lang || strcmp(lang, "auto") == 0) {
        if (!m || !m->multilingual)
            *out = td_wlang_index("en");
        return TD_OK;
    }
    int idx = td_wlang_index(lang);
    if (idx < 0)
        return td_error_set(err, TD_EINVAL, "whisper does not know the language '%s'", lang);
    if (m && !m->multilingual && idx != td_wlang_index("en"))
        return td_error_set(err, TD_EINVAL,
                            "whisper model %s is English-only; use a multilingual model for '%s'",
                            name, lang);
    if (m && idx >= m->sp.n_langs && m->multilingual)
        return td_error_set(err, TD_EINVAL, "whisper model %s does not know the language '%s'",
                            name, lang);
    *out = idx;
    return TD_OK;
}

static int batched(const td_engine_config *cfg)
{
    return strcmp(td_wdecode_mode_name(cfg->decode), "batched") == 0;
}

static void decode_opts(const td_engine_config *cfg, td_wdecode_opts *o)
{
    td_wdecode_opts_default(o);
    o->beam_size = cfg->beam_size > 0 ? cfg->beam_size : DEFAULT_BEAM;
    o->best_of = DEFAULT_BEST_OF;
    o->translate = cfg->translate;
    if (batched(cfg))
        o->batch = cfg->batch > 0 ? cfg->batch : 1;
}

/* Scenes decoded at once by an instance and its clones. */
static int streams_of(const td_engine_config *cfg)
{
    if (!batched(cfg) || cfg->streams <= 1)
        return 1;
    return cfg->streams < TD_WBATCHER_MAX_CLIENTS ? cfg->streams : TD_WBATCHER_MAX_CLIENTS;
}

/* The backend's sizes: one decoder's (per), times the streams sharing it. */
static int backend_config(const td_engine_config *cfg, const td_whparams *hp, td_wconfig *bc,
                          td_wconfig *per)
{
    td_wdecode_opts o;
    decode_opts(cfg, &o);
    memset(bc, 0, sizeof *bc);
    bc->n_threads = cfg->threads;
    bc->compute = cfg->compute;
    int rc = td_wdecode_backend_config(hp, &o, bc);
    if (rc)
        return rc;
    if (per)
        *per = *bc;
    int n = streams_of(cfg);
    bc->max_seq *= n;
    bc->max_windows *= n;
    bc->max_rows *= n;
    return TD_OK;
}

static int whisper_probe(const td_engine_config *cfg, td_error *err)
{
    char path[PATH_MAX];
    int rc = resolve_model(cfg, path, sizeof path, err);
    if (rc)
        return rc;
    td_wmodel *m = NULL;
    rc = td_wmodel_open(path, &m, err);
    if (rc)
        return rc == TD_EINPUT ? TD_EUNAVAILABLE : rc;
    int lang;
    rc = language_of(cfg, m, path, &lang, err); /* messages name the file */
    td_wmodel_close(m);
    return rc;
}

/* Our own buffers, on top of the backend's: those open() allocates for
 * one batch, and (bounded from above) what each scene adds while it is
 * transcribed: the VAD's open utterance plus those completed from one
 * read, and the decoder's largest tables (logits per sequence, a mel
 * window). */
static int64_t batch_bytes(const td_whparams *hp, const td_wconfig *bc, int is_batched)
{
    size_t samples = BATCH_MAX_SAMPLES + PAD_SAMPLES;
    int64_t f = (int64_t)sizeof(float);
    int64_t vad = ((int64_t)td_vad_whisper_defaults.max_samples + READ_SAMPLES) * 2 * f;
    int64_t decoder = (int64_t)bc->max_seq * hp->n_vocab * f * 2 +
                      (int64_t)hp->n_mels * TD_WMEL_WINDOW_FRAMES * f;
    /* the batch's log-mel; batched: the decoder's window per job */
    int64_t mel = (int64_t)td_wmel_frames(samples) * hp->n_mels * f +
                  (is_batched ? (int64_t)bc->max_windows * hp->n_mels *
                                    TD_WMEL_WINDOW_FRAMES * f
                              : 0);
    return (int64_t)samples * f + mel + (int64_t)READ_SAMPLES * f + vad + decoder;
}

static int64_t whisper_memory_need(const td_engine_config *cfg)
{
    char path[PATH_MAX];
    td_error err = {0};
    if (resolve_model(cfg, path, sizeof path, &err) != TD_OK)
        return -1;
    td_wmodel *m = NULL;
    if (td_wmodel_open(path, &m, &err) != TD_OK)
        return -1;
    td_wconfig bc, per;
    int64_t need = -1;
    if (backend_config(cfg, &m->hp, &bc, &per) == TD_OK)
        need = td_wbackend_cpu.memory_need(&m->hp, m->wtype, &bc);
    if (need >= 0) /* each stream's own buffers */
        need += streams_of(cfg) * batch_bytes(&m->hp, &per, batched(cfg));
    td_wmodel_close(m);
    return need;
}

int td_whisper_pick_batch(const td_engine_config *cfg, int64_t budget, int cap)
{
    if (cap > CPU_MAX_BATCH)
        cap = CPU_MAX_BATCH;
    td_engine_config c = *cfg;
    c.decode = TD_WDECODE_BATCHED;
    /* memory grows with the batch: the largest that fits, halving down */
    for (int b = cap; b > 1; b /= 2) {
        c.batch = b;
        int64_t need = whisper_memory_need(&c);
        if (need >= 0 && need <= budget)
            return b;
    }
    return 1;
}

int td_whisper_max_batch(void)
{
    return MAX_CHUNKS < TD_WDEC_MAX_BATCH ? MAX_CHUNKS : TD_WDEC_MAX_BATCH;
}

int64_t td_whisper_device_need(const td_engine_config *cfg, const td_wbackend_ops *b,
                               const td_whparams *hp, int wtype)
{
    td_wconfig bc;
    if (!b || !b->memory_need || backend_config(cfg, hp, &bc, NULL) != TD_OK)
        return -1;
    return b->memory_need(hp, (enum td_wtype)wtype, &bc);
}

/* ---- open / close ------------------------------------------------------- */

static void whisper_close(td_engine *e)
{
    if (!e)
        return;
    if (!e->is_clone) {
        td_wbatcher_free(e->bt);
        if (e->backend)
            e->bops->close(e->backend);
        td_wmodel_close(e->model);
    }
    free(e->audio);
    free(e->spans);
    free(e->mel);
    free(e->cuts);
    free(e->chunk);
    free(e);
}

/* The backend: a GPU backend on the worker's card (--backend vulkan, or
 * auto on a GPU worker), else the CPU. Under auto, a GPU backend that
 * cannot run here (no loader, no driver, the card not found) is logged
 * with its reason and the CPU backend takes over, so a worker always
 * works; asked for by name, it is an error. Out of memory
 * on a GPU worker's card is returned as TD_ENOMEM either way: the worker
 * steps down to a smaller batch or model ([vram-safety], run/worker.h). */
static int open_backend(td_engine *e, const td_engine_config *cfg, td_wconfig *bc, td_error *err)
{
    const char *want = cfg->backend && *cfg->backend ? cfg->backend : "auto";
    int gpu_worker = cfg->device && *cfg->device && strcmp(cfg->device, "cpu") != 0;
    if (strcmp(want, "auto") != 0 && strcmp(want, "cpu") != 0 && strcmp(want, "vulkan") != 0)
        return td_error_set(err, TD_EINVAL, "unknown whisper backend '%s' (auto, cpu, vulkan)",
                            want);
    if (strcmp(want, "vulkan") == 0 || (strcmp(want, "auto") == 0 && gpu_worker)) {
        const td_wbackend_ops *gpu = td_wbackend_find("vulkan");
        td_error why = {0};
        int rc;
        if (!gpu) {
            rc = td_error_set(&why, TD_EUNAVAILABLE, "this tapedeck was built without Vulkan");
        } else if ((rc = gpu->probe(&why)) == TD_OK) {
            bc->device = gpu_worker ? cfg->device : NULL;
            rc = gpu->open(e->model, bc, &e->backend, &why);
        }
        if (rc == TD_OK) {
            e->bops = gpu;
            return TD_OK;
        }
        /* out of memory on the card is the worker's to handle (a smaller
         * batch or model there, [vram-safety]), not a reason to compute
         * on the GPU worker's few CPU threads */
        if (strcmp(want, "vulkan") == 0 || (rc == TD_ENOMEM && gpu_worker))
            return td_error_set(err, rc, "%s", why.msg);
        td_log(TD_LOG_WARN, "[backend] vulkan cannot run%s%s: %s; using the CPU backend",
               gpu_worker ? " on " : "", gpu_worker ? cfg->device : "", why.msg);
    }
    bc->device = NULL;
    e->bops = &td_wbackend_cpu;
    return e->bops->open(e->model, bc, &e->backend, err);
}

static int alloc_buffers(td_engine *e, td_error *err);

_Static_assert(TD_WHISPER_MAX_STREAMS <= TD_WBATCHER_MAX_CLIENTS, "a stream is a batcher client");

static int whisper_open(const td_engine_config *cfg, td_engine **out, td_error *err)
{
    char path[PATH_MAX];
    *out = NULL;
    int rc = resolve_model(cfg, path, sizeof path, err);
    if (rc)
        return rc;
    td_engine *e = calloc(1, sizeof *e);
    if (!e)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    td_wmodels_name_of(path, e->model_name, sizeof e->model_name);
    rc = td_wmodel_open(path, &e->model, err);
    if (rc)
        goto fail;
    rc = language_of(cfg, e->model, path, &e->language, err);
    if (rc)
        goto fail;
    decode_opts(cfg, &e->opts);
    /* 0 is "engine's choice" here but "calling thread only" to the mel */
    e->threads = cfg->threads;
    if (e->threads <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        e->threads = nc > 0 && nc < 256 ? (int)nc : 1;
    }

    /* batched chunks are laid out as 30-s windows: a model of another
     * window length decodes sequentially */
    e->mode = batched(cfg) && 2 * e->model->hp.n_audio_ctx == TD_WMEL_WINDOW_FRAMES
                  ? TD_WDECODE_BATCHED
                  : TD_WDECODE_SEQUENTIAL;
    e->compute = cfg->compute;
    e->batch = e->opts.batch > 0 ? e->opts.batch : 1;
    td_wconfig bc, per;
    rc = backend_config(cfg, &e->model->hp, &bc, &per);
    if (rc) {
        rc = td_error_set(err, TD_EINVAL, "whisper: batch %d or beam %d out of range", cfg->batch,
                          e->opts.beam_size);
        goto fail;
    }
    rc = open_backend(e, cfg, &bc, err);
    if (rc)
        goto fail;
    if (e->bops->identity)
        e->bops->identity(e->backend, e->pci, sizeof e->pci, e->uuid, sizeof e->uuid);
    /* word times: said once, when they cannot come from the alignment heads
     * (the decoder finds the heads the same way) */
    const td_align_heads *heads = NULL;
    int match = td_align_heads_find(&e->model->hp, e->model->path, &heads);
    if (match == TD_ALIGN_MATCH_NONE)
        td_log(TD_LOG_WARN, "[align] %s: no released Whisper model has its dimensions and "
               "vocabulary, so its alignment heads are not known: word times by character count",
               e->model_name);
    else if (!e->bops->align_weights)
        td_log(TD_LOG_WARN, "[align] %s: the %s backend has no word alignment: word times by "
               "character count", e->model_name, e->bops->name);
    else if (match == TD_ALIGN_MATCH_GUESS)
        td_log(TD_LOG_INFO, "[align] %s: the dimensions of large-v1 and large-v2; the name does "
               "not say which: word times from large-v2's alignment heads", e->model_name);
    e->streams = e->mode == TD_WDECODE_BATCHED ? streams_of(cfg) : 1;
    e->cops = e->bops;
    e->cctx = e->backend;
    if (e->streams > 1) {
        rc = td_wbatcher_new(e->bops, e->backend, &per, e->streams, e->model->hp.n_vocab, &e->bt,
                             err);
        if (rc)
            goto fail;
        td_wbatcher_client(e->bt, 0, &e->cops, &e->cctx);
    }
    rc = alloc_buffers(e, err);
    if (rc)
        goto fail;
    *out = e;
    return TD_OK;
fail:
    whisper_close(e);
    return rc;
}

/* A scene's own buffers (the original's and each clone's). */
static int alloc_buffers(td_engine *e, td_error *err)
{
    size_t samples = BATCH_MAX_SAMPLES + PAD_SAMPLES;
    size_t mel_floats = td_wmel_frames(samples); /* both modes: the batch's log-mel */
    e->audio = calloc(samples, sizeof *e->audio);
    e->mel = malloc(mel_floats * (size_t)e->model->hp.n_mels * sizeof *e->mel);
    e->chunk = malloc(READ_SAMPLES * sizeof *e->chunk);
    if (!e->audio || !e->mel || !e->chunk)
        return td_error_set(err, TD_ENOMEM, "out of memory for the audio batch");
    return TD_OK;
}

static int whisper_clone(td_engine *e, td_engine **out, td_error *err)
{
    *out = NULL;
    if (e->is_clone || !e->bt || e->n_clones + 1 >= e->streams)
        return td_error_set(err, TD_EUNAVAILABLE, "whisper: no room for another scene at once "
                            "(streams %d)", e->streams);
    td_engine *c = malloc(sizeof *c);
    if (!c)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    *c = *e;
    c->is_clone = 1;
    c->client = e->n_clones + 1;
    c->audio = NULL;
    c->mel = NULL;
    c->chunk = NULL;
    c->spans = NULL;
    c->cuts = NULL;
    c->n_spans = c->cap_spans = c->n_cuts = c->cap_cuts = 0;
    td_wbatcher_client(e->bt, c->client, &c->cops, &c->cctx);
    int rc = alloc_buffers(c, err);
    if (rc) {
        whisper_close(c);
        return rc;
    }
    e->n_clones++;
    *out = c;
    return TD_OK;
}

static const char *whisper_model_name(const td_engine *e)
{
    return e->model_name;
}

static void whisper_settings(const td_engine *e, td_engine_settings *out)
{
    out->backend = e->bops->name;
    out->compute = td_wcompute_name(td_wcompute_resolve((enum td_wcompute)e->compute));
    out->decode = e->mode == TD_WDECODE_BATCHED ? "batched" : "sequential";
    out->batch = e->mode == TD_WDECODE_BATCHED ? e->batch : 1;
    out->pci = e->pci;
    out->uuid = e->uuid;
    out->streams = e->streams;
}

/* ---- the heartbeat proxy ------------------------------------------------ */

/* Inside a window the seconds stay where the last window left them. */
static int proxy_beat(beat_proxy *p, int rc, td_error *err)
{
    if (rc == TD_OK && p->fn && report(p->reported, p->fn, p->user, *p->reported))
        return td_error_set(err, TD_EABORT, "whisper transcription stopped");
    return rc;
}

/* A batch of windows is encoded in groups, with a heartbeat after each:
 * one window a call on the CPU backend (sixteen windows of a large model
 * on a slow CPU would otherwise outlast the stall timeout in one call),
 * PROXY_GPU_GROUP on a GPU backend, which runs a group's products over all
 * its windows' rows at once (the Vulkan backend: up to its enc_batch; a
 * medium window is tens of milliseconds there, and even lavapipe, Mesa's
 * Vulkan on the CPU, encodes a tiny window in seconds, far inside the
 * stall timeout's default of 300 s). */
#define PROXY_GPU_GROUP 4
static int proxy_encode(td_wbackend *b, int n_win, const int *windows, const float *const *mels,
                        td_error *err)
{
    beat_proxy *p = (beat_proxy *)b;
    int group = strcmp(p->real->name, "cpu") == 0 ? 1 : PROXY_GPU_GROUP;
    for (int i = 0; i < n_win; i += group) {
        int n = n_win - i < group ? n_win - i : group;
        int rc = proxy_beat(p, p->real->encode(p->ctx, n, windows + i, mels + i, err), err);
        if (rc)
            return rc;
    }
    return TD_OK;
}

static int proxy_decode(td_wbackend *b, int n_seq, const td_wseq *seqs, const int32_t *tokens,
                        int all_logits, float *logits, td_error *err)
{
    beat_proxy *p = (beat_proxy *)b;
    return proxy_beat(p, p->real->decode(p->ctx, n_seq, seqs, tokens, all_logits, logits, err),
                      err);
}

static int proxy_kv_copy(td_wbackend *b, int n, const td_wkv_copy *pairs, td_error *err)
{
    beat_proxy *p = (beat_proxy *)b;
    return p->real->kv_copy(p->ctx, n, pairs, err);
}

static int proxy_sample(td_wbackend *b, const td_wsampler *sp, int n, const td_wsample_in *in,
                        td_wsample_out *out, td_error *err)
{
    beat_proxy *p = (beat_proxy *)b;
    return p->real->sample(p->ctx, sp, n, in, out, err);
}

static int proxy_align_weights(td_wbackend *b, int slot, int window, int n_tokens,
                               const int32_t *tokens, int n_heads, const int *heads, float *out,
                               td_error *err)
{
    beat_proxy *p = (beat_proxy *)b;
    return proxy_beat(p, p->real->align_weights(p->ctx, slot, window, n_tokens, tokens, n_heads,
                                                heads, out, err),
                      err);
}

static int proxy_encoder_output(td_wbackend *b, int window, float *out, td_error *err)
{
    beat_proxy *p = (beat_proxy *)b;
    return p->real->encoder_output(p->ctx, window, out, err);
}

/* The proxy's table: the real backend's optional entries only where it
 * has them. */
static void proxy_table(const td_wbackend_ops *real, td_wbackend_ops *t)
{
    *t = (td_wbackend_ops){
        .api_version = TD_WBACKEND_API_VERSION,
        .name = real->name,
        .encode = proxy_encode,
        .decode = proxy_decode,
        .kv_copy = proxy_kv_copy,
        .sample = real->sample ? proxy_sample : NULL,
        .encoder_output = proxy_encoder_output,
        .align_weights = real->align_weights ? proxy_align_weights : NULL,
    };
}

/* ---- decoding a batch -------------------------------------------------- */

/* Map a time in the joined speech (seconds) back to the scene's clock. A
 * time exactly at a junction belongs to the later span for starts and to
 * the earlier one for ends. */
static double map_time(const td_engine *e, double t, int is_end)
{
    if (e->n_spans == 0)
        return t;
    double pos = t * RATE;
    if (pos < 0)
        pos = 0;
    const span *s = &e->spans[0];
    for (size_t i = 0; i < e->n_spans; i++) {
        const span *c = &e->spans[i];
        double end = (double)(c->at + c->n);
        if (pos < end || (is_end && pos <= end) || i + 1 == e->n_spans) {
            s = c;
            break;
        }
    }
    double off = pos - (double)s->at;
    if (off < 0)
        off = 0;
    if (off > (double)s->n)
        off = (double)s->n;
    return ((double)s->src + off) / RATE;
}

/* Map [start, end] of the joined speech. A stretch of zero length at a
 * junction would map to the later span's start and the earlier one's end,
 * that is backwards: it is kept at the start. */
static void map_range(const td_engine *e, double start, double end, double *ms, double *me)
{
    *ms = map_time(e, start, 0);
    *me = map_time(e, end, 1);
    if (*me < *ms)
        *me = *ms;
}

typedef struct progress_ctx {
    td_engine *e;
    td_progress_fn fn;
    void *user;
} progress_ctx;

static int on_window(void *user, double seconds_done)
{
    progress_ctx *p = user;
    return report(&p->e->reported, p->fn, p->user, map_time(p->e, seconds_done, 1));
}

size_t td_whisper_chunk_starts(const size_t *cuts, size_t n_cuts, size_t total, int batch,
                               size_t *bounds, size_t cap)
{
    size_t target = (size_t)TD_WHISPER_CHUNK_TARGET_S * RATE;
    size_t n30 = (total + CHUNK_SAMPLES - 1) / CHUNK_SAMPLES;
    size_t k = (total + target - 1) / target;
    size_t par = n30 < TD_WHISPER_CHUNK_MIN_PARALLEL ? n30 : TD_WHISPER_CHUNK_MIN_PARALLEL;
    if (k < par)
        k = par;
    if (batch > 0 && k > (size_t)batch)
        k = (size_t)batch;
    if (k > cap)
        k = cap;
    if (k < 1)
        k = 1;
    size_t nb = 0, from = 0;
    bounds[nb++] = 0;
    /* for each i, the utterance start nearest i * total / k, after the
     * one before */
    for (size_t i = 1; i < k && nb < cap; i++) {
        size_t want = (size_t)((double)total * (double)i / (double)k);
        size_t best = 0, bdist = 0;
        int found = 0;
        for (size_t c = from; c < n_cuts; c++) {
            size_t at = cuts[c];
            if (at <= bounds[nb - 1] || at >= total)
                continue;
            size_t dist = at > want ? at - want : want - at;
            if (found && dist >= bdist)
                break; /* ascending: farther from here on */
            best = at;
            bdist = dist;
            found = 1;
            from = c + 1;
        }
        if (found)
            bounds[nb++] = best;
    }
    return nb;
}

/* Batched mode: cut the batch into chunks at utterance starts (e->cuts,
 * td_whisper_chunk_starts). Each chunk is walked window by window as the
 * sequential loop walks the batch (seek to the last timestamp, the next
 * window conditioned on the chunk's text), so a chunk can be longer than
 * a window. Fewer, longer chunks mean fewer windows: a window that ends
 * before its audio does (Whisper often closes its last segment seconds
 * early, or leaves it open) goes on from there, and in a chunk of at most
 * 30 s that rest is a window of its own, where in a longer chunk it is
 * the start of a full one (bench/RESULTS.md: 30 windows in 19 chunks of
 * at most 30 s against the sequential loop's 19 on the 10-minute scene;
 * without a prompt, greedy chunk starts also looped on tones and fell
 * back). More chunks mean more windows in each decoder step, but past a
 * few a step costs nearly the same per window on a CPU. The batch's
 * log-mel is computed once, as the sequential loop's (normalized over
 * the whole batch), and each chunk is a view of it. */
static int make_chunks(td_engine *e, size_t frames, td_wchunk *chunks, int *n_chunks,
                       td_error *err)
{
    const td_wmodel *m = e->model;
    int n_mels = m->hp.n_mels;
    int rc = td_wmel_log(e->audio, e->batch_len + PAD_SAMPLES, m->mel_filters, n_mels, e->mel,
                         e->threads, err);
    if (rc)
        return rc;
    td_wmel_normalize(e->mel, frames * (size_t)n_mels);
    size_t content = td_wmel_frames(e->batch_len);
    size_t starts[MAX_CHUNKS];
    size_t nb = td_whisper_chunk_starts(e->cuts, e->n_cuts, e->batch_len, e->batch, starts,
                                        MAX_CHUNKS);
    int n = 0;
    for (size_t i = 0; i < nb; i++) {
        size_t f0 = starts[i] / TD_WMEL_HOP;
        size_t f1 = i + 1 < nb ? starts[i + 1] / TD_WMEL_HOP : content;
        if (f1 > content)
            f1 = content;
        if (f1 <= f0)
            continue;
        chunks[n++] = (td_wchunk){.mel = e->mel + f0, .stride = frames, .content_frames = f1 - f0,
                                  .offset = (double)f0 * TD_WMEL_HOP / RATE};
    }
    if (n == 0)
        return td_error_set(err, TD_EINVAL, "whisper: a batch without audio frames");
    *n_chunks = n;
    return TD_OK;
}

/* Decode the batch and empty it, whatever the outcome. */
static int decode_batch(td_engine *e, td_transcript *out, td_progress_fn progress, void *user,
                        td_error *err)
{
    if (e->batch_len == 0)
        return TD_OK;
    const td_wmodel *m = e->model;
    int n_mels = m->hp.n_mels;
    size_t total = e->batch_len + PAD_SAMPLES;
    double content_end = (double)e->batch_len / RATE;
    memset(e->audio + e->batch_len, 0, PAD_SAMPLES * sizeof *e->audio);
    size_t frames = td_wmel_frames(total);
    td_transcript part;
    td_transcript_init(&part);
    td_wchunk chunks[MAX_CHUNKS];
    td_guard_span *speech = NULL;
    int n_chunks = 0, rc;
    if (e->mode == TD_WDECODE_BATCHED) {
        rc = make_chunks(e, frames, chunks, &n_chunks, err);
    } else {
        rc = td_wmel_log(e->audio, total, m->mel_filters, n_mels, e->mel, e->threads, err);
        if (!rc)
            td_wmel_normalize(e->mel, frames * (size_t)n_mels);
    }
    if (rc)
        goto out;

    td_wdecode_opts o = e->opts;
    o.language = e->language >= 0 ? e->language : e->scene_language;
    td_wdecoder *d = NULL;
    e->proxy = (beat_proxy){.real = e->cops, .ctx = e->cctx, .fn = progress, .user = user,
                            .reported = &e->reported};
    proxy_table(e->cops, &e->proxy_ops);
    rc = td_wdecoder_new(m, &e->proxy_ops, (td_wbackend *)&e->proxy, &o, &d, err);
    if (rc)
        goto out;
    /* The VAD's speech on the decoder's clock (the joined speech): every
     * stretch of the batch, for the guards (decode.h) */
    speech = malloc((e->n_spans ? e->n_spans : 1) * sizeof *speech);
    if (!speech) {
        td_wdecoder_free(d);
        rc = td_error_set(err, TD_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < e->n_spans; i++)
        speech[i] = (td_guard_span){(double)e->spans[i].at / RATE,
                                    (double)(e->spans[i].at + e->spans[i].n) / RATE};
    td_wdecoder_set_speech(d, speech, e->n_spans);
    int lang = o.language;
    progress_ctx pc = {e, progress, user};
    if (e->mode == TD_WDECODE_BATCHED)
        rc = td_wdecoder_transcribe_chunks(d, chunks, n_chunks, &part, &lang, on_window, &pc,
                                           err);
    else
        rc = td_wdecoder_transcribe(d, e->mel, frames, td_wmel_frames(e->batch_len), 0.0, &part,
                                    &lang, on_window, &pc, err);
    if (e->bt) /* the other scenes' steps stop waiting for this one */
        td_wbatcher_idle(e->bt, e->client);
    td_wdecode_stats st;
    td_wdecoder_stats(d, &st);
    td_wdecoder_free(d);
    char chunk_note[32] = "";
    if (e->mode == TD_WDECODE_BATCHED)
        snprintf(chunk_note, sizeof chunk_note, " (%d chunk%s)", n_chunks, n_chunks == 1 ? "" : "s");
    td_log(TD_LOG_DEBUG,
           "whisper: %.1f s of speech, %s%s: %ld window(s), %ld fallback(s), %ld silent, "
           "%ld tokens; %ld aligned (%ld failed); guards: %ld re-decoded, %ld restarted at a gap, "
           "%ld unresolved; encoder %ld run(s) %.2f s, decoder %ld call(s) %.2f s",
           content_end, e->mode == TD_WDECODE_BATCHED ? "batched" : "sequential", chunk_note,
           st.windows,
           st.fallbacks, st.silent, st.tokens, st.aligned, st.align_failed, st.guard_redecodes,
           st.guard_gap_seeks, st.guard_unresolved, st.encoder_runs, st.encoder_s,
           st.decoder_calls, st.decoder_s);
    if (rc)
        goto out;
    if (e->language < 0 && lang >= 0)
        e->scene_language = lang; /* later batches of the scene keep it */

    for (size_t i = 0; i < part.n_segs; i++) {
        td_segment *s = &part.segs[i];
        /* Wholly in the padding after the speech (the decoder clamps such
         * a segment to the content's end): nothing was said there. */
        if (s->start >= content_end)
            continue;
        for (size_t w = 0; w < s->n_words; w++)
            map_range(e, s->words[w].start, s->words[w].end, &s->words[w].start,
                      &s->words[w].end);
        double start, end;
        map_range(e, s->start, s->end, &start, &end);
        rc = td_transcript_add(out, start, end, s->text, s->words, s->n_words, err);
        if (rc)
            goto out;
    }
    for (size_t i = 0; i < part.n_issues; i++) {
        const td_transcript_issue *is = &part.issues[i];
        double start, end;
        map_range(e, is->start, is->end, &start, &end);
        /* a stretch kept as first decoded (a gap under 8 s, which the
         * guards leave alone: mostly hiss or music the VAD let through)
         * is only counted and listed */
        if (is->decoded_again)
            td_log(TD_LOG_WARN, "[guard] %s at %.2f-%.2f s: decoding again did not clear it; "
                   "kept", is->reason, start, end);
        else
            td_log(TD_LOG_DEBUG, "[guard] %s at %.2f-%.2f s: kept as first decoded", is->reason,
                   start, end);
        rc = td_transcript_add_issue(out, start, end, is->reason, is->decoded_again, err);
        if (rc)
            goto out;
    }
out:
    free(speech);
    td_transcript_release(&part);
    e->batch_len = 0;
    e->n_spans = 0;
    e->n_cuts = 0;
    return rc;
}

/* Append an utterance's samples (which began at source sample src) to the
 * batch, decoding the batch first when it would overflow. */
static int add_speech(td_engine *e, const float *s, size_t n, uint64_t src, td_transcript *out,
                      td_progress_fn progress, void *user, td_error *err)
{
    /* An utterance (at most the VAD's 30 s) that does not fit goes whole
     * into the next batch rather than being cut mid-word. */
    if (e->batch_len > 0 && n > BATCH_MAX_SAMPLES - e->batch_len) {
        int rc = decode_batch(e, out, progress, user, err);
        if (rc)
            return rc;
    }
    if (e->mode == TD_WDECODE_BATCHED) { /* an utterance starts here */
        if (e->n_cuts == e->cap_cuts) {
            size_t ncap = e->cap_cuts ? e->cap_cuts * 2 : 64;
            size_t *nc = realloc(e->cuts, ncap * sizeof *nc);
            if (!nc)
                return td_error_set(err, TD_ENOMEM, "out of memory");
            e->cuts = nc;
            e->cap_cuts = ncap;
        }
        e->cuts[e->n_cuts++] = e->batch_len;
    }
    while (n > 0) {
        if (e->batch_len == BATCH_MAX_SAMPLES) {
            int rc = decode_batch(e, out, progress, user, err);
            if (rc)
                return rc;
        }
        size_t take = BATCH_MAX_SAMPLES - e->batch_len;
        if (take > n)
            take = n;
        if (e->n_spans > 0) {
            span *last = &e->spans[e->n_spans - 1];
            if (last->src + last->n == src && last->at + last->n == e->batch_len) {
                last->n += take; /* continues the previous stretch */
                goto copy;
            }
        }
        if (e->n_spans == e->cap_spans) {
            size_t ncap = e->cap_spans ? e->cap_spans * 2 : 64;
            span *ns = realloc(e->spans, ncap * sizeof *ns);
            if (!ns)
                return td_error_set(err, TD_ENOMEM, "out of memory");
            e->spans = ns;
            e->cap_spans = ncap;
        }
        e->spans[e->n_spans++] = (span){.at = e->batch_len, .src = src, .n = take};
copy:
        memcpy(e->audio + e->batch_len, s, take * sizeof *s);
        e->batch_len += take;
        s += take;
        n -= take;
        src += take;
    }
    return TD_OK;
}

typedef struct utt_ctx {
    td_engine *e;
    td_transcript *out;
    td_progress_fn progress;
    void *user;
    td_error *err;
} utt_ctx;

static int whisper_transcribe(td_engine *e, const td_pcm_source *src, td_transcript *out,
                              td_progress_fn progress, void *user, td_error *err)
{
    e->batch_len = 0;
    e->n_spans = 0;
    e->n_cuts = 0;
    e->scene_language = -1;
    e->reported = 0;
    int rc = TD_OK;
    td_vad *vad = NULL;
    rc = td_vad_new(&td_vad_whisper_defaults, &vad, err);
    if (rc)
        return rc;
    uint64_t consumed = 0;
    for (;;) {
        long got = src->read(src->ctx, e->chunk, READ_SAMPLES, err);
        if (got < 0) {
            rc = (int)got;
            goto out;
        }
        int last = got == 0;
        rc = td_vad_feed(vad, e->chunk, (size_t)got, last);
        if (rc) {
            rc = td_error_set(err, rc, "voice activity detector: out of memory");
            goto out;
        }
        td_vad_utterance u;
        while (td_vad_next(vad, &u)) {
            rc = add_speech(e, u.samples, u.n_samples, u.start, out, progress, user, err);
            if (rc)
                goto out;
        }
        consumed += (uint64_t)got;
        if (last)
            break;
        /* Silence is progress too when no batch is pending; while one is,
         * the seconds stay put but the heartbeat (and a stop) still gets
         * through on a long stretch without speech. */
        if (report(&e->reported, progress, user,
                   e->batch_len == 0 ? (double)consumed / RATE : e->reported)) {
            rc = td_error_set(err, TD_EABORT, "whisper transcription stopped");
            goto out;
        }
    }
    rc = decode_batch(e, out, progress, user, err);
    if (rc)
        goto out;
    /* Everything is read and decoded: the whole scene is done. */
    if (report(&e->reported, progress, user, (double)consumed / RATE)) {
        rc = td_error_set(err, TD_EABORT, "whisper transcription stopped");
        goto out;
    }
    int lang = e->language >= 0 ? e->language : e->scene_language;
    const char *code = lang >= 0 ? td_wlang_code(lang) : NULL;
    if (code)
        snprintf(out->language, sizeof out->language, "%s", code);
out:
    td_vad_free(vad);
    e->batch_len = 0; /* nothing of this scene is left for the next */
    e->n_spans = 0;
    e->n_cuts = 0;
    return rc;
}

const td_engine_ops td_engine_whisper = {
    .api_version = TD_ENGINE_API_VERSION,
    .name = "whisper",
    .description = "tapedeck's own Whisper (ggml model files; CPU backend)",
    .probe = whisper_probe,
    .memory_need = whisper_memory_need,
    .open = whisper_open,
    .transcribe = whisper_transcribe,
    .model_name = whisper_model_name,
    .close = whisper_close,
    .settings = whisper_settings,
    .clone = whisper_clone,
};
