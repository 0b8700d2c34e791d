/*
 * tapedeck-mkmodel: write a ggml Whisper model file with seeded random
 * weights, for tests, benchmarks and the comparison with reference
 * implementations (the same seed gives the same bytes on every machine).
 *
 * Builds alone, without FFmpeg or anything else tapedeck links:
 *
 *   cc -std=c11 -O2 -D_GNU_SOURCE -Isrc tools/mkmodel.c src/whisper/mkmodel.c \
 *      src/util/error.c -lm -o tapedeck-mkmodel
 *
 * Examples:
 *   tapedeck-mkmodel --dims tiny --seed 1 --out ggml-tiny-random.bin
 *   tapedeck-mkmodel --dims base.en --vocab ../shared/whisper/base.en.header.bin --out m.bin
 *   tapedeck-mkmodel --n-audio-state 64 --n-text-state 64 --n-audio-head 2 \
 *      --n-text-head 2 --n-audio-layer 2 --n-text-layer 2 --ftype f32 --out small.bin
 *
 * Exit status: 0 written, 1 failure, 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/error.h"
#include "whisper/mkmodel.h"

static void usage(FILE *f)
{
    fputs("usage: tapedeck-mkmodel [options] --out PATH\n"
          "\n"
          "Write a ggml Whisper model file (whisper.cpp's legacy format) with\n"
          "seeded random weights.\n"
          "\n"
          "  --dims NAME        standard dimensions (default tiny): tiny, base, small,\n"
          "                     medium (each also NAME.en), large-v2, large-v3,\n"
          "                     large-v3-turbo\n"
          "  --n-audio-state N, --n-audio-head N, --n-audio-layer N, --n-audio-ctx N,\n"
          "  --n-text-state N, --n-text-head N, --n-text-layer N, --n-text-ctx N,\n"
          "  --n-mels N, --n-vocab N\n"
          "                     override one dimension of --dims (n_vocab: 51864\n"
          "                     English-only, 51865 multilingual, 51866 large-v3)\n"
          "  --ftype f16|f32    type of the 2-D weights (default f16, as released)\n"
          "  --seed N           PRNG seed (default 0)\n"
          "  --vocab synthetic|HEADER.bin\n"
          "                     vocabulary and mel filterbank: made up (default) or\n"
          "                     copied from a model or header file whose n_vocab and\n"
          "                     n_mels match\n"
          "  --vocab-count N    tokens the synthetic vocabulary spells out (default the\n"
          "                     real 50256 or 50257; smaller for small fuzz seeds)\n"
          "  --out PATH         the file to write (atomically)\n"
          "  --help             this text\n",
          f);
}

/* A decimal integer in [lo, hi], or -1 with a message. */
static int parse_int(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "tapedeck-mkmodel: %s: '%s' is not a number in %lld..%lld\n", opt, s, lo,
                hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* "--name" of a long option, for messages. */
static const char *opt_name(const struct option *opts, int val)
{
    static char buf[64];
    for (; opts->name; opts++)
        if (opts->val == val) {
            snprintf(buf, sizeof buf, "--%s", opts->name);
            return buf;
        }
    return "option";
}

enum {
    OPT_DIMS = 256,
    OPT_A_STATE,
    OPT_A_HEAD,
    OPT_A_LAYER,
    OPT_A_CTX,
    OPT_T_STATE,
    OPT_T_HEAD,
    OPT_T_LAYER,
    OPT_T_CTX,
    OPT_MELS,
    OPT_VOCAB_N,
    OPT_FTYPE,
    OPT_SEED,
    OPT_VOCAB,
    OPT_VOCAB_COUNT,
    OPT_OUT,
    OPT_HELP,
};

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dims", required_argument, NULL, OPT_DIMS},
        {"n-audio-state", required_argument, NULL, OPT_A_STATE},
        {"n-audio-head", required_argument, NULL, OPT_A_HEAD},
        {"n-audio-layer", required_argument, NULL, OPT_A_LAYER},
        {"n-audio-ctx", required_argument, NULL, OPT_A_CTX},
        {"n-text-state", required_argument, NULL, OPT_T_STATE},
        {"n-text-head", required_argument, NULL, OPT_T_HEAD},
        {"n-text-layer", required_argument, NULL, OPT_T_LAYER},
        {"n-text-ctx", required_argument, NULL, OPT_T_CTX},
        {"n-mels", required_argument, NULL, OPT_MELS},
        {"n-vocab", required_argument, NULL, OPT_VOCAB_N},
        {"ftype", required_argument, NULL, OPT_FTYPE},
        {"seed", required_argument, NULL, OPT_SEED},
        {"vocab", required_argument, NULL, OPT_VOCAB},
        {"vocab-count", required_argument, NULL, OPT_VOCAB_COUNT},
        {"out", required_argument, NULL, OPT_OUT},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *dims = "tiny", *out = NULL;
    /* Custom dimensions apply after --dims whatever the order given. */
    long long custom[OPT_VOCAB_N - OPT_A_STATE + 1];
    for (size_t i = 0; i < sizeof custom / sizeof custom[0]; i++)
        custom[i] = -1;
    td_wmk_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.wtype = TD_WT_F16;

    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        long long v;
        switch (c) {
        case OPT_DIMS:
            dims = optarg;
            break;
        case OPT_A_STATE:
        case OPT_A_HEAD:
        case OPT_A_LAYER:
        case OPT_A_CTX:
        case OPT_T_STATE:
        case OPT_T_HEAD:
        case OPT_T_LAYER:
        case OPT_T_CTX:
        case OPT_MELS:
        case OPT_VOCAB_N:
            if (parse_int(opt_name(opts, c), optarg, 1, INT32_MAX, &v) != 0)
                return 2;
            custom[c - OPT_A_STATE] = v;
            break;
        case OPT_FTYPE:
            if (strcmp(optarg, "f16") == 0) {
                spec.wtype = TD_WT_F16;
            } else if (strcmp(optarg, "f32") == 0) {
                spec.wtype = TD_WT_F32;
            } else {
                fprintf(stderr, "tapedeck-mkmodel: --ftype: '%s' is not f16 or f32\n", optarg);
                return 2;
            }
            break;
        case OPT_SEED:
            {
                char *end;
                errno = 0;
                unsigned long long s = strtoull(optarg, &end, 0);
                if (errno || end == optarg || *end || optarg[0] == '-') {
                    fprintf(stderr, "tapedeck-mkmodel: --seed: '%s' is not a number\n", optarg);
                    return 2;
                }
                spec.seed = (uint64_t)s;
            }
            break;
        case OPT_VOCAB:
            spec.header_path = strcmp(optarg, "synthetic") == 0 ? NULL : optarg;
            break;
        case OPT_VOCAB_COUNT:
            if (parse_int("--vocab-count", optarg, 1, 50257, &v) != 0)
                return 2;
            spec.vocab_count = (int32_t)v;
            break;
        case OPT_OUT:
            out = optarg;
            break;
        case OPT_HELP:
            usage(stdout);
            return 0;
        default:
            if (optopt >= OPT_DIMS && optopt <= OPT_OUT)
                fprintf(stderr, "tapedeck-mkmodel: %s needs a value\n", argv[optind - 1]);
            else
                fprintf(stderr, "tapedeck-mkmodel: unknown option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tapedeck-mkmodel: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!out) {
        fprintf(stderr, "tapedeck-mkmodel: --out PATH is required\n");
        usage(stderr);
        return 2;
    }

    td_error err = {0};
    if (td_wmk_dims(dims, &spec.hp, &err) != TD_OK) {
        fprintf(stderr, "tapedeck-mkmodel: %s\n", err.msg);
        return 2;
    }
    int32_t *fields[] = {&spec.hp.n_audio_state, &spec.hp.n_audio_head, &spec.hp.n_audio_layer,
                         &spec.hp.n_audio_ctx,   &spec.hp.n_text_state, &spec.hp.n_text_head,
                         &spec.hp.n_text_layer,  &spec.hp.n_text_ctx,   &spec.hp.n_mels,
                         &spec.hp.n_vocab};
    int is_custom = 0;
    for (size_t i = 0; i < sizeof custom / sizeof custom[0]; i++)
        if (custom[i] >= 0) {
            *fields[i] = (int32_t)custom[i];
            is_custom = 1;
        }

    int rc = td_wmk_write(&spec, out, &err);
    if (rc != TD_OK) {
        fprintf(stderr, "tapedeck-mkmodel: %s\n", err.msg);
        return rc == TD_EINVAL ? 2 : 1;
    }
    struct stat st;
    long long size = stat(out, &st) == 0 ? (long long)st.st_size : -1;
    printf("%s: %s%s, state %d/%d, heads %d/%d, layers %d/%d, ctx %d/%d, %d mels, n_vocab %d, "
           "%s, seed %llu, %lld bytes\n",
           out, dims, is_custom ? " (custom)" : "",
           (int)spec.hp.n_audio_state, (int)spec.hp.n_text_state, (int)spec.hp.n_audio_head,
           (int)spec.hp.n_text_head, (int)spec.hp.n_audio_layer, (int)spec.hp.n_text_layer,
           (int)spec.hp.n_audio_ctx, (int)spec.hp.n_text_ctx, (int)spec.hp.n_mels,
           (int)spec.hp.n_vocab, spec.wtype == TD_WT_F16 ? "f16" : "f32",
           (unsigned long long)spec.seed, size);
    return 0;
}
