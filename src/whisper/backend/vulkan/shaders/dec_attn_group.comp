// dec_attn_group.comp: dec_attn.comp's attention for groups of up to G
// rows that attend to the same keys: the cross-attention's rows of one
// window (a window's beams, or a big batch's sequences of one window),
// which dec_attn.comp has each reload the window's keys and values from
// memory (the step's largest cost at big batches: on an H100 at 256 rows
// of medium, 4 windows, 17.0 of a 28.6 ms step). Workgroup (group, head,
// split) loads the split's keys and values once, as dec_attn.comp's
// workgroup does for its one row (each thread its key row and the value
// rows it adds up, into registers where the head has at most 64 floats
// and allows 16-byte loads), and computes every row of the group with
// them: the keys and values come from memory once per group instead of
// once per row.
//
// Each row's output has the bits dec_attn.comp gives it: the same split
// boundaries, and per row the same arithmetic in the same order (the
// scores' sums, the exponentials, the maximum and the sum by subgroup and
// then across subgroups in subgroup order, the outputs' partial sums
// added in dec_attn.comp's order, the same merge: dec_attn.glsl's). Only
// where the reductions' values sit differs: per row, its own stretch of
// shared memory. Nothing assumes a subgroup size: a row's reduction runs
// over all the workgroup's subgroups as dec_attn.comp's does (both are
// SPIR-V 1.5 pipelines made with no varying or required subgroup size,
// where Vulkan has every subgroup the device's one size). The per-row
// expressions are written as dec_attn.comp writes them, since glslc
// fuses a product and a sum into an Fma by the expression's shape: a
// change to one shader's arithmetic is a change to the other's, and
// test_vulkan_ops's test_dec_attn_group compares their bits.
//
// The table: entry g at groups[g * (G + 1)]: n (1..G), then the group's
// n row indices. Its rows' keys are those of the first row's info entry
// (info[2 r0], info[2 r0 + 1], as dec_attn.comp reads them): the caller
// groups only rows whose entries are equal. The grid (groups, heads,
// n_split) is an indirect dispatch's (ops.c): its size comes from the
// host with each call, not from the recording. Parts go where
// dec_attn.comp puts each row's; the merge counts in the group's first
// row's counter, which its last split sets back to 0 (the other rows'
// stay 0).
//
// Why G = 8 (ops.h's TD_VKO_ATT_GROUP, which must match): shared memory
// holds, per row of the group, its query (D floats), its exponentials
// (128 floats), its subgroups' maxima and sums (128 floats) and its
// partial outputs (128 vec4s): 26 KiB at 8 rows with heads of 64 (28 with
// 128), within the 32 KiB lavapipe gives a workgroup (NVIDIA 48); 16 rows
// would take 52 KiB. In registers a thread keeps, besides the key and
// value rows dec_attn.comp keeps (32 vec4s for heads of 64), per row a
// score, a maximum, a sum, 4 partial outputs and an output element: at 8
// rows about 150 live at the most against dec_attn.comp's 130 or so (an
// estimate: not yet read from a card's compiler, vulkan-bench --stats).
// Eight rows cut what the cross-attention reads eightfold at a big
// batch's 64 rows a window, and a window's beams (5) fit one group.
#version 450
#extension GL_GOOGLE_include_directive : require
// The head width, as dec_attn.comp's: see dec_attn.glsl.
// @variants DA_D 0 64
// @function-arrays-ok dec_attn_group_DA_D0 -- other widths: loops of a specialized count, unrolled by the driver if at all
#include "dec_attn.glsl"

const uint G = 8; // rows a group, at most: ops.h's TD_VKO_ATT_GROUP

layout(push_constant) uniform P {
    F32 q; F32c part; F32 k; F32 v; I32 info; F32 o; I32c cnt; I32 groups;
    uint ld, n_split;
    float scale;
} p;

shared float qs[G * D];        // row i's query at i D
shared float sc[G * SPL];      // row i's exponentials at i SPL
shared float sg_red[G * 128];  // row i's subgroups' maxima, then sums, at i 128
shared vec4 partial4[G * 128]; // row i's partial outputs at i 128 (.x: the scalar path's)
shared bool last;

void main()
{
    uint g = gl_WorkGroupID.x, h = gl_WorkGroupID.y, sp = gl_WorkGroupID.z;
    uint t = gl_LocalInvocationID.x, h0 = h * D;
    uint ge = g * (G + 1);
    uint n = min(uint(p.groups.v[ge]), G);
    if (n == 0)
        return; // no group (the whole workgroup: n is the same in every thread)
    uint r0 = uint(p.groups.v[ge + 1]);
    uint base = uint(p.info.v[2 * r0]);
    uint nk = uint(p.info.v[2 * r0 + 1]);
    uint j0 = sp * SPL;
    uint nb = j0 < nk ? min(SPL, nk - j0) : 0;
    bool v4 = (D & 3) == 0 && ((base | p.ld | h0) & 3) == 0;
    // this thread's key row and value rows, loaded once for the group,
    // as dec_attn.comp loads them for its row
    const uint Q = D / 4, KP = 128 / Q, NV = (SPL + KP - 1) / KP;
    bool pf = v4 && D <= 64;
    uint qi = t % Q, kp = t / Q;
    uint ko = base + (j0 + t) * p.ld + h0;
    uint vo = (base + j0 * p.ld + h0) / 4 + qi;
    vec4 kr[Q], vr[NV];
    if (pf) {
        uint jk = nb > 0 ? j0 + min(t, nb - 1) : 0;
        uint ko1 = base + jk * p.ld + h0;
        [[unroll]] for (uint i = 0; i < Q; i++)
            kr[i] = ld4(p.k, ko1 / 4 + i);
        uint vo1 = nb > 0 ? vo : (base + h0) / 4 + qi;
        [[unroll]] for (uint i = 0; i < NV; i++) {
            uint j = nb > 0 ? min(kp + i * KP, nb - 1) : 0;
            vr[i] = ld4(p.v, vo1 + j * (p.ld / 4));
        }
    }
    // the group's queries, scaled as dec_attn.comp scales its row's
    for (uint i = t; i < G * D; i += 128) {
        uint gi = i / D;
        if (gi < n)
            qs[i] = p.q.v[uint(p.groups.v[ge + 1 + gi]) * p.ld + h0 + (i - gi * D)] * p.scale;
    }
    barrier();
    // Every loop over the group's rows is unrolled (G is a constant), so
    // that the per-row values stay in registers; rows past n do nothing.
    // The scores: each row's sum in dec_attn.comp's order
    float s[G];
    [[unroll]] for (uint gi = 0; gi < G; gi++)
        s[gi] = -1e30;
    if (t < nb) {
        // (the loops over the rows innermost: glslc unrolls such nests,
        // and each row's sum still takes its terms in key-column order)
        float d[G];
        [[unroll]] for (uint gi = 0; gi < G; gi++)
            d[gi] = 0.0;
        if (pf) {
            [[unroll]] for (uint i = 0; i < Q; i++)
                [[unroll]] for (uint gi = 0; gi < G; gi++)
                    if (gi < n)
                        d[gi] += qs[gi * D + 4 * i] * kr[i].x + qs[gi * D + 4 * i + 1] * kr[i].y +
                                 qs[gi * D + 4 * i + 2] * kr[i].z + qs[gi * D + 4 * i + 3] * kr[i].w;
        } else if (v4) {
            // a key row in D / 4 loads, each for every row
            for (uint i = 0; i < D; i += 4) {
                vec4 kv = ld4(p.k, (ko + i) / 4);
                [[unroll]] for (uint gi = 0; gi < G; gi++)
                    if (gi < n)
                        d[gi] += qs[gi * D + i] * kv.x + qs[gi * D + i + 1] * kv.y +
                                 qs[gi * D + i + 2] * kv.z + qs[gi * D + i + 3] * kv.w;
            }
        } else {
            for (uint i = 0; i < D; i++) {
                float kx = ld1(p.k, ko + i);
                [[unroll]] for (uint gi = 0; gi < G; gi++)
                    if (gi < n)
                        d[gi] += qs[gi * D + i] * kx;
            }
        }
        [[unroll]] for (uint gi = 0; gi < G; gi++)
            if (gi < n)
                s[gi] = d[gi];
    }
    // each row's maximum as dec_attn.comp's wg_max takes it: by subgroup,
    // then over the subgroups in order (rows side by side: one barrier)
    [[unroll]] for (uint gi = 0; gi < G; gi++) {
        if (gi < n) {
            float m = subgroupMax(s[gi]);
            if (subgroupElect())
                sg_red[gi * 128 + gl_SubgroupID] = m;
        }
    }
    barrier();
    float mx[G];
    [[unroll]] for (uint gi = 0; gi < G; gi++)
        mx[gi] = -1e30;
    for (uint i = 0; i < gl_NumSubgroups; i++)
        [[unroll]] for (uint gi = 0; gi < G; gi++)
            if (gi < n)
                mx[gi] = max(mx[gi], sg_red[gi * 128 + i]);
    barrier();
    // the exponentials and each row's sum as wg_sum takes it
    [[unroll]] for (uint gi = 0; gi < G; gi++) {
        if (gi < n) {
            float e = t < nb ? exp(s[gi] - mx[gi]) : 0.0;
            sc[gi * SPL + t] = e;
            e = subgroupAdd(e);
            if (subgroupElect())
                sg_red[gi * 128 + gl_SubgroupID] = e;
        }
    }
    barrier(); // also publishes sc
    float sum[G];
    [[unroll]] for (uint gi = 0; gi < G; gi++)
        sum[gi] = 0.0;
    for (uint i = 0; i < gl_NumSubgroups; i++)
        [[unroll]] for (uint gi = 0; gi < G; gi++)
            if (gi < n)
                sum[gi] += sg_red[gi * 128 + i];
    // out[i] = sum_j sc[j] v[j][i], each row's partial sums in
    // dec_attn.comp's order, each value row used for every row
    float outv[G]; // element t of each row's output, t < D
    [[unroll]] for (uint gi = 0; gi < G; gi++)
        outv[gi] = 0.0;
    if (v4) {
        vec4 a[G];
        [[unroll]] for (uint gi = 0; gi < G; gi++)
            a[gi] = vec4(0.0);
        if (pf) {
            [[unroll]] for (uint i = 0; i < NV; i++) {
                uint j = kp + i * KP;
                [[unroll]] for (uint gi = 0; gi < G; gi++)
                    if (gi < n)
                        a[gi] += j < nb ? sc[gi * SPL + min(j, SPL - 1)] * vr[i] : vec4(0.0);
            }
        } else {
            for (uint j = kp; j < nb; j += KP) {
                vec4 vv = ld4(p.v, vo + j * (p.ld / 4));
                [[unroll]] for (uint gi = 0; gi < G; gi++)
                    if (gi < n)
                        a[gi] += sc[gi * SPL + j] * vv;
            }
        }
        [[unroll]] for (uint gi = 0; gi < G; gi++)
            if (gi < n)
                partial4[gi * 128 + t] = a[gi];
        barrier();
        if (t < D) {
            uint q = t / 4, c = t % 4;
            for (uint i = 0; i < KP; i++)
                [[unroll]] for (uint gi = 0; gi < G; gi++)
                    if (gi < n)
                        outv[gi] += partial4[gi * 128 + i * Q + q][c];
        }
    } else {
        if (t < NP * D) {
            uint i = t % D, pp = t / D;
            float a[G];
            [[unroll]] for (uint gi = 0; gi < G; gi++)
                a[gi] = 0.0;
            for (uint j = pp; j < nb; j += NP) {
                float vx = ld1(p.v, base + (j0 + j) * p.ld + h0 + i);
                [[unroll]] for (uint gi = 0; gi < G; gi++)
                    if (gi < n)
                        a[gi] += sc[gi * SPL + j] * vx;
            }
            [[unroll]] for (uint gi = 0; gi < G; gi++)
                if (gi < n)
                    partial4[gi * 128 + pp * D + i].x = a[gi];
        }
        barrier();
        if (t < D)
            for (uint pp = 0; pp < NP; pp++)
                [[unroll]] for (uint gi = 0; gi < G; gi++)
                    if (gi < n)
                        outv[gi] += partial4[gi * 128 + pp * D + t].x;
    }
    if (p.n_split == 1) {
        if (t < D)
            [[unroll]] for (uint gi = 0; gi < G; gi++)
                if (gi < n)
                    p.o.v[uint(p.groups.v[ge + 1 + gi]) * p.ld + h0 + t] = outv[gi] / sum[gi];
        return;
    }
    // each row's part where dec_attn.comp writes it
    [[unroll]] for (uint gi = 0; gi < G; gi++) {
        if (gi < n) {
            uint r = uint(p.groups.v[ge + 1 + gi]);
            uint po = ((r * gl_NumWorkGroups.y + h) * p.n_split + sp) * (D + 2);
            if (t < D)
                p.part.v[po + 2 + t] = outv[gi];
            if (t == 0) {
                p.part.v[po] = nb > 0 ? mx[gi] : -1e30;
                p.part.v[po + 1] = sum[gi];
            }
        }
    }
    // the last workgroup of (group, head) to get here merges every row
    memoryBarrierBuffer();
    barrier();
    uint ci = r0 * gl_NumWorkGroups.y + h;
    if (t == 0)
        last = atomicAdd(p.cnt.v[ci], 1) == int(p.n_split) - 1;
    barrier();
    if (!last)
        return;
    memoryBarrierBuffer();
    for (uint gi = 0; gi < n; gi++) {
        uint r = uint(p.groups.v[ge + 1 + gi]);
        da_merge(p.part, p.o, p.n_split, (r * gl_NumWorkGroups.y + h) * p.n_split * (D + 2),
                 r * p.ld + h0, t);
    }
    if (t == 0)
        p.cnt.v[ci] = 0;
}
