// dec_attn.glsl: what the decoder's two attention shaders share:
// dec_attn.comp (a workgroup per row, head and split of the keys) and
// dec_attn_group.comp (a workgroup per group of rows that attend to the
// same keys: the cross-attention's rows of one window). A row's output
// must come out of both with the same bits, so what they share is
// written once, here: the head width and the keys' type, the split, the
// loads of keys and values, and the merge of a row's parts. Included
// before the shader's push constants, with DA_D defined by its
// @variants line (0 or 64).
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"


// The head width: compiled in for 64 (DA_D64, every Whisper decoder's),
// so that glslc unrolls the loops over a thread's key and value rows and
// keeps them in registers; specialized for other widths (DA_D0).
#if defined(DA_D) && DA_D > 0
const uint D = DA_D;
#else
layout(constant_id = 0) const uint D = 64;
#endif
#ifdef DA_IN_STEP
uint KV16; // dec_step.comp: set per phase
#else
layout(constant_id = 1) const uint KV16 = 0;
#endif
layout(local_size_x = 128) in;

const uint SPL = 128;        // keys per split = threads
const uint NP = 128 / D;     // threads per output element (D <= 128), scalar path

// elements [4 i4, 4 i4 + 4) of keys or values b
vec4 ld4(ACT b, uint i4)
{
    if (KV16 != 0) {
        uvec2 u = ACT_U2(b).v[i4];
        return vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
    }
    return ACT4(b).v[i4];
}

// element i of keys or values b
float ld1(ACT b, uint i)
{
    if (KV16 != 0) {
        vec2 h = unpackHalf2x16(ACT_U(b).v[i >> 1]);
        return (i & 1) != 0 ? h.y : h.x;
    }
    return b.v[i];
}

// The merge, in the last workgroup of a row and head to finish: the
// row's n_split parts (running maximum, sum of exponentials, D
// unnormalized outputs, from part + pb) weighed by exp(their maximum -
// the largest), in split order; thread t < D writes element t of the
// output at o + orow. The parts are read through coherent references
// after the caller's buffer memory barrier.
void da_merge(F32c part, ACT o, uint n_split, uint pb, uint orow, uint t)
{
    float M = -1e30;
    for (uint s2 = 0; s2 < n_split; s2++)
        M = max(M, part.v[pb + s2 * (D + 2)]);
    float l = 0.0, a = 0.0;
    for (uint s2 = 0; s2 < n_split; s2++) {
        uint pq = pb + s2 * (D + 2);
        float w = exp(part.v[pq] - M);
        l += w * part.v[pq + 1];
        if (t < D)
            a += w * part.v[pq + 2 + t];
    }
    if (t < D)
        o.v[orow + t] = a / l;
}
