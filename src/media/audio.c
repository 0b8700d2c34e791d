/*
 * audio.c: streaming decode of a scene's audio to 16 kHz mono float (see
 * audio.h), with libavformat, libavcodec and libswresample (FFmpeg 5.1).
 *
 * The reader is a small pull pipeline:
 *
 *     av_read_frame -> avcodec_send_packet / avcodec_receive_frame
 *                   -> swr_convert -> fifo -> td_audio_read
 *
 * The fifo is refilled only when it is empty, with one decoded frame at a
 * time, so memory stays at one frame's worth of converted samples plus the
 * resampler's filter delay, whatever the length of the file.
 *
 * State machine of the decoding side:
 *
 *   READING --(av_read_frame says EOF: flush packet sent)--> DRAINING
 *   DRAINING --(decoder says EOF: resampler flushed, length checked)--> DONE
 *   any --(error)--> FAILED (sticky: every later read returns the same error)
 *
 * Why the checks are strict: a scene whose audio ends early would otherwise
 * be subtitled as if it were complete, and the subtitles would look finished.
 * So a read error is never taken for the end, and a stream that ends well
 * before the duration its container declares is reported as truncated,
 * unless another stream of the file (the picture) reaches that far: audio
 * that stops before the picture does is a whole file.
 *
 * FFmpeg's own log goes to a callback that prints nothing and keeps the last
 * error line per thread, so that the reason ("moov atom not found") ends up
 * in our error message instead of on stderr.
 */
#include "media/audio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avstring.h>
#include <libavutil/channel_layout.h>
#include <libavutil/dict.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>

#include "util/fault.h"

/* Bounds on what outside data may ask of us. A decoded audio frame is at
 * most a few thousand samples in every real codec; the fifo cap is far above
 * one such frame resampled, and far below "the whole file". */
#define FIFO_MAX_SAMPLES ((size_t)1 << 22) /* 4 Mi floats = 16 MiB */
#define MAX_FRAME_SAMPLES (1 << 20)
#define MAX_CHANNELS 64
#define MAX_INPUT_RATE 1000000
/* Consecutive packets the decoder may reject before we give up: a damaged
 * capture can have a few bad packets that FFmpeg itself skips, but a stream
 * that never decodes is not audio we can use. */
#define MAX_CONSECUTIVE_DECODE_ERRORS 32
/* Truncation rule: decoding ended with less than this share of the declared
 * duration, minus the slack, of audio. */
#define TRUNCATED_SHARE 0.9
#define TRUNCATED_SLACK_S 0.5

enum reader_state { ST_READING, ST_DRAINING, ST_DONE, ST_FAILED };

struct td_audio_reader {
    char *path;
    AVFormatContext *fmt;
    AVCodecContext *dec;
    SwrContext *swr;
    AVPacket *pkt;
    AVFrame *frame;
    int stream_index;
    double duration; /* declared, seconds; -1 if unknown */

    /* What the resampler was set up for; frames that differ re-create it. */
    AVChannelLayout swr_layout;
    int swr_format;
    int swr_rate;

    float *fifo;      /* converted samples not yet delivered */
    size_t fifo_cap;  /* allocated, in samples */
    size_t fifo_len;  /* filled */
    size_t fifo_pos;  /* next to deliver */
    size_t produced;  /* samples that entered the fifo */
    size_t delivered; /* samples handed to the caller */

    int decode_errors;        /* packets or frames the decoder rejected */
    int consecutive_errors;   /* since the last good frame */
    char last_decode_err[256];

    enum reader_state state;
    td_error failure; /* the sticky error in ST_FAILED */
};

/* ---- FFmpeg log capture ------------------------------------------------ */

static _Thread_local char avlog_last[256];
static pthread_once_t avlog_once = PTHREAD_ONCE_INIT;

static void avlog_callback(void *avcl, int level, const char *fmt, va_list vl)
{
    if (level > AV_LOG_ERROR)
        return;
    char line[sizeof avlog_last];
    int print_prefix = 0; /* no "[mov @ 0x...]": addresses help nobody */
    if (av_log_format_line2(avcl, level, fmt, vl, line, (int)sizeof line, &print_prefix) < 0)
        return;
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
        line[--len] = '\0';
    if (len > 0)
        memcpy(avlog_last, line, len + 1);
}

static void avlog_install(void)
{
    /* The level only gates what reaches the callback; nothing is printed. */
    av_log_set_level(AV_LOG_ERROR);
    av_log_set_callback(avlog_callback);
}

static void avlog_reset(void)
{
    pthread_once(&avlog_once, avlog_install);
    avlog_last[0] = '\0';
}

/* "Invalid data found when processing input (moov atom not found)". */
static void describe_averror(int averr, char *buf, size_t size)
{
    char text[AV_ERROR_MAX_STRING_SIZE];
    if (av_strerror(averr, text, sizeof text) < 0)
        snprintf(text, sizeof text, "error %d", averr);
    if (avlog_last[0] && strcmp(avlog_last, text) != 0)
        snprintf(buf, size, "%s (%s)", text, avlog_last);
    else
        snprintf(buf, size, "%s", text);
}

/* Which td_rc an FFmpeg error is: the file system's own failures may be
 * transient (network storage), anything else is about the file's content. */
static int rc_from_averror(int averr)
{
    if (averr == AVERROR(ENOMEM))
        return TD_ENOMEM;
    if (averr == AVERROR(EIO) || averr == AVERROR(EACCES) || averr == AVERROR(EPERM) ||
        averr == AVERROR(ESTALE) || averr == AVERROR(ETIMEDOUT))
        return TD_EIO;
    return TD_EINPUT;
}

/* ---- errors ------------------------------------------------------------ */

static double seconds(size_t samples)
{
    return (double)samples / TD_AUDIO_RATE;
}

/* Enter ST_FAILED with this error and copy it to err. */
static int fail(td_audio_reader *r, td_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(td_audio_reader *r, td_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    r->failure.code = code;
    vsnprintf(r->failure.msg, sizeof r->failure.msg, fmt, ap);
    va_end(ap);
    r->state = ST_FAILED;
    if (err)
        *err = r->failure;
    return code;
}

/* ---- opening ----------------------------------------------------------- */

/* What the file system says before FFmpeg is involved: FFmpeg would report
 * a missing or unreadable file with less precise words. */
static int check_file(const char *path, int *is_mp4, td_error *err)
{
    *is_mp4 = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        /* A missing path does not appear by retrying; a permission or disk
         * problem may be fixed without touching the file. */
        int code = (e == ENOENT || e == ENOTDIR || e == ELOOP || e == ENAMETOOLONG)
                       ? TD_EINPUT : TD_EIO;
        return td_error_errno(err, code, e, "%s: cannot open", path);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return td_error_errno(err, TD_EIO, e, "%s: cannot stat", path);
    }
    /* An ISO base media file (mp4, mov, 3gp) opens with an ftyp box: if
     * FFmpeg then finds no index, the file was cut or never finalized. */
    char head[8];
    if (S_ISREG(st.st_mode) && pread(fd, head, sizeof head, 0) == (ssize_t)sizeof head &&
        memcmp(head + 4, "ftyp", 4) == 0)
        *is_mp4 = 1;
    close(fd);
    if (S_ISDIR(st.st_mode))
        return td_error_set(err, TD_EINPUT, "%s: is a directory, not a media file", path);
    if (!S_ISREG(st.st_mode))
        return td_error_set(err, TD_EINPUT, "%s: not a regular file", path);
    if (st.st_size == 0)
        return td_error_set(err, TD_EINPUT, "%s: empty file", path);
    return TD_OK;
}

/* The default-disposition audio stream if there is one, else the first;
 * among those, one we can decode wins over one we cannot. av_find_best_stream
 * would prefer the highest bitrate among equals, which is not "the first". */
static int pick_stream(const AVFormatContext *fmt)
{
    int best = -1, best_score = -1;
    for (unsigned i = 0; i < fmt->nb_streams; i++) {
        const AVStream *st = fmt->streams[i];
        if (st->codecpar->codec_type != AVMEDIA_TYPE_AUDIO)
            continue;
        int score = (avcodec_find_decoder(st->codecpar->codec_id) ? 2 : 0) +
                    ((st->disposition & AV_DISPOSITION_DEFAULT) ? 1 : 0);
        if (score > best_score) {
            best = (int)i;
            best_score = score;
        }
    }
    return best;
}

/* Declared duration in seconds, or -1. A duration FFmpeg guessed from the
 * bitrate is not declared: it can be far off for variable-rate streams, and
 * the truncation check must not fire on a guess. */
static double declared_duration(const AVFormatContext *fmt, const AVStream *st)
{
    if (fmt->duration_estimation_method == AVFMT_DURATION_FROM_BITRATE)
        return -1;
    if (st->duration != AV_NOPTS_VALUE && st->duration > 0 && st->time_base.num > 0 &&
        st->time_base.den > 0)
        return (double)st->duration * av_q2d(st->time_base);
    if (fmt->duration != AV_NOPTS_VALUE && fmt->duration > 0)
        return (double)fmt->duration / AV_TIME_BASE;
    return -1;
}

static int open_decoder(td_audio_reader *r, td_error *err)
{
    AVStream *st = r->fmt->streams[r->stream_index];
    const AVCodecParameters *par = st->codecpar;
    const AVCodec *codec = avcodec_find_decoder(par->codec_id);
    if (!codec)
        return td_error_set(err, TD_EINPUT, "%s: cannot decode audio codec '%s' (tag 0x%x)",
                            r->path, avcodec_get_name(par->codec_id), par->codec_tag);
    r->dec = avcodec_alloc_context3(codec);
    if (!r->dec)
        return td_error_set(err, TD_ENOMEM, "%s: out of memory for the decoder", r->path);
    char why[512];
    avlog_reset();
    int ret = avcodec_parameters_to_context(r->dec, par);
    if (ret < 0) {
        describe_averror(ret, why, sizeof why);
        return td_error_set(err, rc_from_averror(ret), "%s: bad audio parameters: %s", r->path,
                            why);
    }
    r->dec->pkt_timebase = st->time_base;
    avlog_reset();
    ret = avcodec_open2(r->dec, codec, NULL);
    if (ret < 0) {
        describe_averror(ret, why, sizeof why);
        return td_error_set(err, rc_from_averror(ret), "%s: cannot open the %s decoder: %s",
                            r->path, codec->name, why);
    }
    return TD_OK;
}

int td_audio_open(const char *path, td_audio_reader **out, td_error *err)
{
    if (!path || !out)
        return td_error_set(err, TD_EINVAL, "td_audio_open: missing path or output");
    *out = NULL;
    int is_mp4;
    int rc = check_file(path, &is_mp4, err);
    if (rc != TD_OK)
        return rc;

    td_audio_reader *r = calloc(1, sizeof *r);
    if (!r)
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
    r->stream_index = -1;
    r->swr_format = AV_SAMPLE_FMT_NONE;
    r->path = strdup(path);
    if (!r->path) {
        rc = td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
        goto out_free_reader;
    }

    /* "file:" keeps a name like "tape1:party.mp4" from being taken for a
     * protocol, and the whitelist keeps a crafted playlist or concat file
     * from making FFmpeg open anything but local files. */
    char *url = av_asprintf("file:%s", path);
    AVDictionary *opts = NULL;
    if (!url || av_dict_set(&opts, "protocol_whitelist", "file", 0) < 0) {
        av_free(url);
        av_dict_free(&opts);
        rc = td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
        goto out_free_reader;
    }
    char why[512];
    avlog_reset();
    int ret = avformat_open_input(&r->fmt, url, NULL, &opts);
    av_free(url);
    av_dict_free(&opts);
    if (ret < 0) {
        describe_averror(ret, why, sizeof why);
        /* The one case worth a plain-words hint: an mp4/mov whose index was
         * never written, which is what a cut or unfinished recording is. */
        const char *hint = is_mp4 && strstr(why, "moov atom not found")
                               ? "; the file is truncated or was never finalized" : "";
        rc = td_error_set(err, rc_from_averror(ret), "%s: not a readable media file: %s%s", path,
                          why, hint);
        goto out_free_reader;
    }
    avlog_reset();
    ret = avformat_find_stream_info(r->fmt, NULL);
    if (ret < 0) {
        describe_averror(ret, why, sizeof why);
        rc = td_error_set(err, rc_from_averror(ret), "%s: cannot read the streams: %s", path,
                          why);
        goto out_free_reader;
    }
    r->stream_index = pick_stream(r->fmt);
    if (r->stream_index < 0) {
        rc = td_error_set(err, TD_EINPUT, "%s: no audio stream", path);
        goto out_free_reader;
    }
    /* Let the demuxer skip the other streams' data instead of handing it to
     * us to throw away (video is most of the bytes). */
    for (unsigned i = 0; i < r->fmt->nb_streams; i++)
        if ((int)i != r->stream_index)
            r->fmt->streams[i]->discard = AVDISCARD_ALL;

    rc = open_decoder(r, err);
    if (rc != TD_OK)
        goto out_free_reader;

    r->pkt = av_packet_alloc();
    r->frame = av_frame_alloc();
    if (!r->pkt || !r->frame) {
        rc = td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
        goto out_free_reader;
    }
    r->duration = declared_duration(r->fmt, r->fmt->streams[r->stream_index]);

    r->state = ST_READING;
    *out = r;
    /* Tests make a worker die here, as if the decoder had crashed. */
    td_fault_point("decode", path);
    return TD_OK;

out_free_reader:
    td_audio_close(&r);
    return rc;
}

/* ---- conversion -------------------------------------------------------- */

/* Make room for n more samples after fifo_len, within FIFO_MAX_SAMPLES. */
static int fifo_reserve(td_audio_reader *r, size_t n, td_error *err)
{
    /* Only a file can ask for this much (a frame that a bogus sample rate
     * blows up at 16 kHz): a bad input, not a transient shortage. */
    if (n > FIFO_MAX_SAMPLES - r->fifo_len)
        return fail(r, err, TD_EINPUT, "%s: audio frame too large after resampling (%zu samples; "
                    "is the sample rate right?)", r->path, n);
    size_t need = r->fifo_len + n;
    if (need <= r->fifo_cap)
        return TD_OK;
    size_t cap = r->fifo_cap ? r->fifo_cap : 4096;
    while (cap < need)
        cap *= 2;
    if (cap > FIFO_MAX_SAMPLES)
        cap = FIFO_MAX_SAMPLES;
    float *p = realloc(r->fifo, cap * sizeof *p);
    if (!p)
        return fail(r, err, TD_ENOMEM, "%s: out of memory for audio", r->path);
    r->fifo = p;
    r->fifo_cap = cap;
    return TD_OK;
}

/* Resample nb_in input samples (in NULL: drain the resampler) into the fifo. */
static int convert(td_audio_reader *r, const uint8_t **in, int nb_in, td_error *err)
{
    int bound = swr_get_out_samples(r->swr, nb_in);
    if (bound < 0)
        return fail(r, err, TD_EINPUT, "%s: resampler error", r->path);
    if (bound == 0)
        return TD_OK;
    int rc = fifo_reserve(r, (size_t)bound, err);
    if (rc != TD_OK)
        return rc;
    uint8_t *dst = (uint8_t *)(r->fifo + r->fifo_len);
    avlog_reset();
    int got = swr_convert(r->swr, &dst, bound, in, nb_in);
    if (got < 0) {
        char why[256];
        describe_averror(got, why, sizeof why);
        return fail(r, err, rc_from_averror(got), "%s: cannot resample audio: %s", r->path, why);
    }
    r->fifo_len += (size_t)got;
    r->produced += (size_t)got;
    return TD_OK;
}

/* Drain and free the resampler: at the end, or before a format change. */
static int flush_resampler(td_audio_reader *r, td_error *err)
{
    if (!r->swr)
        return TD_OK;
    int rc = convert(r, NULL, 0, err);
    swr_free(&r->swr);
    av_channel_layout_uninit(&r->swr_layout);
    return rc;
}

/* A (re)configured resampler for this frame's layout, format and rate. A
 * stream may change them midway (a broadcast capture switching from 5.1 to
 * stereo), so this is decided per frame, not once from the header. */
static int setup_resampler(td_audio_reader *r, const AVFrame *f, td_error *err)
{
    AVChannelLayout in_layout = {0};
    int rc = TD_OK;
    int rate = f->sample_rate > 0 ? f->sample_rate : r->dec->sample_rate;
    int nch = f->ch_layout.nb_channels;
    if (rate <= 0 || rate > MAX_INPUT_RATE || nch <= 0 || nch > MAX_CHANNELS)
        return fail(r, err, TD_EINPUT, "%s: unusable audio format (%d Hz, %d channels)",
                    r->path, rate, nch);
    /* Downmixing needs to know where each channel is; a stream that does not
     * say gets the usual layout for its channel count. */
    if (f->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC)
        av_channel_layout_default(&in_layout, nch);
    else if (av_channel_layout_copy(&in_layout, &f->ch_layout) < 0)
        return fail(r, err, TD_ENOMEM, "%s: out of memory", r->path);

    if (r->swr && r->swr_rate == rate && r->swr_format == f->format &&
        av_channel_layout_compare(&r->swr_layout, &in_layout) == 0)
        goto out_uninit_layout;

    rc = flush_resampler(r, err);
    if (rc != TD_OK)
        goto out_uninit_layout;

    AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
    char why[256];
    avlog_reset();
    int ret = swr_alloc_set_opts2(&r->swr, &mono, AV_SAMPLE_FMT_FLT, TD_AUDIO_RATE, &in_layout,
                                  (enum AVSampleFormat)f->format, rate, 0, NULL);
    /* With float in and out, swresample would not normalize the downmix
     * matrix, and stereo would become 0.707 * (L + R), which clips on loud
     * correlated channels. A max of 1 makes it an average (0.5 L + 0.5 R). */
    if (ret >= 0)
        ret = av_opt_set_double(r->swr, "rematrix_maxval", 1.0, 0);
    if (ret >= 0)
        ret = swr_init(r->swr);
    if (ret < 0) {
        describe_averror(ret, why, sizeof why);
        swr_free(&r->swr);
        rc = fail(r, err, rc_from_averror(ret), "%s: cannot convert audio (%s, %d Hz, %d ch): %s",
                  r->path, av_get_sample_fmt_name((enum AVSampleFormat)f->format)
                      ? av_get_sample_fmt_name((enum AVSampleFormat)f->format) : "?",
                  rate, nch, why);
        goto out_uninit_layout;
    }
    r->swr_layout = in_layout; /* ownership moves to the reader */
    in_layout = (AVChannelLayout){0};
    r->swr_format = f->format;
    r->swr_rate = rate;

out_uninit_layout:
    av_channel_layout_uninit(&in_layout);
    return rc;
}

static int convert_frame(td_audio_reader *r, const AVFrame *f, td_error *err)
{
    if (f->nb_samples <= 0)
        return TD_OK;
    if (f->nb_samples > MAX_FRAME_SAMPLES)
        return fail(r, err, TD_EINPUT, "%s: audio frame too large (%d samples)", r->path,
                    f->nb_samples);
    int rc = setup_resampler(r, f, err);
    if (rc != TD_OK)
        return rc;
    return convert(r, (const uint8_t **)f->extended_data, f->nb_samples, err);
}

/* ---- decoding ---------------------------------------------------------- */

/* Note a packet the decoder rejected; fail when they keep coming. */
static int decode_error(td_audio_reader *r, int averr, td_error *err)
{
    if (averr == AVERROR(ENOMEM))
        return fail(r, err, TD_ENOMEM, "%s: out of memory while decoding", r->path);
    describe_averror(averr, r->last_decode_err, sizeof r->last_decode_err);
    r->decode_errors++;
    if (++r->consecutive_errors >= MAX_CONSECUTIVE_DECODE_ERRORS)
        return fail(r, err, TD_EINPUT, "%s: undecodable audio at %.1f s: %s", r->path,
                    seconds(r->produced), r->last_decode_err);
    return TD_OK;
}

/* What decode errors add to a message: "" when there were none. */
static void decode_error_note(const td_audio_reader *r, char *buf, size_t size)
{
    if (r->decode_errors > 0)
        snprintf(buf, size, " (%d undecodable packet%s, last: %s)", r->decode_errors,
                 r->decode_errors == 1 ? "" : "s", r->last_decode_err);
    else
        buf[0] = '\0';
}

/* Does any stream of the file (the picture, usually) have data at or past
 * `seconds`? Audio may simply stop before the picture does, and the
 * duration FFmpeg gives the audio stream is often the whole file's
 * (Matroska has none per track): such a file is whole, while a file cut
 * short stops early in every stream. Only asked when the audio came up
 * short, so the usual path keeps skipping the other streams' data. */
static int file_reaches(td_audio_reader *r, double seconds_wanted)
{
    for (unsigned i = 0; i < r->fmt->nb_streams; i++)
        r->fmt->streams[i]->discard = AVDISCARD_DEFAULT;
    int64_t start = r->fmt->start_time != AV_NOPTS_VALUE ? r->fmt->start_time : 0;
    int64_t target = start + (int64_t)(seconds_wanted * AV_TIME_BASE);
    if (avformat_seek_file(r->fmt, -1, INT64_MIN, target, INT64_MAX, 0) < 0)
        return 0; /* no index to seek with: the cut took it */
    for (int n = 0; n < 256; n++) {
        if (av_read_frame(r->fmt, r->pkt) < 0)
            return 0;
        const AVStream *st = r->fmt->streams[r->pkt->stream_index];
        int64_t ts = r->pkt->pts != AV_NOPTS_VALUE ? r->pkt->pts : r->pkt->dts;
        int64_t dur = r->pkt->duration > 0 ? r->pkt->duration : 0;
        av_packet_unref(r->pkt);
        if (ts == AV_NOPTS_VALUE || st->time_base.num <= 0 || st->time_base.den <= 0)
            continue;
        double end = (double)(ts + dur) * av_q2d(st->time_base) - (double)start / AV_TIME_BASE;
        if (end >= seconds_wanted)
            return 1;
    }
    return 0;
}

/* Decoding ended cleanly: flush the resampler, then hold what we got
 * against what the container promised. */
static int finish(td_audio_reader *r, td_error *err)
{
    int rc = flush_resampler(r, err);
    if (rc != TD_OK)
        return rc;
    char note[400];
    decode_error_note(r, note, sizeof note);
    if (r->produced == 0 && r->decode_errors > 0)
        return fail(r, err, TD_EINPUT, "%s: undecodable audio: %s", r->path, r->last_decode_err);
    double got = seconds(r->produced);
    double expected = TRUNCATED_SHARE * r->duration - TRUNCATED_SLACK_S;
    if (r->duration > 0 && got < expected && !file_reaches(r, expected))
        return fail(r, err, TD_EINPUT, "%s: truncated: audio ends at %.1f s of %.1f s%s",
                    r->path, got, r->duration, note);
    r->state = ST_DONE;
    return TD_OK;
}

/* The demuxer failed with something other than a clean end. */
static int read_failed(td_audio_reader *r, int averr, td_error *err)
{
    char why[512];
    describe_averror(averr, why, sizeof why);
    double got = seconds(r->produced);
    if (r->duration > 0)
        return fail(r, err, rc_from_averror(averr), "%s: read error at %.1f s of %.1f s: %s",
                    r->path, got, r->duration, why);
    return fail(r, err, rc_from_averror(averr), "%s: read error at %.1f s: %s", r->path, got,
                why);
}

/* Give the decoder its next packet of our stream, or the flush packet. */
static int feed_decoder(td_audio_reader *r, td_error *err)
{
    for (;;) {
        avlog_reset();
        int ret = av_read_frame(r->fmt, r->pkt);
        if (ret == AVERROR_EOF) {
            /* avio reports a failed read() as the end of the file too; its
             * error field tells the two apart. */
            AVIOContext *pb = r->fmt->pb;
            if (pb && pb->error < 0 && pb->error != AVERROR_EOF)
                ret = pb->error;
        }
        if (ret < 0 && ret != AVERROR_EOF)
            return read_failed(r, ret, err);
        if (ret < 0) {
            ret = avcodec_send_packet(r->dec, NULL);
            if (ret < 0 && ret != AVERROR_EOF)
                return decode_error(r, ret, err);
            r->state = ST_DRAINING;
            return TD_OK;
        }
        if (r->pkt->stream_index != r->stream_index) {
            av_packet_unref(r->pkt);
            continue;
        }
        ret = avcodec_send_packet(r->dec, r->pkt);
        av_packet_unref(r->pkt);
        if (ret == AVERROR(EAGAIN))
            /* Only sent after receive_frame asked for input; cannot happen. */
            return fail(r, err, TD_EINPUT, "%s: decoder refused input at %.1f s", r->path,
                        seconds(r->produced));
        if (ret < 0)
            return decode_error(r, ret, err);
        return TD_OK;
    }
}

/* Put more samples in the (empty) fifo, or reach ST_DONE / ST_FAILED. */
static int refill(td_audio_reader *r, td_error *err)
{
    r->fifo_len = 0;
    r->fifo_pos = 0;
    while (r->fifo_len == 0) {
        if (r->state == ST_DONE)
            return TD_OK;
        if (r->state == ST_FAILED) {
            if (err)
                *err = r->failure;
            return r->failure.code;
        }
        avlog_reset();
        int ret = avcodec_receive_frame(r->dec, r->frame);
        int rc;
        if (ret == 0) {
            r->consecutive_errors = 0;
            rc = convert_frame(r, r->frame, err);
            av_frame_unref(r->frame);
        } else if (ret == AVERROR(EAGAIN)) {
            if (r->state == ST_DRAINING)
                rc = fail(r, err, TD_EINPUT, "%s: decoder did not finish", r->path);
            else
                rc = feed_decoder(r, err);
        } else if (ret == AVERROR_EOF) {
            rc = finish(r, err);
        } else {
            rc = decode_error(r, ret, err);
        }
        /* Samples that made it into the fifo before the failure (the
         * resampler's tail, say) go out first; the sticky error follows. */
        if (rc != TD_OK)
            return r->fifo_len > 0 ? TD_OK : rc;
    }
    return TD_OK;
}

/* ---- public ------------------------------------------------------------ */

long td_audio_read(td_audio_reader *r, float *out, size_t max, td_error *err)
{
    if (!r || !out || max == 0)
        return td_error_set(err, TD_EINVAL, "td_audio_read: no reader, buffer or room");
    if (max > (size_t)LONG_MAX)
        max = (size_t)LONG_MAX;
    size_t n = 0;
    while (n < max) {
        if (r->fifo_pos == r->fifo_len) {
            if (r->state == ST_DONE)
                break;
            /* Samples already copied are delivered now; the error (sticky)
             * comes with the next call, so none is lost. */
            if (r->state == ST_FAILED && n > 0)
                break;
            int rc = refill(r, n > 0 ? NULL : err);
            if (rc != TD_OK) {
                if (n > 0)
                    break;
                return rc;
            }
            continue;
        }
        size_t take = r->fifo_len - r->fifo_pos;
        if (take > max - n)
            take = max - n;
        memcpy(out + n, r->fifo + r->fifo_pos, take * sizeof *out);
        r->fifo_pos += take;
        n += take;
    }
    r->delivered += n;
    return (long)n;
}

double td_audio_duration(const td_audio_reader *r)
{
    return r ? r->duration : -1;
}

size_t td_audio_position(const td_audio_reader *r)
{
    return r ? r->delivered : 0;
}

void td_audio_close(td_audio_reader **pr)
{
    if (!pr || !*pr)
        return;
    td_audio_reader *r = *pr;
    swr_free(&r->swr);
    av_channel_layout_uninit(&r->swr_layout);
    av_frame_free(&r->frame);
    av_packet_free(&r->pkt);
    avcodec_free_context(&r->dec);
    avformat_close_input(&r->fmt);
    free(r->fifo);
    free(r->path);
    free(r);
    *pr = NULL;
}
