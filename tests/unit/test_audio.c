/*
 * test_audio.c: unit tests for src/media/audio.c (decode to 16 kHz mono).
 *
 * The inputs are made at test time in a mkdtemp directory: clips with the
 * ffmpeg CLI (lavfi sources, each at most 3 s) and WAV files written here
 * byte by byte where the exact sample values or a broken header matter.
 * Signal checks use what survives lossy coding and resampling: the RMS of
 * a sine and its frequency counted by zero crossings.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "media/audio.h"

static char tmpdir[] = "/tmp/td-audio-XXXXXX";
static int have_ffmpeg;

/* ---- helpers ----------------------------------------------------------- */

static void path_in(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

/* Run an ffmpeg command line (arguments after "ffmpeg"), quietly. The
 * directory is cd'ed into so the names need no quoting. */
static int ffmpeg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int ffmpeg(const char *fmt, ...)
{
    char args[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && ffmpeg -nostdin -hide_banner -loglevel error -y %s </dev/null", tmpdir,
             args);
    int st = system(cmd);
    return (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0) ? 0 : -1;
}

/* Copy the first n bytes of one file in tmpdir to another. */
static int cut_file(const char *from, const char *to, long n)
{
    char a[512], b[512];
    path_in(a, sizeof a, from);
    path_in(b, sizeof b, to);
    FILE *in = fopen(a, "rb");
    if (!in)
        return -1;
    FILE *out = fopen(b, "wb");
    if (!out) {
        fclose(in);
        return -1;
    }
    char chunk[4096];
    long left = n;
    int rc = 0;
    while (left > 0) {
        size_t want = left < (long)sizeof chunk ? (size_t)left : sizeof chunk;
        size_t got = fread(chunk, 1, want, in);
        if (got == 0)
            break;
        if (fwrite(chunk, 1, got, out) != got)
            rc = -1;
        left -= (long)got;
    }
    fclose(in);
    if (fclose(out) != 0)
        rc = -1;
    return rc;
}

static long file_size(const char *name)
{
    char p[512];
    path_in(p, sizeof p, name);
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static void put_le16(FILE *f, unsigned v)
{
    fputc((int)(v & 0xff), f);
    fputc((int)((v >> 8) & 0xff), f);
}

static void put_le32(FILE *f, uint32_t v)
{
    put_le16(f, v & 0xffff);
    put_le16(f, v >> 16);
}

/* A canonical PCM WAV (or another format tag, for the "cannot decode" case)
 * of mono 16-bit samples at rate. */
static int write_wav(const char *name, unsigned tag, unsigned rate, const int16_t *s, size_t n)
{
    char p[512];
    path_in(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    if (!f)
        return -1;
    uint32_t data = (uint32_t)(n * 2);
    fwrite("RIFF", 1, 4, f);
    put_le32(f, 36 + data);
    fwrite("WAVEfmt ", 1, 8, f);
    put_le32(f, 16);
    put_le16(f, tag);
    put_le16(f, 1);          /* channels */
    put_le32(f, rate);
    put_le32(f, rate * 2);   /* byte rate */
    put_le16(f, 2);          /* block align */
    put_le16(f, 16);         /* bits */
    fwrite("data", 1, 4, f);
    put_le32(f, data);
    for (size_t i = 0; i < n; i++)
        put_le16(f, (uint16_t)s[i]);
    return fclose(f) == 0 ? 0 : -1;
}

/* A deterministic "known s16" signal: a ramp, a few extremes and noise. */
static int16_t known_sample(size_t i)
{
    if (i == 0)
        return INT16_MIN;
    if (i == 1)
        return INT16_MAX;
    if (i == 2)
        return 0;
    uint32_t x = (uint32_t)i * 2654435761u;
    x ^= x >> 13;
    return (int16_t)(x & 0xffff);
}

/* Decode a whole file in chunks of `chunk`, checking that the position
 * follows. Returns the samples (caller frees) or NULL with *rc and err. */
static float *read_all(const char *name, size_t chunk, size_t *n, int *rc, td_error *err)
{
    char p[512];
    path_in(p, sizeof p, name);
    td_audio_reader *r = NULL;
    *n = 0;
    *rc = td_audio_open(p, &r, err);
    if (*rc != TD_OK) {
        assert_null(r);
        return NULL;
    }
    size_t cap = 16000 * 8;
    float *all = malloc(cap * sizeof *all);
    float *buf = malloc(chunk * sizeof *buf);
    assert_non_null(all);
    assert_non_null(buf);
    for (;;) {
        long got = td_audio_read(r, buf, chunk, err);
        if (got < 0) {
            *rc = (int)got;
            break;
        }
        if (got == 0) {
            /* The end is stable: asking again still says 0. */
            assert_int_equal(td_audio_read(r, buf, chunk, err), 0);
            break;
        }
        assert_true((size_t)got <= chunk);
        if (*n + (size_t)got > cap) {
            cap *= 2;
            all = realloc(all, cap * sizeof *all);
            assert_non_null(all);
        }
        memcpy(all + *n, buf, (size_t)got * sizeof *buf);
        *n += (size_t)got;
        assert_int_equal(td_audio_position(r), *n);
    }
    free(buf);
    td_audio_close(&r);
    assert_null(r);
    return all;
}

static double rms(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return n ? sqrt(s / (double)n) : 0;
}

/* Upward zero crossings: for a sine, its frequency times the length in s. */
static int upward_crossings(const float *x, size_t n)
{
    int c = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i - 1] < 0 && x[i] >= 0)
            c++;
    return c;
}

/* Open must fail with code, with a message that names the file and says
 * `what`. */
static void expect_open_error(const char *path, int code, const char *what)
{
    td_audio_reader *r = NULL;
    td_error err = {0};
    int rc = td_audio_open(path, &r, &err);
    print_message("  %s -> %d %s\n", path, rc, err.msg);
    assert_int_equal(rc, code);
    assert_int_equal(err.code, code);
    assert_null(r);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, what));
}

#define SKIP_WITHOUT_FFMPEG()                                              \
    do {                                                                   \
        if (!have_ffmpeg) {                                                \
            print_message("  skipped: ffmpeg CLI not found\n");            \
            skip();                                                        \
        }                                                                  \
    } while (0)

/* ---- fixtures ---------------------------------------------------------- */

#define SINE_05 "aevalsrc=0.5*sin(2*PI*440*t):s=44100:d=2"

static int make_media(void)
{
    /* 2 s of a 0.5-amplitude 440 Hz sine in both channels at 44.1 kHz,
     * AAC in mp4 beside an mpeg4 video track; then the same with the index
     * (moov) in front, as +faststart writes it. */
    if (ffmpeg("-f lavfi -i 'aevalsrc=0.5*sin(2*PI*440*t)|0.5*sin(2*PI*440*t):s=44100:d=2' "
               "-f lavfi -i 'testsrc=size=64x64:rate=10:d=2' -c:a aac -b:a 128k "
               "-c:v mpeg4 -shortest av.mp4") != 0)
        return -1;
    if (ffmpeg("-i av.mp4 -c copy -movflags +faststart av_fast.mp4") != 0)
        return -1;
    if (ffmpeg("-f lavfi -i 'testsrc=size=64x64:rate=10:d=1' -c:v mpeg4 video_only.mp4") != 0)
        return -1;
    /* Two audio streams: 440 Hz at 0.5 first, 1000 Hz at 0.25 second
     * (at a higher bitrate, which av_find_best_stream would prefer). */
    if (ffmpeg("-f lavfi -i '" SINE_05 "' "
               "-f lavfi -i 'aevalsrc=0.25*sin(2*PI*1000*t):s=48000:d=2' "
               "-map 0:a -map 1:a -c:a:0 aac -b:a:0 64k -c:a:1 pcm_s16le "
               "-disposition:a:0 0 -disposition:a:1 0 two.mkv") != 0)
        return -1;
    if (ffmpeg("-i two.mkv -map 0 -c copy -disposition:a:0 0 -disposition:a:1 default "
               "two_default2.mkv") != 0)
        return -1;
    /* Matroska written to a pipe has no duration in its header. */
    if (ffmpeg("-f lavfi -i '" SINE_05 "' -c:a flac -f matroska - > piped.mkv") != 0)
        return -1;
    /* FLAC in Ogg, 48 kHz stereo with a little noise so that it stays big:
     * the demuxer reads the last 64 KiB for the duration, and the hole the
     * test puts in the middle must not reach there. */
    if (ffmpeg("-f lavfi -i 'aevalsrc=0.5*sin(2*PI*440*t)+0.1*(random(0)-0.5)|"
               "0.5*sin(2*PI*440*t)+0.1*(random(1)-0.5):s=48000:d=2' -c:a flac sine.ogg") != 0)
        return -1;
    if (ffmpeg("-f lavfi -i '" SINE_05 "' -c:a aac sine.m4a") != 0)
        return -1;
    /* Matroska declares one duration for the whole file: here 1 s of audio
     * beside 3 s of picture (a whole file), and a 3 s file cut in half. */
    if (ffmpeg("-f lavfi -i 'aevalsrc=0.5*sin(2*PI*440*t):s=44100:d=1' "
               "-f lavfi -i 'testsrc=size=64x64:rate=10:d=3' -c:a flac -c:v mpeg4 short_audio.mkv") != 0)
        return -1;
    if (ffmpeg("-f lavfi -i 'aevalsrc=0.5*sin(2*PI*440*t)+0.1*(random(0)-0.5):s=44100:d=3' "
               "-f lavfi -i 'testsrc=size=64x64:rate=10:d=3' -c:a flac -c:v mpeg4 whole.mkv") != 0)
        return -1;
    if (cut_file("whole.mkv", "cut.mkv", file_size("whole.mkv") / 2) != 0)
        return -1;
    /* Cut in the middle: with the index at the end it is lost; with the
     * index in front it promises samples that are not there. */
    if (cut_file("av.mp4", "cut_moov_end.mp4", file_size("av.mp4") / 2) != 0 ||
        cut_file("av_fast.mp4", "cut_faststart.mp4", file_size("av_fast.mp4") / 2) != 0)
        return -1;
    return 0;
}

static int group_setup(void **state)
{
    if (!mkdtemp(tmpdir))
        return -1;
    have_ffmpeg = system("ffmpeg -nostdin -version >/dev/null 2>&1") == 0;
    if (have_ffmpeg && make_media() != 0) {
        fprintf(stderr, "test_audio: ffmpeg failed to make the test media\n");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'", tmpdir, tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- decoding ---------------------------------------------------------- */

static void test_mp4_aac_stereo_44k(void **state)
{
    SKIP_WITHOUT_FFMPEG();
    char p[512];
    path_in(p, sizeof p, "av.mp4");
    td_audio_reader *r = NULL;
    td_error err = {0};
    assert_int_equal(td_audio_open(p, &r, &err), TD_OK);
    assert_true(fabs(td_audio_duration(r) - 2.0) < 0.05);
    assert_int_equal(td_audio_position(r), 0);
    td_audio_close(&r);
    assert_null(r);
    td_audio_close(&r); /* closing NULL is harmless */

    size_t n;
    int rc;
    float *x = read_all("av.mp4", 4096, &n, &rc, &err);
    assert_int_equal(rc, TD_OK);
    print_message("  av.mp4: %zu samples\n", n);
    /* 2 s at 16 kHz; AAC frames round the end up to 1024 input samples. */
    assert_true(n >= 32000 - 160 && n <= 32000 + 800);
    /* Stereo 0.5 sines averaged to mono: RMS 0.5 / sqrt(2). Skip the edges,
     * where the encoder and resampler ramp in and out. */
    double v = rms(x + 1600, 16000);
    print_message("  rms %.4f\n", v);
    assert_true(fabs(v - 0.5 / sqrt(2.0)) < 0.01);
    int zc = upward_crossings(x + 1600, 16000);
    assert_true(zc >= 438 && zc <= 442);
    for (size_t i = 0; i < n; i++)
        assert_true(x[i] >= -1.0f && x[i] <= 1.0f);
    free(x);
}

static void test_wav_16k_exact(void **state)
{
    enum { N = 16000 };
    int16_t *s = malloc(N * sizeof *s);
    assert_non_null(s);
    for (size_t i = 0; i < N; i++)
        s[i] = known_sample(i);

    /* A colon in a relative name must not make FFmpeg look for a
     * "tape1" protocol. */
    assert_int_equal(write_wav("tape1:exact.wav", 1, 16000, s, N), 0);
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(tmpdir), 0);
    td_audio_reader *r = NULL;
    td_error err = {0};
    int rc = td_audio_open("tape1:exact.wav", &r, &err);
    assert_int_equal(chdir(cwd), 0);
    print_message("  relative open: %d %s\n", rc, err.msg);
    assert_int_equal(rc, TD_OK);
    assert_true(fabs(td_audio_duration(r) - 1.0) < 1e-6);
    td_audio_close(&r);

    size_t n;
    float *x = read_all("tape1:exact.wav", 1000, &n, &rc, &err);
    assert_int_equal(rc, TD_OK);
    assert_int_equal(n, N);
    double maxerr = 0;
    for (size_t i = 0; i < N; i++) {
        double e = fabs((double)x[i] - s[i] / 32768.0);
        if (e > maxerr)
            maxerr = e;
    }
    print_message("  max error %.3g\n", maxerr);
    assert_true(maxerr < 1e-3);
    free(x);
    free(s);
}

static void test_small_chunks_match_big(void **state)
{
    SKIP_WITHOUT_FFMPEG();
    size_t n7, nbig;
    int rc;
    td_error err = {0};
    float *a = read_all("av.mp4", 7, &n7, &rc, &err);
    assert_int_equal(rc, TD_OK);
    float *b = read_all("av.mp4", 65536, &nbig, &rc, &err);
    assert_int_equal(rc, TD_OK);
    assert_int_equal(n7, nbig);
    assert_memory_equal(a, b, n7 * sizeof *a);
    free(a);
    free(b);
}

static void test_big_buffer_is_filled(void **state)
{
    SKIP_WITHOUT_FFMPEG();
    /* One read with room for everything returns everything, not one frame. */
    char p[512];
    path_in(p, sizeof p, "av.mp4");
    td_audio_reader *r = NULL;
    td_error err = {0};
    assert_int_equal(td_audio_open(p, &r, &err), TD_OK);
    float *buf = malloc(16000 * 4 * sizeof *buf);
    assert_non_null(buf);
    long got = td_audio_read(r, buf, 16000 * 4, &err);
    assert_true(got >= 32000 - 160);
    assert_int_equal(td_audio_position(r), (size_t)got);
    assert_int_equal(td_audio_read(r, buf, 16000 * 4, &err), 0);
    assert_int_equal(td_audio_read(r, buf, 0, &err), TD_EINVAL);
    free(buf);
    td_audio_close(&r);
}

/* Read a file whole and check it is a sine of freq (+-tolerance) Hz at
 * amplitude amp, measured over 1 s after the first 0.1 s; returns the
 * sample count. */
static size_t expect_tone(const char *name, int freq, int tolerance, double amp)
{
    size_t n;
    int rc;
    td_error err = {0};
    float *x = read_all(name, 4096, &n, &rc, &err);
    assert_int_equal(rc, TD_OK);
    assert_true(n >= 1600 + 16000);
    int zc = upward_crossings(x + 1600, 16000);
    double level = rms(x + 1600, 16000);
    print_message("  %s: %d crossings/s, rms %.3f\n", name, zc, level);
    assert_true(zc >= freq - tolerance && zc <= freq + tolerance);
    assert_true(fabs(level - amp / sqrt(2.0)) < 0.01);
    free(x);
    return n;
}

static void test_mkv_two_streams_first(void **state)
{
    SKIP_WITHOUT_FFMPEG();
    size_t n = expect_tone("two.mkv", 440, 2, 0.5);
    assert_true(n >= 31000 && n <= 33000);
}

static void test_mkv_default_disposition_wins(void **state)
{
    SKIP_WITHOUT_FFMPEG();
    expect_tone("two_default2.mkv", 1000, 5, 0.25);
}

static void test_unknown_duration(void **state)
{
    SKIP_WITHOUT_FFMPEG();
    char p[512];
    path_in(p, sizeof p, "piped.mkv");
    td_audio_reader *r = NULL;
    td_error err = {0};
    assert_int_equal(td_audio_open(p, &r, &err), TD_OK);
    print_message("  piped.mkv duration %.3f\n", td_audio_duration(r));
    assert_true(td_audio_duration(r) == -1 || fabs(td_audio_duration(r) - 2.0) < 0.05);
    td_audio_close(&r);
    size_t n;
    int rc;
    float *x = read_all("piped.mkv", 4096, &n, &rc, &err);
    assert_int_equal(rc, TD_OK);
    assert_true(n >= 31800 && n <= 32200);
    free(x);
}

/* ---- bad inputs -------------------------------------------------------- */

static void test_empty_file(void **state)
{
    char p[512];
    path_in(p, sizeof p, "empty.mp4");
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fclose(f);
    expect_open_error(p, TD_EINPUT, "empty file");
}

static void test_text_file(void **state)
{
    char p[512];
    path_in(p, sizeof p, "notes.mp4");
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    for (int i = 0; i < 100; i++)
        fprintf(f, "Tape 1, scene %d: grandma's birthday, the cake, the candles.\n", i);
    fclose(f);
    expect_open_error(p, TD_EINPUT, "not a readable media file");
}

static void test_video_without_audio(void **state)
{
    SKIP_WITHOUT_FFMPEG();
    char p[512];
    path_in(p, sizeof p, "video_only.mp4");
    expect_open_error(p, TD_EINPUT, "no audio stream");
}

static void test_undecodable_codec(void **state)
{
    int16_t s[1600] = {0};
    assert_int_equal(write_wav("odd_codec.wav", 0x7a7a, 16000, s, 1600), 0);
    char p[512];
    path_in(p, sizeof p, "odd_codec.wav");
    expect_open_error(p, TD_EINPUT, "cannot decode audio codec");
}

static void test_truncated_moov_at_end(void **state)
{
    SKIP_WITHOUT_FFMPEG();
    char p[512];
    path_in(p, sizeof p, "cut_moov_end.mp4");
    expect_open_error(p, TD_EINPUT, "truncated");
    td_audio_reader *r = NULL;
    td_error err = {0};
    td_audio_open(p, &r, &err);
    assert_non_null(strstr(err.msg, "moov atom not found"));
}

static void test_truncated_faststart(void **state)
{
    SKIP_WITHOUT_FFMPEG();
    char p[512];
    path_in(p, sizeof p, "cut_faststart.mp4");
    td_audio_reader *r = NULL;
    td_error err = {0};
    /* The index is whole, so the file opens and promises 2 s... */
    assert_int_equal(td_audio_open(p, &r, &err), TD_OK);
    assert_true(fabs(td_audio_duration(r) - 2.0) < 0.05);
    /* ...and the read that runs out of data says so instead of ending. */
    float buf[512];
    long got;
    size_t total = 0;
    while ((got = td_audio_read(r, buf, 512, &err)) > 0)
        total += (size_t)got;
    print_message("  %s after %zu samples\n", err.msg, total);
    assert_int_equal(got, TD_EINPUT);
    assert_int_equal(err.code, TD_EINPUT);
    assert_non_null(strstr(err.msg, p));
    assert_non_null(strstr(err.msg, "truncated: audio ends at"));
    assert_non_null(strstr(err.msg, "of 2.0 s"));
    assert_true(total > 0 && total < 32000);
    assert_int_equal(td_audio_position(r), total);
    /* The error sticks. */
    td_error again = {0};
    assert_int_equal(td_audio_read(r, buf, 512, &again), TD_EINPUT);
    assert_string_equal(again.msg, err.msg);
    td_audio_close(&r);
}

/* Overwrite n bytes of a file in tmpdir from offset with `byte` (or with
 * pseudo-random bytes when byte < 0), or insert them when insert is set. */
static int damage_file(const char *from, const char *to, long offset, long n, int byte,
                       int insert)
{
    long size = file_size(from);
    if (size < 0 || offset > size)
        return -1;
    if (cut_file(from, to, offset) != 0)
        return -1;
    char a[512], b[512];
    path_in(a, sizeof a, from);
    path_in(b, sizeof b, to);
    FILE *in = fopen(a, "rb");
    FILE *out = fopen(b, "ab");
    if (!in || !out) {
        if (in)
            fclose(in);
        if (out)
            fclose(out);
        return -1;
    }
    uint32_t x = 12345;
    for (long i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        fputc(byte >= 0 ? byte : (int)(x >> 24), out);
    }
    if (fseek(in, insert ? offset : offset + n, SEEK_SET) == 0) {
        int c;
        while ((c = fgetc(in)) != EOF)
            fputc(c, out);
    }
    fclose(in);
    return fclose(out) == 0 ? 0 : -1;
}

static void test_mkv_audio_shorter_than_picture(void **state)
{
    SKIP_WITHOUT_FFMPEG();
    size_t n = 0;
    int rc = 0;
    td_error err = {0};
    float *s = read_all("short_audio.mkv", 4096, &n, &rc, &err);
    if (rc != TD_OK)
        fail_msg("a whole file whose audio stops before its picture was refused: %s", err.msg);
    assert_true(labs((long)n - 16000) < 400); /* its 1 s of audio, all of it */
    free(s);
}

static void test_mkv_cut_in_half(void **state)
{
    SKIP_WITHOUT_FFMPEG();
    size_t n = 0;
    int rc = 0;
    td_error err = {0};
    float *s = read_all("cut.mkv", 4096, &n, &rc, &err);
    free(s);
    if (rc != TD_EINPUT)
        fail_msg("a cut Matroska file read as rc %d after %zu samples (%s)", rc, n, err.msg);
    assert_non_null(strstr(err.msg, "cut.mkv"));
}

static void test_corrupt_middle_is_an_error(void **state)
{
    SKIP_WITHOUT_FFMPEG();
    /* 100 KB of zeros in the middle of an Ogg file: the demuxer loses the
     * page sync and fails; ffmpeg's CLI would quietly stop there. */
    long size = file_size("sine.ogg");
    assert_true(size > 3 * 65536);
    assert_int_equal(damage_file("sine.ogg", "hole.ogg", size / 3, 100000, 0, 1), 0);
    size_t n;
    int rc;
    td_error err = {0};
    float *x = read_all("hole.ogg", 4096, &n, &rc, &err);
    print_message("  %s after %zu samples\n", err.msg, n);
    assert_int_equal(rc, TD_EINPUT);
    assert_non_null(strstr(err.msg, "hole.ogg"));
    assert_non_null(strstr(err.msg, "read error at"));
    assert_non_null(strstr(err.msg, "of 2.0 s"));
    assert_true(n > 0 && n < 28000);
    free(x);
}

static void test_garbage_audio_data(void **state)
{
    SKIP_WITHOUT_FFMPEG();
    /* The index is intact but the AAC payload after the first third is
     * noise: the decoder rejects packet after packet. */
    long size = file_size("sine.m4a");
    assert_int_equal(damage_file("sine.m4a", "noise.m4a", size / 3, size / 2, -1, 0), 0);
    size_t n;
    int rc;
    td_error err = {0};
    float *x = read_all("noise.m4a", 4096, &n, &rc, &err);
    print_message("  %d %s after %zu samples\n", rc, err.msg, n);
    assert_int_equal(rc, TD_EINPUT);
    assert_non_null(strstr(err.msg, "noise.m4a"));
    free(x);
}

static void test_directory_and_missing(void **state)
{
    expect_open_error(tmpdir, TD_EINPUT, "directory");
    char p[512];
    path_in(p, sizeof p, "no_such_scene.mp4");
    expect_open_error(p, TD_EINPUT, "No such file");
}

static void test_unreadable(void **state)
{
    if (geteuid() == 0) {
        /* root reads anything; the directory and missing-path cases above
         * cover the open-time checks instead. */
        print_message("  skipped: running as root, chmod 000 does not stop reads\n");
        skip();
    }
    int16_t s[160] = {0};
    assert_int_equal(write_wav("locked.wav", 1, 16000, s, 160), 0);
    char p[512];
    path_in(p, sizeof p, "locked.wav");
    assert_int_equal(chmod(p, 0), 0);
    expect_open_error(p, TD_EIO, "Permission denied");
}

static void test_bad_arguments(void **state)
{
    td_audio_reader *r = NULL;
    td_error err = {0};
    assert_int_equal(td_audio_open(NULL, &r, &err), TD_EINVAL);
    assert_int_equal(td_audio_duration(NULL), -1);
    assert_int_equal(td_audio_position(NULL), 0);
    td_audio_close(NULL);
}

/* ---- fault point ------------------------------------------------------- */

/* Open in a child with TAPEDECK_FAULT set; return its wait status. */
static int open_in_child(const char *path, const char *fault)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("TAPEDECK_FAULT", fault, 1);
        td_audio_reader *r = NULL;
        td_error err = {0};
        int rc = td_audio_open(path, &r, &err);
        td_audio_close(&r);
        _exit(rc == TD_OK ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return st;
}

static void test_decode_fault_point(void **state)
{
    int16_t s[160] = {0};
    assert_int_equal(write_wav("fault_scene.wav", 1, 16000, s, 160), 0);
    char p[512];
    path_in(p, sizeof p, "fault_scene.wav");
    int st = open_in_child(p, "kill:decode:fault_scene");
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    st = open_in_child(p, "kill:decode:another_scene");
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* A file that fails to open never reaches the point. */
    path_in(p, sizeof p, "no_such_fault_scene.wav");
    st = open_in_child(p, "kill:decode:fault_scene");
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mp4_aac_stereo_44k),
        cmocka_unit_test(test_wav_16k_exact),
        cmocka_unit_test(test_small_chunks_match_big),
        cmocka_unit_test(test_big_buffer_is_filled),
        cmocka_unit_test(test_mkv_two_streams_first),
        cmocka_unit_test(test_mkv_default_disposition_wins),
        cmocka_unit_test(test_unknown_duration),
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_text_file),
        cmocka_unit_test(test_video_without_audio),
        cmocka_unit_test(test_undecodable_codec),
        cmocka_unit_test(test_truncated_moov_at_end),
        cmocka_unit_test(test_truncated_faststart),
        cmocka_unit_test(test_mkv_audio_shorter_than_picture),
        cmocka_unit_test(test_mkv_cut_in_half),
        cmocka_unit_test(test_corrupt_middle_is_an_error),
        cmocka_unit_test(test_garbage_audio_data),
        cmocka_unit_test(test_directory_and_missing),
        cmocka_unit_test(test_unreadable),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_decode_fault_point),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
