// enc_attn_cmr.comp: enc_attn_cm.comp's attention (same compilations,
// push constants, grid and blocks) with each block's scores, their
// softmax and the output kept in the matrix engines' registers, as
// FlashAttention 2 keeps them: enc_attn_cm.comp sends the scores through
// shared memory, reads them back a row per two lanes for the softmax,
// writes P there as halves, loads it, and sends P V through shared memory
// again to add it into the output. Here the output stays in float
// accumulators across the blocks, rescaled in place, and P goes from the
// scores' accumulators to the products' operand by conversion. (The
// round trips were thought to hold the medium encoder's attention to
// about 46 TFLOP/s on an H100; without them it ran 3 % faster, below.)
//
// GL_NV_cooperative_matrix says nothing of which elements of a matrix an
// invocation holds; its components can be read and written, though. So
// each subgroup first loads two 16 x 16 float matrices whose elements are
// their own row and column numbers: component i of this lane is then
// element (row_of[i], col_of[i]) of every 16 x 16 float matrix, whatever
// the layout. What this shader does assume: a lane holds NC = 8
// components (256 elements over 32 lanes; with another count every output
// is NaN, so the check below rejects it), the lanes holding a row are four
// neighbours (lane ^ 1, ^ 2, ^ 3: NVIDIA's layout for its 16 x 8 x 16
// products) and component i of each of them is in the same row as this
// lane's, so that a row's maximum and sum need two shuffles; a converted
// matrix keeps each element where it was. ops.c
// takes this shader only after it gave enc_attn_cm.comp's result on the
// device at open (td_vko_create), so a driver where that is not so keeps
// the other.
//
// A row's maximum per block: each component's across the four score
// matrices (same layout, so component i is in row row_of[i] in each),
// then across the lane's components of that row, then across the four
// lanes. Its sum needs no such step per block: each component keeps its
// own part of the row's sum, rescaled with the row, and the parts are
// added only at the end.
//
// Compilations 4 and 5 (enc_attn_cm.glsl's EA_GATHER) run the decoder's
// cross-attention this way: a workgroup per (group, head), the group up
// to 64 rows of one window (a big batch's sequences of that window, or
// its beams), named by ops.h's table, its queries gathered by row index
// and its outputs scattered back; the window's 1500 keys and values come
// from memory once per group and head. dec_attn.comp reads them once per
// row: at 256 rows of medium, 4 windows, on an H100, 17 of a step's 24.5
// ms. Its grid is an indirect dispatch's (the groups' count comes with
// each call's table).
//
// On an H100 (driver 580, medium's encoder, bench/RESULTS.md): 4.58 ms of
// attention a window against 4.73 for enc_attn_cm.comp, at 233 registers
// a thread (two workgroups a multiprocessor). A compilation that took 32
// query rows a subgroup in blocks of 32 keys, so that each key and value
// fragment fed two products, took 255 registers and 5.61 ms.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_ballot : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require

// @variants EA_CFG 0 1 2 3 4 5
#ifndef EA_CFG
#define EA_CFG 1
#endif
#define CM_FAMILY 0
#include "coopmat.glsl"
#include "enc_attn_cm.glsl"

const uint NC = 8;       // components of a 16 x 16 matrix a lane holds
const uint LQ = D + 8;   // halves per staged query row
const uint LX = 16 + 4;  // floats per row of the index matrices (a load's
                         // stride is a multiple of 16 bytes)

shared float16_t Qs[4 * 16 * LQ];
shared float Xs[4 * 16 * LX];

const uint KT = BKEY / 16; // 16-key tiles a block

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    uint q0 = sg * 16;          // this subgroup's first of the workgroup's rows
    uint nq = ea_rows();        // the workgroup's rows (ea_row: where each is)
    uint h0 = gl_WorkGroupID.y * D;
    if (nq == 0)
        return; // no rows (the whole workgroup: before any barrier)
    ea_keys();
    uint qb = sg * 16 * LQ, xb = sg * 16 * LX;

    // which element of a 16 x 16 float matrix each component is (above)
    uint row_of[NC], col_of[NC];
    MAT32 ix;
    for (uint e = lane; e < 256; e += 32)
        Xs[xb + (e / 16) * LX + e % 16] = float(e / 16);
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    coopMatLoadNV(ix, Xs, xb, LX, false);
    if (ix.length() != int(NC)) {
        // not the layout assumed: NaN out, which the check at open rejects
        // (every subgroup of the workgroup returns here, before any barrier)
        for (uint e = lane; e < 16 * D; e += 32)
            if (q0 + e / D < nq)
                p.o.v[ea_row(q0 + e / D) * p.ld + h0 + e % D] = uintBitsToFloat(0x7fc00000u);
        return;
    }
    [[unroll]] for (uint i = 0; i < NC; i++)
        row_of[i] = uint(ix[i]);
    subgroupBarrier();
    for (uint e = lane; e < 256; e += 32)
        Xs[xb + (e / 16) * LX + e % 16] = float(e % 16);
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    coopMatLoadNV(ix, Xs, xb, LX, false);
    [[unroll]] for (uint i = 0; i < NC; i++)
        col_of[i] = uint(ix[i]);

    // this subgroup's queries, scaled by scale / ln 2 (exp2 gives the
    // softmax), as halves through shared memory into registers
    const float qs = p.scale * 1.4426950408889634;
    for (uint e = lane; e < 16 * D; e += 32) {
        uint rr = e / D, c = e % D;
        float x = q0 + rr < nq ? load_q(ea_row(q0 + rr), h0 + c) * qs : 0.0;
        Qs[qb + rr * LQ + c] = float16_t(x);
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    MAT16 fq[ND];
    [[unroll]] for (uint d = 0; d < ND; d++)
        coopMatLoadNV(fq[d], Qs, qb + d * 16, LQ, false);

    MAT32 o[ND];
    [[unroll]] for (uint d = 0; d < ND; d++)
        o[d] = MAT32(0.0);
    // per component: its row's running maximum, and its own part of the
    // row's sum of exponentials
    float m[NC], l[NC];
    [[unroll]] for (uint i = 0; i < NC; i++) {
        m[i] = -1e30;
        l[i] = 0.0;
    }

    RAW4 rk[NKV], rv[NKV];
    [[unroll]] for (uint i = 0; i < NKV; i++) {
        uint idx = tid + 128 * i, j = idx / (D / 4), c = (idx % (D / 4)) * 4;
        rk[i] = load_row4(p.k, j, c, h0);
        rv[i] = load_row4(p.v, j, c, h0);
    }
    const float NEG_INF = uintBitsToFloat(0xff800000u);
    for (uint j0 = 0; j0 < ea_nk; j0 += BKEY) {
        [[unroll]] for (uint i = 0; i < NKV; i++) {
            uint idx = tid + 128 * i, j = idx / (D / 4), c4 = idx % (D / 4);
            Ks[j * LK + c4] = halves4(rk[i]);
            Vs[j * LK + c4] = halves4(rv[i]);
        }
        barrier();
        uint j1 = j0 + BKEY;
        if (j1 < ea_nk) // the next block's loads, in flight during this one
            [[unroll]] for (uint i = 0; i < NKV; i++) {
                uint idx = tid + 128 * i, j = idx / (D / 4), c = (idx % (D / 4)) * 4;
                rk[i] = load_row4(p.k, j1 + j, c, h0);
                rv[i] = load_row4(p.v, j1 + j, c, h0);
            }

        // S = Q K^T, 16 x BKEY, as KT matrices of 16 x 16; keys past n -inf
        MAT32 s[KT];
        float bm[NC];
        [[unroll]] for (uint i = 0; i < NC; i++)
            bm[i] = NEG_INF;
        [[unroll]] for (uint t = 0; t < KT; t++) {
            s[t] = MAT32(0.0);
            [[unroll]] for (uint d = 0; d < ND; d++) {
                MAT16 fk;
                coopMatLoadNV(fk, Ks, (t * 16) * LK + d * 4, LK, true);
                s[t] = coopMatMulAddNV(fq[d], fk, s[t]);
            }
            [[unroll]] for (uint i = 0; i < NC; i++) {
                float x = j0 + t * 16 + col_of[i] < ea_nk ? s[t][i] : NEG_INF;
                s[t][i] = x;
                bm[i] = max(bm[i], x);
            }
        }
        // the row's maximum: within the lane, then across its four lanes
        float rm[NC];
        [[unroll]] for (uint i = 0; i < NC; i++) {
            rm[i] = bm[i];
            [[unroll]] for (uint j = 0; j < NC; j++)
                rm[i] = row_of[j] == row_of[i] ? max(rm[i], bm[j]) : rm[i];
        }
        [[unroll]] for (uint i = 0; i < NC; i++) {
            rm[i] = max(rm[i], subgroupShuffleXor(rm[i], 1));
            bm[i] = max(rm[i], subgroupShuffleXor(rm[i], 2));
        }

        // the rows' new maxima, the rescaling of what came before, and
        // P = exp2(S - max) into the products' operands
        float corr[NC];
        [[unroll]] for (uint i = 0; i < NC; i++) {
            float mn = max(m[i], bm[i]);
            corr[i] = exp2(m[i] - mn);
            m[i] = mn;
            l[i] *= corr[i];
        }
        MAT16 fp[KT];
        [[unroll]] for (uint t = 0; t < KT; t++) {
            [[unroll]] for (uint i = 0; i < NC; i++) {
                float e = exp2(s[t][i] - m[i]);
                s[t][i] = e;
                l[i] += e;
            }
            fp[t] = MAT16(s[t]);
        }
        [[unroll]] for (uint d = 0; d < ND; d++)
            [[unroll]] for (uint i = 0; i < NC; i++)
                o[d][i] *= corr[i];

        // O += P V
        [[unroll]] for (uint t = 0; t < KT; t++)
            [[unroll]] for (uint d = 0; d < ND; d++) {
                MAT16 fv;
                coopMatLoadNV(fv, Vs, (t * 16) * LK + d * 4, LK, false);
                o[d] = coopMatMulAddNV(fp[t], fv, o[d]);
            }
        barrier(); // every subgroup done with Ks, Vs before the next block
    }

    // the rows' sums from the components' parts; each component to its
    // element of the output
    float ls[NC];
    [[unroll]] for (uint i = 0; i < NC; i++) {
        ls[i] = 0.0;
        [[unroll]] for (uint j = 0; j < NC; j++)
            ls[i] += row_of[j] == row_of[i] ? l[j] : 0.0;
    }
    [[unroll]] for (uint i = 0; i < NC; i++) {
        ls[i] += subgroupShuffleXor(ls[i], 1);
        l[i] = ls[i] + subgroupShuffleXor(ls[i], 2);
    }
    // (the loops' bodies are not wholly inside an if, so that glslc
    // unrolls them and the arrays stay in registers)
    [[unroll]] for (uint i = 0; i < NC; i++) {
        uint row = q0 + row_of[i];
        uint at = row < nq ? ea_row(row) * p.ld + h0 + col_of[i] : 0;
        float inv = 1.0 / l[i];
        [[unroll]] for (uint d = 0; d < ND; d++) {
            float x = o[d][i] * inv;
            if (row < nq)
                p.o.v[at + d * 16] = x;
        }
    }
}
