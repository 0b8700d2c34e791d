/* restore.c: the restore task's table entry: one scene analysed, restored,
 * checked and committed (see restore.h). */
#include "task/restore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libavutil/hwcontext.h>

#include "archive/marker.h"
#include "media/video_analyze.h"
#include "media/video_chain.h"
#include "media/video_io.h"
#include "media/video_restore.h"
#include "task/task.h"
#include "util/atomic.h"
#include "util/fault.h"

static const char *media_suffix(enum td_restore_format f)
{
    switch (f) {
    case TD_RFORMAT_ARCHIVE: return ".restored.mkv";
    case TD_RFORMAT_EDIT: return ".restored.mov";
    default: return ".restored.mp4";
    }
}

static const char *muxer_of(enum td_restore_format f)
{
    switch (f) {
    case TD_RFORMAT_ARCHIVE: return "matroska";
    case TD_RFORMAT_EDIT: return "mov";
    default: return "mp4";
    }
}

size_t td_restore_output_names(const td_scene *scene, const td_restore_settings *s, char *names[2])
{
    const char *suffix[2] = {media_suffix(s->format), ".restore.json"};
    for (size_t i = 0; i < 2; i++) {
        size_t len = strlen(scene->stem) + strlen(suffix[i]) + 1;
        names[i] = malloc(len);
        if (!names[i]) {
            if (i)
                free(names[0]);
            return 0;
        }
        snprintf(names[i], len, "%s%s", scene->stem, suffix[i]);
    }
    return 2;
}

static int fingerprint_accept(void *user, const char *had)
{
    return td_restore_fingerprint_ok(user, had);
}

static int restore_check(const td_scene *scene, const td_task_config *cfg, enum td_marker_state *state,
                         char *why, size_t why_len, td_error *err)
{
    char *names[2];
    if (td_restore_output_names(scene, &cfg->restore, names) != 2)
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", scene->path);
    int rc = td_marker_check_settings_fn(scene, TD_TASK_RESTORE, (const char *const *)names, 2, fingerprint_accept,
                                         (void *)&cfg->restore, state, why, why_len, err);
    free(names[0]);
    free(names[1]);
    return rc;
}

/* Progress in seconds of the scene for the worker's heartbeat: each frame
 * decoded is a beat, so a filter that hangs becomes a stall the
 * supervisor retries. */
typedef struct beat {
    td_progress_fn fn;
    void *user;
    const td_task_env *env;
    double fps;          /* the input's */
    long long total;     /* the scene's frames, estimated; 0 while analysing */
    double t0;           /* when the transcode started */
} beat;

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int on_frames(void *user, int64_t frames)
{
    beat *b = user;
    if (b->total > 0 && b->env && b->env->frames) {
        double t = mono_now() - b->t0;
        b->env->frames(b->env->frames_user, (long long)frames, b->total, t > 0 ? (double)frames / t : 0);
    }
    if (!b->fn)
        return 0;
    return b->fn(b->user, (double)frames / (b->fps > 0 ? b->fps : 25.0));
}

/* A temporary name in the scene's folder, in the form td_atomic_sweep_orphans
 * removes if we die: ".tdtmp.<pid>.<final>.XXXXXX". */
static int make_temp(const char *final_path, char *tmp, size_t len, td_error *err)
{
    const char *slash = strrchr(final_path, '/');
    const char *base = slash ? slash + 1 : final_path;
    int dirlen = slash ? (int)(slash - final_path) : 1;
    const char *dir = slash ? final_path : ".";
    int n = snprintf(tmp, len, "%.*s/" TD_TEMP_PREFIX "%ld.%.150s.XXXXXX", dirlen, dir, (long)getpid(), base);
    if (n < 0 || (size_t)n >= len)
        return td_error_set(err, TD_EINVAL, "%s: path too long", final_path);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return td_error_errno(err, TD_EIO, errno, "%s: cannot create a temporary file", final_path);
    int rc = TD_OK;
    if (fchmod(fd, 0644) != 0)
        rc = td_error_errno(err, TD_EIO, errno, "%s: chmod of temporary file", final_path);
    close(fd);
    if (rc)
        unlink(tmp);
    return rc;
}

static int commit(const char *tmp, const char *final_path, const char *dir, td_error *err)
{
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return td_error_errno(err, TD_EIO, errno, "%s: cannot reopen", tmp);
    int rc = TD_OK;
    if (fsync(fd) != 0)
        rc = td_error_errno(err, TD_EIO, errno, "%s: fsync failed", final_path);
    close(fd);
    if (rc)
        return rc;
    td_fault_point("write", final_path);
    if (rename(tmp, final_path) != 0)
        return td_error_errno(err, TD_EIO, errno, "%s: rename into place failed", final_path);
    return td_fsync_dir(dir, err);
}

static json_t *analysis_json(const td_vanalysis *a)
{
    return json_pack(
        "{s:{s:i,s:i,s:s,s:s,s:f,s:s,s:f,s:I,s:i},"
        "s:{s:s,s:{s:I,s:I,s:I,s:I},s:{s:f,s:f,s:i,s:i,s:i},s:i,s:b,s:s,s:s},"
        "s:{s:i,s:f},s:{s:i,s:i,s:i,s:i},s:{s:f,s:f},"
        "s:{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f},s:{s:f}}",
        "stream", "width", a->width, "height", a->height, "pix_fmt", a->pix_fmt, "codec", a->codec, "fps",
        a->fps, "sar", a->sar_num == a->sar_den ? "1:1" : (a->sar_num == 10 && a->sar_den == 11) ? "10:11" : "other",
        "duration", a->duration, "frames_analyzed", (json_int_t)a->frames_analyzed, "windows", a->windows,
        "interlace", "flagged", a->flagged_order, "idet", "tff", (json_int_t)a->idet_tff, "bff",
        (json_int_t)a->idet_bff, "progressive", (json_int_t)a->idet_progressive, "undetermined",
        (json_int_t)a->idet_undetermined, "parity_trial", "tff_motion", a->trial_tff, "bff_motion", a->trial_bff,
        "frames", a->trial_frames, "windows_for_tff", a->trial_votes_tff, "windows_for_bff", a->trial_votes_bff,
        "windows_interlaced", a->windows_interlaced, "interlaced", a->interlaced, "field_order", a->interlaced ? (a->tff ? "tff" : "bff") : "progressive",
        "decided_by", a->order_source,
        "head_switching", "lines", a->head_switch_lines, "ratio", a->head_switch_ratio,
        "cropdetect", "x", a->crop_x, "y", a->crop_y, "w", a->crop_w, "h", a->crop_h,
        "chroma_delay", "pixels", a->chroma_delay, "correlation", a->chroma_peak,
        "levels", "ymin", a->ymin, "ylow", a->ylow, "yavg", a->yavg, "yhigh", a->yhigh, "ymax", a->ymax, "uavg",
        a->uavg, "vavg", a->vavg, "satavg", a->satavg, "y_p0.5", a->y_p005, "y_p99.5", a->y_p995, "grey_u",
        a->grey_u, "grey_v", a->grey_v, "grey_fraction", a->grey_fraction,
        "noise", "sigma", a->noise_sigma);
}

static json_t *plan_json(const td_restore_plan *p, const char *chain)
{
    return json_pack("{s:b,s:s,s:i,s:f,s:b,s:{s:f,s:f,s:f,s:f,s:f},s:{s:f,s:f,s:f,s:f},s:f,s:i,s:s,s:s,s:s}",
                     "deinterlace", p->deinterlace, "field_order", p->tff ? "tff" : "bff", "head_switch_fill",
                     p->head_switch_lines, "chroma_shift", p->chroma_shift, "temporal_denoise", p->temporal,
                     "denoise", "luma_spatial", p->luma_spatial, "luma_temporal", p->luma_temporal, "chroma_spatial",
                     p->chroma_spatial, "chroma_temporal", p->chroma_temporal, "nlmeans", p->nlmeans_s, "levels",
                     "gain", p->level_gain, "offset", p->level_offset, "u_shift", p->u_shift, "v_shift", p->v_shift,
                     "sharpen", p->cas, "crop_width", p->crop_w, "sar",
                     p->hd ? "1:1" : (p->sar_num == 10 ? "10:11" : p->sar_num == 12 ? "12:11" : "source"),
                     "size", p->hd ? "1440x1080" : "sd", "filter_chain", chain);
}

/* Tests only (TAPEDECK_FAULT="damage:restore-out:NAME"): flip 64 bytes in
 * the middle of the encoded file, as a bad disk block would, so that the
 * self-check has damage to find. */
static int damage(const char *path, td_error *err)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return td_error_errno(err, TD_EIO, errno, "%s: cannot open to damage", path);
    struct stat sb;
    uint8_t buf[64];
    int rc = TD_OK;
    if (fstat(fd, &sb) != 0 || sb.st_size < 4096 ||
        pread(fd, buf, sizeof buf, sb.st_size / 2) != (ssize_t)sizeof buf)
        rc = td_error_set(err, TD_EIO, "%s: cannot read to damage", path);
    for (size_t i = 0; !rc && i < sizeof buf; i++)
        buf[i] ^= 0xA5;
    if (!rc && pwrite(fd, buf, sizeof buf, sb.st_size / 2) != (ssize_t)sizeof buf)
        rc = td_error_set(err, TD_EIO, "%s: cannot damage", path);
    close(fd);
    return rc;
}

/* The DRM render node of the card at a PCI address ("0000:03:00.0"), from
 * sysfs, into out ("" if none). */
static void render_node(const char *pci, char *out, size_t len)
{
    out[0] = '\0';
    char dir[256];
    if (!pci || snprintf(dir, sizeof dir, "/sys/bus/pci/devices/%s/drm", pci) >= (int)sizeof dir)
        return;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "renderD", 7) == 0) {
            snprintf(out, len, "/dev/dri/%s", e->d_name);
            break;
        }
    }
    closedir(d);
}

/* Append one clause to the scene's note (the worker logs it). */
static void note_add(td_task_result *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_add(td_task_result *res, const char *fmt, ...)
{
    size_t used = strlen(res->note);
    if (used + 3 >= sizeof res->note)
        return;
    if (used) {
        memcpy(res->note + used, "; ", 3);
        used += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->note + used, sizeof res->note - used, fmt, ap);
    va_end(ap);
}

/* Why no OpenCL device came, as precisely as the machine shows: the ICD
 * loader finds platforms through the .icd files of one folder, and a
 * driver library present without its .icd (as on some container images)
 * is never loaded. */
static void td_opencl_why(const char *averr, int gpu_only, int nvidia, char *out, size_t len)
{
    const char *dir = getenv("OCL_ICD_VENDORS");
    if (!dir || !*dir)
        dir = "/etc/OpenCL/vendors";
    char icds[160] = "";
    int have_nvidia = 0, n = 0;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            size_t l = strlen(e->d_name);
            if (l < 5 || strcmp(e->d_name + l - 4, ".icd") != 0)
                continue;
            size_t u = strlen(icds);
            snprintf(icds + u, sizeof icds - u, "%s%s", n++ ? " " : "", e->d_name);
            have_nvidia |= strncmp(e->d_name, "nvidia", 6) == 0;
        }
        closedir(d);
    }
    size_t u = (size_t)snprintf(out, len, "%s%s; %s %s", averr, gpu_only ? ", no GPU device" : "", dir,
                                !d ? "missing" : n ? "lists" : "lists no .icd file");
    if (u < len && n)
        u += (size_t)snprintf(out + u, len - u, " %s", icds);
    if (nvidia && !have_nvidia && u < len) {
        static const char *const libdirs[] = {"/usr/lib/x86_64-linux-gnu", "/usr/local/nvidia/lib64",
                                              "/usr/local/nvidia/lib", "/usr/lib64", "/usr/lib"};
        for (size_t i = 0; i < sizeof libdirs / sizeof libdirs[0]; i++) {
            char path[256];
            snprintf(path, sizeof path, "%s/libnvidia-opencl.so.1", libdirs[i]);
            if (access(path, R_OK) == 0) {
                snprintf(out + u, len - u, "; no nvidia.icd although %s exists: OCL_ICD_VENDORS can name a "
                         "folder whose nvidia.icd holds that path", path);
                return;
            }
        }
        snprintf(out + u, len - u, "; no nvidia.icd and no libnvidia-opencl.so.1");
    }
}

/* A VAAPI device on the worker's own card: its render node, found by PCI
 * address (a CPU worker, or a card without one, takes the default
 * device). 0, or -1 with why. */
static int vaapi_open(const td_task_config *cfg, int gpu_worker, AVBufferRef **out, char *why, size_t len)
{
    char node[300] = "";
    if (gpu_worker)
        render_node(cfg->device, node, sizeof node);
    int ret = av_hwdevice_ctx_create(out, AV_HWDEVICE_TYPE_VAAPI, node[0] ? node : NULL, NULL, 0);
    if (ret >= 0)
        return 0;
    char e[128];
    snprintf(why, len, "VAAPI unavailable on %s: %s", node[0] ? node : "the default device",
             td_averr(ret, e, sizeof e));
    return -1;
}

static int restore_run(const td_scene *scene, const td_task_config *cfg, const td_task_env *env,
                       td_progress_fn progress, void *user, td_task_result *res, td_error *err)
{
    memset(res, 0, sizeof *res);
    const td_restore_settings *s = &cfg->restore;
    char *media = td_output_path(scene, media_suffix(s->format));
    char *report = td_output_path(scene, ".restore.json");
    char *srt = s->subtitles ? td_output_path(scene, ".srt") : NULL;
    char tmp[PATH_MAX] = "";
    json_t *doc = NULL;
    AVBufferRef *hw = NULL, *cuda = NULL, *vaapi = NULL;
    int rc = TD_OK;
    if (!media || !report || (s->subtitles && !srt)) {
        rc = td_error_set(err, TD_ENOMEM, "out of memory");
        goto out;
    }
    beat b = {.fn = progress, .user = user, .env = env, .fps = 25.0};
    td_vanalysis a;
    rc = td_video_analyze(scene->path, cfg->threads, &a, on_frames, &b, err);
    if (rc)
        goto out;
    b.fps = a.fps;
    long frames = a.windows <= 1 && a.frames_analyzed < TD_VANALYZE_MAX_FRAMES ? (long)a.frames_analyzed
                  : a.duration > 0 && a.fps > 0 ? (long)(a.duration * a.fps) : (long)a.frames_analyzed;
    td_restore_plan plan;
    td_restore_decide(s, &a, frames, &plan);
    {
        /* The chain is made again by the transcode once it knows where
         * frames are decoded; this one only proves the plan makes one. */
        char chain[TD_RESTORE_MAX_CHAIN];
        rc = td_restore_chain(&plan, a.height == 480 || a.height == 486, chain, sizeof chain, err);
        if (rc)
            goto out;
    }
    if (srt && access(srt, R_OK) != 0) {
        rc = td_error_errno(err, TD_EIO, errno, "%s: no subtitles to mux in", srt);
        goto out;
    }
    rc = make_temp(media, tmp, sizeof tmp, err);
    if (rc) {
        tmp[0] = '\0';
        goto out;
    }
    td_restore_job job = {
        .in_path = scene->path, .out_path = tmp, .muxer = muxer_of(s->format), .settings = s,
        .plan = &plan, .srt_path = srt, .threads = cfg->threads,
        .desync_ms = td_fault_wants("desync", "restore-mux", scene->path) ? 200 : 0,
        .progress = on_frames, .user = &b,
    };
    /* The worker's own card where the settings ask for it: NVDEC decoding,
     * yadif_cuda and scale_cuda on CUDA, nlmeans on OpenCL (a GPU worker
     * sees only its own card). The CPU's filters are the reference and
     * the fallback; each fallback's reason goes in the log and the
     * report. */
    char denoise_on[400] = "cpu", deinterlace_on[300] = "cpu", scale_on[300] = "cpu", hw_why[360] = "";
    if (!plan.deinterlace)
        snprintf(deinterlace_on, sizeof deinterlace_on, "none");
    if (!plan.hd)
        snprintf(scale_on, sizeof scale_on, "none");
    int gpu_worker = cfg->device && strcmp(cfg->device, "cpu") != 0;
    int nvidia = cfg->vendor && strcmp(cfg->vendor, "nvidia") == 0;
    if (s->cuda == TD_ROPENCL_ON || (s->cuda == TD_ROPENCL_AUTO && nvidia)) {
        int ret = av_hwdevice_ctx_create(&cuda, AV_HWDEVICE_TYPE_CUDA, NULL, NULL, 0);
        if (ret < 0) {
            char e[128];
            note_add(res, "CUDA unavailable (%s): decoding%s%s on the CPU", td_averr(ret, e, sizeof e),
                     plan.deinterlace ? ", bwdif" : "", plan.hd ? ", scale" : "");
            snprintf(hw_why, sizeof hw_why, "CUDA unavailable: %s", e);
            if (plan.deinterlace)
                snprintf(deinterlace_on, sizeof deinterlace_on, "cpu (%s)", hw_why);
            if (plan.hd)
                snprintf(scale_on, sizeof scale_on, "cpu (%s)", hw_why);
        } else {
            job.hw.cuda = cuda;
            job.hw.decode = cuda;
            plan.cuda = plan.deinterlace;
            plan.cuda_scale = plan.hd;
        }
    }
    int intel = cfg->vendor && strcmp(cfg->vendor, "intel") == 0;
    if (!job.hw.decode && (s->vaapi == TD_ROPENCL_ON || (s->vaapi == TD_ROPENCL_AUTO && intel && gpu_worker))) {
        /* VAAPI on the worker's own card: its render node, found by PCI
         * address (any worker under "on" takes the first one). Decoding is
         * bit-exact, so the output is the CPU's either way. */
        if (vaapi_open(cfg, gpu_worker, &vaapi, hw_why, sizeof hw_why) == 0)
            job.hw.decode = vaapi;
        else
            note_add(res, "%s: decoding on the CPU", hw_why);
    }
    if (plan.nlmeans_s > 0 && (s->opencl == TD_ROPENCL_ON || (s->opencl == TD_ROPENCL_AUTO && gpu_worker))) {
        /* A GPU worker takes a GPU device only: PoCL on the CPU beside a
         * card's driver would otherwise come first. */
        AVDictionary *o = NULL;
        int ret = s->opencl == TD_ROPENCL_AUTO ? av_dict_set(&o, "device_type", "gpu", 0) : 0;
        if (ret >= 0)
            ret = av_hwdevice_ctx_create(&hw, AV_HWDEVICE_TYPE_OPENCL, NULL, o, 0);
        av_dict_free(&o);
        if (ret < 0) {
            char e[128], why[300];
            td_opencl_why(td_averr(ret, e, sizeof e), s->opencl == TD_ROPENCL_AUTO, nvidia, why, sizeof why);
            note_add(res, "OpenCL unavailable (%s): nlmeans on the CPU", why);
            snprintf(denoise_on, sizeof denoise_on, "cpu (OpenCL unavailable: %s)", why);
        } else {
            plan.opencl = 1;
            job.hw.opencl = hw;
        }
    }
    /* The view format's encoder on the worker's own card: NVENC on NVIDIA
     * (in the CUDA context above, else in the first CUDA device the
     * worker sees, which is its own), VAAPI on Intel (the decoding
     * device, else the card's render node). x264/x265 where it cannot,
     * with the reason. */
    char enc_why[300] = "";
    if (s->format == TD_RFORMAT_VIEW &&
        (s->hwenc == TD_ROPENCL_ON || (s->hwenc == TD_ROPENCL_AUTO && gpu_worker && (nvidia || intel)))) {
        if (nvidia || (!intel && cuda)) {
            job.hwenc = TD_HWENC_NVENC;
            job.hwenc_dev = cuda;
        } else {
            if (vaapi || vaapi_open(cfg, gpu_worker, &vaapi, enc_why, sizeof enc_why) == 0) {
                job.hwenc = TD_HWENC_VAAPI;
                job.hwenc_dev = vaapi;
            }
        }
    }
    td_restore_stats st;
    b.total = frames > 0 ? frames : 1;
    b.t0 = mono_now();
    rc = td_restore_transcode(&job, &st, err);
    int on_gpu = plan.opencl || plan.cuda || plan.cuda_scale || job.hw.decode || job.hwenc;
    int hwenc_failed = strcmp(st.encode_on, "nvenc") == 0 || strcmp(st.encode_on, "vaapi") == 0
                       ? rc == TD_ENOMEM || rc == TD_EIO : 0;
    if (on_gpu && (rc == TD_EINVAL || hwenc_failed || (rc == TD_EINPUT && strcmp(st.decode_on, "cpu") != 0))) {
        /* The hardware graph would not configure, the card's decoder
         * failed, or the card's encoder did mid-scene (its surfaces or
         * memory ran out, a send or receive failed): once more on the
         * CPU (a stream that is really damaged, or a disk that is full,
         * then fails there with its own reason). */
        note_add(res, "GPU path failed (%.200s): CPU instead", err->msg);
        if (plan.opencl)
            snprintf(denoise_on, sizeof denoise_on, "cpu (GPU path failed: %.200s)", err->msg);
        if (plan.cuda)
            snprintf(deinterlace_on, sizeof deinterlace_on, "cpu (GPU path failed: %.200s)", err->msg);
        if (plan.cuda_scale)
            snprintf(scale_on, sizeof scale_on, "cpu (GPU path failed: %.200s)", err->msg);
        if (job.hwenc)
            snprintf(enc_why, sizeof enc_why, "GPU path failed: %.200s", err->msg);
        plan.opencl = plan.cuda = plan.cuda_scale = 0;
        job.hw.opencl = job.hw.cuda = job.hw.decode = job.hwenc_dev = NULL;
        job.hwenc = TD_HWENC_NONE;
        td_error_clear(err);
        rc = td_restore_transcode(&job, &st, err);
        if (!rc && strcmp(st.decode_on, "cpu") == 0 && (cuda || vaapi))
            snprintf(st.decode_on, sizeof st.decode_on, "cpu (GPU path failed)");
    }
    if (rc)
        goto out;
    if (plan.cuda)
        snprintf(deinterlace_on, sizeof deinterlace_on, "cuda (yadif_cuda)");
    if (plan.cuda_scale)
        snprintf(scale_on, sizeof scale_on, "cuda (scale_cuda)");
    if (plan.opencl)
        snprintf(denoise_on, sizeof denoise_on, "opencl (nlmeans_opencl%s)",
                 s->opencl == TD_ROPENCL_AUTO ? ", GPU device" : "");
    plan.hwenc = strcmp(st.encode_on, "nvenc") == 0 ? 1 : strcmp(st.encode_on, "vaapi") == 0 ? 2 : 0;
    if (enc_why[0] && strcmp(st.encode_on, "cpu") == 0)
        snprintf(st.encode_on, sizeof st.encode_on, "cpu (%.230s)", enc_why);
    if (strncmp(st.encode_on, "cpu (", 5) == 0)
        note_add(res, "encoding on the CPU (%s): %.*s", st.encoder, (int)strlen(st.encode_on) - 6,
                 st.encode_on + 5);
    if (hw_why[0] && strcmp(st.decode_on, "cpu") == 0)
        snprintf(st.decode_on, sizeof st.decode_on, "cpu (%.190s)", hw_why);
    else if (strncmp(st.decode_on, "cpu (", 5) == 0)
        note_add(res, "decoding on the CPU: %s", st.decode_on + 5);
    if (td_fault_wants("damage", "restore-out", scene->path) && (rc = damage(tmp, err)))
        goto out;
    td_selfcheck chk;
    rc = td_restore_selfcheck(scene->path, tmp, &chk, err);
    if (rc)
        goto out;
    if (chk.ok && s->format == TD_RFORMAT_ARCHIVE && chk.out_frames != st.frames_out) {
        /* a container that resynced over damage drops frames silently */
        chk.ok = 0;
        snprintf(chk.why, sizeof chk.why, "the archive holds %lld video frames, %lld were written",
                 (long long)chk.out_frames, (long long)st.frames_out);
    }
    if (!chk.ok) {
        rc = td_error_set(err, TD_EINPUT, "self-check failed: %s", chk.why);
        goto out;
    }
    rc = commit(tmp, media, scene->dir, err);
    if (rc)
        goto out;
    tmp[0] = '\0';

    char settings[512], placed[128];
    td_restore_settings_text(s, settings, sizeof settings);
    td_restore_placement_text(&plan, placed, sizeof placed);
    size_t used = strlen(settings);
    snprintf(settings + used, sizeof settings - used, " placed=%s", placed);
    const char *chain = st.chain;
    doc = json_pack("{s:i,s:s,s:s,s:o,s:o,s:{s:s,s:s,s:s,s:s,s:b,s:s,s:s,s:s,s:s},s:{s:I,s:I,s:f,s:f,s:f,s:f,s:f},"
                    "s:{s:b,s:f,s:f,s:f,s:f,s:f,s:I,s:I,s:s,s:s,s:I}}",
                    "version", 1, "scene", scene->name, "settings", settings, "analysis", analysis_json(&a),
                    "decisions", plan_json(&plan, chain),
                    "output", "file", strrchr(media, '/') ? strrchr(media, '/') + 1 : media, "encoder", st.encoder,
                    "encode_on", st.encode_on,
                    "audio", st.audio_mode, "subtitles", srt != NULL, "decode_on", st.decode_on, "denoise_on", denoise_on,
                    "deinterlace_on", deinterlace_on, "scale_on", scale_on,
                    "speed", "frames_in", (json_int_t)st.frames_in, "frames_out", (json_int_t)st.frames_out,
                    "seconds", st.seconds_total, "decode_s", st.seconds_decode, "filter_s", st.seconds_filter,
                    "encode_s", st.seconds_encode, "fps", st.seconds_total > 0 ? st.frames_out / st.seconds_total : 0.0,
                    "self_check", "ok", chk.ok, "source_duration", chk.src_duration, "output_duration",
                    chk.out_duration, "source_av_offset", chk.src_offset, "output_av_offset", chk.out_offset,
                    "frame_seconds", chk.frame_seconds, "source_samples", (json_int_t)chk.src_samples,
                    "output_samples", (json_int_t)chk.out_samples, "source_audio_sha256", chk.src_audio_sha,
                    "output_audio_sha256", chk.out_audio_sha, "output_frames_checked", (json_int_t)chk.out_frames);
    if (!doc) {
        rc = td_error_set(err, TD_ENOMEM, "%s: cannot build the report", report);
        goto out;
    }
    rc = td_atomic_write_json(report, doc, JSON_INDENT(2), err);
    if (rc)
        goto out;
    const char *outputs[2] = {media, report};
    td_done_info info = {
        .task = TD_TASK_RESTORE,
        .engine = "libav",
        .model = td_restore_preset_name(s->preset),
        .device = cfg->device ? cfg->device : "cpu",
        .audio_seconds = chk.src_duration,
        .outputs = outputs,
        .n_outputs = 2,
        .settings = settings,
    };
    rc = td_marker_write_done(scene, &info, err);
    if (rc)
        goto out;
    res->frames = st.frames_out;
    res->media_seconds = chk.src_duration;
    res->fps = st.seconds_total > 0 ? st.frames_out / st.seconds_total : 0;

out:
    if (tmp[0])
        unlink(tmp);
    if (rc && err && strstr(err->msg, scene->rel) == NULL && strstr(err->msg, scene->path) == NULL)
        td_error_prefix(err, "%s", scene->rel);
    json_decref(doc);
    av_buffer_unref(&hw);
    av_buffer_unref(&cuda);
    av_buffer_unref(&vaapi);
    free(media);
    free(report);
    free(srt);
    return rc;
}

const td_task_ops td_task_restore = {
    .name = TD_TASK_RESTORE,
    .needs_engine = 0,
    .check = restore_check,
    .run = restore_run,
};
