/*
 * marker.c: per-scene checkpoint markers (see marker.h).
 *
 * Both markers are JSON objects written with td_atomic_write, so a reader
 * sees the old marker, the new one, or none; never half of one.
 *
 * .{stem}.{task}.done (version 1):
 *   {"version": 1, "scene": "tape1/a.mp4", "task": "subtitles",
 *    "time": "2024-05-01T22:03:11Z", "pid": 4242, "host": "studio",
 *    "device": "0000:65:00.0", "engine": "whisper", "model": "medium",
 *    "language": "en", "tapedeck_version": "0.1.0",
 *    "input": {"size": 123, "mtime_ns": 1714600000123456789},
 *    "audio_seconds": 61.5,
 *    "outputs": [{"name": "a.srt", "size": 42, "sha256": "ba78..."}]}
 *   model and language are null when unknown. "input" holds the size and
 *   mtime recorded in the td_scene passed in (stat when the work started),
 *   not a stat at marker time: if the input changed while it was being
 *   processed, the marker is stale at once and the scene is redone, which is
 *   the safe direction.
 *
 * .{stem}.{task}.failed (version 1):
 *   {"version": 1, "scene": ..., "task": ..., "time": ..., "pid": ...,
 *    "host": ..., "kind": "input", "error": "tape1/a.mp4: no audio stream",
 *    "attempts": 3, "log": ["last", "lines"]}
 *   At most FAILED_MAX_LINES log lines (the last ones), each cut to
 *   FAILED_MAX_LINE_BYTES; the error is cut to FAILED_MAX_REASON_BYTES.
 *
 * Names are bytes, JSON strings are UTF-8. Every text field is written
 * sanitised: each byte that is not part of a valid UTF-8 sequence becomes
 * U+FFFD. For the two fields that must round-trip exactly because they are
 * matched against files -- "scene" and each output's "name" -- a "scene_hex"
 * / "name_hex" field with the raw bytes in lower-case hex is added when, and
 * only when, the bytes are not valid UTF-8; readers prefer the _hex field.
 * Other text (error, log lines, host ...) is for people and comes back
 * sanitised.
 *
 * Reading is bounded: a marker larger than MARKER_MAX_BYTES, not a regular
 * file, not JSON, of another version or missing a field is "unreadable",
 * which makes a .done STALE (the scene is redone), never a crash.
 */
#include "archive/marker.h"
#include "util/atomic.h"
#include "util/hash.h"
#include "util/hex.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define MARKER_VERSION 1
#define MARKER_MAX_BYTES ((size_t)1 << 20)
#define MARKER_MAX_OUTPUTS 64
#define MARKER_MAX_NAME_BYTES 4096
#define TASK_MAX_BYTES 64
#define FAILED_MAX_LINES 64
#define FAILED_MAX_LINE_BYTES 1024
#define FAILED_MAX_REASON_BYTES 4096
#define SMALL_TEXT_MAX_BYTES 1024 /* host, device, engine, model, ... */

/* ------------------------------------------------------------ paths */

char *td_marker_path(const td_scene *scene, const char *task, const char *kind)
{
    char *s = NULL;
    if (asprintf(&s, "%s/.%s.%s.%s", scene->dir, scene->stem, task, kind) < 0)
        return NULL;
    return s;
}

char *td_output_path(const td_scene *scene, const char *suffix)
{
    char *s = NULL;
    if (asprintf(&s, "%s/%s%s", scene->dir, scene->stem, suffix) < 0)
        return NULL;
    return s;
}

/* A task name becomes part of a file name: keep it a plain token. */
static bool task_ok(const char *task)
{
    if (!task || !task[0] || task[0] == '.' || strlen(task) > TASK_MAX_BYTES)
        return false;
    return strchr(task, '/') == NULL;
}

/* ------------------------------------------------------------ UTF-8 */

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0. The rules
 * are jansson's: no overlong forms, no surrogates, nothing past U+10FFFF. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return len;
}

static bool utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

/* Cut s to at most max bytes without splitting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    size_t cut = max;
    for (int k = 0; k < 3 && cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80; k++)
        cut--;
    return cut;
}

/* A JSON string of the first max bytes of s, invalid bytes as U+FFFD.
 * NULL only when out of memory. */
static json_t *json_text_n(const char *s, size_t n, size_t max)
{
    n = utf8_cut(s, n, max);
    const unsigned char *p = (const unsigned char *)s;
    if (utf8_valid(s, n))
        return json_stringn(s, n);
    if (n > SIZE_MAX / 3)
        return NULL;
    char *clean = malloc(3 * n + 1); /* each bad byte grows to 3 */
    if (!clean)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (k) {
            memcpy(clean + o, p + i, k);
            o += k;
            i += k;
        } else {
            memcpy(clean + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    json_t *j = json_stringn(clean, o);
    free(clean);
    return j;
}

static json_t *json_text(const char *s, size_t max)
{
    return json_text_n(s, strlen(s), max);
}

static json_t *json_text_or_null(const char *s)
{
    return s ? json_text(s, SMALL_TEXT_MAX_BYTES) : json_null();
}

/* Set obj[key] to the sanitised bytes, and obj[hex_key] to their hex when
 * they are not valid UTF-8. */
static int put_raw_name(json_t *obj, const char *key, const char *hex_key, const char *bytes)
{
    size_t n = strlen(bytes);
    if (json_object_set_new(obj, key, json_text_n(bytes, n, SIZE_MAX)) != 0)
        return -1;
    if (utf8_valid(bytes, n))
        return 0;
    td_buf hex;
    td_buf_init(&hex, 0);
    int rc = td_hex_append(&hex, bytes, n) == TD_OK
                 ? json_object_set_new(obj, hex_key, json_stringn(hex.data, hex.len))
                 : -1;
    td_buf_release(&hex);
    return rc;
}

/* The raw bytes of a name written by put_raw_name (malloc'ed), or NULL if
 * absent, malformed, too long or holding a NUL. */
static char *get_raw_name(json_t *obj, const char *key, const char *hex_key)
{
    json_t *h = json_object_get(obj, hex_key);
    if (h) {
        const char *hs = json_string_value(h);
        size_t hn = hs ? json_string_length(h) : 0;
        if (!hs || hn == 0 || hn % 2 || hn / 2 > MARKER_MAX_NAME_BYTES)
            return NULL;
        size_t n = 0;
        char *out = td_hex_to_bytes(hs, hn, &n);
        if (out && memchr(out, '\0', n)) { /* a NUL cannot be in a file name */
            free(out);
            return NULL;
        }
        return out;
    }
    json_t *v = json_object_get(obj, key);
    const char *s = json_string_value(v);
    if (!s || json_string_length(v) != strlen(s) || strlen(s) > MARKER_MAX_NAME_BYTES)
        return NULL;
    return strdup(s);
}

/* ------------------------------------------------------ writing */

static void iso_now(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || !gmtime_r(&ts.tv_sec, &tm) ||
        strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "1970-01-01T00:00:00Z");
}

/* The fields both markers share. Returns 0, or -1 when out of memory. */
static int put_common(json_t *obj, const td_scene *scene, const char *task)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    char now[32];
    iso_now(now, sizeof now);

    int bad = 0;
    bad |= json_object_set_new(obj, "version", json_integer(MARKER_VERSION));
    bad |= put_raw_name(obj, "scene", "scene_hex", scene->rel);
    bad |= json_object_set_new(obj, "task", json_text(task, TASK_MAX_BYTES));
    bad |= json_object_set_new(obj, "time", json_string(now));
    bad |= json_object_set_new(obj, "pid", json_integer((json_int_t)getpid()));
    bad |= json_object_set_new(obj, "host", json_text(host, SMALL_TEXT_MAX_BYTES));
    return bad ? -1 : 0;
}

/* Serialise obj and write it atomically to path. */
static int write_json(const char *path, json_t *obj, td_error *err)
{
    return td_atomic_write_json(path, obj, JSON_INDENT(2), err);
}

/* One entry of "outputs": checksummed now, and required to lie beside the
 * scene, because the check finds outputs by base name in scene->dir. */
static int output_entry(const td_scene *scene, const char *path, json_t **out, td_error *err)
{
    char hex[TD_SHA256_HEX_LEN + 1];
    int64_t size = 0;
    int rc = td_sha256_file(path, hex, &size, err);
    if (rc)
        return rc;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (!*base || strlen(base) > MARKER_MAX_NAME_BYTES)
        return td_error_set(err, TD_EINVAL, "%s: not an output file name", path);

    char *beside = NULL;
    if (asprintf(&beside, "%s/%s", scene->dir, base) < 0)
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
    struct stat a, b;
    bool same = stat(path, &a) == 0 && stat(beside, &b) == 0 && a.st_dev == b.st_dev &&
                a.st_ino == b.st_ino;
    free(beside);
    if (!same)
        return td_error_set(err, TD_EINVAL, "%s: output is not beside its scene %s", path,
                            scene->path);

    json_t *o = json_object();
    if (!o)
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
    int bad = put_raw_name(o, "name", "name_hex", base);
    bad |= json_object_set_new(o, "size", json_integer((json_int_t)size));
    bad |= json_object_set_new(o, "sha256", json_string(hex));
    if (bad) {
        json_decref(o);
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
    }
    *out = o;
    return TD_OK;
}

int td_marker_write_done(const td_scene *scene, const td_done_info *info, td_error *err)
{
    if (!task_ok(info->task))
        return td_error_set(err, TD_EINVAL, "%s: invalid task name", scene->path);
    if (!info->engine || !info->device)
        return td_error_set(err, TD_EINVAL, "%s: marker needs an engine and a device",
                            scene->path);
    if (info->n_outputs > MARKER_MAX_OUTPUTS || (info->n_outputs && !info->outputs))
        return td_error_set(err, TD_EINVAL, "%s: invalid list of %zu outputs", scene->path,
                            info->n_outputs);

    int rc = TD_OK;
    char *done_path = td_marker_path(scene, info->task, "done");
    char *failed_path = td_marker_path(scene, info->task, "failed");
    json_t *obj = json_object();
    json_t *outputs = json_array();
    json_t *input = json_object();
    if (!done_path || !failed_path || !obj || !outputs || !input) {
        rc = td_error_set(err, TD_ENOMEM, "%s: out of memory", scene->path);
        goto out_free;
    }
    for (size_t i = 0; i < info->n_outputs; i++) {
        json_t *o = NULL;
        rc = output_entry(scene, info->outputs[i], &o, err);
        if (rc)
            goto out_free;
        if (json_array_append_new(outputs, o) != 0) {
            rc = td_error_set(err, TD_ENOMEM, "%s: out of memory", scene->path);
            goto out_free;
        }
    }

    int bad = put_common(obj, scene, info->task);
    bad |= json_object_set_new(obj, "device", json_text(info->device, SMALL_TEXT_MAX_BYTES));
    bad |= json_object_set_new(obj, "engine", json_text(info->engine, SMALL_TEXT_MAX_BYTES));
    bad |= json_object_set_new(obj, "model", json_text_or_null(info->model));
    if (info->backend)
        bad |= json_object_set_new(obj, "backend", json_text(info->backend, SMALL_TEXT_MAX_BYTES));
    if (info->compute)
        bad |= json_object_set_new(obj, "compute", json_text(info->compute, SMALL_TEXT_MAX_BYTES));
    if (info->decode)
        bad |= json_object_set_new(obj, "decode", json_text(info->decode, SMALL_TEXT_MAX_BYTES));
    if (info->batch > 0)
        bad |= json_object_set_new(obj, "batch", json_integer(info->batch));
    bad |= json_object_set_new(obj, "language", json_text_or_null(info->language));
    bad |= json_object_set_new(obj, "tapedeck_version", json_string(TAPEDECK_VERSION));
    bad |= json_object_set_new(input, "size", json_integer((json_int_t)scene->size));
    bad |= json_object_set_new(input, "mtime_ns", json_integer((json_int_t)scene->mtime_ns));
    bad |= json_object_set_new(obj, "input", input);
    input = NULL; /* owned by obj now, even on failure */
    /* jansson refuses NaN and infinities; an unknown duration is null. */
    bad |= json_object_set_new(obj, "audio_seconds", isfinite(info->audio_seconds)
                                                         ? json_real(info->audio_seconds)
                                                         : json_null());
    bad |= json_object_set_new(obj, "outputs", outputs);
    outputs = NULL;
    if (info->settings)
        bad |= json_object_set_new(obj, "settings", json_text(info->settings, FAILED_MAX_REASON_BYTES));
    if (bad) {
        rc = td_error_set(err, TD_ENOMEM, "%s: out of memory building marker", scene->path);
        goto out_free;
    }

    rc = write_json(done_path, obj, err);
    if (rc)
        goto out_free;
    /* The .done is in place and a valid .done outranks a .failed in
     * td_marker_check, so a .failed we cannot remove is harmless: not
     * worth failing a finished scene over. */
    (void)unlink(failed_path);

out_free:
    json_decref(input);
    json_decref(outputs);
    json_decref(obj);
    free(failed_path);
    free(done_path);
    return rc;
}

int td_marker_write_failed(const td_scene *scene, const char *task, const char *kind,
                           const char *reason, int attempts, const char *const *log_lines,
                           size_t n_lines, td_error *err)
{
    if (!task_ok(task))
        return td_error_set(err, TD_EINVAL, "%s: invalid task name", scene->path);
    if (n_lines && !log_lines)
        return td_error_set(err, TD_EINVAL, "%s: missing log lines", scene->path);

    int rc = TD_OK;
    char *path = td_marker_path(scene, task, "failed");
    json_t *obj = json_object();
    json_t *log = json_array();
    if (!path || !obj || !log) {
        rc = td_error_set(err, TD_ENOMEM, "%s: out of memory", scene->path);
        goto out_free;
    }
    /* Keep the last lines: the end of a log says why it stopped. */
    size_t first = n_lines > FAILED_MAX_LINES ? n_lines - FAILED_MAX_LINES : 0;
    for (size_t i = first; i < n_lines; i++) {
        const char *line = log_lines[i] ? log_lines[i] : "";
        if (json_array_append_new(log, json_text(line, FAILED_MAX_LINE_BYTES)) != 0) {
            rc = td_error_set(err, TD_ENOMEM, "%s: out of memory", scene->path);
            goto out_free;
        }
    }
    int bad = put_common(obj, scene, task);
    bad |= json_object_set_new(obj, "kind", json_text(kind ? kind : "unknown", SMALL_TEXT_MAX_BYTES));
    bad |= json_object_set_new(obj, "error", json_text(reason ? reason : "", FAILED_MAX_REASON_BYTES));
    bad |= json_object_set_new(obj, "attempts", json_integer(attempts < 0 ? 0 : attempts));
    bad |= json_object_set_new(obj, "log", log);
    log = NULL;
    if (bad) {
        rc = td_error_set(err, TD_ENOMEM, "%s: out of memory building marker", scene->path);
        goto out_free;
    }
    rc = write_json(path, obj, err);

out_free:
    json_decref(log);
    json_decref(obj);
    free(path);
    return rc;
}

/* ------------------------------------------------------ reading */

/* Fill a reason buffer; truncation is fine (it is a message). */
static void say(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

enum load_result { LOAD_OK, LOAD_ABSENT, LOAD_BAD };

/* Read and parse a marker, bounded. On LOAD_BAD, why holds
 * "marker unreadable: <reason>"; on LOAD_ABSENT, *errnum is ENOENT. */
static enum load_result load_marker(const char *path, json_t **out, char *why, size_t why_len,
                                    int *errnum)
{
    *out = NULL;
    *errnum = 0;
    /* O_NONBLOCK: a FIFO planted under a marker's name must not hang us. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        *errnum = errno;
        if (errno == ENOENT)
            return LOAD_ABSENT;
        say(why, why_len, "marker unreadable: %s", strerror(errno));
        return LOAD_BAD;
    }
    enum load_result res = LOAD_BAD;
    char *buf = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        say(why, why_len, "marker unreadable: %s", strerror(errno));
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        say(why, why_len, "marker unreadable: not a regular file");
        goto out_close;
    }
    if ((uint64_t)st.st_size > MARKER_MAX_BYTES) {
        say(why, why_len, "marker unreadable: too large (%jd bytes)", (intmax_t)st.st_size);
        goto out_close;
    }
    buf = malloc(MARKER_MAX_BYTES + 1);
    if (!buf) {
        say(why, why_len, "marker unreadable: out of memory");
        goto out_close;
    }
    size_t total = 0;
    while (total <= MARKER_MAX_BYTES) { /* the file may grow after fstat */
        ssize_t n = read(fd, buf + total, MARKER_MAX_BYTES + 1 - total);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            say(why, why_len, "marker unreadable: %s", strerror(errno));
            goto out_free_buf;
        }
        if (n == 0)
            break;
        total += (size_t)n;
    }
    if (total > MARKER_MAX_BYTES) {
        say(why, why_len, "marker unreadable: too large");
        goto out_free_buf;
    }
    json_error_t je;
    json_t *j = json_loadb(buf, total, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        say(why, why_len, "marker unreadable: %s (line %d)", je.text, je.line);
        goto out_free_buf;
    }
    if (!json_is_object(j)) {
        say(why, why_len, "marker unreadable: not a JSON object");
        json_decref(j);
        goto out_free_buf;
    }
    json_t *v = json_object_get(j, "version");
    if (!json_is_integer(v) || json_integer_value(v) != MARKER_VERSION) {
        say(why, why_len, "marker unreadable: unsupported version");
        json_decref(j);
        goto out_free_buf;
    }
    *out = j;
    res = LOAD_OK;
out_free_buf:
    free(buf);
out_close:
    close(fd);
    return res;
}

static bool get_int(json_t *obj, const char *key, int64_t *v)
{
    json_t *j = json_object_get(obj, key);
    if (!json_is_integer(j))
        return false;
    *v = (int64_t)json_integer_value(j);
    return true;
}

static bool is_sha256_hex(const char *s)
{
    if (!s || strlen(s) != TD_SHA256_HEX_LEN)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

/* A base name we may join to the scene's directory. */
static bool plain_name(const char *s)
{
    return s[0] && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Check one "outputs" entry against the file beside the scene. Returns
 * true if it matches; else why says how it does not. */
static bool check_output(const td_scene *scene, json_t *o, char *why, size_t why_len)
{
    char *name = json_is_object(o) ? get_raw_name(o, "name", "name_hex") : NULL;
    int64_t size = 0;
    const char *sha = json_string_value(json_object_get(o, "sha256"));
    if (!name || !plain_name(name) || !get_int(o, "size", &size) || size < 0 ||
        !is_sha256_hex(sha)) {
        say(why, why_len, "marker unreadable: bad output entry");
        free(name);
        return false;
    }
    bool ok = false;
    char *path = NULL;
    if (asprintf(&path, "%s/%s", scene->dir, name) < 0) {
        path = NULL;
        say(why, why_len, "output %s unreadable: out of memory", name);
        goto out_free;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT)
            say(why, why_len, "output %s missing", name);
        else
            say(why, why_len, "output %s unreadable: %s", name, strerror(errno));
        goto out_free;
    }
    if (!S_ISREG(st.st_mode) || (int64_t)st.st_size != size) {
        say(why, why_len, "output %s changed", name);
        goto out_free;
    }
    char hex[TD_SHA256_HEX_LEN + 1];
    int64_t got = 0;
    td_error e;
    if (td_sha256_file(path, hex, &got, &e) != TD_OK) {
        say(why, why_len, "output %s unreadable: %s", name, e.msg);
        goto out_free;
    }
    if (got != size || strcmp(hex, sha) != 0) {
        say(why, why_len, "output %s changed", name);
        goto out_free;
    }
    ok = true;
out_free:
    free(path);
    free(name);
    return ok;
}

/* Marker names come from the stem, so a.mp4 and a.mkv share them. The
 * "scene" field says whose a marker is: true if it is this scene's (by base
 * name, so a root given another way still matches). *base_out (may be NULL)
 * gets the marker's base name, malloc'ed, or NULL if the field is bad. */
static bool marker_for_scene(json_t *j, const td_scene *scene, char **base_out)
{
    if (base_out)
        *base_out = NULL;
    char *rel = get_raw_name(j, "scene", "scene_hex");
    if (!rel)
        return false;
    const char *slash = strrchr(rel, '/');
    const char *base = slash ? slash + 1 : rel;
    bool same = strcmp(base, scene->name) == 0;
    if (base_out)
        *base_out = strdup(base);
    free(rel);
    return same;
}

/* Does a parsed .done still hold for the scene as it is now? */
/* Does the marker's outputs array list this base name? */
static bool lists_output(json_t *outputs, const char *name)
{
    size_t i;
    json_t *o;
    json_array_foreach(outputs, i, o) {
        char *listed = json_is_object(o) ? get_raw_name(o, "name", "name_hex") : NULL;
        bool same = listed && strcmp(listed, name) == 0;
        free(listed);
        if (same)
            return true;
    }
    return false;
}

static bool done_holds(const td_scene *scene, const char *task, json_t *j,
                       const char *const *required, size_t n_required, char *why, size_t why_len)
{
    const char *mtask = json_string_value(json_object_get(j, "task"));
    if (!mtask || strcmp(mtask, task) != 0) {
        say(why, why_len, "marker unreadable: task does not match");
        return false;
    }
    /* a.mkv must not inherit the marker of a vanished a.mp4. */
    char *base = NULL;
    if (!marker_for_scene(j, scene, &base)) {
        if (base)
            say(why, why_len, "marker is for another scene (%s)", base);
        else
            say(why, why_len, "marker unreadable: bad scene field");
        free(base);
        return false;
    }
    free(base);

    json_t *input = json_object_get(j, "input");
    int64_t size, mtime;
    if (!json_is_object(input) || !get_int(input, "size", &size) ||
        !get_int(input, "mtime_ns", &mtime)) {
        say(why, why_len, "marker unreadable: bad input field");
        return false;
    }
    struct stat st;
    if (stat(scene->path, &st) != 0) {
        say(why, why_len, "input unreadable: %s", strerror(errno));
        return false;
    }
    if ((int64_t)st.st_size != size) {
        say(why, why_len, "input changed (size)");
        return false;
    }
    /* Computed as scan.c's mtime_ns_of does: unsigned, so that an mtime past
     * 2262 wraps instead of overflowing. */
    if ((int64_t)((uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec) !=
        mtime) {
        say(why, why_len, "input changed (mtime)");
        return false;
    }

    json_t *outputs = json_object_get(j, "outputs");
    if (!json_is_array(outputs) || json_array_size(outputs) > MARKER_MAX_OUTPUTS) {
        say(why, why_len, "marker unreadable: bad outputs field");
        return false;
    }
    size_t i;
    json_t *o;
    json_array_foreach(outputs, i, o) {
        if (!check_output(scene, o, why, why_len))
            return false;
    }
    for (size_t r = 0; r < n_required; r++) {
        if (!lists_output(outputs, required[r])) {
            say(why, why_len, "no %s yet", required[r]);
            return false;
        }
    }
    return true;
}

int td_marker_check(const td_scene *scene, const char *task, enum td_marker_state *state,
                    char *why, size_t why_len, td_error *err)
{
    return td_marker_check_outputs(scene, task, NULL, 0, state, why, why_len, err);
}

int td_marker_check_outputs(const td_scene *scene, const char *task, const char *const *required,
                            size_t n_required, enum td_marker_state *state, char *why,
                            size_t why_len, td_error *err)
{
    return td_marker_check_settings(scene, task, required, n_required, NULL, state, why, why_len, err);
}

static int settings_equal(void *user, const char *had)
{
    const char *settings = user;
    return !settings || (had && strcmp(had, settings) == 0);
}

int td_marker_check_settings(const td_scene *scene, const char *task, const char *const *required,
                             size_t n_required, const char *settings, enum td_marker_state *state,
                             char *why, size_t why_len, td_error *err)
{
    return td_marker_check_settings_fn(scene, task, required, n_required, settings_equal, (void *)settings, state,
                                       why, why_len, err);
}

int td_marker_check_settings_fn(const td_scene *scene, const char *task, const char *const *required,
                                size_t n_required, td_settings_accept_fn accept, void *user,
                                enum td_marker_state *state, char *why, size_t why_len, td_error *err)
{
    *state = TD_MARKER_NONE;
    if (why && why_len)
        why[0] = '\0';
    if (!task_ok(task))
        return td_error_set(err, TD_EINVAL, "%s: invalid task name", scene->path);

    char *done_path = td_marker_path(scene, task, "done");
    char *failed_path = td_marker_path(scene, task, "failed");
    if (!done_path || !failed_path) {
        free(done_path);
        free(failed_path);
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", scene->path);
    }

    char stale[TD_ERROR_MSG_MAX] = "";
    bool have_done = false;
    json_t *j = NULL;
    int errnum;
    enum load_result lr = load_marker(done_path, &j, stale, sizeof stale, &errnum);
    if (lr != LOAD_ABSENT) {
        have_done = true;
        if (lr == LOAD_OK && done_holds(scene, task, j, required, n_required, stale, sizeof stale)) {
            const char *had = json_string_value(json_object_get(j, "settings"));
            if (accept(user, had)) {
                *state = TD_MARKER_DONE;
                goto out_free;
            }
            say(stale, sizeof stale, "settings changed (were %s)", had ? had : "not recorded");
        }
    }

    /* No valid .done: a .failed, if any, says more than a stale .done. */
    char failed_why[TD_ERROR_MSG_MAX] = "";
    json_t *f = NULL;
    lr = load_marker(failed_path, &f, failed_why, sizeof failed_why, &errnum);
    if (lr == LOAD_OK && !marker_for_scene(f, scene, NULL)) {
        /* Another scene's failure under the shared name (a refused clash,
         * say): not this scene's business. An unreadable .failed, whose
         * owner we cannot tell, still counts. */
        json_decref(f);
        f = NULL;
        lr = LOAD_ABSENT;
    }
    if (lr != LOAD_ABSENT) {
        *state = TD_MARKER_FAILED;
        if (lr == LOAD_OK) {
            const char *reason = json_string_value(json_object_get(f, "error"));
            snprintf(failed_why, sizeof failed_why, "%s", reason ? reason : "unknown error");
        }
        if (why && why_len)
            say(why, why_len, "%s", failed_why);
        json_decref(f);
        goto out_free;
    }
    if (have_done) {
        *state = TD_MARKER_STALE;
        if (why && why_len)
            say(why, why_len, "%s", stale);
    }

out_free:
    json_decref(j);
    free(failed_path);
    free(done_path);
    return TD_OK;
}

void td_failed_info_release(td_failed_info *info)
{
    if (!info)
        return;
    free(info->reason);
    free(info->kind);
    free(info->time);
    memset(info, 0, sizeof *info);
}

int td_marker_read_failed(const td_scene *scene, const char *task, td_failed_info *info,
                          td_error *err)
{
    memset(info, 0, sizeof *info);
    if (!task_ok(task))
        return td_error_set(err, TD_EINVAL, "%s: invalid task name", scene->path);
    char *path = td_marker_path(scene, task, "failed");
    if (!path)
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", scene->path);

    int rc = TD_OK;
    char why[TD_ERROR_MSG_MAX];
    json_t *j = NULL;
    int errnum;
    enum load_result lr = load_marker(path, &j, why, sizeof why, &errnum);
    if (lr == LOAD_ABSENT) {
        rc = td_error_errno(err, TD_EIO, errnum, "%s: cannot read", path);
        goto out_free;
    }
    if (lr == LOAD_BAD) {
        rc = td_error_set(err, TD_EINPUT, "%s: %s", path, why);
        goto out_free;
    }
    const char *mtask = json_string_value(json_object_get(j, "task"));
    const char *reason = json_string_value(json_object_get(j, "error"));
    const char *kind = json_string_value(json_object_get(j, "kind"));
    const char *tm = json_string_value(json_object_get(j, "time"));
    int64_t attempts;
    if (!marker_for_scene(j, scene, NULL)) {
        rc = td_error_set(err, TD_EINPUT, "%s: marker is for another scene", path);
        goto out_free;
    }
    if (!mtask || strcmp(mtask, task) != 0 || !reason || !kind || !tm ||
        !get_int(j, "attempts", &attempts) || attempts < 0 || attempts > INT32_MAX) {
        rc = td_error_set(err, TD_EINPUT, "%s: marker unreadable: missing or bad fields", path);
        goto out_free;
    }
    info->reason = strdup(reason);
    info->kind = strdup(kind);
    info->time = strdup(tm);
    info->attempts = (int)attempts;
    if (!info->reason || !info->kind || !info->time) {
        td_failed_info_release(info);
        rc = td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
    }

out_free:
    json_decref(j);
    free(path);
    return rc;
}

int td_marker_remove(const td_scene *scene, const char *task, td_error *err)
{
    if (!task_ok(task))
        return td_error_set(err, TD_EINVAL, "%s: invalid task name", scene->path);
    static const char *const kinds[] = { "done", "failed" };
    int removed = 0;
    for (size_t i = 0; i < 2; i++) {
        char *path = td_marker_path(scene, task, kinds[i]);
        if (!path)
            return td_error_set(err, TD_ENOMEM, "%s: out of memory", scene->path);
        if (unlink(path) == 0) {
            removed++;
        } else if (errno != ENOENT) {
            int rc = td_error_errno(err, TD_EIO, errno, "%s: cannot remove", path);
            free(path);
            return rc;
        }
        free(path);
    }
    /* Make the removal durable, or a power cut could bring a .done back
     * and a --force rerun would skip the scene. */
    return removed ? td_fsync_dir(scene->dir, err) : TD_OK;
}
