/*
 * ops.c: recording the Vulkan backend's operations (ops.h): push-constant
 * blocks laid out as the shaders declare them (pointers first, then
 * 32-bit fields) and the grid of each dispatch.
 */
#include "whisper/backend/vulkan/ops.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "whisper/backend/vulkan/shaders.h"

/* Whether the split chosen by the card (split_parts -1) is the default:
 * yes on NVIDIA's cards since an H100 passed test_vulkan_ops's split cases
 * on every matrix-engine path and the backend's golden tests split, and
 * ran medium's encoder at 23.4 ms a window against 27.7 unsplit at one
 * window a call (bench/RESULTS.md); other vendors' cards (AMD reports its
 * multiprocessors too) only where TD_VULKAN_SPLITK asks, until one is
 * measured. TD_VULKAN_SPLITK=off turns it off. A split product's sums
 * are the same every run, but not bit for bit those of the same product
 * unsplit or split otherwise: a window's encoder output can differ in its
 * last bits with the group of windows it was encoded in (about 5e-7). */
#define SPLIT_AUTO 1

/* matmul_cm.comp's tile shapes (its CM_CFG): 128 x 128, 64 x 128, and 64 x 64 by 4
 * subgroups, by 4 with K steps of 64, by 2; 64 x 128 and 128 x 128 with the loads two
 * steps ahead; 128 x 128 by 4 subgroups of 64 x 64; 128 x 128 and 64 x 128 compiled
 * for A as halves with aligned operands (CM_VEC), taken in place of CM_128 and CM_64
 * for such products where they were built, by 8 subgroups or by 16; and CM_128 and
 * CM_64 by 16 subgroups (cm_for_a says which is taken) */
enum {
    CM_128, CM_64, CM_6464, CM_6464K64, CM_6464S2, CM_64A2, CM_128A2, CM_128W, CM_128H, CM_64H,
    CM_128H16, CM_64H16, CM_128F16, CM_64F16, CM_NCFG
};

/* dec_step.comp's phases: a kind and grid, and 128 bytes of parameters
 * (lin_push or da_push), at most STEP_MAX_PHASES a dispatch, so that a
 * dispatch's table (heads, then parameters) fits one vkCmdUpdateBuffer
 * (64 KiB); the tables of one recording go one after the other in
 * step_tab. */
enum { STEP_PH_MATVEC, STEP_PH_ATTN, STEP_PH_ATTN16 };
#define STEP_PARAM_BYTES 128
#define STEP_MAX_PHASES 448
#define STEP_TAB_BYTES (TD_VKO_STEP_BYTES - 256)
typedef struct step_capture {
    int on;                            /* between td_vko_step_begin and _end */
    int n, mr;                         /* phases held; their products' rows (0, 1, 8) */
    uint64_t off;                      /* where the next table goes in step_tab */
    td_vk_pipe *pipe[STEP_MAX_PHASES]; /* each phase's own pipeline (for a table with no room) */
    uint32_t head[STEP_MAX_PHASES][4];
    uint8_t param[STEP_MAX_PHASES][STEP_PARAM_BYTES];
    uint8_t stage[STEP_MAX_PHASES * (16 + STEP_PARAM_BYTES)];
} step_capture;

struct td_vko {
    td_vk *vk;
    td_vk_pipe *matmul[2];             /* [w_f16] */
    td_vk_pipe *matvec[2][3];          /* [w_f16][MV_R1, MV_R8, MV_R8C4: rows of A and
                                        * columns per team (matvec.comp's MR, CT)] */
    td_vk_pipe *matmul_cm[CM_NCFG];    /* F16 weights on the matrix engines, one per
                                        * matmul_cm.comp CM_CFG (tile shape); NULL without */
    td_vk_pipe *matmul_cmd[2];         /* the same with fragments straight from device
                                        * memory, 64 x 128 and 64 x 64 tiles; NULL without */
    td_vk_pipe *enc_attn_cm[2];        /* the encoder's attention on them, [q, k, v as
                                        * halves (the second optional)]; NULL without,
                                        * or for heads other than 32 and 64 */
    td_vk_pipe *enc_attn_cmr[2];       /* the same with each block's scores in registers
                                        * (enc_attn_cmr.comp), taken instead where not NULL:
                                        * NULL with TD_VULKAN_ATTN_REG=0, where it was not
                                        * built, or where it did not give enc_attn_cm's
                                        * results at open (attn_reg_check) */
    td_vk_pipe *xattn_cm[2];           /* the decoder's cross-attention on the matrix
                                        * engines by groups of a window's rows
                                        * (enc_attn_cmr.comp's EA_CFG 4, 5), [keys and
                                        * values as halves]; NULL unless the encoder's
                                        * register attention passed its check, heads of 64 */
    char attn_note[160];               /* which attention the encoder runs, and why */
    td_vk_pipe *cm_peak[TD_VKO_CM_PEAK_MODES]; /* the engines' rate (a benchmark); NULL without */
    td_vk_pipe *layernorm, *enc_attn, *dec_attn, *embed, *kv_put, *att_weights;
    td_vk_pipe *dec_attn16, *att_weights16, *to_half; /* keys and values as halves */
    td_vk_pipe *dec_group[2];          /* dec_attn_group.comp, [keys and values as halves];
                                        * NULL where the device's shared memory is short */
    td_vk_pipe *matrows[2];            /* the batched step's products (matrows.comp), 1 and 2
                                        * groups of loads in flight */
    td_vk_pipe *matmul_sum;            /* a split product's parts added, and its epilogue */
    int matvec_rows, cm_big_min;
    int ea_bq;                         /* query rows a workgroup of enc_attn_cm[] (and cmr):
                                        * 4 fragments' rows, 64 on NV's 16 x 16 x 16 */
    /* the split of K (td_vko_set_split): the parts' scratch, its size in
     * floats, and the count of parts (-1: by the card, 0: never, else always) */
    uint64_t split_buf;
    size_t split_floats;
    int split_parts;
    int cm_ah;                         /* for A as halves, aligned: CM_128H16 and CM_64H16
                                        * (2, the default where workgroups of 512 are
                                        * allowed; TD_VULKAN_CM_AH=16), CM_128H and CM_64H
                                        * (1: =1), or CM_128 and CM_64 (0: =0) */
    int cm_f16;                        /* other products: CM_128F16 and CM_64F16
                                        * (TD_VULKAN_CM_F16, default 1) */
    /* products of 9..TD_VKO_ROWS_MAX rows: the kernel per row class
     * (rows_class), TD_VKO_ROWS_PATH (the path's) unless chosen */
    enum td_vko_rows rows_pick[TD_VKO_ROWS_CLASSES];
    enum td_vko_path path;
    unsigned gen;
    int d_audio, d_text;
    /* the decoder step as one dispatch (dec_step.comp, td_vko_step_setup) */
    td_vk_pipe *dec_step[2];           /* [products of 1 row, of 8]; NULL until set up */
    td_vk_buf step_tab, step_sync;     /* the phase tables; the grid barrier's words */
    td_vk_buf step_report;             /* host-visible, coherent: set where a barrier's wait
                                        * timed out */
    int step_bufs;                     /* whether those three exist */
    int step_groups;                   /* the grid; 0: not used */
    step_capture *cap;                 /* the phases recorded since the last dispatch */
};

/* matvec.comp and matrows.comp declare all but cofs; matmul*.comp all,
 * c2 as the table of TD_VKO_COLS */
typedef struct lin_push {
    uint64_t a, w, bias, add, c, lnw, lnb, rowidx;
    uint32_t m, n, k, lda, ldw, ldc, ldadd, flags;
    uint64_t c2, c3;
    uint32_t split, cofs;
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
    uint32_t pad;          /* zero: the struct's size is a multiple of 8 */
} ea_push;

/* enc_attn_cm.glsl's push constants for EA_GATHER */
typedef struct xcm_push {
    uint64_t q, k, v, o, info, groups;
    uint32_t ld;
    float scale;
} xcm_push;

typedef struct da_push {
    uint64_t q, part, k, v, info, o, cnt;
    uint32_t ld, n_split;
    float scale;
} da_push;

typedef struct dag_push {
    uint64_t q, part, k, v, info, o, cnt, groups;
    uint32_t ld, n_split;
    float scale;
    uint32_t pad;          /* zero: the struct's size is a multiple of 8 */
} dag_push;

/* dec_attn_group.comp's shared memory for heads of d: the group's queries,
 * exponentials and reductions (floats) and partial outputs (vec4s), and
 * its flag (as an int) */
static uint32_t dec_group_shared(int d)
{
    uint32_t g = TD_VKO_ATT_GROUP;
    return 4 * (g * (uint32_t)d + g * 128 + g * 128) + 16 * g * 128 + 4;
}

typedef struct emb_push {
    uint64_t tok, pos, tp, x;
    uint32_t n, f16;
} emb_push;

typedef struct aw_push {
    uint64_t q, k, o;
    uint32_t ld, nk, h0, kofs, orow0;
    float scale;
} aw_push;

typedef struct pk_push {
    uint64_t o;
    uint32_t iters;
} pk_push;

typedef struct th_push {
    uint64_t x, y;
    uint32_t n2;
} th_push;

typedef struct kv_push {
    uint64_t k, v, kc, vc, dst;
    uint32_t n;
} kv_push;

void td_vko_free(td_vko *o)
{
    if (!o)
        return;
    td_vk_pipe **all[] = {&o->matmul[0], &o->matmul[1], &o->matvec[0][0], &o->matvec[0][1],
                          &o->matvec[0][2], &o->matvec[1][0], &o->matvec[1][1],
                          &o->matvec[1][2], &o->matmul_cmd[0],
                          &o->matmul_cmd[1], &o->enc_attn_cm[0], &o->enc_attn_cm[1],
                          &o->enc_attn_cmr[0], &o->enc_attn_cmr[1], &o->layernorm,
                          &o->enc_attn,  &o->dec_attn,
                          &o->embed, &o->kv_put, &o->att_weights, &o->dec_attn16,
                          &o->att_weights16, &o->to_half, &o->matrows[0], &o->matrows[1],
                          &o->matmul_sum, &o->dec_group[0], &o->dec_group[1],
                          &o->xattn_cm[0], &o->xattn_cm[1], &o->dec_step[0],
                          &o->dec_step[1]};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        td_vk_pipe_destroy(o->vk, *all[i]);
    for (int i = 0; i < TD_VKO_CM_PEAK_MODES; i++)
        td_vk_pipe_destroy(o->vk, o->cm_peak[i]);
    for (int i = 0; i < CM_NCFG; i++)
        td_vk_pipe_destroy(o->vk, o->matmul_cm[i]);
    if (o->step_bufs) {
        td_vk_buf_destroy(o->vk, &o->step_tab);
        td_vk_buf_destroy(o->vk, &o->step_sync);
        td_vk_buf_destroy(o->vk, &o->step_report);
    }
    td_vk_free(o->cap);
    td_vk_free(o);
}

static int attn_reg_check(td_vko *o, int d, int want, td_error *err);

/* Bytes of shared memory matmul_cm.glsl stages for BM x BN tiles in K
 * steps of BK (two stages of A and of W, rows padded by 8 halves) */
static uint32_t cm_shared(uint32_t bm, uint32_t bn, uint32_t bk)
{
    return 2 * bm * ((bk + 8) / 4) * 8 + 2 * bn * ((bk + 8) / 8) * 16;
}

/* Bytes of shared memory enc_attn_cm.comp's body takes for heads of d and
 * fragments of rows rows: keys and values of a block, and each of its 4
 * subgroups' P (halves) and scratch (floats) */
static uint32_t ea_shared(int d, int rows)
{
    return 2u * 64 * (((uint32_t)d + 8) / 4) * 8 + 4u * (uint32_t)rows * (64 + 8) * 2 +
           4u * (uint32_t)rows * (64 + 4) * 4;
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
    snprintf(o->attn_note, sizeof o->attn_note, "attention: enc_attn.comp (no matrix engines)");
    o->matvec_rows = TD_VKO_MATVEC_ROWS;
    o->ea_bq = 64;
    o->cm_big_min = TD_VKO_CM_BIG_MIN;
    const char *big = getenv("TD_VULKAN_CM_BIG_MIN");
    if (big && *big) {
        char *end;
        long v = strtol(big, &end, 10);
        if (*end == 0 && v >= 0 && v <= 1 << 20)
            o->cm_big_min = (int)v;
    }
    /* the products for A as halves by 16 subgroups: on an H200 medium's
     * encoder went from 19.6 to 16.7 ms a window with them (bench/RESULTS.md,
     * "16 subgroups a tile"; not built where the device allows no
     * workgroups of 512) */
    const char *ah = getenv("TD_VULKAN_CM_AH");
    o->cm_ah = !ah || !*ah || strcmp(ah, "16") == 0 ? 2 : strcmp(ah, "1") == 0 ? 1
                                                      : strcmp(ah, "0") == 0 ? 0 : -1;
    /* the other products (A as floats) by 16 subgroups too: on an H100
     * medium's encoder went from 16.6 to 16.0 ms a window with them, their
     * GPU time 3.60 -> 3.00 ms (bench/RESULTS.md, "Every product by 16
     * subgroups") */
    const char *cmf = getenv("TD_VULKAN_CM_F16");
    o->cm_f16 = !cmf || !*cmf || strcmp(cmf, "1") == 0 ? 1 : strcmp(cmf, "0") == 0 ? 0 : -1;
    if (o->cm_ah < 0 || o->cm_f16 < 0) {
        td_vko_free(o);
        return td_error_set(err, TD_EINVAL,
                            "vulkan: TD_VULKAN_CM_AH=%s (0, 1 or 16), TD_VULKAN_CM_F16=%s "
                            "(0 or 1)",
                            ah ? ah : "", cmf ? cmf : "");
    }
    o->split_parts = SPLIT_AUTO ? -1 : 0;
    const char *sp = getenv("TD_VULKAN_SPLITK");
    if (sp && *sp) {
        char *end;
        long v = strtol(sp, &end, 10);
        if (strcmp(sp, "off") == 0)
            o->split_parts = 0;
        else if (strcmp(sp, "auto") == 0)
            o->split_parts = -1;
        else if (*end == 0 && v >= 0 && v <= TD_VKO_SPLIT_MAX)
            o->split_parts = v == 1 ? 0 : (int)v;
        else {
            td_vko_free(o);
            return td_error_set(err, TD_EINVAL,
                                "vulkan: TD_VULKAN_SPLITK=%s (off, auto or 0 to %d)", sp,
                                TD_VKO_SPLIT_MAX);
        }
    }
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
    /* matvec, compiled per (weights in halves, rows of A per workgroup,
     * columns per team): see matvec.comp */
    PIPE(o->matvec[0][0], matvec_MV_CFG0, "matvec_f32", lin_push, NULL, 0);
    PIPE(o->matvec[0][1], matvec_MV_CFG1, "matvec_f32_r8", lin_push, NULL, 0);
    PIPE(o->matvec[0][2], matvec_MV_CFG2, "matvec_f32_r8c4", lin_push, NULL, 0);
    PIPE(o->matvec[1][0], matvec_MV_CFG3, "matvec_f16", lin_push, NULL, 0);
    PIPE(o->matvec[1][1], matvec_MV_CFG4, "matvec_f16_r8", lin_push, NULL, 0);
    PIPE(o->matvec[1][2], matvec_MV_CFG5, "matvec_f16_r8c4", lin_push, NULL, 0);
    PIPE(o->layernorm, layernorm, "layernorm", ln_push, NULL, 0);
    switch (d_audio) { /* compiled per width: see enc_attn.comp */
    case 16: PIPE(o->enc_attn, enc_attn_HEAD_D16, "enc_attn", ea_push, NULL, 0); break;
    case 32: PIPE(o->enc_attn, enc_attn_HEAD_D32, "enc_attn", ea_push, NULL, 0); break;
    case 64: PIPE(o->enc_attn, enc_attn_HEAD_D64, "enc_attn", ea_push, NULL, 0); break;
    case 128: PIPE(o->enc_attn, enc_attn_HEAD_D128, "enc_attn", ea_push, NULL, 0); break;
    }
    /* dec_attn: compiled for heads of 64 (every Whisper's), specialized
     * for others; the map's width entry is ignored by the first */
    uint32_t dt16[2] = {dt, 1};
    if (dt == 64) {
        PIPE(o->dec_attn, dec_attn_DA_D64, "dec_attn", da_push, &dt, 1);
        PIPE(o->dec_attn16, dec_attn_DA_D64, "dec_attn16", da_push, dt16, 2);
    } else {
        PIPE(o->dec_attn, dec_attn_DA_D0, "dec_attn", da_push, &dt, 1);
        PIPE(o->dec_attn16, dec_attn_DA_D0, "dec_attn16", da_push, dt16, 2);
    }
    /* the same for groups of rows that share their keys (the
     * cross-attention's rows of a window, TD_VULKAN_XGROUP=1): where the
     * device gives a workgroup its shared memory (26 KiB for heads of 64;
     * every device the backend targets has 32 or more), else the per-row
     * shader runs. Optional: the default runs per row (faster on an
     * H100), so a driver that cannot build them loses only them (both or
     * neither); out of memory still fails the open. */
    if (td_vk_device_info(vk)->max_shared >= dec_group_shared(d_text)) {
        int d64 = dt == 64;
        rc = td_vk_pipe_create(vk, "dec_attn_group",
                               d64 ? td_vks_dec_attn_group_DA_D64 : td_vks_dec_attn_group_DA_D0,
                               d64 ? td_vks_dec_attn_group_DA_D64_words
                                   : td_vks_dec_attn_group_DA_D0_words,
                               sizeof(dag_push), &dt, 1, &o->dec_group[0], err);
        if (rc == TD_OK)
            rc = td_vk_pipe_create(vk, "dec_attn_group16",
                                   d64 ? td_vks_dec_attn_group_DA_D64 : td_vks_dec_attn_group_DA_D0,
                                   d64 ? td_vks_dec_attn_group_DA_D64_words
                                       : td_vks_dec_attn_group_DA_D0_words,
                                   sizeof(dag_push), dt16, 2, &o->dec_group[1], err);
        if (rc == TD_ENOMEM)
            goto fail;
        if (rc) {
            for (int i = 0; i < 2; i++) {
                td_vk_pipe_destroy(vk, o->dec_group[i]);
                o->dec_group[i] = NULL;
            }
            rc = TD_OK;
        }
    }
    PIPE(o->embed, embed, "embed", emb_push, NULL, 0);
    PIPE(o->kv_put, kv_put, "kv_put", kv_push, NULL, 0);
    PIPE(o->att_weights, att_weights, "att_weights", aw_push, &dt, 1);
    PIPE(o->att_weights16, att_weights, "att_weights16", aw_push, dt16, 2);
    PIPE(o->to_half, to_half, "to_half", th_push, NULL, 0);
    PIPE(o->matrows[0], matrows_MR_G1, "matrows", lin_push, NULL, 0);
    PIPE(o->matrows[1], matrows_MR_G2, "matrows2", lin_push, NULL, 0);
    PIPE(o->matmul_sum, matmul_sum, "matmul_sum", lin_push, NULL, 0);
    if (td_vk_device_info(vk)->has_coopmat_nv) {
        /* a driver that cannot build it leaves the tiled path; only out
         * of memory is an error */
        static const char *const cm_name[CM_NCFG] = {"matmul_cm128", "matmul_cm64",
                                                     "matmul_cm6464", "matmul_cm6464k64",
                                                     "matmul_cm6464s2", "matmul_cm64a2",
                                                     "matmul_cm128a2", "matmul_cm128w",
                                                     "matmul_cm128h", "matmul_cm64h",
                                                     "matmul_cm128h16", "matmul_cm64h16",
                                                     "matmul_cm128f16", "matmul_cm64f16"};
        const uint32_t *cm_code[CM_NCFG] = {td_vks_matmul_cm_CM_CFG0, td_vks_matmul_cm_CM_CFG1,
                                            td_vks_matmul_cm_CM_CFG2, td_vks_matmul_cm_CM_CFG3,
                                            td_vks_matmul_cm_CM_CFG4, td_vks_matmul_cm_CM_CFG5,
                                            td_vks_matmul_cm_CM_CFG6, td_vks_matmul_cm_CM_CFG7,
                                            td_vks_matmul_cm_CM_CFG8, td_vks_matmul_cm_CM_CFG9,
                                            td_vks_matmul_cm_CM_CFG10, td_vks_matmul_cm_CM_CFG11,
                                            td_vks_matmul_cm_CM_CFG12, td_vks_matmul_cm_CM_CFG13};
        const size_t cm_words[CM_NCFG] = {
            td_vks_matmul_cm_CM_CFG0_words, td_vks_matmul_cm_CM_CFG1_words,
            td_vks_matmul_cm_CM_CFG2_words, td_vks_matmul_cm_CM_CFG3_words,
            td_vks_matmul_cm_CM_CFG4_words, td_vks_matmul_cm_CM_CFG5_words,
            td_vks_matmul_cm_CM_CFG6_words, td_vks_matmul_cm_CM_CFG7_words,
            td_vks_matmul_cm_CM_CFG8_words, td_vks_matmul_cm_CM_CFG9_words,
            td_vks_matmul_cm_CM_CFG10_words, td_vks_matmul_cm_CM_CFG11_words,
            td_vks_matmul_cm_CM_CFG12_words, td_vks_matmul_cm_CM_CFG13_words};
        /* enc_attn_cm.comp's compilations: [q, k, v as halves][heads of 64] */
        const uint32_t *ea_code[2][2] = {{td_vks_enc_attn_cm_EA_CFG0, td_vks_enc_attn_cm_EA_CFG1},
                                         {td_vks_enc_attn_cm_EA_CFG2, td_vks_enc_attn_cm_EA_CFG3}};
        const size_t ea_words[2][2] = {
            {td_vks_enc_attn_cm_EA_CFG0_words, td_vks_enc_attn_cm_EA_CFG1_words},
            {td_vks_enc_attn_cm_EA_CFG2_words, td_vks_enc_attn_cm_EA_CFG3_words}};
        int d64 = d_audio == 64;
        rc = TD_OK;
        for (int i = 0; i < CM_6464 && rc == TD_OK; i++)
            rc = td_vk_pipe_create(vk, cm_name[i], cm_code[i], cm_words[i], sizeof(lin_push),
                                   NULL, 0, &o->matmul_cm[i], err);
        if (rc == TD_OK && (d_audio == 32 || d_audio == 64))
            rc = td_vk_pipe_create(vk, "enc_attn_cm", ea_code[0][d64], ea_words[0][d64],
                                   sizeof(ea_push), NULL, 0, &o->enc_attn_cm[0], err);
        if (rc == TD_ENOMEM)
            goto fail;
        if (rc) { /* all or none */
            for (int i = 0; i < CM_NCFG; i++) {
                td_vk_pipe_destroy(vk, o->matmul_cm[i]);
                o->matmul_cm[i] = NULL;
            }
            td_vk_pipe_destroy(vk, o->enc_attn_cm[0]);
            o->enc_attn_cm[0] = NULL;
        }
        /* the attention with q, k, v as halves: optional (without it
         * they stay floats) */
        if (o->enc_attn_cm[0]) {
            rc = td_vk_pipe_create(vk, "enc_attn_cm_half", ea_code[1][d64], ea_words[1][d64],
                                   sizeof(ea_push), NULL, 0, &o->enc_attn_cm[1], err);
            if (rc == TD_ENOMEM)
                goto fail;
            if (rc)
                o->enc_attn_cm[1] = NULL;
        }
        /* the attention with its scores in registers: optional, each, and
         * taken only once it gave the other's results (attn_reg_check) */
        /* [q, k, v as halves][heads of 64] */
        const uint32_t *ear_code[2][2] = {
            {td_vks_enc_attn_cmr_EA_CFG0, td_vks_enc_attn_cmr_EA_CFG1},
            {td_vks_enc_attn_cmr_EA_CFG2, td_vks_enc_attn_cmr_EA_CFG3}};
        const size_t ear_words[2][2] = {
            {td_vks_enc_attn_cmr_EA_CFG0_words, td_vks_enc_attn_cmr_EA_CFG1_words},
            {td_vks_enc_attn_cmr_EA_CFG2_words, td_vks_enc_attn_cmr_EA_CFG3_words}};
        const char *reg = getenv("TD_VULKAN_ATTN_REG");
        int want_reg = !(reg && strcmp(reg, "0") == 0);
        for (int h = 0; h < 2 && want_reg; h++) {
            if (!o->enc_attn_cm[h])
                continue;
            rc = td_vk_pipe_create(vk, h ? "enc_attn_cmr_half" : "enc_attn_cmr",
                                   ear_code[h][d64], ear_words[h][d64], sizeof(ea_push), NULL,
                                   0, &o->enc_attn_cmr[h], err);
            if (rc == TD_ENOMEM)
                goto fail;
            if (rc)
                o->enc_attn_cmr[h] = NULL;
        }
        /* a device that cannot run the check's two small dispatches
         * cannot run the encoder: its error fails the open */
        if ((rc = attn_reg_check(o, d_audio, want_reg, err)))
            goto fail;
        /* the decoder's cross-attention the same way (the same layout
         * assumption, so only where a compilation passed the check):
         * optional, both or none */
        if ((o->enc_attn_cmr[0] || o->enc_attn_cmr[1]) && d_text == 64) {
            for (int h = 0; h < 2; h++) {
                rc = td_vk_pipe_create(vk, h ? "xattn_cm16" : "xattn_cm",
                                       h ? td_vks_enc_attn_cmr_EA_CFG5 : td_vks_enc_attn_cmr_EA_CFG4,
                                       h ? td_vks_enc_attn_cmr_EA_CFG5_words
                                         : td_vks_enc_attn_cmr_EA_CFG4_words,
                                       sizeof(xcm_push), NULL, 0, &o->xattn_cm[h], err);
                if (rc == TD_ENOMEM)
                    goto fail;
                if (rc)
                    break;
            }
            if (rc) {
                td_vk_pipe_destroy(vk, o->xattn_cm[0]);
                td_vk_pipe_destroy(vk, o->xattn_cm[1]);
                o->xattn_cm[0] = o->xattn_cm[1] = NULL;
            }
            rc = TD_OK;
        }
        /* the 64 x 64 tiles, the loads two steps ahead, the compilations
         * for A as halves: optional, each (a driver that cannot build one
         * loses only its path, or for the last six the products fall back
         * to CM_128 and CM_64) */
        for (int i = CM_6464; i < CM_NCFG && o->matmul_cm[0]; i++) {
            int by16 = i == CM_128H16 || i == CM_64H16 || i == CM_128F16 || i == CM_64F16;
            if (((i == CM_128H || i == CM_64H) && o->cm_ah != 1) ||
                ((i == CM_128H16 || i == CM_64H16) && o->cm_ah != 2) ||
                ((i == CM_128F16 || i == CM_64F16) && !o->cm_f16))
                continue; /* built only where they may be taken */
            if (by16 && td_vk_device_info(vk)->max_invocations < 512)
                continue; /* workgroups of 512 */
            rc = td_vk_pipe_create(vk, cm_name[i], cm_code[i], cm_words[i], sizeof(lin_push),
                                   NULL, 0, &o->matmul_cm[i], err);
            if (rc == TD_ENOMEM)
                goto fail;
            if (rc)
                o->matmul_cm[i] = NULL;
        }
        /* the direct-load products: optional, both or none */
        for (int i = 0; i < 2 && o->matmul_cm[0]; i++) {
            rc = td_vk_pipe_create(vk, i == 0 ? "matmul_cmd128" : "matmul_cmd64",
                                   i == 0 ? td_vks_matmul_cmd_CMD_TN4 : td_vks_matmul_cmd_CMD_TN2,
                                   i == 0 ? td_vks_matmul_cmd_CMD_TN4_words
                                          : td_vks_matmul_cmd_CMD_TN2_words,
                                   sizeof(lin_push), NULL, 0, &o->matmul_cmd[i], err);
            if (rc == TD_ENOMEM)
                goto fail;
            if (rc) {
                td_vk_pipe_destroy(vk, o->matmul_cmd[0]);
                o->matmul_cmd[0] = o->matmul_cmd[1] = NULL;
                break;
            }
        }
        rc = TD_OK;
    } else if (td_vk_device_info(vk)->coopmat_family) {
        /* the KHR extension's products (matmul_cmk.comp), for the
         * device's family: 128 x 128 and 64 x 128 tiles, both or none,
         * and 64 x 64, optional; a build without their compiler (0
         * words) or a driver that cannot build them leaves the tiled path */
        static const char *const kname[3] = {"matmul_cmk128", "matmul_cmk64", "matmul_cmk6464"};
        const uint32_t *kcode[4][3] = {
            {td_vks_matmul_cmk_CMK100, td_vks_matmul_cmk_CMK101, td_vks_matmul_cmk_CMK102},
            {td_vks_matmul_cmk_CMK200, td_vks_matmul_cmk_CMK201, td_vks_matmul_cmk_CMK202},
            {td_vks_matmul_cmk_CMK300, td_vks_matmul_cmk_CMK301, td_vks_matmul_cmk_CMK302},
            {td_vks_matmul_cmk_CMK400, td_vks_matmul_cmk_CMK401, td_vks_matmul_cmk_CMK402}};
        size_t kwords[4][3] = {
            {td_vks_matmul_cmk_CMK100_words, td_vks_matmul_cmk_CMK101_words,
             td_vks_matmul_cmk_CMK102_words},
            {td_vks_matmul_cmk_CMK200_words, td_vks_matmul_cmk_CMK201_words,
             td_vks_matmul_cmk_CMK202_words},
            {td_vks_matmul_cmk_CMK300_words, td_vks_matmul_cmk_CMK301_words,
             td_vks_matmul_cmk_CMK302_words},
            {td_vks_matmul_cmk_CMK400_words, td_vks_matmul_cmk_CMK401_words,
             td_vks_matmul_cmk_CMK402_words}};
        int fam = td_vk_device_info(vk)->coopmat_family - 1; /* 1..4 */
        uint32_t shared = td_vk_device_info(vk)->max_shared;
        /* 128 x 128 tiles stage 40 KiB in K steps of 32: on devices with
         * less (lavapipe's 32 KiB) the compilation in K steps of 16 (24 KiB) */
        if (shared < cm_shared(128, 128, 32)) {
            const uint32_t *k16[4] = {td_vks_matmul_cmk_CMK114, td_vks_matmul_cmk_CMK214,
                                      td_vks_matmul_cmk_CMK314, td_vks_matmul_cmk_CMK414};
            const size_t k16w[4] = {td_vks_matmul_cmk_CMK114_words, td_vks_matmul_cmk_CMK214_words,
                                    td_vks_matmul_cmk_CMK314_words, td_vks_matmul_cmk_CMK414_words};
            for (int f = 0; f < 4; f++) {
                kcode[f][CM_128] = k16[f];
                kwords[f][CM_128] = shared >= cm_shared(128, 128, 16) ? k16w[f] : 0;
            }
        }
        if (shared < cm_shared(64, 128, 32))
            for (int f = 0; f < 4; f++)
                kwords[f][CM_64] = 0; /* none then: both or none */
        if (shared < cm_shared(64, 64, 32))
            for (int f = 0; f < 4; f++)
                kwords[f][CM_6464] = 0;
        rc = TD_OK;
        for (int i = CM_128; i <= CM_6464 && fam >= 0 && fam < 4; i++) {
            rc = td_vk_pipe_create_khr_cm(vk, kname[i], kcode[fam][i], kwords[fam][i],
                                          sizeof(lin_push), &o->matmul_cm[i], err);
            if (rc == TD_ENOMEM)
                goto fail;
            if (rc && i < CM_6464) { /* both or none */
                td_vk_pipe_destroy(vk, o->matmul_cm[CM_128]);
                o->matmul_cm[CM_128] = NULL;
                break;
            }
        }
        /* the encoder's attention (enc_attn_cmk.comp: enc_attn_cm.comp's,
         * 4 fragments' rows a workgroup), heads of 32 or 64, with the
         * products: q, k, v as floats, and optionally as halves */
        const uint32_t *eak[4][4] = {
            {td_vks_enc_attn_cmk_EAK100, td_vks_enc_attn_cmk_EAK101, td_vks_enc_attn_cmk_EAK102,
             td_vks_enc_attn_cmk_EAK103},
            {td_vks_enc_attn_cmk_EAK200, td_vks_enc_attn_cmk_EAK201, td_vks_enc_attn_cmk_EAK202,
             td_vks_enc_attn_cmk_EAK203},
            {td_vks_enc_attn_cmk_EAK300, td_vks_enc_attn_cmk_EAK301, td_vks_enc_attn_cmk_EAK302,
             td_vks_enc_attn_cmk_EAK303},
            {td_vks_enc_attn_cmk_EAK400, td_vks_enc_attn_cmk_EAK401, td_vks_enc_attn_cmk_EAK402,
             td_vks_enc_attn_cmk_EAK403}};
        const size_t eakw[4][4] = {
            {td_vks_enc_attn_cmk_EAK100_words, td_vks_enc_attn_cmk_EAK101_words,
             td_vks_enc_attn_cmk_EAK102_words, td_vks_enc_attn_cmk_EAK103_words},
            {td_vks_enc_attn_cmk_EAK200_words, td_vks_enc_attn_cmk_EAK201_words,
             td_vks_enc_attn_cmk_EAK202_words, td_vks_enc_attn_cmk_EAK203_words},
            {td_vks_enc_attn_cmk_EAK300_words, td_vks_enc_attn_cmk_EAK301_words,
             td_vks_enc_attn_cmk_EAK302_words, td_vks_enc_attn_cmk_EAK303_words},
            {td_vks_enc_attn_cmk_EAK400_words, td_vks_enc_attn_cmk_EAK401_words,
             td_vks_enc_attn_cmk_EAK402_words, td_vks_enc_attn_cmk_EAK403_words}};
        static const int fam_rows[4] = {16, 8, 8, 8}; /* coopmat.glsl's CM_FM, families 1..4 */
        int d64 = d_audio == 64;
        int fits = fam >= 0 && fam < 4 && shared >= ea_shared(d_audio, fam_rows[fam]);
        for (int h = 0; h < 2 && o->matmul_cm[CM_128] && (d_audio == 32 || d64) && fits; h++) {
            if (h && !o->enc_attn_cm[0])
                break;
            rc = td_vk_pipe_create_khr_cm(vk, h ? "enc_attn_cmk_half" : "enc_attn_cmk",
                                          eak[fam][2 * h + d64], eakw[fam][2 * h + d64],
                                          sizeof(ea_push), &o->enc_attn_cm[h], err);
            if (rc == TD_ENOMEM)
                goto fail;
            if (rc)
                o->enc_attn_cm[h] = NULL;
        }
        o->ea_bq = 4 * fam_rows[fam < 0 || fam > 3 ? 0 : fam];
        if ((rc = attn_reg_check(o, d_audio, 0, err)))
            goto fail;
        rc = TD_OK;
    }
#undef PIPE
    *out = o;
    return TD_OK;
fail:
    td_vko_free(o);
    return rc;
}

void td_vko_set_matvec_rows(td_vko *o, int rows)
{
    if (rows != o->matvec_rows)
        o->gen++;
    o->matvec_rows = rows;
}

void td_vko_set_cm_big_min(td_vko *o, int tiles)
{
    if (tiles != o->cm_big_min)
        o->gen++;
    o->cm_big_min = tiles;
}

void td_vko_set_split(td_vko *o, uint64_t scratch, size_t floats)
{
    if (scratch != o->split_buf || floats != o->split_floats)
        o->gen++;
    o->split_buf = scratch;
    o->split_floats = scratch ? floats : 0;
}

int td_vko_set_split_parts(td_vko *o, int parts)
{
    int was = o->split_parts;
    if (parts == 1 || parts < -1)
        parts = 0;
    if (parts > TD_VKO_SPLIT_MAX)
        parts = TD_VKO_SPLIT_MAX;
    if (parts != o->split_parts)
        o->gen++;
    o->split_parts = parts;
    return was;
}

size_t td_vko_split_floats(int m, int n)
{
    if (m < 1 || n < 1)
        return 0;
    return (size_t)TD_VKO_SPLIT_PLAN * (size_t)m * (((size_t)n + 3) & ~(size_t)3);
}

int td_vko_has_coopmat(const td_vko *o)
{
    return o->matmul_cm[0] != NULL;
}

const char *td_vko_path_name(enum td_vko_path path)
{
    switch (path) {
    case TD_VKO_COOPMAT: return "coopmat";
    case TD_VKO_COOPMAT64: return "coopmat64";
    case TD_VKO_CMDIRECT: return "cmdirect";
    case TD_VKO_CMDIRECT64: return "cmdirect64";
    case TD_VKO_CM64X64: return "cm64x64";
    case TD_VKO_CM64X64K64: return "cm64x64k64";
    case TD_VKO_CM64X64S2: return "cm64x64s2";
    case TD_VKO_CMAHEAD: return "cmahead";
    case TD_VKO_CM128W: return "cm128w";
    default: return "tiled";
    }
}

enum td_vko_path td_vko_path_get(const td_vko *o)
{
    return o->path;
}

unsigned td_vko_generation(const td_vko *o)
{
    return o->gen;
}

/* The 128 x 128 tile shape of a path that takes them (cm_takes_big). */
static int cm_big(enum td_vko_path path)
{
    return path == TD_VKO_CMAHEAD ? CM_128A2 : path == TD_VKO_CM128W ? CM_128W : CM_128;
}

/* The compilation of tile shape cfg for this product: CM_128 and CM_64
 * have one for A as halves with aligned operands (ahalf_vec: TD_VKO_AHALF
 * and CM_VEC), by 8 subgroups or by 16 (o->cm_ah), and one for any A by
 * 16 (o->cm_f16), each taken where it was built; the same tiles and order
 * of sums, so the same bits. */
static int cm_for_a(const td_vko *o, int cfg, int ahalf_vec)
{
    int big = CM_128F16, small = CM_64F16; /* NULL unless o->cm_f16 */
    if (ahalf_vec && o->cm_ah) {
        big = o->cm_ah == 2 ? CM_128H16 : CM_128H;
        small = o->cm_ah == 2 ? CM_64H16 : CM_64H;
    }
    if (cfg == CM_128 && o->matmul_cm[big])
        return big;
    if (cfg == CM_64 && o->matmul_cm[small])
        return small;
    return cfg;
}

/* Whether a path takes 128 x 128 tiles where the grid has enough of them. */
static int cm_takes_big(enum td_vko_path path)
{
    return path == TD_VKO_COOPMAT || path >= TD_VKO_CM64X64;
}

/* The tile shape a path takes where 128 x 128 tiles would be too few. */
static int cm_small(enum td_vko_path path)
{
    switch (path) {
    case TD_VKO_CM64X64: return CM_6464;
    case TD_VKO_CM64X64K64: return CM_6464K64;
    case TD_VKO_CM64X64S2: return CM_6464S2;
    case TD_VKO_CMAHEAD: return CM_64A2;
    default: return CM_64;
    }
}

int td_vko_set_path(td_vko *o, enum td_vko_path path, td_error *err)
{
    if ((int)path < 0 || (int)path >= TD_VKO_NPATHS)
        return td_error_set(err, TD_EINVAL, "vulkan: product path %d", (int)path);
    if (path != TD_VKO_TILED && !o->matmul_cm[0])
        return td_error_set(err, TD_EUNAVAILABLE,
                            "vulkan: %s: no cooperative-matrix path (needs VK_NV_cooperative_matrix "
                            "with 16x16x16 f16 products and subgroups of 32, or "
                            "VK_KHR_cooperative_matrix with a shape of coopmat.glsl's and a "
                            "build with its shaders)",
                            td_vk_device_info(o->vk)->name);
    if ((path == TD_VKO_CMDIRECT || path == TD_VKO_CMDIRECT64) && !o->matmul_cmd[0])
        return td_error_set(err, TD_EUNAVAILABLE,
                            "vulkan: %s: the driver did not build the direct-load product",
                            td_vk_device_info(o->vk)->name);
    if (path >= TD_VKO_CM64X64 && (!o->matmul_cm[cm_small(path)] || !o->matmul_cm[cm_big(path)]))
        return td_error_set(err, TD_EUNAVAILABLE,
                            "vulkan: %s: the driver did not build %s's product",
                            td_vk_device_info(o->vk)->name, td_vko_path_name(path));
    if (path != o->path)
        o->gen++;
    o->path = path;
    return TD_OK;
}

/* The row class of a product of m rows (9..TD_VKO_ROWS_MAX): up to 16,
 * 32, 64, 128, 256. */
static int rows_class(int m)
{
    int c = 0;
    while (c < TD_VKO_ROWS_CLASSES - 1 && m > (16 << c))
        c++;
    return c;
}

/* The kernel a product of m rows takes beyond the few-row switch. */
static enum td_vko_rows rows_kernel(const td_vko *o, int m)
{
    if (m <= o->matvec_rows || m > TD_VKO_ROWS_MAX)
        return TD_VKO_ROWS_PATH;
    return o->rows_pick[rows_class(m)];
}

int td_vko_fuses_ln(const td_vko *o, int m)
{
    enum td_vko_rows k = rows_kernel(o, m);
    return m <= o->matvec_rows || k == TD_VKO_ROWS_MATVEC || k == TD_VKO_ROWS_MATVEC4;
}

int td_vko_takes_qkv(const td_vko *o, int m)
{
    return m <= o->matvec_rows || rows_kernel(o, m) != TD_VKO_ROWS_PATH;
}

const char *td_vko_rows_name(enum td_vko_rows k)
{
    switch (k) {
    case TD_VKO_ROWS_MATVEC: return "matvec";
    case TD_VKO_ROWS_MATVEC4: return "matvec4";
    case TD_VKO_ROWS_MATROWS: return "matrows";
    case TD_VKO_ROWS_MATROWS2: return "matrows2";
    default: return "path";
    }
}

void td_vko_set_rows(td_vko *o, enum td_vko_rows k)
{
    for (int c = 0; c < TD_VKO_ROWS_CLASSES; c++) {
        if (o->rows_pick[c] != k)
            o->gen++;
        o->rows_pick[c] = k;
    }
}

/* matvec.comp's own flags (beside the TD_VKO_* ones and matmul_cm's CM_VEC) and columns per
 * workgroup */
#define MV_W16 256u
#define MV_A16 512u
#define MV_COLS 4u

static uint32_t cdiv(uint32_t a, uint32_t b)
{
    return (a + b - 1) / b;
}

/* ------------------------------------------------------------------ */
/* The decoder step as one dispatch (dec_step.comp)                      */

typedef struct step_push {
    uint64_t heads, params, sync, report;
    uint32_t n_phases;
} step_push;

/* The phases held as one dec_step dispatch: their table written into
 * step_tab by the command buffer itself (so that a kept recording's
 * replay writes it again), then the dispatch, which waits for it and for
 * what came before. Where the tables of this recording left no room, each
 * phase is dispatched on its own. */
static void step_flush(td_vko *o)
{
    step_capture *c = o->cap;
    int n = c ? c->n : 0;
    if (n == 0)
        return;
    c->n = 0;
    uint64_t hb = (uint64_t)n * 16, bytes = hb + (uint64_t)n * STEP_PARAM_BYTES;
    if (c->off + bytes > STEP_TAB_BYTES) {
        for (int i = 0; i < n; i++)
            td_vk_dispatch(o->vk, c->pipe[i], c->param[i], c->head[i][1], c->head[i][2],
                           c->head[i][3]);
        return;
    }
    memcpy(c->stage, c->head, (size_t)hb);
    memcpy(c->stage + hb, c->param, (size_t)n * STEP_PARAM_BYTES);
    /* no barrier before the write: what read this part of the table (a
     * step of an earlier submission, which the host waited for, or of
     * this recording at another offset) is done; the dispatch's barrier
     * waits for it */
    /* (phases are never held inside a concurrent stretch: the dispatch
     * would then wait for nothing) */
    assert(!td_vk_concurrent_get(o->vk));
    td_vk_concurrent(o->vk, 1);
    td_vk_update(o->vk, &o->step_tab, c->off, c->stage, bytes);
    td_vk_concurrent(o->vk, 0);
    uint64_t t = o->step_tab.addr + c->off;
    step_push sp = {t, t + hb, o->step_sync.addr, o->step_report.addr, (uint32_t)n};
    td_vk_dispatch(o->vk, o->dec_step[c->mr == 8], &sp, (uint32_t)o->step_groups, 1, 1);
    c->off += (bytes + 255) & ~(uint64_t)255;
}

/* Hold a dispatch of pipe (push: bytes of its push constants) as a
 * phase of kind, if a step is being recorded; mr: its products' rows
 * (1 or 8; 0 for an attention, which goes with either). 0: not held,
 * dispatch it. */
static int step_take(td_vko *o, td_vk_pipe *pipe, int kind, int mr, const void *push,
                     size_t bytes, uint32_t gx, uint32_t gy, uint32_t gz)
{
    step_capture *c = o->cap;
    if (!c || !c->on || gx == 0 || gy == 0 || gz == 0)
        return 0;
    if (c->n == STEP_MAX_PHASES || (mr && c->mr && mr != c->mr))
        step_flush(o);
    if (c->n == 0)
        c->mr = 0;
    if (mr)
        c->mr = mr;
    int i = c->n++;
    c->pipe[i] = pipe;
    c->head[i][0] = (uint32_t)kind;
    c->head[i][1] = gx;
    c->head[i][2] = gy;
    c->head[i][3] = gz;
    memset(c->param[i], 0, STEP_PARAM_BYTES);
    memcpy(c->param[i], push, bytes);
    return 1;
}

/* Every other dispatch of these ops: the phases held go first. */
static void ops_dispatch(td_vko *o, td_vk_pipe *p, const void *push, uint32_t gx, uint32_t gy,
                         uint32_t gz)
{
    step_flush(o);
    td_vk_dispatch(o->vk, p, push, gx, gy, gz);
}

static void ops_dispatch_indirect(td_vko *o, td_vk_pipe *p, const void *push,
                                  const td_vk_buf *args, uint64_t off)
{
    step_flush(o);
    td_vk_dispatch_indirect(o->vk, p, push, args, off);
}

void td_vko_step_begin(td_vko *o)
{
    if (o->step_groups > 0 && o->cap) {
        o->cap->on = 1;
        o->cap->n = 0;
        o->cap->off = 0;
    }
}

void td_vko_step_end(td_vko *o)
{
    if (o->cap && o->cap->on) {
        step_flush(o);
        o->cap->on = 0;
    }
}

int td_vko_step_failed(td_vko *o, td_error *err)
{
    if (!o->step_bufs)
        return 0;
    volatile uint32_t *report = o->step_report.map;
    if (report[0] == 0)
        return 0;
    report[0] = 0;
    o->step_groups = 0;
    if (o->cap)
        o->cap->on = 0;
    if (td_vk_fill0(o->vk, &o->step_sync, 0, 16, err) != TD_OK)
        return -1;
    return 1;
}

void td_vko_step_groups_unchecked(td_vko *o, int groups)
{
    if (o->step_bufs && o->cap && groups > 0)
        o->step_groups = groups;
}

int td_vko_step_groups(const td_vko *o)
{
    return o->step_groups;
}

/* The check at setup: N_PROBE empty phases of dec_step[mr8] on a grid of
 * groups, whose barriers all pass only where every workgroup is resident
 * at once. */
static int step_probe(td_vko *o, int mr8, int groups, int *ok, td_error *err)
{
    enum { N_PROBE = 64 };
    *ok = 0;
    step_capture *c = o->cap;
    memset(c->head, 0, sizeof c->head[0] * N_PROBE);
    memset(c->param, 0, sizeof c->param[0] * N_PROBE);
    uint64_t hb = N_PROBE * 16, bytes = hb + (uint64_t)N_PROBE * STEP_PARAM_BYTES;
    memcpy(c->stage, c->head, hb);
    memcpy(c->stage + hb, c->param, (size_t)N_PROBE * STEP_PARAM_BYTES);
    int rc = td_vk_fill0(o->vk, &o->step_sync, 0, 16, err);
    if (rc == TD_OK)
        rc = td_vk_begin(o->vk, err);
    if (rc != TD_OK)
        return rc;
    td_vk_update(o->vk, &o->step_tab, 0, c->stage, bytes);
    uint64_t t = o->step_tab.addr;
    step_push sp = {t, t + hb, o->step_sync.addr, o->step_report.addr, N_PROBE};
    td_vk_dispatch(o->vk, o->dec_step[mr8], &sp, (uint32_t)groups, 1, 1);
    uint32_t w[3];
    if ((rc = td_vk_submit(o->vk, err)) != TD_OK ||
        (rc = td_vk_download(o->vk, &o->step_sync, 0, w, sizeof w, err)) != TD_OK)
        return rc;
    volatile uint32_t *report = o->step_report.map;
    *ok = w[0] == 0 && w[1] == N_PROBE - 1 && w[2] == 0 && report[0] == 0;
    report[0] = 0;
    if (!*ok) /* leave the words as a dispatch expects them */
        rc = td_vk_fill0(o->vk, &o->step_sync, 0, 16, err);
    return rc;
}

int td_vko_step_setup(td_vko *o, int groups, char *why, size_t why_len, td_error *err)
{
    o->step_groups = 0;
    if (groups == 0) {
        snprintf(why, why_len, "decoder step: one dispatch a product (the one-dispatch step off)");
        return TD_OK;
    }
    if (o->d_text != 64) {
        snprintf(why, why_len, "decoder step: one dispatch a product (heads of %d: the "
                 "one-dispatch step takes 64)", o->d_text);
        return TD_OK;
    }
    int rc = TD_OK;
    if (!o->dec_step[0]) {
        if ((rc = td_vk_pipe_create(o->vk, "dec_step", td_vks_dec_step_DS_MR1,
                                    td_vks_dec_step_DS_MR1_words, sizeof(step_push), NULL, 0,
                                    &o->dec_step[0], err)) != TD_OK ||
            (rc = td_vk_pipe_create(o->vk, "dec_step_r8", td_vks_dec_step_DS_MR8,
                                    td_vks_dec_step_DS_MR8_words, sizeof(step_push), NULL, 0,
                                    &o->dec_step[1], err)) != TD_OK)
            return rc;
    }
    if (!o->cap && !(o->cap = td_vk_calloc(1, sizeof *o->cap)))
        return td_error_set(err, TD_ENOMEM, "vulkan: out of memory");
    if (!o->step_bufs) {
        if ((rc = td_vk_buf_create(o->vk, STEP_TAB_BYTES, TD_VK_MEM_DEVICE, &o->step_tab, err)) !=
            TD_OK)
            return rc;
        if ((rc = td_vk_buf_create(o->vk, 16, TD_VK_MEM_DEVICE, &o->step_sync, err)) != TD_OK) {
            td_vk_buf_destroy(o->vk, &o->step_tab);
            return rc;
        }
        if ((rc = td_vk_buf_create(o->vk, 16, TD_VK_MEM_HOST, &o->step_report, err)) !=
            TD_OK) {
            td_vk_buf_destroy(o->vk, &o->step_tab);
            td_vk_buf_destroy(o->vk, &o->step_sync);
            return rc;
        }
        memset(o->step_report.map, 0, 16);
        o->step_bufs = 1;
    }
    int ok = 1;
    for (int mr = 0; mr < 2 && ok; mr++) /* both compilations: their registers differ */
        if ((rc = step_probe(o, mr, groups, &ok, err)) != TD_OK)
            return rc;
    if (!ok) {
        snprintf(why, why_len, "decoder step: one dispatch a product (a grid of %d workgroups "
                 "was not resident at once)", groups);
        return TD_OK;
    }
    o->step_groups = groups;
    snprintf(why, why_len, "decoder step: one dispatch, %d workgroups", groups);
    return TD_OK;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* matmul_cm.comp's F_VEC: A and W may be read 16 bytes at a time */
#define CM_VEC 64u
/* matmul.comp's and matmul_cm.comp's F_SPLIT: a part of K's sums, no epilogue */
#define F_SPLIT 32768u
/* the flags of a product's loads, the rest being its epilogue's (matmul_sum.comp's in a
 * split product) */
#define LOAD_FLAGS \
    (CM_VEC | TD_VKO_AHALF | TD_VKO_PROBE_SAME | TD_VKO_PROBE_NOMMA | TD_VKO_PROBE_NOLOAD)
/* a part's K range is a multiple of every product shader's K step */
#define SPLIT_STEP 64u


/* The count of parts along K for a product of m x n x k on tiles of bm x
 * bn, and each part's K range (*ks, a multiple of SPLIT_STEP): 1 for
 * none. By the card (split_parts -1): where the grid has fewer
 * workgroups than half the multiprocessors, m is at most TD_VKO_ROWS_MAX
 * (a decoder batch's rows) and k is at least TD_VKO_SPLIT_MINK_SMALL, about two workgroups a multiprocessor and no
 * more parts than k / 128; else where it has fewer than two a
 * multiprocessor and k is at least TD_VKO_SPLIT_MINK, about three
 * workgroups a multiprocessor and no more than k / 256; at most
 * TD_VKO_SPLIT_MAX parts (ranges of a multiple of 64, the last shorter). Either way no more
 * than the scratch holds (parts of m x n rounded up to 4 floats), and
 * none while dispatches may run together (one scratch). */
static uint32_t split_parts(const td_vko *o, uint32_t m, uint32_t n, uint32_t k, uint32_t bm,
                            uint32_t bn, uint32_t *ks)
{
    *ks = k;
    if (!o->split_buf || o->split_parts == 0 || td_vk_concurrent_get(o->vk) || m > 65535 ||
        k <= SPLIT_STEP)
        return 1;
    uint64_t parts;
    if (o->split_parts > 0) {
        parts = (uint64_t)o->split_parts;
    } else {
        uint64_t g = (uint64_t)cdiv(n, bn) * cdiv(m, bm);
        const td_vk_info *in = td_vk_device_info(o->vk);
        uint64_t sm = (uint64_t)in->sm_count;
        if (sm == 0 || in->vendor_id != 0x10de)
            return 1;
        if (2 * g < sm && k >= TD_VKO_SPLIT_MINK_SMALL && m <= TD_VKO_ROWS_MAX) {
            /* a decoder batch's product (64 to 256 rows): its few
             * workgroups each walk all of K, one global load's latency a
             * step, and leave most of the card idle (on an H100 a 64 x
             * 1024 x 1024 product took 54 us, 1.2 TFLOP/s): about two
             * workgroups a multiprocessor, K ranges down to 128 (its
             * medium step's products 10.2 -> 4.8 ms at 64 rows, 10.1 ->
             * 5.9 at 256, their sums included) */
            parts = (2 * sm + g - 1) / g;
            if (parts > k / 128)
                parts = k / 128;
        } else {
            if (k < TD_VKO_SPLIT_MINK || g >= 2 * sm)
                return 1;
            parts = (3 * sm + g / 2) / g;
            if (parts > k / 256)
                parts = k / 256;
        }
        if (parts > TD_VKO_SPLIT_MAX)
            parts = TD_VKO_SPLIT_MAX;
    }
    uint64_t part = (uint64_t)m * ((n + 3) & ~3u);
    if (part == 0 || parts > o->split_floats / part)
        parts = o->split_floats / part;
    if (parts < 2)
        return 1;
    uint32_t r = cdiv(cdiv(k, (uint32_t)parts), SPLIT_STEP) * SPLIT_STEP;
    parts = cdiv(k, r);
    if (parts < 2)
        return 1;
    *ks = r;
    return (uint32_t)parts;
}

/* A product split along K: prod (matmul.comp or matmul_cm.comp) on a
 * grid of gx x gy tiles writes its parts' sums to the scratch, then
 * matmul_sum.comp adds them and applies p's epilogue. */
static void linear_split(td_vko *o, const lin_push *p, td_vk_pipe *prod, uint32_t gx,
                         uint32_t gy, uint32_t parts, uint32_t ks)
{
    uint32_t ldp = (p->n + 3) & ~3u;
    lin_push q = *p;
    q.c = o->split_buf;
    q.ldc = ldp;
    q.ldadd = ks;
    q.bias = q.add = q.rowidx = 0;
    q.flags = (p->flags & LOAD_FLAGS) | F_SPLIT;
    ops_dispatch(o, prod, &q, gx, gy, parts);
    lin_push r = *p;
    r.a = o->split_buf;
    r.lda = ldp;
    r.k = parts;
    r.flags = p->flags & ~(uint32_t)LOAD_FLAGS;
    ops_dispatch(o, o->matmul_sum, &r, cdiv(p->n, 1024), p->m, 1);
}

int td_vko_cm_peak(td_vko *o, int mode, int groups, double *tflops, td_error *err)
{
    *tflops = 0;
    if (mode < 0 || mode >= TD_VKO_CM_PEAK_MODES || !o->matmul_cm[0] ||
        !td_vk_device_info(o->vk)->has_coopmat_nv) /* cm_peak.comp is NV's */
        return td_error_set(err, TD_EUNAVAILABLE, "vulkan: no cooperative-matrix rate test");
    if (groups < 0 || groups > 1 << 14)
        return td_error_set(err, TD_EINVAL, "vulkan: rate test of %d workgroups", groups);
    if (!o->cm_peak[mode]) { /* made at the first use: a benchmark's, kept off open() */
        const uint32_t *pk[TD_VKO_CM_PEAK_MODES] = {
            td_vks_cm_peak_CM_PEAK0, td_vks_cm_peak_CM_PEAK1, td_vks_cm_peak_CM_PEAK2,
            td_vks_cm_peak_CM_PEAK3, td_vks_cm_peak_CM_PEAK4, td_vks_cm_peak_CM_PEAK5,
            td_vks_cm_peak_CM_PEAK6, td_vks_cm_peak_CM_PEAK7};
        size_t pkw[TD_VKO_CM_PEAK_MODES] = {
            td_vks_cm_peak_CM_PEAK0_words, td_vks_cm_peak_CM_PEAK1_words,
            td_vks_cm_peak_CM_PEAK2_words, td_vks_cm_peak_CM_PEAK3_words,
            td_vks_cm_peak_CM_PEAK4_words, td_vks_cm_peak_CM_PEAK5_words,
            td_vks_cm_peak_CM_PEAK6_words, td_vks_cm_peak_CM_PEAK7_words};
        int rc = td_vk_pipe_create(o->vk, "cm_peak", pk[mode], pkw[mode], sizeof(pk_push), NULL,
                                   0, &o->cm_peak[mode], err);
        if (rc)
            return rc;
    }
    if (groups == 0)
        groups = 1056; /* 8 a multiprocessor of an H100 */
    const uint32_t iters = 4096;
    td_vk_buf out = {0};
    int rc = td_vk_buf_create(o->vk, (uint64_t)groups * 8 * 2048 * 4, TD_VK_MEM_DEVICE, &out, err);
    if (rc)
        return rc;
    pk_push p = {out.addr, iters};
    double best = 1e30;
    for (int t = 0; t < 4 && rc == TD_OK; t++) { /* the first is a warm-up */
        if ((rc = td_vk_begin(o->vk, err)))
            break;
        ops_dispatch(o, o->cm_peak[mode], &p, (uint32_t)groups, 1, 1);
        double t0 = now_ms();
        rc = td_vk_submit(o->vk, err);
        double dt = now_ms() - t0;
        if (t > 0 && dt < best)
            best = dt;
    }
    td_vk_buf_destroy(o->vk, &out);
    int prods = mode == 5 ? 8 : 4; /* a subgroup's products of 16 x 16 x 16 a step */
    if (rc == TD_OK)
        *tflops = (double)groups * 8 * iters * prods * 2 * 16 * 16 * 16 / (best * 1e-3) / 1e12;
    return rc;
}

int td_vko_cm_probe(td_vko *o, enum td_vko_path path, int m, int n, int k, unsigned probes,
                    double *ms, td_error *err)
{
    *ms = 0;
    if (probes & ~(unsigned)(TD_VKO_PROBE_SAME | TD_VKO_PROBE_NOMMA | TD_VKO_PROBE_NOLOAD |
                             TD_VKO_AHALF))
        return td_error_set(err, TD_EINVAL, "vulkan: probes %u", probes);
    if (m < 1 || n < 1 || k < 1 || m > 8192 || n > 16384 || k > 16384 || k % 2)
        return td_error_set(err, TD_EINVAL, "vulkan: probe of %dx%dx%d", m, n, k);
    enum td_vko_path was = o->path;
    int rc = td_vko_set_path(o, path, err);
    if (rc)
        return rc;
    if ((probes & TD_VKO_AHALF) && !td_vko_a_half_ok(o)) {
        o->path = was;
        return td_error_set(err, TD_EINVAL, "vulkan: %s takes no A as halves",
                            td_vko_path_name(path));
    }
    /* the contents do not matter to the time: left as allocated */
    td_vk_buf a = {0}, w = {0}, c = {0};
    if ((rc = td_vk_buf_create(o->vk, (uint64_t)m * k * 4, TD_VK_MEM_DEVICE, &a, err)) ||
        (rc = td_vk_buf_create(o->vk, (uint64_t)n * k * 2, TD_VK_MEM_DEVICE, &w, err)) ||
        (rc = td_vk_buf_create(o->vk, (uint64_t)m * n * 4, TD_VK_MEM_DEVICE, &c, err)))
        goto out;
    td_vko_lin l = {.m = m, .n = n, .k = k, .a = a.addr, .lda = k, .w = w.addr, .w_f16 = 1,
                    .ldw = k, .c = c.addr, .ldc = n, .flags = probes};
    double best = 1e30;
    for (int t = 0; t < 4; t++) { /* the first is a warm-up */
        if ((rc = td_vk_begin(o->vk, err)))
            goto out;
        for (int r = 0; r < 8; r++)
            td_vko_linear_x(o, &l);
        double t0 = now_ms();
        if ((rc = td_vk_submit(o->vk, err)))
            goto out;
        double dt = (now_ms() - t0) / 8;
        if (t > 0 && dt < best)
            best = dt;
    }
    *ms = best;
out:
    o->path = was;
    td_vk_buf_destroy(o->vk, &a);
    td_vk_buf_destroy(o->vk, &w);
    td_vk_buf_destroy(o->vk, &c);
    return rc;
}

void td_vko_linear_x(td_vko *o, const td_vko_lin *l)
{
    /* contracts (ops.h): the tests hold every caller to them */
    assert(!(l->flags & (TD_VKO_COLS | TD_VKO_HALF)) ||
           !(l->flags & (TD_VKO_LN | TD_VKO_QKV)));
    assert(!(l->flags & TD_VKO_HALF) || !(l->flags & TD_VKO_ACC));
    assert(!(l->flags & TD_VKO_COLS) || (l->split > 0 && l->n % l->split == 0));
    assert(!(l->flags & TD_VKO_AHALF) || (td_vko_a_half_ok(o) && l->w_f16 && l->a % 4 == 0 &&
                                          !(l->flags & (TD_VKO_LN | TD_VKO_QKV))));
    lin_push p = {l->a,    l->w,   l->bias, l->add, l->c, l->ln_w, l->ln_b, l->rowidx,
                  (uint32_t)l->m,  (uint32_t)l->n,  (uint32_t)l->k,  (uint32_t)l->lda,
                  (uint32_t)l->ldw, (uint32_t)l->ldc, (uint32_t)l->ldadd, l->flags,
                  (l->flags & TD_VKO_COLS) ? l->tab : l->c2, l->c3, (uint32_t)l->split,
                  (uint32_t)l->cofs};
    uint32_t m = (uint32_t)l->m, n = (uint32_t)l->n;
    /* column blocks and halves: the tiled and matrix-engine kernels' only */
    int path_only = (l->flags & (TD_VKO_COLS | TD_VKO_HALF | TD_VKO_AHALF)) != 0;
    enum td_vko_rows rk = path_only ? TD_VKO_ROWS_PATH : rows_kernel(o, l->m);
    if (rk == TD_VKO_ROWS_MATROWS || rk == TD_VKO_ROWS_MATROWS2) {
        if (l->w_f16 && l->w % 16 == 0 && l->ldw % 8 == 0 && l->k % 8 == 0 && l->a % 16 == 0 &&
            l->lda % 4 == 0 && !(l->flags & TD_VKO_LN)) {
            ops_dispatch(o, o->matrows[rk == TD_VKO_ROWS_MATROWS2], &p, cdiv(n, 8),
                           cdiv(m, 64), 1);
            return;
        }
        rk = TD_VKO_ROWS_MATVEC; /* what matrows cannot take */
    }
    if ((l->m <= o->matvec_rows && !path_only) || rk != TD_VKO_ROWS_PATH) {
        /* 16-byte loads where the addresses and strides allow them */
        int lnf = (l->flags & TD_VKO_LN) != 0;
        if (l->w_f16 && l->w % 16 == 0 && l->ldw % 8 == 0 && l->k % 8 == 0) {
            p.flags |= MV_W16;
            if (l->a % 16 == 0 && l->lda % 4 == 0 &&
                (!lnf || (l->ln_w % 16 == 0 && l->ln_b % 16 == 0)))
                p.flags |= MV_A16;
        }
        if (rk == TD_VKO_ROWS_MATVEC4) /* row groups along x, column groups along y */
            ops_dispatch(o, o->matvec[l->w_f16 ? 1 : 0][2], &p, cdiv(m, 8),
                           cdiv(n, MV_COLS * 4), 1);
        else {
            int r8 = l->m > 1;
            /* weights as halves, 16 bytes a load: dec_step.comp's products */
            if (l->w_f16 && (p.flags & MV_W16) &&
                step_take(o, o->matvec[1][r8], STEP_PH_MATVEC, r8 ? 8 : 1, &p, sizeof p,
                          cdiv(n, MV_COLS), 1, cdiv(m, r8 ? 8 : 1)))
                return;
            ops_dispatch(o, o->matvec[l->w_f16 ? 1 : 0][r8], &p, cdiv(n, MV_COLS), 1,
                           cdiv(m, r8 ? 8 : 1));
        }
    } else if (o->path != TD_VKO_TILED && l->w_f16 && o->matmul_cm[0]) {
        int vec = l->a % 16 == 0 && l->lda % 4 == 0 && l->w % 16 == 0 && l->ldw % 8 == 0;
        int ahalf = (l->flags & TD_VKO_AHALF) != 0;
        if (vec)
            p.flags |= CM_VEC;
        /* split along K where the grid is small: on 128 x 128 tiles on
         * the paths that take them, else on 64 x 128 */
        int scfg = cm_takes_big(o->path) && m > 64 ? cm_big(o->path) : CM_64;
        uint32_t sbm = scfg == CM_64 ? 64 : 128, ks, parts;
        if ((parts = split_parts(o, m, n, (uint32_t)l->k, sbm, 128, &ks)) > 1) {
            linear_split(o, &p, o->matmul_cm[cm_for_a(o, scfg, vec && ahalf)], cdiv(n, 128),
                         cdiv(m, sbm), parts, ks);
            return;
        }
        if ((o->path == TD_VKO_CMDIRECT || o->path == TD_VKO_CMDIRECT64) && vec && !ahalf &&
            l->k % 16 == 0 && l->n % 16 == 0) {
            int wide = o->path == TD_VKO_CMDIRECT;
            ops_dispatch(o, o->matmul_cmd[wide ? 0 : 1], &p, cdiv(n, wide ? 128 : 64),
                           cdiv(m, 64), 1);
            return;
        }
        /* 128 x 128 tiles where the grid has enough of them (coopmat, the
         * cm64x64 paths, cmahead and cm128w), else the path's small tiles: 64 x 128 (the
         * direct-load paths' fallback too), or 64 x 64 in one of three
         * shapes */
        int cfg = cm_small(o->path);
        if (cm_takes_big(o->path) &&
            (uint64_t)cdiv(n, 128) * cdiv(m, 128) >= (uint64_t)o->cm_big_min)
            cfg = cm_big(o->path);
        uint32_t bm = cfg == CM_128 || cfg == CM_128A2 || cfg == CM_128W ? 128 : 64;
        uint32_t bn = cfg == CM_6464 || cfg == CM_6464K64 || cfg == CM_6464S2 ? 64 : 128;
        ops_dispatch(o, o->matmul_cm[cm_for_a(o, cfg, vec && ahalf)], &p, cdiv(n, bn),
                       cdiv(m, bm), 1);
    }
    else {
        uint32_t ks, parts = split_parts(o, m, n, (uint32_t)l->k, 64, 64, &ks);
        if (parts > 1)
            linear_split(o, &p, o->matmul[l->w_f16 ? 1 : 0], cdiv(n, 64), cdiv(m, 64), parts, ks);
        else
            ops_dispatch(o, o->matmul[l->w_f16 ? 1 : 0], &p, cdiv(n, 64), cdiv(m, 64), 1);
    }
}

void td_vko_linear(td_vko *o, int m, int n, int k, uint64_t a, int lda, uint64_t w, int w_f16,
                   int ldw, uint64_t bias, uint64_t add, int ldadd, uint64_t c, int ldc,
                   unsigned flags)
{
    td_vko_lin l = {.m = m, .n = n, .k = k, .a = a, .lda = lda, .w = w, .w_f16 = w_f16,
                    .ldw = ldw, .bias = bias, .add = add, .ldadd = ldadd, .c = c, .ldc = ldc,
                    .flags = flags & ~(unsigned)(TD_VKO_LN | TD_VKO_ROWIDX | TD_VKO_QKV |
                                                 TD_VKO_COLS | TD_VKO_HALF | TD_VKO_AHALF)};
    td_vko_linear_x(o, &l);
}

void td_vko_layernorm(td_vko *o, int rows, int n, uint64_t x, int ldx, uint64_t w, uint64_t b,
                      uint64_t y, int ldy, uint64_t idx)
{
    ln_push p = {x, w, b, y, idx, (uint32_t)n, (uint32_t)ldx, (uint32_t)ldy, idx != 0, 1e-5f};
    ops_dispatch(o, o->layernorm, &p, (uint32_t)rows, 1, 1);
}

void td_vko_layernorm_half(td_vko *o, int rows, int n, uint64_t x, int ldx, uint64_t w,
                           uint64_t b, uint64_t y, int ldy)
{
    assert(n % 2 == 0 && ldy % 2 == 0 && y % 4 == 0);
    ln_push p = {x, w, b, y, 0, (uint32_t)n, (uint32_t)ldx, (uint32_t)ldy, 2u, 1e-5f};
    ops_dispatch(o, o->layernorm, &p, (uint32_t)rows, 1, 1);
}

int td_vko_a_half_ok(const td_vko *o)
{
    /* matmul_cm.comp's paths; the direct-load ones read A as floats, and
     * moving their products to matmul_cm.comp would run a kernel that
     * lost their trial (and change their bits) */
    return o->path != TD_VKO_TILED && o->path != TD_VKO_CMDIRECT &&
           o->path != TD_VKO_CMDIRECT64 && o->matmul_cm[0] != NULL;
}

static int enc_attn_cm_ok(const td_vko *o, int half, int ld, uint64_t q, uint64_t k,
                          uint64_t v)
{
    return o->path != TD_VKO_TILED && o->enc_attn_cm[half] && ld % 4 == 0 && q % 16 == 0 &&
           k % 16 == 0 && v % 16 == 0;
}

static void enc_attn_with(td_vko *o, td_vk_pipe *pipe, int n, int n_head, int ld, uint64_t q,
                          uint64_t k, uint64_t v, uint64_t out)
{
    ea_push p = {q, k, v, out, (uint32_t)n, (uint32_t)ld, 1.0f / sqrtf((float)o->d_audio), 0};
    uint32_t rows = pipe == o->enc_attn ? 64 : (uint32_t)o->ea_bq;
    ops_dispatch(o, pipe, &p, cdiv((uint32_t)n, rows), (uint32_t)n_head, 1);
}

/* the matrix engines' attention for q, k, v as floats (h 0) or halves */
static td_vk_pipe *enc_attn_cm_pipe(const td_vko *o, int h)
{
    return o->enc_attn_cmr[h] ? o->enc_attn_cmr[h] : o->enc_attn_cm[h];
}

void td_vko_enc_attn(td_vko *o, int n, int n_head, int ld, uint64_t q, uint64_t k, uint64_t v,
                     uint64_t out)
{
    enc_attn_with(o, enc_attn_cm_ok(o, 0, ld, q, k, v) ? enc_attn_cm_pipe(o, 0) : o->enc_attn, n,
                  n_head, ld, q, k, v, out);
}

const char *td_vko_attn_note(const td_vko *o)
{
    return o->attn_note;
}

/* enc_attn_cmr.comp against enc_attn_cm.comp on this device, for q, k and
 * v as floats and as halves: 150 rows (two blocks of 64 keys and a
 * tail; two workgroups' queries and a tail) of 2 heads of d, random in
 * [-2, 2).
 * enc_attn_cmr.comp assumes which elements of a matrix a lane holds (its
 * header says what), so it is taken only where its result is the other's
 * within 1e-3 relative L2 (they differ only in the order of their sums:
 * on an H100, about 1e-7); a compilation that is off is destroyed.
 * o->attn_note then says, per compilation (q, k, v as floats, as halves),
 * which runs and why (want: TD_VULKAN_ATTN_REG was not 0). Errors of the
 * device's run are returned (the caller fails the open). */
static int attn_reg_check(td_vko *o, int d, int want, td_error *err)
{
    if (!o->enc_attn_cm[0]) {
        snprintf(o->attn_note, sizeof o->attn_note, "attention: %s",
                 td_vk_device_info(o->vk)->has_coopmat_nv
                     ? "enc_attn.comp (heads of neither 32 nor 64)"
                     : o->matmul_cm[0]
                         ? "enc_attn.comp (KHR: heads of neither 32 nor 64, or not built)"
                     : td_vk_device_info(o->vk)->coopmat_family
                         ? "enc_attn.comp (the KHR shaders not built)"
                         : "enc_attn.comp (no matrix engines)");
        return TD_OK;
    }
    /* KHR (enc_attn_cmk.comp): no register form; the compilations are
     * checked against enc_attn.comp instead, since only lavapipe's
     * family has run them (bench/RESULTS.md), and a driver's miscompile
     * would change the encoder's output unseen */
    int khr = !td_vk_device_info(o->vk)->has_coopmat_nv;
    if (!khr && !o->enc_attn_cmr[0] && !o->enc_attn_cmr[1]) {
        snprintf(o->attn_note, sizeof o->attn_note, "attention: scores in shared memory (%s)",
                 want ? "the register shader was not built" : "TD_VULKAN_ATTN_REG=0");
        return TD_OK;
    }
    td_vk *vk = o->vk;
    enum { N = 150, HEADS = 2 };
    const int ld = HEADS * d;
    const size_t cnt = (size_t)N * ld; /* elements of q, k or v */
    float *hx = td_vk_malloc(3 * cnt * 4), *r0 = td_vk_malloc(cnt * 4), *r1 = td_vk_malloc(cnt * 4);
    td_vk_buf x = {0}, xh = {0}, o0 = {0}, o1 = {0};
    double off[2] = {0, 0};
    int checked[2] = {0, 0};
    int rc = TD_OK;
    if (!hx || !r0 || !r1) {
        rc = td_error_set(err, TD_ENOMEM, "vulkan: out of memory for the attention's check");
        goto out;
    }
    uint64_t s = 0x2545f4914f6cdd1dull;
    for (size_t i = 0; i < 3 * cnt; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        hx[i] = (float)((s >> 40) & 0xffff) / 16384.0f - 2.0f;
    }
    if ((rc = td_vk_buf_create(vk, 3 * cnt * 4, TD_VK_MEM_DEVICE, &x, err)) ||
        (rc = td_vk_buf_create(vk, 3 * cnt * 2, TD_VK_MEM_DEVICE, &xh, err)) ||
        (rc = td_vk_buf_create(vk, cnt * 4, TD_VK_MEM_DEVICE, &o0, err)) ||
        (rc = td_vk_buf_create(vk, cnt * 4, TD_VK_MEM_DEVICE, &o1, err)) ||
        (rc = td_vk_upload(vk, &x, 0, hx, 3 * cnt * 4, err)))
        goto out;
    for (int h = 0; h < 2; h++) {
        td_vk_pipe *cand = khr ? o->enc_attn_cm[h] : o->enc_attn_cmr[h];
        if (!cand)
            continue;
        const td_vk_buf *in = h ? &xh : &x;
        uint64_t es = h ? 2 : 4, q = in->addr, k = q + cnt * es, v = k + cnt * es;
        if ((rc = td_vk_begin(vk, err)))
            goto out;
        if (h)
            td_vko_to_half(o, 3 * cnt, x.addr, xh.addr);
        if (khr) /* against the tiled attention on the floats */
            enc_attn_with(o, o->enc_attn, N, HEADS, ld, x.addr, x.addr + cnt * 4,
                          x.addr + 2 * cnt * 4, o0.addr);
        else
            enc_attn_with(o, o->enc_attn_cm[h], N, HEADS, ld, q, k, v, o0.addr);
        enc_attn_with(o, cand, N, HEADS, ld, q, k, v, o1.addr);
        if ((rc = td_vk_submit(vk, err)) ||
            (rc = td_vk_download(vk, &o0, 0, r0, cnt * 4, err)) ||
            (rc = td_vk_download(vk, &o1, 0, r1, cnt * 4, err)))
            goto out;
        double num = 0, den = 0;
        for (size_t i = 0; i < cnt; i++) {
            double e = (double)r1[i] - r0[i];
            num += e * e;
            den += (double)r0[i] * r0[i];
        }
        off[h] = den > 0 ? sqrt(num / den) : 1;
        checked[h] = 1;
        /* the same sums in another order (NV, about 1e-7), or q, k, v
         * rounded to halves against floats (KHR: about 5e-4 on these
         * inputs on lavapipe); a miscompile is off by far more. NaN too. */
        if (!(off[h] < (khr ? 4e-3 : 1e-3))) {
            td_vk_pipe_destroy(vk, cand);
            if (khr)
                o->enc_attn_cm[h] = NULL;
            else
                o->enc_attn_cmr[h] = NULL;
        }
    }
    if (khr) {
        int len = snprintf(o->attn_note, sizeof o->attn_note, "attention:");
        for (int h = 0; h < 2 && len >= 0 && (size_t)len < sizeof o->attn_note; h++) {
            const char *in = h ? "halves in" : "floats in";
            size_t left = sizeof o->attn_note - (size_t)len;
            if (!checked[h])
                len += snprintf(o->attn_note + len, left, "%s %s: KHR not built", h ? ";" : "",
                                in);
            else
                len += snprintf(o->attn_note + len, left, "%s %s: %s %.1e from enc_attn.comp",
                                h ? ";" : "", in, o->enc_attn_cm[h] ? "KHR," : "KHR off,", off[h]);
        }
    } else {
        int len = snprintf(o->attn_note, sizeof o->attn_note, "attention:");
        for (int h = 0; h < 2 && len >= 0 && (size_t)len < sizeof o->attn_note; h++) {
            const char *in = h ? "halves in" : "floats in";
            size_t left = sizeof o->attn_note - (size_t)len;
            if (!o->enc_attn_cm[h])
                len += snprintf(o->attn_note + len, left, "%s %s not built", h ? ";" : "", in);
            else if (!checked[h])
                len += snprintf(o->attn_note + len, left,
                                "%s %s, scores in shared memory (no register shader)",
                                h ? ";" : "", in);
            else if (o->enc_attn_cmr[h])
                len += snprintf(o->attn_note + len, left,
                                "%s %s, scores in registers (checked: %.1e)", h ? ";" : "", in,
                                off[h]);
            else
                len += snprintf(o->attn_note + len, left,
                                "%s %s, scores in shared memory (the register shader off by %.1e)",
                                h ? ";" : "", in, off[h]);
        }
    }
out:
    td_vk_buf_destroy(vk, &x);
    td_vk_buf_destroy(vk, &xh);
    td_vk_buf_destroy(vk, &o0);
    td_vk_buf_destroy(vk, &o1);
    td_vk_free(hx);
    td_vk_free(r0);
    td_vk_free(r1);
    return rc;
}

int td_vko_enc_attn_half_ok(const td_vko *o, int ld, uint64_t q, uint64_t k, uint64_t v)
{
    return enc_attn_cm_ok(o, 1, ld, q, k, v);
}

void td_vko_enc_attn_half(td_vko *o, int n, int n_head, int ld, uint64_t q, uint64_t k,
                          uint64_t v, uint64_t out)
{
    assert(enc_attn_cm_ok(o, 1, ld, q, k, v));
    enc_attn_with(o, enc_attn_cm_pipe(o, 1), n, n_head, ld, q, k, v, out);
}

size_t td_vko_dec_part_floats(int rows, int n_head, int d, int max_keys)
{
    size_t splits = ((size_t)max_keys + TD_VKO_ATT_SPLIT - 1) / TD_VKO_ATT_SPLIT;
    return (size_t)rows * (size_t)n_head * splits * ((size_t)d + 2);
}

void td_vko_dec_attn(td_vko *o, int rows, int n_head, int ld, uint64_t q, uint64_t out,
                     uint64_t k, uint64_t v, uint64_t info, int max_keys, uint64_t part,
                     uint64_t cnt)
{
    td_vko_dec_attn_x(o, rows, n_head, ld, q, out, k, v, info, max_keys, part, cnt, 0);
}

void td_vko_dec_attn_x(td_vko *o, int rows, int n_head, int ld, uint64_t q, uint64_t out,
                       uint64_t k, uint64_t v, uint64_t info, int max_keys, uint64_t part,
                       uint64_t cnt, int kv16)
{
    uint32_t n_split = cdiv((uint32_t)max_keys, TD_VKO_ATT_SPLIT);
    da_push p = {q,   part, k, v, info, out, cnt, (uint32_t)ld, n_split,
                 1.0f / sqrtf((float)o->d_text)};
    /* heads of 64: dec_step.comp's attention */
    if (o->d_text == 64 &&
        step_take(o, kv16 ? o->dec_attn16 : o->dec_attn, kv16 ? STEP_PH_ATTN16 : STEP_PH_ATTN, 0,
                  &p, sizeof p, (uint32_t)rows, (uint32_t)n_head, n_split))
        return;
    ops_dispatch(o, kv16 ? o->dec_attn16 : o->dec_attn, &p, (uint32_t)rows, (uint32_t)n_head,
                 n_split);
}

size_t td_vko_dec_group_ints(int groups, int g)
{
    return TD_VKO_GROUP_HEAD + (size_t)groups * ((size_t)g + 1);
}

void td_vko_dec_group_head(int32_t *table, int n_groups, int n_head, int max_keys)
{
    table[0] = n_groups;
    table[1] = n_head;
    table[2] = (int32_t)cdiv((uint32_t)max_keys, TD_VKO_ATT_SPLIT);
    table[3] = 0;
}

int td_vko_has_dec_groups(const td_vko *o)
{
    return o->dec_group[0] != NULL && o->dec_group[1] != NULL;
}

/* An indirect dispatch: the number of groups depends on the sequences'
 * windows, not on the step's shape, and a step's recording is kept per
 * shape and replayed (vulkan.c's vk_decode); with the grid's size in the
 * table the recording stays the same while the host writes each step's
 * count (a grid of every row's possible group with the unused ones
 * returning at once would cost a workgroup per row and head and split,
 * most of them idle, at a window's 64 rows 56 of 64) */
void td_vko_dec_attn_groups(td_vko *o, int ld, uint64_t q, uint64_t out, uint64_t k, uint64_t v,
                            uint64_t info, const td_vk_buf *table, uint64_t table_off,
                            int max_keys, uint64_t part, uint64_t cnt, int kv16)
{
    assert(td_vko_has_dec_groups(o));
    uint32_t n_split = cdiv((uint32_t)max_keys, TD_VKO_ATT_SPLIT);
    dag_push p = {q,      part,   k,  v, info, out, cnt,
                  table->addr + table_off + TD_VKO_GROUP_HEAD * 4,
                  (uint32_t)ld, n_split, 1.0f / sqrtf((float)o->d_text), 0};
    ops_dispatch_indirect(o, o->dec_group[kv16 ? 1 : 0], &p, table, table_off);
}

int td_vko_has_dec_xcm(const td_vko *o)
{
    return o->xattn_cm[0] != NULL && o->xattn_cm[1] != NULL;
}

void td_vko_dec_xcm_head(int32_t *table, int n_groups, int n_head)
{
    table[0] = n_groups;
    table[1] = n_head;
    table[2] = 1;
    table[3] = 0;
}

/* An indirect dispatch, as td_vko_dec_attn_groups' (the same reason) */
void td_vko_dec_xattn_cm(td_vko *o, int ld, uint64_t q, uint64_t out, uint64_t k, uint64_t v,
                         uint64_t info, const td_vk_buf *table, uint64_t table_off, int kv16)
{
    /* k and v are read 4 elements at a time (16 bytes as floats, 8 as
     * halves); q and out a float at a time */
    assert(td_vko_has_dec_xcm(o) && ld % 4 == 0 && (k | v) % (kv16 ? 8 : 16) == 0);
    xcm_push p = {q,  k, v, out, info, table->addr + table_off + TD_VKO_GROUP_HEAD * 4,
                  (uint32_t)ld, 1.0f / sqrtf((float)o->d_text)};
    ops_dispatch_indirect(o, o->xattn_cm[kv16 ? 1 : 0], &p, table, table_off);
}

void td_vko_to_half(td_vko *o, size_t n, uint64_t x, uint64_t y)
{
    th_push p = {x, y, (uint32_t)(n / 2)};
    uint32_t g = cdiv((uint32_t)(n / 2), 256);
    ops_dispatch(o, o->to_half, &p, g < 65535 ? g : 65535, 1, 1);
}

void td_vko_embed(td_vko *o, int rows, int n, uint64_t tok, int tok_f16, uint64_t pos,
                  uint64_t tp, uint64_t x)
{
    emb_push p = {tok, pos, tp, x, (uint32_t)n, tok_f16 != 0};
    ops_dispatch(o, o->embed, &p, cdiv((uint32_t)n, 256), (uint32_t)rows, 1);
}

void td_vko_kv_put(td_vko *o, int rows, int n, uint64_t k, uint64_t v, uint64_t kc, uint64_t vc,
                   uint64_t dst)
{
    kv_push p = {k, v, kc, vc, dst, (uint32_t)n};
    ops_dispatch(o, o->kv_put, &p, cdiv((uint32_t)n, 256), (uint32_t)rows, 1);
}

/* ------------------------------------------------------------------ */
/* Choosing the product path per device                                 */

/* The cache file's name into path; 0 when there is no cache directory. */
static int cache_path(char *path, size_t len)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && *xdg)
        n = snprintf(path, len, "%s/tapedeck", xdg);
    else if (home && *home)
        n = snprintf(path, len, "%s/.cache/tapedeck", home);
    else
        return 0;
    if (n < 0 || (size_t)n + 32 >= len)
        return 0;
    return 1;
}

/* The 64 x 64 tile paths and cmahead passed test_vulkan_ops and the
 * backend's golden tests on an H100 (bench/RESULTS.md) but did not run
 * medium's encoder faster there (64 x 64 tiles: the K loop, not the
 * count of workgroups, holds the n = 1024 products; cmahead: 7 % faster
 * on 1500 x 1024 x 1024 alone, 0.6 ms a window slower in the encoder):
 * the trial leaves them out rather than time them at every first open for
 * nothing, and TD_VULKAN_MATMUL names them. cm128w passed the same tests
 * on an H100 and ran medium's encoder 1.4x slower (27.2 against 19.3 ms
 * a window: 4 subgroups a workgroup keep too few loads in flight): it
 * too is only named. */
static int cm_untimed(enum td_vko_path p)
{
    return p == TD_VKO_CM64X64 || p == TD_VKO_CM64X64K64 || p == TD_VKO_CM64X64S2 ||
           p == TD_VKO_CMAHEAD || p == TD_VKO_CM128W;
}

/* The cache keys' mark of the KHR extension's kernels ("k" and
 * coopmat.glsl's family), "" with NV's or none: another set of paths and
 * kernels than NV's, so that NVIDIA under TD_VULKAN_COOPMAT=khr reads no
 * answer timed on NV's */
static void khr_tag(const td_vk_info *in, char *out, size_t len)
{
    if (in->coopmat_family && !in->has_coopmat_nv)
        snprintf(out, len, "k%d", in->coopmat_family);
    else if (len)
        out[0] = '\0';
}

/* The line key for this device, driver and product shape. */
static void cache_key(const td_vko *o, int m, int n, int k, char *key, size_t len)
{
    const td_vk_info *in = td_vk_device_info(o->vk);
    /* "cm5": the tiled path's registers out of local memory (matmul.comp);
     * "cm4": the cooperative-matrix shaders' accumulators out of local
     * memory (several times faster): earlier trials timed them slow;
     * "cm5f16": the trial's products by 16 subgroups (TD_VULKAN_CM_F16);
     * then khr_tag's mark */
    char ext[8];
    khr_tag(in, ext, sizeof ext);
    snprintf(key, len, "cm5%s%s:%04x:%04x:%08x:%s:%dx%dx%d", o->cm_f16 ? "f16" : "", ext,
             in->vendor_id, in->device_id, in->driver_version, in->uuid, m, n, k);
}

/* The cached path for key (enum td_vko_path), -1 none. */
static int cache_read(const char *key)
{
    char path[4096];
    if (!cache_path(path, sizeof path))
        return -1;
    strcat(path, "/vulkan-paths");
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[512], name[32];
    int found = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) != 0 || line[kl] != ' ')
            continue;
        if (sscanf(line + kl + 1, "%31s", name) == 1)
            for (int p = TD_VKO_TILED; p < TD_VKO_NPATHS; p++)
                if (strcmp(name, td_vko_path_name((enum td_vko_path)p)) == 0)
                    found = p;
    }
    fclose(f);
    return found;
}

/* The trial cache opened for appending, its folders made first (the
 * parent, ~/.cache, then tapedeck's); NULL where that cannot be done (a
 * cache: the next open times again). */
static FILE *cache_append(void)
{
    char path[4096];
    if (!cache_path(path, sizeof path))
        return NULL;
    char *slash = strrchr(path, '/');
    *slash = 0;
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return NULL;
    *slash = '/';
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return NULL;
    strcat(path, "/vulkan-paths");
    return fopen(path, "a");
}

static void cache_write(const char *key, enum td_vko_path pick, const double *ms)
{
    FILE *f = cache_append();
    if (!f)
        return;
    fprintf(f, "%s %s", key, td_vko_path_name(pick));
    for (int p = TD_VKO_TILED; p < TD_VKO_NPATHS; p++)
        fprintf(f, " %s %.4f", td_vko_path_name((enum td_vko_path)p), ms[p]);
    fprintf(f, " ms\n");
    if (fclose(f) != 0)
        return; /* a cache: the next open tries again */
}


/* A product trial's operands and results: A, m x k floats in [-1, 1);
 * W, 4n x k halves in [-0.5, 0.5) (the MLP's first product: W's rows, C's
 * columns); two m x 4n result buffers (the reference path's and the one
 * checked) and host room to compare them. */
typedef struct trial_data {
    td_vk_buf a, w, c0, c1;
    float *r0, *r1;
} trial_data;

static void trial_data_free(td_vk *vk, trial_data *t)
{
    td_vk_buf_destroy(vk, &t->a);
    td_vk_buf_destroy(vk, &t->w);
    td_vk_buf_destroy(vk, &t->c0);
    td_vk_buf_destroy(vk, &t->c1);
    td_vk_free(t->r0);
    td_vk_free(t->r1);
    memset(t, 0, sizeof *t);
}

/* Fill *t (zeroed first) for products of up to m rows; the seed picks the
 * random operands. On failure what was made is freed. */
static int trial_data_make(td_vk *vk, int m, int n, int k, uint64_t seed, trial_data *t,
                           td_error *err)
{
    memset(t, 0, sizeof *t);
    size_t n4 = 4 * (size_t)n, na = (size_t)m * k, nw = n4 * k, nc = (size_t)m * n4;
    float *ha = td_vk_malloc(na * 4);
    uint16_t *hw = td_vk_malloc(nw * 2);
    t->r0 = td_vk_malloc(nc * 4);
    t->r1 = td_vk_malloc(nc * 4);
    int rc = TD_OK;
    if (!ha || !hw || !t->r0 || !t->r1) {
        rc = td_error_set(err, TD_ENOMEM, "vulkan: out of memory for a product trial");
        goto out;
    }
    uint64_t s = seed;
    for (size_t i = 0; i < na; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ha[i] = (float)((s >> 40) & 0xffff) / 32768.0f - 1.0f;
    }
    for (size_t i = 0; i < nw; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        /* sign, exponent 10..13, random mantissa */
        hw[i] = (uint16_t)(((s >> 63) << 15) | ((10 + ((s >> 40) & 3)) << 10) | ((s >> 20) & 0x3ff));
    }
    if ((rc = td_vk_buf_create(vk, na * 4, TD_VK_MEM_DEVICE, &t->a, err)) ||
        (rc = td_vk_buf_create(vk, nw * 2, TD_VK_MEM_DEVICE, &t->w, err)) ||
        (rc = td_vk_buf_create(vk, nc * 4, TD_VK_MEM_DEVICE, &t->c0, err)) ||
        (rc = td_vk_buf_create(vk, nc * 4, TD_VK_MEM_DEVICE, &t->c1, err)) ||
        (rc = td_vk_upload(vk, &t->a, 0, ha, na * 4, err)) ||
        (rc = td_vk_upload(vk, &t->w, 0, hw, nw * 2, err)))
        goto out;
out:
    td_vk_free(ha);
    td_vk_free(hw);
    if (rc)
        trial_data_free(vk, t);
    return rc;
}

/* The checked result's relative L2 distance from the reference over the
 * first count values (r1 against r0); 1 where the reference is all zero,
 * NaN where the checked one has a NaN. */
static double trial_rel_err(const trial_data *t, size_t count)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < count; i++) {
        double d = (double)t->r1[i] - t->r0[i];
        num += d * d;
        den += (double)t->r0[i] * t->r0[i];
    }
    return den > 0 ? sqrt(num / den) : 1;
}

/* Time reps pairs of products, m x n x k and m x 4n x k (w holds 4n rows,
 * c is m x 4n: the second product's result stays there), on the current
 * path; the best of 3. */
static int trial_time(td_vko *o, int m, int n, int k, const td_vk_buf *a, const td_vk_buf *w,
                      const td_vk_buf *c, int reps, double *ms, td_error *err)
{
    double best = 1e30;
    for (int t = 0; t < 4; t++) { /* the first is a warm-up */
        int rc = td_vk_begin(o->vk, err);
        if (rc)
            return rc;
        for (int r = 0; r < reps; r++) {
            td_vko_linear(o, m, n, k, a->addr, k, w->addr, 1, k, 0, 0, 0, c->addr, n, 0);
            td_vko_linear(o, m, 4 * n, k, a->addr, k, w->addr, 1, k, 0, 0, 0, c->addr, 4 * n, 0);
        }
        double t0 = now_ms();
        rc = td_vk_submit(o->vk, err);
        if (rc)
            return rc;
        double dt = (now_ms() - t0) / reps;
        if (t > 0 && dt < best)
            best = dt;
    }
    *ms = best;
    return TD_OK;
}

int td_vko_choose_path(td_vko *o, int m, int n, int k, char *why, size_t why_len,
                       td_error *err)
{
    const char *env = getenv("TD_VULKAN_MATMUL");
    if (env && *env && strcmp(env, "auto") != 0) {
        int want = -1;
        for (int p = TD_VKO_TILED; p < TD_VKO_NPATHS; p++)
            if (strcmp(env, td_vko_path_name((enum td_vko_path)p)) == 0)
                want = p;
        if (want < 0)
            return td_error_set(err, TD_EINVAL,
                                "vulkan: TD_VULKAN_MATMUL=%s (tiled, coopmat, coopmat64, cmdirect, "
                                "cmdirect64, cm64x64, cm64x64k64, cm64x64s2, cmahead, cm128w or "
                                "auto)",
                                env);
        int rc = td_vko_set_path(o, (enum td_vko_path)want, err);
        if (rc)
            return rc;
        snprintf(why, why_len, "products: %s (TD_VULKAN_MATMUL)", env);
        return TD_OK;
    }
    if (!o->matmul_cm[0]) {
        snprintf(why, why_len, "products: tiled (no cooperative-matrix path on this device)");
        return td_vko_set_path(o, TD_VKO_TILED, err);
    }
    if (m < 64)
        m = 64;
    if (m > 8192) /* the medium encoder's groups of 4 windows: 6000 rows */
        m = 8192;
    if (n < 64)
        n = 64;
    if (k < 64)
        k = 64;
    if (n > 4096)
        n = 4096;
    if (k > 4096)
        k = 4096;
    k &= ~1;
    char key[256];
    cache_key(o, m, n, k, key, sizeof key);
    int cached = cache_read(key);
    td_error cerr = {0};
    if (cached >= 0 && td_vko_set_path(o, (enum td_vko_path)cached, &cerr) == TD_OK) {
        snprintf(why, why_len, "products: %s (cached trial)",
                 td_vko_path_name((enum td_vko_path)cached));
        return TD_OK;
    }
    /* a cached path this open did not build (another build, a driver
     * that now refuses it): timed again */

    /* the trial: random data, each path timed, the results compared (the
     * encoder's row count matters: at 512 rows the tiled path won on the
     * H100, at 1500 the cooperative-matrix one) */
    td_vk *vk = o->vk;
    size_t n4 = 4 * (size_t)n;
    trial_data t;
    int rc = trial_data_make(vk, m, n, k, 0x9e3779b97f4a7c15ull, &t, err);
    if (rc)
        return rc;
    enum td_vko_path was = o->path;
    int have[TD_VKO_NPATHS]; /* the paths to time: those this device has */
    for (int p = TD_VKO_TILED; p < TD_VKO_NPATHS; p++)
        if (p == TD_VKO_TILED)
            have[p] = 1;
        else if (p == TD_VKO_CMDIRECT || p == TD_VKO_CMDIRECT64)
            have[p] = o->matmul_cmd[0] != NULL;
        else if (cm_untimed((enum td_vko_path)p))
            have[p] = 0;
        else
            have[p] = o->matmul_cm[cm_small((enum td_vko_path)p)] != NULL &&
                      o->matmul_cm[cm_big((enum td_vko_path)p)] != NULL;
    double ms[TD_VKO_NPATHS] = {0}, off = 0;
    int bad = -1; /* a path whose result was off (the last such) */
    enum td_vko_path pick = TD_VKO_TILED;
    /* a first round, its times dropped, brings the card's clocks up from
     * idle: otherwise the first paths timed pay for that (on the H100 the
     * second path timed once took 3.7x the third, the same shader at
     * other tile sizes, and 1.0x in the run before) */
    for (int p = TD_VKO_TILED; p < TD_VKO_NPATHS; p++) {
        if (!have[p])
            continue;
        o->path = (enum td_vko_path)p;
        if ((rc = trial_time(o, m, n, k, &t.a, &t.w, p == TD_VKO_TILED ? &t.c0 : &t.c1, 8,
                             &ms[p], err)))
            goto restore;
    }
    for (int p = TD_VKO_TILED; p < TD_VKO_NPATHS; p++) {
        if (!have[p])
            continue;
        o->path = (enum td_vko_path)p;
        if ((rc = trial_time(o, m, n, k, &t.a, &t.w, p == TD_VKO_TILED ? &t.c0 : &t.c1, 8,
                             &ms[p], err)))
            goto restore;
        if (p == TD_VKO_TILED) {
            if ((rc = td_vk_download(vk, &t.c0, 0, t.r0, (uint64_t)m * n4 * 4, err)))
                goto restore;
            continue;
        }
        if ((rc = td_vk_download(vk, &t.c1, 0, t.r1, (uint64_t)m * n4 * 4, err)))
            goto restore;
        double rel = trial_rel_err(&t, (size_t)m * n4);
        if (!(rel < 1e-2)) { /* NaN too: a driver that gets it wrong: never picked */
            bad = p;
            off = rel;
            ms[p] = 0;
            continue;
        }
        if (ms[p] < ms[pick])
            pick = (enum td_vko_path)p;
    }
    int len = snprintf(why, why_len, "products: %s (trial %dx%dx%d and 4n:", td_vko_path_name(pick),
                       m, n, k);
    for (int p = TD_VKO_TILED; p < TD_VKO_NPATHS && len >= 0 && (size_t)len < why_len; p++)
        if (have[p])
            len += snprintf(why + len, why_len - (size_t)len, "%s %s %.3f ms", p ? "," : "",
                        td_vko_path_name((enum td_vko_path)p), ms[p]);
    if (bad >= 0 && len >= 0 && (size_t)len < why_len)
        len += snprintf(why + len, why_len - (size_t)len, "; %s off by %.1e, left out",
                        td_vko_path_name((enum td_vko_path)bad), off);
    if (len >= 0 && (size_t)len < why_len)
        snprintf(why + len, why_len - (size_t)len, ")");
    cache_write(key, pick, ms);
    o->path = pick;
    if (o->path != was)
        o->gen++;
    goto out;
restore:
    o->path = was;
out:
    trial_data_free(vk, &t);
    return rc;
}

void td_vko_att_weights(td_vko *o, int rows, int ld, uint64_t q, uint64_t k, uint64_t kofs,
                        int nk, int h0, uint64_t out, int orow0)
{
    td_vko_att_weights_x(o, rows, ld, q, k, kofs, nk, h0, out, orow0, 0);
}

void td_vko_att_weights_x(td_vko *o, int rows, int ld, uint64_t q, uint64_t k, uint64_t kofs,
                          int nk, int h0, uint64_t out, int orow0, int k16)
{
    aw_push p = {q, k, out, (uint32_t)ld, (uint32_t)nk, (uint32_t)h0, (uint32_t)kofs,
                 (uint32_t)orow0, 1.0f / sqrtf((float)o->d_text)};
    ops_dispatch(o, k16 ? o->att_weights16 : o->att_weights, &p, (uint32_t)rows, 1, 1);
}

/* ------------------------------------------------------------------ */
/* Choosing the kernel of the batched decoder's products per row count   */

/* The cached kernels for key, one per row class: 1 when found. */
static int rows_cache_read(const char *key, enum td_vko_rows *pick)
{
    char path[4096];
    if (!cache_path(path, sizeof path))
        return 0;
    strcat(path, "/vulkan-paths");
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[512];
    size_t kl = strlen(key);
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) != 0 || line[kl] != ' ')
            continue;
        char nm[TD_VKO_ROWS_CLASSES][16];
        if (sscanf(line + kl + 1, "%15s %15s %15s %15s %15s", nm[0], nm[1], nm[2], nm[3],
                   nm[4]) != TD_VKO_ROWS_CLASSES)
            continue;
        int ok = 1;
        enum td_vko_rows got[TD_VKO_ROWS_CLASSES];
        for (int c = 0; c < TD_VKO_ROWS_CLASSES; c++) {
            got[c] = (enum td_vko_rows)-1;
            for (int k = TD_VKO_ROWS_PATH; k < TD_VKO_ROWS_N; k++)
                if (strcmp(nm[c], td_vko_rows_name((enum td_vko_rows)k)) == 0)
                    got[c] = (enum td_vko_rows)k;
            ok &= (int)got[c] >= 0;
        }
        if (ok) {
            memcpy(pick, got, sizeof got);
            found = 1;
        }
    }
    fclose(f);
    return found;
}

static void rows_cache_write(const char *key, const enum td_vko_rows *pick,
                             double ms[][TD_VKO_ROWS_N])
{
    FILE *f = cache_append();
    if (!f)
        return;
    fprintf(f, "%s", key);
    for (int c = 0; c < TD_VKO_ROWS_CLASSES; c++)
        fprintf(f, " %s", td_vko_rows_name(pick[c]));
    for (int c = 0; c < TD_VKO_ROWS_CLASSES; c++)
        fprintf(f, " %d: %.4f %.4f %.4f %.4f %.4f", 16 << c, ms[c][0], ms[c][1], ms[c][2],
                ms[c][3], ms[c][4]);
    fprintf(f, " ms\n");
    if (fclose(f) != 0)
        return; /* a cache: the next open tries again */
}

/* What a step pays for a separate LayerNorm of m rows of k floats (best
 * of 3 chains of reps after a warm-up, per LayerNorm, each after a barrier
 * as in a step), into t->c1: added to the timing of the kernels that do not
 * fuse LayerNorm (matrows), which a step runs before a third of its
 * products. */
static int trial_ln(td_vko *o, int m, int k, const trial_data *t, int reps, double *ms,
                    td_error *err)
{
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        int rc = td_vk_begin(o->vk, err);
        if (rc)
            return rc;
        for (int i = 0; i < reps; i++)
            td_vko_layernorm(o, m, k, t->a.addr, k, t->a.addr, t->a.addr + (uint64_t)k * 4,
                             t->c1.addr, k, 0);
        double t0 = now_ms();
        if ((rc = td_vk_submit(o->vk, err)))
            return rc;
        double dt = (now_ms() - t0) / reps;
        if (r > 0 && dt < best)
            best = dt;
    }
    *ms = best;
    return TD_OK;
}

int td_vko_choose_rows(td_vko *o, int n, int k, char *why, size_t why_len, td_error *err)
{
    const char *env = getenv("TD_VULKAN_ROWS");
    if (env && *env && strcmp(env, "auto") != 0) {
        int want = -1;
        for (int r = TD_VKO_ROWS_PATH; r < TD_VKO_ROWS_N; r++)
            if (strcmp(env, td_vko_rows_name((enum td_vko_rows)r)) == 0)
                want = r;
        if (want < 0)
            return td_error_set(err, TD_EINVAL,
                                "vulkan: TD_VULKAN_ROWS=%s (path, matvec, matvec4, matrows, matrows2 or auto)",
                                env);
        td_vko_set_rows(o, (enum td_vko_rows)want);
        snprintf(why, why_len, "batched steps: %s (TD_VULKAN_ROWS)", env);
        return TD_OK;
    }
    const td_vk_info *in = td_vk_device_info(o->vk);
    if (in->device_type == VK_PHYSICAL_DEVICE_TYPE_CPU) {
        /* a CPU device (lavapipe): no trial, the path's products as before */
        td_vko_set_rows(o, TD_VKO_ROWS_PATH);
        snprintf(why, why_len, "batched steps: path (a CPU device: no trial)");
        return TD_OK;
    }
    return td_vko_trial_rows(o, n, k, why, why_len, err);
}

int td_vko_trial_rows(td_vko *o, int n, int k, char *why, size_t why_len, td_error *err)
{
    const td_vk_info *in = td_vk_device_info(o->vk);
    if (n < 8 || k < 8 || n > 8192 || k > 8192 || k % 8) {
        /* widths the matrix-vector kernels do not take: the path's
         * products, as every model had before the trial */
        td_vko_set_rows(o, TD_VKO_ROWS_PATH);
        snprintf(why, why_len, "batched steps: path (width %d: no trial)", k);
        return TD_OK;
    }
    char key[256];
    /* "rows3": every kernel timed (the path, matvec, matvec4, matrows, matrows2), per
     * path, the ones that do not fuse LayerNorm with a LayerNorm dispatch added, the
     * path's products split along K as a decoder batch's are (where the caller set the
     * scratch first: "s" and the split setting, "n" for no scratch), "f16" where the
     * products with A as floats run by 16 subgroups;
     * matrows joined after the backend's tests passed with it forced on an H100, where
     * it won at 16 to 64 rows (bench/RESULTS.md). rows1 and rows2 lines (timed unsplit)
     * are not read. */
    char ext[8];
    khr_tag(in, ext, sizeof ext);
    snprintf(key, sizeof key, "rows3%s%s:s%d%s:%04x:%04x:%08x:%s:%s:%dx%d",
             o->cm_f16 ? "f16" : "", ext, o->split_parts, o->split_buf ? "" : "n", in->vendor_id,
             in->device_id, in->driver_version, in->uuid, td_vko_path_name(o->path), n, k);
    enum td_vko_rows pick[TD_VKO_ROWS_CLASSES];
    if (rows_cache_read(key, pick)) {
        for (int c = 0; c < TD_VKO_ROWS_CLASSES; c++) {
            if (o->rows_pick[c] != pick[c])
                o->gen++;
            o->rows_pick[c] = pick[c];
        }
        int len = snprintf(why, why_len, "batched steps (cached trial):");
        for (int c = 0; c < TD_VKO_ROWS_CLASSES && len >= 0 && (size_t)len < why_len; c++)
            len += snprintf(why + len, why_len - (size_t)len, " %d %s", 16 << c,
                            td_vko_rows_name(pick[c]));
        return TD_OK;
    }
    size_t n4 = 4 * (size_t)n;
    td_vk *vk = o->vk;
    enum td_vko_rows was[TD_VKO_ROWS_CLASSES];
    memcpy(was, o->rows_pick, sizeof was);
    trial_data t;
    int rc = trial_data_make(vk, TD_VKO_ROWS_MAX, n, k, 0x2545f4914f6cdd1dull, &t, err);
    if (rc)
        goto out;
    double ms[TD_VKO_ROWS_CLASSES][TD_VKO_ROWS_N] = {{0}};
    double ln_ms[TD_VKO_ROWS_CLASSES] = {0};
    for (int c = 0; c < TD_VKO_ROWS_CLASSES && (size_t)k <= n4; c++) /* c1 holds m x k */
        if ((rc = trial_ln(o, 16 << c, k, &t, 8, &ln_ms[c], err)))
            goto out;
    for (int round = 0; round < 2; round++) /* the first brings the clocks up */
        for (int c = 0; c < TD_VKO_ROWS_CLASSES; c++) {
            int m = 16 << c;
            pick[c] = TD_VKO_ROWS_PATH;
            for (int kn = TD_VKO_ROWS_PATH; kn < TD_VKO_ROWS_N; kn++) {
                td_vko_set_rows(o, (enum td_vko_rows)kn);
                const td_vk_buf *cc = kn == TD_VKO_ROWS_PATH ? &t.c0 : &t.c1;
                if (round == 1 && kn != TD_VKO_ROWS_PATH) {
                    /* NaN where the kernel is checked, so that an output it
                     * leaves unwritten fails the comparison instead of
                     * showing the kernel before's */
                    for (size_t i = 0; i < (size_t)m * n4; i++)
                        t.r1[i] = NAN;
                    if ((rc = td_vk_upload(vk, &t.c1, 0, t.r1, (uint64_t)m * n4 * 4, err)))
                        goto out;
                }
                if ((rc = trial_time(o, m, n, k, &t.a, &t.w, cc, 8, &ms[c][kn], err)))
                    goto out;
                if (!td_vko_fuses_ln(o, m)) /* a step's LayerNorm is then a dispatch */
                    ms[c][kn] += ln_ms[c];
                if (round == 0)
                    continue;
                if (kn == TD_VKO_ROWS_PATH) {
                    if ((rc = td_vk_download(vk, &t.c0, 0, t.r0, (uint64_t)m * n4 * 4, err)))
                        goto out;
                    continue;
                }
                if ((rc = td_vk_download(vk, &t.c1, 0, t.r1, (uint64_t)m * n4 * 4, err)))
                    goto out;
                if (!(trial_rel_err(&t, (size_t)m * n4) < 1e-2)) { /* wrong here: never picked */
                    ms[c][kn] = 0;
                    continue;
                }
                if (ms[c][kn] < ms[c][pick[c]])
                    pick[c] = (enum td_vko_rows)kn;
            }
        }
    memcpy(was, pick, sizeof was);
    rows_cache_write(key, pick, ms);
    int len = snprintf(why, why_len,
                       "batched steps (trial %dx%d and 4n, path/matvec/matvec4/matrows/"
                       "matrows2 ms):",
                       n, k);
    for (int c = 0; c < TD_VKO_ROWS_CLASSES && len >= 0 && (size_t)len < why_len; c++)
        len += snprintf(why + len, why_len - (size_t)len, " %d %s (%.3f %.3f %.3f %.3f %.3f)",
                        16 << c, td_vko_rows_name(pick[c]), ms[c][0], ms[c][1], ms[c][2],
                        ms[c][3], ms[c][4]);
out:
    if (rc && rc != TD_ENOMEM) {
        /* a trial that could not run costs the speed-up only: the path's
         * products, as before the trial (out of memory stays an error,
         * for the caller's smaller batch or model) */
        snprintf(why, why_len, "batched steps: path (trial failed: %s)",
                 err ? err->msg : "no reason given");
        rc = TD_OK;
    }
    for (int c = 0; c < TD_VKO_ROWS_CLASSES; c++) {
        if (o->rows_pick[c] != was[c])
            o->gen++;
        o->rows_pick[c] = was[c];
    }
    trial_data_free(vk, &t);
    return rc;
}
