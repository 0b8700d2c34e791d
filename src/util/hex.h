/*
 * hex.h: bytes as lower-case hex text and back.
 *
 * Used wherever arbitrary bytes (file names with newlines or invalid
 * UTF-8) must travel through a text channel: the worker protocol's fields
 * and the markers' "_hex" name fields.
 */
#ifndef TD_UTIL_HEX_H
#define TD_UTIL_HEX_H

#include <stddef.h>

#include "util/buf.h"

/* Append 2*len hex digits to out. Returns TD_OK or TD_ENOMEM. */
int td_hex_append(td_buf *out, const void *data, size_t len);

/* Decode hex_len digits (either case) into a new NUL-terminated buffer
 * holding *len bytes; NULL for odd length, a non-hex digit or no memory.
 * The caller frees it. */
char *td_hex_to_bytes(const char *hex, size_t hex_len, size_t *len);

#endif
