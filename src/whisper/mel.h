/*
 * mel.h: Whisper's log-mel front end.
 *
 * As openai-whisper's log_mel_spectrogram: 16 kHz samples, a 400-point
 * periodic Hann window, hop 160, centred frames (the signal reflected by
 * 200 samples at both ends), power spectrum of the 201 rFFT bins with the
 * last frame dropped, the model's own filterbank (80 or 128 mels), then
 * log10(max(mel, 1e-10)), clamped to (max - 8), and (x + 4) / 4.
 *
 * Layout: [n_mels][n_frames], row-major by mel bin, as the encoder's
 * first convolution reads it.
 */
#ifndef TD_WHISPER_MEL_H
#define TD_WHISPER_MEL_H

#include <stddef.h>

#include "util/error.h"

#define TD_WMEL_RATE 16000
#define TD_WMEL_NFFT 400
#define TD_WMEL_HOP 160
#define TD_WMEL_BINS 201               /* NFFT / 2 + 1 */
#define TD_WMEL_WINDOW_FRAMES 3000     /* 30 s */
#define TD_WMEL_WINDOW_SAMPLES 480000

/* Frames for n samples: n / HOP (the centred STFT has n / HOP + 1, and
 * Whisper drops the last). */
size_t td_wmel_frames(size_t n_samples);

/* log10(max(mel, 1e-10)) of every frame of pcm[0..n) into
 * out[m * n_frames + f] with n_frames = td_wmel_frames(n); filters is
 * [n_mels][201]. Not yet clamped or scaled: see td_wmel_normalize. Uses up
 * to n_threads threads (0 or 1: the calling thread only). TD_ENOMEM or
 * TD_EINVAL (n < 201: too short to reflect). */
int td_wmel_log(const float *pcm, size_t n, const float *filters, int n_mels, float *out,
                int n_threads, td_error *err);

/* Clamp every value to (max of all - 8), then map x -> (x + 4) / 4. */
void td_wmel_normalize(float *logmel, size_t count);

#endif
