/* ct2.c: CTranslate2 Whisper model -> ggml file (see ct2.h).
 *
 * model.bin, as CTranslate2's Python side writes it (all little-endian):
 *   u32 binary version; string spec name; u32 spec revision;
 *   u32 n_vars, then per variable: string name; u8 rank; u32 dims[rank];
 *       u8 dtype; u32 nbytes; the data;
 *   u32 n_aliases, then per alias: string alias; string target.
 * A string is a u16 length that counts a trailing NUL, then the bytes.
 * Version 4 introduced the dtype/nbytes pair this reads; 6 is current.
 */
#include "whisper/ct2.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "whisper/ggml_writer.h"
#include "whisper/backend/cpu/kernels.h"
#include "whisper/mkmodel.h"

#define N_FFT_BINS 201
/* The vocabulary the ggml file spells out: the 50257 byte-level tokens
 * (ids 0..50256), as whisper.cpp's files do; the rest are implied. */
#define GGML_FILE_TOKENS 50257

/* ------------------------------------------------------------------ */
/* model.bin                                                            */

typedef struct reader {
    const uint8_t *start, *p, *end;
    const char *name;
    td_error *err;
} reader;

static int need(reader *r, size_t n, const char *what)
{
    if ((size_t)(r->end - r->p) >= n)
        return TD_OK;
    return td_error_set(r->err, TD_EINPUT,
                        "%s: truncated: %s needs %zu bytes at offset %zu, %zu left", r->name,
                        what, n, (size_t)(r->p - r->start),
                        (size_t)(r->end - r->p));
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int rd_u8(reader *r, uint32_t *v, const char *what)
{
    int rc = need(r, 1, what);
    if (rc == TD_OK)
        *v = *r->p++;
    return rc;
}

static int rd_u32(reader *r, uint32_t *v, const char *what)
{
    int rc = need(r, 4, what);
    if (rc == TD_OK) {
        *v = le32(r->p);
        r->p += 4;
    }
    return rc;
}

/* A string stays in the mapping: the length counts its NUL, which must be
 * there, so the pointer is a C string. */
static int rd_str(reader *r, const char **s, const char *what)
{
    int rc = need(r, 2, what);
    if (rc != TD_OK)
        return rc;
    uint32_t n = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8;
    r->p += 2;
    if (n == 0 || n > TD_CT2_MAX_NAME)
        return td_error_set(r->err, TD_EINPUT, "%s: %s has a bad length %u", r->name, what,
                            (unsigned)n);
    if ((rc = need(r, n, what)) != TD_OK)
        return rc;
    if (r->p[n - 1] != 0 || memchr(r->p, 0, n - 1))
        return td_error_set(r->err, TD_EINPUT, "%s: %s is not a NUL-terminated string", r->name,
                            what);
    *s = (const char *)r->p;
    r->p += n;
    return TD_OK;
}

static size_t dtype_size(uint32_t t)
{
    switch (t) {
    case TD_CT2_F32: case TD_CT2_I32: return 4;
    case TD_CT2_F16: case TD_CT2_BF16: case TD_CT2_I16: return 2;
    case TD_CT2_I8: return 1;
    default: return 0;
    }
}

const char *td_ct2_dtype_name(enum td_ct2_dtype t)
{
    switch (t) {
    case TD_CT2_F32: return "float32";
    case TD_CT2_I8: return "int8";
    case TD_CT2_I16: return "int16";
    case TD_CT2_I32: return "int32";
    case TD_CT2_F16: return "float16";
    case TD_CT2_BF16: return "bfloat16";
    }
    return "unknown";
}

static td_ct2_var *find(td_ct2_model *m, const char *name)
{
    for (size_t i = 0; i < m->n_vars; i++)
        if (strcmp(m->vars[i].name, name) == 0)
            return &m->vars[i];
    return NULL;
}

/* "encoder/layer_3/rest" for coder "encoder", layer 3. */
static td_ct2_var *find_layer(td_ct2_model *m, const char *coder, int layer, const char *rest)
{
    char name[TD_CT2_MAX_NAME];
    snprintf(name, sizeof name, "%s/layer_%d/%s", coder, layer, rest);
    return find(m, name);
}

/* A scalar configuration variable as an integer; *present 0 when absent. */
static int scalar(td_ct2_model *m, const char *name, int64_t *v, int *present, td_error *err)
{
    td_ct2_var *x = find(m, name);
    *present = x != NULL;
    if (!x)
        return TD_OK;
    x->used = 1;
    if (x->n_elem != 1)
        return td_error_set(err, TD_EINPUT, "%s: '%s' should be a scalar", m->dir, name);
    switch (x->dtype) {
    case TD_CT2_I8: *v = (int8_t)x->data[0]; return TD_OK;
    case TD_CT2_I16: *v = (int16_t)(x->data[0] | x->data[1] << 8); return TD_OK;
    case TD_CT2_I32: *v = (int32_t)le32(x->data); return TD_OK;
    default:
        return td_error_set(err, TD_EINPUT, "%s: '%s' is %s, not an integer", m->dir, name,
                            td_ct2_dtype_name(x->dtype));
    }
}

static int parse_vars(td_ct2_model *m, reader *r)
{
    uint32_t n;
    int rc = rd_u32(r, &n, "the variable count");
    if (rc != TD_OK)
        return rc;
    /* Each variable takes at least 9 bytes, so the file bounds the count. */
    if (n == 0 || n > TD_CT2_MAX_VARS || (size_t)n * 9 > (size_t)(r->end - r->p))
        return td_error_set(r->err, TD_EINPUT, "%s: variable count %u is out of range",
                            r->name, (unsigned)n);
    m->vars = calloc(n, sizeof *m->vars);
    if (!m->vars)
        return td_error_set(r->err, TD_ENOMEM, "%s: out of memory", r->name);
    for (uint32_t i = 0; i < n; i++) {
        td_ct2_var *v = &m->vars[i];
        uint32_t rank, dt, nbytes;
        if ((rc = rd_str(r, &v->name, "a variable name")) != TD_OK ||
            (rc = rd_u8(r, &rank, v->name)) != TD_OK)
            return rc;
        if (rank > TD_CT2_MAX_RANK)
            return td_error_set(r->err, TD_EINPUT, "%s: variable '%s' has rank %u (at most %d)",
                                r->name, v->name, (unsigned)rank, TD_CT2_MAX_RANK);
        v->rank = (int)rank;
        uint64_t elems = 1;
        for (uint32_t d = 0; d < rank; d++) {
            uint32_t dim;
            if ((rc = rd_u32(r, &dim, v->name)) != TD_OK)
                return rc;
            v->dims[d] = dim;
            elems *= dim; /* <= 2^32 per dim, checked against the file below */
            if (elems > (uint64_t)SIZE_MAX / 8)
                return td_error_set(r->err, TD_EINPUT, "%s: variable '%s' is too large",
                                    r->name, v->name);
        }
        if ((rc = rd_u8(r, &dt, v->name)) != TD_OK || (rc = rd_u32(r, &nbytes, v->name)) != TD_OK)
            return rc;
        size_t es = dtype_size(dt);
        if (!es)
            return td_error_set(r->err, TD_EINPUT, "%s: variable '%s' has unknown type %u",
                                r->name, v->name, (unsigned)dt);
        if ((uint64_t)nbytes != elems * es)
            return td_error_set(r->err, TD_EINPUT,
                                "%s: variable '%s' says %u bytes, its shape needs %llu",
                                r->name, v->name, (unsigned)nbytes,
                                (unsigned long long)(elems * es));
        if ((rc = need(r, nbytes, v->name)) != TD_OK)
            return rc;
        v->dtype = (enum td_ct2_dtype)dt;
        v->n_elem = (int64_t)elems;
        v->nbytes = nbytes;
        v->data = r->p;
        r->p += nbytes;
        m->n_vars = i + 1;
    }
    return TD_OK;
}

/* Aliases (CTranslate2 ties the output projection to the embedding this
 * way). Only that one is expected; any alias must name a variable. */
static int parse_aliases(td_ct2_model *m, reader *r)
{
    uint32_t n;
    int rc = rd_u32(r, &n, "the alias count");
    if (rc != TD_OK)
        return rc;
    if (n > m->n_vars)
        return td_error_set(r->err, TD_EINPUT, "%s: alias count %u is out of range", r->name,
                            (unsigned)n);
    for (uint32_t i = 0; i < n; i++) {
        const char *alias, *target;
        if ((rc = rd_str(r, &alias, "an alias")) != TD_OK ||
            (rc = rd_str(r, &target, "an alias target")) != TD_OK)
            return rc;
        if (!find(m, target))
            return td_error_set(r->err, TD_EINPUT, "%s: alias '%s' names no variable ('%s')",
                                r->name, alias, target);
        if (strcmp(alias, "decoder/projection/weight") == 0 &&
            strcmp(target, "decoder/embeddings/weight") != 0)
            return td_error_set(r->err, TD_EINPUT,
                                "%s: the output projection is not tied to the token embedding; "
                                "Whisper's is",
                                r->name);
    }
    if (r->p != r->end)
        return td_error_set(r->err, TD_EINPUT, "%s: %zu unexpected bytes after the aliases",
                            r->name, (size_t)(r->end - r->p));
    return TD_OK;
}

/* dims of v must be exactly {a, b, c} (rank n). */
static int shape(td_ct2_model *m, const td_ct2_var *v, const char *what, int n, int64_t a,
                 int64_t b, int64_t c, td_error *err)
{
    const int64_t want[3] = {a, b, c};
    int ok = v && v->rank == n;
    for (int i = 0; ok && i < n; i++)
        ok = v->dims[i] == want[i];
    if (ok)
        return TD_OK;
    if (!v)
        return td_error_set(err, TD_EINPUT, "%s: model.bin has no '%s'", m->dir, what);
    char got[96] = "", exp[96] = "";
    size_t gl = 0, el = 0;
    for (int i = 0; i < v->rank; i++)
        gl += (size_t)snprintf(got + gl, sizeof got - gl, "%s%lld", i ? " x " : "",
                               (long long)v->dims[i]);
    for (int i = 0; i < n; i++)
        el += (size_t)snprintf(exp + el, sizeof exp - el, "%s%lld", i ? " x " : "",
                               (long long)want[i]);
    return td_error_set(err, TD_EINPUT, "%s: '%s' is [%s], expected [%s]", m->dir, v->name, got,
                        exp);
}

/* The hyper-parameters, from the shapes and the scalar variables. */
static int derive_hparams(td_ct2_model *m, td_error *err)
{
    td_whparams *hp = &m->hp;
    const td_ct2_var *emb = find(m, "decoder/embeddings/weight");
    const td_ct2_var *c1 = find(m, "encoder/conv1/weight");
    const td_ct2_var *ep = find(m, "encoder/position_encodings/encodings");
    const td_ct2_var *dp = find(m, "decoder/position_encodings/encodings");
    if (!emb || !c1 || !ep || !dp)
        return td_error_set(err, TD_EINPUT,
                            "%s: model.bin lacks '%s': not a CTranslate2 Whisper model", m->dir,
                            !emb ? "decoder/embeddings/weight"
                            : !c1 ? "encoder/conv1/weight"
                            : !ep ? "encoder/position_encodings/encodings"
                                  : "decoder/position_encodings/encodings");
    if (emb->rank != 2 || c1->rank != 3 || ep->rank != 2 || dp->rank != 2)
        return td_error_set(err, TD_EINPUT, "%s: embedding or conv1 shapes are not Whisper's",
                            m->dir);
    int64_t v[6] = {emb->dims[0], emb->dims[1], c1->dims[0], c1->dims[1], ep->dims[0],
                    dp->dims[0]};
    for (int i = 0; i < 6; i++)
        if (v[i] < 1 || v[i] > TD_WMAX_VOCAB)
            return td_error_set(err, TD_EINPUT, "%s: a dimension (%lld) is out of range", m->dir,
                                (long long)v[i]);
    hp->n_vocab = (int32_t)v[0];
    hp->n_text_state = (int32_t)v[1];
    hp->n_audio_state = (int32_t)v[2];
    hp->n_mels = (int32_t)v[3];
    hp->n_audio_ctx = (int32_t)v[4];
    hp->n_text_ctx = (int32_t)v[5];
    hp->ftype = 1;

    int64_t heads;
    int present, rc;
    if ((rc = scalar(m, "encoder/num_heads", &heads, &present, err)) != TD_OK)
        return rc;
    if (!present)
        return td_error_set(err, TD_EINPUT, "%s: model.bin has no 'encoder/num_heads'", m->dir);
    hp->n_audio_head = (int32_t)(heads > 0 && heads <= TD_WMAX_HEADS ? heads : 0);
    if ((rc = scalar(m, "decoder/num_heads", &heads, &present, err)) != TD_OK)
        return rc;
    if (!present)
        return td_error_set(err, TD_EINPUT, "%s: model.bin has no 'decoder/num_heads'", m->dir);
    hp->n_text_head = (int32_t)(heads > 0 && heads <= TD_WMAX_HEADS ? heads : 0);

    int n = 0;
    while (n <= TD_WMAX_LAYERS && find_layer(m, "encoder", n, "self_attention/linear_0/weight"))
        n++;
    hp->n_audio_layer = n;
    n = 0;
    while (n <= TD_WMAX_LAYERS && find_layer(m, "decoder", n, "self_attention/linear_0/weight"))
        n++;
    hp->n_text_layer = n;
    if ((rc = td_whparams_check(hp, err)) != TD_OK) {
        td_error_prefix(err, "%s", m->dir);
        return rc;
    }

    /* The structure flags CTranslate2 records: anything but Whisper's
     * (exact GELU = 3, pre-norm, no ALiBi, unscaled embeddings, positions
     * from zero off) would be converted into a model that computes wrong. */
    static const struct {
        const char *name;
        int64_t want;
    } flags[] = {
        {"decoder/activation", 3},   {"encoder/activation", 3},
        {"decoder/pre_norm", 1},     {"encoder/pre_norm", 1},
        {"decoder/alibi", 0},        {"decoder/scale_embeddings", 0},
        {"encoder/scale_embeddings", 0},
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        int64_t val;
        if ((rc = scalar(m, flags[i].name, &val, &present, err)) != TD_OK)
            return rc;
        if (present && val != flags[i].want)
            return td_error_set(err, TD_EINPUT,
                                "%s: '%s' is %lld; Whisper's is %lld (not a Whisper model "
                                "this importer can convert)",
                                m->dir, flags[i].name, (long long)val, (long long)flags[i].want);
    }
    /* Settings that do not change what is computed here. */
    static const char *const ignored[] = {
        "decoder/alibi_use_positive_positions", "decoder/scale_alibi",
        "decoder/start_from_zero_embedding",    "decoder/alignment_heads",
        "decoder/alignment_layer",
    };
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        td_ct2_var *x = find(m, ignored[i]);
        if (x)
            x->used = 1;
    }
    const td_ct2_var *first = find_layer(m, "encoder", 0, "ffn/linear_0/weight");
    m->wdtype = first ? first->dtype : c1->dtype;
    return TD_OK;
}

td_rc td_ct2_parse(const void *data, size_t size, const char *name, td_ct2_model **out,
                   td_error *err)
{
    *out = NULL;
    td_ct2_model *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(name))) {
        free(m);
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", name);
    }
    reader r = {data, data, (const uint8_t *)data + size, name, err};
    const char *spec;
    int rc;
    if ((rc = rd_u32(&r, &m->version, "the format version")) != TD_OK)
        goto fail;
    if (m->version < 4 || m->version > 6) {
        rc = td_error_set(err, TD_EINPUT,
                          "%s: CTranslate2 binary format version %u is not supported (4 to 6 "
                          "are; is this a CTranslate2 model.bin?)",
                          name, (unsigned)m->version);
        goto fail;
    }
    if ((rc = rd_str(&r, &spec, "the spec name")) != TD_OK ||
        (rc = rd_u32(&r, &m->revision, "the spec revision")) != TD_OK)
        goto fail;
    if (strcmp(spec, "WhisperSpec") != 0) {
        rc = td_error_set(err, TD_EINPUT, "%s: a CTranslate2 '%s' model, not a Whisper model",
                          name, spec);
        goto fail;
    }
    if ((rc = parse_vars(m, &r)) != TD_OK || (rc = parse_aliases(m, &r)) != TD_OK ||
        (rc = derive_hparams(m, err)) != TD_OK)
        goto fail;
    *out = m;
    return TD_OK;
fail:
    td_ct2_close(m);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Vocabulary                                                           */

/* GPT-2's byte-level alphabet: byte b is spelled as code point b when it
 * is printable (33..126, 161..172, 174..255), else as 256 + its rank among
 * the others. byte_of[cp] inverts that, -1 for code points outside it. */
static void byte_alphabet(int16_t byte_of[512])
{
    for (int i = 0; i < 512; i++)
        byte_of[i] = -1;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        byte_of[printable ? b : next++] = (int16_t)b;
    }
}

/* Decode one UTF-8 token into raw bytes (at most its own length).
 * -1 for invalid UTF-8 or a character outside the alphabet. */
static long token_bytes(const int16_t byte_of[512], const char *s, size_t n, uint8_t *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned c = (unsigned char)s[i];
        uint32_t cp;
        if (c < 0x80) {
            cp = c;
            i += 1;
        } else if ((c & 0xe0) == 0xc0 && i + 1 < n && ((unsigned char)s[i + 1] & 0xc0) == 0x80) {
            cp = (c & 0x1fu) << 6 | ((unsigned char)s[i + 1] & 0x3fu);
            i += 2;
        } else {
            return -1; /* the alphabet ends at U+0143: two bytes at most */
        }
        if (cp >= 512 || byte_of[cp] < 0)
            return -1;
        out[o++] = (uint8_t)byte_of[cp];
    }
    return (long)o;
}

static int add_token(td_ct2_model *m, const int16_t byte_of[512], const char *s, size_t n,
                     const char *path, td_error *err)
{
    if (m->n_tok >= m->hp.n_vocab)
        return td_error_set(err, TD_EINPUT, "%s: more tokens than the model's %d", path,
                            (int)m->hp.n_vocab);
    if (n > 4 * TD_WMAX_TOKEN_BYTES)
        return td_error_set(err, TD_EINPUT, "%s: token %d is too long (%zu bytes)", path,
                            (int)m->n_tok, n);
    uint8_t *b = malloc(n ? n : 1);
    if (!b)
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
    long len = token_bytes(byte_of, s, n, b);
    /* Special tokens ("<|en|>") are spelled in ASCII, which the alphabet
     * maps to itself, so they decode too. */
    if (len < 0 || len > TD_WMAX_TOKEN_BYTES) {
        free(b);
        return td_error_set(err, TD_EINPUT,
                            "%s: token %d is not in GPT-2's byte-level alphabet", path,
                            (int)m->n_tok);
    }
    m->tok[m->n_tok] = b;
    m->tok_len[m->n_tok] = (uint32_t)len;
    m->n_tok++;
    return TD_OK;
}

static int read_small_file(const char *path, char **data, size_t *len, td_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return td_error_errno(err, errno == ENOENT ? TD_EINPUT : TD_EIO, errno, "%s", path);
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return td_error_set(err, TD_EINPUT, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > TD_CT2_MAX_VOCAB_FILE) {
        fclose(f);
        return td_error_set(err, TD_EINPUT, "%s: %lld bytes is too large for a vocabulary",
                            path, (long long)st.st_size);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        fclose(f);
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n != (size_t)st.st_size) {
        free(buf);
        return td_error_set(err, TD_EIO, "%s: read failed", path);
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return TD_OK;
}

static int read_vocab(td_ct2_model *m, td_error *err)
{
    int16_t byte_of[512];
    byte_alphabet(byte_of);
    m->tok = calloc((size_t)m->hp.n_vocab, sizeof *m->tok);
    m->tok_len = calloc((size_t)m->hp.n_vocab, sizeof *m->tok_len);
    if (!m->tok || !m->tok_len)
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", m->dir);

    char path[PATH_MAX];
    char *text = NULL;
    size_t len = 0;
    int rc;
    snprintf(path, sizeof path, "%s/vocabulary.json", m->dir);
    if (access(path, F_OK) == 0) {
        if ((rc = read_small_file(path, &text, &len, err)) != TD_OK)
            return rc;
        json_error_t je;
        json_t *arr = json_loadb(text, len, 0, &je);
        free(text);
        if (!arr || !json_is_array(arr)) {
            rc = td_error_set(err, TD_EINPUT, "%s: not a JSON array of tokens%s%s", path,
                              arr ? "" : ": ", arr ? "" : je.text);
            json_decref(arr);
            return rc;
        }
        for (size_t i = 0; i < json_array_size(arr); i++) {
            json_t *t = json_array_get(arr, i);
            if (!json_is_string(t)) {
                json_decref(arr);
                return td_error_set(err, TD_EINPUT, "%s: entry %zu is not a string", path, i);
            }
            if ((rc = add_token(m, byte_of, json_string_value(t), json_string_length(t), path,
                                err)) != TD_OK) {
                json_decref(arr);
                return rc;
            }
        }
        json_decref(arr);
    } else {
        snprintf(path, sizeof path, "%s/vocabulary.txt", m->dir);
        if (access(path, F_OK) != 0)
            return td_error_set(err, TD_EINPUT, "%s: no vocabulary.json or vocabulary.txt",
                                m->dir);
        if ((rc = read_small_file(path, &text, &len, err)) != TD_OK)
            return rc;
        /* One token a line; the last line may lack its newline. A token
         * cannot hold a newline: the alphabet spells byte 10 as U+010A. */
        size_t start = 0;
        for (size_t i = 0; i <= len && rc == TD_OK; i++) {
            if (i < len && text[i] != '\n')
                continue;
            if (i == len && start == len)
                break;
            rc = add_token(m, byte_of, text + start, i - start, path, err);
            start = i + 1;
        }
        free(text);
        if (rc != TD_OK)
            return rc;
    }
    if (m->n_tok != m->hp.n_vocab)
        return td_error_set(err, TD_EINPUT, "%s: %d tokens, the model has %d", path,
                            (int)m->n_tok, (int)m->hp.n_vocab);
    return TD_OK;
}

td_rc td_ct2_open(const char *dir, td_ct2_model **out, td_error *err)
{
    *out = NULL;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/model.bin", dir) >= (int)sizeof path)
        return td_error_set(err, TD_EINVAL, "%s: path too long", dir);
    struct stat st;
    if (stat(dir, &st) != 0)
        return td_error_errno(err, TD_EINPUT, errno, "%s", dir);
    if (!S_ISDIR(st.st_mode))
        return td_error_set(err, TD_EINPUT,
                            "%s: not a folder (a CTranslate2 model is a folder with model.bin)",
                            dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return td_error_set(err, TD_EINPUT,
                            "%s: no model.bin: not a CTranslate2 model folder (model.bin, "
                            "vocabulary.json or .txt, config.json)",
                            dir);
    if (fd < 0)
        return td_error_errno(err, TD_EIO, errno, "%s", path);
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
        close(fd);
        return td_error_set(err, TD_EINPUT, "%s: not a regular, non-empty file", path);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return td_error_errno(err, TD_EIO, map_errno, "%s: mmap", path);
    td_ct2_model *m;
    int rc = td_ct2_parse(map, (size_t)st.st_size, path, &m, err);
    if (rc != TD_OK) {
        munmap(map, (size_t)st.st_size);
        return rc;
    }
    m->map = map;
    m->map_size = (size_t)st.st_size;
    free(m->dir);
    if (!(m->dir = strdup(dir))) {
        td_ct2_close(m);
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", dir);
    }
    if ((rc = read_vocab(m, err)) != TD_OK) {
        td_ct2_close(m);
        return rc;
    }
    *out = m;
    return TD_OK;
}

void td_ct2_close(td_ct2_model *m)
{
    if (!m)
        return;
    if (m->tok)
        for (int32_t i = 0; i < m->n_tok; i++)
            free(m->tok[i]);
    free(m->tok);
    free(m->tok_len);
    free(m->vars);
    if (m->map)
        munmap(m->map, m->map_size);
    free(m->dir);
    free(m);
}

const char *td_ct2_size_name(const td_ct2_model *m)
{
    static const char *const names[] = {
        "tiny",   "tiny.en",   "base",     "base.en",  "small",          "small.en",
        "medium", "medium.en", "large-v2", "large-v3", "large-v3-turbo",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        td_whparams hp;
        if (td_wmk_dims(names[i], &hp, NULL) != TD_OK)
            continue;
        hp.ftype = m->hp.ftype;
        if (memcmp(&hp, &m->hp, sizeof hp) == 0)
            return names[i];
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Conversion                                                           */

/* Where a ggml tensor's elements come from: rows [row0, row0 + rows) of a
 * CTranslate2 variable whose inner dims hold `cols` elements a row. */
typedef struct source {
    td_ct2_var *v;
    td_ct2_var *scale;  /* int8 weights: [rows] float32, w = q / scale */
    int64_t row0, rows, cols;
} source;

static float element(const source *s, int64_t row, int64_t col)
{
    const uint8_t *p = s->v->data;
    size_t i = (size_t)(row * s->cols + col);
    switch (s->v->dtype) {
    case TD_CT2_F32: {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    case TD_CT2_F16:
        return td_wk_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    case TD_CT2_BF16: {
        uint32_t u = (uint32_t)(p[2 * i] | p[2 * i + 1] << 8) << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    case TD_CT2_I8: {
        float sc;
        memcpy(&sc, s->scale->data + 4 * (size_t)row, 4);
        return (float)(int8_t)p[i] / sc;
    }
    default:
        return 0.0f; /* refused before: see tensor() */
    }
}

#define CHUNK_ELEMS 16384

/* Write one ggml tensor from s. ne in ggml order; their product must be
 * rows * cols. F16 from F16 is copied bit for bit. */
static int tensor(td_ct2_model *m, td_ggml_writer *w, const char *name, int n_dims,
                  const int64_t *ne, enum td_wtype type, const source *s, td_error *err)
{
    td_ct2_var *v = s->v;
    if (v->dtype != TD_CT2_F32 && v->dtype != TD_CT2_F16 && v->dtype != TD_CT2_BF16 &&
        v->dtype != TD_CT2_I8)
        return td_error_set(err, TD_EINPUT, "%s: '%s' is %s, which this importer does not read",
                            m->dir, v->name, td_ct2_dtype_name(v->dtype));
    if (v->dtype == TD_CT2_I8) {
        if (!s->scale || s->scale->dtype != TD_CT2_F32 || s->scale->n_elem != v->dims[0])
            return td_error_set(err, TD_EINPUT, "%s: int8 '%s' has no valid weight_scale",
                                m->dir, v->name);
        s->scale->used = 1;
    }
    v->used = 1;
    td_ggml_write_tensor_head(w, name, n_dims, ne, type);
    uint8_t buf[CHUNK_ELEMS * 4];
    size_t fill = 0;
    const int copy16 = type == TD_WT_F16 && v->dtype == TD_CT2_F16;
    for (int64_t r = s->row0; r < s->row0 + s->rows; r++) {
        for (int64_t c = 0; c < s->cols; c++) {
            if (copy16) {
                size_t i = (size_t)(r * s->cols + c);
                buf[fill++] = v->data[2 * i];
                buf[fill++] = v->data[2 * i + 1];
            } else {
                float f = element(s, r, c);
                if (type == TD_WT_F16) {
                    uint16_t h = td_wk_f32_to_f16(f);
                    buf[fill++] = (uint8_t)h;
                    buf[fill++] = (uint8_t)(h >> 8);
                } else {
                    uint32_t u;
                    memcpy(&u, &f, 4);
                    for (int k = 0; k < 4; k++)
                        buf[fill++] = (uint8_t)(u >> (8 * k));
                }
            }
            if (fill == sizeof buf) {
                td_ggml_write_bytes(w, buf, fill);
                fill = 0;
            }
        }
    }
    td_ggml_write_bytes(w, buf, fill);
    return TD_OK;
}

/* The variable prefix/leaf with the expected shape (rank 1 or 2). */
static int var2(td_ct2_model *m, const char *prefix, const char *leaf, int rank, int64_t d0,
                int64_t d1, td_ct2_var **out, td_error *err)
{
    char name[TD_CT2_MAX_NAME];
    snprintf(name, sizeof name, "%s/%s", prefix, leaf);
    td_ct2_var *v = find(m, name);
    int rc = shape(m, v, name, rank, d0, d1, 0, err);
    *out = v;
    return rc;
}

static int vector(td_ct2_model *m, td_ggml_writer *w, const char *gname, const char *prefix,
                  const char *leaf, int64_t n, int64_t row0, int64_t total, td_error *err)
{
    td_ct2_var *v;
    int rc = var2(m, prefix, leaf, 1, total, 0, &v, err);
    if (rc != TD_OK)
        return rc;
    source s = {v, NULL, row0, n, 1};
    int64_t ne[1] = {n};
    return tensor(m, w, gname, 1, ne, TD_WT_F32, &s, err);
}

static int norm(td_ct2_model *m, td_ggml_writer *w, const char *gprefix, const char *prefix,
                int64_t n, td_error *err)
{
    char g[160];
    int rc;
    snprintf(g, sizeof g, "%s.weight", gprefix);
    if ((rc = vector(m, w, g, prefix, "gamma", n, 0, n, err)) != TD_OK)
        return rc;
    snprintf(g, sizeof g, "%s.bias", gprefix);
    return vector(m, w, g, prefix, "beta", n, 0, n, err);
}

/* The rows [part * n_out, (part + 1) * n_out) of a (fused) linear prefix,
 * whose weight is [parts * n_out][n_in], as ggml linear gprefix. bias: 1
 * write it, 0 check that it is zero (Whisper's key has none) and drop it. */
static int linear(td_ct2_model *m, td_ggml_writer *w, const char *gprefix, const char *prefix,
                  int64_t n_in, int64_t n_out, int part, int parts, int bias,
                  enum td_wtype wt, td_error *err)
{
    td_ct2_var *wv, *bv;
    int rc;
    if ((rc = var2(m, prefix, "weight", 2, parts * n_out, n_in, &wv, err)) != TD_OK ||
        (rc = var2(m, prefix, "bias", 1, parts * n_out, 0, &bv, err)) != TD_OK)
        return rc;
    char g[160], sname[TD_CT2_MAX_NAME];
    snprintf(sname, sizeof sname, "%s/weight_scale", prefix);
    source s = {wv, find(m, sname), (int64_t)part * n_out, n_out, n_in};
    int64_t ne[2] = {n_in, n_out};
    snprintf(g, sizeof g, "%s.weight", gprefix);
    if ((rc = tensor(m, w, g, 2, ne, wt, &s, err)) != TD_OK)
        return rc;
    if (bias) {
        snprintf(g, sizeof g, "%s.bias", gprefix);
        source b = {bv, NULL, (int64_t)part * n_out, n_out, 1};
        int64_t bne[1] = {n_out};
        return tensor(m, w, g, 1, bne, TD_WT_F32, &b, err);
    }
    source b = {bv, NULL, 0, parts * n_out, 1};
    if (bv->dtype != TD_CT2_F32 && bv->dtype != TD_CT2_F16 && bv->dtype != TD_CT2_BF16)
        return td_error_set(err, TD_EINPUT, "%s: '%s' is %s", m->dir, bv->name,
                            td_ct2_dtype_name(bv->dtype));
    for (int64_t i = (int64_t)part * n_out; i < (int64_t)(part + 1) * n_out; i++)
        if (element(&b, i, 0) != 0.0f)
            return td_error_set(err, TD_EINPUT,
                                "%s: '%s' has a key bias (element %lld is not zero); Whisper's "
                                "key projection has none",
                                m->dir, bv->name, (long long)i);
    bv->used = 1;
    return TD_OK;
}

static int block(td_ct2_model *m, td_ggml_writer *w, int dec, int i, enum td_wtype wt,
                 td_error *err)
{
    const td_whparams *hp = &m->hp;
    int64_t n = dec ? hp->n_text_state : hp->n_audio_state;
    char g[128], c[128], gp[160], cp[160];
    snprintf(g, sizeof g, "%s.blocks.%d", dec ? "decoder" : "encoder", i);
    snprintf(c, sizeof c, "%s/layer_%d", dec ? "decoder" : "encoder", i);
    int rc;
#define TRY(x)                                                                                 \
    do {                                                                                       \
        if ((rc = (x)) != TD_OK)                                                               \
            return rc;                                                                         \
    } while (0)
    snprintf(gp, sizeof gp, "%s.attn_ln", g);
    snprintf(cp, sizeof cp, "%s/self_attention/layer_norm", c);
    TRY(norm(m, w, gp, cp, n, err));
    snprintf(cp, sizeof cp, "%s/self_attention/linear_0", c);
    static const char *const qkv[3] = {"query", "key", "value"};
    for (int k = 0; k < 3; k++) {
        snprintf(gp, sizeof gp, "%s.attn.%s", g, qkv[k]);
        TRY(linear(m, w, gp, cp, n, n, k, 3, k != 1, wt, err));
    }
    snprintf(gp, sizeof gp, "%s.attn.out", g);
    snprintf(cp, sizeof cp, "%s/self_attention/linear_1", c);
    TRY(linear(m, w, gp, cp, n, n, 0, 1, 1, wt, err));
    if (dec) {
        int64_t na = hp->n_audio_state;
        snprintf(gp, sizeof gp, "%s.cross_attn_ln", g);
        snprintf(cp, sizeof cp, "%s/attention/layer_norm", c);
        TRY(norm(m, w, gp, cp, n, err));
        snprintf(gp, sizeof gp, "%s.cross_attn.query", g);
        snprintf(cp, sizeof cp, "%s/attention/linear_0", c);
        TRY(linear(m, w, gp, cp, n, n, 0, 1, 1, wt, err));
        snprintf(cp, sizeof cp, "%s/attention/linear_1", c);
        snprintf(gp, sizeof gp, "%s.cross_attn.key", g);
        TRY(linear(m, w, gp, cp, na, n, 0, 2, 0, wt, err));
        snprintf(gp, sizeof gp, "%s.cross_attn.value", g);
        TRY(linear(m, w, gp, cp, na, n, 1, 2, 1, wt, err));
        snprintf(gp, sizeof gp, "%s.cross_attn.out", g);
        snprintf(cp, sizeof cp, "%s/attention/linear_2", c);
        TRY(linear(m, w, gp, cp, n, n, 0, 1, 1, wt, err));
    }
    snprintf(gp, sizeof gp, "%s.mlp_ln", g);
    snprintf(cp, sizeof cp, "%s/ffn/layer_norm", c);
    TRY(norm(m, w, gp, cp, n, err));
    snprintf(gp, sizeof gp, "%s.mlp.0", g);
    snprintf(cp, sizeof cp, "%s/ffn/linear_0", c);
    TRY(linear(m, w, gp, cp, n, 4 * n, 0, 1, 1, wt, err));
    snprintf(gp, sizeof gp, "%s.mlp.2", g);
    snprintf(cp, sizeof cp, "%s/ffn/linear_1", c);
    TRY(linear(m, w, gp, cp, 4 * n, n, 0, 1, 1, wt, err));
    return TD_OK;
}

static int front(td_ct2_model *m, td_ggml_writer *w, td_error *err)
{
    const td_whparams *hp = &m->hp;
    float *filt = malloc((size_t)hp->n_mels * N_FFT_BINS * sizeof *filt);
    if (!filt)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    td_wmk_mel_filters(hp->n_mels, filt);
    td_ggml_write_i32(w, hp->n_mels);
    td_ggml_write_i32(w, N_FFT_BINS);
    for (size_t i = 0; i < (size_t)hp->n_mels * N_FFT_BINS; i++)
        td_ggml_write_f32(w, filt[i]);
    free(filt);
    int32_t count = m->n_tok < GGML_FILE_TOKENS ? m->n_tok : GGML_FILE_TOKENS;
    td_ggml_write_i32(w, count);
    for (int32_t i = 0; i < count; i++) {
        td_ggml_write_i32(w, (int32_t)m->tok_len[i]);
        td_ggml_write_bytes(w, m->tok[i], m->tok_len[i]);
    }
    return TD_OK;
}

static int tensors(td_ct2_model *m, td_ggml_writer *w, enum td_wtype wt, td_error *err)
{
    const td_whparams *hp = &m->hp;
    int64_t na = hp->n_audio_state, nt = hp->n_text_state;
    int rc;
    td_ct2_var *v;

    TRY(shape(m, v = find(m, "encoder/position_encodings/encodings"),
              "encoder/position_encodings/encodings", 2, hp->n_audio_ctx, na, 0, err));
    source pe = {v, NULL, 0, hp->n_audio_ctx, na};
    int64_t pe_ne[2] = {na, hp->n_audio_ctx};
    TRY(tensor(m, w, "encoder.positional_embedding", 2, pe_ne, TD_WT_F32, &pe, err));
    static const char *const convs[2] = {"conv1", "conv2"};
    for (int k = 0; k < 2; k++) {
        char cname[64], gname[64];
        int64_t n_in = k == 0 ? hp->n_mels : na;
        snprintf(cname, sizeof cname, "encoder/%s/weight", convs[k]);
        TRY(shape(m, v = find(m, cname), cname, 3, na, n_in, 3, err));
        if (v->dtype == TD_CT2_I8)
            return td_error_set(err, TD_EINPUT, "%s: int8 convolution weights are not supported",
                                m->dir);
        source cw = {v, NULL, 0, na, n_in * 3};
        int64_t cw_ne[3] = {3, n_in, na};
        snprintf(gname, sizeof gname, "encoder.%s.weight", convs[k]);
        TRY(tensor(m, w, gname, 3, cw_ne, wt, &cw, err));
        snprintf(cname, sizeof cname, "encoder/%s", convs[k]);
        td_ct2_var *b;
        TRY(var2(m, cname, "bias", 1, na, 0, &b, err));
        source cb = {b, NULL, 0, na, 1};
        int64_t cb_ne[2] = {1, na}; /* stored [n,1], as whisper.cpp's files do */
        snprintf(gname, sizeof gname, "encoder.%s.bias", convs[k]);
        TRY(tensor(m, w, gname, 2, cb_ne, TD_WT_F32, &cb, err));
    }
    for (int i = 0; i < hp->n_audio_layer; i++)
        TRY(block(m, w, 0, i, wt, err));
    TRY(norm(m, w, "encoder.ln_post", "encoder/layer_norm", na, err));

    TRY(shape(m, v = find(m, "decoder/position_encodings/encodings"),
              "decoder/position_encodings/encodings", 2, hp->n_text_ctx, nt, 0, err));
    source dpe = {v, NULL, 0, hp->n_text_ctx, nt};
    int64_t dpe_ne[2] = {nt, hp->n_text_ctx};
    TRY(tensor(m, w, "decoder.positional_embedding", 2, dpe_ne, TD_WT_F32, &dpe, err));
    v = find(m, "decoder/embeddings/weight");
    source te = {v, find(m, "decoder/embeddings/weight_scale"), 0, hp->n_vocab, nt};
    int64_t te_ne[2] = {nt, hp->n_vocab};
    TRY(tensor(m, w, "decoder.token_embedding.weight", 2, te_ne, wt, &te, err));
    for (int i = 0; i < hp->n_text_layer; i++)
        TRY(block(m, w, 1, i, wt, err));
    TRY(norm(m, w, "decoder.ln", "decoder/layer_norm", nt, err));
#undef TRY
    return TD_OK;
}

td_rc td_ct2_write_ggml(td_ct2_model *m, const char *out_path, enum td_wtype wtype,
                        td_error *err)
{
    if (wtype != TD_WT_F16 && wtype != TD_WT_F32)
        return td_error_set(err, TD_EINVAL, "output type must be F16 or F32");
    td_whparams hp = m->hp;
    hp.ftype = wtype == TD_WT_F16 ? 1 : 0;
    td_ggml_writer w;
    int rc = td_ggml_writer_open(&w, out_path, err);
    if (rc != TD_OK)
        return rc;
    td_ggml_write_hparams(&w, &hp);
    if ((rc = front(m, &w, err)) != TD_OK || (rc = tensors(m, &w, wtype, err)) != TD_OK)
        goto fail;
    /* Every array in the file must have gone somewhere: a variable this
     * does not know means a model it does not understand. */
    for (size_t i = 0; i < m->n_vars; i++)
        if (!m->vars[i].used && m->vars[i].rank > 0) {
            rc = td_error_set(err, TD_EINPUT,
                              "%s: unexpected variable '%s': not a Whisper model this importer "
                              "knows",
                              m->dir, m->vars[i].name);
            goto fail;
        }
    return td_ggml_writer_commit(&w, err);
fail:
    td_ggml_writer_abort(&w);
    return rc;
}
