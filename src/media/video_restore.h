/*
 * video_restore.h: one scene through the restore chain into a new file,
 * and the self-check of that file against its source.
 *
 *   demux -> video decode -> filter chain -> encode (x264/x265, or NVENC
 *   or VAAPI on the worker's card; FFV1, ProRes) -> mux; every audio stream copied packet for packet where the
 *   container takes its codec, else decoded and encoded losslessly (ALAC in
 *   MP4, PCM in MOV); an SRT file, if given, muxed in as a soft subtitle
 *   track (mov_text in MP4/MOV, SubRip in MKV).
 * Timestamps are carried from the source (never frames counted), so audio
 * and video keep their offsets.
 *
 * The self-check reopens both files: the video's duration within one
 * source frame, every audio stream's decoded samples identical (SHA-256
 * of the samples as 32-bit integers) and the audio-video start offset
 * unchanged; an FFV1 archive's every slice CRC is checked and its frames
 * counted as well, so a damaged stream fails the scene with the reason.
 */
#ifndef TD_MEDIA_VIDEO_RESTORE_H
#define TD_MEDIA_VIDEO_RESTORE_H

#include <stdint.h>

#include "media/video_analyze.h"
#include "media/video_chain.h"
#include "media/video_io.h"
#include "util/error.h"

typedef struct td_restore_job {
    const char *in_path;
    const char *out_path;        /* written directly: the caller makes it atomic */
    const char *muxer;           /* "mp4", "matroska", "mov" */
    const td_restore_settings *settings;
    const td_restore_plan *plan;   /* the chain is made from it once the first frame shows
                                    * where decoding happens (td_restore_chain) */
    const char *srt_path;        /* NULL: no subtitle track */
    const char *language;        /* subtitle language (ISO 639), may be NULL */
    int threads;                 /* 0: automatic */
    int desync_ms;               /* tests only: shift the audio by this much */
    td_hwdevs hw;                /* borrowed devices for the chain's hardware filters */
    enum td_hwenc {
        TD_HWENC_NONE,           /* x264 / x265 (the view format), FFV1, ProRes */
        TD_HWENC_NVENC,          /* h264_nvenc / hevc_nvenc on hwenc_dev (a CUDA device;
                                  * NULL: the first CUDA device the worker sees) */
        TD_HWENC_VAAPI,          /* h264_vaapi / hevc_vaapi on hwenc_dev (a VAAPI device) */
    } hwenc;                     /* appended: the view format's encoder on the card; where
                                  * it cannot open, the CPU's, with the reason in
                                  * stats.encode_on */
    struct AVBufferRef *hwenc_dev; /* borrowed */
    td_vprogress_fn progress;    /* frames decoded; non-zero stops */
    void *user;
} td_restore_job;

typedef struct td_restore_stats {
    int64_t frames_in, frames_out;
    double seconds_decode, seconds_filter, seconds_encode, seconds_total;
    int audio_streams;
    char audio_mode[64];         /* "copy aac", "alac (from pcm_s16le)", "none" */
    char encoder[32];
    char encode_on[240];         /* "cpu", "nvenc" / "vaapi", or "cpu (why the card's encoder could not)" */
    char decode_on[200];         /* "cpu", "cuda" / "vaapi", or "cpu (why the device could not)" */
    char chain[TD_RESTORE_MAX_CHAIN]; /* the filter chain that ran */
} td_restore_stats;

int td_restore_transcode(const td_restore_job *job, td_restore_stats *st, td_error *err);

typedef struct td_selfcheck {
    double src_duration, out_duration, frame_seconds;
    double src_offset, out_offset;      /* first video - first audio, seconds */
    int audio_streams;
    int64_t src_samples, out_samples;   /* first audio stream */
    char src_audio_sha[65], out_audio_sha[65];
    int64_t out_frames;                 /* FFV1 archives: frames whose slices all check out */
    int ok;
    char why[256];                      /* the first failed check */
} td_selfcheck;

/* TD_OK with r->ok set or cleared; an error only when a file cannot be read. */
int td_restore_selfcheck(const char *src, const char *out, td_selfcheck *r, td_error *err);

#endif
