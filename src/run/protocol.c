/* protocol.c: hex fields and line framing for supervisor/worker pipes. */
#include "run/protocol.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/hex.h"

int td_hex_encode(const void *data, size_t len, td_buf *out)
{
    if (len == 0)
        return td_buf_putc(out, '-'); /* an empty string still takes a field */
    return td_hex_append(out, data, len);
}

char *td_hex_decode(const char *hex, size_t *len)
{
    if (strcmp(hex, "-") == 0) {
        if (len)
            *len = 0;
        return calloc(1, 1);
    }
    return td_hex_to_bytes(hex, strlen(hex), len);
}

void td_linebuf_init(td_linebuf *lb, size_t limit)
{
    td_buf_init(&lb->buf, limit ? limit : TD_PROTO_MAX_LINE);
    lb->start = 0;
    lb->overflow = 0;
}

void td_linebuf_release(td_linebuf *lb)
{
    td_buf_release(&lb->buf);
    lb->start = 0;
}

/* Drop consumed bytes so the buffer does not creep towards its limit. */
static void compact(td_linebuf *lb)
{
    if (lb->start == 0)
        return;
    memmove(lb->buf.data, lb->buf.data + lb->start, lb->buf.len - lb->start);
    lb->buf.len -= lb->start;
    lb->buf.data[lb->buf.len] = '\0';
    lb->start = 0;
}

long td_linebuf_fill(td_linebuf *lb, int fd)
{
    char chunk[4096];
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? -2 : -1;
    if (n == 0)
        return 0;
    compact(lb);
    if (td_buf_append(&lb->buf, chunk, (size_t)n) != 0) {
        /* A line longer than the limit: keep what fits, mark it cut, and
         * end the line so the stream resynchronises. */
        size_t room = lb->buf.limit - lb->buf.len;
        if (room > 1)
            td_buf_append(&lb->buf, chunk, room - 1);
        td_buf_putc(&lb->buf, '\n');
        lb->overflow = 1;
    }
    return n;
}

int td_linebuf_next(td_linebuf *lb, char **line, int flush)
{
    if (!lb->buf.data || lb->start >= lb->buf.len)
        return 0;
    char *begin = lb->buf.data + lb->start;
    char *nl = memchr(begin, '\n', lb->buf.len - lb->start);
    if (!nl) {
        if (!flush)
            return 0;
        lb->start = lb->buf.len;
        *line = begin; /* already NUL-terminated at len */
        return 1;
    }
    *nl = '\0';
    lb->start = (size_t)(nl - lb->buf.data) + 1;
    *line = begin;
    return 1;
}
