// att_weights.comp: word alignment's cross-attention weights (backend.h's
// align_weights; the CPU backend's align_probs): for row r of q (ld
// apart) and the head at float column h0, softmax(q k^T / sqrt(D)) over
// all nk keys (rows of k from float offset kofs, ld apart), written to
// o[(orow0 + r) * nk + j]. One workgroup per row; the scores are written
// first and rescaled in place by the thread that wrote them. KV16
// (specialization constant): the keys are halves (offsets in elements).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint D = 64;
layout(constant_id = 1) const uint KV16 = 0;
layout(local_size_x = 256) in;

layout(push_constant) uniform P {
    F32 q; F32 k; F32 o;
    uint ld, nk, h0, kofs, orow0;
    float scale;
} p;

shared float qs[D];
shared float red[256];

float key(uint i)
{
    if (KV16 != 0) {
        vec2 h = unpackHalf2x16(U32(p.k).v[i >> 1]);
        return (i & 1) != 0 ? h.y : h.x;
    }
    return p.k.v[i];
}

float reduce(float v, bool is_max)
{
    uint t = gl_LocalInvocationID.x;
    red[t] = v;
    barrier();
    for (uint s = 128; s > 0; s >>= 1) {
        if (t < s)
            red[t] = is_max ? max(red[t], red[t + s]) : red[t] + red[t + s];
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

void main()
{
    uint r = gl_WorkGroupID.x, t = gl_LocalInvocationID.x;
    for (uint i = t; i < D; i += 256)
        qs[i] = p.q.v[r * p.ld + p.h0 + i];
    barrier();
    uint ob = (p.orow0 + r) * p.nk;
    float mx = -1e30;
    for (uint j = t; j < p.nk; j += 256) {
        uint ko = p.kofs + j * p.ld + p.h0;
        float d = 0.0;
        for (uint i = 0; i < D; i++)
            d += qs[i] * key(ko + i);
        d *= p.scale;
        p.o.v[ob + j] = d;
        mx = max(mx, d);
    }
    mx = reduce(mx, true);
    float sum = 0.0;
    for (uint j = t; j < p.nk; j += 256) {
        float e = exp(p.o.v[ob + j] - mx);
        p.o.v[ob + j] = e;
        sum += e;
    }
    float inv = 1.0 / reduce(sum, false);
    for (uint j = t; j < p.nk; j += 256)
        p.o.v[ob + j] *= inv;
}
