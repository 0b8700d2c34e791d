/*
 * worker.h: the worker process ("tapedeck worker", started by the
 * supervisor with fork+exec; not for users).
 *
 * Life cycle:
 *   exec -> verify GPU affinity (if pinned) -> open engine -> READY
 *   -> loop { wait for SCENE | QUIT; run the task; DONE | FAIL | SKIP }
 *   -> exit 0 on QUIT or when stdin closes (the supervisor died).
 * The worker ignores SIGINT and SIGTERM: they reach the whole process group
 * (Ctrl-C, `timeout`, a service stop) and the supervisor decides what they
 * mean. SIGUSR1 makes it abandon the scene in flight at the next progress
 * point and exit (within 10 s, by alarm, wherever it is stuck); it is what
 * the supervisor sends to stop now, and what the worker gets when the
 * supervisor dies (PR_SET_PDEATHSIG, set before exec).
 * It writes its own outputs and .done markers; the supervisor writes
 * .failed markers.
 *
 * Out of memory ([vram-safety]): when the engine cannot open, or a scene
 * fails, for want of memory (TD_ENOMEM: a GPU whose memory another
 * program took after the plan was made), the worker frees its engine,
 * halves the batch, or once at batch 1 takes the next smaller model of
 * the chain (run/vram.h; below --model only with --allow-downgrade),
 * reopens and retries the scene, logging each step. When even the
 * smallest model does not fit, the scene is reported as FAIL <seq> vram:
 * the supervisor hands it to a CPU worker without charging an attempt.
 * With several scenes at once (--streams) they share one backend, so one
 * scene's out of memory stops every scene in flight: each waits with its
 * scene unfinished (nothing of it written yet), the engine and its clones
 * are freed and reopened a step down, and each scene runs again from its
 * start; the supervisor sees them in flight all along, then DONE (or FAIL
 * vram each).
 * TAPEDECK_TEST_VK_FAIL_ALLOC=N[,N2,...] (tests) makes the N-th Vulkan
 * allocation of the worker's first engine open fail as out of memory, the
 * N2-th of its second, and so on; TAPEDECK_TEST_VK_FAIL_SUBMIT=N[,N2,...]
 * the N-th Vulkan queue submission after the first open (a scene's
 * encoder or decoder), the N2-th after the second, and so on.
 */
#ifndef TD_RUN_WORKER_H
#define TD_RUN_WORKER_H

typedef struct td_worker_opts {
    const char *archive;      /* archive root (for relative names) */
    const char *task;         /* "subtitles", "restore" or "subtitles,restore" */
    const char *engine;       /* engine name (already chosen by the supervisor) */
    const char *model;        /* may be NULL */
    const char *language;     /* may be NULL */
    const char *formats;      /* "srt,vtt,json" */
    const char *vendor;       /* GPU vendor, or NULL for a CPU worker */
    const char *pci;          /* planned PCI address, or NULL */
    int index;                /* worker slot, for log prefixes */
    int force;                /* redo scenes even with a valid .done */
    int threads;
    const char *models_dir;   /* may be NULL */
    int beam_size;            /* 0: engine default */
    int compute;              /* whisper: enum td_wcompute (0 = auto) */
    int decode;               /* whisper: enum td_wdecode_mode (0 = default) */
    int batch;                /* whisper, batched: windows at once (0 = 1) */
    int streams;              /* whisper, batched: scenes at once, each in its own
                               * thread, their windows batched together (0 = 1) */
    const char *backend;      /* whisper: "auto" (NULL), "cpu", "vulkan" */
    int translate;
    int allow_downgrade;      /* out of memory may step below --model ([vram-safety]) */
    /* restore settings as given on the command line (NULL: default) */
    const char *restore_preset, *restore_quality, *restore_format, *restore_size, *restore_codec;
    const char *restore_opencl, *restore_cuda, *restore_vaapi, *restore_hwenc;
} td_worker_opts;

/* Runs until QUIT; returns the process exit code. */
int td_worker_main(const td_worker_opts *opts);

#define TD_WORKER_EXIT_FATAL 3  /* cannot work at all (engine, affinity) */

#endif
