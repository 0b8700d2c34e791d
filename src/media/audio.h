/*
 * audio.h: a scene's speech audio, decoded and resampled to 16 kHz mono.
 *
 * Decoding is streaming: the reader holds one packet's worth of decoded
 * audio at a time, so a 3-hour capture never sits in memory whole. It uses
 * the first audio stream (the default-disposition one if several), decodes
 * it with libavcodec and converts it with libswresample to float samples in
 * [-1, 1] at TD_AUDIO_RATE.
 *
 * Errors say which file and why, with TD_EINPUT for anything wrong with the
 * file itself: empty file, not a media file, no audio stream, truncated
 * (the stream ends well before the duration the container declares),
 * undecodable audio.
 *
 * Ownership: td_audio_open allocates the reader; td_audio_close frees it and
 * sets the pointer to NULL.
 */
#ifndef TD_MEDIA_AUDIO_H
#define TD_MEDIA_AUDIO_H

#include <stddef.h>

#include "util/error.h"

#define TD_AUDIO_RATE 16000

typedef struct td_audio_reader td_audio_reader;

int td_audio_open(const char *path, td_audio_reader **out, td_error *err);

/* Container-declared duration of the audio in seconds, or -1 if unknown. */
double td_audio_duration(const td_audio_reader *r);

/* Read up to max samples. Returns the number read (> 0), 0 at the end of
 * the stream, or a negative td_rc with err filled. */
long td_audio_read(td_audio_reader *r, float *out, size_t max, td_error *err);

/* Samples delivered so far. */
size_t td_audio_position(const td_audio_reader *r);

void td_audio_close(td_audio_reader **r);

#endif
