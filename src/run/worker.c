/* worker.c: one worker process's loop (see worker.h for its life cycle). */
#include "run/worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "archive/marker.h"
#include "archive/scan.h"
#include "asr/engine.h"
#include "device/affinity.h"
#include "out/formats.h"
#include "run/protocol.h"
#include "run/vram.h"
#include "task/task.h"
#include "util/buf.h"
#include "util/fault.h"
#include "util/log.h"
#include "whisper/decode.h"
#ifdef TD_HAVE_VULKAN
#include "whisper/backend/vulkan/vk.h"
#endif

static volatile sig_atomic_t g_terminate;
static int g_ctl_fd = -1;
/* Scenes decoded at once (--streams) report from their own threads: one
 * line at a time. */
static pthread_mutex_t g_send_lock = PTHREAD_MUTEX_INITIALIZER;

/* SIGUSR1: the supervisor says "abandon the scene now", or has died
 * (PR_SET_PDEATHSIG). The scene stops at the next progress point; should
 * the worker be stuck elsewhere (opening the engine, a hung read), the
 * alarm's default action ends it anyway. */
#define ABANDON_GRACE_SECONDS 10

static void on_abandon(int sig)
{
    (void)sig;
    g_terminate = 1;
    alarm(ABANDON_GRACE_SECONDS);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Send one protocol line; exits if the supervisor is gone (nobody to
 * report to, and our outputs are already atomic). */
static void send_line(td_buf *line)
{
    td_buf_putc(line, '\n');
    const char *p = line->data;
    size_t left = line->len;
    pthread_mutex_lock(&g_send_lock);
    while (left > 0) {
        ssize_t n = write(g_ctl_fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            _exit(0);
        }
        p += n;
        left -= (size_t)n;
    }
    pthread_mutex_unlock(&g_send_lock);
    td_buf_reset(line);
}

static void send_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void send_fmt(const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    td_buf line;
    td_buf_init(&line, 0);
    td_buf_puts(&line, text);
    send_line(&line);
    td_buf_release(&line);
}

/* "<verb> [<seq>] <hex message>" */
static void send_with_hex(const char *head, const char *text)
{
    td_buf line;
    td_buf_init(&line, 0);
    td_buf_puts(&line, head);
    td_buf_putc(&line, ' ');
    td_hex_encode(text, strlen(text), &line);
    send_line(&line);
    td_buf_release(&line);
}

typedef struct scene_progress {
    long seq;
    double last_beat;
    long long frames_done, frames_total;
    double fps;
} scene_progress;

static void on_frames(void *user, long long done, long long total, double fps)
{
    scene_progress *p = user;
    p->frames_done = done;
    p->frames_total = total;
    p->fps = fps;
}

/* Set while the scenes in flight stop for a reopen ([vram-safety] with
 * several scenes at once, below). */
static atomic_int g_vram_stop;

static int on_progress(void *user, double seconds_done)
{
    scene_progress *p = user;
    double t = now_s();
    if (t - p->last_beat >= 1.0) {
        if (p->frames_done > 0)
            send_fmt("BEAT %ld %.2f %lld %lld %.2f", p->seq, seconds_done, p->frames_done, p->frames_total, p->fps);
        else
            send_fmt("BEAT %ld %.2f", p->seq, seconds_done);
        p->last_beat = t;
    }
    return g_terminate || atomic_load(&g_vram_stop) ? 1 : 0;
}

/* ---- [vram-safety] ------------------------------------------------------ */

/* Where the worker stands on its chain (vram.h): read when first needed. */
static struct {
    td_vram_chain chain;
    int loaded, model, batch;
} g_vram;

/* After an out-of-memory (why) with cfg: the next configuration down,
 * into cfg (model path and batch). 0 when there is none. */
static int vram_step(const td_worker_opts *o, td_engine_config *cfg, const char *why)
{
    int batched = strcmp(td_wdecode_mode_name(cfg->decode), "batched") == 0;
    if (!g_vram.loaded) {
        td_error cerr = {0};
        if (td_vram_chain_installed(o->models_dir, cfg->model, o->language, o->translate,
                                    o->allow_downgrade, &g_vram.chain, &cerr) != TD_OK) {
            td_warn("[vram-safety] out of memory (%s), and no model chain to step down: %s", why,
                    cerr.msg);
            return 0;
        }
        g_vram.loaded = 1;
        g_vram.model = 0;
        g_vram.batch = batched && cfg->batch > 0 ? cfg->batch : 1;
    }
    const char *from = g_vram.chain.items[g_vram.model].name;
    int from_batch = g_vram.batch;
    if (!td_vram_step_down(&g_vram.chain, &g_vram.model, &g_vram.batch)) {
        td_warn("[vram-safety] out of memory with model %s batch %d (%s): no smaller batch or model%s",
                from, from_batch, why, o->allow_downgrade ? "" : " (--model without --allow-downgrade)");
        return 0;
    }
    cfg->model = g_vram.chain.items[g_vram.model].path;
    cfg->batch = g_vram.batch;
    td_warn("[vram-safety] out of memory with model %s batch %d (%s): freed; now model %s batch %d", from,
            from_batch, why, g_vram.chain.items[g_vram.model].name, g_vram.batch);
    return 1;
}

/* Test hook: TAPEDECK_TEST_VK_FAIL_ALLOC=N[,N2,...]: in the worker's
 * first engine open the N-th Vulkan allocation fails as out of memory,
 * in the second open the N2-th, and so on (0 or nothing: none). */
static void arm_test_fault(int arm)
{
#ifdef TD_HAVE_VULKAN
    static const char *next;
    static int read;
    if (!arm) {
        td_vk_fail_alloc(0); /* an injection the open did not reach ends with it */
        return;
    }
    if (!read) {
        next = getenv("TAPEDECK_TEST_VK_FAIL_ALLOC");
        read = 1;
    }
    if (!next || !*next)
        return;
    char *end;
    long n = strtol(next, &end, 10);
    if (n > 0)
        td_vk_fail_alloc(n);
    next = *end == ',' ? end + 1 : NULL;
#else
    (void)arm;
#endif
}

#ifdef TD_HAVE_VULKAN
static void on_fail_signal(int sig)
{
    (void)sig;
    td_vk_fail_submit(1);
}
#endif

/* Test hook: TAPEDECK_TEST_VK_FAIL_SUBMIT=N[,N2,...]: once the worker's
 * engine is open, the N-th Vulkan queue submission from then fails as out
 * of device memory (a scene's encode or decode, not the open), once
 * reopened the N2-th, and so on (0 or nothing: none). "usr2": the next
 * submission after each SIGUSR2 fails (a test that takes the card's memory
 * from another process says when). */
static void arm_run_fault(void)
{
#ifdef TD_HAVE_VULKAN
    static const char *next;
    static int read;
    if (!read) {
        next = getenv("TAPEDECK_TEST_VK_FAIL_SUBMIT");
        read = 1;
        if (next && strcmp(next, "usr2") == 0) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_fail_signal;
            sigemptyset(&sa.sa_mask);
            sa.sa_flags = SA_RESTART;
            if (sigaction(SIGUSR2, &sa, NULL) != 0)
                td_warn("TAPEDECK_TEST_VK_FAIL_SUBMIT=usr2: cannot install the SIGUSR2 handler");
            next = NULL;
            return;
        }
    }
    long n = 0;
    if (next && *next) {
        char *end;
        n = strtol(next, &end, 10);
        next = *end == ',' ? end + 1 : NULL;
    }
    td_vk_fail_submit(n > 0 ? n : 0);
#endif
}

/* Open the engine, stepping down while it is out of memory. */
static int open_engine(const td_worker_opts *o, td_engine_config *cfg, td_task_env *env, td_error *err)
{
    for (;;) {
        env->eng = NULL;
        arm_test_fault(1);
        int rc = env->ops->open(cfg, &env->eng, err);
        arm_test_fault(0);
        if (rc == TD_OK)
            arm_run_fault();
        if (rc != TD_ENOMEM)
            return rc;
        if (!vram_step(o, cfg, err->msg))
            return rc;
    }
}

/* The scene ran out of memory (why): free the engine, step down, reopen.
 * TD_OK with env->eng open on a smaller configuration, else TD_ENOMEM
 * with env->eng NULL (nothing smaller fits). */
static int vram_recover(const td_worker_opts *o, td_engine_config *cfg, td_task_env *env, const char *why,
                        td_error *err)
{
    if (env->eng)
        env->ops->close(env->eng);
    env->eng = NULL;
    if (!vram_step(o, cfg, why))
        return td_error_set(err, TD_ENOMEM, "out of memory even for the smallest model: %s", why);
    return open_engine(o, cfg, env, err);
}

/* ---- scenes at once (--streams) ----------------------------------------
 *
 * With whisper's batched decoding a worker may hold more than one scene
 * (the supervisor hands it up to the number READY announced): each runs
 * run_scene() in a thread of its own with its own engine instance (a
 * clone sharing the model and backend), and their network steps are
 * batched together (whisper/batcher.h). The supervisor keeps its accounts
 * per scene: every scene still gets START, BEAT and one DONE/SKIP/FAIL. */

typedef struct stream {
    const td_worker_opts *o;
    const td_task_ops *const *tasks;
    size_t n_tasks;
    const td_task_config *cfg;
    td_task_env env;         /* its own engine instance */
    long seq;
    char *path;              /* owned while busy */
    int busy;                /* a thread was started and not joined yet */
    int done;                /* that thread has finished its scene */
    pthread_t thread;
} stream;

static pthread_mutex_t g_stream_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_stream_done = PTHREAD_COND_INITIALIZER;

/* ---- [vram-safety] with several scenes at once ---------------------------
 *
 * The scenes in flight share one backend (the original engine and its
 * clones, batcher.h): one scene's out of memory is every scene's. The
 * scene that meets it sets g_vram_stop, so that the others stop at their
 * next progress point (their outputs are written only at a scene's end,
 * so nothing is half written); each waits here (parked) with its scene
 * unfinished, a new scene too before it touches an engine. Once every
 * stream with a scene is parked, one of them (the leader) closes the
 * clones and the engine, steps down (vram_step), reopens, clones again;
 * then each runs its scene again from the start on its stream's new
 * instance. The supervisor sees each scene still in flight and then
 * DONE, or FAIL vram when nothing smaller fits: no attempt charged. All
 * under g_stream_lock. */
static struct {
    int reopening;            /* the leader is at it: no engine may be used */
    int parked;               /* streams waiting for the reopen */
    unsigned gen;             /* reopens done */
    char why[TD_ERROR_MSG_MAX];
    td_error err;             /* the last reopen's failure (engines NULL) */
    /* what the leader reopens (td_worker_main's) */
    stream *st;
    int n;
    const td_worker_opts *o;
    td_engine_config *cfg;
    td_task_env *env;         /* the original engine (st[0] shares it) */
} g_rec;

static int vram_recover(const td_worker_opts *o, td_engine_config *cfg, td_task_env *env, const char *why,
                        td_error *err);

/* Streams with a scene not yet over. */
static int streams_unfinished(void)
{
    int k = 0;
    for (int i = 0; i < g_rec.n; i++)
        k += g_rec.st[i].busy && !g_rec.st[i].done;
    return k;
}

/* The leader, unlocked: the clones and the engine freed, one step down,
 * reopened and cloned again into every stream. */
static void streams_reopen(void)
{
    for (int i = g_rec.n - 1; i >= 1; i--) { /* clones before the original */
        if (g_rec.st[i].env.eng)
            g_rec.env->ops->close(g_rec.st[i].env.eng);
        g_rec.st[i].env.eng = NULL;
    }
    td_error err = {0};
    int rc = vram_recover(g_rec.o, g_rec.cfg, g_rec.env, g_rec.why, &err);
    g_rec.st[0].env.eng = g_rec.env->eng;
    g_rec.err = err;
    if (rc != TD_OK)
        return;
    for (int i = 1; i < g_rec.n; i++) {
        td_error cerr = {0};
        if (g_rec.env->ops->clone(g_rec.env->eng, &g_rec.st[i].env.eng, &cerr) != TD_OK) {
            /* that stream's scenes find no engine: FAIL vram, a CPU worker's */
            td_warn("[vram-safety] stream %d has no engine after the reopen: %s", i, cerr.msg);
            g_rec.st[i].env.eng = NULL;
        }
    }
    td_info("[vram-safety] reopened: model %s batch %d for %d scenes at once",
            g_rec.env->ops->model_name(g_rec.env->eng), g_rec.cfg->batch > 0 ? g_rec.cfg->batch : 1, g_rec.n);
}

/* Park s until the engine is reopened (why: this scene's out of memory,
 * or NULL: it only waits). The caller holds g_stream_lock. */
static void streams_park_locked(const char *why)
{
    if (!atomic_load(&g_vram_stop)) {
        atomic_store(&g_vram_stop, 1);
        snprintf(g_rec.why, sizeof g_rec.why, "%s", why ? why : "out of memory");
        td_warn("[vram-safety] out of memory with %d scene%s in flight (%s): stopping them for a reopen",
                streams_unfinished(), streams_unfinished() == 1 ? "" : "s", g_rec.why);
    }
    unsigned gen = g_rec.gen;
    g_rec.parked++;
    pthread_cond_broadcast(&g_stream_done);
    while (g_rec.gen == gen) {
        if (!g_rec.reopening && g_rec.parked == streams_unfinished()) {
            g_rec.reopening = 1;
            pthread_mutex_unlock(&g_stream_lock);
            streams_reopen();
            pthread_mutex_lock(&g_stream_lock);
            g_rec.reopening = 0;
            atomic_store(&g_vram_stop, 0);
            /* every parked stream is released at once: none counts as
             * parked any more, even before it wakes (a stream that runs
             * out of memory again before the others woke must not find
             * their stale counts and reopen under them) */
            g_rec.parked = 0;
            g_rec.gen++;
            pthread_cond_broadcast(&g_stream_done);
            break;
        }
        pthread_cond_wait(&g_stream_done, &g_stream_lock);
    }
    /* left only on a new generation, whose leader zeroed parked */
}

/* Whether the shared engine (every stream's clones' original) is gone:
 * a reopen failed. */
static int streams_engine_gone(void)
{
    pthread_mutex_lock(&g_stream_lock);
    int gone = g_rec.env && g_rec.env->ops && !g_rec.env->eng;
    pthread_mutex_unlock(&g_stream_lock);
    return gone;
}

/* s's scene stopped (why: out of memory, or stopped for another's):
 * wait for the reopen. TD_OK with s->env.eng open again, else TD_ENOMEM. */
static int streams_recover(stream *s, const char *why, td_error *err)
{
    pthread_mutex_lock(&g_stream_lock);
    streams_park_locked(why);
    const char *why_none = g_rec.err.msg[0] ? g_rec.err.msg : "no engine open";
    int rc = s->env.eng ? TD_OK : td_error_set(err, TD_ENOMEM, "%s", why_none);
    pthread_mutex_unlock(&g_stream_lock);
    return rc;
}

/* One scene, its tasks in turn. A task that runs out of memory: with s
 * (one of several scenes at once) every scene in flight stops and waits
 * for the shared engine's reopen (streams_recover); alone, with ecfg, the
 * engine is reopened here (vram_recover). Either way the task runs again
 * from its start on the smaller engine. */
static void run_scene(const td_worker_opts *o, const td_task_ops *const *tasks, size_t n_tasks,
                      const td_task_config *cfg, td_task_env *env, td_engine_config *ecfg, stream *s,
                      long seq, const char *path)
{
    td_error err = {0};
    td_scene scene;
    char head[64];
    if (td_scene_from_path(o->archive, path, &scene, &err) != TD_OK) {
        snprintf(head, sizeof head, "FAIL %ld %s", seq, td_rc_name(err.code));
        send_with_hex(head, err.msg);
        return;
    }
    td_fault_point("scene", scene.path);
    char name[512];
    td_printable(scene.rel, name, sizeof name);

    /* Another process may have finished it since the plan was made; and
     * of several tasks, those already done are not redone. */
    int todo[TD_MAX_TASKS] = {0}, n_todo = 0;
    for (size_t t = 0; t < n_tasks; t++) {
        enum td_marker_state state = TD_MARKER_NONE;
        td_error cerr = {0};
        todo[t] = o->force || tasks[t]->check(&scene, cfg, &state, NULL, 0, &cerr) != TD_OK ||
                  state != TD_MARKER_DONE;
        n_todo += todo[t];
    }
    if (n_todo == 0) {
        td_info("[skip] Already processed: %s (task=%s)", name, o->task);
        send_fmt("SKIP %ld", seq);
        td_scene_release(&scene);
        return;
    }

    send_fmt("START %ld %.0f %lld", seq, -1.0, (long long)scene.size);
    scene_progress prog = {.seq = seq, .last_beat = now_s()};
    td_task_env scene_env = *env;
    scene_env.frames = on_frames;
    scene_env.frames_user = &prog;
    td_task_result total;
    memset(&total, 0, sizeof total);
    int rc = TD_OK;
    double t0 = now_s();
    int vram_out = 0; /* even the smallest model did not fit: a CPU worker's scene */
    for (size_t t = 0; t < n_tasks && rc == TD_OK; t++) {
        if (!todo[t])
            continue;
        td_task_result res;
        memset(&res, 0, sizeof res);
        double ts = now_s();
        if (tasks[t]->needs_engine && env->ops && !env->eng) {
            /* an earlier scene left no engine that fits: try again, alone
             * as one scene's out of memory does; with several scenes at
             * once through the shared reopen, where the shared engine
             * itself is gone (a stream that only lacks its clone leaves
             * the others' engines alone: its scene is a CPU worker's) */
            rc = s && streams_engine_gone() ? streams_recover(s, "no engine open", &err)
                 : ecfg                      ? vram_recover(o, ecfg, env, "no engine open", &err)
                                             : td_error_set(&err, TD_ENOMEM, "no engine open");
            scene_env.eng = env->eng;
            if (rc != TD_OK) {
                vram_out = rc == TD_ENOMEM;
                break;
            }
        }
        rc = tasks[t]->run(&scene, cfg, &scene_env, on_progress, &prog, &res, &err);
        /* with several scenes at once, one stopped for another's out of
         * memory (whatever it returned) waits for the reopen too */
        int stopped = s && rc != TD_OK && !g_terminate && atomic_load(&g_vram_stop);
        if ((rc == TD_ENOMEM || stopped) && tasks[t]->needs_engine && env->ops && (ecfg || s)) {
            /* [vram-safety]: freed, smaller, and the task again */
            char why[TD_ERROR_MSG_MAX];
            snprintf(why, sizeof why, "%s", err.msg);
            if (rc != TD_ENOMEM)
                td_warn("[vram-safety] %s: stopped for the reopen", name);
            rc = s ? streams_recover(s, rc == TD_ENOMEM ? why : NULL, &err)
                   : vram_recover(o, ecfg, env, why, &err);
            scene_env.eng = env->eng;
            if (rc == TD_OK) {
                td_warn("[vram-safety] %s: retrying the scene", name);
                t--; /* unsigned: wraps and comes back to t with the loop's t++ */
                continue;
            }
            vram_out = rc == TD_ENOMEM;
        }
        if (rc != TD_OK)
            break;
        double wall = now_s() - ts;
        if (tasks[t]->needs_engine) {
            char unres[48] = "";
            if (res.n_unresolved)
                snprintf(unres, sizeof unres, " | %zu unresolved", res.n_unresolved);
            td_info("[checkpoint] %s | %.1f s audio | %zu cues%s | %.1fx real time", name,
                    res.audio_seconds, res.n_cues, unres,
                    wall > 0 ? res.audio_seconds / wall : 0.0);
            total.n_unresolved += res.n_unresolved;
            total.audio_seconds = res.audio_seconds;
            snprintf(total.language, sizeof total.language, "%s", res.language);
        } else {
            if (res.note[0])
                td_warn("[%s] %s: %s", tasks[t]->name, name, res.note);
            td_info("[checkpoint] %s | task %s | %.1f s video | %lld frames | %.1f fps", name, tasks[t]->name,
                    res.media_seconds, (long long)res.frames, wall > 0 ? (double)res.frames / wall : 0.0);
            total.frames += res.frames;
            if (total.audio_seconds == 0)
                total.audio_seconds = res.media_seconds;
        }
    }
    (void)t0;
    if (rc == TD_OK) {
        td_buf line;
        td_buf_init(&line, 0);
        td_buf_printf(&line, "DONE %ld %.3f %lld %zu ", seq, total.audio_seconds,
                      (long long)total.frames, total.n_unresolved);
        td_hex_encode(total.language, strlen(total.language), &line);
        send_line(&line);
        td_buf_release(&line);
    } else {
        snprintf(head, sizeof head, "FAIL %ld %s", seq, vram_out ? "vram" : td_rc_name(rc));
        send_with_hex(head, err.msg);
    }
    td_scene_release(&scene);
}

static void *stream_main(void *arg)
{
    stream *s = arg;
    pthread_mutex_lock(&g_stream_lock);
    if (atomic_load(&g_vram_stop) || g_rec.reopening) /* its engine is about to go */
        streams_park_locked(NULL);
    pthread_mutex_unlock(&g_stream_lock);
    run_scene(s->o, s->tasks, s->n_tasks, s->cfg, &s->env, NULL, s, s->seq, s->path);
    pthread_mutex_lock(&g_stream_lock);
    s->done = 1;
    pthread_cond_broadcast(&g_stream_done);
    pthread_mutex_unlock(&g_stream_lock);
    return NULL;
}

/* Join the streams whose scene is over (all of them, waiting, with
 * all set); return a free one, waiting for one when wait is set. */
static stream *streams_reap(stream *st, int n, int wait, int all)
{
    pthread_mutex_lock(&g_stream_lock);
    for (;;) {
        stream *free_one = NULL;
        int busy = 0;
        for (int i = 0; i < n; i++) {
            if (st[i].busy && st[i].done) {
                pthread_join(st[i].thread, NULL);
                st[i].busy = st[i].done = 0;
                free(st[i].path);
                st[i].path = NULL;
            }
            busy += st[i].busy;
            if (!st[i].busy && !free_one)
                free_one = &st[i];
        }
        if (all ? busy == 0 : free_one || !wait) {
            pthread_mutex_unlock(&g_stream_lock);
            return free_one;
        }
        pthread_cond_wait(&g_stream_done, &g_stream_lock);
    }
}

static int fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fatal(const char *fmt, ...)
{
    char text[TD_ERROR_MSG_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    td_error_log("%s", text);
    send_with_hex("FATAL", text);
    return TD_WORKER_EXIT_FATAL;
}

int td_worker_main(const td_worker_opts *o)
{
    const char *fd_env = getenv("TAPEDECK_CONTROL_FD");
    if (!fd_env || (g_ctl_fd = atoi(fd_env)) < 3) {
        fprintf(stderr, "tapedeck worker: started without a supervisor (TAPEDECK_CONTROL_FD)\n");
        return TD_WORKER_EXIT_FATAL;
    }
    char prefix[32];
    snprintf(prefix, sizeof prefix, "[w%d]", o->index);
    td_log_set_prefix(prefix);

    /* Group signals (Ctrl-C, `timeout`, a service stop) are for the
     * supervisor to interpret: it lets scenes in flight finish. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_abandon;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        return fatal("cannot install the SIGUSR1 handler");

    const char *device = "cpu";
    td_device_identity seen = {{0}, {0}}; /* what the runtime gave us, for [affinity-verify] */
    if (o->vendor && o->pci) {
        char detail[256];
        enum td_affinity_result ar = td_affinity_verify(o->vendor, o->pci, &seen, detail, sizeof detail);
        /* Echo the variables as this process received them: proof that
         * the supervisor set them before exec, whatever the runtime says. */
        const char *vars[] = {"CUDA_VISIBLE_DEVICES", "ZE_AFFINITY_MASK", "ROCR_VISIBLE_DEVICES"};
        char vals[256] = "";
        for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
            const char *v = getenv(vars[i]);
            if (v) {
                size_t used = strlen(vals);
                snprintf(vals + used, sizeof vals - used, "%s%s=%s", used ? " " : "", vars[i], v);
            }
        }
        /* and the CPUs the supervisor pinned us to */
        char cpus[256] = "?";
        cpu_set_t mine;
        if (sched_getaffinity(0, sizeof mine, &mine) == 0)
            td_cpulist_format(&mine, cpus, sizeof cpus);
        td_info("[affinity-verify] PID=%d | %s | expected PCI=%s | %s | %s | cpus=%s", (int)getpid(), vals, o->pci,
                detail, ar == TD_AFFINITY_OK ? "OK" : ar == TD_AFFINITY_MISMATCH ? "FAILED" : "unverified", cpus);
        if (ar == TD_AFFINITY_MISMATCH)
            return fatal("GPU affinity check failed: %s", detail);
        device = o->pci;
    }

    td_error err = {0};
    const td_task_ops *tasks[TD_MAX_TASKS];
    size_t n_tasks = 0;
    if (td_task_list_parse(o->task ? o->task : "subtitles", tasks, &n_tasks, &err) != TD_OK)
        return fatal("%s", err.msg);
    td_restore_args ra = {o->restore_preset, o->restore_quality, o->restore_format, o->restore_size,
                          o->restore_codec, o->restore_opencl, o->restore_cuda, o->restore_vaapi,
                          o->restore_hwenc};
    td_task_config tcfg;
    if (td_task_config_build(tasks, n_tasks, o->formats, &ra, device, o->threads, &tcfg, &err) != TD_OK)
        return fatal("%s", err.msg);
    tcfg.vendor = o->vendor;

    td_task_env env = {0};
    td_engine_config cfg = {.language = o->language, .model = o->model, .device = device,
                            .threads = o->threads, .models_dir = o->models_dir,
                            .beam_size = o->beam_size, .compute = o->compute,
                            .decode = o->decode, .batch = o->batch, .backend = o->backend,
                            .translate = o->translate};
    const char *engine_name = "none", *model = "-";
    stream streams[TD_WHISPER_MAX_STREAMS];
    memset(streams, 0, sizeof streams);
    int n_streams = 1;
    if (td_task_list_needs_engine(tasks, n_tasks)) {
        /* scenes at once: subtitles alone (restore runs one at a time) */
        cfg.streams = n_tasks == 1 && o->streams > 1 ? o->streams : 1;
        if (td_engine_select(o->engine, &cfg, &env.ops, &err) != TD_OK)
            return fatal("%s", err.msg);
        int orc = open_engine(o, &cfg, &env, &err);
        if (orc == TD_ENOMEM) {
            /* Not even the smallest model fits now: the worker still
             * starts, and its scenes go to CPU workers (run_scene). */
            td_warn("[vram-safety] engine %s: %s; scenes go to CPU workers", env.ops->name, err.msg);
        } else if (orc != TD_OK) {
            return fatal("engine %s: %s", env.ops->name, err.msg);
        }
        engine_name = env.ops->name;
        model = env.eng ? env.ops->model_name(env.eng) : "-";
        streams[0].env = env;
        while (env.eng && env.ops->clone && n_streams < cfg.streams) {
            td_error cerr = {0};
            streams[n_streams].env = env;
            if (env.ops->clone(env.eng, &streams[n_streams].env.eng, &cerr) != TD_OK) {
                td_warn("one scene at a time less than asked: %s", cerr.msg);
                break;
            }
            n_streams++;
        }
    }
    for (int i = 0; i < n_streams; i++)
        streams[i] = (stream){.o = o, .tasks = tasks, .n_tasks = n_tasks, .cfg = &tcfg,
                              .env = streams[i].env};
    /* what a reopen with several scenes at once works on */
    g_rec.st = streams;
    g_rec.n = n_streams;
    g_rec.o = o;
    g_rec.cfg = &cfg;
    g_rec.env = &env;

    /* [affinity-verify] hook: the backend that computes on a GPU says
     * which card its runtime opened. The CPU backend opens none, so only
     * the CUDA check above can have filled seen. The Vulkan backend fills
     * it here from VkPhysicalDevicePCIBusInfoPropertiesEXT and
     * VkPhysicalDeviceIDProperties::deviceUUID once the engine uses it. */
    /* a GPU worker's backend says which card it opened (a CPU worker
     * asked to run Vulkan, on lavapipe say, has no card to verify) */
    if (o->pci && env.ops && env.eng && env.ops->settings && !seen.pci[0] && !seen.uuid[0]) {
        td_engine_settings es = {0};
        env.ops->settings(env.eng, &es);
        if (es.pci)
            snprintf(seen.pci, sizeof seen.pci, "%s", es.pci);
        if (es.uuid)
            snprintf(seen.uuid, sizeof seen.uuid, "%s", es.uuid);
    }
    const char *test_id = getenv("TAPEDECK_TEST_RUNTIME_ID");
    if (test_id && !seen.pci[0] && !seen.uuid[0]) {
        /* Test hook (CI has no GPU): "PCI/UUID" stands for what a runtime
         * would report, so the supervisor's checks run end to end. */
        const char *slash = strchr(test_id, '/');
        size_t n = slash ? (size_t)(slash - test_id) : strlen(test_id);
        snprintf(seen.pci, sizeof seen.pci, "%.*s", (int)(n < sizeof seen.pci ? n : sizeof seen.pci - 1), test_id);
        if (slash && strcmp(slash + 1, "-") != 0)
            snprintf(seen.uuid, sizeof seen.uuid, "%s", slash + 1);
    }
    if (seen.pci[0] || seen.uuid[0])
        td_info("[affinity-verify] PID=%d | runtime reports PCI=%s UUID=%s", (int)getpid(),
                seen.pci[0] ? seen.pci : "-", seen.uuid[0] ? seen.uuid : "-");

    td_buf ready;
    td_buf_init(&ready, 0);
    td_buf_puts(&ready, "READY ");
    td_hex_encode(engine_name, strlen(engine_name), &ready);
    td_buf_putc(&ready, ' ');
    td_hex_encode(model, strlen(model), &ready);
    td_buf_putc(&ready, ' ');
    td_hex_encode(device, strlen(device), &ready);
    const char *ids[2] = {seen.pci, seen.uuid};
    for (size_t i = 0; i < 2; i++) {
        td_buf_putc(&ready, ' ');
        if (ids[i][0])
            td_hex_encode(ids[i], strlen(ids[i]), &ready);
        else
            td_buf_putc(&ready, '-');
    }
    td_buf_printf(&ready, " %d", n_streams); /* scenes it takes at once */
    send_line(&ready);
    td_buf_release(&ready);

    td_linebuf in;
    td_linebuf_init(&in, TD_PROTO_MAX_LINE);
    int eof = 0;
    while (!g_terminate) {
        char *line = NULL;
        if (!td_linebuf_next(&in, &line, eof)) {
            if (eof)
                break;
            long n = td_linebuf_fill(&in, STDIN_FILENO);
            if (n == 0)
                eof = 1;
            else if (n == -1)
                break;
            continue;
        }
        if (strcmp(line, "QUIT") == 0)
            break;
        long seq;
        char hex[TD_PROTO_MAX_LINE];
        if (sscanf(line, "SCENE %ld %65535s", &seq, hex) == 2) {
            char *path = td_hex_decode(hex, NULL);
            if (!path) {
                send_with_hex("FATAL", "malformed SCENE line from supervisor");
                break;
            }
            stream *s = n_streams > 1 ? streams_reap(streams, n_streams, 1, 0) : NULL;
            if (s) {
                /* under the lock: a reopen's leader counts the streams with a scene */
                pthread_mutex_lock(&g_stream_lock);
                s->seq = seq;
                s->path = path;
                s->busy = 1;
                s->done = 0;
                int started = pthread_create(&s->thread, NULL, stream_main, s) == 0;
                pthread_mutex_unlock(&g_stream_lock);
                if (started)
                    continue;
                /* on this thread, still as stream s (busy: a reopen waits for it) */
                td_warn("cannot start a thread for a scene; running it here");
                run_scene(o, tasks, n_tasks, &tcfg, &s->env, NULL, s, seq, path);
                pthread_mutex_lock(&g_stream_lock);
                s->busy = 0;
                s->path = NULL;
                pthread_cond_broadcast(&g_stream_done);
                pthread_mutex_unlock(&g_stream_lock);
                free(path);
                continue;
            }
            /* [vram-safety] reopens the engine here, where no clone shares it */
            run_scene(o, tasks, n_tasks, &tcfg, &env, &cfg, NULL, seq, path);
            free(path);
        } else {
            td_warn("ignoring unknown command from supervisor");
        }
    }
    td_linebuf_release(&in);
    if (n_streams > 1)
        streams_reap(streams, n_streams, 1, 1);
    for (int i = n_streams - 1; i >= 1; i--)
        env.ops->close(streams[i].env.eng); /* clones before the original */
    if (env.ops && env.eng)
        env.ops->close(env.eng);
    return 0;
}
