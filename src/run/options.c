/* options.c: `tapedeck run` argument parsing (see options.h). */
#include "run/options.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "asr/engine.h"
#include "device/devices.h"
#include "util/log.h"
#include "whisper/backend.h"
#include "whisper/decode.h"

int td_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

enum {
    OPT_TASK = 256, OPT_LIMIT, OPT_DRY_RUN, OPT_FORCE, OPT_DEVICES, OPT_WORKERS, OPT_CPU_WORKERS, OPT_ENGINE,
    OPT_MODEL, OPT_LANGUAGE, OPT_FORMATS, OPT_THREADS, OPT_RETRIES, OPT_STALL, OPT_NO_PROGRESS,
    OPT_MODELS_DIR, OPT_BEAM_SIZE, OPT_COMPUTE, OPT_TRANSLATE, OPT_DECODE, OPT_BATCH, OPT_BACKEND, OPT_STREAMS,
    OPT_ALLOW_DOWNGRADE,
    OPT_RESTORE_PRESET = 400, OPT_RESTORE_QUALITY, OPT_RESTORE_FORMAT, OPT_RESTORE_SIZE, OPT_RESTORE_CODEC,
    OPT_RESTORE_OPENCL, OPT_RESTORE_CUDA, OPT_RESTORE_VAAPI, OPT_RESTORE_HWENC,
};

int td_run_opts_parse(int argc, char **argv, td_run_opts *o, td_error *err)
{
    static const struct option longopts[] = {
        {"task", required_argument, 0, OPT_TASK},
        {"limit", required_argument, 0, OPT_LIMIT},
        {"dry-run", no_argument, 0, OPT_DRY_RUN},
        {"force", no_argument, 0, OPT_FORCE},
        {"devices", required_argument, 0, OPT_DEVICES},
        {"workers", required_argument, 0, OPT_WORKERS},
        {"cpu-workers", required_argument, 0, OPT_CPU_WORKERS},
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
        {"restore-preset", required_argument, 0, OPT_RESTORE_PRESET},
        {"restore-quality", required_argument, 0, OPT_RESTORE_QUALITY},
        {"restore-format", required_argument, 0, OPT_RESTORE_FORMAT},
        {"restore-size", required_argument, 0, OPT_RESTORE_SIZE},
        {"restore-codec", required_argument, 0, OPT_RESTORE_CODEC},
        {"restore-opencl", required_argument, 0, OPT_RESTORE_OPENCL},
        {"restore-cuda", required_argument, 0, OPT_RESTORE_CUDA},
        {"restore-vaapi", required_argument, 0, OPT_RESTORE_VAAPI},
        {"restore-hwenc", required_argument, 0, OPT_RESTORE_HWENC},
        {"retries", required_argument, 0, OPT_RETRIES},
        {"stall-timeout", required_argument, 0, OPT_STALL},
        {"no-progress", no_argument, 0, OPT_NO_PROGRESS},
        {"verbose", no_argument, 0, 'v'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    td_run_opts_default(o);
    int verbosity = TD_LOG_INFO, quiet = 0, no_progress = 0;
    long v;
    int c;
    optind = 0; /* full getopt reset: tests parse several argument lists */
    opterr = 0; /* we say what was wrong ourselves */
    while ((c = getopt_long(argc, argv, ":vqh", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_TASK: o->task = optarg; break;
        case OPT_LIMIT:
            if (td_parse_long(optarg, 0, LONG_MAX, &v))
                return td_error_set(err, TD_EINVAL, "--limit needs a number >= 0, not '%s'", optarg);
            o->limit = v;
            break;
        case OPT_DRY_RUN: o->dry_run = 1; break;
        case OPT_FORCE: o->force = 1; break;
        case OPT_DEVICES: o->devices = optarg; break;
        case OPT_WORKERS:
            if (td_parse_long(optarg, 1, TD_MAX_DEVICES, &v))
                return td_error_set(err, TD_EINVAL, "--workers needs a number from 1 to %d, not '%s'",
                                    TD_MAX_DEVICES, optarg);
            o->workers = (int)v;
            break;
        case OPT_CPU_WORKERS:
            if (td_parse_long(optarg, 0, TD_MAX_DEVICES, &v))
                return td_error_set(err, TD_EINVAL, "--cpu-workers needs a number from 0 to %d, not '%s'",
                                    TD_MAX_DEVICES, optarg);
            o->cpu_workers = (int)v;
            break;
        case OPT_ENGINE: o->engine = optarg; break;
        case OPT_MODEL: o->model = optarg; break;
        case OPT_LANGUAGE: o->language = optarg; break;
        case OPT_FORMATS: o->formats = optarg; break;
        case OPT_THREADS:
            if (td_parse_long(optarg, 0, 1024, &v))
                return td_error_set(err, TD_EINVAL, "--threads needs a number from 0 to 1024, not '%s'", optarg);
            o->threads = (int)v;
            break;
        case OPT_MODELS_DIR: o->models_dir = optarg; break;
        case OPT_BEAM_SIZE:
            if (td_parse_long(optarg, 1, 16, &v))
                return td_error_set(err, TD_EINVAL, "--beam-size needs a number from 1 to 16, not '%s'", optarg);
            o->beam_size = (int)v;
            break;
        case OPT_COMPUTE: {
            int ct = td_wcompute_parse(optarg);
            if (ct < 0)
                return td_error_set(err, TD_EINVAL, "--compute needs auto, f32 or int8, not '%s'", optarg);
            o->compute = ct;
            break;
        }
        case OPT_DECODE: {
            int dm = td_wdecode_mode_parse(optarg);
            if (dm < 0)
                return td_error_set(err, TD_EINVAL, "--decode needs batched or sequential, not '%s'",
                                    optarg);
            o->decode = dm;
            break;
        }
        case OPT_BATCH:
            if (td_parse_long(optarg, 1, TD_WDEC_MAX_BATCH, &v))
                return td_error_set(err, TD_EINVAL, "--batch needs a number from 1 to %d, not '%s'",
                                    TD_WDEC_MAX_BATCH, optarg);
            o->batch = (int)v;
            break;
        case OPT_STREAMS:
            if (td_parse_long(optarg, 1, TD_WHISPER_MAX_STREAMS, &v))
                return td_error_set(err, TD_EINVAL, "--streams needs a number from 1 to %d, not '%s'",
                                    TD_WHISPER_MAX_STREAMS, optarg);
            o->streams = (int)v;
            break;
        case OPT_BACKEND:
            if (strcmp(optarg, "auto") != 0 && strcmp(optarg, "cpu") != 0 &&
                strcmp(optarg, "vulkan") != 0)
                return td_error_set(err, TD_EINVAL, "--backend needs auto, cpu or vulkan, not '%s'",
                                    optarg);
            o->backend = optarg;
            break;
        case OPT_TRANSLATE: o->translate = 1; break;
        case OPT_ALLOW_DOWNGRADE: o->allow_downgrade = 1; break;
        case OPT_RESTORE_PRESET: o->restore_preset = optarg; break;
        case OPT_RESTORE_QUALITY: o->restore_quality = optarg; break;
        case OPT_RESTORE_FORMAT: o->restore_format = optarg; break;
        case OPT_RESTORE_SIZE: o->restore_size = optarg; break;
        case OPT_RESTORE_CODEC: o->restore_codec = optarg; break;
        case OPT_RESTORE_OPENCL: o->restore_opencl = optarg; break;
        case OPT_RESTORE_CUDA: o->restore_cuda = optarg; break;
        case OPT_RESTORE_VAAPI: o->restore_vaapi = optarg; break;
        case OPT_RESTORE_HWENC: o->restore_hwenc = optarg; break;
        case OPT_RETRIES:
            if (td_parse_long(optarg, 0, 100, &v))
                return td_error_set(err, TD_EINVAL, "--retries needs a number from 0 to 100, not '%s'", optarg);
            o->retries = (int)v;
            break;
        case OPT_STALL:
            if (td_parse_long(optarg, 1, 86400, &v))
                return td_error_set(err, TD_EINVAL, "--stall-timeout needs seconds from 1 to 86400, not '%s'",
                                    optarg);
            o->stall_timeout = (double)v;
            break;
        case OPT_NO_PROGRESS: no_progress = 1; break;
        case 'v': verbosity++; break;
        case 'q': quiet = 1; break;
        case 'h': return TD_OPTS_HELP;
        case ':':
            return td_error_set(err, TD_EINVAL, "option '%s' needs a value", argv[optind - 1]);
        default:
            return td_error_set(err, TD_EINVAL, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return td_error_set(err, TD_EINVAL, "run needs an ARCHIVE directory");
    if (optind != argc - 1)
        return td_error_set(err, TD_EINVAL, "run takes one ARCHIVE, not also '%s'", argv[optind + 1]);
    o->archive = argv[optind];
    /* The task list and the restore values are checked here, so a typo is
     * a usage error (exit 2) before anything is scanned. */
    const td_task_ops *tasks[TD_MAX_TASKS];
    size_t n_tasks;
    if (td_task_list_parse(o->task, tasks, &n_tasks, err) != TD_OK)
        return TD_EINVAL;
    td_restore_args ra = {o->restore_preset, o->restore_quality, o->restore_format, o->restore_size,
                          o->restore_codec, o->restore_opencl, o->restore_cuda, o->restore_vaapi,
                          o->restore_hwenc};
    td_restore_settings rs;
    if (td_restore_args_parse(&ra, &rs, err) != TD_OK)
        return TD_EINVAL;
    if (quiet)
        verbosity = TD_LOG_WARN;
    o->verbosity = verbosity > TD_LOG_DEBUG ? TD_LOG_DEBUG : verbosity;
    o->progress = !no_progress && !quiet;
    return TD_OK;
}
