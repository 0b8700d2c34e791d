/*
 * buf.h: a growable byte buffer with a hard size cap.
 *
 * Output text (SRT, VTT, JSON) and lines read from pipes are built here.
 * The cap (limit) exists so that bad input cannot make memory grow without
 * bound: an append past it fails with TD_ENOMEM and leaves the buffer as it
 * was. The data is always NUL-terminated (the NUL is not counted in len).
 *
 * Ownership: td_buf_init fills the struct and owns nothing; td_buf_release
 * frees the data; td_buf_detach hands the data to the caller (free() it).
 */
#ifndef TD_UTIL_BUF_H
#define TD_UTIL_BUF_H

#include <stddef.h>

#define TD_BUF_DEFAULT_LIMIT ((size_t)256 << 20) /* 256 MiB */

typedef struct td_buf {
    char *data;   /* NULL until the first append */
    size_t len;
    size_t cap;
    size_t limit; /* maximum len */
} td_buf;

void td_buf_init(td_buf *b, size_t limit); /* limit 0: TD_BUF_DEFAULT_LIMIT */
void td_buf_release(td_buf *b);
char *td_buf_detach(td_buf *b, size_t *len); /* "" if empty; caller frees */
void td_buf_reset(td_buf *b);                /* len = 0, keeps memory */

int td_buf_append(td_buf *b, const void *data, size_t len);
int td_buf_puts(td_buf *b, const char *s);
int td_buf_putc(td_buf *b, char c);
int td_buf_printf(td_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
