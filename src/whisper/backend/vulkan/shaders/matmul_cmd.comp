// matmul_cmd.comp: matmul_cm.comp's product (same push constants, same
// epilogue: epilogue.glsl) with the fragments loaded straight from device
// memory: no workgroup-wide staging, no barrier in the K loop. Each
// subgroup loads its own A fragments (floats, coopMatLoadNV on the
// buffer, converted to halves in registers) and W fragments (halves, W's
// rows read as B's columns) and relies on the caches for the reuse
// between subgroups and workgroups. Written because matmul_cm.comp, whose
// every K step is a round trip through shared memory and a barrier, stays
// near 22 TFLOP/s on an H100 whatever its tile size, while the engines
// take 242 from shared memory and 584 from registers (cm_peak.comp).
// Measured there (bench/RESULTS.md, 2026-12-06): slower, 15 to 18 TFLOP/s
// against matmul_cm.comp's 21 to 27, so the trial keeps matmul_cm.comp
// on that card; kept as a path the trial times on others.
//
// Only for K a multiple of 16, N a multiple of 16, A, lda, W and ldw
// allowing 16-byte loads (ops.c checks; matmul_cm.comp takes the rest);
// devices with GL_NV_cooperative_matrix and subgroups of 32.
//
// A workgroup of 128 threads (4 subgroups, 2 down x 2 across) takes a
// 64 x (2 CMD_TN 16) tile of C; each subgroup 32 x (CMD_TN 16): 2 x CMD_TN
// accumulators of 16 x 16. K goes in steps of 16 with the next step's
// fragments loaded into registers before this step's products (two sets,
// the loop unrolled by two). A fragment that reaches past M is staged
// through the subgroup's 1 KiB of shared memory with zeros past M; the
// same area is the epilogue's scratch, one accumulator at a time.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

// @variants CMD_TN 2 4
#ifndef CMD_TN
#define CMD_TN 4
#endif
layout(local_size_x = 128) in;

layout(push_constant) uniform P {
    F32 a; U32 w; F32 bias; F32 add; F32 c; F32 lnw; F32 lnb; I32 rowidx;
    uint M, N, K, lda, ldw, ldc, ldadd, flags;
    U32 tab; F32 c3; uint split, cofs;
} p;

#include "epilogue.glsl"
const uint F_PSAME = 4096, F_PNOMMA = 8192; // probes, as in matmul_cm.comp
const uint TM = 2, TN = CMD_TN;
const uint BM = 2 * TM * 16, BN = 2 * TN * 16; // the workgroup's tile

shared float scr[4 * 256]; // 16 x 16 floats a subgroup

#define MAT16 fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define MAT32 fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

void main()
{
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    uint wm = sg / 2, wn = sg % 2;
    uint r0 = gl_WorkGroupID.y * BM + wm * (TM * 16);
    uint c0 = gl_WorkGroupID.x * BN + wn * (TN * 16);
    uint cs = sg * 256;
    uint lda4 = p.lda / 4, ldw8 = p.ldw / 8;
    U32x4 pa = U32x4(p.a); // floats, 4 a vector (F32x4 has no load of a float matrix in glslang 12)
    U32x4 pw = U32x4(p.w);
    // fragments of A wholly inside M load straight; the others (the last
    // row block) through scr; W's past N are zeros and their products skipped
    bool a_in[TM];
    bool w_in[TN];
    [[unroll]] for (uint i = 0; i < TM; i++)
        a_in[i] = r0 + i * 16 + 16 <= p.M;
    [[unroll]] for (uint j = 0; j < TN; j++)
        w_in[j] = c0 + j * 16 < p.N;

    MAT32 acc[TM][TN];
    [[unroll]] for (uint i = 0; i < TM; i++)
        [[unroll]] for (uint j = 0; j < TN; j++)
            acc[i][j] = MAT32(0.0);

    MAT32 a0[TM], a1[TM];
    MAT16 b0[TN], b1[TN];

// one K step's fragments into set S (a##S, b##S) at column KK; A's row
// blocks written out (TM is 2), as a loop over them does not unroll
// before the driver sees it (its inner loop and barriers) and would leave
// the fragment arrays indexed at run time
#define LOADA(S, I, KK)                                                                       \
    {                                                                                         \
        uint r = r0 + (I) * 16;                                                               \
        if (a_in[I]) {                                                                        \
            coopMatLoadNV(a##S[I], pa.v, (r * p.lda + (KK)) / 4, lda4, false);                \
        } else {                                                                              \
            for (uint e = lane; e < 256; e += gl_SubgroupSize) {                              \
                uint rr = r + e / 16;                                                         \
                scr[cs + e] = rr < p.M ? p.a.v[rr * p.lda + (KK) + e % 16] : 0.0;             \
            }                                                                                 \
            subgroupMemoryBarrierShared();                                                    \
            subgroupBarrier();                                                                \
            coopMatLoadNV(a##S[I], scr, cs, 16, false);                                       \
            subgroupBarrier();                                                                \
        }                                                                                     \
    }
#define LOAD(S, KK)                                                                           \
    LOADA(S, 0, KK)                                                                           \
    LOADA(S, 1, KK)                                                                           \
    [[unroll]] for (uint j = 0; j < TN; j++)                                                  \
        if (w_in[j])                                                                          \
            coopMatLoadNV(b##S[j], pw.v, ((c0 + j * 16) * p.ldw + (KK)) / 8, ldw8, true);

#define MMA(S)                                                                                \
    [[unroll]] for (uint i = 0; i < TM; i++) {                                                \
        MAT16 ah = MAT16(a##S[i]);                                                            \
        [[unroll]] for (uint j = 0; j < TN; j++)                                              \
            if (w_in[j])                                                                      \
                acc[i][j] = coopMatMulAddNV(ah, b##S[j], acc[i][j]);                          \
    }

    bool same = (p.flags & F_PSAME) != 0, nomma = (p.flags & F_PNOMMA) != 0;
    LOAD(0, 0)
    for (uint k = 0; k < p.K; k += 32) {
        bool odd = k + 16 < p.K;
        if (odd) {
            LOAD(1, same ? 0 : k + 16)
        }
        if (!nomma) {
            MMA(0)
        }
        if (!odd)
            break;
        if (k + 32 < p.K) {
            LOAD(0, same ? 0 : k + 32)
        }
        if (!nomma) {
            MMA(1)
        }
    }

    // epilogue through scr, one accumulator at a time. The arrays of
    // fragments are indexed only by constants (loops that unroll; the one
    // over t, with its loop over elements, does not): one indexed at run
    // time lives in local memory on NVIDIA's compiler, every product of
    // the K loop then a round trip through it (as matmul_cm.comp says)
    for (uint t = 0; t < TM * TN; t++) {
        uint i = t / TN, j = t % TN;
        if (c0 + j * 16 >= p.N || r0 + i * 16 >= p.M)
            continue;
        [[unroll]] for (uint ii = 0; ii < TM; ii++)
            [[unroll]] for (uint jj = 0; jj < TN; jj++)
                if (ii * TN + jj == t)
                    coopMatStoreNV(acc[ii][jj], scr, cs, 16, false);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        if ((p.flags & F_HALF) == 0) {
            for (uint e = lane; e < 256; e += gl_SubgroupSize) {
                uint m = r0 + i * 16 + e / 16, n = c0 + j * 16 + e % 16;
                if (m < p.M && n < p.N)
                    epi_store(m, n, scr[cs + e]);
            }
        } else { // pairs of adjacent columns, one word of halves each
            for (uint e = 2 * lane; e < 256; e += 2 * gl_SubgroupSize) {
                uint m = r0 + i * 16 + e / 16, n = c0 + j * 16 + e % 16;
                if (m < p.M && n < p.N)
                    epi_store2(m, n, scr[cs + e], scr[cs + e + 1]);
            }
        }
        subgroupBarrier();
    }
}
