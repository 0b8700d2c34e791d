/*
 * supervisor.c: starting workers, handing out scenes, surviving crashes.
 *
 * State of a worker slot:
 *
 *   OFF --start--> STARTING --READY--> IDLE --SCENE--> BUSY --DONE/FAIL/SKIP--> IDLE
 *    ^                |                  |               |
 *    |                +------ pipe EOF (process ended) --+--> reaped --> OFF
 *    +-- restarted unless the run is stopping, the slot failed to start
 *        three times in a row, or the worker said FATAL (slot DEAD)
 *
 *   IDLE or STARTING --QUIT--> QUITTING --EOF--> reaped; a worker that
 *   reported "aborted", or whose stdin is gone, is QUITTING too and gets
 *   no scene. Timers: BUSY or STARTING without a heartbeat for
 *   --stall-timeout, or QUITTING for 30 s, and the worker is SIGKILLed.
 *
 * A scene is QUEUED, RUNNING on one worker, or finished (DONE, SKIPPED,
 * FAILED). When its worker ends while RUNNING (signal, OOM kill, abort,
 * stall kill), the scene costs an attempt and goes back to the queue, or
 * fails with a .failed marker once its attempts exceed --retries. A
 * worker-reported error of kind "input" (bad file) fails it at once:
 * retrying cannot help.
 *
 * A worker may hold several scenes at once (whisper's --streams: READY
 * says how many it takes; BUSY while it holds any). Accounting stays per
 * scene. When such a worker dies holding more than one, none is charged
 * (which one killed it is unknown): each goes back to the queue marked
 * "alone", and is handed only to a worker holding nothing, which then
 * gets nothing else until it is done; a death then is charged as usual.
 *
 * The loop is single-threaded around poll(): workers' control and log
 * pipes plus a self-pipe that turns SIGINT/SIGTERM into events. The first
 * such signal stops the hand-out and lets scenes in flight finish; the
 * second sends the workers SIGUSR1 (abandon now), then SIGKILL after 5 s.
 */
#include "run/run.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "asr/engine.h"
#include "archive/marker.h"
#include "device/affinity.h"
#include "out/formats.h"
#include "run/progress.h"
#include "run/protocol.h"
#include "util/atomic.h"
#include "util/log.h"
#include "whisper/backend.h"

extern char **environ;

#define RING_LINES 20
#define RING_LINE_MAX 400
#define MAX_START_FAILURES 3
#define STOP_GRACE_SECONDS 5.0

enum worker_state { W_OFF, W_STARTING, W_IDLE, W_BUSY, W_QUITTING, W_DEAD };
enum scene_state { S_QUEUED, S_RUNNING, S_DONE, S_SKIPPED, S_FAILED, S_LEFT };

typedef struct worker {
    int slot;
    const td_device *device;
    int threads;                /* from the plan; 0: plan->threads */
    const char *model;          /* the plan's model for its card ([vram-check]); NULL: --model */
    int batch;                  /* the plan's batch for its card; 0: plan->batch */
    enum worker_state state;
    pid_t pid;
    int cmd_fd, ctl_fd, log_fd;
    int ctl_eof, log_eof;
    td_linebuf ctl, log;
    long scenes[TD_WHISPER_MAX_STREAMS]; /* indexes into plan->queue, oldest first */
    int n_scenes;
    int capacity;               /* scenes it takes at once (READY); 1 before */
    int alone;                  /* it holds a scene that must run alone */
    double started_at, last_beat, scene_seconds;
    long long frames_done, frames_total;  /* video tasks, from BEAT */
    double fps;
    int start_failures;
    unsigned processed, skipped, failed; /* this process */
    char ring[RING_LINES][RING_LINE_MAX];
    int ring_count, ring_next;
    char fatal[TD_ERROR_MSG_MAX];
    char kill_reason[128];      /* why we killed it, if we did */
    td_device_identity seen;    /* the card its runtime reported (READY) */
    double quit_at;             /* when it was told to quit */
    int term_sent;
} worker;

typedef struct supervisor {
    const td_run_opts *o;
    td_plan *plan;
    td_run_summary *sum;
    worker workers[TD_MAX_DEVICES];
    size_t n_workers;
    enum scene_state *scene_state; /* per queue position */
    int *attempts;
    unsigned char *alone;          /* per queue position: run it alone next time */
    unsigned char *cpu_only;       /* per queue position: no GPU's memory fits it ([vram-safety]) */
    size_t *fifo;                  /* queue positions waiting */
    size_t fifo_head, fifo_len;
    size_t finished;
    int64_t bytes_total, bytes_finished;
    int stopping, stop_now;
    double stop_now_at;
    double t0;
    td_progress *progress;
} supervisor;

static int g_signal_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char c = (unsigned char)sig;
    if (write(g_signal_pipe[1], &c, 1) < 0) {
        /* nothing to do: the pipe is full, the signal is already noted */
    }
    errno = saved;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static const td_scene *scene_at(supervisor *sv, size_t qpos)
{
    return &sv->plan->scenes.items[sv->plan->queue[qpos]];
}

/* ---- the queue -------------------------------------------------------- */

static void fifo_push(supervisor *sv, size_t qpos)
{
    size_t cap = sv->plan->n_queue;
    sv->fifo[(sv->fifo_head + sv->fifo_len) % cap] = qpos;
    sv->fifo_len++;
    sv->scene_state[qpos] = S_QUEUED;
}

/* The place in the queue (0 = its head) of the first waiting scene worker
 * w may take (a GPU worker takes none that fits no GPU's memory); 0 when
 * there is none. */
static int fifo_find_for(const supervisor *sv, const worker *w, size_t *place)
{
    size_t cap = sv->plan->n_queue;
    for (size_t i = 0; i < sv->fifo_len; i++) {
        if (w->device && sv->cpu_only[sv->fifo[(sv->fifo_head + i) % cap]])
            continue;
        *place = i;
        return 1;
    }
    return 0;
}

/* That scene (fifo_find_for), out of the queue; 0 when there is none. */
static int fifo_pop_for(supervisor *sv, const worker *w, size_t *qpos)
{
    size_t cap = sv->plan->n_queue, i;
    if (!fifo_find_for(sv, w, &i))
        return 0;
    size_t q = sv->fifo[(sv->fifo_head + i) % cap];
    /* close the gap: the scenes before it move one place back */
    for (size_t k = i; k > 0; k--)
        sv->fifo[(sv->fifo_head + k) % cap] = sv->fifo[(sv->fifo_head + k - 1) % cap];
    sv->fifo_head = (sv->fifo_head + 1) % cap;
    sv->fifo_len--;
    *qpos = q;
    return 1;
}

static size_t cpu_only_queued(const supervisor *sv)
{
    size_t n = 0, cap = sv->plan->n_queue;
    for (size_t i = 0; i < sv->fifo_len; i++)
        n += sv->cpu_only[sv->fifo[(sv->fifo_head + i) % cap]];
    return n;
}

/* ---- progress ---------------------------------------------------------- */

static void update_progress(supervisor *sv, int finished)
{
    if (!sv->progress)
        return;
    td_progress_state st;
    memset(&st, 0, sizeof st);
    st.scenes_total = sv->plan->n_queue;
    st.scenes_finished = sv->finished;
    st.failed = sv->sum->failed;
    st.audio_seconds = sv->sum->audio_seconds;
    st.frames = sv->sum->frames;
    st.bytes_total = sv->bytes_total;
    st.bytes_finished = sv->bytes_finished;
    st.elapsed = now_s() - sv->t0;
    st.stopping = sv->stopping;
    st.n_workers = sv->n_workers < TD_PROGRESS_MAX_WORKERS ? sv->n_workers : TD_PROGRESS_MAX_WORKERS;
    static const char *names[] = {"off", "starting", "idle", "busy", "quitting", "stopped"};
    for (size_t i = 0; i < st.n_workers; i++) {
        worker *w = &sv->workers[i];
        td_progress_worker *pw = &st.workers[i];
        pw->pid = (int)w->pid;
        snprintf(pw->device, sizeof pw->device, "%s", w->device ? w->device->pci : "cpu");
        pw->state = names[w->state];
        if (w->state == W_BUSY && w->n_scenes > 0) {
            td_printable(scene_at(sv, (size_t)w->scenes[0])->rel, pw->scene, sizeof pw->scene);
            pw->scene_seconds = w->scene_seconds;
            pw->frames_done = w->frames_done;
            pw->frames_total = w->frames_total;
            pw->fps = w->fps;
        }
    }
    td_progress_update(sv->progress, &st, finished);
}

/* ---- finishing scenes ------------------------------------------------ */

static void ring_add(worker *w, const char *line)
{
    snprintf(w->ring[w->ring_next], RING_LINE_MAX, "%s", line);
    w->ring_next = (w->ring_next + 1) % RING_LINES;
    if (w->ring_count < RING_LINES)
        w->ring_count++;
}

static void scene_finished(supervisor *sv, size_t qpos, enum scene_state st)
{
    sv->scene_state[qpos] = st;
    sv->finished++;
    sv->bytes_finished += scene_at(sv, qpos)->size;
    update_progress(sv, 1);
}

static void fail_scene(supervisor *sv, worker *w, size_t qpos, const char *kind, const char *reason)
{
    const td_scene *s = scene_at(sv, qpos);
    const char *lines[RING_LINES];
    size_t n = 0;
    if (w) {
        for (int i = 0; i < w->ring_count; i++)
            lines[n++] = w->ring[(w->ring_next - w->ring_count + i + RING_LINES) % RING_LINES];
    }
    char name[256];
    td_printable(s->rel, name, sizeof name);
    td_error err = {0};
    /* One .failed per task of the list; a task's valid .done outranks it. */
    for (size_t t = 0; t < sv->plan->n_tasks; t++)
        if (td_marker_write_failed(s, sv->plan->tasks[t]->name, kind, reason, sv->attempts[qpos], lines, n,
                                   &err) != TD_OK)
            td_error_log("[failed] %s: cannot write .failed marker: %s", name, err.msg);
    /* The log line names the scene already; the marker keeps the full text. */
    const char *shown = reason;
    size_t plen = strlen(s->path);
    if (strncmp(reason, s->path, plen) == 0 && reason[plen] == ':' && reason[plen + 1] == ' ')
        shown = reason + plen + 2;
    td_error_log("[failed] %s: %s (after %d attempt%s)", name, shown, sv->attempts[qpos],
                 sv->attempts[qpos] == 1 ? "" : "s");
    sv->sum->failed++;
    if (w)
        w->failed++;
    scene_finished(sv, qpos, S_FAILED);
}

/* The scene's attempt ended badly: retry it or give up. */
static void attempt_failed(supervisor *sv, worker *w, size_t qpos, const char *kind, const char *reason,
                           int permanent)
{
    sv->attempts[qpos]++;
    char name[256];
    td_printable(scene_at(sv, qpos)->rel, name, sizeof name);
    if (permanent || sv->attempts[qpos] > sv->o->retries) {
        fail_scene(sv, w, qpos, kind, reason);
        return;
    }
    td_warn("[retry] %s: %s; requeued (attempt %d of %d)", name, reason, sv->attempts[qpos] + 1,
            sv->o->retries + 1);
    fifo_push(sv, qpos);
}

/* ---- starting workers ------------------------------------------------- */

static int add_env(char ***env, size_t *n, size_t *cap, const char *name, const char *value)
{
    if (*n + 2 > *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        char **e = realloc(*env, nc * sizeof *e);
        if (!e)
            return -1;
        *env = e;
        *cap = nc;
    }
    size_t len = strlen(name) + strlen(value) + 2;
    char *kv = malloc(len);
    if (!kv)
        return -1;
    snprintf(kv, len, "%s=%s", name, value);
    (*env)[(*n)++] = kv;
    (*env)[*n] = NULL;
    return 0;
}

static int env_overridden(const char *kv, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (strncmp(kv, names[i], len) == 0 && kv[len] == '=')
            return 1;
    }
    return 0;
}

static void free_env(char **env)
{
    if (!env)
        return;
    for (char **e = env; *e; e++)
        free(*e);
    free(env);
}

/* The environment of a worker: ours, with the affinity variables set.
 * Built before fork so the child only dup2s and execs. */
static char **worker_env(const worker *w)
{
    static const char *const ours[] = {
        "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "ZE_AFFINITY_MASK",
        "ZE_ENABLE_PCI_ID_DEVICE_ORDER", "ROCR_VISIBLE_DEVICES", "TAPEDECK_CONTROL_FD",
    };
    char **env = NULL;
    size_t n = 0, cap = 0;
    for (char **e = environ; *e; e++) {
        if (env_overridden(*e, ours, sizeof ours / sizeof ours[0]))
            continue;
        if (add_env(&env, &n, &cap, "", "") != 0)
            goto fail;
        free(env[n - 1]);
        env[n - 1] = strdup(*e);
        if (!env[n - 1])
            goto fail;
    }
    if (add_env(&env, &n, &cap, "TAPEDECK_CONTROL_FD", "3") != 0)
        goto fail;
    if (w->device) {
        const char *pairs[2][2];
        size_t np = td_affinity_env(w->device, pairs);
        for (size_t i = 0; i < np; i++)
            if (add_env(&env, &n, &cap, pairs[i][0], pairs[i][1]) != 0)
                goto fail;
    }
    if (!env && add_env(&env, &n, &cap, "TAPEDECK_CONTROL_FD", "3") != 0)
        goto fail;
    return env;
fail:
    free_env(env);
    return NULL;
}

#define MAX_ARGS 80

static void worker_argv(const supervisor *sv, const worker *w, const char **argv, char *slot,
                        char *level, char *threads, char *beam, char *batch, char *streams)
{
    const td_run_opts *o = sv->o;
    size_t n = 0;
    argv[n++] = o->self_exe;
    argv[n++] = "worker";
    snprintf(slot, 16, "%d", w->slot);
    argv[n++] = "--slot";
    argv[n++] = slot;
    argv[n++] = "--archive";
    argv[n++] = o->archive;
    argv[n++] = "--task";
    argv[n++] = o->task;
    argv[n++] = "--engine";
    argv[n++] = sv->plan->engine;
    argv[n++] = "--formats";
    argv[n++] = o->formats;
    snprintf(level, 16, "%d", o->verbosity);
    argv[n++] = "--log-level";
    argv[n++] = level;
    if (w->model || o->model) {
        argv[n++] = "--model";
        argv[n++] = w->model ? w->model : o->model;
    }
    if (o->language) {
        argv[n++] = "--language";
        argv[n++] = o->language;
    }
    if (o->threads > 0 || w->threads > 0 || sv->plan->threads > 0) {
        snprintf(threads, 16, "%d", o->threads > 0 ? o->threads : w->threads > 0 ? w->threads : sv->plan->threads);
        argv[n++] = "--threads";
        argv[n++] = threads;
    }
    if (o->models_dir) {
        argv[n++] = "--models-dir";
        argv[n++] = o->models_dir;
    }
    if (o->beam_size > 0) {
        snprintf(beam, 16, "%d", o->beam_size);
        argv[n++] = "--beam-size";
        argv[n++] = beam;
    }
    if (o->compute != TD_WCOMPUTE_AUTO) {
        argv[n++] = "--compute";
        argv[n++] = td_wcompute_name((enum td_wcompute)o->compute);
    }
    if (strcmp(sv->plan->engine, "whisper") == 0) {
        argv[n++] = "--decode";
        argv[n++] = td_wdecode_mode_name(o->decode);
        if (w->batch > 0 || sv->plan->batch > 0) {
            snprintf(batch, 16, "%d", w->batch > 0 ? w->batch : sv->plan->batch);
            argv[n++] = "--batch";
            argv[n++] = batch;
        }
        if (o->backend) {
            argv[n++] = "--backend";
            argv[n++] = o->backend;
        }
        if (sv->plan->streams > 1) {
            snprintf(streams, 16, "%d", sv->plan->streams);
            argv[n++] = "--streams";
            argv[n++] = streams;
        }
    }
    if (o->translate)
        argv[n++] = "--translate";
    /* a worker out of memory may step below its model unless the user
     * pinned one without --allow-downgrade */
    if (strcmp(sv->plan->engine, "whisper") == 0 && (!o->model || o->allow_downgrade))
        argv[n++] = "--allow-downgrade";
    if (o->force)
        argv[n++] = "--force";
    const char *restore_args[][2] = {{"--restore-preset", o->restore_preset}, {"--restore-quality", o->restore_quality},
                                     {"--restore-format", o->restore_format}, {"--restore-size", o->restore_size},
                                     {"--restore-codec", o->restore_codec}, {"--restore-opencl", o->restore_opencl},
                                     {"--restore-cuda", o->restore_cuda}, {"--restore-vaapi", o->restore_vaapi},
                                     {"--restore-hwenc", o->restore_hwenc}};
    for (size_t i = 0; i < sizeof restore_args / sizeof restore_args[0]; i++) {
        if (restore_args[i][1]) {
            argv[n++] = restore_args[i][0];
            argv[n++] = restore_args[i][1];
        }
    }
    if (w->device) {
        argv[n++] = "--vendor";
        argv[n++] = w->device->vendor;
        argv[n++] = "--pci";
        argv[n++] = w->device->pci;
    }
    argv[n] = NULL;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static int start_worker(supervisor *sv, worker *w)
{
    int cmd[2] = {-1, -1}, ctl[2] = {-1, -1}, logp[2] = {-1, -1};
    char **env = worker_env(w);
    if (!env) {
        td_error_log("[worker-start] out of memory");
        return -1;
    }
    const char *argv[MAX_ARGS];
    char slot[16], level[16], threads[16], beam[16], batch[16], streams[16];
    worker_argv(sv, w, argv, slot, level, threads, beam, batch, streams);
    if (pipe2(cmd, O_CLOEXEC) != 0 || pipe2(ctl, O_CLOEXEC) != 0 || pipe2(logp, O_CLOEXEC) != 0) {
        td_error_log("[worker-start] pipe: %s", strerror(errno));
        goto fail;
    }
    /* A GPU worker runs on its card's local CPUs (the NUMA node its PCI
     * slot hangs off), within the CPUs we may use ourselves. Computed
     * here; the child only calls sched_setaffinity. */
    cpu_set_t pin;
    int pin_count = 0;
    if (w->device && w->device->local_cpus[0]) {
        cpu_set_t allowed;
        if (td_cpulist_parse(w->device->local_cpus, &pin) <= 0)
            td_warn("[worker-start] slot %d: unreadable local CPU list '%s'; not pinned", w->slot,
                    w->device->local_cpus);
        else if (sched_getaffinity(0, sizeof allowed, &allowed) != 0)
            td_warn("[worker-start] slot %d: sched_getaffinity: %s; not pinned", w->slot, strerror(errno));
        else {
            CPU_AND(&pin, &pin, &allowed);
            pin_count = CPU_COUNT(&pin);
            if (pin_count == 0)
                td_warn("[worker-start] slot %d: none of the card's CPUs (%s) is allowed to us; not pinned",
                        w->slot, w->device->local_cpus);
        }
    }
    pid_t parent = getpid();
    /* Until exec the child would run our handler and write to our signal
     * pipe: one Ctrl-C to the process group would count twice (stop now).
     * Block SIGINT/SIGTERM across fork; the child ignores them first. */
    sigset_t stop_sigs, old_mask;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGINT);
    sigaddset(&stop_sigs, SIGTERM);
    sigprocmask(SIG_BLOCK, &stop_sigs, &old_mask);
    pid_t pid = fork();
    if (pid != 0)
        sigprocmask(SIG_SETMASK, &old_mask, NULL);
    if (pid < 0) {
        td_error_log("[worker-start] fork: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        /* Child: only async-signal-safe calls until exec. SIGINT and
         * SIGTERM stay ignored across exec: a Ctrl-C, `timeout` or a
         * service stop signals the whole process group, and what that means
         * (finish the scenes in flight) is the supervisor's decision, not
         * each worker's. SIGUSR1 is the supervisor's "abandon the scene
         * now", and the worker gets it too when the supervisor dies. */
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        if (prctl(PR_SET_PDEATHSIG, SIGUSR1) != 0 || getppid() != parent)
            _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (dup2(cmd[0], 0) < 0 || dup2(logp[1], 1) < 0 || dup2(logp[1], 2) < 0 || dup2(ctl[1], 3) < 0)
            _exit(127);
        if (pin_count > 0 && sched_setaffinity(0, sizeof pin, &pin) != 0) {
            static const char pin_msg[] = "tapedeck worker: cannot pin to the card's local CPUs; running unpinned\n";
            if (write(2, pin_msg, sizeof pin_msg - 1) < 0) {
                /* the log pipe is gone: nothing else to tell */
            }
        }
        execve(argv[0], (char *const *)argv, env);
        static const char msg[] = "tapedeck: cannot exec the worker\n";
        if (write(2, msg, sizeof msg - 1) < 0)
            _exit(127);
        _exit(127);
    }
    close(cmd[0]);
    close(ctl[1]);
    close(logp[1]);
    free_env(env);
    fcntl(ctl[0], F_SETFL, O_NONBLOCK);
    fcntl(logp[0], F_SETFL, O_NONBLOCK);
    w->pid = pid;
    w->cmd_fd = cmd[1];
    w->ctl_fd = ctl[0];
    w->log_fd = logp[0];
    w->ctl_eof = w->log_eof = 0;
    td_linebuf_init(&w->ctl, TD_PROTO_MAX_LINE);
    td_linebuf_init(&w->log, 8192);
    w->state = W_STARTING;
    w->n_scenes = 0;
    w->capacity = 1;
    w->alone = 0;
    w->started_at = w->last_beat = now_s();
    w->processed = w->skipped = w->failed = 0;
    w->term_sent = 0;
    w->kill_reason[0] = '\0';
    memset(&w->seen, 0, sizeof w->seen);
    if (w->device)
        td_info("[worker-start] PID=%d | device_idx=%d | %s=%s | %s %s (%s) | cpus=%s", (int)pid, w->slot,
                w->device->affinity_var, w->device->affinity_value, w->device->vendor,
                w->device->pci, w->device->name, pin_count > 0 ? w->device->local_cpus : "all");
    else
        td_info("[worker-start] PID=%d | device_idx=cpu%d | CPU worker", (int)pid, w->slot);
    return 0;
fail:
    free_env(env);
    close_fd(&cmd[0]);
    close_fd(&cmd[1]);
    close_fd(&ctl[0]);
    close_fd(&ctl[1]);
    close_fd(&logp[0]);
    close_fd(&logp[1]);
    return -1;
}

/* ---- talking to workers ----------------------------------------------- */

static int send_cmd(worker *w, const char *line, size_t len)
{
    while (len > 0) {
        ssize_t n = write(w->cmd_fd, line, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1; /* EPIPE: it died; its EOF will be seen */
        }
        line += n;
        len -= (size_t)n;
    }
    return 0;
}

static void send_quit(worker *w)
{
    w->quit_at = now_s();
    if (w->cmd_fd >= 0) {
        send_cmd(w, "QUIT\n", 5);
        close_fd(&w->cmd_fd);
    }
    if (w->state == W_IDLE || w->state == W_STARTING)
        w->state = W_QUITTING;
}

/* Room for another scene on w: idle, or holding fewer than it takes (and
 * nothing that must run alone, and the scene it would take next need not
 * run alone: that scene, not the queue's head, which a GPU worker passes
 * over where only a CPU worker may take it). A worker we killed has none:
 * it may still say READY or DONE before its pipes close. */
static int has_room(const supervisor *sv, const worker *w)
{
    size_t i;
    if (w->term_sent || !fifo_find_for(sv, w, &i))
        return 0;
    if (w->state == W_IDLE)
        return 1;
    if (w->state != W_BUSY || w->alone || w->n_scenes >= w->capacity)
        return 0;
    return !sv->alone[sv->fifo[(sv->fifo_head + i) % sv->plan->n_queue]];
}

/* Hand w the next scene it may take; 0 when it got none. */
static int dispatch(supervisor *sv, worker *w)
{
    size_t qpos;
    if (sv->stopping || w->term_sent || !fifo_pop_for(sv, w, &qpos))
        return 0; /* a worker we killed may still say DONE: give it nothing */
    const td_scene *s = scene_at(sv, qpos);
    int first = w->n_scenes == 0;
    td_buf line;
    td_buf_init(&line, 0);
    td_buf_printf(&line, "SCENE %zu ", qpos);
    td_hex_encode(s->path, strlen(s->path), &line);
    td_buf_putc(&line, '\n');
    w->state = W_BUSY;
    w->scenes[w->n_scenes++] = (long)qpos;
    w->alone = sv->alone[qpos];
    if (first) {
        w->last_beat = now_s();
        w->scene_seconds = 0;
        w->frames_done = w->frames_total = 0;
        w->fps = 0;
        w->ring_count = w->ring_next = 0;
    }
    sv->scene_state[qpos] = S_RUNNING;
    char name[256];
    td_printable(s->rel, name, sizeof name);
    td_verbose("[dispatch] %s -> worker PID=%d", name, (int)w->pid);
    int sent = send_cmd(w, line.data, line.len) == 0;
    td_buf_release(&line);
    if (!sent) {
        /* It never got the scene, so the scene is not charged for its
         * death: back to the queue, and nothing more for this worker. */
        td_warn("[worker-exit] PID=%d is gone before taking %s; requeued", (int)w->pid, name);
        w->state = W_QUITTING;
        w->quit_at = now_s();
        w->n_scenes--;
        fifo_push(sv, qpos);
    }
    return sent;
}

/* A CPU worker for the scenes no GPU's memory fits: the plan's, or one
 * added now (on the cores the GPU workers' feeding threads leave). */
static void ensure_cpu_worker(supervisor *sv)
{
    size_t n_gpu = 0;
    int slot = 0;
    for (size_t i = 0; i < sv->n_workers; i++) {
        if (!sv->workers[i].device && sv->workers[i].state != W_DEAD)
            return;
        n_gpu += sv->workers[i].device != NULL;
        if (sv->workers[i].slot >= slot)
            slot = sv->workers[i].slot + 1;
    }
    if (sv->n_workers >= TD_MAX_DEVICES) {
        td_warn("[vram-safety] no room for a CPU worker (%d workers)", TD_MAX_DEVICES);
        return;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    long threads = ncpu - (long)n_gpu * TD_GPU_FEED_THREADS;
    worker *w = &sv->workers[sv->n_workers++];
    memset(w, 0, sizeof *w);
    w->slot = slot;
    w->threads = threads > 0 ? (int)threads : 1;
    w->cmd_fd = w->ctl_fd = w->log_fd = -1;
    w->n_scenes = 0;
    w->capacity = 1;
    td_info("[vram-safety] CPU worker slot %d added (%d threads) for scenes no GPU's memory fits", slot,
            w->threads);
}

/* The index in w->scenes of the scene a message names, or -1. */
static int parse_seq(const char *s, const worker *w)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || (*end && *end != ' '))
        return -1;
    for (int i = 0; i < w->n_scenes; i++)
        if (w->scenes[i] == v)
            return i;
    return -1;
}

static void drop_scene(worker *w, int i)
{
    memmove(w->scenes + i, w->scenes + i + 1, (size_t)(w->n_scenes - i - 1) * sizeof *w->scenes);
    w->n_scenes--;
    if (w->n_scenes == 0) {
        w->alone = 0;
        if (w->state == W_BUSY)
            w->state = W_IDLE;
    }
}

/* [affinity-verify], supervisor side: READY's last two fields are the PCI
 * address and UUID the worker's runtime opened ("-": not reported). A
 * worker on the wrong card, or on a card another worker reported, is told
 * to quit and its slot disabled (w->fatal). */
static void check_affinity_report(supervisor *sv, worker *w, const char *rest)
{
    char f[5][256] = {{0}};
    int n = sscanf(rest, "%255s %255s %255s %255s %255s", f[0], f[1], f[2], f[3], f[4]);
    memset(&w->seen, 0, sizeof w->seen);
    for (int i = 3; i < n && i < 5; i++) {
        if (strcmp(f[i], "-") == 0)
            continue;
        char *v = td_hex_decode(f[i], NULL);
        if (v) {
            if (i == 3)
                snprintf(w->seen.pci, sizeof w->seen.pci, "%s", v);
            else
                snprintf(w->seen.uuid, sizeof w->seen.uuid, "%s", v);
        }
        free(v);
    }
    char detail[320];
    enum td_affinity_result r = td_affinity_check_report(w->device, &w->seen, detail, sizeof detail);
    if (r == TD_AFFINITY_UNVERIFIED) {
        td_debug("[affinity-verify] PID=%d: %s", (int)w->pid, detail);
        return;
    }
    /* Another live worker on the same card is the seed's failure: said
     * first, as it names the real problem better than the plan does. */
    for (size_t i = 0; i < sv->n_workers; i++) {
        const worker *o = &sv->workers[i];
        if (o == w || o->pid <= 0 || o->fatal[0])
            continue;
        if (td_affinity_same_card(&w->seen, &o->seen, 1) == 0) {
            snprintf(detail, sizeof detail, "its card (%s%s%s) is already used by worker PID=%d (slot %d)",
                     w->seen.pci, w->seen.pci[0] && w->seen.uuid[0] ? " " : "", w->seen.uuid, (int)o->pid,
                     o->slot);
            r = TD_AFFINITY_MISMATCH;
            break;
        }
    }
    if (r == TD_AFFINITY_OK) {
        td_info("[affinity-verify] PID=%d | slot %d | %s | OK", (int)w->pid, w->slot, detail);
        return;
    }
    snprintf(w->fatal, sizeof w->fatal, "affinity check failed: %s", detail);
    td_error_log("[affinity-verify] PID=%d | slot %d | %s | worker stopped", (int)w->pid, w->slot, detail);
    send_quit(w);
}

static void handle_ctl_line(supervisor *sv, worker *w, char *line)
{
    char verb[16] = "";
    sscanf(line, "%15s", verb);
    const char *rest = line + strlen(verb);
    while (*rest == ' ')
        rest++;
    if (strcmp(verb, "READY") == 0) {
        if (w->state == W_STARTING)
            w->state = W_IDLE;
        w->start_failures = 0;
        /* READY engine model device pci uuid [scenes at once] */
        int cap = 1;
        if (sscanf(rest, "%*s %*s %*s %*s %*s %d", &cap) != 1 || cap < 1)
            cap = 1;
        w->capacity = cap < TD_WHISPER_MAX_STREAMS ? cap : TD_WHISPER_MAX_STREAMS;
        td_verbose("[worker-ready] PID=%d | %d scene%s at once", (int)w->pid, w->capacity,
                   w->capacity == 1 ? "" : "s");
        check_affinity_report(sv, w, rest);
        return;
    }
    if (strcmp(verb, "FATAL") == 0) {
        char *msg = td_hex_decode(rest, NULL);
        snprintf(w->fatal, sizeof w->fatal, "%s", msg ? msg : "(unreadable message)");
        free(msg);
        td_error_log("[worker-fatal] PID=%d: %s", (int)w->pid, w->fatal);
        return;
    }
    if (w->state != W_BUSY || w->n_scenes == 0) {
        td_debug("worker PID=%d: unexpected '%s' while not busy", (int)w->pid, verb);
        return;
    }
    int at = parse_seq(rest, w);
    if (strcmp(verb, "START") == 0 || strcmp(verb, "BEAT") == 0) {
        if (at < 0)
            return;
        w->last_beat = now_s(); /* any scene's beat: the worker is alive */
        if (verb[0] == 'B' && at == 0) {
            const char *sp = strchr(rest, ' ');
            if (sp) {
                /* BEAT <seq> <seconds> [<frames done> <frames total> <fps>] */
                char *end;
                w->scene_seconds = strtod(sp + 1, &end);
                long long done = 0, total = 0;
                double fps = 0;
                if (sscanf(end, "%lld %lld %lf", &done, &total, &fps) == 3) {
                    w->frames_done = done;
                    w->frames_total = total;
                    w->fps = fps;
                }
            }
            update_progress(sv, 0);
        }
        return;
    }
    if (at < 0) {
        td_warn("worker PID=%d: message for another scene ignored: %s", (int)w->pid, verb);
        return;
    }
    size_t qpos = (size_t)w->scenes[at];
    if (strcmp(verb, "DONE") != 0 && strcmp(verb, "SKIP") != 0 && strcmp(verb, "FAIL") != 0) {
        /* Not an end of the scene: it must stay RUNNING on this worker. */
        td_warn("worker PID=%d: unknown message ignored: %s", (int)w->pid, verb);
        return;
    }
    const char *args = strchr(rest, ' ');
    args = args ? args + 1 : "";
    drop_scene(w, at);
    if (at == 0 && w->n_scenes > 0) {
        w->scene_seconds = 0; /* the progress line follows the next one */
        w->frames_done = w->frames_total = 0;
    }
    if (strcmp(verb, "DONE") == 0) {
        char *end;
        double audio = strtod(args, &end);
        long long frames = strtoll(end, &end, 10);
        long long unresolved = strtoll(end, NULL, 10);
        sv->sum->processed++;
        sv->sum->unresolved += unresolved > 0 ? (size_t)unresolved : 0;
        sv->sum->audio_seconds += audio;
        sv->sum->frames += frames > 0 ? frames : 0;
        w->processed++;
        scene_finished(sv, qpos, S_DONE);
    } else if (strcmp(verb, "SKIP") == 0) {
        sv->sum->skipped++;
        w->skipped++;
        scene_finished(sv, qpos, S_SKIPPED);
    } else if (strcmp(verb, "FAIL") == 0) {
        char kind[32] = "unknown";
        char hex[TD_PROTO_MAX_LINE];
        hex[0] = '\0';
        sscanf(args, "%31s %65535s", kind, hex);
        /* A worker that aborted got SIGUSR1 and exits now: it must not be
         * handed another scene (that scene would be charged its exit). */
        if (strcmp(kind, "aborted") == 0) {
            w->state = W_QUITTING;
            w->quit_at = now_s();
        }
        if (strcmp(kind, "aborted") == 0 && sv->stopping) {
            /* We asked it to stop: the scene is left for the next run,
             * not charged an attempt. */
            sv->scene_state[qpos] = S_LEFT;
            return;
        }
        char *msg = td_hex_decode(hex, NULL);
        if (strcmp(kind, "vram") == 0 && w->device) {
            /* [vram-safety]: not even the smallest model fits the card's
             * memory now: a CPU worker's scene, not an attempt spent */
            char name[256];
            td_printable(scene_at(sv, qpos)->rel, name, sizeof name);
            td_warn("[vram-safety] %s: %s on %s; requeued for a CPU worker (no attempt charged)", name,
                    msg ? msg : "out of memory", w->device->pci);
            sv->cpu_only[qpos] = 1;
            ensure_cpu_worker(sv);
            fifo_push(sv, qpos);
            free(msg);
            return;
        }
        /* A bad input fails at once; anything else may be transient. */
        attempt_failed(sv, w, qpos, kind, msg ? msg : "(unreadable message)", strcmp(kind, "input") == 0);
        free(msg);
    }
}

static void describe_exit(int status, char *out, size_t len)
{
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        snprintf(out, len, "worker killed by signal %d (%s)%s", sig, strsignal(sig),
                 sig == SIGKILL ? ", e.g. by the out-of-memory killer" : "");
    } else if (WIFEXITED(status)) {
        snprintf(out, len, "worker exited with status %d", WEXITSTATUS(status));
    } else {
        snprintf(out, len, "worker ended (status 0x%x)", status);
    }
}

/* Called once both pipes reached EOF: the process has ended. */
static void reap_worker(supervisor *sv, worker *w)
{
    int status = 0;
    while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
        ;
    char how[256];
    describe_exit(status, how, sizeof how);
    /* It may have died in the middle of an atomic write: its temporary
     * file is an orphan now. */
    for (int i = 0; i < w->n_scenes; i++) {
        td_error err = {0};
        td_atomic_sweep_orphans(scene_at(sv, (size_t)w->scenes[i])->dir, &err);
    }
    td_info("[worker-done] PID=%d | Processed: %u | Skipped: %u | Failed: %u", (int)w->pid, w->processed,
            w->skipped, w->failed);
    int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!clean && w->state != W_QUITTING)
        td_warn("[worker-exit] PID=%d: %s", (int)w->pid, how);

    if (w->state == W_STARTING) {
        w->start_failures++;
    }
    int held = w->n_scenes;
    for (int i = 0; i < held; i++) {
        size_t qpos = (size_t)w->scenes[i];
        if (sv->stop_now) {
            sv->scene_state[qpos] = S_LEFT;
        } else if (held > 1) {
            /* which of them killed it is unknown: none is charged, each
             * runs alone next, where a death is charged */
            char name[256];
            td_printable(scene_at(sv, qpos)->rel, name, sizeof name);
            td_warn("[retry] %s: %s with %d scenes in flight; requeued to run alone, not charged",
                    name, w->kill_reason[0] ? w->kill_reason : how, held);
            sv->alone[qpos] = 1;
            fifo_push(sv, qpos);
        } else {
            char reason[512];
            if (w->kill_reason[0])
                snprintf(reason, sizeof reason, "%s (worker killed)", w->kill_reason);
            else
                snprintf(reason, sizeof reason, "%s during the scene", how);
            attempt_failed(sv, w, qpos, w->kill_reason[0] ? "stall" : WIFSIGNALED(status) ? "crash" : "exit",
                           reason, 0);
        }
    }
    w->n_scenes = 0;
    w->alone = 0;
    close_fd(&w->cmd_fd);
    close_fd(&w->ctl_fd);
    close_fd(&w->log_fd);
    td_linebuf_release(&w->ctl);
    td_linebuf_release(&w->log);
    w->pid = 0;
    if (w->fatal[0] || w->start_failures >= MAX_START_FAILURES) {
        if (!w->fatal[0])
            snprintf(w->fatal, sizeof w->fatal, "failed to start %d times: %s", w->start_failures, how);
        td_error_log("[worker-slot] slot %d disabled: %s", w->slot, w->fatal);
        w->state = W_DEAD;
    } else {
        w->state = W_OFF;
    }
}

/* Read what a pipe holds, taking lines out after each read so that a
 * burst longer than the line buffer loses nothing. */
static void drain_pipe(supervisor *sv, worker *w, int is_ctl)
{
    td_linebuf *lb = is_ctl ? &w->ctl : &w->log;
    int *eof = is_ctl ? &w->ctl_eof : &w->log_eof;
    int fd = is_ctl ? w->ctl_fd : w->log_fd;
    while (!*eof) {
        long n = td_linebuf_fill(lb, fd);
        if (n == 0 || n == -1)
            *eof = 1;
        char *line;
        while (td_linebuf_next(lb, &line, is_ctl ? 0 : *eof)) {
            if (is_ctl) {
                handle_ctl_line(sv, w, line);
            } else if (*line) {
                ring_add(w, line);
                td_log_raw(TD_LOG_ERROR, line); /* the worker filtered by level already */
            }
        }
        if (n == -2)
            break;
    }
}

#define QUIT_GRACE_SECONDS 30.0

static void check_stalls(supervisor *sv)
{
    double t = now_s();
    for (size_t i = 0; i < sv->n_workers; i++) {
        worker *w = &sv->workers[i];
        if (w->pid <= 0 || w->term_sent)
            continue;
        if (w->state == W_QUITTING && t - w->quit_at > QUIT_GRACE_SECONDS) {
            /* Told to quit with no scene: hung in shutdown (engine close). */
            td_warn("[stall] PID=%d: still running %.0f s after being told to quit; killing it", (int)w->pid,
                    t - w->quit_at);
            kill(w->pid, SIGKILL);
            w->term_sent = 1;
            continue;
        }
        int busy = w->state == W_BUSY, starting = w->state == W_STARTING;
        if ((busy || starting) && t - w->last_beat > sv->o->stall_timeout) {
            td_warn("[stall] PID=%d: no heartbeat for %.0f s %s; killing it", (int)w->pid,
                    t - w->last_beat, busy ? "during a scene" : "while starting");
            kill(w->pid, SIGKILL);
            w->term_sent = 1;
            snprintf(w->kill_reason, sizeof w->kill_reason, "stalled: no heartbeat for %.0f s",
                     sv->o->stall_timeout);
        }
    }
}

/* ---- the loop --------------------------------------------------------- */

static int live_workers(const supervisor *sv)
{
    int n = 0;
    for (size_t i = 0; i < sv->n_workers; i++)
        if (sv->workers[i].pid > 0)
            n++;
    return n;
}

static int usable_slots(const supervisor *sv)
{
    int n = 0;
    for (size_t i = 0; i < sv->n_workers; i++)
        if (sv->workers[i].state != W_DEAD)
            n++;
    return n;
}

static void handle_signals(supervisor *sv)
{
    unsigned char sigs[64];
    ssize_t n;
    while ((n = read(g_signal_pipe[0], sigs, sizeof sigs)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            sv->sum->interrupted = 1;
            if (!sv->stopping) {
                sv->stopping = 1;
                size_t busy = 0;
                for (size_t k = 0; k < sv->n_workers; k++)
                    busy += sv->workers[k].state == W_BUSY;
                td_warn("[interrupt] %s: no new scenes; finishing %zu in flight. Again to stop now.",
                        strsignal(sigs[i]), busy);
                for (size_t k = 0; k < sv->n_workers; k++)
                    if (sv->workers[k].state != W_BUSY && sv->workers[k].pid > 0)
                        send_quit(&sv->workers[k]);
            } else if (!sv->stop_now) {
                sv->stop_now = 1;
                sv->stop_now_at = now_s();
                td_warn("[interrupt] stopping now; scenes in flight are abandoned (no partial output)");
                for (size_t k = 0; k < sv->n_workers; k++)
                    if (sv->workers[k].pid > 0) {
                        kill(sv->workers[k].pid, SIGUSR1);
                        close_fd(&sv->workers[k].cmd_fd);
                    }
            }
        }
    }
}

static int setup_signals(struct sigaction *old_int, struct sigaction *old_term)
{
    if (pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, old_int);
    sigaction(SIGTERM, &sa, old_term);
    signal(SIGPIPE, SIG_IGN);
    /* An ignored SIGCHLD (inherited from whoever started us) would reap
     * workers for us: waitpid would fail and every death look clean. */
    signal(SIGCHLD, SIG_DFL);
    return 0;
}

static void restore_signals(const struct sigaction *old_int, const struct sigaction *old_term)
{
    sigaction(SIGINT, old_int, NULL);
    sigaction(SIGTERM, old_term, NULL);
    close_fd(&g_signal_pipe[0]);
    close_fd(&g_signal_pipe[1]);
}

static void sweep_dirs(supervisor *sv)
{
    /* Orphaned temporary files from a run that was killed: remove them
     * (their writer is dead) so nothing half-written lingers. */
    const char *last = NULL;
    for (size_t i = 0; i < sv->plan->scenes.count; i++) {
        const char *dir = sv->plan->scenes.items[i].dir;
        if (last && strcmp(last, dir) == 0)
            continue;
        last = dir;
        td_error err = {0};
        int n = td_atomic_sweep_orphans(dir, &err);
        if (n > 0)
            td_info("[cleanup] removed %d orphaned temporary file(s) in %s", n, dir);
    }
}

static void refuse_scenes(supervisor *sv)
{
    td_plan *p = sv->plan;
    for (size_t i = 0; i < p->scenes.count; i++) {
        if (p->state[i] != TD_PLAN_REFUSE)
            continue;
        const td_scene *s = &p->scenes.items[i];
        td_error err = {0};
        char name[256];
        td_printable(s->rel, name, sizeof name);
        for (size_t t = 0; t < p->n_tasks; t++)
            if (td_marker_write_failed(s, p->tasks[t]->name, "input", p->why[i], 0, NULL, 0, &err) != TD_OK)
                td_error_log("[failed] %s: cannot write .failed marker: %s", name, err.msg);
        td_error_log("[failed] %s: %s", name, p->why[i]);
        sv->sum->failed++;
    }
}

int td_run_execute(const td_run_opts *o, td_plan *plan, td_run_summary *sum, td_error *err)
{
    supervisor sv;
    memset(&sv, 0, sizeof sv);
    sv.o = o;
    sv.plan = plan;
    sv.sum = sum;
    sv.t0 = now_s();
    memset(sum, 0, sizeof *sum);
    sum->scenes_total = plan->scenes.count;
    sum->scenes_planned = plan->n_queue;
    sum->skipped = plan->n_done;

    size_t nq = plan->n_queue ? plan->n_queue : 1;
    sv.scene_state = calloc(nq, sizeof *sv.scene_state);
    sv.attempts = calloc(nq, sizeof *sv.attempts);
    sv.alone = calloc(nq, sizeof *sv.alone);
    sv.fifo = calloc(nq, sizeof *sv.fifo);
    sv.cpu_only = calloc(nq, sizeof *sv.cpu_only);
    if (!sv.scene_state || !sv.attempts || !sv.alone || !sv.fifo || !sv.cpu_only) {
        free(sv.scene_state);
        free(sv.attempts);
        free(sv.alone);
        free(sv.fifo);
        free(sv.cpu_only);
        return td_error_set(err, TD_ENOMEM, "out of memory for %zu scenes", plan->n_queue);
    }
    for (size_t i = 0; i < plan->n_queue; i++) {
        fifo_push(&sv, i);
        sv.bytes_total += scene_at(&sv, i)->size;
    }

    sweep_dirs(&sv);
    refuse_scenes(&sv);

    struct sigaction old_int, old_term;
    if (setup_signals(&old_int, &old_term) != 0) {
        free(sv.scene_state);
        free(sv.attempts);
        free(sv.alone);
        free(sv.fifo);
        free(sv.cpu_only);
        return td_error_errno(err, TD_EIO, errno, "cannot set up signal handling");
    }

    sv.n_workers = plan->n_workers;
    if (sv.n_workers > plan->n_queue)
        sv.n_workers = plan->n_queue; /* no idle workers for nothing */
    for (size_t i = 0; i < sv.n_workers; i++) {
        worker *w = &sv.workers[i];
        w->slot = plan->workers[i].slot;
        w->device = plan->workers[i].device;
        w->threads = plan->workers[i].threads;
        w->model = plan->workers[i].model;
        w->batch = plan->workers[i].batch;
        w->cmd_fd = w->ctl_fd = w->log_fd = -1;
        w->n_scenes = 0;
        w->capacity = 1;
    }
    if (o->progress && plan->n_queue > 0)
        sv.progress = td_progress_create(1);
    else if (plan->n_queue > 0)
        sv.progress = td_progress_create(0);

    int rc = TD_OK;
    for (;;) {
        handle_signals(&sv);
        int all_done = sv.finished == plan->n_queue;
        /* Start or restart workers while there is work. */
        if (!sv.stopping && !all_done) {
            size_t waiting = 0; /* workers that will ask for a scene soon */
            size_t cpu_waiting = 0, cpu_queued = cpu_only_queued(&sv);
            for (size_t i = 0; i < sv.n_workers; i++) {
                int soon = sv.workers[i].state == W_STARTING || sv.workers[i].state == W_IDLE;
                waiting += soon;
                cpu_waiting += soon && !sv.workers[i].device;
            }
            for (size_t i = 0; i < sv.n_workers; i++) {
                worker *w = &sv.workers[i];
                /* scenes only a CPU worker may take need one of their own */
                if (w->state == W_OFF && (sv.fifo_len > waiting || (!w->device && cpu_queued > cpu_waiting))) {
                    cpu_waiting += !w->device;
                    waiting++;
                    if (start_worker(&sv, w) != 0) {
                        w->state = W_DEAD;
                        snprintf(w->fatal, sizeof w->fatal, "could not start");
                    }
                }
            }
        }
        /* Hand out work; tell idle workers to go home when there is none left. */
        for (size_t i = 0; i < sv.n_workers; i++) {
            worker *w = &sv.workers[i];
            if (w->state == W_IDLE || w->state == W_BUSY) {
                while (!sv.stopping && sv.fifo_len > 0 && has_room(&sv, w) && dispatch(&sv, w))
                    ;
                if (w->state == W_IDLE && (sv.stopping || all_done))
                    send_quit(w);
            }
        }
        if (live_workers(&sv) == 0) {
            if (all_done || sv.stopping)
                break;
            if (usable_slots(&sv) == 0) {
                rc = td_error_set(err, TD_EUNAVAILABLE, "no worker could run: %s",
                                  sv.n_workers ? sv.workers[0].fatal : "no workers planned");
                break;
            }
        }
        if (sv.stop_now && now_s() - sv.stop_now_at > STOP_GRACE_SECONDS) {
            for (size_t i = 0; i < sv.n_workers; i++)
                if (sv.workers[i].pid > 0 && sv.workers[i].term_sent < 2) {
                    kill(sv.workers[i].pid, SIGKILL);
                    sv.workers[i].term_sent = 2;
                }
        }

        struct pollfd fds[1 + 2 * TD_MAX_DEVICES];
        worker *owner[1 + 2 * TD_MAX_DEVICES];
        int is_ctl[1 + 2 * TD_MAX_DEVICES];
        nfds_t nfds = 0;
        fds[nfds] = (struct pollfd){.fd = g_signal_pipe[0], .events = POLLIN};
        owner[nfds++] = NULL;
        for (size_t i = 0; i < sv.n_workers; i++) {
            worker *w = &sv.workers[i];
            if (w->pid <= 0)
                continue;
            if (!w->ctl_eof) {
                fds[nfds] = (struct pollfd){.fd = w->ctl_fd, .events = POLLIN};
                owner[nfds] = w;
                is_ctl[nfds++] = 1;
            }
            if (!w->log_eof) {
                fds[nfds] = (struct pollfd){.fd = w->log_fd, .events = POLLIN};
                owner[nfds] = w;
                is_ctl[nfds++] = 0;
            }
        }
        int pr = poll(fds, nfds, 250);
        if (pr < 0 && errno != EINTR) {
            rc = td_error_errno(err, TD_EIO, errno, "poll");
            break;
        }
        for (nfds_t i = 1; pr > 0 && i < nfds; i++) {
            if (!fds[i].revents)
                continue;
            drain_pipe(&sv, owner[i], is_ctl[i]);
        }
        for (size_t i = 0; i < sv.n_workers; i++) {
            worker *w = &sv.workers[i];
            if (w->pid > 0 && w->ctl_eof && w->log_eof)
                reap_worker(&sv, w);
        }
        check_stalls(&sv);
        update_progress(&sv, 0);
    }

    /* Whatever is still queued or running was not finished. */
    for (size_t i = 0; i < plan->n_queue; i++)
        if (sv.scene_state[i] == S_QUEUED || sv.scene_state[i] == S_RUNNING || sv.scene_state[i] == S_LEFT)
            sum->left++;
    for (size_t i = 0; i < sv.n_workers; i++) {
        worker *w = &sv.workers[i];
        if (w->pid > 0) {
            kill(w->pid, SIGKILL);
            while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR)
                ;
            close_fd(&w->cmd_fd);
            close_fd(&w->ctl_fd);
            close_fd(&w->log_fd);
            td_linebuf_release(&w->ctl);
            td_linebuf_release(&w->log);
        }
    }
    if (sum->interrupted)
        sweep_dirs(&sv);
    td_progress_free(&sv.progress);
    restore_signals(&old_int, &old_term);
    sum->wall_seconds = now_s() - sv.t0;
    free(sv.scene_state);
    free(sv.attempts);
    free(sv.alone);
    free(sv.fifo);
    free(sv.cpu_only);
    return rc;
}
