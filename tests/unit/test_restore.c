/*
 * test_restore.c: unit tests for the restore task's pieces that need no
 * media file: the measurement helpers of media/video_analyze.c on
 * synthetic planes with known answers (chroma delay, noise, head-switching
 * lines), the decisions and chain of media/video_chain.c (presets, guards,
 * bounds; each chain parsed by libavfilter), video_score.c's measures, the
 * task list and restore options (task/task.c), the options parser and the
 * settings fingerprint in the marker (archive/marker.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libavfilter/avfilter.h>

#include "archive/marker.h"
#include "archive/scan.h"
#include "media/video_analyze.h"
#include "media/video_chain.h"
#include "media/video_score.h"
#include "run/options.h"
#include "task/restore.h"
#include "task/task.h"

/* A deterministic generator (xorshift) so failures reproduce. */
static uint32_t rng = 12345;
static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

/* Approximately Gaussian noise of the given sigma (sum of 12 uniforms). */
static double gauss(double sigma)
{
    double s = 0;
    for (int i = 0; i < 12; i++)
        s += (next_rand() & 0xffff) / 65536.0;
    return (s - 6.0) * sigma;
}

static uint8_t clip8(double v)
{
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)lrint(v);
}

/* A textured luma plane: edges at random places, smooth in between. */
static void textured(uint8_t *y, int w, int h)
{
    for (int r = 0; r < h; r++) {
        double v = 128;
        for (int x = 0; x < w; x++) {
            if (next_rand() % 9 == 0)
                v = 30 + next_rand() % 190;
            y[r * w + x] = (uint8_t)v;
        }
    }
}

/* ---- chroma delay ------------------------------------------------------ */

/* Chroma made from the luma's edges, moved right by delay luma pixels and
 * subsampled 2:1 co-sited (left), must read back as that delay. */
static void check_delay(double delay, int center)
{
    const int w = 256, h = 32, cw = w / 2;
    uint8_t *y = malloc((size_t)w * h), *c = malloc((size_t)cw * h);
    assert_non_null(y);
    assert_non_null(c);
    textured(y, w, h);
    for (int r = 0; r < h; r++) {
        for (int i = 0; i < cw; i++) {
            /* chroma sample i sits at luma x = 2i (+0.5 when center-sited);
             * it shows the luma at x - delay */
            double x = 2.0 * i + (center ? 0.5 : 0.0) - delay;
            int x0 = (int)floor(x);
            double t = x - x0;
            int a = x0 < 0 ? 0 : x0 >= w ? w - 1 : x0, b = x0 + 1 < 0 ? 0 : x0 + 1 >= w ? w - 1 : x0 + 1;
            c[r * cw + i] = clip8(255 - ((1 - t) * y[r * w + a] + t * y[r * w + b]));
        }
    }
    td_chroma_corr cc;
    memset(&cc, 0, sizeof cc);
    td_chroma_corr_add(&cc, y, w, c, cw, w, h, 1, 0, center);
    double d, peak;
    td_chroma_corr_result(&cc, &d, &peak);
    if (fabs(d - delay) > 0.5 || peak < 0.3)
        fail_msg("delay %.2f (center %d): measured %.2f, peak %.2f", delay, center, d, peak);
    free(y);
    free(c);
}

static void test_chroma_delay(void **state)
{
    (void)state;
    const double delays[] = {0, 1, 2.5, 3, -2, 5.5, 8};
    for (size_t i = 0; i < sizeof delays / sizeof delays[0]; i++) {
        check_delay(delays[i], 0);
        check_delay(delays[i], 1);
    }
}

static void test_chroma_delay_no_edges(void **state)
{
    (void)state;
    /* Flat planes: no correlation, no delay claimed. */
    uint8_t y[256 * 4], c[128 * 4];
    memset(y, 100, sizeof y);
    memset(c, 128, sizeof c);
    td_chroma_corr cc;
    memset(&cc, 0, sizeof cc);
    td_chroma_corr_add(&cc, y, 256, c, 128, 256, 4, 1, 0, 0);
    double d, peak;
    td_chroma_corr_result(&cc, &d, &peak);
    assert_true(d == 0 && peak == 0);
    /* Too narrow for the search: ignored, not read out of bounds. */
    memset(&cc, 0, sizeof cc);
    td_chroma_corr_add(&cc, y, 16, c, 8, 16, 4, 1, 0, 0);
    assert_int_equal(cc.rows, 0);
}

/* ---- noise ------------------------------------------------------------- */

static void test_noise_sigma(void **state)
{
    (void)state;
    const int w = 320, h = 240;
    uint8_t *y = malloc((size_t)w * h);
    assert_non_null(y);
    const double sigmas[] = {0, 2, 5, 10};
    for (size_t k = 0; k < sizeof sigmas / sizeof sigmas[0]; k++) {
        /* A smooth ramp (no Laplacian response) plus noise. */
        for (int r = 0; r < h; r++)
            for (int x = 0; x < w; x++)
                y[r * w + x] = clip8(60 + 0.3 * x + 0.2 * r + gauss(sigmas[k]));
        double s = td_noise_sigma(y, w, w, h);
        if (fabs(s - sigmas[k]) > 0.25 * sigmas[k] + 0.5) /* 8-bit rounding adds ~0.3 */
            fail_msg("noise sigma %.1f measured as %.2f", sigmas[k], s);
    }
    /* Texture alone (a few edges) is not mistaken for heavy noise. */
    textured(y, w, h);
    for (int r = 1; r < h; r++)
        memcpy(y + r * w, y, (size_t)w); /* vertical stripes: quiet blocks exist */
    assert_true(td_noise_sigma(y, w, w, h) < 2.0);
    assert_true(td_noise_sigma(y, w, 4, 4) == 0); /* too small: no blocks */
    free(y);
}

/* ---- head-switching ---------------------------------------------------- */

static void test_head_switch(void **state)
{
    (void)state;
    const int w = 200, h = 120;
    uint8_t *y = malloc((size_t)w * h);
    assert_non_null(y);
    const int bands[] = {0, 4, 6, 7, 10};
    for (size_t k = 0; k < sizeof bands / sizeof bands[0]; k++) {
        int n = bands[k];
        for (int r = 0; r < h; r++)
            for (int x = 0; x < w; x++)
                y[r * w + x] = clip8(100 + 40 * sin(x * 0.2 + r * 0.05) + gauss(1.5));
        /* The band: shifted sideways and noisy, as a head switch makes it. */
        for (int r = h - n; r < h; r++)
            for (int x = 0; x < w; x++)
                y[r * w + x] = clip8(100 + 40 * sin((x + 13 + 3 * r) * 0.2) + gauss(25));
        double rows[32], typ, ratio;
        td_row_diffs(y, w, w, h, 32, rows, &typ);
        int lines = td_head_switch_lines(rows, 32, typ, &ratio);
        int want = (n + 1) & ~1;
        if (lines != want)
            fail_msg("band of %d lines: found %d (want %d), ratio %.1f", n, lines, want, ratio);
        assert_true(lines % 2 == 0);
    }
    free(y);
}

/* ---- decisions and chains ---------------------------------------------- */

static td_vanalysis sd_analysis(void)
{
    td_vanalysis a;
    memset(&a, 0, sizeof a);
    a.width = 720;
    a.height = 480;
    snprintf(a.pix_fmt, sizeof a.pix_fmt, "yuv422p");
    a.fps = 30000.0 / 1001;
    a.sar_num = a.sar_den = 1;
    a.interlaced = 1;
    a.tff = 1;
    a.head_switch_lines = 6;
    a.chroma_delay = 3.0;
    a.chroma_peak = 0.4;
    a.y_p005 = 60;
    a.y_p995 = 190;
    a.noise_sigma = 3;
    a.grey_fraction = 0.1;
    a.grey_u = 4;
    a.grey_v = -30;
    return a;
}

/* Parse a chain with libavfilter: every chain we build must be valid. */
static void assert_chain_parses(const char *chain)
{
    AVFilterGraph *g = avfilter_graph_alloc();
    assert_non_null(g);
    AVFilterInOut *in = NULL, *out = NULL;
    char desc[TD_RESTORE_MAX_CHAIN + 64];
    snprintf(desc, sizeof desc, "nullsrc=s=720x480,format=yuv422p,%s,nullsink", chain);
    int ret = avfilter_graph_parse2(g, desc, &in, &out);
    if (ret < 0)
        fail_msg("chain does not parse: %s", chain);
    avfilter_inout_free(&in);
    avfilter_inout_free(&out);
    avfilter_graph_free(&g);
}

static void test_decide_auto(void **state)
{
    (void)state;
    td_restore_settings s;
    td_restore_settings_default(&s);
    td_vanalysis a = sd_analysis();
    td_restore_plan p;
    td_restore_decide(&s, &a, 300, &p);
    assert_true(p.deinterlace && p.tff);
    assert_int_equal(p.head_switch_lines, 6);
    assert_true(fabs(p.chroma_shift - 3.0) < 1e-9);
    assert_int_equal(p.chroma_log2_w, 1);
    assert_true(p.temporal);
    /* 60..190 stretched onto 16..235 */
    assert_true(fabs(p.level_gain - 219.0 / 130) < 1e-9);
    assert_true(fabs((60 - 16) * p.level_gain + 16 + p.level_offset - 16) < 1e-6);
    assert_true(fabs((190 - 16) * p.level_gain + 16 + p.level_offset - 235) < 1e-6);
    /* white balance bounded to 10 steps */
    assert_true(fabs(p.u_shift + 4) < 1e-9 && fabs(p.v_shift - 10) < 1e-9);
    assert_int_equal(p.crop_w, 704);
    assert_int_equal(p.sar_num, 10);
    assert_int_equal(p.sar_den, 11);
    assert_string_equal(p.pix_fmt, "yuv420p");
    char chain[TD_RESTORE_MAX_CHAIN];
    td_error err = {0};
    assert_int_equal(td_restore_chain(&p, 1, chain, sizeof chain, &err), TD_OK);
    /* the order matters: field order, band, chroma, deinterlace, denoise,
     * levels, crop, legal range, tags, format */
    const char *steps[] = {"setfield=tff", "fillborders=bottom=6", "convolution=", "bwdif=mode=send_field:parity=tff",
                           "hqdn3d=", "lutyuv=", "crop=704", "setsar=10/11", "limiter=min=16:max=235",
                           "setparams=", "format=yuv420p"};
    const char *at = chain;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        const char *hit = strstr(at, steps[i]);
        if (!hit)
            fail_msg("step %s missing or out of order in %s", steps[i], chain);
        at = hit;
    }
    /* 3 luma px = 1.5 chroma samples: half on each of taps +1 and +2 */
    assert_non_null(strstr(chain, "1m='0 0 0 0 0 0 0 0 0 4 4 0 0 0 0 0 0'"));
    assert_null(strstr(chain, "nlmeans"));
    assert_chain_parses(chain);
    /* On a CUDA device: yadif_cuda in place of bwdif, 4:2:2 through 4:4:4 */
    p.cuda = 1;
    assert_int_equal(td_restore_chain(&p, 1, chain, sizeof chain, &err), TD_OK);
    assert_non_null(strstr(chain, "format=yuv444p,hwupload,yadif_cuda=mode=send_field:parity=tff:deint=all,"
                                  "hwdownload,format=yuv444p"));
    assert_null(strstr(chain, "bwdif"));
    assert_chain_parses(chain);
}

static void test_decide_presets_and_guards(void **state)
{
    (void)state;
    td_restore_settings s;
    td_restore_settings_default(&s);
    td_vanalysis a = sd_analysis();
    td_restore_plan p;
    char chain[TD_RESTORE_MAX_CHAIN];
    td_error err = {0};

    /* DV: no analog fixes; field order still from the analysis. */
    s.preset = TD_PRESET_DV;
    a.tff = 0;
    td_restore_decide(&s, &a, 300, &p);
    assert_int_equal(p.head_switch_lines, 0);
    assert_true(p.chroma_shift == 0);
    assert_true(p.deinterlace && !p.tff);
    assert_int_equal(td_restore_chain(&p, 1, chain, sizeof chain, &err), TD_OK);
    assert_non_null(strstr(chain, "parity=bff"));
    assert_null(strstr(chain, "fillborders"));
    assert_chain_parses(chain);

    /* A 3-frame scene: no temporal denoise. */
    s.preset = TD_PRESET_AUTO;
    td_restore_decide(&s, &a, 3, &p);
    assert_false(p.temporal);
    assert_true(p.luma_temporal <= 0.01 && p.chroma_temporal <= 0.01);

    /* Weak correlation: chroma left alone. Progressive: no bwdif. */
    a.chroma_peak = 0.05;
    a.interlaced = 0;
    td_restore_decide(&s, &a, 300, &p);
    assert_true(p.chroma_shift == 0);
    assert_int_equal(td_restore_chain(&p, 1, chain, sizeof chain, &err), TD_OK);
    assert_null(strstr(chain, "bwdif"));
    assert_null(strstr(chain, "convolution"));

    /* High quality: nlmeans; HD: 1440x1080 BT.709, square pixels. */
    s.quality = TD_QUALITY_HIGH;
    s.size = TD_RSIZE_HD;
    td_restore_decide(&s, &a, 300, &p);
    assert_true(p.nlmeans_s >= 1);
    assert_int_equal(td_restore_chain(&p, 1, chain, sizeof chain, &err), TD_OK);
    assert_non_null(strstr(chain, "nlmeans=s="));
    p.opencl = 1;
    assert_int_equal(td_restore_chain(&p, 1, chain, sizeof chain, &err), TD_OK);
    assert_non_null(strstr(chain, "hwupload,nlmeans_opencl=s="));
    assert_non_null(strstr(chain, "hwdownload,format=yuv444p"));
    assert_null(strstr(chain, "nlmeans=s="));
    assert_chain_parses(chain);
    p.opencl = 0;
    assert_int_equal(td_restore_chain(&p, 1, chain, sizeof chain, &err), TD_OK);
    assert_non_null(strstr(chain, "scale=1440:1080:in_color_matrix=bt601:out_color_matrix=bt709"));
    assert_non_null(strstr(chain, "setsar=1"));
    assert_non_null(strstr(chain, "colorspace=bt709"));
    assert_chain_parses(chain);

    /* PAL archive: 12:11, the source's subsampling kept. */
    s.size = TD_RSIZE_SD;
    s.format = TD_RFORMAT_ARCHIVE;
    a.height = 576;
    td_restore_decide(&s, &a, 300, &p);
    assert_int_equal(p.sar_num, 12);
    assert_string_equal(p.pix_fmt, "yuv422p");
    assert_int_equal(td_restore_chain(&p, 0, chain, sizeof chain, &err), TD_OK);
    assert_non_null(strstr(chain, "colorspace=bt470bg"));
    s.format = TD_RFORMAT_EDIT;
    td_restore_decide(&s, &a, 300, &p);
    assert_string_equal(p.pix_fmt, "yuv422p10le");

    /* Levels: a full-range picture is left alone; a wild one is bounded. */
    a = sd_analysis();
    a.y_p005 = 17;
    a.y_p995 = 234;
    td_restore_decide(&s, &a, 300, &p);
    assert_true(p.level_gain == 1 && p.level_offset == 0);
    a.y_p005 = 100;
    a.y_p995 = 145;
    td_restore_decide(&s, &a, 300, &p);
    assert_true(p.level_gain <= 2.0);
    /* Heavy noise: no sharpening of it. */
    a.noise_sigma = 8;
    td_restore_decide(&s, &a, 300, &p);
    assert_true(p.cas == 0);
    assert_true(p.luma_spatial <= 10 && p.chroma_temporal <= 18);

    /* A buffer too small is an error, not a cut chain. */
    assert_int_equal(td_restore_chain(&p, 1, chain, 64, &err), TD_EINVAL);
}

/* GPU placements: frames decoded on a card stay there for yadif_cuda
 * only when no CPU step comes first, and the CPU part of the chain is the
 * same as without the card, so decoding there changes no output bit. */
static void test_chain_gpu(void **state)
{
    (void)state;
    td_restore_settings s;
    td_restore_settings_default(&s);
    td_vanalysis a = sd_analysis();
    td_restore_plan p;
    char sw[TD_RESTORE_MAX_CHAIN], hw[TD_RESTORE_MAX_CHAIN], want[TD_RESTORE_MAX_CHAIN + 64];
    td_error err = {0};

    /* Analog faults (head switching, chroma delay): down first. */
    td_restore_decide(&s, &a, 300, &p);
    p.cuda = 1;
    assert_int_equal(td_restore_chain(&p, 1, sw, sizeof sw, &err), TD_OK);
    p.hwdec = p.hwdec_cuda = 1;
    snprintf(p.hw_sw_fmt, sizeof p.hw_sw_fmt, "nv12");
    assert_int_equal(td_restore_chain(&p, 1, hw, sizeof hw, &err), TD_OK);
    snprintf(want, sizeof want, "hwdownload,format=nv12,format=yuv420p,%s", sw);
    assert_string_equal(hw, want);
    assert_non_null(strstr(hw, "fillborders=bottom=6"));
    assert_non_null(strstr(hw, "hwupload,yadif_cuda=mode=send_field:parity=tff"));
    assert_chain_parses(hw);

    /* DV (no analog fixes): straight from the decoder into yadif_cuda, no
     * setfield on the card; after the download the same as with the CPU
     * decoding. */
    s.preset = TD_PRESET_DV;
    a.tff = 0;
    td_restore_decide(&s, &a, 300, &p);
    p.cuda = 1;
    assert_int_equal(td_restore_chain(&p, 1, sw, sizeof sw, &err), TD_OK);
    p.hwdec = p.hwdec_cuda = 1;
    snprintf(p.hw_sw_fmt, sizeof p.hw_sw_fmt, "nv12");
    assert_int_equal(td_restore_chain(&p, 1, hw, sizeof hw, &err), TD_OK);
    const char *lead = "yadif_cuda=mode=send_field:parity=bff:deint=all,hwdownload,format=nv12,format=yuv420p,hqdn3d";
    assert_memory_equal(hw, lead, strlen(lead));
    assert_null(strstr(hw, "setfield"));
    assert_null(strstr(hw, "hwupload"));
    const char *tail_sw = strstr(sw, ",hqdn3d"), *tail_hw = strstr(hw, ",hqdn3d");
    assert_non_null(tail_sw);
    assert_non_null(tail_hw);
    assert_string_equal(tail_sw, tail_hw);
    assert_chain_parses(hw);

    /* Frames from VAAPI (or NVDEC without yadif_cuda): down first, then
     * the CPU's chain unchanged. */
    p.cuda = 0;
    p.hwdec_cuda = 0;
    assert_int_equal(td_restore_chain(&p, 1, hw, sizeof hw, &err), TD_OK);
    p.hwdec = 0;
    assert_int_equal(td_restore_chain(&p, 1, sw, sizeof sw, &err), TD_OK);
    snprintf(want, sizeof want, "hwdownload,format=nv12,format=yuv420p,%s", sw);
    assert_string_equal(hw, want);
    assert_non_null(strstr(hw, "bwdif"));

    /* HD with scale_cuda: the BT.601 -> BT.709 matrix on the CPU at SD,
     * the resize on the card. */
    s.size = TD_RSIZE_HD;
    td_restore_decide(&s, &a, 300, &p);
    p.cuda_scale = 1;
    assert_int_equal(td_restore_chain(&p, 1, hw, sizeof hw, &err), TD_OK);
    assert_non_null(strstr(hw, "scale=iw:ih:in_color_matrix=bt601:out_color_matrix=bt709,format=yuv444p,hwupload,"
                               "scale_cuda=w=1440:h=1080:interp_algo=lanczos,hwdownload"));
    assert_null(strstr(hw, "flags=lanczos"));
    assert_chain_parses(hw);
    snprintf(a.pix_fmt, sizeof a.pix_fmt, "yuv420p");
    td_restore_decide(&s, &a, 300, &p);
    p.cuda_scale = 1;
    assert_int_equal(td_restore_chain(&p, 1, hw, sizeof hw, &err), TD_OK);
    assert_non_null(strstr(hw, "bt709,format=yuv420p,hwupload,scale_cuda"));
}

static void test_fingerprint(void **state)
{
    (void)state;
    td_restore_settings s;
    td_restore_settings_default(&s);
    td_vanalysis a = sd_analysis();
    td_restore_plan p;
    char placed[128], base[256], had[512];

    td_restore_decide(&s, &a, 300, &p);
    td_restore_placement_text(&p, placed, sizeof placed);
    assert_string_equal(placed, "deint:cpu");
    a.interlaced = 0;
    td_restore_decide(&s, &a, 300, &p);
    td_restore_placement_text(&p, placed, sizeof placed);
    assert_string_equal(placed, "-");
    a.interlaced = 1;
    s.quality = TD_QUALITY_HIGH;
    s.size = TD_RSIZE_HD;
    td_restore_decide(&s, &a, 300, &p);
    p.cuda = p.cuda_scale = p.opencl = 1;
    td_restore_placement_text(&p, placed, sizeof placed);
    assert_string_equal(placed, "deint:cuda,nlmeans:opencl,scale:cuda");

    td_restore_settings_text(&s, base, sizeof base);
    snprintf(had, sizeof had, "%s placed=%s", base, placed);
    /* auto and on take what the card made; off does not. */
    assert_true(td_restore_fingerprint_ok(&s, had));
    s.cuda = TD_ROPENCL_ON;
    assert_true(td_restore_fingerprint_ok(&s, had));
    s.cuda = TD_ROPENCL_OFF;
    assert_false(td_restore_fingerprint_ok(&s, had));
    s.cuda = TD_ROPENCL_AUTO;
    s.opencl = TD_ROPENCL_OFF;
    assert_false(td_restore_fingerprint_ok(&s, had));
    /* What the CPU made stands for any policy. */
    snprintf(had, sizeof had, "%s placed=deint:cpu,nlmeans:cpu,scale:cpu", base);
    assert_true(td_restore_fingerprint_ok(&s, had));
    s.cuda = TD_ROPENCL_OFF;
    assert_true(td_restore_fingerprint_ok(&s, had));
    /* A marker from before placements were recorded: only where any
     * placement would do. */
    assert_false(td_restore_fingerprint_ok(&s, base));
    s.cuda = s.opencl = TD_ROPENCL_AUTO;
    assert_true(td_restore_fingerprint_ok(&s, base));
    s.hwenc = TD_ROPENCL_OFF;
    assert_false(td_restore_fingerprint_ok(&s, base));
    s.hwenc = TD_ROPENCL_AUTO;
    /* The card's encoder: named only when it made the file; off redoes
     * such a file, auto and on keep it. */
    p.hwenc = 1;
    td_restore_placement_text(&p, placed, sizeof placed);
    assert_string_equal(placed, "deint:cuda,nlmeans:opencl,scale:cuda,enc:nvenc");
    p.cuda = p.cuda_scale = p.opencl = 0;
    p.hwenc = 2;
    td_restore_placement_text(&p, placed, sizeof placed);
    assert_string_equal(placed, "deint:cpu,nlmeans:cpu,scale:cpu,enc:vaapi");
    char enc[512];
    snprintf(enc, sizeof enc, "%s placed=%s", base, placed);
    assert_true(td_restore_fingerprint_ok(&s, enc));
    s.hwenc = TD_ROPENCL_ON;
    assert_true(td_restore_fingerprint_ok(&s, enc));
    s.hwenc = TD_ROPENCL_OFF;
    assert_false(td_restore_fingerprint_ok(&s, enc));
    assert_true(td_restore_fingerprint_ok(&s, had)); /* CPU-encoded: stands */
    s.hwenc = TD_ROPENCL_AUTO;
    /* Other settings, or something else after them: not ours. */
    s.preset = TD_PRESET_VHS;
    assert_false(td_restore_fingerprint_ok(&s, had));
    s.preset = TD_PRESET_AUTO;
    snprintf(had, sizeof had, "%s crf=3", base);
    assert_false(td_restore_fingerprint_ok(&s, had));
    assert_false(td_restore_fingerprint_ok(&s, NULL));
}

static void test_settings_text(void **state)
{
    (void)state;
    td_restore_settings a, b;
    td_restore_settings_default(&a);
    td_restore_settings_default(&b);
    char ta[256], tb[256];
    td_restore_settings_text(&a, ta, sizeof ta);
    td_restore_settings_text(&b, tb, sizeof tb);
    assert_string_equal(ta, tb);
    assert_non_null(strstr(ta, "preset=auto"));
    b.preset = TD_PRESET_VHS;
    td_restore_settings_text(&b, tb, sizeof tb);
    assert_string_not_equal(ta, tb);
    b = a;
    b.subtitles = 1;
    td_restore_settings_text(&b, tb, sizeof tb);
    assert_string_not_equal(ta, tb);
    enum td_restore_preset p;
    assert_int_equal(td_restore_parse_preset("hi8", &p), 0);
    assert_int_equal(p, TD_PRESET_HI8);
    assert_int_equal(td_restore_parse_preset("HI8", &p), -1);
    assert_string_equal(td_restore_preset_name(TD_PRESET_DV), "dv");
}

/* ---- task lists and options -------------------------------------------- */

static void test_task_lists(void **state)
{
    (void)state;
    const td_task_ops *t[TD_MAX_TASKS];
    size_t n;
    td_error err = {0};
    assert_int_equal(td_task_list_parse("restore,subtitles", t, &n, &err), TD_OK);
    assert_int_equal(n, 2);
    assert_ptr_equal(t[0], &td_task_subtitles); /* dependency order */
    assert_ptr_equal(t[1], &td_task_restore);
    assert_true(td_task_list_needs_engine(t, n));
    assert_int_equal(td_task_list_parse("enhance", t, &n, &err), TD_OK);
    assert_int_equal(n, 1);
    assert_ptr_equal(t[0], &td_task_restore);
    assert_false(td_task_list_needs_engine(t, n));
    assert_int_equal(td_task_list_parse("restore,restore", t, &n, &err), TD_OK);
    assert_int_equal(n, 1);
    assert_int_equal(td_task_list_parse("subtitles,split", t, &n, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "split"));
    assert_int_equal(td_task_list_parse(",", t, &n, &err), TD_EINVAL);

    td_task_config cfg;
    td_restore_args ra = {.preset = "vhs", .quality = "high", .format = "archive", .size = "hd"};
    const td_task_ops *both[2] = {&td_task_subtitles, &td_task_restore};
    assert_int_equal(td_task_config_build(both, 2, "srt,vtt", &ra, "cpu", 2, &cfg, &err), TD_OK);
    assert_int_equal(cfg.restore.preset, TD_PRESET_VHS);
    assert_int_equal(cfg.restore.quality, TD_QUALITY_HIGH);
    assert_int_equal(cfg.restore.format, TD_RFORMAT_ARCHIVE);
    assert_int_equal(cfg.restore.size, TD_RSIZE_HD);
    assert_true(cfg.restore.subtitles);
    assert_int_equal(td_task_config_build(both + 1, 1, NULL, &ra, "cpu", 2, &cfg, &err), TD_OK);
    assert_false(cfg.restore.subtitles);
    td_restore_args ocl = {.opencl = "on", .cuda = "off", .vaapi = "on"};
    assert_int_equal(td_task_config_build(both, 2, NULL, &ocl, "cpu", 0, &cfg, &err), TD_OK);
    assert_int_equal(cfg.restore.opencl, TD_ROPENCL_ON);
    assert_int_equal(cfg.restore.cuda, TD_ROPENCL_OFF);
    assert_int_equal(cfg.restore.vaapi, TD_ROPENCL_ON);
    ocl.vaapi = "qsv";
    assert_int_equal(td_task_config_build(both, 2, NULL, &ocl, "cpu", 0, &cfg, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "--restore-vaapi"));
    ocl.vaapi = NULL;
    ocl.opencl = "cuda";
    assert_int_equal(td_task_config_build(both, 2, NULL, &ocl, "cpu", 0, &cfg, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "--restore-opencl"));
    td_restore_args bad = {.format = "dvd"};
    assert_int_equal(td_task_config_build(both, 2, NULL, &bad, "cpu", 0, &cfg, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "--restore-format"));
}

static void test_options(void **state)
{
    (void)state;
    td_run_opts o;
    td_error err = {0};
    char *ok[] = {"run", "--task", "subtitles,restore", "--restore-preset", "dv", "--restore-size", "hd", "A", NULL};
    assert_int_equal(td_run_opts_parse(8, ok, &o, &err), TD_OK);
    assert_string_equal(o.task, "subtitles,restore");
    assert_string_equal(o.restore_preset, "dv");
    assert_string_equal(o.restore_size, "hd");
    char *bad_task[] = {"run", "--task", "colorize", "A", NULL};
    assert_int_equal(td_run_opts_parse(4, bad_task, &o, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "colorize"));
    char *bad_value[] = {"run", "--task", "restore", "--restore-quality", "best", "A", NULL};
    assert_int_equal(td_run_opts_parse(6, bad_value, &o, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "--restore-quality"));
}

/* ---- scores ------------------------------------------------------------ */

static void test_scores(void **state)
{
    (void)state;
    uint8_t flat[16 * 8], ramp[16 * 8];
    memset(flat, 100, sizeof flat);
    for (int r = 0; r < 8; r++)
        for (int x = 0; x < 16; x++)
            ramp[r * 16 + x] = (uint8_t)(10 + 3 * x + 2 * r);
    assert_true(td_grad_energy(flat, 16, 16, 8) == 0);
    assert_true(fabs(td_grad_energy(ramp, 16, 16, 8) - 13.0) < 1e-9); /* 3^2 + 2^2 */
    assert_true(td_grad_energy(ramp, 16, 1, 8) == 0);
    /* ramp: 10 + 3x + 2r in 16..235 */
    int64_t legal = 0;
    for (int r = 0; r < 8; r++)
        for (int x = 0; x < 16; x++)
            legal += ramp[r * 16 + x] >= 16 && ramp[r * 16 + x] <= 235;
    assert_int_equal(td_legal_luma(ramp, 16, 16, 8), legal);
    assert_true(legal < 16 * 8);
}

/* ---- the fingerprint in the marker ------------------------------------- */

static void test_marker_settings(void **state)
{
    (void)state;
    char *dir = make_tmpdir_named("td-restore");
    char *scene_path = pathf("%s/a.mkv", dir);
    write_bytes(scene_path, "x", 1);
    td_scene scene;
    td_error err = {0};
    assert_int_equal(td_scene_from_path(dir, scene_path, &scene, &err), TD_OK);
    td_restore_settings s;
    td_restore_settings_default(&s);
    char *names[2];
    assert_int_equal(td_restore_output_names(&scene, &s, names), 2);
    assert_string_equal(names[0], "a.restored.mp4");
    assert_string_equal(names[1], "a.restore.json");
    char *out0 = pathf("%s/%s", dir, names[0]), *out1 = pathf("%s/%s", dir, names[1]);
    write_bytes(out0, "video", 5);
    write_bytes(out1, "{}", 2);
    char text[256];
    td_restore_settings_text(&s, text, sizeof text);
    const char *outs[2] = {out0, out1};
    td_done_info info = {.task = "restore", .engine = "libav", .device = "cpu", .outputs = outs, .n_outputs = 2,
                         .settings = text};
    assert_int_equal(td_marker_write_done(&scene, &info, &err), TD_OK);

    td_task_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.restore = s;
    enum td_marker_state st;
    char why[512];
    assert_int_equal(td_task_restore.check(&scene, &cfg, &st, why, sizeof why, &err), TD_OK);
    assert_int_equal(st, TD_MARKER_DONE);
    cfg.restore.preset = TD_PRESET_VHS;
    assert_int_equal(td_task_restore.check(&scene, &cfg, &st, why, sizeof why, &err), TD_OK);
    assert_int_equal(st, TD_MARKER_STALE);
    assert_non_null(strstr(why, "settings changed"));
    /* Another format wants another file: stale too. */
    cfg.restore = s;
    cfg.restore.format = TD_RFORMAT_ARCHIVE;
    assert_int_equal(td_task_restore.check(&scene, &cfg, &st, why, sizeof why, &err), TD_OK);
    assert_int_equal(st, TD_MARKER_STALE);
    /* Made on the card: stands for auto, redone under --restore-opencl off. */
    char placed[300];
    snprintf(placed, sizeof placed, "%s placed=deint:cpu,nlmeans:opencl", text);
    info.settings = placed;
    assert_int_equal(td_marker_write_done(&scene, &info, &err), TD_OK);
    cfg.restore = s;
    assert_int_equal(td_task_restore.check(&scene, &cfg, &st, why, sizeof why, &err), TD_OK);
    assert_int_equal(st, TD_MARKER_DONE);
    cfg.restore.opencl = TD_ROPENCL_OFF;
    assert_int_equal(td_task_restore.check(&scene, &cfg, &st, why, sizeof why, &err), TD_OK);
    assert_int_equal(st, TD_MARKER_STALE);
    /* A marker without settings (written by another task) is not ours. */
    td_marker_check_settings(&scene, "restore", NULL, 0, NULL, &st, why, sizeof why, &err);
    assert_int_equal(st, TD_MARKER_DONE);

    free(names[0]);
    free(names[1]);
    free(out0);
    free(out1);
    td_scene_release(&scene);
    free(scene_path);
    rm_tree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chroma_delay),
        cmocka_unit_test(test_chroma_delay_no_edges),
        cmocka_unit_test(test_noise_sigma),
        cmocka_unit_test(test_head_switch),
        cmocka_unit_test(test_decide_auto),
        cmocka_unit_test(test_decide_presets_and_guards),
        cmocka_unit_test(test_chain_gpu),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_settings_text),
        cmocka_unit_test(test_task_lists),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_scores),
        cmocka_unit_test(test_marker_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
