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

layout(push_constant) uniform P {
    F32 q; F32c part; F32 k; F32 v; I32 info; F32 o; I32c cnt;
    uint ld, n_split;
    float scale;
} p;

shared float qs[D];
shared float sc[SPL];
shared float sg_red[128];
shared vec4 partial4[128];
shared float partial[NP * D];
shared bool last;

// the workgroup's maximum (mx) or sum of v, in every thread
float wg_max(float v)
{
    v = subgroupMax(v);
    if (subgroupElect())
        sg_red[gl_SubgroupID] = v;
    barrier();
    float r = -1e30;
    for (uint i = 0; i < gl_NumSubgroups; i++)
        r = max(r, sg_red[i]);
    barrier();
    return r;
}

float wg_sum(float v)
{
    v = subgroupAdd(v);
    if (subgroupElect())
        sg_red[gl_SubgroupID] = v;
    barrier();
    float r = 0.0;
    for (uint i = 0; i < gl_NumSubgroups; i++)
        r += sg_red[i];
    barrier();
    return r;
}

void main()
{
    uint r = gl_WorkGroupID.x, h = gl_WorkGroupID.y, sp = gl_WorkGroupID.z;
    uint t = gl_LocalInvocationID.x, h0 = h * D;
    uint base = uint(p.info.v[2 * r]);
    uint nk = uint(p.info.v[2 * r + 1]);
    uint j0 = sp * SPL;
    uint nb = j0 < nk ? min(SPL, nk - j0) : 0;
    // 16 bytes a load where the head's rows allow it
    bool v4 = (D & 3) == 0 && ((base | p.ld | h0) & 3) == 0;
    // heads of at most 64: this thread's key row and the value rows it
    // adds up are loaded first, into registers, so that the query, the
    // keys and the values come in one trip to memory, not three
    const uint Q = D / 4, KP = 128 / Q, NV = (SPL + KP - 1) / KP;
    bool pf = v4 && D <= 64;
    uint qi = t % Q, kp = t / Q;
    uint ko = base + (j0 + t) * p.ld + h0;
    uint vo = (base + j0 * p.ld + h0) / 4 + qi;
    vec4 kr[Q], vr[NV];
    if (pf) {
        // branch-free, so that the loops unroll: rows past the split's
        // keys load a row that exists (the split's last, or the range's
        // first where the split has none) and are weighed by zero below
        uint jk = nb > 0 ? j0 + min(t, nb - 1) : 0;
        uint ko1 = base + jk * p.ld + h0;
        [[unroll]] for (uint i = 0; i < Q; i++)
            kr[i] = ld4(p.k, ko1 / 4 + i);
        uint vo1 = nb > 0 ? vo : (base + h0) / 4 + qi;
        [[unroll]] for (uint i = 0; i < NV; i++) {
            uint j = nb > 0 ? min(kp + i * KP, nb - 1) : 0;
            vr[i] = ld4(p.v, vo1 + j * (p.ld / 4));
        }
    }
    for (uint i = t; i < D; i += 128)
        qs[i] = p.q.v[r * p.ld + h0 + i] * p.scale;
    barrier();
    float s = -1e30;
    if (t < nb) {
        float d = 0.0;
        if (pf) {
            [[unroll]] for (uint i = 0; i < Q; i++)
                d += qs[4 * i] * kr[i].x + qs[4 * i + 1] * kr[i].y + qs[4 * i + 2] * kr[i].z +
                     qs[4 * i + 3] * kr[i].w;
        } else if (v4) {
            // a key row in D / 4 loads, all issued at once
            for (uint i = 0; i < D; i += 4) {
                vec4 kv = ld4(p.k, (ko + i) / 4);
                d += qs[i] * kv.x + qs[i + 1] * kv.y + qs[i + 2] * kv.z + qs[i + 3] * kv.w;
            }
        } else {
            for (uint i = 0; i < D; i++)
                d += qs[i] * ld1(p.k, ko + i);
        }
        s = d;
    }
    float mx = wg_max(s);
    float e = t < nb ? exp(s - mx) : 0.0;
    sc[t] = e;
    float sum = wg_sum(e); // its barriers also publish sc
    // out[i] = sum_j sc[j] v[j][i]
    float outv = 0.0; // element t of the output, t < D
    if (v4) {
        // quads of the output: thread t takes quad t % Q of keys
        // t / Q, t / Q + KP, ...
        vec4 a = vec4(0.0);
        if (pf) {
            [[unroll]] for (uint i = 0; i < NV; i++) {
                uint j = kp + i * KP;
                a += j < nb ? sc[min(j, SPL - 1)] * vr[i] : vec4(0.0);
            }
        } else {
            for (uint j = kp; j < nb; j += KP)
                a += sc[j] * ld4(p.v, vo + j * (p.ld / 4));
        }
        partial4[t] = a;
        barrier();
        if (t < D) {
            uint q = t / 4, c = t % 4;
            for (uint i = 0; i < KP; i++)
                outv += partial4[i * Q + q][c];
        }
    } else {
        if (t < NP * D) {
            uint i = t % D, pp = t / D;
            float a = 0.0;
            for (uint j = pp; j < nb; j += NP)
                a += sc[j] * ld1(p.v, base + (j0 + j) * p.ld + h0 + i);
            partial[pp * D + i] = a;
        }
        barrier();
        if (t < D)
            for (uint pp = 0; pp < NP; pp++)
                outv += partial[pp * D + t];
    }
    if (p.n_split == 1) {
        if (t < D)
            p.o.v[r * p.ld + h0 + t] = outv / sum;
        return;
    }
    uint pb = (r * gl_NumWorkGroups.y + h) * p.n_split * (D + 2);
    uint po = pb + sp * (D + 2);
    if (t < D)
        p.part.v[po + 2 + t] = outv;
    if (t == 0) {
        p.part.v[po] = nb > 0 ? mx : -1e30;
        p.part.v[po + 1] = sum;
    }
    // the last workgroup of (row, head) to get here merges
    memoryBarrierBuffer();
    barrier();
    uint ci = r * gl_NumWorkGroups.y + h;
    if (t == 0)
        last = atomicAdd(p.cnt.v[ci], 1) == int(p.n_split) - 1;
    barrier();
    if (!last)
        return;
    memoryBarrierBuffer();
    da_merge(p.part, p.o, p.n_split, pb, r * p.ld + h0, t);
    if (t == 0)
        p.cnt.v[ci] = 0;
}
