/* video_analyze.c: the measurements behind every restore decision (see
 * video_analyze.h). */
#include "media/video_analyze.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavutil/dict.h>
#include <libavutil/pixdesc.h>

#include "media/video_io.h"

/* ---- chroma delay ------------------------------------------------------ */

void td_chroma_corr_add(td_chroma_corr *cc, const uint8_t *y, int ystride, const uint8_t *c,
                        int cstride, int w, int h, int log2_cw, int log2_ch, int center_sited)
{
    const int S = TD_CHROMA_MAX_SHIFT;
    if (w < 4 * S + 8 || h < 2)
        return;
    float *gy = malloc(sizeof(float) * (size_t)w);
    float *cu = malloc(sizeof(float) * (size_t)w);
    float *gc = malloc(sizeof(float) * (size_t)w);
    if (!gy || !cu || !gc)
        goto out;
    int f = 1 << log2_cw;
    int cw = (w + f - 1) >> log2_cw;
    /* Chroma sample i sits at luma x = i*f (+ (f-1)/2 when center-sited). */
    double off = center_sited ? (f - 1) * 0.5 : 0.0;
    for (int r = 0; r < h; r += 2) {
        const uint8_t *yr = y + (size_t)r * ystride;
        const uint8_t *cr = c + (size_t)(r >> log2_ch) * cstride;
        for (int x = 0; x < w; x++) {
            double pos = (x - off) / f;
            if (pos < 0)
                pos = 0;
            int i = (int)pos;
            if (i >= cw - 1) {
                cu[x] = cr[cw - 1];
                continue;
            }
            double t = pos - i;
            cu[x] = (float)((1 - t) * cr[i] + t * cr[i + 1]);
        }
        double my = 0, mc = 0;
        for (int x = 1; x < w - 1; x++) {
            gy[x] = fabsf((float)yr[x + 1] - (float)yr[x - 1]);
            gc[x] = fabsf(cu[x + 1] - cu[x - 1]);
            my += gy[x];
            mc += gc[x];
        }
        my /= (w - 2);
        mc /= (w - 2);
        for (int x = 1; x < w - 1; x++) {
            gy[x] -= (float)my;
            gc[x] -= (float)mc;
        }
        int x0 = S + 1, x1 = w - S - 2;
        for (int s = -S; s <= S; s++) {
            double acc = 0;
            for (int x = x0; x < x1; x++)
                acc += (double)gy[x] * gc[x + s];
            cc->sum[s + S] += acc;
        }
        for (int x = x0; x < x1; x++) {
            cc->norm_y += (double)gy[x] * gy[x];
            cc->norm_c += (double)gc[x] * gc[x];
        }
        cc->rows++;
    }
out:
    free(gy);
    free(cu);
    free(gc);
}

void td_chroma_corr_result(const td_chroma_corr *cc, double *delay, double *peak)
{
    const int S = TD_CHROMA_MAX_SHIFT;
    *delay = 0;
    *peak = 0;
    if (cc->rows == 0 || cc->norm_y <= 0 || cc->norm_c <= 0)
        return;
    int best = 0;
    for (int s = -S; s <= S; s++)
        if (cc->sum[s + S] > cc->sum[best + S])
            best = s;
    double d = best;
    if (best > -S && best < S) {
        double a = cc->sum[best + S - 1], b = cc->sum[best + S], c = cc->sum[best + S + 1];
        double den = a - 2 * b + c;
        if (den < 0)
            d += 0.5 * (a - c) / den;
    }
    *delay = d;
    *peak = cc->sum[best + S] / sqrt(cc->norm_y * cc->norm_c);
}

/* ---- noise ------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double td_noise_sigma(const uint8_t *y, int stride, int w, int h)
{
    const int B = 8;
    int bw = (w - 2) / B, bh = (h - 4) / B;
    if (bw < 1 || bh < 1)
        return 0;
    double *blocks = malloc(sizeof(double) * (size_t)bw * (size_t)bh);
    if (!blocks)
        return 0;
    size_t n = 0;
    for (int by = 0; by < bh; by++) {
        for (int bx = 0; bx < bw; bx++) {
            double acc = 0;
            for (int r = 2 + by * B; r < 2 + (by + 1) * B; r++) {
                const uint8_t *a = y + (size_t)(r - 2) * stride, *m = y + (size_t)r * stride,
                              *b = y + (size_t)(r + 2) * stride;
                for (int x = 1 + bx * B; x < 1 + (bx + 1) * B; x++) {
                    int l = a[x - 1] - 2 * a[x] + a[x + 1] - 2 * m[x - 1] + 4 * m[x] - 2 * m[x + 1] +
                            b[x - 1] - 2 * b[x] + b[x + 1];
                    acc += abs(l);
                }
            }
            blocks[n++] = acc / (B * B);
        }
    }
    qsort(blocks, n, sizeof *blocks, cmp_double);
    double q = blocks[n / 10];
    free(blocks);
    /* E|L| = 6 sigma sqrt(2/pi) for white noise; the 10th percentile of
     * 64-sample block means sits about 12 % below the mean. */
    return q * sqrt(M_PI / 2) / 6.0 / 0.88;
}

/* ---- head-switching ---------------------------------------------------- */

void td_row_diffs(const uint8_t *y, int stride, int w, int h, int n, double *out, double *typical)
{
    for (int i = 0; i < n; i++) {
        int r = h - n + i;
        double acc = 0;
        if (r >= 2) {
            const uint8_t *a = y + (size_t)r * stride, *b = y + (size_t)(r - 2) * stride;
            for (int x = 0; x < w; x++)
                acc += abs(a[x] - b[x]);
        }
        out[i] = acc / w;
    }
    double mid[256];
    int m = 0;
    int r0 = h / 4, r1 = 3 * h / 4;
    int step = (r1 - r0) / 255 + 1;
    for (int r = r0 < 2 ? 2 : r0; r < r1 && m < 256; r += step) {
        const uint8_t *a = y + (size_t)r * stride, *b = y + (size_t)(r - 2) * stride;
        double acc = 0;
        for (int x = 0; x < w; x++)
            acc += abs(a[x] - b[x]);
        mid[m++] = acc / w;
    }
    if (m == 0) {
        *typical = 0;
        return;
    }
    qsort(mid, (size_t)m, sizeof mid[0], cmp_double);
    *typical = mid[m / 2];
}

int td_head_switch_lines(const double *diffs, int n, double typical, double *ratio)
{
    double thr = fmax(3.0 * typical, typical + 6.0);
    double worst = 0;
    for (int i = 0; i < n; i++)
        worst = fmax(worst, diffs[i]);
    *ratio = worst / fmax(typical, 0.5);
    /* The band is at the very bottom: the highest flagged row whose rows
     * below are mostly flagged too. */
    int start = -1;
    for (int i = 0; i < n; i++) {
        if (!(diffs[i] > thr))
            continue;
        int flagged = 0;
        for (int j = i; j < n; j++)
            flagged += diffs[j] > thr;
        if (flagged * 10 >= (n - i) * 6) {
            start = i;
            break;
        }
    }
    if (start < 0)
        return 0;
    int lines = n - start;
    return (lines + 1) & ~1; /* even: both fields lose the same count */
}

double td_frame_change(const uint8_t *a, int astride, const uint8_t *b, int bstride, int w, int h)
{
    double acc = 0;
    long n = 0;
    for (int r = 0; r < h; r += 2) {
        const uint8_t *pa = a + (size_t)r * astride, *pb = b + (size_t)r * bstride;
        for (int x = 0; x < w; x += 2) {
            acc += abs(pa[x] - pb[x]);
            n++;
        }
    }
    return n ? acc / n : 0;
}

/* ---- the pass ---------------------------------------------------------- */

#define EIGHT_BIT "format=yuv420p|yuv422p|yuv444p|yuv411p|yuv440p|yuv410p|yuvj420p|yuvj422p|yuvj444p"
#define HS_ROWS 32

typedef struct trial {
    td_vgraph *g;
    AVFrame *prev;
    double sum;
    int n;
} trial;

static double meta(const AVFrame *f, const char *key, double fallback)
{
    const AVDictionaryEntry *e = av_dict_get(f->metadata, key, NULL, 0);
    return e ? strtod(e->value, NULL) : fallback;
}

static int trial_pull(trial *t, AVFrame *tmp, td_error *err)
{
    for (;;) {
        int r = td_vgraph_pull(t->g, tmp, err);
        if (r < 0)
            return r;
        if (r != 1)
            return TD_OK;
        if (t->prev->data[0]) {
            t->sum += td_frame_change(t->prev->data[0], t->prev->linesize[0], tmp->data[0], tmp->linesize[0],
                                      tmp->width, tmp->height);
            t->n++;
        }
        av_frame_unref(t->prev);
        av_frame_move_ref(t->prev, tmp);
    }
}

typedef struct acc {
    double ss[8];
    long ss_n;
    uint64_t hist[256];
    double grey_u, grey_v;
    long grey_n, chroma_n;
    td_chroma_corr cc;
    double noise_sum;
    int noise_n;
    double hs[HS_ROWS];
    double hs_typ;
    int hs_n;
} acc;

static void measure(acc *s, const AVFrame *f, int64_t idx)
{
    const AVPixFmtDescriptor *d = av_pix_fmt_desc_get(f->format);
    if (!d)
        return;
    int w = f->width, h = f->height;
    int lw = d->log2_chroma_w, lh = d->log2_chroma_h;
    static const char *keys[8] = {"lavfi.signalstats.YMIN", "lavfi.signalstats.YLOW", "lavfi.signalstats.YAVG",
                                  "lavfi.signalstats.YHIGH", "lavfi.signalstats.YMAX", "lavfi.signalstats.UAVG",
                                  "lavfi.signalstats.VAVG", "lavfi.signalstats.SATAVG"};
    for (int k = 0; k < 8; k++)
        s->ss[k] += meta(f, keys[k], 0);
    s->ss_n++;

    /* All but the edges where blanking (up to 16 px a side at 720) and
     * the head-switching band (up to 24 lines at 480) live: the levels
     * need the picture's real extremes, which are often near its edges. */
    int x0 = w / 45, x1 = w - w / 45, y0 = h / 60, y1 = h - h / 20;
    for (int r = y0; r < y1; r += 2) {
        const uint8_t *yr = f->data[0] + (size_t)r * f->linesize[0];
        const uint8_t *ur = f->data[1] + (size_t)(r >> lh) * f->linesize[1];
        const uint8_t *vr = f->data[2] + (size_t)(r >> lh) * f->linesize[2];
        for (int x = x0; x < x1; x++) {
            s->hist[yr[x]]++;
            if ((x & ((1 << lw) - 1)) == 0) {
                int u = ur[x >> lw] - 128, v = vr[x >> lw] - 128;
                s->chroma_n++;
                if (yr[x] >= 48 && yr[x] <= 220 && abs(u) + abs(v) < 20) {
                    s->grey_u += u;
                    s->grey_v += v;
                    s->grey_n++;
                }
            }
        }
    }
    if (idx % 3 == 0) {
        int hh = h - HS_ROWS;
        int center = f->chroma_location == AVCHROMA_LOC_CENTER;
        if (f->format == AV_PIX_FMT_YUVJ420P && f->chroma_location == AVCHROMA_LOC_UNSPECIFIED)
            center = 1;
        td_chroma_corr_add(&s->cc, f->data[0], f->linesize[0], f->data[1], f->linesize[1], w, hh, lw, lh,
                           center);
        td_chroma_corr_add(&s->cc, f->data[0], f->linesize[0], f->data[2], f->linesize[2], w, hh, lw, lh,
                           center);
    }
    if (idx % 8 == 0) {
        s->noise_sum += td_noise_sigma(f->data[0] + (size_t)y0 * f->linesize[0] + x0, f->linesize[0],
                                       x1 - x0, y1 - y0);
        s->noise_n++;
    }
    if (h > 4 * HS_ROWS) {
        double rows[HS_ROWS], typ;
        td_row_diffs(f->data[0], f->linesize[0], w, h, HS_ROWS, rows, &typ);
        for (int i = 0; i < HS_ROWS; i++)
            s->hs[i] += rows[i];
        s->hs_typ += typ;
        s->hs_n++;
    }
}

static double percentile(const uint64_t *hist, double q)
{
    uint64_t total = 0;
    for (int i = 0; i < 256; i++)
        total += hist[i];
    if (!total)
        return 0;
    uint64_t want = (uint64_t)(q * (double)total), run = 0;
    for (int i = 0; i < 256; i++) {
        run += hist[i];
        if (run > want)
            return i;
    }
    return 255;
}

static void flagged_order(const td_vinput *in, const AVFrame *first, char *out, size_t len)
{
    switch (in->vst->codecpar->field_order) {
    case AV_FIELD_PROGRESSIVE: snprintf(out, len, "progressive"); return;
    case AV_FIELD_TT:
    case AV_FIELD_BT: snprintf(out, len, "tff"); return;
    case AV_FIELD_BB:
    case AV_FIELD_TB: snprintf(out, len, "bff"); return;
    default: break;
    }
    if (first && first->interlaced_frame)
        snprintf(out, len, "%s", first->top_field_first ? "tff" : "bff");
    else if (first)
        snprintf(out, len, "progressive");
    else
        snprintf(out, len, "unknown");
}

static void decide(td_vanalysis *a, const char *codec)
{
    long il = a->idet_tff + a->idet_bff;
    int sd = a->height == 480 || a->height == 486 || a->height == 576;
    /* Interlacing shows only where something moves (a still picture's
     * two fields agree, a progressive title sequence has none), so one
     * window that idet finds interlaced is enough: deinterlacing a
     * progressive stretch costs little, leaving combs in costs much. */
    if (il > a->idet_progressive || a->windows_interlaced > 0)
        a->interlaced = 1;
    else if (a->idet_progressive > il)
        a->interlaced = 0;
    else
        a->interlaced = strcmp(a->flagged_order, "tff") == 0 || strcmp(a->flagged_order, "bff") == 0 || sd;
    /* The trial decides when it sees a clear difference: wrong parity is
     * measurably jerkier on any moving picture. */
    if (a->trial_votes_tff != a->trial_votes_bff) {
        /* The windows where the trial saw a clear difference, by majority. */
        a->tff = a->trial_votes_tff > a->trial_votes_bff;
        snprintf(a->order_source, sizeof a->order_source, "parity-trial");
    } else if (a->idet_tff != a->idet_bff) {
        a->tff = a->idet_tff > a->idet_bff;
        snprintf(a->order_source, sizeof a->order_source, "idet");
    } else if (strcmp(a->flagged_order, "tff") == 0 || strcmp(a->flagged_order, "bff") == 0) {
        a->tff = strcmp(a->flagged_order, "tff") == 0;
        snprintf(a->order_source, sizeof a->order_source, "stream-flag");
    } else {
        /* DV is bottom field first; analog captures usually top. */
        a->tff = strcmp(codec, "dvvideo") != 0;
        snprintf(a->order_source, sizeof a->order_source, "default");
    }
}

/* One window's filter graphs: idet, cropdetect and signalstats on every
 * frame, and the two parity trials on its first frames. Fresh per window,
 * so that no filter compares frames from either side of a seek. */
typedef struct window {
    td_vgraph *main_g;
    trial tr[2];
    long idet[4];          /* tff, bff, progressive, undetermined: this window's totals */
    int crop[4];           /* x, y, w, h */
    int have_crop;
} window;

static void window_free(window *w)
{
    td_vgraph_free(&w->main_g);
    for (int k = 0; k < 2; k++) {
        td_vgraph_free(&w->tr[k].g);
        av_frame_free(&w->tr[k].prev);
    }
}

static int window_open(window *w, const td_vinput *in, int threads, td_error *err)
{
    memset(w, 0, sizeof *w);
    int rc = td_vgraph_create(in, EIGHT_BIT ",idet,cropdetect=limit=24:round=2:reset=0,signalstats", threads,
                              &w->main_g, err);
    for (int k = 0; !rc && k < 2; k++) {
        const char *desc = k == 0 ? EIGHT_BIT ",setfield=tff,bwdif=mode=send_field:parity=tff:deint=all"
                                  : EIGHT_BIT ",setfield=bff,bwdif=mode=send_field:parity=bff:deint=all";
        w->tr[k].prev = av_frame_alloc();
        if (!w->tr[k].prev)
            rc = td_error_set(err, TD_ENOMEM, "out of memory");
        else
            rc = td_vgraph_create(in, desc, threads, &w->tr[k].g, err);
    }
    return rc;
}

/* Frames out of the main graph: idet's running totals and cropdetect's box
 * (both cumulative within the window), and every measurement. */
static int window_pull(window *w, acc *s, td_vanalysis *a, AVFrame *out, td_error *err)
{
    static const char *const idet_keys[4] = {"lavfi.idet.multiple.tff", "lavfi.idet.multiple.bff",
                                             "lavfi.idet.multiple.progressive", "lavfi.idet.multiple.undetermined"};
    static const char *const crop_keys[4] = {"lavfi.cropdetect.x", "lavfi.cropdetect.y", "lavfi.cropdetect.w",
                                             "lavfi.cropdetect.h"};
    for (;;) {
        int p = td_vgraph_pull(w->main_g, out, err);
        if (p < 0)
            return p;
        if (p != 1)
            return TD_OK;
        for (int k = 0; k < 4; k++)
            w->idet[k] = (long)meta(out, idet_keys[k], (double)w->idet[k]);
        if (av_dict_get(out->metadata, crop_keys[2], NULL, 0)) {
            for (int k = 0; k < 4; k++)
                w->crop[k] = (int)meta(out, crop_keys[k], w->crop[k]);
            w->have_crop = 1;
        }
        measure(s, out, a->frames_analyzed++);
        av_frame_unref(out);
    }
}

/* Where the windows start, in seconds: one from the start when the scene
 * is short enough to read whole, else TD_VANALYZE_WINDOWS spread evenly
 * from the start to the end, so that a scene whose first seconds are
 * unrepresentative (a still title, a black lead-in, a camera at rest) is
 * judged on the rest too. */
static int window_starts(const td_vanalysis *a, double *start)
{
    double total = a->duration > 0 && a->fps > 0 ? a->duration * a->fps : 0;
    if (total <= TD_VANALYZE_MAX_FRAMES)
        return start[0] = 0, 1;
    double len = (double)(TD_VANALYZE_MAX_FRAMES / TD_VANALYZE_WINDOWS) / a->fps;
    for (int w = 0; w < TD_VANALYZE_WINDOWS; w++)
        start[w] = w * (a->duration - len) / (TD_VANALYZE_WINDOWS - 1);
    return TD_VANALYZE_WINDOWS;
}

int td_video_analyze(const char *path, int threads, td_vanalysis *a, td_vprogress_fn progress,
                     void *user, td_error *err)
{
    memset(a, 0, sizeof *a);
    td_vinput *in = NULL;
    window win;
    memset(&win, 0, sizeof win);
    AVFrame *dec = av_frame_alloc(), *out = av_frame_alloc(), *first = NULL;
    acc *s = calloc(1, sizeof *s);
    int rc = TD_OK;
    double tr_sum[2] = {0, 0};
    int tr_n[2] = {0, 0};
    int crop_x0 = INT32_MAX, crop_y0 = INT32_MAX, crop_x1 = -1, crop_y1 = -1;
    if (!dec || !out || !s) {
        rc = td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    rc = td_vinput_open(path, threads, &in, err);
    if (rc)
        goto done;
    const AVCodecDescriptor *cd = avcodec_descriptor_get(in->vst->codecpar->codec_id);
    snprintf(a->codec, sizeof a->codec, "%s", cd ? cd->name : "unknown");
    a->width = in->dec->width;
    a->height = in->dec->height;
    snprintf(a->pix_fmt, sizeof a->pix_fmt, "%s", av_get_pix_fmt_name(in->dec->pix_fmt) ?: "unknown");
    AVRational fr = in->vst->avg_frame_rate.num > 0 ? in->vst->avg_frame_rate : in->vst->r_frame_rate;
    a->fps = fr.num > 0 && fr.den > 0 ? av_q2d(fr) : 0;
    AVRational sar = in->vst->codecpar->sample_aspect_ratio;
    a->sar_num = sar.num > 0 ? sar.num : 1;
    a->sar_den = sar.den > 0 ? sar.den : 1;
    a->duration = td_vinput_duration(in);

    double start[TD_VANALYZE_WINDOWS];
    int n_win = window_starts(a, start);
    int per_win = n_win > 1 ? TD_VANALYZE_MAX_FRAMES / n_win : TD_VANALYZE_MAX_FRAMES;
    int trial_frames = n_win > 1 ? 2 * TD_VANALYZE_TRIAL_FRAMES / n_win : TD_VANALYZE_TRIAL_FRAMES;
    int64_t decoded = 0;
    for (int w = 0; w < n_win; w++) {
        if (w > 0 && td_vinput_seek(in, start[w], err) != TD_OK) {
            /* A stream that cannot seek is judged on what was read. */
            td_error_clear(err);
            break;
        }
        if ((rc = window_open(&win, in, threads, err)))
            goto done;
        int64_t t0 = in->vst->start_time != AV_NOPTS_VALUE ? in->vst->start_time : 0;
        int64_t from = start[w] > 0 ? t0 + (int64_t)(start[w] / av_q2d(in->vst->time_base)) : INT64_MIN;
        int n = 0;
        while (n < per_win) {
            int r = td_vinput_read(in, dec, NULL, err);
            if (r < 0) {
                rc = r;
                goto done;
            }
            if (r == TD_VREAD_EOF)
                break;
            decoded++;
            if (dec->pts != AV_NOPTS_VALUE && dec->pts < from) {
                /* decoded from the keyframe before the window: not in it */
                av_frame_unref(dec);
                continue;
            }
            if (!first && !(first = av_frame_clone(dec))) {
                rc = td_error_set(err, TD_ENOMEM, "out of memory");
                goto done;
            }
            rc = td_vgraph_push(win.main_g, dec, err);
            for (int k = 0; !rc && k < 2; k++)
                if (n < trial_frames)
                    rc = td_vgraph_push(win.tr[k].g, dec, err);
            av_frame_unref(dec);
            if (rc)
                goto done;
            n++;
            for (int k = 0; k < 2; k++) {
                if (n == trial_frames && (rc = td_vgraph_push(win.tr[k].g, NULL, err)))
                    goto done;
                if ((rc = trial_pull(&win.tr[k], out, err)))
                    goto done;
            }
            if ((rc = window_pull(&win, s, a, out, err)))
                goto done;
            if (progress && progress(user, decoded)) {
                rc = td_error_set(err, TD_EABORT, "%s: stopped", path);
                goto done;
            }
        }
        /* Drain: the trials (if the window was shorter than the trial) and
         * the frames idet and bwdif still hold. */
        for (int k = 0; k < 2; k++) {
            if (n < trial_frames && (rc = td_vgraph_push(win.tr[k].g, NULL, err)))
                goto done;
            if ((rc = trial_pull(&win.tr[k], out, err)))
                goto done;
            tr_sum[k] += win.tr[k].sum;
            tr_n[k] += win.tr[k].n;
        }
        if ((rc = td_vgraph_push(win.main_g, NULL, err)) || (rc = window_pull(&win, s, a, out, err)))
            goto done;
        /* Each window's own verdicts: motion, and so the evidence of
         * interlacing and of parity, may be in one window only. */
        if (win.idet[0] + win.idet[1] > win.idet[2])
            a->windows_interlaced++;
        if (win.tr[0].n >= 4 && win.tr[1].n >= 4) {
            double mt = win.tr[0].sum / win.tr[0].n, mb = win.tr[1].sum / win.tr[1].n;
            double lo = fmin(mt, mb), hi = fmax(mt, mb);
            if (lo > 0 && hi / lo > 1.03)
                *(mt < mb ? &a->trial_votes_tff : &a->trial_votes_bff) += 1;
        }
        a->idet_tff += win.idet[0];
        a->idet_bff += win.idet[1];
        a->idet_progressive += win.idet[2];
        a->idet_undetermined += win.idet[3];
        if (win.have_crop && win.crop[2] > 0 && win.crop[3] > 0) {
            /* the box that holds every window's picture */
            crop_x0 = win.crop[0] < crop_x0 ? win.crop[0] : crop_x0;
            crop_y0 = win.crop[1] < crop_y0 ? win.crop[1] : crop_y0;
            crop_x1 = win.crop[0] + win.crop[2] > crop_x1 ? win.crop[0] + win.crop[2] : crop_x1;
            crop_y1 = win.crop[1] + win.crop[3] > crop_y1 ? win.crop[1] + win.crop[3] : crop_y1;
        }
        window_free(&win);
        if (n > 0)
            a->windows++;
    }
    if (a->frames_analyzed == 0 && !first) {
        rc = td_error_set(err, TD_EINPUT, "%s: the video stream has no frames", path);
        goto done;
    }
    if (crop_x1 > crop_x0 && crop_y1 > crop_y0) {
        a->crop_x = crop_x0;
        a->crop_y = crop_y0;
        a->crop_w = crop_x1 - crop_x0;
        a->crop_h = crop_y1 - crop_y0;
    }

    flagged_order(in, first, a->flagged_order, sizeof a->flagged_order);
    a->trial_frames = tr_n[0] < tr_n[1] ? tr_n[0] : tr_n[1];
    a->trial_tff = tr_n[0] ? tr_sum[0] / tr_n[0] : 0;
    a->trial_bff = tr_n[1] ? tr_sum[1] / tr_n[1] : 0;
    if (s->ss_n) {
        double *dst[8] = {&a->ymin, &a->ylow, &a->yavg, &a->yhigh, &a->ymax, &a->uavg, &a->vavg, &a->satavg};
        for (int k = 0; k < 8; k++)
            *dst[k] = s->ss[k] / (double)s->ss_n;
    }
    a->y_p005 = percentile(s->hist, 0.005);
    a->y_p995 = percentile(s->hist, 0.995);
    a->grey_fraction = s->chroma_n ? (double)s->grey_n / (double)s->chroma_n : 0;
    a->grey_u = s->grey_n ? s->grey_u / (double)s->grey_n : 0;
    a->grey_v = s->grey_n ? s->grey_v / (double)s->grey_n : 0;
    td_chroma_corr_result(&s->cc, &a->chroma_delay, &a->chroma_peak);
    a->noise_sigma = s->noise_n ? s->noise_sum / s->noise_n : 0;
    if (s->hs_n) {
        double rows[HS_ROWS];
        for (int i = 0; i < HS_ROWS; i++)
            rows[i] = s->hs[i] / s->hs_n;
        a->head_switch_lines = td_head_switch_lines(rows, HS_ROWS, s->hs_typ / s->hs_n, &a->head_switch_ratio);
    }
    if (a->crop_w <= 0 || a->crop_h <= 0) {
        a->crop_x = a->crop_y = 0;
        a->crop_w = a->width;
        a->crop_h = a->height;
    }
    decide(a, a->codec);

done:
    window_free(&win);
    td_vinput_free(&in);
    av_frame_free(&dec);
    av_frame_free(&out);
    av_frame_free(&first);
    free(s);
    return rc;
}
