// matmul_cm.comp: the product of matmul.comp (same push constants, same
// epilogue, F_ROWIDX too) on the matrix engines through
// GL_NV_cooperative_matrix (Debian 12's glslc compiles it; the KHR form
// needs a newer glslang): A's floats are rounded to halves as they are
// staged (the weights are halves already), products of 16 x 16 x 16
// accumulate in floats. Only for F16 weights, and only where the device
// has the extension with subgroups of 32 (vk.h's has_coopmat_nv): ops.c
// picks this or the tiled path per device by a timed trial.
//
// A workgroup of 256 threads (8 subgroups of 32) takes a 64 x 128 tile of
// C, each subgroup 32 x 32 of it (2 x 2 accumulators); K in steps of
// CM_BK (32 or 64, one compilation each, chosen by the trial) through
// shared memory, the next step's global loads issued into
// registers before this step's products. The epilogue goes through a
// 16 x 16 float scratch per subgroup, one accumulator at a time.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

// @variants CM_BK 32 64
#ifndef CM_BK
#define CM_BK 64
#endif
layout(local_size_x = 256) in;

layout(push_constant) uniform P {
    F32 a; U32 w; F32 bias; F32 add; F32 c; F32 lnw; F32 lnb; I32 rowidx;
    uint M, N, K, lda, ldw, ldc, ldadd, flags;
} p;

const uint F_BIAS = 1, F_GELU = 2, F_ADD = 4, F_ACC = 8, F_ROWIDX = 32;
const uint BM = 64, BN = 128, BK = CM_BK;
const uint NA = BM * BK / 256, NW = BN * BK / 512; // A floats, W pairs per thread
const uint LDS = BK + 8;        // halves per staged row: 80 bytes, a multiple of 16

shared float16_t As[BM * LDS];
shared float16_t Ws[BN * LDS];
shared float Cs[8 * 256];

#define MAT16 fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define MAT32 fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    uint wm = sg / 4, wn = sg % 4;
    uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;

    MAT32 acc[2][2];
    [[unroll]] for (uint i = 0; i < 2; i++)
        [[unroll]] for (uint j = 0; j < 2; j++)
            acc[i][j] = MAT32(0.0);

    // registers for one step: A BM x BK floats, W BN x BK halves as pairs
    float ra[NA];
    uint rw[NW];
    for (uint k0 = 0; k0 < p.K; k0 += BK) {
        if (k0 == 0) {
            [[unroll]] for (uint i = 0; i < NA; i++) {
                uint idx = tid + 256 * i, m = idx / BK, k = idx % BK;
                ra[i] = m0 + m < p.M && k < p.K ? p.a.v[(m0 + m) * p.lda + k] : 0.0;
            }
            [[unroll]] for (uint i = 0; i < NW; i++) {
                uint idx = tid + 256 * i;
                uint n = idx / (BK / 2), kk = (idx % (BK / 2)) * 2;
                rw[i] = 0;
                if (n0 + n < p.N && kk < p.K) {
                    rw[i] = p.w.v[((n0 + n) * p.ldw + kk) >> 1];
                    if (kk + 1 >= p.K)
                        rw[i] &= 0xffffu;
                }
            }
        }
        [[unroll]] for (uint i = 0; i < NA; i++) {
            uint idx = tid + 256 * i, m = idx / BK, k = idx % BK;
            As[m * LDS + k] = float16_t(ra[i]);
        }
        [[unroll]] for (uint i = 0; i < NW; i++) {
            uint idx = tid + 256 * i;
            uint n = idx / (BK / 2), kk = (idx % (BK / 2)) * 2;
            vec2 wv = unpackHalf2x16(rw[i]);
            Ws[n * LDS + kk] = float16_t(wv.x);
            Ws[n * LDS + kk + 1] = float16_t(wv.y);
        }
        barrier();
        uint k1 = k0 + BK;
        if (k1 < p.K) {
            [[unroll]] for (uint i = 0; i < NA; i++) {
                uint idx = tid + 256 * i, m = idx / BK, k = k1 + idx % BK;
                ra[i] = m0 + m < p.M && k < p.K ? p.a.v[(m0 + m) * p.lda + k] : 0.0;
            }
            [[unroll]] for (uint i = 0; i < NW; i++) {
                uint idx = tid + 256 * i;
                uint n = idx / (BK / 2), kk = k1 + (idx % (BK / 2)) * 2;
                rw[i] = 0;
                if (n0 + n < p.N && kk < p.K) {
                    rw[i] = p.w.v[((n0 + n) * p.ldw + kk) >> 1];
                    if (kk + 1 >= p.K)
                        rw[i] &= 0xffffu;
                }
            }
        }
        [[unroll]] for (uint kk = 0; kk < BK; kk += 16) {
            MAT16 fa[2], fb[2];
            [[unroll]] for (uint i = 0; i < 2; i++)
                coopMatLoadNV(fa[i], As, (wm * 32 + i * 16) * LDS + kk, LDS, false);
            [[unroll]] for (uint j = 0; j < 2; j++)
                coopMatLoadNV(fb[j], Ws, (wn * 32 + j * 16) * LDS + kk, LDS, true);
            [[unroll]] for (uint i = 0; i < 2; i++)
                [[unroll]] for (uint j = 0; j < 2; j++)
                    acc[i][j] = coopMatMulAddNV(fa[i], fb[j], acc[i][j]);
        }
        barrier();
    }

    uint cs = sg * 256;
    [[unroll]] for (uint i = 0; i < 2; i++)
        [[unroll]] for (uint j = 0; j < 2; j++) {
            coopMatStoreNV(acc[i][j], Cs, cs, 16, false);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < 256; e += gl_SubgroupSize) {
                uint m = m0 + wm * 32 + i * 16 + e / 16, n = n0 + wn * 32 + j * 16 + e % 16;
                if (m < p.M && n < p.N) {
                    float v = Cs[cs + e];
                    if ((p.flags & F_BIAS) != 0)
                        v += p.bias.v[n];
                    if ((p.flags & F_GELU) != 0)
                        v = gelu_f(v);
                    if ((p.flags & F_ADD) != 0)
                        v += p.add.v[m * p.ldadd + n];
                    uint ci = (p.flags & F_ROWIDX) != 0 ? uint(p.rowidx.v[m]) + n : m * p.ldc + n;
                    if ((p.flags & F_ACC) != 0)
                        v += p.c.v[ci];
                    p.c.v[ci] = v;
                }
            }
            subgroupBarrier();
        }
}
