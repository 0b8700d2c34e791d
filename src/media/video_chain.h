/*
 * video_chain.h: restore settings, and the filter chain they and a scene's
 * analysis make.
 *
 * The chain, in this order (each step only where the preset and the
 * measurements call for it; YUV throughout, no RGB round trip):
 *   setfield (the field order the analysis found)
 *   fillborders (head-switching lines, an even count, black)
 *   convolution (chroma shifted back by the measured delay, 1/8 px)
 *   bwdif (double rate)
 *   hqdn3d (fast) or nlmeans + hqdn3d chroma (high): temporal, chroma noise
 *   lutyuv (levels stretched and white balance, both bounded)
 *   cas (light sharpening)
 *   crop to 704 wide + setsar 10:11 (480 lines) or 12:11 (576 lines)
 *   scale to 1440x1080 BT.601 -> BT.709 (--restore-size hd)
 *   limiter (legal luma 16-235; chroma as recorded), setparams (colour tags),
 *   format (what the encoder takes)
 * Temporal filters are left out for scenes too short for their window.
 */
#ifndef TD_MEDIA_VIDEO_CHAIN_H
#define TD_MEDIA_VIDEO_CHAIN_H

#include <stddef.h>

#include "media/video_analyze.h"
#include "util/error.h"

enum td_restore_preset { TD_PRESET_AUTO = 0, TD_PRESET_VHS, TD_PRESET_HI8, TD_PRESET_DV };
enum td_restore_quality { TD_QUALITY_FAST = 0, TD_QUALITY_HIGH };
enum td_restore_format { TD_RFORMAT_VIEW = 0, TD_RFORMAT_ARCHIVE, TD_RFORMAT_EDIT };
enum td_restore_size { TD_RSIZE_SD = 0, TD_RSIZE_HD };
enum td_restore_codec { TD_RCODEC_H264 = 0, TD_RCODEC_HEVC };
/* nlmeans through OpenCL: auto = on GPU workers, on = on any worker that
 * finds an OpenCL device (PoCL on a CPU), off = never. The same values
 * say where yadif_cuda deinterlaces (auto: NVIDIA GPU workers). */
enum td_restore_opencl { TD_ROPENCL_AUTO = 0, TD_ROPENCL_ON, TD_ROPENCL_OFF };

typedef struct td_restore_settings {
    enum td_restore_preset preset;
    enum td_restore_quality quality;
    enum td_restore_format format;
    enum td_restore_size size;
    enum td_restore_codec codec;     /* view only */
    int crf;                          /* view: 0 = 18 (H.264) / 20 (HEVC) */
    int subtitles;                    /* mux the scene's SRT in (set by the task) */
    enum td_restore_opencl opencl;    /* where nlmeans runs (where it ran goes in the
                                       * fingerprint: another implementation) */
    enum td_restore_opencl cuda;      /* appended: where CUDA works: NVDEC decoding,
                                       * yadif_cuda for bwdif, scale_cuda (the placements
                                       * that change bits are in the fingerprint) */
    enum td_restore_opencl vaapi;     /* appended: where VAAPI decodes (auto: Intel GPU
                                       * workers); bit-exact, so not in the fingerprint */
    enum td_restore_opencl hwenc;     /* appended: the view format's encoder on the card
                                       * (auto: NVENC on NVIDIA, VAAPI on Intel GPU workers);
                                       * where it ran goes in the fingerprint */
} td_restore_settings;

void td_restore_settings_default(td_restore_settings *s);

/* Parse one setting's value (the --restore-* options); 0 or -1. */
int td_restore_parse_preset(const char *s, enum td_restore_preset *out);
int td_restore_parse_quality(const char *s, enum td_restore_quality *out);
int td_restore_parse_format(const char *s, enum td_restore_format *out);
int td_restore_parse_size(const char *s, enum td_restore_size *out);
int td_restore_parse_codec(const char *s, enum td_restore_codec *out);
int td_restore_parse_opencl(const char *s, enum td_restore_opencl *out);

const char *td_restore_preset_name(enum td_restore_preset p);
const char *td_restore_quality_name(enum td_restore_quality q);
const char *td_restore_format_name(enum td_restore_format f);
const char *td_restore_size_name(enum td_restore_size s);
const char *td_restore_codec_name(enum td_restore_codec c);

/* A canonical text of the settings that change the output ("restore v3
 * preset=vhs ..."), the start of the settings fingerprint; into out[len]. */
void td_restore_settings_text(const td_restore_settings *s, char *out, size_t len);

/* What the chain does, decided from settings and analysis (kept for the
 * scene's restore.json). */
typedef struct td_restore_plan {
    int deinterlace;          /* bwdif at double rate */
    int tff;
    int head_switch_lines;    /* filled */
    double chroma_shift;      /* luma px moved left (the measured delay), 0 none */
    int chroma_log2_w;        /* the input's horizontal chroma subsampling */
    int chroma_log2_h;        /* and vertical */
    int temporal;             /* temporal denoise allowed (scene long enough) */
    double luma_spatial, luma_temporal, chroma_spatial, chroma_temporal; /* hqdn3d */
    double nlmeans_s;         /* > 0: nlmeans strength (high quality) */
    int opencl;               /* nlmeans through OpenCL (nlmeans_opencl); set by the caller */
    int cuda;                 /* deinterlace with yadif_cuda on a CUDA device; set by the caller */
    int cuda_scale;           /* --restore-size hd: scale_cuda on the CUDA device; set by the caller */
    int hwenc;                /* the card's encoder made the file: 1 NVENC, 2 VAAPI (placement
                               * only: the chain does not change); set by the caller */
    int hwdec;                /* frames arrive on a device (NVDEC or VAAPI decoding); set by the
                               * transcode once the first frame is decoded */
    int hwdec_cuda;           /* ... and that device is the CUDA device (yadif_cuda takes them as they are) */
    char hw_sw_fmt[24];       /* the frames' format once downloaded ("nv12") */
    double level_gain, level_offset; /* Y' = (Y - 16) * gain + 16 + offset */
    double u_shift, v_shift;  /* added to U, V */
    double cas;               /* sharpening strength, 0 none */
    int crop_w;               /* 704 or the width kept */
    int sar_num, sar_den;
    int out_w, out_h;
    int hd;
    char pix_fmt[24];         /* the encoder's format */
} td_restore_plan;

/* Decide from the analysis. frames: the scene's frame count estimate
 * (temporal filters need a few). */
void td_restore_decide(const td_restore_settings *s, const td_vanalysis *a, long frames,
                       td_restore_plan *p);

/* The libavfilter description of the plan into out[len]; TD_EINVAL if it
 * does not fit. Frames that arrive on a device (p->hwdec) stay there for
 * yadif_cuda when nothing on the CPU has to come first, and are
 * downloaded before the first CPU filter otherwise: the steps and their
 * order are the same either way, so decoding on the card changes no
 * output bit. */
int td_restore_chain(const td_restore_plan *p, int ntsc, char *out, size_t len, td_error *err);

/* Where the steps whose implementation changes output bits ran: " placed=
 * deint:bwdif,denoise:cpu,scale:cpu" style, appended to the settings text
 * to make the fingerprint (decoding is bit-exact on any decoder, so it is
 * not in it). Only steps the plan runs are listed. */
void td_restore_placement_text(const td_restore_plan *p, char *out, size_t len);

/* Whether a fingerprint recorded in a marker (had) stands for these
 * settings: the same settings text, and every GPU placement it records
 * allowed by the requested policy (--restore-cuda / --restore-opencl off
 * refuse an output made on the GPU; auto and on take either, since on a
 * machine without the device the CPU's output is the one they get). */
int td_restore_fingerprint_ok(const td_restore_settings *s, const char *had);

#define TD_RESTORE_MAX_CHAIN 2048

#endif
