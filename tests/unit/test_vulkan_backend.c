/*
 * test_vulkan_backend.c: the Whisper Vulkan backend (backend/vulkan/)
 * end to end on whatever Vulkan device is here (lavapipe in CI):
 *   - the golden fixtures (tests/fixtures/whisper, HF transformers in
 *     float64; see test_whisper_golden.c): encoder output and the
 *     teacher-forced logits of each random-weight set within the bounds
 *     the CPU backend meets, and the real tiny.en set on real speech when
 *     the weights are cached (for time on lavapipe, which runs the tiny
 *     encoder in tens of seconds on two cores: tiny-f32 is left out, since
 *     en-d64-f32 covers F32 weights; tiny-f16 runs only where the real
 *     set, of the same shape, cannot; the sanitizer build runs none of
 *     them, SKIP_BIG says why);
 *   - greedy decoding with timestamps through the decoding rules
 *     (decode.h) on each set: the same tokens as HF's and as the CPU
 *     backend's (f32);
 *   - batching: the logits of every sequence in a ragged batch (two
 *     windows, mixed positions and prompt lengths, a forked slot, a slot
 *     reused for another window) equal those of the same sequence run
 *     alone, and a kv_copy() fork continues as its source would;
 *   - sample() on the logits of real decode steps (every flag, ranges, a
 *     temperature draw) equals td_wsample_row() on the same logits read
 *     back: token ids exactly, log-probabilities within 2e-5; rows sampled
 *     over two calls, each once; none after a decode that returned its
 *     logits; the greedy decodes above run through it;
 *   - arguments out of range are refused, memory_need() is -1 exactly
 *     for what open() refuses;
 *   - an allocation failure injected at each allocation of open() comes
 *     back as TD_ENOMEM with nothing left alive (vk.h's counters), the
 *     shared instance's creation included; devices opened and closed from
 *     several threads share that one instance, its users counted exactly.
 * Without a usable Vulkan device the tests skip, saying why.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "golden.h"
#include "testutil.h"

#include <execinfo.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "whisper/backend.h"

#if defined(TD_HAVE_VULKAN) && TD_WBACKEND_API_VERSION >= 2

#include "util/hash.h"
#include "whisper/backend/vulkan/vk.h"
#include "whisper/backend/vulkan/ops.h"
#include "whisper/backend/vulkan/vulkan.h"
#include "whisper/ct2.h"
#include "whisper/decode.h"
#include "whisper/mel.h"
#include "whisper/mkmodel.h"
#include "whisper/model.h"
#include "whisper/sample.h"

/* test_whisper_golden.c's bounds (about 15-20 times HF float32's own
 * distance from float64): the Vulkan backend computes in float32 as the
 * CPU backend does, from the same F16-rounded weights. */
#define ENC_REL_L2 1e-5
#define ENC_MAX_ABS 5e-5
#define LOGIT_REL_L2 1e-5
#define LOGIT_MAX_ABS 2e-4
#define REAL_ENC_REL_L2 2e-5
#define REAL_ENC_MAX_ABS 3e-4
#define REAL_LOGIT_REL_L2 2e-5
#define REAL_LOGIT_MAX_ABS 5e-4
/* a sequence in a batch against the same sequence alone: only the order
 * of float sums differs (the few-row and the tiled products) */
#define BATCH_REL_L2 2e-6
/* On a cooperative-matrix path (forced by TD_VULKAN_MATMUL, or the timed
 * trial's pick on a card that has one: coopmat, coopmat64, cmdirect,
 * cmdirect64, cm64x64, cm64x64k64, cm64x64s2, cmahead, cm128w), the products of many rows and
 * the encoder's attention round their inputs to halves: about 1e-3. */
#define COOP_REL_L2 5e-3
#define COOP_MAX_ABS 5e-2
static int coop_in_use(const td_wbackend *b)
{
    return strncmp(td_wvk_path_note(b), "products: tiled", 15) != 0;
}

static const td_wbackend_ops *const VK = &td_wbackend_vulkan;
static char skip_reason[TD_ERROR_MSG_MAX];
static int have_device;
static char *fix_dir, *tmp_dir;

/* ------------------------------------------------------------ helpers */

static float *read_f32(const char *name, size_t count)
{
    return golden_read_f32(fix_dir, name, count);
}


static void check(const char *set, const char *what, golden_stats s, double rel_bound, double abs_bound)
{
    print_message("  %s %s: rel L2 %.3g, max abs %.3g (bounds %.0e, %.0e)\n", set, what, s.rel_l2,
                  s.max_abs, rel_bound, abs_bound);
    if (!(s.rel_l2 < rel_bound) || !(s.max_abs < abs_bound))
        fail_msg("%s %s: rel L2 %.3g (bound %.0e), max abs %.3g (bound %.0e)", set, what,
                 s.rel_l2, rel_bound, s.max_abs, abs_bound);
}

static golden_stats compare_rows(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0, mx = 0;
    for (size_t i = 0; i < n; i++)
        golden_acc(&num, &den, &mx, a[i], b[i]);
    return golden_finish(num, den, mx);
}

#define NEED_DEVICE()                                               \
    do {                                                            \
        if (!have_device) {                                         \
            print_message("  skipped: %s\n", skip_reason);          \
            skip();                                                 \
        }                                                           \
    } while (0)

static int setup_all(void **state)
{
    (void)state;
    fix_dir = golden_fixtures_dir();
    if (!fix_dir) {
        fprintf(stderr, "test_vulkan_backend: run from the repo root or set TAPEDECK_FIXTURES\n");
        return -1;
    }
    tmp_dir = make_tmpdir_named("td-vkb");
    td_error err = {0};
    if (VK->probe(&err) == TD_OK) {
        have_device = 1;
    } else {
        snprintf(skip_reason, sizeof skip_reason, "%s", err.msg);
    }
    return 0;
}

static int teardown_all(void **state)
{
    (void)state;
    if (tmp_dir)
        rm_tree(tmp_dir);
    free(tmp_dir);
    free(fix_dir);
    return 0;
}

/* A fixture set's meta and model (regenerated from its recorded spec, or
 * for the real set imported from the cached weights; NULL: skip). */
typedef struct fset {
    json_t *meta;
    char *path;
    td_wmodel *m;
    float *mel;
} fset;

static int fset_load(const char *name, fset *f)
{
    memset(f, 0, sizeof *f);
    char *file = pathf("%s.json", name);
    f->meta = golden_load_json(fix_dir, file, 0);
    free(file);
    f->path = pathf("%s/%s.bin", tmp_dir, name);
    if (!golden_write_model(f->meta, name, f->path)) {
        print_message("  skipped: no cached tiny.en weights (scripts/fetch-whisper-weights.sh "
                      "tiny.en)\n");
        json_decref(f->meta);
        free(f->path);
        memset(f, 0, sizeof *f);
        return 0;
    }
    td_error err = {0};
    if (td_wmodel_open(f->path, &f->m, &err) != TD_OK)
        fail_msg("%s: %s", f->path, err.msg);
    f->mel = read_f32(gj_str(f->meta, "mel.file"), (size_t)80 * TD_WMEL_WINDOW_FRAMES);
    return 1;
}

static void fset_free(fset *f)
{
    if (f->m)
        td_wmodel_close(f->m);
    if (f->path)
        unlink(f->path);
    free(f->path);
    free(f->mel);
    json_decref(f->meta);
    memset(f, 0, sizeof *f);
}

static td_wbackend *open_vk(const td_wmodel *m, int max_seq, int max_windows, td_error *err)
{
    td_wconfig cfg = {0};
    cfg.max_seq = max_seq;
    cfg.max_windows = max_windows;
    cfg.max_batch_tokens = 32;
    td_wbackend *b = NULL;
    if (VK->open(m, &cfg, &b, err) != TD_OK)
        fail_msg("vulkan open: %s", err->msg);
    const td_vk_info *in = td_wvk_device(b);
    static int told;
    if (!told++)
        print_message("  device: %s (%s), PCI %s, %s\n", in->name, in->driver,
                      in->pci[0] ? in->pci : "none", in->uuid);
    return b;
}

/* ------------------------------------------------------------ golden */

static void golden_set(const char *name, int real)
{
    fset f;
    if (!fset_load(name, &f))
        skip();
    td_error err = {0};
    /* sized for the greedy decoder below, and for window slot 2 of 3 and
     * KV slot 1 here (slots are not all 0) */
    json_t *gj = gj_get(f.meta, "greedy");
    int max_new = (int)gj_int(gj, "max_new_tokens");
    td_wdecode_opts o;
    td_wdecode_opts_default(&o);
    o.language = td_wlang_index("en");
    o.beam_size = 1;
    o.best_of = 1;
    o.n_temperatures = 1;
    o.temperatures[0] = 0.0f;
    o.max_tokens = max_new;
    td_wconfig dc = {0};
    assert_int_equal(td_wdecode_backend_config(&f.m->hp, &o, &dc), TD_OK);
    td_wconfig vc = dc;
    vc.max_seq = dc.max_seq > 2 ? dc.max_seq : 2;
    vc.max_batch_tokens = 64;
    vc.max_rows = 0;
    td_wbackend *b = NULL;
    if (VK->open(f.m, &vc, &b, &err) != TD_OK)
        fail_msg("vulkan open: %s", err.msg);
    /* greedy with timestamps through the decoding rules: HF's tokens, and
     * the CPU backend's (f32) */
    json_t *jt = gj_get(gj, "tokens");
    int n_ref = (int)json_array_size(jt);
    td_wwindow_result res[2];
    memset(res, 0, sizeof res);
    td_wbackend *cpu = NULL;
    dc.n_threads = 2;
    dc.compute = TD_WCOMPUTE_F32;
    if (td_wbackend_cpu.open(f.m, &dc, &cpu, &err) != TD_OK)
        fail_msg("cpu open: %s", err.msg);
    for (int i = 0; i < 2; i++) {
        td_wdecoder *dec = NULL;
        if (td_wdecoder_new(f.m, i ? &td_wbackend_cpu : VK, i ? cpu : b, &o, &dec, &err) != TD_OK)
            fail_msg("td_wdecoder_new: %s", err.msg);
        if (td_wdecoder_decode_window(dec, f.mel, NULL, 0, 0.0f, &res[i], &err) != TD_OK)
            fail_msg("decode_window: %s", err.msg);
        td_wdecoder_free(dec);
    }
    td_wbackend_cpu.close(cpu);
    /* the rules sampled on the device (sample(): no logits read back) */
    long s_calls, s_rows, s_host;
    td_wvk_sample_stats(b, &s_calls, &s_rows, &s_host);
    print_message("  %s: sample() on the device: %ld rows in %ld calls, %ld decided on the host\n",
                  name, s_rows, s_calls, s_host);
    assert_true(s_calls > 0 && s_rows >= s_calls);
    int n = res[0].n_tokens;
    if (n > 0 && res[0].tokens[n - 1] == f.m->sp.eot)
        n--; /* the reference lists tokens without eot */
    int same_hf = n == n_ref, same_cpu = res[0].n_tokens == res[1].n_tokens;
    for (int i = 0; i < n && same_hf; i++)
        same_hf = res[0].tokens[i] == (int32_t)json_integer_value(json_array_get(jt, (size_t)i));
    for (int i = 0; i < res[0].n_tokens && same_cpu; i++)
        same_cpu = res[0].tokens[i] == res[1].tokens[i];
    print_message("  %s greedy (vulkan): %d tokens, %s HF's, %s the CPU backend's\n", name,
                  res[0].n_tokens, same_hf ? "same as" : "DIFFERENT from",
                  same_cpu ? "same as" : "DIFFERENT from");
    assert_true(same_hf);
    assert_true(same_cpu);
    td_wwindow_result_free(&res[0]);
    td_wwindow_result_free(&res[1]);

    /* the greedy decode encoded the fixture mel into window slot 0 */
    int win = 0;

    int n_ctx = f.m->hp.n_audio_ctx, d = f.m->hp.n_audio_state;
    int step = (int)gj_int(f.meta, "encoder.row_step"), rows = (int)gj_int(f.meta, "encoder.rows");
    float *ref = read_f32(gj_str(f.meta, "encoder.file"), (size_t)rows * d);
    float *out = malloc((size_t)n_ctx * d * sizeof *out);
    assert_non_null(out);
    if (VK->encoder_output(b, win, out, &err) != TD_OK)
        fail_msg("encoder_output: %s", err.msg);
    double num = 0, den = 0, mx = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < d; c++)
            golden_acc(&num, &den, &mx, out[(size_t)r * step * d + c], ref[(size_t)r * d + c]);
    int coop = coop_in_use(b) && f.m->wtype == TD_WT_F16;
    check(name, "encoder (vulkan)", golden_finish(num, den, mx),
          coop ? COOP_REL_L2 : real ? REAL_ENC_REL_L2 : ENC_REL_L2,
          coop ? COOP_MAX_ABS : real ? REAL_ENC_MAX_ABS : ENC_MAX_ABS);
    free(ref);
    free(out);

    /* teacher-forced logits, KV slot 1, every row */
    int nv = f.m->hp.n_vocab;
    jt = gj_get(f.meta, "logits.tokens");
    int T = (int)json_array_size(jt);
    assert_true(T >= 2 && T <= 64);
    int32_t tok[64];
    for (int t = 0; t < T; t++)
        tok[t] = (int32_t)json_integer_value(json_array_get(jt, (size_t)t));
    int col_step = (int)gj_int(f.meta, "logits.col_step"), col_from = (int)gj_int(f.meta, "logits.col_from");
    int *cols = malloc((size_t)nv * sizeof *cols);
    assert_non_null(cols);
    int nc = 0;
    for (int c = 0; c < nv; c++)
        if (c % col_step == 0 || c >= col_from)
            cols[nc++] = c;
    ref = read_f32(gj_str(f.meta, "logits.file"), (size_t)T * nc);
    float *lg = malloc((size_t)T * nv * sizeof *lg);
    assert_non_null(lg);
    /* the prompt in two calls (as decoding does: prompt, then steps) */
    int first = T / 2;
    td_wseq s1 = {1, win, 0, first};
    if (VK->decode(b, 1, &s1, tok, 1, lg, &err) != TD_OK)
        fail_msg("decode: %s", err.msg);
    td_wseq s2 = {1, win, first, T - first};
    if (VK->decode(b, 1, &s2, tok + first, 1, lg + (size_t)first * nv, &err) != TD_OK)
        fail_msg("decode: %s", err.msg);
    num = den = mx = 0;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < nc; j++)
            golden_acc(&num, &den, &mx, lg[(size_t)t * nv + cols[j]], ref[(size_t)t * nc + j]);
    check(name, "logits (vulkan)", golden_finish(num, den, mx),
          coop ? COOP_REL_L2 : real ? REAL_LOGIT_REL_L2 : LOGIT_REL_L2,
          coop ? COOP_MAX_ABS : real ? REAL_LOGIT_MAX_ABS : LOGIT_MAX_ABS);
    free(ref);
    free(lg);
    free(cols);

    VK->close(b);
    fset_free(&f);
    assert_int_equal(td_vk_live(), 0);
}

/* SKIP_BIG(): a test the sanitizer build (make check runs the unit tests
 * twice) leaves to the plain build, where its work is lavapipe's
 * arithmetic (its JIT-compiled shaders are not instrumented) and cheaper
 * tests run its host code under the sanitizer; each such test says which.
 * The golden sets hold the shaders' arithmetic to HF's, on lavapipe,
 * which runs the tiny encoder in tens of seconds on two cores; their host
 * side runs under the sanitizer in the tests below: open, encode, decode
 * in a prompt and steps with every row's logits (test_cross_groups),
 * encoder_output (test_encode_batched), sample() with the decoding rules'
 * flags and ranges (test_sample_entry); and decode.c through a backend's
 * sample() in test_decode and test_whisper_golden (the CPU backend's). */
#if defined(__SANITIZE_ADDRESS__)
#define SKIP_BIG()                                                                   \
    do {                                                                             \
        print_message("  skipped under the sanitizer (the plain build runs it)\n"); \
        skip();                                                                      \
    } while (0)
#else
#define SKIP_BIG() \
    do {           \
    } while (0)
#endif

static void test_golden_en_d64(void **state)
{
    (void)state;
    NEED_DEVICE();
    SKIP_BIG();
    golden_set("en-d64-f32", 0);
}

/* The real tiny.en set has the same shape (and F16 weights); where its
 * weights are cached (make check fetches them) it stands for this one, to
 * spare lavapipe a second tiny encoder. */
static void test_golden_tiny_f16(void **state)
{
    (void)state;
    NEED_DEVICE();
    SKIP_BIG();
    char *real = golden_weights_dir("tiny.en");
    if (real) {
        free(real);
        print_message("  skipped: the real tiny.en set (same shape, F16) runs instead\n");
        skip();
    }
    golden_set("tiny-f16", 0);
}

static void test_golden_real(void **state)
{
    (void)state;
    NEED_DEVICE();
    SKIP_BIG();
    golden_set("tiny.en-real", 1);
}

/* ------------------------------------------------------------ batching */

/* Logits (last token) of one sequence alone: tokens[0..n) from position 0
 * in window slot w of ref, a one-slot context with every window encoded
 * (each call starts the slot over). */
static void alone(td_wbackend *ref, int w, const int32_t *tokens, int n, float *out)
{
    td_error err = {0};
    td_wseq s = {0, w, 0, n};
    if (VK->decode(ref, 1, &s, tokens, 0, out, &err) != TD_OK)
        fail_msg("decode: %s", err.msg);
}

/* A second window: mel (80 bins) shifted in time by shift frames and
 * scaled. Freed by the caller. */
static float *other_mel(const float *mel, int shift, float scale)
{
    float *mel2 = malloc((size_t)80 * TD_WMEL_WINDOW_FRAMES * sizeof *mel2);
    assert_non_null(mel2);
    for (int i = 0; i < 80; i++)
        for (int t = 0; t < TD_WMEL_WINDOW_FRAMES; t++)
            mel2[(size_t)i * TD_WMEL_WINDOW_FRAMES + t] =
                scale * mel[(size_t)i * TD_WMEL_WINDOW_FRAMES + (t + shift) % TD_WMEL_WINDOW_FRAMES];
    return mel2;
}

static void test_ragged_batch(void **state)
{
    (void)state;
    NEED_DEVICE();
    fset f;
    fset_load("en-d64-f32", &f);
    const td_wmodel *m = f.m;
    int nv = m->hp.n_vocab;
    float *mel2 = other_mel(f.mel, 377, 0.8f);
    const float *mels[2] = {f.mel, mel2};

    /* sequences: token streams (deterministic, in range) */
    int32_t seqtok[4][24];
    for (int s = 0; s < 4; s++)
        for (int t = 0; t < 24; t++)
            seqtok[s][t] = (int32_t)((s * 7919 + t * 104729 + 13) % 50000);
    seqtok[0][0] = seqtok[1][0] = seqtok[2][0] = seqtok[3][0] = m->sp.sot;

    td_error err = {0};
    td_wbackend *one = open_vk(m, 1, 2, &err);
    int ow[2] = {0, 1};
    if (VK->encode(one, 2, ow, mels, &err) != TD_OK) /* mel in slot 0, mel2 in slot 1 */
        fail_msg("encode: %s", err.msg);
    td_wbackend *b = open_vk(m, 6, 2, &err);
    int wins[2] = {1, 0};
    if (VK->encode(b, 2, wins, mels, &err) != TD_OK) /* mel into slot 1, mel2 into slot 0 */
        fail_msg("encode: %s", err.msg);
    /* window of each sequence (slot numbers) and its mel index */
    const int win_of[4] = {1, 0, 0, 1};
    const int mel_of[4] = {0, 1, 1, 0};
    const int slot_of[4] = {5, 0, 3, 2};
    /* step 1: prompts of different lengths (3, 7, 1, 5) */
    const int plen[4] = {3, 7, 1, 5};
    td_wseq seqs[4];
    int32_t toks[64];
    int nt = 0;
    for (int s = 0; s < 4; s++) {
        seqs[s] = (td_wseq){slot_of[s], win_of[s], 0, plen[s]};
        for (int t = 0; t < plen[s]; t++)
            toks[nt++] = seqtok[s][t];
    }
    float *lg = malloc((size_t)4 * nv * sizeof *lg), *ref = malloc((size_t)nv * sizeof *ref);
    assert_true(lg && ref);
    if (VK->decode(b, 4, seqs, toks, 0, lg, &err) != TD_OK)
        fail_msg("decode: %s", err.msg);
    double worst = 0;
    for (int s = 0; s < 4; s++) {
        alone(one, mel_of[s], seqtok[s], plen[s], ref);
        golden_stats st = compare_rows(lg + (size_t)s * nv, ref, (size_t)nv);
        if (st.rel_l2 > worst)
            worst = st.rel_l2;
    }
    /* steps 2..6: ragged single tokens, sequences 1 and 3 skip a step */
    int len[4] = {plen[0], plen[1], plen[2], plen[3]};
    for (int step = 0; step < 5; step++) {
        int n = 0, idx[4];
        nt = 0;
        for (int s = 0; s < 4; s++) {
            if ((s == 1 && step == 2) || (s == 3 && step == 0))
                continue;
            seqs[n] = (td_wseq){slot_of[s], win_of[s], len[s], 1};
            toks[nt++] = seqtok[s][len[s]];
            idx[n++] = s;
        }
        if (VK->decode(b, n, seqs, toks, 0, lg, &err) != TD_OK)
            fail_msg("decode: %s", err.msg);
        for (int i = 0; i < n; i++) {
            int s = idx[i];
            len[s]++;
            alone(one, mel_of[s], seqtok[s], len[s], ref);
            golden_stats st = compare_rows(lg + (size_t)i * nv, ref, (size_t)nv);
            if (st.rel_l2 > worst)
                worst = st.rel_l2;
        }
    }
    print_message("  ragged batch (2 windows, 4 sequences, mixed prompts and positions): worst "
                  "rel L2 against alone %.3g (bound %.0e)\n", worst, BATCH_REL_L2);
    assert_true(worst < BATCH_REL_L2);

    /* fork: sequence 0's slot into slot 4, then both continue with
     * different tokens; slot 3 (sequence 2) reused for window 1 from 0 */
    td_wkv_copy fork = {slot_of[0], 4, len[0]};
    if (VK->kv_copy(b, 1, &fork, &err) != TD_OK)
        fail_msg("kv_copy: %s", err.msg);
    int32_t alt[24];
    memcpy(alt, seqtok[0], sizeof alt);
    alt[len[0]] = 4242;
    int32_t fresh[3] = {m->sp.sot, 11, 12};
    seqs[0] = (td_wseq){slot_of[0], 1, len[0], 1};
    seqs[1] = (td_wseq){4, 1, len[0], 1};
    seqs[2] = (td_wseq){3, 1, 0, 3};
    int32_t t3[5] = {seqtok[0][len[0]], alt[len[0]], fresh[0], fresh[1], fresh[2]};
    if (VK->decode(b, 3, seqs, t3, 0, lg, &err) != TD_OK)
        fail_msg("decode: %s", err.msg);
    double wf = 0;
    alone(one, 0, seqtok[0], len[0] + 1, ref);
    wf = fmax(wf, compare_rows(lg, ref, (size_t)nv).rel_l2);
    alone(one, 0, alt, len[0] + 1, ref);
    wf = fmax(wf, compare_rows(lg + nv, ref, (size_t)nv).rel_l2);
    alone(one, 0, fresh, 3, ref);
    wf = fmax(wf, compare_rows(lg + 2 * (size_t)nv, ref, (size_t)nv).rel_l2);
    print_message("  fork by kv_copy and a reused slot: worst rel L2 %.3g\n", wf);
    assert_true(wf < BATCH_REL_L2);
    /* the forked and the source rows must differ (the token differs) */
    assert_true(compare_rows(lg, lg + nv, (size_t)nv).rel_l2 > 1e-4);

    VK->close(b);
    VK->close(one);
    free(lg);
    free(ref);
    free(mel2);
    fset_free(&f);
    assert_int_equal(td_vk_live(), 0);
}

/* var set back to saved (unset where NULL); saved freed */
static void restore_env(const char *var, char *saved)
{
    if (saved)
        assert_int_equal(setenv(var, saved, 1), 0);
    else
        assert_int_equal(unsetenv(var), 0);
    free(saved);
}

/* Open with var set to value (NULL: unset), var as it was after. */
static td_wbackend *open_vk_env(const td_wmodel *m, int max_seq, int max_windows,
                                const char *var, const char *value, td_error *err)
{
    const char *old = getenv(var);
    char *saved = old ? strdup(old) : NULL;
    if (value)
        assert_int_equal(setenv(var, value, 1), 0);
    else
        assert_int_equal(unsetenv(var), 0);
    td_wbackend *b = open_vk(m, max_seq, max_windows, err);
    restore_env(var, saved);
    return b;
}

/* var set to each of bad in turn makes memory_need() and open() refuse
 * (TD_EINVAL naming var), with nothing left alive; var unset after. */
static void refuses_values(const td_wmodel *m, const char *var, const char *const *bad, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(setenv(var, bad[i], 1), 0);
        td_wconfig cfg = {0};
        cfg.max_seq = 2;
        td_error err = {0};
        td_wbackend *b = NULL;
        long live = td_vk_live();
        assert_int_equal(VK->memory_need(&m->hp, m->wtype, &cfg), -1);
        int rc = VK->open(m, &cfg, &b, &err);
        assert_int_equal(unsetenv(var), 0);
        assert_int_equal(rc, TD_EINVAL);
        assert_null(b);
        assert_non_null(strstr(err.msg, var));
        assert_int_equal(td_vk_live(), live);
    }
}

/* What test_cross_groups and test_cross_cm share: backends b[0] and b[1],
 * opened alike but for the cross-attention's kernel, run the same steps:
 * NS sequences on two windows (10 on one, 3 on the other, interleaved:
 * more rows of a window than a group of dec_attn_group.comp takes),
 * prompts of 1 to 4 tokens, then single tokens, some sequences skipping a
 * step, every row's logits kept. exact: b[0]'s logits must be b[1]'s
 * bits; else within a relative L2 of 2e-4 per row and 1e-4 over all
 * (the matrix engines' halves: about 2e-5 on an H100), with the same
 * largest logit where b[1]'s leads its second by more than 1e-2 of its
 * spread. */
enum { CROSS_NS = 13 };
/* vulkan.c's default for the matrix-engine cross-attention, as its path
 * note says it */
#define XCM_TEST_RULE "on the matrix engines where a call's rows make it pay"
static void cross_compare(const fset *f, td_wbackend *b[2], int exact, const char *what)
{
    const td_wmodel *m = f->m;
    int nv = m->hp.n_vocab;
    float *mel2 = other_mel(f->mel, 911, 0.7f);
    const float *mels[2] = {f->mel, mel2};
    static const int win_of[CROSS_NS] = {0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0};
    int32_t seqtok[CROSS_NS][8];
    for (int s = 0; s < CROSS_NS; s++) {
        seqtok[s][0] = m->sp.sot;
        for (int t = 1; t < 8; t++)
            seqtok[s][t] = (int32_t)((s * 7919 + t * 104729 + 13) % 50000);
    }
    float *lg[2];
    for (int i = 0; i < 2; i++) {
        lg[i] = malloc((size_t)CROSS_NS * 4 * nv * sizeof *lg[i]);
        assert_non_null(lg[i]);
    }
    td_error err = {0};
    int wins[2] = {0, 1};
    for (int i = 0; i < 2; i++)
        if (VK->encode(b[i], 2, wins, mels, &err) != TD_OK)
            fail_msg("encode: %s", err.msg);
    int len[CROSS_NS] = {0};
    long rows_all = 0, same = 0;
    double num = 0, den = 0, worst = 0;
    for (int step = 0; step < 4; step++) {
        td_wseq seqs[CROSS_NS];
        int32_t toks[CROSS_NS * 4];
        int n = 0, nt = 0;
        for (int s = 0; s < CROSS_NS; s++) {
            if (step == 2 && s % 4 == 1) /* some skip a step */
                continue;
            int k = step == 0 ? 1 + s % 4 : 1; /* prompts of 1 to 4 tokens */
            seqs[n++] = (td_wseq){s, win_of[s], len[s], k};
            for (int t = 0; t < k; t++)
                toks[nt++] = seqtok[s][len[s] + t];
            len[s] += k;
        }
        /* every row's logits: each row's cross-attention output feeds them */
        for (int i = 0; i < 2; i++)
            if (VK->decode(b[i], n, seqs, toks, 1, lg[i], &err) != TD_OK)
                fail_msg("decode: %s", err.msg);
        for (int r = 0; r < nt; r++) {
            const float *g = lg[0] + (size_t)r * nv, *w = lg[1] + (size_t)r * nv;
            if (exact) {
                if (memcmp(g, w, (size_t)nv * sizeof(float)) != 0)
                    fail_msg("%s, step %d, row %d: logits differ", what, step, r);
                same++;
                continue;
            }
            double rn = 0, rd = 0;
            int ag = 0, aw = 0, second = -1;
            float lo = w[0], hi = w[0];
            for (int v = 0; v < nv; v++) {
                double e = (double)g[v] - w[v];
                rn += e * e;
                rd += (double)w[v] * w[v];
                ag = g[v] > g[ag] ? v : ag;
                aw = w[v] > w[aw] ? v : aw;
                lo = w[v] < lo ? w[v] : lo;
                hi = w[v] > hi ? w[v] : hi;
            }
            for (int v = 0; v < nv; v++)
                if (v != aw && (second < 0 || w[v] > w[second]))
                    second = v;
            double rel = rd > 0 ? sqrt(rn / rd) : 1;
            if (!(rel <= 2e-4)) /* NaN too */
                fail_msg("%s, step %d, row %d: logits off by %.3g relative L2 (bound 2e-4)", what,
                         step, r, rel);
            if (ag != aw && w[aw] - w[second] > 1e-2 * (hi - lo))
                fail_msg("%s, step %d, row %d: largest logit %d, per row %d", what, step, r, ag,
                         aw);
            same += ag == aw;
            worst = rel > worst ? rel : worst;
            num += rn;
            den += rd;
        }
        rows_all += nt;
    }
    if (exact) {
        print_message("  %s: %ld rows over 4 steps (13 sequences, 10 on one window): logits "
                      "bitwise equal (%ld)\n",
                      what, rows_all, same);
    } else {
        double rel = den > 0 ? sqrt(num / den) : 1;
        if (!(rel <= 1e-4))
            fail_msg("%s: logits off by %.3g relative L2 over all rows (bound 1e-4)", what, rel);
        print_message("  %s: %ld rows over 4 steps (13 sequences, 10 on one window): logits "
                      "relative L2 %.2e, worst row %.2e, same largest logit in %ld\n",
                      what, rows_all, rel, worst, same);
    }
    free(lg[0]);
    free(lg[1]);
    free(mel2);
}

/* The cross-attention by groups of a window's rows (TD_VULKAN_XGROUP=1)
 * against per row (=0, the default's; TD_VULKAN_XCM=0 in both, so that
 * neither runs it on the matrix engines): cross_compare's steps, whose
 * logits must be the same bits (only the cross-attention's kernel
 * differs, and it gives each row the per-row kernel's bits), with the
 * cross K/V as floats and as halves. TD_VULKAN_XGROUP other than 0 or 1
 * makes open() and memory_need() refuse, naming it. */
static void test_cross_groups(void **state)
{
    (void)state;
    NEED_DEVICE();
    fset f;
    fset_load("en-d64-f32", &f);
    const td_wmodel *m = f.m;
    /* Under the sanitizer the halves' case alone: the grouped kernel's
     * host side is the same for floats and halves but for the pipeline
     * and the element size, and the per-row path is the default every
     * other test runs; the floats' bits are the plain build's to check
     * (under the sanitizer the floats' case was 20 of the test's 40 s of
     * CPU time). */
#if defined(__SANITIZE_ADDRESS__)
    const int cross16_first = 1;
    print_message("  cross K/V as floats: the plain build's (under the sanitizer, halves only)\n");
#else
    const int cross16_first = 0;
#endif
    const char *old_xcm = getenv("TD_VULKAN_XCM");
    char *saved_xcm = old_xcm ? strdup(old_xcm) : NULL;
    assert_int_equal(setenv("TD_VULKAN_XCM", "0", 1), 0);
    for (int cross16 = cross16_first; cross16 < 2; cross16++) {
        td_error err = {0};
        if (cross16)
            assert_int_equal(setenv("TD_VULKAN_CROSS16", "1", 1), 0);
        td_wbackend *b[2] = {open_vk_env(m, CROSS_NS, 2, "TD_VULKAN_XGROUP", "1", &err),
                             open_vk_env(m, CROSS_NS, 2, "TD_VULKAN_XGROUP",
                                         cross16 ? NULL : "0", &err)};
        if (cross16)
            assert_int_equal(unsetenv("TD_VULKAN_CROSS16"), 0);
        print_message("  grouped: %s\n  per row: %s\n", td_wvk_path_note(b[0]),
                      td_wvk_path_note(b[1]));
        if (strstr(td_wvk_path_note(b[0]), "no grouped shader")) {
            VK->close(b[0]);
            VK->close(b[1]);
            restore_env("TD_VULKAN_XCM", saved_xcm);
            fset_free(&f);
            print_message("  skipped: the device builds no grouped shader\n");
            skip();
        }
        assert_non_null(strstr(td_wvk_path_note(b[0]), "by groups of a window's rows"));
        assert_non_null(strstr(td_wvk_path_note(b[1]), "cross-attention per row"));
        cross_compare(&f, b, 1,
                      cross16 ? "grouped against per row, cross K/V as halves"
                              : "grouped against per row, cross K/V as floats");
        VK->close(b[0]);
        VK->close(b[1]);
    }
    restore_env("TD_VULKAN_XCM", saved_xcm);
    /* anything but 0 or 1 is refused, naming the variable */
    static const char *const bad[] = {"2", "yes", "01x"};
    refuses_values(m, "TD_VULKAN_XGROUP", bad, sizeof bad / sizeof bad[0]);
    fset_free(&f);
    assert_int_equal(td_vk_live(), 0);
}

/* Rows *n and windows *w that the default runs on the matrix engines
 * spread over w windows (w groups), but per row over w + 1 (a group more,
 * a wave of workgroups more: the same rows, so that only the recording's
 * key tells the calls apart), on the first device's multiprocessors (the
 * backend's default device too); the fewest windows, then rows, that do. */
static void xcm_test_rows(int heads, int *n, int *w)
{
    td_error err = {0};
    td_vk *v = NULL;
    if (td_vk_open(NULL, &v, &err) != TD_OK)
        fail_msg("%s", err.msg);
    int sms = td_vk_device_info(v)->sm_count;
    td_vk_close(v);
    for (int wins = 1; wins < 64; wins++)
        for (int rows = wins + 1; rows <= 64 * wins && rows <= 1024; rows++)
            if (td_wvk_xcm_pays(rows, heads, wins * heads, sms) &&
                !td_wvk_xcm_pays(rows, heads, (wins + 1) * heads, sms)) {
                *n = rows;
                *w = wins;
                return;
            }
    fail_msg("no 1,024 rows or fewer on under 64 windows straddle the default's rule for %d "
             "heads on %d multiprocessors",
             heads, sms);
}

/* The default (TD_VULKAN_XCM=auto) on a device with the matrix-engine
 * kernel: N rows spread over W windows (the matrix engines), then the
 * same N over W + 1 (per row; xcm_test_rows picks N and W so), then the
 * first again. The calls have the same rows, logits rows and
 * self-attention split, so only the recordings' key tells them apart:
 * the second must be the per-row backend's bits (a recording kept from
 * the first, replayed, would run the matrix engines on a table nobody
 * wrote), the first and third near them (the kernel's own bound,
 * test_vulkan_ops' test_dec_xattn_cm: P and q rounded to halves) and
 * each other's bits. b_auto and b_row have windows 0 to W encoded and N
 * slots. */
static void cross_auto(const td_wmodel *m, td_wbackend *b_auto, td_wbackend *b_row, int N,
                       int W)
{
    size_t nl = (size_t)N * m->hp.n_vocab;
    float *la = malloc(nl * sizeof *la), *lr = malloc(nl * sizeof *lr),
          *first = malloc(nl * sizeof *first);
    td_wseq *seqs = malloc((size_t)N * sizeof *seqs);
    int32_t *toks = malloc((size_t)N * sizeof *toks);
    assert_true(la && lr && first && seqs && toks);
    for (int call = 0; call < 3; call++) {
        for (int s = 0; s < N; s++) {
            seqs[s] = (td_wseq){s, s % (call == 1 ? W + 1 : W), 0, 1};
            toks[s] = s == 0 ? m->sp.sot : (int32_t)((s * 7919 + 13) % 50000);
        }
        td_error err = {0};
        if (VK->decode(b_auto, N, seqs, toks, 1, la, &err) != TD_OK ||
            VK->decode(b_row, N, seqs, toks, 1, lr, &err) != TD_OK)
            fail_msg("decode: %s", err.msg);
        if (call == 1) {
            if (memcmp(la, lr, nl * sizeof *la) != 0)
                fail_msg("auto, %d rows on %d windows: logits differ from per row's (a kept "
                         "recording of them on %d windows replayed?)",
                         N, W + 1, W);
            continue;
        }
        double num = 0, den = 0, worst = 0;
        for (int s = 0; s < N; s++) {
            double rn = 0, rd = 0;
            for (int j = 0; j < m->hp.n_vocab; j++) {
                size_t i = (size_t)s * m->hp.n_vocab + (size_t)j;
                double e = (double)la[i] - lr[i];
                rn += e * e;
                rd += (double)lr[i] * lr[i];
            }
            num += rn;
            den += rd;
            double r = rd > 0 ? sqrt(rn / rd) : 1;
            worst = r > worst ? r : worst;
        }
        double rel = den > 0 ? sqrt(num / den) : 1;
        if (!(rel <= 2e-3 && worst <= 2e-3))
            fail_msg("auto, %d rows on %d windows, call %d: logits off by %.3g relative L2 "
                     "against per row, worst row %.3g (bound 2e-3)",
                     N, W, call + 1, rel, worst);
        if (call == 0)
            memcpy(first, la, nl * sizeof *la);
        else if (memcmp(first, la, nl * sizeof *la) != 0)
            fail_msg("auto, %d rows a window: the replayed call's logits differ from the first's",
                     N);
        print_message("  auto, %d rows on %d windows, call %d: relative L2 %.2e against per "
                      "row, worst row %.2e\n",
                      N, W, call + 1, rel, worst);
    }
    print_message("  auto, %d rows on %d windows: per row's bits\n", N, W + 1);
    free(seqs);
    free(toks);
    free(la);
    free(lr);
    free(first);
}

/* The cross-attention on the matrix engines (TD_VULKAN_XCM=1) against per
 * row (=0): cross_compare's steps on tiny-f16 (heads of 64, which the
 * shader takes), logits near (halves), with the cross K/V as floats and
 * as halves; then the default's choice per call (cross_auto). On a device
 * without the shader (lavapipe) =1 opens per row and says so.
 * TD_VULKAN_XGROUP is held at 0 (its grouped kernel would win).
 * TD_VULKAN_XCM other than auto, 0 or 1 makes open() and memory_need()
 * refuse, naming it. */
static void test_cross_cm(void **state)
{
    (void)state;
    NEED_DEVICE();
    fset f;
    fset_load("en-d64-f32", &f);
    static const char *const bad[] = {"2", "yes", "always", "auto1"};
    refuses_values(f.m, "TD_VULKAN_XCM", bad, sizeof bad / sizeof bad[0]);
    fset_free(&f);
    fset_load("tiny-f16", &f);
    const td_wmodel *m = f.m;
    const char *old_xg = getenv("TD_VULKAN_XGROUP");
    char *saved_xg = old_xg ? strdup(old_xg) : NULL;
    assert_int_equal(setenv("TD_VULKAN_XGROUP", "0", 1), 0);
    for (int cross16 = 0; cross16 < 2; cross16++) {
        td_error err = {0};
        const char *old_c16 = getenv("TD_VULKAN_CROSS16");
        char *saved_c16 = old_c16 ? strdup(old_c16) : NULL;
        assert_int_equal(setenv("TD_VULKAN_CROSS16", cross16 ? "1" : "0", 1), 0);
        td_wbackend *b[2] = {open_vk_env(m, CROSS_NS, 2, "TD_VULKAN_XCM", "1", &err),
                             open_vk_env(m, CROSS_NS, 2, "TD_VULKAN_XCM", "0", &err)};
        restore_env("TD_VULKAN_CROSS16", saved_c16);
        assert_non_null(b[0]);
        assert_non_null(b[1]);
        print_message("  matrix engines: %s\n  per row: %s\n", td_wvk_path_note(b[0]),
                      td_wvk_path_note(b[1]));
        assert_non_null(strstr(td_wvk_path_note(b[1]), "cross-attention per row (TD_VULKAN_XCM=0)"));
        if (strstr(td_wvk_path_note(b[0]), "per row (no matrix-engine shader on this device)")) {
            VK->close(b[0]);
            VK->close(b[1]);
            restore_env("TD_VULKAN_XGROUP", saved_xg);
            fset_free(&f);
            print_message("  skipped: the device builds no matrix-engine cross-attention\n");
            skip();
        }
        assert_non_null(strstr(td_wvk_path_note(b[0]), "on the matrix engines (TD_VULKAN_XCM=1)"));
        cross_compare(&f, b, 0,
                      cross16 ? "matrix engines against per row, cross K/V as halves"
                              : "matrix engines against per row, cross K/V as floats");
        VK->close(b[0]);
        VK->close(b[1]);
    }
    {
        td_error err = {0};
        int n = 0, w = 0;
        xcm_test_rows(m->hp.n_text_head, &n, &w);
        td_wbackend *b_auto = open_vk_env(m, n, w + 1, "TD_VULKAN_XCM", NULL, &err),
                    *b_row = open_vk_env(m, n, w + 1, "TD_VULKAN_XCM", "0", &err);
        assert_non_null(b_auto);
        assert_non_null(b_row);
        assert_non_null(strstr(td_wvk_path_note(b_auto), XCM_TEST_RULE));
        float *mel2 = other_mel(f.mel, 911, 0.7f);
        for (int i = 0; i <= w; i++) { /* the two mels in turn, a window a call */
            const float *mels[1] = {i % 2 ? mel2 : f.mel};
            int wins[1] = {i};
            if (VK->encode(b_auto, 1, wins, mels, &err) != TD_OK ||
                VK->encode(b_row, 1, wins, mels, &err) != TD_OK)
                fail_msg("encode: %s", err.msg);
        }
        cross_auto(m, b_auto, b_row, n, w);
        free(mel2);
        VK->close(b_auto);
        VK->close(b_row);
    }
    restore_env("TD_VULKAN_XGROUP", saved_xg);
    fset_free(&f);
    assert_int_equal(td_vk_live(), 0);
}

/* The default's rule for the matrix-engine cross-attention (a cost model
 * of both kernels, vulkan.c's XCM_*) on the cases an H100 measured,
 * medium's 16 heads on its 132 multiprocessors, then cases the model
 * predicts (marked), a card of half the multiprocessors, an unknown count,
 * and nothing. */
static void test_xcm_rule(void **state)
{
    (void)state;
    static const struct {
        int windows, rows_a_window, heads, sms, want;
    } cases[] = {
        /* measured (vk-xattn, one process; us a layer, matrix engines
         * against per row) */
        {64, 4, 16, 132, 1},  /* 484 against 716 */
        {64, 1, 16, 132, 0},  /* 486 against 226 */
        {64, 8, 16, 132, 1},  /* 484 against 1,399 */
        {32, 5, 16, 132, 1},  /* 253 against 475 */
        {16, 4, 16, 132, 1},  /* 158 against 213 */
        {9, 4, 16, 132, 0},   /* 135 against 124 */
        {8, 16, 16, 132, 1},  /* 88 against 379 */
        {4, 16, 16, 132, 1},  /* 88 against 195 */
        {4, 64, 16, 132, 1},  /* 82 against 716 */
        {1, 32, 16, 132, 1},  /* 82 against 110 */
        /* predicted */
        {1, 1, 16, 132, 0},   /* batch 1: 82 against 23 */
        {4, 5, 16, 132, 0},   /* a window's 5 beams on 4 windows: 82 against 75 */
        {5, 5, 16, 132, 1},   /* on 5: 82 against 89 */
        {9, 4, 16, 66, 1},    /* half the multiprocessors: 197 against 218 */
        {9, 4, 16, 0, 0},     /* an unknown count taken as 132 */
        {2, 64, 6, 132, 1},   /* tiny's 6 heads: 82 against 152 */
        {0, 0, 16, 132, 0},   /* no rows */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int w = cases[i].windows, r = cases[i].rows_a_window, h = cases[i].heads;
        int groups = w * ((r + 63) / 64);
        int got = td_wvk_xcm_pays(w * r, h, groups * h, cases[i].sms);
        if (got != cases[i].want)
            fail_msg("%d windows of %d rows, %d heads, %d multiprocessors: %s, want %s", w, r, h,
                     cases[i].sms, got ? "matrix engines" : "per row",
                     cases[i].want ? "matrix engines" : "per row");
    }
    /* cross_auto's on an H100: 61 rows of tiny's 6 heads on 22 windows
     * (132 workgroups, one wave: 82 against 83), on 23 (a wave more: 140) */
    assert_true(td_wvk_xcm_pays(61, 6, 22 * 6, 132));
    assert_false(td_wvk_xcm_pays(61, 6, 23 * 6, 132));
}

/* Several windows in one encode() call (the encoder's products over all
 * their rows, attention per window) against one window per call: the
 * encoder's output of every slot and each window's logits (which read
 * its cross-attention K and V) within 1e-6, slots given out of order. */
static void test_encode_batched(void **state)
{
    (void)state;
    NEED_DEVICE();
    fset f;
    fset_load("en-d64-f32", &f);
    const td_wmodel *m = f.m;
    int nv = m->hp.n_vocab, C = m->hp.n_audio_ctx, na = m->hp.n_audio_state;
    size_t mn = (size_t)80 * TD_WMEL_WINDOW_FRAMES;
    float *mel3 = malloc(3 * mn * sizeof *mel3);
    assert_non_null(mel3);
    for (int w = 0; w < 3; w++) /* the fixture mel shifted in time and scaled */
        for (int i = 0; i < 80; i++)
            for (int t = 0; t < TD_WMEL_WINDOW_FRAMES; t++)
                mel3[(size_t)w * mn + (size_t)i * TD_WMEL_WINDOW_FRAMES + t] =
                    (1.0f - 0.1f * (float)w) *
                    f.mel[(size_t)i * TD_WMEL_WINDOW_FRAMES + (t + 211 * w) % TD_WMEL_WINDOW_FRAMES];
    const float *mels[3] = {mel3, mel3 + mn, mel3 + 2 * mn};
    td_error err = {0};
    /* 4 window slots: the plan groups 4 windows (vulkan.c's
     * ENC_BATCH_MAX), so the 3 below run as one group */
    td_wconfig cfg = {.max_seq = 4, .max_windows = 4, .max_batch_tokens = 8};
    td_wbackend *all = NULL, *one = NULL;
    if (VK->open(m, &cfg, &all, &err) != TD_OK || VK->open(m, &cfg, &one, &err) != TD_OK)
        fail_msg("vulkan open: %s", err.msg);
    print_message("  the encoder's group: %d windows\n", td_wvk_enc_batch(all));
    assert_int_equal(td_wvk_enc_batch(all), 4);
    int wins[3] = {2, 0, 3};
    if (VK->encode(all, 3, wins, mels, &err) != TD_OK)
        fail_msg("encode: %s", err.msg);
    for (int i = 0; i < 3; i++)
        if (VK->encode(one, 1, &wins[i], &mels[i], &err) != TD_OK)
            fail_msg("encode: %s", err.msg);
    size_t ne = (size_t)C * na;
    float *ea = malloc(ne * sizeof *ea), *eo = malloc(ne * sizeof *eo);
    float *la = malloc((size_t)nv * sizeof *la), *lo = malloc((size_t)nv * sizeof *lo);
    assert_true(ea && eo && la && lo);
    int32_t tok[5] = {m->sp.sot, 11, 220, 4242, 13};
    double worst_e = 0, worst_l = 0;
    int same = 1;
    for (int i = 0; i < 3; i++) {
        if (VK->encoder_output(all, wins[i], ea, &err) != TD_OK ||
            VK->encoder_output(one, wins[i], eo, &err) != TD_OK)
            fail_msg("encoder_output: %s", err.msg);
        same &= memcmp(ea, eo, ne * sizeof *ea) == 0;
        worst_e = fmax(worst_e, compare_rows(ea, eo, ne).rel_l2);
        alone(all, wins[i], tok, 5, la);
        alone(one, wins[i], tok, 5, lo);
        same &= memcmp(la, lo, (size_t)nv * sizeof *la) == 0;
        worst_l = fmax(worst_l, compare_rows(la, lo, (size_t)nv).rel_l2);
    }
    /* the windows differ: a slot mix-up would show */
    if (VK->encoder_output(all, wins[0], ea, &err) != TD_OK ||
        VK->encoder_output(all, wins[1], eo, &err) != TD_OK)
        fail_msg("encoder_output: %s", err.msg);
    assert_true(compare_rows(ea, eo, ne).rel_l2 > 1e-3);
    print_message("  3 windows in one encode() against one a call: encoder rel L2 %.3g, logits "
                  "rel L2 %.3g (%s)\n", worst_e, worst_l, same ? "bitwise equal" : "not bitwise");
    assert_true(worst_e <= 1e-6 && worst_l <= 1e-6);
    /* unsplit (lavapipe reports no multiprocessors: nothing splits unless
     * TD_VULKAN_SPLITK asks) a window's bits do not depend on its group */
    const char *sk = getenv("TD_VULKAN_SPLITK");
    if (!sk || !*sk || strcmp(sk, "off") == 0 || strcmp(sk, "auto") == 0)
        assert_true(same);
    VK->close(all);
    VK->close(one);
    free(ea);
    free(eo);
    free(la);
    free(lo);
    free(mel3);
    fset_free(&f);
    assert_int_equal(td_vk_live(), 0);
}

/* A decode step of many rows (8 sequences of 256 tokens) fills the
 * decoder's scratch, which shares device memory with the encoder's
 * activations; the same window encoded before and after it must come out
 * the same (the second convolution's padding row is the encoder's to
 * zero, every time). */
static void test_encode_after_big_step(void **state)
{
    (void)state;
    NEED_DEVICE();
    fset f;
    fset_load("en-d64-f32", &f);
    const td_wmodel *m = f.m;
    int nv = m->hp.n_vocab;
    size_t ne = (size_t)m->hp.n_audio_ctx * m->hp.n_audio_state;
    td_wconfig cfg = {0};
    cfg.max_seq = 8;
    cfg.max_windows = 1;
    cfg.max_batch_tokens = 256;
    td_wbackend *b = NULL;
    td_error err = {0};
    if (VK->open(m, &cfg, &b, &err) != TD_OK)
        fail_msg("vulkan open: %s", err.msg);
    int w = 0;
    const float *mels[1] = {f.mel};
    float *e1 = malloc(ne * sizeof *e1), *e2 = malloc(ne * sizeof *e2);
    float *lg = malloc((size_t)8 * nv * sizeof *lg);
    int32_t *tok = malloc((size_t)8 * 256 * sizeof *tok);
    assert_true(e1 && e2 && lg && tok);
    if (VK->encode(b, 1, &w, mels, &err) != TD_OK ||
        VK->encoder_output(b, w, e1, &err) != TD_OK)
        fail_msg("encode: %s", err.msg);
    td_wseq seqs[8];
    for (int q = 0; q < 8; q++) {
        seqs[q] = (td_wseq){q, w, 0, 256};
        for (int t = 0; t < 256; t++)
            tok[q * 256 + t] = t == 0 ? m->sp.sot : (int32_t)((q * 7919 + t * 104729 + 13) % 50000);
    }
    if (VK->decode(b, 8, seqs, tok, 0, lg, &err) != TD_OK)
        fail_msg("decode: %s", err.msg);
    if (VK->encode(b, 1, &w, mels, &err) != TD_OK ||
        VK->encoder_output(b, w, e2, &err) != TD_OK)
        fail_msg("encode: %s", err.msg);
    golden_stats st = compare_rows(e2, e1, ne);
    print_message("  the same window encoded after a step of 2048 rows: rel L2 %.3g (%s)\n",
                  st.rel_l2, memcmp(e1, e2, ne * sizeof *e1) ? "not bitwise" : "bitwise equal");
    assert_true(memcmp(e1, e2, ne * sizeof *e1) == 0);
    VK->close(b);
    free(e1);
    free(e2);
    free(lg);
    free(tok);
    fset_free(&f);
    assert_int_equal(td_vk_live(), 0);
}

/* The sampler of m's special tokens with its suppression list in sup
 * (n_vocab ints), top 6. */
static td_wsampler sampler_of(const td_wmodel *m, int32_t *sup)
{
    const td_wspecial *sp = &m->sp;
    return (td_wsampler){.suppress = sup, .n_suppress = td_wsuppress_tokens(m, sup, m->hp.n_vocab),
                         .eot = sp->eot, .blank = sp->blank, .ts_begin = sp->ts_begin,
                         .nospeech = sp->nospeech, .k = 6};
}

/* sample() on real decode steps against td_wsample_row() on the same
 * logits: the step is run twice from the same cache state (its K/V
 * stores write the same values), once returning its logits and once
 * keeping them on the device. */
static void test_sample_entry(void **state)
{
    (void)state;
    NEED_DEVICE();
    fset f;
    fset_load("en-d64-f32", &f);
    const td_wmodel *m = f.m;
    int nv = m->hp.n_vocab;
    td_error err = {0};
    td_wbackend *b = open_vk(m, 4, 1, &err);
    int w0 = 0;
    const float *mels[1] = {f.mel};
    if (VK->encode(b, 1, &w0, mels, &err) != TD_OK)
        fail_msg("encode: %s", err.msg);
    int32_t *sup = malloc((size_t)nv * sizeof *sup);
    float *lg = malloc((size_t)4 * nv * sizeof *lg), *row = malloc((size_t)nv * sizeof *row);
    assert_true(sup && lg && row);
    const td_wspecial *sp = &m->sp;
    td_wsampler smp = sampler_of(m, sup);
    /* three sequences: prompts of 3, 1 and 4 tokens, then two steps */
    int32_t toks[3][8];
    for (int s = 0; s < 3; s++)
        for (int t = 0; t < 8; t++)
            toks[s][t] = t == 0 ? sp->sot : (int32_t)((s * 131 + t * 977) % sp->eot);
    const int plen[3] = {3, 1, 4};
    int len[3] = {0, 0, 0};
    double worst = 0;
    long host0, calls0, rows0;
    td_wvk_sample_stats(b, &calls0, &rows0, &host0);
    for (int step = 0; step < 3; step++) {
        td_wseq seqs[3];
        int32_t flat[16];
        int nt = 0;
        for (int s = 0; s < 3; s++) {
            int n = step == 0 ? plen[s] : 1;
            seqs[s] = (td_wseq){s + 1, 0, len[s], n};
            for (int t = 0; t < n; t++)
                flat[nt++] = toks[s][len[s] + t];
        }
        if (VK->decode(b, 3, seqs, flat, 0, lg, &err) != TD_OK)
            fail_msg("decode: %s", err.msg);
        /* nothing kept by a decode that returned its logits */
        td_wsample_in in[3];
        td_wsample_out out[3], ref;
        memset(in, 0, sizeof in);
        in[0].row = 0;
        assert_int_equal(VK->sample(b, &smp, 1, in, out, &err), TD_EINVAL);
        if (VK->decode(b, 3, seqs, flat, 0, NULL, &err) != TD_OK)
            fail_msg("decode: %s", err.msg);
        for (int s = 0; s < 3; s++) {
            in[s].row = 2 - s; /* not in row order */
            in[s].flags = step == 0 ? TD_WSAMPLE_BLANK | TD_WSAMPLE_NOSPEECH : TD_WSAMPLE_TS_RULE;
            if (s == 1) { /* the timestamp rules' ranges */
                in[s].n_ranges = 2;
                in[s].ranges[0][0] = sp->ts_begin;
                in[s].ranges[0][1] = sp->ts_begin + 3;
                in[s].ranges[1][0] = sp->ts_begin + 100;
                in[s].ranges[1][1] = nv;
            }
            if (s == 2) {
                in[s].temperature = 0.7f;
                in[s].u = 0.1 + 0.3 * step;
            }
        }
        /* two calls: rows 2 and 1, then row 0; a row again is refused */
        if (VK->sample(b, &smp, 2, in, out, &err) != TD_OK ||
            VK->sample(b, &smp, 1, in + 2, out + 2, &err) != TD_OK)
            fail_msg("sample: %s", err.msg);
        assert_int_equal(VK->sample(b, &smp, 1, in, out, &err), TD_EINVAL);
        for (int s = 0; s < 3; s++) {
            memcpy(row, lg + (size_t)in[s].row * nv, (size_t)nv * sizeof *row);
            td_wsample_row(&smp, nv, row, &in[s], &ref);
            assert_int_equal(out[s].has_nan, 0);
            assert_int_equal(out[s].forced_ts, ref.forced_ts);
            assert_int_equal(out[s].all_masked, ref.all_masked);
            assert_int_equal(out[s].sampled, ref.sampled);
            for (int i = 0; i < smp.k; i++) {
                assert_int_equal(out[s].top[i], ref.top[i]);
                worst = fmax(worst, fabs(out[s].top_lp[i] - ref.top_lp[i]));
            }
            if (in[s].temperature > 0)
                worst = fmax(worst, fabs(out[s].sampled_lp - ref.sampled_lp));
            if (isfinite(ref.ts_lse))
                worst = fmax(worst, fabs(out[s].ts_lse - ref.ts_lse));
            worst = fmax(worst, fabs(out[s].best_text_lp - ref.best_text_lp));
            if (in[s].flags & TD_WSAMPLE_NOSPEECH)
                worst = fmax(worst, fabs(out[s].no_speech_prob - ref.no_speech_prob));
        }
        for (int s = 0; s < 3; s++)
            len[s] += seqs[s].n_tokens;
    }
    long host, calls, rows;
    td_wvk_sample_stats(b, &calls, &rows, &host);
    print_message("  sample() on 3 decode steps of 3 sequences: ids as td_wsample_row's, worst "
                  "log-prob difference %.3g (bound 2e-5), %ld of %ld rows on the host\n",
                  worst, host - host0, rows - rows0);
    assert_true(worst < 2e-5);
    assert_int_equal(rows - rows0, 9);
    VK->close(b);
    free(sup);
    free(lg);
    free(row);
    fset_free(&f);
    assert_int_equal(td_vk_live(), 0);
}

/* The scripted token at position pos of sequence seq: SOT first, then
 * a fixed pseudo-random text token (test_step_submits' inputs). */
static int32_t script_token(const td_wspecial *sp, int seq, int pos)
{
    return pos == 0 ? sp->sot : (int32_t)((seq * 131 + pos * 977) % sp->eot);
}

/* A context of 2 sequences and one window slot, f's window encoded
 * into slot 0 (the failure tests' start). */
static td_wbackend *open_encoded(const fset *f)
{
    td_error err = {0};
    td_wbackend *b = open_vk(f->m, 2, 1, &err);
    int w0 = 0;
    const float *mels[1] = {f->mel};
    if (VK->encode(b, 1, &w0, mels, &err) != TD_OK)
        fail_msg("encode: %s", err.msg);
    return b;
}

/* A submission whose wait times out (injected; a hung device gives
 * this) breaks the device: that call and every later one fail with
 * TD_EENGINE, nothing is recorded into buffers that may still be in use,
 * and close waits for the device and leaves nothing alive; a new open
 * works. */
static void test_wait_timeout(void **state)
{
    (void)state;
    NEED_DEVICE();
    fset f;
    fset_load("en-d64-f32", &f);
    td_error err = {0};
    td_wbackend *b = open_encoded(&f);
    int w0 = 0;
    const float *mels[1] = {f.mel};
    float *lg = malloc((size_t)f.m->hp.n_vocab * sizeof *lg);
    assert_non_null(lg);
    td_wseq q = {0, 0, 0, 1};
    int32_t tok = f.m->sp.sot;
    assert_int_equal(VK->decode(b, 1, &q, &tok, 0, lg, &err), TD_OK);
    td_vk_fail_wait(1);
    assert_int_equal(VK->decode(b, 1, &q, &tok, 0, lg, &err), TD_EENGINE);
    assert_non_null(strstr(err.msg, "did not finish"));
    assert_int_equal(VK->decode(b, 1, &q, &tok, 0, lg, &err), TD_EENGINE);
    assert_non_null(strstr(err.msg, "takes no more work"));
    assert_int_equal(VK->encode(b, 1, &w0, mels, &err), TD_EENGINE);
    VK->close(b);
    assert_int_equal(td_vk_live(), 0);
    b = open_encoded(&f);
    assert_int_equal(VK->decode(b, 1, &q, &tok, 0, lg, &err), TD_OK);
    VK->close(b);
    free(lg);
    fset_free(&f);
    assert_int_equal(td_vk_live(), 0);
}

/* A profiled step whose submission fails (injected) leaves no stale
 * timestamps behind: the same shape replayed after it, unprofiled, runs
 * and gives the logits it gave before (review: the failed submission's
 * query count was once read back for every replay after it, each failing
 * in vkGetQueryPoolResults). */
static void test_profile_failed_submit(void **state)
{
    (void)state;
    NEED_DEVICE();
    fset f;
    fset_load("en-d64-f32", &f);
    td_error err = {0};
    td_wbackend *b = open_encoded(&f);
    int nv = f.m->hp.n_vocab;
    float *lg = malloc((size_t)2 * nv * sizeof *lg);
    assert_non_null(lg);
    td_wseq q = {0, 0, 0, 1};
    int32_t tok = f.m->sp.sot;
    /* recorded, then replayed: the shape is kept */
    for (int i = 0; i < 2; i++)
        assert_int_equal(VK->decode(b, 1, &q, &tok, 0, lg, &err), TD_OK);
    td_wvk_profile(b, 1);
    td_vk_fail_submit(1);
    assert_int_equal(VK->decode(b, 1, &q, &tok, 0, lg + nv, &err), TD_ENOMEM);
    td_vk_fail_submit(0);
    td_wvk_profile(b, 0);
    for (int i = 0; i < 2; i++) {
        if (VK->decode(b, 1, &q, &tok, 0, lg + nv, &err) != TD_OK)
            fail_msg("replay %d after the failed profiled step: %s", i, err.msg);
        assert_memory_equal(lg, lg + nv, (size_t)nv * sizeof *lg);
    }
    free(lg);
    VK->close(b);
    fset_free(&f);
    assert_int_equal(td_vk_live(), 0);
}

/* A decode step whose logits stay on the device runs in the next call's
 * submission (sample(), or a kv_copy that follows it; any other call runs
 * it first): the same results as a submission each
 * (TD_VULKAN_STEP_SUBMITS=2), through steps left unsampled, a fork by
 * kv_copy behind a kept step, and sample() calls in two parts. Other
 * values refuse open() and memory_need(). */
static void test_step_submits(void **state)
{
    (void)state;
    NEED_DEVICE();
    fset f;
    fset_load("en-d64-f32", &f);
    const td_wmodel *m = f.m;
    int nv = m->hp.n_vocab;
    int32_t *sup = malloc((size_t)nv * sizeof *sup);
    assert_non_null(sup);
    const td_wspecial *sp = &m->sp;
    td_wsampler smp = sampler_of(m, sup);
    enum { NSTEP = 4 };
    td_wsample_out got[2][NSTEP][4];
    memset(got, 0, sizeof got);
    for (int v = 0; v < 2; v++) {
        td_error err = {0};
        td_wbackend *b = open_vk_env(m, 4, 1, "TD_VULKAN_STEP_SUBMITS", v ? "2" : NULL, &err);
        int w0 = 0;
        const float *mels[1] = {f.mel};
        if (VK->encode(b, 1, &w0, mels, &err) != TD_OK)
            fail_msg("encode: %s", err.msg);
        int len[4] = {0, 0, 0, 0};
        for (int step = 0; step < NSTEP; step++) {
            /* sequences 0..2 in slots 0..2; from step 2 on, slot 3 a fork
             * of slot 1 made by kv_copy right after the kept step 1 */
            int ns = step >= 2 ? 4 : 3;
            td_wseq seqs[4];
            int32_t flat[16];
            int nt = 0;
            for (int s = 0; s < ns; s++) {
                int n = step == 0 ? 1 + s : 1;
                seqs[s] = (td_wseq){s, 0, len[s], n};
                for (int t = 0; t < n; t++)
                    flat[nt++] = script_token(sp, s, len[s] + t);
            }
            if (VK->decode(b, ns, seqs, flat, 0, NULL, &err) != TD_OK)
                fail_msg("decode: %s", err.msg);
            for (int s = 0; s < ns; s++)
                len[s] += seqs[s].n_tokens;
            if (step == 1) {
                td_wkv_copy fork = {1, 3, len[1]};
                if (VK->kv_copy(b, 1, &fork, &err) != TD_OK)
                    fail_msg("kv_copy: %s", err.msg);
                len[3] = len[1];
            }
            if (step == 0)
                continue; /* a step nobody samples: the next call runs it */
            td_wsample_in in[4];
            memset(in, 0, sizeof in);
            for (int s = 0; s < ns; s++) {
                in[s].row = ns - 1 - s;
                in[s].flags = TD_WSAMPLE_TS_RULE;
            }
            if (VK->sample(b, &smp, 1, in, got[v][step], &err) != TD_OK ||
                VK->sample(b, &smp, ns - 1, in + 1, got[v][step] + 1, &err) != TD_OK)
                fail_msg("sample: %s", err.msg);
        }
        VK->close(b);
    }
    long same = 0;
    for (int step = 1; step < NSTEP; step++)
        for (int s = 0; s < (step >= 2 ? 4 : 3); s++) {
            const td_wsample_out *a = &got[0][step][s], *c = &got[1][step][s];
            for (int i = 0; i < smp.k; i++) {
                assert_int_equal(a->top[i], c->top[i]);
                assert_memory_equal(&a->top_lp[i], &c->top_lp[i], sizeof a->top_lp[i]);
            }
            assert_memory_equal(&a->ts_lse, &c->ts_lse, sizeof a->ts_lse);
            assert_memory_equal(&a->best_text_lp, &c->best_text_lp, sizeof a->best_text_lp);
            same++;
        }
    print_message("  one submission a step against two: %ld sampled rows over %d steps "
                  "(one unsampled, a fork behind a kept step), the same bits\n",
                  same, NSTEP);
    /* the sampling's submission fails (out of device memory) with the
     * step in it: that sample() says so, and so does the next one for the
     * step's other rows (nothing of the step is there to sample); a new
     * step runs */
    {
        td_error err = {0};
        td_wbackend *b = open_vk(m, 4, 1, &err);
        int w0 = 0;
        const float *mels[1] = {f.mel};
        if (VK->encode(b, 1, &w0, mels, &err) != TD_OK)
            fail_msg("encode: %s", err.msg);
        td_wseq seqs[2] = {{0, 0, 0, 1}, {1, 0, 0, 1}};
        int32_t flat[2] = {sp->sot, sp->sot};
        td_wsample_in in[2];
        td_wsample_out out[2];
        memset(in, 0, sizeof in);
        in[1].row = 1;
        for (int round = 0; round < 2; round++) {
            if (VK->decode(b, 2, seqs, flat, 0, NULL, &err) != TD_OK)
                fail_msg("decode: %s", err.msg);
            if (round == 0) {
                td_vk_fail_submit(1);
                assert_int_equal(VK->sample(b, &smp, 1, in, out, &err), TD_ENOMEM);
                td_error e2 = {0};
                assert_int_equal(VK->sample(b, &smp, 1, in + 1, out + 1, &e2), TD_ENOMEM);
                print_message("  a failed submission with the step in it: %s; the step's "
                              "other rows: %s\n", err.msg, e2.msg);
                assert_non_null(strstr(e2.msg, "out of device memory"));
            } else {
                if (VK->sample(b, &smp, 2, in, out, &err) != TD_OK)
                    fail_msg("sample after the failure: %s", err.msg);
                /* the two sequences are the same tokens: the same row */
                for (int i = 0; i < smp.k; i++)
                    assert_int_equal(out[0].top[i], out[1].top[i]);
            }
        }
        VK->close(b);
    }
    static const char *const bad[] = {"0", "3", "one"};
    refuses_values(m, "TD_VULKAN_STEP_SUBMITS", bad, sizeof bad / sizeof bad[0]);
    free(sup);
    fset_free(&f);
    assert_int_equal(td_vk_live(), 0);
}

/* Word alignment's cross-attention weights (align_weights) against the
 * CPU backend's, 40 tokens in two chunks (the plan takes 32 a call), three
 * heads of two layers; every row a softmax. */
/* align_weights against the CPU's; cross16: the cross-attention's K and V
 * kept as halves (TD_VULKAN_CROSS16=1, as a matrix-engine card with F16
 * weights keeps them), held to a half's rounding instead of a float's */
static void align_weights_case(int cross16)
{
    NEED_DEVICE();
    fset f;
    if (!fset_load("en-d64-f32", &f))
        skip();
    const td_wmodel *m = f.m;
    td_error err = {0};
    if (cross16)
        assert_int_equal(setenv("TD_VULKAN_CROSS16", "1", 1), 0);
    td_wbackend *b = open_vk(m, 2, 2, &err);
    if (cross16)
        assert_int_equal(unsetenv("TD_VULKAN_CROSS16"), 0);
    td_wconfig cc = {0};
    cc.max_seq = 2;
    cc.max_windows = 2;
    cc.max_batch_tokens = 32;
    cc.n_threads = 2;
    cc.compute = TD_WCOMPUTE_F32;
    td_wbackend *cpu = NULL;
    if (td_wbackend_cpu.open(m, &cc, &cpu, &err) != TD_OK)
        fail_msg("cpu open: %s", err.msg);
    int w = 1;
    const float *mels[1] = {f.mel};
    if (VK->encode(b, 1, &w, mels, &err) != TD_OK ||
        td_wbackend_cpu.encode(cpu, 1, &w, mels, &err) != TD_OK)
        fail_msg("encode: %s", err.msg);
    enum { NTOK = 40 };
    int32_t tok[NTOK];
    tok[0] = m->sp.sot;
    for (int t = 1; t < NTOK; t++)
        tok[t] = (int32_t)((t * 104729 + 13) % 50000);
    int nl = m->hp.n_text_layer, nh = m->hp.n_text_head;
    int heads[6] = {0, 0, nl - 1, nh - 1, 0, nh - 1};
    size_t C = (size_t)m->hp.n_audio_ctx, n = 3 * NTOK * C;
    float *got = malloc(n * sizeof *got), *ref = malloc(n * sizeof *ref);
    assert_true(got && ref);
    if (VK->align_weights(b, 1, w, NTOK, tok, 3, heads, got, &err) != TD_OK)
        fail_msg("vulkan align_weights: %s", err.msg);
    if (td_wbackend_cpu.align_weights(cpu, 1, w, NTOK, tok, 3, heads, ref, &err) != TD_OK)
        fail_msg("cpu align_weights: %s", err.msg);
    golden_stats st = compare_rows(got, ref, n);
    double worst_sum = 0;
    for (size_t r = 0; r < 3 * NTOK; r++) {
        double sum = 0;
        for (size_t j = 0; j < C; j++)
            sum += got[r * C + j];
        worst_sum = fmax(worst_sum, fabs(sum - 1));
    }
    print_message("  align_weights%s, 3 heads x %d tokens: rel L2 against the CPU %.3g, max abs "
                  "%.3g, rows sum to 1 within %.1e\n",
                  cross16 ? " (cross K/V as halves)" : "", NTOK, st.rel_l2, st.max_abs,
                  worst_sum);
    assert_true(st.rel_l2 < (cross16 ? 2e-3 : 1e-5));
    if (cross16) /* the halves were read: floats give about 6e-7 */
        assert_true(st.rel_l2 > 2e-6);
    assert_true(worst_sum < 1e-4);
    /* refusals: a head that is not there, too many tokens */
    int bad[2] = {nl, 0};
    assert_int_equal(VK->align_weights(b, 1, w, NTOK, tok, 1, bad, got, &err), TD_EINVAL);
    assert_int_equal(VK->align_weights(b, 1, 0, NTOK, tok, 1, heads, got, &err), TD_EINVAL);
    free(got);
    free(ref);
    td_wbackend_cpu.close(cpu);
    VK->close(b);
    fset_free(&f);
    assert_int_equal(td_vk_live(), 0);
}

static void test_align_weights(void **state)
{
    (void)state;
    align_weights_case(0);
}

/* Not under the sanitizer (SKIP_BIG): on the host, the halves change only
 * the flag and the buffers' addresses vulkan.c gives the kernel; the host
 * side of align_weights runs under the sanitizer in test_align_weights,
 * that of the cross K/V as halves in test_cross_groups. */
static void test_align_weights_cross16(void **state)
{
    (void)state;
    NEED_DEVICE();
    SKIP_BIG();
    align_weights_case(1);
}

/* ------------------------------------------------------------ refusals */

static void test_refusals(void **state)
{
    (void)state;
    NEED_DEVICE();
    fset f;
    fset_load("en-d64-f32", &f);
    td_wconfig cfg = {0};
    cfg.max_seq = 2;
    assert_true(VK->memory_need(&f.m->hp, f.m->wtype, &cfg) > 0);
    td_wconfig big = cfg;
    big.max_seq = 8;
    assert_true(VK->memory_need(&f.m->hp, f.m->wtype, &big) >
                VK->memory_need(&f.m->hp, f.m->wtype, &cfg));
    /* models the backend cannot take: encoder heads of 48 floats (its
     * attention is compiled for 16, 32, 64 and 128); weights past its 64
     * allocations (64 layers of 4096 floats as F32) */
    td_whparams h48 = f.m->hp, huge = f.m->hp;
    h48.n_audio_state = 384;
    h48.n_audio_head = 8;
    assert_int_equal(VK->memory_need(&h48, f.m->wtype, &cfg), -1);
    huge.n_audio_state = 4096;
    huge.n_audio_head = 32;
    huge.n_audio_layer = 64;
    assert_int_equal(VK->memory_need(&huge, TD_WT_F32, &cfg), -1);
    /* 256 x 448 rows by default: capped at 65535 a call, not refused */
    td_wconfig many = {.max_seq = 256};
    assert_true(VK->memory_need(&f.m->hp, f.m->wtype, &many) > 0);
    td_wconfig bad[] = {{.max_seq = 0}, {.max_seq = 2, .max_tokens = 449},
                        {.max_seq = 2, .max_batch_tokens = 500}, {.max_seq = 2, .max_windows = -1},
                        {.max_seq = 2, .max_rows = 1 << 20}, {.max_seq = 2, .compute = 7},
                        {.max_seq = 256, .max_rows = 65536}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        td_error err = {0};
        td_wbackend *b = NULL;
        assert_int_equal(VK->memory_need(&f.m->hp, f.m->wtype, &bad[i]), -1);
        assert_int_equal(VK->open(f.m, &bad[i], &b, &err), TD_EINVAL);
        assert_null(b);
    }
    td_error err = {0};
    td_wbackend *b = open_vk(f.m, 2, 2, &err);
    int w = 0, w2[2] = {1, 1};
    const float *mels[2] = {f.mel, f.mel};
    td_wseq s = {0, 0, 0, 1};
    int32_t tok = f.m->sp.sot;
    float *lg = malloc((size_t)f.m->hp.n_vocab * 2 * sizeof *lg);
    assert_non_null(lg);
    /* decode before the window is encoded */
    assert_int_equal(VK->decode(b, 1, &s, &tok, 0, lg, &err), TD_EINVAL);
    assert_int_equal(VK->encode(b, 2, w2, mels, &err), TD_EINVAL); /* a slot twice */
    w = 2;
    assert_int_equal(VK->encode(b, 1, &w, mels, &err), TD_EINVAL); /* out of range */
    w = 0;
    assert_int_equal(VK->encode(b, 1, &w, mels, &err), TD_OK);
    /* ... the last: positions whose sum with the count would wrap */
    td_wseq badseq[] = {{2, 0, 0, 1},  {0, 1, 0, 1},  {0, 0, 440, 9},
                        {0, 0, 0, 33}, {0, 0, -1, 1}, {0, 0, INT_MAX - 2, 8}};
    for (size_t i = 0; i < sizeof badseq / sizeof badseq[0]; i++)
        assert_int_equal(VK->decode(b, 1, &badseq[i], &tok, 0, lg, &err), TD_EINVAL);
    td_wseq two[2] = {{0, 0, 0, 1}, {0, 0, 0, 1}}; /* one slot twice */
    int32_t tt[2] = {tok, tok};
    assert_int_equal(VK->decode(b, 2, two, tt, 0, lg, &err), TD_EINVAL);
    int32_t badtok = f.m->hp.n_vocab;
    assert_int_equal(VK->decode(b, 1, &s, &badtok, 0, lg, &err), TD_EINVAL);
    assert_int_equal(VK->decode(b, 1, &s, &tok, 1, NULL, &err), TD_EINVAL); /* all_logits */
    td_wkv_copy kc[] = {{0, 2, 1}, {0, 1, 449}};
    for (size_t i = 0; i < 2; i++)
        assert_int_equal(VK->kv_copy(b, 1, &kc[i], &err), TD_EINVAL);
    td_wkv_copy cyc[2] = {{0, 1, 1}, {1, 0, 1}}; /* a destination is a source */
    assert_int_equal(VK->kv_copy(b, 2, cyc, &err), TD_EINVAL);
    assert_int_equal(VK->decode(b, 1, &s, &tok, 0, lg, &err), TD_OK);
    VK->close(b);
    /* the encoder attention's switch: anything but 0 or 1 is refused */
    static const char *const bad_reg[] = {"2", "on", "1x"};
    refuses_values(f.m, "TD_VULKAN_ATTN_REG", bad_reg, sizeof bad_reg / sizeof bad_reg[0]);
    free(lg);
    fset_free(&f);
    assert_int_equal(td_vk_live(), 0);
}

/* ------------------------------------------------------------ faults */

static void test_open_alloc_failures(void **state)
{
    (void)state;
    NEED_DEVICE();
    fset f;
    fset_load("en-d64-f32", &f);
    td_wconfig cfg = {0};
    cfg.max_seq = 2;
    cfg.max_batch_tokens = 8;
    /* with no instance yet, the first opens reach vkCreateInstance too;
     * from the first that gets past it, every open shares that instance */
    td_vk_release();
    assert_int_equal(td_vk_instance_refs(), -1);
    int n, saw_instance = 0;
    for (n = 1; n < 1000; n++) {
        td_error err = {0};
        td_wbackend *b = NULL;
        td_vk_fail_alloc(n);
        int rc = VK->open(f.m, &cfg, &b, &err);
        td_vk_fail_alloc(0);
        if (rc == TD_OK) {
            VK->close(b);
            assert_int_equal(td_vk_live(), 0);
            break;
        }
        assert_null(b);
        if (rc != TD_ENOMEM)
            fail_msg("allocation %d: code %d (%s)", n, rc, err.msg);
        if (strstr(err.msg, "vkCreateInstance"))
            saw_instance = 1;
        assert_int_equal(td_vk_live(), 0);
        assert_true(td_vk_instance_refs() <= 0); /* none, or the process's alone */
        if (n % 16 == 0) { /* progress: a real driver takes seconds per 16 opens */
            print_message("  open: %d allocations failed in turn so far\n", n);
            fflush(stdout);
        }
    }
    print_message("  open: %d allocations failed in turn, each TD_ENOMEM, nothing left alive\n",
                  n - 1);
    assert_true(n > 20 && n < 1000);
    assert_true(saw_instance);
    assert_int_equal(td_vk_instance_refs(), 0);
    fset_free(&f);
}

/* Devices opened and closed from several threads at once share one
 * instance, counted exactly; the last close leaves it to the process. */
#define SHARE_THREADS 3
#define SHARE_CYCLES 4

static void *share_thread(void *arg)
{
    int *failed = arg;
    for (int i = 0; i < SHARE_CYCLES; i++) {
        td_error err = {0};
        td_vk *v = NULL;
        if (td_vk_open(NULL, &v, &err) != TD_OK) {
            *failed = 1;
            break;
        }
        td_vk_close(v);
    }
    return NULL;
}

static void test_shared_instance(void **state)
{
    (void)state;
    NEED_DEVICE();
    td_error err = {0};
    td_vk *a = NULL, *b = NULL;
    assert_int_equal(td_vk_open(NULL, &a, &err), TD_OK);
    assert_int_equal(td_vk_instance_refs(), 1);
    assert_int_equal(td_vk_open(NULL, &b, &err), TD_OK);
    assert_int_equal(td_vk_instance_refs(), 2);
    td_vk_release(); /* in use: kept */
    assert_int_equal(td_vk_instance_refs(), 2);
    td_vk_close(a);
    assert_int_equal(td_vk_instance_refs(), 1);
    pthread_t th[SHARE_THREADS];
    int failed[SHARE_THREADS] = {0};
    for (int i = 0; i < SHARE_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, share_thread, &failed[i]), 0);
    for (int i = 0; i < SHARE_THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(failed[i], 0);
    }
    assert_int_equal(td_vk_instance_refs(), 1);
    td_vk_close(b);
    assert_int_equal(td_vk_instance_refs(), 0);
    assert_int_equal(td_vk_live(), 0);
}

/* td_vk_release destroys the instance once nothing uses it, and the next
 * listing makes a new one. Not on NVIDIA's driver: after the loader had
 * unloaded it and loaded it again, the process died by SIGSEGV at exit
 * (580, H100: bench/RESULTS.md), and 32 such reloads made vkCreateInstance
 * fail, which is why a process keeps its instance; tapedeck never
 * releases it. */
static void test_instance_release(void **state)
{
    (void)state;
    NEED_DEVICE();
    td_error err = {0};
    td_vk *a = NULL;
    assert_int_equal(td_vk_open(NULL, &a, &err), TD_OK);
    unsigned vendor = td_vk_device_info(a)->vendor_id;
    td_vk_close(a);
    if (vendor == 0x10de) {
        print_message("  skipped: NVIDIA's driver does not survive a reload in one process\n");
        skip();
    }
    assert_int_equal(td_vk_instance_refs(), 0);
    td_vk_release();
    assert_int_equal(td_vk_instance_refs(), -1);
    td_vk_info list[4];
    int n = 0;
    assert_int_equal(td_vk_list(list, 4, &n, &err), TD_OK); /* makes it again */
    assert_true(n >= 1);
    assert_int_equal(td_vk_instance_refs(), 0);
}

/* TD_TEST_BACKTRACE=1: a crash prints the stack, library and offset a
 * frame, before dying of its signal (a driver's crash on a machine with
 * no debugger; not under the sanitizer, whose own handler says more). */
static void crash_backtrace(int sig)
{
    void *frames[64];
    int n = backtrace(frames, 64);
    static const char head[] = "test_vulkan_backend: crashed; the stack:\n";
    if (write(2, head, sizeof head - 1) < 0)
        _exit(128 + sig);
    backtrace_symbols_fd(frames, n, 2);
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(void)
{
    const char *bt = getenv("TD_TEST_BACKTRACE");
    if (bt && strcmp(bt, "1") == 0) {
        void *warm[1];
        backtrace(warm, 1); /* loads libgcc now, not inside the handler */
        signal(SIGSEGV, crash_backtrace);
        signal(SIGBUS, crash_backtrace);
        signal(SIGABRT, crash_backtrace);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_en_d64), cmocka_unit_test(test_golden_tiny_f16),
        cmocka_unit_test(test_golden_real),
        cmocka_unit_test(test_ragged_batch),    cmocka_unit_test(test_cross_groups),
        cmocka_unit_test(test_cross_cm),        cmocka_unit_test(test_xcm_rule),
        cmocka_unit_test(test_encode_batched),
        cmocka_unit_test(test_encode_after_big_step),
        cmocka_unit_test(test_sample_entry), cmocka_unit_test(test_step_submits),
        cmocka_unit_test(test_profile_failed_submit), cmocka_unit_test(test_wait_timeout),
        cmocka_unit_test(test_align_weights),
        cmocka_unit_test(test_align_weights_cross16),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_open_alloc_failures), cmocka_unit_test(test_shared_instance),
        cmocka_unit_test(test_instance_release),
    };
    const char *filter = getenv("TEST_FILTER"); /* e.g. TEST_FILTER='test_open*' */
    if (filter)
        cmocka_set_test_filter(filter);
    /* TEST_SKIP=PATTERN[,PATTERN...]: leave out the tests whose names
     * match (globs), as tests/run-unit.sh's BIN:!PATTERN asks, so that
     * this binary's long tests run in processes of their own */
    struct CMUnitTest run[sizeof tests / sizeof tests[0]];
    size_t n_run = tu_tests_to_run(tests, sizeof tests / sizeof tests[0], run);
    return _cmocka_run_group_tests("tests", run, n_run, setup_all, teardown_all);
}

#else

static void test_not_built(void **state)
{
    (void)state;
#ifndef TD_HAVE_VULKAN
    printf("# skipped: tapedeck was built without the Vulkan backend\n");
#else
    printf("# skipped: the backend table here is older than version 2\n");
#endif
    skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_not_built)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
