/* plan.c: what a run will do: scenes to take, engine, workers (see run.h). */
#include "run/run.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "archive/marker.h"
#include "asr/engine.h"
#include "device/affinity.h"
#include "run/vram.h"
#include "whisper/backend.h"
#include "whisper/decode.h"
#include "whisper/models.h"
#include "out/formats.h"
#include "task/subtitles.h"
#include "util/log.h"

void td_run_opts_default(td_run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->task = "subtitles";
    o->limit = -1;
    o->retries = 2;
    o->devices = "auto";
    o->cpu_workers = -1;
    o->engine = "auto";
    o->formats = "srt";
    o->stall_timeout = 300.0;
    o->verbosity = 2;
}

/* Whisper on CPUs: a few workers with several threads each rather than
 * one single-threaded worker per core, so that a model is loaded a few
 * times, not once per core (a medium model is 1.5 GB), and a scene is
 * done in minutes rather than hours. The matrix products scale well to 8
 * threads; beyond that a second worker is the better use of cores. */
#define WHISPER_THREADS_PER_WORKER 8

int td_plan_default_cpu_workers(long ncpu, size_t n_gpu, int gpu_computes)
{
    if (!gpu_computes || ncpu < 1)
        return 0;
    long spare = ncpu - (long)n_gpu * TD_GPU_FEED_THREADS;
    long n = spare >= WHISPER_THREADS_PER_WORKER ? spare / WHISPER_THREADS_PER_WORKER : 0;
    return n > TD_MAX_DEVICES ? TD_MAX_DEVICES : (int)n;
}

/* One --devices entry: an index into the table, "pci:ADDR", a bare PCI
 * address (any domain width) or a UUID. */
static const td_device *match_device(const td_device_list *l, const char *tok)
{
    char *end;
    long idx = strtol(tok, &end, 10);
    if (end != tok && *end == '\0')
        return idx >= 0 && (size_t)idx < l->count ? &l->items[idx] : NULL;
    if (strncasecmp(tok, "pci:", 4) == 0)
        tok += 4;
    for (size_t i = 0; i < l->count; i++)
        if (td_affinity_same_pci(tok, l->items[i].pci) ||
            (l->items[i].uuid[0] && strcasecmp(tok, l->items[i].uuid) == 0))
            return &l->items[i];
    return NULL;
}

/* [vram-check]: on a GPU backend, each chosen card gets the largest
 * model of the chain, then the largest batch, that fit its free memory
 * (vram.h); a card no installed model fits is left without a worker, and
 * a pinned --model that does not fit stops the run unless
 * --allow-downgrade. picks[i] is chosen[i]'s; *n_chosen shrinks by the
 * cards dropped. Nothing is checked (picks zeroed) off the whisper engine
 * or a GPU backend, or where no model is installed (the engine's probe
 * says so). */
static int plan_vram(const td_run_opts *o, td_plan *p, const td_device **chosen, size_t *n_chosen,
                     td_vram_pick *picks, td_error *err)
{
    memset(picks, 0, *n_chosen * sizeof *picks);
    const td_wbackend_ops *gpu = p->backend[0] ? td_wbackend_find(p->backend) : NULL;
    if (*n_chosen == 0 || !p->engine || strcmp(p->engine, "whisper") != 0 || !gpu ||
        gpu == &td_wbackend_cpu || !gpu->memory_need)
        return TD_OK;
    if (!p->chain && !(p->chain = calloc(1, sizeof *p->chain)))
        return td_error_set(err, TD_ENOMEM, "out of memory");
    td_error cerr = {0};
    if (td_vram_chain_installed(o->models_dir, o->model, o->language, o->translate,
                                o->allow_downgrade, p->chain, &cerr) != TD_OK) {
        snprintf(p->vram_note, sizeof p->vram_note, "[vram-check] not checked: %s", cerr.msg);
        p->chain->n = 0;
        return TD_OK;
    }
    td_vram_ask ask = {.backend = gpu,
                       .batched = strcmp(td_wdecode_mode_name(o->decode), "batched") == 0,
                       .batch = o->batch, .beam_size = o->beam_size};
    /* scenes at once share the worker's backend, batch windows each (one
     * at a time under a task list, as td_plan_build decides) */
    ask.streams = ask.batched && p->n_tasks <= 1
                      ? (o->streams > 0 ? o->streams : TD_WHISPER_DEFAULT_STREAMS)
                      : 1;
    size_t kept = 0;
    for (size_t i = 0; i < *n_chosen; i++) {
        td_vram_pick pk;
        td_vram_pick_device(chosen[i], p->chain, &ask, &pk);
        if (!pk.fits && p->chain->pinned && !o->allow_downgrade)
            return td_error_set(err, TD_EUNAVAILABLE,
                                "--model %s does not fit %s %s: %s (--allow-downgrade lets a "
                                "smaller model take its place)",
                                p->chain->items[0].name, chosen[i]->vendor, chosen[i]->pci, pk.why);
        if (!pk.fits) {
            size_t used = strlen(p->vram_note);
            snprintf(p->vram_note + used, sizeof p->vram_note - used,
                     "%s[vram-check] %s %s: no worker: %s", used ? "; " : "", chosen[i]->vendor,
                     chosen[i]->pci, pk.why);
            continue;
        }
        chosen[kept] = chosen[i];
        picks[kept++] = pk;
    }
    *n_chosen = kept;
    return TD_OK;
}

int td_plan_devices(const td_run_opts *o, td_plan *p, td_error *err)
{
    int rc = td_devices_detect(&p->devices, err);
    if (rc)
        return rc;
    /* sources that did not answer (no library, no driver): not errors */
    if (p->devices.notes[0])
        td_debug("[devices] %s", p->devices.notes);
    p->n_workers = 0;
    const td_device *chosen[TD_MAX_DEVICES];
    size_t n_chosen = 0;
    if (strcmp(o->devices, "cpu") == 0) {
        /* none */
    } else if (strcmp(o->devices, "auto") == 0) {
        for (size_t i = 0; i < p->devices.count; i++)
            chosen[n_chosen++] = &p->devices.items[i];
    } else {
        char copy[1024];
        if (strlen(o->devices) >= sizeof copy)
            return td_error_set(err, TD_EINVAL, "--devices: list too long");
        snprintf(copy, sizeof copy, "%s", o->devices);
        char *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            const td_device *match = match_device(&p->devices, tok);
            if (!match)
                return td_error_set(err, TD_EINVAL,
                                    "--devices: no device '%s' (see `tapedeck devices`; %zu found)",
                                    tok, p->devices.count);
            for (size_t i = 0; i < n_chosen; i++)
                if (chosen[i] == match)
                    return td_error_set(err, TD_EINVAL, "--devices: '%s' given twice", tok);
            chosen[n_chosen++] = match;
        }
    }
    td_vram_pick picks[TD_MAX_DEVICES];
    rc = plan_vram(o, p, chosen, &n_chosen, picks, err);
    if (rc)
        return rc;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    if (n_chosen > 0) {
        /* One worker per GPU: a card shared by two workers was the seed
         * pipeline's failure. */
        for (size_t i = 0; i < n_chosen; i++) {
            td_plan_worker *w = &p->workers[p->n_workers++];
            *w = (td_plan_worker){.slot = (int)i, .device = chosen[i]};
            if (picks[i].fits) {
                const td_vram_model *m = &p->chain->items[picks[i].model];
                w->model = m->path;
                w->model_name = m->name;
                w->batch = strcmp(td_wdecode_mode_name(o->decode), "batched") == 0 ? picks[i].batch : 0;
                snprintf(w->vram_why, sizeof w->vram_why, "%s", picks[i].why);
            }
        }
        int gpu_computes = p->backend[0] && strcmp(p->backend, "cpu") != 0 && strcmp(p->backend, "none") != 0;
        int auto_cpu = o->cpu_workers < 0;
        long n_cpu = auto_cpu ? td_plan_default_cpu_workers(ncpu, n_chosen, gpu_computes) : o->cpu_workers;
        if (n_cpu > TD_MAX_DEVICES - (long)n_chosen)
            n_cpu = TD_MAX_DEVICES - (long)n_chosen;
        if (gpu_computes) {
            /* the cards do the model's work: GPU workers keep their
             * feeding threads, CPU workers share the rest */
            long rest = ncpu - (long)n_chosen * TD_GPU_FEED_THREADS;
            for (size_t i = 0; i < n_chosen; i++)
                p->workers[i].threads = TD_GPU_FEED_THREADS;
            p->threads = n_cpu > 0 && rest / n_cpu > 0 ? (int)(rest / n_cpu) : 1;
        } else {
            /* every worker computes on the CPU: they share the cores */
            long all = (long)n_chosen + n_cpu;
            p->threads = ncpu > all ? (int)(ncpu / all) : 1;
        }
        for (long i = 0; i < n_cpu; i++)
            p->workers[p->n_workers++] = (td_plan_worker){.slot = (int)(n_chosen + (size_t)i), .device = NULL};
        snprintf(p->device_note, sizeof p->device_note, "%zu GPU worker(s), one per card%s%ld CPU worker(s) %s",
                 n_chosen, n_cpu || !auto_cpu ? " + " : "; ", n_cpu,
                 !auto_cpu ? "(--cpu-workers)"
                 : gpu_computes ? "on the cores the GPU workers' feeding threads leave"
                                : "beside them: the GPU workers compute on the CPU cores themselves");
        return TD_OK;
    }
    /* Whisper, and restore alone (codecs and filters thread well), get a
     * few workers with several threads each. */
    int whisper = p->engine && (strcmp(p->engine, "whisper") == 0 || strcmp(p->engine, "none") == 0);
    long per = ncpu < WHISPER_THREADS_PER_WORKER ? ncpu : WHISPER_THREADS_PER_WORKER;
    long n = o->workers > 0 ? o->workers : o->cpu_workers > 0 ? o->cpu_workers : whisper ? ncpu / per : ncpu;
    if (n > TD_MAX_DEVICES)
        n = TD_MAX_DEVICES;
    for (long i = 0; i < n; i++)
        p->workers[p->n_workers++] = (td_plan_worker){.slot = (int)i, .device = NULL};
    if (whisper) {
        p->threads = (int)(ncpu / n > 0 ? ncpu / n : 1);
        snprintf(p->device_note, sizeof p->device_note, "%ld CPU worker(s) x %d threads", n,
                 o->threads > 0 ? o->threads : p->threads);
    } else {
        snprintf(p->device_note, sizeof p->device_note, "%ld CPU worker(s)%s", n,
                 o->workers > 0 || o->cpu_workers > 0 ? "" : " (one per core)");
    }
    return TD_OK;
}

static void append(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *out, size_t cap, const char *fmt, ...)
{
    size_t used = strlen(out);
    if (used >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out + used, cap - used, fmt, ap);
    va_end(ap);
}

void td_plan_describe_hardware(const td_plan *p, long ncpu, char *out, size_t cap)
{
    out[0] = '\0';
    append(out, cap, "CPU %ld | GPUs [", ncpu);
    for (size_t i = 0; i < p->devices.count; i++) {
        const td_device *d = &p->devices.items[i];
        append(out, cap, "%s%s %s %s", i ? ", " : "", d->vendor, d->pci, d->name);
        if (d->mem_total > 0)
            append(out, cap, " %.1f GiB", (double)d->mem_total / 1073741824.0);
    }
    /* the GPU workers' backend where there are GPU workers, else the CPU */
    int gpu_workers = 0;
    for (size_t i = 0; i < p->n_workers; i++)
        gpu_workers += p->workers[i].device != NULL;
    append(out, cap, "] | backend=%s", gpu_workers && p->backend[0] ? p->backend : "cpu");
}

void td_plan_describe_workers(const td_plan *p, char *out, size_t cap)
{
    out[0] = '\0';
    append(out, cap, "[");
    for (size_t i = 0; i < p->n_workers; i++) {
        const td_plan_worker *w = &p->workers[i];
        if (w->device)
            append(out, cap, "%sgpu%d %s", i ? ", " : "", w->slot, w->device->pci);
        else
            append(out, cap, "%scpu%d", i ? ", " : "", w->slot);
    }
    append(out, cap, "]");
}

/* Bytes of memory available now (MemAvailable), or -1 when unknown. */
static int64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return -1;
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1)
            break;
    fclose(f);
    return kb > 0 ? (int64_t)kb * 1024 : -1;
}

/* Whisper's batched decoding: --batch, or the largest batch whose memory
 * need fits each worker's share of the memory available now (three
 * quarters of it, split among the workers), with its reason in note. */
static int choose_batch(const td_run_opts *o, const td_engine_config *cfg, td_plan *p,
                        char *note, size_t cap, td_error *err)
{
    if (o->batch > 0) {
        /* the engine must be able to open with it: sequences (batch x
         * beam) within the decoder's and the backend's limits */
        if (td_engine_whisper.memory_need(cfg) < 0)
            return td_error_set(err, TD_EINVAL, "--batch %d with beam size %d: more than %d "
                                "sequences at once, or a model that cannot batch", o->batch,
                                o->beam_size > 0 ? o->beam_size : 5, TD_WDEC_MAX_SEQS);
        p->batch = o->batch;
        snprintf(note, cap, ", batch %d (asked for)", p->batch);
        return TD_OK;
    }
    int64_t avail = mem_available();
    size_t workers = p->n_workers > 0 ? p->n_workers : 1;
    if (avail <= 0) {
        p->batch = 1;
        snprintf(note, cap, ", batch 1 (memory available unknown)");
        return TD_OK;
    }
    int64_t budget = avail / 4 * 3 / (int64_t)workers;
    p->batch = td_whisper_pick_batch(cfg, budget, TD_WDEC_MAX_BATCH);
    snprintf(note, cap, ", batch %d (fits %lld MB per worker)", p->batch,
             (long long)(budget >> 20));
    return TD_OK;
}

static int set_why(td_plan *p, size_t i, const char *why)
{
    p->why[i] = strdup(why);
    return p->why[i] ? TD_OK : TD_ENOMEM;
}

int td_plan_build(const td_run_opts *o, td_plan *p, td_error *err)
{
    memset(p, 0, sizeof *p);
    int rc = td_task_list_parse(o->task, p->tasks, &p->n_tasks, err);
    if (rc)
        return rc;
    td_restore_args ra = {o->restore_preset, o->restore_quality, o->restore_format, o->restore_size,
                          o->restore_codec, o->restore_opencl, o->restore_cuda, o->restore_vaapi,
                          o->restore_hwenc};
    td_task_config tcfg;
    rc = td_task_config_build(p->tasks, p->n_tasks, o->formats, &ra, "cpu", o->threads, &tcfg, err);
    if (rc)
        return rc;
    if (!td_task_list_needs_engine(p->tasks, p->n_tasks)) {
        /* Restore alone: no speech engine is probed, opened or needed. */
        p->engine = "none";
        snprintf(p->engine_note, sizeof p->engine_note, "none (task %s needs no speech engine)", o->task);
        snprintf(p->backend, sizeof p->backend, "none");
        rc = td_plan_devices(o, p, err);
        if (rc)
            return rc;
        goto scan;
    }

    td_engine_config cfg = {.language = o->language, .model = o->model, .device = "cpu",
                            .threads = o->threads, .models_dir = o->models_dir,
                            .beam_size = o->beam_size, .compute = o->compute,
                            .translate = o->translate, .decode = o->decode, .batch = o->batch,
                            .backend = o->backend,
                            .streams = o->streams > 0 ? o->streams : TD_WHISPER_DEFAULT_STREAMS};
    const td_engine_ops *ops = NULL;
    rc = td_engine_select(o->engine, &cfg, &ops, err);
    if (rc)
        return rc;
    p->engine = ops->name;
    char model[64] = "", compute[32] = "";
    if (strcmp(ops->name, "whisper") == 0) {
        /* Say which model: the worker resolves the same name the same way. */
        td_wmodels_path sp;
        char path[PATH_MAX], name[NAME_MAX + 1];
        td_error merr = {0};
        td_wmodels_search_path(o->models_dir, &sp);
        if (td_wmodels_resolve(&sp, o->model, o->language, path, sizeof path, &merr) == TD_OK) {
            td_wmodels_name_of(path, name, sizeof name);
            snprintf(model, sizeof model, ", model %s", name);
        }
        /* The linear layers' compute type: AUTO resolves on this CPU, the
         * same one the workers run on. */
        snprintf(compute, sizeof compute, ", compute %s",
                 td_wcompute_name(td_wcompute_resolve((enum td_wcompute)cfg.compute)));
    }
    if (strcmp(o->engine, "auto") == 0 && strcmp(ops->name, "whisper") == 0) {
        snprintf(p->engine_note, sizeof p->engine_note, "whisper%s (auto: a Whisper model is installed)%s",
                 model, compute);
    } else if (strcmp(o->engine, "auto") == 0) {
        td_error why = {0};
        td_engine_whisper.probe(&cfg, &why);
        snprintf(p->engine_note, sizeof p->engine_note, "%s (auto: whisper cannot run: %s)",
                 ops->name, why.msg);
    } else
        snprintf(p->engine_note, sizeof p->engine_note, "%s%s (asked for)%s", ops->name, model, compute);

    /* Where the engine computes on GPU workers: the whisper engine opens
     * the Vulkan backend there when it is built and not refused
     * (--backend cpu), and falls back to the CPU with the reason logged
     * when the card cannot run it (asr/whisper.c); the supervisor loads
     * no GPU runtime to find out first. CPU workers beside the GPU
     * workers get cores when the cards compute. */
    const char *gpu_backend = td_wbackend_cpu.name;
    if (strcmp(ops->name, "whisper") == 0 && !(o->backend && strcmp(o->backend, "cpu") == 0) &&
        td_wbackend_find("vulkan"))
        gpu_backend = "vulkan";
    snprintf(p->backend, sizeof p->backend, "%s",
             strcmp(ops->name, "whisper") == 0 ? gpu_backend : "cpu");
    rc = td_plan_devices(o, p, err);
    if (rc)
        return rc;
    if (strcmp(ops->name, "whisper") == 0) {
        /* how the scenes' speech is decoded: shown in the plan, passed to
         * the workers, recorded in the markers */
        char batch[96] = "";
        int is_batched = strcmp(td_wdecode_mode_name(o->decode), "batched") == 0;
        if (is_batched && (rc = choose_batch(o, &cfg, p, batch, sizeof batch, err)) != TD_OK)
            return rc;
        if (is_batched) {
            /* scenes at once share the worker's batch memory (choose_batch
             * counted them); restore work runs one scene at a time */
            p->streams = td_task_list_needs_engine(p->tasks, p->n_tasks) && p->n_tasks == 1
                             ? cfg.streams
                             : 1;
            size_t bl = strlen(batch);
            snprintf(batch + bl, sizeof batch - bl, ", %d scene%s at once", p->streams,
                     p->streams == 1 ? "" : "s");
        }
        size_t len = strlen(p->engine_note);
        snprintf(p->engine_note + len, sizeof p->engine_note - len, ", decode %s%s, backend %s",
                 td_wdecode_mode_name(o->decode), batch,
                 o->backend ? o->backend : "auto (vulkan on GPU workers where it can run)");
    }

scan:
    rc = td_scan_archive(o->archive, &p->scenes, err);
    if (rc)
        return rc;
    size_t n = p->scenes.count;
    p->state = calloc(n ? n : 1, sizeof *p->state);
    p->why = calloc(n ? n : 1, sizeof *p->why);
    p->queue = calloc(n ? n : 1, sizeof *p->queue);
    if (!p->state || !p->why || !p->queue)
        return td_error_set(err, TD_ENOMEM, "out of memory planning %zu scenes", n);

    long taken = 0;
    for (size_t i = 0; i < n; i++) {
        const td_scene *s = &p->scenes.items[i];
        if (s->clash_with >= 0) {
            p->state[i] = TD_PLAN_REFUSE;
            char why[512];
            snprintf(why, sizeof why, "outputs would overwrite those of %s",
                     p->scenes.items[s->clash_with].name);
            if (set_why(p, i, why))
                return td_error_set(err, TD_ENOMEM, "out of memory");
            p->n_refused++;
            continue;
        }
        /* Done only when every task of the list is; otherwise the first
         * task that is not says why. */
        enum td_marker_state ms = TD_MARKER_DONE;
        char why[TD_ERROR_MSG_MAX + 64] = "";
        for (size_t t = 0; t < p->n_tasks && ms == TD_MARKER_DONE; t++) {
            td_error merr = {0};
            if (p->tasks[t]->check(s, &tcfg, &ms, why, sizeof why, &merr) != TD_OK) {
                ms = TD_MARKER_STALE;
                snprintf(why, sizeof why, "%s", merr.msg);
            }
            if (ms != TD_MARKER_DONE && p->n_tasks > 1 && why[0]) {
                char tagged[sizeof why];
                snprintf(tagged, sizeof tagged, "%s: %s", p->tasks[t]->name, why);
                snprintf(why, sizeof why, "%s", tagged);
            }
        }
        if (ms == TD_MARKER_DONE && !o->force) {
            p->state[i] = TD_PLAN_SKIP;
            p->n_done++;
            continue;
        }
        if (o->limit >= 0 && taken >= o->limit) {
            p->state[i] = TD_PLAN_LATER;
            continue;
        }
        if (ms == TD_MARKER_NONE) {
            p->state[i] = TD_PLAN_NEW;
        } else {
            p->state[i] = TD_PLAN_REDO;
            const char *what = ms == TD_MARKER_DONE ? "forced" : ms == TD_MARKER_FAILED ? "failed before" : "stale";
            char text[TD_ERROR_MSG_MAX + 160];
            snprintf(text, sizeof text, "%s%s%s", what, why[0] ? ": " : "", why);
            if (set_why(p, i, text))
                return td_error_set(err, TD_ENOMEM, "out of memory");
        }
        p->queue[p->n_queue++] = i;
        taken++;
    }
    return TD_OK;
}

void td_plan_release(td_plan *p)
{
    free(p->chain);
    if (p->why)
        for (size_t i = 0; i < p->scenes.count; i++)
            free(p->why[i]);
    free(p->why);
    free(p->state);
    free(p->queue);
    td_scene_list_release(&p->scenes);
    memset(p, 0, sizeof *p);
}
