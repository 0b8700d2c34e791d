/* error.c: filling td_error (see error.h). */
#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

__attribute__((format(printf, 2, 0)))
static void set_vmsg(td_error *err, const char *fmt, va_list ap)
{
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

int td_error_set(td_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        set_vmsg(err, fmt, ap);
        va_end(ap);
    }
    return code;
}

int td_error_errno(td_error *err, int code, int errnum, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        set_vmsg(err, fmt, ap);
        va_end(ap);
        size_t len = strlen(err->msg);
        snprintf(err->msg + len, sizeof err->msg - len, ": %s", strerror(errnum));
    }
    return code;
}

void td_error_prefix(td_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    char prefix[TD_ERROR_MSG_MAX];
    char old[TD_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
}

void td_error_clear(td_error *err)
{
    if (err) {
        err->code = TD_OK;
        err->msg[0] = '\0';
    }
}

const char *td_rc_name(int code)
{
    switch (code) {
    case TD_OK: return "ok";
    case TD_EIO: return "io";
    case TD_EINPUT: return "input";
    case TD_ENOMEM: return "memory";
    case TD_EENGINE: return "engine";
    case TD_EABORT: return "aborted";
    case TD_EINVAL: return "invalid";
    case TD_EUNAVAILABLE: return "unavailable";
    default: return "unknown";
    }
}
