// matmul.comp: C (M x N, ldc) = epilogue(A (M x K, lda, f32) . W^T + bias),
// W [N][K] (ldw) as halves (WF16, read in pairs from 32-bit words: ldw and
// every row's start even) or floats, with f32 accumulation. The tiled
// path for products of many rows: a 64 x 64 tile per workgroup of 256
// threads, 4 x 4 outputs each, K in steps of 16 through shared memory.
// Epilogue, in the CPU backend's order: + bias, GELU (F_GELU), + add[m][n]
// (F_ADD, ldadd; the encoder's positional embedding), + C (F_ACC: the
// residual stream), and where outputs go (F_ROWIDX, F_COLS, F_HALF):
// epilogue.glsl. F_LN is not taken here: the caller runs layernorm.comp
// first (ops.c).
// F_SPLIT (ops.c's split of K): the workgroups along z each take K in a
// range of ldadd (a multiple of BK) from z ldadd and write their sums
// alone to part z of c (M x ldc floats from c + z M ldc); matmul_sum.comp
// adds the parts in order and applies the epilogue.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(constant_id = 0) const uint WF16 = 1;
layout(local_size_x = 256) in;

layout(push_constant) uniform P {
    F32 a; U32 w; F32 bias; F32 add; F32 c; F32 lnw; F32 lnb; I32 rowidx;
    uint M, N, K, lda, ldw, ldc, ldadd, flags;
    U32 tab; F32 c3; uint split, cofs;
} p;

#include "epilogue.glsl"
const uint F_SPLIT = 32768;
const uint BM = 64, BN = 64, BK = 16;

shared float As[BK][BM + 1];
shared float Ws[BK][BN + 1];

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint tx = tid % 16, ty = tid / 16;
    uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
    bool split = (p.flags & F_SPLIT) != 0;
    uint kb = split ? gl_WorkGroupID.z * p.ldadd : 0;
    uint ke = split ? min(p.K, kb + p.ldadd) : p.K;
    // acc, av and bv are indexed only by constants: every loop over them
    // is unrolled by attribute. Left as loops (glslc did not unroll them,
    // the epilogue's for its early exits), the arrays sat in Function
    // storage indexed by loop variables, which a driver may keep in local
    // memory (as NVIDIA's did with matmul_cm.comp's accumulators:
    // bench/RESULTS.md, "the accumulators out of local memory")
    float acc[4][4];
    [[unroll]] for (uint i = 0; i < 4; i++)
        [[unroll]] for (uint j = 0; j < 4; j++)
            acc[i][j] = 0.0;

    for (uint k0 = kb; k0 < ke; k0 += BK) {
        for (uint i = 0; i < 4; i++) {
            uint idx = tid + 256 * i;
            uint m = idx / BK, k = idx % BK;
            float v = 0.0;
            if (m0 + m < p.M && k0 + k < ke)
                v = p.a.v[(m0 + m) * p.lda + k0 + k];
            As[k][m] = v;
        }
        if (WF16 != 0) {
            for (uint i = 0; i < 2; i++) {
                uint idx = tid + 256 * i;
                uint n = idx / (BK / 2), k = (idx % (BK / 2)) * 2;
                vec2 v = vec2(0.0);
                if (n0 + n < p.N && k0 + k < ke) {
                    v = unpackHalf2x16(p.w.v[((n0 + n) * p.ldw + k0 + k) >> 1]);
                    if (k0 + k + 1 >= ke)
                        v.y = 0.0;
                }
                Ws[k][n] = v.x;
                Ws[k + 1][n] = v.y;
            }
        } else {
            for (uint i = 0; i < 4; i++) {
                uint idx = tid + 256 * i;
                uint n = idx / BK, k = idx % BK;
                float v = 0.0;
                if (n0 + n < p.N && k0 + k < ke)
                    v = uintBitsToFloat(p.w.v[(n0 + n) * p.ldw + k0 + k]);
                Ws[k][n] = v;
            }
        }
        barrier();
        [[unroll]] for (uint k = 0; k < BK; k++) {
            float av[4], bv[4];
            [[unroll]] for (uint i = 0; i < 4; i++)
                av[i] = As[k][ty + 16 * i];
            [[unroll]] for (uint j = 0; j < 4; j++)
                bv[j] = Ws[k][tx + 16 * j];
            [[unroll]] for (uint i = 0; i < 4; i++)
                [[unroll]] for (uint j = 0; j < 4; j++)
                    acc[i][j] += av[i] * bv[j];
        }
        barrier();
    }

    if (split) { // the sums alone: matmul_sum.comp's epilogue
        uint part = gl_WorkGroupID.z * p.M * p.ldc;
        [[unroll]] for (uint i = 0; i < 4; i++)
            [[unroll]] for (uint j = 0; j < 4; j++) {
                uint m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
                if (m < p.M && n < p.N)
                    p.c.v[part + m * p.ldc + n] = acc[i][j];
            }
        return;
    }
    if ((p.flags & F_HALF) == 0) {
        [[unroll]] for (uint i = 0; i < 4; i++)
            [[unroll]] for (uint j = 0; j < 4; j++) {
                uint m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
                if (m < p.M && n < p.N)
                    epi_store(m, n, acc[i][j]);
            }
        return;
    }
    // halves, two adjacent columns a word: a thread's columns are 16
    // apart, so the tile goes through shared memory (As, free since the
    // last step's barrier), 16 rows at a time, and each thread stores two
    // pairs of each
    [[unroll]] for (uint i = 0; i < 4; i++) {
        [[unroll]] for (uint j = 0; j < 4; j++)
            As[ty][tx + 16 * j] = acc[i][j];
        barrier();
        [[unroll]] for (uint q = 0; q < 2; q++) {
            uint e = tid + 256 * q, r = e / 32, cc = (e % 32) * 2;
            uint m = m0 + 16 * i + r, n = n0 + cc;
            if (m < p.M && n < p.N)
                epi_store2(m, n, As[r][cc], As[r][cc + 1]);
        }
        barrier();
    }
}
