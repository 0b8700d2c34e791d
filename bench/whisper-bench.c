/*
 * whisper-bench.c: speed of the Whisper CPU backend on random-weight
 * models of the standard sizes (speed does not depend on the weights'
 * values, and the decoded token count is fixed, so these are honest
 * throughput figures).
 *
 *   whisper-bench [--dims tiny|base|small|...] [--model PATH] [--threads N]
 *                 [--runs N] [--tokens N] [--beam N] [--gemm own|blas|both]
 *                 [--only enc|dec] [--compute f32|int8|auto] [--batch N] [--header]
 *
 * Generates an F16 model of the given dimensions in a temporary folder
 * (td_wmk_write, seed 1) unless --model names one, then measures:
 *   - encoder: ms per 30-s window (median of --runs after a warm-up),
 *     including every decoder layer's cross-attention K/V, as whisper.cpp
 *     counts it; and the GFLOP/s that is (matrix products only);
 *   - decoder, greedy: ms per token over --tokens single-token steps after
 *     a 4-token prompt (tokens chosen by argmax: deterministic, no
 *     decoding rules);
 *   - decoder, beam: --beam sequences per step (each step beam 0 forks
 *     into the last beam's KV slot with kv_copy, as a beam search that
 *     drops one hypothesis and splits another does), ms per step and per
 *     token per beam;
 *   - peak RSS (getrusage).
 * With --batch N, a second row: N windows (encoded by one encode() call
 * into N window slots) times --beam sequences in every decoder step (the
 * backend table's version-2 batching), at ragged positions (window w's
 * sequences start 3 * (w % 8) tokens further on, as windows that began at
 * different times do); ms per step, and per token per window (a step
 * gives every window one token per beam).
 * Decoder figures are the median of --runs repetitions too (the prompt is
 * decoded again at position 0 before each).
 * With --gemm both (the default) the encoder is timed a second time with
 * OpenBLAS's sgemm for the matrix products (F16 converted in slabs), so
 * the row shows both GEMMs. Prints one Markdown table row per model,
 * labelled by the dimensions for a generated model ("tiny (random F16,
 * int8)") and by the file name for --model ("ggml-base.bin (int8)").
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "util/error.h"
#include "whisper/backend.h"
#include "whisper/backend/cpu/kernels.h"
#include "whisper/mkmodel.h"
#include "whisper/model.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* FLOPs of the encoder's matrix products (and the cross K/V), 2 per MAC. */
static double encoder_flops(const td_whparams *hp)
{
    double C = hp->n_audio_ctx, na = hp->n_audio_state, nt = hp->n_text_state, nm = hp->n_mels;
    double f = 2 * (2 * C) * na * 3 * nm   /* conv1 */
               + 2 * C * na * 3 * na;       /* conv2 */
    double layer = 4 * 2 * C * na * na      /* q, k, v, out */
                   + 2 * 2 * C * C * na     /* scores and weighted values */
                   + 2 * 2 * C * na * 4 * na; /* mlp */
    f += hp->n_audio_layer * layer;
    f += hp->n_text_layer * 2 * 2 * C * na * nt; /* cross K and V */
    return f;
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

static void usage(void)
{
    fprintf(stderr, "usage: whisper-bench [--dims NAME] [--model PATH] [--threads N] [--runs N]\n"
                    "                     [--tokens N] [--beam N] [--gemm own|blas|both]\n"
                    "                     [--only enc|dec] [--compute f32|int8|auto] [--batch N]\n"
                    "                     [--header]\n");
}

/* n_seq sequences in KV slots slot0.., all on window slot win at n_past,
 * n_tokens each (the version-1 shape of a call). */
static int decode_same(td_wbackend *b, int n_seq, int slot0, int win, int n_tokens,
                       const int32_t *tokens, int n_past, float *logits, td_error *err)
{
    td_wseq seqs[256];
    for (int s = 0; s < n_seq; s++)
        seqs[s] = (td_wseq){.slot = slot0 + s, .window = win, .n_past = n_past,
                            .n_tokens = n_tokens};
    return td_wbackend_cpu.decode(b, n_seq, seqs, tokens, 0, logits, err);
}

static int encode_one(td_wbackend *b, const float *mel, td_error *err)
{
    int w = 0;
    return td_wbackend_cpu.encode(b, 1, &w, &mel, err);
}

/* The --batch row: n_win windows x beam sequences per step, ms per step
 * (median of runs). Window w's sequences sit in KV slots w * beam .. and
 * start 3 * (w % 8) positions further on. */
static int time_batch(const td_wmodel *m, const td_wconfig *base, const float *mel,
                      const int32_t *prompt, int n_win, int beam, int n_tokens, int runs,
                      double *step_ms, td_error *err)
{
    int n_vocab = m->hp.n_vocab, n_seq = n_win * beam;
    td_wconfig cfg = *base;
    cfg.max_windows = n_win;
    cfg.max_seq = n_seq;
    cfg.max_batch_tokens = 4;
    cfg.max_rows = n_seq > 4 * n_win ? n_seq : 4 * n_win;
    td_wbackend *b = NULL;
    int rc = td_wbackend_cpu.open(m, &cfg, &b, err);
    if (rc != TD_OK)
        return rc;
    int *wins = malloc((size_t)n_win * sizeof *wins);
    const float **mels = malloc((size_t)n_win * sizeof *mels);
    td_wseq *seqs = malloc((size_t)n_seq * sizeof *seqs);
    int32_t *toks = malloc((size_t)cfg.max_rows * sizeof *toks);
    float *logits = malloc((size_t)n_seq * (size_t)n_vocab * sizeof *logits);
    double *t = calloc((size_t)runs, sizeof *t);
    td_wkv_copy *fork = malloc((size_t)n_win * sizeof *fork);
    if (!wins || !mels || !seqs || !toks || !logits || !t || !fork) {
        rc = td_error_set(err, TD_ENOMEM, "out of memory");
        goto out;
    }
    for (int w = 0; w < n_win; w++) {
        wins[w] = w;
        mels[w] = mel; /* the values do not change the work */
    }
    rc = td_wbackend_cpu.encode(b, n_win, wins, mels, err);
    for (int run = 0; run < runs && rc == TD_OK; run++) {
        /* each window's prompt in its first KV slot, then 3 * (w % 8)
         * more tokens there, then forked to its beams */
        for (int w = 0; w < n_win; w++) {
            seqs[w] = (td_wseq){.slot = w * beam, .window = w, .n_past = 0, .n_tokens = 4};
            memcpy(toks + 4 * w, prompt, 4 * sizeof *toks);
        }
        rc = td_wbackend_cpu.decode(b, n_win, seqs, toks, 0, logits, err);
        for (int k = 0; k < 21 && rc == TD_OK; k += 3) { /* up to 7 steps of 3 tokens */
            int n = 0;
            for (int w = 0; w < n_win; w++)
                if (3 * (w % 8) > k) {
                    seqs[n] = (td_wseq){.slot = w * beam, .window = w, .n_past = 4 + k,
                                        .n_tokens = 3};
                    for (int i = 0; i < 3; i++)
                        toks[3 * n + i] = prompt[3];
                    n++;
                }
            if (n > 0)
                rc = td_wbackend_cpu.decode(b, n, seqs, toks, 0, logits, err);
        }
        for (int w = 0; w < n_win && rc == TD_OK; w++)
            for (int s = 1; s < beam && rc == TD_OK; s++) {
                td_wkv_copy c = {.src = w * beam, .dst = w * beam + s, .n_pos = 4 + 3 * (w % 8)};
                rc = td_wbackend_cpu.kv_copy(b, 1, &c, err);
            }
        for (int w = 0; w < n_win; w++)
            for (int s = 0; s < beam; s++) {
                int q = w * beam + s;
                seqs[q] = (td_wseq){.slot = q, .window = w, .n_past = 4 + 3 * (w % 8),
                                    .n_tokens = 1};
                toks[q] = (int32_t)((prompt[3] + 1 + s) % n_vocab);
            }
        double t0 = now_ms();
        for (int i = 0; i < n_tokens && rc == TD_OK; i++) {
            rc = td_wbackend_cpu.decode(b, n_seq, seqs, toks, 0, logits, err);
            for (int q = 0; q < n_seq && rc == TD_OK; q++) {
                toks[q] = (int32_t)argmax(logits + (size_t)q * n_vocab, n_vocab);
                seqs[q].n_past++;
            }
            /* each window: beam 0 forks into its last beam's slot */
            if (beam > 1 && rc == TD_OK) {
                for (int w = 0; w < n_win; w++)
                    fork[w] = (td_wkv_copy){.src = w * beam, .dst = w * beam + beam - 1,
                                            .n_pos = seqs[w * beam].n_past};
                rc = td_wbackend_cpu.kv_copy(b, n_win, fork, err);
            }
        }
        t[run] = (now_ms() - t0) / n_tokens;
    }
    if (rc == TD_OK)
        *step_ms = median(t, runs);
out:
    free(wins);
    free(mels);
    free(seqs);
    free(toks);
    free(logits);
    free(t);
    free(fork);
    td_wbackend_cpu.close(b);
    return rc;
}

/* Encoder ms (median of runs) with the given GEMM implementation. */
static int time_encoder(const td_wmodel *m, const td_wconfig *cfg, enum td_wk_gemm_impl impl,
                        const float *mel, int runs, double *ms, const char **isa, td_error *err)
{
    td_wk_set_gemm_impl(impl);
    td_wbackend *b;
    int rc = td_wbackend_cpu.open(m, cfg, &b, err);
    if (rc != TD_OK)
        return rc;
    *isa = td_wcpu_isa_name(b);
    double *t = calloc((size_t)runs, sizeof *t);
    if (!t) {
        td_wbackend_cpu.close(b);
        return td_error_set(err, TD_ENOMEM, "out of memory");
    }
    rc = encode_one(b, mel, err); /* warm-up: page in the weights */
    for (int i = 0; i < runs && rc == TD_OK; i++) {
        double t0 = now_ms();
        rc = encode_one(b, mel, err);
        t[i] = now_ms() - t0;
    }
    if (rc == TD_OK)
        *ms = median(t, runs);
    free(t);
    td_wbackend_cpu.close(b);
    return rc;
}

int main(int argc, char **argv)
{
    const char *dims = "tiny", *model_path = NULL, *gemm = "both", *only = "";
    int threads = 2, runs = 5, n_tokens = 64, beam = 5, header = 0, compute = TD_WCOMPUTE_F32;
    int batch = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--header") == 0) {
            header = 1;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        if (strcmp(a, "--dims") == 0)
            dims = v;
        else if (strcmp(a, "--model") == 0)
            model_path = v;
        else if (strcmp(a, "--threads") == 0)
            threads = atoi(v);
        else if (strcmp(a, "--runs") == 0)
            runs = atoi(v);
        else if (strcmp(a, "--tokens") == 0)
            n_tokens = atoi(v);
        else if (strcmp(a, "--beam") == 0)
            beam = atoi(v);
        else if (strcmp(a, "--batch") == 0)
            batch = atoi(v);
        else if (strcmp(a, "--gemm") == 0)
            gemm = v;
        else if (strcmp(a, "--only") == 0)
            only = v;
        else if (strcmp(a, "--compute") == 0)
            compute = td_wcompute_parse(v);
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (threads < 1 || runs < 1 || compute < 0 || n_tokens < 1 || beam < 1 || beam > 64 ||
        batch < 0 || batch > 64 || batch * beam > 256 ||
        (strcmp(gemm, "own") && strcmp(gemm, "blas") && strcmp(gemm, "both"))) {
        usage();
        return 2;
    }

    td_error err;
    char tmpdir[] = "/tmp/whisper-bench-XXXXXX";
    char path[256];
    int made = 0;
    if (!model_path) {
        td_wmk_spec spec;
        memset(&spec, 0, sizeof spec);
        if (td_wmk_dims(dims, &spec.hp, &err) != TD_OK) {
            fprintf(stderr, "whisper-bench: %s\n", err.msg);
            return 2;
        }
        spec.wtype = TD_WT_F16;
        spec.seed = 1;
        if (!mkdtemp(tmpdir)) {
            fprintf(stderr, "whisper-bench: mkdtemp: %s\n", strerror(errno));
            return 1;
        }
        snprintf(path, sizeof path, "%s/ggml-%s-random.bin", tmpdir, dims);
        if (td_wmk_write(&spec, path, &err) != TD_OK) {
            fprintf(stderr, "whisper-bench: %s\n", err.msg);
            rmdir(tmpdir);
            return 1;
        }
        made = 1;
        model_path = path;
    }
    int status = 1;
    td_wmodel *m = NULL;
    float *mel = NULL, *logits = NULL;
    td_wbackend *b = NULL;
    if (td_wmodel_open(model_path, &m, &err) != TD_OK) {
        fprintf(stderr, "whisper-bench: %s\n", err.msg);
        goto out;
    }
    const td_whparams *hp = &m->hp;
    size_t n_mel = (size_t)hp->n_mels * 2 * (size_t)hp->n_audio_ctx;
    mel = malloc(n_mel * sizeof *mel);
    logits = malloc((size_t)beam * (size_t)hp->n_vocab * sizeof *logits);
    if (!mel || !logits) {
        fprintf(stderr, "whisper-bench: out of memory\n");
        goto out;
    }
    uint64_t r = 12345;
    for (size_t i = 0; i < n_mel; i++) { /* a log-mel-like range, [-1.5, 1.5) */
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        mel[i] = (float)((double)(r >> 11) / (double)(1ull << 53) * 3.0 - 1.5);
    }
    td_wconfig cfg = {.n_threads = threads, .max_seq = beam, .max_tokens = 0, .max_batch_tokens = 0,
                      .compute = compute};
    const char *compute_name = td_wcompute_name(td_wcompute_resolve((enum td_wcompute)compute));
    /* --batch's ragged starts go up to 21 positions further */
    if (4 + (batch > 0 ? 21 : 0) + n_tokens > hp->n_text_ctx) {
        fprintf(stderr, "whisper-bench: --tokens %d does not fit %d positions\n", n_tokens,
                hp->n_text_ctx);
        goto out;
    }

    /* encoder, with each GEMM */
    double enc_own = 0, enc_blas = 0;
    const char *isa = "?";
    int do_enc = strcmp(only, "dec") != 0, do_dec = strcmp(only, "enc") != 0;
    if (do_enc && strcmp(gemm, "blas") != 0 &&
        time_encoder(m, &cfg, TD_WK_GEMM_OWN, mel, runs, &enc_own, &isa, &err) != TD_OK)
        goto fail;
    if (do_enc && strcmp(gemm, "own") != 0 &&
        time_encoder(m, &cfg, TD_WK_GEMM_BLAS, mel, runs, &enc_blas, &isa, &err) != TD_OK)
        goto fail;

    /* decoder: the default GEMM */
    td_wk_set_gemm_impl(strcmp(gemm, "blas") == 0 ? TD_WK_GEMM_BLAS : TD_WK_GEMM_OWN);
    if (td_wbackend_cpu.open(m, &cfg, &b, &err) != TD_OK)
        goto fail;
    if (encode_one(b, mel, &err) != TD_OK)
        goto fail;
    int32_t prompt[4] = {m->sp.sot, m->sp.lang_begin >= 0 ? m->sp.lang_begin : m->sp.sot,
                         m->sp.transcribe >= 0 ? m->sp.transcribe : m->sp.sot,
                         m->sp.notimestamps >= 0 ? m->sp.notimestamps : m->sp.sot};
    int n_vocab = hp->n_vocab;
    double *tg = calloc((size_t)runs, sizeof *tg), *tb = calloc((size_t)runs, sizeof *tb);
    if (!tg || !tb) {
        free(tg);
        free(tb);
        td_error_set(&err, TD_ENOMEM, "out of memory");
        goto fail;
    }
    int rc = TD_OK;
    for (int run = 0; run < runs && rc == TD_OK && do_dec; run++) {
        /* greedy: the prompt, then n_tokens single-token steps */
        rc = decode_same(b, 1, 0, 0, 4, prompt, 0, logits, &err);
        double t0 = now_ms();
        for (int i = 0; i < n_tokens && rc == TD_OK; i++) {
            int32_t tok = argmax(logits, n_vocab);
            rc = decode_same(b, 1, 0, 0, 1, &tok, 4 + i, logits, &err);
        }
        tg[run] = (now_ms() - t0) / n_tokens;
        /* beam: fork the prompt, then n_tokens steps of beam sequences */
        if (rc == TD_OK)
            rc = decode_same(b, 1, 0, 0, 4, prompt, 0, logits, &err);
        td_wkv_copy fork[64];
        for (int s = 1; s < beam; s++)
            fork[s - 1] = (td_wkv_copy){.src = 0, .dst = s, .n_pos = 4};
        if (rc == TD_OK)
            rc = td_wbackend_cpu.kv_copy(b, beam - 1, fork, &err);
        int32_t toks[64];
        for (int s = 0; s < beam; s++)
            toks[s] = (int32_t)((argmax(logits, n_vocab) + s) % n_vocab);
        t0 = now_ms();
        for (int i = 0; i < n_tokens && rc == TD_OK; i++) {
            rc = decode_same(b, beam, 0, 0, 1, toks, 4 + i, logits, &err);
            for (int s = 0; s < beam; s++)
                toks[s] = (int32_t)argmax(logits + (size_t)s * n_vocab, n_vocab);
            /* a typical step: beam 0 forks into the last beam's slot */
            td_wkv_copy c = {.src = 0, .dst = beam - 1, .n_pos = 5 + i};
            if (rc == TD_OK && beam > 1)
                rc = td_wbackend_cpu.kv_copy(b, 1, &c, &err);
        }
        tb[run] = (now_ms() - t0) / n_tokens;
    }
    double greedy = median(tg, runs), beam_step = median(tb, runs);
    free(tg);
    free(tb);
    if (rc != TD_OK)
        goto fail;
    double batch_step = 0;
    if (batch > 0 && do_dec) {
        td_wbackend_cpu.close(b); /* one context at a time, for the RSS figure */
        b = NULL;
        if (time_batch(m, &cfg, mel, prompt, batch, beam, n_tokens, runs, &batch_step, &err) !=
            TD_OK)
            goto fail;
    }

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double flops = encoder_flops(hp);
    double enc = enc_own > 0 ? enc_own : enc_blas;
    if (header) {
        printf("| model | threads | kernels | encoder ms/window (own GEMM) | encoder GFLOP | GFLOP/s "
               "| encoder ms (OpenBLAS GEMM) | decoder ms/token, greedy | beam %d: ms/step "
               "| ms/token/beam | peak RSS MiB |\n",
               beam);
        printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    }
    char own_s[32], blas_s[32], gfs_s[32];
    snprintf(gfs_s, sizeof gfs_s, enc > 0 ? "%.0f" : "-", enc > 0 ? flops / (enc * 1e6) : 0.0);
    snprintf(own_s, sizeof own_s, enc_own > 0 ? "%.0f" : "-", enc_own);
    snprintf(blas_s, sizeof blas_s, enc_blas > 0 ? "%.0f" : "-", enc_blas);
    /* a generated model by its dimensions, a file by its name */
    char label[300];
    if (made) {
        snprintf(label, sizeof label, "%s (random F16, %s)", dims, compute_name);
    } else {
        char base[256];
        snprintf(base, sizeof base, "%s", model_path);
        snprintf(label, sizeof label, "%s (%s)", basename(base), compute_name);
    }
    printf("| %s | %d | %s | %s | %.1f | %s | %s | %.2f | %.2f | %.2f | %.0f |\n", label,
           threads, isa, own_s, flops / 1e9, gfs_s, blas_s, greedy, beam_step, beam_step / beam,
           ru.ru_maxrss / 1024.0);
    if (batch > 0 && do_dec) {
        if (header) {
            printf("\n| model | threads | windows x beam | ms/step | ms/token/window "
                   "| ms/token/sequence |\n");
            printf("| --- | --- | --- | --- | --- | --- |\n");
        }
        printf("| %s | %d | %d x %d | %.2f | %.3f | %.3f |\n", label, threads, batch, beam,
               batch_step, batch_step / batch, batch_step / (batch * beam));
    }
    fflush(stdout);
    status = 0;
    goto out;
fail:
    fprintf(stderr, "whisper-bench: %s\n", err.msg);
out:
    if (b)
        td_wbackend_cpu.close(b);
    free(mel);
    free(logits);
    td_wmodel_close(m);
    if (made) {
        unlink(path);
        rmdir(tmpdir);
    }
    return status;
}
