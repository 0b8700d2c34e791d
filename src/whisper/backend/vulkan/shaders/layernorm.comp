// layernorm.comp: y[r] = (x[i] - mean) / sqrt(var + eps) * w + b over n
// elements, one workgroup per output row r, where i = idx[r] with
// use_idx & 1 (the decoder's last token of each sequence) else r. Mean
// first, then the variance of the centred values (the CPU backend's two
// passes). use_idx & 2: y as halves (n and ldy even, y 4-byte aligned;
// the encoder's products then load half the bytes: ops.h's TD_VKO_AHALF).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

layout(push_constant) uniform P {
    F32 x; F32 w; F32 b; F32 y; I32 idx;
    uint n, ldx, ldy, use_idx;
    float eps;
} p;

shared float red[256];

float block_sum(float v)
{
    uint t = gl_LocalInvocationID.x;
    red[t] = v;
    barrier();
    for (uint s = 128; s > 0; s >>= 1) {
        if (t < s)
            red[t] += red[t + s];
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

void main()
{
    uint r = gl_WorkGroupID.x, t = gl_LocalInvocationID.x;
    uint i = (p.use_idx & 1u) != 0 ? uint(p.idx.v[r]) : r;
    uint xo = i * p.ldx, yo = r * p.ldy;
    float s = 0.0;
    for (uint k = t; k < p.n; k += 256)
        s += p.x.v[xo + k];
    float mean = block_sum(s) / float(p.n);
    float q = 0.0;
    for (uint k = t; k < p.n; k += 256) {
        float d = p.x.v[xo + k] - mean;
        q += d * d;
    }
    float inv = 1.0 / sqrt(block_sum(q) / float(p.n) + p.eps);
    if ((p.use_idx & 2u) != 0) {
        for (uint k = 2 * t; k < p.n; k += 512) {
            vec2 y = vec2((p.x.v[xo + k] - mean) * inv * p.w.v[k] + p.b.v[k],
                          (p.x.v[xo + k + 1] - mean) * inv * p.w.v[k + 1] + p.b.v[k + 1]);
            U32(p.y).v[(yo + k) >> 1] = packHalf2x16(y);
        }
        return;
    }
    for (uint k = t; k < p.n; k += 256)
        p.y.v[yo + k] = (p.x.v[xo + k] - mean) * inv * p.w.v[k] + p.b.v[k];
}
