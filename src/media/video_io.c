/* video_io.c: strict video decoding and filter graphs (see video_io.h). */
#include "media/video_io.h"

#include <stdio.h>
#include <string.h>

#include <libavfilter/avfilter.h>
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
#include <libavutil/hwcontext.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>

const char *td_averr(int code, char *buf, size_t len)
{
    if (av_strerror(code, buf, len) < 0)
        snprintf(buf, len, "error %d", code);
    return buf;
}

/* libavcodec offers the formats it can decode this stream to: the
 * device's when its hardware path takes the stream (profile, chroma
 * format, size), else only software ones. */
static enum AVPixelFormat pick_format(AVCodecContext *dec, const enum AVPixelFormat *fmts)
{
    td_vinput *in = dec->opaque;
    for (const enum AVPixelFormat *f = fmts; *f != AV_PIX_FMT_NONE; f++)
        if (*f == in->hw_fmt)
            return *f;
    const char *sw = av_get_pix_fmt_name(avcodec_default_get_format(dec, fmts));
    snprintf(in->hw_why, sizeof in->hw_why, "the %s hardware decoder does not take this %s stream (%s, profile %d)",
             av_hwdevice_get_type_name(((AVHWDeviceContext *)dec->hw_device_ctx->data)->type),
             avcodec_get_name(dec->codec_id), sw ? sw : "?", dec->profile);
    return avcodec_default_get_format(dec, fmts);
}

int td_vinput_open(const char *path, int threads, td_vinput **out, td_error *err)
{
    return td_vinput_open_hw(path, threads, NULL, out, err);
}

int td_vinput_open_hw(const char *path, int threads, AVBufferRef *hwdev, td_vinput **out, td_error *err)
{
    char e[128];
    *out = NULL;
    td_vinput *in = calloc(1, sizeof *in);
    if (!in)
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
    in->path = path;
    in->hw_fmt = AV_PIX_FMT_NONE;
    /* Filters report their statistics at info level (idet, cropdetect):
     * we read them from frame metadata, not from the log. */
    if (av_log_get_level() > AV_LOG_ERROR)
        av_log_set_level(AV_LOG_ERROR);
    in->pkt = av_packet_alloc();
    if (!in->pkt) {
        free(in);
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
    }
    int rc;
    int ret = avformat_open_input(&in->fmt, path, NULL, NULL);
    if (ret < 0) {
        rc = td_error_set(err, ret == AVERROR(ENOMEM) ? TD_ENOMEM : TD_EINPUT, "%s: cannot open: %s",
                          path, td_averr(ret, e, sizeof e));
        goto fail;
    }
    ret = avformat_find_stream_info(in->fmt, NULL);
    if (ret < 0) {
        rc = td_error_set(err, TD_EINPUT, "%s: cannot read stream info: %s", path,
                          td_averr(ret, e, sizeof e));
        goto fail;
    }
    /* The default-disposition video stream if flagged, else the first;
     * cover art (attached pictures) is not the scene's video. */
    in->vindex = -1;
    for (unsigned i = 0; i < in->fmt->nb_streams; i++) {
        AVStream *st = in->fmt->streams[i];
        if (st->codecpar->codec_type != AVMEDIA_TYPE_VIDEO ||
            (st->disposition & AV_DISPOSITION_ATTACHED_PIC))
            continue;
        if (in->vindex < 0 || (st->disposition & AV_DISPOSITION_DEFAULT &&
                               !(in->fmt->streams[in->vindex]->disposition & AV_DISPOSITION_DEFAULT)))
            in->vindex = (int)i;
    }
    if (in->vindex < 0) {
        rc = td_error_set(err, TD_EINPUT, "%s: no video stream", path);
        goto fail;
    }
    in->vst = in->fmt->streams[in->vindex];
    const AVCodec *codec = avcodec_find_decoder(in->vst->codecpar->codec_id);
    if (!codec) {
        rc = td_error_set(err, TD_EINPUT, "%s: no decoder for video codec %s", path,
                          avcodec_get_name(in->vst->codecpar->codec_id));
        goto fail;
    }
    in->dec = avcodec_alloc_context3(codec);
    if (!in->dec) {
        rc = td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    ret = avcodec_parameters_to_context(in->dec, in->vst->codecpar);
    if (ret < 0) {
        rc = td_error_set(err, TD_EINPUT, "%s: bad video parameters: %s", path, td_averr(ret, e, sizeof e));
        goto fail;
    }
    in->dec->pkt_timebase = in->vst->time_base;
    in->dec->thread_count = threads;
    if (hwdev) {
        enum AVHWDeviceType type = ((AVHWDeviceContext *)hwdev->data)->type;
        for (int i = 0;; i++) {
            const AVCodecHWConfig *hc = avcodec_get_hw_config(codec, i);
            if (!hc)
                break;
            if ((hc->methods & AV_CODEC_HW_CONFIG_METHOD_HW_DEVICE_CTX) && hc->device_type == type) {
                in->hw_fmt = hc->pix_fmt;
                break;
            }
        }
        if (in->hw_fmt == AV_PIX_FMT_NONE) {
            snprintf(in->hw_why, sizeof in->hw_why, "libavcodec has no %s decoding for %s",
                     av_hwdevice_get_type_name(type), codec->name);
        } else {
            in->dec->hw_device_ctx = av_buffer_ref(hwdev);
            if (!in->dec->hw_device_ctx) {
                rc = td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
                goto fail;
            }
            in->dec->opaque = in;
            in->dec->get_format = pick_format;
            /* Frames the filters still hold (yadif_cuda keeps three)
             * must not starve the decoder's surface pool. */
            in->dec->extra_hw_frames = 8;
            in->dec->thread_count = 1;
        }
    }
    /* A restored copy must not hide damage: let the decoder report what
     * it finds (and fail on it) instead of concealing it. */
    in->dec->err_recognition = AV_EF_CRCCHECK | AV_EF_BITSTREAM | AV_EF_EXPLODE;
    ret = avcodec_open2(in->dec, codec, NULL);
    if (ret < 0) {
        rc = td_error_set(err, TD_EINPUT, "%s: cannot open the %s decoder: %s", path, codec->name,
                          td_averr(ret, e, sizeof e));
        goto fail;
    }
    if (in->dec->width <= 0 || in->dec->height <= 0 || in->dec->width > 8192 || in->dec->height > 8192) {
        rc = td_error_set(err, TD_EINPUT, "%s: unsupported picture size %dx%d", path, in->dec->width,
                          in->dec->height);
        goto fail;
    }
    *out = in;
    return TD_OK;
fail:
    td_vinput_free(&in);
    return rc;
}

void td_vinput_free(td_vinput **pin)
{
    td_vinput *in = *pin;
    if (!in)
        return;
    avcodec_free_context(&in->dec);
    avformat_close_input(&in->fmt);
    av_packet_free(&in->pkt);
    av_frame_free(&in->held);
    for (int i = in->queue_head; i < in->queue_n; i++)
        av_packet_free(&in->queue[i]);
    free(in->queue);
    free(in);
    *pin = NULL;
}

static double ts_seconds(const td_vinput *in, int64_t ts)
{
    return ts == AV_NOPTS_VALUE ? -1.0 : (double)ts * av_q2d(in->vst->time_base);
}

static int read_next(td_vinput *in, AVFrame *frame, AVPacket **other, td_error *err)
{
    char e[128];
    for (;;) {
        int ret = avcodec_receive_frame(in->dec, frame);
        if (ret == 0) {
            if (frame->decode_error_flags || (frame->flags & AV_FRAME_FLAG_CORRUPT)) {
                double t = ts_seconds(in, frame->best_effort_timestamp);
                av_frame_unref(frame);
                return td_error_set(err, TD_EINPUT, "%s: video stream corrupt at %.2f s (frame %lld)",
                                    in->path, t, (long long)in->frames);
            }
            frame->pts = frame->best_effort_timestamp;
            in->frames++;
            return TD_VREAD_FRAME;
        }
        if (ret == AVERROR_EOF)
            return TD_VREAD_EOF;
        if (ret != AVERROR(EAGAIN))
            return td_error_set(err, TD_EINPUT, "%s: video stream corrupt after frame %lld: %s", in->path,
                                (long long)in->frames, td_averr(ret, e, sizeof e));
        if (in->demux_eof) {
            if (in->eof_sent)
                return TD_VREAD_EOF;
            ret = avcodec_send_packet(in->dec, NULL);
            in->eof_sent = 1;
            if (ret < 0 && ret != AVERROR_EOF)
                return td_error_set(err, TD_EINPUT, "%s: cannot flush the video decoder: %s", in->path,
                                    td_averr(ret, e, sizeof e));
            continue;
        }
        ret = av_read_frame(in->fmt, in->pkt);
        if (ret == AVERROR_EOF) {
            in->demux_eof = 1;
            continue;
        }
        if (ret < 0)
            return td_error_set(err, ret == AVERROR(ENOMEM) ? TD_ENOMEM : TD_EINPUT,
                                "%s: read error after video frame %lld: %s", in->path,
                                (long long)in->frames, td_averr(ret, e, sizeof e));
        if (in->pkt->stream_index != in->vindex) {
            if (in->want_other && other) {
                *other = av_packet_clone(in->pkt);
                av_packet_unref(in->pkt);
                if (!*other)
                    return td_error_set(err, TD_ENOMEM, "%s: out of memory", in->path);
                return TD_VREAD_PACKET;
            }
            av_packet_unref(in->pkt);
            continue;
        }
        if (in->pkt->flags & AV_PKT_FLAG_CORRUPT) {
            double t = ts_seconds(in, in->pkt->pts);
            av_packet_unref(in->pkt);
            return td_error_set(err, TD_EINPUT, "%s: video stream corrupt at %.2f s (packet flagged)",
                                in->path, t);
        }
        ret = avcodec_send_packet(in->dec, in->pkt);
        double t = ts_seconds(in, in->pkt->pts);
        av_packet_unref(in->pkt);
        if (ret < 0 && ret != AVERROR(EAGAIN))
            return td_error_set(err, ret == AVERROR(ENOMEM) ? TD_ENOMEM : TD_EINPUT,
                                "%s: video stream corrupt at %.2f s: %s", in->path, t,
                                td_averr(ret, e, sizeof e));
    }
}

int td_vinput_read(td_vinput *in, AVFrame *frame, AVPacket **other, td_error *err)
{
    if (in->queue_head < in->queue_n) {
        *other = in->queue[in->queue_head];
        in->queue[in->queue_head++] = NULL;
        return TD_VREAD_PACKET;
    }
    if (in->held) {
        av_frame_move_ref(frame, in->held);
        av_frame_free(&in->held);
        return TD_VREAD_FRAME;
    }
    return read_next(in, frame, other, err);
}

int td_vinput_prime(td_vinput *in, td_error *err)
{
    if (in->held || in->frames > 0)
        return TD_OK;
    AVFrame *f = av_frame_alloc();
    if (!f)
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", in->path);
    for (;;) {
        AVPacket *other = NULL;
        int r = read_next(in, f, &other, err);
        if (r < 0) {
            av_frame_free(&f);
            return r;
        }
        if (r == TD_VREAD_EOF) {
            av_frame_free(&f);
            return td_error_set(err, TD_EINPUT, "%s: the video stream has no frames", in->path);
        }
        if (r == TD_VREAD_FRAME)
            break;
        if (in->queue_n >= TD_VINPUT_MAX_QUEUE) {
            av_packet_free(&other);
            av_frame_free(&f);
            return td_error_set(err, TD_EINPUT, "%s: no video frame in the first %d packets", in->path,
                                TD_VINPUT_MAX_QUEUE);
        }
        if (in->queue_n % 64 == 0) {
            AVPacket **q = realloc(in->queue, (size_t)(in->queue_n + 64) * sizeof *q);
            if (!q) {
                av_packet_free(&other);
                av_frame_free(&f);
                return td_error_set(err, TD_ENOMEM, "%s: out of memory", in->path);
            }
            in->queue = q;
        }
        in->queue[in->queue_n++] = other;
    }
    in->hw_used = f->hw_frames_ctx != NULL;
    if (in->hw_fmt != AV_PIX_FMT_NONE && !in->hw_used && !in->hw_why[0])
        snprintf(in->hw_why, sizeof in->hw_why, "the hardware decoder gave a frame in memory");
    in->held = f;
    return TD_OK;
}

int td_vinput_seek(td_vinput *in, double seconds, td_error *err)
{
    char e[128];
    int64_t ts = (int64_t)(seconds / av_q2d(in->vst->time_base));
    if (in->vst->start_time != AV_NOPTS_VALUE)
        ts += in->vst->start_time;
    int ret = av_seek_frame(in->fmt, in->vindex, ts, AVSEEK_FLAG_BACKWARD);
    if (ret < 0)
        return td_error_set(err, TD_EINPUT, "%s: cannot seek to %.2f s: %s", in->path, seconds,
                            td_averr(ret, e, sizeof e));
    avcodec_flush_buffers(in->dec);
    in->eof_sent = in->demux_eof = 0;
    av_frame_free(&in->held);
    for (int i = in->queue_head; i < in->queue_n; i++)
        av_packet_free(&in->queue[i]);
    in->queue_head = in->queue_n = 0;
    return TD_OK;
}

int64_t td_vinput_frame_ticks(const td_vinput *in)
{
    AVRational fr = in->vst->avg_frame_rate;
    if (fr.num <= 0 || fr.den <= 0)
        fr = in->vst->r_frame_rate;
    if (fr.num <= 0 || fr.den <= 0)
        fr = (AVRational){25, 1};
    int64_t t = av_rescale_q(1, av_inv_q(fr), in->vst->time_base);
    return t > 0 ? t : 1;
}

double td_vinput_duration(const td_vinput *in)
{
    if (in->vst->duration != AV_NOPTS_VALUE && in->vst->duration > 0)
        return (double)in->vst->duration * av_q2d(in->vst->time_base);
    if (in->fmt->duration != AV_NOPTS_VALUE && in->fmt->duration > 0)
        return (double)in->fmt->duration / AV_TIME_BASE;
    return -1.0;
}

/* ---- filter graphs ---------------------------------------------------- */

struct td_vgraph {
    AVFilterGraph *graph;
    AVFilterContext *src;
    AVFilterContext *sink;
    int ended;
};

int td_vgraph_create(const td_vinput *in, const char *desc, int threads, td_vgraph **out,
                     td_error *err)
{
    return td_vgraph_create_hw(in, desc, threads, NULL, out, err);
}

/* The device a filter wants by its name: NULL for software filters. */
static AVBufferRef *device_for(const char *name, const td_hwdevs *hw)
{
    size_t n = strlen(name);
    if (n > 7 && strcmp(name + n - 7, "_opencl") == 0)
        return hw->opencl;
    if (n > 5 && strcmp(name + n - 5, "_cuda") == 0)
        return hw->cuda;
    return NULL;
}

int td_vgraph_create_hw(const td_vinput *in, const char *desc, int threads, const td_hwdevs *hw,
                        td_vgraph **out, td_error *err)
{
    char e[128];
    *out = NULL;
    td_vgraph *g = calloc(1, sizeof *g);
    if (!g)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    int rc = TD_OK;
    AVFilterInOut *outputs = NULL, *inputs = NULL;
    g->graph = avfilter_graph_alloc();
    if (!g->graph) {
        rc = td_error_set(err, TD_ENOMEM, "out of memory");
        goto fail;
    }
    g->graph->nb_threads = threads;
    AVRational sar = in->dec->sample_aspect_ratio;
    if (sar.num <= 0 || sar.den <= 0)
        sar = in->vst->sample_aspect_ratio;
    if (sar.num <= 0 || sar.den <= 0)
        sar = (AVRational){1, 1};
    AVRational fr = in->vst->avg_frame_rate;
    if (fr.num <= 0 || fr.den <= 0)
        fr = in->vst->r_frame_rate;
    char args[512];
    /* A primed frame says what really comes: its format (the device's,
     * when decoded on a card) and size. */
    const AVFrame *first = in->held;
    int fw = first ? first->width : in->dec->width, fh = first ? first->height : in->dec->height;
    int fmt = first ? first->format : in->dec->pix_fmt;
    snprintf(args, sizeof args,
             "video_size=%dx%d:pix_fmt=%d:time_base=%d/%d:pixel_aspect=%d/%d%s",
             fw, fh, fmt, in->vst->time_base.num,
             in->vst->time_base.den, sar.num, sar.den, "");
    if (fr.num > 0 && fr.den > 0) {
        size_t used = strlen(args);
        snprintf(args + used, sizeof args - used, ":frame_rate=%d/%d", fr.num, fr.den);
    }
    int ret = avfilter_graph_create_filter(&g->src, avfilter_get_by_name("buffer"), "in", args, NULL,
                                           g->graph);
    if (ret >= 0)
        ret = avfilter_graph_create_filter(&g->sink, avfilter_get_by_name("buffersink"), "out", NULL,
                                           NULL, g->graph);
    if (ret >= 0 && first && first->hw_frames_ctx) {
        AVBufferSrcParameters *par = av_buffersrc_parameters_alloc();
        if (!par) {
            rc = td_error_set(err, TD_ENOMEM, "out of memory");
            goto fail;
        }
        par->hw_frames_ctx = first->hw_frames_ctx; /* the source takes its own reference */
        ret = av_buffersrc_parameters_set(g->src, par);
        av_free(par);
    }
    if (ret < 0) {
        rc = td_error_set(err, TD_EINVAL, "cannot create the filter graph's ends: %s",
                          td_averr(ret, e, sizeof e));
        goto fail;
    }
    outputs = avfilter_inout_alloc();
    inputs = avfilter_inout_alloc();
    if (!outputs || !inputs) {
        rc = td_error_set(err, TD_ENOMEM, "out of memory");
        goto fail;
    }
    outputs->name = av_strdup("in");
    outputs->filter_ctx = g->src;
    inputs->name = av_strdup("out");
    inputs->filter_ctx = g->sink;
    ret = avfilter_graph_parse_ptr(g->graph, desc, &inputs, &outputs, NULL);
    /* Filters are created in the chain's order, so the hardware filter
     * after an hwupload is the next one with a device. */
    for (unsigned i = 0; ret >= 0 && hw && i < g->graph->nb_filters; i++) {
        const char *name = g->graph->filters[i]->filter->name;
        AVBufferRef *dev = device_for(name, hw);
        for (unsigned j = i + 1; !dev && strcmp(name, "hwupload") == 0 && j < g->graph->nb_filters; j++)
            dev = device_for(g->graph->filters[j]->filter->name, hw);
        if (!dev)
            continue;
        g->graph->filters[i]->hw_device_ctx = av_buffer_ref(dev);
        if (!g->graph->filters[i]->hw_device_ctx)
            ret = AVERROR(ENOMEM);
    }
    if (ret >= 0)
        ret = avfilter_graph_config(g->graph, NULL);
    if (ret < 0) {
        rc = td_error_set(err, TD_EINVAL, "filter graph '%s': %s", desc, td_averr(ret, e, sizeof e));
        goto fail;
    }
    avfilter_inout_free(&inputs);
    avfilter_inout_free(&outputs);
    *out = g;
    return TD_OK;
fail:
    avfilter_inout_free(&inputs);
    avfilter_inout_free(&outputs);
    td_vgraph_free(&g);
    return rc;
}

void td_vgraph_free(td_vgraph **pg)
{
    td_vgraph *g = *pg;
    if (!g)
        return;
    avfilter_graph_free(&g->graph);
    free(g);
    *pg = NULL;
}

int td_vgraph_push(td_vgraph *g, AVFrame *frame, td_error *err)
{
    char e[128];
    int ret = av_buffersrc_add_frame_flags(g->src, frame, AV_BUFFERSRC_FLAG_KEEP_REF);
    if (ret < 0)
        return td_error_set(err, ret == AVERROR(ENOMEM) ? TD_ENOMEM : TD_EINPUT,
                            "filter graph refused a frame: %s", td_averr(ret, e, sizeof e));
    return TD_OK;
}

int td_vgraph_pull(td_vgraph *g, AVFrame *frame, td_error *err)
{
    char e[128];
    if (g->ended)
        return 2;
    int ret = av_buffersink_get_frame(g->sink, frame);
    if (ret == AVERROR(EAGAIN))
        return 0;
    if (ret == AVERROR_EOF) {
        g->ended = 1;
        return 2;
    }
    if (ret < 0)
        return td_error_set(err, ret == AVERROR(ENOMEM) ? TD_ENOMEM : TD_EINPUT, "filter graph: %s",
                            td_averr(ret, e, sizeof e));
    return 1;
}

AVRational td_vgraph_time_base(const td_vgraph *g)
{
    return av_buffersink_get_time_base(g->sink);
}

AVRational td_vgraph_frame_rate(const td_vgraph *g)
{
    return av_buffersink_get_frame_rate(g->sink);
}

struct AVFilterContext *td_vgraph_sink(const td_vgraph *g)
{
    return g->sink;
}
