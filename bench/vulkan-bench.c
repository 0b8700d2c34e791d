/*
 * vulkan-bench.c: speed of the Whisper Vulkan backend on random-weight
 * models of the standard sizes (speed does not depend on the weights'
 * values; token ids are fixed, so every run does the same work).
 *
 *   vulkan-bench [--dims tiny|base|small|medium|...] [--model PATH]
 *                [--windows N] [--batch LIST] [--tokens N] [--runs N]
 *                [--path tiled|coopmat|coopmat64|cmdirect|cmdirect64|
 *                        cm64x64|cm64x64k64|cm64x64s2|cmahead|cm128w|auto]
 *                [--step logits|host|sample] [--profile] [--stats] [--header]
 *                [--peak] [--probe]
 *
 * Generates an F16 model (td_wmk_write, seed 1) unless --model names one,
 * opens the backend on TD_VULKAN_DEVICE (or the first device) and
 * measures, wall clock with the host waits included:
 *   - encoder: ms per 30-s window, --windows windows per encode() call
 *     (default 1; median of --runs after a warm-up), cross K/V of every
 *     decoder layer included;
 *   - decoder: for each B in --batch (default 1,8,32), B sequences at
 *     ragged positions (sequence s starts s % 5 tokens further on), each
 *     in its own window slot where there are enough, --tokens (default 64)
 *     single-token steps after a 4-token prompt; ms per step, and per
 *     token per sequence (ms per step / B). --step says what a step
 *     ends with: logits (default) reads every sequence's n_vocab logits
 *     back; host does that and samples each row on the host as the
 *     decoding rules do for a backend without sample() (td_wsample_row:
 *     the suppress list, the timestamp rule, top 6); sample keeps the
 *     logits on the device and runs the backend's sample() on the same
 *     rows (about 600 bytes per sequence back).
 * and x real time for a 30-s window at each B (encoder per window plus
 * --tokens steps shared by B windows). --path forces the products' path
 * (TD_VULKAN_MATMUL; auto: the per-device trial or its cached answer).
 * With --profile, each figure is followed by the time per shader from
 * timestamp queries around every dispatch (these serialize the dispatches
 * a little; the wall-clock figures are taken without them), and each
 * step's by the last step's dispatches in order, with their times and
 * workgroups (a layer's products told apart).
 * With --stats (implies --profile), each profiled shader's statistics as the
 * driver reports them (VK_KHR_pipeline_executable_properties: on NVIDIA
 * registers, shared memory, spills), where the device has the extension.
 * With --peak, first the matrix engines' rate through the cooperative-
 * matrix extension (ops.h's td_vko_cm_peak: fragments in registers,
 * reloaded from shared memory each step, and the variants that change
 * one thing each, at 132 to 1056 workgroups), where the card has it.
 * With --probe, the encoder's three product shapes (n x n, 4n x n and
 * n x 4n on the rows of a group of windows, as the encoder runs them) on
 * each cooperative-matrix path, as they run and with ops.h's probes: loads from one K offset only, no products,
 * no loads after the first step: what holds the products back; and as
 * run with K never split (ops.h's td_vko_set_split_parts 0: the same as
 * run where the product is not split); and with A read as halves
 * (TD_VKO_AHALF, as the encoder's LayerNorm and MLP write it).
 * Prints Markdown table rows for bench/RESULTS.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/error.h"
#include "whisper/backend.h"
#include "whisper/decode.h"
#include "whisper/mkmodel.h"
#include "whisper/model.h"
#include "whisper/sample.h"

#if defined(TD_HAVE_VULKAN) && TD_WBACKEND_API_VERSION >= 2

#include "whisper/backend/vulkan/ops.h"
#include "whisper/backend/vulkan/vulkan.h"

#define MAX_B 16

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void print_profile(td_wbackend *b, const char *what, double per)
{
    td_vk_prof pr[32];
    int n = td_wvk_profile_read(b, pr, 32, 1);
    double total = 0;
    for (int i = 0; i < n; i++)
        total += pr[i].ms;
    printf("  %s, GPU time per %s by timestamps: %.3f ms:", what, what, total / per);
    for (int i = 0; i < n; i++)
        printf(" %s %.3f (%ld)", pr[i].name, pr[i].ms / per, (long)(pr[i].count / per));
    printf("\n");
    for (int i = 0; i < n; i++) /* with --stats: the driver's figures for each */
        if (pr[i].stats && pr[i].stats[0])
            printf("    %s: %s\n", pr[i].name, pr[i].stats);
}

/* The last step's dispatches (those timed after td_wvk_profile_count
 * gave since) in the order they ran: which of a layer's products costs what (the totals
 * above merge every shape of a shader). */
static void print_order(td_wbackend *b, uint64_t since)
{
    static td_vk_disp d[TD_VK_PROFILE_LAST];
    uint64_t ran = td_wvk_profile_count(b) - since;
    int n = td_wvk_profile_last(b, d, ran < TD_VK_PROFILE_LAST ? (int)ran : TD_VK_PROFILE_LAST);
    double total = 0;
    for (int i = 0; i < n; i++)
        total += d[i].us;
    printf("  the last step's %d dispatches in order (us, workgroups), %.1f us:", n, total);
    for (int i = 0; i < n; i++)
        printf("%s%s %.1f/%u", i % 6 ? " | " : "\n  order: ", d[i].name, d[i].us,
               (unsigned)d[i].groups);
    printf("\n");
}

static void die(const char *what, const td_error *err)
{
    fprintf(stderr, "vulkan-bench: %s: %s\n", what, err->msg);
    exit(1);
}

int main(int argc, char **argv)
{
    const char *dims = "base", *model = NULL;
    int n_win = 1, n_tokens = 64, runs = 3, profile = 0, header = 0, peak = 0, probe = 0;
    const char *step_mode = "logits";
    int batch[MAX_B] = {1, 8, 32}, n_batch = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--peak") == 0) {
            peak = 1;
            continue;
        }
        if (strcmp(a, "--probe") == 0) {
            probe = 1;
            continue;
        }
        if (strcmp(a, "--profile") == 0) {
            profile = 1;
            continue;
        }
        if (strcmp(a, "--header") == 0) {
            header = 1;
            continue;
        }
        if (strcmp(a, "--stats") == 0) { /* shown with the profile: implies it */
            td_vk_capture_stats(1);
            profile = 1;
            continue;
        }
        if (i + 1 >= argc)
            goto usage;
        const char *v = argv[++i];
        if (strcmp(a, "--dims") == 0) {
            dims = v;
        } else if (strcmp(a, "--model") == 0) {
            model = v;
        } else if (strcmp(a, "--windows") == 0) {
            n_win = atoi(v);
        } else if (strcmp(a, "--path") == 0) {
            if (setenv("TD_VULKAN_MATMUL", v, 1) != 0) {
                perror("setenv");
                return 1;
            }
        } else if (strcmp(a, "--step") == 0) {
            if (strcmp(v, "logits") != 0 && strcmp(v, "host") != 0 && strcmp(v, "sample") != 0)
                goto usage;
            step_mode = v;
        } else if (strcmp(a, "--tokens") == 0) {
            n_tokens = atoi(v);
        } else if (strcmp(a, "--runs") == 0) {
            runs = atoi(v);
        } else if (strcmp(a, "--batch") == 0) {
            n_batch = 0;
            for (char *s = (char *)v; *s && n_batch < MAX_B;) {
                batch[n_batch++] = (int)strtol(s, &s, 10);
                if (*s == ',')
                    s++;
                else if (*s)
                    goto usage;
            }
        } else {
            goto usage;
        }
    }
    if (n_win < 1 || n_win > 64 || n_tokens < 1 || n_tokens > 400 || runs < 1 || runs > 50)
        goto usage;
    int max_b = 1;
    for (int i = 0; i < n_batch; i++) {
        if (batch[i] < 1 || batch[i] > 256)
            goto usage;
        if (batch[i] > max_b)
            max_b = batch[i];
    }

    td_error err = {0};
    char tmpdir[] = "/tmp/td-vkbench-XXXXXX", path[256];
    int made = 0;
    if (!model) {
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            return 1;
        }
        td_wmk_spec spec;
        memset(&spec, 0, sizeof spec);
        if (td_wmk_dims(dims, &spec.hp, &err) != TD_OK)
            die("--dims", &err);
        spec.wtype = TD_WT_F16;
        spec.seed = 1;
        snprintf(path, sizeof path, "%s/model.bin", tmpdir);
        if (td_wmk_write(&spec, path, &err) != TD_OK)
            die("td_wmk_write", &err);
        model = path;
        made = 1;
    }
    td_wmodel *m = NULL;
    if (td_wmodel_open(model, &m, &err) != TD_OK)
        die(model, &err);
    if (made) {
        unlink(path);
        rmdir(tmpdir);
    }
    int n_windows = n_win > max_b ? n_win : max_b;
    if (n_windows > 64)
        n_windows = 64;
    td_wconfig cfg = {0};
    cfg.max_seq = max_b;
    cfg.max_windows = n_windows;
    cfg.max_tokens = 4 + n_tokens + 5;
    cfg.max_batch_tokens = 4;
    cfg.max_rows = 4 * max_b;
    const td_wbackend_ops *ops = &td_wbackend_vulkan;
    printf("  memory_need: %.1f MiB\n",
           (double)ops->memory_need(&m->hp, m->wtype, &cfg) / (1 << 20));
    td_wbackend *b = NULL;
    double t0 = now_ms();
    if (ops->open(m, &cfg, &b, &err) != TD_OK)
        die("open", &err);
    const td_vk_info *in = td_wvk_device(b);
    printf("  device: %s, %s, PCI %s, %s, %d multiprocessors; open (upload) %.0f ms; "
           "encoder groups of %d windows\n",
           in->name, in->driver, in->pci[0] ? in->pci : "none", in->uuid, in->sm_count,
           now_ms() - t0, td_wvk_enc_batch(b));
    printf("  %s\n", td_wvk_path_note(b));
    if (peak) {
        /* cm_peak.comp's modes (its head says what each changes), each over
         * 1, 2, 4 and 8 workgroups a multiprocessor of an H100 */
        static const char *const how[TD_VKO_CM_PEAK_MODES] = {
            "in registers", "from shared halves", "from shared 16-byte vectors",
            "A from shared 8-byte vectors", "16-byte vectors, a barrier every step",
            "16-byte vectors, 4 x 2 accumulators", "16-byte vectors, accumulators indexed at run time",
            "16-byte vectors, rows by subgroup"};
        const int groups[4] = {132, 264, 528, 1056};
        printf("| matrix engines (cm_peak.comp), fragments | TFLOP/s at 132 | 264 | 528 | 1056 "
               "workgroups |\n| --- | --- | --- | --- | --- |\n");
        for (int i = 0; i < TD_VKO_CM_PEAK_MODES; i++) {
            printf("| %d: %s |", i, how[i]);
            for (int g = 0; g < 4; g++) {
                double tf;
                if (td_wvk_cm_peak(b, i, groups[g], &tf, &err) != TD_OK) {
                    printf(" %s |", err.msg);
                    continue;
                }
                printf(" %.1f |", tf);
            }
            printf("\n");
        }
    }
    if (probe) {
        /* the rows of the encoder's products: a group of windows */
        int na = m->hp.n_audio_state, eb = td_wvk_enc_batch(b);
        int C = m->hp.n_audio_ctx * (n_win < eb ? n_win : eb);
        if (C > 8192) /* the probe's (and the trial's) most rows */
            C = 8192;
        const int shp[3][3] = {{C, na, na}, {C, 4 * na, na}, {C, na, 4 * na}};
        const unsigned pr[6] = {0, TD_VKO_PROBE_SAME, TD_VKO_PROBE_NOMMA, TD_VKO_PROBE_NOLOAD,
                                0, TD_VKO_AHALF};
        printf("| path | m x n x k | as run ms (TFLOP/s) | one K offset | no products | no loads "
               "after the first | K not split | A as halves |\n"
               "| --- | --- | --- | --- | --- | --- | --- | --- |\n");
        int stop = 0; /* the first error ends the table (no such path here) */
        for (int p = TD_VKO_TILED; p < TD_VKO_NPATHS && !stop; p++)
            for (int s = 0; s < 3 && !stop; s++) {
                int pm = shp[s][0], pn = shp[s][1], pk = shp[s][2];
                printf("| %s | %dx%dx%d |", td_vko_path_name((enum td_vko_path)p), pm, pn, pk);
                for (int q = 0; q < 6 && !stop; q++) {
                    double ms;
                    /* the tiled path has no probes, matmul_cmd.comp no third (and
                     * A as halves runs matmul_cm.comp there) */
                    if ((q > 0 && p == TD_VKO_TILED) ||
                        ((q == 3 || q == 5) && (p == TD_VKO_CMDIRECT || p == TD_VKO_CMDIRECT64))) {
                        printf(" |");
                        continue;
                    }
                    int sp = q == 4 ? td_wvk_set_split_parts(b, 0) : 0;
                    int prc = td_wvk_cm_probe(b, p, pm, pn, pk, pr[q], &ms, &err);
                    if (q == 4)
                        td_wvk_set_split_parts(b, sp);
                    if (prc != TD_OK) {
                        printf(" %s |", err.msg);
                        stop = 1;
                        continue;
                    }
                    printf(" %.3f (%.0f) |", ms, 2.0 * pm * pn * pk / (ms * 1e-3) / 1e12);
                }
                printf("\n");
            }
    }

    int nm = m->hp.n_mels, frames = 2 * m->hp.n_audio_ctx;
    float *mel = malloc((size_t)nm * frames * sizeof *mel);
    if (!mel)
        return 1;
    for (size_t i = 0; i < (size_t)nm * frames; i++)
        mel[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    const float *mels[64];
    int wins[64];
    for (int i = 0; i < 64; i++) {
        mels[i] = mel;
        wins[i] = i;
    }
    /* every window slot the decoder uses gets encoded once */
    if (ops->encode(b, n_windows, wins, mels, &err) != TD_OK)
        die("encode", &err);
    double *t = malloc((size_t)(runs > n_tokens ? runs : n_tokens) * sizeof *t);
    for (int r = 0; r < runs; r++) {
        double s = now_ms();
        if (ops->encode(b, n_win, wins, mels, &err) != TD_OK)
            die("encode", &err);
        t[r] = (now_ms() - s) / n_win;
    }
    double enc_ms = median(t, runs);
    if (profile) {
        td_wvk_profile(b, 1);
        if (ops->encode(b, n_win, wins, mels, &err) != TD_OK)
            die("encode", &err);
        td_wvk_profile(b, 0);
        print_profile(b, "window", n_win);
    }

    int nv = m->hp.n_vocab;
    float *logits = malloc((size_t)max_b * 4 * nv * sizeof *logits);
    int32_t *tok = malloc((size_t)max_b * 4 * sizeof *tok);
    td_wseq *seqs = malloc((size_t)max_b * sizeof *seqs);
    if (!logits || !tok || !seqs)
        return 1;
    /* the step's end (--step): the decoding rules' sampler, greedy with
     * timestamps, top 6 (beam 5) */
    int on_host = strcmp(step_mode, "host") == 0, on_dev = strcmp(step_mode, "sample") == 0;
    if (on_dev && !ops->sample) {
        fprintf(stderr, "vulkan-bench: this backend has no sample()\n");
        return 1;
    }
    int32_t *sup = malloc((size_t)nv * sizeof *sup);
    float *row = malloc((size_t)nv * sizeof *row);
    td_wsample_in *s_in = calloc((size_t)max_b, sizeof *s_in);
    td_wsample_out *s_out = malloc((size_t)max_b * sizeof *s_out);
    if (!sup || !row || !s_in || !s_out)
        return 1;
    td_wsampler smp = {.suppress = sup, .n_suppress = td_wsuppress_tokens(m, sup, nv),
                       .eot = m->sp.eot, .blank = m->sp.blank, .ts_begin = m->sp.ts_begin,
                       .nospeech = m->sp.nospeech, .k = 6};
    for (int s = 0; s < max_b; s++) {
        s_in[s].row = s;
        s_in[s].flags = TD_WSAMPLE_TS_RULE;
    }
    printf("  step ends with: %s\n",
           on_dev ? "sample() on the device (top 6, about 600 bytes per sequence back)"
           : on_host ? "the logits read back and sampled on the host (td_wsample_row, top 6)"
                     : "the logits read back (n_vocab floats per sequence)");
    double dec_ms[MAX_B];
    for (int bi = 0; bi < n_batch; bi++) {
        int B = batch[bi];
        double best = 1e30;
        for (int r = 0; r < runs; r++) {
            /* prompt: 4 tokens (or fewer: ragged starts) */
            for (int s = 0; s < B; s++) {
                int np = 4 - s % 4;
                seqs[s] = (td_wseq){s, s % n_windows, 0, np};
            }
            int k = 0;
            for (int s = 0; s < B; s++)
                for (int j = 0; j < seqs[s].n_tokens; j++)
                    tok[k++] = m->sp.sot + (j ? 1 : 0);
            if (ops->decode(b, B, seqs, tok, 0, logits, &err) != TD_OK)
                die("decode", &err);
            for (int s = 0; s < B; s++) {
                seqs[s].n_past = seqs[s].n_tokens + s % 5;
                seqs[s].n_tokens = 1;
                tok[s] = 1000 + s;
            }
            if (profile && r == runs - 1)
                td_wvk_profile(b, 1);
            double s0 = now_ms();
            uint64_t step_start = 0; /* dispatches timed before the step (print_order) */
            for (int step = 0; step < n_tokens; step++) {
                if (profile)
                    step_start = td_wvk_profile_count(b);
                if (ops->decode(b, B, seqs, tok, 0, on_dev ? NULL : logits, &err) != TD_OK)
                    die("decode", &err);
                if (on_dev && ops->sample(b, &smp, B, s_in, s_out, &err) != TD_OK)
                    die("sample", &err);
                for (int s = 0; on_host && s < B; s++) {
                    memcpy(row, logits + (size_t)s * nv, (size_t)nv * sizeof *row);
                    td_wsample_row(&smp, nv, row, &s_in[s], &s_out[s]);
                }
                for (int s = 0; s < B; s++) {
                    seqs[s].n_past++;
                    tok[s] = 1000 + (step * 31 + s * 7) % 20000;
                }
            }
            double ms = (now_ms() - s0) / n_tokens;
            if (profile && r == runs - 1) {
                td_wvk_profile(b, 0);
                char what[32];
                snprintf(what, sizeof what, "step (B=%d)", B);
                print_profile(b, what, n_tokens);
                print_order(b, step_start);
            }
            if (ms < best && !(profile && r == runs - 1 && runs > 1))
                best = ms;
        }
        dec_ms[bi] = best;
    }
    if (header) {
        printf("| model | device | path | encoder ms/window |");
        for (int bi = 0; bi < n_batch; bi++)
            printf(" B=%d ms/step (ms/token/seq, x real time) |", batch[bi]);
        printf("\n|---|---|---|---|");
        for (int bi = 0; bi < n_batch; bi++)
            printf("---|");
        printf("\n");
    }
    const char *slash = strrchr(model, '/');
    const char *note = td_wvk_path_note(b);
    char pathname[32] = "";
    if (sscanf(note, "products: %31[a-z0-9]", pathname) != 1)
        snprintf(pathname, sizeof pathname, "?");
    printf("| %s%s%s | %s | %s | %.1f |", made ? dims : (slash ? slash + 1 : model),
           made ? " (random F16)" : "", on_dev ? ", sample()" : on_host ? ", host sampling" : "",
           in->name, pathname, enc_ms);
    for (int bi = 0; bi < n_batch; bi++)
        printf(" %.2f (%.3f, %.0fx) |", dec_ms[bi], dec_ms[bi] / batch[bi],
               30000.0 / (enc_ms + n_tokens * dec_ms[bi] / batch[bi]));
    printf("\n");
    ops->close(b);
    td_wmodel_close(m);
    free(mel);
    free(t);
    free(logits);
    free(tok);
    free(seqs);
    free(sup);
    free(row);
    free(s_in);
    free(s_out);
    return 0;
usage:
    fprintf(stderr, "usage: vulkan-bench [--dims NAME] [--model PATH] [--windows N] [--batch LIST]\n"
                    "                    [--tokens N] [--runs N]\n"
                    "                    [--path tiled|coopmat|coopmat64|cmdirect|cmdirect64|cm64x64|\n"
                    "                            cm64x64k64|cm64x64s2|cmahead|cm128w|auto]\n"
                    "                    [--step logits|host|sample] [--profile] [--stats] [--header] [--peak]\n"
                    "                    [--probe]\n");
    return 2;
}

#else

int main(void)
{
    fprintf(stderr, "vulkan-bench: tapedeck was built without the Vulkan backend\n");
    return 1;
}

#endif
