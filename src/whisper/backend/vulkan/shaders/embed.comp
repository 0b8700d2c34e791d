// embed.comp: x[r] = token_embedding[tok[2r]] + positional[tok[2r+1]],
// the decoder's input rows (token and position per row; the embedding as
// halves or floats).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

layout(push_constant) uniform P {
    U32 tok; F32 pos; I32 tp; F32 x;
    uint n, f16;
} p;

void main()
{
    uint r = gl_WorkGroupID.y, i = gl_GlobalInvocationID.x;
    if (i >= p.n)
        return;
    uint token = uint(p.tp.v[2 * r]), pos = uint(p.tp.v[2 * r + 1]);
    uint e = token * p.n + i;
    float w;
    if (p.f16 != 0) {
        vec2 h = unpackHalf2x16(p.tok.v[e >> 1]);
        w = (e & 1u) != 0 ? h.y : h.x;
    } else {
        w = uintBitsToFloat(p.tok.v[e]);
    }
    p.x.v[r * p.n + i] = w + p.pos.v[pos * p.n + i];
}
