/*
 * shaders.h: the Vulkan backend's compute shaders as SPIR-V words,
 * compiled from shaders/NAME.comp at build time and embedded by
 * scripts/embed-spirv.sh (the Makefile's optional Vulkan part). A
 * shader that needs GL_KHR_cooperative_matrix (matmul_cmk) has 0 words
 * where the build had no compiler for it (the Makefile's GLSLC_KHR).
 */
#ifndef TD_WHISPER_VK_SHADERS_H
#define TD_WHISPER_VK_SHADERS_H

#include <stddef.h>
#include <stdint.h>

#define TD_VK_SHADERS(X) \
    X(matmul)            \
    X(matmul_sum)        \
    X(matmul_cm_CM_CFG0) \
    X(matmul_cm_CM_CFG1) \
    X(matmul_cm_CM_CFG2) \
    X(matmul_cm_CM_CFG3) \
    X(matmul_cm_CM_CFG4) \
    X(matmul_cm_CM_CFG5) \
    X(matmul_cm_CM_CFG6) \
    X(matmul_cm_CM_CFG7) \
    X(matmul_cm_CM_CFG8) \
    X(matmul_cm_CM_CFG9) \
    X(matmul_cm_CM_CFG10) \
    X(matmul_cm_CM_CFG11) \
    X(matmul_cm_CM_CFG12) \
    X(matmul_cm_CM_CFG13) \
    X(matmul_cmk_CMK100) \
    X(matmul_cmk_CMK101) \
    X(matmul_cmk_CMK102) \
    X(matmul_cmk_CMK114) \
    X(matmul_cmk_CMK200) \
    X(matmul_cmk_CMK201) \
    X(matmul_cmk_CMK202) \
    X(matmul_cmk_CMK214) \
    X(matmul_cmk_CMK300) \
    X(matmul_cmk_CMK301) \
    X(matmul_cmk_CMK302) \
    X(matmul_cmk_CMK314) \
    X(matmul_cmk_CMK400) \
    X(matmul_cmk_CMK401) \
    X(matmul_cmk_CMK402) \
    X(matmul_cmk_CMK414) \
    X(enc_attn_cmk_EAK100) \
    X(enc_attn_cmk_EAK101) \
    X(enc_attn_cmk_EAK102) \
    X(enc_attn_cmk_EAK103) \
    X(enc_attn_cmk_EAK200) \
    X(enc_attn_cmk_EAK201) \
    X(enc_attn_cmk_EAK202) \
    X(enc_attn_cmk_EAK203) \
    X(enc_attn_cmk_EAK300) \
    X(enc_attn_cmk_EAK301) \
    X(enc_attn_cmk_EAK302) \
    X(enc_attn_cmk_EAK303) \
    X(enc_attn_cmk_EAK400) \
    X(enc_attn_cmk_EAK401) \
    X(enc_attn_cmk_EAK402) \
    X(enc_attn_cmk_EAK403) \
    X(matmul_cmd_CMD_TN2) \
    X(matmul_cmd_CMD_TN4) \
    X(cm_peak_CM_PEAK0)  \
    X(cm_peak_CM_PEAK1)  \
    X(cm_peak_CM_PEAK2)  \
    X(cm_peak_CM_PEAK3)  \
    X(cm_peak_CM_PEAK4)  \
    X(cm_peak_CM_PEAK5)  \
    X(cm_peak_CM_PEAK6)  \
    X(cm_peak_CM_PEAK7)  \
    X(matvec_MV_CFG0)    \
    X(matvec_MV_CFG1)    \
    X(matvec_MV_CFG2)    \
    X(matvec_MV_CFG3)    \
    X(matvec_MV_CFG4)    \
    X(matvec_MV_CFG5)    \
    X(layernorm)         \
    X(enc_attn_HEAD_D16) \
    X(enc_attn_HEAD_D32) \
    X(enc_attn_HEAD_D64) \
    X(enc_attn_HEAD_D128) \
    X(enc_attn_cm_EA_CFG0) \
    X(enc_attn_cm_EA_CFG1) \
    X(enc_attn_cm_EA_CFG2) \
    X(enc_attn_cm_EA_CFG3) \
    X(enc_attn_cmr_EA_CFG0) \
    X(enc_attn_cmr_EA_CFG1) \
    X(enc_attn_cmr_EA_CFG2) \
    X(enc_attn_cmr_EA_CFG3) \
    X(enc_attn_cmr_EA_CFG4) \
    X(enc_attn_cmr_EA_CFG5) \
    X(dec_attn_DA_D0)    \
    X(dec_attn_DA_D64)   \
    X(dec_attn_group_DA_D0) \
    X(dec_attn_group_DA_D64) \
    X(embed)             \
    X(kv_put)            \
    X(att_weights)       \
    X(to_half)           \
    X(grid_sync)         \
    X(dec_step_DS_MR1)   \
    X(dec_step_DS_MR8)   \
    X(matrows_MR_G1)     \
    X(matrows_MR_G2)     \
    X(sample)

#define TD_VK_SHADER_DECL(name)            \
    extern const uint32_t td_vks_##name[]; \
    extern const size_t td_vks_##name##_words;
TD_VK_SHADERS(TD_VK_SHADER_DECL)
#undef TD_VK_SHADER_DECL

#endif
