/*
 * hash.h: SHA-256 checksums of outputs, through libavutil's hash API (a
 * library we link anyway), for the .done marker's integrity check.
 */
#ifndef TD_UTIL_HASH_H
#define TD_UTIL_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

#define TD_SHA256_HEX_LEN 64

/* hex must hold TD_SHA256_HEX_LEN + 1 bytes. */
int td_sha256_buf(const void *data, size_t len, char *hex, td_error *err);
/* Also returns the file's size in *size (may be NULL). */
int td_sha256_file(const char *path, char *hex, int64_t *size, td_error *err);

#endif
