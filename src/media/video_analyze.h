/*
 * video_analyze.h: the restore task's analysis pass over one scene.
 *
 * It decodes TD_VANALYZE_MAX_FRAMES frames once: the first ones of a short
 * scene, or TD_VANALYZE_WINDOWS windows spread from the start to the end
 * of a longer one (each window with fresh filters), and measures, from
 * the pictures (never trusting the container's flags):
 *   - interlacing and field order: libavfilter's idet (multi-frame votes),
 *     plus a parity trial: each window's first frames bobbed with bwdif as
 *     top field first and as bottom field first; the wrong parity plays
 *     fields out of order, so its motion is jerkier (larger frame-to-frame
 *     change). Interlacing and parity show only where something moves, so
 *     each window gives its own verdict: one interlaced window makes the
 *     scene interlaced, and the windows whose trial clearly chose a
 *     parity decide it by majority;
 *   - head-switching lines: rows at the bottom that differ from the row two
 *     above (same field) far more than the picture's rows typically do;
 *   - blanking: cropdetect's box (the union of the windows' boxes);
 *   - chroma delay against luma: cross-correlation of the horizontal edge
 *     strength of luma and (upsampled) chroma, sub-pixel by a parabola
 *     through the peak;
 *   - levels: signalstats' per-frame figures averaged, and robust luma
 *     percentiles (0.5 % and 99.5 %) from a histogram of the central area;
 *     white balance from near-grey pixels;
 *   - noise: sigma of luma noise from the quietest blocks' response to a
 *     Laplacian over same-field rows (Immerkaer's operator).
 * The pure measurement helpers are exported for the unit tests.
 */
#ifndef TD_MEDIA_VIDEO_ANALYZE_H
#define TD_MEDIA_VIDEO_ANALYZE_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

#define TD_VANALYZE_MAX_FRAMES 240
#define TD_VANALYZE_TRIAL_FRAMES 60   /* one window; several share twice as many */
#define TD_VANALYZE_WINDOWS 4
#define TD_CHROMA_MAX_SHIFT 12     /* luma pixels searched either way */

typedef struct td_vanalysis {
    /* the stream */
    int width, height;
    char pix_fmt[32];
    char codec[32];
    double fps;                 /* frames per second of the input */
    int sar_num, sar_den;
    double duration;            /* seconds, container's; -1 unknown */
    int64_t frames_analyzed;
    int windows;                /* stretches of the scene read (1: from the start) */
    /* interlacing */
    char flagged_order[16];     /* what the stream says: tff bff progressive unknown */
    long idet_tff, idet_bff, idet_progressive, idet_undetermined;
    double trial_tff, trial_bff;/* mean luma change between bobbed frames */
    int trial_frames;           /* frames the trial saw */
    int trial_votes_tff, trial_votes_bff; /* windows whose trial clearly chose each order */
    int windows_interlaced;     /* windows idet found interlaced (more tff+bff than progressive) */
    int interlaced;
    int tff;                    /* field order used when interlaced */
    char order_source[48];      /* "parity-trial", "idet", "stream-flag", "default" */
    /* head-switching */
    int head_switch_lines;      /* even; 0 none */
    double head_switch_ratio;   /* worst bottom row's difference / the picture's typical */
    /* blanking */
    int crop_x, crop_y, crop_w, crop_h;
    /* chroma delay: positive = chroma lags (drawn to the right of luma) */
    double chroma_delay;        /* luma pixels */
    double chroma_peak;         /* normalised correlation at the peak, 0..1 */
    /* levels */
    double ymin, ylow, yavg, yhigh, ymax, uavg, vavg, satavg; /* signalstats averages */
    double y_p005, y_p995;      /* luma 0.5 % / 99.5 % percentiles */
    double grey_u, grey_v;      /* mean chroma offset of near-grey pixels */
    double grey_fraction;       /* share of samples counted as near-grey */
    /* noise */
    double noise_sigma;         /* luma, 8-bit units */
} td_vanalysis;

/* Progress callback: frames decoded so far; non-zero stops (TD_EABORT). */
typedef int (*td_vprogress_fn)(void *user, int64_t frames);

int td_video_analyze(const char *path, int threads, td_vanalysis *a, td_vprogress_fn progress,
                     void *user, td_error *err);

/* ---- measurement helpers (8-bit planes; stride in bytes) ---- */

/* Accumulates the correlation of |d/dx luma| with |d/dx chroma| for
 * shifts -TD_CHROMA_MAX_SHIFT..+TD_CHROMA_MAX_SHIFT luma pixels, over the
 * rows of one plane pair. Chroma is cw wide (w >> log2 subsampling) and is
 * upsampled to w: left-sited (MPEG-2, H.264 and DV's default) unless
 * center_sited (MPEG-1, JPEG), where chroma sample i lies between luma
 * pixels. */
typedef struct td_chroma_corr {
    double sum[2 * TD_CHROMA_MAX_SHIFT + 1];
    double norm_y, norm_c;      /* sums of squares, for the normalised peak */
    long rows;
} td_chroma_corr;

void td_chroma_corr_add(td_chroma_corr *cc, const uint8_t *y, int ystride, const uint8_t *c,
                        int cstride, int w, int h, int log2_cw, int log2_ch, int center_sited);
/* The delay (luma px, positive = chroma lags) and the normalised peak. */
void td_chroma_corr_result(const td_chroma_corr *cc, double *delay, double *peak);

/* Noise sigma of one luma plane (same-field Laplacian, quietest 10 % of
 * 8x8 blocks). */
double td_noise_sigma(const uint8_t *y, int stride, int w, int h);

/* Per-row difference against the row two above (mean absolute), for rows
 * [h - n, h) into out[0..n); and the median of the same measure over the
 * middle half of the picture into *typical. */
void td_row_diffs(const uint8_t *y, int stride, int w, int h, int n, double *out, double *typical);

/* From averaged bottom-row differences (rows h-n..h-1) and the typical
 * row difference: the head-switching line count (even, 0 if none) and
 * the worst ratio. */
int td_head_switch_lines(const double *diffs, int n, double typical, double *ratio);

/* Mean absolute luma change between two frames (every second sample). */
double td_frame_change(const uint8_t *a, int astride, const uint8_t *b, int bstride, int w, int h);

#endif
