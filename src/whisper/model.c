/*
 * model.c: load and validate a legacy ggml Whisper model file (model.h;
 * the layout is in ../shared/DESIGN.md, "The ggml model file").
 *
 * The parser walks the bytes once, front to back, and checks each field
 * before it trusts the next: a length is compared with the bytes left
 * before anything is read through it, every hyper-parameter is bounded
 * before it sizes an allocation, and the set of tensors a model of these
 * dimensions needs is built first, so that each record in the file must
 * match one of them exactly (name, type, shape) and all of them must
 * appear. Nothing in a file can make us allocate more than a few MB
 * beyond the mapping: every table is sized by bounded hyper-parameters.
 *
 * Tensor data stays in the mapping. The format has no padding, so a
 * tensor's data is not aligned in general: read elements with memcpy, or
 * copy (most backends convert or upload the weights anyway).
 *
 * Kept to libc (no other tapedeck module but util/error) so the fuzzer
 * builds it alone.
 */
#include "whisper/model.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* ggml's numbers, for messages                                         */

/* Tensor types (enum ggml_type). Only F32 and F16 load; the others are
 * named so that a refusal says what the file holds. 4, 5, 31..33 and
 * 36..38 were removed from ggml but old files may carry them. */
static const char *const ggml_type_names[] = {
    [0] = "F32",         [1] = "F16",         [2] = "Q4_0",        [3] = "Q4_1",
    [4] = "Q4_2",        [5] = "Q4_3",        [6] = "Q5_0",        [7] = "Q5_1",
    [8] = "Q8_0",        [9] = "Q8_1",        [10] = "Q2_K",       [11] = "Q3_K",
    [12] = "Q4_K",       [13] = "Q5_K",       [14] = "Q6_K",       [15] = "Q8_K",
    [16] = "IQ2_XXS",    [17] = "IQ2_XS",     [18] = "IQ3_XXS",    [19] = "IQ1_S",
    [20] = "IQ4_NL",     [21] = "IQ3_S",      [22] = "IQ2_S",      [23] = "IQ4_XS",
    [24] = "I8",         [25] = "I16",        [26] = "I32",        [27] = "I64",
    [28] = "F64",        [29] = "IQ1_M",      [30] = "BF16",       [31] = "Q4_0_4_4",
    [32] = "Q4_0_4_8",   [33] = "Q4_0_8_8",   [34] = "TQ1_0",      [35] = "TQ2_0",
    [36] = "IQ4_NL_4_4", [37] = "IQ4_NL_4_8", [38] = "IQ4_NL_8_8", [39] = "MXFP4",
};

/* Types that are plain numbers rather than quantized blocks. */
static int ggml_type_is_plain(int t)
{
    return t == 0 || t == 1 || (t >= 24 && t <= 28) || t == 30;
}

/* File types (enum ggml_ftype, the hparam's value modulo 1000). */
static const char *const ggml_ftype_names[] = {
    [0] = "F32",      [1] = "F16",      [2] = "Q4_0",    [3] = "Q4_1",    [4] = "Q4_1_SOME_F16",
    [7] = "Q8_0",     [8] = "Q5_0",     [9] = "Q5_1",    [10] = "Q2_K",   [11] = "Q3_K",
    [12] = "Q4_K",    [13] = "Q5_K",    [14] = "Q6_K",   [15] = "IQ2_XXS", [16] = "IQ2_XS",
    [17] = "IQ3_XXS", [18] = "IQ1_S",   [19] = "IQ4_NL", [20] = "IQ3_S",  [21] = "IQ2_S",
    [22] = "IQ4_XS",  [23] = "IQ1_M",   [24] = "BF16",
};

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const char *name_of(const char *const *names, size_t n, int v)
{
    return v >= 0 && (size_t)v < n && names[v] ? names[v] : NULL;
}

/* ------------------------------------------------------------------ */
/* Reading                                                              */

typedef struct reader {
    const uint8_t *p;
    size_t size, off;
    const char *name; /* for messages */
    td_error *err;
} reader;

__attribute__((format(printf, 2, 3)))
static int bad(reader *r, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return td_error_set(r->err, TD_EINPUT, "%s: %s", r->name, msg);
}

static size_t left(const reader *r)
{
    return r->size - r->off;
}

/* TD_OK if n more bytes are there, else a message naming what was cut. */
static int need(reader *r, size_t n, const char *what)
{
    if (left(r) >= n)
        return TD_OK;
    return bad(r, "file ends in the %s (offset %zu: %zu bytes left, needs %zu)", what, r->off,
               left(r), n);
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int32_t rd_i32(reader *r)
{
    int32_t v = (int32_t)le32(r->p + r->off);
    r->off += 4;
    return v;
}

/* A file's tensor name, fit for a message: printable ASCII kept, other
 * bytes shown as '?', long names cut. */
static void show_name(const uint8_t *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < cap; i++)
        out[k++] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
    if (k < n && k + 4 <= cap) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
}

/* ------------------------------------------------------------------ */
/* Hyper-parameters and special tokens                                  */

static int check_hparams(reader *r, const td_whparams *hp)
{
    td_error e = {0};
    if (td_whparams_check(hp, &e) != TD_OK)
        return bad(r, "%s", e.msg);
    if (hp->ftype < 0)
        return bad(r, "ftype %d is invalid", (int)hp->ftype);
    int ft = hp->ftype % 1000;
    if (ft != 0 && ft != 1) {
        const char *fname = name_of(ggml_ftype_names, N_ELEMS(ggml_ftype_names), ft);
        if (!fname)
            return bad(r, "ftype %d is not a known ggml file type; use an F16 or F32 model",
                       (int)hp->ftype);
        if (ft == 24)
            return bad(r, "BF16 models are not supported; use an F16 or F32 model");
        return bad(r, "quantized models (%s) are not supported; use an F16 or F32 model", fname);
    }
    return TD_OK;
}

static void set_specials(td_wmodel *m)
{
    td_wspecial *sp = &m->sp;
    int32_t nv = m->hp.n_vocab;
    sp->eot = nv >= 51865 ? 50257 : 50256;
    sp->sot = sp->eot + 1;
    sp->ts_begin = nv - 1501; /* 1501 timestamps close the vocabulary */
    sp->notimestamps = sp->ts_begin - 1;
    sp->nospeech = sp->ts_begin - 2;
    sp->prev = sp->ts_begin - 3;
    sp->solm = sp->ts_begin - 4;
    sp->transcribe = sp->ts_begin - 5;
    sp->translate = sp->ts_begin - 6;
    sp->lang_begin = sp->sot + 1;
    m->multilingual = nv >= 51865;
    sp->n_langs = m->multilingual ? sp->translate - sp->lang_begin : 0;
    sp->blank = -1;
}

/* ------------------------------------------------------------------ */
/* Token names for the ids the file leaves implied                      */

#define GEN_NAME_MAX 24 /* "[_extra_token_65535]", "<|startoftranscript|>" */

static size_t put_str(char *out, const char *s)
{
    size_t n = strlen(s);
    memcpy(out, s, n);
    return n;
}

static size_t put_uint(char *out, unsigned v)
{
    char tmp[12];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* The display name of special id; returns its length (<= GEN_NAME_MAX). */
static size_t gen_name(const td_wspecial *sp, int32_t id, char *out)
{
    size_t n = 0;
    static const struct {
        size_t off;
        const char *name;
    } fixed[] = {
        {offsetof(td_wspecial, eot), "<|endoftext|>"},
        {offsetof(td_wspecial, sot), "<|startoftranscript|>"},
        {offsetof(td_wspecial, translate), "<|translate|>"},
        {offsetof(td_wspecial, transcribe), "<|transcribe|>"},
        {offsetof(td_wspecial, solm), "<|startoflm|>"},
        {offsetof(td_wspecial, prev), "<|startofprev|>"},
        {offsetof(td_wspecial, nospeech), "<|nospeech|>"},
        {offsetof(td_wspecial, notimestamps), "<|notimestamps|>"},
    };
    for (size_t i = 0; i < N_ELEMS(fixed); i++) {
        int32_t v;
        memcpy(&v, (const char *)sp + fixed[i].off, sizeof v);
        if (id == v)
            return put_str(out, fixed[i].name);
    }
    if (id >= sp->ts_begin) {
        /* "<|%.2f|>" of i * 0.02 s, as Whisper names them */
        unsigned cs = (unsigned)(id - sp->ts_begin) * 2;
        n += put_str(out, "<|");
        n += put_uint(out + n, cs / 100);
        out[n++] = '.';
        out[n++] = (char)('0' + cs % 100 / 10);
        out[n++] = (char)('0' + cs % 10);
        n += put_str(out + n, "|>");
        return n;
    }
    /* English-only vocabularies have the language tokens too. */
    if (id >= sp->lang_begin && id < sp->translate && td_wlang_code(id - sp->lang_begin)) {
        n += put_str(out, "<|");
        n += put_str(out + n, td_wlang_code(id - sp->lang_begin));
        n += put_str(out + n, "|>");
        return n;
    }
    n += put_str(out, "[_extra_token_");
    n += put_uint(out + n, (unsigned)id);
    out[n++] = ']';
    return n;
}

/* "[_extra_token_N]" for ids from..to-1 into w, counting N up in decimal
 * (a file that spells out few tokens leaves ~50000 of these, and the
 * fuzzer opens such files thousands of times a second). Returns the
 * bytes written. */
static size_t gen_extra_run(int32_t from, int32_t to, char *w, const uint8_t **bytes,
                            uint32_t *lens)
{
    char d[12];
    size_t nd = put_uint(d, (unsigned)from);
    char *start = w;
    for (int32_t id = from; id < to; id++) {
        char *s = w;
        memcpy(w, "[_extra_token_", 14);
        w += 14;
        for (size_t k = 0; k < nd; k++)
            *w++ = d[k];
        *w++ = ']';
        bytes[id] = (const uint8_t *)s;
        lens[id] = (uint32_t)(w - s);
        size_t k = nd;
        while (k > 0 && d[k - 1] == '9')
            d[--k] = '0';
        if (k > 0) {
            d[k - 1]++;
        } else {
            memmove(d + 1, d, nd++);
            d[0] = '1';
        }
    }
    return (size_t)(w - start);
}

/* ------------------------------------------------------------------ */
/* The tensors a model of these dimensions needs                        */

typedef struct expect {
    const td_wtensor **slot; /* where the model's tables point at it */
    int n_dims;
    int64_t ne[4];
    int f32_only;            /* 1-D, conv biases, positional embeddings */
} expect;

/* The table under construction; names go to a blob after the tensors. */
typedef struct expect_set {
    expect *ex;
    td_wtensor *t;           /* the model's tensors, one per expect */
    char *names;
    size_t n, cap, names_len, names_cap;
} expect_set;

#define MAX_NAME 64   /* longest: "decoder.blocks.63.cross_attn.value.weight" */
#define HASH_SIZE 8192 /* > 2 x the most tensors a bounded model has */

static void ex_add(expect_set *s, const char *name, const td_wtensor **slot, int f32_only,
                   int n_dims, int64_t ne0, int64_t ne1, int64_t ne2)
{
    size_t len = strlen(name);
    if (s->n >= s->cap || s->names_len + len + 1 > s->names_cap)
        return; /* sized beforehand; cannot happen */
    expect *e = &s->ex[s->n];
    e->slot = slot;
    e->n_dims = n_dims;
    e->ne[0] = ne0;
    e->ne[1] = ne1;
    e->ne[2] = ne2;
    e->ne[3] = 1;
    e->f32_only = f32_only;
    memcpy(s->names + s->names_len, name, len + 1);
    s->t[s->n].name = s->names + s->names_len;
    s->names_len += len + 1;
    s->n++;
}

static void ex_norm(expect_set *s, const char *prefix, td_wnorm *nm, int64_t n)
{
    char name[MAX_NAME];
    snprintf(name, sizeof name, "%s.weight", prefix);
    ex_add(s, name, &nm->w, 1, 1, n, 1, 1);
    snprintf(name, sizeof name, "%s.bias", prefix);
    ex_add(s, name, &nm->b, 1, 1, n, 1, 1);
}

static void ex_linear(expect_set *s, const char *prefix, td_wlinear *l, int64_t n_in,
                      int64_t n_out, int bias)
{
    char name[MAX_NAME];
    snprintf(name, sizeof name, "%s.weight", prefix);
    ex_add(s, name, &l->w, 0, 2, n_in, n_out, 1);
    if (bias) {
        snprintf(name, sizeof name, "%s.bias", prefix);
        ex_add(s, name, &l->b, 1, 1, n_out, 1, 1);
    }
}

/* Cross-attention's key and value read the encoder output, n_kv wide. */
static void ex_attn(expect_set *s, const char *prefix, td_wattn *a, int64_t n, int64_t n_kv)
{
    char name[MAX_NAME];
    snprintf(name, sizeof name, "%s.query", prefix);
    ex_linear(s, name, &a->q, n, n, 1);
    snprintf(name, sizeof name, "%s.key", prefix);
    ex_linear(s, name, &a->k, n_kv, n, 0);
    snprintf(name, sizeof name, "%s.value", prefix);
    ex_linear(s, name, &a->v, n_kv, n, 1);
    snprintf(name, sizeof name, "%s.out", prefix);
    ex_linear(s, name, &a->o, n, n, 1);
}

static void ex_mlp(expect_set *s, const char *blk, td_wlinear *mlp0, td_wlinear *mlp2, int64_t n)
{
    char name[MAX_NAME];
    snprintf(name, sizeof name, "%s.mlp.0", blk);
    ex_linear(s, name, mlp0, n, 4 * n, 1);
    snprintf(name, sizeof name, "%s.mlp.2", blk);
    ex_linear(s, name, mlp2, 4 * n, n, 1);
}

static void build_expected(td_wmodel *m, expect_set *s)
{
    const td_whparams *hp = &m->hp;
    int64_t na = hp->n_audio_state, nt = hp->n_text_state;
    char name[MAX_NAME], blk[MAX_NAME];

    ex_add(s, "encoder.positional_embedding", &m->enc.pos, 1, 2, na, hp->n_audio_ctx, 1);
    ex_add(s, "encoder.conv1.weight", &m->enc.conv1_w, 0, 3, 3, hp->n_mels, na);
    ex_add(s, "encoder.conv1.bias", &m->enc.conv1_b, 1, 2, 1, na, 1);
    ex_add(s, "encoder.conv2.weight", &m->enc.conv2_w, 0, 3, 3, na, na);
    ex_add(s, "encoder.conv2.bias", &m->enc.conv2_b, 1, 2, 1, na, 1);
    for (int i = 0; i < hp->n_audio_layer; i++) {
        td_wenc_layer *L = &m->enc.layers[i];
        snprintf(blk, sizeof blk, "encoder.blocks.%d", i);
        snprintf(name, sizeof name, "%s.attn_ln", blk);
        ex_norm(s, name, &L->attn_ln, na);
        snprintf(name, sizeof name, "%s.attn", blk);
        ex_attn(s, name, &L->attn, na, na);
        snprintf(name, sizeof name, "%s.mlp_ln", blk);
        ex_norm(s, name, &L->mlp_ln, na);
        ex_mlp(s, blk, &L->mlp0, &L->mlp2, na);
    }
    ex_norm(s, "encoder.ln_post", &m->enc.ln_post, na);

    ex_add(s, "decoder.positional_embedding", &m->dec.pos, 1, 2, nt, hp->n_text_ctx, 1);
    ex_add(s, "decoder.token_embedding.weight", &m->dec.tok, 0, 2, nt, hp->n_vocab, 1);
    for (int i = 0; i < hp->n_text_layer; i++) {
        td_wdec_layer *L = &m->dec.layers[i];
        snprintf(blk, sizeof blk, "decoder.blocks.%d", i);
        snprintf(name, sizeof name, "%s.attn_ln", blk);
        ex_norm(s, name, &L->attn_ln, nt);
        snprintf(name, sizeof name, "%s.attn", blk);
        ex_attn(s, name, &L->attn, nt, nt);
        snprintf(name, sizeof name, "%s.cross_attn_ln", blk);
        ex_norm(s, name, &L->cross_ln, nt);
        snprintf(name, sizeof name, "%s.cross_attn", blk);
        ex_attn(s, name, &L->cross, nt, na);
        snprintf(name, sizeof name, "%s.mlp_ln", blk);
        ex_norm(s, name, &L->mlp_ln, nt);
        ex_mlp(s, blk, &L->mlp0, &L->mlp2, nt);
    }
    ex_norm(s, "decoder.ln", &m->dec.ln, nt);
}

static uint32_t fnv1a(const uint8_t *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}

/* Index of the expected tensor called s[0..n), or -1. */
static int lookup(const expect_set *s, const uint16_t *hash, const uint8_t *name, size_t n)
{
    for (uint32_t h = fnv1a(name, n) & (HASH_SIZE - 1);; h = (h + 1) & (HASH_SIZE - 1)) {
        if (!hash[h])
            return -1;
        int i = hash[h] - 1;
        if (strlen(s->t[i].name) == n && memcmp(s->t[i].name, name, n) == 0)
            return i;
    }
}

static void shape_str(int n_dims, const int64_t *ne, char *out, size_t cap)
{
    size_t k = 0;
    out[k++] = '[';
    for (int i = 0; i < n_dims && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%lld", i ? ", " : "", (long long)ne[i]);
    if (k + 2 <= cap) {
        out[k++] = ']';
        out[k] = '\0';
    } else {
        out[cap - 1] = '\0';
    }
}

/* ------------------------------------------------------------------ */
/* Parsing                                                              */

static int parse_front(reader *r, td_wmodel *m)
{
    int rc;
    if (r->size < 4)
        return bad(r, "not a ggml Whisper model file (%zu bytes)", r->size);
    uint32_t magic = le32(r->p);
    if (magic != TD_GGML_MAGIC) {
        if (memcmp(r->p, "GGUF", 4) == 0)
            return bad(r, "not a ggml Whisper model file (it is GGUF; whisper.cpp's legacy "
                          "ggml-*.bin files are supported)");
        return bad(r, "not a ggml Whisper model file (magic 0x%08x)", (unsigned)magic);
    }
    r->off = 4;

    if ((rc = need(r, 11 * 4, "hyper-parameters")) != TD_OK)
        return rc;
    td_whparams *hp = &m->hp;
    int32_t *f[] = {&hp->n_vocab,      &hp->n_audio_ctx,  &hp->n_audio_state, &hp->n_audio_head,
                    &hp->n_audio_layer, &hp->n_text_ctx,  &hp->n_text_state,  &hp->n_text_head,
                    &hp->n_text_layer,  &hp->n_mels,       &hp->ftype};
    for (size_t i = 0; i < N_ELEMS(f); i++)
        *f[i] = rd_i32(r);
    if ((rc = check_hparams(r, hp)) != TD_OK)
        return rc;
    m->wtype = hp->ftype % 1000 == 0 ? TD_WT_F32 : TD_WT_F16;
    set_specials(m);

    /* mel filterbank */
    if ((rc = need(r, 8, "mel filters")) != TD_OK)
        return rc;
    m->n_mel_filters = rd_i32(r);
    m->n_fft = rd_i32(r);
    if (m->n_mel_filters != hp->n_mels || m->n_fft != 201)
        return bad(r, "mel filters are %d x %d, expected %d x 201 (n_mels x n_fft)",
                   (int)m->n_mel_filters, (int)m->n_fft, (int)hp->n_mels);
    size_t filt_len = (size_t)hp->n_mels * 201 * 4;
    if ((rc = need(r, filt_len, "mel filters")) != TD_OK)
        return rc;
    for (size_t i = 0; i < filt_len; i += 4)
        if ((le32(r->p + r->off + i) & 0x7f800000u) == 0x7f800000u)
            return bad(r, "mel filter value %zu is not finite", i / 4);
    m->mel_filters = (const float *)(const void *)(r->p + r->off);
    r->off += filt_len;

    /* vocabulary */
    if ((rc = need(r, 4, "vocabulary")) != TD_OK)
        return rc;
    int32_t count = rd_i32(r);
    if (count < 0 || count > hp->n_vocab)
        return bad(r, "vocabulary count %d is out of range (0..%d)", (int)count,
                   (int)hp->n_vocab);
    /* Each token takes at least its 4-byte length: a count the file cannot
     * hold is refused before the tables are sized by it. */
    if ((size_t)count > left(r) / 4)
        return bad(r, "file ends in the vocabulary (%d tokens announced, %zu bytes left)",
                   (int)count, left(r));
    m->n_file_tokens = count;
    m->tok_bytes = calloc((size_t)hp->n_vocab, sizeof *m->tok_bytes);
    m->tok_len = calloc((size_t)hp->n_vocab, sizeof *m->tok_len);
    size_t n_gen = (size_t)(hp->n_vocab - count);
    m->tok_store = malloc(n_gen * GEN_NAME_MAX + 1);
    if (!m->tok_bytes || !m->tok_len || !m->tok_store)
        return td_error_set(r->err, TD_ENOMEM, "%s: out of memory for the vocabulary", r->name);
    for (int32_t i = 0; i < count; i++) {
        if ((rc = need(r, 4, "vocabulary")) != TD_OK)
            return rc;
        uint32_t len = (uint32_t)rd_i32(r);
        if (len > TD_WMAX_TOKEN_BYTES)
            return bad(r, "token %d is %u bytes long (at most %d)", (int)i, (unsigned)len,
                       TD_WMAX_TOKEN_BYTES);
        if ((rc = need(r, len, "vocabulary")) != TD_OK)
            return rc;
        m->tok_bytes[i] = r->p + r->off;
        m->tok_len[i] = len;
        if (m->sp.blank < 0 && len == 1 && r->p[r->off] == ' ')
            m->sp.blank = i;
        r->off += len;
    }
    char *w = m->tok_store;
    int32_t i = count;
    if (i < m->sp.eot) {
        w += gen_extra_run(i, m->sp.eot, w, m->tok_bytes, m->tok_len);
        i = m->sp.eot;
    }
    for (; i < hp->n_vocab; i++) {
        size_t n = gen_name(&m->sp, i, w);
        m->tok_bytes[i] = (const uint8_t *)w;
        m->tok_len[i] = (uint32_t)n;
        w += n;
    }
    return TD_OK;
}

/* One tensor record at r->off; it must be one of the expected ones. */
static int parse_tensor(reader *r, td_wmodel *m, expect_set *s, const uint16_t *hash,
                        size_t index)
{
    int rc;
    if ((rc = need(r, 12, "header of a tensor record")) != TD_OK)
        return rc;
    int32_t n_dims = rd_i32(r), name_len = rd_i32(r), ttype = rd_i32(r);
    if (n_dims < 1 || n_dims > 4)
        return bad(r, "tensor record %zu: n_dims %d is out of range (1..4)", index, (int)n_dims);
    if (name_len < 1 || name_len > 255)
        return bad(r, "tensor record %zu: name length %d is out of range (1..255)", index,
                   (int)name_len);
    if ((rc = need(r, (size_t)n_dims * 4 + (size_t)name_len, "header of a tensor record")) !=
        TD_OK)
        return rc;
    int64_t ne[4] = {1, 1, 1, 1};
    for (int i = 0; i < n_dims; i++)
        ne[i] = rd_i32(r);
    const uint8_t *name = r->p + r->off;
    r->off += (size_t)name_len;
    char shown[MAX_NAME + 8];
    show_name(name, (size_t)name_len, shown, sizeof shown);

    int idx = lookup(s, hash, name, (size_t)name_len);
    if (idx < 0)
        return bad(r, "tensor '%s': unknown tensor name for this model", shown);
    td_wtensor *t = &s->t[idx];
    const expect *e = &s->ex[idx];
    if (t->data)
        return bad(r, "tensor '%s' appears twice", shown);

    if (ttype != TD_WT_F32 && ttype != TD_WT_F16) {
        const char *tn = name_of(ggml_type_names, N_ELEMS(ggml_type_names), ttype);
        if (!tn)
            return bad(r, "tensor '%s': unknown tensor type %d", shown, (int)ttype);
        if (!ggml_type_is_plain(ttype))
            return bad(r,
                       "tensor '%s': quantized models (%s) are not supported; use an F16 or "
                       "F32 model",
                       shown, tn);
        return bad(r, "tensor '%s': type %s is not supported; use an F16 or F32 model", shown,
                   tn);
    }
    enum td_wtype want = e->f32_only ? TD_WT_F32 : m->wtype;
    if ((enum td_wtype)ttype != want)
        return bad(r, "tensor '%s' is %s, expected %s%s", shown, ggml_type_names[ttype],
                   ggml_type_names[want],
                   e->f32_only ? "" : " (the file's ftype)");

    int same = n_dims == e->n_dims;
    for (int i = 0; i < 4; i++)
        same = same && ne[i] == e->ne[i];
    if (!same) {
        char got[96], exp[96];
        shape_str(n_dims, ne, got, sizeof got);
        shape_str(e->n_dims, e->ne, exp, sizeof exp);
        return bad(r, "tensor '%s' has shape %s, expected %s (ne[0] first)", shown, got, exp);
    }

    /* The shape is one of ours now: each ne is at most 65536 and there are
     * at most 3, so the product cannot overflow 64 bits. */
    uint64_t nbytes = (uint64_t)(ttype == TD_WT_F32 ? 4 : 2);
    for (int i = 0; i < 4; i++)
        nbytes *= (uint64_t)ne[i];
    if (nbytes > left(r))
        return bad(r, "tensor '%s': %zu bytes left, needs %llu", shown, left(r),
                   (unsigned long long)nbytes);
    t->type = (enum td_wtype)ttype;
    t->n_dims = n_dims;
    memcpy(t->ne, ne, sizeof t->ne);
    t->data = r->p + r->off;
    t->nbytes = (size_t)nbytes;
    r->off += (size_t)nbytes;
    m->weight_bytes += (size_t)nbytes;
    return TD_OK;
}

static int parse_tensors(reader *r, td_wmodel *m)
{
    const td_whparams *hp = &m->hp;
    int rc = TD_OK;
    m->enc.layers = calloc((size_t)hp->n_audio_layer, sizeof *m->enc.layers);
    m->dec.layers = calloc((size_t)hp->n_text_layer, sizeof *m->dec.layers);
    expect_set s = {0};
    s.cap = 5 + 15 * (size_t)hp->n_audio_layer + 2 + 2 + 24 * (size_t)hp->n_text_layer + 2;
    s.names_cap = s.cap * MAX_NAME;
    /* The tensors and their names in one block: td_wmodel_close frees it. */
    m->tensors = calloc(1, s.cap * sizeof *m->tensors + s.names_cap);
    s.ex = calloc(s.cap, sizeof *s.ex);
    uint16_t *hash = calloc(HASH_SIZE, sizeof *hash);
    if (!m->enc.layers || !m->dec.layers || !m->tensors || !s.ex || !hash) {
        rc = td_error_set(r->err, TD_ENOMEM, "%s: out of memory for the tensor tables", r->name);
        goto out_free;
    }
    s.t = m->tensors;
    s.names = (char *)(m->tensors + s.cap);
    build_expected(m, &s);
    for (size_t i = 0; i < s.n; i++) {
        const char *nm = s.t[i].name;
        uint32_t h = fnv1a((const uint8_t *)nm, strlen(nm)) & (HASH_SIZE - 1);
        while (hash[h])
            h = (h + 1) & (HASH_SIZE - 1);
        hash[h] = (uint16_t)(i + 1);
    }
    m->n_tensors = s.n;

    size_t found = 0;
    while (r->off < r->size) {
        if (found == s.n) {
            rc = bad(r, "%zu bytes of trailing data after the last tensor", left(r));
            goto out_free;
        }
        if ((rc = parse_tensor(r, m, &s, hash, found)) != TD_OK)
            goto out_free;
        found++;
    }
    if (found == 0) {
        rc = bad(r, "no tensors after the vocabulary (a header only?)");
        goto out_free;
    }
    for (size_t i = 0; i < s.n; i++) {
        if (!s.t[i].data) {
            rc = bad(r, "tensor '%s' is missing", s.t[i].name);
            goto out_free;
        }
        *s.ex[i].slot = &s.t[i];
    }

out_free:
    free(hash);
    free(s.ex);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Public                                                               */

td_rc td_wmodel_open_memory(const void *data, size_t size, const char *name, td_wmodel **out,
                            td_error *err)
{
    *out = NULL;
    td_wmodel *m = calloc(1, sizeof *m);
    if (!m)
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", name);
    m->path = strdup(name);
    if (!m->path) {
        free(m);
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", name);
    }
    reader r = {data, size, 0, name, err};
    int rc = parse_front(&r, m);
    if (rc == TD_OK)
        rc = parse_tensors(&r, m);
    if (rc != TD_OK) {
        td_wmodel_close(m);
        return (td_rc)rc;
    }
    *out = m;
    return TD_OK;
}

td_rc td_wmodel_open(const char *path, td_wmodel **out, td_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return (td_rc)td_error_errno(err, errno == ENOENT ? TD_EINPUT : TD_EIO, errno,
                                     "%s: cannot open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return (td_rc)td_error_errno(err, TD_EIO, e, "%s: cannot stat", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return (td_rc)td_error_set(err, TD_EINPUT, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return td_wmodel_open_memory("", 0, path, out, err);
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd); /* the mapping keeps the file */
    if (map == MAP_FAILED)
        return (td_rc)td_error_errno(err, map_errno == ENOMEM ? TD_ENOMEM : TD_EIO, map_errno,
                                     "%s: cannot map", path);
    td_rc rc = td_wmodel_open_memory(map, size, path, out, err);
    if (rc != TD_OK) {
        munmap(map, size);
        return rc;
    }
    (*out)->map = map;
    (*out)->map_size = size;
    return TD_OK;
}

void td_wmodel_close(td_wmodel *m)
{
    if (!m)
        return;
    free(m->path);
    free(m->enc.layers);
    free(m->dec.layers);
    free(m->tok_bytes);
    free(m->tok_len);
    free(m->tok_store);
    free(m->tensors);
    if (m->map)
        munmap(m->map, m->map_size);
    free(m);
}

int td_wmodel_release_pages(const td_wmodel *m, const void *data, size_t nbytes)
{
    if (!m || !m->map || !data)
        return 0;
    uintptr_t base = (uintptr_t)m->map, lo = (uintptr_t)data, hi = lo + nbytes;
    if (lo < base || hi > base + m->map_size || hi < lo)
        return 0;
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t page = pg > 0 ? (uintptr_t)pg : 4096u;
    lo = (lo + page - 1) / page * page;
    hi = hi / page * page;
    if (hi <= lo)
        return 0;
    /* a private read-only file mapping: its pages are clean, so dropping
     * them loses nothing */
    return madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

const td_wtensor *td_wmodel_tensor(const td_wmodel *m, const char *name)
{
    if (!m || !name)
        return NULL;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].name && strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    return NULL;
}

const uint8_t *td_wmodel_token(const td_wmodel *m, int32_t id, size_t *len)
{
    if (!m || !m->tok_bytes || !m->tok_len || id < 0 || id >= m->hp.n_vocab)
        return NULL;
    if (len)
        *len = m->tok_len[id];
    return m->tok_bytes[id];
}
