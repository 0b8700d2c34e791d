/* test_ct2.c: the CTranslate2 importer (whisper/ct2.h).
 *
 * Small CTranslate2 Whisper models are written here, byte by byte, from
 * the format description in ct2.c (values chosen to be exact in F16, BF16
 * and F32, and int8 with power-of-two scales), imported, loaded with the
 * ggml loader, and every tensor compared with where it must have come
 * from: the fused Q/K/V and K/V split by rows, the key bias dropped, the
 * conv biases and positional embeddings F32. Broken models must fail with
 * a message naming the problem, leaving no file behind.
 *
 * With the real weights (scripts/fetch-whisper-weights.sh; skipped when
 * the cache is absent) and ../shared/whisper's headers of whisper.cpp's
 * files: the imported tiny.en and base carry the same hyper-parameters,
 * the same mel filterbank (computed here, not copied) and the same
 * vocabulary, except where whisper.cpp's converter replaced bytes that are
 * not UTF-8 by U+FFFD (we keep the real bytes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.h"
#include "whisper/ct2.h"
#include "whisper/backend/cpu/kernels.h"
#include "whisper/mkmodel.h"
#include "whisper/model.h"

#define SHARED "../shared/whisper"
#define NS 16      /* state width of the small models */
#define NH 2
#define NMELS 80
#define ACTX 8
#define TCTX 8

/* ------------------------------------------------------------ a CT2 writer */

typedef struct gen {
    int dtype;           /* of the 2-D weights: TD_CT2_F16, F32, BF16 or I8 */
    int n_vocab;         /* 51864 or 51865 */
    int version;         /* binary version (6) */
    const char *spec;    /* "WhisperSpec" */
    int key_bias;        /* nonzero key bias in encoder layer 0 */
    int activation;      /* decoder/activation (3 = GELU) */
    int extra_var;       /* an array no Whisper model has */
    int trailing;        /* bytes after the aliases */
    int vocab_json;      /* vocabulary.json instead of .txt */
    int vocab_count;     /* tokens written (0: n_vocab) */
    int vocab_bad;       /* a token outside GPT-2's alphabet */
} gen;

static gen gen_default(void)
{
    gen g = {TD_CT2_F16, 51864, 6, "WhisperSpec", 0, 3, 0, 0, 0, 0, 0};
    return g;
}

/* Element i of variable number id: k/256 with |k| <= 255, exact in F16,
 * BF16 and F32; int8 weights get q in [-127, 127] and scale 64 per row. */
static float value(uint32_t id, uint64_t i)
{
    uint64_t x = (id + 1) * 0x9e3779b97f4a7c15ull ^ (i + 1) * 0xbf58476d1ce4e5b9ull;
    x ^= x >> 31;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 29;
    return (float)((int)(x % 511) - 255) / 256.0f;
}

static int8_t qvalue(uint32_t id, uint64_t i)
{
    return (int8_t)((int)(value(id, i) * 256.0f) / 2); /* [-127, 127] */
}

typedef struct out {
    FILE *f;
    uint32_t next_id;
} out;

static void put(out *o, const void *p, size_t n)
{
    assert_int_equal(fwrite(p, 1, n, o->f), n);
}

static void put32(out *o, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(o, b, 4);
}

static void putstr(out *o, const char *s)
{
    uint16_t n = (uint16_t)(strlen(s) + 1);
    uint8_t b[2] = {(uint8_t)n, (uint8_t)(n >> 8)};
    put(o, b, 2);
    put(o, s, n);
}

/* The variable id a name gets: a hash, so the checker recomputes it. */
static uint32_t id_of(const char *name)
{
    uint32_t h = 2166136261u;
    for (; *name; name++)
        h = (h ^ (uint8_t)*name) * 16777619u;
    return h;
}

/* An array variable; dtype F32/F16/BF16/I8; values from value()/qvalue(),
 * except zero_from..zero_to (a key bias) which are zero. */
static void var(out *o, const char *name, int rank, const uint32_t *dims, int dtype,
                int64_t zero_from, int64_t zero_to)
{
    uint64_t n = 1;
    for (int i = 0; i < rank; i++)
        n *= dims[i];
    size_t es = dtype == TD_CT2_F32 ? 4 : dtype == TD_CT2_I8 ? 1 : 2;
    putstr(o, name);
    uint8_t r = (uint8_t)rank, dt = (uint8_t)dtype;
    put(o, &r, 1);
    for (int i = 0; i < rank; i++)
        put32(o, dims[i]);
    put(o, &dt, 1);
    put32(o, (uint32_t)(n * es));
    uint32_t id = id_of(name);
    for (uint64_t i = 0; i < n; i++) {
        float v = (int64_t)i >= zero_from && (int64_t)i < zero_to ? 0.0f : value(id, i);
        uint8_t b[4];
        if (dtype == TD_CT2_F32) {
            memcpy(b, &v, 4);
        } else if (dtype == TD_CT2_F16) {
            uint16_t h = td_wk_f32_to_f16(v);
            b[0] = (uint8_t)h, b[1] = (uint8_t)(h >> 8);
        } else if (dtype == TD_CT2_BF16) {
            uint32_t u;
            memcpy(&u, &v, 4);
            b[0] = (uint8_t)(u >> 16), b[1] = (uint8_t)(u >> 24);
        } else {
            b[0] = (uint8_t)qvalue(id, i);
        }
        put(o, b, es);
    }
}

static void scalar_var(out *o, const char *name, int dtype, int32_t v)
{
    putstr(o, name);
    uint8_t r = 0, dt = (uint8_t)dtype;
    put(o, &r, 1);
    put(o, &dt, 1);
    size_t es = dtype == TD_CT2_I32 ? 4 : dtype == TD_CT2_I16 ? 2 : 1;
    put32(o, (uint32_t)es);
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(o, b, es);
}

/* A linear: weight [rows][cols] (with an int8 scale of 64 a row), bias [rows]. */
static void lin(out *o, const gen *g, const char *prefix, uint32_t rows, uint32_t cols,
                int64_t zfrom, int64_t zto)
{
    char name[256];
    uint32_t wd[2] = {rows, cols}, bd[1] = {rows};
    snprintf(name, sizeof name, "%s/weight", prefix);
    var(o, name, 2, wd, g->dtype, -1, -1);
    if (g->dtype == TD_CT2_I8) {
        snprintf(name, sizeof name, "%s/weight_scale", prefix);
        putstr(o, name);
        uint8_t r = 1, dt = TD_CT2_F32;
        put(o, &r, 1);
        put32(o, rows);
        put(o, &dt, 1);
        put32(o, rows * 4);
        for (uint32_t i = 0; i < rows; i++) {
            float s = 64.0f;
            put(o, &s, 4);
        }
    }
    snprintf(name, sizeof name, "%s/bias", prefix);
    var(o, name, 1, bd, TD_CT2_F16, zfrom, zto);
}

static void ln(out *o, const char *prefix)
{
    char name[256];
    uint32_t d[1] = {NS};
    snprintf(name, sizeof name, "%s/beta", prefix);
    var(o, name, 1, d, TD_CT2_F16, -1, -1);
    snprintf(name, sizeof name, "%s/gamma", prefix);
    var(o, name, 1, d, TD_CT2_F16, -1, -1);
}

static void layer(out *o, const gen *g, const char *coder, int dec)
{
    char p[256];
    if (dec) {
        snprintf(p, sizeof p, "%s/layer_0/attention/layer_norm", coder);
        ln(o, p);
        snprintf(p, sizeof p, "%s/layer_0/attention/linear_0", coder);
        lin(o, g, p, NS, NS, -1, -1);
        snprintf(p, sizeof p, "%s/layer_0/attention/linear_1", coder);
        lin(o, g, p, 2 * NS, NS, 0, NS); /* K/V: the key's bias is zero */
        snprintf(p, sizeof p, "%s/layer_0/attention/linear_2", coder);
        lin(o, g, p, NS, NS, -1, -1);
    }
    snprintf(p, sizeof p, "%s/layer_0/ffn/layer_norm", coder);
    ln(o, p);
    snprintf(p, sizeof p, "%s/layer_0/ffn/linear_0", coder);
    lin(o, g, p, 4 * NS, NS, -1, -1);
    snprintf(p, sizeof p, "%s/layer_0/ffn/linear_1", coder);
    lin(o, g, p, NS, 4 * NS, -1, -1);
    snprintf(p, sizeof p, "%s/layer_0/self_attention/layer_norm", coder);
    ln(o, p);
    snprintf(p, sizeof p, "%s/layer_0/self_attention/linear_0", coder);
    int kb = g->key_bias && !dec;
    lin(o, g, p, 3 * NS, NS, kb ? -1 : NS, kb ? -1 : 2 * NS); /* Q/K/V */
    snprintf(p, sizeof p, "%s/layer_0/self_attention/linear_1", coder);
    lin(o, g, p, NS, NS, -1, -1);
}

/* Token i: byte i in GPT-2's alphabet for i < 256, else "t<i>". */
static size_t token_text(int i, char *buf)
{
    if (i >= 256)
        return (size_t)sprintf(buf, "t%d", i);
    int printable = (i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174;
    int cp = i;
    if (!printable) {
        int rank = 0;
        for (int b = 0; b < i; b++)
            if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174))
                rank++;
        cp = 256 + rank;
    }
    if (cp < 0x80) {
        buf[0] = (char)cp;
        return 1;
    }
    buf[0] = (char)(0xc0 | cp >> 6);
    buf[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

static void write_vocab(const char *dir, const gen *g)
{
    int n = g->vocab_count ? g->vocab_count : g->n_vocab;
    char *path = pathf("%s/vocabulary.%s", dir, g->vocab_json ? "json" : "txt");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (g->vocab_json)
        fputc('[', f);
    for (int i = 0; i < n; i++) {
        char t[32];
        size_t len = token_text(i, t);
        if (g->vocab_bad && i == 300)
            len = (size_t)sprintf(t, "\xe2\x82\xac"); /* the euro sign */
        if (g->vocab_json) {
            fputs(i ? ",\"" : "\"", f);
            for (size_t k = 0; k < len; k++) {
                unsigned char c = (unsigned char)t[k];
                if (c == '"' || c == '\\')
                    fputc('\\', f), fputc(c, f);
                else if (c < 0x20)
                    fprintf(f, "\\u%04x", c);
                else
                    fputc(c, f);
            }
            fputc('"', f);
        } else {
            fwrite(t, 1, len, f);
            fputc('\n', f);
        }
    }
    if (g->vocab_json)
        fputc(']', f);
    assert_int_equal(fclose(f), 0);
    free(path);
}

/* Write dir/model.bin (+ the vocabulary); returns its size. */
static long write_ct2(const char *dir, const gen *g)
{
    char *path = pathf("%s/model.bin", dir);
    out o = {fopen(path, "wb"), 0};
    assert_non_null(o.f);
    put32(&o, (uint32_t)g->version);
    putstr(&o, g->spec);
    put32(&o, 3);
    int n_vars = 0;
    /* count: scalars 9; embeddings 1; dec layer: 2 lns*2 + ... counted by
     * writing twice would be clumsy, so the count is computed. */
    int per_lin = g->dtype == TD_CT2_I8 ? 3 : 2;
    int enc_layer = 2 * 2 + 4 * per_lin;           /* 2 lns, 4 linears */
    int dec_layer = 3 * 2 + 7 * per_lin;           /* 3 lns, 7 linears */
    n_vars = 9 + 1 + dec_layer + 1 + 2 + 4 + enc_layer + 1 + 2 + g->extra_var;
    put32(&o, (uint32_t)n_vars);
    /* In CTranslate2's order (sorted by name). */
    scalar_var(&o, "decoder/activation", TD_CT2_I8, g->activation);
    scalar_var(&o, "decoder/alibi", TD_CT2_I8, 0);
    scalar_var(&o, "decoder/alignment_heads", TD_CT2_I16, 1);
    scalar_var(&o, "decoder/alignment_layer", TD_CT2_I16, -1);
    uint32_t emb[2] = {(uint32_t)g->n_vocab, NS};
    var(&o, "decoder/embeddings/weight", 2, emb, g->dtype == TD_CT2_I8 ? TD_CT2_F16 : g->dtype,
        -1, -1);
    layer(&o, g, "decoder", 1);
    ln(&o, "decoder/layer_norm");
    scalar_var(&o, "decoder/num_heads", TD_CT2_I16, NH);
    uint32_t dpos[2] = {TCTX, NS};
    var(&o, "decoder/position_encodings/encodings", 2, dpos, TD_CT2_F16, -1, -1);
    scalar_var(&o, "decoder/pre_norm", TD_CT2_I8, 1);
    scalar_var(&o, "decoder/scale_embeddings", TD_CT2_I8, 0);
    scalar_var(&o, "decoder/start_from_zero_embedding", TD_CT2_I8, 0);
    uint32_t c1[3] = {NS, NMELS, 3}, c2[3] = {NS, NS, 3}, cb[1] = {NS};
    var(&o, "encoder/conv1/bias", 1, cb, TD_CT2_F16, -1, -1);
    var(&o, "encoder/conv1/weight", 3, c1, g->dtype == TD_CT2_I8 ? TD_CT2_F16 : g->dtype, -1, -1);
    var(&o, "encoder/conv2/bias", 1, cb, TD_CT2_F16, -1, -1);
    var(&o, "encoder/conv2/weight", 3, c2, g->dtype == TD_CT2_I8 ? TD_CT2_F16 : g->dtype, -1, -1);
    if (g->extra_var) {
        uint32_t d[2] = {2, 2};
        var(&o, "encoder/extra/weight", 2, d, TD_CT2_F32, -1, -1);
    }
    layer(&o, g, "encoder", 0);
    ln(&o, "encoder/layer_norm");
    scalar_var(&o, "encoder/num_heads", TD_CT2_I16, NH);
    uint32_t epos[2] = {ACTX, NS};
    var(&o, "encoder/position_encodings/encodings", 2, epos, TD_CT2_F16, -1, -1);
    put32(&o, 1);
    putstr(&o, "decoder/projection/weight");
    putstr(&o, "decoder/embeddings/weight");
    for (int i = 0; i < g->trailing; i++)
        put(&o, "x", 1);
    long size = ftell(o.f);
    assert_int_equal(fclose(o.f), 0);
    free(path);
    write_vocab(dir, g);
    return size;
}

/* ------------------------------------------------------------ fixtures */

typedef struct fx {
    char *dir;      /* the CT2 model folder */
    char *outdir;   /* where ggml files go */
    char *ggml;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->dir = make_tmpdir_named("td-ct2");
    f->outdir = make_tmpdir_named("td-ct2-out");
    f->ggml = pathf("%s/ggml-test.bin", f->outdir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    rm_tree(f->dir);
    rm_tree(f->outdir);
    free(f->dir);
    free(f->outdir);
    free(f->ggml);
    free(f);
    return 0;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static float tensor_at(const td_wtensor *t, size_t i)
{
    if (t->type == TD_WT_F32) {
        float v;
        memcpy(&v, (const uint8_t *)t->data + 4 * i, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, (const uint8_t *)t->data + 2 * i, 2);
    return td_wk_f16_to_f32(h);
}

/* ggml tensor gname holds elements [off, off + n) of CT2 variable cname. */
static void expect_slice(const td_wmodel *m, const char *gname, const char *cname, size_t off,
                         size_t n, int quantized, enum td_wtype type)
{
    const td_wtensor *t = td_wmodel_tensor(m, gname);
    if (!t)
        fail_msg("no tensor %s", gname);
    size_t total = 1;
    for (int d = 0; d < t->n_dims; d++)
        total *= (size_t)t->ne[d];
    assert_int_equal(total, n);
    assert_int_equal(t->type, type);
    uint32_t id = id_of(cname);
    for (size_t i = 0; i < n; i++) {
        float want = quantized ? qvalue(id, off + i) / 64.0f : value(id, off + i);
        if (tensor_at(t, i) != want)
            fail_msg("%s[%zu] = %g, expected %g (%s[%zu])", gname, i, tensor_at(t, i), want,
                     cname, off + i);
    }
}

static void check_model(const char *path, const gen *g, enum td_wtype wt)
{
    td_wmodel *m = NULL;
    td_error err = {0};
    if (td_wmodel_open(path, &m, &err) != TD_OK)
        fail_msg("imported file does not load: %s", err.msg);
    assert_int_equal(m->hp.n_vocab, g->n_vocab);
    assert_int_equal(m->hp.n_audio_state, NS);
    assert_int_equal(m->hp.n_audio_head, NH);
    assert_int_equal(m->hp.n_audio_layer, 1);
    assert_int_equal(m->hp.n_text_layer, 1);
    assert_int_equal(m->hp.n_audio_ctx, ACTX);
    assert_int_equal(m->hp.n_text_ctx, TCTX);
    assert_int_equal(m->hp.n_mels, NMELS);
    assert_int_equal(m->hp.ftype, wt == TD_WT_F16 ? 1 : 0);
    int q = g->dtype == TD_CT2_I8;

    /* Mel filterbank: computed, Whisper's. */
    float *filt = malloc(NMELS * 201 * sizeof *filt);
    td_wmk_mel_filters(NMELS, filt);
    assert_memory_equal(filt, m->mel_filters, NMELS * 201 * sizeof *filt);
    free(filt);

    /* Vocabulary: raw bytes. */
    size_t len;
    const uint8_t *tok = td_wmodel_token(m, 32, &len);
    assert_int_equal(len, 1);
    assert_int_equal(tok[0], ' ');
    tok = td_wmodel_token(m, 10, &len);
    assert_int_equal(len, 1);
    assert_int_equal(tok[0], '\n');
    tok = td_wmodel_token(m, 200, &len);
    assert_int_equal(len, 1);
    assert_int_equal(tok[0], 200);
    tok = td_wmodel_token(m, 4321, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(tok, "t4321", 5);
    assert_int_equal(m->n_file_tokens, 50257);

    const size_t n = NS, n2 = (size_t)NS * NS;
    /* Q/K/V split by rows of the fused [3n][n] weight; biases Q and V. */
    const char *sa = "encoder/layer_0/self_attention/linear_0/weight";
    expect_slice(m, "encoder.blocks.0.attn.query.weight", sa, 0, n2, q, wt);
    expect_slice(m, "encoder.blocks.0.attn.key.weight", sa, n2, n2, q, wt);
    expect_slice(m, "encoder.blocks.0.attn.value.weight", sa, 2 * n2, n2, q, wt);
    const char *sab = "encoder/layer_0/self_attention/linear_0/bias";
    expect_slice(m, "encoder.blocks.0.attn.query.bias", sab, 0, n, 0, TD_WT_F32);
    expect_slice(m, "encoder.blocks.0.attn.value.bias", sab, 2 * n, n, 0, TD_WT_F32);
    assert_null(td_wmodel_tensor(m, "encoder.blocks.0.attn.key.bias"));
    expect_slice(m, "encoder.blocks.0.attn.out.weight",
                 "encoder/layer_0/self_attention/linear_1/weight", 0, n2, q, wt);
    expect_slice(m, "encoder.blocks.0.attn_ln.weight",
                 "encoder/layer_0/self_attention/layer_norm/gamma", 0, n, 0, TD_WT_F32);
    expect_slice(m, "encoder.blocks.0.mlp_ln.bias", "encoder/layer_0/ffn/layer_norm/beta", 0, n,
                 0, TD_WT_F32);
    expect_slice(m, "encoder.blocks.0.mlp.0.weight", "encoder/layer_0/ffn/linear_0/weight", 0,
                 4 * n2, q, wt);
    expect_slice(m, "encoder.blocks.0.mlp.2.bias", "encoder/layer_0/ffn/linear_1/bias", 0, n, 0,
                 TD_WT_F32);
    /* Cross-attention K/V split; the decoder's own Q/K/V too. */
    const char *kv = "decoder/layer_0/attention/linear_1/weight";
    expect_slice(m, "decoder.blocks.0.cross_attn.key.weight", kv, 0, n2, q, wt);
    expect_slice(m, "decoder.blocks.0.cross_attn.value.weight", kv, n2, n2, q, wt);
    expect_slice(m, "decoder.blocks.0.cross_attn.value.bias",
                 "decoder/layer_0/attention/linear_1/bias", n, n, 0, TD_WT_F32);
    expect_slice(m, "decoder.blocks.0.cross_attn.query.weight",
                 "decoder/layer_0/attention/linear_0/weight", 0, n2, q, wt);
    expect_slice(m, "decoder.blocks.0.cross_attn.out.bias",
                 "decoder/layer_0/attention/linear_2/bias", 0, n, 0, TD_WT_F32);
    expect_slice(m, "decoder.blocks.0.cross_attn_ln.weight",
                 "decoder/layer_0/attention/layer_norm/gamma", 0, n, 0, TD_WT_F32);
    expect_slice(m, "decoder.blocks.0.attn.value.weight",
                 "decoder/layer_0/self_attention/linear_0/weight", 2 * n2, n2, q, wt);
    /* Convolutions (same layout), conv biases and positions F32. */
    expect_slice(m, "encoder.conv1.weight", "encoder/conv1/weight", 0, n * NMELS * 3, 0, wt);
    expect_slice(m, "encoder.conv2.weight", "encoder/conv2/weight", 0, n2 * 3, 0, wt);
    expect_slice(m, "encoder.conv2.bias", "encoder/conv2/bias", 0, n, 0, TD_WT_F32);
    expect_slice(m, "encoder.positional_embedding", "encoder/position_encodings/encodings", 0,
                 ACTX * n, 0, TD_WT_F32);
    expect_slice(m, "decoder.positional_embedding", "decoder/position_encodings/encodings", 0,
                 TCTX * n, 0, TD_WT_F32);
    expect_slice(m, "decoder.token_embedding.weight", "decoder/embeddings/weight", 0,
                 (size_t)g->n_vocab * n, 0, wt);
    expect_slice(m, "encoder.ln_post.weight", "encoder/layer_norm/gamma", 0, n, 0, TD_WT_F32);
    expect_slice(m, "decoder.ln.bias", "decoder/layer_norm/beta", 0, n, 0, TD_WT_F32);
    td_wmodel_close(m);
}

static void import_ok(fx *f, const gen *g, enum td_wtype wt)
{
    write_ct2(f->dir, g);
    td_ct2_model *c = NULL;
    td_error err = {0};
    if (td_ct2_open(f->dir, &c, &err) != TD_OK)
        fail_msg("open: %s", err.msg);
    assert_int_equal(c->wdtype, g->dtype);
    assert_null(td_ct2_size_name(c)); /* 16 wide is no released size */
    if (td_ct2_write_ggml(c, f->ggml, wt, &err) != TD_OK)
        fail_msg("write: %s", err.msg);
    td_ct2_close(c);
    check_model(f->ggml, g, wt);
    assert_int_equal(count_entries(f->outdir), 1); /* no temporary file left */
}

/* ------------------------------------------------------------ tests */

static void test_f16_txt_vocab(void **state)
{
    gen g = gen_default();
    import_ok(*state, &g, TD_WT_F16);
}

static void test_f32_json_vocab_multilingual(void **state)
{
    gen g = gen_default();
    g.dtype = TD_CT2_F32;
    g.n_vocab = 51865;
    g.vocab_json = 1;
    import_ok(*state, &g, TD_WT_F32);
}

static void test_bf16_to_f16(void **state)
{
    gen g = gen_default();
    g.dtype = TD_CT2_BF16;
    import_ok(*state, &g, TD_WT_F16);
}

static void test_int8_dequantized(void **state)
{
    gen g = gen_default();
    g.dtype = TD_CT2_I8;
    import_ok(*state, &g, TD_WT_F32);
}

/* open must fail with TD_EINPUT and a message containing want. */
static void expect_open_error(fx *f, const char *want)
{
    td_ct2_model *c = NULL;
    td_error err = {0};
    int rc = td_ct2_open(f->dir, &c, &err);
    if (rc == TD_OK) {
        rc = td_ct2_write_ggml(c, f->ggml, TD_WT_F16, &err);
        td_ct2_close(c);
    }
    if (rc != TD_EINPUT || !strstr(err.msg, want))
        fail_msg("expected TD_EINPUT with '%s', got %d '%s'", want, rc, err.msg);
    assert_int_equal(count_entries(f->outdir), 0); /* nothing left behind */
}

static void test_truncated_everywhere(void **state)
{
    fx *f = *state;
    gen g = gen_default();
    long size = write_ct2(f->dir, &g);
    char *path = pathf("%s/model.bin", f->dir);
    FILE *in = fopen(path, "rb");
    assert_non_null(in);
    uint8_t *all = malloc((size_t)size);
    assert_int_equal(fread(all, 1, (size_t)size, in), (size_t)size);
    fclose(in);
    /* Every cut point near the structure, and a spread over the data: each
     * copy is its own exact-size buffer, so an over-read shows under ASan. */
    for (long cut = 0; cut < size; cut += cut < 4096 ? 1 : 7919) {
        uint8_t *copy = malloc(cut ? (size_t)cut : 1);
        memcpy(copy, all, (size_t)cut);
        td_ct2_model *c = NULL;
        td_error err = {0};
        int rc = td_ct2_parse(copy, (size_t)cut, "cut.bin", &c, &err);
        if (rc != TD_EINPUT)
            fail_msg("cut at %ld: rc %d '%s'", cut, rc, err.msg);
        assert_non_null(strstr(err.msg, "cut.bin"));
        free(copy);
    }
    /* And through a file: the message names what is cut. */
    write_bytes(path, all, (size_t)size - 100);
    expect_open_error(f, "truncated");
    free(all);
    free(path);
}

static void test_key_bias_refused(void **state)
{
    gen g = gen_default();
    g.key_bias = 1;
    write_ct2(((fx *)*state)->dir, &g);
    expect_open_error(*state, "key bias");
}

static void test_wrong_version_spec_activation(void **state)
{
    fx *f = *state;
    gen g = gen_default();
    g.version = 3;
    write_ct2(f->dir, &g);
    expect_open_error(f, "version 3 is not supported");
    g = gen_default();
    g.spec = "TransformerSpec";
    write_ct2(f->dir, &g);
    expect_open_error(f, "'TransformerSpec' model, not a Whisper model");
    g = gen_default();
    g.activation = 1; /* GELU with tanh: not Whisper's */
    write_ct2(f->dir, &g);
    expect_open_error(f, "'decoder/activation' is 1");
}

static void test_unknown_variable_and_trailing_bytes(void **state)
{
    fx *f = *state;
    gen g = gen_default();
    g.extra_var = 1;
    write_ct2(f->dir, &g);
    expect_open_error(f, "unexpected variable 'encoder/extra/weight'");
    g = gen_default();
    g.trailing = 3;
    write_ct2(f->dir, &g);
    expect_open_error(f, "3 unexpected bytes after the aliases");
}

static void test_vocabulary_errors(void **state)
{
    fx *f = *state;
    gen g = gen_default();
    g.vocab_count = 100;
    write_ct2(f->dir, &g);
    expect_open_error(f, "100 tokens, the model has 51864");
    g = gen_default();
    g.vocab_bad = 1;
    write_ct2(f->dir, &g);
    expect_open_error(f, "token 300 is not in GPT-2's byte-level alphabet");
    char *p = pathf("%s/vocabulary.txt", f->dir);
    unlink(p);
    free(p);
    expect_open_error(f, "no vocabulary.json or vocabulary.txt");
    g = gen_default();
    g.vocab_json = 1;
    write_ct2(f->dir, &g);
    p = pathf("%s/vocabulary.json", f->dir);
    write_bytes(p, "{\"a\": 1}", 8);
    free(p);
    expect_open_error(f, "not a JSON array of tokens");
}

static void test_not_a_model_folder(void **state)
{
    fx *f = *state;
    td_ct2_model *c = NULL;
    td_error err = {0};
    assert_int_equal(td_ct2_open(f->dir, &c, &err), TD_EINPUT); /* empty folder */
    assert_non_null(strstr(err.msg, "model.bin"));
    char *p = pathf("%s/model.bin", f->dir);
    write_bytes(p, "lmgg", 4);
    assert_int_equal(td_ct2_open(p, &c, &err), TD_EINPUT); /* a file, not a folder */
    assert_non_null(strstr(err.msg, "not a folder"));
    assert_int_equal(td_ct2_open(f->dir, &c, &err), TD_EINPUT); /* a ggml magic */
    assert_non_null(strstr(err.msg, "is not supported"));
    free(p);
}

/* ------------------------------------------------------------ real weights */

static char *weights_dir(const char *model)
{
    const char *cache = getenv("TAPEDECK_WEIGHTS_CACHE");
    char *dir;
    if (cache && *cache)
        dir = pathf("%s/ct2/%s", cache, model);
    else if (getenv("XDG_CACHE_HOME") && *getenv("XDG_CACHE_HOME"))
        dir = pathf("%s/tapedeck/weights/ct2/%s", getenv("XDG_CACHE_HOME"), model);
    else
        dir = pathf("%s/.cache/tapedeck/weights/ct2/%s", getenv("HOME") ? getenv("HOME") : "",
                    model);
    char *bin = pathf("%s/.complete", dir);
    int ok = access(bin, F_OK) == 0;
    free(bin);
    if (!ok) {
        free(dir);
        return NULL;
    }
    return dir;
}

static int valid_utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2
                  : (c & 0xf8) == 0xf0 ? 3 : 9;
        if (k == 9 || i + k >= n + (k ? 0 : 1))
            return 0;
        for (size_t j = 1; j <= k; j++)
            if (i + j >= n || (s[i + j] & 0xc0) != 0x80)
                return 0;
        i += k + 1;
    }
    return 1;
}

/* Imported model vs whisper.cpp's file header in ../shared. */
static void compare_with_header(fx *f, const char *model)
{
    char *dir = weights_dir(model);
    char *hdr = pathf(SHARED "/%s.header.bin", model);
    if (!dir || access(hdr, R_OK) != 0) {
        printf("skip: %s: %s absent (scripts/fetch-whisper-weights.sh %s; ../shared)\n", model,
               dir ? hdr : "the weights cache", model);
        free(dir);
        free(hdr);
        skip();
    }
    td_ct2_model *c = NULL;
    td_error err = {0};
    if (td_ct2_open(dir, &c, &err) != TD_OK)
        fail_msg("%s", err.msg);
    assert_string_equal(td_ct2_size_name(c), model);
    if (td_ct2_write_ggml(c, f->ggml, TD_WT_F16, &err) != TD_OK)
        fail_msg("%s", err.msg);
    td_ct2_close(c);
    td_wmodel *m = NULL;
    if (td_wmodel_open(f->ggml, &m, &err) != TD_OK)
        fail_msg("%s", err.msg);

    FILE *h = fopen(hdr, "rb");
    assert_non_null(h);
    int32_t head[12];
    assert_int_equal(fread(head, 4, 12, h), 12);
    assert_int_equal(head[0], (int32_t)TD_GGML_MAGIC);
    assert_memory_equal(&head[1], &m->hp, sizeof m->hp); /* all 11, ftype F16 */
    int32_t nm_nf[2];
    assert_int_equal(fread(nm_nf, 4, 2, h), 2);
    assert_int_equal(nm_nf[0], m->hp.n_mels);
    assert_int_equal(nm_nf[1], 201);
    size_t nf = (size_t)nm_nf[0] * 201;
    float *filt = malloc(nf * sizeof *filt);
    assert_int_equal(fread(filt, 4, nf, h), nf);
    double max_abs = 0, max_ref = 0;
    for (size_t i = 0; i < nf; i++) {
        max_abs = fmax(max_abs, fabs((double)filt[i] - m->mel_filters[i]));
        max_ref = fmax(max_ref, fabs((double)filt[i]));
    }
    printf("  %s: mel filterbank computed vs whisper.cpp's: max abs diff %.3g (max %.3g)\n",
           model, max_abs, max_ref);
    /* librosa computes in float64 and stores float32: ours, also from
     * float64, may differ in the last bit. */
    assert_true(max_abs <= 1e-6 * max_ref);
    free(filt);

    int32_t count;
    assert_int_equal(fread(&count, 4, 1, h), 1);
    assert_int_equal(count, m->n_file_tokens);
    int same = 0, replaced = 0;
    for (int32_t i = 0; i < count; i++) {
        uint32_t len;
        assert_int_equal(fread(&len, 4, 1, h), 1);
        assert_true(len <= 256);
        uint8_t b[256];
        assert_int_equal(fread(b, 1, len, h), len);
        size_t ours_len;
        const uint8_t *ours = td_wmodel_token(m, i, &ours_len);
        if (ours_len == len && memcmp(ours, b, len) == 0) {
            same++;
        } else {
            /* whisper.cpp's converter wrote tokens as UTF-8 text, so bytes
             * that are not UTF-8 became U+FFFD; ours are the real bytes. */
            if (!(memmem(b, len, "\xef\xbf\xbd", 3) && !valid_utf8(ours, ours_len)))
                fail_msg("%s token %d differs", model, (int)i);
            replaced++;
        }
    }
    printf("  %s: %d tokens identical, %d are U+FFFD in whisper.cpp's file (not UTF-8)\n", model,
           same, replaced);
    fclose(h);
    td_wmodel_close(m);
    free(dir);
    free(hdr);
}

static void test_real_tiny_en_matches_whisper_cpp_header(void **state)
{
    compare_with_header(*state, "tiny.en");
}

static void test_real_base_matches_whisper_cpp_header(void **state)
{
    compare_with_header(*state, "base");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_f16_txt_vocab, setup, teardown),
        cmocka_unit_test_setup_teardown(test_f32_json_vocab_multilingual, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bf16_to_f16, setup, teardown),
        cmocka_unit_test_setup_teardown(test_int8_dequantized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_bias_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_version_spec_activation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_variable_and_trailing_bytes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_vocabulary_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_model_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_tiny_en_matches_whisper_cpp_header, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_real_base_matches_whisper_cpp_header, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
