// enc_attn.comp: the encoder's self-attention, flash style: out_h =
// softmax(q_h k_h^T * scale) v_h for n rows, every row attending to every
// row, without the n x n scores ever stored. One thread per query row
// (64 per workgroup, grid y = head) keeps its query and output in
// registers while blocks of 16 keys and values pass through shared
// memory, with the running maximum and sum rescaled per block.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

// @variants HEAD_D 16 32 64 128
// The head width is a compile-time constant (one variant per width) so
// that the loops over it unroll: lavapipe's JIT stops any loop after 65535
// iterations in all (a guard against hangs), which a spec-constant loop
// over 64 floats reaches for 512 keys.
#ifndef HEAD_D
#define HEAD_D 64
#endif
const uint D = HEAD_D;
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
    [[unroll]] for (uint i = 0; i < D; i++) {
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
        // one key at a time, rescaling only when the maximum grows (a
        // block-wise rescale, fully unrolled, takes lavapipe minutes to
        // compile for 128-wide heads)
        for (uint j = 0; j < nb; j++) {
            float d = 0.0;
            [[unroll]] for (uint i = 0; i < D; i++)
                d += qv[i] * Ks[j][i];
            if (d > m) {
                float corr = exp(m - d);
                l *= corr;
                [[unroll]] for (uint i = 0; i < D; i++)
                    acc[i] *= corr;
                m = d;
            }
            float e = exp(d - m);
            l += e;
            [[unroll]] for (uint i = 0; i < D; i++)
                acc[i] += e * Vs[j][i];
        }
        barrier();
    }
    if (live) {
        float inv = 1.0 / l;
        [[unroll]] for (uint i = 0; i < D; i++)
            p.o.v[row * p.ld + h0 + i] = acc[i] * inv;
    }
}
