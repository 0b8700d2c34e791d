/*
 * sphinx.c: the "sphinx" speech engine, PocketSphinx 5prealpha with
 * Debian's pocketsphinx-en-us model (see engine.h for the table).
 *
 * It is the engine of last resort: CPU only, English only, modest accuracy,
 * but always installable, so a fresh machine still subtitles its archive.
 *
 * Streaming and timing. Samples are pulled from the source half a second
 * at a time and cut into utterances by tapedeck's energy voice-activity
 * detector (asr/vad.h: 10 ms frames against an adaptive noise floor, with
 * an onset run, a pre-roll and a hangover), with its sphinx caps of 20 s
 * (soft) and 30 s. Each utterance is converted into a buffer of at most
 * UTT_MAX_SAMPLES and decoded in one piece, so memory stays bounded on a
 * 3-hour file and the decoder sees utterance-sized inputs, which it was
 * trained on. We decode with "-remove_silence no": the decoder's own VAD
 * would drop frames and ps_seg_frames would then no longer count from the
 * utterance's first sample (measured: with it on, every word of a LibriVox
 * utterance came out 0.87 s late). With it off, frame f of an utterance
 * that starts at sample s0 is at s0 / 16000 + f / frate seconds, exactly.
 *
 * Each utterance is decoded as a full utterance (ps_process_raw with
 * full_utt), so cepstral mean normalisation is computed per utterance
 * ("-cmn batch" in the model's feat.params) instead of carrying a running
 * estimate from scene to scene: home video changes microphone and room with
 * every cut.
 *
 * Search settings, measured on the five LibriVox utterances of
 * pocketsphinx-testdata (24.7 s, 71 words; CPU seconds on a 2-core
 * machine shared with other work, so +-20%): the defaults gave WER 0.282 at
 * 4.0x real time, and 0.915 at 1.2x with white noise added at -34 dBFS.
 * Without the second (flat-lexicon) pass and with at most 5000 active HMMs
 * per frame: 0.268 at 6.5x clean, 0.930 at 4.1x noisy. The HMM cap matters
 * most on noisy audio (wind, music), where the search otherwise fans out
 * to near real time for nothing.
 *
 * Model: dir/en-us (acoustic model), dir/en-us.lm.bin, dir/cmudict-en-us.dict
 * with dir = cfg->model when it names a directory, else
 * $TAPEDECK_SPHINX_MODEL_DIR, else /usr/share/pocketsphinx/model/en-us.
 *
 * Caveat: sphinxbase calls exit() on some corrupt model files (E_FATAL).
 * probe checks that every file is there and readable, which catches the
 * usual case (a missing package or a wrong directory), not a corrupt file.
 */
#include "asr/engine.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pocketsphinx.h>
#include <sphinxbase/err.h>

#include "asr/vad.h"
#include "util/buf.h"

#define DEFAULT_MODEL_DIR "/usr/share/pocketsphinx/model/en-us"
#define MODEL_DIR_ENV "TAPEDECK_SPHINX_MODEL_DIR"

#define RATE 16000                    /* the model's sample rate, and ours */
#define CHUNK_SAMPLES (RATE / 2)      /* pulled from the source per read */
/* The longest utterance the detector hands over: short enough for the
 * decoder's per-utterance tables. */
#define UTT_MAX_SAMPLES (td_vad_sphinx_defaults.max_samples)

/* Resident memory one instance needs. Measured on Debian 12 (x86-64) with
 * the en-us model: RSS grew by 93.8 MB across cmd_ln_init + ps_init (2.9 MB
 * before, 96.7 MB after). Decoding then raises it: 10 minutes of dense
 * speech (three LibriVox voices mixed, 143 utterances up to 12 s) levelled
 * off at 125 MB after 3 minutes and stayed there; a 60 s file of separate
 * sentences peaked at 106 MB. Our own buffers are 1 MB, and the
 * voice-activity detector's up to 4 MB. 160 MiB leaves room for a 30 s
 * utterance and the transcript of a long scene. */
#define MEMORY_NEED ((int64_t)160 << 20)

struct td_engine {
    cmd_ln_t *config;
    ps_decoder_t *ps;
    double frate;                       /* decoder frames per second */
    char model_name[NAME_MAX + 1];
    float *chunk;                       /* CHUNK_SAMPLES from the source */
    td_vad *vad;                        /* cuts the source into utterances */
    int16_t *utt;                       /* the utterance being decoded */
    size_t utt_len;
    td_word *words;                     /* one utterance's words, reused */
    size_t words_cap;
    td_buf text;                        /* one utterance's text, reused */
};

/* ---- model location ---------------------------------------------------- */

typedef struct model_paths {
    char dir[PATH_MAX];
    char hmm[PATH_MAX];
    char lm[PATH_MAX];
    char dict[PATH_MAX];
    char name[NAME_MAX + 1];
} model_paths;

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Basename of a directory path, trailing slashes ignored ("/a/b/" -> "b"). */
static void dir_basename(const char *path, char *out, size_t size)
{
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/')
        end--;
    size_t start = end;
    while (start > 0 && path[start - 1] != '/')
        start--;
    size_t n = end - start;
    if (n >= size)
        n = size - 1;
    memcpy(out, path + start, n);
    out[n] = '\0';
}

static int join_path(char *out, const char *dir, const char *name, td_error *err)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_MAX)
        return td_error_set(err, TD_EINVAL, "sphinx model: %s: path too long", dir);
    return TD_OK;
}

static int find_model(const td_engine_config *cfg, model_paths *mp, td_error *err)
{
    const char *dir = NULL;
    const char *model = cfg ? cfg->model : NULL;
    int is_default = 0;
    if (model && *model && strcmp(model, "en-us") != 0) {
        if (!is_dir(model))
            return td_error_set(err, TD_EUNAVAILABLE,
                                "sphinx model '%s': not a directory (want one holding en-us/, "
                                "en-us.lm.bin and cmudict-en-us.dict)", model);
        dir = model;
    } else {
        const char *env = getenv(MODEL_DIR_ENV);
        if (env && *env) {
            dir = env;
        } else {
            dir = DEFAULT_MODEL_DIR;
            is_default = 1;
        }
    }
    if (strlen(dir) >= sizeof mp->dir)
        return td_error_set(err, TD_EINVAL, "sphinx model: %s: path too long", dir);
    strcpy(mp->dir, dir);
    int rc;
    if ((rc = join_path(mp->hmm, dir, "en-us", err)) ||
        (rc = join_path(mp->lm, dir, "en-us.lm.bin", err)) ||
        (rc = join_path(mp->dict, dir, "cmudict-en-us.dict", err)))
        return rc;
    if (is_default)
        strcpy(mp->name, "en-us");
    else
        dir_basename(dir, mp->name, sizeof mp->name);
    return TD_OK;
}

/* Every file the decoder will open, so that a missing model is reported
 * here with its path rather than by sphinxbase (which may exit). */
static int check_model_files(const model_paths *mp, td_error *err)
{
    static const char *const hmm_files[] = {"mdef", "means", "variances",
                                            "transition_matrices", "noisedict"};
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof hmm_files / sizeof hmm_files[0]; i++) {
        int rc = join_path(path, mp->hmm, hmm_files[i], err);
        if (rc)
            return rc;
        if (access(path, R_OK) != 0)
            return td_error_errno(err, TD_EUNAVAILABLE, errno, "sphinx model: %s", path);
    }
    if (access(mp->lm, R_OK) != 0)
        return td_error_errno(err, TD_EUNAVAILABLE, errno, "sphinx model: %s", mp->lm);
    if (access(mp->dict, R_OK) != 0)
        return td_error_errno(err, TD_EUNAVAILABLE, errno, "sphinx model: %s", mp->dict);
    return TD_OK;
}

static int check_language(const td_engine_config *cfg, td_error *err)
{
    const char *lang = cfg ? cfg->language : NULL;
    if (!lang || !*lang || strcasecmp(lang, "auto") == 0 || strcasecmp(lang, "en") == 0 ||
        strncasecmp(lang, "en-", 3) == 0 || strncasecmp(lang, "en_", 3) == 0)
        return TD_OK;
    return td_error_set(err, TD_EUNAVAILABLE, "sphinx speaks only English (en), not '%s'", lang);
}

/* ---- engine table entries ---------------------------------------------- */

/* Everything probe checks, leaving the model's paths in mp for open. */
static int locate_model(const td_engine_config *cfg, model_paths *mp, td_error *err)
{
    int rc = check_language(cfg, err);
    if (rc)
        return rc;
    rc = find_model(cfg, mp, err);
    if (rc)
        return rc;
    return check_model_files(mp, err);
}

static int sphinx_probe(const td_engine_config *cfg, td_error *err)
{
    model_paths mp;
    return locate_model(cfg, &mp, err);
}

static int64_t sphinx_memory_need(const td_engine_config *cfg)
{
    return MEMORY_NEED;
}

static void sphinx_close(td_engine *e)
{
    if (!e)
        return;
    if (e->ps)
        ps_free(e->ps);
    if (e->config)
        cmd_ln_free_r(e->config);
    td_buf_release(&e->text);
    free(e->words);
    td_vad_free(e->vad);
    free(e->utt);
    free(e->chunk);
    free(e);
}

static int sphinx_open(const td_engine_config *cfg, td_engine **out, td_error *err)
{
    *out = NULL;
    model_paths mp;
    int rc = locate_model(cfg, &mp, err);
    if (rc)
        return rc;

    td_engine *e = calloc(1, sizeof *e);
    if (!e)
        return td_error_set(err, TD_ENOMEM, "sphinx: out of memory");
    td_buf_init(&e->text, (size_t)1 << 20);
    e->chunk = malloc(CHUNK_SAMPLES * sizeof *e->chunk);
    e->utt = malloc(UTT_MAX_SAMPLES * sizeof *e->utt);
    if (!e->chunk || !e->utt) {
        rc = td_error_set(err, TD_ENOMEM, "sphinx: out of memory");
        goto out_close;
    }
    rc = td_vad_new(&td_vad_sphinx_defaults, &e->vad, err);
    if (rc) {
        td_error_prefix(err, "sphinx");
        goto out_close;
    }
    snprintf(e->model_name, sizeof e->model_name, "%s", mp.name);

    /* PocketSphinx logs every step of loading and decoding to stderr by
     * default. Switch its (process-wide) log off before anything can log.
     * Not "-logfn /dev/null": ps_init would fopen it and sphinxbase never
     * closes it once the log is switched off again, one descriptor lost
     * per open (measured). */
    err_set_logfp(NULL);
    e->config = cmd_ln_init(NULL, ps_args(), TRUE,
                            "-hmm", mp.hmm,
                            "-lm", mp.lm,
                            "-dict", mp.dict,
                            "-remove_silence", "no",
                            "-fwdflat", "no",
                            "-maxhmmpf", "5000",
                            NULL);
    if (!e->config) {
        rc = td_error_set(err, TD_EENGINE, "sphinx: %s: cannot build the decoder configuration",
                          mp.dir);
        goto out_close;
    }
    e->ps = ps_init(e->config);
    if (!e->ps) {
        rc = td_error_set(err, TD_EENGINE, "sphinx: %s: cannot load the model", mp.dir);
        goto out_close;
    }
    int frate = cmd_ln_int32_r(e->config, "-frate");
    e->frate = frate > 0 ? frate : 100;
    *out = e;
    return TD_OK;

out_close:
    sphinx_close(e);
    return rc;
}

static const char *sphinx_model_name(const td_engine *e)
{
    return e->model_name;
}

/* ---- decoding one utterance -------------------------------------------- */

/* Fillers and markers the decoder puts between words: <s>, </s>, <sil>,
 * [NOISE], [SPEECH], ++BREATH++ (older models). */
static int is_filler(const char *w)
{
    return w[0] == '<' || w[0] == '[' || (w[0] == '+' && w[1] == '+') || w[0] == '\0';
}

/* Length of w without an alternate-pronunciation suffix ("read(2)" -> 4). */
static size_t word_len(const char *w)
{
    size_t n = strlen(w);
    if (n < 3 || w[n - 1] != ')')
        return n;
    size_t i = n - 1;
    while (i > 0 && w[i - 1] >= '0' && w[i - 1] <= '9')
        i--;
    if (i == n - 1 || i < 2 || w[i - 1] != '(')
        return n;
    return i - 1;
}

static void free_words(td_engine *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(e->words[i].text);
        e->words[i].text = NULL;
    }
}

/* Decode e->utt, whose first sample is at start (in samples from the start
 * of the source), and append its words as one segment. */
static int decode_utterance(td_engine *e, uint64_t start, td_transcript *out, td_error *err)
{
    ps_decoder_t *ps = e->ps;
    double t0 = (double)start / RATE;
    double t1 = (double)(start + e->utt_len) / RATE;
    size_t n = 0;
    int rc = TD_OK;

    if (ps_start_utt(ps) < 0)
        return td_error_set(err, TD_EENGINE, "sphinx: cannot start an utterance at %.2f s", t0);
    if (ps_process_raw(ps, e->utt, e->utt_len, FALSE, TRUE) < 0) {
        ps_end_utt(ps);
        return td_error_set(err, TD_EENGINE, "sphinx: decoding failed at %.2f s", t0);
    }
    if (ps_end_utt(ps) < 0)
        return td_error_set(err, TD_EENGINE, "sphinx: decoding failed at %.2f s", t0);

    logmath_t *lmath = ps_get_logmath(ps);
    td_buf_reset(&e->text);
    for (ps_seg_t *seg = ps_seg_iter(ps); seg; seg = ps_seg_next(seg)) {
        const char *w = ps_seg_word(seg);
        if (!w || is_filler(w))
            continue;
        if (n == e->words_cap) {
            /* Each word spans at least one frame, so this stays below
             * the utterance's frame count. */
            size_t cap = e->words_cap ? e->words_cap * 2 : 64;
            td_word *words = realloc(e->words, cap * sizeof *words);
            if (!words) {
                ps_seg_free(seg);
                rc = td_error_set(err, TD_ENOMEM, "sphinx: out of memory");
                goto out_free_words;
            }
            e->words = words;
            e->words_cap = cap;
        }
        int sf = 0, ef = 0;
        int32 ascr, lscr, lback;
        ps_seg_frames(seg, &sf, &ef);
        int32 lp = ps_seg_prob(seg, &ascr, &lscr, &lback);
        td_word *tw = &e->words[n];
        size_t len = word_len(w);
        tw->text = strndup(w, len);
        if (!tw->text) {
            ps_seg_free(seg);
            rc = td_error_set(err, TD_ENOMEM, "sphinx: out of memory");
            goto out_free_words;
        }
        n++;
        /* ps_seg_frames is inclusive: the word ends after frame ef. */
        tw->start = t0 + sf / e->frate;
        tw->end = t0 + (ef + 1) / e->frate;
        if (tw->end > t1)
            tw->end = t1;
        if (tw->start > tw->end)
            tw->start = tw->end;
        if (lmath) {
            double p = logmath_exp(lmath, lp);
            tw->prob = (float)(p < 0 ? 0 : p > 1 ? 1 : p);
        } else {
            tw->prob = -1.0f;
        }
        if ((e->text.len && td_buf_putc(&e->text, ' ')) ||
            td_buf_append(&e->text, tw->text, len)) {
            ps_seg_free(seg);
            rc = td_error_set(err, TD_ENOMEM, "sphinx: utterance text too long");
            goto out_free_words;
        }
    }
    if (n)
        rc = td_transcript_add(out, e->words[0].start, e->words[n - 1].end, e->text.data,
                               e->words, n, err);
out_free_words:
    free_words(e, n);
    return rc;
}

/* ---- segmentation ------------------------------------------------------ */

/* Decode every utterance the detector has completed. */
static int decode_ready(td_engine *e, td_transcript *out, td_error *err)
{
    td_vad_utterance u;
    while (td_vad_next(e->vad, &u)) {
        if (u.n_samples > UTT_MAX_SAMPLES)
            return td_error_set(err, TD_EENGINE, "sphinx: the detector handed over %zu samples, "
                                "more than its cap", u.n_samples);
        for (size_t i = 0; i < u.n_samples; i++)
            e->utt[i] = td_pcm_to_s16(u.samples[i]);
        e->utt_len = u.n_samples;
        int rc = decode_utterance(e, u.start, out, err);
        e->utt_len = 0;
        if (rc)
            return rc;
    }
    return TD_OK;
}

static int sphinx_transcribe(td_engine *e, const td_pcm_source *src, td_transcript *out,
                             td_progress_fn progress, void *user, td_error *err)
{
    td_vad_reset(e->vad);
    e->utt_len = 0;
    snprintf(out->language, sizeof out->language, "en");

    uint64_t done = 0;
    int rc = TD_OK;
    for (;;) {
        long got = src->read(src->ctx, e->chunk, CHUNK_SAMPLES, err);
        if (got < 0) {
            rc = (int)got;
            goto out_reset_vad;
        }
        if ((size_t)got > CHUNK_SAMPLES) {
            rc = td_error_set(err, TD_EINVAL, "sphinx: the source returned %ld samples, "
                              "more than the %d asked for", got, CHUNK_SAMPLES);
            goto out_reset_vad;
        }
        /* got == 0 ends the stream: an utterance still open is decoded
         * with the last partial frame. */
        if (td_vad_feed(e->vad, e->chunk, (size_t)got, got == 0)) {
            rc = td_error_set(err, TD_ENOMEM, "sphinx: out of memory");
            goto out_reset_vad;
        }
        rc = decode_ready(e, out, err);
        if (rc || got == 0)
            goto out_reset_vad;
        done += (uint64_t)got;
        if (progress && progress(user, (double)done / RATE)) {
            rc = td_error_set(err, TD_EABORT, "sphinx: stopped on request at %.1f s",
                              (double)done / RATE);
            goto out_reset_vad;
        }
    }

out_reset_vad:
    /* Leave no utterance behind for the next scene. */
    td_vad_reset(e->vad);
    return rc;
}

const td_engine_ops td_engine_sphinx = {
    .api_version = TD_ENGINE_API_VERSION,
    .name = "sphinx",
    .description = "PocketSphinx with the en-us model (CPU, English only)",
    .probe = sphinx_probe,
    .memory_need = sphinx_memory_need,
    .open = sphinx_open,
    .transcribe = sphinx_transcribe,
    .model_name = sphinx_model_name,
    .close = sphinx_close,
};
