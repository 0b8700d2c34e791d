/* progress.c: terminal bar and plain progress lines (see progress.h). */
#include "run/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"

struct td_progress {
    int tty;
    int lines_drawn;         /* lines of the display currently on screen */
    td_progress_state last;
    int have_last;
    double last_plain;       /* elapsed at the last plain line */
    double last_draw;
};

void td_format_hms(double seconds, char *out, size_t len)
{
    if (seconds < 0 || seconds > 1e8) {
        snprintf(out, len, "--:--");
        return;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(out, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(out, len, "%ld:%02ld", s / 60, s % 60);
}

static int term_width(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
        return ws.ws_col;
    return 80;
}

static double eta_seconds(const td_progress_state *st)
{
    if (st->elapsed < 1 || st->bytes_finished <= 0 || st->bytes_total <= st->bytes_finished)
        return -1;
    double rate = (double)st->bytes_finished / st->elapsed;
    return (double)(st->bytes_total - st->bytes_finished) / rate;
}

static void summary_text(const td_progress_state *st, char *out, size_t len)
{
    char eta[32], el[32];
    td_format_hms(eta_seconds(st), eta, sizeof eta);
    td_format_hms(st->elapsed, el, sizeof el);
    double speed = st->elapsed > 0 ? st->audio_seconds / st->elapsed : 0;
    int n = snprintf(out, len, "%zu/%zu scenes | %.2f h audio | %.1fx real time | %s elapsed | ETA %s",
                     st->scenes_finished, st->scenes_total, st->audio_seconds / 3600.0, speed, el, eta);
    if (n > 0 && (size_t)n < len && st->frames > 0)
        n += snprintf(out + n, len - (size_t)n, " | %lld frames, %.1f fps", st->frames,
                      st->elapsed > 0 ? (double)st->frames / st->elapsed : 0.0);
    if (n > 0 && (size_t)n < len && st->failed)
        n += snprintf(out + n, len - (size_t)n, " | failed %zu", st->failed);
    if (n > 0 && (size_t)n < len && st->stopping)
        snprintf(out + n, len - (size_t)n, " | stopping");
}

static void erase(td_progress *p)
{
    if (!p->tty || p->lines_drawn == 0)
        return;
    /* cursor is at the start of the last drawn line's end; go up and clear */
    fprintf(stderr, "\r\033[K");
    for (int i = 1; i < p->lines_drawn; i++)
        fprintf(stderr, "\033[1A\033[K");
    p->lines_drawn = 0;
}

static void draw(td_progress *p)
{
    if (!p->have_last)
        return;
    const td_progress_state *st = &p->last;
    int width = term_width();
    int bar_w = width > 60 ? 30 : 10;
    double frac = st->scenes_total ? (double)st->scenes_finished / (double)st->scenes_total : 1.0;
    int filled = (int)(frac * bar_w + 0.5);
    char bar[64];
    for (int i = 0; i < bar_w; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[bar_w] = '\0';
    char text[512];
    summary_text(st, text, sizeof text);
    char line[1024];
    snprintf(line, sizeof line, "[%s] %3.0f%% %s", bar, frac * 100, text);
    line[width - 1 < (int)sizeof line ? width - 1 : (int)sizeof line - 1] = '\0';
    fprintf(stderr, "%s", line);
    p->lines_drawn = 1;
    for (size_t i = 0; i < st->n_workers; i++) {
        const td_progress_worker *w = &st->workers[i];
        char scene_time[64] = "";
        if (w->scene[0] && w->frames_done > 0) {
            /* video: frames of the scene, speed and what is left of it */
            char eta[32] = "--:--";
            if (w->fps > 0 && w->frames_total > w->frames_done)
                td_format_hms((double)(w->frames_total - w->frames_done) / w->fps, eta, sizeof eta);
            if (w->frames_total > 0)
                snprintf(scene_time, sizeof scene_time, "%lld/%lld frames, %.1f fps, ETA %s", w->frames_done,
                         w->frames_total, w->fps, eta);
            else
                snprintf(scene_time, sizeof scene_time, "%lld frames, %.1f fps", w->frames_done, w->fps);
        } else if (w->scene[0]) {
            td_format_hms(w->scene_seconds, scene_time, sizeof scene_time);
            strncat(scene_time, " audio", sizeof scene_time - strlen(scene_time) - 1);
        }
        snprintf(line, sizeof line, "  w%zu %-12s pid %-7d %-8s %s%s%s%s", i, w->device, w->pid, w->state,
                 w->scene, w->scene[0] ? " (" : "", scene_time, w->scene[0] ? ")" : "");
        line[width - 1 < (int)sizeof line ? width - 1 : (int)sizeof line - 1] = '\0';
        fprintf(stderr, "\n%s", line);
        p->lines_drawn++;
    }
    fflush(stderr);
}

static void log_hook(void *user, int before)
{
    td_progress *p = user;
    if (before)
        erase(p);
    else
        draw(p);
}

td_progress *td_progress_create(int tty)
{
    td_progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->tty = tty;
    if (tty)
        td_log_set_hook(log_hook, p);
    return p;
}

void td_progress_update(td_progress *p, const td_progress_state *st, int scene_finished)
{
    if (!p)
        return;
    p->last = *st;
    p->have_last = 1;
    if (p->tty) {
        if (!scene_finished && st->elapsed - p->last_draw < 0.25)
            return;
        p->last_draw = st->elapsed;
        erase(p);
        draw(p);
        return;
    }
    if (scene_finished || st->elapsed - p->last_plain >= 60.0) {
        char text[512];
        summary_text(st, text, sizeof text);
        td_info("[progress] %s", text);
        p->last_plain = st->elapsed;
    }
}

void td_progress_free(td_progress **pp)
{
    td_progress *p = *pp;
    if (!p)
        return;
    if (p->tty) {
        erase(p);
        fflush(stderr);
        td_log_set_hook(NULL, NULL);
    }
    free(p);
    *pp = NULL;
}
