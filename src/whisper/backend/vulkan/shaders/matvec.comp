// matvec.comp: the same product and epilogue as matmul.comp for few rows
// (decoder steps): reading the weights is what costs, so each weight row
// is read once per 8 rows of A, by 32 threads splitting K, and reduced
// through shared memory (no subgroup operations: subgroups are 8 to 64
// wide across the devices served). Workgroup: 8 output columns; grid z:
// groups of 8 rows.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 0) const uint WF16 = 1;
layout(local_size_x = 256) in;

layout(push_constant) uniform P {
    F32 a; U32 w; F32 bias; F32 add; F32 c;
    uint M, N, K, lda, ldw, ldc, ldadd, flags;
} p;

const uint F_BIAS = 1, F_GELU = 2, F_ADD = 4, F_ACC = 8;
const uint MR = 8, COLS = 8, LANES = 32;

shared float red[COLS][LANES][MR];

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint lane = tid % LANES, col = tid / LANES;
    uint n = gl_WorkGroupID.x * COLS + col;
    uint m0 = gl_WorkGroupID.z * MR;
    uint mr = min(MR, p.M - m0);
    float acc[MR];
    for (uint r = 0; r < MR; r++)
        acc[r] = 0.0;
    if (n < p.N && WF16 != 0 && (p.K % 8) == 0 && (p.ldw % 8) == 0) {
        // 8 halves per lane per load (16 bytes; rows start 16-byte aligned
        // when ldw is a multiple of 8 and the weights' base is)
        U32x4 w4 = U32x4(p.w);
        uint row4 = n * p.ldw / 8;
        for (uint k8 = lane; k8 < p.K / 8; k8 += LANES) {
            uvec4 u = w4.v[row4 + k8];
            vec2 w0 = unpackHalf2x16(u.x), w1 = unpackHalf2x16(u.y);
            vec2 w2 = unpackHalf2x16(u.z), w3 = unpackHalf2x16(u.w);
            uint k = k8 * 8;
            for (uint r = 0; r < MR; r++) {
                if (r < mr) {
                    uint ai = (m0 + r) * p.lda + k;
                    acc[r] += p.a.v[ai] * w0.x + p.a.v[ai + 1] * w0.y + p.a.v[ai + 2] * w1.x +
                              p.a.v[ai + 3] * w1.y + p.a.v[ai + 4] * w2.x + p.a.v[ai + 5] * w2.y +
                              p.a.v[ai + 6] * w3.x + p.a.v[ai + 7] * w3.y;
                }
            }
        }
    } else if (n < p.N) {
        for (uint k = lane * 2; k < p.K; k += LANES * 2) {
            vec2 w;
            if (WF16 != 0) {
                w = unpackHalf2x16(p.w.v[(n * p.ldw + k) >> 1]);
            } else {
                w.x = uintBitsToFloat(p.w.v[n * p.ldw + k]);
                w.y = k + 1 < p.K ? uintBitsToFloat(p.w.v[n * p.ldw + k + 1]) : 0.0;
            }
            bool two = k + 1 < p.K;
            for (uint r = 0; r < MR; r++) {
                if (r < mr) {
                    uint ai = (m0 + r) * p.lda + k;
                    acc[r] += p.a.v[ai] * w.x;
                    if (two)
                        acc[r] += p.a.v[ai + 1] * w.y;
                }
            }
        }
    }
    for (uint r = 0; r < MR; r++)
        red[col][lane][r] = acc[r];
    barrier();
    for (uint s = LANES / 2; s > 0; s >>= 1) {
        if (lane < s)
            for (uint r = 0; r < mr; r++)
                red[col][lane][r] += red[col][lane + s][r];
        barrier();
    }
    if (lane < mr && n < p.N) {
        uint m = m0 + lane;
        float v = red[col][0][lane];
        if ((p.flags & F_BIAS) != 0)
            v += p.bias.v[n];
        if ((p.flags & F_GELU) != 0)
            v = gelu_f(v);
        if ((p.flags & F_ADD) != 0)
            v += p.add.v[m * p.ldadd + n];
        if ((p.flags & F_ACC) != 0)
            v += p.c.v[m * p.ldc + n];
        p.c.v[m * p.ldc + n] = v;
    }
}
