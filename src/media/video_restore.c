/* video_restore.c: decode, filter, encode, mux one scene; then check the
 * result against its source (see video_restore.h). */
#include "media/video_restore.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <libavcodec/avcodec.h>
#include <libavfilter/buffersink.h>
#include <libavformat/avformat.h>
#include <libavutil/audio_fifo.h>
#include <libavutil/crc.h>
#include <libavutil/intreadwrite.h>
#include <libavutil/hash.h>
#include <libavutil/hwcontext.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libswresample/swresample.h>
#include <libswscale/swscale.h>

#include "media/video_io.h"

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

#define MAX_AUDIO 16

/* One audio stream of the source in the output: copied, or decoded and
 * encoded losslessly (resampler used only to change the sample format). */
typedef struct oaudio {
    int in_index;
    AVStream *ost;
    int copy;
    AVCodecContext *dec, *enc;
    SwrContext *swr;
    AVAudioFifo *fifo;
    int64_t next_pts;  /* in 1/sample_rate */
    int started;
} oaudio;

/* The soft subtitle track, read from an SRT file. */
typedef struct osub {
    AVFormatContext *fmt;
    AVCodecContext *dec, *enc;
    AVStream *ost;
    AVPacket *pkt;
    int have_pkt;
    int done;
} osub;

typedef struct ctx {
    const td_restore_job *job;
    td_restore_stats *st;
    td_vinput *in;
    td_vgraph *g;
    AVFormatContext *out;
    AVCodecContext *venc;
    struct SwsContext *enc_sws; /* VAAPI encoding: the chain's frames repacked to NV12 ... */
    AVFrame *nv12, *surface;    /* ... here, then uploaded to a surface */
    AVStream *vost;
    oaudio audio[MAX_AUDIO];
    int n_audio;
    int map[64];      /* input stream -> audio[] slot, -1 dropped */
    osub sub;
    AVPacket *pkt;
    AVFrame *frame, *filtered, *aframe;
    int64_t last_pts;  /* of the last frame sent to the encoder */
    int64_t desync_ticks_ms;
    char e[128];
} ctx;

static int averr(td_error *err, int ret, const char *what, const char *path)
{
    char e[128];
    return td_error_set(err, ret == AVERROR(ENOMEM) ? TD_ENOMEM : TD_EIO, "%s: %s: %s", path, what,
                        td_averr(ret, e, sizeof e));
}

/* ---- subtitles ---------------------------------------------------------- */

static int sub_open(ctx *c, td_error *err)
{
    osub *s = &c->sub;
    const char *path = c->job->srt_path;
    int ret = avformat_open_input(&s->fmt, path, NULL, NULL);
    if (ret >= 0)
        ret = avformat_find_stream_info(s->fmt, NULL);
    if (ret < 0)
        return td_error_set(err, TD_EIO, "%s: cannot read the subtitles: %s", path, td_averr(ret, c->e, sizeof c->e));
    if (s->fmt->nb_streams < 1 || s->fmt->streams[0]->codecpar->codec_type != AVMEDIA_TYPE_SUBTITLE)
        return td_error_set(err, TD_EIO, "%s: no subtitle stream", path);
    AVStream *ist = s->fmt->streams[0];
    int copy = strcmp(c->job->muxer, "matroska") == 0 && ist->codecpar->codec_id == AV_CODEC_ID_SUBRIP;
    s->ost = avformat_new_stream(c->out, NULL);
    s->pkt = av_packet_alloc();
    if (!s->ost || !s->pkt)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    if (copy) {
        ret = avcodec_parameters_copy(s->ost->codecpar, ist->codecpar);
        if (ret < 0)
            return averr(err, ret, "subtitle parameters", path);
        s->ost->codecpar->codec_tag = 0;
        s->ost->time_base = ist->time_base;
    } else {
        const AVCodec *dc = avcodec_find_decoder(ist->codecpar->codec_id);
        const AVCodec *ec = avcodec_find_encoder(AV_CODEC_ID_MOV_TEXT);
        if (!dc || !ec)
            return td_error_set(err, TD_EUNAVAILABLE, "no SubRip decoder or mov_text encoder in libavcodec");
        s->dec = avcodec_alloc_context3(dc);
        s->enc = avcodec_alloc_context3(ec);
        if (!s->dec || !s->enc)
            return td_error_set(err, TD_ENOMEM, "out of memory");
        if ((ret = avcodec_parameters_to_context(s->dec, ist->codecpar)) < 0)
            return averr(err, ret, "subtitle decoder", path);
        s->dec->pkt_timebase = ist->time_base;
        if ((ret = avcodec_open2(s->dec, dc, NULL)) < 0)
            return averr(err, ret, "subtitle decoder", path);
        s->enc->time_base = (AVRational){1, 1000};
        if (s->dec->subtitle_header) {
            s->enc->subtitle_header = av_mallocz((size_t)s->dec->subtitle_header_size + 1);
            if (!s->enc->subtitle_header)
                return td_error_set(err, TD_ENOMEM, "out of memory");
            memcpy(s->enc->subtitle_header, s->dec->subtitle_header, (size_t)s->dec->subtitle_header_size);
            s->enc->subtitle_header_size = s->dec->subtitle_header_size;
        }
        if ((ret = avcodec_open2(s->enc, ec, NULL)) < 0)
            return averr(err, ret, "mov_text encoder", path);
        if ((ret = avcodec_parameters_from_context(s->ost->codecpar, s->enc)) < 0)
            return averr(err, ret, "subtitle parameters", path);
        s->ost->time_base = (AVRational){1, 1000};
    }
    if (c->job->language && *c->job->language)
        av_dict_set(&s->ost->metadata, "language", c->job->language, 0);
    return TD_OK;
}

/* Write the subtitle packets that start before `until` seconds (all when
 * until is infinite), so they interleave with the picture. */
static int sub_write_until(ctx *c, double until, td_error *err)
{
    osub *s = &c->sub;
    if (!s->fmt || s->done)
        return TD_OK;
    AVStream *ist = s->fmt->streams[0];
    for (;;) {
        if (!s->have_pkt) {
            int ret = av_read_frame(s->fmt, s->pkt);
            if (ret == AVERROR_EOF) {
                s->done = 1;
                return TD_OK;
            }
            if (ret < 0)
                return averr(err, ret, "reading subtitles", c->job->srt_path);
            s->have_pkt = 1;
        }
        double t = s->pkt->pts == AV_NOPTS_VALUE ? 0 : (double)s->pkt->pts * av_q2d(ist->time_base);
        if (t > until)
            return TD_OK;
        s->have_pkt = 0;
        int ret;
        if (!s->enc) {
            av_packet_rescale_ts(s->pkt, ist->time_base, s->ost->time_base);
            s->pkt->stream_index = s->ost->index;
            s->pkt->pos = -1;
            ret = av_interleaved_write_frame(c->out, s->pkt);
            if (ret < 0)
                return averr(err, ret, "writing subtitles", c->job->out_path);
            continue;
        }
        AVSubtitle sub;
        int got = 0;
        ret = avcodec_decode_subtitle2(s->dec, &sub, &got, s->pkt);
        int64_t pts = s->pkt->pts, dur = s->pkt->duration;
        av_packet_unref(s->pkt);
        if (ret < 0)
            return averr(err, ret, "decoding subtitles", c->job->srt_path);
        if (!got)
            continue;
        uint8_t buf[65536];
        int n = avcodec_encode_subtitle(s->enc, buf, sizeof buf, &sub);
        uint32_t end_ms = sub.end_display_time;
        avsubtitle_free(&sub);
        if (n < 0)
            return averr(err, n, "encoding subtitles", c->job->out_path);
        AVPacket *op = av_packet_alloc();
        if (!op || av_new_packet(op, n) < 0) {
            av_packet_free(&op);
            return td_error_set(err, TD_ENOMEM, "out of memory");
        }
        memcpy(op->data, buf, (size_t)n);
        op->pts = op->dts = av_rescale_q(pts, ist->time_base, s->ost->time_base);
        op->duration = dur > 0 ? av_rescale_q(dur, ist->time_base, s->ost->time_base)
                               : av_rescale_q(end_ms, (AVRational){1, 1000}, s->ost->time_base);
        op->stream_index = s->ost->index;
        ret = av_interleaved_write_frame(c->out, op);
        av_packet_free(&op);
        if (ret < 0)
            return averr(err, ret, "writing subtitles", c->job->out_path);
    }
}

static void sub_close(osub *s)
{
    avcodec_free_context(&s->dec);
    avcodec_free_context(&s->enc);
    avformat_close_input(&s->fmt);
    av_packet_free(&s->pkt);
}

/* ---- audio -------------------------------------------------------------- */

/* The lossless codec for a container that cannot take the source's: ALAC
 * in MP4 (Debian's MP4 muxer refuses PCM and FLAC), PCM elsewhere. */
static enum AVCodecID lossless_for(const char *muxer, enum AVSampleFormat fmt)
{
    if (strcmp(muxer, "mp4") == 0)
        return AV_CODEC_ID_ALAC;
    /* Decoders of lossy codecs give floats: stored as floats they are the
     * very samples the source decodes to. */
    if (fmt == AV_SAMPLE_FMT_FLT || fmt == AV_SAMPLE_FMT_FLTP)
        return strcmp(muxer, "mp4") == 0 ? AV_CODEC_ID_NONE : AV_CODEC_ID_PCM_F32LE;
    if (strcmp(muxer, "matroska") == 0)
        return av_get_bytes_per_sample(fmt) > 2 ? AV_CODEC_ID_PCM_S32LE : AV_CODEC_ID_FLAC;
    return av_get_bytes_per_sample(fmt) > 2 ? AV_CODEC_ID_PCM_S24LE : AV_CODEC_ID_PCM_S16LE;
}

/* Samples the source's demuxer drops at the start of a stream (an MP4 edit
 * list hiding AAC's encoder delay arrives as skip-samples side data on
 * the first packet). Matroska as Debian's FFmpeg 5.1 writes it keeps no
 * such trim for AAC: a copy would play the priming samples (the
 * self-check caught 1024 extra), so such a stream is stored decoded
 * instead. 0 if none. */
static int start_skip(const char *path, int index)
{
    AVFormatContext *fmt = NULL;
    AVPacket *pkt = av_packet_alloc();
    int skip = 0;
    if (!pkt || avformat_open_input(&fmt, path, NULL, NULL) < 0)
        goto out;
    for (int n = 0; n < 4096 && av_read_frame(fmt, pkt) >= 0; n++) {
        int mine = pkt->stream_index == index;
        if (mine) {
            size_t size = 0;
            const uint8_t *sd = av_packet_get_side_data(pkt, AV_PKT_DATA_SKIP_SAMPLES, &size);
            if (sd && size >= 4)
                skip = (int)(sd[0] | sd[1] << 8 | sd[2] << 16 | (uint32_t)sd[3] << 24);
        }
        av_packet_unref(pkt);
        if (mine)
            break;
    }
out:
    avformat_close_input(&fmt);
    av_packet_free(&pkt);
    return skip > 0 && skip < 1 << 20 ? skip : 0;
}

static int audio_add(ctx *c, int index, td_error *err)
{
    AVStream *ist = c->in->fmt->streams[index];
    oaudio *a = &c->audio[c->n_audio];
    memset(a, 0, sizeof *a);
    a->in_index = index;
    a->ost = avformat_new_stream(c->out, NULL);
    if (!a->ost)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    av_dict_copy(&a->ost->metadata, ist->metadata, 0);
    a->ost->disposition = ist->disposition;
    int ret;
    a->copy = avformat_query_codec(c->out->oformat, ist->codecpar->codec_id, FF_COMPLIANCE_NORMAL) == 1;
    if (a->copy && strcmp(c->job->muxer, "matroska") == 0 && start_skip(c->job->in_path, index) > 0)
        a->copy = 0;
    if (a->copy) {
        if ((ret = avcodec_parameters_copy(a->ost->codecpar, ist->codecpar)) < 0)
            return averr(err, ret, "audio parameters", c->job->out_path);
        a->ost->codecpar->codec_tag = 0;
        a->ost->time_base = ist->time_base;
        snprintf(c->st->audio_mode, sizeof c->st->audio_mode, "copy %s", avcodec_get_name(ist->codecpar->codec_id));
        c->n_audio++;
        return TD_OK;
    }
    const AVCodec *dc = avcodec_find_decoder(ist->codecpar->codec_id);
    if (!dc)
        return td_error_set(err, TD_EINPUT, "%s: no decoder for audio codec %s", c->job->in_path,
                            avcodec_get_name(ist->codecpar->codec_id));
    a->dec = avcodec_alloc_context3(dc);
    if (!a->dec)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    if ((ret = avcodec_parameters_to_context(a->dec, ist->codecpar)) < 0 ||
        (a->dec->pkt_timebase = ist->time_base, ret = avcodec_open2(a->dec, dc, NULL)) < 0)
        return td_error_set(err, TD_EINPUT, "%s: cannot open the audio decoder: %s", c->job->in_path,
                            td_averr(ret, c->e, sizeof c->e));
    enum AVCodecID eid = lossless_for(c->job->muxer, a->dec->sample_fmt);
    if (eid == AV_CODEC_ID_NONE)
        return td_error_set(err, TD_EINPUT, "%s: %s audio cannot go into MP4 unchanged (try --restore-format "
                            "archive or edit)", c->job->in_path, avcodec_get_name(ist->codecpar->codec_id));
    const AVCodec *ec = avcodec_find_encoder(eid);
    if (!ec)
        return td_error_set(err, TD_EUNAVAILABLE, "no %s encoder in libavcodec", avcodec_get_name(eid));
    a->enc = avcodec_alloc_context3(ec);
    if (!a->enc)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    /* Keep the sample depth: 16-bit stays 16-bit, anything wider 32. */
    int wide = av_get_bytes_per_sample(a->dec->sample_fmt) > 2;
    enum AVSampleFormat want = AV_SAMPLE_FMT_NONE;
    for (const enum AVSampleFormat *f = ec->sample_fmts; f && *f != AV_SAMPLE_FMT_NONE; f++) {
        if ((av_get_bytes_per_sample(*f) > 2) == wide && !av_sample_fmt_is_planar(*f) == !av_sample_fmt_is_planar(a->dec->sample_fmt)) {
            want = *f;
            break;
        }
        if ((av_get_bytes_per_sample(*f) > 2) == wide && want == AV_SAMPLE_FMT_NONE)
            want = *f;
    }
    if (want == AV_SAMPLE_FMT_NONE)
        want = ec->sample_fmts ? ec->sample_fmts[0] : AV_SAMPLE_FMT_S16;
    a->enc->sample_fmt = want;
    a->enc->sample_rate = a->dec->sample_rate;
    /* Encoders want a named layout; a stream that only says "2 channels"
     * gets the usual one for its count (the samples are not touched). */
    if (a->dec->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC)
        av_channel_layout_default(&a->enc->ch_layout, a->dec->ch_layout.nb_channels);
    else if ((ret = av_channel_layout_copy(&a->enc->ch_layout, &a->dec->ch_layout)) < 0)
        return averr(err, ret, "audio layout", c->job->out_path);
    a->enc->time_base = (AVRational){1, a->dec->sample_rate};
    if (wide && eid == AV_CODEC_ID_ALAC)
        a->enc->bits_per_raw_sample = av_get_bytes_per_sample(a->dec->sample_fmt) >= 4 ? 24 : 16;
    if (c->out->oformat->flags & AVFMT_GLOBALHEADER)
        a->enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if ((ret = avcodec_open2(a->enc, ec, NULL)) < 0)
        return averr(err, ret, "lossless audio encoder", c->job->out_path);
    if ((ret = avcodec_parameters_from_context(a->ost->codecpar, a->enc)) < 0)
        return averr(err, ret, "audio parameters", c->job->out_path);
    a->ost->time_base = a->enc->time_base;
    ret = swr_alloc_set_opts2(&a->swr, &a->enc->ch_layout, a->enc->sample_fmt, a->enc->sample_rate,
                              &a->enc->ch_layout, a->dec->sample_fmt, a->dec->sample_rate, 0, NULL);
    if (ret < 0 || (ret = swr_init(a->swr)) < 0)
        return averr(err, ret, "audio sample format conversion", c->job->out_path);
    a->fifo = av_audio_fifo_alloc(a->enc->sample_fmt, a->enc->ch_layout.nb_channels, 4096);
    if (!a->fifo)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    snprintf(c->st->audio_mode, sizeof c->st->audio_mode, "%s (lossless, from %s)", ec->name,
             avcodec_get_name(ist->codecpar->codec_id));
    c->n_audio++;
    return TD_OK;
}

static int write_packet(ctx *c, AVPacket *p, AVRational from, AVStream *ost, int shift, td_error *err)
{
    av_packet_rescale_ts(p, from, ost->time_base);
    if (shift && c->desync_ticks_ms) {
        int64_t d = av_rescale_q(c->desync_ticks_ms, (AVRational){1, 1000}, ost->time_base);
        if (p->pts != AV_NOPTS_VALUE)
            p->pts += d;
        if (p->dts != AV_NOPTS_VALUE)
            p->dts += d;
    }
    p->stream_index = ost->index;
    p->pos = -1;
    int ret = av_interleaved_write_frame(c->out, p);
    if (ret < 0)
        return averr(err, ret, "writing", c->job->out_path);
    return TD_OK;
}

static int audio_encode(ctx *c, oaudio *a, AVFrame *f, td_error *err)
{
    int ret = avcodec_send_frame(a->enc, f);
    if (ret < 0)
        return averr(err, ret, "audio encoder", c->job->out_path);
    for (;;) {
        ret = avcodec_receive_packet(a->enc, c->pkt);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF)
            return TD_OK;
        if (ret < 0)
            return averr(err, ret, "audio encoder", c->job->out_path);
        int rc = write_packet(c, c->pkt, a->enc->time_base, a->ost, 1, err);
        if (rc)
            return rc;
    }
}

/* Move whole encoder frames from the FIFO into the encoder (all that is
 * left when flushing: the last frame may be short). */
static int audio_drain_fifo(ctx *c, oaudio *a, int flush, td_error *err)
{
    int fs = a->enc->frame_size > 0 ? a->enc->frame_size : 4096;
    while (av_audio_fifo_size(a->fifo) >= fs || (flush && av_audio_fifo_size(a->fifo) > 0)) {
        int n = av_audio_fifo_size(a->fifo) < fs ? av_audio_fifo_size(a->fifo) : fs;
        AVFrame *f = c->aframe;
        av_frame_unref(f);
        f->nb_samples = n;
        f->format = a->enc->sample_fmt;
        f->sample_rate = a->enc->sample_rate;
        int ret = av_channel_layout_copy(&f->ch_layout, &a->enc->ch_layout);
        if (ret >= 0)
            ret = av_frame_get_buffer(f, 0);
        if (ret >= 0 && av_audio_fifo_read(a->fifo, (void **)f->data, n) != n)
            ret = AVERROR(EIO);
        if (ret < 0)
            return averr(err, ret, "audio buffer", c->job->out_path);
        f->pts = a->next_pts;
        a->next_pts += n;
        int rc = audio_encode(c, a, f, err);
        av_frame_unref(f);
        if (rc)
            return rc;
    }
    return TD_OK;
}

static int audio_decoded(ctx *c, oaudio *a, td_error *err)
{
    for (;;) {
        int ret = avcodec_receive_frame(a->dec, c->aframe);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF)
            return TD_OK;
        if (ret < 0)
            return td_error_set(err, TD_EINPUT, "%s: audio stream corrupt: %s", c->job->in_path,
                                td_averr(ret, c->e, sizeof c->e));
        if (!a->started) {
            int64_t t = c->aframe->best_effort_timestamp;
            a->next_pts = t == AV_NOPTS_VALUE ? 0
                                             : av_rescale_q(t, c->in->fmt->streams[a->in_index]->time_base,
                                                            a->enc->time_base);
            a->started = 1;
        }
        uint8_t **buf = NULL;
        int n = c->aframe->nb_samples;
        ret = av_samples_alloc_array_and_samples(&buf, NULL, a->enc->ch_layout.nb_channels, n,
                                                 a->enc->sample_fmt, 0);
        if (ret >= 0)
            ret = swr_convert(a->swr, buf, n, (const uint8_t **)c->aframe->extended_data, n);
        if (ret >= 0 && av_audio_fifo_write(a->fifo, (void **)buf, ret) < ret)
            ret = AVERROR(ENOMEM);
        if (buf)
            av_freep(&buf[0]);
        av_freep(&buf);
        av_frame_unref(c->aframe);
        if (ret < 0)
            return averr(err, ret, "audio conversion", c->job->out_path);
        int rc = audio_drain_fifo(c, a, 0, err);
        if (rc)
            return rc;
    }
}

static int audio_packet(ctx *c, AVPacket *p, td_error *err)
{
    int slot = p->stream_index < 64 ? c->map[p->stream_index] : -1;
    if (slot < 0)
        return TD_OK;
    oaudio *a = &c->audio[slot];
    AVRational tb = c->in->fmt->streams[a->in_index]->time_base;
    if (a->copy)
        return write_packet(c, p, tb, a->ost, 1, err);
    int ret = avcodec_send_packet(a->dec, p);
    if (ret < 0 && ret != AVERROR(EAGAIN))
        return td_error_set(err, TD_EINPUT, "%s: audio stream corrupt: %s", c->job->in_path,
                            td_averr(ret, c->e, sizeof c->e));
    return audio_decoded(c, a, err);
}

static int audio_flush(ctx *c, td_error *err)
{
    for (int i = 0; i < c->n_audio; i++) {
        oaudio *a = &c->audio[i];
        if (a->copy)
            continue;
        int ret = avcodec_send_packet(a->dec, NULL);
        if (ret < 0 && ret != AVERROR_EOF)
            return averr(err, ret, "audio decoder", c->job->in_path);
        int rc = audio_decoded(c, a, err);
        if (!rc)
            rc = audio_drain_fifo(c, a, 1, err);
        if (!rc)
            rc = audio_encode(c, a, NULL, err);
        if (rc)
            return rc;
    }
    return TD_OK;
}

/* ---- video -------------------------------------------------------------- */

/* What every video encoder gets: the filtered frames' size, format,
 * aspect, clock and colour description. */
static void enc_common(ctx *c, AVCodecContext *e)
{
    AVFilterContext *sink = td_vgraph_sink(c->g);
    e->width = av_buffersink_get_w(sink);
    e->height = av_buffersink_get_h(sink);
    e->pix_fmt = av_buffersink_get_format(sink);
    e->sample_aspect_ratio = av_buffersink_get_sample_aspect_ratio(sink);
    e->time_base = av_buffersink_get_time_base(sink);
    e->framerate = av_buffersink_get_frame_rate(sink);
    e->field_order = AV_FIELD_PROGRESSIVE;
    e->color_range = AVCOL_RANGE_MPEG;
    const td_restore_plan *p = c->job->plan;
    int ntsc = c->in->dec->height == 480 || c->in->dec->height == 486;
    if (p->hd) {
        e->color_primaries = AVCOL_PRI_BT709;
        e->color_trc = AVCOL_TRC_BT709;
        e->colorspace = AVCOL_SPC_BT709;
    } else if (ntsc) {
        e->color_primaries = AVCOL_PRI_SMPTE170M;
        e->color_trc = AVCOL_TRC_SMPTE170M;
        e->colorspace = AVCOL_SPC_SMPTE170M;
    } else {
        e->color_primaries = AVCOL_PRI_BT470BG;
        e->color_trc = AVCOL_TRC_GAMMA28;
        e->colorspace = AVCOL_SPC_BT470BG;
    }
    e->thread_count = c->job->threads;
    if (c->out->oformat->flags & AVFMT_GLOBALHEADER)
        e->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
}

/* The view format's encoder on the worker's card (job->hwenc). 0 with
 * c->venc open, or -1 with why (c->venc freed): the caller encodes on
 * the CPU. Quality: NVENC's constant-quality VBR and VAAPI's constant
 * QP, each set a step or two above the CRF (hardware encoders spend
 * more bits for the same look at the same number). */
static int hwenc_open(ctx *c, char *why, size_t len)
{
    const td_restore_job *job = c->job;
    const td_restore_settings *s = job->settings;
    int nvenc = job->hwenc == TD_HWENC_NVENC, hevc = s->codec == TD_RCODEC_HEVC;
    const char *name = nvenc ? (hevc ? "hevc_nvenc" : "h264_nvenc") : (hevc ? "hevc_vaapi" : "h264_vaapi");
    const AVCodec *ec = avcodec_find_encoder_by_name(name);
    if (!ec) {
        snprintf(why, len, "%s is not in this libavcodec", name);
        return -1;
    }
    if (!nvenc && !job->hwenc_dev) {
        snprintf(why, len, "no VAAPI device for %s", name);
        return -1;
    }
    c->venc = avcodec_alloc_context3(ec);
    if (!c->venc) {
        snprintf(why, len, "out of memory");
        return -1;
    }
    AVCodecContext *e = c->venc;
    enc_common(c, e);
    int crf = s->crf > 0 ? s->crf : (hevc ? 20 : 18);
    char q[16];
    AVDictionary *o = NULL;
    int ret = 0;
    const char *what = "cannot open";
    if (nvenc) {
        /* takes the filtered (system memory) frames as they are */
        if (job->hwenc_dev && !(e->hw_device_ctx = av_buffer_ref(job->hwenc_dev)))
            ret = AVERROR(ENOMEM);
        snprintf(q, sizeof q, "%d", crf + 1);
        av_dict_set(&o, "preset", "p5", 0);
        av_dict_set(&o, "tune", "hq", 0);
        av_dict_set(&o, "rc", "vbr", 0);
        av_dict_set(&o, "cq", q, 0);
        av_dict_set(&o, "spatial-aq", "1", 0);
        e->bit_rate = 0;
    } else {
        /* VAAPI encodes surfaces: NV12 ones, uploaded frame by frame
         * (video_encode) after a lossless repacking of the chain's 4:2:0 */
        AVBufferRef *frames = av_hwframe_ctx_alloc(job->hwenc_dev);
        if (!frames) {
            ret = AVERROR(ENOMEM);
        } else {
            AVHWFramesContext *fc = (AVHWFramesContext *)frames->data;
            fc->format = AV_PIX_FMT_VAAPI;
            fc->sw_format = AV_PIX_FMT_NV12;
            fc->width = e->width;
            fc->height = e->height;
            fc->initial_pool_size = 16;
            ret = av_hwframe_ctx_init(frames);
            what = "no NV12 surfaces";
            if (ret >= 0) {
                e->hw_frames_ctx = frames;
                frames = NULL;
                c->enc_sws = sws_getContext(e->width, e->height, e->pix_fmt, e->width, e->height,
                                            AV_PIX_FMT_NV12, SWS_POINT, NULL, NULL, NULL);
                c->nv12 = av_frame_alloc();
                c->surface = av_frame_alloc();
                ret = c->enc_sws && c->nv12 && c->surface ? 0 : AVERROR(ENOMEM);
                e->pix_fmt = AV_PIX_FMT_VAAPI;
                what = "cannot open";
            }
            av_buffer_unref(&frames);
        }
        snprintf(q, sizeof q, "%d", crf + 2);
        av_dict_set(&o, "rc_mode", "CQP", 0);
        av_dict_set(&o, "qp", q, 0);
    }
    if (ret >= 0)
        ret = avcodec_open2(e, ec, &o);
    av_dict_free(&o);
    if (ret < 0) {
        char ae[128];
        snprintf(why, len, "%s %s: %s", name, what, td_averr(ret, ae, sizeof ae));
        avcodec_free_context(&c->venc);
        sws_freeContext(c->enc_sws);
        c->enc_sws = NULL;
        av_frame_free(&c->nv12);
        av_frame_free(&c->surface);
        return -1;
    }
    snprintf(c->st->encoder, sizeof c->st->encoder, "%s", name);
    snprintf(c->st->encode_on, sizeof c->st->encode_on, "%s", nvenc ? "nvenc" : "vaapi");
    return 0;
}

static int video_setup(ctx *c, td_error *err)
{
    const td_restore_settings *s = c->job->settings;
    snprintf(c->st->encode_on, sizeof c->st->encode_on, "cpu");
    char why[200] = "";
    int ret;
    if (s->format == TD_RFORMAT_VIEW && c->job->hwenc != TD_HWENC_NONE && hwenc_open(c, why, sizeof why) == 0)
        goto stream;
    if (why[0])
        snprintf(c->st->encode_on, sizeof c->st->encode_on, "cpu (%s)", why);
    const char *name = s->format == TD_RFORMAT_ARCHIVE ? "ffv1"
                       : s->format == TD_RFORMAT_EDIT  ? "prores_ks"
                       : s->codec == TD_RCODEC_HEVC    ? "libx265"
                                                       : "libx264";
    snprintf(c->st->encoder, sizeof c->st->encoder, "%s", name);
    const AVCodec *ec = avcodec_find_encoder_by_name(name);
    if (!ec)
        return td_error_set(err, TD_EUNAVAILABLE, "encoder %s is not in this libavcodec", name);
    c->venc = avcodec_alloc_context3(ec);
    if (!c->venc)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    AVCodecContext *e = c->venc;
    enc_common(c, e);
    AVDictionary *o = NULL;
    char crf[16];
    if (strcmp(name, "libx264") == 0 || strcmp(name, "libx265") == 0) {
        snprintf(crf, sizeof crf, "%d", s->crf > 0 ? s->crf : (s->codec == TD_RCODEC_HEVC ? 20 : 18));
        av_dict_set(&o, "crf", crf, 0);
        av_dict_set(&o, "preset", "medium", 0);
        if (strcmp(name, "libx265") == 0)
            av_dict_set(&o, "x265-params", "log-level=error", 0);
    } else if (strcmp(name, "ffv1") == 0) {
        av_dict_set(&o, "level", "3", 0);
        av_dict_set(&o, "slicecrc", "1", 0);
        av_dict_set(&o, "slices", "4", 0);
        e->gop_size = 1;
    } else {
        av_dict_set(&o, "profile", "hq", 0);
    }
    ret = avcodec_open2(e, ec, &o);
    av_dict_free(&o);
    if (ret < 0)
        return averr(err, ret, "video encoder", c->job->out_path);
stream:
    e = c->venc;
    c->vost = avformat_new_stream(c->out, NULL);
    if (!c->vost)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    if ((ret = avcodec_parameters_from_context(c->vost->codecpar, e)) < 0)
        return averr(err, ret, "video parameters", c->job->out_path);
    c->vost->time_base = e->time_base;
    c->vost->sample_aspect_ratio = e->sample_aspect_ratio;
    c->vost->avg_frame_rate = e->framerate;
    av_dict_copy(&c->vost->metadata, c->in->vst->metadata, 0);
    av_dict_set(&c->vost->metadata, "handler_name", "tapedeck restore", 0);
    return TD_OK;
}

/* A filtered frame onto a VAAPI surface (NV12) for the card's encoder;
 * a failure is TD_EINVAL, which the task takes as the GPU path failing
 * (the scene is then encoded again on the CPU). */
static int to_surface(ctx *c, const AVFrame *f, td_error *err)
{
    av_frame_unref(c->nv12);
    av_frame_unref(c->surface);
    c->nv12->format = AV_PIX_FMT_NV12;
    c->nv12->width = f->width;
    c->nv12->height = f->height;
    int ret = av_frame_get_buffer(c->nv12, 0);
    if (ret >= 0)
        ret = sws_scale(c->enc_sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height,
                        c->nv12->data, c->nv12->linesize) == f->height ? 0 : AVERROR(EINVAL);
    if (ret >= 0)
        ret = av_hwframe_get_buffer(c->venc->hw_frames_ctx, c->surface, 0);
    if (ret >= 0)
        ret = av_hwframe_transfer_data(c->surface, c->nv12, 0);
    if (ret >= 0)
        ret = av_frame_copy_props(c->surface, f);
    if (ret < 0) {
        char e[128];
        return td_error_set(err, ret == AVERROR(ENOMEM) ? TD_ENOMEM : TD_EINVAL, "%s: upload to the VAAPI encoder: %s",
                            c->job->out_path, td_averr(ret, e, sizeof e));
    }
    return TD_OK;
}

static int video_encode(ctx *c, AVFrame *f, td_error *err)
{
    double t0 = mono_s();
    if (f) {
        f->pict_type = AV_PICTURE_TYPE_NONE;
        c->st->frames_out++;
    }
    int rc = TD_OK;
    if (f && c->enc_sws) {
        if ((rc = to_surface(c, f, err)))
            goto out;
        f = c->surface;
    }
    int ret = avcodec_send_frame(c->venc, f);
    if (ret < 0) {
        rc = averr(err, ret, "video encoder", c->job->out_path);
        goto out;
    }
    for (;;) {
        ret = avcodec_receive_packet(c->venc, c->pkt);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF)
            break;
        if (ret < 0) {
            rc = averr(err, ret, "video encoder", c->job->out_path);
            goto out;
        }
        double t = c->pkt->pts == AV_NOPTS_VALUE ? 0 : (double)c->pkt->pts * av_q2d(c->venc->time_base);
        if ((rc = sub_write_until(c, t, err)))
            goto out;
        if ((rc = write_packet(c, c->pkt, c->venc->time_base, c->vost, 0, err)))
            goto out;
    }
out:
    c->st->seconds_encode += mono_s() - t0;
    return rc;
}

static int filter_and_encode(ctx *c, AVFrame *f, td_error *err)
{
    double t0 = mono_s();
    int rc = td_vgraph_push(c->g, f, err);
    c->st->seconds_filter += mono_s() - t0;
    if (rc)
        return rc;
    for (;;) {
        t0 = mono_s();
        int r = td_vgraph_pull(c->g, c->filtered, err);
        c->st->seconds_filter += mono_s() - t0;
        if (r < 0)
            return r;
        if (r != 1)
            return TD_OK;
        /* bwdif gives the second field of a scene's last frame the
         * first's timestamp when it has no next frame to measure the
         * field duration by: place it half a frame on, as it would be. */
        AVFrame *out = c->filtered;
        if (out->pts != AV_NOPTS_VALUE && c->last_pts != AV_NOPTS_VALUE && out->pts <= c->last_pts) {
            AVRational fr = c->venc->framerate;
            int64_t d = fr.num > 0 ? av_rescale_q(1, av_inv_q(fr), c->venc->time_base) : 1;
            out->pts = c->last_pts + (d > 0 ? d : 1);
        }
        if (out->pts != AV_NOPTS_VALUE)
            c->last_pts = out->pts;
        rc = video_encode(c, c->filtered, err);
        av_frame_unref(c->filtered);
        if (rc)
            return rc;
    }
}

int td_restore_transcode(const td_restore_job *job, td_restore_stats *st, td_error *err)
{
    memset(st, 0, sizeof *st);
    snprintf(st->audio_mode, sizeof st->audio_mode, "none");
    snprintf(st->decode_on, sizeof st->decode_on, "cpu");
    ctx c;
    memset(&c, 0, sizeof c);
    c.job = job;
    c.st = st;
    c.desync_ticks_ms = job->desync_ms;
    c.last_pts = AV_NOPTS_VALUE;
    for (int i = 0; i < 64; i++)
        c.map[i] = -1;
    double t_start = mono_s();
    int rc = TD_OK, header = 0, ret;
    c.pkt = av_packet_alloc();
    c.frame = av_frame_alloc();
    c.filtered = av_frame_alloc();
    c.aframe = av_frame_alloc();
    if (!c.pkt || !c.frame || !c.filtered || !c.aframe) {
        rc = td_error_set(err, TD_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = td_vinput_open_hw(job->in_path, job->threads, job->hw.decode, &c.in, err)))
        goto out;
    c.in->want_other = 1;
    if ((rc = td_vinput_prime(c.in, err)))
        goto out;
    td_restore_plan plan = *job->plan;
    if (c.in->hw_used) {
        const AVHWFramesContext *fc = (const AVHWFramesContext *)c.in->held->hw_frames_ctx->data;
        plan.hwdec = 1;
        plan.hwdec_cuda = fc->device_ctx->type == AV_HWDEVICE_TYPE_CUDA;
        snprintf(plan.hw_sw_fmt, sizeof plan.hw_sw_fmt, "%s", av_get_pix_fmt_name(fc->sw_format));
        snprintf(st->decode_on, sizeof st->decode_on, "%s", av_hwdevice_get_type_name(fc->device_ctx->type));
    } else if (job->hw.decode) {
        snprintf(st->decode_on, sizeof st->decode_on, "cpu (%s)", c.in->hw_why);
    }
    int ntsc = c.in->dec->height == 480 || c.in->dec->height == 486;
    if ((rc = td_restore_chain(&plan, ntsc, st->chain, sizeof st->chain, err)))
        goto out;
    if ((rc = td_vgraph_create_hw(c.in, st->chain, job->threads, &job->hw, &c.g, err)))
        goto out;
    ret = avformat_alloc_output_context2(&c.out, NULL, job->muxer, job->out_path);
    if (ret < 0 || !c.out) {
        rc = averr(err, ret < 0 ? ret : AVERROR(ENOMEM), "cannot set up the output", job->out_path);
        goto out;
    }
    if ((rc = video_setup(&c, err)))
        goto out;
    for (unsigned i = 0; i < c.in->fmt->nb_streams && i < 64 && c.n_audio < MAX_AUDIO; i++) {
        if (c.in->fmt->streams[i]->codecpar->codec_type != AVMEDIA_TYPE_AUDIO)
            continue;
        c.map[i] = c.n_audio;
        if ((rc = audio_add(&c, (int)i, err)))
            goto out;
    }
    st->audio_streams = c.n_audio;
    if (job->srt_path && (rc = sub_open(&c, err)))
        goto out;
    ret = avio_open(&c.out->pb, job->out_path, AVIO_FLAG_WRITE);
    if (ret < 0) {
        rc = averr(err, ret, "cannot create", job->out_path);
        goto out;
    }
    AVDictionary *mo = NULL;
    if (strcmp(job->muxer, "mp4") == 0 || strcmp(job->muxer, "mov") == 0)
        av_dict_set(&mo, "movflags", "+faststart", 0);
    ret = avformat_write_header(c.out, &mo);
    av_dict_free(&mo);
    if (ret < 0) {
        rc = averr(err, ret, "cannot write the header", job->out_path);
        goto out;
    }
    header = 1;

    for (;;) {
        AVPacket *other = NULL;
        double t0 = mono_s();
        int r = td_vinput_read(c.in, c.frame, &other, err);
        st->seconds_decode += mono_s() - t0;
        if (r < 0) {
            rc = r;
            goto out;
        }
        if (r == TD_VREAD_PACKET) {
            rc = audio_packet(&c, other, err);
            av_packet_free(&other);
            if (rc)
                goto out;
            continue;
        }
        if (r == TD_VREAD_EOF)
            break;
        st->frames_in++;
        rc = filter_and_encode(&c, c.frame, err);
        av_frame_unref(c.frame);
        if (rc)
            goto out;
        if (job->progress && job->progress(job->user, st->frames_in)) {
            rc = td_error_set(err, TD_EABORT, "%s: stopped", job->in_path);
            goto out;
        }
    }
    if (st->frames_in == 0) {
        rc = td_error_set(err, TD_EINPUT, "%s: the video stream has no frames", job->in_path);
        goto out;
    }
    if ((rc = filter_and_encode(&c, NULL, err)) || (rc = video_encode(&c, NULL, err)) ||
        (rc = audio_flush(&c, err)) || (rc = sub_write_until(&c, INFINITY, err)))
        goto out;
    ret = av_write_trailer(c.out);
    header = 0;
    if (ret < 0) {
        rc = averr(err, ret, "cannot finish", job->out_path);
        goto out;
    }

out:
    if (header)
        av_write_trailer(c.out); /* release the muxer's buffers; the file is discarded */
    if (c.out) {
        if (c.out->pb && (ret = avio_closep(&c.out->pb)) < 0 && rc == TD_OK)
            rc = averr(err, ret, "cannot close", job->out_path);
        avformat_free_context(c.out);
    }
    for (int i = 0; i < c.n_audio; i++) {
        avcodec_free_context(&c.audio[i].dec);
        avcodec_free_context(&c.audio[i].enc);
        swr_free(&c.audio[i].swr);
        if (c.audio[i].fifo)
            av_audio_fifo_free(c.audio[i].fifo);
    }
    sub_close(&c.sub);
    avcodec_free_context(&c.venc);
    sws_freeContext(c.enc_sws);
    av_frame_free(&c.nv12);
    av_frame_free(&c.surface);
    td_vgraph_free(&c.g);
    td_vinput_free(&c.in);
    av_packet_free(&c.pkt);
    av_frame_free(&c.frame);
    av_frame_free(&c.filtered);
    av_frame_free(&c.aframe);
    st->seconds_total = mono_s() - t_start;
    return rc;
}

/* ---- self-check --------------------------------------------------------- */

typedef struct probe {
    double v_start, v_end, a_start, frame_s;
    int64_t samples;
    int audio_streams;
    int lossless;      /* the video is FFV1: its slices' CRCs checked by the self-check */
    char sha[65];
} probe;

static int probe_file(const char *path, probe *p, td_error *err)
{
    char e[128];
    memset(p, 0, sizeof *p);
    p->v_start = p->a_start = INFINITY;
    p->v_end = -INFINITY;
    AVFormatContext *fmt = NULL;
    AVCodecContext *dec = NULL;
    AVPacket *pkt = av_packet_alloc();
    AVFrame *f = av_frame_alloc();
    SwrContext *swr = NULL;
    struct AVHashContext *h = NULL;
    uint8_t *buf = NULL;
    int bufsize = 0;
    int rc = TD_OK;
    if (!pkt || !f || av_hash_alloc(&h, "SHA256") < 0) {
        rc = td_error_set(err, TD_ENOMEM, "out of memory");
        goto out;
    }
    av_hash_init(h);
    int ret = avformat_open_input(&fmt, path, NULL, NULL);
    if (ret >= 0)
        ret = avformat_find_stream_info(fmt, NULL);
    if (ret < 0) {
        rc = td_error_set(err, TD_EIO, "%s: cannot open: %s", path, td_averr(ret, e, sizeof e));
        goto out;
    }
    int vi = -1, ai = -1;
    for (unsigned i = 0; i < fmt->nb_streams; i++) {
        AVStream *s = fmt->streams[i];
        if (s->codecpar->codec_type == AVMEDIA_TYPE_VIDEO && vi < 0 && !(s->disposition & AV_DISPOSITION_ATTACHED_PIC))
            vi = (int)i;
        if (s->codecpar->codec_type == AVMEDIA_TYPE_AUDIO) {
            p->audio_streams++;
            if (ai < 0)
                ai = (int)i;
        }
    }
    if (vi < 0) {
        rc = td_error_set(err, TD_EIO, "%s: no video stream", path);
        goto out;
    }
    AVStream *vs = fmt->streams[vi];
    p->lossless = vs->codecpar->codec_id == AV_CODEC_ID_FFV1;
    AVRational fr = vs->avg_frame_rate.num > 0 ? vs->avg_frame_rate : vs->r_frame_rate;
    p->frame_s = fr.num > 0 && fr.den > 0 ? av_q2d(av_inv_q(fr)) : 0.04;
    if (ai >= 0) {
        AVStream *as = fmt->streams[ai];
        const AVCodec *dc = avcodec_find_decoder(as->codecpar->codec_id);
        dec = dc ? avcodec_alloc_context3(dc) : NULL;
        if (!dec || avcodec_parameters_to_context(dec, as->codecpar) < 0 ||
            (dec->pkt_timebase = as->time_base, avcodec_open2(dec, dc, NULL)) < 0) {
            rc = td_error_set(err, TD_EIO, "%s: cannot decode the audio", path);
            goto out;
        }
    }
    for (int flushing = 0;;) {
        if (!flushing) {
            ret = av_read_frame(fmt, pkt);
            if (ret == AVERROR_EOF) {
                flushing = 1;
                if (!dec)
                    break;
                ret = avcodec_send_packet(dec, NULL);
            } else if (ret < 0) {
                rc = td_error_set(err, TD_EIO, "%s: read error: %s", path, td_averr(ret, e, sizeof e));
                goto out;
            } else if (pkt->stream_index == vi) {
                if (pkt->pts != AV_NOPTS_VALUE) {
                    double t = (double)pkt->pts * av_q2d(vs->time_base);
                    double d = pkt->duration > 0 ? (double)pkt->duration * av_q2d(vs->time_base) : p->frame_s;
                    p->v_start = fmin(p->v_start, t);
                    p->v_end = fmax(p->v_end, t + d);
                }
                av_packet_unref(pkt);
                continue;
            } else if (pkt->stream_index == ai) {
                ret = avcodec_send_packet(dec, pkt);
                av_packet_unref(pkt);
            } else {
                av_packet_unref(pkt);
                continue;
            }
            if (ret < 0 && ret != AVERROR(EAGAIN) && ret != AVERROR_EOF) {
                rc = td_error_set(err, TD_EIO, "%s: audio decode error: %s", path, td_averr(ret, e, sizeof e));
                goto out;
            }
        }
        for (;;) {
            ret = avcodec_receive_frame(dec, f);
            if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF)
                break;
            if (ret < 0) {
                rc = td_error_set(err, TD_EIO, "%s: audio decode error: %s", path, td_averr(ret, e, sizeof e));
                goto out;
            }
            if (isinf(p->a_start) && f->best_effort_timestamp != AV_NOPTS_VALUE)
                p->a_start = (double)f->best_effort_timestamp * av_q2d(fmt->streams[ai]->time_base);
            if (!swr) {
                ret = swr_alloc_set_opts2(&swr, &f->ch_layout, AV_SAMPLE_FMT_S32, f->sample_rate, &f->ch_layout,
                                          f->format, f->sample_rate, 0, NULL);
                if (ret < 0 || (ret = swr_init(swr)) < 0) {
                    rc = td_error_set(err, TD_EIO, "%s: audio conversion: %s", path, td_averr(ret, e, sizeof e));
                    goto out;
                }
            }
            int need = f->nb_samples * f->ch_layout.nb_channels * 4;
            if (need > bufsize) {
                av_freep(&buf);
                buf = av_malloc((size_t)need);
                bufsize = buf ? need : 0;
                if (!buf) {
                    rc = td_error_set(err, TD_ENOMEM, "out of memory");
                    goto out;
                }
            }
            uint8_t *outp[1] = {buf};
            int n = swr_convert(swr, outp, f->nb_samples, (const uint8_t **)f->extended_data, f->nb_samples);
            if (n < 0) {
                rc = td_error_set(err, TD_EIO, "%s: audio conversion failed", path);
                goto out;
            }
            av_hash_update(h, buf, (size_t)n * (size_t)f->ch_layout.nb_channels * 4);
            p->samples += n;
            av_frame_unref(f);
        }
        if (flushing)
            break;
    }
    uint8_t digest[32];
    av_hash_final(h, digest);
    for (int i = 0; i < 32; i++)
        snprintf(p->sha + 2 * i, 3, "%02x", digest[i]);
out:
    av_freep(&buf);
    swr_free(&swr);
    av_hash_freep(&h);
    avcodec_free_context(&dec);
    avformat_close_input(&fmt);
    av_packet_free(&pkt);
    av_frame_free(&f);
    return rc;
}

/* A lossless archive is meant to be kept for decades: check every FFV1
 * slice's CRC (the encoder writes them: slicecrc) and count the frames,
 * so that a damaged stream fails the scene now rather than in years.
 * FFmpeg 5.1's decoder only logs a CRC mismatch and conceals the slice,
 * so the check walks the slices itself: with FFV1 version 3 every slice
 * ends in a trailer (its size in 3 bytes, an error byte, the CRC-32 of
 * the slice), and a slice's CRC-32 over its bytes and that trailer is 0.
 * Only a file that cannot be read at all is an error; damage is r->ok = 0
 * with the reason. */
static int check_archive(const char *path, td_selfcheck *r, td_error *err)
{
    char e[128];
    AVFormatContext *fmt = NULL;
    AVPacket *pkt = av_packet_alloc();
    const AVCRC *crc = av_crc_get_table(AV_CRC_32_IEEE);
    int rc = TD_OK;
    if (!pkt || !crc) {
        rc = td_error_set(err, TD_ENOMEM, "out of memory");
        goto out;
    }
    int ret = avformat_open_input(&fmt, path, NULL, NULL);
    if (ret >= 0)
        ret = avformat_find_stream_info(fmt, NULL);
    if (ret < 0) {
        rc = td_error_set(err, TD_EIO, "%s: cannot open: %s", path, td_averr(ret, e, sizeof e));
        goto out;
    }
    int vi = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
    if (vi < 0) {
        rc = td_error_set(err, TD_EIO, "%s: no video stream", path);
        goto out;
    }
    AVRational tb = fmt->streams[vi]->time_base;
    while ((ret = av_read_frame(fmt, pkt)) >= 0) {
        if (pkt->stream_index != vi) {
            av_packet_unref(pkt);
            continue;
        }
        double t = pkt->pts == AV_NOPTS_VALUE ? -1 : (double)pkt->pts * av_q2d(tb);
        const uint8_t *start = pkt->data, *end = pkt->data + pkt->size;
        int slice = 0;
        const char *bad = NULL;
        while (end > start && !bad) {
            if (end - start < 8) {
                bad = "slice chain broken";
                break;
            }
            size_t v = (size_t)AV_RB24(end - 8) + 8;
            if (v > (size_t)(end - start))
                bad = "slice chain broken";
            else if (av_crc(crc, 0, end - v, v) != 0)
                bad = "slice CRC mismatch";
            else
                end -= v;
            slice++;
        }
        if (!bad && pkt->size == 0)
            bad = "empty frame";
        av_packet_unref(pkt);
        if (bad) {
            r->ok = 0;
            snprintf(r->why, sizeof r->why, "the archive's video is damaged: %s in the frame at %.3f s "
                     "(slice %d from its end)", bad, t, slice);
            goto out;
        }
        r->out_frames++;
    }
    if (ret != AVERROR_EOF) {
        r->ok = 0;
        snprintf(r->why, sizeof r->why, "the archive cannot be read to its end: %s", td_averr(ret, e, sizeof e));
    }
out:
    avformat_close_input(&fmt);
    av_packet_free(&pkt);
    return rc;
}

/* Start offsets may differ by the containers' time-base rounding, far
 * below what anyone hears (lip sync is noticed from about 20 ms). */
#define OFFSET_TOLERANCE 0.002

int td_restore_selfcheck(const char *src, const char *out, td_selfcheck *r, td_error *err)
{
    memset(r, 0, sizeof *r);
    probe a, b;
    int rc = probe_file(src, &a, err);
    if (!rc)
        rc = probe_file(out, &b, err);
    if (rc)
        return rc;
    r->src_duration = a.v_end - a.v_start;
    r->out_duration = b.v_end - b.v_start;
    r->frame_seconds = a.frame_s;
    r->audio_streams = b.audio_streams;
    r->src_samples = a.samples;
    r->out_samples = b.samples;
    snprintf(r->src_audio_sha, sizeof r->src_audio_sha, "%s", a.sha);
    snprintf(r->out_audio_sha, sizeof r->out_audio_sha, "%s", b.sha);
    int has_audio = a.audio_streams > 0;
    r->src_offset = has_audio && isfinite(a.a_start) ? a.v_start - a.a_start : 0;
    r->out_offset = has_audio && isfinite(b.a_start) ? b.v_start - b.a_start : 0;
    r->ok = 0;
    if (!isfinite(r->out_duration) || !isfinite(r->src_duration))
        snprintf(r->why, sizeof r->why, "no video frames with timestamps");
    else if (fabs(r->out_duration - r->src_duration) > a.frame_s + 1e-3)
        snprintf(r->why, sizeof r->why, "video lasts %.3f s, the source %.3f s (more than one frame apart)",
                 r->out_duration, r->src_duration);
    else if (a.audio_streams != b.audio_streams)
        snprintf(r->why, sizeof r->why, "%d audio streams, the source has %d", b.audio_streams, a.audio_streams);
    else if (has_audio && (a.samples != b.samples || strcmp(a.sha, b.sha) != 0))
        snprintf(r->why, sizeof r->why, "audio differs from the source (%lld samples, source %lld; checksums %s)",
                 (long long)b.samples, (long long)a.samples, strcmp(a.sha, b.sha) ? "differ" : "equal");
    else if (has_audio && fabs(r->out_offset - r->src_offset) > OFFSET_TOLERANCE)
        snprintf(r->why, sizeof r->why,
                 "audio-video offset changed: %.1f ms, the source %.1f ms", r->out_offset * 1e3,
                 r->src_offset * 1e3);
    else
        r->ok = 1;
    if (r->ok && b.lossless)
        return check_archive(out, r, err);
    return TD_OK;
}
