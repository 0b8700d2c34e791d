// to_half.comp: y = x as halves, n floats (n even; pairs packed in 32-bit
// words, the lower element first), as packHalf2x16 rounds. The encoder
// once stored the cross-attention's K and V with it; its products now
// write them as halves themselves (epilogue.glsl's F_HALF), and this
// pass is left to the tests, which make keys and values as halves with it.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

layout(push_constant) uniform P {
    F32 x; U32 y;
    uint n2; // pairs
} p;

void main()
{
    uint stride = gl_NumWorkGroups.x * 256;
    for (uint i = gl_GlobalInvocationID.x; i < p.n2; i += stride)
        p.y.v[i] = packHalf2x16(vec2(p.x.v[2 * i], p.x.v[2 * i + 1]));
}
