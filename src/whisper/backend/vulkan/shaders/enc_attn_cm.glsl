// enc_attn_cm.glsl: what the encoder's two attention shaders on the
// matrix engines share (enc_attn_cm.comp, which takes each block's scores
// through shared memory, and enc_attn_cmr.comp, which keeps them in
// registers): the compilations (EA_CFG: heads of 32 or 64, q, k and v as
// floats or halves), the push constants (enc_attn.comp's), the blocks'
// sizes, the staged keys and values, and the loads. Included after the
// extensions, with EA_CFG defined by the shader's @variants line.
#include "common.glsl"

#if EA_CFG == 0 || EA_CFG == 2
#define HEAD_D 32
#else
#define HEAD_D 64
#endif
#if EA_CFG >= 2 // q, k, v as halves: four in a uvec2
#define EA_HALF 1
#define RAW4 uvec2
#else           // as floats: four floats' bits in a uvec4
#define EA_HALF 0
#define RAW4 uvec4
#endif
const uint D = HEAD_D;
layout(local_size_x = 128) in;

layout(push_constant) uniform P {
    F32 q; F32 k; F32 v; F32 o;
    uint n, ld;
    float scale;
} p;

const uint BQ = 64, BKEY = 64;     // queries per workgroup, keys per block
const uint LK = (D + 8) / 4;       // uvec2 (4 halves) per staged key or value row
const uint NKV = BKEY * D / 4 / 128; // vec4s of K (and of V) a thread loads per block
const uint ND = D / 16;

shared uvec2 Ks[BKEY * LK];
shared uvec2 Vs[BKEY * LK];

#define MAT16 fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define MAT32 fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

// four elements of row (zeros past n) as raw bits: four halves, or four
// floats'
RAW4 load_row4(F32 b, uint row, uint c, uint h0)
{
    if (row >= p.n)
        return RAW4(0);
    uint i = (row * p.ld + h0 + c) >> 2;
#if EA_HALF
    return U32x2(b).v[i];
#else
    return floatBitsToUint(F32x4(b).v[i]);
#endif
}

// those four elements as staged: halves in pairs
uvec2 halves4(RAW4 r)
{
#if EA_HALF
    return r;
#else
    return uvec2(packHalf2x16(uintBitsToFloat(r.xy)), packHalf2x16(uintBitsToFloat(r.zw)));
#endif
}

float load_q(uint row, uint c)
{
    uint i = row * p.ld + c;
#if EA_HALF
    return unpackHalf2x16(U32(p.q).v[i >> 1])[i & 1u];
#else
    return p.q.v[i];
#endif
}
