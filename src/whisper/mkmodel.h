/*
 * mkmodel.h: write ggml Whisper model files with seeded random weights.
 *
 * For tests, benchmarks and the reference comparison: a model of any
 * standard size (or custom dims) whose weights come from tapedeck's own
 * PRNG, so the same seed gives the same bytes on every machine (no libm
 * call touches a weight). The vocabulary and mel filterbank are either
 * synthetic (a deterministic vocabulary of the real size with the tokens
 * the decoding rules look up, and the Slaney mel filterbank Whisper uses,
 * computed here) or copied from a real model's header file, such as
 * ../shared/whisper/base.header.bin.
 *
 * Kept free of media dependencies: tools/mkmodel.c + this module +
 * src/util/error.c build alone with a C compiler and libm.
 */
#ifndef TD_WHISPER_MKMODEL_H
#define TD_WHISPER_MKMODEL_H

#include <stdint.h>

#include "util/error.h"
#include "whisper/model.h"

typedef struct td_wmk_spec {
    td_whparams hp;            /* ftype is set from wtype */
    enum td_wtype wtype;       /* type of the 2-D weights: F16 (as released) or F32 */
    uint64_t seed;
    const char *header_path;   /* NULL: synthetic vocabulary and computed filterbank */
    int32_t vocab_count;       /* synthetic vocabulary only: tokens spelled out in the
                                * file, 1 .. the real count; 0 = the real count
                                * (50256 English-only, 50257 otherwise). Smaller
                                * counts make small files for fuzz seeds. */
} td_wmk_spec;

/* Standard dimensions by name: tiny, base, small, medium, large-v2,
 * large-v3, large-v3-turbo, each also with ".en" where Whisper has one.
 * TD_EINVAL for an unknown name. */
int td_wmk_dims(const char *name, td_whparams *hp, td_error *err);

/* Write the model atomically to path. TD_EINVAL for dims out of the
 * loader's bounds or a header whose hparams disagree with spec (n_mels,
 * n_vocab); TD_EIO / TD_EINPUT for header or output problems. */
int td_wmk_write(const td_wmk_spec *spec, const char *path, td_error *err);

/* The Slaney-scale mel filterbank Whisper's files carry (librosa
 * mel(sr=16000, n_fft=400, n_mels, htk=False, norm="slaney")), computed
 * in double and rounded: out is [n_mels][201]. */
void td_wmk_mel_filters(int n_mels, float *out);

#endif
