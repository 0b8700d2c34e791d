/* hash.c: SHA-256 via libavutil's AVHashContext (see hash.h). */
#include "util/hash.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <libavutil/hash.h>

static int hash_open(struct AVHashContext **ctx, td_error *err)
{
    if (av_hash_alloc(ctx, "SHA256") < 0 || !*ctx)
        return td_error_set(err, TD_ENOMEM, "cannot allocate SHA-256 context");
    av_hash_init(*ctx);
    return TD_OK;
}

static void hash_hex(struct AVHashContext *ctx, char *hex)
{
    av_hash_final_hex(ctx, (uint8_t *)hex, TD_SHA256_HEX_LEN + 1);
    hex[TD_SHA256_HEX_LEN] = '\0';
}

int td_sha256_buf(const void *data, size_t len, char *hex, td_error *err)
{
    struct AVHashContext *ctx = NULL;
    int rc = hash_open(&ctx, err);
    if (rc)
        return rc;
    av_hash_update(ctx, data, len);
    hash_hex(ctx, hex);
    av_hash_freep(&ctx);
    return TD_OK;
}

int td_sha256_file(const char *path, char *hex, int64_t *size, td_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return td_error_errno(err, TD_EIO, errno, "%s: cannot open", path);
    struct AVHashContext *ctx = NULL;
    int rc = hash_open(&ctx, err);
    if (rc) {
        close(fd);
        return rc;
    }
    uint8_t block[65536];
    int64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, block, sizeof block);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = td_error_errno(err, TD_EIO, errno, "%s: read failed", path);
            break;
        }
        if (n == 0)
            break;
        av_hash_update(ctx, block, (size_t)n);
        total += n;
    }
    close(fd);
    if (rc == TD_OK) {
        hash_hex(ctx, hex);
        if (size)
            *size = total;
    }
    av_hash_freep(&ctx);
    return rc;
}
