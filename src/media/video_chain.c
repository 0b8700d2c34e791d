/* video_chain.c: restore decisions and their filter chain (see
 * video_chain.h). The numbers here are the presets' strengths; each is
 * bounded so that a bad measurement can only do a little harm. */
#include "media/video_chain.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <libavutil/pixdesc.h>

void td_restore_settings_default(td_restore_settings *s)
{
    memset(s, 0, sizeof *s);
}

static int lookup(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

static const char *const preset_names[] = {"auto", "vhs", "hi8", "dv"};
static const char *const quality_names[] = {"fast", "high"};
static const char *const format_names[] = {"view", "archive", "edit"};
static const char *const size_names[] = {"sd", "hd"};
static const char *const codec_names[] = {"h264", "hevc"};
static const char *const opencl_names[] = {"auto", "on", "off"};

#define PARSER(fn, type, names)                                                                    \
    int fn(const char *s, type *out)                                                              \
    {                                                                                              \
        int i = lookup(s, names, (int)(sizeof names / sizeof names[0]));                           \
        if (i < 0)                                                                                 \
            return -1;                                                                             \
        *out = (type)i;                                                                            \
        return 0;                                                                                  \
    }
PARSER(td_restore_parse_preset, enum td_restore_preset, preset_names)
PARSER(td_restore_parse_quality, enum td_restore_quality, quality_names)
PARSER(td_restore_parse_format, enum td_restore_format, format_names)
PARSER(td_restore_parse_size, enum td_restore_size, size_names)
PARSER(td_restore_parse_codec, enum td_restore_codec, codec_names)
PARSER(td_restore_parse_opencl, enum td_restore_opencl, opencl_names)

const char *td_restore_preset_name(enum td_restore_preset p) { return preset_names[p]; }
const char *td_restore_quality_name(enum td_restore_quality q) { return quality_names[q]; }
const char *td_restore_format_name(enum td_restore_format f) { return format_names[f]; }
const char *td_restore_size_name(enum td_restore_size s) { return size_names[s]; }
const char *td_restore_codec_name(enum td_restore_codec c) { return codec_names[c]; }

/* Bump when the chain or the encoders' settings change in a way that
 * changes outputs: every scene is then redone. */
#define CHAIN_VERSION 2

void td_restore_settings_text(const td_restore_settings *s, char *out, size_t len)
{
    snprintf(out, len, "restore v%d preset=%s quality=%s format=%s size=%s codec=%s crf=%d subtitles=%d",
             CHAIN_VERSION, preset_names[s->preset], quality_names[s->quality], format_names[s->format],
             size_names[s->size], s->format == TD_RFORMAT_VIEW ? codec_names[s->codec] : "-", s->crf,
             s->subtitles);
}

static double clampd(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Per preset: how hard to denoise relative to the measured noise, and
 * which analog fixes apply. DV is digital from the head on: no chroma
 * delay, no head-switching band; its field order still comes from the
 * analysis. */
typedef struct preset_params {
    double denoise;      /* multiplier of the measured sigma */
    double chroma;       /* chroma denoise relative to luma */
    int analog;          /* chroma delay and head-switching fixes */
    double cas;
} preset_params;

static const preset_params presets[] = {
    [TD_PRESET_AUTO] = {1.0, 1.2, 1, 0.15},
    [TD_PRESET_VHS] = {1.2, 1.5, 1, 0.20},
    [TD_PRESET_HI8] = {1.0, 1.2, 1, 0.15},
    [TD_PRESET_DV] = {0.6, 1.0, 0, 0.10},
};

/* Temporal filters need a few frames each side; shorter scenes get the
 * spatial parts only (and never a filter that waits for a window). */
#define MIN_TEMPORAL_FRAMES 8

void td_restore_decide(const td_restore_settings *s, const td_vanalysis *a, long frames,
                       td_restore_plan *p)
{
    memset(p, 0, sizeof *p);
    const preset_params *pp = &presets[s->preset];
    p->deinterlace = a->interlaced;
    const AVPixFmtDescriptor *d = av_pix_fmt_desc_get(av_get_pix_fmt(a->pix_fmt));
    p->chroma_log2_w = d ? d->log2_chroma_w : 1;
    p->chroma_log2_h = d ? d->log2_chroma_h : 1;
    p->tff = a->tff;
    if (pp->analog) {
        p->head_switch_lines = a->head_switch_lines;
        /* A weak correlation peak means no usable edges: leave chroma be.
         * Less than a quarter pixel is below what matters. */
        if (a->chroma_peak >= 0.2 && fabs(a->chroma_delay) >= 0.25)
            p->chroma_shift = clampd(a->chroma_delay, -TD_CHROMA_MAX_SHIFT, TD_CHROMA_MAX_SHIFT);
    }
    p->temporal = frames >= MIN_TEMPORAL_FRAMES;

    /* Levels: map the robust range (0.5 % - 99.5 %) to 16-235 when it is
     * clearly compressed (washed out, dark: a stretch of more than 1.2) or
     * past the legal range; the gain is bounded to 0.8 - 2.0. A picture
     * whose darkest and brightest parts are simply not black and white
     * (a grey sky) keeps its levels. */
    p->level_gain = 1;
    p->level_offset = 0;
    double lo = a->y_p005, hi = a->y_p995;
    if (hi - lo >= 40 && (219.0 / (hi - lo) > 1.2 || lo < 12 || hi > 240)) {
        double gain = clampd(219.0 / (hi - lo), 0.8, 2.0);
        /* Y' = (Y - 16) * gain + 16 + offset maps lo to 16. */
        p->level_gain = gain;
        p->level_offset = -(lo - 16) * gain;
    }
    /* White balance from near-grey samples, only with enough of them and
     * a clear cast (near-grey parts of a scene are rarely exactly
     * neutral), at most 10 steps each way. */
    if (a->grey_fraction >= 0.02) {
        if (fabs(a->grey_u) >= 4)
            p->u_shift = clampd(-a->grey_u, -10, 10);
        if (fabs(a->grey_v) >= 4)
            p->v_shift = clampd(-a->grey_v, -10, 10);
    }
    /* Denoise for the noise as it will be seen: after the level stretch
     * (which amplifies it by the gain). Sharpen only what is clean enough
     * not to sharpen the noise left over. */
    double sigma = clampd(a->noise_sigma * p->level_gain, 0, 20) * pp->denoise;
    p->luma_spatial = clampd(1.4 * sigma, 0.01, 10);
    p->luma_temporal = p->temporal ? clampd(1.2 * sigma, 0.01, 12) : 0.01;
    p->chroma_spatial = clampd(p->luma_spatial * pp->chroma, 0.01, 12);
    p->chroma_temporal = p->temporal ? clampd(p->luma_temporal * pp->chroma, 0.01, 18) : 0.01;
    if (s->quality == TD_QUALITY_HIGH && sigma >= 0.5)
        p->nlmeans_s = clampd(0.75 * sigma, 1, 12);
    p->cas = clampd(pp->cas * (1 - sigma / 4), 0, 1);

    int w = a->width;
    p->crop_w = w == 720 ? 704 : w;
    int lines = a->height;
    if (lines == 480 || lines == 486) {
        p->sar_num = 10;
        p->sar_den = 11;
    } else if (lines == 576) {
        p->sar_num = 12;
        p->sar_den = 11;
    } else {
        p->sar_num = a->sar_num;
        p->sar_den = a->sar_den;
    }
    p->hd = s->size == TD_RSIZE_HD;
    p->out_w = p->hd ? 1440 : p->crop_w;
    p->out_h = p->hd ? 1080 : a->height;
    switch (s->format) {
    case TD_RFORMAT_EDIT: snprintf(p->pix_fmt, sizeof p->pix_fmt, "yuv422p10le"); break;
    case TD_RFORMAT_ARCHIVE:
        /* FFV1 keeps whatever subsampling came in (DV's 4:1:1 too). */
        snprintf(p->pix_fmt, sizeof p->pix_fmt, "%s",
                 strncmp(a->pix_fmt, "yuvj", 4) == 0 ? "yuv422p" : a->pix_fmt);
        break;
    default: snprintf(p->pix_fmt, sizeof p->pix_fmt, "yuv420p"); break;
    }
}

typedef struct sbuf {
    char *p;
    size_t len, used;
    int overflow;
} sbuf;

static void add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (b->used && b->used < b->len)
        b->p[b->used++] = ',';
    int n = b->used < b->len ? vsnprintf(b->p + b->used, b->len - b->used, fmt, ap) : -1;
    va_end(ap);
    if (n < 0 || (size_t)n >= b->len - b->used)
        b->overflow = 1;
    else
        b->used += (size_t)n;
}

/* A 1-D kernel that moves a chroma row left by d chroma samples (linear
 * interpolation in eighths): out[x] = in[x + d]. */
static void shift_kernel(double d, char *out, size_t len)
{
    const int R = 8; /* 17 taps: up to 8 chroma samples (16 luma px) */
    int w[17] = {0};
    double e = round(d * 8) / 8;
    int i0 = (int)floor(e);
    int frac = (int)round((e - i0) * 8);
    if (i0 + R >= 0 && i0 + R <= 16)
        w[i0 + R] = 8 - frac;
    if (frac && i0 + 1 + R >= 0 && i0 + 1 + R <= 16)
        w[i0 + 1 + R] = frac;
    size_t used = 0;
    for (int k = 0; k < 17 && used < len; k++)
        used += (size_t)snprintf(out + used, len - used, "%s%d", k ? " " : "", w[k]);
}

/* The format frames come down from a device in, and the planar one the
 * CPU filters take: NVDEC and VAAPI hand 8-bit 4:2:0 over as NV12, whose
 * samples are the same as yuv420p's, only interleaved. */
static void download(sbuf *b, const td_restore_plan *p, int *on_card)
{
    if (!*on_card)
        return;
    const char *f = p->hw_sw_fmt[0] ? p->hw_sw_fmt : "nv12";
    if (strcmp(f, "nv12") == 0)
        add(b, "hwdownload,format=nv12,format=yuv420p");
    else
        add(b, "hwdownload,format=%s", f);
    *on_card = 0;
}

int td_restore_chain(const td_restore_plan *p, int ntsc, char *out, size_t len, td_error *err)
{
    sbuf b = {out, len, 0, 0};
    if (len)
        out[0] = '\0';
    /* Frames decoded on a card stay there only for yadif_cuda, and only
     * when no CPU step comes before it. */
    int on_card = p->hwdec != 0;
    int cpu_first = p->head_switch_lines > 0 || p->chroma_shift != 0;
    if (on_card && !(p->hwdec_cuda && p->deinterlace && p->cuda && !cpu_first))
        download(&b, p, &on_card);
    /* setfield only tags the frames; the deinterlacers below are told
     * the parity outright, so on the card it is left out. */
    if (p->deinterlace && !on_card)
        add(&b, "setfield=%s", p->tff ? "tff" : "bff");
    if (p->head_switch_lines > 0)
        add(&b, "fillborders=bottom=%d:mode=fixed:color=black", p->head_switch_lines);
    if (p->chroma_shift != 0) {
        /* The kernel works in chroma samples: half as many across as
         * luma in 4:2:0 and 4:2:2, a quarter in 4:1:1. */
        char k[128];
        shift_kernel(p->chroma_shift / (double)(1 << p->chroma_log2_w), k, sizeof k);
        add(&b, "convolution=0m='0 0 0 0 1 0 0 0 0':1m='%s':1rdiv=0.125:1mode=row:2m='%s':2rdiv=0.125:2mode=row",
            k, k);
    }
    if (p->deinterlace && p->cuda && on_card) {
        add(&b, "yadif_cuda=mode=send_field:parity=%s:deint=all", p->tff ? "tff" : "bff");
        download(&b, p, &on_card);
    } else if (p->deinterlace && p->cuda) {
        /* yadif_cuda takes 4:2:0 and 4:4:4; 4:2:2 and 4:1:1 go up to
         * 4:4:4 (in YUV), the final format brings the target back. */
        const char *f = p->chroma_log2_w == 1 && p->chroma_log2_h == 1 ? "yuv420p" : "yuv444p";
        add(&b, "format=%s,hwupload,yadif_cuda=mode=send_field:parity=%s:deint=all,hwdownload,format=%s", f,
            p->tff ? "tff" : "bff", f);
    } else if (p->deinterlace)
        add(&b, "bwdif=mode=send_field:parity=%s:deint=all", p->tff ? "tff" : "bff");
    download(&b, p, &on_card);
    if (p->nlmeans_s > 0 && p->opencl) {
        /* nlmeans_opencl takes 4:2:0 and 4:4:4, not 4:2:2: go through
         * 4:4:4 (YUV still; the final format brings the target back). */
        add(&b, "format=yuv444p,hwupload,nlmeans_opencl=s=%.2f:p=7:r=9,hwdownload,format=yuv444p", p->nlmeans_s);
        add(&b, "hqdn3d=luma_spatial=0.01:chroma_spatial=%.2f:luma_tmp=0.01:chroma_tmp=%.2f",
            p->chroma_spatial, p->chroma_temporal);
    } else if (p->nlmeans_s > 0) {
        add(&b, "nlmeans=s=%.2f:p=7:r=9", p->nlmeans_s);
        add(&b, "hqdn3d=luma_spatial=0.01:chroma_spatial=%.2f:luma_tmp=0.01:chroma_tmp=%.2f",
            p->chroma_spatial, p->chroma_temporal);
    } else {
        add(&b, "hqdn3d=luma_spatial=%.2f:chroma_spatial=%.2f:luma_tmp=%.2f:chroma_tmp=%.2f", p->luma_spatial,
            p->chroma_spatial, p->luma_temporal, p->chroma_temporal);
    }
    if (p->level_gain != 1 || p->level_offset != 0 || p->u_shift != 0 || p->v_shift != 0) {
        add(&b, "lutyuv=y='clip((val-16)*%.4f+16+%.2f,0,255)':u='clip(val+%.2f,0,255)':v='clip(val+%.2f,0,255)'",
            p->level_gain, p->level_offset, p->u_shift, p->v_shift);
    }
    if (p->cas > 0)
        add(&b, "cas=strength=%.2f:planes=1", p->cas);
    if (p->crop_w != 0)
        add(&b, "crop=%d:ih:(iw-%d)/2:0", p->crop_w, p->crop_w);
    if (p->hd && p->cuda_scale) {
        /* scale_cuda resizes but knows no colour matrices: BT.601 to
         * BT.709 on the CPU at SD size first, then up to the card (4:2:0
         * or 4:4:4, the formats it takes) and back. */
        const char *f = p->chroma_log2_w == 1 && p->chroma_log2_h == 1 && !(p->nlmeans_s > 0 && p->opencl)
                            ? "yuv420p" : "yuv444p";
        add(&b, "scale=iw:ih:in_color_matrix=bt601:out_color_matrix=bt709,format=%s,hwupload,"
                "scale_cuda=w=%d:h=%d:interp_algo=lanczos,hwdownload,format=%s", f, p->out_w, p->out_h, f);
        add(&b, "setsar=1");
    } else if (p->hd) {
        add(&b, "scale=%d:%d:in_color_matrix=bt601:out_color_matrix=bt709:flags=lanczos", p->out_w, p->out_h);
        add(&b, "setsar=1");
    } else {
        add(&b, "setsar=%d/%d", p->sar_num, p->sar_den);
    }
    /* Luma to the legal range; chroma is left as recorded (clipping it
     * would desaturate the strong colours cameras do record). */
    add(&b, "limiter=min=16:max=235:planes=1");
    if (p->hd)
        add(&b, "setparams=field_mode=prog:range=tv:color_primaries=bt709:color_trc=bt709:colorspace=bt709");
    else if (ntsc)
        add(&b, "setparams=field_mode=prog:range=tv:color_primaries=smpte170m:color_trc=smpte170m:"
                "colorspace=smpte170m");
    else
        add(&b, "setparams=field_mode=prog:range=tv:color_primaries=bt470bg:color_trc=bt470bg:"
                "colorspace=bt470bg");
    add(&b, "format=%s", p->pix_fmt);
    if (b.overflow)
        return td_error_set(err, TD_EINVAL, "filter chain longer than %zu bytes", len);
    return TD_OK;
}

void td_restore_placement_text(const td_restore_plan *p, char *out, size_t len)
{
    sbuf b = {out, len, 0, 0};
    if (len)
        out[0] = '\0';
    if (p->deinterlace)
        add(&b, "deint:%s", p->cuda ? "cuda" : "cpu");
    if (p->nlmeans_s > 0)
        add(&b, "nlmeans:%s", p->opencl ? "opencl" : "cpu");
    if (p->hd)
        add(&b, "scale:%s", p->cuda_scale ? "cuda" : "cpu");
    if (p->hwenc) /* only then: files encoded on the CPU keep their fingerprints */
        add(&b, "enc:%s", p->hwenc == 1 ? "nvenc" : "vaapi");
    if (!b.used && len > 1)
        snprintf(out, len, "-");
}

int td_restore_fingerprint_ok(const td_restore_settings *s, const char *had)
{
    char want[256];
    td_restore_settings_text(s, want, sizeof want);
    size_t n = strlen(want);
    if (!had || strncmp(had, want, n) != 0)
        return 0;
    const char *rest = had + n;
    if (*rest == '\0') {
        /* Written before placements were recorded: where it ran is not
         * known, so it stands only where any placement would. */
        return s->cuda != TD_ROPENCL_OFF && s->opencl != TD_ROPENCL_OFF && s->hwenc != TD_ROPENCL_OFF;
    }
    if (strncmp(rest, " placed=", 8) != 0)
        return 0;
    rest += 8;
    if (s->cuda == TD_ROPENCL_OFF && (strstr(rest, "deint:cuda") || strstr(rest, "scale:cuda")))
        return 0;
    if (s->opencl == TD_ROPENCL_OFF && strstr(rest, "nlmeans:opencl"))
        return 0;
    if (s->hwenc == TD_ROPENCL_OFF && strstr(rest, "enc:"))
        return 0;
    return 1;
}
