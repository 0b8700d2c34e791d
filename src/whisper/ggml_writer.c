/* ggml_writer.c: a model file streamed to a temporary file, fsynced and
 * renamed into place (see ggml_writer.h). */
#include "whisper/ggml_writer.h"
#include "util/path.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IOBUF_BYTES (1 << 20) /* large-v3 is 3 GB: big writes */

int td_ggml_writer_open(td_ggml_writer *w, const char *path, td_error *err)
{
    memset(w, 0, sizeof *w);
    w->path = path;
    const char *base;
    if (td_split_path(path, w->dir, sizeof w->dir, &base) != 0 || !*base)
        return td_error_set(err, TD_EINVAL, "%s: not a file path", path);
    /* The final name is cut short in the temporary one so that any name
     * the file system takes still gets a temporary file. */
    int fixed = snprintf(NULL, 0, ".tdtmp.%ld..XXXXXX", (long)getpid());
    int room = fixed > 0 && fixed < NAME_MAX ? NAME_MAX - fixed : 0;
    int n = snprintf(w->tmp, sizeof w->tmp, "%s/.tdtmp.%ld.%.*s.XXXXXX", w->dir,
                     (long)getpid(), room, base);
    if (n < 0 || (size_t)n >= sizeof w->tmp)
        return td_error_set(err, TD_EINVAL, "%s: path too long", path);
    int fd = mkostemp(w->tmp, O_CLOEXEC);
    if (fd < 0)
        return td_error_errno(err, TD_EIO, errno, "%s: cannot create temporary file", path);
    if (fchmod(fd, 0644) != 0) {
        int e = errno;
        close(fd);
        unlink(w->tmp);
        return td_error_errno(err, TD_EIO, e, "%s: chmod of temporary file", path);
    }
    w->f = fdopen(fd, "wb");
    if (!w->f) {
        int e = errno;
        close(fd);
        unlink(w->tmp);
        return td_error_errno(err, TD_EIO, e, "%s: fdopen", path);
    }
    w->iobuf = malloc(IOBUF_BYTES); /* without it stdio's default buffer is fine */
    if (w->iobuf && setvbuf(w->f, w->iobuf, _IOFBF, IOBUF_BYTES) != 0) {
        free(w->iobuf);
        w->iobuf = NULL;
    }
    return TD_OK;
}

void td_ggml_write_bytes(td_ggml_writer *w, const void *p, size_t n)
{
    if (w->failed_errno || n == 0)
        return;
    if (fwrite(p, 1, n, w->f) != n)
        w->failed_errno = errno ? errno : EIO;
    w->bytes += n;
}

void td_ggml_write_i32(td_ggml_writer *w, int32_t v)
{
    uint32_t u = (uint32_t)v;
    uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
    td_ggml_write_bytes(w, b, 4);
}

void td_ggml_write_f32(td_ggml_writer *w, float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    td_ggml_write_i32(w, (int32_t)u);
}

void td_ggml_write_hparams(td_ggml_writer *w, const td_whparams *hp)
{
    td_ggml_write_i32(w, (int32_t)TD_GGML_MAGIC);
    const int32_t h[11] = {hp->n_vocab,      hp->n_audio_ctx,  hp->n_audio_state,
                           hp->n_audio_head, hp->n_audio_layer, hp->n_text_ctx,
                           hp->n_text_state, hp->n_text_head,  hp->n_text_layer,
                           hp->n_mels,       hp->ftype};
    for (int i = 0; i < 11; i++)
        td_ggml_write_i32(w, h[i]);
}

void td_ggml_write_tensor_head(td_ggml_writer *w, const char *name, int n_dims,
                               const int64_t *ne, enum td_wtype type)
{
    size_t name_len = strlen(name);
    td_ggml_write_i32(w, n_dims);
    td_ggml_write_i32(w, (int32_t)name_len);
    td_ggml_write_i32(w, type == TD_WT_F16 ? 1 : 0);
    for (int i = 0; i < n_dims; i++)
        td_ggml_write_i32(w, (int32_t)ne[i]);
    td_ggml_write_bytes(w, name, name_len);
}

static void close_file(td_ggml_writer *w)
{
    if (w->f && fclose(w->f) != 0 && !w->failed_errno)
        w->failed_errno = errno ? errno : EIO;
    w->f = NULL;
    free(w->iobuf);
    w->iobuf = NULL;
}

void td_ggml_writer_abort(td_ggml_writer *w)
{
    if (!w->f)
        return;
    close_file(w);
    unlink(w->tmp);
}

int td_ggml_writer_commit(td_ggml_writer *w, td_error *err)
{
    if (!w->f)
        return td_error_set(err, TD_EINVAL, "%s: writer already finished", w->path);
    if (!w->failed_errno && fflush(w->f) != 0)
        w->failed_errno = errno ? errno : EIO;
    if (!w->failed_errno && fsync(fileno(w->f)) != 0)
        w->failed_errno = errno ? errno : EIO;
    close_file(w);
    if (w->failed_errno) {
        unlink(w->tmp);
        return td_error_errno(err, w->failed_errno == ENOMEM ? TD_ENOMEM : TD_EIO,
                              w->failed_errno, "%s: write failed", w->path);
    }
    if (rename(w->tmp, w->path) != 0) {
        int e = errno;
        unlink(w->tmp);
        return td_error_errno(err, TD_EIO, e, "%s: rename into place failed", w->path);
    }
    int fd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return td_error_errno(err, TD_EIO, errno, "%s: cannot open directory", w->dir);
    int rc = TD_OK;
    if (fsync(fd) != 0 && errno != EINVAL) /* some file systems refuse dir fsync */
        rc = td_error_errno(err, TD_EIO, errno, "%s: fsync of directory failed", w->dir);
    close(fd);
    return rc;
}
