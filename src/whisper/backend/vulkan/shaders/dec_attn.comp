// dec_attn.comp: the decoder's attention, split over the keys (flash
// decoding): workgroup (row, head, split) takes keys [split * SPL, +SPL)
// of the row's range, one key per thread for the scores, and writes its
// part: running maximum, sum of exponentials and unnormalized output
// (D + 2 floats at part[((row * heads + head) * n_split + split)]);
// dec_merge.comp combines the parts. Row r's keys are rows [0, info[2r+1])
// of k starting info[2r] floats in (ld apart): a KV slot's first positions
// for self-attention (the causal bound is the count), a window's encoder
// frames for cross-attention. Splitting gives a single sequence's step
// (16 heads) hundreds of workgroups instead of 16. With one split (a
// self-attention of at most SPL keys) the workgroup writes the row's
// output itself, normalized, at o (ld apart), and no merge runs.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint D = 64;
layout(local_size_x = 128) in;

layout(push_constant) uniform P {
    F32 q; F32 part; F32 k; F32 v; I32 info; F32 o;
    uint ld, n_split;
    float scale;
} p;

const uint SPL = 128;        // keys per split = threads
const uint NP = 128 / D;     // threads per output element (D <= 128)
shared float qs[D];
shared float sc[SPL];
shared float red[128];
shared float partial[NP * D];

void main()
{
    uint r = gl_WorkGroupID.x, h = gl_WorkGroupID.y, sp = gl_WorkGroupID.z;
    uint t = gl_LocalInvocationID.x, h0 = h * D;
    uint base = uint(p.info.v[2 * r]);
    uint nk = uint(p.info.v[2 * r + 1]);
    uint j0 = sp * SPL;
    uint nb = j0 < nk ? min(SPL, nk - j0) : 0;
    for (uint i = t; i < D; i += 128)
        qs[i] = p.q.v[r * p.ld + h0 + i] * p.scale;
    barrier();
    float s = -1e30;
    if (t < nb) {
        uint ko = base + (j0 + t) * p.ld + h0;
        float d = 0.0;
        if ((D & 3) == 0 && ((base | p.ld | h0) & 3) == 0) {
            // 16 bytes a load: a key row in D / 4 loads, all issued at once
            F32x4 k4 = F32x4(p.k);
            for (uint i = 0; i < D; i += 4) {
                vec4 kv = k4.v[(ko + i) / 4];
                d += qs[i] * kv.x + qs[i + 1] * kv.y + qs[i + 2] * kv.z + qs[i + 3] * kv.w;
            }
        } else {
            for (uint i = 0; i < D; i++)
                d += qs[i] * p.k.v[ko + i];
        }
        s = d;
    }
    red[t] = s;
    barrier();
    for (uint w = 64; w > 0; w >>= 1) {
        if (t < w)
            red[t] = max(red[t], red[t + w]);
        barrier();
    }
    float mx = red[0];
    barrier();
    float e = t < nb ? exp(s - mx) : 0.0;
    sc[t] = e;
    red[t] = e;
    barrier();
    for (uint w = 64; w > 0; w >>= 1) {
        if (t < w)
            red[t] += red[t + w];
        barrier();
    }
    float sum = red[0];
    if (t < NP * D) {
        uint i = t % D, pp = t / D;
        float a = 0.0;
        for (uint j = pp; j < nb; j += NP)
            a += sc[j] * p.v.v[base + (j0 + j) * p.ld + h0 + i];
        partial[pp * D + i] = a;
    }
    barrier();
    if (p.n_split == 1) {
        if (t < D) {
            float a = 0.0;
            for (uint pp = 0; pp < NP; pp++)
                a += partial[pp * D + t];
            p.o.v[r * p.ld + h0 + t] = a / sum;
        }
        return;
    }
    uint po = ((r * gl_NumWorkGroups.y + h) * p.n_split + sp) * (D + 2);
    if (t < D) {
        float a = 0.0;
        for (uint pp = 0; pp < NP; pp++)
            a += partial[pp * D + t];
        p.part.v[po + 2 + t] = a;
    }
    if (t == 0) {
        p.part.v[po] = nb > 0 ? mx : -1e30;
        p.part.v[po + 1] = sum;
    }
}
