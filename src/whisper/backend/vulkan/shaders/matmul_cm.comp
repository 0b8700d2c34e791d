// matmul_cm.comp: matmul_cm.glsl's products through GL_NV_cooperative_matrix
// (coopmat.glsl's family 0: 16 x 16 x 16, subgroups of 32), which Debian
// 12's glslc compiles: NVIDIA's path (vk.h's has_coopmat_nv). One
// compilation per tile shape, CM_CFG (matmul_cm.glsl lists them).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

// @variants CM_CFG 0 1 2 3 4 5 6 7 8 9 10 11 12 13
#define CM_FAMILY 0
#include "coopmat.glsl"
#include "matmul_cm.glsl"
