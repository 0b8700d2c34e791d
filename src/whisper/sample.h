/*
 * sample.h: the arithmetic of one sampling step on one row of logits,
 * shared by the decoding rules (decode.c, for backends without a sample()
 * entry) and the CPU backend's sample() entry, so that both give the same
 * answer to the last bit.
 *
 * One row: mask the static suppression list, the row's ranges and (flag
 * TD_WSAMPLE_BLANK) blank and eot; with a timestamp rule, mask the text
 * tokens when the timestamps' summed probability beats every text token
 * (openai's ApplyTimestampRules, last step); then the log-softmax in
 * double, the top k tokens (ties to the lower id, as a stable sort), and
 * at temperature T > 0 one draw from softmax(masked / T) by walking the
 * cumulative sum in id order with a caller-given uniform u.
 *
 * The row is masked in place: callers pass their own copy.
 */
#ifndef TD_WHISPER_SAMPLE_H
#define TD_WHISPER_SAMPLE_H

#include "whisper/backend.h"

/* Sample row x (n_vocab floats, modified) under sp and in; fills out.
 * A row holding a NaN gives out->has_nan = 1 and nothing else. */
void td_wsample_row(const td_wsampler *sp, int n_vocab, float *x, const td_wsample_in *in,
                    td_wsample_out *out);

/* log(sum(exp(x))) of n floats in double; -inf when all are -inf.
 * Returns -1 if a NaN is among them. */
int td_wrow_lse(const float *x, int n, double *lse);

/* log(exp(a) + exp(b)) without overflow; either -inf gives the other
 * (the Vulkan backend's sampler combines its device sums with it too). */
double td_logaddexp(double a, double b);

#endif
