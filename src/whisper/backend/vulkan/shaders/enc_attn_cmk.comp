// enc_attn_cmk.comp: enc_attn_cm.comp's attention through
// GL_KHR_cooperative_matrix, for the devices without the NV extension
// (Intel Arc, AMD, lavapipe) or where TD_VULKAN_COOPMAT=khr asks for it;
// compiled only where the build has a compiler for it (matmul_cmk.comp
// says how), else empty. EAK = 100 x coopmat.glsl's family + EA_CFG
// (heads of 32 or 64, q, k, v as floats or halves): a workgroup takes
// 4 CM_FM query rows (ops.c's ea_rows).
// @khr
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require

// @variants EAK 100 101 102 103 200 201 202 203 300 301 302 303 400 401 402 403
#define CM_FAMILY (EAK / 100)
#define EA_CFG (EAK % 100)
#include "coopmat.glsl"
#include "enc_attn_cm.glsl"
#include "enc_attn_cm_main.glsl"
