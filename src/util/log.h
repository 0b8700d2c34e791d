/*
 * log.h: the application's log (supervisor and workers).
 *
 * Library modules do not log; they return errors. The run stages (src/run,
 * src/main.c) log through this: one line per event on stderr, with the
 * seed pipeline's tags ("[worker-start] PID=..."), so existing greps and
 * habits keep working.
 *
 * Levels: -q shows errors and warnings, default adds info, -v verbose,
 * -vv debug. A line hook lets the progress display clear its bar before a
 * line is printed and redraw it after.
 */
#ifndef TD_UTIL_LOG_H
#define TD_UTIL_LOG_H

#include <stdio.h>

enum td_log_level {
    TD_LOG_ERROR = 0,
    TD_LOG_WARN = 1,
    TD_LOG_INFO = 2,
    TD_LOG_VERBOSE = 3,
    TD_LOG_DEBUG = 4,
};

void td_log_set_level(int level);
int td_log_get_level(void);
int td_log_enabled(int level);

/* Called around each printed line (e.g. to clear and redraw a bar). */
typedef void (*td_log_hook)(void *user, int before);
void td_log_set_hook(td_log_hook hook, void *user);

/* Prefix for every line of this process, e.g. "w1" in a worker. */
void td_log_set_prefix(const char *prefix);

void td_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print a line verbatim (already formatted, e.g. relayed from a worker). */
void td_log_raw(int level, const char *line);

/* A copy of a name fit for one log or status line: control bytes
 * (a newline in a file name, say) become '?'. Returns out. */
char *td_printable(const char *in, char *out, size_t len);

#define td_error_log(...) td_log(TD_LOG_ERROR, __VA_ARGS__)
#define td_warn(...) td_log(TD_LOG_WARN, __VA_ARGS__)
#define td_info(...) td_log(TD_LOG_INFO, __VA_ARGS__)
#define td_verbose(...) td_log(TD_LOG_VERBOSE, __VA_ARGS__)
#define td_debug(...) td_log(TD_LOG_DEBUG, __VA_ARGS__)

#endif
