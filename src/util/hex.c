/* hex.c: hex encoding and decoding (see hex.h). */
#include "util/hex.h"

#include <stdlib.h>

#include "util/error.h"

int td_hex_append(td_buf *out, const void *data, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        char pair[2] = {digits[p[i] >> 4], digits[p[i] & 15]};
        int rc = td_buf_append(out, pair, 2);
        if (rc)
            return rc;
    }
    return TD_OK;
}

static int digit_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *td_hex_to_bytes(const char *hex, size_t hex_len, size_t *len)
{
    if (hex_len % 2)
        return NULL;
    char *out = malloc(hex_len / 2 + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < hex_len / 2; i++) {
        int hi = digit_value(hex[2 * i]), lo = digit_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(out);
            return NULL;
        }
        out[i] = (char)(hi << 4 | lo);
    }
    out[hex_len / 2] = '\0';
    if (len)
        *len = hex_len / 2;
    return out;
}
