/*
 * ops.c: recording the Vulkan backend's operations (ops.h): push-constant
 * blocks laid out as the shaders declare them (pointers first, then
 * 32-bit fields) and the grid of each dispatch.
 */
#include "whisper/backend/vulkan/ops.h"

#include <math.h>
#include <string.h>

#include "whisper/backend/vulkan/shaders.h"

struct td_vko {
    td_vk *vk;
    td_vk_pipe *matmul[2], *matvec[2]; /* [w_f16] */
    td_vk_pipe *layernorm, *enc_attn, *dec_attn, *dec_merge, *embed, *kv_put;
    int matvec_rows;
    int d_audio, d_text;
};

typedef struct lin_push {
    uint64_t a, w, bias, add, c;
    uint32_t m, n, k, lda, ldw, ldc, ldadd, flags;
} lin_push;

typedef struct ln_push {
    uint64_t x, w, b, y, idx;
    uint32_t n, ldx, ldy, use_idx;
    float eps;
} ln_push;

typedef struct ea_push {
    uint64_t q, k, v, o;
    uint32_t n, ld;
    float scale;
} ea_push;

typedef struct da_push {
    uint64_t q, part, k, v, info;
    uint32_t ld, n_split;
    float scale;
} da_push;

typedef struct dm_push {
    uint64_t part, o;
    uint32_t ld, n_split;
} dm_push;

typedef struct emb_push {
    uint64_t tok, pos, tp, x;
    uint32_t n, f16;
} emb_push;

typedef struct kv_push {
    uint64_t k, v, kc, vc, dst;
    uint32_t n;
} kv_push;

void td_vko_free(td_vko *o)
{
    if (!o)
        return;
    td_vk_pipe **all[] = {&o->matmul[0], &o->matmul[1], &o->matvec[0], &o->matvec[1],
                          &o->layernorm, &o->enc_attn,  &o->dec_attn,  &o->dec_merge,
                          &o->embed,     &o->kv_put};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        td_vk_pipe_destroy(o->vk, *all[i]);
    td_vk_free(o);
}

int td_vko_create(td_vk *vk, int d_audio, int d_text, td_vko **out, td_error *err)
{
    *out = NULL;
    if ((d_audio != 16 && d_audio != 32 && d_audio != 64 && d_audio != 128) || d_text < 1 ||
        d_text > 128)
        return td_error_set(err, TD_EUNAVAILABLE,
                            "vulkan: heads of %d and %d floats (the shaders take 16, 32, 64 or "
                            "128 in the encoder, up to 128 in the decoder)",
                            d_audio, d_text);
    td_vko *o = td_vk_calloc(1, sizeof *o);
    if (!o)
        return td_error_set(err, TD_ENOMEM, "vulkan: out of memory");
    o->vk = vk;
    o->matvec_rows = TD_VKO_MATVEC_ROWS;
    o->d_audio = d_audio;
    o->d_text = d_text;
    uint32_t f32 = 0, f16 = 1, dt = (uint32_t)d_text;
    int rc;
#define PIPE(dst, nm, label, pushT, spec, nspec)                                                      \
    do {                                                                                     \
        rc = td_vk_pipe_create(vk, label, td_vks_##nm, td_vks_##nm##_words, sizeof(pushT),   \
                               spec, nspec, &(dst), err);                                  \
        if (rc)                                                                              \
            goto fail;                                                                       \
    } while (0)
    PIPE(o->matmul[0], matmul, "matmul_f32", lin_push, &f32, 1);
    PIPE(o->matmul[1], matmul, "matmul_f16", lin_push, &f16, 1);
    PIPE(o->matvec[0], matvec, "matvec_f32", lin_push, &f32, 1);
    PIPE(o->matvec[1], matvec, "matvec_f16", lin_push, &f16, 1);
    PIPE(o->layernorm, layernorm, "layernorm", ln_push, NULL, 0);
    switch (d_audio) { /* compiled per width: see enc_attn.comp */
    case 16: PIPE(o->enc_attn, enc_attn_HEAD_D16, "enc_attn", ea_push, NULL, 0); break;
    case 32: PIPE(o->enc_attn, enc_attn_HEAD_D32, "enc_attn", ea_push, NULL, 0); break;
    case 64: PIPE(o->enc_attn, enc_attn_HEAD_D64, "enc_attn", ea_push, NULL, 0); break;
    case 128: PIPE(o->enc_attn, enc_attn_HEAD_D128, "enc_attn", ea_push, NULL, 0); break;
    }
    PIPE(o->dec_attn, dec_attn, "dec_attn", da_push, &dt, 1);
    PIPE(o->dec_merge, dec_merge, "dec_merge", dm_push, &dt, 1);
    PIPE(o->embed, embed, "embed", emb_push, NULL, 0);
    PIPE(o->kv_put, kv_put, "kv_put", kv_push, NULL, 0);
#undef PIPE
    *out = o;
    return TD_OK;
fail:
    td_vko_free(o);
    return rc;
}

void td_vko_set_matvec_rows(td_vko *o, int rows)
{
    o->matvec_rows = rows;
}

static uint32_t cdiv(uint32_t a, uint32_t b)
{
    return (a + b - 1) / b;
}

void td_vko_linear(td_vko *o, int m, int n, int k, uint64_t a, int lda, uint64_t w, int w_f16,
                   int ldw, uint64_t bias, uint64_t add, int ldadd, uint64_t c, int ldc,
                   unsigned flags)
{
    lin_push p = {a, w, bias, add, c, (uint32_t)m, (uint32_t)n, (uint32_t)k, (uint32_t)lda,
                  (uint32_t)ldw, (uint32_t)ldc, (uint32_t)ldadd, flags};
    if (m <= o->matvec_rows)
        td_vk_dispatch(o->vk, o->matvec[w_f16 ? 1 : 0], &p, cdiv((uint32_t)n, 8), 1,
                       cdiv((uint32_t)m, 8));
    else
        td_vk_dispatch(o->vk, o->matmul[w_f16 ? 1 : 0], &p, cdiv((uint32_t)n, 64),
                       cdiv((uint32_t)m, 64), 1);
}

void td_vko_layernorm(td_vko *o, int rows, int n, uint64_t x, int ldx, uint64_t w, uint64_t b,
                      uint64_t y, int ldy, uint64_t idx)
{
    ln_push p = {x, w, b, y, idx, (uint32_t)n, (uint32_t)ldx, (uint32_t)ldy, idx != 0, 1e-5f};
    td_vk_dispatch(o->vk, o->layernorm, &p, (uint32_t)rows, 1, 1);
}

void td_vko_enc_attn(td_vko *o, int n, int n_head, int ld, uint64_t q, uint64_t k, uint64_t v,
                     uint64_t out)
{
    ea_push p = {q, k, v, out, (uint32_t)n, (uint32_t)ld, 1.0f / sqrtf((float)o->d_audio)};
    td_vk_dispatch(o->vk, o->enc_attn, &p, cdiv((uint32_t)n, 64), (uint32_t)n_head, 1);
}

size_t td_vko_dec_part_floats(int rows, int n_head, int d, int max_keys)
{
    size_t splits = ((size_t)max_keys + TD_VKO_ATT_SPLIT - 1) / TD_VKO_ATT_SPLIT;
    return (size_t)rows * (size_t)n_head * splits * ((size_t)d + 2);
}

void td_vko_dec_attn(td_vko *o, int rows, int n_head, int ld, uint64_t q, uint64_t out,
                     uint64_t k, uint64_t v, uint64_t info, int max_keys, uint64_t part)
{
    uint32_t n_split = cdiv((uint32_t)max_keys, TD_VKO_ATT_SPLIT);
    da_push p = {q, part, k, v, info, (uint32_t)ld, n_split, 1.0f / sqrtf((float)o->d_text)};
    td_vk_dispatch(o->vk, o->dec_attn, &p, (uint32_t)rows, (uint32_t)n_head, n_split);
    dm_push m = {part, out, (uint32_t)ld, n_split};
    td_vk_dispatch(o->vk, o->dec_merge, &m, (uint32_t)rows, (uint32_t)n_head, 1);
}

void td_vko_embed(td_vko *o, int rows, int n, uint64_t tok, int tok_f16, uint64_t pos,
                  uint64_t tp, uint64_t x)
{
    emb_push p = {tok, pos, tp, x, (uint32_t)n, tok_f16 != 0};
    td_vk_dispatch(o->vk, o->embed, &p, cdiv((uint32_t)n, 256), (uint32_t)rows, 1);
}

void td_vko_kv_put(td_vko *o, int rows, int n, uint64_t k, uint64_t v, uint64_t kc, uint64_t vc,
                   uint64_t dst)
{
    kv_push p = {k, v, kc, vc, dst, (uint32_t)n};
    td_vk_dispatch(o->vk, o->kv_put, &p, cdiv((uint32_t)n, 256), (uint32_t)rows, 1);
}
