/*
 * test_batcher.c: one CPU backend shared by decoder threads through
 * src/whisper/batcher.c, on a small random-weight model:
 *   - two threads, each with its own windows, prompt, beam fork (kv_copy)
 *     and steps at different positions, get the logits (host rows) and the
 *     sample() results (rows kept on the backend) that the same script gives
 *     on a backend of its own, within 1e-5 relative L2 (F32 products: the
 *     merged call runs the rows through the same kernels in another order);
 *   - the steps really merge: two clients that joined make every step
 *     together, so the backend sees half the encode and decode calls;
 *   - a client that goes idle early never holds the other's steps (the
 *     test would hang), and one that comes back is merged again;
 *   - out-of-range slots, windows and rows are refused per client.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "whisper/backend.h"
#include "whisper/batcher.h"
#include "whisper/mkmodel.h"
#include "whisper/model.h"

#define N_CLIENTS 2
#define PER_SEQ 4
#define PER_WIN 2
#define PER_ROWS 16
#define STEPS 6

static td_wmodel *g_model;
static char *g_dir;

static int setup(void **state)
{
    (void)state;
    td_wmk_spec spec;
    memset(&spec, 0, sizeof spec);
    td_error err = {0};
    if (td_wmk_dims("tiny", &spec.hp, &err) != TD_OK)
        return -1;
    spec.hp.n_audio_state = spec.hp.n_text_state = 64;
    spec.hp.n_audio_head = spec.hp.n_text_head = 2;
    spec.hp.n_audio_layer = spec.hp.n_text_layer = 2;
    spec.hp.n_audio_ctx = 32;
    spec.wtype = TD_WT_F16;
    spec.seed = 11;
    spec.vocab_count = 600;
    g_dir = make_tmpdir_named("test_batcher");
    char *path = pathf("%s/model.bin", g_dir);
    int rc = td_wmk_write(&spec, path, &err) == TD_OK && td_wmodel_open(path, &g_model, &err) == TD_OK;
    free(path);
    if (!rc)
        fprintf(stderr, "model: %s\n", err.msg);
    return rc ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    td_wmodel_close(g_model);
    rm_tree(g_dir);
    free(g_dir);
    return 0;
}

static td_wconfig per_client(void)
{
    td_wconfig c = {.n_threads = 1, .max_seq = PER_SEQ, .max_windows = PER_WIN,
                    .max_rows = PER_ROWS, .max_batch_tokens = 8,
                    .compute = TD_WCOMPUTE_F32};
    return c;
}

static void fill_mel(float *mel, size_t n, uint64_t seed)
{
    uint64_t r = seed * 7919 + 1;
    for (size_t i = 0; i < n; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        mel[i] = (float)((double)(r >> 11) / (double)(1ull << 53) * 3.0 - 1.5);
    }
}

/* What one script run records. */
typedef struct script_out {
    float *logits;          /* STEPS + 1 host-logit calls x 2 rows x n_vocab */
    int32_t top[STEPS][2];  /* sample(): the best token of each row */
    double lp[STEPS][2];
    int rc;
    char why[256];
} script_out;

/* A decoder's pattern of calls: encode two windows, a 4-token prompt in
 * slot 0 on window 0 and a 2-token one in slot 2 on window 1 (host rows),
 * fork slot 0 into slot 1, then STEPS steps over three sequences at
 * different positions, alternating host rows and sample(). `seed` makes
 * the windows and tokens this client's own. */
static void run_script(const td_wbackend_ops *ops, td_wbackend *b, uint64_t seed, int skip_sample,
                       script_out *o)
{
    const td_whparams *hp = &g_model->hp;
    size_t nv = (size_t)hp->n_vocab, n_mel = (size_t)hp->n_mels * 2 * (size_t)hp->n_audio_ctx;
    float *mel0 = malloc(n_mel * sizeof *mel0), *mel1 = malloc(n_mel * sizeof *mel1);
    float *rows = malloc(3 * nv * sizeof *rows);
    assert_non_null(mel0);
    assert_non_null(mel1);
    assert_non_null(rows);
    fill_mel(mel0, n_mel, seed);
    fill_mel(mel1, n_mel, seed + 100);
    td_error err = {0};
    int windows[2] = {0, 1};
    const float *mels[2] = {mel0, mel1};
    o->rc = ops->encode(b, 2, windows, mels, &err);
    int32_t base = (int32_t)(seed * 37 % 400);
    int32_t prompt[6] = {base + 1, base + 2, base + 3, base + 4, base + 5, base + 6};
    td_wseq q[3] = {{.slot = 0, .window = 0, .n_past = 0, .n_tokens = 4},
                    {.slot = 2, .window = 1, .n_past = 0, .n_tokens = 2}};
    if (o->rc == TD_OK)
        o->rc = ops->decode(b, 2, q, prompt, 0, rows, &err);
    if (o->rc == TD_OK)
        memcpy(o->logits, rows, 2 * nv * sizeof *rows);
    td_wkv_copy fork = {.src = 0, .dst = 1, .n_pos = 4};
    if (o->rc == TD_OK)
        o->rc = ops->kv_copy(b, 1, &fork, &err);
    int past[3] = {4, 4, 2};
    int slot_of[3] = {0, 1, 2}, win_of[3] = {0, 0, 1};
    td_wsampler sp = {.eot = g_model->sp.eot, .blank = -1, .ts_begin = -1, .nospeech = -1, .k = 2};
    for (int s = 0; s < STEPS && o->rc == TD_OK; s++) {
        int32_t tok[3];
        for (int i = 0; i < 3; i++) {
            q[i] = (td_wseq){.slot = slot_of[i], .window = win_of[i], .n_past = past[i], .n_tokens = 1};
            tok[i] = base + 10 + 3 * s + i;
            past[i]++;
        }
        int use_sample = (s & 1) && ops->sample && !skip_sample;
        o->rc = ops->decode(b, 3, q, tok, 0, use_sample ? NULL : rows, &err);
        if (o->rc != TD_OK)
            break;
        if (use_sample) {
            td_wsample_in in[2] = {{.row = 0}, {.row = 2}};
            td_wsample_out out[2];
            o->rc = ops->sample(b, &sp, 2, in, out, &err);
            for (int i = 0; i < 2 && o->rc == TD_OK; i++) {
                o->top[s][i] = out[i].top[0];
                o->lp[s][i] = out[i].top_lp[0];
            }
        } else {
            /* rows 0 and 2: one of each window */
            memcpy(o->logits + (size_t)(s + 1) * 2 * nv, rows, nv * sizeof *rows);
            memcpy(o->logits + ((size_t)(s + 1) * 2 + 1) * nv, rows + 2 * nv, nv * sizeof *rows);
        }
    }
    if (o->rc != TD_OK)
        snprintf(o->why, sizeof o->why, "%s", err.msg);
    free(mel0);
    free(mel1);
    free(rows);
}

static size_t logit_floats(void)
{
    return (size_t)(STEPS + 1) * 2 * (size_t)g_model->hp.n_vocab;
}

static double rel_l2(const float *a, const float *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

typedef struct thread_arg {
    td_wbatcher *bt;
    int index;
    uint64_t seed;
    int rounds;             /* scripts run one after another, idle between */
    script_out out;
} thread_arg;

static void *client_thread(void *p)
{
    thread_arg *a = p;
    const td_wbackend_ops *ops;
    td_wbackend *b;
    td_wbatcher_client(a->bt, a->index, &ops, &b);
    for (int r = 0; r < a->rounds; r++) {
        run_script(ops, b, a->seed, 0, &a->out);
        td_wbatcher_idle(a->bt, a->index);
    }
    return NULL;
}

static void open_shared(td_wbackend **real, td_wbatcher **bt)
{
    td_wconfig per = per_client(), all = per;
    all.max_seq *= N_CLIENTS;
    all.max_windows *= N_CLIENTS;
    all.max_rows *= N_CLIENTS;
    td_error err = {0};
    if (td_wbackend_cpu.open(g_model, &all, real, &err) != TD_OK)
        fail_msg("open: %s", err.msg);
    if (td_wbatcher_new(&td_wbackend_cpu, *real, &per, N_CLIENTS, g_model->hp.n_vocab, bt, &err) !=
        TD_OK)
        fail_msg("batcher: %s", err.msg);
}

static void reference(uint64_t seed, script_out *o)
{
    td_wconfig per = per_client();
    td_wbackend *b;
    td_error err = {0};
    if (td_wbackend_cpu.open(g_model, &per, &b, &err) != TD_OK)
        fail_msg("open: %s", err.msg);
    o->logits = calloc(logit_floats(), sizeof *o->logits);
    assert_non_null(o->logits);
    run_script(&td_wbackend_cpu, b, seed, 0, o);
    assert_int_equal(o->rc, TD_OK);
    td_wbackend_cpu.close(b);
}

static void check_against(const script_out *got, const script_out *want)
{
    if (got->rc != TD_OK)
        fail_msg("client: %s", got->why);
    double e = rel_l2(got->logits, want->logits, logit_floats());
    if (!(e < 1e-5))
        fail_msg("host rows differ from the backend alone: rel L2 %.3g", e);
    for (int s = 1; s < STEPS; s += 2)
        for (int i = 0; i < 2; i++) {
            assert_int_equal(got->top[s][i], want->top[s][i]);
            assert_true(fabs(got->lp[s][i] - want->lp[s][i]) < 1e-4);
        }
}

/* Two threads at once: the same results as alone, and merged steps. */
static void test_two_clients_merge(void **state)
{
    (void)state;
    td_wbackend *real;
    td_wbatcher *bt;
    open_shared(&real, &bt);
    thread_arg a[N_CLIENTS];
    script_out want[N_CLIENTS];
    pthread_t th[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i] = (thread_arg){.bt = bt, .index = i, .seed = 3 + (uint64_t)i * 5, .rounds = 1};
        a[i].out.logits = calloc(logit_floats(), sizeof *a[i].out.logits);
        assert_non_null(a[i].out.logits);
        reference(a[i].seed, &want[i]);
    }
    /* both in from the first step, so that every step merges */
    for (int i = 0; i < N_CLIENTS; i++)
        td_wbatcher_join(bt, i);
    for (int i = 0; i < N_CLIENTS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, client_thread, &a[i]), 0);
    for (int i = 0; i < N_CLIENTS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < N_CLIENTS; i++)
        check_against(&a[i].out, &want[i]);
    td_wbatcher_stats st;
    td_wbatcher_stats_get(bt, &st);
    /* each script: 1 + STEPS decodes; lockstep after each one's first */
    assert_int_equal(st.client_steps, N_CLIENTS * (1 + STEPS));
    if (st.steps != 1 + STEPS || st.encodes != 1)
        fail_msg("%ld backend decodes for %ld client decodes, %ld encodes for %ld: the steps did "
                 "not merge", st.steps, st.client_steps, st.encodes, st.client_encodes);
    for (int i = 0; i < N_CLIENTS; i++) {
        free(a[i].out.logits);
        free(want[i].logits);
    }
    td_wbatcher_free(bt);
    td_wbackend_cpu.close(real);
}

/* One client runs one script and goes idle; the other runs three in a
 * row: it must never wait for the idle one, and its results stay right. */
static void test_idle_client_never_blocks(void **state)
{
    (void)state;
    td_wbackend *real;
    td_wbatcher *bt;
    open_shared(&real, &bt);
    thread_arg a[2];
    script_out want[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        a[i] = (thread_arg){.bt = bt, .index = i, .seed = 21 + (uint64_t)i, .rounds = i ? 3 : 1};
        a[i].out.logits = calloc(logit_floats(), sizeof *a[i].out.logits);
        assert_non_null(a[i].out.logits);
        reference(a[i].seed, &want[i]);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, client_thread, &a[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 2; i++)
        check_against(&a[i].out, &want[i]);
    td_wbatcher_stats st;
    td_wbatcher_stats_get(bt, &st);
    assert_int_equal(st.client_steps, 4 * (1 + STEPS));
    for (int i = 0; i < 2; i++) {
        free(a[i].out.logits);
        free(want[i].logits);
    }
    td_wbatcher_free(bt);
    td_wbackend_cpu.close(real);
}

/* A client's slots, windows and rows are its own partition. */
static void test_refuses_out_of_partition(void **state)
{
    (void)state;
    td_wbackend *real;
    td_wbatcher *bt;
    open_shared(&real, &bt);
    const td_wbackend_ops *ops;
    td_wbackend *b;
    td_wbatcher_client(bt, 1, &ops, &b);
    td_error err = {0};
    float *rows = malloc((size_t)g_model->hp.n_vocab * sizeof *rows);
    assert_non_null(rows);
    int32_t tok = 5;
    td_wseq q = {.slot = PER_SEQ, .window = 0, .n_past = 0, .n_tokens = 1};
    assert_int_equal(ops->decode(b, 1, &q, &tok, 0, rows, &err), TD_EINVAL);
    q = (td_wseq){.slot = 0, .window = PER_WIN, .n_past = 0, .n_tokens = 1};
    assert_int_equal(ops->decode(b, 1, &q, &tok, 0, rows, &err), TD_EINVAL);
    int32_t many[PER_ROWS + 1] = {0};
    q = (td_wseq){.slot = 0, .window = 0, .n_past = 0, .n_tokens = PER_ROWS + 1};
    assert_int_equal(ops->decode(b, 1, &q, many, 0, rows, &err), TD_EINVAL);
    int w = PER_WIN;
    const float *mel = rows;
    assert_int_equal(ops->encode(b, 1, &w, &mel, &err), TD_EINVAL);
    td_wkv_copy p = {.src = 0, .dst = PER_SEQ, .n_pos = 1};
    assert_int_equal(ops->kv_copy(b, 1, &p, &err), TD_EINVAL);
    td_wsampler sp = {.eot = g_model->sp.eot, .blank = -1, .ts_begin = -1, .nospeech = -1, .k = 1};
    td_wsample_in in = {.row = 0};
    td_wsample_out out;
    /* nothing decoded with kept rows yet */
    assert_int_equal(ops->sample(b, &sp, 1, &in, &out, &err), TD_EINVAL);
    td_wbatcher_idle(bt, 1);
    free(rows);
    td_wbatcher_free(bt);
    td_wbackend_cpu.close(real);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_clients_merge),
        cmocka_unit_test(test_idle_client_never_blocks),
        cmocka_unit_test(test_refuses_out_of_partition),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
