/*
 * main.c: the tapedeck command line. The only place that prints errors
 * for the user and decides exit codes.
 *
 *   tapedeck run ARCHIVE [options]     subtitle every scene (the main job)
 *   tapedeck status ARCHIVE            done / failed / pending per task
 *   tapedeck devices                   detected GPUs and the worker plan
 *   tapedeck models                    installed Whisper models
 *   tapedeck models import DIR         convert a faster-whisper model into one
 *   tapedeck worker ...                internal: a worker process
 *
 * Exit codes: 0 all scenes done (or skipped), 1 some scenes failed,
 * 2 usage error, 3 could not run at all, 130 interrupted.
 */
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "archive/marker.h"
#include "archive/scan.h"
#include "asr/engine.h"
#include "device/affinity.h"
#include "device/devices.h"
#include "run/options.h"
#include "run/progress.h"
#include "run/run.h"
#include "run/worker.h"
#include "util/log.h"
#include "whisper/backend.h"
#include "whisper/decode.h"
#include "whisper/model.h"
#include "whisper/ct2.h"
#include "whisper/models.h"
#include "util/atomic.h"
#include "util/hash.h"
#ifdef TD_HAVE_VULKAN
#include "whisper/backend/vulkan/probe.h"
#endif

enum {
    EXIT_ALL_DONE = 0,
    EXIT_SOME_FAILED = 1,
    EXIT_USAGE = 2,
    EXIT_CANNOT_RUN = 3,
    EXIT_INTERRUPTED = 130,
};

static const char *prog = "tapedeck";

static void usage_main(FILE *f)
{
    fprintf(f,
            "tapedeck %s: subtitle an archive of home-video scenes, on every GPU and CPU,\n"
            "crash-safe (a rerun finishes only what is unfinished).\n"
            "\n"
            "Usage:\n"
            "  tapedeck run ARCHIVE [options]   process every scene of ARCHIVE\n"
            "  tapedeck status ARCHIVE          what is done, failed and pending\n"
            "  tapedeck devices                 GPUs found and the worker plan\n"
            "  tapedeck models                  Whisper models installed, and where\n"
            "  tapedeck models import DIR       convert a faster-whisper model and install it\n"
            "  tapedeck help [COMMAND]          help on a command\n"
            "  tapedeck --version\n"
            "\n"
            "Example:\n"
            "  tapedeck run ~/tapes --formats srt,vtt,json\n"
            "\n"
            "Run `tapedeck run --help` for the options.\n",
            TAPEDECK_VERSION);
}

static void usage_run(FILE *f)
{
    fprintf(f,
            "Usage: tapedeck run ARCHIVE [options]\n"
            "\n"
            "Finds every media file under ARCHIVE (recursively, in natural order), and for\n"
            "each scene not already done writes SCENE.srt (and .vtt/.json if asked) beside\n"
            "it, then a .SCENE.subtitles.done marker. Scenes that fail get a\n"
            ".SCENE.subtitles.failed marker with the reason; the others go on.\n"
            "\n"
            "Options:\n"
            "  --task NAME           subtitles (default), restore (alias enhance), or\n"
            "                        subtitles,restore (the restored file gets the\n"
            "                        subtitles as a soft track)\n"
            "  --restore-preset P    auto (default), vhs, hi8, dv: strengths and steps;\n"
            "                        field order always comes from the analysis\n"
            "  --restore-quality Q   fast (default: hqdn3d) or high (nlmeans)\n"
            "  --restore-format F    view (default: H.264 CRF 18 in SCENE.restored.mp4),\n"
            "                        archive (FFV1 in .restored.mkv), edit (ProRes, .mov)\n"
            "  --restore-size S      sd (default: 704 wide, SAR 10:11 / 12:11) or hd\n"
            "                        (1440x1080, BT.709)\n"
            "  --restore-codec C     view: h264 (default) or hevc\n"
            "  --restore-opencl W    nlmeans (quality high) through OpenCL: auto (default:\n"
            "                        on GPU workers), on (any OpenCL device, PoCL too), off\n"
            "  --restore-cuda W      deinterlace with yadif_cuda: auto (default: on NVIDIA\n"
            "                        GPU workers), on (any worker that finds CUDA), off;\n"
            "                        with it NVDEC decoding and scale_cuda (size hd)\n"
            "  --restore-vaapi W     decode through VAAPI: auto (default: on Intel GPU\n"
            "                        workers), on (any worker that finds VAAPI), off\n"
            "  --restore-hwenc W     view format: encode on the card (NVENC / VAAPI): auto\n"
            "                        (default: NVIDIA and Intel GPU workers), on, off\n"
            "  --limit N             process at most N pending scenes\n"
            "  --dry-run             print the plan and write nothing\n"
            "  --force               redo scenes that are already done\n"
            "  --devices WHICH       auto (default: every GPU, else CPUs), cpu, or a list of\n"
            "                        device numbers / PCI addresses / UUIDs from\n"
            "                        `tapedeck devices`, e.g. 0,1 or pci:0000:03:00.0\n"
            "  --workers N           CPU workers when no GPU is used (default: whisper and\n"
            "                        restore, one per 8 cores with 8 threads each;\n"
            "                        sphinx, one per core)\n"            "  --cpu-workers N       CPU workers beside GPU workers (default: none while\n"
            "                        the GPU workers compute on the CPU; else the cores\n"
            "                        left after 2 feeding threads per GPU worker, 8 each)\n"
            "  --engine NAME         auto (default: whisper when a Whisper model is\n"
            "                        installed, else sphinx), whisper or sphinx\n"
            "  --model NAME|PATH     whisper: a model name (tiny, base.en, small, medium,\n"
            "                        large-v3, ...) looked up as ggml-NAME.bin in the\n"
            "                        model folders (see `tapedeck models`), or a file;\n"
            "                        default: the largest installed. sphinx: a model folder\n"
            "  --models-dir DIR      look for Whisper models here first\n"
            "  --language CODE       spoken language, e.g. en, de; auto (whisper default)\n"
            "                        detects it per scene (sphinx: English only)\n"
            "  --beam-size N         whisper: beam width at temperature 0 (default 5;\n"
            "                        1 = greedy, faster)\n"
            "  --compute auto|f32|int8\n"
            "                        whisper on the CPU: int8 quantizes the linear layers\n"
            "                        (about 2x faster; WER on the test clips unchanged),\n"
            "                        f32 is the reference; auto (default) is int8 where the\n"
            "                        CPU has AVX-512 VNNI, else f32\n"
            "  --decode MODE         whisper: batched (default: speech cut at pauses into\n"
            "                        chunks of about 90 s, each walked window by window,\n"
            "                        the chunks decoded together) or sequential\n"
            "                        (openai-whisper's loop over the whole scene, one\n"
            "                        window at a time, each conditioned on the text\n"
            "                        before it)\n"
            "  --batch N             whisper, batched: windows decoded together (default:\n"
            "                        the most whose memory fits each worker's share of\n"
            "                        the memory available; 16 at most on a CPU)\n"
            "  --streams N           whisper, batched: scenes each worker decodes at once,\n"
            "                        their windows batched together, so that short scenes\n"
            "                        fill a batch (default 2; 1 = one scene at a time)\n"
            "  --backend B           whisper: auto (default: Vulkan on GPU workers where it\n"
            "                        can run, else the CPU, with the reason logged),\n"
            "                        cpu, or vulkan (an error where it cannot run)\n"
            "  --translate           whisper: subtitles in English, whatever is spoken\n"
            "  --formats LIST        srt,vtt,json (default: srt; srt is always written)\n"
            "  --threads N           threads per worker (engine-specific; default: auto)\n"
            "  --retries N           retries of a scene whose worker crashed or stalled\n"
            "                        (default: 2, so at most 3 attempts)\n"
            "  --stall-timeout S     seconds without a heartbeat before a worker is\n"
            "                        killed and its scene retried (default: 300)\n"
            "  --no-progress         plain log lines even on a terminal\n"
            "  -v, -vv               more detail; -q: only warnings and errors\n"
            "  -h, --help            this help\n"
            "\n"
            "Ctrl-C once: no new scenes, those in flight finish. Twice: stop now (scenes in\n"
            "flight are abandoned, nothing half-written is left). Run again to resume.\n"
            "\n"
            "Exit codes: 0 all done, 1 some scenes failed, 2 usage error, 3 could not run,\n"
            "130 interrupted.\n");
}

static void usage_status(FILE *f)
{
    fprintf(f,
            "Usage: tapedeck status ARCHIVE [--task NAME] [-v]\n"
            "\n"
            "Counts the scenes that are done, failed (with the reason) and pending.\n"
            "-v also lists pending scenes and why a marker no longer counts.\n");
}

static void usage_devices(FILE *f)
{
    fprintf(f,
            "Usage: tapedeck devices [--devices WHICH] [--workers N] [--cpu-workers N]\n"
            "                        [--model NAME] [--allow-downgrade] [--language L]\n"
            "                        [--models-dir DIR] [--decode MODE] [--batch N]\n"
            "                        [--beam-size N] [--backend auto|cpu|vulkan]\n"
            "\n"
            "Lists the GPUs found (NVIDIA through NVML, Intel through Level Zero Sysman or\n"
            "sysfs, AMD through sysfs; no GPU runtime is started) with their memory, NUMA\n"
            "node and local CPUs, and the workers `tapedeck run` would start: the card,\n"
            "the variables that pin each to it, its CPUs and threads, the Whisper model\n"
            "and batch that fit the card's free memory ([vram-check]), and why. The\n"
            "options after --cpu-workers are run's, and change the pick as they would.\n"
            "TAPEDECK_DEVICES overrides discovery (see README).\n");
}

static void usage_models(FILE *f)
{
    fprintf(f,
            "Usage: tapedeck models [--models-dir DIR] [--beam-size N]\n"
            "                       [--compute auto|f32|int8]\n"
            "       tapedeck models import CT2_DIR [--name NAME] [--models-dir DIR]\n"
            "                                      [--type f16|f32] [--note TEXT] [--force]\n"
            "\n"
            "Lists the Whisper models found (whisper.cpp's ggml-NAME.bin files) with their\n"
            "size, type, dimensions and the memory a worker needs for them (with that beam\n"
            "size and compute type: int8 also holds an int8 copy of the weights), and the\n"
            "folders searched, in order:\n"
            "  --models-dir DIR, then each folder of $TAPEDECK_MODELS_DIR (colon-separated),\n"
            "  $XDG_DATA_HOME/tapedeck/models (~/.local/share/tapedeck/models),\n"
            "  /usr/local/share/tapedeck/models, /usr/share/tapedeck/models.\n"
            "`tapedeck run --model NAME` takes the first ggml-NAME.bin found; without\n"
            "--model it takes the default marked here (the largest). Each model's line\n"
            "says where it came from, when `models import` recorded it.\n"
            "\n"
            "`models import` converts a CTranslate2 Whisper model (faster-whisper's format: a\n"
            "folder with model.bin, vocabulary.json or .txt, config.json) into\n"
            "ggml-NAME.bin in the first folder above (or --models-dir), and records where it\n"
            "came from beside it (ggml-NAME.bin.origin.json).\n"
            "  --name NAME     the model's name (default: its size, e.g. base.en; needed when\n"
            "                  the dimensions are not a released size)\n"
            "  --type f16|f32  the weights' type in the file (default f16, as whisper.cpp's)\n"
            "  --note TEXT     free text for the origin record (e.g. the package it came in)\n"
            "  --force         replace an installed model of that name\n");
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry `tapedeck help` for usage.\n");
    va_end(ap);
    return EXIT_USAGE;
}

static char *self_exe(void)
{
    static char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0)
        return NULL;
    path[n] = '\0';
    return path;
}

/* ---- run -------------------------------------------------------------- */

/* Options of the commands parsed here (run's are in run/options.c). */
enum {
    OPT_TASK = 256, OPT_FORCE, OPT_DEVICES, OPT_WORKERS, OPT_CPU_WORKERS, OPT_ENGINE, OPT_MODEL, OPT_LANGUAGE,
    OPT_FORMATS, OPT_THREADS, OPT_SLOT, OPT_ARCHIVE, OPT_LOG_LEVEL, OPT_VENDOR, OPT_PCI,
    OPT_MODELS_DIR, OPT_BEAM_SIZE, OPT_COMPUTE, OPT_TRANSLATE, OPT_DECODE, OPT_BATCH, OPT_BACKEND, OPT_STREAMS,
    OPT_ALLOW_DOWNGRADE,
    OPT_RESTORE_PRESET = 400, OPT_RESTORE_QUALITY, OPT_RESTORE_FORMAT, OPT_RESTORE_SIZE, OPT_RESTORE_CODEC,
    OPT_RESTORE_OPENCL, OPT_RESTORE_CUDA, OPT_RESTORE_VAAPI, OPT_RESTORE_HWENC,
};

static void print_plan(const td_run_opts *o, const td_plan *p)
{
    printf("Plan for %s (task %s)%s\n", o->archive, o->task, o->dry_run ? " [dry run: nothing is written]" : "");
    printf("  engine:  %s\n", p->engine_note);
    printf("  workers: %s\n", p->device_note);
    if (p->vram_note[0])
        printf("  %s\n", p->vram_note);
    for (size_t i = 0; i < p->n_workers; i++) {
        const td_device *d = p->workers[i].device;
        if (d && p->workers[i].vram_why[0])
            printf("    worker %zu: %s %s %s  %s=%s  [vram-check] model %s, batch %d: %s\n", i, d->vendor, d->pci,
                   d->name, d->affinity_var, d->affinity_value, p->workers[i].model_name,
                   p->workers[i].batch > 0 ? p->workers[i].batch : 1, p->workers[i].vram_why);
        else if (d)
            printf("    worker %zu: %s %s %s  %s=%s\n", i, d->vendor, d->pci, d->name, d->affinity_var,
                   d->affinity_value);
        else
            printf("    worker %zu: cpu\n", i);
    }
    size_t later = 0;
    for (size_t i = 0; i < p->scenes.count; i++)
        later += p->state[i] == TD_PLAN_LATER;
    printf("  scenes:  %zu found, %zu done (skipped), %zu to process, %zu refused, %zu beyond --limit\n",
           p->scenes.count, p->n_done, p->n_queue, p->n_refused, later);
    for (size_t i = 0; i < p->scenes.count; i++) {
        const char *tag;
        switch (p->state[i]) {
        case TD_PLAN_NEW: tag = "new"; break;
        case TD_PLAN_REDO: tag = "redo"; break;
        case TD_PLAN_REFUSE: tag = "refuse"; break;
        case TD_PLAN_LATER: tag = "later"; break;
        default: tag = td_log_enabled(TD_LOG_VERBOSE) ? "done" : NULL; break;
        }
        if (!tag)
            continue;
        char name[512];
        printf("    %-6s %s%s%s%s\n", tag, td_printable(p->scenes.items[i].rel, name, sizeof name),
               p->why[i] ? "  (" : "",
               p->why[i] ? p->why[i] : "", p->why[i] ? ")" : "");
    }
}

static int cmd_run(int argc, char **argv)
{
    td_run_opts o;
    td_error err = {0};
    int prc = td_run_opts_parse(argc, argv, &o, &err);
    if (prc == TD_OPTS_HELP) {
        usage_run(stdout);
        return EXIT_ALL_DONE;
    }
    if (prc != TD_OK)
        return usage_error("%s", err.msg);
    td_log_set_level(o.verbosity);
    o.progress = o.progress && isatty(STDERR_FILENO);
    o.self_exe = self_exe();
    if (!o.self_exe) {
        fprintf(stderr, "%s: cannot find my own executable (/proc/self/exe)\n", prog);
        return EXIT_CANNOT_RUN;
    }

    td_devices_set_probe_exe(o.self_exe);
    td_plan plan;
    int rc = td_plan_build(&o, &plan, &err);
    if (rc) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        td_plan_release(&plan);
        return rc == TD_EINVAL ? EXIT_USAGE : EXIT_CANNOT_RUN;
    }
    if (o.dry_run) {
        print_plan(&o, &plan);
        td_plan_release(&plan);
        return EXIT_ALL_DONE;
    }
    td_info("tapedeck %s | archive %s | task %s | engine %s | %s", TAPEDECK_VERSION, o.archive, o.task,
            plan.engine_note, plan.device_note);
    char hw[1024], wk[1024];
    td_plan_describe_hardware(&plan, sysconf(_SC_NPROCESSORS_ONLN), hw, sizeof hw);
    td_plan_describe_workers(&plan, wk, sizeof wk);
    td_info("Hardware detected: %s", hw);
    td_info("Total scenes: %zu | workers: %s | to process: %zu | already done: %zu%s", plan.scenes.count, wk,
            plan.n_queue, plan.n_done, o.limit >= 0 ? " | --limit applied" : "");
    for (size_t i = 0; i < plan.n_workers; i++) {
        const td_plan_worker *w = &plan.workers[i];
        if (w->device && w->vram_why[0])
            td_info("[vram-check] gpu%d %s: model %s, batch %d: %s", w->slot, w->device->pci, w->model_name,
                    w->batch > 0 ? w->batch : 1, w->vram_why);
    }
    if (plan.vram_note[0])
        td_warn("%s", plan.vram_note);
    for (size_t i = 0; i < plan.scenes.count; i++) {
        if (plan.state[i] == TD_PLAN_SKIP) {
            char name[512];
            td_info("[skip] Already processed: %s (task=%s)",
                    td_printable(plan.scenes.items[i].rel, name, sizeof name), o.task);
        }
    }

    td_run_summary sum;
    rc = td_run_execute(&o, &plan, &sum, &err);
    char wall[32];
    td_format_hms(sum.wall_seconds, wall, sizeof wall);
    char frames[96] = "";
    if (sum.frames > 0)
        snprintf(frames, sizeof frames, " | %lld frames, %.1f fps", sum.frames,
                 sum.wall_seconds > 0 ? (double)sum.frames / sum.wall_seconds : 0.0);
    char unres[64] = "";
    if (sum.unresolved)
        snprintf(unres, sizeof unres, " | unresolved: %zu", sum.unresolved);
    td_info("[summary] processed: %zu | skipped: %zu | failed: %zu | left: %zu | audio: %.1f s in %s wall "
            "| %.2f audio s per wall s%s%s",
            sum.processed, sum.skipped, sum.failed, sum.left, sum.audio_seconds, wall,
            sum.wall_seconds > 0 ? sum.audio_seconds / sum.wall_seconds : 0.0, frames, unres);
    td_plan_release(&plan);
    if (rc) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return EXIT_CANNOT_RUN;
    }
    if (sum.interrupted && sum.left > 0) {
        td_warn("interrupted: %zu scene(s) left; run the same command again to finish them", sum.left);
        return EXIT_INTERRUPTED;
    }
    if (sum.failed > 0) {
        td_warn("%zu scene(s) failed; see `tapedeck status %s`", sum.failed, o.archive);
        return EXIT_SOME_FAILED;
    }
    return EXIT_ALL_DONE; /* interrupted, but nothing was left undone */
}

/* ---- status ------------------------------------------------------------ */

static int cmd_status(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"task", required_argument, 0, OPT_TASK},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *task = "subtitles";
    int verbose = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_TASK: task = optarg; break;
        case 'v': verbose = 1; break;
        case 'h': usage_status(stdout); return EXIT_ALL_DONE;
        default: return usage_error("%s", "bad option");
        }
    }
    if (optind != argc - 1)
        return usage_error("%s", "status needs one ARCHIVE directory");
    const char *archive = argv[optind];
    td_scene_list list;
    td_error err = {0};
    if (td_scan_archive(archive, &list, &err) != TD_OK) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return EXIT_CANNOT_RUN;
    }
    size_t done = 0, failed = 0, pending = 0, stale = 0;
    for (size_t i = 0; i < list.count; i++) {
        const td_scene *s = &list.items[i];
        enum td_marker_state st = TD_MARKER_NONE;
        char why[TD_ERROR_MSG_MAX + 64] = "";
        char name[512];
        if (td_marker_check(s, task, &st, why, sizeof why, &err) != TD_OK) {
            st = TD_MARKER_STALE;
            snprintf(why, sizeof why, "%s", err.msg);
        }
        switch (st) {
        case TD_MARKER_DONE: done++; break;
        case TD_MARKER_FAILED: {
            failed++;
            td_failed_info info;
            if (td_marker_read_failed(s, task, &info, &err) == TD_OK) {
                printf("failed   %s: %s [%s, %d attempt%s, %s]\n", td_printable(s->rel, name, sizeof name),
                       info.reason, info.kind,
                       info.attempts, info.attempts == 1 ? "" : "s", info.time);
                td_failed_info_release(&info);
            } else {
                printf("failed   %s: %s\n", td_printable(s->rel, name, sizeof name), why);
            }
            break;
        }
        case TD_MARKER_STALE:
            stale++;
            pending++;
            if (verbose)
                printf("pending  %s (marker does not count: %s)\n", td_printable(s->rel, name, sizeof name),
                       why);
            break;
        default:
            pending++;
            if (verbose)
                printf("pending  %s\n", td_printable(s->rel, name, sizeof name));
        }
    }
    printf("%s: %zu scenes | task %s: done %zu | failed %zu | pending %zu", archive, list.count, task, done,
           failed, pending);
    if (stale)
        printf(" (%zu with an outdated marker)", stale);
    printf("\n");
    td_scene_list_release(&list);
    return EXIT_ALL_DONE;
}

/* ---- devices ----------------------------------------------------------- */

static int cmd_devices(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"devices", required_argument, 0, OPT_DEVICES},
        {"workers", required_argument, 0, OPT_WORKERS},
        {"cpu-workers", required_argument, 0, OPT_CPU_WORKERS},
        {"model", required_argument, 0, OPT_MODEL},
        {"allow-downgrade", no_argument, 0, OPT_ALLOW_DOWNGRADE},
        {"language", required_argument, 0, OPT_LANGUAGE},
        {"models-dir", required_argument, 0, OPT_MODELS_DIR},
        {"decode", required_argument, 0, OPT_DECODE},
        {"batch", required_argument, 0, OPT_BATCH},
        {"beam-size", required_argument, 0, OPT_BEAM_SIZE},
        {"backend", required_argument, 0, OPT_BACKEND},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    td_run_opts o;
    td_run_opts_default(&o);
    long v = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_DEVICES: o.devices = optarg; break;
        case OPT_WORKERS:
            if (td_parse_long(optarg, 1, TD_MAX_DEVICES, &v))
                return usage_error("--workers needs a number from 1 to 64, not '%s'", optarg);
            o.workers = (int)v;
            break;
        case OPT_CPU_WORKERS:
            if (td_parse_long(optarg, 0, TD_MAX_DEVICES, &v))
                return usage_error("--cpu-workers needs a number from 0 to 64, not '%s'", optarg);
            o.cpu_workers = (int)v;
            break;
        case OPT_MODEL: o.model = optarg; break;
        case OPT_ALLOW_DOWNGRADE: o.allow_downgrade = 1; break;
        case OPT_LANGUAGE: o.language = optarg; break;
        case OPT_MODELS_DIR: o.models_dir = optarg; break;
        case OPT_DECODE:
            if ((o.decode = td_wdecode_mode_parse(optarg)) < 0)
                return usage_error("--decode needs batched or sequential, not '%s'", optarg);
            break;
        case OPT_BATCH:
            if (td_parse_long(optarg, 1, TD_WDEC_MAX_BATCH, &v))
                return usage_error("--batch needs a number from 1 to %d, not '%s'", TD_WDEC_MAX_BATCH, optarg);
            o.batch = (int)v;
            break;
        case OPT_BEAM_SIZE:
            if (td_parse_long(optarg, 1, 16, &v))
                return usage_error("--beam-size needs a number from 1 to 16, not '%s'", optarg);
            o.beam_size = (int)v;
            break;
        case OPT_BACKEND:
            if (strcmp(optarg, "auto") != 0 && strcmp(optarg, "cpu") != 0 && strcmp(optarg, "vulkan") != 0)
                return usage_error("--backend needs auto, cpu or vulkan, not '%s'", optarg);
            o.backend = optarg;
            break;
        case 'h': usage_devices(stdout); return EXIT_ALL_DONE;
        default: return usage_error("%s", "bad option");
        }
    }
    td_devices_set_probe_exe(self_exe()); /* NULL: no Level Zero probe child */
    /* The devices part of `run`'s plan, for the whisper engine (the
     * default); no engine is probed and no scene scanned. */
    static td_plan plan; /* large: keep it off the stack */
    memset(&plan, 0, sizeof plan);
    plan.engine = "whisper";
    /* GPU workers' backend as run chooses it (plan.c) */
    snprintf(plan.backend, sizeof plan.backend, "%s",
             !(o.backend && strcmp(o.backend, "cpu") == 0) && td_wbackend_find("vulkan") ? "vulkan"
                                                                                       : td_wbackend_cpu.name);
    td_error err = {0};
    if (td_plan_devices(&o, &plan, &err) != TD_OK) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return EXIT_USAGE;
    }
    const td_device_list *list = &plan.devices;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    char hw[1024];
    td_plan_describe_hardware(&plan, ncpu, hw, sizeof hw);
    printf("Hardware detected: %s\n", hw);
    printf("CPU: %ld core(s)\n", ncpu);
    printf("GPUs: %zu\n", list->count);
    if (list->count)
        printf("  %-3s %-7s %-13s %-28s %-11s %-11s %-4s %-12s %-18s %s\n", "#", "vendor", "PCI", "name",
               "total GiB", "free GiB", "NUMA", "local CPUs", "source", "UUID");
    for (size_t i = 0; i < list->count; i++) {
        const td_device *d = &list->items[i];
        char total[32] = "?", free_b[32] = "?", numa[16] = "-";
        if (d->mem_total >= 0)
            snprintf(total, sizeof total, "%.1f", (double)d->mem_total / 1073741824.0);
        if (d->mem_free >= 0)
            snprintf(free_b, sizeof free_b, "%.1f", (double)d->mem_free / 1073741824.0);
        if (d->numa_node >= 0)
            snprintf(numa, sizeof numa, "%d", d->numa_node);
        printf("  %-3zu %-7s %-13s %-28s %-11s %-11s %-4s %-12s %-18s %s\n", i, d->vendor, d->pci, d->name,
               total, free_b, numa, d->local_cpus[0] ? d->local_cpus : "-", d->source,
               d->uuid[0] ? d->uuid : "-");
    }
    if (list->notes[0])
        printf("Notes: %s\n", list->notes);
    /* What the Vulkan backend could open, asked by a child (the process
     * that plans loads no GPU runtime) */
    static td_vulkan_list vk; /* large */
    if (!td_wbackend_find("vulkan")) {
        printf("Vulkan: not built into this tapedeck\n");
    } else if (td_devices_probe_vulkan(&vk) != 0 || vk.count == 0) {
        printf("Vulkan: %s\n", vk.note[0] ? vk.note : "no device");
    } else {
        static const char *types[] = {"other", "integrated", "discrete", "virtual", "cpu"};
        printf("Vulkan: %zu device(s)\n", vk.count);
        for (size_t i = 0; i < vk.count; i++) {
            const td_vulkan_seen *vd = &vk.items[i];
            char mem[64] = "";
            if (vd->mem_total >= 0 && vd->mem_free >= 0)
                snprintf(mem, sizeof mem, ", %.1f of %.1f GiB free", (double)vd->mem_free / 1073741824.0,
                         (double)vd->mem_total / 1073741824.0);
            else if (vd->mem_total >= 0)
                snprintf(mem, sizeof mem, ", %.1f GiB", (double)vd->mem_total / 1073741824.0);
            printf("  %s (%s, PCI %s%s): %s%s%s%s\n", vd->name, types[vd->type], vd->pci[0] ? vd->pci : "-",
                   mem, vd->usable ? "usable" : "not usable: ", vd->usable ? "" : vd->reason,
                   vd->usable && vd->matrix[0] ? "; matrix engines: " : "",
                   vd->usable && vd->matrix[0] ? vd->matrix : "");
        }
    }
    printf("Worker plan (--devices %s): %s\n", o.devices, plan.device_note);
    if (plan.vram_note[0])
        printf("  %s\n", plan.vram_note);
    for (size_t i = 0; i < plan.n_workers; i++) {
        const td_plan_worker *w = &plan.workers[i];
        int threads = w->threads > 0 ? w->threads : plan.threads;
        const td_device *d = w->device;
        if (!d) {
            /* CPU workers compute on the CPU unless --backend vulkan */
            printf("  worker %d: cpu, backend %s, %d thread(s)\n", w->slot,
                   o.backend && strcmp(o.backend, "vulkan") == 0 ? "vulkan" : td_wbackend_cpu.name, threads);
            continue;
        }
        const char *pairs[2][2];
        size_t np = td_affinity_env(d, pairs);
        printf("  worker %d: %s %s (%s), backend %s, %d thread(s), CPUs %s |", w->slot, d->vendor, d->pci,
               d->name, plan.backend, threads, d->local_cpus[0] ? d->local_cpus : "all");
        for (size_t k = 0; k < np; k++)
            printf(" %s=%s", pairs[k][0], pairs[k][1]);
        printf("\n");
        if (w->vram_why[0])
            printf("    [vram-check] model %s, batch %d: %s\n", w->model_name, w->batch > 0 ? w->batch : 1,
                   w->vram_why);
    }
    return EXIT_ALL_DONE;
}

/* `tapedeck probe-vulkan` (not for users): the Vulkan child of device
 * discovery and `tapedeck devices` (devices.h); its answer on stdout. */
static int cmd_probe_vulkan(void)
{
#ifdef TD_HAVE_VULKAN
    size_t need = td_vulkan_probe_text(NULL, 0);
    char *text = malloc(need + 1);
    if (!text)
        return EXIT_CANNOT_RUN;
    td_vulkan_probe_text(text, need + 1);
    int ok = fputs(text, stdout) >= 0 && fflush(stdout) == 0;
    free(text);
    return ok ? EXIT_ALL_DONE : EXIT_CANNOT_RUN;
#else
    return puts("note vulkan: not built into this tapedeck") >= 0 ? EXIT_ALL_DONE : EXIT_CANNOT_RUN;
#endif
}

/* `tapedeck probe-level-zero` (not for users): the Level Zero child of
 * device discovery (devices.h); its answer on stdout. */
static int cmd_probe_level_zero(void)
{
    static td_device_list list; /* large */
    td_devices_probe_level_zero(&list);
    size_t need = td_devices_format_probe(&list, NULL, 0);
    char *text = malloc(need + 1);
    if (!text)
        return EXIT_CANNOT_RUN;
    td_devices_format_probe(&list, text, need + 1);
    int ok = fputs(text, stdout) >= 0 && fflush(stdout) == 0;
    free(text);
    return ok ? EXIT_ALL_DONE : EXIT_CANNOT_RUN;
}

/* ---- models ------------------------------------------------------------ */

/* "tiny", "base", ... when the dimensions are a released size, else "custom". */
static const char *size_name(const td_whparams *hp)
{
    static const struct {
        const char *name;
        int state, layers;
    } sizes[] = {{"tiny", 384, 4}, {"base", 512, 6}, {"small", 768, 12}, {"medium", 1024, 24},
                 {"large", 1280, 32}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (hp->n_audio_state == sizes[i].state && hp->n_audio_layer == sizes[i].layers)
            return hp->n_text_layer == 4 && sizes[i].state == 1280 ? "large-turbo" : sizes[i].name;
    return "custom";
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* `tapedeck models import DIR`: CTranslate2 folder -> ggml-NAME.bin. */
static int cmd_models_import(int argc, char **argv)
{
    enum { OPT_NAME = 512, OPT_TYPE, OPT_NOTE, OPT_FORCE_IMPORT };
    static const struct option longopts[] = {
        {"models-dir", required_argument, 0, OPT_MODELS_DIR},
        {"name", required_argument, 0, OPT_NAME},
        {"type", required_argument, 0, OPT_TYPE},
        {"note", required_argument, 0, OPT_NOTE},
        {"force", no_argument, 0, OPT_FORCE_IMPORT},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *models_dir = NULL, *name = NULL, *note = NULL;
    enum td_wtype wtype = TD_WT_F16;
    int force = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_MODELS_DIR: models_dir = optarg; break;
        case OPT_NAME: name = optarg; break;
        case OPT_NOTE: note = optarg; break;
        case OPT_FORCE_IMPORT: force = 1; break;
        case OPT_TYPE:
            if (strcmp(optarg, "f16") == 0)
                wtype = TD_WT_F16;
            else if (strcmp(optarg, "f32") == 0)
                wtype = TD_WT_F32;
            else
                return usage_error("--type is f16 or f32, not '%s'", optarg);
            break;
        case 'h': usage_models(stdout); return EXIT_ALL_DONE;
        default: return usage_error("%s", "bad option");
        }
    }
    if (optind != argc - 1)
        return usage_error("%s", "models import takes one folder: a CTranslate2 Whisper model");
    const char *src = argv[optind];
    if (name && (!*name || strchr(name, '/') || name[0] == '.' || strlen(name) > 64))
        return usage_error("--name '%s' is not a model name (like base.en)", name);

    double t0 = now_s();
    td_error err = {0};
    td_ct2_model *m = NULL;
    if (td_ct2_open(src, &m, &err) != TD_OK) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return EXIT_CANNOT_RUN;
    }
    const char *size = td_ct2_size_name(m);
    if (!name && !size) {
        fprintf(stderr,
                "%s: %s: dimensions %dx%d (%d+%d layers) are not a released Whisper size; "
                "name the model with --name\n",
                prog, src, m->hp.n_audio_state, m->hp.n_text_state, m->hp.n_audio_layer,
                m->hp.n_text_layer);
        td_ct2_close(m);
        return EXIT_USAGE;
    }
    if (!name)
        name = size;

    td_wmodels_path sp;
    td_wmodels_search_path(models_dir, &sp);
    char path[PATH_MAX], dir[PATH_MAX];
    int rc = EXIT_CANNOT_RUN;
    if (sp.n == 0 || snprintf(dir, sizeof dir, "%s", sp.dirs[0]) >= (int)sizeof dir ||
        snprintf(path, sizeof path, "%s/ggml-%s.bin", dir, name) >= (int)sizeof path) {
        fprintf(stderr, "%s: no folder to install models in\n", prog);
        goto out;
    }
    if (td_mkdir_p(dir, &err) != TD_OK) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        goto out;
    }
    if (!force && access(path, F_OK) == 0) {
        fprintf(stderr, "%s: %s is installed already (--force replaces it)\n", prog, path);
        goto out;
    }
    printf("importing %s: CTranslate2 %s, %s, %dx%d, %d+%d layers, %s\n", src,
           td_ct2_dtype_name(m->wdtype), size ? size : "custom dims", m->hp.n_audio_state,
           m->hp.n_text_state, m->hp.n_audio_layer, m->hp.n_text_layer,
           m->hp.n_vocab == 51864 ? "English only" : "multilingual");
    if (td_ct2_write_ggml(m, path, wtype, &err) != TD_OK) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        goto out;
    }
    /* The loader validates every field: a file it refuses is not left
     * installed. */
    td_wmodel *check = NULL;
    if (td_wmodel_open(path, &check, &err) != TD_OK) {
        fprintf(stderr, "%s: the imported file does not load, removed: %s\n", prog, err.msg);
        unlink(path);
        goto out;
    }
    td_wmodel_close(check);
    char src_bin[PATH_MAX], sha[TD_SHA256_HEX_LEN + 1] = "", format[64], abs_src[PATH_MAX];
    snprintf(src_bin, sizeof src_bin, "%s/model.bin", src);
    if (td_sha256_file(src_bin, sha, NULL, &err) != TD_OK)
        sha[0] = '\0'; /* the model is in place; the record is a courtesy */
    snprintf(format, sizeof format, "CTranslate2 %s", td_ct2_dtype_name(m->wdtype));
    td_wmodel_origin o = {realpath(src, abs_src) ? abs_src : src, format, sha, note};
    if (td_wmodels_write_origin(path, &o, &err) != TD_OK)
        fprintf(stderr, "%s: warning: %s\n", prog, err.msg);
    struct stat st;
    printf("installed %s as %s (%.1f MB, %s) in %.1f s\n", name, path,
           stat(path, &st) == 0 ? st.st_size / 1e6 : 0.0, wtype == TD_WT_F16 ? "F16" : "F32",
           now_s() - t0);
    rc = EXIT_ALL_DONE;
out:
    td_ct2_close(m);
    return rc;
}

static int cmd_models(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "import") == 0)
        return cmd_models_import(argc - 1, argv + 1);
    static const struct option longopts[] = {
        {"models-dir", required_argument, 0, OPT_MODELS_DIR},
        {"beam-size", required_argument, 0, OPT_BEAM_SIZE},
        {"compute", required_argument, 0, OPT_COMPUTE},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *models_dir = NULL;
    long beam = 5;
    int compute = TD_WCOMPUTE_AUTO;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_MODELS_DIR: models_dir = optarg; break;
        case OPT_BEAM_SIZE:
            if (td_parse_long(optarg, 1, 16, &beam))
                return usage_error("--beam-size needs a number from 1 to 16, not '%s'", optarg);
            break;
        case OPT_COMPUTE:
            compute = td_wcompute_parse(optarg);
            if (compute < 0)
                return usage_error("--compute needs auto, f32 or int8, not '%s'", optarg);
            break;
        case 'h': usage_models(stdout); return EXIT_ALL_DONE;
        default: return usage_error("%s", "bad option");
        }
    }
    if (optind < argc)
        return usage_error("models takes no argument ('%s')", argv[optind]);

    td_wmodels_path sp;
    td_wmodels_search_path(models_dir, &sp);
    printf("Folders searched, in order:\n");
    for (int i = 0; i < sp.n; i++)
        printf("  %s%s\n", sp.dirs[i], access(sp.dirs[i], R_OK | X_OK) == 0 ? "" : "  (absent)");

    td_wmodel_entry *v = NULL;
    size_t n = 0;
    td_error err = {0};
    if (td_wmodels_list(&sp, &v, &n, &err) != TD_OK) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return EXIT_CANNOT_RUN;
    }
    char best[PATH_MAX] = "";
    td_error berr = {0};
    if (td_wmodels_resolve(&sp, NULL, NULL, best, sizeof best, &berr) != TD_OK)
        best[0] = '\0';
    if (n == 0) {
        printf("No Whisper model installed: `tapedeck run` uses the embedded PocketSphinx engine.\n"
               "Put whisper.cpp's ggml-NAME.bin files (e.g. ggml-base.en.bin) in one of the\n"
               "folders above; see README, \"Whisper models\".\n");
        free(v);
        return EXIT_ALL_DONE;
    }
    printf("\n  %-16s %9s %4s %-12s %-13s %12s  %s\n", "NAME", "SIZE", "TYPE", "DIMS", "LANGUAGES",
           "MEMORY", "PATH");
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        td_wmodel *m = NULL;
        td_error merr = {0};
        const char *mark = strcmp(v[i].path, best) == 0 ? "*" : " ";
        if (td_wmodel_open(v[i].path, &m, &merr) != TD_OK) {
            printf("%s %-16s %8.1fM  --  unusable: %s\n", mark, v[i].name, v[i].size / 1048576.0,
                   merr.msg);
            bad++;
            continue;
        }
        td_engine_config cfg = {.model = v[i].path, .beam_size = (int)beam, .compute = compute};
        int64_t need = td_engine_whisper.memory_need(&cfg);
        char dims[32], langs[24], memory[24];
        snprintf(dims, sizeof dims, "%s %dx%d", size_name(&m->hp), m->hp.n_audio_state,
                 m->hp.n_audio_layer);
        if (m->multilingual)
            snprintf(langs, sizeof langs, "%d languages", m->sp.n_langs);
        else
            snprintf(langs, sizeof langs, "English only");
        if (need > 0)
            snprintf(memory, sizeof memory, "%.0f MiB", need / 1048576.0);
        else
            snprintf(memory, sizeof memory, "?");
        printf("%s %-16s %8.1fM %4s %-12s %-13s %12s  %s%s\n", mark, v[i].name,
               v[i].size / 1048576.0, m->wtype == TD_WT_F16 ? "F16" : "F32", dims, langs, memory,
               v[i].path, v[i].shadowed ? "  (shadowed by an earlier one)" : "");
        char origin[PATH_MAX + 256];
        td_wmodels_describe_origin(v[i].path, origin, sizeof origin);
        printf("    from: %s\n", origin[0] ? origin : "not recorded (put there by hand)");
        td_wmodel_close(m);
    }
    printf("\n* the default (the largest; with --language en an English-only model of the same size\n"
           "  is preferred). MEMORY: what one CPU worker holds with --beam-size %ld, compute %s.\n",
           beam, td_wcompute_name(td_wcompute_resolve((enum td_wcompute)compute)));
    free(v);
    return bad ? EXIT_SOME_FAILED : EXIT_ALL_DONE;
}

/* ---- worker (internal) ------------------------------------------------- */

static int cmd_worker(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"slot", required_argument, 0, OPT_SLOT},
        {"archive", required_argument, 0, OPT_ARCHIVE},
        {"task", required_argument, 0, OPT_TASK},
        {"engine", required_argument, 0, OPT_ENGINE},
        {"model", required_argument, 0, OPT_MODEL},
        {"language", required_argument, 0, OPT_LANGUAGE},
        {"formats", required_argument, 0, OPT_FORMATS},
        {"threads", required_argument, 0, OPT_THREADS},
        {"models-dir", required_argument, 0, OPT_MODELS_DIR},
        {"beam-size", required_argument, 0, OPT_BEAM_SIZE},
        {"compute", required_argument, 0, OPT_COMPUTE},
        {"decode", required_argument, 0, OPT_DECODE},
        {"batch", required_argument, 0, OPT_BATCH},
        {"streams", required_argument, 0, OPT_STREAMS},
        {"backend", required_argument, 0, OPT_BACKEND},
        {"translate", no_argument, 0, OPT_TRANSLATE},
        {"allow-downgrade", no_argument, 0, OPT_ALLOW_DOWNGRADE},
        {"log-level", required_argument, 0, OPT_LOG_LEVEL},
        {"vendor", required_argument, 0, OPT_VENDOR},
        {"pci", required_argument, 0, OPT_PCI},
        {"force", no_argument, 0, OPT_FORCE},
        {"restore-preset", required_argument, 0, OPT_RESTORE_PRESET},
        {"restore-quality", required_argument, 0, OPT_RESTORE_QUALITY},
        {"restore-format", required_argument, 0, OPT_RESTORE_FORMAT},
        {"restore-size", required_argument, 0, OPT_RESTORE_SIZE},
        {"restore-codec", required_argument, 0, OPT_RESTORE_CODEC},
        {"restore-opencl", required_argument, 0, OPT_RESTORE_OPENCL},
        {"restore-cuda", required_argument, 0, OPT_RESTORE_CUDA},
        {"restore-vaapi", required_argument, 0, OPT_RESTORE_VAAPI},
        {"restore-hwenc", required_argument, 0, OPT_RESTORE_HWENC},
        {0, 0, 0, 0},
    };
    td_worker_opts o = {.task = "subtitles", .engine = "auto", .formats = "srt"};
    long v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_SLOT: o.index = td_parse_long(optarg, 0, 1000, &v) ? 0 : (int)v; break;
        case OPT_ARCHIVE: o.archive = optarg; break;
        case OPT_TASK: o.task = optarg; break;
        case OPT_ENGINE: o.engine = optarg; break;
        case OPT_MODEL: o.model = optarg; break;
        case OPT_LANGUAGE: o.language = optarg; break;
        case OPT_FORMATS: o.formats = optarg; break;
        case OPT_THREADS: o.threads = td_parse_long(optarg, 0, 1024, &v) ? 0 : (int)v; break;
        case OPT_LOG_LEVEL: td_log_set_level(td_parse_long(optarg, 0, 4, &v) ? TD_LOG_INFO : (int)v); break;
        case OPT_VENDOR: o.vendor = optarg; break;
        case OPT_PCI: o.pci = optarg; break;
        case OPT_FORCE: o.force = 1; break;
        case OPT_MODELS_DIR: o.models_dir = optarg; break;
        case OPT_BEAM_SIZE: o.beam_size = td_parse_long(optarg, 1, 16, &v) ? 0 : (int)v; break;
        case OPT_COMPUTE: o.compute = td_wcompute_parse(optarg); o.compute = o.compute < 0 ? 0 : o.compute; break;
        case OPT_DECODE: o.decode = td_wdecode_mode_parse(optarg); o.decode = o.decode < 0 ? 0 : o.decode; break;
        case OPT_BATCH: o.batch = td_parse_long(optarg, 1, TD_WDEC_MAX_BATCH, &v) ? 0 : (int)v; break;
        case OPT_STREAMS: o.streams = td_parse_long(optarg, 1, TD_WHISPER_MAX_STREAMS, &v) ? 1 : (int)v; break;
        case OPT_BACKEND: o.backend = optarg; break;
        case OPT_TRANSLATE: o.translate = 1; break;
        case OPT_ALLOW_DOWNGRADE: o.allow_downgrade = 1; break;
        case OPT_RESTORE_PRESET: o.restore_preset = optarg; break;
        case OPT_RESTORE_QUALITY: o.restore_quality = optarg; break;
        case OPT_RESTORE_FORMAT: o.restore_format = optarg; break;
        case OPT_RESTORE_SIZE: o.restore_size = optarg; break;
        case OPT_RESTORE_CODEC: o.restore_codec = optarg; break;
        case OPT_RESTORE_OPENCL: o.restore_opencl = optarg; break;
        case OPT_RESTORE_CUDA: o.restore_cuda = optarg; break;
        case OPT_RESTORE_VAAPI: o.restore_vaapi = optarg; break;
        case OPT_RESTORE_HWENC: o.restore_hwenc = optarg; break;
        default: return EXIT_USAGE;
        }
    }
    return td_worker_main(&o);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage_main(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("tapedeck %s\n", TAPEDECK_VERSION);
        return EXIT_ALL_DONE;
    }
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
        usage_main(stdout);
        return EXIT_ALL_DONE;
    }
    if (strcmp(cmd, "help") == 0) {
        const char *topic = argc > 2 ? argv[2] : "";
        if (strcmp(topic, "run") == 0)
            usage_run(stdout);
        else if (strcmp(topic, "status") == 0)
            usage_status(stdout);
        else if (strcmp(topic, "devices") == 0)
            usage_devices(stdout);
        else if (strcmp(topic, "models") == 0)
            usage_models(stdout);
        else
            usage_main(stdout);
        return EXIT_ALL_DONE;
    }
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "status") == 0)
        return cmd_status(argc - 1, argv + 1);
    if (strcmp(cmd, "devices") == 0)
        return cmd_devices(argc - 1, argv + 1);
    if (strcmp(cmd, "models") == 0)
        return cmd_models(argc - 1, argv + 1);
    if (strcmp(cmd, "worker") == 0)
        return cmd_worker(argc - 1, argv + 1);
    if (strcmp(cmd, "probe-level-zero") == 0)
        return cmd_probe_level_zero();
    if (strcmp(cmd, "probe-vulkan") == 0)
        return cmd_probe_vulkan();
    return usage_error("unknown command '%s'", cmd);
}
