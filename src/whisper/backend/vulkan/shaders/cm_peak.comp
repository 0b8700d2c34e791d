// cm_peak.comp: the rate of the matrix engines as GL_NV_cooperative_matrix
// reaches them (16 x 16 x 16, halves in, floats accumulated), for
// vulkan-bench's floor and to tell what holds matmul_cm.comp back: each
// of the 8 subgroups of a workgroup multiplies 2 x 2 accumulators by
// fragments of A and B, iters times. CM_PEAK 0: the fragments stay in
// registers; 1: they are loaded from shared memory (halves, 80-byte rows,
// B transposed, as matmul_cm.comp loads them) before every step; 2: the
// same from shared arrays of 16-byte vectors, as matmul_cm.comp stages
// them. The accumulators go to o so that nothing
// is optimized away (1024 floats a subgroup).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

// @variants CM_PEAK 0 1 2
#ifndef CM_PEAK
#define CM_PEAK 0
#endif
layout(local_size_x = 256) in;

layout(push_constant) uniform P {
    F32 o;
    uint iters;
} p;

#define MAT16 fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define MAT32 fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

const uint LH = 40, LV = 5; // halves and uvec4s per 80-byte row
shared float16_t Sh[64 * LH];
shared uvec4 Sv[64 * LV];

#if CM_PEAK == 2
#define LOAD(sel)                                                                          \
    [[unroll]] for (uint i = 0; i < 2; i++) {                                              \
        coopMatLoadNV(a[i], Sv, (i * 16) * LV + (sel) * 2, LV, false);                     \
        coopMatLoadNV(b[i], Sv, (32 + i * 16) * LV + (sel) * 2, LV, true);                 \
    }
#else
#define LOAD(sel)                                                                          \
    [[unroll]] for (uint i = 0; i < 2; i++) {                                              \
        coopMatLoadNV(a[i], Sh, (i * 16) * LH + (sel) * 16, LH, false);                    \
        coopMatLoadNV(b[i], Sh, (32 + i * 16) * LH + (sel) * 16, LH, true);                \
    }
#endif

void main()
{
    uint tid = gl_LocalInvocationID.x, sg = gl_SubgroupID;
    for (uint i = tid; i < 64 * LH; i += 256)
        Sh[i] = float16_t(float(i % 7) * 0.001);
    for (uint i = tid; i < 64 * LV; i += 256)
        Sv[i] = uvec4(0x1c001c00u + i % 5);
    barrier();
    MAT16 a[2], b[2];
    LOAD(0)
    MAT32 acc[2][2];
    [[unroll]] for (uint i = 0; i < 2; i++)
        [[unroll]] for (uint j = 0; j < 2; j++)
            acc[i][j] = MAT32(0.0);
    for (uint it = 0; it < p.iters; it++) {
#if CM_PEAK != 0
        LOAD(it & 1)
#endif
        [[unroll]] for (uint i = 0; i < 2; i++)
            [[unroll]] for (uint j = 0; j < 2; j++)
                acc[i][j] = coopMatMulAddNV(a[i], b[j], acc[i][j]);
    }
    uint base = (gl_WorkGroupID.x * 8 + sg) * 1024;
    [[unroll]] for (uint i = 0; i < 2; i++)
        [[unroll]] for (uint j = 0; j < 2; j++)
            coopMatStoreNV(acc[i][j], p.o.v, base + (i * 2 + j) * 256, 16, false);
}
