// coopmat.glsl: one spelling of the matrix-engine operations for the
// shaders that multiply on them (matmul_cm.glsl), over either extension:
// GL_NV_cooperative_matrix (CM_FAMILY 0: NVIDIA; Debian 12's glslc
// compiles it) or GL_KHR_cooperative_matrix (the others: Intel Arc's ANV,
// AMD's RADV, Mesa's lavapipe from 25.x and NVIDIA too; it needs glslang
// 13 or later, scripts/fetch-glslang.sh). The including .comp enables its
// extension first and defines CM_FAMILY.
//
// A family is a fragment shape (CM_FM x CM_FK halves of A, CM_FK x CM_FN
// of B, CM_FM x CM_FN floats accumulated) and the subgroup size CM_SG the
// shader's thread counts are written for. vk.c's khr_families lists the
// same table (families 1 to 4): a device runs a family's compilations where it reports
// that shape for f16 x f16 -> f32 at subgroup scope and can run
// subgroups of CM_SG.
//   0  NV  16 x 16 x 16, subgroups of 32 (NVIDIA)
//   1  KHR 16 x 16 x 16, subgroups of 32 (NVIDIA, AMD RDNA3 in wave32)
//   2  KHR  8 x  8 x 16, subgroups of 8  (Intel Arc A-series, DG2)
//   3  KHR  8 x 16 x 16, subgroups of 16 (Intel Arc B-series and Xe2)
//   4  KHR  8 x  8 x  8, subgroups of 8  (Mesa's lavapipe on the CPU)
#if CM_FAMILY == 0 || CM_FAMILY == 1
#define CM_FM 16
#define CM_FN 16
#define CM_FK 16
#define CM_SG 32
#elif CM_FAMILY == 2
#define CM_FM 8
#define CM_FN 8
#define CM_FK 16
#define CM_SG 8
#elif CM_FAMILY == 3
#define CM_FM 8
#define CM_FN 16
#define CM_FK 16
#define CM_SG 16
#elif CM_FAMILY == 4
#define CM_FM 8
#define CM_FN 8
#define CM_FK 8
#define CM_SG 8
#else
#error "coopmat.glsl: unknown CM_FAMILY"
#endif

// CM_A: halves of A (CM_FM x CM_FK); CM_B: halves of B (CM_FK x CM_FN);
// CM_C: the float accumulator (CM_FM x CM_FN). Loads and stores take an
// array, an offset and a row stride in units of its element type.
#if CM_FAMILY == 0
#define CM_A fcoopmatNV<16, gl_ScopeSubgroup, CM_FM, CM_FK>
#define CM_B fcoopmatNV<16, gl_ScopeSubgroup, CM_FK, CM_FN>
#define CM_C fcoopmatNV<32, gl_ScopeSubgroup, CM_FM, CM_FN>
#define CM_LOAD_ROWS(m, buf, off, stride) coopMatLoadNV(m, buf, off, stride, false)
#define CM_LOAD_COLS(m, buf, off, stride) coopMatLoadNV(m, buf, off, stride, true)
#define CM_STORE_ROWS(m, buf, off, stride) coopMatStoreNV(m, buf, off, stride, false)
#define CM_MULADD(a, b, c) coopMatMulAddNV(a, b, c)
#else
#define CM_A coopmat<float16_t, gl_ScopeSubgroup, CM_FM, CM_FK, gl_MatrixUseA>
#define CM_B coopmat<float16_t, gl_ScopeSubgroup, CM_FK, CM_FN, gl_MatrixUseB>
#define CM_C coopmat<float, gl_ScopeSubgroup, CM_FM, CM_FN, gl_MatrixUseAccumulator>
#define CM_LOAD_ROWS(m, buf, off, stride)                                                        \
    coopMatLoad(m, buf, off, stride, gl_CooperativeMatrixLayoutRowMajor)
#define CM_LOAD_COLS(m, buf, off, stride)                                                        \
    coopMatLoad(m, buf, off, stride, gl_CooperativeMatrixLayoutColumnMajor)
#define CM_STORE_ROWS(m, buf, off, stride)                                                       \
    coopMatStore(m, buf, off, stride, gl_CooperativeMatrixLayoutRowMajor)
#define CM_MULADD(a, b, c) coopMatMulAdd(a, b, c)
#endif
