/* test_mkmodel.c: the random-weight model generator (whisper/mkmodel.h):
 * standard dimensions, byte-for-byte determinism (and a recorded SHA-256
 * that other machines must reproduce), weight scales, F16 rounding, the
 * Slaney filterbank against the real one and against librosa values,
 * header copying, errors, and the tapedeck-mkmodel command line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <errno.h>
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/error.h"
#include "util/hash.h"
#include "whisper/mkmodel.h"
#include "whisper/model.h"

#define SHARED "../shared/whisper"

/* SHA-256 of small_spec(42, F16) and small_spec(42, F32), recorded when
 * the generator was written. The same bytes on every machine is the
 * generator's promise: if one of these changes, every reference result
 * computed from generated models must be redone. */
#define SHA_SMALL_F16 "792a10a115474feea91e45f819055ce928b56b9a0ba6fa05ee8789c37554850a"
#define SHA_SMALL_F32 "b05a10ea41ef7622263a795a612325307825a4f8d387b1f91a5170f6c060c689"

/* ------------------------------------------------------------ helpers */

static int setup_dir(void **state)
{
    char tmpl[] = "/tmp/td-mkmodel-XXXXXX";
    if (!mkdtemp(tmpl))
        return -1;
    *state = strdup(tmpl);
    return 0;
}

static int teardown_dir(void **state)
{
    rm_tree(*state);
    free(*state);
    return 0;
}

/* A small model that keeps Whisper's context sizes: 64 wide, 2 heads,
 * 2 + 2 layers, 80 mels, multilingual vocabulary. */
static td_wmk_spec small_spec(uint64_t seed, enum td_wtype wt)
{
    td_wmk_spec s;
    memset(&s, 0, sizeof s);
    td_error err;
    assert_int_equal(td_wmk_dims("tiny", &s.hp, &err), TD_OK);
    s.hp.n_audio_state = s.hp.n_text_state = 64;
    s.hp.n_audio_head = s.hp.n_text_head = 2;
    s.hp.n_audio_layer = s.hp.n_text_layer = 2;
    s.wtype = wt;
    s.seed = seed;
    return s;
}

static void *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    void *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Files in dir other than . and .. (to see that no temporary is left). */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static float tensor_f32(const td_wtensor *t, size_t i)
{
    float v;
    memcpy(&v, (const char *)t->data + 4 * i, 4);
    return v;
}

static uint16_t tensor_f16_bits(const td_wtensor *t, size_t i)
{
    uint16_t v;
    memcpy(&v, (const char *)t->data + 2 * i, 2);
    return v;
}

static size_t n_elems(const td_wtensor *t)
{
    size_t n = 1;
    for (int i = 0; i < 4; i++)
        n *= (size_t)t->ne[i];
    return n;
}

/* ------------------------------------------------------------ dims */

static void test_dims_table(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int state, head, enc, dec, mels, vocab;
    } want[] = {
        {"tiny", 384, 6, 4, 4, 80, 51865},          {"tiny.en", 384, 6, 4, 4, 80, 51864},
        {"base", 512, 8, 6, 6, 80, 51865},          {"base.en", 512, 8, 6, 6, 80, 51864},
        {"small", 768, 12, 12, 12, 80, 51865},      {"small.en", 768, 12, 12, 12, 80, 51864},
        {"medium", 1024, 16, 24, 24, 80, 51865},    {"medium.en", 1024, 16, 24, 24, 80, 51864},
        {"large-v2", 1280, 20, 32, 32, 80, 51865},  {"large-v3", 1280, 20, 32, 32, 128, 51866},
        {"large-v3-turbo", 1280, 20, 32, 4, 128, 51866},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        td_whparams hp;
        td_error err;
        assert_int_equal(td_wmk_dims(want[i].name, &hp, &err), TD_OK);
        assert_int_equal(hp.n_audio_state, want[i].state);
        assert_int_equal(hp.n_text_state, want[i].state);
        assert_int_equal(hp.n_audio_head, want[i].head);
        assert_int_equal(hp.n_text_head, want[i].head);
        assert_int_equal(hp.n_audio_layer, want[i].enc);
        assert_int_equal(hp.n_text_layer, want[i].dec);
        assert_int_equal(hp.n_mels, want[i].mels);
        assert_int_equal(hp.n_vocab, want[i].vocab);
        assert_int_equal(hp.n_audio_ctx, 1500);
        assert_int_equal(hp.n_text_ctx, 448);
    }
    td_whparams hp;
    td_error err = {0};
    assert_int_equal(td_wmk_dims("huge", &hp, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "huge"));
    assert_int_equal(td_wmk_dims("large-v3.en", &hp, &err), TD_EINVAL);
}

/* ------------------------------------------------------------ determinism */

static void test_same_seed_same_bytes(void **state)
{
    const char *dir = *state;
    char *a = pathf("%s/a.bin", dir), *b = pathf("%s/b.bin", dir), *c = pathf("%s/c.bin", dir);
    td_error err = {0};
    td_wmk_spec s = small_spec(7, TD_WT_F16);
    assert_int_equal(td_wmk_write(&s, a, &err), TD_OK);
    assert_int_equal(td_wmk_write(&s, b, &err), TD_OK);
    s.seed = 8;
    assert_int_equal(td_wmk_write(&s, c, &err), TD_OK);

    size_t la, lb, lc;
    uint8_t *pa = slurp(a, &la), *pb = slurp(b, &lb), *pc = slurp(c, &lc);
    assert_int_equal(la, lb);
    assert_memory_equal(pa, pb, la);
    assert_int_equal(la, lc); /* same dims, same size */
    /* The front (hparams, filters, vocabulary) does not depend on the
     * seed; the weights do, nearly everywhere. */
    td_wmodel *ma, *mc;
    assert_int_equal(td_wmodel_open(a, &ma, &err), TD_OK);
    assert_int_equal(td_wmodel_open(c, &mc, &err), TD_OK);
    size_t front = (size_t)((const uint8_t *)ma->enc.pos->data - (const uint8_t *)ma->map);
    assert_true(front > 64 && front < la);
    assert_memory_equal(pa, pc, front - 64); /* up to the first tensor's record */
    const td_wtensor *ta = ma->dec.tok, *tc = mc->dec.tok;
    size_t same = 0, n = n_elems(ta);
    for (size_t i = 0; i < n; i++)
        same += tensor_f16_bits(ta, i) == tensor_f16_bits(tc, i);
    assert_true(same < n / 100);
    td_wmodel_close(ma);
    td_wmodel_close(mc);
    free(pa);
    free(pb);
    free(pc);
    free(a);
    free(b);
    free(c);
}

static void check_sha(const char *dir, enum td_wtype wt, const char *want)
{
    char *p = pathf("%s/sha.bin", dir);
    td_error err = {0};
    td_wmk_spec s = small_spec(42, wt);
    assert_int_equal(td_wmk_write(&s, p, &err), TD_OK);
    char hex[TD_SHA256_HEX_LEN + 1];
    int64_t size;
    assert_int_equal(td_sha256_file(p, hex, &size, &err), TD_OK);
    if (strcmp(hex, want) != 0)
        print_message("%s model, seed 42: sha256 %s, %lld bytes (recorded %s)\n",
                      wt == TD_WT_F16 ? "F16" : "F32", hex, (long long)size, want);
    assert_string_equal(hex, want);
    free(p);
}

/* The cross-machine check: these bytes must come out everywhere. */
static void test_recorded_sha256(void **state)
{
    check_sha(*state, TD_WT_F16, SHA_SMALL_F16);
    check_sha(*state, TD_WT_F32, SHA_SMALL_F32);
}

/* ------------------------------------------------------------ weights */

static void stats(const td_wtensor *t, double *mean, double *sd, double *absmax)
{
    size_t n = n_elems(t);
    double s = 0, s2 = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double v = tensor_f32(t, i);
        s += v;
        s2 += v * v;
        if (fabs(v) > mx)
            mx = fabs(v);
    }
    *mean = s / n;
    *sd = sqrt(s2 / n - *mean * *mean);
    *absmax = mx;
}

/* Each kind of tensor is uniform with its documented std: check the
 * bound a = std sqrt(3) (nearly reached, never passed) and the std. */
static void check_dist(const td_wtensor *t, double offset, double std)
{
    double mean, sd, mx;
    stats(t, &mean, &sd, &mx);
    double a = std * sqrt(3.0);
    size_t n = n_elems(t);
    for (size_t i = 0; i < n; i++) {
        double v = tensor_f32(t, i) - offset;
        assert_true(fabs(v) <= a * (1 + 1e-6));
    }
    assert_true(fabs(mean - offset) < 4 * std / sqrt((double)n) + 1e-7);
    assert_true(fabs(sd - std) < std * (n > 1000 ? 0.03 : 0.2));
}

static void test_weight_scales(void **state)
{
    char *p = pathf("%s/w.bin", (const char *)*state);
    td_error err = {0};
    td_wmk_spec s = small_spec(3, TD_WT_F32);
    assert_int_equal(td_wmk_write(&s, p, &err), TD_OK);
    td_wmodel *m;
    assert_int_equal(td_wmodel_open(p, &m, &err), TD_OK);
    double n = 64;
    check_dist(m->enc.pos, 0, 0.1);
    check_dist(m->dec.pos, 0, 0.1);
    check_dist(m->enc.conv1_w, 0, 1 / sqrt(3.0 * 80));
    check_dist(m->enc.conv2_w, 0, 1 / sqrt(3.0 * n));
    check_dist(m->enc.conv1_b, 0, 0.02);
    check_dist(m->dec.tok, 0, 3 / sqrt(n));
    for (int l = 0; l < 2; l++) {
        const td_wenc_layer *E = &m->enc.layers[l];
        const td_wdec_layer *D = &m->dec.layers[l];
        check_dist(E->attn_ln.w, 1, 0.1);
        check_dist(E->attn_ln.b, 0, 0.02);
        check_dist(E->attn.q.w, 0, 1 / sqrt(n));
        check_dist(E->attn.q.b, 0, 0.02);
        check_dist(E->mlp0.w, 0, 1 / sqrt(n));
        check_dist(E->mlp2.w, 0, 1 / sqrt(4 * n));
        check_dist(D->cross.k.w, 0, 1 / sqrt(n));
        check_dist(D->cross_ln.w, 1, 0.1);
        check_dist(D->mlp2.b, 0, 0.02);
    }
    check_dist(m->dec.ln.w, 1, 0.1);
    /* Tensors differ from each other (the stream goes on, it is not
     * restarted per tensor). */
    assert_memory_not_equal(m->enc.layers[0].attn.q.w->data, m->enc.layers[0].attn.k.w->data,
                            64 * 4);
    td_wmodel_close(m);
    free(p);
}

#ifdef __FLT16_MAX__
/* The F16 model holds the F32 model's values rounded to nearest even:
 * the draws do not depend on the type. Checked against the compiler's
 * conversion, which the generator does not use. */
static void test_f16_rounding(void **state)
{
    char *p16 = pathf("%s/h.bin", (const char *)*state), *p32 = pathf("%s/f.bin", (const char *)*state);
    td_error err = {0};
    td_wmk_spec s = small_spec(5, TD_WT_F16);
    assert_int_equal(td_wmk_write(&s, p16, &err), TD_OK);
    s.wtype = TD_WT_F32;
    assert_int_equal(td_wmk_write(&s, p32, &err), TD_OK);
    td_wmodel *h, *f;
    assert_int_equal(td_wmodel_open(p16, &h, &err), TD_OK);
    assert_int_equal(td_wmodel_open(p32, &f, &err), TD_OK);
    assert_int_equal(h->wtype, TD_WT_F16);
    assert_int_equal(f->wtype, TD_WT_F32);
    for (size_t t = 0; t < h->n_tensors; t++) {
        const td_wtensor *a = &h->tensors[t], *b = &f->tensors[t];
        assert_string_equal(a->name, b->name);
        size_t n = n_elems(a);
        if (a->type == TD_WT_F32) {
            assert_memory_equal(a->data, b->data, n * 4);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            _Float16 want = (_Float16)tensor_f32(b, i);
            uint16_t wb;
            memcpy(&wb, &want, 2);
            assert_int_equal(tensor_f16_bits(a, i), wb);
        }
    }
    td_wmodel_close(h);
    td_wmodel_close(f);
    free(p16);
    free(p32);
}
#endif

/* ------------------------------------------------------------ filterbank */

/* Against the real 80-mel filterbank that Whisper's files carry. */
static void test_filters_match_real(void **state)
{
    (void)state;
    const char *path = SHARED "/tiny.header.bin";
    if (!file_exists(path)) {
        print_message("skip: %s absent (Whisper reference data)\n", path);
        skip();
    }
    size_t len;
    uint8_t *h = slurp(path, &len);
    assert_true(len > 56 + 80 * 201 * 4);
    float *mine = malloc(80 * 201 * sizeof *mine);
    td_wmk_mel_filters(80, mine);
    double maxerr = 0;
    for (size_t i = 0; i < 80 * 201; i++) {
        float real;
        memcpy(&real, h + 56 + 4 * i, 4);
        double e = fabs((double)real - mine[i]);
        if (e > maxerr)
            maxerr = e;
    }
    assert_true(maxerr <= 1e-6);
    free(mine);
    free(h);
}

/* 128 mels (large-v3): spot values computed by an independent
 * transcription of librosa.filters.mel in Python (math.log/math.exp). */
static void test_filters_128(void **state)
{
    (void)state;
    float *f = malloc(128 * 201 * sizeof *f);
    td_wmk_mel_filters(128, f);
    static const struct {
        int mel, bin;
        float v;
    } spot[] = {
        {0, 1, 0.012373986653983593f},   {0, 2, 0.0f},
        {10, 6, 0.011289183981716633f},  {10, 7, 0.0010848019737750292f},
        {64, 42, 0.0067496825940907f},   {64, 43, 0.018091518431901932f},
        {100, 102, 0.00940941646695137f}, {100, 104, 0.0012144759530201554f},
        {127, 199, 0.0011142801959067583f}, {127, 200, 0.0f},
    };
    for (size_t i = 0; i < sizeof spot / sizeof spot[0]; i++)
        assert_true(fabs(f[spot[i].mel * 201 + spot[i].bin] - spot[i].v) <= 1e-7);
    /* Shape: non-negative triangles whose peaks move up in frequency,
     * none empty, and the highest bin (8 kHz, the edge) is zero. */
    int last_peak = -1;
    double total = 0;
    for (int m = 0; m < 128; m++) {
        int peak = 0, nonzero = 0;
        for (int k = 0; k < 201; k++) {
            float v = f[m * 201 + k];
            assert_true(v >= 0);
            nonzero += v > 0;
            total += v;
            if (v > f[m * 201 + peak])
                peak = k;
        }
        assert_true(nonzero >= 1);
        assert_true(peak >= last_peak);
        assert_true(f[m * 201 + 200] == 0.0f);
        last_peak = peak;
    }
    assert_true(fabs(total - 3.1909855409403463) < 1e-5);
    free(f);
}

/* ------------------------------------------------------------ header and vocabulary */

static void test_synthetic_vocabulary(void **state)
{
    char *p = pathf("%s/v.bin", (const char *)*state);
    td_error err = {0};
    td_wmk_spec s = small_spec(1, TD_WT_F16);
    s.hp.n_vocab = 51864; /* English-only: 50256 tokens spelled out */
    assert_int_equal(td_wmk_write(&s, p, &err), TD_OK);
    td_wmodel *m;
    assert_int_equal(td_wmodel_open(p, &m, &err), TD_OK);
    assert_int_equal(m->n_file_tokens, 50256);
    size_t n;
    const uint8_t *t = td_wmodel_token(m, 0, &n);
    assert_int_equal(n, 1);
    assert_int_equal(t[0], '!');
    t = td_wmodel_token(m, 93, &n);
    assert_int_equal(n, 1);
    assert_int_equal(t[0], '~');
    t = td_wmodel_token(m, 220, &n);
    assert_int_equal(n, 1);
    assert_memory_equal(t, " ", 1);
    t = td_wmodel_token(m, 532, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(t, " -", 2);
    t = td_wmodel_token(m, 705, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(t, " '", 2);
    assert_int_equal(m->sp.blank, 220);
    /* the rest: distinct, non-empty, ASCII; even ids start with a space */
    for (int32_t i = 94; i < m->n_file_tokens; i++) {
        t = td_wmodel_token(m, i, &n);
        assert_true(n >= 1);
        for (size_t k = 0; k < n; k++)
            assert_true(t[k] >= 0x20 && t[k] < 0x7f);
        if (i != 220 && i != 532 && i != 705)
            assert_int_equal(t[0] == ' ', i % 2 == 0);
    }
    size_t n1, n2;
    const uint8_t *a = td_wmodel_token(m, 1000, &n1), *b = td_wmodel_token(m, 1002, &n2);
    assert_false(n1 == n2 && memcmp(a, b, n1) == 0);
    td_wmodel_close(m);
    free(p);
}

static void test_header_copied_verbatim(void **state)
{
    const char *hpath = SHARED "/tiny.header.bin";
    if (!file_exists(hpath)) {
        print_message("skip: %s absent (Whisper reference data)\n", hpath);
        skip();
    }
    char *p = pathf("%s/hdr.bin", (const char *)*state);
    td_error err = {0};
    td_wmk_spec s = small_spec(1, TD_WT_F16);
    s.header_path = hpath;
    assert_int_equal(td_wmk_write(&s, p, &err), TD_OK);
    size_t lh, lo;
    uint8_t *h = slurp(hpath, &lh), *o = slurp(p, &lo);
    assert_true(lo > lh);
    assert_memory_equal(h, o, 4 + 4);               /* magic, n_vocab */
    assert_memory_equal(h + 48, o + 48, lh - 48);   /* filters and vocabulary */
    td_wmodel *m;
    assert_int_equal(td_wmodel_open(p, &m, &err), TD_OK);
    assert_int_equal(m->n_file_tokens, 50257);
    size_t n;
    td_wmodel_token(m, 50256, &n);
    assert_int_equal(n, 0); /* the multilingual file's empty token */
    td_wmodel_close(m);

    /* dims that disagree with the header */
    s.hp.n_vocab = 51864;
    assert_int_equal(td_wmk_write(&s, p, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "n_vocab"));
    s.hp.n_vocab = 51865;
    s.hp.n_mels = 128;
    assert_int_equal(td_wmk_write(&s, p, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "n_mels"));
    free(h);
    free(o);
    free(p);
}

static void test_bad_header_files(void **state)
{
    const char *dir = *state;
    char *h = pathf("%s/h.bin", dir), *p = pathf("%s/out.bin", dir);
    td_error err = {0};
    td_wmk_spec s = small_spec(1, TD_WT_F16);
    s.header_path = h;
    write_bytes(h, "GGUF1234", 8);
    assert_int_equal(td_wmk_write(&s, p, &err), TD_EINPUT);
    assert_non_null(strstr(err.msg, "not a ggml Whisper model file"));
    /* a real model cut in its vocabulary */
    td_wmk_spec g = small_spec(1, TD_WT_F16);
    assert_int_equal(td_wmk_write(&g, h, &err), TD_OK);
    assert_int_equal(truncate(h, 48 + 8 + 80 * 201 * 4 + 4 + 100), 0);
    assert_int_equal(td_wmk_write(&s, p, &err), TD_EINPUT);
    assert_non_null(strstr(err.msg, "ends in the vocabulary"));
    s.header_path = "/nonexistent/h.bin";
    assert_int_equal(td_wmk_write(&s, p, &err), TD_EIO);
    assert_false(file_exists(p));
    assert_int_equal(count_entries(dir), 1); /* h.bin only: no temporaries */
    /* a vocabulary count with a header is refused */
    s.header_path = h;
    s.vocab_count = 10;
    assert_int_equal(td_wmk_write(&s, p, &err), TD_EINVAL);
    free(h);
    free(p);
}

/* ------------------------------------------------------------ errors */

static void test_bad_specs(void **state)
{
    const char *dir = *state;
    char *p = pathf("%s/x.bin", dir);
    td_error err = {0};
    td_wmk_spec s = small_spec(1, TD_WT_F16);
    s.hp.n_text_head = 3;
    assert_int_equal(td_wmk_write(&s, p, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "n_text_head 3 does not divide n_text_state 64"));
    s = small_spec(1, TD_WT_F16);
    s.hp.n_audio_ctx = 1501;
    assert_int_equal(td_wmk_write(&s, p, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "n_audio_ctx"));
    s = small_spec(1, TD_WT_F16);
    s.hp.n_vocab = 50000;
    assert_int_equal(td_wmk_write(&s, p, &err), TD_EINVAL);
    s = small_spec(1, TD_WT_F16);
    s.hp.n_mels = 0;
    assert_int_equal(td_wmk_write(&s, p, &err), TD_EINVAL);
    s = small_spec(1, (enum td_wtype)8);
    assert_int_equal(td_wmk_write(&s, p, &err), TD_EINVAL);
    s = small_spec(1, TD_WT_F16);
    s.vocab_count = 50258;
    assert_int_equal(td_wmk_write(&s, p, &err), TD_EINVAL);
    assert_false(file_exists(p));
    s = small_spec(1, TD_WT_F16);
    char *q = pathf("%s/no/such/dir/x.bin", dir);
    assert_int_equal(td_wmk_write(&s, q, &err), TD_EIO);
    assert_int_equal(count_entries(dir), 0);
    free(q);
    free(p);
}

/* A small vocabulary count (for fuzz seeds) still loads. */
static void test_vocab_count(void **state)
{
    char *p = pathf("%s/vc.bin", (const char *)*state);
    td_error err = {0};
    td_wmk_spec s = small_spec(1, TD_WT_F16);
    s.vocab_count = 300;
    assert_int_equal(td_wmk_write(&s, p, &err), TD_OK);
    td_wmodel *m;
    assert_int_equal(td_wmodel_open(p, &m, &err), TD_OK);
    assert_int_equal(m->n_file_tokens, 300);
    size_t n;
    const uint8_t *t = td_wmodel_token(m, 300, &n);
    assert_int_equal(n, strlen("[_extra_token_300]"));
    assert_memory_equal(t, "[_extra_token_300]", n);
    td_wmodel_close(m);
    free(p);
}

/* ------------------------------------------------------------ CLI */

/* tapedeck-mkmodel: $TAPEDECK_MKMODEL (make unit sets it), else beside
 * this test's build directory. NULL if not built. */
static char *tool_path(void)
{
    const char *env = getenv("TAPEDECK_MKMODEL");
    if (env && *env)
        return access(env, X_OK) == 0 ? strdup(env) : NULL;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return NULL;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    char *p = pathf("%s/../tapedeck-mkmodel", self);
    if (access(p, X_OK) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

static int run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run_cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *cmd = NULL;
    assert_true(vasprintf(&cmd, fmt, ap) >= 0);
    va_end(ap);
    int st = system(cmd);
    free(cmd);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_cli(void **state)
{
    const char *dir = *state;
    char *tool = tool_path();
    if (!tool) {
        print_message("skip: tapedeck-mkmodel not built\n");
        skip();
    }
    char *out = pathf("%s/cli.bin", dir), *api = pathf("%s/api.bin", dir);
    assert_int_equal(run_cmd("'%s' --help >/dev/null", tool), 0);
    assert_int_equal(run_cmd("'%s' --bogus 2>/dev/null", tool), 2);
    assert_int_equal(run_cmd("'%s' --dims tiny 2>/dev/null", tool), 2); /* no --out */
    assert_int_equal(run_cmd("'%s' --dims nope --out '%s' 2>/dev/null", tool, out), 2);
    assert_int_equal(run_cmd("'%s' --ftype q8 --out '%s' 2>/dev/null", tool, out), 2);
    assert_int_equal(run_cmd("'%s' --n-audio-state x --out '%s' 2>/dev/null", tool, out), 2);
    assert_int_equal(run_cmd("'%s' --seed 1 --out '%s' extra 2>/dev/null", tool, out), 2);
    assert_int_equal(run_cmd("'%s' --vocab /nonexistent --out '%s' 2>/dev/null", tool, out), 1);
    assert_false(file_exists(out));
    /* Custom dims after or before --dims give the API's bytes. */
    assert_int_equal(run_cmd("'%s' --n-audio-state 64 --n-text-state 64 --n-audio-head 2 "
                             "--n-text-head 2 --n-audio-layer 2 --n-text-layer 2 --dims tiny "
                             "--ftype f32 --seed 42 --out '%s' >/dev/null",
                             tool, out),
                     0);
    td_error err = {0};
    td_wmk_spec s = small_spec(42, TD_WT_F32);
    assert_int_equal(td_wmk_write(&s, api, &err), TD_OK);
    size_t la, lb;
    uint8_t *a = slurp(out, &la), *b = slurp(api, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    free(a);
    free(b);
    free(out);
    free(api);
    free(tool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dims_table),
        cmocka_unit_test_setup_teardown(test_same_seed_same_bytes, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_recorded_sha256, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_weight_scales, setup_dir, teardown_dir),
#ifdef __FLT16_MAX__
        cmocka_unit_test_setup_teardown(test_f16_rounding, setup_dir, teardown_dir),
#endif
        cmocka_unit_test(test_filters_match_real),
        cmocka_unit_test(test_filters_128),
        cmocka_unit_test_setup_teardown(test_synthetic_vocabulary, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_header_copied_verbatim, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_bad_header_files, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_bad_specs, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_vocab_count, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_cli, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
