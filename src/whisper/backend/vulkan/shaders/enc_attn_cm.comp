// enc_attn_cm.comp: enc_attn.comp's attention (same push constants, same
// result) on the matrix engines through GL_NV_cooperative_matrix: q, k
// and v as halves (rounded here from floats, or, in the EA_HALF
// compilations, written as halves by their product), scores and outputs
// accumulated in floats. For heads of 32 or 64, ld a multiple of 4 and
// 16-byte aligned q, k, v (ops.c checks; enc_attn.comp takes the rest),
// on devices with subgroups of 32 (vk.h's has_coopmat_nv). Four
// compilations (EA_CFG): heads of 32 or 64, floats or halves in. Halves
// are a compilation, not a flag, so that the next block's loads in flight
// can take half the registers (with a run-time flag the driver kept room
// for floats: 225 registers a thread on an H100, two workgroups a
// multiprocessor; the split has not yet been measured on a card).
//
// A workgroup of 128 threads (4 subgroups) takes 64 query rows of one
// head (grid y), each subgroup 16 of them, kept as D / 16 matrices of
// 16 x 16 halves (pre-scaled by scale / ln 2, so that exp2 gives the
// softmax). Keys and values pass in blocks of 64 through shared memory
// (halves, rows padded to D + 8; the next block's loads are in flight in
// registers while the current one is used: kept as raw bits, floats or
// halves, and rounded only as they are staged, so that no conversion
// waits for them). Per block, a subgroup:
// scores S (16 x 64) = Q K^T on the matrix engines into a float scratch;
// its 32 lanes, two per row, take the running maximum and sum (online
// softmax) and write P = exp2(S - max) as halves; then P V (16 x D) on
// the matrix engines into the same scratch, which the lanes add into
// their rows of the output (kept in registers, D / 2 floats a lane,
// rescaled when the maximum grows). Keys past n score -inf and their
// values are staged as zeros. No n x n matrix is stored.
//
// (A version that kept O in accumulators across blocks and moved each
// row's reference only when a block's maximum passed it by 2^8, O going
// through the scratch only then, ran slower on an H200: 5.80 against
// 5.13 ms a medium window, 201 registers a thread; bench/RESULTS.md.)
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require

// @variants EA_CFG 0 1 2 3
#ifndef EA_CFG
#define EA_CFG 1
#endif
#include "enc_attn_cm.glsl"

const uint LP = BKEY + 8;          // halves per row of a subgroup's P (and Q at the start)
const uint LS = BKEY + 4;          // floats per row of a subgroup's scratch

shared float16_t Ps[4 * 16 * LP];
shared float Ss[4 * 16 * LS];

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    uint q0 = gl_WorkGroupID.x * BQ + sg * 16;
    uint h0 = gl_WorkGroupID.y * D;
    uint ps = sg * 16 * LP, ss = sg * 16 * LS;
    ea_keys();
    // lane's row of the subgroup's 16 and its half of the columns
    // (interleaved: columns half, half + 2, ...)
    uint r = lane / 2, half_ = lane % 2;

    // this subgroup's queries, scaled, through its P area into registers
    const float qs = p.scale * 1.4426950408889634;
    for (uint e = lane; e < 16 * D; e += 32) {
        uint rr = e / D, c = e % D;
        float x = q0 + rr < p.n ? load_q(q0 + rr, h0 + c) * qs : 0.0;
        Ps[ps + rr * LP + c] = float16_t(x);
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    MAT16 fq[ND];
    [[unroll]] for (uint d = 0; d < ND; d++)
        coopMatLoadNV(fq[d], Ps, ps + d * 16, LP, false);
    subgroupBarrier();

    float o[D / 2];
    [[unroll]] for (uint i = 0; i < D / 2; i++)
        o[i] = 0.0;
    float m = -1e30, l = 0.0;

    RAW4 rk[NKV], rv[NKV];
    [[unroll]] for (uint i = 0; i < NKV; i++) {
        uint idx = tid + 128 * i, j = idx / (D / 4), c = (idx % (D / 4)) * 4;
        rk[i] = load_row4(p.k, j, c, h0);
        rv[i] = load_row4(p.v, j, c, h0);
    }
    for (uint j0 = 0; j0 < p.n; j0 += BKEY) {
        [[unroll]] for (uint i = 0; i < NKV; i++) {
            uint idx = tid + 128 * i, j = idx / (D / 4), c4 = idx % (D / 4);
            Ks[j * LK + c4] = halves4(rk[i]);
            Vs[j * LK + c4] = halves4(rv[i]);
        }
        barrier();
        uint j1 = j0 + BKEY;
        if (j1 < p.n) // the next block's loads, in flight during this one
            [[unroll]] for (uint i = 0; i < NKV; i++) {
                uint idx = tid + 128 * i, j = idx / (D / 4), c = (idx % (D / 4)) * 4;
                rk[i] = load_row4(p.k, j1 + j, c, h0);
                rv[i] = load_row4(p.v, j1 + j, c, h0);
            }

        // S = Q K^T, 16 x 64, into the scratch
        [[unroll]] for (uint t = 0; t < BKEY / 16; t++) {
            MAT32 s = MAT32(0.0);
            [[unroll]] for (uint d = 0; d < ND; d++) {
                MAT16 fk;
                coopMatLoadNV(fk, Ks, (t * 16) * LK + d * 4, LK, true);
                s = coopMatMulAddNV(fq[d], fk, s);
            }
            coopMatStoreNV(s, Ss, ss + t * 16, LS, false);
        }
        subgroupMemoryBarrierShared();
        subgroupBarrier();

        // online softmax: two lanes a row, 32 columns each
        float sv[BKEY / 2];
        float bm = -1e30;
        [[unroll]] for (uint i = 0; i < BKEY / 2; i++) {
            uint c = half_ + 2 * i;
            sv[i] = j0 + c < p.n ? Ss[ss + r * LS + c] : uintBitsToFloat(0xff800000u);
            bm = max(bm, sv[i]);
        }
        bm = max(bm, subgroupShuffleXor(bm, 1));
        float mn = max(m, bm), corr = exp2(m - mn), bs = 0.0;
        m = mn;
        [[unroll]] for (uint i = 0; i < BKEY / 2; i++) {
            float e = exp2(sv[i] - mn);
            bs += e;
            Ps[ps + r * LP + half_ + 2 * i] = float16_t(e);
        }
        bs += subgroupShuffleXor(bs, 1);
        l = l * corr + bs;
        subgroupMemoryBarrierShared();
        subgroupBarrier();

        // P V, 16 x D, into the scratch
        MAT32 acc[ND];
        [[unroll]] for (uint d = 0; d < ND; d++)
            acc[d] = MAT32(0.0);
        [[unroll]] for (uint t = 0; t < BKEY / 16; t++) {
            MAT16 fp;
            coopMatLoadNV(fp, Ps, ps + t * 16, LP, false);
            [[unroll]] for (uint d = 0; d < ND; d++) {
                MAT16 fv;
                coopMatLoadNV(fv, Vs, (t * 16) * LK + d * 4, LK, false);
                acc[d] = coopMatMulAddNV(fp, fv, acc[d]);
            }
        }
        [[unroll]] for (uint d = 0; d < ND; d++)
            coopMatStoreNV(acc[d], Ss, ss + d * 16, LS, false);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        [[unroll]] for (uint i = 0; i < D / 2; i++)
            o[i] = o[i] * corr + Ss[ss + r * LS + half_ + 2 * i];
        barrier(); // every subgroup done with Ks, Vs (and its scratch) before the next block
    }

    uint row = q0 + r;
    if (row < p.n) {
        float inv = 1.0 / l;
        [[unroll]] for (uint i = 0; i < D / 2; i++)
            p.o.v[row * p.ld + h0 + half_ + 2 * i] = o[i] * inv;
    }
}
