/*
 * video_score.h: picture measures the restore tests and benchmarks score
 * outputs with (SSIM comes from libavfilter's ssim filter, run by the
 * tests through the ffmpeg command line: an independent reference).
 */
#ifndef TD_MEDIA_VIDEO_SCORE_H
#define TD_MEDIA_VIDEO_SCORE_H

#include <stdint.h>

#include "util/error.h"

/* Mean gradient energy of an 8-bit plane: the mean over pixels of
 * dx^2 + dy^2 (forward differences). Detail that survives restoration
 * keeps it near the clean picture's; over-smoothing lowers it, noise and
 * over-sharpening raise it. */
double td_grad_energy(const uint8_t *p, int stride, int w, int h);

/* Samples of an 8-bit luma plane inside the legal range 16-235. */
int64_t td_legal_luma(const uint8_t *p, int stride, int w, int h);

typedef struct td_vscore {
    int64_t frames;
    double grad_energy;        /* luma, mean over frames */
    double legal_fraction;     /* luma samples in 16-235 */
    int width, height;
} td_vscore;

/* Decode a file's video (8-bit planar formats, through a format filter)
 * and measure every frame. */
int td_vscore_file(const char *path, td_vscore *s, td_error *err);

#endif
