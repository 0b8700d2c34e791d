/* buf.c: growable capped buffer (see buf.h). */
#include "util/buf.h"
#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void td_buf_init(td_buf *b, size_t limit)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->limit = limit ? limit : TD_BUF_DEFAULT_LIMIT;
}

void td_buf_release(td_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *td_buf_detach(td_buf *b, size_t *len)
{
    char *d = b->data;
    if (!d)
        d = calloc(1, 1);
    if (len)
        *len = d ? b->len : 0;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}

void td_buf_reset(td_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static int grow(td_buf *b, size_t extra)
{
    if (extra > b->limit || b->len > b->limit - extra)
        return TD_ENOMEM;
    /* With limit SIZE_MAX the +1 for the NUL below would wrap to 0. */
    if (b->len + extra == (size_t)-1)
        return TD_ENOMEM;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return TD_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
    char *d = realloc(b->data, cap);
    if (!d)
        return TD_ENOMEM;
    b->data = d;
    b->cap = cap;
    return TD_OK;
}

int td_buf_append(td_buf *b, const void *data, size_t len)
{
    int rc = grow(b, len);
    if (rc)
        return rc;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return TD_OK;
}

int td_buf_puts(td_buf *b, const char *s)
{
    return td_buf_append(b, s, strlen(s));
}

int td_buf_putc(td_buf *b, char c)
{
    return td_buf_append(b, &c, 1);
}

int td_buf_printf(td_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return TD_EINVAL;
    int rc = grow(b, (size_t)n);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return TD_OK;
}
