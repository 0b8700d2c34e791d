
const uint LP = BKEY + 8;          // halves per row of a subgroup's P (and Q at the start)
const uint LS = BKEY + 4;          // floats per row of a subgroup's scratch
const uint RS = CM_FM;             // query rows a subgroup
const uint LPR = CM_SG / CM_FM;    // lanes a row: 2 (NV's 16 rows and 32 lanes), or 1
#if CM_SG != CM_FM && CM_SG != 2 * CM_FM
#error "enc_attn_cm_main.glsl: one or two lanes a row"
#endif

shared float16_t Ps[4 * RS * LP];
shared float Ss[4 * RS * LS];

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    uint q0 = gl_WorkGroupID.x * BQ + sg * RS;
    uint h0 = gl_WorkGroupID.y * D;
    uint ps = sg * RS * LP, ss = sg * RS * LS;
    ea_keys();
    // lane's row of the subgroup's RS and its share of the columns
    // (interleaved: columns half_, half_ + LPR, ...)
    uint r = lane / LPR, half_ = lane % LPR;

    // this subgroup's queries, scaled, through its P area into registers
    const float qs = p.scale * 1.4426950408889634;
    for (uint e = lane; e < RS * D; e += CM_SG) {
        uint rr = e / D, c = e % D;
        float x = q0 + rr < p.n ? load_q(q0 + rr, h0 + c) * qs : 0.0;
        Ps[ps + rr * LP + c] = float16_t(x);
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    CM_A fq[NDK];
    [[unroll]] for (uint d = 0; d < NDK; d++)
        CM_LOAD_ROWS(fq[d], Ps, ps + d * CM_FK, LP);
    subgroupBarrier();

    float o[D / LPR];
    [[unroll]] for (uint i = 0; i < D / LPR; i++)
        o[i] = 0.0;
    float m = -1e30, l = 0.0;

#if NKV_AHEAD
    RAW4 rk[NKV], rv[NKV];
    [[unroll]] for (uint i = 0; i < NKV; i++) {
        uint idx = tid + NT * i, j = idx / (D / 4), c = (idx % (D / 4)) * 4;
        rk[i] = load_row4(p.k, j, c, h0);
        rv[i] = load_row4(p.v, j, c, h0);
    }
#endif
    for (uint j0 = 0; j0 < p.n; j0 += BKEY) {
#if NKV_AHEAD
        [[unroll]] for (uint i = 0; i < NKV; i++) {
            uint idx = tid + NT * i, j = idx / (D / 4), c4 = idx % (D / 4);
            Ks[j * LK + c4] = halves4(rk[i]);
            Vs[j * LK + c4] = halves4(rv[i]);
        }
        barrier();
        uint j1 = j0 + BKEY;
        if (j1 < p.n) // the next block's loads, in flight during this one
            [[unroll]] for (uint i = 0; i < NKV; i++) {
                uint idx = tid + NT * i, j = idx / (D / 4), c = (idx % (D / 4)) * 4;
                rk[i] = load_row4(p.k, j1 + j, c, h0);
                rv[i] = load_row4(p.v, j1 + j, c, h0);
            }
#else
        // the block's keys and values straight into shared memory: with
        // few lanes a workgroup each thread loads NKV (16 or 32) pieces a
        // block, too many registers to keep the next block in flight
        [[unroll]] for (uint i = 0; i < NKV; i++) {
            uint idx = tid + NT * i, j = idx / (D / 4), c = (idx % (D / 4)) * 4;
            Ks[j * LK + idx % (D / 4)] = halves4(load_row4(p.k, j0 + j, c, h0));
            Vs[j * LK + idx % (D / 4)] = halves4(load_row4(p.v, j0 + j, c, h0));
        }
        barrier();
#endif

        // S = Q K^T, RS x 64, into the scratch
        [[unroll]] for (uint t = 0; t < BKEY / CM_FN; t++) {
            CM_C s = CM_C(0.0);
            [[unroll]] for (uint d = 0; d < NDK; d++) {
                CM_B fk;
                CM_LOAD_COLS(fk, Ks, (t * CM_FN) * LK + d * (CM_FK / 4), LK);
                s = CM_MULADD(fq[d], fk, s);
            }
            CM_STORE_ROWS(s, Ss, ss + t * CM_FN, LS);
        }
        subgroupMemoryBarrierShared();
        subgroupBarrier();

        // online softmax: LPR lanes a row, BKEY / LPR columns each
        float sv[BKEY / LPR];
        float bm = -1e30;
        [[unroll]] for (uint i = 0; i < BKEY / LPR; i++) {
            uint c = half_ + LPR * i;
            sv[i] = j0 + c < p.n ? Ss[ss + r * LS + c] : uintBitsToFloat(0xff800000u);
            bm = max(bm, sv[i]);
        }
        if (LPR == 2)
            bm = max(bm, subgroupShuffleXor(bm, 1));
        float mn = max(m, bm), corr = exp2(m - mn), bs = 0.0;
        m = mn;
        [[unroll]] for (uint i = 0; i < BKEY / LPR; i++) {
            float e = exp2(sv[i] - mn);
            bs += e;
            Ps[ps + r * LP + half_ + LPR * i] = float16_t(e);
        }
        if (LPR == 2)
            bs += subgroupShuffleXor(bs, 1);
        l = l * corr + bs;
        subgroupMemoryBarrierShared();
        subgroupBarrier();

        // P V, RS x D, into the scratch
        CM_C acc[NDN];
        [[unroll]] for (uint d = 0; d < NDN; d++)
            acc[d] = CM_C(0.0);
        [[unroll]] for (uint t = 0; t < BKEY / CM_FK; t++) {
            CM_A fp;
            CM_LOAD_ROWS(fp, Ps, ps + t * CM_FK, LP);
            [[unroll]] for (uint d = 0; d < NDN; d++) {
                CM_B fv;
                CM_LOAD_ROWS(fv, Vs, (t * CM_FK) * LK + d * (CM_FN / 4), LK);
                acc[d] = CM_MULADD(fp, fv, acc[d]);
            }
        }
        [[unroll]] for (uint d = 0; d < NDN; d++)
            CM_STORE_ROWS(acc[d], Ss, ss + d * CM_FN, LS);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        [[unroll]] for (uint i = 0; i < D / LPR; i++)
            o[i] = o[i] * corr + Ss[ss + r * LS + half_ + LPR * i];
        barrier(); // every subgroup done with Ks, Vs (and its scratch) before the next block
    }

    uint row = q0 + r;
    if (row < p.n) {
        float inv = 1.0 / l;
        [[unroll]] for (uint i = 0; i < D / LPR; i++)
            p.o.v[row * p.ld + h0 + half_ + LPR * i] = o[i] * inv;
    }
}
