// kv_put.comp: store each new row's key and value in its KV slot: rows r
// of k and v ([R][n]) go to kc and vc at dst[r] floats (slot and position
// resolved on the host).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;

layout(push_constant) uniform P {
    F32 k; F32 v; F32 kc; F32 vc; I32 dst;
    uint n;
} p;

void main()
{
    uint r = gl_WorkGroupID.y, i = gl_GlobalInvocationID.x;
    if (i >= p.n)
        return;
    uint d = uint(p.dst.v[r]);
    p.kc.v[d + i] = p.k.v[r * p.n + i];
    p.vc.v[d + i] = p.v.v[r * p.n + i];
}
