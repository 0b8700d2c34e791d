// dec_attn_out.comp: a few-row decoder step's self-attention and its
// output product in one dispatch, so that a layer waits for one dispatch
// fewer: c[m] += Wo a[m] + bias, where a[m] is row m's attention output
// (dec_attn.comp's), its keys SPL at a time, the running maximum and sum
// rescaled between blocks (a prompt kept from the previous window makes
// steps of 224 keys and more). At batch 1 the step is
// ~195 dependent dispatches of 5-10 us each, for about 0.3 ms of weights
// (bench/RESULTS.md, "Where batch 1's step goes"): every dispatch a layer
// does not wait for is worth more than the bytes it reads.
//
// The product is split along K by head: workgroup (block rb of RB output
// columns, head h, row m) computes head h's attention for row m (the
// same over each rb: 16 times the keys' reads at medium, from the cache),
// multiplies it by Wo's RB x D block of that head (loaded before the
// attention, so its trip to memory overlaps it), and writes the partial
// sums to part; the last of the heads to finish a (row, block), counted in
// cnt (zeroed, set back to 0 by it), adds the heads' parts in head order,
// the bias and c. Heads of 64 (D); Wo as halves (ldw a multiple of 8) or,
// where the specialization constant WF32 says so, floats (ldw a multiple
// of 4), 16-byte aligned; keys and values as floats (the self-attention's
// KV cache), each row's key offset (info) and ld multiples of 4 floats
// and the cache 16-byte aligned, as the decoder's KV slots are (ops.c
// checks what it can see; else the two dispatches). Reductions through
// shared memory: any subgroup size.
#version 450
#extension GL_GOOGLE_include_directive : require
#define DA_D 64
#include "dec_attn.glsl"

layout(constant_id = 2) const uint WF32 = 0; // Wo as floats (else halves)

layout(push_constant) uniform P {
    F32 q; F32 k; F32 v; I32 info; U32x4 w; F32 bias; F32 c; F32c part; I32c cnt;
    uint ld, ldw, ldc, n_out;
    float scale;
} p;

const uint RB = 64; // output columns a workgroup

shared float qs[D];
shared float sc[SPL];
shared float red[128];
shared float att[D];
shared bool last;

// the workgroup's maximum or sum of v, in every thread
float wg_max(float v)
{
    red[gl_LocalInvocationID.x] = v;
    barrier();
    for (uint s = 64; s > 0; s >>= 1) {
        if (gl_LocalInvocationID.x < s)
            red[gl_LocalInvocationID.x] =
                max(red[gl_LocalInvocationID.x], red[gl_LocalInvocationID.x + s]);
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

float wg_sum(float v)
{
    red[gl_LocalInvocationID.x] = v;
    barrier();
    for (uint s = 64; s > 0; s >>= 1) {
        if (gl_LocalInvocationID.x < s)
            red[gl_LocalInvocationID.x] += red[gl_LocalInvocationID.x + s];
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

void main()
{
    uint rb = gl_WorkGroupID.x, h = gl_WorkGroupID.y, m = gl_WorkGroupID.z;
    uint nb = gl_NumWorkGroups.x, heads = gl_NumWorkGroups.y;
    uint t = gl_LocalInvocationID.x, h0 = h * D;

    // this thread's weights: output column n, half hf of the head's D
    // (two threads a column), 32 halves (4 loads) or floats (8), before
    // anything waits
    uint n = rb * RB + t / 2, hf = t % 2;
    uvec4 wr[8];
    [[unroll]] for (uint i = 0; i < 8; i++)
        if (WF32 != 0 || i < 4)
            wr[i] = p.w.v[(n * p.ldw + h0 + hf * 32) / (WF32 != 0 ? 4 : 8) + i];

    // the attention of row m, head h, over its nk keys, SPL at a time
    uint base = uint(p.info.v[2 * m]), nk = uint(p.info.v[2 * m + 1]);
    if (t < D)
        qs[t] = p.q.v[m * p.ld + h0 + t] * p.scale;
    barrier();
    // the running maximum and sum, and this thread's part of output
    // element t % D (over keys t / D, t / D + 2, ... of each block)
    float mrun = -1e30, lrun = 0.0, a = 0.0;
    for (uint c0 = 0; c0 < nk; c0 += SPL) {
        uint nb = min(SPL, nk - c0);
        float s = -1e30;
        if (t < nb) {
            uint ko = (base + (c0 + t) * p.ld + h0) / 4;
            float d = 0.0;
            [[unroll]] for (uint i = 0; i < D / 4; i++) {
                vec4 kv = ld4(p.k, ko + i);
                d += qs[4 * i] * kv.x + qs[4 * i + 1] * kv.y + qs[4 * i + 2] * kv.z +
                     qs[4 * i + 3] * kv.w;
            }
            s = d;
        }
        float mx = max(mrun, wg_max(s));
        float corr = exp(mrun - mx); // 0 at the first block
        float e = t < nb ? exp(s - mx) : 0.0;
        sc[t] = e;
        lrun = lrun * corr + wg_sum(e); // its barriers also publish sc
        a *= corr;
        for (uint j = t / D; j < nb; j += 128 / D)
            a += sc[j] * p.v.v[base + (c0 + j) * p.ld + h0 + t % D];
        mrun = mx;
        barrier(); // every thread done with sc before the next block writes it
    }
    red[t] = a;
    barrier();
    if (t < D)
        att[t] = (red[t] + red[t + D]) / lrun;
    barrier();

    // Wo's block times it: the pair of threads of a column, through red
    float acc = 0.0;
    if (WF32 != 0) {
        [[unroll]] for (uint i = 0; i < 8; i++) {
            uint c0 = hf * 32 + i * 4;
            vec4 w = uintBitsToFloat(wr[i]);
            acc += att[c0] * w.x + att[c0 + 1] * w.y + att[c0 + 2] * w.z + att[c0 + 3] * w.w;
        }
    } else {
        [[unroll]] for (uint i = 0; i < 4; i++) {
            uint c0 = hf * 32 + i * 8;
            vec2 w0 = unpackHalf2x16(wr[i].x), w1 = unpackHalf2x16(wr[i].y);
            vec2 w2 = unpackHalf2x16(wr[i].z), w3 = unpackHalf2x16(wr[i].w);
            acc += att[c0] * w0.x + att[c0 + 1] * w0.y + att[c0 + 2] * w1.x +
                   att[c0 + 3] * w1.y + att[c0 + 4] * w2.x + att[c0 + 5] * w2.y +
                   att[c0 + 6] * w3.x + att[c0 + 7] * w3.y;
        }
    }
    red[t] = acc;
    barrier();
    uint pb = (m * heads + h) * p.n_out;
    if (hf == 0)
        p.part.v[pb + n] = acc + red[t + 1];

    // the last head of (m, rb) to get here adds the heads' parts in order
    memoryBarrierBuffer();
    barrier();
    uint ci = m * nb + rb;
    if (t == 0)
        last = atomicAdd(p.cnt.v[ci], 1) == int(heads) - 1;
    barrier();
    if (!last)
        return;
    memoryBarrierBuffer();
    if (t < RB) {
        uint nn = rb * RB + t;
        float y = 0.0;
        for (uint hh = 0; hh < heads; hh++)
            y += p.part.v[(m * heads + hh) * p.n_out + nn];
        y += p.bias.v[nn];
        p.c.v[m * p.ldc + nn] += y;
    }
    if (t == 0)
        p.cnt.v[ci] = 0;
}
