/*
 * video_io.h: a scene's video, decoded, and libavfilter graphs to run it
 * through; the restore task's analysis and transcode are both built on it.
 *
 *   td_vinput: demuxer + decoder of the first (default) video stream. It
 *   hands out decoded frames and, if asked, the other streams' packets
 *   untouched (for copying audio). Decoding is strict: a packet the decoder
 *   rejects, a frame it flags corrupt, or a read error mid-file is TD_EINPUT
 *   naming the time, never a silently patched picture.
 *
 *   With a hardware device (td_vinput_open_hw), the decoder decodes on it
 *   where libavcodec has a hardware path for the stream (NVDEC through
 *   CUDA, VAAPI) and on the CPU otherwise, with the reason kept in
 *   hw_why. td_vinput_prime decodes the first frame ahead (queueing the
 *   other streams' packets read meanwhile), so a graph can be built for
 *   the frames as they really come: on the card or in memory.
 *
 *   td_vgraph: one filter graph "buffer -> DESC -> buffersink" fed with the
 *   input's frames. Frames keep their timestamps (the graph's time base
 *   is the stream's; rate-doubling filters change it, td_vgraph_time_base
 *   says to what).
 *
 * Ownership: td_vinput_open / td_vgraph_create allocate; the *_free
 * functions free and set the pointer to NULL. Frames passed in stay the
 * caller's (references are taken); frames filled are the caller's to unref.
 */
#ifndef TD_MEDIA_VIDEO_IO_H
#define TD_MEDIA_VIDEO_IO_H

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/frame.h>

#include "util/error.h"

typedef struct td_vinput {
    AVFormatContext *fmt;
    AVCodecContext *dec;
    int vindex;              /* the video stream's index in fmt */
    AVStream *vst;
    const char *path;        /* borrowed */
    int64_t frames;          /* decoded so far */
    int eof_sent;            /* the decoder has been flushed */
    int demux_eof;
    int want_other;          /* hand out the other streams' packets */
    AVPacket *pkt;
    /* hardware decoding (td_vinput_open_hw) */
    enum AVPixelFormat hw_fmt;      /* the device's frame format; AV_PIX_FMT_NONE: none asked */
    int hw_used;                    /* the primed frame came out on the device */
    char hw_why[160];               /* why decoding is on the CPU after all ("" if it is not) */
    /* td_vinput_prime: the first frame and the packets read before it */
    AVFrame *held;
    AVPacket **queue;
    int queue_n, queue_head;
} td_vinput;

/* threads: decoder threads (0 = libavcodec's choice). */
int td_vinput_open(const char *path, int threads, td_vinput **out, td_error *err);
/* td_vinput_open, decoding on hwdev (an AVBufferRef of an
 * AVHWDeviceContext, borrowed; the decoder takes its own reference) where
 * libavcodec can for this stream; decoder threads are then 1. */
int td_vinput_open_hw(const char *path, int threads, struct AVBufferRef *hwdev, td_vinput **out,
                      td_error *err);
void td_vinput_free(td_vinput **in);

/* Decode the first video frame ahead; after it in->hw_used and
 * in->hw_why say where decoding happens. TD_EINPUT if the stream has
 * no frame. Packets of other streams read meanwhile are queued (at most
 * TD_VINPUT_MAX_QUEUE) and handed out first by td_vinput_read. */
#define TD_VINPUT_MAX_QUEUE 4096
int td_vinput_prime(td_vinput *in, td_error *err);

enum { TD_VREAD_EOF = 0, TD_VREAD_FRAME = 1, TD_VREAD_PACKET = 2 };

/* Next decoded video frame into frame (TD_VREAD_FRAME; pts set from the
 * best-effort timestamp), or, when in->want_other is set, a packet of
 * another stream into *other (TD_VREAD_PACKET; the caller frees it with
 * av_packet_free), or TD_VREAD_EOF, or a negative td_rc. */
int td_vinput_read(td_vinput *in, AVFrame *frame, AVPacket **other, td_error *err);

/* Seek so that the next frames read are those from `seconds` after the
 * stream's start (from the keyframe before: frames earlier than that
 * come first; the caller skips them). Drops whatever td_vinput_prime
 * held. TD_EINPUT if the file cannot seek. */
int td_vinput_seek(td_vinput *in, double seconds, td_error *err);

/* Frame duration in the stream's time base from its frame rate (>= 1). */
int64_t td_vinput_frame_ticks(const td_vinput *in);
/* Container's duration of the video in seconds, or -1. */
double td_vinput_duration(const td_vinput *in);

typedef struct td_vgraph td_vgraph;

/* A graph for frames like the input's (size, format, SAR, time base, rate).
 * desc is a libavfilter description of a single-input single-output chain
 * ("null" for none). threads: filter threads (0 = automatic). */
int td_vgraph_create(const td_vinput *in, const char *desc, int threads, td_vgraph **out,
                     td_error *err);
/* Hardware devices for a graph (AVBufferRefs of AVHWDeviceContexts,
 * borrowed: each filter takes its own reference): *_opencl filters get
 * opencl, *_cuda filters cuda, and each hwupload the device of the next
 * hardware filter in the chain. */
typedef struct td_hwdevs {
    struct AVBufferRef *opencl;
    struct AVBufferRef *cuda;
    struct AVBufferRef *decode;  /* appended: decode on this device where libavcodec can (NULL: CPU) */
} td_hwdevs;

/* td_vgraph_create with hardware devices (hw may be NULL). A primed input
 * whose frames come out on a device gets a graph whose source takes them
 * as they are (its frames context). */
int td_vgraph_create_hw(const td_vinput *in, const char *desc, int threads, const td_hwdevs *hw,
                        td_vgraph **out, td_error *err);
void td_vgraph_free(td_vgraph **g);

/* Push one frame (NULL: end of stream). */
int td_vgraph_push(td_vgraph *g, AVFrame *frame, td_error *err);
/* Pull one filtered frame: 1 got one, 0 none until more input is pushed,
 * 2 the graph has ended; or a negative td_rc. */
int td_vgraph_pull(td_vgraph *g, AVFrame *frame, td_error *err);

AVRational td_vgraph_time_base(const td_vgraph *g);
/* The configured output end, for the encoder's size, format and SAR. */
struct AVFilterContext *td_vgraph_sink(const td_vgraph *g);
AVRational td_vgraph_frame_rate(const td_vgraph *g);

/* "av error text" for an AVERROR code, into buf. */
const char *td_averr(int code, char *buf, size_t len);

#endif
