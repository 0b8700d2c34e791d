/*
 * vk_sample.c: the sampling step on the device (vk_sample.h): the rows'
 * masks and flags laid out for shaders/sample.comp, one dispatch, and the
 * host's part of each row in double (the same formulas as sample.c's
 * td_wsample_row, so that the results agree to float rounding, and to the
 * bit where the device left a decision to the host).
 */
#include "whisper/backend/vulkan/vk_sample.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "whisper/backend/vulkan/shaders.h"
#include "whisper/sample.h"

/* sample.comp's layout: words per row in and out, status bits, output
 * word offsets */
#define IN_WORDS 16
#define OUT_WORDS 148 /* O_TOP_X + TD_WSAMPLE_MAX_K, rounded up */
#define F_BLANK 1
#define F_TS_RULE 2
#define F_NOSPEECH 4
#define S_NAN 1u
#define S_FORCED 2u
#define S_UNCERTAIN 4u
#define S_DRAWN 8u
enum {
    O_STATUS = 0, O_RAW_MAX = 1, O_RAW_SUM = 2, O_NS_X = 3, O_TEXT_MAX = 4, O_TEXT_SUM = 5,
    O_TS_MAX = 6, O_TS_SUM = 7, O_DRAW = 8, O_DRAW_X = 9, O_TOP = 16,
    O_TOP_X = 16 + TD_WSAMPLE_MAX_K,
};
#define ALIGN 256ull

typedef struct smp_push {
    uint64_t x, sup, inp, outp;
    uint32_t nv, k, has_sup, tsb;
    int32_t blank, eot, nospeech;
} smp_push;

struct td_vks {
    td_vk *vk;
    td_vk_pipe *pipe;
    int wg;                        /* invocations per workgroup (sample.comp's WG) */
    int max_rows, nv, n_words;
    td_vk_buf mask_dev, mask_host, in, out;
    uint32_t *mask_new, *mask_cur; /* host: the list asked for, the one on the device */
    int mask_valid;
    float *row;                    /* host: one row read back for a near-tie */
    unsigned char *sampled;        /* [max_rows] */
    int kept;
    td_vks_stats st;
};

static uint64_t al(uint64_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

uint64_t td_vks_bytes(int max_rows, int n_vocab)
{
    uint64_t words = ((uint64_t)n_vocab + 31) / 32;
    return 2 * al(words * 4) + al((uint64_t)max_rows * IN_WORDS * 4) +
           al((uint64_t)max_rows * OUT_WORDS * 4);
}

void td_vks_free(td_vks *s)
{
    if (!s)
        return;
    td_vk_buf_destroy(s->vk, &s->mask_dev);
    td_vk_buf_destroy(s->vk, &s->mask_host);
    td_vk_buf_destroy(s->vk, &s->in);
    td_vk_buf_destroy(s->vk, &s->out);
    td_vk_pipe_destroy(s->vk, s->pipe);
    td_vk_free(s->mask_new);
    td_vk_free(s->mask_cur);
    td_vk_free(s->row);
    td_vk_free(s->sampled);
    td_vk_free(s);
}

/* sample.comp's shared memory at wg invocations: the radix bins and the
 * candidates (2 KB), four arrays of a word and one of two per invocation,
 * and 56 bytes of scalars */
static uint32_t shared_bytes(int wg)
{
    return 2048u + 56u + 20u * (uint32_t)wg;
}

static int wg_fits(const td_vk_info *in, int wg)
{
    return (uint32_t)wg <= in->max_invocations && shared_bytes(wg) <= in->max_shared;
}

int td_vks_create(td_vk *vk, int max_rows, int n_vocab, td_vks **out, td_error *err)
{
    const char *env = getenv("TD_VULKAN_SAMPLE_WG");
    int wg = 0; /* 0: the largest the device takes */
    if (env && *env) {
        char *end;
        errno = 0;
        long v = strtol(env, &end, 10);
        if (errno || *end || v < 1 || v > 1 << 20)
            return td_error_set(err, TD_EINVAL,
                                "vulkan sample: TD_VULKAN_SAMPLE_WG=%s (128, 256, 512 or 1024)",
                                env);
        wg = (int)v;
    }
    return td_vks_create_wg(vk, max_rows, n_vocab, wg, out, err);
}

int td_vks_wg(const td_vks *s)
{
    return s->wg;
}

int td_vks_create_wg(td_vk *vk, int max_rows, int n_vocab, int wg, td_vks **out, td_error *err)
{
    *out = NULL;
    if (max_rows < 1 || n_vocab < 1)
        return td_error_set(err, TD_EINVAL, "vulkan sample: %d rows of %d", max_rows, n_vocab);
    const td_vk_info *in = td_vk_device_info(vk);
    if (wg == 0) {
        for (wg = 1024; wg > 128 && !wg_fits(in, wg); wg /= 2)
            ;
    }
    if ((wg != 128 && wg != 256 && wg != 512 && wg != 1024) || !wg_fits(in, wg))
        return td_error_set(err, TD_EUNAVAILABLE,
                            "vulkan sample: a workgroup of %d invocations (%u bytes of shared "
                            "memory; the device takes %u invocations, %u bytes)",
                            wg, wg > 0 ? shared_bytes(wg) : 0u, in->max_invocations,
                            in->max_shared);
    td_vks *s = td_vk_calloc(1, sizeof *s);
    if (!s)
        return td_error_set(err, TD_ENOMEM, "vulkan sample: out of memory");
    s->vk = vk;
    s->wg = wg;
    s->max_rows = max_rows;
    s->nv = n_vocab;
    s->n_words = (n_vocab + 31) / 32;
    s->mask_new = td_vk_calloc((size_t)s->n_words, sizeof *s->mask_new);
    s->mask_cur = td_vk_calloc((size_t)s->n_words, sizeof *s->mask_cur);
    s->row = td_vk_malloc((size_t)n_vocab * sizeof *s->row);
    s->sampled = td_vk_calloc((size_t)max_rows, 1);
    int rc;
    if (!s->mask_new || !s->mask_cur || !s->row || !s->sampled) {
        rc = td_error_set(err, TD_ENOMEM, "vulkan sample: out of memory");
        goto fail;
    }
    uint64_t mb = (uint64_t)s->n_words * 4;
    uint32_t spec[1] = {(uint32_t)wg};
    if ((rc = td_vk_buf_create(vk, mb, TD_VK_MEM_DEVICE, &s->mask_dev, err)) ||
        (rc = td_vk_buf_create(vk, mb, TD_VK_MEM_HOST, &s->mask_host, err)) ||
        (rc = td_vk_buf_create(vk, (uint64_t)max_rows * IN_WORDS * 4, TD_VK_MEM_INPUT, &s->in,
                               err)) ||
        (rc = td_vk_buf_create(vk, (uint64_t)max_rows * OUT_WORDS * 4, TD_VK_MEM_READBACK,
                               &s->out, err)) ||
        (rc = td_vk_pipe_create(vk, "sample", td_vks_sample, td_vks_sample_words,
                                sizeof(smp_push), spec, 1, &s->pipe, err)))
        goto fail;
    *out = s;
    return TD_OK;
fail:
    td_vks_free(s);
    return rc;
}

void td_vks_kept(td_vks *s, int rows)
{
    s->kept = rows < 0 ? 0 : rows > s->max_rows ? s->max_rows : rows;
    memset(s->sampled, 0, (size_t)s->max_rows);
}

void td_vks_get_stats(const td_vks *s, td_vks_stats *st)
{
    *st = s->st;
}

static double f32(uint32_t w)
{
    float f;
    memcpy(&f, &w, sizeof f);
    return f;
}

static uint32_t bits(float f)
{
    uint32_t w;
    memcpy(&w, &f, sizeof w);
    return w;
}

/* max + log(sum of exp(x - max)), -inf for an all -inf set */
static double lse_of(uint32_t max_w, uint32_t sum_w)
{
    double mx = f32(max_w);
    return mx == -INFINITY ? -INFINITY : mx + log(f32(sum_w));
}

/* One row's output words -> out, as td_wsample_row would fill it; -1
 * when the device left the row to the host. */
static int finish(const td_wsampler *sp, int nv, int k, const td_wsample_in *in,
                   const uint32_t *o, td_wsample_out *out)
{
    out->no_speech_prob = NAN;
    out->ts_lse = -INFINITY;
    out->best_text_lp = -INFINITY;
    out->forced_ts = 0;
    out->all_masked = 0;
    out->has_nan = 0;
    out->sampled = -1;
    out->sampled_lp = -INFINITY;
    uint32_t status = o[O_STATUS];
    if (status & S_NAN) {
        out->has_nan = 1;
        return 0;
    }
    if (status & S_UNCERTAIN)
        return -1;
    if ((in->flags & TD_WSAMPLE_NOSPEECH) && sp->nospeech >= 0 && sp->nospeech < nv)
        out->no_speech_prob = exp(f32(o[O_NS_X]) - lse_of(o[O_RAW_MAX], o[O_RAW_SUM]));
    double lse = lse_of(o[O_TEXT_MAX], o[O_TEXT_SUM]), max_text = f32(o[O_TEXT_MAX]);
    if (sp->ts_begin > 0 && sp->ts_begin < nv) {
        double lse_ts = lse_of(o[O_TS_MAX], o[O_TS_SUM]);
        lse = td_logaddexp(lse, lse_ts);
        if (lse != -INFINITY) {
            out->ts_lse = lse_ts - lse;
            out->best_text_lp = max_text - lse;
        }
        if (status & S_FORCED) {
            out->forced_ts = 1;
            lse = lse_ts;
        }
    } else if (lse != -INFINITY) {
        out->best_text_lp = max_text - lse;
    }
    out->all_masked = lse == -INFINITY;
    for (int i = 0; i < k; i++) {
        out->top[i] = (int32_t)o[O_TOP + i];
        out->top_lp[i] = lse == -INFINITY ? -INFINITY : f32(o[O_TOP_X + i]) - lse;
    }
    if (in->temperature > 0) {
        if (lse == -INFINITY) {
            out->sampled = sp->eot; /* nothing to draw from, as sample.c */
        } else {
            if (!(status & S_DRAWN))
                return -1;
            out->sampled = (int32_t)o[O_DRAW];
            out->sampled_lp = f32(o[O_DRAW_X]) - lse;
        }
    }
    return 0;
}

int td_vks_run(td_vks *s, const td_vk_buf *logits, const td_wsampler *sp, int n,
               const td_wsample_in *in, td_wsample_out *out, td_error *err)
{
    int nv = s->nv;
    if (n < 0 || (n > 0 && (!in || !out)) || !sp || (sp->n_suppress > 0 && !sp->suppress))
        return td_error_set(err, TD_EINVAL, "vulkan backend: sample of %d rows", n);
    for (int i = 0; i < n; i++) {
        if (in[i].row < 0 || in[i].row >= s->kept)
            return td_error_set(err, TD_EINVAL, "vulkan backend: sample row %d of %d kept",
                                (int)in[i].row, s->kept);
        for (int j = 0; j < i; j++)
            if (in[j].row == in[i].row)
                return td_error_set(err, TD_EINVAL, "vulkan backend: sample row %d twice",
                                    (int)in[i].row);
        if (s->sampled[in[i].row])
            return td_error_set(err, TD_EINVAL, "vulkan backend: row %d was sampled already",
                                (int)in[i].row);
    }
    if (n == 0)
        return TD_OK;
    int k = sp->k < 1 ? 1 : sp->k > TD_WSAMPLE_MAX_K ? TD_WSAMPLE_MAX_K : sp->k;
    if (k > nv)
        k = nv;

    /* the suppression list as a bitmask; uploaded when it changed */
    memset(s->mask_new, 0, (size_t)s->n_words * sizeof *s->mask_new);
    int has_sup = 0;
    for (int i = 0; i < sp->n_suppress; i++) {
        int32_t id = sp->suppress[i];
        if (id >= 0 && id < nv) {
            s->mask_new[id >> 5] |= 1u << (id & 31);
            has_sup = 1;
        }
    }
    size_t mbytes = (size_t)s->n_words * sizeof *s->mask_new;
    int upload = has_sup && (!s->mask_valid || memcmp(s->mask_new, s->mask_cur, mbytes) != 0);
    if (upload) {
        memcpy(s->mask_host.map, s->mask_new, mbytes);
        s->mask_valid = 0; /* until the copy has run */
    }

    /* the rows: flags resolved as sample.c reads them */
    int nospeech = sp->nospeech >= 0 && sp->nospeech < nv ? sp->nospeech : -1;
    int32_t *w = s->in.map;
    for (int i = 0; i < n; i++) {
        const td_wsample_in *r = &in[i];
        int32_t *q = w + (size_t)i * IN_WORDS;
        memset(q, 0, IN_WORDS * sizeof *q);
        q[0] = r->row;
        q[1] = (r->flags & TD_WSAMPLE_BLANK ? F_BLANK : 0) |
               (r->flags & TD_WSAMPLE_TS_RULE ? F_TS_RULE : 0) |
               (r->flags & TD_WSAMPLE_NOSPEECH && nospeech >= 0 ? F_NOSPEECH : 0);
        q[2] = (int32_t)bits(r->temperature > 0 ? r->temperature : 0.0f);
        /* u and 1/T as float-float pairs (hi + lo) for the draw's sums */
        float u_hi = (float)r->u;
        q[3] = (int32_t)bits(u_hi);
        q[15] = (int32_t)bits((float)(r->u - u_hi));
        if (r->temperature > 0) {
            double inv = 1.0 / (double)r->temperature;
            float inv_hi = (float)inv;
            q[13] = (int32_t)bits(inv_hi);
            q[14] = (int32_t)bits((float)(inv - inv_hi));
        }
        int nr = r->n_ranges < 0 ? 0 : r->n_ranges > TD_WSAMPLE_MAX_RANGES ? TD_WSAMPLE_MAX_RANGES
                                                                         : r->n_ranges;
        q[4] = nr;
        for (int j = 0; j < nr; j++) {
            q[5 + 2 * j] = r->ranges[j][0] < 0 ? 0 : r->ranges[j][0];
            q[6 + 2 * j] = r->ranges[j][1] > nv ? nv : r->ranges[j][1];
        }
    }
    smp_push p = {logits->addr, s->mask_dev.addr, s->in.addr, s->out.addr, (uint32_t)nv,
                  (uint32_t)k, (uint32_t)has_sup,
                  (uint32_t)(sp->ts_begin > 0 && sp->ts_begin < nv ? sp->ts_begin : 0),
                  sp->blank >= 0 && sp->blank < nv ? sp->blank : -1,
                  sp->eot >= 0 && sp->eot < nv ? sp->eot : -1, nospeech};
    int rc = td_vk_begin(s->vk, err);
    if (rc)
        return rc;
    if (upload)
        td_vk_copy(s->vk, &s->mask_host, 0, &s->mask_dev, 0, mbytes);
    td_vk_dispatch(s->vk, s->pipe, &p, (uint32_t)n, 1, 1);
    if ((rc = td_vk_submit(s->vk, err)))
        return rc;
    if (upload) {
        memcpy(s->mask_cur, s->mask_new, mbytes);
        s->mask_valid = 1;
        s->st.mask_uploads++;
    }
    s->st.calls++;
    s->st.rows += n;

    const uint32_t *ow = s->out.map;
    for (int i = 0; i < n; i++) {
        if (finish(sp, nv, k, &in[i], ow + (size_t)i * OUT_WORDS, &out[i]) != 0) {
            /* a near-tie in float: the CPU's arithmetic on the row itself */
            rc = td_vk_download(s->vk, logits, (uint64_t)in[i].row * (uint64_t)nv * 4, s->row,
                                (uint64_t)nv * 4, err);
            if (rc)
                return rc;
            td_wsample_row(sp, nv, s->row, &in[i], &out[i]);
            s->st.host_rows++;
        }
    }
    for (int i = 0; i < n; i++)
        s->sampled[in[i].row] = 1;
    return TD_OK;
}
