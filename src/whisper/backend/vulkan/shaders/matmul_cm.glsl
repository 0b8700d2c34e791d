// matmul_cm.glsl: the product of matmul.comp (same push constants, same
// epilogue: epilogue.glsl) on the matrix engines, included by
// matmul_cm.comp (GL_NV_cooperative_matrix) and matmul_cmk.comp
// (GL_KHR_cooperative_matrix) after their extensions, common.glsl and
// coopmat.glsl (the fragment shape CM_FM x CM_FN x CM_FK and subgroup
// size CM_SG of the including compilation's family): A's floats are
// rounded to halves as they are staged (the weights are halves already),
// products of CM_FM x CM_FN x CM_FK accumulate in floats. With F_AHALF, A is halves already (its producer
// rounded them, with the same packHalf2x16: the same bits), half the
// bytes to load and nothing to convert. Only for F16 weights, and only
// where the device has a family's shape and subgroup size (vk.h's
// coopmat_family): ops.c picks this or the tiled path per device by a
// timed trial.
//
// One compilation per tile shape (CM_CFG, below): a workgroup of SGM x
// SGN subgroups of CM_SG takes a BM x BN tile of C, each subgroup a
// (BM / SGM) x (BN / SGN) block of it: TM x TN accumulators of
// CM_FM x CM_FN.
// ops.c takes 128 x 128 tiles where that still gives the card enough
// workgroups, else the path's smaller shape (64 x 128; or 64 x 64, which
// spreads the medium encoder's 1500 x 1024 products over 384 workgroups
// instead of 192 on 132 multiprocessors). K goes in steps of BK through
// two shared-memory stages: while the subgroups multiply out of one
// stage, the next step's loads (16 bytes a thread a load where F_VEC says
// A and W are aligned: ops.c sets it) are in flight into registers, and
// go into the other stage after; one barrier a step. Staged rows are
// padded by 16 bytes (80 or 144 bytes), which puts the 16-byte pieces of
// 8 consecutive rows on distinct banks. The staging arrays are vectors of
// 32-bit words (halves in pairs), which the cooperative loads read as
// halves (offsets and strides in vectors). The epilogue goes through a
// CM_FM x CM_FN float scratch per subgroup (in the W stages, once the
// last step is done), one accumulator at a time.
//
// C_AHEAD 2 (CM_CFG 5, 6): two sets of registers, the loads issued two K
// steps before their step's products instead of one, so that a load has a
// whole step's products and barrier more to arrive before it is stored
// (bench/RESULTS.md: without loads after the first step the n = 1024
// products ran 1.6x faster: their latency, not the engines, held them).
//
// F_SPLIT (ops.c's split of K, for grids too small for the card): the
// workgroups along z each take K in a range of ldadd (a multiple of BK)
// from z ldadd, and write their sums, without the epilogue, to part z of
// c: M x ldc floats from c + z M ldc. matmul_sum.comp adds the parts in
// order and applies the epilogue.
#ifndef CM_CFG
#define CM_CFG 0
#endif
#if CM_CFG == 0     // 128 x 128, 8 subgroups 2 x 4, each 64 x 32 (4 x 2 accumulators)
#define C_BM 128
#define C_BN 128
#define C_BK 32
#define C_SGM 2
#define C_SGN 4
#elif CM_CFG == 1   // 64 x 128, 8 subgroups 2 x 4, each 32 x 32 (2 x 2)
#define C_BM 64
#define C_BN 128
#define C_BK 32
#define C_SGM 2
#define C_SGN 4
#elif CM_CFG == 2   // 64 x 64, 4 subgroups 2 x 2, each 32 x 32 (2 x 2)
#define C_BM 64
#define C_BN 64
#define C_BK 32
#define C_SGM 2
#define C_SGN 2
#elif CM_CFG == 3   // the same with K in steps of 64 (half the barriers, 36 KiB staged)
#define C_BM 64
#define C_BN 64
#define C_BK 64
#define C_SGM 2
#define C_SGN 2
#elif CM_CFG == 4   // 64 x 64, 2 subgroups 1 x 2, each 64 x 32 (4 x 2)
#define C_BM 64
#define C_BN 64
#define C_BK 32
#define C_SGM 1
#define C_SGN 2
#elif CM_CFG == 5   // 64 x 128 as 1, the loads two steps ahead (C_AHEAD)
#define C_BM 64
#define C_BN 128
#define C_BK 32
#define C_SGM 2
#define C_SGN 4
#define C_AHEAD 2
#elif CM_CFG == 6   // 128 x 128 as 0, the loads two steps ahead
#define C_BM 128
#define C_BN 128
#define C_BK 32
#define C_SGM 2
#define C_SGN 4
#define C_AHEAD 2
#elif CM_CFG == 7   // 128 x 128, 4 subgroups 2 x 2, each 64 x 64 (4 x 4): each A and
                    // W fragment read from shared memory feeds 4 products (CFG 0: A 2, W 4)
#define C_BM 128
#define C_BN 128
#define C_BK 32
#define C_SGM 2
#define C_SGN 2
#elif CM_CFG == 8   // CFG 0 for A as halves, operands aligned (C_AH)
#define C_BM 128
#define C_BN 128
#define C_BK 32
#define C_SGM 2
#define C_SGN 4
#define C_AH 1
#elif CM_CFG == 9   // CFG 1 for A as halves, operands aligned
#define C_BM 64
#define C_BN 128
#define C_BK 32
#define C_SGM 2
#define C_SGN 4
#define C_AH 1
#elif CM_CFG == 10  // CFG 8 by 16 subgroups 4 x 4, each 32 x 32 (2 x 2): see C_AH
#define C_BM 128
#define C_BN 128
#define C_BK 32
#define C_SGM 4
#define C_SGN 4
#define C_AH 1
#elif CM_CFG == 11  // CFG 9 by 16 subgroups 2 x 8, each 32 x 16 (2 x 1)
#define C_BM 64
#define C_BN 128
#define C_BK 32
#define C_SGM 2
#define C_SGN 8
#define C_AH 1
#elif CM_CFG == 12  // CFG 0 (any A) by 16 subgroups as 10
#define C_BM 128
#define C_BN 128
#define C_BK 32
#define C_SGM 4
#define C_SGN 4
#elif CM_CFG == 13  // CFG 1 (any A) by 16 subgroups as 11
#define C_BM 64
#define C_BN 128
#define C_BK 32
#define C_SGM 2
#define C_SGN 8
#else               // CFG 14: CFG 0 with K in steps of 16: 24 KiB staged instead of 40,
                    // for devices with 32 KiB of shared memory (matmul_cmk.comp; lavapipe)
#define C_BM 128
#define C_BN 128
#define C_BK 16
#define C_SGM 2
#define C_SGN 4
#endif
#ifndef C_AHEAD
#define C_AHEAD 1
#endif
// C_AH (CFG 8, 9): F_AHALF and F_VEC known at compile time (ops.c picks
// these only for such products), so that a thread's A loads in flight
// are 2-word registers, not 4-word ones kept for floats that never come
// (enc_attn_cm.comp's compilation for halves ran 18 % faster for that).
// CFG 10 and 11 split the same tiles over 16 subgroups (512 threads)
// instead of 8: a workgroup that large must fit in one multiprocessor's
// registers, so the driver keeps a thread to 128 of them (CFG 0 took
// 166, one workgroup of 8 subgroups a multiprocessor; CFG 10 takes 97),
// and twice the subgroups hide the loads' latency, for fewer products a
// subgroup per fragment read from shared memory: on an H200 medium's
// encoder went from 19.6 to 16.7 ms a window with them (bench/RESULTS.md,
// "16 subgroups a tile"). CFG 12 and 13 do the same for CFG 0 and 1 (A
// as floats, or not aligned).
#ifndef C_AH
#define C_AH 0
#endif
#define C_NT (CM_SG * C_SGM * C_SGN)
layout(local_size_x = C_NT) in;

layout(push_constant) uniform P {
    F32 a; U32 w; F32 bias; F32 add; F32 c; F32 lnw; F32 lnb; I32 rowidx;
    uint M, N, K, lda, ldw, ldc, ldadd, flags;
    U32 tab; F32 c3; uint split, cofs;
} p;

#include "epilogue.glsl"
const uint F_VEC = 64; // a, lda, w and ldw allow 16-byte loads (ops.c)
const uint F_SPLIT = 32768;
const uint F_AHALF = 65536; // A as halves (ops.h's TD_VKO_AHALF)
// probes for vulkan-bench (ops.h's td_vko_cm_probe; results then wrong):
// every step's loads from K offset 0 (the same few cache lines), no
// products, no loads after the first step
const uint F_PSAME = 4096, F_PNOMMA = 8192, F_PNOLOAD = 16384;
const uint BM = C_BM, BN = C_BN, BK = C_BK, NT = C_NT, SGN = C_SGN;
const uint SBM = BM / C_SGM, SBN = BN / SGN; // a subgroup's block
const uint TM = SBM / CM_FM, TN = SBN / CM_FN; // its accumulators
const uint LA = (BK + 8) / 4;      // uvec2 (4 halves) per staged A row: 80 or 144 bytes
const uint LW = (BK + 8) / 8;      // uvec4 (8 halves) per staged W row: the same
const uint PA = BK / 4, PW = BK / 8; // loads (vec4, uvec4) per row of a step
const uint SA = BM * LA, SW = BN * LW; // one stage of each
const uint NA = BM * PA / NT;      // vec4s of A a thread loads per step
const uint NW = BN * PW / NT;      // uvec4s of W a thread loads per step

shared uvec2 As[2 * SA];
shared uvec4 Ws[2 * SW];


uint kEnd; // the end of this workgroup's K range: p.K, or its split's

// A[m][k .. k+3] (zeros past M and K) as raw bits: four floats' bits, or
// with F_AHALF (A stored as halves by its producer) four halves in .xy;
// with C_AH (halves and F_VEC known at compile time) the four halves
// alone, in a uvec2.
// Bits, not values, so that one register type holds either and the
// floats are still rounded to halves only when staged (a step later,
// where their loads have had the products' time to land).
#if C_AH
#define AREG uvec2
#define IS_VEC true
#define IS_AHALF true
#else
#define AREG uvec4
#define IS_VEC ((p.flags & F_VEC) != 0)
#define IS_AHALF ((p.flags & F_AHALF) != 0)
#endif
AREG load_a(uint m, uint k)
{
    if (m >= p.M || k >= kEnd)
        return AREG(0);
    uint i = m * p.lda + k;
    if (IS_AHALF) {
        if (IS_VEC && k + 3 < kEnd)
            return AREG(U32x2(p.a).v[i >> 2]
#if !C_AH
                        , 0u, 0u
#endif
            );
        uvec2 r = uvec2(0);
        [[unroll]] for (uint j = 0; j < 4; j++)
            if (k + j < kEnd) {
                uint w = U32(p.a).v[(i + j) >> 1];
                uint h = ((i + j) & 1u) != 0 ? w >> 16 : w & 0xffffu;
                if (j < 2)
                    r.x |= h << (16 * j);
                else
                    r.y |= h << (16 * (j - 2));
            }
#if C_AH
        return r;
#else
        return uvec4(r, 0u, 0u);
#endif
    }
#if C_AH
    return AREG(0); // not reached: A is halves here
#else
    if (IS_VEC && k + 3 < kEnd)
        return floatBitsToUint(F32x4(p.a).v[i >> 2]);
    vec4 r = vec4(0.0);
    [[unroll]] for (uint j = 0; j < 4; j++)
        if (k + j < kEnd)
            r[j] = p.a.v[i + j];
    return floatBitsToUint(r);
#endif
}

// A's four elements as staged: halves in pairs
uvec2 a_halves(AREG r)
{
#if C_AH
    return r;
#else
    if (IS_AHALF)
        return r.xy;
    return uvec2(packHalf2x16(uintBitsToFloat(r.xy)), packHalf2x16(uintBitsToFloat(r.zw)));
#endif
}

// W[n][k .. k+7] as 4 words of halves in pairs (zeros past N and K)
uvec4 load_w(uint n, uint k)
{
    if (n >= p.N || k >= kEnd)
        return uvec4(0);
    uint i = n * p.ldw + k; // even: ldw and k are
    if (IS_VEC && k + 7 < kEnd)
        return U32x4(p.w).v[i >> 3];
    uvec4 r = uvec4(0);
    [[unroll]] for (uint j = 0; j < 4; j++) {
        uint kk = k + 2 * j;
        if (kk < kEnd) {
            r[j] = p.w.v[(i >> 1) + j];
            if (kk + 1 >= kEnd)
                r[j] &= 0xffffu;
        }
    }
    return r;
}

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    uint wm = sg / SGN, wn = sg % SGN;
    uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
    bool split = (p.flags & F_SPLIT) != 0;
    uint kb = split ? gl_WorkGroupID.z * p.ldadd : 0;
    kEnd = split ? min(p.K, kb + p.ldadd) : p.K;

    CM_C acc[TM][TN];
    [[unroll]] for (uint i = 0; i < TM; i++)
        [[unroll]] for (uint j = 0; j < TN; j++)
            acc[i][j] = CM_C(0.0);

    // thread tid loads A rows (tid + NT i) / PA, columns 4 ((tid + NT i) % PA),
    // and W rows (tid + NT i) / PW, columns 8 ((tid + NT i) % PW)
    AREG ra[NA];
    uvec4 rw[NW];
    [[unroll]] for (uint i = 0; i < NA; i++) {
        uint idx = tid + NT * i;
        ra[i] = load_a(m0 + idx / PA, kb + (idx % PA) * 4);
    }
    [[unroll]] for (uint i = 0; i < NW; i++) {
        uint idx = tid + NT * i;
        rw[i] = load_w(n0 + idx / PW, kb + (idx % PW) * 8);
    }
    [[unroll]] for (uint i = 0; i < NA; i++) {
        uint idx = tid + NT * i;
        As[(idx / PA) * LA + idx % PA] = a_halves(ra[i]);
    }
    [[unroll]] for (uint i = 0; i < NW; i++) {
        uint idx = tid + NT * i;
        Ws[(idx / PW) * LW + idx % PW] = rw[i];
    }
    barrier();

#define LOAD_STEP(RA, RW, KS)                                                            \
    [[unroll]] for (uint i = 0; i < NA; i++) {                                           \
        uint idx = tid + NT * i;                                                         \
        RA[i] = load_a(m0 + idx / PA, (KS) + (idx % PA) * 4);                            \
    }                                                                                    \
    [[unroll]] for (uint i = 0; i < NW; i++) {                                           \
        uint idx = tid + NT * i;                                                         \
        RW[i] = load_w(n0 + idx / PW, (KS) + (idx % PW) * 8);                            \
    }
#define STORE_STEP(RA, RW, ST)                                                           \
    [[unroll]] for (uint i = 0; i < NA; i++) {                                           \
        uint idx = tid + NT * i;                                                         \
        As[(ST) * SA + (idx / PA) * LA + idx % PA] = a_halves(RA[i]);                    \
    }                                                                                    \
    [[unroll]] for (uint i = 0; i < NW; i++) {                                           \
        uint idx = tid + NT * i;                                                         \
        Ws[(ST) * SW + (idx / PW) * LW + idx % PW] = RW[i];                              \
    }
#define MMA_STEP(ST)                                                                     \
    [[unroll]] for (uint kk = 0; kk < BK; kk += CM_FK) {                                 \
        CM_A fa[TM];                                                                     \
        CM_B fb[TN];                                                                     \
        [[unroll]] for (uint i = 0; i < TM; i++)                                         \
            CM_LOAD_ROWS(fa[i], As, (ST) * SA + (wm * SBM + i * CM_FM) * LA + kk / 4, LA); \
        [[unroll]] for (uint j = 0; j < TN; j++)                                         \
            CM_LOAD_COLS(fb[j], Ws, (ST) * SW + (wn * SBN + j * CM_FN) * LW + kk / 8, LW); \
        [[unroll]] for (uint i = 0; i < TM; i++)                                         \
            [[unroll]] for (uint j = 0; j < TN; j++)                                     \
                acc[i][j] = CM_MULADD(fa[i], fb[j], acc[i][j]);                          \
    }

    uint cur = 0;
#if C_AHEAD == 2
    // stage 0 holds step kb; the second set gets step kb + BK. Each half
    // of the loop: the set that is free loads the step after next, the
    // products of this step, the other set (loaded a step ago) into the
    // other stage, a barrier
    bool same = (p.flags & F_PSAME) != 0, noload = (p.flags & F_PNOLOAD) != 0;
    bool nomma = (p.flags & F_PNOMMA) != 0;
    AREG ra2[NA];
    uvec4 rw2[NW];
    LOAD_STEP(ra2, rw2, same ? kb : kb + BK)
    for (uint k0 = kb; k0 < kEnd; k0 += 2 * BK) {
        if (k0 + 2 * BK < kEnd && !noload) {
            LOAD_STEP(ra, rw, same ? kb : k0 + 2 * BK)
        }
        if (!nomma) {
            MMA_STEP(cur)
        }
        if (k0 + BK < kEnd) {
            STORE_STEP(ra2, rw2, cur ^ 1)
        }
        barrier();
        cur ^= 1;
        if (k0 + BK >= kEnd)
            break;
        if (k0 + 3 * BK < kEnd && !noload) {
            LOAD_STEP(ra2, rw2, same ? kb : k0 + 3 * BK)
        }
        if (!nomma) {
            MMA_STEP(cur)
        }
        if (k0 + 2 * BK < kEnd) {
            STORE_STEP(ra, rw, cur ^ 1)
        }
        barrier();
        cur ^= 1;
    }
#else
    for (uint k0 = kb; k0 < kEnd; k0 += BK) {
        uint k1 = k0 + BK;
        bool more = k1 < kEnd;
        uint kl = (p.flags & F_PSAME) != 0 ? kb : k1;
        if (more && (p.flags & F_PNOLOAD) == 0) { // the next step's loads, in flight during this step's products
            [[unroll]] for (uint i = 0; i < NA; i++) {
                uint idx = tid + NT * i;
                ra[i] = load_a(m0 + idx / PA, kl + (idx % PA) * 4);
            }
            [[unroll]] for (uint i = 0; i < NW; i++) {
                uint idx = tid + NT * i;
                rw[i] = load_w(n0 + idx / PW, kl + (idx % PW) * 8);
            }
        }
        uint sa = cur * SA, sw = cur * SW;
        if ((p.flags & F_PNOMMA) == 0) {
            [[unroll]] for (uint kk = 0; kk < BK; kk += CM_FK) {
                CM_A fa[TM];
                CM_B fb[TN];
                [[unroll]] for (uint i = 0; i < TM; i++)
                    CM_LOAD_ROWS(fa[i], As, sa + (wm * SBM + i * CM_FM) * LA + kk / 4, LA);
                [[unroll]] for (uint j = 0; j < TN; j++)
                    CM_LOAD_COLS(fb[j], Ws, sw + (wn * SBN + j * CM_FN) * LW + kk / 8, LW);
                [[unroll]] for (uint i = 0; i < TM; i++)
                    [[unroll]] for (uint j = 0; j < TN; j++)
                        acc[i][j] = CM_MULADD(fa[i], fb[j], acc[i][j]);
            }
        }
        if (more) { // into the other stage: its last readers passed the previous barrier
            uint na = (cur ^ 1) * SA, nw = (cur ^ 1) * SW;
            [[unroll]] for (uint i = 0; i < NA; i++) {
                uint idx = tid + NT * i;
                As[na + (idx / PA) * LA + idx % PA] =
                    a_halves(ra[i]);
            }
            [[unroll]] for (uint i = 0; i < NW; i++) {
                uint idx = tid + NT * i;
                Ws[nw + (idx / PW) * LW + idx % PW] = rw[i];
            }
        }
        barrier();
        cur ^= 1;
    }
#endif

    // epilogue: CM_FM x CM_FN floats of scratch per subgroup (in Ws),
    // one accumulator at a time. acc is indexed only by constants (the
    // inner loops unroll; the loop over t, with its loop over elements,
    // does not): an accumulator array indexed at run time, as the
    // epilogue's loops over i and j left it, lives in local memory on
    // NVIDIA's compiler, every product of the K loop then a round trip
    // through it (bench/RESULTS.md, "the accumulators in local memory")
    const uint CE = CM_FM * CM_FN; // an accumulator's floats
    uint cs = sg * (CE / 4);
    uint part = gl_WorkGroupID.z * p.M * p.ldc; // F_SPLIT's part (0 without)
    for (uint t = 0; t < TM * TN; t++) {
        uint i = t / TN, j = t % TN;
        [[unroll]] for (uint ii = 0; ii < TM; ii++)
            [[unroll]] for (uint jj = 0; jj < TN; jj++)
                if (ii * TN + jj == t)
                    CM_STORE_ROWS(acc[ii][jj], Ws, cs, CM_FN / 4);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        if (split) { // the sums alone: matmul_sum.comp's epilogue
            for (uint e = lane; e < CE; e += gl_SubgroupSize) {
                uint m = m0 + wm * SBM + i * CM_FM + e / CM_FN, n = n0 + wn * SBN + j * CM_FN + e % CM_FN;
                if (m < p.M && n < p.N)
                    p.c.v[part + m * p.ldc + n] = uintBitsToFloat(Ws[cs + e / 4][e % 4]);
            }
        } else
        if ((p.flags & F_HALF) == 0) {
            for (uint e = lane; e < CE; e += gl_SubgroupSize) {
                uint m = m0 + wm * SBM + i * CM_FM + e / CM_FN, n = n0 + wn * SBN + j * CM_FN + e % CM_FN;
                if (m < p.M && n < p.N)
                    epi_store(m, n, uintBitsToFloat(Ws[cs + e / 4][e % 4]));
            }
        } else { // pairs of adjacent columns, one word of halves each
            for (uint e = 2 * lane; e < CE; e += 2 * gl_SubgroupSize) {
                uint m = m0 + wm * SBM + i * CM_FM + e / CM_FN, n = n0 + wn * SBN + j * CM_FN + e % CM_FN;
                if (m < p.M && n < p.N)
                    epi_store2(m, n, uintBitsToFloat(Ws[cs + e / 4][e % 4]),
                               uintBitsToFloat(Ws[cs + e / 4][e % 4 + 1]));
            }
        }
        subgroupBarrier();
    }
}
