/* test_model.c: the ggml Whisper model loader (whisper/model.h) and the
 * language table. Models are generated at test time (whisper/mkmodel.h)
 * with small custom dimensions; the real vocabulary headers in
 * ../shared/whisper are used when present. Every corruption must give
 * TD_EINPUT with a message that says what is wrong, and no truncation may
 * read past the end (each truncated copy is its own exact-size buffer, so
 * the sanitizer build sees any over-read). */
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
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.h"
#include "whisper/mkmodel.h"
#include "whisper/model.h"

#define SHARED "../shared/whisper"

/* ------------------------------------------------------------ helpers */

typedef struct fixture {
    char *dir;
} fixture;

static int setup_dir(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char tmpl[] = "/tmp/td-model-XXXXXX";
    if (!f || !mkdtemp(tmpl))
        return -1;
    f->dir = strdup(tmpl);
    *state = f;
    return 0;
}

static int teardown_dir(void **state)
{
    fixture *f = *state;
    rm_tree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Small dims the loader accepts: 16 wide, 2 heads, one layer each, short
 * contexts; n_vocab and n_mels as asked. */
static td_wmk_spec spec_small(int32_t n_vocab, int32_t n_mels, enum td_wtype wt)
{
    td_wmk_spec s;
    memset(&s, 0, sizeof s);
    td_whparams *hp = &s.hp;
    hp->n_vocab = n_vocab;
    hp->n_audio_ctx = 8;
    hp->n_audio_state = 16;
    hp->n_audio_head = 2;
    hp->n_audio_layer = 1;
    hp->n_text_ctx = 8;
    hp->n_text_state = 16;
    hp->n_text_head = 2;
    hp->n_text_layer = 1;
    hp->n_mels = n_mels;
    s.wtype = wt;
    s.seed = 11;
    return s;
}

static char *gen(const fixture *f, const char *name, const td_wmk_spec *s)
{
    char *p = pathf("%s/%s", f->dir, name);
    td_error err = {0};
    int rc = td_wmk_write(s, p, &err);
    if (rc != TD_OK)
        print_message("mkmodel: %s\n", err.msg);
    assert_int_equal(rc, TD_OK);
    return p;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long n = ftell(fp);
    assert_true(n >= 0);
    rewind(fp);
    uint8_t *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return p;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(uint8_t *p, int32_t v)
{
    uint32_t u = (uint32_t)v;
    p[0] = (uint8_t)u;
    p[1] = (uint8_t)(u >> 8);
    p[2] = (uint8_t)(u >> 16);
    p[3] = (uint8_t)(u >> 24);
}

/* Where things are in a well-formed file (walked here independently of
 * the loader). */
typedef struct rec {
    size_t off, data_off, data_len;
    int n_dims, ttype;
    char name[80];
} rec;

typedef struct layout {
    size_t filt_off, vocab_off, vocab_end;
    size_t n;
    rec r[512];
} layout;

static layout *walk(const uint8_t *p, size_t len)
{
    layout *L = calloc(1, sizeof *L);
    assert_non_null(L);
    L->filt_off = 48;
    size_t off = 48;
    int32_t n_mel = (int32_t)rd32(p + off), n_fft = (int32_t)rd32(p + off + 4);
    off += 8 + (size_t)n_mel * (size_t)n_fft * 4;
    L->vocab_off = off;
    int32_t count = (int32_t)rd32(p + off);
    off += 4;
    for (int32_t i = 0; i < count; i++)
        off += 4 + rd32(p + off);
    L->vocab_end = off;
    while (off < len) {
        assert_true(L->n < sizeof L->r / sizeof L->r[0]);
        rec *r = &L->r[L->n++];
        r->off = off;
        r->n_dims = (int)rd32(p + off);
        size_t nl = rd32(p + off + 4);
        r->ttype = (int)rd32(p + off + 8);
        size_t ne = 1;
        for (int i = 0; i < r->n_dims; i++)
            ne *= rd32(p + off + 12 + 4 * (size_t)i);
        off += 12 + 4 * (size_t)r->n_dims;
        assert_true(nl < sizeof r->name);
        memcpy(r->name, p + off, nl);
        off += nl;
        r->data_off = off;
        r->data_len = ne * (r->ttype == 0 ? 4 : 2);
        off += r->data_len;
    }
    assert_int_equal(off, len);
    return L;
}

static const rec *find_rec(const layout *L, const char *name)
{
    for (size_t i = 0; i < L->n; i++)
        if (strcmp(L->r[i].name, name) == 0)
            return &L->r[i];
    fail_msg("no record %s", name);
    return NULL;
}

/* Load buf[0..len) from an exact-size copy; returns the rc, err filled. */
static int load_copy(const uint8_t *buf, size_t len, td_error *err)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    td_wmodel *m = NULL;
    int rc = td_wmodel_open_memory(copy, len, "m.bin", &m, err);
    if (rc == TD_OK)
        assert_non_null(m);
    else
        assert_null(m);
    td_wmodel_close(m);
    free(copy);
    return rc;
}

/* buf must fail with TD_EINPUT and a message that holds want. */
static void expect_bad_at(const uint8_t *buf, size_t len, const char *want, int line)
{
    td_error err = {0};
    int rc = load_copy(buf, len, &err);
    if (rc != TD_EINPUT || !strstr(err.msg, want) || strncmp(err.msg, "m.bin: ", 7) != 0)
        fail_msg("line %d: rc %d, message \"%s\", wanted TD_EINPUT with \"%s\"", line, rc,
                 err.msg, want);
}
#define expect_bad(buf, len, want) expect_bad_at((buf), (len), (want), __LINE__)

static void check_token(const td_wmodel *m, int32_t id, const char *want)
{
    size_t n = 0;
    const uint8_t *t = td_wmodel_token(m, id, &n);
    assert_non_null(t);
    if (n != strlen(want) || memcmp(t, want, n) != 0)
        fail_msg("token %d is '%.*s', wanted '%s'", (int)id, (int)n, (const char *)t, want);
}

static void check_shape(const td_wtensor *t, enum td_wtype type, int n_dims, int64_t ne0,
                        int64_t ne1, int64_t ne2)
{
    assert_non_null(t);
    assert_int_equal(t->type, type);
    assert_int_equal(t->n_dims, n_dims);
    assert_int_equal(t->ne[0], ne0);
    assert_int_equal(t->ne[1], ne1);
    assert_int_equal(t->ne[2], ne2);
    assert_int_equal(t->ne[3], 1);
    assert_int_equal(t->nbytes, (size_t)(ne0 * ne1 * ne2) * (type == TD_WT_F32 ? 4 : 2));
    assert_non_null(t->data);
}

static void check_linear(const td_wlinear *l, enum td_wtype wt, int64_t n_in, int64_t n_out,
                         int bias)
{
    check_shape(l->w, wt, 2, n_in, n_out, 1);
    if (bias)
        check_shape(l->b, TD_WT_F32, 1, n_out, 1, 1);
    else
        assert_null(l->b);
}

static void check_norm(const td_wnorm *n, int64_t w)
{
    check_shape(n->w, TD_WT_F32, 1, w, 1, 1);
    check_shape(n->b, TD_WT_F32, 1, w, 1, 1);
}

static void check_attn(const td_wattn *a, enum td_wtype wt, int64_t n, int64_t n_kv)
{
    check_linear(&a->q, wt, n, n, 1);
    check_linear(&a->k, wt, n_kv, n, 0);
    check_linear(&a->v, wt, n_kv, n, 1);
    check_linear(&a->o, wt, n, n, 1);
}

/* Every tensor pointer of the model, with its shape and type. */
static void check_tensors(const td_wmodel *m)
{
    const td_whparams *hp = &m->hp;
    enum td_wtype wt = m->wtype;
    int64_t na = hp->n_audio_state, nt = hp->n_text_state;
    check_shape(m->enc.pos, TD_WT_F32, 2, na, hp->n_audio_ctx, 1);
    check_shape(m->enc.conv1_w, wt, 3, 3, hp->n_mels, na);
    check_shape(m->enc.conv1_b, TD_WT_F32, 2, 1, na, 1);
    check_shape(m->enc.conv2_w, wt, 3, 3, na, na);
    check_shape(m->enc.conv2_b, TD_WT_F32, 2, 1, na, 1);
    check_norm(&m->enc.ln_post, na);
    for (int i = 0; i < hp->n_audio_layer; i++) {
        const td_wenc_layer *L = &m->enc.layers[i];
        check_norm(&L->attn_ln, na);
        check_attn(&L->attn, wt, na, na);
        check_norm(&L->mlp_ln, na);
        check_linear(&L->mlp0, wt, na, 4 * na, 1);
        check_linear(&L->mlp2, wt, 4 * na, na, 1);
    }
    check_shape(m->dec.pos, TD_WT_F32, 2, nt, hp->n_text_ctx, 1);
    check_shape(m->dec.tok, wt, 2, nt, hp->n_vocab, 1);
    check_norm(&m->dec.ln, nt);
    for (int i = 0; i < hp->n_text_layer; i++) {
        const td_wdec_layer *L = &m->dec.layers[i];
        check_norm(&L->attn_ln, nt);
        check_attn(&L->attn, wt, nt, nt);
        check_norm(&L->cross_ln, nt);
        check_attn(&L->cross, wt, nt, na);
        check_norm(&L->mlp_ln, nt);
        check_linear(&L->mlp0, wt, nt, 4 * nt, 1);
        check_linear(&L->mlp2, wt, 4 * nt, nt, 1);
    }
    size_t sum = 0;
    for (size_t i = 0; i < m->n_tensors; i++)
        sum += m->tensors[i].nbytes;
    assert_int_equal(sum, m->weight_bytes);
    assert_int_equal(m->n_tensors,
                     5 + 15 * (size_t)hp->n_audio_layer + 2 + 2 + 24 * (size_t)hp->n_text_layer + 2);
    assert_ptr_equal(td_wmodel_tensor(m, "encoder.conv1.weight"), m->enc.conv1_w);
    assert_ptr_equal(td_wmodel_tensor(m, "decoder.token_embedding.weight"), m->dec.tok);
    assert_null(td_wmodel_tensor(m, "decoder.token_embedding"));
    assert_null(td_wmodel_tensor(m, ""));
}

/* ------------------------------------------------------------ loading */

static void test_load_multilingual(void **state)
{
    fixture *f = *state;
    for (int k = 0; k < 2; k++) {
        enum td_wtype wt = k ? TD_WT_F16 : TD_WT_F32;
        td_wmk_spec s = spec_small(51865, 80, wt);
        s.hp.n_audio_layer = 2; /* encoder and decoder depths differ */
        s.hp.n_text_layer = 3;
        s.hp.n_audio_state = 24; /* so do the widths: cross-attention reads 24 */
        s.hp.n_audio_head = 3;
        char *p = gen(f, "ml.bin", &s);
        td_wmodel *m;
        td_error err = {0};
        assert_int_equal(td_wmodel_open(p, &m, &err), TD_OK);
        assert_string_equal(m->path, p);
        assert_int_equal(m->hp.n_vocab, 51865);
        assert_int_equal(m->hp.n_audio_state, 24);
        assert_int_equal(m->hp.n_text_layer, 3);
        assert_int_equal(m->hp.ftype, wt == TD_WT_F16 ? 1 : 0);
        assert_int_equal(m->wtype, wt);
        assert_int_equal(m->multilingual, 1);
        assert_int_equal(m->n_mel_filters, 80);
        assert_int_equal(m->n_fft, 201);
        assert_int_equal(m->n_file_tokens, 50257);
        /* the filterbank is handed out as it is in the file */
        float *want = malloc(80 * 201 * sizeof *want);
        td_wmk_mel_filters(80, want);
        assert_memory_equal(m->mel_filters, want, 80 * 201 * sizeof *want);
        free(want);
        const td_wspecial *sp = &m->sp;
        assert_int_equal(sp->eot, 50257);
        assert_int_equal(sp->sot, 50258);
        assert_int_equal(sp->lang_begin, 50259);
        assert_int_equal(sp->translate, 50358);
        assert_int_equal(sp->transcribe, 50359);
        assert_int_equal(sp->solm, 50360);
        assert_int_equal(sp->prev, 50361);
        assert_int_equal(sp->nospeech, 50362);
        assert_int_equal(sp->notimestamps, 50363);
        assert_int_equal(sp->ts_begin, 50364);
        assert_int_equal(sp->n_langs, 99);
        assert_int_equal(sp->blank, 220);
        check_token(m, 0, "!");
        check_token(m, 220, " ");
        check_token(m, 50257, "<|endoftext|>");
        check_token(m, 50258, "<|startoftranscript|>");
        check_token(m, 50259, "<|en|>");
        check_token(m, 50260, "<|zh|>");
        check_token(m, 50259 + 98, "<|su|>");
        check_token(m, 50358, "<|translate|>");
        check_token(m, 50359, "<|transcribe|>");
        check_token(m, 50360, "<|startoflm|>");
        check_token(m, 50361, "<|startofprev|>");
        check_token(m, 50362, "<|nospeech|>");
        check_token(m, 50363, "<|notimestamps|>");
        check_token(m, 50364, "<|0.00|>");
        check_token(m, 50365, "<|0.02|>");
        check_token(m, 50364 + 50, "<|1.00|>");
        check_token(m, 50364 + 1234, "<|24.68|>");
        check_token(m, 51864, "<|30.00|>");
        size_t n = 7;
        assert_null(td_wmodel_token(m, 51865, &n));
        assert_null(td_wmodel_token(m, -1, &n));
        check_tensors(m);
        td_wmodel_close(m);
        free(p);
    }
}

static void test_load_english_only(void **state)
{
    fixture *f = *state;
    td_wmk_spec s = spec_small(51864, 80, TD_WT_F16);
    char *p = gen(f, "en.bin", &s);
    td_wmodel *m;
    td_error err = {0};
    assert_int_equal(td_wmodel_open(p, &m, &err), TD_OK);
    assert_int_equal(m->multilingual, 0);
    assert_int_equal(m->n_file_tokens, 50256);
    const td_wspecial *sp = &m->sp;
    assert_int_equal(sp->eot, 50256);
    assert_int_equal(sp->sot, 50257);
    assert_int_equal(sp->lang_begin, 50258);
    assert_int_equal(sp->translate, 50357);
    assert_int_equal(sp->transcribe, 50358);
    assert_int_equal(sp->solm, 50359);
    assert_int_equal(sp->prev, 50360);
    assert_int_equal(sp->nospeech, 50361);
    assert_int_equal(sp->notimestamps, 50362);
    assert_int_equal(sp->ts_begin, 50363);
    assert_int_equal(sp->n_langs, 0);
    check_token(m, 50256, "<|endoftext|>");
    check_token(m, 50257, "<|startoftranscript|>");
    check_token(m, 50258, "<|en|>"); /* the .en tokenizer has them too */
    check_token(m, 50357, "<|translate|>");
    check_token(m, 50363, "<|0.00|>");
    check_token(m, 51863, "<|30.00|>");
    check_tensors(m);
    td_wmodel_close(m);
    free(p);
}

/* td_wmodel_release_pages drops whole pages of the mapping and nothing
 * else: the tensor's bytes read the same afterwards (they come back from
 * the file), and ranges outside the mapping or a model in memory are left
 * alone. */
static void test_release_pages(void **state)
{
    fixture *f = *state;
    td_wmk_spec s = spec_small(51864, 80, TD_WT_F16);
    char *p = gen(f, "release.bin", &s);
    td_wmodel *m;
    td_error err = {0};
    assert_int_equal(td_wmodel_open(p, &m, &err), TD_OK);
    const td_wtensor *t = m->dec.tok; /* the largest: many whole pages */
    assert_non_null(t);
    unsigned char *copy = malloc(t->nbytes);
    assert_non_null(copy);
    memcpy(copy, t->data, t->nbytes);
    assert_int_equal(td_wmodel_release_pages(m, t->data, t->nbytes), 0);
    assert_memory_equal(copy, t->data, t->nbytes);
    /* a range of one byte (no whole page), NULL, and one outside */
    assert_int_equal(td_wmodel_release_pages(m, t->data, 1), 0);
    assert_int_equal(td_wmodel_release_pages(m, NULL, 10), 0);
    assert_int_equal(td_wmodel_release_pages(m, copy, t->nbytes), 0);
    assert_int_equal(td_wmodel_release_pages(NULL, copy, 1), 0);
    check_tensors(m);
    free(copy);
    td_wmodel_close(m);
    free(p);
}

static void test_load_v3(void **state)
{
    fixture *f = *state;
    td_wmk_spec s = spec_small(51866, 128, TD_WT_F32);
    char *p = gen(f, "v3.bin", &s);
    td_wmodel *m;
    td_error err = {0};
    assert_int_equal(td_wmodel_open(p, &m, &err), TD_OK);
    assert_int_equal(m->hp.n_mels, 128);
    assert_int_equal(m->n_mel_filters, 128);
    const td_wspecial *sp = &m->sp;
    assert_int_equal(sp->eot, 50257);
    assert_int_equal(sp->sot, 50258);
    assert_int_equal(sp->translate, 50359);
    assert_int_equal(sp->transcribe, 50360);
    assert_int_equal(sp->solm, 50361);
    assert_int_equal(sp->prev, 50362);
    assert_int_equal(sp->nospeech, 50363);
    assert_int_equal(sp->notimestamps, 50364);
    assert_int_equal(sp->ts_begin, 50365);
    assert_int_equal(sp->n_langs, 100);
    check_token(m, 50259 + 99, "<|yue|>");
    check_token(m, 50359, "<|translate|>");
    check_token(m, 51865, "<|30.00|>");
    check_tensors(m);
    td_wmodel_close(m);
    free(p);
}

/* A file that spells out few tokens: the rest below eot get names with
 * their ids (generated by counting in decimal: check the carries). */
static void test_extra_token_names(void **state)
{
    fixture *f = *state;
    td_wmk_spec s = spec_small(51865, 4, TD_WT_F16);
    s.vocab_count = 9;
    char *p = gen(f, "extra.bin", &s);
    td_wmodel *m;
    td_error err = {0};
    assert_int_equal(td_wmodel_open(p, &m, &err), TD_OK);
    assert_int_equal(m->n_file_tokens, 9);
    assert_int_equal(m->sp.blank, -1); /* no " " token in the file */
    check_token(m, 8, ")");
    check_token(m, 9, "[_extra_token_9]");
    check_token(m, 10, "[_extra_token_10]");
    check_token(m, 99, "[_extra_token_99]");
    check_token(m, 100, "[_extra_token_100]");
    check_token(m, 1999, "[_extra_token_1999]");
    check_token(m, 2000, "[_extra_token_2000]");
    check_token(m, 9999, "[_extra_token_9999]");
    check_token(m, 10000, "[_extra_token_10000]");
    check_token(m, 50256, "[_extra_token_50256]");
    check_token(m, 50257, "<|endoftext|>");
    for (int32_t id = 9; id < 50257; id++) {
        char want[32];
        size_t n;
        const uint8_t *t = td_wmodel_token(m, id, &n);
        snprintf(want, sizeof want, "[_extra_token_%d]", (int)id);
        assert_int_equal(n, strlen(want));
        assert_memory_equal(t, want, n);
    }
    td_wmodel_close(m);
    free(p);
}

/* Record order does not matter (whisper.cpp looks tensors up by name). */
static void test_record_order_free(void **state)
{
    fixture *f = *state;
    td_wmk_spec s = spec_small(51865, 4, TD_WT_F16);
    s.vocab_count = 200;
    char *p = gen(f, "ord.bin", &s);
    size_t len;
    uint8_t *buf = slurp(p, &len);
    layout *L = walk(buf, len);
    /* move the last record to the front of the tensors */
    const rec *last = &L->r[L->n - 1];
    size_t rl = len - last->off, start = L->r[0].off;
    uint8_t *o = malloc(len);
    memcpy(o, buf, start);
    memcpy(o + start, buf + last->off, rl);
    memcpy(o + start + rl, buf + start, last->off - start);
    td_wmodel *m;
    td_error err = {0};
    assert_int_equal(td_wmodel_open_memory(o, len, "m.bin", &m, &err), TD_OK);
    assert_memory_equal(m->dec.ln.b->data, buf + last->data_off, last->data_len);
    check_tensors(m);
    td_wmodel_close(m);
    free(o);
    free(L);
    free(buf);
    free(p);
}

/* With the real vocabularies (../shared/whisper) copied in. */
static void test_real_headers(void **state)
{
    fixture *f = *state;
    const char *ml = SHARED "/tiny.header.bin", *en = SHARED "/tiny.en.header.bin";
    if (access(ml, R_OK) != 0 || access(en, R_OK) != 0) {
        print_message("skip: %s absent (Whisper reference data)\n", SHARED);
        skip();
    }
    td_wmk_spec s = spec_small(51865, 80, TD_WT_F16);
    s.header_path = ml;
    char *p = gen(f, "real.bin", &s);
    td_wmodel *m;
    td_error err = {0};
    assert_int_equal(td_wmodel_open(p, &m, &err), TD_OK);
    assert_int_equal(m->n_file_tokens, 50257);
    assert_int_equal(m->sp.blank, 220);
    check_token(m, 0, "!");
    check_token(m, 220, " ");
    check_token(m, 50256, ""); /* the multilingual file spells it empty */
    check_token(m, 50257, "<|endoftext|>");
    check_token(m, 50259, "<|en|>");
    check_token(m, 50364, "<|0.00|>");
    td_wmodel_close(m);
    free(p);

    s = spec_small(51864, 80, TD_WT_F32);
    s.header_path = en;
    p = gen(f, "real-en.bin", &s);
    assert_int_equal(td_wmodel_open(p, &m, &err), TD_OK);
    assert_int_equal(m->n_file_tokens, 50257);
    check_token(m, 532, " -");
    check_token(m, 705, " '");
    check_token(m, 50256, "<|endoftext|>"); /* spelled out by the .en file itself */
    check_token(m, 50257, "<|startoftranscript|>");
    assert_int_equal(m->sp.eot, 50256);
    td_wmodel_close(m);
    free(p);
}

/* td_wmodel_token needs only n_vocab and the two token arrays (other
 * modules' tests build models by hand). */
static void test_token_hand_built(void **state)
{
    (void)state;
    static const uint8_t a[] = "ab", b[] = " c";
    const uint8_t *bytes[3] = {a, b, a};
    uint32_t lens[3] = {2, 2, 0};
    td_wmodel m;
    memset(&m, 0, sizeof m);
    m.hp.n_vocab = 3;
    m.tok_bytes = bytes;
    m.tok_len = lens;
    size_t n;
    assert_ptr_equal(td_wmodel_token(&m, 1, &n), b);
    assert_int_equal(n, 2);
    assert_non_null(td_wmodel_token(&m, 2, &n));
    assert_int_equal(n, 0);
    assert_null(td_wmodel_token(&m, 3, &n));
    assert_null(td_wmodel_token(NULL, 0, &n));
}

static void test_open_errors(void **state)
{
    fixture *f = *state;
    td_wmodel *m = (td_wmodel *)1;
    td_error err = {0};
    char *p = pathf("%s/missing.bin", f->dir);
    assert_int_equal(td_wmodel_open(p, &m, &err), TD_EINPUT);
    assert_null(m);
    assert_non_null(strstr(err.msg, p));
    assert_int_equal(td_wmodel_open(f->dir, &m, &err), TD_EINPUT);
    assert_non_null(strstr(err.msg, "not a regular file"));
    write_bytes(p, "", 0);
    assert_int_equal(td_wmodel_open(p, &m, &err), TD_EINPUT);
    assert_non_null(strstr(err.msg, "not a ggml Whisper model file"));
    write_bytes(p, "ggml", 4); /* the magic written big-endian: not ours */
    assert_int_equal(td_wmodel_open(p, &m, &err), TD_EINPUT);
    assert_non_null(strstr(err.msg, "not a ggml Whisper model file"));
    write_bytes(p, "lmgg", 4); /* the magic as stored, then nothing */
    assert_int_equal(td_wmodel_open(p, &m, &err), TD_EINPUT);
    assert_non_null(strstr(err.msg, "file ends in the hyper-parameters"));
    td_wmodel_close(NULL);
    free(p);
}

/* ------------------------------------------------------------ truncation */

static void test_truncation(void **state)
{
    fixture *f = *state;
    td_wmk_spec s = spec_small(51865, 4, TD_WT_F16);
    s.vocab_count = 120;
    char *p = gen(f, "trunc.bin", &s);
    size_t len;
    uint8_t *buf = slurp(p, &len);
    layout *L = walk(buf, len);

    /* every offset of the header region */
    for (size_t cut = 0; cut <= L->vocab_end; cut++) {
        const char *want = cut < 4             ? "not a ggml Whisper model file"
                           : cut < 48          ? "file ends in the hyper-parameters"
                           : cut < L->vocab_off ? "file ends in the mel filters"
                           : cut < L->vocab_end ? "file ends in the vocabulary"
                                                : "no tensors after the vocabulary";
        expect_bad(buf, cut, want);
    }
    /* in and around every tensor record */
    for (size_t i = 0; i < L->n; i++) {
        const rec *r = &L->r[i];
        char missing[128], data[128];
        snprintf(missing, sizeof missing, "tensor '%s' is missing", r->name);
        snprintf(data, sizeof data, "tensor '%s': ", r->name);
        if (i > 0)
            expect_bad(buf, r->off, missing);
        size_t hdr[] = {r->off + 1, r->off + 11, r->off + 12, r->data_off - 1};
        for (size_t k = 0; k < sizeof hdr / sizeof hdr[0]; k++)
            expect_bad(buf, hdr[k], "file ends in the header of a tensor record");
        size_t dat[] = {r->data_off, r->data_off + 1, r->data_off + r->data_len / 2,
                        r->data_off + r->data_len - 1};
        for (size_t k = 0; k < sizeof dat / sizeof dat[0]; k++) {
            char want[160];
            snprintf(want, sizeof want, "%s%zu bytes left, needs %zu", data,
                     dat[k] - r->data_off, r->data_len);
            expect_bad(buf, dat[k], want);
        }
    }
    /* the whole file loads */
    td_error err = {0};
    assert_int_equal(load_copy(buf, len, &err), TD_OK);
    free(L);
    free(buf);
    free(p);
}

/* ------------------------------------------------------------ corruption */

typedef struct corrupt_ctx {
    uint8_t *orig, *buf;
    size_t len;
    layout *L;
} corrupt_ctx;

static void reset(corrupt_ctx *c)
{
    memcpy(c->buf, c->orig, c->len);
}

static void test_corrupt_header(void **state)
{
    fixture *f = *state;
    td_wmk_spec s = spec_small(51865, 4, TD_WT_F16);
    s.vocab_count = 120;
    char *p = gen(f, "bad.bin", &s);
    corrupt_ctx c;
    c.orig = slurp(p, &c.len);
    c.buf = malloc(c.len + 64);
    c.L = walk(c.orig, c.len);
    uint8_t *b = c.buf;

    reset(&c);
    b[0] ^= 1;
    expect_bad(b, c.len, "not a ggml Whisper model file");
    memcpy(b, "GGUF", 4);
    expect_bad(b, c.len, "it is GGUF");

    /* each hyper-parameter out of range, low and high */
    static const struct {
        int field; /* index after the magic */
        int32_t v;
        const char *want;
    } hp[] = {
        {0, 0, "n_vocab 0 is not a Whisper vocabulary"},
        {0, 51867, "n_vocab 51867 is not a Whisper vocabulary"},
        {0, 50257, "n_vocab 50257 is not a Whisper vocabulary"},
        {1, 0, "n_audio_ctx 0 is out of range (1..1500)"},
        {1, 1501, "n_audio_ctx 1501 is out of range"},
        {2, 0, "n_audio_state 0 is out of range"},
        {2, 4097, "n_audio_state 4097 is out of range"},
        {3, 0, "n_audio_head 0 is out of range"},
        {3, 65, "n_audio_head 65 is out of range"},
        {3, 3, "n_audio_head 3 does not divide n_audio_state 16"},
        {4, 0, "n_audio_layer 0 is out of range"},
        {4, 65, "n_audio_layer 65 is out of range"},
        {5, -1, "n_text_ctx -1 is out of range"},
        {5, 449, "n_text_ctx 449 is out of range"},
        {6, 0, "n_text_state 0 is out of range"},
        {6, 1 << 30, "n_text_state 1073741824 is out of range"},
        {7, 0, "n_text_head 0 is out of range"},
        {7, 5, "n_text_head 5 does not divide n_text_state 16"},
        {8, 0, "n_text_layer 0 is out of range"},
        {8, INT32_MIN, "n_text_layer -2147483648 is out of range"},
        {9, 0, "n_mels 0 is out of range"},
        {9, 129, "n_mels 129 is out of range"},
        {10, -1, "ftype -1 is invalid"},
        {10, 2, "quantized models (Q4_0) are not supported; use an F16 or F32 model"},
        {10, 8, "quantized models (Q5_0) are not supported; use an F16 or F32 model"},
        {10, 2007, "quantized models (Q8_0) are not supported"},
        {10, 1012, "quantized models (Q4_K) are not supported"},
        {10, 24, "BF16 models are not supported"},
        {10, 99, "ftype 99 is not a known ggml file type"},
        {10, 5, "ftype 5 is not a known ggml file type"},
        /* an F32 ftype over F16 weights: caught at the first 2-D weight */
        {10, 0, "tensor 'encoder.conv1.weight' is F16, expected F32 (the file's ftype)"},
        /* n_mels the filterbank does not have */
        {9, 5, "mel filters are 4 x 201, expected 5 x 201"},
    };
    for (size_t i = 0; i < sizeof hp / sizeof hp[0]; i++) {
        reset(&c);
        wr32(b + 4 + 4 * (size_t)hp[i].field, hp[i].v);
        expect_bad(b, c.len, hp[i].want);
    }
    /* a quantization version on an F16 file is fine */
    reset(&c);
    wr32(b + 44, 2001);
    td_error err = {0};
    assert_int_equal(load_copy(b, c.len, &err), TD_OK);

    /* filterbank */
    reset(&c);
    wr32(b + 48, 5);
    expect_bad(b, c.len, "mel filters are 5 x 201, expected 4 x 201");
    reset(&c);
    wr32(b + 52, 200);
    expect_bad(b, c.len, "mel filters are 4 x 200, expected 4 x 201");
    reset(&c);
    wr32(b + 56 + 4 * 3, 0x7fc00000); /* NaN */
    expect_bad(b, c.len, "mel filter value 3 is not finite");
    reset(&c);
    wr32(b + 56 + 4 * 700, (int32_t)0xff800000u); /* -inf */
    expect_bad(b, c.len, "mel filter value 700 is not finite");

    /* vocabulary */
    size_t vo = c.L->vocab_off;
    reset(&c);
    wr32(b + vo, -1);
    expect_bad(b, c.len, "vocabulary count -1 is out of range (0..51865)");
    reset(&c);
    wr32(b + vo, 51866);
    expect_bad(b, c.len, "vocabulary count 51866 is out of range");
    reset(&c);
    wr32(b + vo, 51865); /* more tokens than the file holds */
    expect_bad(b, c.L->vocab_end, "file ends in the vocabulary");
    reset(&c);
    wr32(b + vo + 4, 1000);
    expect_bad(b, c.len, "token 0 is 1000 bytes long (at most 256)");
    reset(&c);
    wr32(b + vo + 4, -1);
    expect_bad(b, c.len, "token 0 is 4294967295 bytes long");
    reset(&c);
    wr32(b + vo + 4 + 5, 257); /* token 1 (token 0 is one byte) */
    expect_bad(b, c.len, "token 1 is 257 bytes long");

    free(c.L);
    free(c.buf);
    free(c.orig);
    free(p);
}

static void test_corrupt_tensors(void **state)
{
    fixture *f = *state;
    td_wmk_spec s = spec_small(51865, 4, TD_WT_F16);
    s.vocab_count = 120;
    char *p = gen(f, "badt.bin", &s);
    corrupt_ctx c;
    c.orig = slurp(p, &c.len);
    c.buf = malloc(c.len + 4096);
    c.L = walk(c.orig, c.len);
    uint8_t *b = c.buf;
    const rec *conv1 = find_rec(c.L, "encoder.conv1.weight");
    const rec *conv1b = find_rec(c.L, "encoder.conv1.bias");
    const rec *conv2b = find_rec(c.L, "encoder.conv2.bias");
    const rec *q = find_rec(c.L, "decoder.blocks.0.cross_attn.query.weight");

    /* tensor types */
    static const struct {
        int32_t t;
        const char *want;
    } types[] = {
        {2, "tensor 'encoder.conv1.weight': quantized models (Q4_0) are not supported; use an "
            "F16 or F32 model"},
        {3, "quantized models (Q4_1)"},
        {4, "quantized models (Q4_2)"},
        {6, "quantized models (Q5_0)"},
        {7, "quantized models (Q5_1)"},
        {8, "quantized models (Q8_0)"},
        {12, "quantized models (Q4_K)"},
        {39, "quantized models (MXFP4)"},
        {30, "tensor 'encoder.conv1.weight': type BF16 is not supported"},
        {26, "type I32 is not supported"},
        {40, "tensor 'encoder.conv1.weight': unknown tensor type 40"},
        {-1, "unknown tensor type -1"},
        {0, "tensor 'encoder.conv1.weight' is F32, expected F16 (the file's ftype)"},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        reset(&c);
        wr32(b + conv1->off + 8, types[i].t);
        expect_bad(b, c.len, types[i].want);
    }
    /* F32-only tensors: 2-D conv bias and 1-D norms */
    reset(&c);
    wr32(b + conv1b->off + 8, 1);
    expect_bad(b, c.len, "tensor 'encoder.conv1.bias' is F16, expected F32");
    reset(&c);
    const rec *ln = find_rec(c.L, "decoder.ln.weight");
    wr32(b + ln->off + 8, 1);
    expect_bad(b, c.len, "tensor 'decoder.ln.weight' is F16, expected F32");

    /* dims and name lengths */
    reset(&c);
    wr32(b + conv1->off, 5);
    expect_bad(b, c.len, "tensor record 1: n_dims 5 is out of range (1..4)");
    reset(&c);
    wr32(b + conv1->off, 0);
    expect_bad(b, c.len, "n_dims 0 is out of range");
    reset(&c);
    wr32(b + conv1->off + 4, 0);
    expect_bad(b, c.len, "tensor record 1: name length 0 is out of range (1..255)");
    reset(&c);
    wr32(b + conv1->off + 4, 256);
    expect_bad(b, c.len, "name length 256 is out of range");
    reset(&c);
    wr32(b + conv1->off + 4, 0x7fffffff);
    expect_bad(b, c.len, "name length 2147483647 is out of range");

    /* shapes */
    reset(&c);
    wr32(b + conv1->off + 16, 5);
    expect_bad(b, c.len,
               "tensor 'encoder.conv1.weight' has shape [3, 5, 16], expected [3, 4, 16]");
    reset(&c);
    wr32(b + conv1->off + 12, -3);
    expect_bad(b, c.len, "has shape [-3, 4, 16]");
    reset(&c);
    wr32(b + conv1->off + 12, 0);
    expect_bad(b, c.len, "has shape [0, 4, 16]");
    reset(&c);
    wr32(b + q->off + 16, 0x7fffffff); /* huge: must not overflow anything */
    expect_bad(b, c.len, "has shape [16, 2147483647], expected [16, 16]");
    /* conv bias stored 1-D: the right count, the wrong rank. Rebuild the
     * record with n_dims 1 and ne {16}. */
    {
        size_t o = conv1b->off, n = 0;
        memcpy(b, c.orig, o);
        wr32(b + o, 1);
        memcpy(b + o + 4, c.orig + o + 4, 8);
        wr32(b + o + 12, 16);
        n = o + 16;
        size_t nl = conv1b->data_off - (o + 20);
        memcpy(b + n, c.orig + o + 20, nl + conv1b->data_len);
        n += nl + conv1b->data_len;
        size_t rest = c.len - (conv1b->data_off + conv1b->data_len);
        memcpy(b + n, c.orig + conv1b->data_off + conv1b->data_len, rest);
        n += rest;
        expect_bad(b, n, "tensor 'encoder.conv1.bias' has shape [16], expected [1, 16]");
    }

    /* names */
    reset(&c);
    b[conv1->data_off - strlen("1.weight")] = '9';
    expect_bad(b, c.len, "tensor 'encoder.conv9.weight': unknown tensor name");
    reset(&c);
    b[conv1->data_off - 1] = 0x01;
    expect_bad(b, c.len, "tensor 'encoder.conv1.weigh?': unknown tensor name");
    reset(&c);
    const rec *blk = find_rec(c.L, "encoder.blocks.0.attn_ln.weight");
    b[blk->off + 12 + 4 + strlen("encoder.blocks.")] = '1'; /* a layer the model lacks */
    expect_bad(b, c.len, "tensor 'encoder.blocks.1.attn_ln.weight': unknown tensor name");
    reset(&c);
    b[conv2b->data_off - strlen("2.bias")] = '1';
    expect_bad(b, c.len, "tensor 'encoder.conv1.bias' appears twice");

    /* a record dropped from the middle */
    {
        const rec *v = find_rec(c.L, "encoder.blocks.0.attn.value.bias");
        size_t end = v->data_off + v->data_len;
        memcpy(b, c.orig, v->off);
        memcpy(b + v->off, c.orig + end, c.len - end);
        expect_bad(b, c.len - (end - v->off),
                   "tensor 'encoder.blocks.0.attn.value.bias' is missing");
    }

    /* trailing bytes, and a whole record again after the last */
    reset(&c);
    memset(b + c.len, 0, 7);
    expect_bad(b, c.len + 7, "7 bytes of trailing data after the last tensor");
    reset(&c);
    size_t rl = conv1b->data_off + conv1b->data_len - conv1b->off;
    memcpy(b + c.len, c.orig + conv1b->off, rl);
    expect_bad(b, c.len + rl, "bytes of trailing data after the last tensor");

    free(c.L);
    free(c.buf);
    free(c.orig);
    free(p);
}

/* ------------------------------------------------------------ languages */

static void test_languages(void **state)
{
    (void)state;
    assert_int_equal(td_wlang_count(), 100);
    assert_string_equal(td_wlang_code(0), "en");
    assert_string_equal(td_wlang_code(1), "zh");
    assert_string_equal(td_wlang_code(20), "he");
    assert_string_equal(td_wlang_code(93), "haw"); /* three letters */
    assert_string_equal(td_wlang_code(98), "su");  /* the last of 99 */
    assert_string_equal(td_wlang_code(99), "yue"); /* large-v3's addition */
    assert_null(td_wlang_code(100));
    assert_null(td_wlang_code(-1));
    assert_int_equal(td_wlang_index("en"), 0);
    assert_int_equal(td_wlang_index("de"), 2);
    assert_int_equal(td_wlang_index("jw"), 97);
    assert_int_equal(td_wlang_index("xx"), -1);
    assert_int_equal(td_wlang_index(""), -1);
    assert_int_equal(td_wlang_index(NULL), -1);
    for (int i = 0; i < 100; i++)
        assert_int_equal(td_wlang_index(td_wlang_code(i)), i); /* all distinct */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_load_multilingual, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_load_english_only, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_load_v3, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_release_pages, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_extra_token_names, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_record_order_free, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_real_headers, setup_dir, teardown_dir),
        cmocka_unit_test(test_token_hand_built),
        cmocka_unit_test_setup_teardown(test_open_errors, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_truncation, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_corrupt_header, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_corrupt_tensors, setup_dir, teardown_dir),
        cmocka_unit_test(test_languages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
