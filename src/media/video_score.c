/* video_score.c: detail and legal-range measures of decoded video (see
 * video_score.h). */
#include "media/video_score.h"

#include <string.h>

#include "media/video_io.h"

double td_grad_energy(const uint8_t *p, int stride, int w, int h)
{
    if (w < 2 || h < 2)
        return 0;
    double acc = 0;
    for (int y = 0; y < h - 1; y++) {
        const uint8_t *r = p + (size_t)y * stride, *n = r + stride;
        for (int x = 0; x < w - 1; x++) {
            int dx = r[x + 1] - r[x], dy = n[x] - r[x];
            acc += dx * dx + dy * dy;
        }
    }
    return acc / ((double)(w - 1) * (h - 1));
}

int64_t td_legal_luma(const uint8_t *p, int stride, int w, int h)
{
    int64_t n = 0;
    for (int y = 0; y < h; y++) {
        const uint8_t *r = p + (size_t)y * stride;
        for (int x = 0; x < w; x++)
            n += r[x] >= 16 && r[x] <= 235;
    }
    return n;
}

int td_vscore_file(const char *path, td_vscore *s, td_error *err)
{
    memset(s, 0, sizeof *s);
    td_vinput *in = NULL;
    td_vgraph *g = NULL;
    AVFrame *f = av_frame_alloc(), *o = av_frame_alloc();
    int rc = TD_OK;
    int64_t legal = 0, total = 0;
    double energy = 0;
    if (!f || !o) {
        rc = td_error_set(err, TD_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = td_vinput_open(path, 0, &in, err)) ||
        (rc = td_vgraph_create(in, "format=yuv420p|yuv422p|yuv444p|yuv411p", 0, &g, err)))
        goto out;
    for (int eof = 0; !rc;) {
        if (!eof) {
            int r = td_vinput_read(in, f, NULL, err);
            if (r < 0) {
                rc = r;
                break;
            }
            if (r == TD_VREAD_EOF) {
                eof = 1;
                rc = td_vgraph_push(g, NULL, err);
            } else {
                rc = td_vgraph_push(g, f, err);
                av_frame_unref(f);
            }
            if (rc)
                break;
        }
        for (;;) {
            int p = td_vgraph_pull(g, o, err);
            if (p < 0) {
                rc = p;
                break;
            }
            if (p == 2)
                goto out;
            if (p == 0)
                break;
            s->width = o->width;
            s->height = o->height;
            energy += td_grad_energy(o->data[0], o->linesize[0], o->width, o->height);
            legal += td_legal_luma(o->data[0], o->linesize[0], o->width, o->height);
            total += (int64_t)o->width * o->height;
            s->frames++;
            av_frame_unref(o);
        }
    }
out:
    if (s->frames) {
        s->grad_energy = energy / (double)s->frames;
        s->legal_fraction = total ? (double)legal / (double)total : 0;
    }
    td_vgraph_free(&g);
    td_vinput_free(&in);
    av_frame_free(&f);
    av_frame_free(&o);
    return rc;
}
