// matvec.comp: a few rows of A times the weights, one product a
// dispatch: the body and what it does are in matvec.glsl.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

// Compiled per configuration (MV_CFG: weights as floats or halves; rows
// MR and columns per team CT: 1 x 1, 8 x 1, 8 x 4), not specialized at
// pipeline creation: glslc unrolls the loops over MR, CT and U only when
// their counts are known to it, and leaves the arrays they index (the
// accumulators, the weight loads in flight) in Function storage
// otherwise, which a driver may keep in local memory (bench/RESULTS.md,
// "the accumulators in local memory").
// @variants MV_CFG 0 1 2 3 4 5
#ifndef MV_CFG
#define MV_CFG 4
#endif
const uint WF16 = MV_CFG >= 3 ? 1 : 0;
const uint MR = MV_CFG % 3 == 0 ? 1 : 8;
const uint CT = MV_CFG % 3 == 2 ? 4 : 1;
layout(local_size_x = 128) in;

#include "matvec.glsl"

void main()
{
    matvec_run(gl_WorkGroupID);
}
