// dec_attn_row.glsl: the body of dec_attn.comp (whose opening says what
// it does), a workgroup per row, head and split of the keys, shared with
// dec_step.comp, which runs it as a phase of a decoder step. Included
// after dec_attn.glsl; the includer defines DA_IN_STEP where p is a
// variable it loads per phase instead of push constants.

// the parameters, in ops.c's da_push order
#define DA_PARAMS                                                         \
    ACT q; F32c part; ACT k; ACT v; I32 info; ACT o; I32c cnt;            \
    uint ld, n_split;                                                     \
    float scale

#ifdef DA_IN_STEP
struct da_params {
    DA_PARAMS;
};
layout(buffer_reference, scalar, buffer_reference_align = 8) buffer DaParams { da_params v; };
DaParams da_ref; // the phase's, in dec_step.comp's table
#define p da_ref.v
#else
layout(push_constant) uniform P {
    DA_PARAMS;
} p;
#endif

shared float qs[D];
shared float sc[SPL];
shared float sg_red[128];
shared vec4 partial4[128];
shared float partial[NP * D];
shared bool last;

// the workgroup's maximum (mx) or sum of v, in every thread
float wg_max(float v)
{
    v = subgroupMax(v);
    if (subgroupElect())
        sg_red[gl_SubgroupID] = v;
    barrier();
    float r = -1e30;
    for (uint i = 0; i < gl_NumSubgroups; i++)
        r = max(r, sg_red[i]);
    barrier();
    return r;
}

float wg_sum(float v)
{
    v = subgroupAdd(v);
    if (subgroupElect())
        sg_red[gl_SubgroupID] = v;
    barrier();
    float r = 0.0;
    for (uint i = 0; i < gl_NumSubgroups; i++)
        r += sg_red[i];
    barrier();
    return r;
}

// The attention of workgroup wg of a grid of nwg (rows, heads, splits).
void dec_attn_run(uvec3 wg, uvec3 nwg)
{
    uint r = wg.x, h = wg.y, sp = wg.z;
    uint t = gl_LocalInvocationID.x, h0 = h * D;
    uint base = uint(p.info.v[2 * r]);
    uint nk = uint(p.info.v[2 * r + 1]);
    uint j0 = sp * SPL;
    uint nb = j0 < nk ? min(SPL, nk - j0) : 0;
    // 16 bytes a load where the head's rows allow it
    bool v4 = (D & 3) == 0 && ((base | p.ld | h0) & 3) == 0;
    // heads of at most 64: this thread's key row and the value rows it
    // adds up are loaded first, into registers, so that the query, the
    // keys and the values come in one trip to memory, not three
    const uint Q = D / 4, KP = 128 / Q, NV = (SPL + KP - 1) / KP;
    bool pf = v4 && D <= 64;
    uint qi = t % Q, kp = t / Q;
    uint ko = base + (j0 + t) * p.ld + h0;
    uint vo = (base + j0 * p.ld + h0) / 4 + qi;
    vec4 kr[Q], vr[NV];
    if (pf) {
        // branch-free, so that the loops unroll: rows past the split's
        // keys load a row that exists (the split's last, or the range's
        // first where the split has none) and are weighed by zero below
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
    for (uint i = t; i < D; i += 128)
        qs[i] = p.q.v[r * p.ld + h0 + i] * p.scale;
    barrier();
    float s = -1e30;
    if (t < nb) {
        float d = 0.0;
        if (pf) {
            [[unroll]] for (uint i = 0; i < Q; i++)
                d += qs[4 * i] * kr[i].x + qs[4 * i + 1] * kr[i].y + qs[4 * i + 2] * kr[i].z +
                     qs[4 * i + 3] * kr[i].w;
        } else if (v4) {
            // a key row in D / 4 loads, all issued at once
            for (uint i = 0; i < D; i += 4) {
                vec4 kv = ld4(p.k, (ko + i) / 4);
                d += qs[i] * kv.x + qs[i + 1] * kv.y + qs[i + 2] * kv.z + qs[i + 3] * kv.w;
            }
        } else {
            for (uint i = 0; i < D; i++)
                d += qs[i] * ld1(p.k, ko + i);
        }
        s = d;
    }
    float mx = wg_max(s);
    float e = t < nb ? exp(s - mx) : 0.0;
    sc[t] = e;
    float sum = wg_sum(e); // its barriers also publish sc
    // out[i] = sum_j sc[j] v[j][i]
    float outv = 0.0; // element t of the output, t < D
    if (v4) {
        // quads of the output: thread t takes quad t % Q of keys
        // t / Q, t / Q + KP, ...
        vec4 a = vec4(0.0);
        if (pf) {
            [[unroll]] for (uint i = 0; i < NV; i++) {
                uint j = kp + i * KP;
                a += j < nb ? sc[min(j, SPL - 1)] * vr[i] : vec4(0.0);
            }
        } else {
            for (uint j = kp; j < nb; j += KP)
                a += sc[j] * ld4(p.v, vo + j * (p.ld / 4));
        }
        partial4[t] = a;
        barrier();
        if (t < D) {
            uint q = t / 4, c = t % 4;
            for (uint i = 0; i < KP; i++)
                outv += partial4[i * Q + q][c];
        }
    } else {
        if (t < NP * D) {
            uint i = t % D, pp = t / D;
            float a = 0.0;
            for (uint j = pp; j < nb; j += NP)
                a += sc[j] * ld1(p.v, base + (j0 + j) * p.ld + h0 + i);
            partial[pp * D + i] = a;
        }
        barrier();
        if (t < D)
            for (uint pp = 0; pp < NP; pp++)
                outv += partial[pp * D + t];
    }
    if (p.n_split == 1) {
        if (t < D)
            p.o.v[r * p.ld + h0 + t] = outv / sum;
        return;
    }
    uint pb = (r * nwg.y + h) * p.n_split * (D + 2);
    uint po = pb + sp * (D + 2);
    if (t < D)
        p.part.v[po + 2 + t] = outv;
    if (t == 0) {
        p.part.v[po] = nb > 0 ? mx : -1e30;
        p.part.v[po + 1] = sum;
    }
    // the last workgroup of (row, head) to get here merges
    memoryBarrierBuffer();
    barrier();
    uint ci = r * nwg.y + h;
    if (t == 0)
        last = atomicAdd(p.cnt.v[ci], 1) == int(p.n_split) - 1;
    barrier();
    if (!last)
        return;
    memoryBarrierBuffer();
    da_merge(p.part, p.o, p.n_split, pb, r * p.ld + h0, t);
    if (t == 0)
        p.cnt.v[ci] = 0;
}
#ifdef DA_IN_STEP
#undef p
#endif
