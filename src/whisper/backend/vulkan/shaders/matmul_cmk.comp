// matmul_cmk.comp: matmul_cm.glsl's products through GL_KHR_cooperative_matrix,
// for the devices without the NV extension (Intel Arc, AMD, lavapipe) or
// where TD_VULKAN_COOPMAT=khr asks for it. Compiled only where the build
// has a compiler that knows the extension (glslang 13 or later: the
// Makefile's GLSLC_KHR); without one these arrays are empty and the
// devices keep the tiled path.
//
// CMK = 100 x family + tile shape: coopmat.glsl's families 1 to 4 (the
// fragment shape and subgroup size) by matmul_cm.glsl's CM_CFG 0, 1, 2
// and 14 (128 x 128, 64 x 128, 64 x 64 tiles, the shapes ops.c needs, and
// 128 x 128 in K steps of 16 for devices with 32 KiB of shared memory,
// where 0's 40 KiB do not fit; the other shapes are NVIDIA tunings).
// @khr
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

// @variants CMK 100 101 102 114 200 201 202 214 300 301 302 314 400 401 402 414
#define CM_FAMILY (CMK / 100)
#define CM_CFG (CMK % 100)
#include "coopmat.glsl"
#include "matmul_cm.glsl"
