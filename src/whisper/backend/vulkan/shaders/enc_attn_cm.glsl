// enc_attn_cm.glsl: what the attention shaders on the matrix engines
// share (enc_attn_cm.comp, which takes each block's scores through shared
// memory, and enc_attn_cmr.comp, which keeps them in registers): the
// compilations (EA_CFG), the push constants, the blocks' sizes, the
// staged keys and values, and the loads. Included after the extensions
// and coopmat.glsl (the fragment shape CM_FM x CM_FN x CM_FK and the
// subgroup size CM_SG: NV's family 0 for enc_attn_cmr.comp, any for
// enc_attn_cm.comp and enc_attn_cmk.comp), with EA_CFG defined by the
// shader's @variants line:
//   0, 1  the encoder's self-attention, heads of 32 or 64, q, k, v floats
//   2, 3  the same with q, k and v as halves
//   4, 5  (enc_attn_cmr.comp only) the decoder's cross-attention over a
//         group of up to BQ rows of one window (EA_GATHER): heads of 64,
//         q floats, the window's keys and values floats (4) or halves (5)
#include "common.glsl"

#if EA_CFG >= 4
#define EA_GATHER 1
#define HEAD_D 64
#define EA_HALF (EA_CFG - 4)
#else
#define EA_GATHER 0
#if EA_CFG == 0 || EA_CFG == 2
#define HEAD_D 32
#else
#define HEAD_D 64
#endif
#define EA_HALF (EA_CFG >= 2)
#endif
#if EA_HALF // k and v (and q, but for EA_GATHER) as halves: four in a uvec2
#define RAW4 uvec2
#else       // as floats: four floats' bits in a uvec4
#define RAW4 uvec4
#endif
const uint D = HEAD_D;
const uint NT = 4 * CM_SG;         // 4 subgroups a workgroup
layout(local_size_x = NT) in;

#if EA_GATHER
// The group table is ops.h's (td_vko_dec_xattn_cm): entry g at
// groups[g * (BQ + 1)], its row count n (1..BQ), then its n row indices
// into q and o; the group's keys are its first row's info entry
// (info[2 r0]: the element of k and v where its window's row 0 is,
// info[2 r0 + 1]: how many keys), as dec_attn.comp reads it.
layout(push_constant) uniform P {
    F32 q; F32 k; F32 v; F32 o; I32 info; I32 groups;
    uint ld;
    float scale;
} p;
#else
layout(push_constant) uniform P {
    F32 q; F32 k; F32 v; F32 o;
    uint n, ld;
    float scale;
} p;
#endif

const uint BQ = 4 * CM_FM, BKEY = 64; // queries per workgroup (ops.c's ea_rows), keys per block
const uint LK = (D + 8) / 4;       // uvec2 (4 halves) per staged key or value row
const uint NKV = BKEY * D / 4 / NT; // vec4s of K (and of V) a thread loads per block
// the next block's loads kept in flight in registers while this one is
// used (enc_attn_cm_main.glsl) where they are few: NV's 128 threads (4 or
// 8 a thread), not families of 8 or 16 lanes (16 or 32)
#define NKV_AHEAD (64 * HEAD_D / 4 / (4 * CM_SG) <= 8)
const uint NDK = D / CM_FK;        // Q's fragments along a head
const uint NDN = D / CM_FN;        // the output's fragments along a head
const uint ND = D / 16;            // (enc_attn_cmr.comp: NV's 16 x 16 x 16)

shared uvec2 Ks[BKEY * LK];
shared uvec2 Vs[BKEY * LK];

#if CM_FAMILY == 0 // enc_attn_cmr.comp's spelling
#define MAT16 fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define MAT32 fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>
#endif

// The keys: how many, and the element of k and v where row 0 of them is
// (set by main: p.n and 0, or the group's info entry)
uint ea_nk, ea_kbase;

// four elements of row (zeros past n) as raw bits: four halves, or four
// floats'
RAW4 load_row4(F32 b, uint row, uint c, uint h0)
{
    if (row >= ea_nk)
        return RAW4(0);
    uint i = (ea_kbase + row * p.ld + h0 + c) >> 2;
#if EA_HALF
    return U32x2(b).v[i];
#else
    return floatBitsToUint(F32x4(b).v[i]);
#endif
}

// those four elements as staged: halves in pairs
uvec2 halves4(RAW4 r)
{
#if EA_HALF
    return r;
#else
    return uvec2(packHalf2x16(uintBitsToFloat(r.xy)), packHalf2x16(uintBitsToFloat(r.zw)));
#endif
}

float load_q(uint row, uint c)
{
    uint i = row * p.ld + c;
#if EA_HALF && !EA_GATHER
    return unpackHalf2x16(U32(p.q).v[i >> 1])[i & 1u];
#else
    return p.q.v[i];
#endif
}

// The workgroup's query rows: how many (at most BQ), and where row i of
// them is in q and o. (For EA_GATHER, what the table and info give the
// whole workgroup goes through subgroupBroadcastFirst: read from memory,
// the compiler cannot tell that it is the same in every lane, and with
// the keys' count and the rows' count as loop bounds and conditions
// around the cooperative-matrix products and shuffles it would have to
// allow for divergence there.)
uint ea_rows()
{
#if EA_GATHER
    return subgroupBroadcastFirst(min(uint(p.groups.v[gl_WorkGroupID.x * (BQ + 1)]), BQ));
#else
    uint q0 = gl_WorkGroupID.x * BQ;
    return q0 < p.n ? min(p.n - q0, BQ) : 0;
#endif
}

uint ea_row(uint i)
{
#if EA_GATHER
    return uint(p.groups.v[gl_WorkGroupID.x * (BQ + 1) + 1 + i]);
#else
    return gl_WorkGroupID.x * BQ + i;
#endif
}

// ea_nk and ea_kbase for this workgroup (rows: ea_rows(), at least 1)
void ea_keys()
{
#if EA_GATHER
    uint r0 = ea_row(0);
    ea_kbase = subgroupBroadcastFirst(uint(p.info.v[2 * r0]));
    ea_nk = subgroupBroadcastFirst(uint(p.info.v[2 * r0 + 1]));
#else
    ea_kbase = 0;
    ea_nk = p.n;
#endif
}
