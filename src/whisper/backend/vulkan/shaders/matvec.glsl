// matvec.glsl: the same product and epilogue as matmul.comp for few rows
// (decoder steps). Reading the weights is all that costs, and a step's
// products are small (2 MB each for medium): the time is one trip to
// memory plus the dispatch, so every weight row is read by its own team
// of 32 threads, each with up to U 16-byte loads issued before any is
// used, and the team's sums come from the subgroup adder (no shared
// memory and no barrier where subgroups are 32 wide, as on NVIDIA).
// Workgroup: 128 threads, 4 output columns; grid x: columns / 4, grid
// z: groups of MR rows of A (1 for a single sequence, 8 for a few; see
// MV_CFG below). Each team reads its column's weights once for
// all MR rows.
// Teams are made of subgroups, or subgroups of teams, whatever the
// subgroup size (8 on lavapipe, 16 to 64 elsewhere): the thread index
// used is built from the subgroup's id and the invocation's id within
// it, so a team of 32 lies inside one subgroup of 32 or more and a
// subgroup of fewer lies inside one team.
// F_LN: A's rows are LayerNorm'ed on the way in (mean, then the variance
// of the centred values, as layernorm.comp; eps 1e-5), each workgroup
// computing its rows' statistics itself after its first weight loads
// are in flight: a step's LayerNorm then costs no dispatch of its own.
// F_ROWIDX: output row m goes to c + rowidx[m] floats (the decoder's K and
// V straight into their KV slots). F_QKV: q, k and v as one product of
// their concatenated weights, the columns' thirds going to c (q, ldc),
// c2 and c3 (k and v at rowidx[m]).
// F_W16 and F_A16 (set by ops.c from the addresses and strides): the
// weights, or A (and the LayerNorm's weight and bias), may be read 16
// bytes a load.
// CT (MV_CFG below; 1 or 4): columns per team. With
// more (the many-row product of a batched decoder step, 9 to 256 rows),
// each team reads CT weight rows at once and every A load serves CT
// columns (the loads of A per product fall by CT, the weight loads in
// flight per thread stay 8); the grid is then x: groups of MR rows of A,
// y: groups of 4 CT columns, so that the workgroups running together
// share their weight rows in the cache and the weights come from memory
// about once whatever the rows. MR * CT is at most 32 (lane i of a team
// writes output i).
// The body is shared by matvec.comp (one product a dispatch) and
// dec_step.comp (a decoder step's products and attentions as phases of
// one dispatch): the includer defines MV_CFG's constants (WF16, MR, CT),
// a workgroup of 128 threads, and p, the parameters (MV_PARAMS), and
// calls matvec_run with the workgroup's place in the grid. What it reads
// that an earlier phase of the same dispatch wrote goes through ACT
// references (common.glsl: coherent ones in dec_step.comp).

// the parameters, in ops.c's lin_push order
#define MV_PARAMS                                                               \
    ACT a; U32 w; F32 bias; ACT add; ACT c; F32 lnw; F32 lnb; I32 rowidx;       \
    uint M, N, K, lda, ldw, ldc, ldadd, flags;                                  \
    ACT c2; ACT c3; uint split

#ifdef MV_IN_STEP
struct mv_params {
    MV_PARAMS;
};
layout(buffer_reference, scalar, buffer_reference_align = 8) buffer MvParams { mv_params v; };
MvParams mv_ref; // the phase's, in dec_step.comp's table
#define p mv_ref.v
#else
layout(push_constant) uniform P {
    MV_PARAMS;
} p;
#endif

const uint F_BIAS = 1, F_GELU = 2, F_ADD = 4, F_ACC = 8, F_LN = 16, F_ROWIDX = 32, F_QKV = 128;
const uint F_W16 = 256, F_A16 = 512;
const uint WG = 128, T = 32, TEAMS = WG / T;
const uint U = 8 / CT; // weight loads in flight per column
const uint MC = MR * CT;

shared float red[WG][MC];
shared float st_mean[MR], st_inv[MR];

uint vt;   // this thread's index, subgroup-major (see above)

// every thread gets the sums of v over the workgroup (LayerNorm's
// statistics): within each subgroup by its adder, then the subgroups'
// parts through shared memory
void wg_sums(inout float v[MR])
{
    [[unroll]] for (uint r = 0; r < MR; r++)
        v[r] = subgroupAdd(v[r]);
    if (subgroupElect())
        [[unroll]] for (uint r = 0; r < MR; r++)
            red[gl_SubgroupID][r] = v[r];
    barrier();
    // the loop over rows innermost, so that it unrolls and v is indexed
    // by constants only (kept in registers)
    [[unroll]] for (uint r = 0; r < MR; r++)
        v[r] = 0.0;
    for (uint i = 0; i < gl_NumSubgroups; i++)
        [[unroll]] for (uint r = 0; r < MR; r++)
            v[r] += red[i][r];
    barrier();
}

// every thread of a team gets the team's sums of v
void team_sums(inout float v[MC])
{
    uint sg = gl_SubgroupSize;
    if (sg == T) {
        [[unroll]] for (uint r = 0; r < MC; r++)
            v[r] = subgroupAdd(v[r]);
    } else if (sg < T) {
        // T / sg subgroups make a team
        [[unroll]] for (uint r = 0; r < MC; r++)
            v[r] = subgroupAdd(v[r]);
        if (subgroupElect())
            [[unroll]] for (uint r = 0; r < MC; r++)
                red[gl_SubgroupID][r] = v[r];
        barrier();
        uint per = T / sg, s0 = (vt / T) * per;
        [[unroll]] for (uint r = 0; r < MC; r++)
            v[r] = 0.0;
        for (uint i = 0; i < per; i++)
            [[unroll]] for (uint r = 0; r < MC; r++)
                v[r] += red[s0 + i][r];
    } else {
        // several teams in a subgroup: through shared memory
        [[unroll]] for (uint r = 0; r < MC; r++)
            red[vt][r] = v[r];
        barrier();
        uint t0 = (vt / T) * T;
        [[unroll]] for (uint r = 0; r < MC; r++)
            v[r] = 0.0;
        for (uint i = 0; i < T; i++)
            [[unroll]] for (uint r = 0; r < MC; r++)
                v[r] += red[t0 + i][r];
    }
}

// The product of workgroup wg (the grid as described above).
void matvec_run(uvec3 wg)
{
    vt = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
    uint lane = vt % T;
    // the grid: columns along x and row groups along z, or (CT > 1) the
    // other way round along x and y (see above)
    uint gcol = CT > 1 ? wg.y : wg.x;
    uint grow = CT > 1 ? wg.x : wg.z;
    uint n0 = (gcol * TEAMS + vt / T) * CT; // this team's first column
    uint m0 = grow * MR;
    uint mr = min(MR, p.M - m0);
    bool ln = (p.flags & F_LN) != 0;
    bool w16 = WF16 != 0 && (p.flags & F_W16) != 0;
    float acc[MC];
    [[unroll]] for (uint i = 0; i < MC; i++)
        acc[i] = 0.0;

    // the first weight loads, before anything waits
    U32x4 w4 = U32x4(p.w);
    uint nk8 = (w16 && n0 < p.N) ? p.K / 8 : 0;
    uint row4 = n0 * (p.ldw / 8), ld4 = p.ldw / 8;
    uvec4 wr[U * CT]; // [j * CT + q]: column n0 + q
    [[unroll]] for (uint j = 0; j < U; j++) {
        uint k8 = lane + j * T;
        [[unroll]] for (uint q = 0; q < CT; q++)
            wr[j * CT + q] = k8 < nk8 && n0 + q < p.N ? w4.v[row4 + q * ld4 + k8] : uvec4(0);
    }

    if (ln) {
        // loops over rows innermost: they unroll, and st and mean are
        // indexed by constants only
        float st[MR];
        [[unroll]] for (uint r = 0; r < MR; r++)
            st[r] = 0.0;
        for (uint k = vt; k < p.K; k += WG)
            [[unroll]] for (uint r = 0; r < MR; r++)
                if (r < mr)
                    st[r] += p.a.v[(m0 + r) * p.lda + k];
        wg_sums(st);
        [[unroll]] for (uint r = 0; r < MR; r++) // constant indices: st stays in registers
            st[r] /= float(p.K);
        [[unroll]] for (uint r = 0; r < MR; r++)
            if (vt == r)
                st_mean[r] = st[r];
        float mean[MR];
        [[unroll]] for (uint r = 0; r < MR; r++) {
            mean[r] = st[r];
            st[r] = 0.0;
        }
        for (uint k = vt; k < p.K; k += WG)
            [[unroll]] for (uint r = 0; r < MR; r++)
                if (r < mr) {
                    float d = p.a.v[(m0 + r) * p.lda + k] - mean[r];
                    st[r] += d * d;
                }
        wg_sums(st);
        [[unroll]] for (uint r = 0; r < MR; r++)
            if (vt == r)
                st_inv[r] = 1.0 / sqrt(st[r] / float(p.K) + 1e-5);
        barrier();
    }

    if (w16) {
        bool a16 = (p.flags & F_A16) != 0;
        ACT4 a4 = ACT4(p.a);
        F32x4 lw4 = F32x4(p.lnw), lb4 = F32x4(p.lnb);
        for (uint c = lane; c < nk8; c += T * U) {
            // the unrolled loops' bodies branch-free (indices clamped,
            // contributions chosen by select): glslc leaves a loop rolled,
            // and what it indexes in memory, when its whole body sits in
            // an if (spirv-dis shows no Function array for any MV_CFG)
            [[unroll]] for (uint j = 0; j < U; j++) {
                uint k8 = c + j * T;
                bool jv = k8 < nk8;
                uint k = min(k8, nk8 - 1) * 8;
                vec4 wa[CT], wb[CT];
                [[unroll]] for (uint q = 0; q < CT; q++) {
                    uvec4 u = wr[j * CT + q]; // constant indices once unrolled: registers
                    wa[q] = vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
                    wb[q] = vec4(unpackHalf2x16(u.z), unpackHalf2x16(u.w));
                }
                vec4 g0 = vec4(1.0), g1 = vec4(1.0), b0 = vec4(0.0), b1 = vec4(0.0);
                if (ln) {
                    if (a16) {
                        g0 = lw4.v[k / 4];
                        g1 = lw4.v[k / 4 + 1];
                        b0 = lb4.v[k / 4];
                        b1 = lb4.v[k / 4 + 1];
                    } else {
                        g0 = vec4(p.lnw.v[k], p.lnw.v[k + 1], p.lnw.v[k + 2], p.lnw.v[k + 3]);
                        g1 = vec4(p.lnw.v[k + 4], p.lnw.v[k + 5], p.lnw.v[k + 6], p.lnw.v[k + 7]);
                        b0 = vec4(p.lnb.v[k], p.lnb.v[k + 1], p.lnb.v[k + 2], p.lnb.v[k + 3]);
                        b1 = vec4(p.lnb.v[k + 4], p.lnb.v[k + 5], p.lnb.v[k + 6], p.lnb.v[k + 7]);
                    }
                }
                [[unroll]] for (uint r = 0; r < MR; r++) {
                    uint rr = min(r, mr - 1); // a row that exists; r >= mr adds nothing
                    uint ai = (m0 + rr) * p.lda + k;
                    vec4 x0, x1;
                    if (a16) {
                        x0 = a4.v[ai / 4];
                        x1 = a4.v[ai / 4 + 1];
                    } else {
                        x0 = vec4(p.a.v[ai], p.a.v[ai + 1], p.a.v[ai + 2], p.a.v[ai + 3]);
                        x1 = vec4(p.a.v[ai + 4], p.a.v[ai + 5], p.a.v[ai + 6], p.a.v[ai + 7]);
                    }
                    if (ln) {
                        x0 = (x0 - st_mean[rr]) * st_inv[rr] * g0 + b0;
                        x1 = (x1 - st_mean[rr]) * st_inv[rr] * g1 + b1;
                    }
                    bool use = jv && r < mr;
                    [[unroll]] for (uint q = 0; q < CT; q++)
                        acc[r * CT + q] += use ? dot(x0, wa[q]) + dot(x1, wb[q]) : 0.0;
                }
            }
            // the next U loads of each column
            [[unroll]] for (uint j = 0; j < U; j++) {
                uint k8 = c + T * U + j * T;
                [[unroll]] for (uint q = 0; q < CT; q++)
                    wr[j * CT + q] =
                        k8 < nk8 && n0 + q < p.N ? w4.v[row4 + q * ld4 + k8] : uvec4(0);
            }
        }
    } else if (n0 < p.N) {
        // any layout: halves in pairs of a 32-bit word (ldw even), or
        // floats; the loop over columns inside the one over k and its
        // body branch-free, as above, so that it unrolls (acc indexed by
        // constants)
        for (uint k = lane * 2; k < p.K; k += T * 2) {
            bool two = k + 1 < p.K;
            uint k1 = two ? k + 1 : k; // in bounds; its product is dropped
            [[unroll]] for (uint q = 0; q < CT; q++) {
                uint n = min(n0 + q, p.N - 1);
                bool nv = n0 + q < p.N;
                vec2 w;
                if (WF16 != 0) {
                    w = unpackHalf2x16(p.w.v[(n * p.ldw + k) >> 1]);
                } else {
                    w.x = uintBitsToFloat(p.w.v[n * p.ldw + k]);
                    w.y = uintBitsToFloat(p.w.v[n * p.ldw + k1]);
                }
                [[unroll]] for (uint r = 0; r < MR; r++) {
                    uint rr = min(r, mr - 1);
                    uint ai = (m0 + rr) * p.lda + k;
                    float x0 = p.a.v[ai], x1 = p.a.v[ai + (k1 - k)];
                    if (ln) {
                        x0 = (x0 - st_mean[rr]) * st_inv[rr] * p.lnw.v[k] + p.lnb.v[k];
                        x1 = (x1 - st_mean[rr]) * st_inv[rr] * p.lnw.v[k1] + p.lnb.v[k1];
                    }
                    bool use = nv && r < mr;
                    acc[r * CT + q] += use ? x0 * w.x : 0.0;
                    acc[r * CT + q] += use && two ? x1 * w.y : 0.0;
                }
            }
        }
    }

    team_sums(acc);
    if (n0 >= p.N)
        return;
    // lane i writes row i / CT of column n0 + i % CT: acc[i] picked by a
    // constant index in an unrolled loop (no continue in it, see above)
    float v = 0.0;
    [[unroll]] for (uint i = 0; i < MC; i++)
        if (lane == i)
            v = acc[i];
    uint r = lane / CT, n = n0 + lane % CT;
    if (lane < MC && r < mr && n < p.N) {
        uint m = m0 + r;
        if ((p.flags & F_BIAS) != 0)
            v += p.bias.v[n];
        if ((p.flags & F_GELU) != 0)
            v = gelu_f(v);
        if ((p.flags & F_ADD) != 0)
            v += p.add.v[m * p.ldadd + n];
        if ((p.flags & F_QKV) != 0) {
            // q, k or v by the column's third
            uint part = n / p.split, nn = n - part * p.split;
            if (part == 0)
                p.c.v[m * p.ldc + nn] = v;
            else if (part == 1)
                p.c2.v[uint(p.rowidx.v[m]) + nn] = v;
            else
                p.c3.v[uint(p.rowidx.v[m]) + nn] = v;
        } else {
            uint ci = (p.flags & F_ROWIDX) != 0 ? uint(p.rowidx.v[m]) + n : m * p.ldc + n;
            if ((p.flags & F_ACC) != 0)
                v += p.c.v[ci];
            p.c.v[ci] = v;
        }
    }
}
#ifdef MV_IN_STEP
#undef p
#endif
