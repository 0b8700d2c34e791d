// matvec.comp: the same product and epilogue as matmul.comp for few rows
// (decoder steps): reading the weights is what costs, so each weight row
// is read once per 8 rows of A, by 32 threads splitting K, and reduced
// through shared memory (no subgroup shuffles: subgroups are 8 to 64
// wide across the devices served). Workgroup: 8 output columns; grid z:
// groups of 8 rows.
// F_LN: A's rows are LayerNorm'ed on the way in (mean, then the variance
// of the centred values, as layernorm.comp; eps 1e-5), each workgroup
// computing its rows' statistics itself: a step's LayerNorm then costs no
// dispatch of its own (one row of 1024 floats is 4 KB, read from cache).
// F_ROWIDX: output row m goes to c + rowidx[m] floats (the decoder's K and
// V straight into their KV slots).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"

layout(constant_id = 0) const uint WF16 = 1;
layout(local_size_x = 256) in;

layout(push_constant) uniform P {
    F32 a; U32 w; F32 bias; F32 add; F32 c; F32 lnw; F32 lnb; I32 rowidx;
    uint M, N, K, lda, ldw, ldc, ldadd, flags;
} p;

const uint F_BIAS = 1, F_GELU = 2, F_ADD = 4, F_ACC = 8, F_LN = 16, F_ROWIDX = 32;
const uint MR = 8, COLS = 8, LANES = 32;

shared float red[COLS][LANES][MR];
shared float st_mean[MR], st_inv[MR];
shared float sg_part[256][MR]; // per subgroup (any size from 1 up)

// every thread gets the sums of v over the workgroup: within each
// subgroup by its own adder, then the subgroups' parts through shared
// memory (two barriers, whatever the subgroup size)
void row_sums(inout float v[MR])
{
    for (uint r = 0; r < MR; r++)
        v[r] = subgroupAdd(v[r]);
    if (subgroupElect())
        for (uint r = 0; r < MR; r++)
            sg_part[gl_SubgroupID][r] = v[r];
    barrier();
    for (uint r = 0; r < MR; r++) {
        float s = 0.0;
        for (uint i = 0; i < gl_NumSubgroups; i++)
            s += sg_part[i][r];
        v[r] = s;
    }
    barrier();
}

// A's element (row m0 + r, column k), normalized under F_LN
float a_at(uint r, uint ai, uint k, bool ln)
{
    float v = p.a.v[ai];
    if (ln)
        v = (v - st_mean[r]) * st_inv[r] * p.lnw.v[k] + p.lnb.v[k];
    return v;
}

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint lane = tid % LANES, col = tid / LANES;
    uint n = gl_WorkGroupID.x * COLS + col;
    uint m0 = gl_WorkGroupID.z * MR;
    uint mr = min(MR, p.M - m0);
    float acc[MR];
    bool ln = (p.flags & F_LN) != 0;
    if (ln) {
        for (uint r = 0; r < MR; r++) {
            acc[r] = 0.0;
            if (r < mr)
                for (uint k = tid; k < p.K; k += 256)
                    acc[r] += p.a.v[(m0 + r) * p.lda + k];
        }
        row_sums(acc);
        for (uint r = 0; r < MR; r++) // constant indices: acc stays in registers
            if (tid == r)
                st_mean[r] = acc[r] / float(p.K);
        barrier();
        for (uint r = 0; r < MR; r++) {
            acc[r] = 0.0;
            if (r < mr)
                for (uint k = tid; k < p.K; k += 256) {
                    float d = p.a.v[(m0 + r) * p.lda + k] - st_mean[r];
                    acc[r] += d * d;
                }
        }
        row_sums(acc);
        for (uint r = 0; r < MR; r++)
            if (tid == r)
                st_inv[r] = 1.0 / sqrt(acc[r] / float(p.K) + 1e-5);
        barrier();
    }
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
                    acc[r] += a_at(r, ai, k, ln) * w0.x + a_at(r, ai + 1, k + 1, ln) * w0.y +
                              a_at(r, ai + 2, k + 2, ln) * w1.x + a_at(r, ai + 3, k + 3, ln) * w1.y +
                              a_at(r, ai + 4, k + 4, ln) * w2.x + a_at(r, ai + 5, k + 5, ln) * w2.y +
                              a_at(r, ai + 6, k + 6, ln) * w3.x + a_at(r, ai + 7, k + 7, ln) * w3.y;
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
                    acc[r] += a_at(r, ai, k, ln) * w.x;
                    if (two)
                        acc[r] += a_at(r, ai + 1, k + 1, ln) * w.y;
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
        uint ci = (p.flags & F_ROWIDX) != 0 ? uint(p.rowidx.v[m]) + n : m * p.ldc + n;
        if ((p.flags & F_ACC) != 0)
            v += p.c.v[ci];
        p.c.v[ci] = v;
    }
}
