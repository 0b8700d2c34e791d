// matmul_sum.comp: the second half of a product split along K (ops.c):
// matmul.comp or matmul_cm.comp with F_SPLIT wrote K parts of the sums,
// part z at a + z M lda (M x N floats, lda apart, lda a multiple of 4 and
// a 16-byte aligned, so that each thread reads 4 columns at once); this
// adds them in the order z = 0, 1, ... (the same result every run: no
// float atomics) and applies the products' epilogue (epilogue.glsl, every
// flag of it: bias, GELU, add, accumulate, rows and column blocks to
// their outputs, halves). The same push constants as the products
// (ops.c's lin_push), K being the count of parts; a workgroup takes 1024
// columns of one row (y).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x = 256) in;

layout(push_constant) uniform P {
    F32 a; U32 w; F32 bias; F32 add; F32 c; F32 lnw; F32 lnb; I32 rowidx;
    uint M, N, K, lda, ldw, ldc, ldadd, flags;
    U32 tab; F32 c3; uint split, cofs;
} p;

#include "epilogue.glsl"

void main()
{
    uint m = gl_WorkGroupID.y, n0 = 4 * gl_GlobalInvocationID.x;
    if (m >= p.M || n0 >= p.N)
        return;
    uint stride = p.M * p.lda / 4, i = (m * p.lda + n0) / 4;
    vec4 s = vec4(0.0);
    for (uint z = 0; z < p.K; z++)
        s += F32x4(p.a).v[i + z * stride];
    if ((p.flags & F_HALF) != 0) { // N even: pairs of columns
        [[unroll]] for (uint j = 0; j < 4; j += 2)
            if (n0 + j < p.N)
                epi_store2(m, n0 + j, s[j], s[j + 1]);
        return;
    }
    [[unroll]] for (uint j = 0; j < 4; j++)
        if (n0 + j < p.N)
            epi_store(m, n0 + j, s[j]);
}
