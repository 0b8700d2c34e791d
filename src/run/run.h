/*
 * run.h: a whole run over an archive: plan, supervise workers, report.
 *
 *   scan archive -> check markers -> plan (devices x workers, engine)
 *     -> supervisor: start workers (fork+exec, affinity env before exec),
 *        hand out scenes from one queue as workers ask, watch heartbeats,
 *        restart dead workers, requeue or fail their scenes, write .failed
 *     -> summary
 *
 * The supervisor never loads a GPU runtime or a speech model; it only
 * probes the engine (cheap) so a run without a usable engine stops before
 * starting anything.
 */
#ifndef TD_RUN_RUN_H
#define TD_RUN_RUN_H

#include <stddef.h>

#include "archive/scan.h"
#include "device/devices.h"
#include "task/task.h"
#include "util/error.h"

typedef struct td_run_opts {
    const char *archive;
    const char *task;          /* "subtitles", "restore", or a list "subtitles,restore" */
    long limit;                /* pending scenes to take; -1 for all */
    int dry_run;
    int force;                 /* redo scenes already done */
    int retries;               /* extra attempts after a crash/transient error */
    int workers;               /* CPU workers; 0 = automatic */
    int cpu_workers;           /* CPU workers beside GPU workers; -1 = automatic */
    const char *devices;       /* "auto", "cpu", or a list: "0,1", PCI addresses
                                * ("pci:0000:03:00.0" or bare), UUIDs */
    const char *engine;        /* "auto" or a name */
    const char *model;
    const char *language;
    const char *formats;       /* "srt,vtt,json" */
    int threads;
    const char *models_dir;    /* --models-dir, or NULL */
    int beam_size;             /* 0: engine default */
    int compute;               /* whisper: enum td_wcompute (0 = auto) */
    int decode;                /* whisper: enum td_wdecode_mode (0 = default) */
    int batch;                 /* whisper, batched: windows at once; 0 = what fits */
    int streams;               /* whisper, batched: scenes a worker decodes at once;
                                * 0 = the default (2) */
    const char *backend;       /* whisper: "auto" (NULL), "cpu", "vulkan" */
    int translate;
    int allow_downgrade;       /* --model X may give way to a smaller model where X
                                * does not fit a card's free memory (vram.h) */
    double stall_timeout;      /* seconds without a heartbeat before a kill */
    int progress;              /* draw the terminal progress display */
    const char *self_exe;      /* path of the tapedeck binary, for exec */
    int verbosity;             /* passed to workers: 0 quiet .. 4 debug */
    /* restore: --restore-preset/-quality/-format/-size/-codec (validated
     * names, NULL for the default) */
    const char *restore_preset, *restore_quality, *restore_format, *restore_size, *restore_codec;
    const char *restore_opencl, *restore_cuda, *restore_vaapi, *restore_hwenc;
} td_run_opts;

void td_run_opts_default(td_run_opts *o);

typedef struct td_run_summary {
    size_t scenes_total;       /* in the archive */
    size_t scenes_planned;     /* taken in this run */
    size_t processed;
    size_t skipped;            /* already done (valid marker) */
    size_t failed;
    size_t left;               /* planned but not finished (interrupted) */
    double audio_seconds;
    double wall_seconds;
    long long frames;          /* video frames written (restore) */
    size_t unresolved;         /* stretches whisper kept although its checks failed */
    int interrupted;           /* stopped by a signal */
} td_run_summary;

/* One worker the plan will start. */
typedef struct td_plan_worker {
    int slot;
    const td_device *device;   /* NULL for a CPU worker */
    int threads;               /* host threads; 0 = td_plan.threads */
    /* GPU workers of the whisper engine on a GPU backend ([vram-check],
     * vram.h): the model and batch that fit the card's free memory */
    const char *model;         /* model file (in td_plan.chain); NULL = --model as given */
    const char *model_name;
    int batch;                 /* 0 = td_plan.batch */
    char vram_why[384];        /* the pick's reason; "" where nothing was checked */
} td_plan_worker;

enum td_scene_plan {
    TD_PLAN_SKIP = 0,          /* done: skip */
    TD_PLAN_NEW,               /* never done */
    TD_PLAN_REDO,              /* stale marker, failed before, or --force */
    TD_PLAN_REFUSE,            /* cannot be processed (name clash) */
    TD_PLAN_LATER,             /* pending but beyond --limit */
};

typedef struct td_plan {
    td_scene_list scenes;
    enum td_scene_plan *state; /* per scene */
    char **why;                /* per scene, reason text or NULL */
    size_t *queue;             /* scene indices to process, in order */
    size_t n_queue;
    size_t n_done;             /* skipped as done */
    size_t n_refused;
    td_device_list devices;
    td_plan_worker workers[TD_MAX_DEVICES];
    size_t n_workers;
    const char *engine;        /* chosen engine name */
    char engine_note[256];     /* why it was chosen */
    char device_note[256];
    char backend[16];          /* where the engine computes: "cpu", "none", ... */
    int threads;               /* per worker when --threads is not given; 0 = engine's choice */
    int batch;                 /* whisper, batched decoding: windows per worker; 0 = n/a */
    int streams;               /* whisper, batched: scenes a worker decodes at once; 0 = n/a */
    const td_task_ops *tasks[TD_MAX_TASKS]; /* --task, in dependency order */
    size_t n_tasks;
    struct td_vram_chain *chain; /* GPU workers' models (vram.h), or NULL; owned */
    char vram_note[512];       /* cards left without a worker, and why */
} td_plan;

/* Scan, check markers, choose engine and workers. Writes nothing. */
int td_plan_build(const td_run_opts *o, td_plan *plan, td_error *err);
void td_plan_release(td_plan *plan);

/* Only the devices and workers part of the plan (what `tapedeck devices`
 * shows): detects devices into plan->devices, fills workers, threads,
 * device_note. plan->engine and plan->backend must be set (backend "cpu"
 * when unsure). */
int td_plan_devices(const td_run_opts *o, td_plan *plan, td_error *err);

/* Host threads each GPU worker keeps for feeding its card (decoding the
 * audio, the mel spectrogram) when the card does the model's work. */
#define TD_GPU_FEED_THREADS 2

/* CPU workers beside n_gpu GPU workers when --cpu-workers is not given:
 * none while the GPU workers compute on the CPU themselves (gpu_computes
 * 0: another worker would only take their cores); otherwise the cores
 * left after each GPU worker's feeding threads, in whole Whisper CPU
 * workers. */
int td_plan_default_cpu_workers(long ncpu, size_t n_gpu, int gpu_computes);

/* The seed's log lines, without their prefixes:
 * "CPU 16 | GPUs [nvidia 0000:17:00.0 H100 79.6 GiB] | backend=cpu" and
 * "[gpu0 0000:17:00.0, cpu1]". */
void td_plan_describe_hardware(const td_plan *plan, long ncpu, char *out, size_t cap);
void td_plan_describe_workers(const td_plan *plan, char *out, size_t cap);

/* Run the plan (not for dry runs). Fills sum. Returns TD_OK when the run
 * completed (even with failed scenes) or an error that stopped it. */
int td_run_execute(const td_run_opts *o, td_plan *plan, td_run_summary *sum, td_error *err);

#endif
