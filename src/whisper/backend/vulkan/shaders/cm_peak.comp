// cm_peak.comp: the rate of the matrix engines as GL_NV_cooperative_matrix
// reaches them (16 x 16 x 16, halves in, floats accumulated), for
// vulkan-bench's floor and to tell what holds matmul_cm.comp back: each
// of the 8 subgroups of a workgroup multiplies TM x 2 accumulators by
// fragments of A and B, iters times, each variant changing one thing:
//   0: the fragments stay in registers (383 TFLOP/s on the H100 in this
//      loop, which loads them in its first step; 576 to 583 in an
//      earlier form with the loads before the loop: bench/RESULTS.md);
//   1: loaded from shared memory every step (halves, 80-byte rows, B
//      transposed, as matmul_cm.comp loads them);
//   2: the same from shared arrays of 16-byte vectors (as matmul_cm.comp
//      stages W);
//   3: A from a shared array of 8-byte vectors (as matmul_cm.comp stages
//      A), B as in 2;
//   4: as 2 with a workgroup barrier every step;
//   5: as 2 with 4 x 2 accumulators a subgroup (matmul_cm.comp's 128-row
//      tiles);
//   6: as 2 with the accumulators stored by a loop that does not unroll
//      before the driver (a run-time count), so that the accumulator
//      array is indexed at run time, as matmul_cm.comp's epilogue did;
//   7: as 2 with each subgroup reading its own rows of A and B (offsets
//      from the subgroup's index, as matmul_cm.comp's).
// The accumulators go to o so that nothing is optimized away (2048
// floats a subgroup).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

// @variants CM_PEAK 0 1 2 3 4 5 6 7
// @function-arrays-ok cm_peak_CM_PEAK6 -- mode 6 indexes its accumulators at run time on purpose: the cost it measures
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

#if CM_PEAK == 5
const uint TM = 4;
#else
const uint TM = 2;
#endif
// rows: A's 0..63, B's 64..191 (80 bytes each)
const uint ROWS = 192, LH = 40, LV = 5, L2 = 10; // halves, uvec4s, uvec2s a row
#if CM_PEAK == 1
shared float16_t Sh[ROWS * LH];
#else
shared uvec4 Sv[ROWS * LV];
#endif
#if CM_PEAK == 3
shared uvec2 S2[64 * L2];
#endif

void main()
{
    uint tid = gl_LocalInvocationID.x, sg = gl_SubgroupID;
#if CM_PEAK == 1
    for (uint i = tid; i < ROWS * LH; i += 256)
        Sh[i] = float16_t(float(i % 7) * 0.001);
#else
    for (uint i = tid; i < ROWS * LV; i += 256)
        Sv[i] = uvec4(0x1c001c00u + i % 5);
#endif
#if CM_PEAK == 3
    for (uint i = tid; i < 64 * L2; i += 256)
        S2[i] = uvec2(0x1c001c00u + i % 5);
#endif
    barrier();
#if CM_PEAK == 7
    uint ar = (sg / 4) * 32, br = 64 + (sg % 4) * 32;
#else
    uint ar = 0, br = 64;
#endif
    MAT16 a[TM], b[2];
    MAT32 acc[TM][2];
    [[unroll]] for (uint i = 0; i < TM; i++)
        [[unroll]] for (uint j = 0; j < 2; j++)
            acc[i][j] = MAT32(0.0);
    for (uint it = 0; it < p.iters + 1; it++) {
        uint sel = it & 1;
        if (CM_PEAK != 0 || it == 0) {
            [[unroll]] for (uint i = 0; i < TM; i++) {
#if CM_PEAK == 1
                coopMatLoadNV(a[i], Sh, (ar + i * 16) * LH + sel * 16, LH, false);
#elif CM_PEAK == 3
                coopMatLoadNV(a[i], S2, (ar + i * 16) * L2 + sel * 4, L2, false);
#else
                coopMatLoadNV(a[i], Sv, (ar + i * 16) * LV + sel * 2, LV, false);
#endif
            }
            [[unroll]] for (uint j = 0; j < 2; j++) {
#if CM_PEAK == 1
                coopMatLoadNV(b[j], Sh, (br + j * 16) * LH + sel * 16, LH, true);
#else
                coopMatLoadNV(b[j], Sv, (br + j * 16) * LV + sel * 2, LV, true);
#endif
            }
        }
        if (it == p.iters)
            break;
#if CM_PEAK == 4
        barrier();
#endif
        [[unroll]] for (uint i = 0; i < TM; i++)
            [[unroll]] for (uint j = 0; j < 2; j++)
                acc[i][j] = coopMatMulAddNV(a[i], b[j], acc[i][j]);
    }
    uint base = (gl_WorkGroupID.x * 8 + sg) * 2048;
#if CM_PEAK == 6
    for (uint t = 0; t < min(p.iters, TM * 2); t++)
        coopMatStoreNV(acc[t / 2][t % 2], p.o.v, base + t * 256, 16, false);
#else
    [[unroll]] for (uint i = 0; i < TM; i++)
        [[unroll]] for (uint j = 0; j < 2; j++)
            coopMatStoreNV(acc[i][j], p.o.v, base + (i * 2 + j) * 256, 16, false);
#endif
}
