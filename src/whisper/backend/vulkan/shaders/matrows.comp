// matrows.comp: the product of matmul.comp and matvec.comp for a batched
// decoder step (9 to 256 rows of A), on the shader cores. At those row
// counts the tiled and matrix-engine shaders get a few workgroups per
// product (64 rows x 1024 columns is 8 tiles of 64 x 128 for 132
// multiprocessors) and the matrix-vector one splits K over 32 threads
// per output and spends more on their sums than on the products. Here a
// workgroup of 256 threads owns 8 columns (weight rows) and 64 rows of A:
// 8 slices of 32 threads, slice s taking K's groups of 8 s, s + 8, ...;
// in a slice each thread computes 4 rows x 4 columns, reading 4 weight
// loads and 8 loads of A (16 bytes each) for 128 products, straight from
// memory (the weights once per 64 rows), G such groups of loads (1 or 2,
// MR_G below) issued before the products of the
// ones before are done; the 8 slices' sums meet once in
// shared memory at the end. Grid x: groups of 8 columns (so that the
// workgroups running together share A's rows in the cache), y: groups of
// 64 rows.
// Needs F16 weights, K a multiple of 8, W, A 16-byte aligned with ldw a
// multiple of 8 and lda of 4 (ops.c checks; else another kernel runs).
// The epilogue is matvec.comp's: bias, GELU, an added matrix, the
// residual, rows scattered by rowidx, q, k, v to three places. No
// LayerNorm prologue: each workgroup would read its 64 rows twice more.
// Correct for any subgroup size (no subgroup operations).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x = 256) in;
// G, the groups of 8 k in flight per thread, compiled in (MR_G) rather
// than specialized: glslc unrolls the loops over G only when it knows the
// count, and otherwise leaves wn, an, wc and x as arrays indexed at run
// time, which a driver may keep in local memory (see matvec.comp)
// @variants MR_G 1 2
#ifndef MR_G
#define MR_G 1
#endif
const uint G = MR_G;

layout(push_constant) uniform P {
    F32 a; U32 w; F32 bias; F32 add; F32 c; F32 lnw; F32 lnb; I32 rowidx;
    uint M, N, K, lda, ldw, ldc, ldadd, flags;
    F32 c2; F32 c3; uint split;
} p;

const uint F_BIAS = 1, F_GELU = 2, F_ADD = 4, F_ACC = 8, F_ROWIDX = 32, F_QKV = 128;
const uint BM = 64, BN = 8, S = 8, TM = 4, TN = 4;

shared float red[S][BM * BN];

void main()
{
    uint t = gl_LocalInvocationID.x;
    uint s = t / 32, u = t % 32;
    uint rq = u % 16, cq = u / 16; // rows rq*4.., columns cq*4.. of the tile
    uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
    uint nk8 = p.K / 8;
    U32x4 w4 = U32x4(p.w);
    F32x4 a4 = F32x4(p.a);
    uint wrow[TN], arow[TM];
    bool wok[TN], aok[TM];
    [[unroll]] for (uint j = 0; j < TN; j++) {
        uint n = n0 + cq * TN + j;
        wok[j] = n < p.N;
        wrow[j] = (wok[j] ? n : 0) * (p.ldw / 8);
    }
    [[unroll]] for (uint i = 0; i < TM; i++) {
        uint m = m0 + rq * TM + i;
        aok[i] = m < p.M;
        arow[i] = (aok[i] ? m : 0) * (p.lda / 4);
    }
    float acc[TM * TN];
    [[unroll]] for (uint i = 0; i < TM * TN; i++)
        acc[i] = 0.0;

    // G groups of 8 k ahead in registers (zeros past K: they add nothing)
    uvec4 wn[G * TN];
    vec4 an[G * 2 * TM];
    [[unroll]] for (uint g = 0; g < G; g++) {
        uint k8 = s + g * S;
        [[unroll]] for (uint j = 0; j < TN; j++)
            wn[g * TN + j] = k8 < nk8 && wok[j] ? w4.v[wrow[j] + k8] : uvec4(0);
        [[unroll]] for (uint i = 0; i < TM; i++) {
            an[g * 2 * TM + 2 * i] = k8 < nk8 && aok[i] ? a4.v[arow[i] + 2 * k8] : vec4(0.0);
            an[g * 2 * TM + 2 * i + 1] =
                k8 < nk8 && aok[i] ? a4.v[arow[i] + 2 * k8 + 1] : vec4(0.0);
        }
    }
    for (uint k8 = s; k8 < nk8; k8 += G * S) {
        uvec4 wc[G * TN];
        vec4 x[G * 2 * TM];
        [[unroll]] for (uint i = 0; i < G * TN; i++)
            wc[i] = wn[i];
        [[unroll]] for (uint i = 0; i < G * 2 * TM; i++)
            x[i] = an[i];
        [[unroll]] for (uint g = 0; g < G; g++) {
            uint k8n = k8 + (G + g) * S;
            [[unroll]] for (uint j = 0; j < TN; j++)
                wn[g * TN + j] = k8n < nk8 && wok[j] ? w4.v[wrow[j] + k8n] : uvec4(0);
            [[unroll]] for (uint i = 0; i < TM; i++) {
                an[g * 2 * TM + 2 * i] =
                    k8n < nk8 && aok[i] ? a4.v[arow[i] + 2 * k8n] : vec4(0.0);
                an[g * 2 * TM + 2 * i + 1] =
                    k8n < nk8 && aok[i] ? a4.v[arow[i] + 2 * k8n + 1] : vec4(0.0);
            }
        }
        [[unroll]] for (uint g = 0; g < G; g++)
            [[unroll]] for (uint j = 0; j < TN; j++) {
                uvec4 u = wc[g * TN + j];
                vec4 wa = vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
                vec4 wb = vec4(unpackHalf2x16(u.z), unpackHalf2x16(u.w));
                [[unroll]] for (uint i = 0; i < TM; i++)
                    acc[i * TN + j] += dot(x[g * 2 * TM + 2 * i], wa) +
                                       dot(x[g * 2 * TM + 2 * i + 1], wb);
            }
    }

    [[unroll]] for (uint i = 0; i < TM; i++)
        [[unroll]] for (uint j = 0; j < TN; j++)
            red[s][(rq * TM + i) * BN + cq * TN + j] = acc[i * TN + j];
    barrier();
    for (uint o = t; o < BM * BN; o += 256) {
        uint m = m0 + o / BN, n = n0 + o % BN;
        if (m >= p.M || n >= p.N)
            continue;
        float v = 0.0;
        [[unroll]] for (uint q = 0; q < S; q++)
            v += red[q][o];
        if ((p.flags & F_BIAS) != 0)
            v += p.bias.v[n];
        if ((p.flags & F_GELU) != 0)
            v = gelu_f(v);
        if ((p.flags & F_ADD) != 0)
            v += p.add.v[m * p.ldadd + n];
        if ((p.flags & F_QKV) != 0) {
            uint part = n / p.split, nn = n - part * p.split;
            if (part == 0)
                p.c.v[m * p.ldc + nn] = v;
            else if (part == 1)
                p.c2.v[uint(p.rowidx.v[m]) + nn] = v;
            else
                p.c3.v[uint(p.rowidx.v[m]) + nn] = v;
            continue;
        }
        uint ci = (p.flags & F_ROWIDX) != 0 ? uint(p.rowidx.v[m]) + n : m * p.ldc + n;
        if ((p.flags & F_ACC) != 0)
            v += p.c.v[ci];
        p.c.v[ci] = v;
    }
}
