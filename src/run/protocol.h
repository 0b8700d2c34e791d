/*
 * protocol.h: the line protocol between the supervisor and its workers.
 *
 * One line per message, fields separated by single spaces. Strings that
 * may hold any byte (paths: scene names can contain spaces, newlines and
 * invalid UTF-8; error messages) travel hex-encoded, so a line is always
 * one line and parsing never guesses.
 *
 * supervisor -> worker (the worker's stdin):
 *   SCENE <seq> <hex path>        process this scene
 *   QUIT                          finish and exit
 * worker -> supervisor (the control fd, TAPEDECK_CONTROL_FD):
 *   READY <hex engine> <hex model> <hex device> <hex pci> <hex uuid>
 *                                 pci, uuid: what the GPU runtime says it
 *                                 opened, "-" when it says nothing
 *   START <seq> <duration s or -1> <bytes>
 *   BEAT <seq> <seconds done> [<frames done> <frames total> <fps>]
 *                                 heartbeat with progress (frames: video tasks)
 *   DONE <seq> <audio s> <video frames written> <unresolved stretches> <hex language>
 *   SKIP <seq>                    a valid .done appeared meanwhile
 *   FAIL <seq> <kind> <hex message>   kind: td_rc_name of the error
 *   FATAL <hex message>           the worker cannot work at all
 *
 * The worker's stdout and stderr go to a third pipe that the supervisor
 * relays to its log and keeps the last lines of, for .failed markers.
 */
#ifndef TD_RUN_PROTOCOL_H
#define TD_RUN_PROTOCOL_H

#include <stddef.h>

#include "util/buf.h"

#define TD_PROTO_MAX_LINE 65536

/* Append hex of bytes to out. */
int td_hex_encode(const void *data, size_t len, td_buf *out);
/* Decode hex string (NUL-terminated) into a new malloc'ed NUL-terminated
 * string; NULL on bad input or no memory. Caller frees. */
char *td_hex_decode(const char *hex, size_t *len);

/* Accumulates bytes read from a pipe and hands out complete lines. */
typedef struct td_linebuf {
    td_buf buf;
    size_t start;   /* offset of the next unread byte */
    int overflow;   /* a line exceeded the limit and was cut */
} td_linebuf;

void td_linebuf_init(td_linebuf *lb, size_t limit);
void td_linebuf_release(td_linebuf *lb);
/* Read once from fd (non-blocking). Returns bytes read, 0 at EOF, -1 on
 * error other than EAGAIN (errno set), -2 for EAGAIN. */
long td_linebuf_fill(td_linebuf *lb, int fd);
/* Next complete line without its '\n' into *line (valid until the next
 * call); returns 1 if one was found, 0 if none is complete. With
 * flush set, a trailing incomplete line is returned too (at EOF). */
int td_linebuf_next(td_linebuf *lb, char **line, int flush);

#endif
