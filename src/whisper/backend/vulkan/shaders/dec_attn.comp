// dec_attn.comp: the decoder's attention, split over the keys (flash
// decoding): workgroup (row, head, split) takes keys [split * SPL, +SPL)
// of the row's range, one key per thread for the scores. Row r's keys
// are rows [0, info[2r+1]) of k starting info[2r] floats in (ld apart): a
// KV slot's first positions for self-attention (the causal bound is the
// count), a window's encoder frames for cross-attention. Splitting gives
// a single sequence's step (16 heads) hundreds of workgroups instead of
// 16.
// With one split (a self-attention of at most SPL keys) the workgroup
// writes the row's output itself, normalized, at o (ld apart). With
// more, each writes its part (running maximum, sum of exponentials,
// unnormalized output: D + 2 floats at part[((row * heads + head) *
// n_split + split)]) and counts itself in cnt[row * heads + head]; the
// last of a (row, head) to finish combines the parts, writes the output
// and sets the count back to 0 (so it is 0 for the next dispatch):
// no merge dispatch and no barrier before one. Parts are written, and
// read by the last, through coherent references, with a buffer memory
// barrier before the count, so that what the others wrote is seen.
// Reductions by subgroup (max, add) and, across subgroups, through
// shared memory: correct for any subgroup size. With heads of at most 64
// floats (Whisper's), each thread's key and value rows are loaded into
// registers before anything waits.
// KV16 (specialization constant): keys and values are halves (the
// cross-attention's, written by the encoder), offsets and strides in
// elements as with floats; they are widened on load and everything else
// stays in floats.
// dec_attn_group.comp computes the same for groups of rows that share
// their keys (the cross-attention's rows of a window), each row's output
// with the bits this shader gives it: what both share is in
// dec_attn.glsl, and its per-row arithmetic is written as here (a change
// here is a change there).
#version 450
#extension GL_GOOGLE_include_directive : require
// The head width: compiled in for 64 (DA_D64, every Whisper decoder's),
// specialized for other widths (DA_D0): see dec_attn.glsl.
// @variants DA_D 0 64
// @function-arrays-ok dec_attn_DA_D0 -- other widths: loops of a specialized count, unrolled by the driver if at all
#include "dec_attn.glsl"

#include "dec_attn_row.glsl"

void main()
{
    dec_attn_run(gl_WorkGroupID, gl_NumWorkGroups);
}
