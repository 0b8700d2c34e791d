/*
 * error.h: how tapedeck's library reports failure.
 *
 * Every library function that can fail returns an int: TD_OK (0) on success
 * or one of the negative td_rc codes below, and fills a caller-owned
 * td_error with a message that names the file and the reason. Only the CLI
 * (src/main.c) prints errors and exits.
 *
 * The code says what the caller should do about it: TD_EINPUT means the
 * input itself is bad (retrying cannot help), TD_EIO and TD_ENOMEM may be
 * transient, TD_EABORT means the caller asked to stop.
 */
#ifndef TD_UTIL_ERROR_H
#define TD_UTIL_ERROR_H

#include <stddef.h>

typedef enum td_rc {
    TD_OK = 0,
    TD_EIO = -1,          /* file system or pipe error (errno-based) */
    TD_EINPUT = -2,       /* bad input: unreadable, corrupt, no audio ... */
    TD_ENOMEM = -3,       /* allocation failed or a size bound was hit */
    TD_EENGINE = -4,      /* speech engine failed */
    TD_EABORT = -5,       /* stopped on request */
    TD_EINVAL = -6,       /* invalid argument or configuration */
    TD_EUNAVAILABLE = -7, /* a component (engine, device) is not usable here */
} td_rc;

#define TD_ERROR_MSG_MAX 1024

typedef struct td_error {
    int code;                    /* the td_rc that was returned */
    char msg[TD_ERROR_MSG_MAX];  /* human-readable, no trailing newline */
} td_error;

/* Fill err (which may be NULL) and return code, so callers can write
 * `return td_error_set(err, TD_EINPUT, "%s: no audio stream", path);`. */
int td_error_set(td_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like td_error_set, appending ": strerror(errnum)". */
int td_error_errno(td_error *err, int code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Put `prefix: ` in front of an existing message (keeps the code). */
void td_error_prefix(td_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void td_error_clear(td_error *err);

/* Short stable name of a code ("input", "io", ...), for markers and logs. */
const char *td_rc_name(int code);

#endif
