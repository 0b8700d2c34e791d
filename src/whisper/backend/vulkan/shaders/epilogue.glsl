// epilogue.glsl: the products' epilogue, one copy for matmul.comp,
// matmul_cm.comp and matmul_cmd.comp (included after their push-constant
// block p, ops.c's lin_push): + bias, GELU (F_GELU), + add[m][n] (F_ADD),
// in the CPU backend's order, then + C (F_ACC), and where each output
// goes. By default C at m * ldc + n, or rowidx[m] + n (F_ROWIDX: the
// decoder's K and V straight into their KV slots). F_COLS: column n is
// column n - j * split of block j = n / split, which goes to the j-th
// address of the table tab (pairs of 32-bit words), cofs elements on: one
// product writes many outputs (every decoder layer's cross-attention K
// and V, the encoder's q, k and v), each in its own buffer. F_HALF: the
// outputs as halves, two adjacent columns a 32-bit word (epi_store2; the
// caller keeps n, ldc, split, cofs and rowidx even; no F_ACC): the
// cross-attention's K and V without a pass through floats.
#extension GL_EXT_buffer_reference_uvec2 : require

const uint F_BIAS = 1, F_GELU = 2, F_ADD = 4, F_ACC = 8, F_ROWIDX = 32;
const uint F_COLS = 1024, F_HALF = 2048;

float epi_value(float v, uint m, uint n)
{
    if ((p.flags & F_BIAS) != 0)
        v += p.bias.v[n];
    if ((p.flags & F_GELU) != 0)
        v = gelu_f(v);
    if ((p.flags & F_ADD) != 0)
        v += p.add.v[m * p.ldadd + n];
    return v;
}

// The address of the buffer output (m, n) goes to, and its element index
// *ci there (addresses as pairs of words: glslang 12 gives a local
// variable of a reference type no aliasing decoration, which spirv-val
// rejects)
uvec2 epi_dst(uint m, uint n, out uint ci)
{
    uvec2 dst = uvec2(p.c);
    uint nn = n, off = 0;
    if ((p.flags & F_COLS) != 0) {
        uint j = n / p.split;
        nn = n - j * p.split;
        dst = uvec2(p.tab.v[2 * j], p.tab.v[2 * j + 1]);
        off = p.cofs;
    }
    ci = ((p.flags & F_ROWIDX) != 0 ? uint(p.rowidx.v[m]) : m * p.ldc) + nn + off;
    return dst;
}

// Output (m, n) = v after the epilogue's sums, as a float (no F_HALF)
void epi_store(uint m, uint n, float v)
{
    v = epi_value(v, m, n);
    uint ci;
    uvec2 dst = epi_dst(m, n, ci);
    if ((p.flags & F_ACC) != 0)
        v += F32(dst).v[ci];
    F32(dst).v[ci] = v;
}

// Outputs (m, n) and (m, n + 1), n even and n + 1 < N, as one word of halves (F_HALF)
void epi_store2(uint m, uint n, float v0, float v1)
{
    v0 = epi_value(v0, m, n);
    v1 = epi_value(v1, m, n + 1);
    uint ci;
    uvec2 dst = epi_dst(m, n, ci);
    U32(dst).v[ci >> 1] = packHalf2x16(vec2(v0, v1));
}
