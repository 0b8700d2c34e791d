// dec_attn.comp: the decoder's attention, one workgroup of 128 threads per
// (row, head): scores of the row's query against its keys into shared
// memory, softmax, then the weighted sum of the values. Row r's keys are
// rows [0, info[2r+1]) of k starting info[2r] floats in (ld apart): a KV
// slot's first positions for self-attention (the causal bound is the
// count), a window's encoder frames for cross-attention. Scores by
// q . k * scale, as the CPU backend's q k^T / sqrt(d).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint D = 64;
layout(local_size_x = 128) in;

layout(push_constant) uniform P {
    F32 q; F32 o; F32 k; F32 v; I32 info;
    uint ld;
    float scale;
} p;

const uint MAXK = 1536;     // >= TD_WMAX_AUDIO_CTX and TD_WMAX_TEXT_CTX
const uint NP = 128 / D;    // threads per output element (D <= 128)
shared float qs[D];
shared float sc[MAXK];
shared float red[128];
shared float part[NP * D];

void main()
{
    uint r = gl_WorkGroupID.x, h0 = gl_WorkGroupID.y * D, t = gl_LocalInvocationID.x;
    uint base = uint(p.info.v[2 * r]);
    uint nk = uint(p.info.v[2 * r + 1]);
    for (uint i = t; i < D; i += 128)
        qs[i] = p.q.v[r * p.ld + h0 + i];
    barrier();
    float mx = -1e30;
    for (uint j = t; j < nk; j += 128) {
        uint ko = base + j * p.ld + h0;
        float d = 0.0;
        for (uint i = 0; i < D; i++)
            d += qs[i] * p.k.v[ko + i];
        d *= p.scale;
        sc[j] = d;
        mx = max(mx, d);
    }
    red[t] = mx;
    barrier();
    for (uint s = 64; s > 0; s >>= 1) {
        if (t < s)
            red[t] = max(red[t], red[t + s]);
        barrier();
    }
    mx = red[0];
    barrier();
    float sum = 0.0;
    for (uint j = t; j < nk; j += 128) {
        float e = exp(sc[j] - mx);
        sc[j] = e;
        sum += e;
    }
    red[t] = sum;
    barrier();
    for (uint s = 64; s > 0; s >>= 1) {
        if (t < s)
            red[t] += red[t + s];
        barrier();
    }
    sum = red[0];
    if (t < NP * D) {
        uint i = t % D, pp = t / D;
        float a = 0.0;
        for (uint j = pp; j < nk; j += NP)
            a += sc[j] * p.v.v[base + j * p.ld + h0 + i];
        part[pp * D + i] = a;
    }
    barrier();
    if (t < D) {
        float a = 0.0;
        for (uint pp = 0; pp < NP; pp++)
            a += part[pp * D + t];
        p.o.v[r * p.ld + h0 + t] = a / sum;
    }
}
