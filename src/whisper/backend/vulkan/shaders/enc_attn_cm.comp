// enc_attn_cm.comp: enc_attn.comp's attention (same push constants, same
// result) on the matrix engines, here through GL_NV_cooperative_matrix
// (enc_attn_cmk.comp: the same through the KHR extension; the body is
// enc_attn_cm_main.glsl, written for any of coopmat.glsl's families): q, k
// and v as halves (rounded here from floats, or, in the EA_HALF
// compilations, written as halves by their product), scores and outputs
// accumulated in floats. For heads of 32 or 64, ld a multiple of 4 and
// 16-byte aligned q, k, v (ops.c checks; enc_attn.comp takes the rest),
// on devices with subgroups of 32 (vk.h's has_coopmat_nv). Four
// compilations (EA_CFG): heads of 32 or 64, floats or halves in. Halves
// are a compilation, not a flag, so that the next block's loads in flight
// can take half the registers (with a run-time flag the driver kept room
// for floats: 225 registers a thread on an H100, two workgroups a
// multiprocessor; the split has not yet been measured on a card).
//
// A workgroup of 4 subgroups takes 4 CM_FM query rows of one head (grid
// y; NV: 128 threads, 64 rows), each subgroup CM_FM of them, kept as
// D / CM_FK matrices of CM_FM x CM_FK halves (pre-scaled by scale / ln 2, so that exp2 gives the
// softmax). Keys and values pass in blocks of 64 through shared memory
// (halves, rows padded to D + 8; the next block's loads are in flight in
// registers while the current one is used: kept as raw bits, floats or
// halves, and rounded only as they are staged, so that no conversion
// waits for them). Per block, a subgroup:
// scores S (CM_FM x 64) = Q K^T on the matrix engines into a float scratch;
// its lanes, CM_SG / CM_FM a row (NV: 32 lanes, two a row), take the running maximum and sum (online
// softmax) and write P = exp2(S - max) as halves; then P V (CM_FM x D) on
// the matrix engines into the same scratch, which the lanes add into
// their rows of the output (kept in registers, D / (CM_SG / CM_FM) floats a lane,
// rescaled when the maximum grows). Keys past n score -inf and their
// values are staged as zeros. No n x n matrix is stored.
//
// (A version that kept O in accumulators across blocks and moved each
// row's reference only when a block's maximum passed it by 2^8, O going
// through the scratch only then, ran slower on an H200: 5.80 against
// 5.13 ms a medium window, 201 registers a thread; bench/RESULTS.md.)
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require

// @variants EA_CFG 0 1 2 3
#ifndef EA_CFG
#define EA_CFG 1
#endif
#define CM_FAMILY 0
#include "coopmat.glsl"
#include "enc_attn_cm.glsl"
#include "enc_attn_cm_main.glsl"
