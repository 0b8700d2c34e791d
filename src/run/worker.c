/* worker.c: one worker process's loop (see worker.h for its life cycle). */
#include "run/worker.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
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
#include "task/subtitles.h"
#include "util/buf.h"
#include "util/fault.h"
#include "util/log.h"

static volatile sig_atomic_t g_terminate;
static int g_ctl_fd = -1;

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
} scene_progress;

static int on_progress(void *user, double seconds_done)
{
    scene_progress *p = user;
    double t = now_s();
    if (t - p->last_beat >= 1.0) {
        send_fmt("BEAT %ld %.2f", p->seq, seconds_done);
        p->last_beat = t;
    }
    return g_terminate ? 1 : 0;
}

static void run_scene(const td_worker_opts *o, const td_engine_ops *ops, td_engine *eng,
                      unsigned formats, const char *device, long seq, const char *path)
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

    /* Another process may have finished it since the plan was made. */
    enum td_marker_state state = TD_MARKER_NONE;
    if (!o->force && td_subtitles_check(&scene, formats, &state, NULL, 0, &err) == TD_OK &&
        state == TD_MARKER_DONE) {
        char name[512];
        td_info("[skip] Already processed: %s (task=%s)", td_printable(scene.rel, name, sizeof name),
                o->task);
        send_fmt("SKIP %ld", seq);
        td_scene_release(&scene);
        return;
    }

    send_fmt("START %ld %.0f %lld", seq, -1.0, (long long)scene.size);
    scene_progress prog = {.seq = seq, .last_beat = now_s()};
    td_subtitle_opts sopts = {.formats = formats, .device = device};
    td_subtitle_result res;
    double t0 = now_s();
    int rc = td_subtitles_run(&scene, ops, eng, &sopts, on_progress, &prog, &res, &err);
    if (rc == TD_OK) {
        double wall = now_s() - t0;
        char name[512];
        td_info("[checkpoint] %s | %.1f s audio | %zu cues | %.1fx real time",
                td_printable(scene.rel, name, sizeof name),
                res.audio_seconds, res.n_cues, wall > 0 ? res.audio_seconds / wall : 0.0);
        td_buf line;
        td_buf_init(&line, 0);
        td_buf_printf(&line, "DONE %ld %.3f ", seq, res.audio_seconds);
        td_hex_encode(res.language, strlen(res.language), &line);
        send_line(&line);
        td_buf_release(&line);
    } else {
        snprintf(head, sizeof head, "FAIL %ld %s", seq, td_rc_name(rc));
        send_with_hex(head, err.msg);
    }
    td_scene_release(&scene);
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
    if (o->vendor && o->pci) {
        char detail[256];
        enum td_affinity_result ar = td_affinity_verify(o->vendor, o->pci, detail, sizeof detail);
        /* Echo the variables as this process received them: proof that
         * the supervisor set them before exec, whatever the runtime says. */
        const char *vars[] = {"CUDA_VISIBLE_DEVICES", "ZE_AFFINITY_MASK", "ROCR_VISIBLE_DEVICES"};
        char seen[256] = "";
        for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
            const char *v = getenv(vars[i]);
            if (v) {
                size_t used = strlen(seen);
                snprintf(seen + used, sizeof seen - used, "%s%s=%s", used ? " " : "", vars[i], v);
            }
        }
        td_info("[affinity-verify] PID=%d | %s | expected PCI=%s | %s | %s", (int)getpid(), seen, o->pci,
                detail, ar == TD_AFFINITY_OK ? "OK" : ar == TD_AFFINITY_MISMATCH ? "FAILED" : "unverified");
        if (ar == TD_AFFINITY_MISMATCH)
            return fatal("GPU affinity check failed: %s", detail);
        device = o->pci;
    }

    unsigned formats = 0;
    td_error err = {0};
    if (td_formats_parse(o->formats ? o->formats : "srt", &formats, &err) != TD_OK)
        return fatal("%s", err.msg);

    td_engine_config cfg = {.language = o->language, .model = o->model, .device = device,
                            .threads = o->threads, .models_dir = o->models_dir,
                            .beam_size = o->beam_size, .compute = o->compute,
                            .decode = o->decode, .batch = o->batch,
                            .translate = o->translate};
    const td_engine_ops *ops = NULL;
    if (td_engine_select(o->engine, &cfg, &ops, &err) != TD_OK)
        return fatal("%s", err.msg);
    td_engine *eng = NULL;
    if (ops->open(&cfg, &eng, &err) != TD_OK)
        return fatal("engine %s: %s", ops->name, err.msg);

    td_buf ready;
    td_buf_init(&ready, 0);
    td_buf_puts(&ready, "READY ");
    td_hex_encode(ops->name, strlen(ops->name), &ready);
    td_buf_putc(&ready, ' ');
    const char *model = ops->model_name(eng);
    td_hex_encode(model, strlen(model), &ready);
    td_buf_putc(&ready, ' ');
    td_hex_encode(device, strlen(device), &ready);
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
            run_scene(o, ops, eng, formats, device, seq, path);
            free(path);
        } else {
            td_warn("ignoring unknown command from supervisor");
        }
    }
    td_linebuf_release(&in);
    ops->close(eng);
    return 0;
}
