// dec_merge.comp: out[r][head] = the parts of dec_attn.comp combined:
// sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s, M the largest m_s.
// One workgroup per (row, head), a thread per output element.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint D = 64;
layout(local_size_x = 128) in;

layout(push_constant) uniform P {
    F32 part; F32 o;
    uint ld, n_split;
} p;

void main()
{
    uint r = gl_WorkGroupID.x, h = gl_WorkGroupID.y, t = gl_LocalInvocationID.x;
    uint pb = (r * gl_NumWorkGroups.y + h) * p.n_split * (D + 2);
    float M = -1e30;
    for (uint s = 0; s < p.n_split; s++)
        M = max(M, p.part.v[pb + s * (D + 2)]);
    float l = 0.0, a = 0.0;
    for (uint s = 0; s < p.n_split; s++) {
        uint po = pb + s * (D + 2);
        float w = exp(p.part.v[po] - M);
        l += w * p.part.v[po + 1];
        if (t < D)
            a += w * p.part.v[po + 2 + t];
    }
    if (t < D)
        p.o.v[r * p.ld + h * D + t] = a / l;
}
