// enc_attn.comp: the encoder's self-attention, flash style: out_h =
// softmax(q_h k_h^T * scale) v_h for n rows, every row attending to every
// row, without the n x n scores ever stored. One thread per query row
// (64 per workgroup, grid y = head) keeps its query and output in
// registers while blocks of 16 keys and values pass through shared
// memory, with the running maximum and sum rescaled per block.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint D = 64;   // head width
layout(local_size_x = 64) in;

layout(push_constant) uniform P {
    F32 q; F32 k; F32 v; F32 o;
    uint n, ld;
    float scale;
} p;

const uint BK = 16;
shared float Ks[BK][D];
shared float Vs[BK][D];

void main()
{
    uint t = gl_LocalInvocationID.x;
    uint row = gl_WorkGroupID.x * 64 + t;
    uint h0 = gl_WorkGroupID.y * D;
    bool live = row < p.n;
    float qv[D], acc[D];
    for (uint i = 0; i < D; i++) {
        qv[i] = live ? p.q.v[row * p.ld + h0 + i] * p.scale : 0.0;
        acc[i] = 0.0;
    }
    float m = -1e30, l = 0.0;
    for (uint j0 = 0; j0 < p.n; j0 += BK) {
        for (uint idx = t; idx < BK * D; idx += 64) {
            uint j = idx / D, i = idx % D;
            bool ok = j0 + j < p.n;
            Ks[j][i] = ok ? p.k.v[(j0 + j) * p.ld + h0 + i] : 0.0;
            Vs[j][i] = ok ? p.v.v[(j0 + j) * p.ld + h0 + i] : 0.0;
        }
        barrier();
        uint nb = min(BK, p.n - j0);
        float s[BK];
        float mb = m;
        for (uint j = 0; j < BK; j++) {
            float d = 0.0;
            for (uint i = 0; i < D; i++)
                d += qv[i] * Ks[j][i];
            s[j] = d;
            if (j < nb)
                mb = max(mb, d);
        }
        float corr = exp(m - mb);
        l *= corr;
        for (uint i = 0; i < D; i++)
            acc[i] *= corr;
        for (uint j = 0; j < BK; j++) {
            if (j < nb) {
                float e = exp(s[j] - mb);
                l += e;
                for (uint i = 0; i < D; i++)
                    acc[i] += e * Vs[j][i];
            }
        }
        m = mb;
        barrier();
    }
    if (live) {
        float inv = 1.0 / l;
        for (uint i = 0; i < D; i++)
            p.o.v[row * p.ld + h0 + i] = acc[i] * inv;
    }
}
