/* log.c: leveled, tagged log lines on stderr (see log.h). */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int g_level = TD_LOG_INFO;
static td_log_hook g_hook;
static void *g_hook_user;
static char g_prefix[32];

void td_log_set_level(int level) { g_level = level; }
int td_log_get_level(void) { return g_level; }
int td_log_enabled(int level) { return level <= g_level; }

void td_log_set_hook(td_log_hook hook, void *user)
{
    g_hook = hook;
    g_hook_user = user;
}

void td_log_set_prefix(const char *prefix)
{
    snprintf(g_prefix, sizeof g_prefix, "%s", prefix ? prefix : "");
}

static const char *level_name(int level)
{
    switch (level) {
    case TD_LOG_ERROR: return "ERROR";
    case TD_LOG_WARN: return "WARN ";
    case TD_LOG_INFO: return "INFO ";
    case TD_LOG_VERBOSE: return "INFO ";
    default: return "DEBUG";
    }
}

static void emit(int level, const char *text)
{
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
    if (g_hook)
        g_hook(g_hook_user, 1);
    if (g_prefix[0])
        fprintf(stderr, "%s %s %s %s\n", stamp, level_name(level), g_prefix, text);
    else
        fprintf(stderr, "%s %s %s\n", stamp, level_name(level), text);
    fflush(stderr);
    if (g_hook)
        g_hook(g_hook_user, 0);
}

void td_log(int level, const char *fmt, ...)
{
    if (level > g_level)
        return;
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    emit(level, line);
}

void td_log_raw(int level, const char *line)
{
    if (level > g_level)
        return;
    if (g_hook)
        g_hook(g_hook_user, 1);
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
    if (g_hook)
        g_hook(g_hook_user, 0);
}

char *td_printable(const char *in, char *out, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; in[i] && j + 1 < len; i++) {
        unsigned char c = (unsigned char)in[i];
        out[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (len)
        out[j] = '\0';
    return out;
}
