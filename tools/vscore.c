/*
 * vscore.c: tapedeck-vscore, the restore tests' and benchmarks' measuring
 * tool (not for users).
 *
 *   tapedeck-vscore FILE...
 *
 * For each file, one line of key=value pairs: frames, luma mean gradient
 * energy, the share of luma samples in the legal range, and the analysis
 * pass's verdicts (interlacing, field order, chroma delay, head-switching
 * lines), so a shell test can compare a restored file with its clean
 * reference. Exit 1 if a file cannot be read.
 */
#include <stdio.h>

#include "media/video_analyze.h"
#include "media/video_score.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tapedeck-vscore FILE...\n");
        return 2;
    }
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        td_error err = {0};
        td_vscore s;
        td_vanalysis a;
        if (td_vscore_file(argv[i], &s, &err) != TD_OK ||
            td_video_analyze(argv[i], 0, &a, NULL, NULL, &err) != TD_OK) {
            fprintf(stderr, "tapedeck-vscore: %s\n", err.msg);
            bad = 1;
            continue;
        }
        printf("file=%s frames=%lld size=%dx%d grad=%.4f legal=%.6f interlaced=%d order=%s order_by=%s "
               "chroma_delay=%.3f chroma_corr=%.3f head_switch=%d noise=%.3f p005=%.0f p995=%.0f\n",
               argv[i], (long long)s.frames, s.width, s.height, s.grad_energy, s.legal_fraction, a.interlaced,
               a.tff ? "tff" : "bff", a.order_source, a.chroma_delay, a.chroma_peak, a.head_switch_lines,
               a.noise_sigma, a.y_p005, a.y_p995);
    }
    return bad;
}
